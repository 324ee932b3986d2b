//! Access-log lines for the process log (stderr), when `proxy.access_log_file` is unset: the
//! default. They look exactly as tracing's formatter writes its events
//! (`2026-12-07T11:19:50.579661Z  INFO access: LINE`), and `RUST_LOG` filters them as the
//! tracing target `access`, but they are formatted here: tracing's formatter escapes its
//! message one character at a time and formats the timestamp field by field, which took a
//! quarter of the proxy's user CPU per request (perf, keep-alive load with the default
//! config). The line is escaped already (`access_log::write_combined` and `write_json`).
//!
//! A terminal still gets tracing's own output (with its colours): that is someone watching,
//! not a busy service.

use std::{
    cell::RefCell,
    io::{IsTerminal, Write},
    sync::OnceLock,
    time::SystemTime,
};

/// Writes `line` (without its newline) to stderr as an `INFO access` event, in one write.
pub fn write_access_line(line: &[u8]) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    static TERMINAL: OnceLock<bool> = OnceLock::new();
    if *TERMINAL.get_or_init(|| std::io::stderr().is_terminal()) {
        tracing::info!(target: "access", "{}", String::from_utf8_lossy(line));
        return;
    }
    OUT.with(|out| {
        let mut out = out.borrow_mut();
        out.clear();
        // The poll's time: the one the request's duration ended at (clock.rs).
        event_line(&mut out, crate::clock::wall_now(), line);
        // As tracing's writer: a failed write to stderr has nowhere to be reported.
        let _ = std::io::stderr().write_all(&out);
    });
}

thread_local! {
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The UTC second last formatted (`YYYY-MM-DDTHH:MM:SS`): a busy proxy writes many lines
    /// within one second.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// `{RFC 3339 UTC time, microseconds}  INFO access: {line}\n`, tracing's default format with
/// colours off.
pub fn event_line(out: &mut Vec<u8>, time: SystemTime, line: &[u8]) {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let second = since.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, utc_second(second));
        }
        out.extend_from_slice(&cached.1);
    });
    let micros = since.subsec_micros();
    out.push(b'.');
    for shift in [100_000, 10_000, 1_000, 100, 10, 1] {
        out.push(b'0' + ((micros / shift) % 10) as u8);
    }
    out.extend_from_slice(b"Z  INFO access: ");
    out.extend_from_slice(line);
    out.push(b'\n');
}

/// `YYYY-MM-DDTHH:MM:SS` of `second` since the epoch (UTC): humantime's RFC 3339 form
/// without its `Z`, formatted once per second (see `SECOND`).
fn utc_second(second: u64) -> [u8; 19] {
    let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(second);
    let text = humantime::format_rfc3339_seconds(time).to_string();
    let mut out = [0u8; 19];
    out.copy_from_slice(&text.as_bytes()[..19]);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(seconds: u64, micros: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(seconds, micros * 1_000)
    }

    fn line_at(time: SystemTime) -> String {
        let mut out = Vec::new();
        event_line(
            &mut out,
            time,
            b"127.0.0.1 - - [x] \"GET / HTTP/1.1\" 200 5",
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_line_is_what_tracing_writes_for_an_info_event() {
        // The format of the proxy's other log lines, e.g.
        // `2026-12-07T11:19:50.579661Z  INFO balancer::proxy: listening …`.
        assert_eq!(
            line_at(at(1_796_642_390, 579_661)),
            "2026-12-07T11:19:50.579661Z  INFO access: 127.0.0.1 - - [x] \"GET / HTTP/1.1\" 200 5\n"
        );
        assert!(line_at(at(0, 7)).starts_with("1970-01-01T00:00:00.000007Z  INFO access: "));
    }

    #[test]
    fn utc_dates_match_known_calendar_days() {
        for (seconds, expected) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"), // a leap day of a century leap year
            (951_868_799, "2000-02-29T23:59:59"),
            (1_709_164_800, "2024-02-29T00:00:00"),
            (1_735_689_599, "2024-12-31T23:59:59"),
            (4_102_444_800, "2100-01-01T00:00:00"),
            (4_107_542_400, "2100-03-01T00:00:00"), // 2100 is no leap year
        ] {
            assert_eq!(std::str::from_utf8(&utc_second(seconds)).unwrap(), expected);
        }
        // Every day for 500 years against libc's gmtime_r.
        for day in 0..(500 * 366) {
            let seconds = day * 86_400 + 45_296;
            let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
            let time = libc::time_t::try_from(seconds).unwrap();
            // SAFETY: gmtime_r writes only into the tm passed and reads only `time`.
            let tm = unsafe {
                assert!(!libc::gmtime_r(&time, tm.as_mut_ptr()).is_null());
                tm.assume_init()
            };
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                tm.tm_year + 1900,
                tm.tm_mon + 1,
                tm.tm_mday,
                tm.tm_hour,
                tm.tm_min,
                tm.tm_sec
            );
            assert_eq!(std::str::from_utf8(&utc_second(seconds)).unwrap(), expected);
        }
    }
}
