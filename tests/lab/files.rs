//! The served test tree and the test data: deterministic pseudo-random contents, so that every
//! transfer can be checked by its SHA-256.

use super::helpers::{set_mode, sh};
use super::servers;
use std::fs;
use std::path::{Path, PathBuf};

/// The served test tree and its expected checksums.
pub struct Tree {
    pub anon: PathBuf,
    pub upload: PathBuf,
    pub small_sha: String,
    pub large_sha: String,
    pub upload_file: PathBuf,
    pub upload_sha: String,
}

pub const LARGE_BYTES: usize = 64 << 20;
pub const DIR_ENTRIES: usize = 1000;

/// Deterministic fast pseudo-random bytes (xorshift): incompressible enough for a transfer test.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Writes `len` bytes of varied random data to `path` (every 8 MiB chunk differs, so no two
/// regions of the file are equal); returns its SHA-256.
pub fn write_big(path: &Path, len: usize) -> String {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let chunk = random_bytes(8 << 20, 99);
    let mut left = len;
    let mut i = 0u8;
    while left > 0 {
        let n = left.min(chunk.len());
        // Vary each chunk so that no two regions of the file are equal.
        let mut c = chunk[..n].to_vec();
        c[0] = i;
        c[n / 2] ^= i;
        f.write_all(&c).unwrap();
        left -= n;
        i = i.wrapping_add(1);
    }
    f.flush().unwrap();
    drop(f);
    sha256_file(path)
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

impl Tree {
    pub fn create(base: &Path) -> Tree {
        let anon = base.join("anon");
        let upload = base.join("upload");
        fs::create_dir_all(anon.join("dir")).unwrap();
        fs::create_dir_all(&upload).unwrap();
        fs::write(anon.join("small.bin"), random_bytes(1536, 7)).unwrap();
        fs::write(anon.join("large.bin"), random_bytes(LARGE_BYTES, 11)).unwrap();
        for i in 0..DIR_ENTRIES {
            fs::write(anon.join("dir").join(format!("entry{i:04}.txt")), format!("{i}\n")).unwrap();
        }
        let upload_file = base.join("upload-source.bin");
        fs::write(&upload_file, random_bytes(3 << 20, 13)).unwrap();
        for d in [&anon, &anon.join("dir")] {
            set_mode(d, 0o755);
        }
        let _ = sh(&["chown", &format!("{0}:{0}", servers::LAB_USER), upload.to_str().unwrap()]);
        set_mode(&upload, 0o755);
        Tree {
            small_sha: sha256_file(&anon.join("small.bin")),
            large_sha: sha256_file(&anon.join("large.bin")),
            upload_sha: sha256_file(&upload_file),
            anon,
            upload,
            upload_file,
        }
    }
}
