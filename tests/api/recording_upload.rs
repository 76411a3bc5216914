//! `[recording_upload]` against a real S3-compatible server: moto's (PyPI), run with IAM
//! authentication on, so that every request voxline makes must carry a valid Signature
//! Version 4 (`tests/s3/moto.py` makes the user, its key and the bucket).
//!
//! 1. With a wrong secret, the upload is refused (SignatureDoesNotMatch) and retried; the
//!    recording stays local and playable, and nothing reaches the bucket.
//! 2. Killed (SIGKILL) and started again with the right secret on the same database, voxline
//!    uploads the pending recording: the object is the local file byte for byte, the record
//!    names it (`recording_url`), `delete_local` removed the local file, and
//!    `GET /records/{id}/recording` serves it from the bucket, byte ranges included.
//! 3. When retention expires the call, the uploaded copy is deleted too.
//!
//! Needs `moto[server]` (pip; `.ci/run` installs it).

use crate::common::{VoxlineProcess, free_tcp_port, http_request_headers, sipp};

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUCKET: &str = "calls";
const HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/moto.py");

/// moto's server, killed when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn start() -> Moto {
        let port = free_tcp_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // The helper's four set-up calls are the only ones without a signature.
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "4")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (python3 -m pip install 'moto[server]')");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child,
            endpoint: format!("http://{addr}"),
        }
    }

    fn helper(&self, args: &[&str]) -> String {
        let out = Command::new("python3")
            .arg(HELPER)
            .args(args)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "moto.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn config(moto: &Moto, data: &Path) -> String {
    format!(
        r#"data_dir = "{}"
retention_days = 1

[[route]]
number = "*"
agent = "echo"

[recording_upload]
endpoint = "{}"
bucket = "{BUCKET}"
prefix = "voxline/"
access_key_env = "S3_ACCESS"
secret_key_env = "S3_SECRET"
delete_local = true
"#,
        data.display(),
        moto.endpoint
    )
}

/// Waits up to `limit` for `f` to give something.
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn recordings_go_to_s3_after_a_refused_signature_a_crash_and_retention() {
    let moto = Moto::start();
    let keys: serde_json::Value =
        serde_json::from_str(&moto.helper(&["setup", &moto.endpoint, BUCKET])).unwrap();
    let (access, secret) = (
        keys["access_key"].as_str().unwrap().to_owned(),
        keys["secret_key"].as_str().unwrap().to_owned(),
    );
    let list = || -> Vec<String> {
        serde_json::from_str(&moto.helper(&["list", &moto.endpoint, BUCKET, &access, &secret]))
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let toml = config(&moto, &data);

    // 1. A wrong secret: moto refuses the signature; the recording stays local.
    let vox = VoxlineProcess::spawn_with_env(
        &toml,
        &[("S3_ACCESS", &access), ("S3_SECRET", "not-the-secret")],
    );
    let target = format!("{}", vox.sip_addr());
    sipp(
        &["-sn", "uac", &target, "-s", "1000", "-m", "1", "-d", "1500"],
        Duration::from_secs(20),
    )
    .assert_success("one call to the echo agent");
    wait_for(
        Duration::from_secs(15),
        "no refused upload in the log",
        || {
            vox.output()
                .contains("recording upload failed")
                .then_some(())
        },
    );
    assert!(
        vox.output().contains("SignatureDoesNotMatch"),
        "{}",
        vox.output()
    );
    let reader = voxline::records::RecordReader::open(&data).unwrap();
    let record = reader.list(1, 0).unwrap().pop().expect("the record");
    assert_eq!(record.recording_url, None);
    let local = record.recording_path.clone().expect("a local recording");
    let original = std::fs::read(&local).expect("the local recording");
    assert!(original.len() > 44, "a WAV with audio");
    assert!(list().is_empty(), "nothing reached the bucket");
    drop(vox); // SIGKILL

    // 2. The right secret, the same database: the pending upload is made at start.
    let vox =
        VoxlineProcess::spawn_with_env(&toml, &[("S3_ACCESS", &access), ("S3_SECRET", &secret)]);
    let key = format!("voxline/{}.wav", record.id);
    let url = format!("s3://{BUCKET}/{key}");
    let uploaded = wait_for(
        Duration::from_secs(20),
        "no upload after the restart",
        || {
            reader
                .get(&record.id)
                .unwrap()
                .filter(|r| r.recording_path.is_none())
        },
    );
    assert_eq!(uploaded.recording_url.as_deref(), Some(url.as_str()));
    assert!(!Path::new(&local).exists(), "delete_local removes the file");
    assert_eq!(list(), vec![key.clone()]);
    let copy = dir.path().join("copy.wav");
    moto.helper(&[
        "get",
        &moto.endpoint,
        BUCKET,
        &key,
        &access,
        &secret,
        copy.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        original,
        "the object is the file"
    );
    // Served from the bucket, whole and by range.
    let path = format!("/records/{}/recording", record.id);
    let t = Duration::from_secs(10);
    let (code, head, body) =
        http_request_headers(vox.http_addr(), "GET", &path, &[], None, t).expect("GET recording");
    assert_eq!(code, 200, "{head}");
    // (The body is read as text here: its length is the header's.)
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", original.len())),
        "{head}"
    );
    assert!(body.starts_with("RIFF"), "{head}");
    let (code, head, body) = http_request_headers(
        vox.http_addr(),
        "GET",
        &path,
        &[("Range", "bytes=0-3")],
        None,
        t,
    )
    .expect("GET range");
    assert_eq!(code, 206, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-range: bytes 0-3/{}", original.len())),
        "{head}"
    );
    assert_eq!(body, "RIFF");
    drop(vox);

    // 3. Retention: the call ended three days ago (moved back in the database); with
    // retention_days = 1 the next start expires it, and the uploaded copy goes too.
    {
        let conn = rusqlite::Connection::open(data.join("voxline.db")).unwrap();
        let days3 = 3 * 86_400_000i64;
        conn.execute(
            "UPDATE calls SET started_at = started_at - ?1, answered_at = answered_at - ?1, \
             ended_at = ended_at - ?1 WHERE id = ?2",
            rusqlite::params![days3, record.id],
        )
        .unwrap();
    }
    let vox =
        VoxlineProcess::spawn_with_env(&toml, &[("S3_ACCESS", &access), ("S3_SECRET", &secret)]);
    let expired = wait_for(
        Duration::from_secs(20),
        "the uploaded copy was not deleted",
        || {
            reader
                .get(&record.id)
                .unwrap()
                .filter(|r| r.recording_url.is_none())
        },
    );
    assert!(expired.media_deleted_at.is_some(), "{expired:?}");
    assert!(list().is_empty(), "{}", vox.output());
    let (code, _, _) = http_request_headers(vox.http_addr(), "GET", &path, &[], None, t).unwrap();
    assert_eq!(code, 404);
}
