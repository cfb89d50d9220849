//! Files and folders that hold secrets or personal data — the data dir, the embedded
//! cluster's superuser password, the cookie secret, mail — are for their owner only.
//! They are created with that mode (never wider, not even for a moment) and tightened at
//! start when an older install left them wider.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Folders: the owner only.
pub const DIR_MODE: u32 = 0o700;
/// Files: the owner reads and writes.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (its parents as usual) with `mode`, or sets `mode` on an existing one.
pub fn private_dir(dir: &Path, mode: u32) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(error) => return Err(error),
    }
    // Also when just created: the umask may have taken bits that `mode` asks for.
    set_mode(dir, mode)
}

/// Makes the data dir private: 0700; or, when the embedded cluster runs as another user
/// (we are root), 0710 with that user's `group`, so that it can pass through to the
/// cluster's own folder and to nothing else.
pub fn data_dir(dir: &Path, group: Option<u32>) -> io::Result<()> {
    let mode = if group.is_some() { 0o710 } else { DIR_MODE };
    private_dir(dir, mode)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(dir, None, Some(gid))?;
    }
    Ok(())
}

/// Sets `path`'s permission bits to `mode` if they differ; a missing file is left missing.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    let current = match fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode() & 0o7777,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if current != mode {
        if current & !mode != 0 {
            tracing::warn!(
                "{} had mode {current:04o}, wider than it should be: now {mode:04o}",
                path.display()
            );
        }
        fs::set_permissions(path, Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Writes `contents` to `path` complete or not at all, mode 0600 from the first byte: a
/// new file beside it, then renamed over `path`. The temporary name ends in `.partial`.
pub fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a file path is needed"))?
        .to_string_lossy();
    let partial = path.with_file_name(format!(".{name}.{}.partial", crate::random::random_token(8)));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&partial)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&partial, path));
    if written.is_err() {
        let _ = fs::remove_file(&partial);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn private_files_and_folders_are_created_tight_and_tightened_when_wider() {
        let base = std::env::temp_dir().join(format!("rd-private-{}", crate::random::random_token(8)));
        let dir = base.join("a").join("b");
        private_dir(&dir, DIR_MODE).unwrap();
        assert_eq!(mode(&dir), 0o700);

        let file = dir.join("secret");
        fs::write(&file, "old").unwrap();
        fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        write_private_file(&file, b"new").unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "new");
        assert_eq!(mode(&file), 0o600, "replaced by a file created 0600");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");

        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir, DIR_MODE).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::remove_dir_all(&base).unwrap();
    }
}
