//! A minimal streaming ustar writer: one header block per file, the bytes, zero padding, and two
//! zero blocks at the end — enough for `tar -x` and Python's `tarfile` to unpack a base.

/// A tar header block for a regular file.
pub fn header(path: &str, size: u64, mtime: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let name = path.as_bytes();
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[148..156].fill(b' ');
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let cks = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(cks.as_bytes());
    h
}

/// Zero bytes that pad a file of `size` bytes to the 512-byte block size.
pub fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// Total archive length for files of the given sizes.
pub fn archive_len(sizes: impl Iterator<Item = u64>) -> u64 {
    sizes.map(|s| 512 + s + padding(s) as u64).sum::<u64>() + 1024
}

/// Writes `value` as zero-padded octal, NUL-terminated, filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_header_has_a_valid_checksum_and_size() {
        let h = header("base/model.safetensors", 1000, 0);
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut copy = h;
        copy[148..156].fill(b' ');
        assert_eq!(stored, copy.iter().map(|&b| b as u32).sum::<u32>());
        assert_eq!(&h[124..135], b"00000001750");
        assert_eq!(padding(1000), 24);
        assert_eq!(
            archive_len([1000u64, 512].into_iter()),
            512 + 1024 + 512 + 512 + 1024
        );
    }
}
