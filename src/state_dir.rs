//! The state directory's privacy: `state_dir` holds the database (logins, addresses, device
//! IDs) and the generated secrets, so the server creates it 0700 and every file in it 0600
//! whatever umask it was started with, and warns at start about an existing directory or file
//! that other users can read. It never refuses to start over modes: an admin may have widened
//! them on purpose (a backup group), and the warning says how to undo it.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Makes every file and directory the process creates from now on private to its user.
/// SQLite creates `-wal` and `-shm` itself, with the database file's mode, so the umask (not a
/// chmod after the fact) is what keeps them private from the moment they exist. Call before
/// anything is opened: it changes the whole process, and only the server calls it.
pub fn make_new_files_private() {
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates `dir` (and missing parents) with mode 0700; an existing directory keeps its mode.
pub fn create(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The permission bits other users have on `path`, when there are any.
fn open_to_others(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// `dir` and the files in it that group or others can read, write or enter, with their modes.
pub fn exposed(dir: &Path) -> Vec<(std::path::PathBuf, u32)> {
    let mut found = Vec::new();
    if let Some(mode) = open_to_others(dir) {
        found.push((dir.to_path_buf(), mode));
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| entry.path())
        .collect();
    files.sort();
    found.extend(files.into_iter().filter_map(|path| open_to_others(&path).map(|mode| (path, mode))));
    found
}

/// Logs one warning line for each path `exposed` finds, with its mode and the command that
/// fixes it.
pub fn warn_if_exposed(dir: &Path) {
    for (path, mode) in exposed(dir) {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:04o}"),
            "other users can read mailwarden's state (logins, addresses, secrets); to fix it run: chmod go-rwx {}",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_state_dir_is_private_and_an_open_one_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/state");
        create(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(exposed(&dir).is_empty());

        let file = dir.join("api_key");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(exposed(&dir), vec![(dir.clone(), 0o755), (file, 0o644)]);
    }
}
