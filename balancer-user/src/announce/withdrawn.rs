//! `announce.state_file`: whether an operator withdrew this host, kept across restarts so that
//! a host taken out for maintenance does not come back into the routers' ECMP groups because
//! its balancer restarted.
//!
//! ```json
//! {"withdrawn": true}
//! ```
//!
//! Written whole on each change (a temporary file renamed over the old one, so a crash never
//! leaves half a file) and read at start; a missing file means "not withdrawn".

use std::{
    io,
    path::{Path, PathBuf},
};

/// Why the text of `announce.state_file` says nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum WithdrawnFileError {
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("expected {{\"withdrawn\": true|false}}")]
    NoFlag,
}

/// Why `announce.state_file` cannot be read (the text starts with the file's path).
#[derive(Debug, thiserror::Error)]
pub enum WithdrawnLoadError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Decode {
        path: PathBuf,
        source: WithdrawnFileError,
    },
}

pub fn encode(withdrawn: bool) -> String {
    format!("{}\n", serde_json::json!({ "withdrawn": withdrawn }))
}

pub fn decode(text: &str) -> Result<bool, WithdrawnFileError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(WithdrawnFileError::NotJson)?;
    value
        .get("withdrawn")
        .and_then(serde_json::Value::as_bool)
        .ok_or(WithdrawnFileError::NoFlag)
}

/// The operator's last word: `false` when the file does not exist (never withdrawn).
pub fn load(path: &Path) -> Result<bool, WithdrawnLoadError> {
    match crate::replace_file::read_if_present(path) {
        Ok(Some(text)) => decode(&text).map_err(|source| WithdrawnLoadError::Decode {
            path: path.to_path_buf(),
            source,
        }),
        Ok(None) => Ok(false),
        Err(source) => Err(WithdrawnLoadError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `withdrawn` to `path`, replacing it whole (`replace_file`).
pub fn save(path: &Path, withdrawn: bool) -> io::Result<()> {
    crate::replace_file::replace_file(path, encode(withdrawn).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flag, or the error's text (what the log shows).
    fn decode(text: &str) -> Result<bool, String> {
        super::decode(text).map_err(|err| err.to_string())
    }

    /// The flag, or the error's text (what the log shows).
    fn load(path: &Path) -> Result<bool, String> {
        super::load(path).map_err(|err| err.to_string())
    }

    /// Each text against the `format!` that made it when these errors were strings.
    #[test]
    fn texts_are_those_of_the_string_errors() {
        let json = || serde_json::from_str::<serde_json::Value>("{").expect_err("not JSON");
        assert_eq!(
            WithdrawnFileError::NotJson(json()).to_string(),
            format!("not JSON: {}", json())
        );
        assert_eq!(
            WithdrawnFileError::NoFlag.to_string(),
            "expected {\"withdrawn\": true|false}"
        );
        let path = Path::new("/var/lib/balancer/announce.json");
        let io = || io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(
            WithdrawnLoadError::Read {
                path: path.to_path_buf(),
                source: io(),
            }
            .to_string(),
            format!("{}: {}", path.display(), io())
        );
        assert_eq!(
            WithdrawnLoadError::Decode {
                path: path.to_path_buf(),
                source: WithdrawnFileError::NoFlag,
            }
            .to_string(),
            format!(
                "{}: {}",
                path.display(),
                "expected {\"withdrawn\": true|false}"
            )
        );
    }

    #[test]
    fn encode_and_decode_agree() {
        for withdrawn in [true, false] {
            assert_eq!(decode(&encode(withdrawn)), Ok(withdrawn));
        }
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_guess() {
        // Guessing "not withdrawn" would put a host under maintenance back into service.
        assert_eq!(
            decode("{\"withdrawn\": \"yes\"}"),
            Err("expected {\"withdrawn\": true|false}".to_string())
        );
        assert!(decode("{\"withdrawn\": tr").is_err());
    }

    #[test]
    fn a_missing_file_is_not_withdrawn_and_a_saved_one_is_read_back() {
        let dir = std::env::temp_dir().join(format!("balancer-withdrawn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let path = dir.join("announce.json");
        let _ = std::fs::remove_file(&path);
        assert_eq!(load(&path), Ok(false));
        save(&path, true).expect("save");
        assert_eq!(load(&path), Ok(true));
        save(&path, false).expect("save");
        assert_eq!(load(&path), Ok(false));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
