//! The admin API's bearer token: read from `admin.token_file`, required on every request except
//! `GET /healthz` (which outer balancers probe without credentials).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use ring::digest;

use super::{AdminContext, text};

/// Why `admin.token_file` gives no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("admin.token_file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin.token_file {}: the file is empty", .0.display())]
    Empty(PathBuf),
}

/// The token in `path`, without surrounding whitespace; an empty file is an error.
pub fn read_token(path: &Path) -> Result<String, TokenError> {
    let content = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = content.trim();
    if token.is_empty() {
        return Err(TokenError::Empty(path.to_path_buf()));
    }
    Ok(token.to_string())
}

/// `None` when `request` may go on; else the 401 to answer.
pub fn check(context: &AdminContext, request: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let token = context
        .token
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()?;
    // The health probe, and the manager page's own files: they hold no state, and the page
    // asks for the token itself (its API calls carry it).
    let open = (request.uri().path() == "/healthz"
        || super::manager::asset(request.uri().path()).is_some())
        && (request.method() == Method::GET || request.method() == Method::HEAD);
    if open || presents(request, &token) {
        return None;
    }
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "this admin API needs Authorization: Bearer TOKEN (admin.token_file)\n",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    Some(response)
}

/// Whether `request` carries `Authorization: Bearer <token>` (scheme in any case).
fn presents(request: &Request<Incoming>, token: &str) -> bool {
    request
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .any(|value| bearer_matches(value.as_bytes(), token))
}

fn bearer_matches(value: &[u8], token: &str) -> bool {
    let Some(scheme) = value.get(..7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ")
        && same_secret(value[7..].trim_ascii(), token.as_bytes())
}

/// Compares digests of both in constant time, so neither the content nor the length of the
/// token leaks through timing.
fn same_secret(presented: &[u8], token: &[u8]) -> bool {
    let a = digest::digest(&digest::SHA256, presented);
    let b = digest::digest(&digest::SHA256, token);
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_values() {
        let cases: [(&[u8], bool); 9] = [
            (b"Bearer s3cret", true),
            (b"bearer s3cret", true),
            (b"BEARER  s3cret ", true),
            (b"Bearer s3cre", false),
            (b"Bearer s3cret2", false),
            (b"Bearer ", false),
            (b"Basic s3cret", false),
            (b"s3cret", false),
            (b"", false),
        ];
        for (value, want) in cases {
            assert_eq!(
                bearer_matches(value, "s3cret"),
                want,
                "{:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    /// The token, or the error's text (what the log and the admin API show).
    fn read_token(path: &Path) -> Result<String, String> {
        super::read_token(path).map_err(|err| err.to_string())
    }

    /// Each text against the `format!` that made it when these errors were strings.
    #[test]
    fn texts_are_those_of_the_string_errors() {
        let path = Path::new("/etc/balancer/admin.token");
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(
            TokenError::Read {
                path: path.to_path_buf(),
                source: io(),
            }
            .to_string(),
            format!("admin.token_file {}: {}", path.display(), io())
        );
        assert_eq!(
            TokenError::Empty(path.to_path_buf()).to_string(),
            format!("admin.token_file {}: the file is empty", path.display())
        );
    }

    #[test]
    fn token_file() {
        let dir = std::env::temp_dir().join(format!("balancer-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "  abc123\n").unwrap();
        assert_eq!(read_token(&path), Ok("abc123".to_string()));
        std::fs::write(&path, " \n").unwrap();
        assert!(read_token(&path).unwrap_err().contains("empty"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(read_token(&path).unwrap_err().contains("admin.token_file"));
    }
}
