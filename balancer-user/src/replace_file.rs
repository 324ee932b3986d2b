//! Replacing a small state file whole (the operator states, the withdraw flag): a reader, or
//! the next start after a crash, finds either the old content or the new, never a part.

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
    fn a_missing_directory_is_an_error_and_writes_nothing() {
        let path = std::env::temp_dir().join("replace-file-no-such-dir/state.json");
        let err = replace_file(&path, b"x").expect_err("no directory");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
