//! `proxy.access_log_file`: access-log lines gathered in memory and written in large pieces,
//! as nginx's `access_log … buffer=64k flush=1s`. A line costs a lock and a copy; the write
//! system call happens once per 64 KiB, or once a second from a flusher thread, so a quiet
//! site's lines still show up promptly. SIGUSR1 reopens the file (logrotate's convention):
//! lines gathered before it go to the old file, later ones to the new one.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

pub struct AccessLogFile {
    path: PathBuf,
    state: Mutex<Pending>,
}

struct Pending {
    lines: Vec<u8>,
    file: File,
}

impl AccessLogFile {
    /// Pending bytes that trigger a write.
    pub const FLUSH_AT: usize = 64 * 1024;
    /// The longest a line waits in memory.
    pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

    /// Opens (creating, mode 0640) `path` for appending and starts its flusher thread, which
    /// ends when the last handle is dropped.
    pub fn open(path: &Path) -> io::Result<Arc<AccessLogFile>> {
        let log = Arc::new(AccessLogFile {
            path: path.to_path_buf(),
            state: Mutex::new(Pending {
                lines: Vec::with_capacity(Self::FLUSH_AT + 4096),
                file: open_append(path)?,
            }),
        });
        let weak = Arc::downgrade(&log);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || flush_every_second(&weak))?;
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds one line (`write` appends it, newline included); writes the pending lines once
    /// they reach [`Self::FLUSH_AT`].
    pub fn append(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = self.lock();
        write(&mut pending.lines);
        if pending.lines.len() >= Self::FLUSH_AT {
            pending.write_out(&self.path);
        }
    }

    /// Writes every pending line now.
    pub fn flush(&self) {
        self.lock().write_out(&self.path);
    }

    /// Writes the pending lines to the file open now, then opens `path` anew (the old one
    /// was renamed by logrotate). If it cannot be opened, the old file stays in use.
    pub fn reopen(&self) -> io::Result<()> {
        let mut pending = self.lock();
        pending.write_out(&self.path);
        pending.file = open_append(&self.path)?;
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while a line was appended leaves at worst a partial line; keep logging.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Pending {
    fn write_out(&mut self, path: &Path) {
        if self.lines.is_empty() {
            return;
        }
        if let Err(err) = self.file.write_all(&self.lines) {
            // A full disk must not grow memory without bound: these lines are lost.
            tracing::warn!(
                file = %path.display(),
                bytes = self.lines.len(),
                "access log: write failed, lines dropped: {err}"
            );
        }
        self.lines.clear();
    }
}

impl Drop for AccessLogFile {
    fn drop(&mut self) {
        self.flush();
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

fn flush_every_second(log: &Weak<AccessLogFile>) {
    loop {
        std::thread::sleep(AccessLogFile::FLUSH_EVERY);
        match log.upgrade() {
            Some(log) => log.flush(),
            None => return,
        }
    }
}

/// nginx's `$time_local` (`06/Dec/2026:14:11:44 +0100`), formatted once per second per
/// thread: a busy proxy writes many lines within one second.
pub mod time_local {
    use std::{cell::RefCell, time::SystemTime};

    thread_local! {
        static CACHE: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }

    /// Calls `f` with the local time of `time`, to the second.
    pub fn with<R>(time: SystemTime, f: impl FnOnce(&str) -> R) -> R {
        let second = match time.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
        };
        CACHE.with(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.0 != second {
                cache.1 = local(second);
                cache.0 = second;
            }
            f(&cache.1)
        })
    }

    fn local(second: i64) -> String {
        let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
        let time: libc::time_t = second;
        // SAFETY: localtime_r writes only into the tm we pass and reads only `time`.
        let ok = unsafe { !libc::localtime_r(&time, tm.as_mut_ptr()).is_null() };
        if !ok {
            return format_fields(1970, 1, 1, 0, 0, 0, 0);
        }
        // SAFETY: localtime_r succeeded, so it filled the struct.
        let tm = unsafe { tm.assume_init() };
        format_fields(
            i64::from(tm.tm_year) + 1900,
            tm.tm_mon + 1,
            tm.tm_mday,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            tm.tm_gmtoff,
        )
    }

    /// `DD/Mon/YYYY:HH:MM:SS ±HHMM`.
    pub fn format_fields(
        year: i64,
        month: i32,
        day: i32,
        hour: i32,
        minute: i32,
        second: i32,
        utc_offset_seconds: i64,
    ) -> String {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = MONTHS[usize::try_from(month - 1).unwrap_or(0).min(11)];
        let sign = if utc_offset_seconds < 0 { '-' } else { '+' };
        let offset_minutes = utc_offset_seconds.unsigned_abs() / 60;
        format!(
            "{day:02}/{month}/{year}:{hour:02}:{minute:02}:{second:02} {sign}{:02}{:02}",
            offset_minutes / 60,
            offset_minutes % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_local_is_nginx_format() {
        assert_eq!(
            time_local::format_fields(2026, 12, 6, 14, 11, 4, 0),
            "06/Dec/2026:14:11:04 +0000"
        );
        assert_eq!(
            time_local::format_fields(2000, 10, 10, 13, 55, 36, -7 * 3600),
            "10/Oct/2000:13:55:36 -0700"
        );
        assert_eq!(
            time_local::format_fields(2026, 1, 31, 0, 0, 0, 5 * 3600 + 30 * 60),
            "31/Jan/2026:00:00:00 +0530"
        );
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("balancer-log-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn lines_wait_in_memory_until_64_kib_or_a_flush() {
        let dir = scratch("buffer");
        let path = dir.join("access.log");
        let log = AccessLogFile::open(&path).expect("open");
        log.append(|out| out.extend_from_slice(b"first\n"));
        assert_eq!(std::fs::read(&path).expect("read"), b"", "buffered");
        let line = vec![b'x'; 1023];
        for _ in 0..64 {
            log.append(|out| {
                out.extend_from_slice(&line);
                out.push(b'\n');
            });
        }
        let written = std::fs::read(&path).expect("read");
        assert_eq!(written.len(), 6 + 64 * 1024, "written at 64 KiB");
        log.append(|out| out.extend_from_slice(b"last\n"));
        drop(log);
        let written = std::fs::read(&path).expect("read");
        assert!(written.ends_with(b"\nlast\n"), "flushed when dropped");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_flusher_writes_within_a_second_or_two() {
        let dir = scratch("flusher");
        let path = dir.join("access.log");
        let log = AccessLogFile::open(&path).expect("open");
        log.append(|out| out.extend_from_slice(b"quiet site\n"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read(&path).expect("read").is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "not flushed within 5 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(std::fs::read(&path).expect("read"), b"quiet site\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn reopen_sends_earlier_lines_to_the_renamed_file() {
        let dir = scratch("reopen");
        let path = dir.join("access.log");
        let log = AccessLogFile::open(&path).expect("open");
        log.append(|out| out.extend_from_slice(b"before\n"));
        std::fs::rename(&path, dir.join("access.log.1")).expect("rotate");
        log.reopen().expect("reopen");
        log.append(|out| out.extend_from_slice(b"after\n"));
        log.flush();
        assert_eq!(
            std::fs::read(dir.join("access.log.1")).expect("old"),
            b"before\n"
        );
        assert_eq!(std::fs::read(&path).expect("new"), b"after\n");
        // A reopen that fails keeps the file in use.
        std::fs::remove_dir_all(&dir).expect("remove dir");
        assert!(log.reopen().is_err());
        log.append(|out| out.extend_from_slice(b"still logging\n"));
        log.flush();
    }

    #[test]
    fn an_unopenable_path_is_an_error() {
        let err = AccessLogFile::open(Path::new("/nonexistent-dir/access.log"))
            .err()
            .expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
