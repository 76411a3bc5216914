//! The record writer commits what is queued in one transaction (`RecordStore::apply_batch`):
//! the operations apply in order within a batch, one that fails leaves the others in, and
//! every row is there afterwards, also when read by a fresh connection.

use voxline::records::{CallRecord, Direction, RecordOp, RecordStore, RecordsError, UnixMs};

fn started(id: &str) -> CallRecord {
    CallRecord::started(
        id,
        format!("{id}@10.0.0.1"),
        "sip:caller@trunk.example",
        "sip:agent@voxline.local",
        Direction::Inbound,
        "echo",
        UnixMs::new(1_718_000_000_000),
    )
}

#[test]
fn a_batch_applies_in_order_and_a_failed_operation_leaves_the_others_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    let mut finished = started("b");
    finished.ended_at = Some(UnixMs::new(1_718_000_009_000));
    finished.end_reason = Some("RemoteBye".into());
    let ops = vec![
        RecordOp::Started(Box::new(started("a"))),
        // Answered right after its start, in the same batch: the order holds.
        RecordOp::Answered {
            id: "a".into(),
            at: UnixMs::new(1_718_000_001_000),
        },
        // No such record: this one fails, the rest of the batch stays.
        RecordOp::Answered {
            id: "missing".into(),
            at: UnixMs::new(1_718_000_001_000),
        },
        // A duplicate start fails too (the id exists).
        RecordOp::Started(Box::new(started("a"))),
        RecordOp::Started(Box::new(started("b"))),
        RecordOp::Finished(Box::new(finished)),
    ];
    let results = store.apply_batch(&ops);
    assert_eq!(results.len(), ops.len());
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    assert!(
        matches!(results[2], Err(RecordsError::NotFound { .. })),
        "{:?}",
        results[2]
    );
    assert!(results[3].is_err(), "a duplicate id is refused");
    assert!(results[4].is_ok() && results[5].is_ok(), "{results:?}");
    drop(store);

    let store = RecordStore::open(dir.path()).unwrap();
    let a = store.get("a").unwrap().expect("a was written");
    assert_eq!(a.answered_at, Some(UnixMs::new(1_718_000_001_000)));
    let b = store.get("b").unwrap().expect("b was written");
    assert_eq!(b.ended_at, Some(UnixMs::new(1_718_000_009_000)));
    assert_eq!(b.end_reason.as_deref(), Some("RemoteBye"));
    assert_eq!(store.get("missing").unwrap(), None);
}
