//! Connections: the accept loop in front of the router. A client that opens connections
//! and never finishes a request (slowloris) or opens very many must not starve the
//! others, so each connection is counted against a cap for the whole server and one for
//! its address (an IPv6 client by its /64, which one client holds whole); one over a cap
//! is told `503` and closed at once; and a connection gets
//! [`Connections::header_timeout`] to send each request's headers (hyper's timer, which
//! also runs while a kept-alive connection idles between requests) and to take more of
//! an answer once its socket is full (a client that stops reading, `WriteDeadline`).
//! Bodies have their own time limit ([`super::api`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

/// How many connections, from where, and how long their headers may take.
#[derive(Clone, Copy, Debug)]
pub struct Connections {
    /// Open connections at once, all clients together.
    pub max: usize,
    /// Open connections at once from one address.
    pub per_address: usize,
    /// Time to send a request's headers, to idle between requests, and to take more of
    /// an answer the server is stuck writing.
    pub header_timeout: Duration,
}

impl Default for Connections {
    fn default() -> Self {
        // Browsers open at most 6 connections to a host; 512 leaves file descriptors to
        // spare under the usual limit of 1024.
        Connections { max: 512, per_address: 32, header_timeout: Duration::from_secs(10) }
    }
}

/// The open connections, by address.
#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// A connection counted as open until dropped.
struct Admitted {
    open: Arc<Mutex<Open>>,
    address: IpAddr,
}

impl Admitted {
    fn try_new(open: &Arc<Mutex<Open>>, address: IpAddr, caps: &Connections) -> Option<Admitted> {
        let mut o = open.lock().expect("the connection count is never poisoned");
        let mine = o.by_address.get(&address).copied().unwrap_or(0);
        if o.total >= caps.max || mine >= caps.per_address {
            return None;
        }
        o.total += 1;
        o.by_address.insert(address, mine + 1);
        Some(Admitted { open: open.clone(), address })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut o = self.open.lock().expect("the connection count is never poisoned");
        o.total -= 1;
        if let Some(n) = o.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                o.by_address.remove(&self.address);
            }
        }
    }
}

/// The address a connection counts against: an IPv6 client's /64 (a host is given a
/// whole /64 and may use any address in it), else the address.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)))
        }
        IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
        v4 => v4,
    }
}

/// A socket whose writes may make no progress for at most `limit` (a client that sends
/// requests and never reads the answers would otherwise hold its connection, and a slot
/// under the caps, forever): then the write fails and hyper drops the connection.
struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, limit: Duration) -> Self {
        WriteDeadline { inner, limit, stalled: None }
    }

    /// After a write made progress: the clock stops. After one that could not: it runs,
    /// and when it is out the write fails.
    fn progress<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let clock = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match clock.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(cx, poll)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(cx, poll)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(cx, poll)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What a connection over a cap hears before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\n\
content-length: 56\r\nconnection: close\r\n\r\n{\"error\":\"too many connections: try again in a second\"}\n";

/// Serve `router` on `listener` until `shutdown` resolves, then let the requests in
/// progress finish (for up to 5 s).
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    caps: Connections,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let open = Arc::new(Mutex::new(Open::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors, or a connection reset before it was taken:
                // wait a moment rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        match Admitted::try_new(&open, client_key(peer.ip()), &caps) {
            Some(admitted) => {
                tokio::spawn(serve_one(stream, peer, router.clone(), caps.header_timeout, admitted, stop_rx.clone()));
            }
            None => {
                // Best effort: a client this busy may not even read it.
                let _ = stream.try_write(BUSY);
            }
        }
    }
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while open.lock().expect("never poisoned").total > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn serve_one(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    header_timeout: Duration,
    _admitted: Admitted,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // The router sees the client's address as axum's `serve` would give it.
    let service = router.map_request(move |mut request: axum::http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.map(axum::body::Body::new)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let io = TokioIo::new(WriteDeadline::new(stream, header_timeout));
    let connection = builder.serve_connection(io, TowerToHyperService::new(service));
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.wait_for(|stopping| *stopping) => {}
    }
    // Shutting down: finish the request in progress, take no more.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_counts_by_its_64_and_a_mapped_ipv4_by_its_address() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(client_key("192.0.2.7".parse().unwrap()), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
