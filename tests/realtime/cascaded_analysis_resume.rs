//! A post-call analysis that a crash interrupts is not lost: the call ends, the analysis
//! request gets a 503 and waits to be retried, voxline is killed (SIGKILL) meanwhile, and the
//! next voxline on the same database runs it at start, from the call's transcript, with the
//! agent that answered, and stores it in the record.

use std::time::Duration;

use serde_json::json;
use voxline_mock_cascaded::{AnalysisReply, ChatMockConfig, ChatReply, ProvidersConfig};

use crate::cascaded_support::{CascadedE2e, KEY_ENV, question, say_and_listen};

/// Whether a chat request is an analysis (Structured Outputs), not a turn.
fn is_analysis(r: &voxline_mock_cascaded::ChatRequest) -> bool {
    r.body.get("response_format").is_some()
}

#[test]
fn an_analysis_interrupted_by_a_crash_runs_at_the_next_start() {
    let mut outcome = serde_json::Map::new();
    outcome.insert("outcome".into(), json!({"resolved": true}));
    let cfg = ProvidersConfig {
        chat: ChatMockConfig {
            script: vec![ChatReply::Text("Your parcel left today.".into())],
            analysis: vec![AnalysisReply::Status(503), AnalysisReply::Fill(outcome)],
            ..ChatMockConfig::default()
        },
        ..ProvidersConfig::default()
    };
    let data = tempfile::tempdir().expect("tempdir");
    let analysis = format!(
        r#"[agent.analysis]
url = "@LLM_URL@"
model = "mock-analyst"
api_key_env = "{KEY_ENV}"
outcome_schema = {{ type = "object", properties = {{ resolved = {{ type = "boolean" }} }} }}
"#
    );
    let mut h = CascadedE2e::start_kept(
        cfg,
        &data.path().join("data"),
        "You are a test agent.",
        &analysis,
    );
    let (mut sip, mut rtp, to) = h.call("5551234");
    let q = question("Where is my parcel");
    say_and_listen(&mut rtp, to, &q, 25, 25 + q.len() / 160 + 150);
    assert_eq!(sip.bye(), 200);

    // The first analysis request is answered 503: voxline waits 2 s to retry. Kill it then.
    assert!(
        h.wait(Duration::from_secs(10), |m| m
            .chat_requests()
            .iter()
            .any(is_analysis)),
        "no analysis request\n{}",
        h.vox.output()
    );
    let reader = voxline::records::RecordReader::open(data.path().join("data")).unwrap();
    let record = reader.list(1, 0).unwrap().pop().expect("the record");
    assert_eq!(record.analysis, None, "stored before the retry");
    h.respawn();

    // The next voxline runs it: a second request, from the transcript.
    assert!(
        h.wait(Duration::from_secs(20), |m| m
            .chat_requests()
            .iter()
            .filter(|r| is_analysis(r))
            .count()
            >= 2),
        "the analysis did not run again\n{}",
        h.vox.output()
    );
    let requests: Vec<_> = h
        .mock
        .chat_requests()
        .into_iter()
        .filter(is_analysis)
        .collect();
    let (first, second) = (&requests[0].body["messages"], &requests[1].body["messages"]);
    // The same conversation as the live call had (the caller's words as the STT mock made
    // them, and the agent's reply).
    assert_eq!(first, second, "{first:#}\n{second:#}");
    let transcript = second[1]["content"].as_str().unwrap();
    assert!(
        transcript.contains("Agent: Your parcel left today."),
        "{transcript}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let r = reader.get(&record.id).unwrap().expect("the record");
        if let Some(a) = r.analysis {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the analysis is not stored\n{}",
            h.vox.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(stored.error, None);
    assert_eq!(stored.outcome, Some(json!({"resolved": true})));
    assert!(
        h.vox
            .output()
            .contains("post-call analysis a stop interrupted: running it now"),
        "{}",
        h.vox.output()
    );
}
