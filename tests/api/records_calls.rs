//! Every call leaves a record: a SIPp call against a real voxline ends up, after a graceful
//! shutdown, as a finished row in `data_dir/voxline.db` with its times, end reason, codec and
//! recording path; and a record for a call in progress at a crash is marked unfinished at the
//! next start.

use crate::common;

use std::time::Duration;

use common::{VoxlineProcess, scenario, sipp};
use voxline::records::{RecordReader, UNFINISHED_END_REASON};

#[test]
fn a_finished_call_is_recorded() {
    let data = tempfile::tempdir().expect("tempdir");
    let cfg = format!("data_dir = \"{}\"\n", data.path().display());
    let mut vox = VoxlineProcess::spawn(&cfg);
    let target = vox.sip_addr().to_string();
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_inbound_call.xml"),
            "-s",
            "1000",
            "-m",
            "1",
            &target,
        ],
        Duration::from_secs(15),
    );
    run.assert_success("inbound call");
    let status = vox.terminate(Duration::from_secs(10));
    assert!(status.success(), "graceful shutdown");
    let reader = RecordReader::open(data.path()).expect("records readable");
    let all = reader.list(10, 0).expect("list");
    assert_eq!(all.len(), 1, "{all:?}");
    let r = &all[0];
    assert!(r.answered_at.is_some() && r.ended_at.is_some(), "{r:?}");
    assert_eq!(r.end_reason.as_deref(), Some("RemoteBye"));
    assert_eq!(r.codec.as_deref(), Some("PCMU"));
    assert_eq!(r.agent, "echo");
    assert!(!r.unfinished);
    let rec = r.recording_path.as_deref().expect("recording path");
    assert!(
        std::path::Path::new(rec).exists() || data.path().join(rec).exists(),
        "{rec}"
    );
}

#[test]
fn a_call_cut_by_a_crash_is_marked_unfinished() {
    let data = tempfile::tempdir().expect("tempdir");
    let cfg = format!("data_dir = \"{}\"\n", data.path().display());
    let vox = VoxlineProcess::spawn(&cfg);
    let target = vox.sip_addr().to_string();
    // A long call: SIPp holds it (-d) while we kill voxline hard.
    let marker_dir = tempfile::tempdir().expect("tempdir");
    let marker = marker_dir.path().join("up").to_string_lossy().into_owned();
    let sipp_run = common::Sipp::spawn(
        &[
            "-sf",
            &scenario("uac_long_call.xml"),
            "-s",
            "1000",
            "-d",
            "10000",
            "-set",
            "marker",
            &marker,
            "-m",
            "1",
            &target,
        ],
        Duration::from_secs(20),
    );
    // Wait until the call is up (its record is written when the call starts).
    let mut up = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok((200, body)) = common::http_get(vox.http_addr(), "/calls", Duration::from_secs(2))
            && body.contains("\"state\":\"answered\"")
        {
            up = true;
            break;
        }
    }
    assert!(up, "the call never came up");
    // The crash comes once the writer has committed the call's answered record.
    let committed = (0..100).any(|_| {
        let found = RecordReader::open(data.path())
            .and_then(|r| r.list(10, 0))
            .is_ok_and(|all| all.iter().any(|r| r.answered_at.is_some()));
        if !found {
            std::thread::sleep(Duration::from_millis(50));
        }
        found
    });
    assert!(committed, "the answered call never reached the records");
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .arg(vox.pid().to_string())
        .status();
    drop(sipp_run);
    drop(vox); // waits for the killed process
    // The next start (here: opening the store as voxline does) marks it unfinished.
    let store = voxline::records::RecordStore::open(data.path()).expect("open");
    let all = store.list(10, 0).expect("list");
    assert_eq!(store.recovered_unfinished(), 1, "{all:?}");
    let all = store.list(10, 0).expect("list");
    assert_eq!(all.len(), 1);
    assert!(all[0].unfinished);
    assert_eq!(all[0].end_reason.as_deref(), Some(UNFINISHED_END_REASON));
}
