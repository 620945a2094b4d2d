//! The bytes of an upload after its last stored part (fewer than [`super::PART`]), kept on local disk
//! between requests: `work/uploads/{iteration:06}-{contributor}-{diff sha256}.part`, holding the
//! offset in the diff where they start (8 bytes, little-endian) and then the bytes. A tail whose
//! offset is not where the stored parts end is stale (a part took its bytes) and counts as empty.
//! Each tail is written to a temporary file, synced and renamed, so a crash leaves the old one or the
//! new one, never half of either.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

/// The tail file of one announced diff. Both parts were validated at the announce (a contributor id
/// of `[A-Za-z0-9._-]`, a 64-hex hash), so the name never leaves `work/uploads/`.
pub fn path(work: &Path, iteration: u64, contributor: &str, diff_sha256: &str) -> PathBuf {
    debug_assert!(coldfuse_shared::api::keys::valid_contributor_id(
        contributor
    ));
    debug_assert!(coldfuse_shared::hash::is_sha256_hex(diff_sha256));
    dir(work).join(format!("{iteration:06}-{contributor}-{diff_sha256}.part"))
}

/// `work/uploads/`.
pub fn dir(work: &Path) -> PathBuf {
    work.join("uploads")
}

/// The iteration and contributor a tail file name belongs to
/// (`{iteration:06}-{contributor}-{64 hex}.part`).
pub fn owner(name: &str) -> Option<(u64, &str)> {
    let stem = name.strip_suffix(".part")?;
    let rest = stem.get(7..stem.len().checked_sub(65)?)?;
    let iteration = stem.get(..6)?.parse().ok()?;
    (stem.as_bytes().get(6) == Some(&b'-')).then_some((iteration, rest))
}

/// The tail at `path`: where it starts in the diff and its bytes (`None` when there is none).
pub async fn read(path: &Path) -> Option<(u64, Vec<u8>)> {
    let bytes = tokio::fs::read(path).await.ok()?;
    let start = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    Some((start, bytes[8..].to_vec()))
}

/// Where the tail at `path` starts and how many bytes it holds, without reading them.
pub async fn extent(path: &Path) -> Option<(u64, u64)> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await.ok()?;
    let len = file.metadata().await.ok()?.len().checked_sub(8)?;
    let mut prefix = [0u8; 8];
    file.read_exact(&mut prefix).await.ok()?;
    Some((u64::from_le_bytes(prefix), len))
}

/// Replaces the tail at `path` with `bytes` starting at `start` in the diff, durably.
pub async fn write(path: &Path, start: u64, bytes: Vec<u8>) -> std::io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let dir = path.parent().expect("tails live in work/uploads");
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&start.to_le_bytes())?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Every tail file: its path, iteration and contributor (leftover temporary files included, as
/// their own owner's).
pub async fn list(work: &Path) -> Vec<(PathBuf, u64, String)> {
    let mut out = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(dir(work)).await else {
        return out;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let part = name.strip_suffix(".tmp").map(|s| format!("{s}.part"));
        if let Some((iteration, who)) = owner(part.as_deref().unwrap_or(name)) {
            out.push((entry.path(), iteration, who.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_names_name_their_owner() {
        let hash = "ab".repeat(32);
        let p = path(Path::new("/w"), 3, "site-a-b", &hash);
        assert_eq!(
            p,
            Path::new(&format!("/w/uploads/000003-site-a-b-{hash}.part"))
        );
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(owner(name), Some((3, "site-a-b")));
        assert_eq!(owner("000003-x.part"), None);
        assert_eq!(owner("junk"), None);
    }

    #[tokio::test]
    async fn tails_replace_whole_and_say_where_they_start() {
        let work = tempfile::tempdir().unwrap();
        let p = path(work.path(), 1, "a", &"cd".repeat(32));
        assert_eq!(read(&p).await, None);
        write(&p, 16 << 20, b"hello".to_vec()).await.unwrap();
        assert_eq!(read(&p).await, Some((16 << 20, b"hello".to_vec())));
        assert_eq!(extent(&p).await, Some((16 << 20, 5)));
        write(&p, 0, Vec::new()).await.unwrap();
        assert_eq!(extent(&p).await, Some((0, 0)));
        let listed = list(work.path()).await;
        assert_eq!(listed, vec![(p, 1, "a".to_string())]);
    }
}
