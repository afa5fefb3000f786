//! Checksums: XXH3-64 over bytes and files, written as 16 hex digits in JSON.
//!
//! `twox-hash` picks its SIMD code (AVX2 or SSE2 on x86-64) when the program runs, so the
//! per-frame checks of the loader run at memory speed on any x86-64 machine.

use std::hash::Hasher as _;
use std::io::Read;
use std::path::Path;

use twox_hash::XxHash3_64;

use crate::error::{io, Result};

/// XXH3-64 of `bytes`.
pub fn xxh3(bytes: &[u8]) -> u64 {
    XxHash3_64::oneshot(bytes)
}

/// XXH3-64 of `bytes` with `seed`.
pub fn xxh3_seeded(bytes: &[u8], seed: u64) -> u64 {
    XxHash3_64::oneshot_with_seed(seed, bytes)
}

/// XXH3-64 of bytes given in pieces (equal to [`xxh3`] of their concatenation).
#[derive(Default)]
pub struct Hasher(XxHash3_64);

impl Hasher {
    /// An empty hasher.
    pub fn new() -> Self {
        Hasher(XxHash3_64::new())
    }

    /// Add `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    /// The XXH3-64 of everything added so far.
    pub fn digest(&self) -> u64 {
        self.0.finish()
    }
}

/// XXH3-64 of a whole file, read in 1 MiB pieces.
pub fn xxh3_file(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.digest())
}

/// A checksum as it appears in JSON: 16 lowercase hex digits.
pub fn to_hex(x: u64) -> String {
    format!("{x:016x}")
}

/// A path component made from a user's id: kept when it is plain, else made plain and
/// suffixed with a hash so that two ids never collide.
pub fn safe_component(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if plain == name && !name.starts_with('.') && !name.is_empty() {
        plain
    } else {
        format!(
            "{}-{:08x}",
            plain.trim_start_matches('.'),
            xxh3(name.as_bytes()) as u32
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_hash_like_the_whole_and_known_values_hold() {
        // XXH3-64 of the empty input with seed 0 (the reference implementation's value).
        assert_eq!(xxh3(b""), 0x2d06800538d394c2);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = Hasher::new();
        for piece in data.chunks(977) {
            h.update(piece);
        }
        assert_eq!(h.digest(), xxh3(&data));
        assert_ne!(xxh3_seeded(&data, 1), xxh3(&data));
        assert_eq!(xxh3_seeded(&data, 0), xxh3(&data));
    }
}
