//! Small state files (the operator states, the withdraw flag): replaced whole, so that a
//! reader, or the next start after a crash, finds either the old content or the new, never a
//! part; and read back, where no file yet means nothing was saved.

use std::{fs, io, io::Write as _, path::Path};

/// Writes `contents` to `<path>.tmp`, flushes it to disk, and renames it over `path` (rename is
/// atomic within a file system). Without the flush, a crash soon after the rename could leave
/// an empty file where the old one was. The directory is flushed too, so that the rename
/// itself survives; a directory that cannot be opened for that is no error.
pub fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let mut file = fs::File::create(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty())
        && let Ok(dir) = fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The file's text, or `None` when there is no file yet (nothing saved: not an error).
pub fn read_if_present(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary_file() {
        let dir = std::env::temp_dir().join(format!("replace-file-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        replace_file(&path, b"first, longer content").expect("first");
        replace_file(&path, b"second").expect("second");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_missing_file_reads_as_none() {
        let path = std::env::temp_dir().join("replace-file-never-written.json");
        assert_eq!(read_if_present(&path).expect("read"), None);
        let dir = std::env::temp_dir().join(format!("replace-file-read-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        replace_file(&path, b"saved").expect("write");
        assert_eq!(
            read_if_present(&path).expect("read").as_deref(),
            Some("saved")
        );
        fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn a_missing_directory_is_an_error_and_writes_nothing() {
        let path = std::env::temp_dir().join("replace-file-no-such-dir/state.json");
        let err = replace_file(&path, b"x").expect_err("no directory");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
