//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2): a load balancer
//! in front of the server tells, in a header at the very start of the connection (before
//! any TLS handshake or WebSocket upgrade), the address of the client it is relaying.
//!
//! A header is accepted only from `TRUSTED_PROXIES`; one from any other address closes the
//! connection, and a connection without a header is served as it would be without a proxy.
//! Exactly the header's bytes are read: what follows (a TLS ClientHello, an HTTP upgrade,
//! the first JSON line) reaches the session untouched.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes a version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// What a version 1 header starts with.
pub const V1_PREFIX: &[u8] = b"PROXY ";

/// Longest version 1 header, `\r\n` included (the specification's bound).
pub const V1_MAX_LEN: usize = 107;

/// Shortest version 1 header: `PROXY UNKNOWN\r\n`.
const V1_MIN_LEN: usize = 15;

/// Longest address block (addresses and TLVs) of a version 2 header accepted. The
/// addresses take at most 216 bytes (AF_UNIX); HAProxy's TLVs (ALPN, authority, unique id,
/// TLS details) stay well under this.
pub const V2_MAX_BODY: usize = 4096;

/// Longest time a connection may take to show whether it starts with a header, and to send
/// it all.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// A PROXY header's meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// A relayed connection: the client's address and the address it connected to.
    Proxied {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to (the proxy's).
        destination: SocketAddr,
    },
    /// The proxy speaks for itself (v2 `LOCAL`, as in health checks), or relays a
    /// connection whose addresses it does not tell (v1 `UNKNOWN`, v2 `UNSPEC` or
    /// `UNIX`): the connection's own address stands.
    Local,
}

/// Why a header was not accepted.
#[derive(Debug)]
pub enum ProxyError {
    /// Not a valid header (the reason).
    Invalid(String),
    /// The connection ended inside the header, or reading it failed.
    Io(std::io::Error),
    /// The header did not arrive within [`HEADER_TIMEOUT`].
    Timeout,
    /// A header from an address not in `TRUSTED_PROXIES`.
    Untrusted,
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyError::Invalid(why) => write!(f, "invalid PROXY header: {why}"),
            ProxyError::Io(e) => write!(f, "reading the PROXY header: {e}"),
            ProxyError::Timeout => write!(f, "PROXY header not received in time"),
            ProxyError::Untrusted => {
                write!(f, "PROXY header from an address not in TRUSTED_PROXIES")
            }
        }
    }
}

impl std::error::Error for ProxyError {}

fn invalid(why: impl Into<String>) -> ProxyError {
    ProxyError::Invalid(why.into())
}

/// What the first bytes of a connection say about a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A version 1 header begins (`PROXY `).
    V1,
    /// A version 2 header begins (the signature).
    V2,
    /// No header: the bytes are the client's own.
    None,
    /// Too few bytes to tell (they begin like a header).
    Undecided,
}

/// Whether `prefix`, the first bytes of a connection, begins a header.
pub fn classify(prefix: &[u8]) -> Start {
    let begins = |sig: &[u8]| {
        let n = prefix.len().min(sig.len());
        prefix[..n] == sig[..n]
    };
    if prefix.len() >= V1_PREFIX.len() && prefix.starts_with(V1_PREFIX) {
        Start::V1
    } else if prefix.len() >= V2_SIGNATURE.len() && prefix.starts_with(&V2_SIGNATURE) {
        Start::V2
    } else if begins(V1_PREFIX) || begins(&V2_SIGNATURE) {
        Start::Undecided
    } else {
        Start::None
    }
}

/// Parses a header at the start of `buf`: `Ok(Some((header, length)))` when it is whole,
/// `Ok(None)` when `buf` is a valid beginning of one that needs more bytes, an error when it
/// cannot become a valid header (including when `buf` does not start like one).
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    match classify(buf) {
        Start::Undecided => Ok(None),
        Start::None => Err(invalid("no PROXY signature")),
        Start::V1 => {
            let window = &buf[..buf.len().min(V1_MAX_LEN)];
            match window.iter().position(|b| *b == b'\n') {
                Some(i) => parse_v1(&buf[..=i]).map(|h| Some((h, i + 1))),
                None if buf.len() >= V1_MAX_LEN => {
                    Err(invalid(format!("version 1 line longer than {V1_MAX_LEN}")))
                }
                None => Ok(None),
            }
        }
        Start::V2 => {
            if buf.len() < 16 {
                return Ok(None);
            }
            let fixed: [u8; 16] = buf[..16].try_into().expect("16 bytes");
            let len = v2_body_len(&fixed)?;
            if buf.len() < 16 + len {
                return Ok(None);
            }
            parse_v2(&fixed, &buf[16..16 + len]).map(|h| Some((h, 16 + len)))
        }
    }
}

/// Parses one version 1 line, `PROXY ...\r\n` included.
pub fn parse_v1(line: &[u8]) -> Result<Header, ProxyError> {
    if line.len() > V1_MAX_LEN {
        return Err(invalid(format!("version 1 line longer than {V1_MAX_LEN}")));
    }
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or_else(|| invalid("version 1 line does not end with CRLF"))?;
    let rest = line
        .strip_prefix(V1_PREFIX)
        .ok_or_else(|| invalid("version 1 line does not start with \"PROXY \""))?;
    if rest == b"UNKNOWN" || rest.starts_with(b"UNKNOWN ") {
        // The receiver ignores whatever follows UNKNOWN.
        return Ok(Header::Local);
    }
    let text =
        std::str::from_utf8(rest).map_err(|_| invalid("version 1 line is not ASCII text"))?;
    let fields: Vec<&str> = text.split(' ').collect();
    let [proto, src, dst, sport, dport] = fields[..] else {
        return Err(invalid("version 1 line needs 5 fields after PROXY"));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        match proto {
            "TCP4" => s.parse::<Ipv4Addr>().map(IpAddr::V4),
            "TCP6" => s.parse::<Ipv6Addr>().map(IpAddr::V6),
            _ => return Err(invalid(format!("unknown protocol {proto:?}"))),
        }
        .map_err(|_| invalid(format!("{s:?} is not a {proto} address")))
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
        let leading_zero = s.len() > 1 && s.starts_with('0');
        digits
            .then(|| s.parse::<u16>().ok())
            .flatten()
            .filter(|_| !leading_zero)
            .ok_or_else(|| invalid(format!("{s:?} is not a port")))
    };
    Ok(Header::Proxied {
        source: SocketAddr::new(ip(src)?, port(sport)?),
        destination: SocketAddr::new(ip(dst)?, port(dport)?),
    })
}

/// The length of a version 2 header's address block, from its 16 fixed bytes: the version
/// is checked and the length bounded by [`V2_MAX_BODY`].
fn v2_body_len(fixed: &[u8; 16]) -> Result<usize, ProxyError> {
    if fixed[..12] != V2_SIGNATURE {
        return Err(invalid("no version 2 signature"));
    }
    if fixed[12] >> 4 != 2 {
        return Err(invalid(format!("version {} (not 2)", fixed[12] >> 4)));
    }
    let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
    if len > V2_MAX_BODY {
        return Err(invalid(format!(
            "version 2 address block of {len} bytes (at most {V2_MAX_BODY})"
        )));
    }
    Ok(len)
}

/// Parses a version 2 header: its 16 fixed bytes and its address block (`body`, of the
/// length they give). TLVs after the addresses are skipped.
pub fn parse_v2(fixed: &[u8; 16], body: &[u8]) -> Result<Header, ProxyError> {
    let len = v2_body_len(fixed)?;
    if body.len() != len {
        return Err(invalid(format!(
            "version 2 address block of {} bytes, header says {len}",
            body.len()
        )));
    }
    match fixed[12] & 0x0f {
        0 => return Ok(Header::Local),
        1 => {}
        c => return Err(invalid(format!("version 2 command {c}"))),
    }
    let (family, transport) = (fixed[13] >> 4, fixed[13] & 0x0f);
    if transport > 2 {
        return Err(invalid(format!("version 2 transport {transport}")));
    }
    let need = match family {
        0 | 3 => return Ok(Header::Local), // UNSPEC, UNIX: nothing we can use
        1 => 12,
        2 => 36,
        f => return Err(invalid(format!("version 2 address family {f}"))),
    };
    if body.len() < need {
        return Err(invalid(format!(
            "version 2 address block of {} bytes, family {family} needs {need}",
            body.len()
        )));
    }
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let (source, destination) = if family == 1 {
        let a = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&body[at..at + 4]).expect("4"));
        (
            SocketAddr::new(a(0), port(8)),
            SocketAddr::new(a(4), port(10)),
        )
    } else {
        let a = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&body[at..at + 16]).expect("16"));
        (
            SocketAddr::new(a(0), port(32)),
            SocketAddr::new(a(16), port(34)),
        )
    };
    Ok(Header::Proxied {
        source,
        destination,
    })
}

/// Reads a header (which must be there) from `r`, reading exactly its bytes and none of
/// what follows: for version 2, its 16 fixed bytes then the length they give; for version
/// 1, up to the `\n` (at most [`V1_MAX_LEN`] bytes). Not time-bound: the caller is.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Header, ProxyError> {
    let mut start = [0u8; V1_MIN_LEN];
    r.read_exact(&mut start).await.map_err(ProxyError::Io)?;
    match classify(&start) {
        Start::V1 => {
            if start[..V1_MIN_LEN - 1].contains(&b'\n') {
                return Err(invalid("version 1 line does not end with CRLF"));
            }
            let mut line = start.to_vec();
            let mut byte = [0u8; 1];
            while !line.ends_with(b"\n") {
                if line.len() >= V1_MAX_LEN {
                    return Err(invalid(format!("version 1 line longer than {V1_MAX_LEN}")));
                }
                r.read_exact(&mut byte).await.map_err(ProxyError::Io)?;
                line.push(byte[0]);
            }
            parse_v1(&line)
        }
        Start::V2 => {
            let mut fixed = [0u8; 16];
            fixed[..V1_MIN_LEN].copy_from_slice(&start);
            r.read_exact(&mut fixed[V1_MIN_LEN..])
                .await
                .map_err(ProxyError::Io)?;
            let mut body = vec![0u8; v2_body_len(&fixed)?];
            r.read_exact(&mut body).await.map_err(ProxyError::Io)?;
            parse_v2(&fixed, &body)
        }
        Start::None | Start::Undecided => Err(invalid("no PROXY signature")),
    }
}

/// Where a connection comes from, once its start has been looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// No header: the connection's own address is the client's.
    Direct,
    /// A trusted proxy's header, read off the connection.
    Header(Header),
}

/// Looks at the start of an accepted connection from `peer` and reads a PROXY header if
/// one is there, within [`HEADER_TIMEOUT`]. With `trusted` (`peer` is in
/// `TRUSTED_PROXIES`), a header is read and returned; otherwise a header is refused
/// ([`ProxyError::Untrusted`], nothing read). A connection without one is left untouched
/// ([`Origin::Direct`]), as is one that sends nothing within the timeout (the session's
/// own idle timeout applies to it). A connection that starts like a header but stops
/// short of telling is refused.
pub async fn accept(
    stream: &mut tokio::net::TcpStream,
    trusted: bool,
) -> Result<Origin, ProxyError> {
    let deadline = tokio::time::Instant::now() + HEADER_TIMEOUT;
    let mut buf = [0u8; V2_SIGNATURE.len()];
    let start = loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Ok(Origin::Direct),
            Ok(Err(e)) => return Err(ProxyError::Io(e)),
            Ok(Ok(n)) => n,
        };
        match classify(&buf[..n]) {
            // The client left: the session sees it.
            Start::Undecided if n == 0 => return Ok(Origin::Direct),
            // Bytes that begin like a header: wait for more (peek does not wait for them).
            Start::Undecided => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ProxyError::Timeout);
                }
                tokio::time::sleep_until(
                    deadline.min(tokio::time::Instant::now() + Duration::from_millis(10)),
                )
                .await;
            }
            s => break s,
        }
    };
    match start {
        Start::None => Ok(Origin::Direct),
        _ if !trusted => Err(ProxyError::Untrusted),
        _ => match tokio::time::timeout_at(deadline, read_header(stream)).await {
            Ok(h) => h.map(Origin::Header),
            Err(_) => Err(ProxyError::Timeout),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(cmd);
        h.push(fam);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Reads the header off `bytes` as a connection would; returns it and what is left.
    fn read(bytes: &[u8]) -> (Result<Header, ProxyError>, Vec<u8>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut r = bytes;
        let h = rt.block_on(read_header(&mut r));
        (h, r.to_vec())
    }

    #[test]
    fn version_1_tcp4_tcp6_unknown() {
        let (h, rest) = read(b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 50001\r\n{\"id\":1}\n");
        assert_eq!(
            h.unwrap(),
            Header::Proxied {
                source: sa("203.0.113.7:56324"),
                destination: sa("192.0.2.1:50001")
            }
        );
        assert_eq!(rest, b"{\"id\":1}\n");
        let (h, rest) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n\x16\x03\x01");
        assert_eq!(
            h.unwrap(),
            Header::Proxied {
                source: sa("[2001:db8::7]:65535"),
                destination: sa("[2001:db8::1]:0")
            }
        );
        assert_eq!(rest, b"\x16\x03\x01");
        let (h, rest) = read(b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n");
        assert_eq!(h.unwrap(), Header::Local);
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (h, _) = read(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n");
        assert_eq!(h.unwrap(), Header::Local);
        // The longest allowed line parses; one byte more does not.
        let long = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(long.len(), 104);
        assert!(read(long).0.is_ok());
        let mut unknown = b"PROXY UNKNOWN ".to_vec();
        unknown.resize(V1_MAX_LEN - 2, b'x');
        unknown.extend_from_slice(b"\r\n");
        assert!(read(&unknown).0.is_ok());
        unknown.insert(20, b'x');
        assert!(matches!(read(&unknown).0, Err(ProxyError::Invalid(_))));
    }

    #[test]
    fn version_1_refusals() {
        for bad in [
            &b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 50001\n"[..], // no CR
            b"PROXY TCP4 2001:db8::7 192.0.2.1 1 2\r\n",            // family mismatch
            b"PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 1\r\n", // port range
            b"PROXY TCP4 203.0.113.7 192.0.2.1 01 1\r\n",    // leading zero
            b"PROXY TCP4 203.0.113.7 192.0.2.1 +1 1\r\n",
            b"PROXY TCP4 203.0.113.7  192.0.2.1 1 1\r\n", // two spaces
            b"PROXY TCP4 203.0.113.7 192.0.2.1 1\r\n",    // a field short
            b"PROXY UDP4 203.0.113.7 192.0.2.1 1 1\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 1 1 \r\n",
            b"PROXY UNKNOWNX\r\n",
        ] {
            assert!(
                matches!(read(bad).0, Err(ProxyError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // Truncated: the connection ends inside the header.
        assert!(matches!(
            read(b"PROXY TCP4 203.0.113.7 192.0.2.1 5").0,
            Err(ProxyError::Io(_))
        ));
        assert!(matches!(read(b"PROXY").0, Err(ProxyError::Io(_))));
        // Garbage and other protocols.
        assert!(matches!(
            read(b"{\"jsonrpc\":\"2.0\",\"id\":1}\n").0,
            Err(ProxyError::Invalid(_))
        ));
    }

    #[test]
    fn version_2_proxy_local_and_families() {
        // TCP over IPv4 with TLVs as HAProxy's send-proxy-v2 adds them (ALPN, authority).
        let mut body = vec![203, 0, 113, 7, 192, 0, 2, 1, 0xdc, 0x04, 0xc3, 0x51];
        body.extend_from_slice(&[0x01, 0x00, 0x02, b'h', b'2']);
        body.extend_from_slice(&[0x02, 0x00, 0x09]);
        body.extend_from_slice(b"localhost");
        let mut bytes = v2(0x21, 0x11, &body);
        bytes.extend_from_slice(b"{\"id\":1}\n");
        let (h, rest) = read(&bytes);
        assert_eq!(
            h.unwrap(),
            Header::Proxied {
                source: sa("203.0.113.7:56324"),
                destination: sa("192.0.2.1:50001")
            }
        );
        assert_eq!(rest, b"{\"id\":1}\n");
        // TCP over IPv6.
        let mut body = Vec::new();
        body.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&[0x1f, 0x90, 0xc3, 0x52]);
        let (h, rest) = read(&[v2(0x21, 0x21, &body), b"\x16\x03".to_vec()].concat());
        assert_eq!(
            h.unwrap(),
            Header::Proxied {
                source: sa("[2001:db8::7]:8080"),
                destination: sa("[2001:db8::1]:50002")
            }
        );
        assert_eq!(rest, b"\x16\x03");
        // LOCAL (health checks), with or without addresses; UNSPEC and UNIX families.
        for bytes in [
            v2(0x20, 0x00, &[]),
            v2(0x20, 0x11, &[1; 12]),
            v2(0x21, 0x00, &[]),
            v2(0x21, 0x31, &[0; 216]),
        ] {
            let (h, rest) = read(&[bytes, b"x".to_vec()].concat());
            assert_eq!(h.unwrap(), Header::Local);
            assert_eq!(rest, b"x");
        }
    }

    #[test]
    fn version_2_refusals() {
        for bad in [
            v2(0x11, 0x11, &[0; 12]), // version 1 in a v2 header
            v2(0x22, 0x11, &[0; 12]), // unknown command
            v2(0x21, 0x41, &[0; 12]), // unknown family
            v2(0x21, 0x13, &[0; 12]), // unknown transport
            v2(0x21, 0x11, &[0; 11]), // addresses short
            v2(0x21, 0x21, &[0; 12]),
        ] {
            assert!(
                matches!(read(&bad).0, Err(ProxyError::Invalid(_))),
                "{bad:?}"
            );
        }
        // Oversized: refused from the fixed part, before the block is read.
        let mut big = v2(0x21, 0x11, &[]);
        big[14..16].copy_from_slice(&((V2_MAX_BODY + 1) as u16).to_be_bytes());
        let (h, rest) = read(&[big.clone(), vec![0; 100]].concat());
        assert!(matches!(h, Err(ProxyError::Invalid(_))));
        assert_eq!(rest.len(), 100);
        assert!(matches!(parse(&big), Err(ProxyError::Invalid(_))));
        // Truncated.
        let whole = v2(0x21, 0x11, &[7; 12]);
        for cut in 0..whole.len() {
            assert!(matches!(parse(&whole[..cut]), Ok(None)), "{cut}");
            if cut >= V1_MIN_LEN {
                assert!(matches!(read(&whole[..cut]).0, Err(ProxyError::Io(_))));
            }
        }
    }

    #[test]
    fn classify_first_bytes() {
        assert_eq!(classify(b""), Start::Undecided);
        assert_eq!(classify(b"PROX"), Start::Undecided);
        assert_eq!(classify(b"PROXY "), Start::V1);
        assert_eq!(classify(b"PROXY\r"), Start::None);
        assert_eq!(classify(b"\r\n\r\n\0"), Start::Undecided);
        assert_eq!(classify(&V2_SIGNATURE), Start::V2);
        assert_eq!(classify(b"\r\n\r\n\0\r\nQUIX"), Start::None);
        assert_eq!(classify(b"{\"id\""), Start::None);
        assert_eq!(classify(b"\x16\x03\x01"), Start::None);
        assert_eq!(classify(b"GET / HTTP/1.1"), Start::None);
    }

    #[tokio::test]
    async fn accept_reads_only_the_header_and_refuses_untrusted() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let send = |bytes: Vec<u8>, split: usize| {
            tokio::spawn(async move {
                let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
                c.write_all(&bytes[..split]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                c.write_all(&bytes[split..]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            })
        };
        let header = b"PROXY TCP4 203.0.113.7 127.0.0.1 4000 50001\r\n".to_vec();
        let bytes = [header.clone(), b"{\"id\":1}\n".to_vec()].concat();
        // The header split in the middle of its signature, then the rest.
        for (trusted, split) in [(true, 3), (true, header.len()), (false, 3)] {
            let client = send(bytes.clone(), split);
            let (mut s, _) = listener.accept().await.unwrap();
            let r = accept(&mut s, trusted).await;
            if trusted {
                assert!(matches!(r, Ok(Origin::Header(Header::Proxied { .. }))));
                let mut rest = vec![0; 9];
                s.read_exact(&mut rest).await.unwrap();
                assert_eq!(rest, b"{\"id\":1}\n");
            } else {
                assert!(matches!(r, Err(ProxyError::Untrusted)), "{r:?}");
            }
            client.await.unwrap();
        }
        // No header: nothing is read.
        let client = send(b"{\"id\":2}\n".to_vec(), 1);
        let (mut s, _) = listener.accept().await.unwrap();
        assert!(matches!(accept(&mut s, true).await, Ok(Origin::Direct)));
        let mut rest = vec![0; 9];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, b"{\"id\":2}\n");
        client.await.unwrap();
    }
}
