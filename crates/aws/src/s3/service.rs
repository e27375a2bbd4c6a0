//! The uploads: PutObject, or a multipart upload (CreateMultipartUpload, UploadPart per
//! `upload_chunk_size`, CompleteMultipartUpload; AbortMultipartUpload when a step fails, so no
//! half upload is left billed).
//!
//! Memory stays bounded whatever the buffer file's size: a file is read (and compressed, if
//! asked) part by part with [`PartReader`], never whole. The first part decides: when the
//! whole (compressed) object fits one `upload_chunk_size` part it goes up with PutObject,
//! otherwise as a multipart upload whose parts are read one at a time. With
//! `use_put_object`, the object is streamed from disk (compressed first into a temporary file
//! next to the buffer when compression is on). [`S3Service::largest_buffer`] reports the most
//! bytes of one file held in memory at once.
//!
//! A bucket that does not exist (`NoSuchBucket`) is transient ([`MissingResource::Transient`]):
//! an operator creates it. Whatever the error, the sink keeps the file and tries it again.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ObjectCannedAcl, StorageClass};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::Length;
use bytes::Bytes;
use md5::{Digest, Md5};

use super::config::{ObjectCompression, S3Settings};
use super::store::{BufFile, UPLOAD_TMP_SUFFIX};
use crate::client::LazyClient;
use crate::error::AwsError;
use crate::retry::{to_aws_error_with, with_auto_retry, MissingResource};

/// Input read at a time when compressing.
const READ_BLOCK: usize = 1024 * 1024;

/// Where a buffer file's records are.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: PathBuf,
    pub offset: u64,
    pub len: u64,
}

impl From<&BufFile> for Source {
    fn from(f: &BufFile) -> Self {
        Source {
            path: f.path.clone(),
            offset: f.data_offset,
            len: f.size,
        }
    }
}

enum Compressor {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Compressor {
    fn new(c: ObjectCompression) -> std::io::Result<Option<Self>> {
        Ok(match c {
            ObjectCompression::None => None,
            ObjectCompression::Gzip => Some(Compressor::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::default(),
            ))),
            ObjectCompression::Zstd => Some(Compressor::Zstd(zstd::stream::write::Encoder::new(
                Vec::new(),
                3,
            )?)),
        })
    }

    /// Compresses `data`, moving what came out so far to `out`.
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        let inner = match self {
            Compressor::Gzip(e) => {
                e.write_all(data)?;
                e.get_mut()
            }
            Compressor::Zstd(e) => {
                e.write_all(data)?;
                e.get_mut()
            }
        };
        out.append(inner);
        Ok(())
    }

    /// Ends the stream, moving the rest to `out`.
    fn finish(self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut rest = match self {
            Compressor::Gzip(e) => e.finish()?,
            Compressor::Zstd(e) => e.finish()?,
        };
        out.append(&mut rest);
        Ok(())
    }
}

/// Reads a buffer file's records as upload parts of `part` bytes (the last may be shorter),
/// compressed if asked, holding at most about one part plus one read block in memory.
pub struct PartReader {
    file: File,
    left: u64,
    part: usize,
    /// Whether parts are compressed (the compressor is gone once finished).
    compressed: bool,
    compressor: Option<Compressor>,
    /// Compressed bytes not handed out yet.
    out: Vec<u8>,
    block: Vec<u8>,
    /// The input is read whole (and the compressor finished).
    drained: bool,
    /// Most bytes held at once so far.
    peak: usize,
}

impl PartReader {
    /// A reader of `src`, cut in `part`-byte parts.
    pub fn open(src: &Source, compression: ObjectCompression, part: u64) -> std::io::Result<Self> {
        let mut file = File::open(&src.path)?;
        file.seek(SeekFrom::Start(src.offset))?;
        let compressor = Compressor::new(compression)?;
        let part = usize::try_from(part).unwrap_or(usize::MAX).max(1);
        Ok(PartReader {
            file,
            left: src.len,
            part,
            compressed: compressor.is_some(),
            block: Vec::new(),
            compressor,
            out: Vec::new(),
            drained: src.len == 0,
            peak: 0,
        })
    }

    fn note(&mut self, held: usize) {
        self.peak = self.peak.max(held);
    }

    /// Reads exactly `n` bytes of the file into `buf`.
    fn read_into(&mut self, buf: &mut Vec<u8>, n: usize) -> std::io::Result<()> {
        let start = buf.len();
        buf.resize(start + n, 0);
        self.file.read_exact(&mut buf[start..])?;
        self.left -= n as u64;
        Ok(())
    }

    /// The next part, `None` once everything was handed out.
    pub fn next_part(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        self.next_part_in(Vec::new())
    }

    /// [`PartReader::next_part`], read (or copied, when compressed) into `part`. The upload task makes
    /// that buffer: the part is freed there after its request, and memory freed on another
    /// thread than the (blocking) one that allocated it stayed resident with mimalloc: a
    /// 100 MB file's multipart upload grew RSS by about 90 MB.
    pub fn next_part_in(&mut self, mut part: Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
        if !self.compressed {
            let n = usize::try_from(self.left.min(self.part as u64)).unwrap_or(self.part);
            if n == 0 {
                self.drained = true;
                return Ok(None);
            }
            part.clear();
            part.reserve_exact(n);
            self.read_into(&mut part, n)?;
            self.drained = self.left == 0;
            self.note(part.len());
            return Ok(Some(part));
        }
        // The caller's buffer takes what the last part left over, then the compressor's
        // output; what goes past the part is kept in `self.out` (reused) for the next one.
        let mut out = part;
        out.clear();
        out.extend_from_slice(&self.out);
        self.out.clear();
        while out.len() < self.part && !self.drained {
            let n = usize::try_from(self.left.min(READ_BLOCK as u64)).unwrap_or(READ_BLOCK);
            let mut block = std::mem::take(&mut self.block);
            block.clear();
            self.read_into(&mut block, n)?;
            if let Some(c) = self.compressor.as_mut() {
                c.feed(&block, &mut out)?;
            }
            if self.left == 0 {
                if let Some(c) = self.compressor.take() {
                    c.finish(&mut out)?;
                }
                self.drained = true;
            }
            self.note(out.len() + block.capacity());
            self.block = block;
        }
        if out.is_empty() {
            return Ok(None);
        }
        if out.len() > self.part {
            self.out.extend_from_slice(&out[self.part..]);
            out.truncate(self.part);
        }
        self.note(out.len() + self.out.len() + self.block.capacity());
        Ok(Some(out))
    }

    /// Whether every part was handed out.
    pub fn is_done(&self) -> bool {
        self.drained && self.out.is_empty()
    }

    /// Most bytes held at once so far.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

fn content_encoding(c: ObjectCompression) -> Option<String> {
    match c {
        ObjectCompression::None => None,
        ObjectCompression::Gzip => Some("gzip".into()),
        ObjectCompression::Zstd => Some("zstd".into()),
    }
}

fn md5_base64(data: &[u8]) -> String {
    aws_smithy_types::base64::encode(Md5::digest(data))
}

/// MD5 of `len` bytes of `path` from `offset`, read 64 KiB at a time.
fn md5_of_file(path: &Path, offset: u64, len: u64) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut left = len;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        f.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(aws_smithy_types::base64::encode(h.finalize()))
}

fn reading(src: &Source, e: impl std::fmt::Display) -> AwsError {
    AwsError::Transient(format!("reading {}: {e}", src.path.display()))
}

/// Runs blocking file work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AwsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AwsError::Transient(format!("a file task failed: {e}")))
}

/// Talks to S3.
pub struct S3Service {
    client: LazyClient<Client>,
    settings: Arc<S3Settings>,
    peak: AtomicU64,
}

impl S3Service {
    /// A service for `settings` (the client is built on first use).
    pub fn new(settings: Arc<S3Settings>) -> Self {
        S3Service {
            client: LazyClient::new(settings.aws.clone()),
            settings,
            peak: AtomicU64::new(0),
        }
    }

    /// The most bytes of one buffer file held in memory at once by uploads so far.
    pub fn largest_buffer(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    fn note(&self, held: usize) {
        self.peak.fetch_max(held as u64, Ordering::Relaxed);
    }

    /// The next part of `reader`, read on a blocking thread.
    async fn next_part(
        &self,
        src: &Source,
        mut reader: PartReader,
    ) -> Result<(PartReader, Option<Vec<u8>>), AwsError> {
        // Allocated here, on a runtime thread: see `PartReader::next_part_in`.
        let buf = Vec::with_capacity(if reader.compressed {
            reader.part.saturating_add(READ_BLOCK)
        } else {
            usize::try_from(reader.left.min(reader.part as u64)).unwrap_or(0)
        });
        let (reader, part) = blocking(move || {
            let p = reader.next_part_in(buf);
            (reader, p)
        })
        .await?;
        self.note(reader.peak());
        Ok((reader, part.map_err(|e| reading(src, e))?))
    }

    /// Uploads the records of `src` under `key`.
    pub async fn upload_file(&self, key: &str, src: &Source) -> Result<(), AwsError> {
        let s = &self.settings;
        if s.use_put_object {
            return self.put_streamed(key, src).await;
        }
        let reader = PartReader::open(src, s.compression, s.upload_chunk_size)
            .map_err(|e| reading(src, e))?;
        let (reader, first) = self.next_part(src, reader).await?;
        let first = first.unwrap_or_default();
        if reader.is_done() {
            return self.put_object(key, first).await;
        }
        self.multipart(key, src, first, reader).await
    }

    async fn put_object(&self, key: &str, data: Vec<u8>) -> Result<(), AwsError> {
        let md5 = self.settings.send_content_md5.then(|| md5_base64(&data));
        let bytes = Bytes::from(data);
        self.put_body(key, md5, || Some(ByteStream::from(bytes.clone())))
            .await
    }

    /// PutObject whatever the size (`use_put_object`), streamed from disk.
    async fn put_streamed(&self, key: &str, src: &Source) -> Result<(), AwsError> {
        let s = &self.settings;
        let (path, offset, len, tmp) = if s.compression == ObjectCompression::None {
            (src.path.clone(), src.offset, src.len, None)
        } else {
            let tmp = PathBuf::from(format!("{}{UPLOAD_TMP_SUFFIX}", src.path.display()));
            let reader = PartReader::open(src, s.compression, s.upload_chunk_size)
                .map_err(|e| reading(src, e))?;
            let t = tmp.clone();
            let (len, peak) = blocking(move || compress_to(reader, &t))
                .await?
                .map_err(|e| reading(src, e))?;
            self.note(peak);
            (tmp.clone(), 0, len, Some(tmp))
        };
        let res = async {
            let md5 = if s.send_content_md5 {
                let p = path.clone();
                Some(
                    blocking(move || md5_of_file(&p, offset, len))
                        .await?
                        .map_err(|e| reading(src, e))?,
                )
            } else {
                None
            };
            let body: SdkBody = ByteStream::read_from()
                .path(&path)
                .offset(offset)
                .length(Length::Exact(len))
                .build()
                .await
                .map_err(|e| reading(src, e))?
                .into_inner();
            self.put_body(key, md5, || body.try_clone().map(ByteStream::new))
                .await
        }
        .await;
        if let Some(tmp) = tmp {
            let _ = std::fs::remove_file(tmp);
        }
        res
    }

    /// PutObject of `body()`; `body` is called twice up front, so that `auto_retry_requests`
    /// has a second copy (it is only used when one can be made).
    async fn put_body(
        &self,
        key: &str,
        md5: Option<String>,
        body: impl Fn() -> Option<ByteStream>,
    ) -> Result<(), AwsError> {
        let s = &self.settings;
        let client = self.client.get().await;
        let mut bodies: Vec<ByteStream> = [body(), body()].into_iter().flatten().collect();
        if bodies.is_empty() {
            return Err(AwsError::Transient(
                "PutObject: the body cannot be read".into(),
            ));
        }
        let auto = s.aws.auto_retry_requests && bodies.len() == 2;
        with_auto_retry(auto, || {
            let b = bodies.pop();
            let op = client
                .put_object()
                .bucket(&s.bucket)
                .key(key)
                .set_content_type(s.content_type.clone())
                .set_content_encoding(content_encoding(s.compression))
                .set_content_md5(md5.clone())
                .set_acl(s.canned_acl.as_deref().map(ObjectCannedAcl::from))
                .set_storage_class(s.storage_class.as_deref().map(StorageClass::from));
            async move {
                match b {
                    Some(b) => op.body(b).send().await,
                    None => Err(SdkError::construction_failure("no copy of the body left")),
                }
            }
        })
        .await
        .map(|_| ())
        .map_err(|e| to_aws_error_with("PutObject", &e, MissingResource::Transient))
    }

    async fn multipart(
        &self,
        key: &str,
        src: &Source,
        first: Vec<u8>,
        reader: PartReader,
    ) -> Result<(), AwsError> {
        let s = &self.settings;
        let client = self.client.get().await;
        let created = client
            .create_multipart_upload()
            .bucket(&s.bucket)
            .key(key)
            .set_content_type(s.content_type.clone())
            .set_content_encoding(content_encoding(s.compression))
            .set_acl(s.canned_acl.as_deref().map(ObjectCannedAcl::from))
            .set_storage_class(s.storage_class.as_deref().map(StorageClass::from))
            .send()
            .await
            .map_err(|e| {
                to_aws_error_with("CreateMultipartUpload", &e, MissingResource::Transient)
            })?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(AwsError::Transient(
                "CreateMultipartUpload: no upload id in the answer".into(),
            ));
        };
        match self.parts(key, &upload_id, src, first, reader).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let abort = client
                    .abort_multipart_upload()
                    .bucket(&s.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                if let Err(a) = abort {
                    tracing::warn!(message = "could not abort a failed multipart upload", key,
                        error = %crate::retry::describe("AbortMultipartUpload", &a));
                }
                Err(e)
            }
        }
    }

    async fn parts(
        &self,
        key: &str,
        upload_id: &str,
        src: &Source,
        first: Vec<u8>,
        mut reader: PartReader,
    ) -> Result<(), AwsError> {
        let s = &self.settings;
        let client = self.client.get().await;
        let mut parts = Vec::new();
        let mut next = Some(first);
        while let Some(data) = next.take() {
            let number = i32::try_from(parts.len() + 1)
                .map_err(|_| AwsError::Permanent("too many parts".into()))?;
            let md5 = s.send_content_md5.then(|| md5_base64(&data));
            let bytes = Bytes::from(data);
            let out = with_auto_retry(s.aws.auto_retry_requests, || {
                client
                    .upload_part()
                    .bucket(&s.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .set_content_md5(md5.clone())
                    .body(ByteStream::from(bytes.clone()))
                    .send()
            })
            .await
            .map_err(|e| to_aws_error_with("UploadPart", &e, MissingResource::Transient))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
            );
            drop(bytes);
            if !reader.is_done() {
                let (r, p) = self.next_part(src, reader).await?;
                reader = r;
                next = p;
            }
        }
        client
            .complete_multipart_upload()
            .bucket(&s.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                to_aws_error_with("CompleteMultipartUpload", &e, MissingResource::Transient)
            })
    }
}

/// Writes every part of `reader` to `tmp` (fsynced); returns its length and the reader's peak.
fn compress_to(mut reader: PartReader, tmp: &Path) -> std::io::Result<(u64, usize)> {
    let mut f = File::create(tmp)?;
    let mut len = 0u64;
    while let Some(part) = reader.next_part()? {
        f.write_all(&part)?;
        len += part.len() as u64;
    }
    f.sync_all()?;
    Ok((len, reader.peak()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(dir: &Path, data: &[u8], offset: usize) -> Source {
        let path = dir.join("f.buf");
        let mut all = vec![b'#'; offset];
        all.extend_from_slice(data);
        std::fs::write(&path, all).unwrap();
        Source {
            path,
            offset: offset as u64,
            len: data.len() as u64,
        }
    }

    fn parts(mut r: PartReader) -> (Vec<Vec<u8>>, usize) {
        let mut v = Vec::new();
        for _ in 0..1000 {
            match r.next_part().unwrap() {
                Some(p) => v.push(p),
                None => break,
            }
        }
        assert!(r.is_done());
        (v, r.peak())
    }

    fn noise(n: usize) -> Vec<u8> {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..n)
            .map(|i| {
                if i % 100 == 99 {
                    b'\n'
                } else {
                    rng.random_range(b'a'..=b'z')
                }
            })
            .collect()
    }

    #[test]
    fn plain_parts_are_exact_slices_after_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let data = noise(2_500);
        let s = src(dir.path(), &data, 17);
        let (p, peak) = parts(PartReader::open(&s, ObjectCompression::None, 1_000).unwrap());
        assert_eq!(
            p.iter().map(Vec::len).collect::<Vec<_>>(),
            [1_000, 1_000, 500]
        );
        assert_eq!(p.concat(), data);
        assert_eq!(peak, 1_000);
    }

    #[test]
    fn compressed_parts_are_full_but_the_last_and_decompress_to_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let data = noise(6 * READ_BLOCK);
        let s = src(dir.path(), &data, 5);
        let part = 1024 * 1024;
        for c in [ObjectCompression::Gzip, ObjectCompression::Zstd] {
            let (p, peak) = parts(PartReader::open(&s, c, part as u64).unwrap());
            assert!(p.len() >= 3, "{}", p.len());
            assert!(p[..p.len() - 1].iter().all(|x| x.len() == part));
            let whole = p.concat();
            let back = match c {
                ObjectCompression::Gzip => {
                    let mut out = Vec::new();
                    flate2::read::GzDecoder::new(&whole[..])
                        .read_to_end(&mut out)
                        .unwrap();
                    out
                }
                _ => zstd::decode_all(&whole[..]).unwrap(),
            };
            assert_eq!(back, data);
            assert!(peak <= part + 2 * READ_BLOCK + 64 * 1024, "{peak}");
        }
    }

    #[test]
    fn a_small_compressed_file_is_one_part() {
        let dir = tempfile::tempdir().unwrap();
        let s = src(dir.path(), b"hello\n", 0);
        let mut r = PartReader::open(&s, ObjectCompression::Gzip, 5 << 20).unwrap();
        assert!(r.next_part().unwrap().is_some());
        assert!(r.is_done());
        assert!(r.next_part().unwrap().is_none());
    }
}
