//! Call-record store: round trip of every field, answered update, list / list_active,
//! WAL mode, schema versioning, and the writer thread / read-only reader pair.

use std::time::Duration;

use rusqlite::Connection;
use voxline::records::{
    CallAnalysis, CallRecord, DB_FILE_NAME, Direction, RecordOp, RecordStore, RecordWriter,
    RecordsError, ToolCallRecord, TurnLatency, UnixMs,
};

fn started(id: &str, started_at: i64) -> CallRecord {
    CallRecord::started(
        id,
        format!("{id}@10.0.0.1"),
        "sip:+4930123@trunk.example",
        "sip:agent@voxline.local",
        Direction::Inbound,
        "ada",
        UnixMs::new(started_at),
    )
}

fn analysis(summary: &str) -> CallAnalysis {
    CallAnalysis {
        summary: Some(summary.into()),
        outcome: Some(serde_json::json!({"case_number": "C-17", "resolved": true})),
        error: None,
        model: "gpt-4o-mini".into(),
        at: UnixMs::new(1_718_000_070_000),
    }
}

/// A record with every field set to a non-default value.
fn full(id: &str) -> CallRecord {
    CallRecord {
        id: id.into(),
        call_id: "a84b4c76e66710@pc33.example.com".into(),
        from: "sip:+4930123456@trunk.example;user=phone".into(),
        to: "sip:+4940987654@trunk.example".into(),
        direction: Direction::Outbound,
        trunk: Some("sipgate-1".into()),
        agent: "Ädä – support 🤖".into(),
        agent_version: Some(7),
        media_deleted_at: Some(UnixMs::new(1_718_900_000_000)),
        analysis: Some(analysis("Ada asked about order A-17.")),
        barge_ins: 3,
        recording_url: None,
        node: None,
        started_at: UnixMs::new(1_718_000_000_123),
        answered_at: Some(UnixMs::new(1_718_000_004_500)),
        ended_at: Some(UnixMs::new(1_718_000_064_999)),
        end_reason: Some("caller hung up (BYE)".into()),
        sip_code: Some(200),
        codec: Some("opus/48000/2".into()),
        loss_percent: Some(1.25),
        jitter_ms: Some(7.5),
        mos: Some(4.31),
        turn_latencies: vec![
            TurnLatency {
                caller_speech_end_ms: 2_000,
                first_backend_audio_ms: Some(2_480),
                first_rtp_out_ms: Some(2_520),
                stt_final_ms: Some(120),
                llm_first_token_ms: Some(310),
                tts_first_byte_ms: Some(95),
            },
            TurnLatency {
                caller_speech_end_ms: 9_000,
                first_backend_audio_ms: None,
                first_rtp_out_ms: None,
                stt_final_ms: None,
                llm_first_token_ms: None,
                tts_first_byte_ms: None,
            },
        ],
        tool_calls: vec![
            ToolCallRecord {
                name: "lookup_order".into(),
                arguments: r#"{"order":"A-17","note":"\"quoted\""}"#.into(),
                output: Some(r#"{"status":"shipped"}"#.into()),
                error: None,
                started_ms: 5_100,
                duration_ms: 230,
            },
            ToolCallRecord {
                name: "transfer".into(),
                arguments: "{}".into(),
                output: None,
                error: Some("no such extension".into()),
                started_ms: 30_000,
                duration_ms: 12,
            },
        ],
        backend_switches: vec![voxline::records::BackendSwitch {
            at_ms: 41_000,
            from: "realtime".into(),
            to: "cascaded".into(),
            reason: "realtime connection lost".into(),
        }],
        transcript_path: Some("/var/lib/voxline/transcripts/x.jsonl".into()),
        recording_path: Some("/var/lib/voxline/recordings/x.wav".into()),
        unfinished: false,
        transfer: Some("sip:200@pbx.example -> 200".into()),
        dsp: Some(voxline::records::DspInfo {
            frames: 3000,
            stage_us: voxline::records::DspStageUs {
                echo_cancellation: 405_000,
                noise_suppression: 0,
                vad: 7_200,
            },
            us_per_frame: 137.4,
            erle_db: Some(48.5),
            echo_delay_ms: Some(196),
            speech_starts: 4,
            echo_frames: 4,
            local_barge_ins: 1,
            local_turns: 3,
            errors: 0,
        }),
    }
}

#[test]
fn full_record_round_trips_through_start_answer_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    assert_eq!(store.recovered_unfinished(), 0);
    assert_eq!(store.path(), dir.path().join(DB_FILE_NAME));

    let final_record = full("call-1");
    let mut at_start = final_record.clone();
    at_start.answered_at = None;
    at_start.ended_at = None;
    at_start.end_reason = None;
    at_start.sip_code = None;
    at_start.codec = None;
    at_start.loss_percent = None;
    at_start.jitter_ms = None;
    at_start.mos = None;
    at_start.turn_latencies.clear();
    at_start.tool_calls.clear();

    store.insert_started(&at_start).unwrap();
    assert_eq!(store.get("call-1").unwrap(), Some(at_start.clone()));

    store
        .update_answered("call-1", UnixMs::new(1_718_000_004_500))
        .unwrap();
    let answered = store.get("call-1").unwrap().unwrap();
    assert_eq!(answered.answered_at, Some(UnixMs::new(1_718_000_004_500)));
    assert_eq!(answered.ended_at, None);

    store.finish(&final_record).unwrap();
    let got = store.get("call-1").unwrap().unwrap();
    assert_eq!(got, final_record);
    assert_eq!(got.turn_latencies[0].backend_latency_ms(), Some(480));
    assert_eq!(got.turn_latencies[0].response_latency_ms(), Some(520));
    assert_eq!(got.turn_latencies[1].backend_latency_ms(), None);

    // And it is still all there from a fresh connection.
    drop(store);
    let store = RecordStore::open(dir.path()).unwrap();
    assert_eq!(store.recovered_unfinished(), 0);
    assert_eq!(store.get("call-1").unwrap(), Some(final_record));
    assert_eq!(store.get("no-such-call").unwrap(), None);
}

#[test]
fn finish_inserts_a_record_that_was_never_started() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    let rec = full("only-finished");
    store.finish(&rec).unwrap();
    assert_eq!(store.get("only-finished").unwrap(), Some(rec));
}

#[test]
fn finish_requires_ended_at_and_writes_nothing_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    let err = store.finish(&started("c", 1)).unwrap_err();
    assert!(
        matches!(&err, RecordsError::NotEnded { id, .. } if id == "c"),
        "{err:?}"
    );
    assert_eq!(store.get("c").unwrap(), None);
}

#[test]
fn errors_name_the_database_the_operation_and_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();

    let err = store.update_answered("ghost", UnixMs::new(5)).unwrap_err();
    assert!(
        matches!(&err, RecordsError::NotFound { op: "update_answered", id, .. } if id == "ghost")
    );
    let msg = err.to_string();
    assert!(msg.contains(DB_FILE_NAME), "{msg}");
    assert!(msg.contains("update_answered"), "{msg}");
    assert!(msg.contains("ghost"), "{msg}");

    store.insert_started(&started("dup", 1)).unwrap();
    let err = store.insert_started(&started("dup", 2)).unwrap_err();
    assert!(
        matches!(
            err,
            RecordsError::Database {
                op: "insert_started",
                ..
            }
        ),
        "{err:?}"
    );
    // The first row is untouched.
    assert_eq!(
        store.get("dup").unwrap().unwrap().started_at,
        UnixMs::new(1)
    );
}

#[test]
fn list_is_newest_first_with_paging_and_active_excludes_ended_calls() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    for i in 0..5 {
        store
            .insert_started(&started(&format!("c{i}"), 1_000 + i))
            .unwrap();
    }
    for id in ["c1", "c3"] {
        let mut rec = store.get(id).unwrap().unwrap();
        rec.ended_at = Some(UnixMs::new(9_000));
        rec.end_reason = Some("agent hung up".into());
        store.finish(&rec).unwrap();
    }
    store.update_answered("c2", UnixMs::new(1_500)).unwrap();

    let ids = |v: Vec<CallRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list(100, 0).unwrap()),
        ["c4", "c3", "c2", "c1", "c0"]
    );
    assert_eq!(ids(store.list(2, 0).unwrap()), ["c4", "c3"]);
    assert_eq!(ids(store.list(2, 2).unwrap()), ["c2", "c1"]);
    assert_eq!(ids(store.list(2, 4).unwrap()), ["c0"]);
    assert!(store.list(2, 5).unwrap().is_empty());

    let active = store.list_active().unwrap();
    assert_eq!(ids(active.clone()), ["c0", "c2", "c4"]);
    assert_eq!(active[1].answered_at, Some(UnixMs::new(1_500)));
}

#[test]
fn database_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    store.insert_started(&started("w", 1)).unwrap();

    let conn = Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(dir.path().join(format!("{DB_FILE_NAME}-wal")).exists());
}

#[test]
fn schema_version_is_recorded_once_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(RecordStore::open(dir.path()).unwrap());
    drop(RecordStore::open(dir.path()).unwrap());
    let db = dir.path().join(DB_FILE_NAME);
    let conn = Connection::open(&db).unwrap();
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, (1..=21).collect::<Vec<i64>>());

    conn.execute(
        "INSERT INTO schema_version (version, applied_at) VALUES (99, 0)",
        [],
    )
    .unwrap();
    drop(conn);
    let err = RecordStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            RecordsError::SchemaTooNew {
                found: 99,
                supported: 21,
                ..
            }
        ),
        "{err:?}"
    );
}

/// A database written by a voxline from before the `transfer`, `dsp` and
/// `backend_switches` columns (schema version 1): opening it adds them, its rows read with
/// none, and new rows store them.
#[test]
fn version_1_database_is_migrated_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    drop(RecordStore::open(dir.path()).unwrap());
    let db = dir.path().join(DB_FILE_NAME);
    let conn = Connection::open(&db).unwrap();
    // Back to version 1, as a voxline of that version left it, with one finished call.
    conn.execute_batch(
        "ALTER TABLE calls DROP COLUMN transfer;
         ALTER TABLE calls DROP COLUMN dsp;
         ALTER TABLE calls DROP COLUMN backend_switches;
         DROP TABLE outbox;
         DROP TABLE agents;
         DROP TABLE routes;
         DROP INDEX calls_ended_at;
         DROP INDEX calls_upload_pending;
         DROP INDEX calls_upload_expired;
         ALTER TABLE calls DROP COLUMN recording_url;
         ALTER TABLE calls DROP COLUMN media_deleted_at;
         ALTER TABLE calls DROP COLUMN agent_version;
         ALTER TABLE calls DROP COLUMN analysis;
         DROP TABLE memory;
         DROP TABLE campaigns;
         DROP TABLE campaign_targets;
         DROP TABLE webhook_endpoints;
         DROP INDEX calls_agent_started;
         ALTER TABLE calls DROP COLUMN barge_ins;
         DROP INDEX calls_node_active;
         ALTER TABLE calls DROP COLUMN node;
         DROP TABLE nodes;
         DROP TABLE leases;
         DROP TABLE generations;
         DROP TABLE trunk_pacing;
         DELETE FROM schema_version WHERE version >= 2;
         INSERT INTO calls (id, call_id, from_uri, to_uri, direction, agent, started_at, ended_at, end_reason)
         VALUES ('old-1', 'c1@host', 'sip:a@x', 'sip:b@y', 'inbound', 'echo', 1000, 2000, 'RemoteBye');",
    )
    .unwrap();
    drop(conn);

    let mut store = RecordStore::open(dir.path()).unwrap();
    let old = store.get("old-1").unwrap().expect("old row");
    assert_eq!(old.transfer, None);
    assert_eq!(old.dsp, None);
    assert!(old.backend_switches.is_empty());
    assert_eq!(old.end_reason.as_deref(), Some("RemoteBye"));
    let new = full("new-1");
    store.finish(&new).unwrap();
    assert_eq!(store.get("new-1").unwrap().as_ref(), Some(&new));
    drop(store);
    let conn = Connection::open(&db).unwrap();
    let max: i64 = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(max, 21);
}

/// With webhook subscriptions, each operation writes its events to the outbox in the same
/// savepoint: one row per subscribed endpoint, and none when the operation fails.
#[test]
fn record_changes_and_their_webhook_events_are_written_together() {
    use voxline::records::outbox::{EventType, Outbox, Subscription};
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    store.set_subscriptions(vec![
        Subscription {
            endpoint: "all".into(),
            events: EventType::ALL.to_vec(),
        },
        Subscription {
            endpoint: "ended-only".into(),
            events: vec![EventType::CallEnded],
        },
    ]);
    let r = full("w-1");
    let mut started = r.clone();
    started.ended_at = None;
    store.insert_started(&started).unwrap();
    let outbox = Outbox::open(&voxline::records::StoreLocation::sqlite(dir.path())).unwrap();
    // insert_started alone (not apply) writes no event.
    assert_eq!(outbox.pending().unwrap(), 0);
    // A failing operation (the id exists) writes neither the row nor an event.
    assert!(
        store
            .apply(&RecordOp::Started(Box::new(started.clone())))
            .is_err()
    );
    assert_eq!(outbox.pending().unwrap(), 0);
    store
        .apply(&RecordOp::Finished(Box::new(r.clone())))
        .unwrap();
    let rows = outbox.list(None, 100).unwrap();
    let mut got: Vec<(String, String)> = rows
        .iter()
        .map(|d| (d.endpoint.clone(), d.event.clone()))
        .collect();
    got.sort();
    // `full` has a transcript, a recording and tool calls: "all" gets those events too.
    assert!(
        got.contains(&("ended-only".into(), "call.ended".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("all".into(), "call.ended".into())),
        "{got:?}"
    );
    assert!(
        got.contains(&("all".into(), "recording.ready".into())),
        "{got:?}"
    );
    assert_eq!(
        got.iter().filter(|(e, _)| e == "ended-only").count(),
        1,
        "{got:?}"
    );
    let ended = rows
        .iter()
        .find(|d| d.endpoint == "ended-only")
        .expect("row");
    let body: serde_json::Value = serde_json::from_str(&ended.payload).unwrap();
    assert_eq!(body["type"], "call.ended");
    assert_eq!(body["data"]["id"], "w-1");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn corrupt_row_is_an_error_naming_record_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    store.finish(&full("bad")).unwrap();
    let conn = Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
    conn.execute(
        "UPDATE calls SET tool_calls = '[{\"name\":' WHERE id = 'bad'",
        [],
    )
    .unwrap();
    let err = store.get("bad").unwrap_err();
    assert!(
        matches!(&err, RecordsError::CorruptRow { op: "get", id, column: "tool_calls", .. } if id == "bad"),
        "{err:?}"
    );
}

#[test]
fn writer_applies_ops_in_order_and_reader_sees_them() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, reader) = RecordWriter::spawn(dir.path()).unwrap();
    assert_eq!(writer.recovered_unfinished(), 0);

    let rec = full("w1");
    let mut start = started("w1", rec.started_at.get());
    start.direction = rec.direction;
    writer.send(RecordOp::Started(Box::new(start))).unwrap();
    writer
        .send(RecordOp::Answered {
            id: "w1".into(),
            at: UnixMs::new(1_718_000_004_500),
        })
        .unwrap();
    writer
        .send(RecordOp::Started(Box::new(started("w2", 5))))
        .unwrap();
    writer.flush().unwrap();

    let active = reader.list_active().unwrap();
    assert_eq!(active.len(), 2);
    assert_eq!(active[0].id, "w2");
    assert_eq!(active[1].answered_at, Some(UnixMs::new(1_718_000_004_500)));

    // A clone sends to the same thread.
    let clone = writer.clone();
    clone
        .send(RecordOp::Finished(Box::new(rec.clone())))
        .unwrap();
    // Unknown id: fails on the thread, counted, does not stop it.
    clone
        .send(RecordOp::Answered {
            id: "ghost".into(),
            at: UnixMs::new(1),
        })
        .unwrap();
    let stats = writer.shutdown().unwrap();
    assert_eq!(stats.applied, 4);
    assert_eq!(stats.failed, 1);
    assert_eq!(stats.dropped, 0);

    assert_eq!(reader.get("w1").unwrap(), Some(rec));
    assert_eq!(reader.list(10, 0).unwrap().len(), 2);
    assert_eq!(reader.list_active().unwrap().len(), 1);

    // After shutdown, sends through another handle fail and are counted.
    let err = clone
        .send(RecordOp::Started(Box::new(started("late", 9))))
        .unwrap_err();
    assert!(
        matches!(
            err,
            RecordsError::WriterStopped {
                op: "insert_started",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(clone.stats().dropped, 1);
    assert!(clone.flush().is_err());
}

#[test]
fn full_queue_drops_the_op_with_an_error_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, reader) = RecordWriter::spawn_with_capacity(dir.path(), 2).unwrap();

    // Hold the write lock from another connection so the writer thread stalls on its
    // first operation (it waits up to its busy timeout).
    let mut blocker = Connection::open(dir.path().join(DB_FILE_NAME)).unwrap();
    let tx = blocker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();

    let mut sent = 0;
    let err = loop {
        assert!(sent < 100, "queue of 2 never filled");
        match writer.send(RecordOp::Started(Box::new(started(
            &format!("q{sent}"),
            sent,
        )))) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            RecordsError::QueueFull {
                capacity: 2,
                op: "insert_started",
                ..
            }
        ),
        "{err:?}"
    );
    // Two queued, plus those the writer thread took into its batch before it stalled
    // (how many depends on how the threads interleave: on a loaded machine, several).
    assert!(sent >= 2, "sent {sent}");
    assert_eq!(writer.stats().dropped, 1);

    std::thread::sleep(Duration::from_millis(50));
    tx.rollback().unwrap();
    writer.flush().unwrap();
    let stats = writer.shutdown().unwrap();
    assert_eq!(stats.applied, sent as u64);
    assert_eq!(stats.failed, 0);
    assert_eq!(reader.list(100, 0).unwrap().len(), sent as usize);
}

/// The analysis is written after the call, possibly before the final record: the final
/// record keeps it, and its event goes to the outbox with it.
#[test]
fn analysis_survives_the_final_record_in_either_order() {
    use voxline::records::outbox::{EventType, Outbox, Subscription};
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    store.set_subscriptions(vec![Subscription {
        endpoint: "crm".into(),
        events: vec![EventType::CallAnalyzed],
    }]);
    let ended = |id: &str| {
        let mut r = started(id, 1_000);
        r.ended_at = Some(UnixMs::new(2_000));
        r.end_reason = Some("RemoteBye".into());
        r
    };
    // Analysis first, then the final record.
    let early = ended("early");
    store
        .apply(&RecordOp::Started(Box::new(started("early", 1_000))))
        .unwrap();
    store
        .apply(&RecordOp::Analyzed {
            id: "early".into(),
            analysis: Box::new(analysis("first")),
        })
        .unwrap();
    store.apply(&RecordOp::Finished(Box::new(early))).unwrap();
    assert_eq!(
        store.get("early").unwrap().unwrap().analysis,
        Some(analysis("first"))
    );
    // The final record, then the analysis.
    store
        .apply(&RecordOp::Started(Box::new(started("late", 1_000))))
        .unwrap();
    store
        .apply(&RecordOp::Finished(Box::new(ended("late"))))
        .unwrap();
    assert_eq!(store.get("late").unwrap().unwrap().analysis, None);
    store
        .apply(&RecordOp::Analyzed {
            id: "late".into(),
            analysis: Box::new(analysis("second")),
        })
        .unwrap();
    assert_eq!(
        store.get("late").unwrap().unwrap().analysis,
        Some(analysis("second"))
    );
    // An analysis for a record that does not exist fails, and writes no event.
    assert!(matches!(
        store.apply(&RecordOp::Analyzed {
            id: "nobody".into(),
            analysis: Box::new(analysis("x")),
        }),
        Err(RecordsError::NotFound { .. })
    ));
    let outbox = Outbox::open(store.location()).unwrap();
    // Newest first.
    let events: Vec<(String, String)> = outbox
        .list(None, 100)
        .unwrap()
        .into_iter()
        .map(|d| (d.event, d.record_id))
        .collect();
    assert_eq!(
        events,
        [
            ("call.analyzed".to_owned(), "late".to_owned()),
            ("call.analyzed".to_owned(), "early".to_owned())
        ]
    );
}

/// With a redactor, the webhook events' free text is redacted in the outbox; the record
/// itself is stored as given.
#[test]
fn webhook_payloads_are_redacted() {
    use std::sync::Arc;
    use voxline::records::outbox::{EventType, Outbox, Subscription};
    use voxline::records::redact::{PiiKind, Redactor};
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    store.set_subscriptions(vec![Subscription {
        endpoint: "crm".into(),
        events: vec![EventType::CallAnalyzed],
    }]);
    store.set_redactor(Arc::new(Redactor::new(&PiiKind::ALL, &[]).unwrap()));
    store
        .apply(&RecordOp::Started(Box::new(started("r1", 1_000))))
        .unwrap();
    let mut a = analysis("Ada gave ada@example.com and card 4111-1111-1111-1111.");
    a.outcome = Some(serde_json::json!({"email": "ada@example.com"}));
    store
        .apply(&RecordOp::Analyzed {
            id: "r1".into(),
            analysis: Box::new(a.clone()),
        })
        .unwrap();
    let outbox = Outbox::open(store.location()).unwrap();
    let payload = outbox.list(None, 10).unwrap().remove(0).payload;
    assert!(
        payload.contains("Ada gave [redacted:email] and card [redacted:card]."),
        "{payload}"
    );
    assert!(
        payload.contains("\"email\":\"[redacted:email]\""),
        "{payload}"
    );
    assert!(payload.contains("\"id\":\"r1\""), "{payload}");
    assert_eq!(store.get("r1").unwrap().unwrap().analysis, Some(a));
}
