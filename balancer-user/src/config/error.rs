//! Config errors: `FILE:LINE:COLUMN: KEY: what is wrong`, on one line.

use std::ops::Range;

use toml::Spanned;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    pub fn unreadable(origin: &str, err: &std::io::Error) -> Self {
        Self {
            message: format!("{origin}: cannot read the config file: {err}"),
        }
    }

    /// The directory that relative paths in the config are resolved against is unknown (the
    /// current directory was removed, or cannot be read).
    pub(super) fn no_base_dir(origin: &str, err: &std::io::Error) -> Self {
        Self {
            message: format!(
                "{origin}: cannot resolve the relative paths of the config: the current directory is unknown: {err}"
            ),
        }
    }

    pub(super) fn from_toml(
        err: serde_path_to_error::Error<toml::de::Error>,
        text: &str,
        origin: &str,
    ) -> Self {
        let key = key_of(err.path());
        let inner = err.into_inner();
        let location = inner.span().map(|span| Location::of(text, span.start));
        // toml's parse errors may span several lines ("invalid string\nexpected `\"`, `'`");
        // an error is one line so that it reads well in logs and in the admin API's reply.
        let what = inner
            .message()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let message = match (location, key) {
            // No key: the text is not TOML at all (syntax, duplicate key), so say so.
            (Some(at), None) => format!("{origin}:{}:{}: invalid TOML: {what}", at.line, at.column),
            (Some(at), Some(key)) => format!("{origin}:{}:{}: {key}: {what}", at.line, at.column),
            (None, None) => format!("{origin}: invalid TOML: {what}"),
            (None, Some(key)) => format!("{origin}: {key}: {what}"),
        };
        Self { message }
    }
}

/// The key as the user writes it (`vip[1].port`), or `None` at the top of the document.
fn key_of(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut key = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => {
                key.push('[');
                key.push_str(&index.to_string());
                key.push(']');
            }
            // `toml::Spanned<T>` is deserialized as a struct whose private field holds the
            // value; the user never wrote that field, so it must not show in the key.
            Segment::Map { key: field } if field.starts_with(SPANNED_PRIVATE_PREFIX) => {}
            Segment::Map { key: field } | Segment::Enum { variant: field } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(field);
            }
            Segment::Unknown => {}
        }
    }
    (!key.is_empty()).then_some(key)
}

/// Prefix of the field names `serde_spanned` (behind `toml::Spanned`) uses internally.
const SPANNED_PRIVATE_PREFIX: &str = "$__serde_spanned_private_";

/// A validation failure before it is placed in the file.
#[derive(Debug)]
pub(super) struct Invalid {
    pub key: String,
    pub span: Range<usize>,
    pub what: String,
}

impl Invalid {
    pub fn at<T>(key: impl Into<String>, value: &Spanned<T>, what: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            span: value.span(),
            what: what.into(),
        }
    }

    pub fn located(self, text: &str, origin: &str) -> ConfigError {
        let Invalid { key, span, what } = self;
        // A defaulted value has an empty span: there is no line to point at.
        let message = if span.is_empty() && span.start == 0 {
            format!("{origin}: {key}: {what}")
        } else {
            let at = Location::of(text, span.start);
            format!("{origin}:{}:{}: {key}: {what}", at.line, at.column)
        };
        ConfigError { message }
    }
}

pub(super) struct Location {
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn of(text: &str, offset: usize) -> Location {
        // Spans come from toml and should fall on a character boundary; if one ever does not,
        // point at the start of that character rather than panic on the slice.
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line,
            column: before[line_start..].chars().count() + 1,
        }
    }
}
