//! Static files from a route's `static_dir`: GET and HEAD of regular files below the directory
//! (never outside it, symlinks included), a directory's `index.html`, validators (ETag,
//! Last-Modified) with conditional requests, and single byte ranges. Files are streamed.

use std::{
    ffi::OsStr,
    io::{self, SeekFrom},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::{
    Method, Response, StatusCode,
    body::Frame,
    header::{self, HeaderMap, HeaderValue},
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{Body, BoxError};
use crate::http::{conditional, date, percent};

/// Read size when streaming a file.
const CHUNK_SIZE: usize = 64 * 1024;

/// Why a static file is not served. `status` is the answer; the caller adds `Allow: GET, HEAD`
/// to a 405 and `Content-Range: bytes */length` to a 416.
#[derive(Debug, thiserror::Error)]
pub enum StaticError {
    /// No such file below the root, or a path that is refused (traversal, NUL, backslash,
    /// a symlink leading outside the root, a directory without `index.html`).
    #[error("not found")]
    NotFound,
    /// The file or a directory on the way is not readable by the proxy.
    #[error("forbidden")]
    Forbidden,
    /// Not GET or HEAD.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A single byte range that starts at or after the end of the file.
    #[error("range not satisfiable (length {length})")]
    RangeNotSatisfiable { length: u64 },
    #[error("I/O error: {0}")]
    Io(#[source] io::Error),
}

impl StaticError {
    #[cfg(test)]
    pub fn status(&self) -> StatusCode {
        match self {
            StaticError::NotFound => StatusCode::NOT_FOUND,
            StaticError::Forbidden => StatusCode::FORBIDDEN,
            StaticError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            StaticError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            StaticError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Answers a GET or HEAD for `relative_path` (the request path below the route's prefix, still
/// percent-encoded, starting with '/', without the query) from the directory `root`.
/// `public_path` is the path the client asked for; a directory requested without its trailing
/// slash is redirected (301) to `public_path + "/"`.
///
/// Answers 200 (or 206 for a single satisfiable `Range`, 304 when `If-None-Match` /
/// `If-Modified-Since` say the client's copy is current, 412 when `If-Match` /
/// `If-Unmodified-Since` fail) with Content-Type, Content-Length, Last-Modified, ETag and
/// Accept-Ranges. HEAD gets the same headers and no body.
pub async fn serve(
    root: &Path,
    relative_path: &str,
    public_path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<Body>, StaticError> {
    let head = match *method {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Err(StaticError::MethodNotAllowed),
    };

    let target = match resolve(root, relative_path).await? {
        Target::File(path) => path,
        Target::AddSlash => {
            return Ok(empty_response(StatusCode::MOVED_PERMANENTLY)
                .header(header::LOCATION, slash_location(public_path)?)
                .header(header::CONTENT_LENGTH, 0)
                .body(crate::proxy::empty_body())
                .expect("valid redirect"));
        }
    };

    // O_NONBLOCK: opening a FIFO swapped in since the check must not hang. O_NOFOLLOW: nor may a
    // symlink swapped in for the final component be followed.
    let mut file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&target.canonical)
        .await
        .map_err(classify)?;
    let metadata = file.metadata().await.map_err(classify)?;
    if !metadata.is_file() {
        return Err(StaticError::NotFound);
    }
    let length = metadata.len();
    let modified = metadata.modified().ok();
    let validators = Validators::new(length, modified);

    match conditional::preconditions(headers, &validators.current()) {
        conditional::Precondition::Proceed => {}
        conditional::Precondition::NotModified => {
            return Ok(validators
                .apply(empty_response(StatusCode::NOT_MODIFIED))
                .body(crate::proxy::empty_body())
                .expect("valid 304"));
        }
        conditional::Precondition::Failed => {
            return Ok(empty_response(StatusCode::PRECONDITION_FAILED)
                .header(header::CONTENT_LENGTH, 0)
                .body(crate::proxy::empty_body())
                .expect("valid 412"));
        }
    }

    // Range handling is defined for GET only (RFC 9110 §14.2).
    let range = if head || !conditional::if_range_holds(headers, &validators.current()) {
        None
    } else {
        requested_range(headers, length)?
    };

    let content_type = content_type(&target.requested);
    let mut response = validators
        .apply(Response::builder())
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT_RANGES, "bytes");
    let (start, count) = match range {
        Some((start, end)) => {
            response = response.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{length}"),
            );
            (start, end - start + 1)
        }
        None => (0, length),
    };
    response = response.header(header::CONTENT_LENGTH, count);

    let body = if head || count == 0 {
        crate::proxy::empty_body()
    } else {
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(StaticError::Io)?;
        }
        let stream = ReaderStream::with_capacity(file.take(count), CHUNK_SIZE)
            .map(|chunk| chunk.map(Frame::data).map_err(BoxError::from));
        BodyExt::boxed(StreamBody::new(stream))
    };
    Ok(response.body(body).expect("valid static file response"))
}

fn empty_response(status: StatusCode) -> hyper::http::response::Builder {
    Response::builder().status(status)
}

/// `public_path + "/"`, with a leading run of slashes (or backslashes) collapsed to one so that
/// the Location can never be read as a scheme-relative URL to another host.
fn slash_location(public_path: &str) -> Result<HeaderValue, StaticError> {
    let rest = public_path.trim_start_matches(['/', '\\']);
    let location = if rest.is_empty() {
        "/".to_string()
    } else {
        format!("/{rest}/")
    };
    HeaderValue::from_str(&location).map_err(|_| StaticError::NotFound)
}

/// A file to serve.
struct File {
    /// The path as requested (below the root, not canonical): names the content type.
    requested: PathBuf,
    /// Canonical, and below the canonical root.
    canonical: PathBuf,
}

enum Target {
    File(File),
    /// A directory with an `index.html`, requested without its trailing slash.
    AddSlash,
}

/// Maps the request path to a regular file below `root`, refusing anything that could leave it.
async fn resolve(root: &Path, relative_path: &str) -> Result<Target, StaticError> {
    let decoded = percent::decode(relative_path).ok_or(StaticError::NotFound)?;
    if decoded.contains(&0) || decoded.contains(&b'\\') {
        return Err(StaticError::NotFound);
    }
    let trailing_slash = decoded.ends_with(b"/");
    let mut requested = root.to_path_buf();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(StaticError::NotFound),
            segment => requested.push(OsStr::from_bytes(segment)),
        }
    }

    let canonical_root = tokio::fs::canonicalize(root).await.map_err(classify)?;
    let canonical = below_root(&canonical_root, &requested).await?;
    let metadata = tokio::fs::metadata(&canonical).await.map_err(classify)?;
    if metadata.is_dir() {
        let index = requested.join("index.html");
        let canonical_index = below_root(&canonical_root, &index).await?;
        if !tokio::fs::metadata(&canonical_index)
            .await
            .map_err(classify)?
            .is_file()
        {
            return Err(StaticError::NotFound);
        }
        if !trailing_slash {
            return Ok(Target::AddSlash);
        }
        return Ok(Target::File(File {
            requested: index,
            canonical: canonical_index,
        }));
    }
    if !metadata.is_file() || trailing_slash {
        return Err(StaticError::NotFound);
    }
    Ok(Target::File(File {
        requested,
        canonical,
    }))
}

/// `path` with every symlink resolved, if that stays below `canonical_root`.
async fn below_root(canonical_root: &Path, path: &Path) -> Result<PathBuf, StaticError> {
    let canonical = tokio::fs::canonicalize(path).await.map_err(classify)?;
    if canonical.starts_with(canonical_root) {
        Ok(canonical)
    } else {
        Err(StaticError::NotFound)
    }
}

/// Missing (or not reachable as named) → NotFound, not permitted → Forbidden, else Io.
fn classify(error: io::Error) -> StaticError {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidFilename => {
            StaticError::NotFound
        }
        io::ErrorKind::PermissionDenied => StaticError::Forbidden,
        _ => match error.raw_os_error() {
            Some(libc::ELOOP | libc::ENAMETOOLONG | libc::ENOTDIR | libc::ENXIO) => {
                StaticError::NotFound
            }
            _ => StaticError::Io(error),
        },
    }
}

/// Content-Type by file extension; textual types get `charset=utf-8`.
fn content_type(path: &Path) -> String {
    let mime = mime_guess::from_path(path)
        .first_raw()
        .unwrap_or("application/octet-stream");
    if mime.starts_with("text/") || mime == "application/javascript" || mime == "application/json" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

/// The file's ETag and Last-Modified.
struct Validators {
    /// A strong tag (`"<mtime ns hex>-<size hex>"`): byte ranges may be combined under it.
    etag: String,
    /// Seconds since the epoch, when the file system tells.
    modified: Option<u64>,
}

impl Validators {
    fn new(length: u64, modified: Option<SystemTime>) -> Self {
        let since_epoch = modified.and_then(|time| time.duration_since(UNIX_EPOCH).ok());
        let nanos = since_epoch.map_or(0, |d| d.as_nanos());
        Self {
            etag: format!("\"{nanos:x}-{length:x}\""),
            modified: since_epoch.map(|d| d.as_secs()),
        }
    }

    fn apply(&self, builder: hyper::http::response::Builder) -> hyper::http::response::Builder {
        let builder = builder.header(header::ETAG, &self.etag);
        match self.modified {
            Some(seconds) => builder.header(header::LAST_MODIFIED, date::format(seconds)),
            None => builder,
        }
    }

    /// What the preconditions compare.
    fn current(&self) -> conditional::Current<'_> {
        conditional::Current {
            etag: &self.etag,
            modified: self.modified,
        }
    }
}

/// The inclusive byte range a `Range` header asks for. `Ok(None)`: no header, a malformed one,
/// another unit, or several ranges (all answered with the whole file).
fn requested_range(headers: &HeaderMap, length: u64) -> Result<Option<(u64, u64)>, StaticError> {
    let mut values = headers.get_all(header::RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Ok(None);
    };
    let Ok(value) = value.to_str() else {
        return Ok(None);
    };
    let Some((unit, set)) = value.trim().split_once('=') else {
        return Ok(None);
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ok(None);
    }
    let specs: Vec<&str> = set
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let [spec] = specs[..] else {
        return Ok(None);
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let unsatisfiable = Err(StaticError::RangeNotSatisfiable { length });

    if first.is_empty() {
        // `-n`: the last n bytes.
        let Some(suffix) = parse_digits(last) else {
            return Ok(None);
        };
        if suffix == 0 || length == 0 {
            return unsatisfiable;
        }
        return Ok(Some((length.saturating_sub(suffix), length - 1)));
    }
    let Some(start) = parse_digits(first) else {
        return Ok(None);
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match parse_digits(last) {
            Some(end) if end >= start => end,
            _ => return Ok(None),
        }
    };
    if start >= length {
        return unsatisfiable;
    }
    Ok(Some((start, end.min(length - 1))))
}

/// A non-empty run of ASCII digits; values beyond u64 saturate (they are past any file's end).
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use bytes::Bytes;
    use http_body_util::BodyExt;

    use super::*;

    fn http_date(time: SystemTime) -> String {
        date::format(time.duration_since(UNIX_EPOCH).unwrap().as_secs())
    }

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "balancer-static-test-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
            let path = self.0.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `<tmp>/root` is the served directory; `<tmp>/secret.txt` and `<tmp>/outside/` are not.
    struct Site {
        dir: TempDir,
        root: PathBuf,
    }

    fn site() -> Site {
        let dir = TempDir::new();
        dir.write("secret.txt", "secret");
        dir.write("outside/x.txt", "outside");
        dir.write("root/index.html", "<h1>home</h1>");
        dir.write("root/digits.txt", "0123456789");
        dir.write("root/style.css", "body {}");
        dir.write("root/app.js", "let x;");
        dir.write("root/mod.mjs", "export {};");
        dir.write("root/data.json", "{}");
        dir.write("root/logo.png", [0x89, b'P', b'N', b'G']);
        dir.write("root/blob.zzunknown", "?");
        dir.write("root/README", "readme");
        dir.write("root/docs/index.html", "<p>docs</p>");
        dir.write("root/a/b.txt", "b");
        dir.write("root/empty/.keep", "");
        dir.write("root/zero.txt", "");
        let root = dir.0.join("root");
        Site { dir, root }
    }

    async fn request(
        site: &Site,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Response<()>, Bytes), StaticError> {
        request_at(&site.root, method, path, headers).await
    }

    /// Serves `path` (public path "/static" + path) and collects the body.
    async fn request_at(
        root: &Path,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(Response<()>, Bytes), StaticError> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let public = format!("/static{path}");
        let response = serve(root, path, &public, &method, &map).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Ok((Response::from_parts(parts, ()), body))
    }

    async fn get(site: &Site, path: &str) -> Result<(Response<()>, Bytes), StaticError> {
        request(site, Method::GET, path, &[]).await
    }

    fn header_of(response: &Response<()>, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(&name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .unwrap()
    }

    #[tokio::test]
    async fn content_types() {
        let site = site();
        let cases = [
            ("/index.html", "text/html; charset=utf-8"),
            ("/style.css", "text/css; charset=utf-8"),
            ("/app.js", "text/javascript; charset=utf-8"),
            ("/mod.mjs", "application/javascript; charset=utf-8"),
            ("/data.json", "application/json; charset=utf-8"),
            ("/logo.png", "image/png"),
            ("/blob.zzunknown", "application/octet-stream"),
            ("/README", "application/octet-stream"),
            ("/digits.txt", "text/plain; charset=utf-8"),
        ];
        for (path, expected) in cases {
            let (response, _) = get(&site, path).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header_of(&response, header::CONTENT_TYPE),
                expected,
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn full_response_headers() {
        let site = site();
        let (response, body) = get(&site, "/digits.txt").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(&body[..], b"0123456789");
        assert_eq!(header_of(&response, header::CONTENT_LENGTH), "10");
        assert_eq!(header_of(&response, header::ACCEPT_RANGES), "bytes");
        let etag = header_of(&response, header::ETAG);
        assert!(etag.starts_with('"') && etag.ends_with("-a\""), "{etag}");
        let modified = std::fs::metadata(site.root.join("digits.txt"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            header_of(&response, header::LAST_MODIFIED),
            http_date(modified)
        );

        // Percent-encoded names are decoded.
        site.dir.write("root/with space+ü.txt", "spaced");
        let (response, body) = get(&site, "/with%20space+%C3%BC.txt").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(&body[..], b"spaced");
        let (_, body) = get(&site, "/a/./b.txt").await.unwrap();
        assert_eq!(&body[..], b"b");
        let (_, body) = get(&site, "//a//b.txt").await.unwrap();
        assert_eq!(&body[..], b"b");

        let (response, body) = get(&site, "/zero.txt").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header_of(&response, header::CONTENT_LENGTH), "0");
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn traversal_is_refused() {
        let site = site();
        for path in [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E/secret.txt",
            "/a/..%2f..%2fsecret.txt",
            "/%2e%2e%2fsecret.txt",
            "/a/../../secret.txt",
            "/a/../b.txt",
            "/..",
            "/digits.txt%00.png",
            "/digits.txt%00",
            "/a\\..\\..\\secret.txt",
            "/a%5c..%5c..%5csecret.txt",
            "/a%5Cb.txt",
            "/%zz",
            "/%2",
            "/../outside/x.txt",
            "/nope.txt",
            "/digits.txt/",
            "/digits.txt/x",
        ] {
            let result = get(&site, path).await;
            assert!(
                matches!(result, Err(StaticError::NotFound)),
                "{path}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn symlinks_must_stay_below_the_root() {
        let site = site();
        let link = |target: &str, name: &str| {
            std::os::unix::fs::symlink(target, site.root.join(name)).unwrap();
        };
        link("../secret.txt", "escape.txt");
        link(
            site.dir.0.join("secret.txt").to_str().unwrap(),
            "absolute.txt",
        );
        link("../outside", "outdir");
        link("digits.txt", "inside.txt");
        link("docs", "docs-link");
        link("missing.txt", "dangling.txt");
        site.dir.write("outside/index.html", "outside index");

        for path in [
            "/escape.txt",
            "/absolute.txt",
            "/outdir/x.txt",
            "/outdir/",
            "/dangling.txt",
        ] {
            let result = get(&site, path).await;
            assert!(
                matches!(result, Err(StaticError::NotFound)),
                "{path}: {result:?}"
            );
        }
        let (response, body) = get(&site, "/inside.txt").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(&body[..], b"0123456789");
        let (_, body) = get(&site, "/docs-link/").await.unwrap();
        assert_eq!(&body[..], b"<p>docs</p>");

        // An index.html that is a symlink out of the root is refused too.
        std::fs::create_dir(site.root.join("trap")).unwrap();
        link("../../secret.txt", "trap/index.html");
        assert!(matches!(
            get(&site, "/trap/").await,
            Err(StaticError::NotFound)
        ));
        assert!(matches!(
            get(&site, "/trap").await,
            Err(StaticError::NotFound)
        ));

        // A root that is itself a symlink works.
        let root_link = site.dir.0.join("root-link");
        std::os::unix::fs::symlink(&site.root, &root_link).unwrap();
        let (_, body) = request_at(&root_link, Method::GET, "/digits.txt", &[])
            .await
            .unwrap();
        assert_eq!(&body[..], b"0123456789");
    }

    #[tokio::test]
    async fn directories() {
        let site = site();
        let (response, body) = get(&site, "/docs/").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(&body[..], b"<p>docs</p>");
        assert_eq!(
            header_of(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );

        let (response, body) = get(&site, "/docs").await.unwrap();
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(header_of(&response, header::LOCATION), "/static/docs/");
        assert!(body.is_empty());

        let (response, body) = get(&site, "/").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(&body[..], b"<h1>home</h1>");

        // The route's prefix without its slash: "" below it.
        let (response, _) = get(&site, "").await.unwrap();
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(header_of(&response, header::LOCATION), "/static/");

        // No listings.
        for path in ["/empty/", "/empty", "/a/", "/a"] {
            let result = get(&site, path).await;
            assert!(
                matches!(result, Err(StaticError::NotFound)),
                "{path}: {result:?}"
            );
        }

        // A redirect never points at another host.
        let map = HeaderMap::new();
        let response = serve(&site.root, "/docs", "//evil.test/docs", &Method::GET, &map)
            .await
            .unwrap();
        assert_eq!(response.headers()[header::LOCATION], "/evil.test/docs/");
        for (public, expected) in [("/", "/"), ("", "/"), ("/\\evil.test", "/evil.test/")] {
            assert_eq!(slash_location(public).unwrap(), expected, "{public}");
        }
    }

    #[tokio::test]
    async fn ranges() {
        let site = site();
        let range = |spec: &'static str| {
            let site = &site;
            async move { request(site, Method::GET, "/digits.txt", &[("range", spec)]).await }
        };
        let cases = [
            ("bytes=2-5", "2345", "bytes 2-5/10"),
            ("bytes=0-0", "0", "bytes 0-0/10"),
            ("bytes=7-", "789", "bytes 7-9/10"),
            ("bytes=-3", "789", "bytes 7-9/10"),
            ("bytes=5-100", "56789", "bytes 5-9/10"),
            ("bytes=-100", "0123456789", "bytes 0-9/10"),
            ("bytes=9-99999999999999999999999", "9", "bytes 9-9/10"),
            ("Bytes = 1-2", "12", "bytes 1-2/10"),
            ("bytes=3-4,", "34", "bytes 3-4/10"),
        ];
        for (spec, body_expected, content_range) in cases {
            let (response, body) = range(spec).await.unwrap();
            assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT, "{spec}");
            assert_eq!(&body[..], body_expected.as_bytes(), "{spec}");
            assert_eq!(
                header_of(&response, header::CONTENT_RANGE),
                content_range,
                "{spec}"
            );
            assert_eq!(
                header_of(&response, header::CONTENT_LENGTH),
                body_expected.len().to_string(),
                "{spec}"
            );
        }

        for spec in [
            "bytes=10-",
            "bytes=10-20",
            "bytes=-0",
            "bytes=99999999999999999999-",
        ] {
            let result = range(spec).await;
            assert!(
                matches!(result, Err(StaticError::RangeNotSatisfiable { length: 10 })),
                "{spec}: {result:?}"
            );
        }
        let result = request(&site, Method::GET, "/zero.txt", &[("range", "bytes=-5")]).await;
        assert!(matches!(
            result,
            Err(StaticError::RangeNotSatisfiable { length: 0 })
        ));

        // Several ranges, malformed ones and other units: the whole file.
        for spec in [
            "bytes=0-1,4-5",
            "bytes=0-1, 20-30",
            "bytes=5-2",
            "bytes=x-",
            "bytes=1-x",
            "bytes=-",
            "bytes=",
            "bytes=--1",
            "bytes=+1-2",
            "items=0-1",
            "0-1",
        ] {
            let (response, body) = range(spec).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{spec}");
            assert_eq!(&body[..], b"0123456789", "{spec}");
            assert!(response.headers().get(header::CONTENT_RANGE).is_none());
        }
    }

    #[tokio::test]
    async fn large_file_ranges_stream() {
        let site = site();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        site.dir.write("root/big.bin", &data);
        let (response, body) = get(&site, "/big.bin").await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(&body[..], &data[..]);
        let (response, body) = request(
            &site,
            Method::GET,
            "/big.bin",
            &[("range", "bytes=65000-200000")],
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(&body[..], &data[65_000..=200_000]);
    }

    #[tokio::test]
    async fn if_range() {
        let site = site();
        let (response, _) = get(&site, "/digits.txt").await.unwrap();
        let etag = header_of(&response, header::ETAG).to_string();
        let modified = header_of(&response, header::LAST_MODIFIED).to_string();
        let weak = format!("W/{etag}");
        let earlier = date::format(date::parse(&modified).unwrap() - 1);

        let with = |if_range: String| {
            let site = &site;
            async move {
                request(
                    site,
                    Method::GET,
                    "/digits.txt",
                    &[("range", "bytes=0-1"), ("if-range", &if_range)],
                )
                .await
                .unwrap()
            }
        };
        let (response, body) = with(etag.clone()).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(&body[..], b"01");
        let (response, _) = with(modified.clone()).await;
        assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
        for other in [
            "\"something-else\"".to_string(),
            weak,
            earlier,
            "not a date".to_string(),
        ] {
            let (response, body) = with(other.clone()).await;
            assert_eq!(response.status(), StatusCode::OK, "{other}");
            assert_eq!(&body[..], b"0123456789");
        }
    }

    #[tokio::test]
    async fn conditional_requests() {
        let site = site();
        let (response, _) = get(&site, "/digits.txt").await.unwrap();
        let etag = header_of(&response, header::ETAG).to_string();
        let modified = header_of(&response, header::LAST_MODIFIED).to_string();
        let earlier = date::format(date::parse(&modified).unwrap() - 1);
        let later = date::format(date::parse(&modified).unwrap() + 3600);

        let expected_etag = etag.as_str();
        let status_of = |headers: Vec<(&'static str, String)>, method: Method| {
            let site = &site;
            async move {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let (response, body) = request(site, method, "/digits.txt", &headers)
                    .await
                    .unwrap();
                if response.status() == StatusCode::NOT_MODIFIED {
                    assert!(body.is_empty());
                    assert_eq!(response.headers()[header::ETAG], expected_etag);
                    assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
                }
                response.status()
            }
        };
        let not_modified = StatusCode::NOT_MODIFIED;
        let ok = StatusCode::OK;
        let cases: Vec<(Vec<(&str, String)>, StatusCode)> = vec![
            (vec![("if-none-match", etag.clone())], not_modified),
            (vec![("if-none-match", format!("W/{etag}"))], not_modified),
            (
                vec![("if-none-match", format!("\"x\", {etag}"))],
                not_modified,
            ),
            (vec![("if-none-match", "*".into())], not_modified),
            (vec![("if-none-match", "\"other\"".into())], ok),
            (vec![("if-modified-since", modified.clone())], not_modified),
            (vec![("if-modified-since", later.clone())], not_modified),
            (vec![("if-modified-since", earlier.clone())], ok),
            (vec![("if-modified-since", "garbage".into())], ok),
            // If-None-Match decides when present.
            (
                vec![
                    ("if-none-match", "\"other\"".into()),
                    ("if-modified-since", modified.clone()),
                ],
                ok,
            ),
            (vec![("if-match", etag.clone())], ok),
            (vec![("if-match", "*".into())], ok),
            (
                vec![("if-match", "\"other\"".into())],
                StatusCode::PRECONDITION_FAILED,
            ),
            (
                vec![("if-match", format!("W/{etag}"))],
                StatusCode::PRECONDITION_FAILED,
            ),
            (vec![("if-unmodified-since", modified.clone())], ok),
            (
                vec![("if-unmodified-since", earlier.clone())],
                StatusCode::PRECONDITION_FAILED,
            ),
        ];
        for (headers, expected) in cases {
            let label = format!("{headers:?}");
            assert_eq!(
                status_of(headers.clone(), Method::GET).await,
                expected,
                "{label}"
            );
            assert_eq!(
                status_of(headers, Method::HEAD).await,
                expected,
                "HEAD {label}"
            );
        }
    }

    #[tokio::test]
    async fn head_has_headers_and_no_body() {
        let site = site();
        let (response, body) = request(&site, Method::HEAD, "/digits.txt", &[])
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(header_of(&response, header::CONTENT_LENGTH), "10");
        assert_eq!(
            header_of(&response, header::CONTENT_TYPE),
            "text/plain; charset=utf-8"
        );
        assert!(response.headers().contains_key(header::ETAG));
        // Range applies to GET only.
        let (response, body) = request(
            &site,
            Method::HEAD,
            "/digits.txt",
            &[("range", "bytes=0-1")],
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header_of(&response, header::CONTENT_LENGTH), "10");
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn only_get_and_head() {
        let site = site();
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
            let result = request(&site, method.clone(), "/digits.txt", &[]).await;
            assert!(
                matches!(result, Err(StaticError::MethodNotAllowed)),
                "{method}"
            );
        }
        // Even for paths that do not exist.
        assert!(matches!(
            request(&site, Method::POST, "/nope", &[]).await,
            Err(StaticError::MethodNotAllowed)
        ));
    }

    #[tokio::test]
    async fn special_files_are_not_served() {
        let site = site();
        let fifo = site.root.join("pipe");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        assert!(matches!(
            get(&site, "/pipe").await,
            Err(StaticError::NotFound)
        ));
        // Permission errors (403) are covered by `io_errors_are_classified`: tests run as root,
        // which reads any file.
    }

    #[test]
    fn io_errors_are_classified() {
        use io::ErrorKind;
        let of = |kind: ErrorKind| classify(io::Error::from(kind));
        assert!(matches!(of(ErrorKind::NotFound), StaticError::NotFound));
        assert!(matches!(
            of(ErrorKind::NotADirectory),
            StaticError::NotFound
        ));
        assert!(matches!(
            of(ErrorKind::PermissionDenied),
            StaticError::Forbidden
        ));
        assert!(matches!(
            classify(io::Error::from_raw_os_error(libc::ELOOP)),
            StaticError::NotFound
        ));
        assert!(matches!(
            classify(io::Error::from_raw_os_error(libc::EACCES)),
            StaticError::Forbidden
        ));
        assert!(matches!(
            classify(io::Error::from_raw_os_error(libc::EIO)),
            StaticError::Io(_)
        ));
    }

    #[test]
    fn statuses() {
        assert_eq!(StaticError::NotFound.status(), StatusCode::NOT_FOUND);
        assert_eq!(StaticError::Forbidden.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            StaticError::MethodNotAllowed.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            StaticError::RangeNotSatisfiable { length: 3 }.status(),
            StatusCode::RANGE_NOT_SATISFIABLE
        );
        assert_eq!(
            StaticError::Io(io::Error::other("x")).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
