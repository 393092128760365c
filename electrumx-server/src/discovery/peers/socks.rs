//! A SOCKS5 client (RFC 1928): CONNECT to a domain name or an IP address, no
//! authentication — what Tor's SOCKS port needs — and proxy detection.

use std::io::Error;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where to connect through the proxy.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// A host name, resolved by the proxy (onion names must be).
    Domain(&'a str),
    /// An address resolved by us.
    Ip(IpAddr),
}

fn err(msg: impl Into<String>) -> Error {
    Error::other(msg.into())
}

/// RFC 1928 §6 reply codes.
fn reply_text(code: u8) -> &'static str {
    match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown SOCKS error",
    }
}

/// Offers "no authentication"; fails unless the proxy is SOCKS5 and accepts it.
async fn greet(stream: &mut TcpStream) -> std::io::Result<()> {
    stream.write_all(&[5, 1, 0]).await?;
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).await?;
    match answer {
        [5, 0] => Ok(()),
        [5, _] => Err(err("SOCKS5 proxy requires authentication")),
        _ => Err(err("not a SOCKS5 proxy")),
    }
}

/// Connects to `target:port` through the SOCKS5 proxy at `proxy`.
pub async fn connect(
    proxy: SocketAddr,
    target: Target<'_>,
    port: u16,
) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(proxy).await?;
    stream.set_nodelay(true)?;
    greet(&mut stream).await?;
    let mut req = vec![5, 1, 0];
    match target {
        Target::Domain(name) => {
            let len = u8::try_from(name.len()).map_err(|_| err("host name too long for SOCKS5"))?;
            req.push(3);
            req.push(len);
            req.extend_from_slice(name.as_bytes());
        }
        Target::Ip(IpAddr::V4(v4)) => {
            req.push(1);
            req.extend_from_slice(&v4.octets());
        }
        Target::Ip(IpAddr::V6(v6)) => {
            req.push(4);
            req.extend_from_slice(&v6.octets());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    stream.write_all(&req).await?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(err("bad SOCKS5 reply"));
    }
    if head[1] != 0 {
        return Err(err(format!("SOCKS5: {}", reply_text(head[1]))));
    }
    // Skip the bound address and port.
    let skip = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len).await?;
            len[0] as usize + 2
        }
        _ => return Err(err("bad SOCKS5 address type in reply")),
    };
    let mut rest = vec![0u8; skip];
    stream.read_exact(&mut rest).await?;
    Ok(stream)
}

/// Looks for a SOCKS5 proxy on `host` at each of `ports` in turn (ElectrumX tries 9050,
/// 9150 and 1080 when `TOR_PROXY_PORT` is unset).
pub async fn detect(host: &str, ports: &[u16]) -> Option<SocketAddr> {
    for &port in ports {
        let Ok(Ok(addrs)) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::lookup_host((host, port)),
        )
        .await
        else {
            continue;
        };
        for addr in addrs.take(4) {
            let probe = async {
                let mut s = TcpStream::connect(addr).await?;
                greet(&mut s).await
            };
            if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(5), probe).await {
                return Some(addr);
            }
        }
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A one-connection-at-a-time SOCKS5 proxy for tests: records the requested target and
    /// connects every request to `to`.
    pub(crate) async fn fake_proxy(
        to: SocketAddr,
    ) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut hello = [0u8; 3];
                    s.read_exact(&mut hello).await.ok()?;
                    s.write_all(&[5, 0]).await.ok()?;
                    let mut head = [0u8; 4];
                    s.read_exact(&mut head).await.ok()?;
                    let target = match head[3] {
                        3 => {
                            let mut len = [0u8; 1];
                            s.read_exact(&mut len).await.ok()?;
                            let mut name = vec![0u8; len[0] as usize];
                            s.read_exact(&mut name).await.ok()?;
                            String::from_utf8(name).ok()?
                        }
                        1 => {
                            let mut a = [0u8; 4];
                            s.read_exact(&mut a).await.ok()?;
                            std::net::Ipv4Addr::from(a).to_string()
                        }
                        _ => return None,
                    };
                    let mut port = [0u8; 2];
                    s.read_exact(&mut port).await.ok()?;
                    tx.send(format!("{target}:{}", u16::from_be_bytes(port)))
                        .ok()?;
                    let mut out = TcpStream::connect(to).await.ok()?;
                    s.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await.ok()?;
                    tokio::io::copy_bidirectional(&mut s, &mut out).await.ok()
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn connects_by_name_through_the_proxy_and_is_detected() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let (proxy, mut seen) = fake_proxy(echo_addr).await;
        let mut s = connect(proxy, Target::Domain("abcdef.onion"), 50001)
            .await
            .unwrap();
        s.write_all(b"ping\n").await.unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping\n");
        assert_eq!(seen.recv().await.unwrap(), "abcdef.onion:50001");
        let s = connect(proxy, Target::Ip("10.1.2.3".parse().unwrap()), 7).await;
        assert!(s.is_ok());
        assert_eq!(seen.recv().await.unwrap(), "10.1.2.3:7");
        assert_eq!(detect("127.0.0.1", &[1, proxy.port()]).await, Some(proxy));
        // An echo server is not a SOCKS5 proxy.
        assert_eq!(detect("127.0.0.1", &[echo_addr.port()]).await, None);
    }
}
