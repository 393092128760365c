//! The PROXY protocol (v1 and v2): properties of the header parser, and the real binary
//! behind a "proxy" (this test, from 127.0.0.1 in `TRUSTED_PROXIES`) on every client
//! service: the header's client address is what LocalRPC `sessions` and `groups` show and
//! what `MAX_SESSIONS_PER_IP` counts; a header from an address not trusted (127.0.0.2)
//! closes the connection; a connection without one is served as before.

use anyhow::{Context, Result};
use electrumx_server::protocol::proxy::{self, Header, ProxyError};
use electrumx_testkit::chaingen::{ChainGen, GenParams};
use electrumx_testkit::node::{RegtestNode, free_port};
use electrumx_testkit::rawclient::RawConn;
use electrumx_testkit::server::{ServerProcess, regtest_env, set_env};
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

// ---- The header, as HAProxy's `send-proxy` and `send-proxy-v2` write it. ----

/// A version 1 line for a TCP connection from `src` to `dst`.
fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let proto = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {proto} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A version 2 header (`PROXY` command, TCP) from `src` to `dst` of one family, followed by
/// `tlvs` (type, value).
fn v2(src: SocketAddr, dst: SocketAddr, tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    let family = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            0x21
        }
        _ => panic!("one family"),
    };
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&dst.port().to_be_bytes());
    for (t, v) in tlvs {
        body.push(*t);
        body.extend_from_slice(&(v.len() as u16).to_be_bytes());
        body.extend_from_slice(v);
    }
    let mut h = proxy::V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, family]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

/// A version 2 `LOCAL` header, as HAProxy's health checks with `check-send-proxy` send.
fn v2_local() -> Vec<u8> {
    let mut h = proxy::V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    h
}

/// TLVs HAProxy adds with `send-proxy-v2` (ALPN, authority, unique id, a CRC32c, the TLS
/// details with their sub-TLVs, padding).
fn haproxy_tlvs() -> Vec<(u8, Vec<u8>)> {
    vec![
        (0x01, b"http/1.1".to_vec()),
        (0x02, b"electrum.example.com".to_vec()),
        (0x05, b"7F000001:C3A2_6661A6F4_0001".to_vec()),
        (0x03, vec![0xde, 0xad, 0xbe, 0xef]),
        (
            0x20,
            vec![
                0x07, 0, 0, 0, 0, 0x21, 0x00, 0x07, b'T', b'L', b'S', b'v', b'1', b'.', b'3',
            ],
        ),
        (0x04, vec![0; 3]),
    ]
}

/// Reads the header off `bytes` as from a connection; returns it and what was not read.
fn read(bytes: &[u8]) -> (Result<Header, ProxyError>, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut r = bytes;
    let h = rt.block_on(proxy::read_header(&mut r));
    (h, r.to_vec())
}

fn socket_addr() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| (
                SocketAddr::new(Ipv4Addr::from(s).into(), sp),
                SocketAddr::new(Ipv4Addr::from(d).into(), dp)
            )),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| (
                SocketAddr::new(Ipv6Addr::from(s).into(), sp),
                SocketAddr::new(Ipv6Addr::from(d).into(), dp)
            )),
    ]
}

fn tlvs() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    prop::collection::vec(
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..60)),
        0..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Any header of either version parses to its addresses, and what follows it (a TLS
    /// ClientHello, a JSON line, anything) is left unread.
    #[test]
    fn headers_parse_and_leave_what_follows(
        (src, dst) in socket_addr(),
        version2 in any::<bool>(),
        tlvs in tlvs(),
        after in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        let header = if version2 { v2(src, dst, &tlvs) } else { v1(src, dst) };
        if !version2 {
            prop_assert!(header.len() <= proxy::V1_MAX_LEN);
        }
        let bytes = [header.clone(), after.clone()].concat();
        let want = Header::Proxied { source: src, destination: dst };
        let parsed = proxy::parse(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed, Some((want, header.len())));
        let (h, rest) = read(&bytes);
        prop_assert_eq!(h.map_err(|e| TestCaseError::fail(e.to_string()))?, want);
        prop_assert_eq!(rest, after);
    }

    /// A header cut anywhere is incomplete, never mistaken for another, and reading it
    /// fails when the connection ends there.
    #[test]
    fn truncated_headers_are_incomplete(
        (src, dst) in socket_addr(),
        version2 in any::<bool>(),
        tlvs in tlvs(),
        cut in any::<prop::sample::Index>(),
    ) {
        let header = if version2 { v2(src, dst, &tlvs) } else { v1(src, dst) };
        let cut = cut.index(header.len());
        prop_assert!(matches!(proxy::parse(&header[..cut]), Ok(None)));
        prop_assert!(read(&header[..cut]).0.is_err());
    }

    /// Whatever the bytes, the parser does not panic, the reader agrees with it, and never
    /// reads past the header it returns.
    #[test]
    fn garbage_is_refused_or_agrees(
        prefix in prop_oneof![
            Just(b"PROXY ".to_vec()),
            Just(proxy::V2_SIGNATURE.to_vec()),
            Just(Vec::new()),
        ],
        noise in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let bytes = [prefix, noise].concat();
        let (h, rest) = read(&bytes);
        match proxy::parse(&bytes) {
            Ok(Some((want, n))) => {
                prop_assert_eq!(h.map_err(|e| TestCaseError::fail(e.to_string()))?, want);
                prop_assert_eq!(rest.len(), bytes.len() - n);
            }
            Ok(None) => prop_assert!(h.is_err()),
            Err(_) => prop_assert!(h.is_err()),
        }
    }

    /// A version 2 header longer than the bound is refused from its 16 fixed bytes, without
    /// reading its body.
    #[test]
    fn oversized_version_2_is_refused(len in (proxy::V2_MAX_BODY + 1)..=65535usize) {
        let mut h = proxy::V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11]);
        h.extend_from_slice(&(len as u16).to_be_bytes());
        let bytes = [h.clone(), vec![0; 64]].concat();
        prop_assert!(matches!(proxy::parse(&h), Err(ProxyError::Invalid(_))));
        let (r, rest) = read(&bytes);
        prop_assert!(matches!(r, Err(ProxyError::Invalid(_))));
        prop_assert_eq!(rest.len(), 64);
    }
}

#[test]
fn haproxy_headers_parse() {
    let src: SocketAddr = "203.0.113.7:56324".parse().unwrap();
    let dst: SocketAddr = "192.0.2.1:50002".parse().unwrap();
    let want = Header::Proxied {
        source: src,
        destination: dst,
    };
    // send-proxy
    assert_eq!(
        proxy::parse(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 50002\r\n").unwrap(),
        Some((want, 46))
    );
    // send-proxy-v2 with TLVs, then a TLS ClientHello's first bytes.
    let h = v2(src, dst, &haproxy_tlvs());
    let (got, rest) = read(&[h, vec![0x16, 0x03, 0x01]].concat());
    assert_eq!(got.unwrap(), want);
    assert_eq!(rest, [0x16, 0x03, 0x01]);
    // Health checks (check-send-proxy): LOCAL.
    assert_eq!(read(&v2_local()).0.unwrap(), Header::Local);
    assert_eq!(read(b"PROXY UNKNOWN\r\n").0.unwrap(), Header::Local);
}

// ---- The real binary behind a "proxy". ----

/// A connection to `127.0.0.1:port` from `src` (another loopback address is another
/// client: Linux answers on all of 127.0.0.0/8).
async fn connect_from(src: Ipv4Addr, port: u16) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src.into(), 0))?;
    Ok(sock.connect(([127, 0, 0, 1], port).into()).await?)
}

const PROXY_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const UNTRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// `server.version` as `name` over a line-based stream; the negotiated version.
async fn version<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut BufReader<S>,
    name: &str,
) -> Result<String> {
    let req =
        json!({"jsonrpc": "2.0", "id": 1, "method": "server.version", "params": [name, "1.4"]});
    s.write_all(format!("{req}\n").as_bytes()).await?;
    s.flush().await?;
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_line(&mut line))
        .await
        .context("reply timed out")??;
    anyhow::ensure!(!line.is_empty(), "{name}: connection closed");
    let v: Value = serde_json::from_str(&line)?;
    Ok(v["result"][1].as_str().context("a version")?.to_string())
}

/// Whether the server closes `s` (after what was written to it) without answering.
async fn closed<S: AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await {
        Ok(Ok(0)) => true,
        Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
        _ => false,
    }
}

/// `server.version` over a WebSocket; the negotiated version.
async fn ws_version<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    name: &str,
) -> Result<String> {
    let req =
        json!({"jsonrpc": "2.0", "id": 1, "method": "server.version", "params": [name, "1.4"]});
    ws.send(Message::text(req.to_string())).await?;
    let reply = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await?
        .context("a frame")??;
    let v: Value = serde_json::from_str(&reply.into_text()?)?;
    Ok(v["result"][1].as_str().context("a version")?.to_string())
}

/// The peer address LocalRPC `sessions` shows for the session named `name`.
fn session_peer(rpc: u16, name: &str) -> Result<String> {
    let rows = RawConn::connect(rpc)?.result("sessions", json!([]))?;
    let rows = rows.as_array().context("a list")?;
    let row = rows
        .iter()
        .find(|r| r[3] == json!(name))
        .with_context(|| format!("no session named {name} in {rows:?}"))?;
    Ok(row[2].as_str().context("a peer")?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_addresses_from_trusted_proxies_on_every_service() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 7,
        txs_per_block: 2,
        wallets: 10,
        ..GenParams::default()
    });
    chain.mine(&node, 3).await?;
    let db = tempfile::tempdir()?;
    let certs = tempfile::tempdir()?;
    let electrumx_testkit::tls::TlsFiles {
        ca_pem: ca,
        cert,
        key,
        ..
    } = electrumx_testkit::tls::files(certs.path(), "localhost")?;
    let (tcp, ssl, ws, wss, rpc) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let mut env = regtest_env(&node, db.path());
    set_env(
        &mut env,
        "SERVICES",
        format!(
            "tcp://127.0.0.1:{tcp},ssl://127.0.0.1:{ssl},ws://127.0.0.1:{ws},wss://127.0.0.1:{wss},rpc://127.0.0.1:{rpc}"
        ),
    );
    set_env(&mut env, "SSL_CERTFILE", cert);
    set_env(&mut env, "SSL_KEYFILE", key);
    set_env(&mut env, "TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8");
    // Loopback is not exempt here: the cap applies to the clients the headers name.
    set_env(&mut env, "MAX_SESSIONS_PER_IP", "2");
    set_env(&mut env, "SESSIONS_PER_IP_EXEMPT", "192.0.2.0/24");
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("listening for clients", 4, Duration::from_secs(120))?;
    let (ca, rpc) = (ca.as_str(), rpc);
    let r = behind_a_proxy(&mut server, ca, [tcp, ssl, ws, wss, rpc]).await;
    if r.is_err() {
        eprintln!("server log:\n{}", server.tail(40).join("\n"));
    }
    r
}

/// The checks of [`client_addresses_from_trusted_proxies_on_every_service`].
async fn behind_a_proxy(server: &mut ServerProcess, ca: &str, ports: [u16; 5]) -> Result<()> {
    let [tcp, ssl, ws, wss, rpc] = ports;
    let here = |port: u16| SocketAddr::new(PROXY_ADDR.into(), port);

    // TCP with a version 1 header, then an ordinary request.
    let client: SocketAddr = "203.0.113.7:40001".parse()?;
    let mut s = connect_from(PROXY_ADDR, tcp).await?;
    s.write_all(&v1(client, here(tcp))).await?;
    let mut v1_conn = BufReader::new(s);
    assert_eq!(version(&mut v1_conn, "pp-v1").await?, "1.4");
    assert_eq!(session_peer(rpc, "pp-v1")?, "203.0.113.7:40001");

    // TCP with a version 2 header as HAProxy's send-proxy-v2 writes it (TLVs), the header
    // and the request in one write.
    let client: SocketAddr = "203.0.113.8:40002".parse()?;
    let mut s = connect_from(PROXY_ADDR, tcp).await?;
    let req =
        json!({"jsonrpc": "2.0", "id": 0, "method": "server.version", "params": ["pp-v2", "1.4"]});
    s.write_all(
        &[
            v2(client, here(tcp), &haproxy_tlvs()),
            format!("{req}\n").into_bytes(),
        ]
        .concat(),
    )
    .await?;
    let mut v2_conn = BufReader::new(s);
    let mut line = String::new();
    v2_conn.read_line(&mut line).await?;
    assert_eq!(
        serde_json::from_str::<Value>(&line)?["result"][1],
        json!("1.4"),
        "{line}"
    );
    assert_eq!(session_peer(rpc, "pp-v2")?, "203.0.113.8:40002");

    // The same subnet is one cost group.
    let groups = RawConn::connect(rpc)?.result("groups", json!([]))?;
    let group = groups
        .as_array()
        .context("a list")?
        .iter()
        .find(|g| g[0] == json!("203.0.113.0/24"))
        .with_context(|| format!("no 203.0.113.0/24 group in {groups}"))?;
    assert_eq!(group[1], json!(2), "{group}");

    // A trusted proxy without a header, and with a LOCAL one (health checks): its own address.
    let mut direct = BufReader::new(connect_from(PROXY_ADDR, tcp).await?);
    assert_eq!(version(&mut direct, "pp-direct").await?, "1.4");
    assert!(session_peer(rpc, "pp-direct")?.starts_with("127.0.0.1:"));
    let mut s = connect_from(PROXY_ADDR, tcp).await?;
    s.write_all(&v2_local()).await?;
    let mut local = BufReader::new(s);
    assert_eq!(version(&mut local, "pp-local").await?, "1.4");
    assert!(session_peer(rpc, "pp-local")?.starts_with("127.0.0.1:"));

    // TLS behind the header (HAProxy in TCP mode in front of ssl://), an IPv6 client.
    let client: SocketAddr = "[2001:db8::7]:40003".parse()?;
    let mut s = connect_from(PROXY_ADDR, ssl).await?;
    s.write_all(&v2(client, "[2001:db8::1]:50002".parse()?, &haproxy_tlvs()))
        .await?;
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost")?;
    let tls = electrumx_testkit::tls::connector(ca)?
        .connect(name.clone(), s)
        .await?;
    let mut tls_conn = BufReader::new(tls);
    assert_eq!(version(&mut tls_conn, "pp-ssl").await?, "1.4");
    assert_eq!(session_peer(rpc, "pp-ssl")?, "[2001:db8::7]:40003");

    // An IPv4 client of a dual-stack proxy, given as an IPv4-mapped IPv6 address, is the
    // IPv4 address.
    let client: SocketAddr = "[::ffff:198.51.100.30]:40009".parse()?;
    let mut s = connect_from(PROXY_ADDR, tcp).await?;
    s.write_all(&v1(client, "[::ffff:127.0.0.1]:50001".parse()?))
        .await?;
    let mut mapped = BufReader::new(s);
    assert_eq!(version(&mut mapped, "pp-mapped").await?, "1.4");
    assert_eq!(session_peer(rpc, "pp-mapped")?, "198.51.100.30:40009");

    // WebSocket: the header precedes the HTTP upgrade.
    let client: SocketAddr = "198.51.100.20:40004".parse()?;
    let mut s = connect_from(PROXY_ADDR, ws).await?;
    s.write_all(&v1(client, here(ws))).await?;
    let (mut ws_conn, _) =
        tokio_tungstenite::client_async(format!("ws://127.0.0.1:{ws}/"), s).await?;
    assert_eq!(ws_version(&mut ws_conn, "pp-ws").await?, "1.4");
    assert_eq!(session_peer(rpc, "pp-ws")?, "198.51.100.20:40004");

    // Secure WebSocket: header, TLS, upgrade.
    let client: SocketAddr = "198.51.100.21:40005".parse()?;
    let mut s = connect_from(PROXY_ADDR, wss).await?;
    s.write_all(&v2(client, here(wss), &[])).await?;
    let tls = electrumx_testkit::tls::connector(ca)?
        .connect(name, s)
        .await?;
    let (mut wss_conn, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{wss}/"), tls).await?;
    assert_eq!(ws_version(&mut wss_conn, "pp-wss").await?, "1.4");
    assert_eq!(session_peer(rpc, "pp-wss")?, "198.51.100.21:40005");

    // MAX_SESSIONS_PER_IP counts the clients the headers name, not the proxy: a third
    // session of 203.0.113.7 is refused, another address still is served.
    let client: SocketAddr = "203.0.113.7:40006".parse()?;
    let mut s = connect_from(PROXY_ADDR, tcp).await?;
    s.write_all(&v1(client, here(tcp))).await?;
    let mut second = BufReader::new(s);
    assert_eq!(version(&mut second, "pp-v1-2").await?, "1.4");
    let mut s = connect_from(PROXY_ADDR, tcp).await?;
    s.write_all(&v1("203.0.113.7:40007".parse()?, here(tcp)))
        .await?;
    assert!(
        closed(&mut s).await,
        "a third session of 203.0.113.7 is refused"
    );
    let mut s = connect_from(PROXY_ADDR, tcp).await?;
    s.write_all(&v1("203.0.113.9:40008".parse()?, here(tcp)))
        .await?;
    assert_eq!(version(&mut BufReader::new(s), "pp-other").await?, "1.4");

    // From an address not in TRUSTED_PROXIES, a header (either version, on any service)
    // closes the connection; a connection without one is served.
    for (port, header) in [
        (tcp, v1("203.0.113.50:1".parse()?, here(tcp))),
        (tcp, v2("203.0.113.50:1".parse()?, here(tcp), &[])),
        (
            ssl,
            v2("203.0.113.50:1".parse()?, here(ssl), &haproxy_tlvs()),
        ),
        (ws, v1("203.0.113.50:1".parse()?, here(ws))),
    ] {
        let mut s = connect_from(UNTRUSTED, port).await?;
        s.write_all(&header).await?;
        assert!(
            closed(&mut s).await,
            "a header from 127.0.0.2 on port {port}"
        );
    }
    server.wait_for_line(
        "PROXY header from an address not in TRUSTED_PROXIES",
        1,
        Duration::from_secs(10),
    )?;
    let mut plain = BufReader::new(connect_from(UNTRUSTED, tcp).await?);
    assert_eq!(version(&mut plain, "pp-untrusted").await?, "1.4");
    assert!(session_peer(rpc, "pp-untrusted")?.starts_with("127.0.0.2:"));

    // A trusted proxy's invalid header closes the connection too.
    let mut s = connect_from(PROXY_ADDR, tcp).await?;
    s.write_all(b"PROXY TCP4 203.0.113.7 not-an-address 1 2\r\n{}\n")
        .await?;
    assert!(closed(&mut s).await);

    // Every session opened above is still there, each with its own address.
    for (name, peer) in [
        ("pp-v1", "203.0.113.7:40001"),
        ("pp-v2", "203.0.113.8:40002"),
        ("pp-ssl", "[2001:db8::7]:40003"),
        ("pp-ws", "198.51.100.20:40004"),
        ("pp-wss", "198.51.100.21:40005"),
    ] {
        assert_eq!(session_peer(rpc, name)?, peer);
    }
    drop((
        v1_conn, v2_conn, direct, local, tls_conn, ws_conn, wss_conn, second,
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_nothing_changes() -> Result<()> {
    let node = RegtestNode::start().await?;
    let mut chain = ChainGen::new(GenParams {
        seed: 8,
        txs_per_block: 2,
        wallets: 10,
        ..GenParams::default()
    });
    chain.mine(&node, 2).await?;
    let db = tempfile::tempdir()?;
    let (tcp, rpc) = (free_port(), free_port());
    let mut env = regtest_env(&node, db.path());
    set_env(
        &mut env,
        "SERVICES",
        format!("tcp://127.0.0.1:{tcp},rpc://127.0.0.1:{rpc}"),
    );
    let mut server = ServerProcess::start(&env)?;
    server.wait_for_line("listening for clients", 1, Duration::from_secs(120))?;
    // A header is not looked for: it is the session's first (unparseable) line, answered
    // with a JSON-RPC error like any other, and the address stays the connection's.
    let mut s = BufReader::new(connect_from(PROXY_ADDR, tcp).await?);
    s.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 1 2\r\n")
        .await?;
    let mut line = String::new();
    s.read_line(&mut line).await?;
    assert!(
        serde_json::from_str::<Value>(&line)?["error"].is_object(),
        "{line}"
    );
    assert_eq!(version(&mut s, "plain").await?, "1.4");
    assert!(session_peer(rpc, "plain")?.starts_with("127.0.0.1:"));
    Ok(())
}
