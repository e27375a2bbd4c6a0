//! Fluent Bit 5.x's offset marker: `in_tail_files.offset_marker` is the 64-bit XXH3 hash of the
//! (at most) 32 bytes just before `offset`, and `offset_marker_size` how many bytes were hashed
//! (0 with the marker 0 when the offset is 0). Fluent Bit 5.1.1 trusts a stored offset only when
//! the marker size is 0 (a row from before the columns existed) or the hash of the file's bytes
//! before the offset still matches; otherwise it takes the row for another file (inode reused,
//! or truncated and rewritten while stopped) and starts that file over. logferry writes the
//! marker with every offset so that a DB it used resumes in Fluent Bit, and checks it the same
//! way when it resumes.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Fluent Bit's marker window (`FLB_TAIL_DB_OFFSET_MARKER_SIZE`).
pub const WINDOW: u64 = 32;

/// A marker as stored: the hash and the number of bytes hashed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marker {
    pub hash: u64,
    pub size: u64,
}

impl Marker {
    /// The marker of `offset` in `file`: the bytes `[offset - w, offset)` with
    /// `w = min(offset, 32)`. `None` when those bytes cannot be read (the file is shorter):
    /// Fluent Bit then stores 0/0, which every reader trusts.
    pub fn at(file: &File, offset: u64) -> Option<Marker> {
        if offset == 0 {
            return Some(Marker::default());
        }
        let w = offset.min(WINDOW);
        let mut buf = [0u8; WINDOW as usize];
        let want = &mut buf[..w as usize];
        let mut got = 0usize;
        while got < want.len() {
            match file.read_at(&mut want[got..], offset - w + got as u64) {
                Ok(0) => return None,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        Some(Marker {
            hash: xxh3_64(want)?,
            size: w,
        })
    }

    /// What is written with `offset`: the marker, or 0/0 when it cannot be computed.
    pub fn for_db(file: Option<&File>, offset: u64) -> Marker {
        file.and_then(|f| Marker::at(f, offset)).unwrap_or_default()
    }

    /// Whether a stored offset is still trusted, by Fluent Bit 5.1.1's rule
    /// (`flb_tail_file_offset_marker_matches`): offsets of 0 and rows without a marker are;
    /// otherwise the bytes before the offset must hash to the stored marker.
    pub fn trusts(file: &File, offset: u64, stored: Marker) -> bool {
        if offset == 0 || stored.size == 0 {
            return true;
        }
        Marker::at(file, offset) == Some(stored)
    }
}

/// xxHash's default secret (its first 72 bytes, all that inputs of up to 32 bytes use).
const SECRET: [u8; 72] = [
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb,
];

const P64_1: u64 = 0x9E37_79B1_85EB_CA87;
const P64_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P64_3: u64 = 0x1656_67B1_9E37_79F9;

fn r64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

fn r32(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}

fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

fn xxh64_avalanche(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(P64_2);
    h ^= h >> 29;
    h = h.wrapping_mul(P64_3);
    h ^ (h >> 32)
}

fn xxh3_avalanche(mut h: u64) -> u64 {
    h ^= h >> 37;
    h = h.wrapping_mul(0x1656_6791_9E37_79F9);
    h ^ (h >> 32)
}

fn mix16(b: &[u8], at: usize, s: usize) -> u64 {
    fold(
        r64(b, at) ^ r64(&SECRET, s),
        r64(b, at + 8) ^ r64(&SECRET, s + 8),
    )
}

/// XXH3-64 (seed 0) of at most 32 bytes, as xxHash 0.8 computes it (`XXH3_64bits`, which
/// Fluent Bit calls `cfl_hash_64bits`); `None` for longer input, which the marker never hashes.
pub fn xxh3_64(b: &[u8]) -> Option<u64> {
    let len = b.len();
    let n = len as u64;
    Some(match len {
        0 => xxh64_avalanche(r64(&SECRET, 56) ^ r64(&SECRET, 64)),
        1..=3 => {
            let combined = (u64::from(b[0]) << 16)
                | (u64::from(b[len >> 1]) << 24)
                | u64::from(b[len - 1])
                | (n << 8);
            xxh64_avalanche(combined ^ (r32(&SECRET, 0) ^ r32(&SECRET, 4)))
        }
        4..=8 => {
            let input = r32(b, len - 4).wrapping_add(r32(b, 0) << 32);
            let mut h = input ^ (r64(&SECRET, 8) ^ r64(&SECRET, 16));
            h ^= h.rotate_left(49) ^ h.rotate_left(24);
            h = h.wrapping_mul(0x9FB2_1C65_1E98_DF25);
            h ^= (h >> 35).wrapping_add(n);
            h = h.wrapping_mul(0x9FB2_1C65_1E98_DF25);
            h ^ (h >> 28)
        }
        9..=16 => {
            let lo = r64(b, 0) ^ (r64(&SECRET, 24) ^ r64(&SECRET, 32));
            let hi = r64(b, len - 8) ^ (r64(&SECRET, 40) ^ r64(&SECRET, 48));
            let acc = n
                .wrapping_add(lo.swap_bytes())
                .wrapping_add(hi)
                .wrapping_add(fold(lo, hi));
            xxh3_avalanche(acc)
        }
        17..=32 => {
            let acc = n
                .wrapping_mul(P64_1)
                .wrapping_add(mix16(b, 0, 0))
                .wrapping_add(mix16(b, len - 16, 16));
            xxh3_avalanche(acc)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XXH3_64bits of each prefix of one string, printed by xxHash 0.8.3's own `xxhash.h`
    /// (the copy vendored in Fluent Bit's `lib/cfl`), compiled outside the repository.
    #[test]
    fn matches_xxhash_for_every_length_up_to_32() {
        let s = b"2024-05-01T10:00:00Z line-000123 some text here!!\nABCDEFGHIJ";
        let want: [u64; 33] = [
            0x2d06800538d394c2,
            0xfb95a7322f5da314,
            0xe4f7ce4c0f09ecfd,
            0x07fe0e22b384d0b5,
            0x6ba96e360d6aa402,
            0x63aec54ba1e700a8,
            0x97022b8f8965e0de,
            0xd8f8e39970c3ff20,
            0xfbccfb96a51f7d5e,
            0x3e921302627cd092,
            0x513247ba81bc6080,
            0xc0a6c9cec5a4c090,
            0x36c833c14f2dc80b,
            0x8feacc09ae561d3b,
            0x69e692804d0cc9a5,
            0x024ed972281bea1e,
            0x806ab5d83804f8de,
            0xba487a3ffbc2bddf,
            0x7171d0865ec3ab18,
            0x3083b446eca41fd2,
            0xc58c2de19c4f828e,
            0x0aa2a94997b362da,
            0x7166a9e23ce2221c,
            0x7c20dee81a6445f4,
            0xce65e107961353d9,
            0xbd2755f058759946,
            0x7c6c90552c056141,
            0x3b013c26852e8304,
            0x0772165019f0590c,
            0xc196ad300ec01cc8,
            0x44bce0db5db84b5a,
            0xf6977a08f292009a,
            0x8c369f2857e0f467,
        ];
        for (n, w) in want.iter().enumerate() {
            assert_eq!(xxh3_64(&s[..n]), Some(*w), "length {n}");
        }
        assert_eq!(xxh3_64(&s[..33]), None);
    }

    #[test]
    fn marker_hashes_the_bytes_before_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.log");
        let text = b"2024-05-01T10:00:00Z line-000123 some text here!!\nABCDEFGHIJ";
        std::fs::write(&p, text).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(Marker::at(&f, 0), Some(Marker::default()));
        let m = Marker::at(&f, 10).unwrap();
        assert_eq!((m.size, m.hash), (10, xxh3_64(&text[..10]).unwrap()));
        let m = Marker::at(&f, 50).unwrap();
        assert_eq!((m.size, m.hash), (32, xxh3_64(&text[18..50]).unwrap()));
        assert_eq!(Marker::at(&f, 1000), None, "past the end");
        assert!(Marker::trusts(&f, 50, m));
        assert!(!Marker::trusts(&f, 49, m));
        assert!(
            Marker::trusts(&f, 49, Marker::default()),
            "rows without a marker are trusted"
        );
    }
}
