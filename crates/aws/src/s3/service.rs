//! The uploads: PutObject, or a multipart upload (CreateMultipartUpload, UploadPart per
//! `upload_chunk_size`, CompleteMultipartUpload; AbortMultipartUpload when a step fails, so no
//! half upload is left billed).

use std::io::Write;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ObjectCannedAcl, StorageClass};
use aws_sdk_s3::Client;
use bytes::Bytes;
use md5::{Digest, Md5};

use super::config::{ObjectCompression, S3Settings};
use crate::client::LazyClient;
use crate::error::AwsError;
use crate::retry::{to_aws_error, with_auto_retry};

/// Compresses a whole object.
pub fn compress(c: ObjectCompression, data: Vec<u8>) -> std::io::Result<Vec<u8>> {
    match c {
        ObjectCompression::None => Ok(data),
        ObjectCompression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 4 + 64),
                flate2::Compression::default(),
            );
            e.write_all(&data)?;
            e.finish()
        }
        ObjectCompression::Zstd => zstd::encode_all(&data[..], 3),
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

/// Talks to S3.
pub struct S3Service {
    client: LazyClient<Client>,
    settings: std::sync::Arc<S3Settings>,
}

impl S3Service {
    /// A service for `settings` (the client is built on first use).
    pub fn new(settings: std::sync::Arc<S3Settings>) -> Self {
        S3Service {
            client: LazyClient::new(settings.aws.clone()),
            settings,
        }
    }

    /// Uploads `data` (already compressed) under `key`.
    pub async fn upload(&self, key: &str, data: Vec<u8>) -> Result<(), AwsError> {
        let s = &self.settings;
        if s.use_put_object || data.len() as u64 <= s.upload_chunk_size {
            self.put_object(key, data).await
        } else {
            self.multipart(key, Bytes::from(data)).await
        }
    }

    async fn put_object(&self, key: &str, data: Vec<u8>) -> Result<(), AwsError> {
        let s = &self.settings;
        let client = self.client.get().await;
        let md5 = s.send_content_md5.then(|| md5_base64(&data));
        let bytes = Bytes::from(data);
        with_auto_retry(s.aws.auto_retry_requests, || {
            client
                .put_object()
                .bucket(&s.bucket)
                .key(key)
                .body(ByteStream::from(bytes.clone()))
                .set_content_type(s.content_type.clone())
                .set_content_encoding(content_encoding(s.compression))
                .set_content_md5(md5.clone())
                .set_acl(s.canned_acl.as_deref().map(ObjectCannedAcl::from))
                .set_storage_class(s.storage_class.as_deref().map(StorageClass::from))
                .send()
        })
        .await
        .map(|_| ())
        .map_err(|e| to_aws_error("PutObject", &e))
    }

    async fn multipart(&self, key: &str, data: Bytes) -> Result<(), AwsError> {
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
            .map_err(|e| to_aws_error("CreateMultipartUpload", &e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(AwsError::Transient(
                "CreateMultipartUpload: no upload id in the answer".into(),
            ));
        };
        match self.parts(key, &upload_id, &data).await {
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

    async fn parts(&self, key: &str, upload_id: &str, data: &Bytes) -> Result<(), AwsError> {
        let s = &self.settings;
        let client = self.client.get().await;
        let chunk = usize::try_from(s.upload_chunk_size).unwrap_or(usize::MAX);
        let mut parts = Vec::new();
        for (i, start) in (0..data.len()).step_by(chunk.max(1)).enumerate() {
            let number =
                i32::try_from(i + 1).map_err(|_| AwsError::Permanent("too many parts".into()))?;
            let bytes = data.slice(start..(start + chunk).min(data.len()));
            let md5 = s.send_content_md5.then(|| md5_base64(&bytes));
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
            .map_err(|e| to_aws_error("UploadPart", &e))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
            );
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
            .map_err(|e| to_aws_error("CompleteMultipartUpload", &e))
    }
}
