//! A minimal outgoing Electrum client: newline-delimited JSON-RPC 2.0 requests, one at a
//! time, each answer awaited within a timeout; notifications and requests the peer sends
//! meanwhile are skipped. Replies are bounded in length.

use super::dial::PeerStream;
use crate::protocol::framing::{Line, LineReader};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};

/// Longest reply line accepted from a peer.
pub const MAX_REPLY: usize = 2_000_000;
/// Most unrelated messages skipped while waiting for one reply.
const MAX_SKIPPED: usize = 100;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The connection failed, timed out, or carried something that is not JSON-RPC.
    Net(String),
    /// The peer answered with an error.
    Rpc {
        /// Its code.
        code: i64,
        /// Its message.
        message: String,
    },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Net(m) => f.write_str(m),
            CallError::Rpc { code, message } => write!(f, "{message} ({code})"),
        }
    }
}

/// A connection to a peer.
pub struct RpcConn {
    lines: LineReader<ReadHalf<Box<dyn PeerStream>>>,
    writer: WriteHalf<Box<dyn PeerStream>>,
    next_id: u64,
    timeout: Duration,
}

impl RpcConn {
    /// Wraps a stream; each call waits at most `timeout` for its answer.
    pub fn new(stream: Box<dyn PeerStream>, timeout: Duration) -> RpcConn {
        let (reader, writer) = tokio::io::split(stream);
        RpcConn {
            lines: LineReader::new(reader, MAX_REPLY),
            writer,
            next_id: 0,
            timeout,
        }
    }

    /// Sends `method(params)` and returns its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, CallError> {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        match tokio::time::timeout(self.timeout, self.exchange(id, request.to_string())).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Net(format!(
                "{method}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn exchange(&mut self, id: u64, mut line: String) -> Result<Value, CallError> {
        line.push('\n');
        let sent = async {
            self.writer.write_all(line.as_bytes()).await?;
            self.writer.flush().await
        };
        sent.await.map_err(|e| CallError::Net(e.to_string()))?;
        for _ in 0..=MAX_SKIPPED {
            let line = match self.lines.next_line().await {
                Ok(Line::Eof) => return Err(CallError::Net("connection closed".into())),
                Ok(Line::TooLong) => {
                    return Err(CallError::Net(format!("reply over {MAX_REPLY} bytes")));
                }
                Err(e) => return Err(CallError::Net(e.to_string())),
                Ok(Line::Text(line)) => line,
            };
            let msg: Value = serde_json::from_str(&line)
                .map_err(|_| CallError::Net("answer is not JSON".into()))?;
            if msg.get("method").is_some() || msg.get("id") != Some(&json!(id)) {
                continue;
            }
            if let Some(err) = msg.get("error").filter(|e| !e.is_null()) {
                return Err(CallError::Rpc {
                    code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: err
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .chars()
                        .take(200)
                        .collect(),
                });
            }
            return Ok(msg.get("result").cloned().unwrap_or(Value::Null));
        }
        Err(CallError::Net("too many unrelated messages".into()))
    }
}
