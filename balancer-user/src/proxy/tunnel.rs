//! An upgraded connection (WebSocket) tunnelled byte for byte between the client and the
//! server, closed when either side ends or nothing moves for `idle`. The server side is always
//! our own HTTP/1.1 connection after its 101; the client side is our HTTP/1.1 connection
//! (h1_server.rs) or an HTTP/2 stream (RFC 8441) through hyper.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{pool::ServerLoad, upstream::client::Stream};

/// A server's 101, waiting for the client side to write its own 101 and start the tunnel.
pub type TunnelSlot = super::h1::TakeOnce<PendingTunnel>;

/// The server's connection with what it sent past its head, the idle limit, and the
/// server's in-flight count (held for as long as the tunnel lives).
pub struct PendingTunnel {
    pub upstream: (Stream, bytes::Bytes),
    pub idle: Duration,
    pub load: Option<ServerLoad>,
}

/// An HTTP/2 client's WebSocket stream (RFC 8441): waits for hyper's upgrade, passes on what
/// the server sent past its 101, then tunnels.
pub async fn run(client: OnUpgrade, pending: PendingTunnel) {
    let client = match client.await {
        Ok(client) => client,
        Err(err) => {
            tracing::debug!("upgrade did not complete: {err}");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let (upstream, leftover) = pending.upstream;
    if !leftover.is_empty() && client.write_all(&leftover).await.is_err() {
        return;
    }
    relay(client, upstream, pending.idle).await;
    drop(pending.load);
}

/// Copies both ways until one side closes or the tunnel has been idle for `idle`.
pub async fn relay<C, U>(client: C, upstream: U, idle: Duration)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Arc::new(LastActivity::new());
    let mut client = Stamped {
        inner: client,
        clock: clock.clone(),
    };
    let mut upstream = Stamped {
        inner: upstream,
        clock: clock.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        let deadline = clock.last() + idle;
        tokio::select! {
            result = &mut copy => {
                if let Err(err) = result {
                    tracing::debug!("tunnel ended: {err}");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                if clock.last() + idle <= Instant::now() {
                    tracing::debug!(?idle, "tunnel idle: closing");
                    return;
                }
            }
        }
    }
}

struct LastActivity {
    epoch: Instant,
    millis: AtomicU64,
}

impl LastActivity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            millis: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.millis.store(now, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.millis.load(Ordering::Relaxed))
    }
}

/// One end of the tunnel; every read moves the idle clock.
struct Stamped<T> {
    inner: T,
    clock: Arc<LastActivity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Stamped<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stamped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
