//! The core that `kinesis_firehose` and `kinesis_streams` share (vector's `aws_kinesis`
//! pattern): records encoded to blobs ([`record`]), calls cut by count and size limits
//! ([`batch`]), request bodies written from the encoded items ([`body`]), and one
//! [`sink::RecordOutput`] that drives a per-service [`sink::RecordService`] with the
//! partial-failure rules both APIs need (`FailedPutCount`: retry only the failed records).

pub mod batch;
pub mod body;
pub mod record;
pub mod sink;
