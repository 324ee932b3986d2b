//! Bytes kept for later: the first part in memory, the rest in an unlinked temporary file.
//!
//! File I/O here is plain `pread`/`pwrite` on the calling thread, as nginx does from its event
//! loop: a spooled body is written once and read back soon, so it stays in the page cache and
//! each call is a memory copy. (tokio's file API would hand every call to the blocking pool,
//! at a thread switch each.)

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::Path,
};

use bytes::{Bytes, BytesMut};

/// How much one read from the file hands out.
pub const FILE_CHUNK: usize = 64 * 1024;

/// An append-only store: memory up to `memory_limit`, then a temporary file. Once the file is
/// in use every later byte goes there too, so the order is memory, then file.
pub struct Spool {
    memory: Vec<Bytes>,
    in_memory: usize,
    memory_limit: usize,
    file: Option<File>,
    file_len: u64,
}

/// Where a reader of a [`Spool`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    chunk: usize,
    file_offset: u64,
}

impl Spool {
    pub fn new(memory_limit: usize) -> Spool {
        Spool {
            memory: Vec::new(),
            in_memory: 0,
            memory_limit,
            file: None,
            file_len: 0,
        }
    }

    /// Bytes held, memory and file.
    pub fn len(&self) -> u64 {
        self.in_memory as u64 + self.file_len
    }

    /// Bytes held in memory.
    pub fn in_memory(&self) -> usize {
        self.in_memory
    }

    /// Whether a temporary file holds part of it.
    #[cfg(test)]
    pub fn spilled(&self) -> bool {
        self.file.is_some()
    }

    /// Appends `data`: to memory while it fits there and nothing went to the file yet, else to
    /// the file (created in `dir` at the first spill).
    pub fn push(&mut self, data: Bytes, dir: &Path) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.file.is_none() && self.in_memory + data.len() <= self.memory_limit {
            self.in_memory += data.len();
            self.memory.push(data);
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(open_unlinked(dir)?),
        };
        file.write_all_at(&data, self.file_len)?;
        self.file_len += data.len() as u64;
        Ok(())
    }

    /// The piece at `cursor` (at most [`FILE_CHUNK`] bytes from the file), moving the cursor
    /// past it; `None` at the end.
    pub fn read(&self, cursor: &mut Cursor) -> io::Result<Option<Bytes>> {
        if let Some(chunk) = self.memory.get(cursor.chunk) {
            cursor.chunk += 1;
            return Ok(Some(chunk.clone()));
        }
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let piece = read_piece(file, cursor.file_offset, self.file_len)?;
        if let Some(piece) = &piece {
            cursor.file_offset += piece.len() as u64;
        }
        Ok(piece)
    }
}

/// Up to [`FILE_CHUNK`] bytes of `file` from `offset`, where the data ends at `end`; `None`
/// when there is nothing left.
pub fn read_piece(file: &File, offset: u64, end: u64) -> io::Result<Option<Bytes>> {
    let left = end - offset;
    if left == 0 {
        return Ok(None);
    }
    let size = usize::try_from(left).unwrap_or(usize::MAX).min(FILE_CHUNK);
    let mut buf = BytesMut::zeroed(size);
    file.read_exact_at(&mut buf, offset)?;
    Ok(Some(buf.freeze()))
}

/// A new file in `dir` that no directory entry names: it disappears with its last descriptor,
/// even when the process is killed. `O_TMPFILE` where the file system has it; else a random
/// name, unlinked at once.
pub fn open_unlinked(dir: &Path) -> io::Result<File> {
    let tmpfile = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match tmpfile {
        Ok(file) => return Ok(file),
        // Not supported by this file system (or kernel): fall back to a named file.
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) => {}
        Err(err) => return Err(with_dir(err, dir)),
    }
    let name = dir.join(format!("balancer-body-{:016x}", rand::random::<u64>()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name)
        .map_err(|err| with_dir(err, dir))?;
    std::fs::remove_file(&name)?;
    Ok(file)
}

fn with_dir(err: io::Error, dir: &Path) -> io::Error {
    io::Error::new(
        err.kind(),
        format!("temporary file in {}: {err}", dir.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(spool: &Spool, cursor: &mut Cursor) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(piece) = spool.read(cursor).unwrap() {
            out.extend_from_slice(&piece);
        }
        out
    }

    #[test]
    fn small_data_stays_in_memory() {
        let dir = std::env::temp_dir();
        let mut spool = Spool::new(10);
        spool.push(Bytes::from_static(b"hello"), &dir).unwrap();
        spool.push(Bytes::from_static(b"world"), &dir).unwrap();
        assert!(!spool.spilled());
        assert_eq!(spool.len(), 10);
        let mut cursor = Cursor::default();
        assert_eq!(read_all(&spool, &mut cursor), b"helloworld");
    }

    #[test]
    fn data_past_the_memory_limit_goes_to_an_unlinked_file_in_order() {
        let dir = std::env::temp_dir();
        let mut spool = Spool::new(8);
        let mut expected = Vec::new();
        for i in 0..300u32 {
            let piece: Vec<u8> = (0..1000).map(|j| ((i * 7 + j) % 251) as u8).collect();
            expected.extend_from_slice(&piece);
            spool.push(Bytes::from(piece), &dir).unwrap();
        }
        // A small piece after the spill still goes to the file: order is kept.
        spool.push(Bytes::from_static(b"end"), &dir).unwrap();
        expected.extend_from_slice(b"end");
        assert!(spool.spilled());
        assert_eq!(spool.in_memory(), 0);
        assert_eq!(spool.len(), expected.len() as u64);
        let mut cursor = Cursor::default();
        assert_eq!(read_all(&spool, &mut cursor), expected);
        // Read again from the start (a retry sends the body again).
        let mut again = Cursor::default();
        assert_eq!(read_all(&spool, &mut again), expected);
    }

    #[test]
    fn the_temporary_file_has_no_name_in_the_directory() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut spool = Spool::new(0);
        spool.push(Bytes::from_static(b"x"), &dir).unwrap();
        assert!(spool.spilled());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_that_names_it() {
        let mut spool = Spool::new(0);
        let err = spool
            .push(Bytes::from_static(b"x"), Path::new("/nonexistent/spool"))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/spool"), "{err}");
    }
}
