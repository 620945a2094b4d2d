//! Files that hold secrets (tokens, keys, settings with a token): written readable by their owner
//! only and synced to disk before they are reported written.

use std::{fs::OpenOptions, io::Write, path::Path};

/// What to do when the file already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Fail with `AlreadyExists` (a key must never be overwritten by mistake).
    Refuse,
    /// Truncate and rewrite it, mode included.
    Replace,
}

/// Writes `bytes` to `path` with mode 600 (owner read/write) and syncs it.
pub fn write_private(path: &Path, bytes: &[u8], existing: Existing) -> std::io::Result<()> {
    write_with_mode(path, bytes, 0o600, existing)
}

/// Writes `bytes` to `path` with Unix permissions `mode` (less the umask, for a new file) and syncs
/// it. An existing file replaced gets `mode` too: `open` applies the mode only to a file it creates,
/// and a stale file left behind must not keep a wider one.
pub fn write_with_mode(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    existing: Existing,
) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true);
    match existing {
        Existing::Refuse => options.create_new(true),
        Existing::Replace => options.create(true).truncate(true),
    };
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    let mut f = options.open(path)?;
    #[cfg(unix)]
    if existing == Existing::Replace {
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn owner_only_even_over_a_stale_file_and_refuses_to_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"new", Existing::Replace).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = write_private(&path, b"other", Existing::Refuse).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
