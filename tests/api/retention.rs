//! `retention_days`: at start (and hourly), the recordings and transcripts of calls that ended
//! more than that many days ago are deleted, and their records say so (`media_deleted_at`,
//! the paths cleared); newer calls keep theirs, and every record stays.

use crate::common;

use std::time::{Duration, Instant};

use common::{VoxlineProcess, http_json};
use voxline::records::{CallRecord, Direction, RecordStore, UnixMs};

/// A finished record that ended `days_ago` days ago, with a recording and a transcript file.
fn old_call(
    store: &mut RecordStore,
    dir: &std::path::Path,
    id: &str,
    days_ago: i64,
) -> (String, String) {
    let ended = UnixMs::now().get() - days_ago * 86_400_000;
    let rec = dir.join(format!("{id}.wav"));
    let tr = dir.join(format!("{id}.jsonl"));
    std::fs::write(&rec, b"RIFF....").expect("recording");
    std::fs::write(&tr, b"").expect("transcript");
    let mut r = CallRecord::started(
        id,
        "c@x",
        "sip:a@x",
        "sip:b@y",
        Direction::Inbound,
        "echo",
        UnixMs::new(ended - 60_000),
    );
    r.ended_at = Some(UnixMs::new(ended));
    r.end_reason = Some("RemoteBye".into());
    r.recording_path = Some(rec.display().to_string());
    r.transcript_path = Some(tr.display().to_string());
    store.finish(&r).expect("finish");
    (rec.display().to_string(), tr.display().to_string())
}

#[test]
fn old_recordings_and_transcripts_are_deleted_and_the_record_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    let (old_rec, old_tr, new_rec) = {
        let mut store = RecordStore::open(&data).expect("store");
        let (r, t) = old_call(&mut store, &files, "1000-1", 10);
        let (n, _) = old_call(&mut store, &files, "1000-2", 2);
        (r, t, n)
    };
    let vox = VoxlineProcess::spawn(&format!(
        "data_dir = \"{}\"\nretention_days = 7\n",
        data.display()
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    let old = loop {
        let (code, r) = http_json(
            vox.http_addr(),
            "GET",
            "/calls/1000-1",
            None,
            Duration::from_secs(5),
        );
        if code == 200 && r["media_deleted_at"].is_number() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "not swept: {r:#}\n{}",
            vox.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(old["recording_path"].is_null(), "{old:#}");
    assert!(old["transcript_path"].is_null(), "{old:#}");
    assert_eq!(old["end_reason"], "RemoteBye", "the record stays: {old:#}");
    assert!(!std::path::Path::new(&old_rec).exists());
    assert!(!std::path::Path::new(&old_tr).exists());
    let (_, new) = http_json(
        vox.http_addr(),
        "GET",
        "/calls/1000-2",
        None,
        Duration::from_secs(5),
    );
    assert!(new["media_deleted_at"].is_null(), "{new:#}");
    assert_eq!(new["recording_path"], new_rec.as_str());
    assert!(std::path::Path::new(&new_rec).exists());
}

#[test]
fn zero_or_no_retention_keeps_everything() {
    let cfg = voxline::config::Config::from_toml_str_with_env(
        "retention_days = 0\n",
        "voxline.toml",
        |_| None,
    )
    .expect("valid");
    assert_eq!(cfg.retention_days, None);
    let cfg = voxline::config::Config::from_toml_str_with_env(
        "retention_days = 30\n",
        "voxline.toml",
        |_| None,
    )
    .expect("valid");
    assert_eq!(cfg.retention_days, Some(30));
}
