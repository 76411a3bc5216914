//! A small S3 client: PUT a file, GET an object (with a byte range), DELETE it. Requests are
//! signed with AWS Signature Version 4 in the `Authorization` header (`aws-sigv4`), with the
//! payload's SHA-256 in `x-amz-content-sha256`, which AWS S3 and the S3-compatible servers
//! (MinIO, Ceph, R2, moto...) all check. Objects are addressed path-style
//! (`ENDPOINT/BUCKET/KEY`) or virtual-hosted (`BUCKET.HOST/KEY`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use sha2::{Digest as _, Sha256};

use crate::config::Secret;

/// The service name S3 requests are signed for.
const SERVICE: &str = "s3";

/// How much of a file one read sends on while uploading: 256 KiB.
const CHUNK: usize = 256 * 1024;

/// `[recording_upload]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `endpoint`: the S3 API's base URL (`https://s3.eu-west-1.amazonaws.com`,
    /// `http://127.0.0.1:9000`).
    pub endpoint: url::Url,
    /// `region` (default `us-east-1`): the region requests are signed for.
    pub region: String,
    /// `bucket`.
    pub bucket: String,
    /// `prefix` (default empty): put before each object's key (`calls/`).
    pub prefix: String,
    /// `access_key_env`'s value.
    pub access_key: Secret,
    /// `secret_key_env`'s value.
    pub secret_key: Secret,
    /// `path_style` (default `true`): `ENDPOINT/BUCKET/KEY`; `false`: `BUCKET.HOST/KEY`.
    pub path_style: bool,
    /// `delete_local` (default `false`): delete the local file once the upload is stored.
    pub delete_local: bool,
    /// `timeout_s` (default 300): the longest one request may take.
    pub timeout: Duration,
}

/// Why an S3 request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S3Error {
    /// The server answered with an error status (S3's error code and message when it gave
    /// them).
    #[error("S3 {op} {key}: HTTP {status} {code}: {message}")]
    Status {
        /// `PUT`, `GET`, `DELETE`.
        op: &'static str,
        /// The object's key.
        key: String,
        /// The HTTP status.
        status: u16,
        /// S3's `<Code>`, if any.
        code: String,
        /// S3's `<Message>`, if any.
        message: String,
    },
    /// The request did not complete (connection, timeout).
    #[error("S3 {op} {key}: {source}")]
    Http {
        /// The operation.
        op: &'static str,
        /// The object's key.
        key: String,
        /// What reqwest says.
        source: reqwest::Error,
    },
    /// The local file cannot be read.
    #[error("S3 {op} {key}: cannot read {path}: {source}")]
    File {
        /// The operation.
        op: &'static str,
        /// The object's key.
        key: String,
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The request cannot be signed or built (a key or header the signer refuses).
    #[error("S3 {op} {key}: cannot sign the request: {reason}")]
    Sign {
        /// The operation.
        op: &'static str,
        /// The object's key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// An S3 bucket, as `[recording_upload]` names it.
#[derive(Debug, Clone)]
pub struct S3Client {
    http: reqwest::Client,
    settings: Arc<S3Settings>,
}

impl S3Client {
    /// A client for `settings`.
    pub fn new(settings: S3Settings) -> Result<S3Client, S3Error> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|source| S3Error::Http {
                op: "client",
                key: String::new(),
                source,
            })?;
        Ok(S3Client {
            http,
            settings: Arc::new(settings),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// The key of a record's recording: `PREFIX` + the record id + `.wav`.
    pub fn key_of(&self, record_id: &str) -> String {
        format!("{}{record_id}.wav", self.settings.prefix)
    }

    /// How a record names a stored object: `s3://BUCKET/KEY`.
    pub fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.settings.bucket)
    }

    /// The key of `url` (as [`S3Client::url_of`] made it) if it is in this client's bucket.
    pub fn key_in(&self, url: &str) -> Option<String> {
        url.strip_prefix("s3://")?
            .strip_prefix(self.settings.bucket.as_str())?
            .strip_prefix('/')
            .map(str::to_owned)
    }

    /// The object's HTTP URL.
    fn object_url(&self, key: &str) -> String {
        // Each path segment of the key, percent-encoded as S3 expects (RFC 3986 unreserved
        // characters kept).
        let encoded: Vec<String> = key
            .split('/')
            .map(|seg| percent_encoding::utf8_percent_encode(seg, KEY_SEGMENT).to_string())
            .collect();
        let key = encoded.join("/");
        let e = &self.settings.endpoint;
        let base = e.as_str().trim_end_matches('/');
        if self.settings.path_style {
            format!("{base}/{}/{key}", self.settings.bucket)
        } else {
            let host = e.host_str().unwrap_or_default();
            let port = e.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}.{host}{port}/{key}",
                e.scheme(),
                self.settings.bucket
            )
        }
    }

    /// The signed headers of a request (`x-amz-date`, `x-amz-content-sha256`,
    /// `Authorization`), for `headers` already on it and a payload of SHA-256 `payload_sha256`.
    fn sign(
        &self,
        op: &'static str,
        key: &str,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        payload_sha256: String,
    ) -> Result<Vec<(String, String)>, S3Error> {
        let err = |reason: String| S3Error::Sign {
            op,
            key: key.to_owned(),
            reason,
        };
        let identity = aws_credential_types::Credentials::new(
            self.settings.access_key.expose(),
            self.settings.secret_key.expose(),
            None,
            None,
            "voxline.toml",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.settings.region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| err(e.to_string()))?
            .into();
        let request = SignableRequest::new(
            method,
            url,
            headers.iter().copied(),
            SignableBody::Precomputed(payload_sha256),
        )
        .map_err(|e| err(e.to_string()))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| err(e.to_string()))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// Uploads the file at `path` as `key` (one PUT, streamed from the file; its SHA-256,
    /// read first, is signed). The file's size.
    pub async fn put_file(&self, key: &str, path: &Path) -> Result<u64, S3Error> {
        const OP: &str = "PUT";
        let file_err = |source| S3Error::File {
            op: OP,
            key: key.to_owned(),
            path: path.display().to_string(),
            source,
        };
        let owned = path.to_path_buf();
        let (sha, size) = tokio::task::spawn_blocking(move || sha256_of(&owned))
            .await
            .map_err(|e| file_err(std::io::Error::other(e.to_string())))?
            .map_err(file_err)?;
        let file = tokio::fs::File::open(path).await.map_err(file_err)?;
        let url = self.object_url(key);
        let length = size.to_string();
        let headers = [
            ("content-type", "audio/wav"),
            ("content-length", length.as_str()),
        ];
        let signed = self.sign(OP, key, "PUT", &url, &headers, sha)?;
        let body =
            reqwest::Body::wrap_stream(futures_util::stream::unfold(file, |mut file| async move {
                use tokio::io::AsyncReadExt as _;
                let mut buf = vec![0u8; CHUNK];
                match file.read(&mut buf).await {
                    Ok(0) => None,
                    Ok(n) => {
                        buf.truncate(n);
                        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), file))
                    }
                    Err(e) => Some((Err(e), file)),
                }
            }));
        let resp = send(OP, key, self.http.put(&url).body(body), &headers, &signed).await?;
        check(OP, key, resp).await?;
        Ok(size)
    }

    /// GETs `key`, the byte range `range` of it when given (a `Range` header's value): the
    /// response, whose status is 200, 206 or 416.
    pub async fn get(&self, key: &str, range: Option<&str>) -> Result<reqwest::Response, S3Error> {
        const OP: &str = "GET";
        let url = self.object_url(key);
        let headers: Vec<(&str, &str)> = range.map(|r| ("range", r)).into_iter().collect();
        let signed = self.sign(OP, key, "GET", &url, &headers, EMPTY_SHA256.to_owned())?;
        let resp = send(OP, key, self.http.get(&url), &headers, &signed).await?;
        if resp.status().as_u16() == 416 {
            return Ok(resp);
        }
        check(OP, key, resp).await
    }

    /// Deletes `key` (S3 answers 204 whether or not it existed).
    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        const OP: &str = "DELETE";
        let url = self.object_url(key);
        let signed = self.sign(OP, key, "DELETE", &url, &[], EMPTY_SHA256.to_owned())?;
        let resp = send(OP, key, self.http.delete(&url), &[], &signed).await?;
        check(OP, key, resp).await.map(drop)
    }
}

/// The characters of a key's path segment that are percent-encoded: all but RFC 3986's
/// unreserved ones (what SigV4's canonical URI keeps).
const KEY_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// SHA-256 of an empty payload, lowercase hex.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The file's SHA-256 (lowercase hex) and size (blocking).
fn sha256_of(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let digest = hasher.finalize();
    Ok((digest.iter().map(|b| format!("{b:02x}")).collect(), size))
}

/// Sends `req` with `headers` (those that were signed) and the signature's `signed` ones.
async fn send(
    op: &'static str,
    key: &str,
    mut req: reqwest::RequestBuilder,
    headers: &[(&str, &str)],
    signed: &[(String, String)],
) -> Result<reqwest::Response, S3Error> {
    for (k, v) in headers.iter().copied() {
        req = req.header(k, v);
    }
    for (k, v) in signed {
        req = req.header(k, v);
    }
    req.send().await.map_err(|source| S3Error::Http {
        op,
        key: key.to_owned(),
        source,
    })
}

/// The response if its status is a success; S3's error otherwise.
async fn check(
    op: &'static str,
    key: &str,
    resp: reqwest::Response,
) -> Result<reqwest::Response, S3Error> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        text.split_once(&open)
            .and_then(|(_, rest)| rest.split_once(&close))
            .map(|(v, _)| v.to_owned())
            .unwrap_or_default()
    };
    Err(S3Error::Status {
        op,
        key: key.to_owned(),
        status: status.as_u16(),
        code: tag("Code"),
        message: tag("Message"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(path_style: bool, endpoint: &str) -> S3Client {
        S3Client::new(S3Settings {
            endpoint: url::Url::parse(endpoint).unwrap(),
            region: "us-east-1".into(),
            bucket: "calls".into(),
            prefix: "vox/".into(),
            access_key: Secret::new("AKID"),
            secret_key: Secret::new("secret"),
            path_style,
            delete_local: false,
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    #[test]
    fn objects_are_addressed_path_style_or_virtual_hosted() {
        let c = client(true, "http://127.0.0.1:9000/");
        assert_eq!(c.key_of("1700-3"), "vox/1700-3.wav");
        assert_eq!(
            c.object_url("vox/a b+c.wav"),
            "http://127.0.0.1:9000/calls/vox/a%20b%2Bc.wav"
        );
        let c = client(false, "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(
            c.object_url("vox/1.wav"),
            "https://calls.s3.eu-west-1.amazonaws.com/vox/1.wav"
        );
        assert_eq!(c.url_of("vox/1.wav"), "s3://calls/vox/1.wav");
        assert_eq!(
            c.key_in("s3://calls/vox/1.wav").as_deref(),
            Some("vox/1.wav")
        );
        assert_eq!(c.key_in("s3://other/vox/1.wav"), None);
    }

    #[test]
    fn a_request_is_signed_in_its_headers() {
        let c = client(true, "http://127.0.0.1:9000");
        let h = c
            .sign(
                "GET",
                "k",
                "GET",
                "http://127.0.0.1:9000/calls/k",
                &[],
                EMPTY_SHA256.into(),
            )
            .unwrap();
        let names: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.contains(&"authorization"), "{names:?}");
        assert!(names.contains(&"x-amz-date"), "{names:?}");
        let sha = h.iter().find(|(k, _)| k == "x-amz-content-sha256").unwrap();
        assert_eq!(sha.1, EMPTY_SHA256);
        let auth = &h.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKID/"),
            "{auth}"
        );
        assert!(auth.contains("/us-east-1/s3/aws4_request"), "{auth}");
    }
}
