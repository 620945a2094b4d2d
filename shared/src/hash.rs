//! SHA-256 of files, streamed, as lowercase hex (the form used in every manifest).

use std::{fs::File, io::Read, path::Path};

use sha2::{Digest, Sha256};

/// The SHA-256 of the file at `path`, as 64 lowercase hex digits.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The SHA-256 of `bytes`, as 64 lowercase hex digits.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `s` looks like a SHA-256 hex digest (64 lowercase hex digits).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// SHA-256 whose state can be saved between the parts of a long upload and restored after a
/// restart (the bytes already hashed are never read again). Same digests as [`sha2::Sha256`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResumableSha256 {
    /// The compression state after every whole 64-byte block so far.
    state: [u32; 8],
    /// Bytes hashed so far.
    len: u64,
    /// The bytes of an incomplete block (fewer than 64).
    pending: Vec<u8>,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        Self {
            state: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            len: 0,
            pending: Vec::new(),
        }
    }
}

impl ResumableSha256 {
    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hashes `data` after what came before.
    pub fn update(&mut self, mut data: &[u8]) {
        use sha2::digest::generic_array::GenericArray;
        self.len += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < 64 {
                return;
            }
            sha2::compress256(
                &mut self.state,
                std::slice::from_ref(GenericArray::from_slice(&self.pending)),
            );
            self.pending.clear();
        }
        let whole = data.len() / 64 * 64;
        for block in data[..whole].chunks_exact(64) {
            sha2::compress256(
                &mut self.state,
                std::slice::from_ref(GenericArray::from_slice(block)),
            );
        }
        self.pending.extend_from_slice(&data[whole..]);
    }

    /// The digest, as 64 lowercase hex digits.
    pub fn finalize_hex(mut self) -> String {
        let bits = self.len.wrapping_mul(8);
        let mut tail = std::mem::take(&mut self.pending);
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&bits.to_be_bytes());
        let len = self.len;
        self.update(&tail);
        self.len = len;
        debug_assert!(self.pending.is_empty());
        hex::encode(
            self.state
                .iter()
                .flat_map(|w| w.to_be_bytes())
                .collect::<Vec<u8>>(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumable_matches_sha2_across_splits_and_a_save() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for len in [0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 1000] {
            let want = sha256_bytes(&data[..len]);
            for cut in [0, 1, 3, 63, 64, 100].into_iter().filter(|&c| c <= len) {
                let mut h = ResumableSha256::default();
                h.update(&data[..cut]);
                // Saved and restored between the two halves, as between upload parts.
                let json = serde_json::to_string(&h).unwrap();
                let mut h: ResumableSha256 = serde_json::from_str(&json).unwrap();
                for piece in data[cut..len].chunks(17) {
                    h.update(piece);
                }
                assert_eq!(h.len(), len as u64);
                assert_eq!(h.finalize_hex(), want, "len {len} cut {cut}");
            }
        }
    }
}
