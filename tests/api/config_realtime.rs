//! Realtime agents in `voxline.toml`: the complete example of docs/agents.md loads and maps to
//! what the call layer runs; each mistake is refused with the file, the dotted key and the
//! reason; the embedded default picks the realtime assistant only when the key is set.

use voxline::call::AgentKind as CallAgentKind;
use voxline::call::agent::Fallback;
use voxline::config::{
    AgentKind, BUILTIN_ASSISTANT_AGENT, BUILTIN_ECHO_AGENT, Config, NoiseReductionSetting,
    TurnDetectionSetting, agent_spec,
};

fn env(var: &str) -> Option<String> {
    match var {
        "OPENAI_API_KEY" => Some("sk-test-key".into()),
        "CRM_TOKEN" => Some("Bearer crm-secret".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, String> {
    Config::from_toml_str_with_env(text, "voxline.toml", env).map_err(|e| e.to_string())
}

/// The example of docs/agents.md, between the ```toml fence after "Configuring a realtime
/// agent" and the closing fence.
fn docs_example() -> String {
    let doc = include_str!("../../docs/agents.md");
    let start = doc
        .find("## Configuring a realtime agent")
        .expect("section");
    let rest = &doc[start..];
    let open = rest.find("```toml\n").expect("toml fence") + "```toml\n".len();
    let close = rest[open..].find("```").expect("closing fence");
    rest[open..open + close].to_owned()
}

#[test]
fn the_documented_example_loads_and_maps_to_a_realtime_agent() {
    let cfg = load(&docs_example()).expect("the docs example is valid");
    let a = cfg.agent("support").expect("agent");
    assert_eq!(a.kind, AgentKind::Realtime);
    let r = a.realtime.as_ref().expect("realtime section");
    assert_eq!(r.api_key.expose(), "sk-test-key");
    assert_eq!(r.voice.as_deref(), Some("marin"));
    assert_eq!(r.noise_reduction, NoiseReductionSetting::NearField);
    assert!(matches!(
        r.turn_detection,
        TurnDetectionSetting::ServerVad {
            silence_ms: Some(500),
            ..
        }
    ));
    assert_eq!(a.http_tools.len(), 1);
    assert_eq!(a.http_tools[0].headers[0].1.expose(), "Bearer crm-secret");
    assert_eq!(a.tools.transfer_targets.len(), 2);

    let spec = agent_spec(a);
    let CallAgentKind::Ai(rt) = &spec.kind else {
        panic!("not a realtime agent: {:?}", spec.kind);
    };
    let voxline::agent::BackendConfig::Realtime(backend) = &rt.backends[0] else {
        panic!("not a realtime backend: {:?}", rt.backends);
    };
    assert!(backend.instructions.contains("{{caller}}"));
    assert_eq!(
        backend.greeting.as_deref(),
        Some("Greet the caller and ask how you can help.")
    );
    let names: Vec<String> = rt.tools.specs().into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["hang_up", "transfer_call", "lookup_order"]);
    assert!(matches!(
        &rt.fallback,
        Fallback::Prompt { prompt: Some(_), transfer_to: Some(t) } if t == "sip:operator@pbx.example.com"
    ));
    // Who may call: the agent's network and the trunk's addresses, not the rest.
    let allow = cfg.allow_list("support");
    assert!(allow.contains("10.1.2.3".parse().unwrap()));
    assert!(allow.contains("192.76.120.10".parse().unwrap()));
    assert!(!allow.contains("203.0.113.5".parse().unwrap()));
    assert!(!allow.contains("127.0.0.1".parse().unwrap()));
    // The call layer's routes carry the whole list.
    let setup = cfg.call_setup();
    let routed = setup.routes.agent_for("123").expect("route");
    let list = routed.allow_from.as_ref().expect("gated");
    assert!(list.contains("64.16.250.10".parse().unwrap()));
}

#[test]
fn without_allow_from_anywhere_only_loopback_may_call() {
    let cfg = load("[[agent]]\nname = \"ai\"\nkind = \"realtime\"\n").expect("valid");
    let allow = cfg.allow_list("ai");
    assert!(allow.contains("127.0.0.1".parse().unwrap()));
    assert!(allow.contains("::1".parse().unwrap()));
    assert!(!allow.contains("192.168.1.10".parse().unwrap()));
}

#[test]
fn each_mistake_names_the_key_and_the_reason() {
    let base = "[[agent]]\nname = \"ai\"\nkind = \"realtime\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "[agent.realtime]\napi_key_env = \"NO_SUCH_KEY\"\n",
            "voxline.toml: agent[0].realtime.api_key_env: environment variable NO_SUCH_KEY is not set (a realtime agent needs its API key)",
        ),
        (
            "[agent.realtime]\nurl = \"https://api.openai.com/v1/realtime\"\n",
            "agent[0].realtime.url: \"https://api.openai.com/v1/realtime\" is not a ws:// or wss:// URL",
        ),
        (
            "[agent.realtime]\nturn_detection = \"loud\"\n",
            "agent[0].realtime.turn_detection: \"loud\" is not one of server_vad, semantic_vad, local, none",
        ),
        (
            "[agent.realtime]\nvad_threshold = 1.5\n",
            "agent[0].realtime.vad_threshold: must be between 0.0 and 1.0 (got 1.5)",
        ),
        (
            "[agent.realtime]\nnoise_reduction = \"max\"\n",
            "agent[0].realtime.noise_reduction: \"max\" is not one of none, near_field, far_field",
        ),
        (
            "[[agent.http_tool]]\nname = \"hang_up\"\ndescription = \"x\"\nurl = \"http://127.0.0.1/\"\n",
            "agent[0].http_tool[0].name: tool name \"hang_up\" is used twice (or is a built-in tool)",
        ),
        (
            "[[agent.http_tool]]\nname = \"bad name\"\ndescription = \"x\"\nurl = \"http://127.0.0.1/\"\n",
            "agent[0].http_tool[0].name: \"bad name\" is not a valid tool name",
        ),
        (
            "[[agent.http_tool]]\nname = \"t\"\ndescription = \"x\"\nurl = \"ftp://h/\"\n",
            "agent[0].http_tool[0].url: \"ftp://h/\" is not an http:// or https:// URL",
        ),
        (
            "[[agent.http_tool]]\nname = \"t\"\ndescription = \"x\"\nurl = \"http://h/\"\nparameters = 5\n",
            "agent[0].http_tool[0].parameters",
        ),
        (
            "[[agent.http_tool]]\nname = \"t\"\ndescription = \"x\"\nurl = \"http://h/\"\nheader_env = { Authorization = \"UNSET_TOKEN\" }\n",
            "agent[0].http_tool[0].header_env.Authorization: environment variable UNSET_TOKEN is not set",
        ),
        (
            "[agent.fallback]\nsip_code = 200\n",
            "agent[0].fallback.sip_code: must be between 400 and 699 (got 200)",
        ),
        (
            "[[agent.tools.transfer_target]]\nname = \"sales\"\nuri = \"not a uri\"\n",
            "agent[0].tools.transfer_target[0].uri: invalid SIP URI",
        ),
        (
            "[agent.dsp]\nbarge_in = \"maybe\"\n",
            "agent[0].dsp.barge_in: \"maybe\" is not one of local, server, both",
        ),
        (
            "[agent.dsp]\nnoise_suppression = \"max\"\n",
            "agent[0].dsp.noise_suppression: \"max\" is not one of off, low, moderate, high, very_high",
        ),
        (
            "[agent.dsp]\nmin_speech_ms = 5000\n",
            "agent[0].dsp.min_speech_ms",
        ),
        (
            "[agent.dsp]\nvad_threshold = 2.0\n",
            "agent[0].dsp.vad_threshold: must be between 0.0 and 1.0",
        ),
        (
            "[agent.dsp]\nvad = false\n",
            "agent[0].dsp.barge_in: \"local\" needs voxline's VAD, which vad = false turns off",
        ),
        (
            "[agent.dsp]\nenabled = false\necho_cancellation = true\n",
            "agent[0].dsp.echo_cancellation: has no effect with enabled = false",
        ),
        (
            "[agent.dsp]\nenabled = false\nbarge_in = \"both\"\n",
            "agent[0].dsp.barge_in: \"both\" needs voxline's VAD, which enabled = false turns off",
        ),
        (
            "[agent.realtime]\nturn_detection = \"local\"\n[agent.dsp]\nbarge_in = \"server\"\n",
            "agent[0].dsp.barge_in: \"server\" needs the server's turn detection",
        ),
        (
            "[agent.realtime]\nturn_detection = \"local\"\n[agent.dsp]\nvad = false\nbarge_in = \"server\"\n",
            "agent[0].dsp.barge_in: \"server\" needs the server's turn detection",
        ),
        ("[agent.dsp]\nstrength = 3\n", "unknown field `strength`"),
        (
            "[agent.realtime]\nvoice = 3\n",
            "agent[0].realtime.voice: invalid type: integer `3`, expected a string",
        ),
    ];
    for (extra, expected) in cases {
        let e = load(&format!("{base}{extra}")).expect_err(extra);
        assert!(
            e.contains(expected),
            "for {extra:?}:\n  got      {e}\n  expected {expected}"
        );
    }
    // AI keys on a local agent.
    let e = load("[[agent]]\nname = \"e\"\nkind = \"echo\"\ninstructions = \"hi\"\n").unwrap_err();
    assert!(
        e.contains("agent[0].instructions: instructions only goes with kind = \"realtime\""),
        "{e}"
    );
    let e =
        load("[[agent]]\nname = \"e\"\nkind = \"echo\"\n[agent.dsp]\nvad = false\n").unwrap_err();
    assert!(
        e.contains("agent[0].dsp: dsp only goes with kind = \"realtime\""),
        "{e}"
    );
}

#[test]
fn dsp_settings_reach_the_agent() {
    use std::time::Duration;
    use voxline::call::BargeIn;
    use voxline::dsp::ns::NsLevel;
    let base = "[[route]]\nnumber = \"*\"\nagent = \"ai\"\n[[agent]]\nname = \"ai\"\nkind = \"realtime\"\n";
    // Defaults: echo cancellation and VAD on, noise suppression off, local barge-in.
    let cfg = load(base).unwrap();
    let d = &cfg.agent("ai").unwrap().dsp;
    assert!(d.chain.echo_cancellation);
    assert_eq!(d.chain.noise_suppression, None);
    let speech = d.chain.speech.expect("vad on");
    assert_eq!(speech.min_speech, Duration::from_millis(200));
    assert_eq!(d.barge_in, BargeIn::Local);
    // Everything set.
    let cfg = load(&format!(
        "{base}[agent.realtime]\nturn_detection = \"local\"\nvad_silence_ms = 700\n\
         [agent.dsp]\nnoise_suppression = \"high\"\nmin_speech_ms = 300\nvad_threshold = 0.7\n\
         barge_in = \"both\"\necho_cancellation = false\n"
    ))
    .unwrap();
    let d = &cfg.agent("ai").unwrap().dsp;
    assert!(!d.chain.echo_cancellation);
    assert_eq!(d.chain.noise_suppression, Some(NsLevel::High));
    let speech = d.chain.speech.expect("vad on");
    assert_eq!(speech.min_speech, Duration::from_millis(300));
    assert_eq!(speech.end_silence, Duration::from_millis(700));
    assert!((speech.threshold - 0.7).abs() < 1e-6);
    assert_eq!(d.barge_in, BargeIn::Both);
    // Off: nothing runs, the server decides.
    let cfg = load(&format!("{base}[agent.dsp]\nenabled = false\n")).unwrap();
    let d = &cfg.agent("ai").unwrap().dsp;
    assert!(!d.chain.any());
    assert_eq!(d.barge_in, BargeIn::Server);
}

#[test]
fn the_embedded_default_picks_the_assistant_only_with_a_key() {
    let with = Config::embedded_default_with_env(env);
    assert_eq!(with.route_for("1").unwrap().name, BUILTIN_ASSISTANT_AGENT);
    let without = Config::embedded_default_with_env(|_| None);
    assert_eq!(without.route_for("1").unwrap().name, BUILTIN_ECHO_AGENT);
    assert!(without.agent(BUILTIN_ASSISTANT_AGENT).is_none());
    // A file with routes keeps its own routing even with the key set.
    let cfg = load("[[route]]\nnumber = \"*\"\nagent = \"hold\"\n").unwrap();
    assert_eq!(cfg.route_for("1").unwrap().name, "hold");
}
