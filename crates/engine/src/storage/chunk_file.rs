//! Chunk files in Fluent Bit's on-disk format (chunkio's file layout with Fluent Bit's chunk
//! metadata), so that a `storage.path` written by Fluent Bit is replayed by logferry and the
//! other way round.
//!
//! Layout, as chunkio documents it in `cio_file_st.h`:
//!
//! ```text
//! 0   2 bytes  0xC1 0x00
//! 2   4 bytes  CRC32 (big-endian) of bytes 22.. up to the end of the content; 0 without
//!              storage.checksum
//! 6   4 bytes  0 (padding)
//! 10  4 bytes  content length (big-endian), the bytes after the metadata
//! 14  8 bytes  0 (padding)
//! 22  2 bytes  metadata length (big-endian)
//! 24  metadata: 0xF1 0x77, event type (0: logs), 0, then the tag
//!     content: the records, msgpack ([`logferry_core::msgpack`])
//! ```
//!
//! Fluent Bit grows its files in pages, so a file may be longer than its content: the content
//! length in the header says where the records end (an old file without it is read to its
//! end, as chunkio infers it).

use logferry_core::msgpack::{self, MsgpackError};
use logferry_core::Record;

const ID: [u8; 2] = [0xc1, 0x00];
/// Bytes before the metadata.
pub const HEADER: usize = 24;
const META_MAGIC: [u8; 2] = [0xf1, 0x77];
const TYPE_LOGS: u8 = 0;
/// Bytes of metadata before the tag.
const META_HEADER: usize = 4;
/// The longest tag the metadata holds (Fluent Bit truncates longer ones the same way).
pub const TAG_MAX: usize = 65535 - META_HEADER;

/// Why a file is not a readable chunk.
#[derive(Debug, thiserror::Error)]
pub enum ChunkFileError {
    #[error("not a chunk file (no 0xC1 0x00 header)")]
    NotAChunk,
    #[error("chunk file is {0} bytes, shorter than its header says")]
    Truncated(usize),
    #[error("checksum mismatch: header says {stored:08x}, content has {actual:08x}")]
    Checksum { stored: u32, actual: u32 },
    #[error("metadata is not a Fluent Bit log chunk's (type {0})")]
    NotLogs(u8),
    #[error("records: {0}")]
    Records(#[from] MsgpackError),
}

/// What the header says, read without decoding the records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub tag: String,
    /// Where the records start.
    pub content_start: usize,
    /// How many bytes of records.
    pub content_len: usize,
    /// Whether the header held the content length (else it runs to the end of the file).
    pub length_stored: bool,
}

/// The bytes of a chunk file holding `records` under `tag`.
pub fn encode(tag: &str, records: &[Record], checksum: bool) -> Vec<u8> {
    let mut tag_bytes = tag.as_bytes();
    if tag_bytes.len() > TAG_MAX {
        tag_bytes = &tag_bytes[..TAG_MAX];
    }
    let meta_len = META_HEADER + tag_bytes.len();
    let mut out = Vec::with_capacity(HEADER + meta_len + records.len() * 128);
    out.extend_from_slice(&ID);
    out.extend_from_slice(&[0; 20]);
    out.extend_from_slice(&(meta_len as u16).to_be_bytes());
    out.extend_from_slice(&META_MAGIC);
    out.extend_from_slice(&[TYPE_LOGS, 0]);
    out.extend_from_slice(tag_bytes);
    let content_start = out.len();
    for r in records {
        msgpack::write_record(&mut out, r);
    }
    let content_len = (out.len() - content_start) as u32;
    out[10..14].copy_from_slice(&content_len.to_be_bytes());
    if checksum {
        let crc = crc32fast::hash(&out[22..]);
        out[2..6].copy_from_slice(&crc.to_be_bytes());
    }
    out
}

/// Reads the header of a chunk file (its first bytes, or all of it).
pub fn header(bytes: &[u8], file_len: usize) -> Result<Header, ChunkFileError> {
    if bytes.len() < HEADER || bytes[..2] != ID {
        return Err(ChunkFileError::NotAChunk);
    }
    let meta_len = usize::from(u16::from_be_bytes([bytes[22], bytes[23]]));
    let content_start = HEADER + meta_len;
    if bytes.len() < content_start {
        return Err(ChunkFileError::Truncated(bytes.len()));
    }
    let meta = &bytes[HEADER..content_start];
    let tag = if meta.len() >= META_HEADER && meta[..2] == META_MAGIC {
        if meta[2] != TYPE_LOGS {
            return Err(ChunkFileError::NotLogs(meta[2]));
        }
        let t = &meta[META_HEADER..];
        // Newer Fluent Bit ends the tag with a NUL when routing data follows it.
        let end = t.iter().position(|&b| b == 0).unwrap_or(t.len());
        &t[..end]
    } else {
        // Chunks from before the metadata magic hold just the tag.
        meta
    };
    let stored_len = u32::from_be_bytes([bytes[10], bytes[11], bytes[12], bytes[13]]) as usize;
    let available = file_len.saturating_sub(content_start);
    let content_len = if stored_len == 0 {
        available
    } else {
        stored_len
    };
    if content_len > available {
        return Err(ChunkFileError::Truncated(file_len));
    }
    Ok(Header {
        tag: String::from_utf8_lossy(tag).into_owned(),
        content_start,
        content_len,
        length_stored: stored_len != 0,
    })
}

/// Reads a whole chunk file: its tag and records. With `verify`, a checksum that does not match
/// is an error (a file written without `storage.checksum` has none and is not checked).
pub fn decode(bytes: &[u8], verify: bool) -> Result<(String, Vec<Record>), ChunkFileError> {
    let h = header(bytes, bytes.len())?;
    let end = h.content_start + h.content_len;
    let stored = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
    if verify && stored != 0 {
        let actual = crc32fast::hash(&bytes[22..end]);
        if actual != stored {
            return Err(ChunkFileError::Checksum { stored, actual });
        }
    }
    let content = &bytes[h.content_start..end];
    // Without a stored length the content runs to the end of the file, over the zeros of the
    // pages Fluent Bit grew it by (a zero byte starts no record).
    let records = if h.length_stored {
        msgpack::read_records(content)?
    } else {
        msgpack::read_records_before_padding(content)?
    };
    Ok((h.tag, records))
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_core::{EventTime, Map};

    fn recs() -> Vec<Record> {
        (0..3)
            .map(|i| {
                let mut m = Map::new();
                m.insert("log", format!("line {i}"));
                Record::new(EventTime::from_parts(1_700_000_000 + i, 7), m)
            })
            .collect()
    }

    #[test]
    fn round_trip_with_and_without_checksum() {
        for checksum in [false, true] {
            let bytes = encode("kube.var.log.containers.a.log", &recs(), checksum);
            assert_eq!(bytes[..2], [0xc1, 0x00]);
            assert_eq!(&bytes[24..28], &[0xf1, 0x77, 0, 0]);
            assert_eq!(bytes[2..6] == [0; 4], !checksum);
            let (tag, got) = decode(&bytes, true).unwrap();
            assert_eq!(tag, "kube.var.log.containers.a.log");
            assert_eq!(got, recs());
        }
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let mut bytes = encode("t", &recs(), true);
        let last = bytes.len() - 2;
        bytes[last] ^= 0x40;
        assert!(matches!(
            decode(&bytes, true),
            Err(ChunkFileError::Checksum { .. })
        ));
    }

    #[test]
    fn reads_fluent_bits_page_padding_and_files_without_a_length() {
        let mut bytes = encode("t", &recs(), false);
        bytes.resize(4096, 0);
        assert_eq!(decode(&bytes, true).unwrap().1, recs());
        // An old chunkio file: no content length in the header, zero padding after.
        bytes[10..14].copy_from_slice(&[0; 4]);
        assert_eq!(decode(&bytes, true).unwrap().1, recs());
    }

    #[test]
    fn truncated_or_foreign_files_are_errors() {
        let bytes = encode("t", &recs(), false);
        assert!(decode(&bytes[..bytes.len() - 1], false).is_err());
        assert!(decode(&bytes[..10], false).is_err());
        assert!(matches!(
            decode(b"hello world, not a chunk file at all", false),
            Err(ChunkFileError::NotAChunk)
        ));
    }

    #[test]
    fn known_bytes() {
        let mut m = Map::new();
        m.insert("a", 1i64);
        let bytes = encode("ab", &[Record::new(EventTime::from_parts(1, 2), m)], false);
        let mut want = vec![0xc1, 0x00];
        want.extend([0u8; 8]);
        want.extend(17u32.to_be_bytes()); // content length
        want.extend([0u8; 8]);
        want.extend([0, 6, 0xf1, 0x77, 0, 0, b'a', b'b']);
        want.extend([
            0x92, 0x92, 0xd7, 0x00, 0, 0, 0, 1, 0, 0, 0, 2, 0x80, 0x81, 0xa1, b'a', 0x01,
        ]);
        assert_eq!(bytes, want);
    }
}
