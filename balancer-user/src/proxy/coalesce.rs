//! One write per flush for HTTP/2 connections.
//!
//! h2's frame writer chains any DATA payload of 256 bytes or more to its buffer instead of
//! copying it, when the stream takes vectored writes, and then has no room for the next frame
//! until it has written that one out. So an HTTP/2 connection whose responses are a few
//! hundred bytes made one system call per response, where HAProxy makes one per batch (h2load
//! -m10: 2.0 writes per request against HAProxy's 1.3 send calls, upstream side included).
//!
//! [`Coalesced`] says it takes no vectored writes (h2 then copies payloads under 1 KiB into
//! its own buffer, so frames batch), and gathers what is written between two flushes into one
//! buffer, written out at the flush. The buffer is taken from the thread's kept write buffers
//! for as long as there is something to write, so an idle connection holds none (tokio's
//! `BufWriter` keeps its buffer for the connection's whole life, and reports vectored writes,
//! which would keep h2 chaining).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::read_buffers::WriteBuf;

/// What is gathered before it is written out even without a flush.
const LIMIT: usize = 64 * 1024;

/// A stream whose writes are gathered until the next flush (see the module doc).
pub struct Coalesced<T> {
    inner: T,
    pending: Option<WriteBuf>,
    /// How much of `pending` was written out already.
    written: usize,
}

impl<T> Coalesced<T> {
    pub fn new(inner: T) -> Coalesced<T> {
        Coalesced {
            inner,
            pending: None,
            written: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesced<T> {
    /// Writes out everything gathered, then lets the buffer go.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(pending) = &self.pending {
            while self.written < pending.len() {
                let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &pending[self.written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.written += n;
            }
        }
        self.pending = None;
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesced<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.as_ref().is_some_and(|p| p.len() >= LIMIT) {
            ready!(this.poll_drain(cx))?;
        }
        if this.pending.is_none() && data.len() >= LIMIT {
            // Large enough to be worth its own write, and nothing gathered goes before it.
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        let pending = this.pending.get_or_insert_with(WriteBuf::take);
        let take = data.len().min(LIMIT - pending.len());
        pending.extend_from_slice(&data[..take]);
        Poll::Ready(Ok(take))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesced<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A writer that records each write it gets.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_between_flushes_go_out_as_one() {
        let mut io = Coalesced::new(Recorder::default());
        io.write_all(b"frame one").await.unwrap();
        io.write_all(b", two").await.unwrap();
        assert!(
            io.inner.writes.is_empty(),
            "nothing goes out before the flush"
        );
        io.flush().await.unwrap();
        io.write_all(b"three").await.unwrap();
        io.shutdown().await.unwrap();
        assert_eq!(
            io.inner.writes,
            [b"frame one, two".to_vec(), b"three".to_vec()]
        );
        assert!(io.pending.is_none(), "no buffer held once written out");
    }

    #[tokio::test]
    async fn past_the_limit_it_writes_without_waiting_for_a_flush() {
        let mut io = Coalesced::new(Recorder::default());
        let data = vec![7u8; LIMIT + 100];
        io.write_all(&data[..10]).await.unwrap();
        io.write_all(&data[10..]).await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(io.inner.writes.concat(), data, "every byte, in order");
        assert!(io.inner.writes.iter().all(|w| w.len() <= LIMIT));
        // A large write with nothing gathered goes out as it is.
        let mut io = Coalesced::new(Recorder::default());
        io.write_all(&data).await.unwrap();
        assert_eq!(io.inner.writes, [data]);
    }

    #[tokio::test]
    async fn reads_pass_through() {
        let (client, server) = tokio::io::duplex(64);
        let mut io = Coalesced::new(server);
        let mut client = client;
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        io.write_all(b"pong").await.unwrap();
        io.flush().await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }
}
