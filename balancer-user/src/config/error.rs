//! Config errors: `FILE:LINE: KEY: what is wrong`.

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

    pub(super) fn from_toml(
        err: serde_path_to_error::Error<toml::de::Error>,
        text: &str,
        origin: &str,
    ) -> Self {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let location = inner.span().map(|span| Location::of(text, span.start));
        let what = inner.message().trim_end().to_string();
        let message = match (location, path.as_str()) {
            (Some(at), "." | "") => format!("{origin}:{}:{}: {what}", at.line, at.column),
            (Some(at), key) => format!("{origin}:{}:{}: {key}: {what}", at.line, at.column),
            (None, "." | "") => format!("{origin}: {what}"),
            (None, key) => format!("{origin}: {key}: {what}"),
        };
        Self { message }
    }
}

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

struct Location {
    line: usize,
    column: usize,
}

impl Location {
    /// 1-based line and column of a byte offset.
    fn of(text: &str, offset: usize) -> Location {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line,
            column: before[line_start..].chars().count() + 1,
        }
    }
}
