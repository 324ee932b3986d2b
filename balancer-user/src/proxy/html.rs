//! Streaming rewrite of HTML response bodies (`rewrite_html = true`, the mod_proxy_html
//! equivalent): URL attributes that point at the server get the public URL through
//! `ReverseMap`, chunk by chunk with lol_html, in bounded memory. gzip and deflate bodies are
//! decompressed on the way and sent uncompressed; any other content coding passes untouched. A
//! body that cannot be decoded ends in an error (the client sees an aborted response), never in
//! corrupted bytes.

use std::{
    borrow::Cow,
    io::{self, Write},
    pin::Pin,
    sync::{Arc, LazyLock, Mutex, PoisonError},
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes};
use flate2::{Decompress, FlushDecompress, Status, write::GzDecoder};
use http_body_util::BodyExt;
use hyper::{
    StatusCode,
    body::{Body as HttpBody, Frame, SizeHint},
    header::{self, HeaderMap},
    http::response::Parts,
};
use lol_html::{
    ElementContentHandlers, MemorySettings, OutputSink, Selector,
    errors::RewritingError,
    send::{Element, HtmlRewriter, Settings},
};

use super::{Body, BoxError};
use crate::headers::{compression::weaken_etag, rewrite::ReverseMap};

/// A lol_html rewriter buffers at most one tag that spans input chunks (plus its own state); a
/// tag larger than this (a huge inline `data:` URL) ends rewriting for the rest of the body,
/// which then passes through unchanged.
const MAX_REWRITER_MEMORY: usize = 4 * 1024 * 1024;

/// Output is handed on once this much is ready, so a highly compressed body never piles up.
const YIELD_BYTES: usize = 64 * 1024;

/// Uncompressed input is fed to the rewriter in pieces of at most this size.
const FEED_BYTES: usize = 64 * 1024;

/// Output space per inflate step: bounds how much one step of a deflate stream can expand.
const INFLATE_BUFFER: usize = 32 * 1024;

/// What is in a URL attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UrlKind {
    Url,
    /// A comma-separated list of "URL descriptor" candidates.
    SrcSet,
    /// A `<meta http-equiv="refresh">` content: "5; url=/x".
    Refresh,
}

/// The elements and attributes that hold URLs the browser fetches or navigates to.
const URL_ATTRIBUTES: &[(&str, &str, UrlKind)] = &[
    ("a[href]", "href", UrlKind::Url),
    ("area[href]", "href", UrlKind::Url),
    ("link[href]", "href", UrlKind::Url),
    ("base[href]", "href", UrlKind::Url),
    ("img[src]", "src", UrlKind::Url),
    ("img[srcset]", "srcset", UrlKind::SrcSet),
    ("script[src]", "src", UrlKind::Url),
    ("iframe[src]", "src", UrlKind::Url),
    ("frame[src]", "src", UrlKind::Url),
    ("source[src]", "src", UrlKind::Url),
    ("source[srcset]", "srcset", UrlKind::SrcSet),
    ("track[src]", "src", UrlKind::Url),
    ("video[src]", "src", UrlKind::Url),
    ("video[poster]", "poster", UrlKind::Url),
    ("audio[src]", "src", UrlKind::Url),
    ("embed[src]", "src", UrlKind::Url),
    ("object[data]", "data", UrlKind::Url),
    ("form[action]", "action", UrlKind::Url),
    ("button[formaction]", "formaction", UrlKind::Url),
    ("input[formaction]", "formaction", UrlKind::Url),
    ("input[src]", "src", UrlKind::Url),
    ("meta[http-equiv][content]", "content", UrlKind::Refresh),
];

/// Parsed once: every response's rewriter borrows them.
static SELECTORS: LazyLock<Vec<Selector>> = LazyLock::new(|| {
    URL_ATTRIBUTES
        .iter()
        .filter_map(|(selector, _, _)| match selector.parse() {
            Ok(parsed) => Some(parsed),
            Err(err) => {
                // Fixed strings, covered by a test: this cannot happen in a release.
                tracing::error!(selector, "HTML rewriting selector refused: {err}");
                None
            }
        })
        .collect()
});

/// Charset labels (WHATWG Encoding) of encodings that are not ASCII-compatible: markup in them
/// cannot be parsed byte-wise, so such bodies pass untouched.
const NON_ASCII_COMPATIBLE_CHARSETS: &[&str] = &[
    "csunicode",
    "iso-10646-ucs-2",
    "ucs-2",
    "unicode",
    "unicode-1-1",
    "unicodefeff",
    "unicodefffe",
    "utf-16",
    "utf-16be",
    "utf-16le",
    "utf-32",
    "utf-32be",
    "utf-32le",
    "utf-7",
    "csiso2022jp",
    "iso-2022-jp",
    "csiso2022kr",
    "hz-gb-2312",
    "iso-2022-cn",
    "iso-2022-cn-ext",
    "iso-2022-kr",
    "replacement",
];

/// Wraps `body` so that URLs in it pointing at the server point at the public URL instead, and
/// adjusts `parts.headers` to match (no Content-Length, Content-MD5 or Accept-Ranges, a weak
/// ETag, no Content-Encoding when the body was decompressed). Only HTML (`text/html`,
/// `application/xhtml+xml`) with a body in identity, gzip or deflate coding and an
/// ASCII-compatible charset is rewritten; anything else is returned as it came, headers
/// untouched.
pub fn rewrite_html_response(parts: &mut Parts, body: Body, map: Arc<ReverseMap>) -> Body {
    if !has_rewritable_body(parts.status) || body.is_end_stream() {
        return body;
    }
    let Some(charset) = html_charset(&parts.headers) else {
        return body;
    };
    if let Some(charset) = charset
        && NON_ASCII_COMPATIBLE_CHARSETS
            .iter()
            .any(|label| label.eq_ignore_ascii_case(&charset))
    {
        tracing::info!(%charset, "HTML not rewritten: its charset is not ASCII-compatible");
        return body;
    }
    let coding = match content_coding(&parts.headers) {
        Ok(coding) => coding,
        Err(codings) => {
            tracing::info!(content_encoding = %codings, "HTML not rewritten: cannot decode its content coding, passed unchanged");
            return body;
        }
    };

    let headers = &mut parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    headers.remove("content-md5");
    // A range of the original bytes is not a range of the rewritten ones.
    headers.remove(header::ACCEPT_RANGES);
    if coding != Coding::Identity {
        headers.remove(header::CONTENT_ENCODING);
    }
    // The rewritten body is a different representation: a strong validator would claim byte
    // equality with the server's (RFC 9110 §8.8.1).
    weaken_etag(headers);

    let output = SharedOutput::default();
    let sink = HtmlSink {
        rewriter: Some(rewriter(map, output.clone())),
        output: output.clone(),
        sniffed: false,
    };
    let decoder = match coding {
        Coding::Identity => Decoder::Identity(Box::new(sink)),
        Coding::Gzip => Decoder::Gzip(Box::new(GzDecoder::new(sink))),
        Coding::Deflate => Decoder::Deflate(Box::new(Inflate::new(sink))),
    };
    HtmlBody {
        inner: body,
        pipeline: Mutex::new(Pipeline { decoder, output }),
        pending: Bytes::new(),
        input_seen: false,
        ended: false,
        finished: false,
    }
    .boxed()
}

/// Responses without content (RFC 9110 §6.4.1), and 206 whose byte ranges would no longer match.
fn has_rewritable_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// Whether the answer is an HTML document (text/html or XHTML), the only kind rewritten.
pub fn is_html(headers: &HeaderMap) -> bool {
    html_charset(headers).is_some()
}

/// `None`: not HTML. `Some(charset)`: HTML, with the `charset` parameter if any.
fn html_charset(headers: &HeaderMap) -> Option<Option<String>> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let mut params = content_type.split(';');
    let media_type = params.next()?.trim();
    if !(media_type.eq_ignore_ascii_case("text/html")
        || media_type.eq_ignore_ascii_case("application/xhtml+xml"))
    {
        return None;
    }
    let charset = params.find_map(|param| {
        let (name, value) = param.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"').to_string())
    });
    Some(charset)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Identity,
    Gzip,
    Deflate,
}

/// The body's content coding, if this module can decode it; `Err` with the codings otherwise
/// (unknown ones, or several stacked).
fn content_coding(headers: &HeaderMap) -> Result<Coding, String> {
    let mut codings = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let Ok(text) = value.to_str() else {
            return Err(String::from_utf8_lossy(value.as_bytes()).into_owned());
        };
        codings.extend(
            text.split(',')
                .map(|coding| coding.trim().to_ascii_lowercase())
                .filter(|coding| !coding.is_empty() && coding != "identity"),
        );
    }
    match codings.as_slice() {
        [] => Ok(Coding::Identity),
        [one] if one == "gzip" || one == "x-gzip" => Ok(Coding::Gzip),
        [one] if one == "deflate" => Ok(Coding::Deflate),
        _ => Err(codings.join(", ")),
    }
}

type Rewriter = HtmlRewriter<'static, SharedOutput>;

fn rewriter(map: Arc<ReverseMap>, output: SharedOutput) -> Rewriter {
    let mut settings = Settings::new_send()
        // Ambiguous markup (`<select><xmp>`) only decides whether a tag is seen; rewriting a
        // URL in it or not is harmless, failing the whole page is not.
        .with_strict(false)
        .with_memory_settings(
            MemorySettings::new()
                .with_max_allowed_memory_usage(MAX_REWRITER_MEMORY)
                .with_graceful_bail_out_on_memory_limit_exceeded(true),
        );
    for (selector, &(_, attribute, kind)) in SELECTORS.iter().zip(URL_ATTRIBUTES) {
        let map = map.clone();
        let handlers = ElementContentHandlers::default().element(move |element: &mut Element| {
            rewrite_attribute(element, attribute, kind, &map);
            Ok(())
        });
        settings = settings.append_element_content_handler((Cow::Borrowed(selector), handlers));
    }
    HtmlRewriter::new(settings, output)
}

fn rewrite_attribute(element: &mut Element, attribute: &str, kind: UrlKind, map: &ReverseMap) {
    if kind == UrlKind::Refresh
        && !element
            .get_attribute("http-equiv")
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("refresh"))
    {
        return;
    }
    let Some(value) = element.get_attribute(attribute) else {
        return;
    };
    // The rewriter decodes values as UTF-8; a value that was not (a Latin-1 byte) would be
    // written back with U+FFFD in place of its bytes. Such values are left as they are; every
    // other value round-trips byte for byte whatever the document's ASCII-compatible charset.
    if value.contains('\u{FFFD}') {
        return;
    }
    let rewritten = match kind {
        UrlKind::Url => map.url(&value),
        UrlKind::SrcSet => map.srcset(&value),
        UrlKind::Refresh => map.refresh(&value),
    };
    if let Some(rewritten) = rewritten
        && let Err(err) = element.set_attribute(attribute, &rewritten)
    {
        tracing::debug!(attribute, "HTML rewriting: attribute not set: {err}");
    }
}

/// Where the rewriter writes: the body takes what has accumulated after each step.
#[derive(Clone, Default)]
struct SharedOutput(Arc<Mutex<Vec<u8>>>);

impl SharedOutput {
    fn buffer(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, bytes: &[u8]) {
        self.buffer().extend_from_slice(bytes);
    }

    fn len(&self) -> usize {
        self.buffer().len()
    }

    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.buffer()))
    }

    fn clear(&self) {
        self.buffer().clear();
    }
}

impl OutputSink for SharedOutput {
    fn handle_chunk(&mut self, chunk: &[u8]) {
        self.push(chunk);
    }
}

/// The decoded HTML goes here: into the rewriter, or straight to the output once rewriting has
/// been given up (a tag over the memory limit, a UTF-16 byte order mark).
struct HtmlSink {
    rewriter: Option<Rewriter>,
    output: SharedOutput,
    sniffed: bool,
}

impl HtmlSink {
    fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if !self.sniffed {
            self.sniffed = true;
            // A byte order mark overrides any charset label (WHATWG Encoding §6, "decode").
            if data.starts_with(&[0xFF, 0xFE]) || data.starts_with(&[0xFE, 0xFF]) {
                tracing::info!("HTML not rewritten: the body is UTF-16 (byte order mark)");
                self.rewriter = None;
            }
        }
        let Some(rewriter) = self.rewriter.as_mut() else {
            self.output.push(data);
            return Ok(());
        };
        let written = rewriter.write(data);
        self.settle(written)
    }

    fn end(&mut self) -> io::Result<()> {
        match self.rewriter.take() {
            Some(rewriter) => {
                let ended = rewriter.end();
                self.settle(ended)
            }
            None => Ok(()),
        }
    }

    fn settle(&mut self, result: Result<(), RewritingError>) -> io::Result<()> {
        match result {
            Ok(()) => Ok(()),
            // With the graceful bail-out the rewriter has already passed every byte it held on
            // unchanged; the rest of the body follows it as is.
            Err(RewritingError::MemoryLimitExceeded(err)) => {
                tracing::info!(
                    "HTML rewriting stopped ({err}): the rest of the body passes unchanged"
                );
                self.rewriter = None;
                Ok(())
            }
            Err(err) => {
                self.rewriter = None;
                Err(io::Error::other(format!("HTML rewriting failed: {err}")))
            }
        }
    }
}

impl Write for HtmlSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.feed(data)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `Content-Encoding: deflate`: zlib (RFC 9110 §8.4.1.2), or raw deflate as some servers send
/// and browsers accept, told apart by the zlib header check (RFC 1950 §2.2).
struct Inflate {
    decompress: Option<Decompress>,
    header: Vec<u8>,
    ended: bool,
    buffer: Vec<u8>,
    sink: HtmlSink,
}

impl Inflate {
    fn new(sink: HtmlSink) -> Inflate {
        Inflate {
            decompress: None,
            header: Vec::with_capacity(2),
            ended: false,
            buffer: Vec::with_capacity(INFLATE_BUFFER),
            sink,
        }
    }

    fn write(&mut self, input: &[u8]) -> io::Result<usize> {
        if self.decompress.is_some() {
            return self.inflate(input, FlushDecompress::None);
        }
        let take = (2 - self.header.len()).min(input.len());
        self.header.extend_from_slice(&input[..take]);
        if let &[cmf, flg] = self.header.as_slice() {
            let zlib = cmf & 0x0F == 8
                && cmf >> 4 <= 7
                && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0;
            self.decompress = Some(Decompress::new(zlib));
            let header = std::mem::take(&mut self.header);
            let mut rest = header.as_slice();
            while !rest.is_empty() {
                let consumed = self.inflate(rest, FlushDecompress::None)?;
                rest = &rest[consumed..];
            }
        }
        Ok(take)
    }

    /// One step: consumes some of `input`, produces at most `INFLATE_BUFFER` bytes.
    fn inflate(&mut self, input: &[u8], flush: FlushDecompress) -> io::Result<usize> {
        if self.ended {
            return if input.is_empty() {
                Ok(0)
            } else {
                Err(corrupt("data after the end of the deflate stream"))
            };
        }
        let Some(decompress) = self.decompress.as_mut() else {
            return Err(corrupt("truncated deflate stream"));
        };
        self.buffer.clear();
        let before = decompress.total_in();
        let status = decompress
            .decompress_vec(input, &mut self.buffer, flush)
            .map_err(|err| corrupt(&format!("corrupt deflate stream: {err}")))?;
        let consumed = usize::try_from(decompress.total_in() - before)
            .map_err(|_| corrupt("deflate step too large"))?;
        self.ended = status == Status::StreamEnd;
        if consumed == 0 && self.buffer.is_empty() && !self.ended {
            return Err(corrupt("truncated or corrupt deflate stream"));
        }
        self.sink.feed(&self.buffer)?;
        Ok(consumed)
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.decompress.is_none() && !self.header.is_empty() {
            return Err(corrupt("truncated deflate stream"));
        }
        if self.decompress.is_some() {
            // What the decompressor still holds; an error if the stream never ended.
            while !self.ended {
                self.inflate(&[], FlushDecompress::Finish)?;
            }
        }
        self.sink.end()
    }
}

fn corrupt(reason: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.to_string())
}

/// Decompression (if any) in front of the rewriter.
enum Decoder {
    Identity(Box<HtmlSink>),
    Gzip(Box<GzDecoder<HtmlSink>>),
    Deflate(Box<Inflate>),
    Finished,
}

impl Decoder {
    /// Feeds part of `input` (at least one byte of it, or fails); returns how much was used.
    /// Each call produces a bounded amount of output.
    fn write(&mut self, input: &[u8]) -> io::Result<usize> {
        match self {
            Decoder::Identity(sink) => {
                let piece = &input[..input.len().min(FEED_BYTES)];
                sink.feed(piece)?;
                Ok(piece.len())
            }
            Decoder::Gzip(decoder) => {
                // flate2 parses the header, inflates into at most 32 KiB per call and checks
                // the CRC and length trailer; after the trailer it takes nothing more.
                let consumed = decoder.write(input)?;
                if consumed == 0 && !input.is_empty() {
                    return Err(corrupt(
                        "data after the end of the gzip stream (several members are not supported)",
                    ));
                }
                Ok(consumed)
            }
            Decoder::Deflate(inflate) => inflate.write(input),
            Decoder::Finished => Err(io::Error::other("HTML body written after its end")),
        }
    }

    /// All of the input so far is in: hand on what the decompressor holds back.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Decoder::Gzip(decoder) => decoder.flush(),
            _ => Ok(()),
        }
    }

    /// The input is over: checks that the compressed stream was complete and flushes the
    /// rewriter. `input_seen` false: an empty body, which is complete in any coding.
    fn finish(&mut self, input_seen: bool) -> io::Result<()> {
        match std::mem::replace(self, Decoder::Finished) {
            Decoder::Identity(mut sink) => sink.end(),
            Decoder::Gzip(mut decoder) if !input_seen => decoder.get_mut().end(),
            Decoder::Gzip(decoder) => decoder.finish()?.end(),
            Decoder::Deflate(mut inflate) => inflate.finish(),
            Decoder::Finished => Ok(()),
        }
    }
}

struct Pipeline {
    decoder: Decoder,
    output: SharedOutput,
}

pin_project_lite::pin_project! {
    /// The rewritten body: pulls the server's body, pushes it through the pipeline and yields
    /// what comes out, a step at a time.
    struct HtmlBody {
        #[pin]
        inner: Body,
        // The rewriter is Send but not Sync (its handlers are `FnMut + Send`), and `Body`
        // needs Sync: the Mutex provides it. It is only ever reached through `get_mut`, which
        // takes no lock.
        pipeline: Mutex<Pipeline>,
        // Input taken from `inner` and not yet fed.
        pending: Bytes,
        input_seen: bool,
        // `inner` is over and the pipeline finished.
        ended: bool,
        // Nothing more will be yielded.
        finished: bool,
    }
}

impl HttpBody for HtmlBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.finished {
            return Poll::Ready(None);
        }
        let pipeline = this
            .pipeline
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let fail = |finished: &mut bool, output: &SharedOutput, err: io::Error| {
            tracing::warn!("HTML rewriting: response body aborted: {err}");
            *finished = true;
            // Bytes decoded just before the failure may already be wrong: they are dropped.
            output.clear();
            Poll::Ready(Some(Err(BoxError::from(err))))
        };
        loop {
            if !this.pending.is_empty() {
                match pipeline.decoder.write(this.pending) {
                    Ok(consumed) => this.pending.advance(consumed),
                    Err(err) => return fail(this.finished, &pipeline.output, err),
                }
                if this.pending.is_empty()
                    && let Err(err) = pipeline.decoder.flush()
                {
                    return fail(this.finished, &pipeline.output, err);
                }
                if pipeline.output.len() >= YIELD_BYTES {
                    return Poll::Ready(Some(Ok(Frame::data(pipeline.output.take()))));
                }
                continue;
            }
            if pipeline.output.len() > 0 {
                return Poll::Ready(Some(Ok(Frame::data(pipeline.output.take()))));
            }
            if *this.ended {
                *this.finished = true;
                return Poll::Ready(None);
            }
            match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers are dropped: none of them would describe the rewritten bytes.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        *this.input_seen = true;
                        *this.pending = data;
                    }
                }
                Some(Err(err)) => {
                    *this.finished = true;
                    pipeline.output.clear();
                    return Poll::Ready(Some(Err(err)));
                }
                None => match pipeline.decoder.finish(*this.input_seen) {
                    Ok(()) => *this.ended = true,
                    Err(err) => return fail(this.finished, &pipeline.output, err),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::{
        Compression,
        write::{DeflateEncoder, GzEncoder, ZlibEncoder},
    };
    use futures_util::stream;
    use http_body_util::StreamBody;
    use hyper::Response;

    use super::*;
    use crate::headers::rewrite::{BackendUrl, PublicUrl};

    fn map() -> Arc<ReverseMap> {
        Arc::new(ReverseMap::new(
            PublicUrl {
                scheme: "https",
                host: "www.example.test".into(),
                prefix: "/webapps".into(),
            },
            BackendUrl {
                authorities: vec!["198.18.1.2:8000".into()],
            },
        ))
    }

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut builder = Response::builder().status(200);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("response").into_parts().0
    }

    /// A body that yields `bytes` in pieces of `size`, then `error` if given.
    fn chunked(bytes: &[u8], size: usize, error: Option<&str>) -> Body {
        let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = bytes
            .chunks(size)
            .map(|chunk| Ok(Frame::data(Bytes::copy_from_slice(chunk))))
            .collect();
        if let Some(error) = error {
            frames.push(Err(BoxError::from(error.to_string())));
        }
        StreamBody::new(stream::iter(frames)).boxed()
    }

    async fn collect(body: Body) -> Result<Vec<u8>, BoxError> {
        Ok(body.collect().await?.to_bytes().to_vec())
    }

    /// Every rewritten attribute kind, plus what must stay: other hosts, relative URLs, text,
    /// entities, attribute quoting and case.
    const PAGE: &str = concat!(
        "<!DOCTYPE html><html><head>",
        "<base href=\"http://198.18.1.2:8000/\">",
        "<link rel=stylesheet href='/static/site.css'>",
        "<meta http-equiv=\"Refresh\" content=\"30; url=/next/\">",
        "<meta name=\"description\" content=\"/not/a/refresh\">",
        "<script src=\"/static/app.js\"></script>",
        "</head><body>",
        "<a href=\"http://198.18.1.2:8000/accounts/login/?next=/a&amp;b=1#top\" class=x>in</a>",
        "<a href=\"https://elsewhere.test/\">out</a> <a href=\"relative/page\">rel</a>",
        "<A HREF=/upper>upper</A>",
        "<img src=\"/i.png\" srcset=\"/i.png 1x, //198.18.1.2:8000/i2.png 2x\" alt=\"/i.png\">",
        "<picture><source srcset=\"/s.webp\"></picture>",
        "<video src=\"/v.mp4\" poster=\"/p.jpg\"><track src=\"/t.vtt\"></video><audio src=\"/a.ogg\"></audio>",
        "<iframe src=\"/frame\"></iframe><embed src=\"/e.swf\"><object data=\"/o.pdf\"></object>",
        "<form action=\"/post/\" method=post><input type=image src=\"/go.png\">",
        "<button formaction=\"/other/\">b</button><input formaction=\"/webapps/kept/\"></form>",
        "<p>Text with /paths and http://198.18.1.2:8000/ stays.</p>",
        "<!-- <a href=\"/in-comment\"> -->",
        "</body></html>",
    );

    const REWRITTEN: &str = concat!(
        "<!DOCTYPE html><html><head>",
        "<base href=\"https://www.example.test/webapps/\">",
        "<link rel=stylesheet href=\"/webapps/static/site.css\">",
        "<meta http-equiv=\"Refresh\" content=\"30; url=/webapps/next/\">",
        "<meta name=\"description\" content=\"/not/a/refresh\">",
        "<script src=\"/webapps/static/app.js\"></script>",
        "</head><body>",
        "<a href=\"https://www.example.test/webapps/accounts/login/?next=/a&amp;b=1#top\" class=x>in</a>",
        "<a href=\"https://elsewhere.test/\">out</a> <a href=\"relative/page\">rel</a>",
        "<A HREF=\"/webapps/upper\">upper</A>",
        "<img src=\"/webapps/i.png\" srcset=\"/webapps/i.png 1x, //www.example.test/webapps/i2.png 2x\" alt=\"/i.png\">",
        "<picture><source srcset=\"/webapps/s.webp\"></picture>",
        "<video src=\"/webapps/v.mp4\" poster=\"/webapps/p.jpg\"><track src=\"/webapps/t.vtt\"></video><audio src=\"/webapps/a.ogg\"></audio>",
        "<iframe src=\"/webapps/frame\"></iframe><embed src=\"/webapps/e.swf\"><object data=\"/webapps/o.pdf\"></object>",
        "<form action=\"/webapps/post/\" method=post><input type=image src=\"/webapps/go.png\">",
        "<button formaction=\"/webapps/other/\">b</button><input formaction=\"/webapps/kept/\"></form>",
        "<p>Text with /paths and http://198.18.1.2:8000/ stays.</p>",
        "<!-- <a href=\"/in-comment\"> -->",
        "</body></html>",
    );

    #[test]
    fn every_selector_parses() {
        assert_eq!(SELECTORS.len(), URL_ATTRIBUTES.len());
    }

    #[test]
    fn the_body_is_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<HtmlBody>();
    }

    #[tokio::test]
    async fn plain_html_is_rewritten_whatever_the_chunking() {
        // Sizes that cut tags, attribute names and values, and entities in the middle.
        for size in [1, 2, 3, 7, 13, 64, PAGE.len()] {
            let mut parts = parts(&[
                ("content-type", "text/html; charset=utf-8"),
                ("content-length", &PAGE.len().to_string()),
                ("etag", "\"v1\""),
                ("accept-ranges", "bytes"),
                ("content-md5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
            ]);
            let body =
                rewrite_html_response(&mut parts, chunked(PAGE.as_bytes(), size, None), map());
            let out = collect(body).await.expect("body");
            assert_eq!(
                String::from_utf8_lossy(&out),
                REWRITTEN,
                "chunks of {size} bytes"
            );
            assert!(
                parts.headers.get(header::CONTENT_LENGTH).is_none(),
                "Content-Length kept"
            );
            assert!(
                parts.headers.get("content-md5").is_none(),
                "Content-MD5 kept"
            );
            assert!(
                parts.headers.get(header::ACCEPT_RANGES).is_none(),
                "Accept-Ranges kept"
            );
            assert_eq!(parts.headers[header::ETAG], "W/\"v1\"");
            assert_eq!(
                parts.headers[header::CONTENT_TYPE],
                "text/html; charset=utf-8"
            );
        }
    }

    #[tokio::test]
    async fn xhtml_is_rewritten_and_a_weak_etag_stays() {
        let mut parts = parts(&[
            ("content-type", "application/xhtml+xml"),
            ("etag", "W/\"v1\""),
        ]);
        let body = rewrite_html_response(&mut parts, chunked(b"<a href=\"/x\"/>", 4, None), map());
        // lol_html writes a rewritten tag back with a space before "/>".
        assert_eq!(
            collect(body).await.expect("body"),
            b"<a href=\"/webapps/x\" />"
        );
        assert_eq!(parts.headers[header::ETAG], "W/\"v1\"");
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip")
    }

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).expect("zlib");
        encoder.finish().expect("zlib")
    }

    fn raw_deflate(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).expect("deflate");
        encoder.finish().expect("deflate")
    }

    #[tokio::test]
    async fn compressed_html_is_decompressed_rewritten_and_sent_plain() {
        let cases: [(&str, &str, Vec<u8>); 4] = [
            ("gzip", "gzip", gzip(PAGE.as_bytes())),
            ("x-gzip", "x-gzip", gzip(PAGE.as_bytes())),
            ("zlib deflate", "deflate", zlib(PAGE.as_bytes())),
            ("raw deflate", "Deflate", raw_deflate(PAGE.as_bytes())),
        ];
        for (name, coding, compressed) in cases {
            for size in [1, 5, compressed.len()] {
                let mut parts = parts(&[
                    ("content-type", "text/html"),
                    ("content-encoding", coding),
                    ("content-length", &compressed.len().to_string()),
                    ("vary", "Accept-Encoding"),
                ]);
                let body =
                    rewrite_html_response(&mut parts, chunked(&compressed, size, None), map());
                let out = collect(body)
                    .await
                    .unwrap_or_else(|err| panic!("{name}, chunks of {size}: {err}"));
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    REWRITTEN,
                    "{name}, chunks of {size}"
                );
                assert!(
                    parts.headers.get(header::CONTENT_ENCODING).is_none(),
                    "{name}: Content-Encoding kept"
                );
                assert!(
                    parts.headers.get(header::CONTENT_LENGTH).is_none(),
                    "{name}: Content-Length kept"
                );
                assert_eq!(parts.headers[header::VARY], "Accept-Encoding");
            }
        }
    }

    #[tokio::test]
    async fn other_codings_and_stacked_codings_pass_untouched() {
        let bytes = b"\x1b\x00not really brotli <a href=\"/x\">".to_vec();
        for coding in ["br", "zstd", "gzip, br", "compress"] {
            let mut parts = parts(&[
                ("content-type", "text/html"),
                ("content-encoding", coding),
                ("content-length", &bytes.len().to_string()),
                ("etag", "\"v1\""),
            ]);
            let before = parts.headers.clone();
            let body = rewrite_html_response(&mut parts, chunked(&bytes, 3, None), map());
            assert_eq!(collect(body).await.expect("body"), bytes, "{coding}");
            assert_eq!(parts.headers, before, "{coding}: headers changed");
        }
    }

    #[tokio::test]
    async fn non_html_and_bodiless_responses_pass_untouched() {
        let html = b"<a href=\"/x\">x</a>";
        type Case<'a> = (&'a str, u16, &'a [(&'a str, &'a str)]);
        let cases: &[Case] = &[
            ("json", 200, &[("content-type", "application/json")]),
            ("no content type", 200, &[]),
            (
                "text/plain",
                200,
                &[("content-type", "text/plain; charset=utf-8")],
            ),
            ("html-ish", 200, &[("content-type", "text/htmlx")]),
            (
                "partial content",
                206,
                &[
                    ("content-type", "text/html"),
                    ("content-range", "bytes 0-17/100"),
                ],
            ),
            (
                "utf-16 charset",
                200,
                &[("content-type", "text/html; charset=\"UTF-16LE\"")],
            ),
        ];
        for (name, status, headers) in cases {
            let mut parts = parts(headers);
            parts.status = StatusCode::from_u16(*status).expect("status");
            let before = parts.headers.clone();
            let body = rewrite_html_response(&mut parts, chunked(html, 4, None), map());
            assert_eq!(collect(body).await.expect("body"), html, "{name}");
            assert_eq!(parts.headers, before, "{name}: headers changed");
        }
        // An empty body (HEAD, or a server that sent nothing) keeps its headers too.
        let mut parts = parts(&[("content-type", "text/html"), ("content-length", "18")]);
        let body = rewrite_html_response(&mut parts, crate::proxy::empty_body(), map());
        assert!(collect(body).await.expect("body").is_empty());
        assert_eq!(parts.headers[header::CONTENT_LENGTH], "18");
    }

    #[tokio::test]
    async fn iso_8859_1_bytes_survive_byte_for_byte() {
        // 0xE9 is 'é' in ISO-8859-1 and not UTF-8: in text, in another attribute of a
        // rewritten tag, and inside a URL (left alone rather than mangled).
        let page: &[u8] =
            b"<p>caf\xe9</p><a title=\"caf\xe9\" href=\"/menu\">m</a><a href=\"/caf\xe9\">c</a>";
        let expected: &[u8] = b"<p>caf\xe9</p><a title=\"caf\xe9\" href=\"/webapps/menu\">m</a><a href=\"/caf\xe9\">c</a>";
        for size in [1, 5, page.len()] {
            let mut parts = parts(&[("content-type", "text/html; charset=ISO-8859-1")]);
            let body = rewrite_html_response(&mut parts, chunked(page, size, None), map());
            assert_eq!(
                collect(body).await.expect("body"),
                expected,
                "chunks of {size}"
            );
        }
    }

    #[tokio::test]
    async fn a_utf16_body_with_a_byte_order_mark_passes_unchanged() {
        let page: Vec<u8> = std::iter::once(0xFEFF_u16)
            .chain("<a href=\"/x\">".encode_utf16())
            .flat_map(u16::to_le_bytes)
            .collect();
        let mut parts = parts(&[("content-type", "text/html")]);
        let body = rewrite_html_response(&mut parts, chunked(&page, 3, None), map());
        assert_eq!(collect(body).await.expect("body"), page);
    }

    #[tokio::test]
    async fn broken_compressed_bodies_end_in_an_error() {
        let good = gzip(PAGE.as_bytes());
        let mut flipped = good.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xFF;
        let mut bad_crc = good.clone();
        let crc_at = bad_crc.len() - 8;
        bad_crc[crc_at] ^= 0x01;
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"garbage");
        let zlib_good = zlib(PAGE.as_bytes());
        let cases: Vec<(&str, &str, Vec<u8>)> = vec![
            ("gzip, not gzip at all", "gzip", PAGE.as_bytes().to_vec()),
            ("gzip, a flipped byte", "gzip", flipped),
            ("gzip, wrong CRC", "gzip", bad_crc),
            ("gzip, truncated", "gzip", good[..good.len() - 20].to_vec()),
            (
                "gzip, truncated trailer",
                "gzip",
                good[..good.len() - 3].to_vec(),
            ),
            ("gzip, data after the end", "gzip", trailing),
            (
                "zlib, truncated",
                "deflate",
                zlib_good[..zlib_good.len() / 2].to_vec(),
            ),
            ("zlib, one byte", "deflate", zlib_good[..1].to_vec()),
            (
                "deflate, not deflate",
                "deflate",
                b"\xff\xff\xff\xff\xff\xff".to_vec(),
            ),
        ];
        for (name, coding, bytes) in cases {
            let mut parts = parts(&[("content-type", "text/html"), ("content-encoding", coding)]);
            let body = rewrite_html_response(&mut parts, chunked(&bytes, 7, None), map());
            assert!(
                collect(body).await.is_err(),
                "{name}: the body ended normally"
            );
        }
    }

    #[tokio::test]
    async fn an_upstream_error_is_passed_on() {
        let mut parts = parts(&[("content-type", "text/html")]);
        let body = rewrite_html_response(
            &mut parts,
            chunked(PAGE.as_bytes(), 10, Some("reset")),
            map(),
        );
        let err = collect(body).await.expect_err("the server's body failed");
        assert_eq!(err.to_string(), "reset");
    }

    #[tokio::test]
    async fn a_tag_over_the_memory_limit_ends_rewriting_not_the_page() {
        let image = "A".repeat(MAX_REWRITER_MEMORY + 1024 * 1024);
        let page = format!(
            "<a href=\"/a\">a</a><img src=\"data:image/png;base64,{image}\"><a href=\"/b\">b</a>"
        );
        let expected = format!(
            "<a href=\"/webapps/a\">a</a><img src=\"data:image/png;base64,{image}\"><a href=\"/b\">b</a>"
        );
        let mut parts = parts(&[("content-type", "text/html")]);
        let body =
            rewrite_html_response(&mut parts, chunked(page.as_bytes(), 64 * 1024, None), map());
        let out = collect(body).await.expect("body");
        assert_eq!(out.len(), expected.len(), "length after the bail-out");
        assert!(
            out == expected.as_bytes(),
            "the page changed beyond the first link"
        );
    }

    #[tokio::test]
    async fn output_streams_in_bounded_frames() {
        // 4 MiB of HTML compresses to a few KiB: frames must stay small all the same.
        let row = "<tr><td><a href=\"/item/1\">item</a></td></tr>\n";
        let page = row.repeat(4 * 1024 * 1024 / row.len());
        let compressed = gzip(page.as_bytes());
        let mut parts = parts(&[("content-type", "text/html"), ("content-encoding", "gzip")]);
        let mut body =
            rewrite_html_response(&mut parts, chunked(&compressed, 16 * 1024, None), map());
        let (mut total, mut largest, mut rewritten) = (0usize, 0usize, 0usize);
        while let Some(frame) = body.frame().await {
            let data = frame.expect("frame").into_data().expect("data");
            largest = largest.max(data.len());
            total += data.len();
            rewritten += data.windows(8).filter(|w| w == b"/webapps").count();
        }
        let rows = page.len() / row.len();
        assert_eq!(total, page.len() + rows * "/webapps".len());
        assert_eq!(rewritten, rows);
        assert!(largest <= 256 * 1024, "a frame of {largest} bytes");
    }

    #[tokio::test]
    async fn output_comes_before_the_input_ends() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let frames = stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let mut parts = parts(&[("content-type", "text/html")]);
        let mut body = rewrite_html_response(&mut parts, StreamBody::new(frames).boxed(), map());
        tx.send(Ok(Frame::data(Bytes::from_static(
            b"<p>first</p><a href=\"/x\">x</a><p>",
        ))))
        .await
        .expect("send");
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
            .await
            .expect("no output before the end of the input")
            .expect("a frame")
            .expect("data")
            .into_data()
            .expect("data");
        assert!(
            first.starts_with(b"<p>first</p><a href=\"/webapps/x\">x</a>"),
            "first frame: {first:?}"
        );
        tx.send(Ok(Frame::data(Bytes::from_static(b"end</p>"))))
            .await
            .expect("send");
        drop(tx);
        let rest = collect(body).await.expect("rest");
        assert_eq!(
            [first.to_vec(), rest].concat(),
            b"<p>first</p><a href=\"/webapps/x\">x</a><p>end</p>"
        );
    }
}
