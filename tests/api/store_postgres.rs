//! The storage seam: the same operations give the same results on the embedded SQLite and on
//! a real PostgreSQL (Debian's, started by the test): records, the webhook outbox written
//! with them, agents, caller memory, campaigns, search, uploads and retention. Then what only
//! a shared store has to get right: nodes migrating the schema at once, and campaign targets
//! claimed by several nodes at once (never twice).

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier, RwLock};

use voxline::records::agents::AgentStore;
use voxline::records::campaigns::{
    CampaignSettings, CampaignStore, NewCampaign, NewTarget, RetryPolicy,
};
use voxline::records::memory::MemoryStore;
use voxline::records::outbox::{EventType, Outbox, Subscription};
use voxline::records::search::RecordFilter;
use voxline::records::uploads::UploadStore;
use voxline::records::{
    CallRecord, Direction, RecordOp, RecordReader, RecordStore, RecordsError, StoreLocation, UnixMs,
};

use crate::common::postgres::PostgresServer;

fn started(id: &str, at: i64) -> CallRecord {
    CallRecord::started(
        id,
        format!("{id}@10.0.0.1"),
        "sip:+4930123@trunk.example",
        "sip:Support-Desk@voxline.local",
        Direction::Inbound,
        "ada",
        UnixMs::new(at),
    )
}

fn campaign(n: usize) -> NewCampaign {
    NewCampaign {
        name: "renewals".into(),
        agent: "ada".into(),
        settings: CampaignSettings {
            trunk: None,
            max_concurrent: 4,
            calls_per_s: 2.0,
            window: None,
            retry: RetryPolicy {
                on: vec![],
                max_attempts: 1,
                backoff_s: 60,
            },
            ring_timeout_s: 30,
        },
        targets: (0..n)
            .map(|i| NewTarget {
                number: format!("+4930{i:04}"),
                variables: Default::default(),
            })
            .collect(),
    }
}

/// Runs one pass of every table's operations on `at`; returns what was observed, as text,
/// for comparing the engines.
fn exercise(at: &StoreLocation) -> Vec<String> {
    let mut seen = Vec::new();
    // Written for node n1 (on PostgreSQL the recovery pass marks only its own calls).
    let mut store = RecordStore::open_for(at, Some("n1")).unwrap();
    store.set_subscriptions(vec![Subscription {
        endpoint: "crm".into(),
        events: vec![EventType::CallStarted, EventType::CallEnded],
    }]);
    // Records, batched with a failing operation in the middle (a duplicate id): the others
    // stay in, on PostgreSQL too (where a failed statement would abort the transaction).
    let a = started("rec-a", 1_000);
    let b = started("rec-b", 2_000);
    let mut a_end = a.clone();
    a_end.answered_at = Some(UnixMs::new(1_500));
    a_end.ended_at = Some(UnixMs::new(9_000));
    a_end.end_reason = Some("caller hung up".into());
    a_end.loss_percent = Some(1.5);
    a_end.unfinished = false;
    // The store writes its node into every record.
    a_end.node = Some("n1".into());
    let results = store.apply_batch(&[
        RecordOp::Started(Box::new(a.clone())),
        RecordOp::Started(Box::new(a.clone())),
        RecordOp::Started(Box::new(b.clone())),
        RecordOp::Answered {
            id: "rec-a".into(),
            at: UnixMs::new(1_500),
        },
        RecordOp::Finished(Box::new(a_end.clone())),
    ]);
    seen.push(format!(
        "batch: {:?}",
        results.iter().map(Result::is_ok).collect::<Vec<_>>()
    ));
    assert!(matches!(results[1], Err(RecordsError::Database { .. })));
    seen.push(format!(
        "a: {:?}",
        store.get("rec-a").unwrap() == Some(a_end)
    ));
    let active: Vec<String> = store
        .list_active()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    seen.push(format!("active: {active:?}"));
    let all: Vec<String> = store
        .list(10, 0)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    seen.push(format!("list: {all:?}"));

    // The outbox got the events of the operations that were written, not of the failed one.
    let outbox = Outbox::open(at).unwrap();
    let mut events: Vec<String> = outbox
        .list(None, 50)
        .unwrap()
        .into_iter()
        .map(|d| format!("{} {}", d.event, d.record_id))
        .collect();
    events.sort();
    seen.push(format!(
        "outbox: {events:?} pending {}",
        outbox.pending().unwrap()
    ));
    seen.push(format!(
        "orphans buried: {}",
        outbox.bury_orphans(&["billing".to_owned()]).unwrap()
    ));

    // Search (finished records only): case-insensitive text, an escaped wildcard; the
    // reader's own connection.
    let reader = RecordReader::open_at(at).unwrap();
    let hits = |q: &str| {
        reader
            .search(
                &RecordFilter {
                    q: Some(q.into()),
                    ..RecordFilter::default()
                },
                10,
                0,
            )
            .unwrap()
            .len()
    };
    seen.push(format!(
        "search: {} {} {}",
        hits("CALLER HUNG"),
        hits("rec-"),
        hits("50%")
    ));
    let tz = jiff::tz::TimeZone::UTC;
    let days = reader
        .analytics(UnixMs::new(0), UnixMs::new(86_400_000), None, &tz)
        .unwrap();
    seen.push(format!(
        "analytics: {:?}",
        days.iter()
            .map(|d| (d.day.clone(), d.calls, d.answered, d.talk_seconds))
            .collect::<Vec<_>>()
    ));

    // Agents: versions, deletion, routes.
    let agents = AgentStore::open(at).unwrap();
    agents
        .create("ada", &serde_json::json!({"kind": "hold"}))
        .unwrap();
    agents
        .update("ada", &serde_json::json!({"kind": "echo"}))
        .unwrap();
    agents.set_route("+4930*", "ada").unwrap();
    agents.set_route("+4930*", "bob").unwrap();
    seen.push(format!(
        "agents: {:?} routes {:?}",
        agents
            .versions("ada")
            .unwrap()
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        agents
            .routes()
            .unwrap()
            .iter()
            .map(|r| (r.number.clone(), r.agent.clone()))
            .collect::<Vec<_>>()
    ));

    // Caller memory.
    let mut memory = MemoryStore::open(at).unwrap();
    memory
        .add_fact("ada", "+4930123", "prefers email", "rec-a", UnixMs::new(10))
        .unwrap();
    memory
        .add_fact("ada", "+4930123", "prefers email", "rec-b", UnixMs::new(20))
        .unwrap();
    memory
        .set_summary(
            "ada",
            "+4930123",
            "asked about order A-17",
            "rec-b",
            UnixMs::new(30),
        )
        .unwrap();
    let m = memory.get("ada", "+4930123").unwrap().unwrap();
    seen.push(format!("memory: {} {:?}", m.facts.len(), m.summary));

    // Campaigns: claim in order, finish, the campaign ends.
    let mut campaigns = CampaignStore::open(at, Arc::default(), Arc::default()).unwrap();
    let c = campaigns.create(&campaign(2), UnixMs::new(100)).unwrap();
    let first = campaigns.claim(&c.id, UnixMs::new(200)).unwrap().unwrap();
    let second = campaigns.claim(&c.id, UnixMs::new(200)).unwrap().unwrap();
    seen.push(format!(
        "claims: {} {} {:?}",
        first.seq,
        second.seq,
        campaigns
            .claim(&c.id, UnixMs::new(200))
            .unwrap()
            .map(|t| t.seq)
    ));
    seen.push(format!(
        "interrupted: {}",
        campaigns.recover(UnixMs::new(300)).unwrap()
    ));
    seen.push(format!(
        "campaign: {:?}",
        campaigns.get(&c.id).unwrap().unwrap().state
    ));

    // Uploads and retention.
    let mut with_file = started("rec-c", 3_000);
    with_file.ended_at = Some(UnixMs::new(4_000));
    with_file.recording_path = Some("/nonexistent/rec-c.wav".into());
    store.finish(&with_file).unwrap();
    let uploads = UploadStore::open(at).unwrap();
    seen.push(format!(
        "uploads pending: {:?}",
        uploads
            .pending(10)
            .unwrap()
            .iter()
            .map(|p| p.id.clone())
            .collect::<Vec<_>>()
    ));
    uploads.uploaded("rec-c", "s3://b/rec-c.wav", true).unwrap();
    let sweep =
        voxline::records::retention::sweep(at, UnixMs::new(5_000), UnixMs::new(6_000), 10, None)
            .unwrap();
    seen.push(format!(
        "retention: {} expired {:?}",
        sweep.records,
        uploads.expired(10).unwrap()
    ));

    // Reopening runs no migration again and marks the call still in progress (rec-b)
    // unfinished.
    drop(store);
    let again = RecordStore::open_for(at, Some("n1")).unwrap();
    seen.push(format!("recovered: {}", again.recovered_unfinished()));
    seen
}

#[test]
fn the_same_operations_give_the_same_results_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let on_sqlite = exercise(&StoreLocation::sqlite(dir.path()));
    let pg = PostgresServer::start();
    let url = pg.create_db("contract");
    let on_postgres = exercise(&StoreLocation::parse(&url, dir.path()).unwrap());
    assert_eq!(on_sqlite, on_postgres, "PostgreSQL log:\n{}", pg.log());
    // And the observations are the expected ones, not merely equal.
    let expect = [
        "batch: [true, false, true, true, true]",
        "a: true",
        "active: [\"rec-b\"]",
        "list: [\"rec-b\", \"rec-a\"]",
        "claims: 0 1 None",
        "interrupted: 2",
        "recovered: 1",
    ];
    for e in expect {
        assert!(
            on_postgres.iter().any(|s| s == e),
            "{e} not in {on_postgres:#?}"
        );
    }
    assert!(
        on_postgres.iter().any(|s| s.starts_with(
            "outbox: [\"call.ended rec-a\", \"call.started rec-a\", \"call.started rec-b\"]"
        )),
        "{on_postgres:#?}"
    );
    assert!(
        on_postgres.contains(&"search: 1 1 0".to_owned()),
        "{on_postgres:#?}"
    );
}

#[test]
fn nodes_starting_together_migrate_the_schema_once() {
    let pg = PostgresServer::start();
    let url = pg.create_db("migrate");
    let dir = tempfile::tempdir().unwrap();
    let at = StoreLocation::parse(&url, dir.path()).unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let at = at.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                RecordStore::open_at(&at).map(|_| ())
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let mut c = pg.client("migrate");
    let rows = c
        .query(
            "SELECT version, COUNT(*) FROM schema_version GROUP BY version",
            &[],
        )
        .unwrap();
    assert!(rows.len() >= 15, "{} versions", rows.len());
    for r in rows {
        assert_eq!(
            r.get::<_, i64>(1),
            1,
            "version {} applied twice",
            r.get::<_, i64>(0)
        );
    }
}

#[test]
fn campaign_targets_claimed_by_several_nodes_at_once_are_never_dialed_twice() {
    let pg = PostgresServer::start();
    let url = pg.create_db("claims");
    let dir = tempfile::tempdir().unwrap();
    let at = StoreLocation::parse(&url, dir.path()).unwrap();
    RecordStore::open_at(&at).unwrap();
    let subs: voxline::records::outbox::SharedSubscriptions = Arc::new(RwLock::new(vec![]));
    let mut first = CampaignStore::open(&at, subs.clone(), Arc::default()).unwrap();
    let c = first.create(&campaign(200), UnixMs::new(0)).unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let at = at.clone();
            let id = c.id.clone();
            let barrier = barrier.clone();
            let subs = subs.clone();
            std::thread::spawn(move || {
                let mut node = CampaignStore::open(&at, subs, Arc::default()).unwrap();
                barrier.wait();
                let mut got = Vec::new();
                while let Some(t) = node.claim(&id, UnixMs::new(1)).unwrap() {
                    got.push(t.seq);
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut per_node = Vec::new();
    for h in handles {
        let got = h.join().unwrap();
        per_node.push(got.len());
        all.extend(got);
    }
    let distinct: BTreeSet<u32> = all.iter().copied().collect();
    assert_eq!(all.len(), 200, "claims per node {per_node:?}");
    assert_eq!(
        distinct.len(),
        200,
        "a target was claimed twice: {per_node:?}"
    );
}

#[test]
fn each_node_recovers_uploads_and_resumes_only_its_own_work() {
    let pg = PostgresServer::start();
    let url = pg.create_db("per_node");
    let dir = tempfile::tempdir().unwrap();
    let at = StoreLocation::parse(&url, dir.path()).unwrap();
    // Two nodes' records: a finished call with a recording and a transcript each.
    for node in ["a", "b"] {
        let mut store = RecordStore::open_for(&at, Some(node)).unwrap();
        let mut r = started(&format!("rec-{node}"), 1_000);
        r.answered_at = Some(UnixMs::new(1_100));
        r.ended_at = Some(UnixMs::new(2_000));
        r.recording_path = Some(format!("/nonexistent/{node}.wav"));
        r.transcript_path = Some(format!("/nonexistent/{node}.jsonl"));
        store.finish(&r).unwrap();
    }
    let mut uploads = UploadStore::open(&at).unwrap();
    uploads.set_node(Some("a".into()));
    let pending: Vec<String> = uploads
        .pending(10)
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(pending, ["rec-a"]);
    let reader = RecordReader::open_at(&at).unwrap();
    let resumed: Vec<String> = reader
        .pending_analyses(UnixMs::new(0), UnixMs::new(10_000), 10, Some("b"))
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(resumed, ["rec-b"]);
    let swept = voxline::records::retention::sweep(
        &at,
        UnixMs::new(5_000),
        UnixMs::new(6_000),
        10,
        Some("a"),
    )
    .unwrap();
    assert_eq!(swept.records, 1);
    assert!(
        reader
            .get("rec-b")
            .unwrap()
            .unwrap()
            .media_deleted_at
            .is_none()
    );

    // Campaign targets: a node recovers the ones it was dialing, not the other's; a survivor
    // recovers a dead node's.
    let subs: voxline::records::outbox::SharedSubscriptions = Arc::new(RwLock::new(vec![]));
    let mut a = CampaignStore::open(&at, subs.clone(), Arc::default()).unwrap();
    a.set_node(Some("a".into()));
    let mut b = CampaignStore::open(&at, subs, Arc::default()).unwrap();
    b.set_node(Some("b".into()));
    let c = a.create(&campaign(2), UnixMs::new(0)).unwrap();
    a.claim(&c.id, UnixMs::new(1)).unwrap().unwrap();
    b.claim(&c.id, UnixMs::new(1)).unwrap().unwrap();
    assert_eq!(
        a.recover(UnixMs::new(2)).unwrap(),
        1,
        "a recovered b's target too"
    );
    assert_eq!(a.get(&c.id).unwrap().unwrap().counts.dialing, 1);
    assert_eq!(a.recover_node(Some("b"), UnixMs::new(3)).unwrap(), 1);
    assert_eq!(a.get(&c.id).unwrap().unwrap().counts.dialing, 0);
}

#[test]
fn a_trunks_limits_hold_for_the_campaign_calls_of_every_node() {
    use voxline::records::campaigns::TrunkLimits;
    let pg = PostgresServer::start();
    let url = pg.create_db("trunk_limits");
    let dir = tempfile::tempdir().unwrap();
    let at = StoreLocation::parse(&url, dir.path()).unwrap();
    RecordStore::open_at(&at).unwrap();
    let subs: voxline::records::outbox::SharedSubscriptions = Arc::new(RwLock::new(vec![]));
    let mut a = CampaignStore::open(&at, subs.clone(), Arc::default()).unwrap();
    a.set_node(Some("a".into()));
    let mut b = CampaignStore::open(&at, subs, Arc::default()).unwrap();
    b.set_node(Some("b".into()));
    // Two campaigns of their own generous limits, both through the trunk "carrier".
    let one = a.create(&campaign(10), UnixMs::new(0)).unwrap();
    let two = b.create(&campaign(10), UnixMs::new(0)).unwrap();
    let concurrency = TrunkLimits {
        name: "carrier".into(),
        max_calls: Some(3),
        calls_per_s: None,
    };
    let claim = |s: &mut CampaignStore, id: &str, at: i64, t: &TrunkLimits| {
        s.claim_within(id, UnixMs::new(at), 100, 1000.0, Some(t))
            .unwrap()
            .map(|t| t.seq)
    };
    // Node a takes two of one's targets, node b one of two's: the trunk is full.
    assert!(claim(&mut a, &one.id, 1, &concurrency).is_some());
    assert!(claim(&mut a, &one.id, 2, &concurrency).is_some());
    assert!(claim(&mut b, &two.id, 3, &concurrency).is_some());
    assert_eq!(
        claim(&mut b, &two.id, 4, &concurrency),
        None,
        "over max_calls"
    );
    assert_eq!(
        claim(&mut a, &one.id, 5, &concurrency),
        None,
        "over max_calls"
    );
    // A call of one ends: node b may start one of two's.
    let first = a.targets(&one.id, 1, 0).unwrap().remove(0);
    a.finish_attempt(
        &one.id,
        first.seq,
        voxline::records::campaigns::Attempt {
            at: UnixMs::new(6),
            result: voxline::records::campaigns::AttemptResult::Answered,
            record_id: None,
            sip_code: Some(200),
        },
        UnixMs::new(6),
    )
    .unwrap();
    assert!(claim(&mut b, &two.id, 7, &concurrency).is_some());

    // The trunk's pace: 2 calls a second through "slow" across both nodes and campaigns.
    let pace = TrunkLimits {
        name: "slow".into(),
        max_calls: None,
        calls_per_s: Some(2.0),
    };
    let three = a.create(&campaign(10), UnixMs::new(0)).unwrap();
    let four = b.create(&campaign(10), UnixMs::new(0)).unwrap();
    let t0 = 10_000;
    assert!(claim(&mut a, &three.id, t0, &pace).is_some());
    assert_eq!(
        claim(&mut b, &four.id, t0 + 100, &pace),
        None,
        "too soon for the trunk"
    );
    assert!(claim(&mut b, &four.id, t0 + 500, &pace).is_some());
    assert_eq!(
        claim(&mut a, &three.id, t0 + 600, &pace),
        None,
        "too soon for the trunk"
    );
}
