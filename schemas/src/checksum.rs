//! Checksums: XXH3-64 over bytes and files, written as 16 hex digits in JSON.

use std::io::Read;
use std::path::Path;

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::error::{io, Result};

/// XXH3-64 of `bytes`.
pub fn xxh3(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// XXH3-64 of a whole file, read in 1 MiB pieces.
pub fn xxh3_file(path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Xxh3::new();
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
