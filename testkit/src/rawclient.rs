//! A minimal line-based Electrum client for raw-socket tests: send exact bytes, read
//! replies and notifications as JSON, see disconnects.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A raw connection.
pub struct RawConn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    next_id: u64,
}

impl RawConn {
    /// Connects to `127.0.0.1:port`.
    pub fn connect(port: u16) -> Result<RawConn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(RawConn {
            stream,
            reader,
            next_id: 1,
        })
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Reads one message; `None` when the server closed the connection.
    pub fn recv(&mut self) -> Result<Option<Value>> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).context("reading")?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&line).with_context(|| {
            format!("bad JSON from server: {line}")
        })?))
    }

    /// Sends a JSON-RPC 2.0 request and returns the reply with its id (notifications that
    /// arrive first are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_raw(format!("{req}\n").as_bytes())?;
        loop {
            match self.recv()? {
                None => bail!("connection closed waiting for the reply to {method}"),
                Some(v) if v.get("id") == Some(&json!(id)) => return Ok(v),
                Some(_) => continue,
            }
        }
    }

    /// `call` that expects a result.
    pub fn result(&mut self, method: &str, params: Value) -> Result<Value> {
        let r = self.call(method, params)?;
        if let Some(e) = r.get("error").filter(|e| !e.is_null()) {
            bail!("{method}: error {e}");
        }
        Ok(r["result"].clone())
    }

    /// `call` that expects an error; returns its code.
    pub fn error_code(&mut self, method: &str, params: Value) -> Result<i64> {
        let r = self.call(method, params)?;
        r["error"]["code"]
            .as_i64()
            .with_context(|| format!("{method}: expected an error, got {r}"))
    }
}
