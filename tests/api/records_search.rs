//! Searching finished records and the per-agent, per-day analytics, at the store
//! (`RecordReader::search`, `RecordReader::analytics`), and through the API (`GET /records`
//! filters, `GET /analytics` with `[pricing]`, `GET /records/{id}/recording` with Range).

use std::time::Duration;

use voxline::records::search::RecordFilter;
use voxline::records::{
    BackendSwitch, CallAnalysis, CallRecord, Direction, RecordReader, RecordStore, TurnLatency,
    UnixMs,
};

use crate::common::{VoxlineProcess, http_request};

/// 2024-06-10T12:00:00Z.
const NOON: i64 = 1_718_020_800_000;
const HOUR: i64 = 3_600_000;

fn turn(end: u64, latency: u64) -> TurnLatency {
    TurnLatency {
        caller_speech_end_ms: end,
        first_backend_audio_ms: Some(end + latency / 2),
        first_rtp_out_ms: Some(end + latency),
        stt_final_ms: None,
        llm_first_token_ms: None,
        tts_first_byte_ms: None,
    }
}

fn outcome(resolved: bool, topic: &str) -> CallAnalysis {
    CallAnalysis {
        summary: Some(format!("Caller asked about {topic}.")),
        outcome: Some(serde_json::json!({"resolved": resolved, "topic": topic, "score": 0.5})),
        error: None,
        model: "m".into(),
        at: UnixMs::new(NOON),
    }
}

/// A finished record: `answered_s` of talk when answered.
fn call(
    id: &str,
    agent: &str,
    direction: Direction,
    started: i64,
    answered_s: Option<i64>,
) -> CallRecord {
    let mut r = CallRecord::started(
        id,
        format!("{id}@host"),
        format!("sip:+4930{id}@trunk"),
        "sip:desk@voxline",
        direction,
        agent,
        UnixMs::new(started),
    );
    match answered_s {
        Some(s) => {
            r.answered_at = Some(UnixMs::new(started + 1000));
            r.ended_at = Some(UnixMs::new(started + 1000 + s * 1000));
        }
        None => r.ended_at = Some(UnixMs::new(started + 30_000)),
    }
    r.end_reason = Some("RemoteBye".into());
    r
}

/// The fixture: two agents over two days (UTC), one call in progress.
fn fixture(store: &mut RecordStore) {
    let mut a = call("1", "sales", Direction::Inbound, NOON, Some(60));
    a.turn_latencies = vec![turn(1000, 400), turn(5000, 600), turn(9000, 800)];
    a.barge_ins = 2;
    a.analysis = Some(outcome(true, "refund"));
    let mut b = call("2", "sales", Direction::Outbound, NOON + HOUR, Some(120));
    b.turn_latencies = vec![turn(1000, 1000)];
    b.backend_switches = vec![BackendSwitch {
        at_ms: 3000,
        from: "realtime".into(),
        to: "cascaded".into(),
        reason: "backend closed".into(),
    }];
    b.analysis = Some(outcome(false, "refund 100%"));
    let c = call("3", "sales", Direction::Inbound, NOON + 2 * HOUR, None);
    let d = call(
        "4",
        "support",
        Direction::Inbound,
        NOON + 2 * HOUR,
        Some(30),
    );
    // The next day (UTC), 01:00; still the 10th in New York.
    let e = call("5", "sales", Direction::Inbound, NOON + 13 * HOUR, Some(90));
    for r in [a, b, c, d, e] {
        store.insert_started(&r).unwrap();
        store.finish(&r).unwrap();
    }
    let live = CallRecord::started(
        "6",
        "live@host",
        "sip:x@y",
        "sip:desk@voxline",
        Direction::Inbound,
        "sales",
        UnixMs::new(NOON + 14 * HOUR),
    );
    store.insert_started(&live).unwrap();
}

fn ids(records: &[CallRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

#[test]
fn search_filters_finished_records_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    fixture(&mut store);
    let reader = RecordReader::open(dir.path()).unwrap();
    let find = |f: RecordFilter| ids(&reader.search(&f, 50, 0).unwrap()).join(",");
    // Every finished record, newest first; the call in progress is not one.
    assert_eq!(find(RecordFilter::default()), "5,4,3,2,1");
    assert_eq!(
        find(RecordFilter {
            agent: Some("sales".into()),
            ..Default::default()
        }),
        "5,3,2,1"
    );
    assert_eq!(
        find(RecordFilter {
            direction: Some(Direction::Outbound),
            ..Default::default()
        }),
        "2"
    );
    assert_eq!(
        find(RecordFilter {
            answered: Some(false),
            ..Default::default()
        }),
        "3"
    );
    assert_eq!(
        find(RecordFilter {
            since: Some(UnixMs::new(NOON + HOUR)),
            until: Some(UnixMs::new(NOON + 3 * HOUR)),
            ..Default::default()
        }),
        "4,3,2"
    );
    // Text: in the From (a number), the analysis, any case; LIKE's wildcards are literal.
    let q = |t: &str| {
        find(RecordFilter {
            q: Some(t.into()),
            ..Default::default()
        })
    };
    assert_eq!(q("+49304"), "4");
    assert_eq!(q("REFUND"), "2,1");
    assert_eq!(q("100%"), "2");
    assert_eq!(q("%"), "2");
    assert_eq!(q("_"), "");
    // Pages.
    let page = reader.search(&RecordFilter::default(), 2, 2).unwrap();
    assert_eq!(ids(&page), ["3", "2"]);
}

#[test]
fn analytics_count_per_agent_and_day_in_the_time_zone() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = RecordStore::open(dir.path()).unwrap();
    fixture(&mut store);
    let reader = RecordReader::open(dir.path()).unwrap();
    let utc = jiff::tz::TimeZone::UTC;
    let all = reader
        .analytics(
            UnixMs::new(NOON - 24 * HOUR),
            UnixMs::new(NOON + 48 * HOUR),
            None,
            &utc,
        )
        .unwrap();
    let keys: Vec<(&str, &str)> = all
        .iter()
        .map(|d| (d.day.as_str(), d.agent.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("2024-06-10", "sales"),
            ("2024-06-10", "support"),
            ("2024-06-11", "sales")
        ]
    );
    let sales = &all[0];
    assert_eq!((sales.calls, sales.answered), (3, 2));
    assert!((sales.answer_rate - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(sales.talk_seconds, 180.0);
    assert_eq!(sales.mean_talk_seconds, Some(90.0));
    // Latencies 400, 600, 800, 1000: nearest rank.
    assert_eq!(sales.turns, 4);
    assert_eq!(sales.latency_p50_ms, Some(600));
    assert_eq!(sales.latency_p95_ms, Some(1000));
    assert_eq!(
        (sales.barge_ins, sales.failovers, sales.analyzed),
        (2, 1, 2)
    );
    assert_eq!(sales.outcomes["resolved"]["true"], 1);
    assert_eq!(sales.outcomes["resolved"]["false"], 1);
    assert_eq!(sales.outcomes["topic"]["refund"], 1);
    // A float is not a category.
    assert!(!sales.outcomes.contains_key("score"));
    // New York: the 01:00 UTC call of the 11th is still the 10th.
    let ny = jiff::tz::TimeZone::get("America/New_York").unwrap();
    let by_ny = reader
        .analytics(
            UnixMs::new(NOON - 24 * HOUR),
            UnixMs::new(NOON + 48 * HOUR),
            Some("sales"),
            &ny,
        )
        .unwrap();
    assert_eq!(by_ny.len(), 1, "{by_ny:?}");
    assert_eq!((by_ny[0].day.as_str(), by_ny[0].calls), ("2024-06-10", 4));
}

fn get(vox: &VoxlineProcess, path: &str, headers: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(vox.http_addr()).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_owned(), body.to_owned())
}

#[test]
fn the_api_searches_counts_prices_and_serves_ranges_of_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let wav = dir.path().join("rec.wav");
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&wav, &content).unwrap();
    {
        let mut store = RecordStore::open(&data).unwrap();
        fixture(&mut store);
        let mut r = call(
            "7",
            "support",
            Direction::Inbound,
            NOON + 3 * HOUR,
            Some(10),
        );
        r.recording_path = Some(wav.display().to_string());
        store.insert_started(&r).unwrap();
        store.finish(&r).unwrap();
    }
    let vox = VoxlineProcess::spawn(&format!(
        "data_dir = \"{}\"\n\
         [pricing]\ncurrency = \"EUR\"\ntelephony_per_minute = 0.01\n\
         [pricing.agent_per_minute]\nsales = 0.05\n\"*\" = 0.02\n",
        data.display()
    ));
    let (code, body) = http_request(
        vox.http_addr(),
        "GET",
        "/records?q=refund&agent=sales&answered=true",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let found: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let found: Vec<&str> = found.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(found, ["2", "1"]);
    let (code, body) = http_request(
        vox.http_addr(),
        "GET",
        "/records?direction=sideways",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(code, 400, "{body}");

    let (code, body) = http_request(
        vox.http_addr(),
        "GET",
        &format!(
            "/analytics?since={}&until={}&tz=UTC",
            NOON - 24 * HOUR,
            NOON + 48 * HOUR
        ),
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let a: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(a["currency"], "EUR");
    let days = a["days"].as_array().unwrap();
    // sales on the 10th: 3 minutes at 0.01 + 0.05; support: 40 s at 0.01 + 0.02 ("*").
    assert_eq!(days[0]["agent"], "sales");
    assert_eq!(days[0]["cost"], 0.18);
    assert_eq!(days[1]["agent"], "support");
    assert_eq!(days[1]["calls"], 2);
    assert_eq!(days[1]["cost"], 0.02);
    let (code, _) = http_request(
        vox.http_addr(),
        "GET",
        "/analytics?tz=Mars/Olympus",
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(code, 400);

    // The recording: whole, a range, the tail, and a range past the end.
    let (code, head, body) = get(&vox, "/records/7/recording", "");
    assert_eq!(code, 200, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("accept-ranges: bytes"),
        "{head}"
    );
    assert!(!body.is_empty());
    assert_eq!(fetch_bytes(&vox, ""), content);
    let (code, head, _) = get(&vox, "/records/7/recording", "Range: bytes=100-199\r\n");
    assert_eq!(code, 206, "{head}");
    assert!(head.contains("bytes 100-199/10000"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("content-length: 100"),
        "{head}"
    );
    let raw = fetch_bytes(&vox, "Range: bytes=100-199\r\n");
    assert_eq!(raw, &content[100..200]);
    let raw = fetch_bytes(&vox, "Range: bytes=-16\r\n");
    assert_eq!(raw, &content[10_000 - 16..]);
    let (code, head, _) = get(&vox, "/records/7/recording", "Range: bytes=20000-\r\n");
    assert_eq!(code, 416, "{head}");
    assert!(head.contains("bytes */10000"), "{head}");
    let (code, _, _) = get(&vox, "/records/1/recording", "");
    assert_eq!(code, 404);
    let (code, _, _) = get(&vox, "/records/nope/recording", "");
    assert_eq!(code, 404);
}

/// The body bytes of `GET /records/7/recording` with `headers`.
fn fetch_bytes(vox: &VoxlineProcess, headers: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(vox.http_addr()).unwrap();
    write!(
        s,
        "GET /records/7/recording HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    raw[at..].to_vec()
}
