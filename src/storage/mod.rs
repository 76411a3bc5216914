//! Recordings in S3-compatible object storage (`[recording_upload]`): the S3 client
//! ([`s3`]) and the task that uploads each finished call's recording and deletes the copies
//! retention expires ([`uploader`]). The local file stays the default; without
//! `[recording_upload]` none of this runs.

pub mod s3;
pub mod uploader;

pub use s3::{S3Client, S3Error, S3Settings};
