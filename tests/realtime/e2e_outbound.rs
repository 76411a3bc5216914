//! The outbound call API with a realtime agent: `POST /calls` with the agent and variables
//! places the call; once SIPp answers, voxline connects the backend with instructions rendered
//! from the call (the variable and the called number filled in), the agent speaks first with
//! the configured greeting (its audio reaches SIPp's leg as RTP), and `POST /calls/{id}/hangup`
//! ends the call with a BYE.

use crate::common;
use crate::realtime_e2e_support;

use std::time::Duration;

use common::{Sipp, http_request, scenario};
use realtime_e2e_support::RealtimeE2e;
use voxline_mock_realtime::MockConfig;

#[test]
fn post_calls_places_a_realtime_call_with_variables_and_a_greeting() {
    let sipp = Sipp::spawn(
        &["-sf", &scenario("uas_answer_until_bye.xml"), "-m", "1"],
        Duration::from_secs(30),
    );
    let h = RealtimeE2e::start(
        MockConfig::default(),
        "",
        "greeting = \"Greet {{var.customer}} by name.\"",
        "",
    );
    let body = format!(
        r#"{{"target":"sip:4711@{}","agent":"ai","variables":{{"customer":"Ada Lovelace"}}}}"#,
        sipp.addr()
    );
    let http = h.vox.http_addr();
    let (code, resp) =
        http_request(http, "POST", "/calls", Some(&body), Duration::from_secs(5)).expect("POST");
    assert_eq!(code, 201, "{resp}");
    let id = serde_json::from_str::<serde_json::Value>(&resp).expect("JSON")["id"]
        .as_u64()
        .expect("id");
    assert!(
        h.wait(Duration::from_secs(10), |m| !m
            .audio_sent_bytes()
            .is_empty()),
        "no session or greeting:\n{}",
        h.vox.output()
    );
    let session = &h.mock.sessions()[0];
    let instructions = session["instructions"].as_str().unwrap_or_default();
    assert!(
        instructions.contains("Customer: Ada Lovelace"),
        "instructions: {instructions}"
    );
    let creates = h.mock.received_of_type("response.create");
    assert!(
        creates.iter().any(|c| c["response"]["instructions"]
            .as_str()
            .is_some_and(|i| i.contains("Greet Ada Lovelace by name."))),
        "no greeting: {creates:?}"
    );
    // Let the greeting play, then hang up through the API.
    std::thread::sleep(Duration::from_millis(500));
    let (code, resp) = http_request(
        http,
        "POST",
        &format!("/calls/{id}/hangup"),
        None,
        Duration::from_secs(5),
    )
    .expect("hangup");
    assert_eq!(code, 200, "{resp}");
    sipp.wait().assert_success("answered, then voxline's BYE");
}
