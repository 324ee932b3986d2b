//! Route `compress`: the response phase that encodes a body as the client asked
//! (headers/compression.rs decides), and the streaming body that does it with
//! async-compression's encoders. Nothing is buffered beyond the encoder's own window: each
//! chunk of the server's body goes through as it comes, and whenever the server makes us wait
//! the encoder is flushed, so a streamed answer never sits half-sent in the encoder.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use async_compression::{
    Level,
    tokio::write::{BrotliEncoder, GzipEncoder, ZstdEncoder},
};
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::{
    HeaderMap, Response,
    body::{Body as HttpBody, Frame},
};
use tokio::io::AsyncWrite;

use super::{Body, BoxError, metrics::CompressLabels, metrics::HttpMetrics};
use crate::headers::compression::{self, Coding};

/// Brotli's quality 11 (its default) is meant for files compressed once: on the fly it costs
/// about 50× the CPU of quality 4, which already beats gzip's default on size.
const BROTLI_QUALITY: i32 = 4;

/// Makes `response` vary by `Accept-Encoding` when it is compressible, and encodes its body
/// with `coding` (the request's choice, `None` when the client accepts none of ours or there
/// is no body to encode: HEAD, CONNECT). Counted per route and coding.
pub fn response_phase(
    metrics: &HttpMetrics,
    route: &str,
    coding: Option<Coding>,
    response: &mut Response<Body>,
) {
    if !compression::compressible(response.status(), response.headers()) {
        return;
    }
    compression::add_vary(response.headers_mut());
    let Some(coding) = coding else {
        return;
    };
    if response.body().is_end_stream() {
        return;
    }
    compression::mark_encoded(response.headers_mut(), coding);
    metrics
        .compressed
        .get_or_create(&CompressLabels {
            route: route.to_string(),
            encoding: coding.token(),
        })
        .inc();
    let body = std::mem::replace(response.body_mut(), crate::proxy::empty_body());
    *response.body_mut() = CompressedBody::new(body, coding).boxed();
}

/// One encoder writing into a `Vec` that the body empties after each step (a `Vec` is always
/// ready, so the encoder never waits on its output). Brotli's state is boxed: 5.6 KB inline
/// would make every body as large.
enum Encoder {
    Gzip(GzipEncoder<Vec<u8>>),
    Brotli(Box<BrotliEncoder<Vec<u8>>>),
    Zstd(ZstdEncoder<Vec<u8>>),
}

impl Encoder {
    fn new(coding: Coding) -> Encoder {
        match coding {
            Coding::Gzip => Encoder::Gzip(GzipEncoder::new(Vec::new())),
            Coding::Brotli => Encoder::Brotli(Box::new(BrotliEncoder::with_quality(
                Vec::new(),
                Level::Precise(BROTLI_QUALITY),
            ))),
            // zstd's default level (3) is its own on-the-fly setting.
            Coding::Zstd => Encoder::Zstd(ZstdEncoder::new(Vec::new())),
        }
    }

    fn writer(&mut self) -> Pin<&mut (dyn AsyncWrite + Unpin)> {
        let writer: &mut (dyn AsyncWrite + Unpin) = match self {
            Encoder::Gzip(encoder) => encoder,
            Encoder::Brotli(encoder) => encoder.as_mut(),
            Encoder::Zstd(encoder) => encoder,
        };
        Pin::new(writer)
    }

    /// The encoded bytes so far.
    fn take_output(&mut self) -> Bytes {
        let output = match self {
            Encoder::Gzip(encoder) => encoder.get_mut(),
            Encoder::Brotli(encoder) => encoder.get_mut(),
            Encoder::Zstd(encoder) => encoder.get_mut(),
        };
        Bytes::from(std::mem::take(output))
    }

    /// Feeds all of `data` in.
    fn write(&mut self, cx: &mut Context<'_>, mut data: Bytes) -> io::Result<()> {
        while data.has_remaining() {
            match self.writer().poll_write(cx, &data) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(written)) => data.advance(written),
                Poll::Ready(Err(err)) => return Err(err),
                Poll::Pending => return Err(stalled()),
            }
        }
        Ok(())
    }

    /// Pushes out everything written so far (a sync flush: the stream goes on after it).
    fn flush(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.writer().poll_flush(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(stalled()),
        }
    }

    /// Ends the stream (the coding's trailer: gzip's CRC and length, the last brotli block,
    /// zstd's end of frame).
    fn finish(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.writer().poll_shutdown(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(stalled()),
        }
    }
}

/// An encoder over a `Vec` that waits could only be a bug of ours: fail the body rather than
/// hang it.
fn stalled() -> io::Error {
    io::Error::other("the encoder waited on a Vec")
}

/// The server's body, encoded as it streams.
struct CompressedBody {
    inner: Body,
    encoder: Encoder,
    /// Input went into the encoder since the last flush.
    unflushed: bool,
    /// The server's body ended (the encoder is finished).
    ended: bool,
    /// The server's trailers, sent after the last encoded bytes.
    trailers: Option<HeaderMap>,
}

impl CompressedBody {
    fn new(inner: Body, coding: Coding) -> CompressedBody {
        CompressedBody {
            inner,
            encoder: Encoder::new(coding),
            unflushed: false,
            ended: false,
            trailers: None,
        }
    }

    /// The encoded bytes ready, as a frame, if any.
    fn ready(&mut self) -> Option<Frame<Bytes>> {
        let output = self.encoder.take_output();
        (!output.is_empty()).then(|| Frame::data(output))
    }
}

impl HttpBody for CompressedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                if let Some(frame) = this.ready() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        this.encoder.write(cx, data)?;
                        this.unflushed = true;
                        if let Some(frame) = this.ready() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                    Err(frame) => {
                        // Trailers come last: the body is over.
                        this.trailers = frame.into_trailers().ok();
                        this.encoder.finish(cx)?;
                        this.ended = true;
                    }
                },
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
                Poll::Ready(None) => {
                    this.encoder.finish(cx)?;
                    this.ended = true;
                }
                Poll::Pending => {
                    // The server makes us wait: what it sent so far goes to the client now,
                    // not when the encoder's window fills.
                    if std::mem::take(&mut this.unflushed) {
                        this.encoder.flush(cx)?;
                        if let Some(frame) = this.ready() {
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Output may wait in the encoder until the end is polled: never claim the end early.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZstdDecoder};
    use hyper::{StatusCode, header};
    use tokio::io::AsyncReadExt;

    fn text(size: usize) -> Vec<u8> {
        let line =
            b"All happy families are alike; each unhappy family is unhappy in its own way.\n";
        line.iter().copied().cycle().take(size).collect()
    }

    async fn decode(coding: Coding, encoded: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => GzipDecoder::new(encoded).read_to_end(&mut out).await,
            Coding::Brotli => BrotliDecoder::new(encoded).read_to_end(&mut out).await,
            Coding::Zstd => ZstdDecoder::new(encoded).read_to_end(&mut out).await,
        }
        .unwrap_or_else(|err| panic!("{coding:?} output does not decode: {err}"));
        out
    }

    fn body_of(chunks: Vec<Vec<u8>>) -> Body {
        let frames = chunks
            .into_iter()
            .map(|chunk| Ok::<_, BoxError>(Frame::data(Bytes::from(chunk))));
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    fn response(headers: &[(&str, &str)], body: Body) -> Response<Body> {
        let mut builder = Response::builder().status(StatusCode::OK);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(body).expect("response")
    }

    #[tokio::test]
    async fn each_coding_decodes_to_the_original_and_the_headers_say_so() {
        let original = text(200_000);
        for coding in Coding::PREFERENCE {
            let chunks = original.chunks(10_000).map(<[u8]>::to_vec).collect();
            let mut response = response(
                &[
                    ("content-type", "text/plain"),
                    ("content-length", "200000"),
                    ("etag", "\"v1\""),
                ],
                body_of(chunks),
            );
            let metrics = HttpMetrics::default();
            response_phase(&metrics, "app", Some(coding), &mut response);
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_ENCODING], coding.token());
            assert_eq!(headers[header::VARY], "Accept-Encoding");
            assert_eq!(headers.get(header::CONTENT_LENGTH), None);
            assert_eq!(headers[header::ETAG], "W/\"v1\"");
            let encoded = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert!(
                encoded.len() < original.len() / 10,
                "{coding:?}: {} bytes from {}",
                encoded.len(),
                original.len()
            );
            assert!(decode(coding, &encoded).await == original, "{coding:?}");
            let labels = CompressLabels {
                route: "app".into(),
                encoding: coding.token(),
            };
            assert_eq!(metrics.compressed.get_or_create(&labels).get(), 1);
        }
    }

    #[tokio::test]
    async fn small_incompressible_or_unaccepted_answers_pass_untouched() {
        let metrics = HttpMetrics::default();
        let mut small = response(
            &[("content-type", "text/plain"), ("content-length", "5")],
            body_of(vec![b"hello".to_vec()]),
        );
        response_phase(&metrics, "app", Some(Coding::Gzip), &mut small);
        assert_eq!(small.headers().get(header::CONTENT_ENCODING), None);
        assert_eq!(small.headers().get(header::VARY), None);
        assert_eq!(small.headers()[header::CONTENT_LENGTH], "5");

        let mut png = response(
            &[("content-type", "image/png"), ("content-length", "5000")],
            body_of(vec![vec![0; 5000]]),
        );
        response_phase(&metrics, "app", Some(Coding::Gzip), &mut png);
        assert_eq!(png.headers().get(header::CONTENT_ENCODING), None);

        // Compressible, but this client takes none of ours: sent as is, and says it varies.
        let mut plain = response(
            &[("content-type", "text/plain"), ("content-length", "5000")],
            body_of(vec![text(5000)]),
        );
        response_phase(&metrics, "app", None, &mut plain);
        assert_eq!(plain.headers().get(header::CONTENT_ENCODING), None);
        assert_eq!(plain.headers()[header::VARY], "Accept-Encoding");
        let body = plain.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body.len(), 5000);
    }

    #[tokio::test]
    async fn a_streamed_body_is_flushed_whenever_the_server_makes_us_wait() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        for coding in Coding::PREFERENCE {
            let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
            let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
                let chunk = receiver.recv().await?;
                Some((Ok::<_, BoxError>(Frame::data(chunk)), receiver))
            });
            // A JSON stream of unknown length, as a server streams it chunked.
            let mut response = response(
                &[("content-type", "application/json")],
                http_body_util::StreamBody::new(stream).boxed(),
            );
            response_phase(&HttpMetrics::default(), "app", Some(coding), &mut response);
            assert_eq!(response.headers()[header::CONTENT_ENCODING], coding.token());
            let mut body = response.into_body();
            let first = b"{\"event\": 1}\n".to_vec();
            sender.try_send(Bytes::from(first.clone())).expect("send");
            // Polled until it has to wait for the server (the sender stays open): everything
            // the server sent must be out by then, not held in the encoder's window.
            let mut received = Vec::new();
            loop {
                match Pin::new(&mut body).poll_frame(&mut cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        received.extend_from_slice(&frame.into_data().expect("data"));
                    }
                    Poll::Ready(other) => panic!("{coding:?}: the body ended early: {other:?}"),
                    Poll::Pending => break,
                }
            }
            assert_eq!(
                decode_prefix(coding, &received).await,
                first,
                "{coding:?}: the first event reaches the client while the stream is open"
            );
            drop(sender);
            while let Some(frame) = body.frame().await {
                received.extend_from_slice(&frame.expect("no error").into_data().expect("data"));
            }
            assert_eq!(decode(coding, &received).await, first, "{coding:?}");
        }
    }

    /// What a decoder makes of the bytes so far (an unfinished stream: no error for its end).
    async fn decode_prefix(coding: Coding, encoded: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buffer = [0u8; 4096];
        macro_rules! drain {
            ($decoder:expr) => {{
                let mut decoder = $decoder;
                while let Ok(read) = decoder.read(&mut buffer).await {
                    if read == 0 {
                        break;
                    }
                    out.extend_from_slice(&buffer[..read]);
                }
            }};
        }
        match coding {
            Coding::Gzip => drain!(GzipDecoder::new(encoded)),
            Coding::Brotli => drain!(BrotliDecoder::new(encoded)),
            Coding::Zstd => drain!(ZstdDecoder::new(encoded)),
        }
        out
    }
}
