//! Crash safety of the call-record store: calls in progress at a crash are marked
//! unfinished at the next open; a finished record survives a crash right after `finish`;
//! a process aborted in the middle of writes leaves a consistent database.
//!
//! The abort tests run this test binary again as a child process (see [`crash_child`]),
//! selected by the `VOXLINE_RECORDS_CRASH_CHILD` environment variable.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use voxline::records::{
    CallRecord, DB_FILE_NAME, Direction, RecordOp, RecordStore, RecordWriter, RecordsError,
    ToolCallRecord, TurnLatency, UNFINISHED_END_REASON, UnixMs,
};

const CHILD_ENV: &str = "VOXLINE_RECORDS_CRASH_CHILD";
const CHILD_MARKER: &str = "CRASH-CHILD-ABORTING";
/// Rows the streaming child has seen committed before it aborts.
const STREAM_MIN_ROWS: usize = 40;

fn started(id: &str, started_at: i64) -> CallRecord {
    CallRecord::started(
        id,
        format!("{id}@192.0.2.7"),
        "sip:alice@example.com",
        "sip:agent@voxline.local",
        Direction::Inbound,
        "ada",
        UnixMs::new(started_at),
    )
}

fn finished(id: &str) -> CallRecord {
    let mut r = started(id, 1_718_000_000_000);
    r.trunk = Some("trunk-a".into());
    r.answered_at = Some(UnixMs::new(1_718_000_001_000));
    r.ended_at = Some(UnixMs::new(1_718_000_030_000));
    r.end_reason = Some("caller hung up".into());
    r.sip_code = Some(200);
    r.codec = Some("PCMA/8000".into());
    r.loss_percent = Some(0.5);
    r.jitter_ms = Some(3.25);
    r.mos = Some(4.2);
    r.turn_latencies = vec![TurnLatency {
        caller_speech_end_ms: 1_000,
        first_backend_audio_ms: Some(1_400),
        first_rtp_out_ms: Some(1_430),
        stt_final_ms: None,
        llm_first_token_ms: None,
        tts_first_byte_ms: None,
    }];
    r.tool_calls = vec![ToolCallRecord {
        name: "book".into(),
        arguments: r#"{"day":"Mon"}"#.into(),
        output: Some("ok".into()),
        error: None,
        started_ms: 2_000,
        duration_ms: 80,
    }];
    r.transcript_path = Some(format!("/data/transcripts/{id}.jsonl"));
    r.recording_path = Some(format!("/data/recordings/{id}.wav"));
    r
}

fn integrity_check(dir: &Path) -> String {
    let conn = Connection::open(dir.join(DB_FILE_NAME)).unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn calls_in_progress_at_a_crash_are_marked_unfinished_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    store.insert_started(&started("ringing", 10)).unwrap();
    store.insert_started(&started("talking", 20)).unwrap();
    store.update_answered("talking", UnixMs::new(25)).unwrap();
    store.finish(&finished("done")).unwrap();
    assert_eq!(store.list_active().unwrap().len(), 2);
    // "Crash": the process never calls finish for the two live calls.
    drop(store);

    let store = RecordStore::open(dir.path()).unwrap();
    assert_eq!(store.recovered_unfinished(), 2);
    for id in ["ringing", "talking"] {
        let r = store.get(id).unwrap().unwrap();
        assert!(r.unfinished, "{id}");
        assert_eq!(r.end_reason.as_deref(), Some(UNFINISHED_END_REASON), "{id}");
        assert_eq!(r.ended_at, None, "{id}: end time is unknown");
    }
    assert_eq!(
        store.get("talking").unwrap().unwrap().answered_at,
        Some(UnixMs::new(25))
    );
    assert_eq!(store.get("done").unwrap(), Some(finished("done")));
    assert!(store.list_active().unwrap().is_empty());
    assert_eq!(
        UNFINISHED_END_REASON,
        "unfinished: voxline stopped during the call"
    );
    drop(store);

    // Already marked rows are not counted again.
    let store = RecordStore::open(dir.path()).unwrap();
    assert_eq!(store.recovered_unfinished(), 0);
    assert!(store.get("ringing").unwrap().unwrap().unfinished);
}

#[test]
fn writer_reports_the_recovered_count() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    store.insert_started(&started("a", 1)).unwrap();
    drop(store);
    let (writer, reader) = RecordWriter::spawn(dir.path()).unwrap();
    assert_eq!(writer.recovered_unfinished(), 1);
    assert!(reader.get("a").unwrap().unwrap().unfinished);
    writer.shutdown().unwrap();
}

#[test]
fn finished_record_survives_a_crash_right_after_finish_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    store
        .insert_started(&started("f", 1_718_000_000_000))
        .unwrap();
    store.finish(&finished("f")).unwrap();
    // No orderly close: the connection is leaked, so SQLite never checkpoints the WAL
    // into the main file nor deletes it; the record lives only in the WAL.
    std::mem::forget(store);

    let store = RecordStore::open(dir.path()).unwrap();
    assert_eq!(store.recovered_unfinished(), 0);
    assert_eq!(store.get("f").unwrap(), Some(finished("f")));
    assert_eq!(integrity_check(dir.path()), "ok");
}

/// Runs this binary's [`crash_child`] test in a child process with `scenario:dir`, waits for
/// it and checks that it aborted where it said it would.
fn run_child(scenario: &str, dir: &Path) {
    let exe = std::env::current_exe().unwrap();
    // The test's name in this binary: its module path without the crate's name.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let out = Command::new(exe)
        .args([
            "--exact",
            &format!("{module}::crash_child"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{scenario}:{}", dir.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(CHILD_MARKER),
        "child did not reach the abort point\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !out.status.success(),
        "child exited normally: {:?}",
        out.status
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            out.status.signal(),
            Some(6),
            "child not killed by SIGABRT: {:?}",
            out.status
        );
    }
}

#[test]
fn abort_while_the_writer_streams_inserts_keeps_finished_record_and_integrity() {
    let dir = tempfile::tempdir().unwrap();
    run_child("stream", dir.path());

    let store = RecordStore::open(dir.path()).unwrap();
    assert_eq!(store.get("done").unwrap(), Some(finished("done")));
    let all = store.list(u32::MAX, 0).unwrap();
    let live: Vec<&CallRecord> = all.iter().filter(|r| r.id.starts_with("live-")).collect();
    assert!(
        live.len() >= STREAM_MIN_ROWS,
        "only {} live rows",
        live.len()
    );
    // Every committed in-progress row was marked, and only those.
    assert_eq!(store.recovered_unfinished(), live.len());
    for r in &live {
        assert!(r.unfinished, "{}", r.id);
        assert_eq!(r.end_reason.as_deref(), Some(UNFINISHED_END_REASON));
    }
    // Committed in order, so the ids form a gap-free prefix.
    let mut n: Vec<usize> = live
        .iter()
        .map(|r| r.id["live-".len()..].parse().unwrap())
        .collect();
    n.sort_unstable();
    assert_eq!(n, (0..live.len()).collect::<Vec<_>>());
    drop(store);
    assert_eq!(integrity_check(dir.path()), "ok");
}

#[test]
fn abort_inside_a_large_uncommitted_transaction_rolls_it_back() {
    let dir = tempfile::tempdir().unwrap();
    run_child("bigtx", dir.path());

    let store = RecordStore::open(dir.path()).unwrap();
    assert_eq!(
        store.recovered_unfinished(),
        1,
        "only the committed live call"
    );
    assert_eq!(store.get("done").unwrap(), Some(finished("done")));
    assert!(store.get("live-0").unwrap().unwrap().unfinished);
    assert_eq!(
        store.list(u32::MAX, 0).unwrap().len(),
        2,
        "no bulk row survived"
    );
    drop(store);
    assert_eq!(integrity_check(dir.path()), "ok");
}

/// Not a test on its own: the child process body of the abort tests. Without
/// `VOXLINE_RECORDS_CRASH_CHILD` it returns at once.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (scenario, dir) = spec.split_once(':').unwrap();
    match scenario {
        "stream" => child_stream(Path::new(dir)),
        "bigtx" => child_bigtx(Path::new(dir)),
        other => panic!("unknown crash scenario {other}"),
    }
}

/// Finishes one record, then streams in-progress inserts through the writer thread and
/// aborts while they are being committed.
fn child_stream(dir: &Path) -> ! {
    let (writer, reader) = RecordWriter::spawn(dir).unwrap();
    writer
        .send(RecordOp::Finished(Box::new(finished("done"))))
        .unwrap();
    writer.flush().unwrap();

    let feeder = writer.clone();
    std::thread::spawn(move || {
        for i in 0.. {
            let mut op = RecordOp::Started(Box::new(started(&format!("live-{i}"), i)));
            loop {
                match feeder.send(op) {
                    Ok(()) => break,
                    Err(RecordsError::QueueFull { .. }) => {
                        std::thread::yield_now();
                        op = RecordOp::Started(Box::new(started(&format!("live-{i}"), i)));
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = reader.list_active().unwrap().len();
        if n >= STREAM_MIN_ROWS {
            break;
        }
        assert!(Instant::now() < deadline, "writer too slow: {n} rows");
        std::thread::sleep(Duration::from_millis(1));
    }
    abort_now()
}

/// Finishes one record and starts one call, then aborts inside a large open transaction
/// whose pages have spilled into the WAL.
fn child_bigtx(dir: &Path) -> ! {
    let mut store = RecordStore::open(dir).unwrap();
    store.finish(&finished("done")).unwrap();
    store.insert_started(&started("live-0", 5)).unwrap();

    let mut conn = Connection::open(dir.join(DB_FILE_NAME)).unwrap();
    // A tiny page cache forces uncommitted pages out to the WAL during the transaction.
    conn.pragma_update(None, "cache_size", 8).unwrap();
    let tx = conn.transaction().unwrap();
    let padding = "x".repeat(2_000);
    for i in 0..2_000 {
        tx.execute(
            "INSERT INTO calls (id, call_id, from_uri, to_uri, direction, agent, started_at) \
             VALUES (?1, ?2, 'a', 'b', 'inbound', 'ada', ?3)",
            rusqlite::params![format!("bulk-{i}"), padding, i],
        )
        .unwrap();
    }
    let wal_len = std::fs::metadata(dir.join(format!("{DB_FILE_NAME}-wal")))
        .unwrap()
        .len();
    assert!(
        wal_len > 1_000_000,
        "transaction did not spill into the WAL ({wal_len} bytes)"
    );
    std::mem::forget(tx);
    std::mem::forget(conn);
    abort_now()
}

fn abort_now() -> ! {
    use std::io::Write;
    println!("{CHILD_MARKER}");
    std::io::stdout().flush().unwrap();
    std::process::abort()
}
