//! Property tests of the parsers that face the network: the line framer (every line
//! protocol: sessions, LocalRPC, the peer client, IRC), JSON-RPC messages and batches, and
//! WebSocket frames bridged to lines. Whatever the bytes and however they are split across
//! reads, the parsers neither panic nor hold more than their limit, and what they produce is
//! exactly what a model of the format says.

use electrumx_server::protocol::framing::{Line, LineReader};
use electrumx_server::protocol::jsonrpc::{Incoming, code, parse_message};
use electrumx_server::protocol::transport::websocket_bridge;
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, ReadBuf};
use tokio_tungstenite::tungstenite::Message;

/// A reader that hands out its bytes in the given chunk sizes (cycled), as a network does.
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    sizes: Vec<usize>,
    next: usize,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let size = self.sizes[self.next % self.sizes.len()].max(1);
        self.next += 1;
        let n = size.min(self.data.len() - self.pos).min(buf.remaining());
        let pos = self.pos;
        buf.put_slice(&self.data[pos..pos + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// What the framer must make of `lines` (each sent with `\n`) under limit `max`.
fn expected_lines(lines: &[Vec<u8>], max: usize) -> Vec<Option<String>> {
    lines
        .iter()
        .map(|l| {
            (l.len() <= max).then(|| {
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                String::from_utf8_lossy(l).into_owned()
            })
        })
        .collect()
}

fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Short lines of any bytes but the newline (CR, invalid UTF-8 included).
        proptest::collection::vec(
            any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
            0..40
        ),
        // Lines around the limit.
        (50usize..80).prop_map(|n| vec![b'x'; n]),
        // A very long one.
        Just(vec![b'y'; 5000]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// Every line comes out once, in order, as the model says (oversized ones as
    /// `TooLong`), whatever the read sizes; then the end of the stream.
    #[test]
    fn framer_yields_each_line_as_the_model_says(
        lines in proptest::collection::vec(line_bytes(), 0..30),
        sizes in proptest::collection::vec(1usize..300, 1..8),
        tail in proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..10),
    ) {
        let max = 64;
        let mut data = Vec::new();
        for l in &lines {
            data.extend_from_slice(l);
            data.push(b'\n');
        }
        // A last line without its newline is not a line.
        data.extend_from_slice(&tail);
        let reader = Chunked { data, pos: 0, sizes, next: 0 };
        let got = runtime().block_on(async {
            let mut lr = LineReader::new(reader, max);
            let mut got = Vec::new();
            loop {
                match lr.next_line().await.unwrap() {
                    Line::Text(t) => got.push(Some(t)),
                    Line::TooLong => got.push(None),
                    Line::Eof => break,
                }
            }
            got
        });
        prop_assert_eq!(got, expected_lines(&lines, max));
    }

    /// Any text: a single message or a batch, never a panic; a batch over the limit is
    /// refused whole, before its elements are parsed.
    #[test]
    fn json_rpc_parser_classifies_any_text(text in ".{0,200}", n in 0usize..12) {
        let _ = parse_message(&text, 5);
        let batch = format!("[{}]", vec![r#"{"id":1,"method":"server.ping"}"#; n].join(","));
        match parse_message(&batch, 5) {
            Incoming::Batch(items) => {
                prop_assert!(n <= 5 && n > 0);
                prop_assert_eq!(items.len(), n);
            }
            Incoming::Single(Err((_, e))) => {
                prop_assert!(n > 5 || n == 0);
                prop_assert!(e.code == code::INVALID_REQUEST);
            }
            Incoming::Single(Ok(_)) => prop_assert!(false, "a batch parsed as one request"),
        }
    }
}

/// A WebSocket message as a client may send it.
#[derive(Clone, Debug)]
enum WsMsg {
    Text(String),
    Binary(Vec<u8>),
    Ping,
}

fn ws_msg() -> impl Strategy<Value = WsMsg> {
    prop_oneof![
        "[ -~\n\r]{0,60}".prop_map(WsMsg::Text),
        proptest::collection::vec(32u8..127, 0..60).prop_map(WsMsg::Binary),
        Just(WsMsg::Ping),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, .. ProptestConfig::default() })]

    /// Each text or binary frame becomes one line for the session (its newlines made
    /// spaces), in order; control frames none; a frame over the limit ends the connection
    /// after the lines before it. Lines the session writes go out as one text frame each.
    #[test]
    fn websocket_frames_become_lines_and_back(
        msgs in proptest::collection::vec(ws_msg(), 0..12),
        oversized in any::<bool>(),
        replies in proptest::collection::vec("[ -~]{0,40}", 0..5),
    ) {
        let max = 100;
        runtime().block_on(async {
            let (client_io, server_io) = tokio::io::duplex(1 << 16);
            let bridge = tokio::spawn(websocket_bridge(server_io, max));
            let (mut ws, _) = tokio_tungstenite::client_async("ws://localhost/", client_io)
                .await
                .unwrap();
            let session = bridge.await.unwrap().unwrap();
            let (session_rx, mut session_tx) = tokio::io::split(session);
            let mut lines = BufReader::new(session_rx).lines();
            let mut expected = Vec::new();
            for m in &msgs {
                let (frame, line) = match m {
                    WsMsg::Text(t) => (Message::text(t.clone()), Some(t.replace(['\n', '\r'], " "))),
                    WsMsg::Binary(b) => (Message::binary(b.clone()), Some(String::from_utf8(b.clone()).unwrap())),
                    WsMsg::Ping => (Message::Ping(vec![1].into()), None),
                };
                ws.send(frame).await.unwrap();
                expected.extend(line);
            }
            if oversized {
                let _ = ws.send(Message::text("z".repeat(max + 1))).await;
            }
            for want in &expected {
                let got = lines.next_line().await.unwrap();
                assert_eq!(got.as_deref(), Some(want.as_str()));
            }
            if oversized {
                // The connection is over: the session sees the end of its input.
                assert_eq!(lines.next_line().await.unwrap(), None);
                return;
            }
            for r in &replies {
                session_tx.write_all(format!("{r}\n").as_bytes()).await.unwrap();
            }
            for r in &replies {
                loop {
                    match ws.next().await.unwrap().unwrap() {
                        Message::Text(t) => {
                            assert_eq!(t.as_str(), r.as_str());
                            break;
                        }
                        Message::Pong(_) => continue,
                        other => panic!("unexpected frame {other:?}"),
                    }
                }
            }
        });
    }
}
