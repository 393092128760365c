//! JSON-RPC as Electrum speaks it: one message per line (or WebSocket frame), version 1.0 or
//! 2.0, single requests or batches, positional or named parameters.

use crate::protocol::outgoing::{Outgoing, SharedSlice};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

/// Error codes on the wire (see the protocol reference).
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a request object; also "response too large".
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Wrong number or names of parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// A failure of ours.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Session cost too high.
    pub const EXCESSIVE_RESOURCE_USAGE: i64 = -101;
    /// Request took too long.
    pub const SERVER_BUSY: i64 = -102;
    /// Bad argument values, rejected transactions, protocol misuse (ElectrumX's BAD_REQUEST).
    pub const BAD_REQUEST: i64 = 1;
    /// The node returned an error (ElectrumX's DAEMON_ERROR).
    pub const DAEMON_ERROR: i64 = 2;
    /// History too long to serve (protocol 1.7, used by ElectrumX 2.0 for all versions).
    pub const HISTORY_TOO_LARGE: i64 = 10001;
}

/// A JSON-RPC error to send back.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// Error code.
    pub code: i64,
    /// Message.
    pub message: String,
}

impl RpcError {
    /// An error with a code and message.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    /// ElectrumX's BAD_REQUEST.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(code::BAD_REQUEST, message)
    }
}

/// One parsed request.
#[derive(Debug, Clone)]
pub struct Request {
    /// Its id; `None` for a notification (no reply).
    pub id: Option<Value>,
    /// Method name.
    pub method: String,
    /// Parameters as given.
    pub params: Params,
    /// True if it said `"jsonrpc": "2.0"`.
    pub v2: bool,
}

/// Request parameters.
#[derive(Debug, Clone)]
pub enum Params {
    /// `[a, b, …]` (also an absent `params`).
    Positional(Vec<Value>),
    /// `{"name": value, …}`.
    Named(Map<String, Value>),
}

impl Params {
    /// The parameter at `index` or named `name`, if given (JSON null counts as absent).
    pub fn get(&self, index: usize, name: &str) -> Option<&Value> {
        let v = match self {
            Params::Positional(v) => v.get(index),
            Params::Named(m) => m.get(name),
        };
        v.filter(|v| !v.is_null())
    }

    /// Number of parameters given.
    pub fn len(&self) -> usize {
        match self {
            Params::Positional(v) => v.len(),
            Params::Named(m) => m.len(),
        }
    }

    /// True if no parameter was given.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fails if more than `max` positional parameters, or unknown names, were given.
    pub fn check(&self, method: &str, names: &[&str]) -> Result<(), RpcError> {
        match self {
            Params::Positional(v) if v.len() > names.len() => Err(RpcError::new(
                code::INVALID_PARAMS,
                format!(
                    "{} arguments passed to method \"{method}\" but it takes at most {}",
                    v.len(),
                    names.len()
                ),
            )),
            Params::Named(m) => match m.keys().find(|k| !names.contains(&k.as_str())) {
                Some(k) => Err(RpcError::new(
                    code::INVALID_PARAMS,
                    format!("method \"{method}\" has no parameter \"{k}\""),
                )),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// What one line of input holds.
#[derive(Debug)]
pub enum Incoming {
    /// One request, or an error to answer with (id if known).
    Single(Result<Request, (Option<Value>, RpcError)>),
    /// A batch of at most the allowed length: its elements, each parsed only when it is
    /// its turn ([`parse_batch_item`]).
    Batch(Vec<Box<RawValue>>),
}

/// Parses one message; a batch longer than `max_batch` is refused before any of its
/// elements is looked at (an error reply, id null). A message that is not JSON yields a
/// parse error reply.
pub fn parse_message(text: &str, max_batch: usize) -> Incoming {
    if text.trim_start().starts_with('[') {
        return parse_batch(text, max_batch);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Incoming::Single(parse_request(v)),
        Err(_) => Incoming::Single(Err((
            None,
            RpcError::new(code::PARSE_ERROR, "invalid JSON"),
        ))),
    }
}

/// Parses one element of a batch.
pub fn parse_batch_item(raw: &RawValue) -> Result<Request, (Option<Value>, RpcError)> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(v) => parse_request(v),
        Err(_) => Err((None, RpcError::new(code::PARSE_ERROR, "invalid JSON"))),
    }
}

/// A batch's elements as raw JSON, taking at most `max` of them: past that the rest is
/// only walked (to check the JSON), never stored.
fn parse_batch(text: &str, max: usize) -> Incoming {
    struct Elements {
        max: usize,
    }
    struct Taken {
        items: Vec<Box<RawValue>>,
        more: bool,
    }
    impl<'de> serde::de::Visitor<'de> for Elements {
        type Value = Taken;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Taken, A::Error> {
            let mut items = Vec::new();
            while items.len() < self.max {
                match seq.next_element::<Box<RawValue>>()? {
                    Some(item) => items.push(item),
                    None => return Ok(Taken { items, more: false }),
                }
            }
            let mut more = false;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                more = true;
            }
            Ok(Taken { items, more })
        }
    }
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_str(text);
    let taken = match de
        .deserialize_seq(Elements { max })
        .and_then(|t| de.end().map(|_| t))
    {
        Ok(t) => t,
        Err(_) => {
            return Incoming::Single(Err((
                None,
                RpcError::new(code::PARSE_ERROR, "invalid JSON"),
            )));
        }
    };
    if taken.more {
        return Incoming::Single(Err((
            None,
            RpcError::new(
                code::INVALID_REQUEST,
                format!("batch too large (over {max})"),
            ),
        )));
    }
    if taken.items.is_empty() {
        return Incoming::Single(Err((
            None,
            RpcError::new(code::INVALID_REQUEST, "batch is empty"),
        )));
    }
    Incoming::Batch(taken.items)
}

fn parse_request(value: Value) -> Result<Request, (Option<Value>, RpcError)> {
    let Value::Object(mut obj) = value else {
        return Err((
            None,
            RpcError::new(code::INVALID_REQUEST, "request must be an object"),
        ));
    };
    let v2 = obj.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
    let id = obj.remove("id");
    let id_for_error = id.clone().filter(|v| !v.is_null()).or(Some(Value::Null));
    if let Some(id) = &id
        && !(id.is_string() || id.is_number() || id.is_null())
    {
        return Err((
            None,
            RpcError::new(code::INVALID_REQUEST, "invalid request id"),
        ));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => {
            return Err((
                id_for_error,
                RpcError::new(code::INVALID_REQUEST, "missing or invalid method"),
            ));
        }
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Params::Positional(Vec::new()),
        Some(Value::Array(a)) => Params::Positional(a),
        Some(Value::Object(m)) => Params::Named(m),
        Some(_) => {
            return Err((
                id_for_error,
                RpcError::new(code::INVALID_REQUEST, "invalid params"),
            ));
        }
    };
    // JSON-RPC 2.0: no id means a notification. 1.0 used `"id": null` for that.
    let id = match id {
        None => None,
        Some(Value::Null) if !v2 => None,
        Some(v) => Some(v),
    };
    Ok(Request {
        id,
        method,
        params,
        v2,
    })
}

/// A success reply.
pub fn response(id: &Value, result: Value, v2: bool) -> Value {
    if v2 {
        json!({"jsonrpc": "2.0", "id": id, "result": result})
    } else {
        json!({"id": id, "result": result, "error": null})
    }
}

/// A success reply around an already serialized result (large lists are written directly).
pub fn raw_response(id: &Value, raw_result: &str, v2: bool) -> String {
    let mut out = String::with_capacity(raw_result.len() + 64);
    out.push_str(&response_head(id, v2));
    out.push_str(raw_result);
    out.push_str(response_tail(v2));
    out
}

/// A success reply whose serialized result is `prefix`, the shared `body` slices, then
/// `suffix`: the body (a long answer kept rendered in a cache) is not copied.
pub fn spliced_response(
    id: &Value,
    prefix: &str,
    body: Vec<SharedSlice>,
    suffix: &str,
    v2: bool,
) -> Outgoing {
    let mut head = response_head(id, v2);
    head.push_str(prefix);
    let mut tail = String::with_capacity(suffix.len() + 16);
    tail.push_str(suffix);
    tail.push_str(response_tail(v2));
    Outgoing::assembled(head, body, tail)
}

/// A success reply's text up to its result.
fn response_head(id: &Value, v2: bool) -> String {
    let mut out = String::with_capacity(64);
    out.push('{');
    if v2 {
        out.push_str("\"jsonrpc\":\"2.0\",");
    }
    out.push_str("\"id\":");
    out.push_str(&id.to_string());
    out.push_str(",\"result\":");
    out
}

/// A success reply's text after its result.
fn response_tail(v2: bool) -> &'static str {
    if v2 { "}" } else { ",\"error\":null}" }
}

/// An error reply.
pub fn error_response(id: &Value, err: &RpcError, v2: bool) -> Value {
    let e = json!({"code": err.code, "message": err.message});
    if v2 {
        json!({"jsonrpc": "2.0", "id": id, "error": e})
    } else {
        json!({"id": id, "result": null, "error": e})
    }
}

/// A notification (server → client).
pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn spliced_and_raw_responses_are_the_same_json() {
        let body = Arc::new(r#"{"tx_hash":"ab","height":1}"#.to_string());
        for v2 in [true, false] {
            let id = json!("x");
            let whole = vec![SharedSlice::whole(body.clone())];
            let spliced = spliced_response(&id, "{\"history\":[", whole, "]}", v2);
            let raw = raw_response(&id, &format!("{{\"history\":[{body}]}}"), v2);
            assert_eq!(spliced.into_string(), raw);
            let v: Value = serde_json::from_str(&raw).unwrap();
            assert_eq!(v["result"]["history"][0]["height"], 1);
            assert_eq!(v.get("jsonrpc").is_some(), v2);
        }
    }

    #[test]
    fn parses_singles_batches_and_errors() {
        match parse_message(
            r#"{"jsonrpc":"2.0","id":1,"method":"server.ping","params":[]}"#,
            100,
        ) {
            Incoming::Single(Ok(r)) => {
                assert_eq!(r.method, "server.ping");
                assert!(r.v2);
                assert_eq!(r.id, Some(json!(1)));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(parse_message("{nope", 100), Incoming::Single(Err((None, e))) if e.code == code::PARSE_ERROR)
        );
        assert!(
            matches!(parse_message("[]", 100), Incoming::Single(Err((None, e))) if e.code == code::INVALID_REQUEST)
        );
        assert!(matches!(parse_message("42", 100), Incoming::Single(Err(_))));
        match parse_message(
            r#"[{"jsonrpc":"2.0","id":1,"method":"a"}, 5, {"jsonrpc":"2.0","method":"b","params":{"x":1}}]"#,
            100,
        ) {
            Incoming::Batch(raw) => {
                assert_eq!(raw.len(), 3);
                let items: Vec<_> = raw.iter().map(|r| parse_batch_item(r)).collect();
                assert!(items[1].is_err());
                let b = items[2].as_ref().unwrap();
                assert!(b.id.is_none());
                assert_eq!(b.params.get(0, "x"), Some(&json!(1)));
            }
            other => panic!("{other:?}"),
        }
        // JSON-RPC 1.0 without "jsonrpc".
        // A batch over the limit is refused whole; one at the limit is taken; broken JSON
        // after the limit is still a parse error.
        let long = format!("[{}0]", "0,".repeat(500_000));
        assert!(
            matches!(parse_message(&long, 100), Incoming::Single(Err((None, e))) if e.code == code::INVALID_REQUEST)
        );
        assert!(matches!(parse_message("[1,2,3]", 3), Incoming::Batch(v) if v.len() == 3));
        assert!(
            matches!(parse_message("[1,2,3,", 2), Incoming::Single(Err((None, e))) if e.code == code::PARSE_ERROR)
        );
        match parse_message(
            r#"{"id":"a","method":"server.version","params":["x","1.4"]}"#,
            100,
        ) {
            Incoming::Single(Ok(r)) => assert!(!r.v2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn params_check_names_and_counts() {
        let p = Params::Positional(vec![json!(1), json!(2), json!(3)]);
        assert!(p.check("m", &["a", "b"]).is_err());
        assert!(p.check("m", &["a", "b", "c"]).is_ok());
        let mut m = Map::new();
        m.insert("zzz".into(), json!(1));
        assert!(Params::Named(m).check("m", &["a"]).is_err());
    }
}
