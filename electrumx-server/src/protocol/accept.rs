//! The accept loop of the admin services (LocalRPC, metrics): one task per connection, all
//! ended when the service stops. (Client sessions have their own loop, with `MAX_SESSIONS`.)

use std::future::Future;
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Accepts connections on `listener` until `shutdown`, running `handle` for each on its own
/// task; `what` names the service in logs. Connection tasks are aborted on return.
pub async fn accept_each<F, Fut>(
    listener: TcpListener,
    what: &'static str,
    shutdown: CancellationToken,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        match accepted {
            Ok((stream, peer)) => {
                tracing::debug!(%peer, "{what} connection");
                conns.spawn(handle(stream, peer));
            }
            Err(e) => {
                tracing::warn!("{what} accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    conns.abort_all();
}
