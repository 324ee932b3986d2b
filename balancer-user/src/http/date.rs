//! HTTP-dates (RFC 9110 §5.6.7) through the `httpdate` crate: IMF-fixdate out, the three
//! forms in. Seconds since the epoch, as Last-Modified and the preconditions compare them
//! (HTTP-dates have no finer resolution).

use std::time::{Duration, UNIX_EPOCH};

/// IMF-fixdate of seconds since the epoch: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn format(seconds: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Seconds since the epoch of an HTTP-date in any of its three forms: IMF-fixdate, RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`). `None` for
/// anything else (RFC 9110 §13.1.3: an invalid date is ignored, and the caller ignores `None`).
pub fn parse(value: &str) -> Option<u64> {
    let time = httpdate::parse_http_date(value.trim()).ok()?;
    Some(time.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9110 §5.6.7: IMF-fixdate, obsolete RFC 850 and asctime forms.
    #[test]
    fn http_dates() {
        assert_eq!(format(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(format(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(format(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse(form), Some(784_111_777), "{form}");
        }
        assert_eq!(parse("Wed, 09 Jun 2021 10:18:14 GMT"), Some(1_623_233_894));
        for bad in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        // Every day from 1970 to 2200 round-trips.
        for day in 0..84_000u64 {
            let seconds = day * 86_400 + 3_723;
            assert_eq!(parse(&format(seconds)), Some(seconds));
        }
    }
}
