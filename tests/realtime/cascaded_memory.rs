//! Caller memory and post-call analysis, end to end with a cascaded agent:
//!
//! 1. On the first call the LLM calls `remember`; after the BYE the transcript goes to the
//!    chat mock as a strict Structured Outputs request, whose answer (summary and outcome)
//!    lands in the record and, as the summary, in the caller's memory.
//! 2. On the second call from the same number, the instructions (`{{memory}}`) carry the
//!    fact and the summary.
//! 3. `GET /memory/{number}` shows it; `DELETE` forgets it.
//!
//! A second test: an analysis the model refuses, after a 503 that is retried, is stored as
//! an error.

use std::time::Duration;

use serde_json::json;
use voxline_mock_cascaded::{AnalysisReply, ChatMockConfig, ChatReply, ProvidersConfig};

use crate::cascaded_support::{CascadedE2e, KEY_ENV, question, say_and_listen};
use crate::common::http_json;

/// `[agent.analysis]` against the chat mock, with an outcome schema.
fn analysis_table() -> String {
    format!(
        r#"[agent.analysis]
url = "@LLM_URL@"
model = "mock-analyst"
api_key_env = "{KEY_ENV}"
outcome_schema = {{ type = "object", properties = {{ case_number = {{ type = ["string", "null"] }}, resolved = {{ type = "boolean" }}, next_step = {{ type = "string", enum = ["callback", "none"] }} }} }}
"#
    )
}

/// The analysis of the record, waited for up to 10 s.
fn analysis_of(vox: &crate::common::VoxlineProcess) -> Option<voxline::records::CallRecord> {
    let reader = voxline::records::RecordReader::open(vox.work_dir().join("data")).ok()?;
    for _ in 0..100 {
        if let Some(r) = reader
            .list(10, 0)
            .ok()?
            .into_iter()
            .find(|r| r.analysis.is_some())
        {
            return Some(r);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn memory_round_trip_across_two_calls() {
    let mut outcome = serde_json::Map::new();
    outcome.insert(
        "outcome".into(),
        json!({"case_number": "C-17", "resolved": false, "next_step": "callback"}),
    );
    let cfg = ProvidersConfig {
        chat: ChatMockConfig {
            script: vec![
                ChatReply::Tools(vec![(
                    "remember".into(),
                    json!({"fact": "Prefers to be called Sam"}),
                )]),
                ChatReply::Text("Noted, Sam.".into()),
            ],
            analysis: vec![AnalysisReply::Fill(outcome)],
            ..ChatMockConfig::default()
        },
        ..ProvidersConfig::default()
    };
    let h = CascadedE2e::start_with_instructions(
        cfg,
        "You are a test agent. What you know of this caller: {{memory}}",
        "memory = true",
        &analysis_table(),
    );

    // Call 1: the fact is noted, the call is analysed.
    let (mut sip, mut rtp, to) = h.call("5551234");
    let q = question("Please call me Sam");
    say_and_listen(&mut rtp, to, &q, 25, 25 + q.len() / 160 + 200);
    assert_eq!(sip.bye(), 200);
    let out = || h.vox.output();
    let record = analysis_of(&h.vox).unwrap_or_else(|| panic!("no analysis\n{}", out()));
    let a = record.analysis.clone().unwrap();
    assert_eq!(a.error, None, "{}", out());
    assert_eq!(a.model, "mock-analyst");
    assert_eq!(
        a.outcome,
        Some(json!({"case_number": "C-17", "resolved": false, "next_step": "callback"}))
    );
    let summary = a.summary.clone().unwrap();
    assert!(summary.starts_with("The caller said: "), "{summary}");
    // The request: strict, with the transcript (the caller's words and the agent's reply).
    let requests = h.mock.chat_requests();
    let analysis_req = requests
        .iter()
        .find(|r| r.body.get("response_format").is_some())
        .expect("an analysis request");
    let rf = &analysis_req.body["response_format"];
    assert_eq!(rf["type"], "json_schema");
    assert_eq!(rf["json_schema"]["strict"], true);
    assert_eq!(
        rf["json_schema"]["schema"]["properties"]["outcome"]["required"],
        json!(["case_number", "next_step", "resolved"])
    );
    let transcript = analysis_req.body["messages"][1]["content"]
        .as_str()
        .unwrap();
    assert!(transcript.contains("\nAgent: Noted, Sam."), "{transcript}");
    assert!(transcript.contains("Caller: "), "{transcript}");
    assert!(
        h.mock.errors().is_empty(),
        "{:?}\n{}",
        h.mock.errors(),
        out()
    );

    // The memory over HTTP.
    let http = h.vox.http_addr();
    let t = Duration::from_secs(5);
    let (code, mem) = http_json(http, "GET", "/memory/peer", None, t);
    assert_eq!(code, 200, "{mem}");
    let m = &mem["memories"][0];
    assert_eq!(m["agent"], "bot");
    assert_eq!(m["facts"][0]["text"], "Prefers to be called Sam");
    assert_eq!(m["facts"][0]["record_id"], record.id.as_str());
    assert_eq!(m["summary"], summary.as_str());

    // Call 2: the instructions carry the memory.
    let before = h.mock.chat_requests().len();
    let (mut sip, mut rtp, to) = h.call("5551234");
    let q = question("Hello again");
    say_and_listen(&mut rtp, to, &q, 25, 25 + q.len() / 160 + 150);
    assert_eq!(sip.bye(), 200);
    let requests = h.mock.chat_requests();
    let second = requests[before..]
        .iter()
        .find(|r| r.body.get("stream") == Some(&json!(true)))
        .unwrap_or_else(|| panic!("no chat request on the second call\n{}", out()));
    let system = second.body["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("- Prefers to be called Sam"),
        "{system}\n{}",
        out()
    );
    assert!(
        system.contains(&format!("Summary of the last call: {summary}")),
        "{system}"
    );

    // Erasure, once the second call's analysis is stored (it writes the summary again).
    let reader = voxline::records::RecordReader::open(h.vox.work_dir().join("data")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while reader
        .list(10, 0)
        .unwrap()
        .iter()
        .filter(|r| r.analysis.is_some())
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no analysis of the second call\n{}",
            out()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, del) = http_json(http, "DELETE", "/memory/peer", None, t);
    assert_eq!((code, del["deleted"].clone()), (200, json!(1)), "{del}");
    let (_, mem) = http_json(http, "GET", "/memory/peer", None, t);
    assert_eq!(mem["memories"], json!([]));
}

#[test]
fn a_refused_analysis_is_stored_as_an_error_after_retrying_a_503() {
    let cfg = ProvidersConfig {
        chat: ChatMockConfig {
            analysis: vec![
                AnalysisReply::Status(503),
                AnalysisReply::Refuse("I can't help with that.".into()),
            ],
            ..ChatMockConfig::default()
        },
        ..ProvidersConfig::default()
    };
    let h =
        CascadedE2e::start_with_instructions(cfg, "You are a test agent.", "", &analysis_table());
    let (mut sip, mut rtp, to) = h.call("5551234");
    let q = question("What time is it");
    say_and_listen(&mut rtp, to, &q, 25, 25 + q.len() / 160 + 150);
    assert_eq!(sip.bye(), 200);
    let record = analysis_of(&h.vox).unwrap_or_else(|| panic!("no analysis\n{}", h.vox.output()));
    let a = record.analysis.unwrap();
    assert_eq!(a.summary, None);
    assert_eq!(
        a.error.as_deref(),
        Some("the model refused: I can't help with that.")
    );
    let structured = h
        .mock
        .chat_requests()
        .iter()
        .filter(|r| r.body.get("response_format").is_some())
        .count();
    assert_eq!(structured, 2, "one 503, one retry");
    // Without memory, nothing is remembered.
    let (code, mem) = http_json(
        h.vox.http_addr(),
        "GET",
        "/memory/peer",
        None,
        Duration::from_secs(5),
    );
    assert_eq!((code, mem["memories"].clone()), (200, json!([])));
}

/// `[redaction]`: the stored transcript, the caller's memory and the analysis hold no card
/// number or e-mail address, while the agent said them on the call.
#[test]
fn stored_text_is_redacted() {
    let mut fill = serde_json::Map::new();
    fill.insert(
        "outcome".into(),
        json!({"case_number": "ada@example.com", "resolved": true, "next_step": "none"}),
    );
    let cfg = ProvidersConfig {
        chat: ChatMockConfig {
            script: vec![
                ChatReply::Tools(vec![(
                    "remember".into(),
                    json!({"fact": "Card 4111 1111 1111 1111, mail ada@example.com"}),
                )]),
                ChatReply::Text("I noted 4111 1111 1111 1111 and ada@example.com.".into()),
            ],
            analysis: vec![AnalysisReply::Fill(fill)],
            ..ChatMockConfig::default()
        },
        ..ProvidersConfig::default()
    };
    let tables = format!("{}\n[redaction]\nkinds = [\"all\"]\n", analysis_table());
    let h =
        CascadedE2e::start_with_instructions(cfg, "Known: {{memory}}", "memory = true", &tables);
    let (mut sip, mut rtp, to) = h.call("5551234");
    let q = question("Here are my details");
    say_and_listen(&mut rtp, to, &q, 25, 25 + q.len() / 160 + 200);
    assert_eq!(sip.bye(), 200);
    let out = || h.vox.output();
    let record = analysis_of(&h.vox).unwrap_or_else(|| panic!("no analysis\n{}", out()));
    let a = record.analysis.clone().unwrap();
    assert_eq!(
        a.outcome.unwrap()["case_number"],
        "[redacted:email]",
        "{}",
        out()
    );
    let transcript =
        std::fs::read_to_string(record.transcript_path.as_ref().expect("a transcript")).unwrap();
    assert!(
        transcript.contains("I noted [redacted:card] and [redacted:email]."),
        "{transcript}"
    );
    // (Not "4111" alone: a line's `at` time may hold those digits.)
    assert!(!transcript.contains("4111 1111"), "{transcript}");
    assert!(!transcript.contains("ada@example.com"), "{transcript}");
    let (_, mem) = http_json(
        h.vox.http_addr(),
        "GET",
        "/memory/peer",
        None,
        Duration::from_secs(5),
    );
    assert_eq!(
        mem["memories"][0]["facts"][0]["text"], "Card [redacted:card], mail [redacted:email]",
        "{mem}"
    );
    // The model heard the real text during the call (redaction is for what is stored).
    let first = &h.mock.chat_requests()[1].body;
    assert!(first.to_string().contains("ada@example.com"), "{first}");
}
