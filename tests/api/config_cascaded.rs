//! Cascaded agents and backend chains in `voxline.toml`: the complete examples of
//! docs/agents.md load and map to what the call layer runs; each mistake is refused with the
//! file, the dotted key and the reason; with both OpenAI and Deepgram keys the embedded
//! default's assistant is cascaded.

use voxline::agent::BackendConfig;
use voxline::agent::cascaded::TurnEnd;
use voxline::agent::cascaded::stt::SttProvider;
use voxline::agent::cascaded::tts::TtsProvider;
use voxline::call::AgentKind as CallAgentKind;
use voxline::config::{AgentKind, BUILTIN_ASSISTANT_AGENT, Config, agent_spec};

fn env(var: &str) -> Option<String> {
    match var {
        "OPENAI_API_KEY" => Some("sk-test-key".into()),
        "DEEPGRAM_API_KEY" => Some("dg-test-key".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, String> {
    Config::from_toml_str_with_env(text, "voxline.toml", env).map_err(|e| e.to_string())
}

/// The first ```toml block after `heading` in docs/agents.md.
fn docs_example(heading: &str) -> String {
    let doc = include_str!("../../docs/agents.md");
    let start = doc.find(heading).expect("section");
    let rest = &doc[start..];
    let open = rest.find("```toml\n").expect("toml fence") + "```toml\n".len();
    let close = rest[open..].find("```").expect("closing fence");
    rest[open..open + close].to_owned()
}

fn backends(cfg: &Config, agent: &str) -> Vec<BackendConfig> {
    let spec = agent_spec(cfg.agent(agent).expect("agent"));
    let CallAgentKind::Ai(ai) = &spec.kind else {
        panic!("not an AI agent: {:?}", spec.kind);
    };
    ai.backends.clone()
}

#[test]
fn the_documented_cascaded_example_loads() {
    let cfg = load(&docs_example("## Cascaded agents")).expect("the docs example is valid");
    let a = cfg.agent("desk").expect("agent");
    assert_eq!(a.kind, AgentKind::Cascaded);
    let b = backends(&cfg, "desk");
    let [BackendConfig::Cascaded(c)] = b.as_slice() else {
        panic!("{b:?}");
    };
    assert_eq!(c.stt.model, "nova-3");
    assert_eq!(c.stt.language.as_deref(), Some("en-US"));
    assert_eq!(c.stt.api_key.expose(), "dg-test-key");
    assert_eq!(c.stt.endpointing_ms, 300);
    assert_eq!(c.llm.model, "gpt-4o-mini");
    assert_eq!(c.llm.temperature, Some(0.6));
    assert_eq!(c.llm.api_key.as_ref().unwrap().expose(), "sk-test-key");
    // Deepgram's default URL is its WebSocket.
    assert_eq!(c.tts.provider, TtsProvider::DeepgramWs);
    assert_eq!(c.tts.url, "wss://api.deepgram.com");
    assert_eq!(c.tts.voice, "aura-2-thalia-en");
    assert_eq!(c.turn_end, TurnEnd::VadAndStt);
    assert_eq!(
        c.greeting.as_deref(),
        Some("Hello, Example Dental, how can I help?")
    );
    assert_eq!(
        a.dsp.chain.speech.unwrap().end_silence,
        std::time::Duration::from_millis(500)
    );
}

#[test]
fn the_documented_chain_example_loads() {
    let cfg = load(&docs_example("## Fallback between backends mid-call")).expect("valid");
    let b = backends(&cfg, "support");
    assert_eq!(
        b.iter().map(BackendConfig::kind).collect::<Vec<_>>(),
        ["realtime", "cascaded"]
    );
    let spec = agent_spec(cfg.agent("support").unwrap());
    let CallAgentKind::Ai(ai) = &spec.kind else {
        panic!()
    };
    assert_eq!(
        ai.switch_prompt,
        Some(("One moment, please.".to_owned(), "en-us".to_owned()))
    );
    // The realtime agent has the server's turns: the cascaded fallback ends turns on the STT.
    let BackendConfig::Cascaded(c) = &b[1] else {
        panic!()
    };
    assert_eq!(c.turn_end, TurnEnd::Stt);
}

#[test]
fn a_local_llm_needs_no_key_and_without_vad_the_stt_ends_turns() {
    let cfg = load(
        "[[agent]]\nname = \"a\"\nkind = \"cascaded\"\n[agent.llm]\nurl = \"http://127.0.0.1:11434/v1\"\nmodel = \"llama3\"\napi_key_env = \"\"\n[agent.dsp]\nvad = false\nbarge_in = \"server\"\n",
    );
    // barge_in = "server" names something a cascaded agent does not have.
    assert!(cfg.unwrap_err().contains("agent[0].dsp.barge_in"));
    let cfg = load(
        "[[agent]]\nname = \"a\"\nkind = \"cascaded\"\n[agent.llm]\nurl = \"http://127.0.0.1:11434/v1\"\nmodel = \"llama3\"\napi_key_env = \"\"\n[agent.dsp]\nvad = false\n",
    )
    .unwrap();
    let b = backends(&cfg, "a");
    let [BackendConfig::Cascaded(c)] = b.as_slice() else {
        panic!("{b:?}");
    };
    assert!(c.llm.api_key.is_none());
    assert_eq!(c.turn_end, TurnEnd::Stt);
}

#[test]
fn the_tts_url_picks_deepgrams_socket_or_rest_and_elevenlabs_has_its_defaults() {
    let agent = |tts: &str| {
        let cfg = load(&format!(
            "[[agent]]\nname = \"a\"\nkind = \"cascaded\"\n[agent.tts]\n{tts}"
        ))?;
        let b = backends(&cfg, "a");
        let [BackendConfig::Cascaded(c)] = b.as_slice() else {
            panic!("{b:?}");
        };
        Ok::<_, String>(c.tts.clone())
    };
    let t = agent("provider = \"deepgram\"\nurl = \"https://dg.example.com\"\n").unwrap();
    assert_eq!(t.provider, TtsProvider::DeepgramRest);
    let t = agent("provider = \"deepgram\"\nurl = \"ws://127.0.0.1:9000\"\n").unwrap();
    assert_eq!(t.provider, TtsProvider::DeepgramWs);
    let e = agent("provider = \"elevenlabs\"\n").unwrap_err();
    assert!(
        e.contains("agent[0].tts.api_key_env: environment variable ELEVENLABS_API_KEY is not set"),
        "{e}"
    );
    let t = agent("provider = \"elevenlabs\"\napi_key_env = \"OPENAI_API_KEY\"\nvoice = \"abc\"\n")
        .unwrap();
    assert_eq!(t.provider, TtsProvider::ElevenLabs);
    assert_eq!(t.url, "wss://api.elevenlabs.io");
    assert_eq!(t.model, "eleven_flash_v2_5");
    assert_eq!(t.voice, "abc");
    let e = agent(
        "provider = \"elevenlabs\"\napi_key_env = \"OPENAI_API_KEY\"\nurl = \"https://api.elevenlabs.io\"\n",
    )
    .unwrap_err();
    assert!(
        e.contains("agent[0].tts.url") && e.contains("ws:// or wss://"),
        "{e}"
    );
    let e = agent("provider = \"deepgram\"\nmodel = \"x\"\n").unwrap_err();
    assert!(e.contains("agent[0].tts.model"), "{e}");
}

#[test]
fn the_openai_stt_has_its_defaults_and_no_utterance_end() {
    let agent = |stt: &str| {
        let cfg = load(&format!(
            "[[agent]]\nname = \"a\"\nkind = \"cascaded\"\n[agent.stt]\n{stt}"
        ))?;
        let b = backends(&cfg, "a");
        let [BackendConfig::Cascaded(c)] = b.as_slice() else {
            panic!("{b:?}");
        };
        Ok::<_, String>(c.stt.clone())
    };
    let s = agent("provider = \"openai\"\nlanguage = \"en\"\n").unwrap();
    assert_eq!(s.provider, SttProvider::OpenAi);
    assert_eq!(
        s.url,
        "wss://api.openai.com/v1/realtime?intent=transcription"
    );
    assert_eq!(s.model, "gpt-4o-transcribe");
    assert_eq!(s.api_key.expose(), "sk-test-key");
    let e = agent("provider = \"openai\"\nutterance_end_ms = 1000\n").unwrap_err();
    assert!(
        e.contains("agent[0].stt.utterance_end_ms: Deepgram only"),
        "{e}"
    );
    let e = agent("provider = \"whisper\"\n").unwrap_err();
    assert!(e.contains("is not one of deepgram, openai"), "{e}");
}

#[test]
fn each_mistake_names_the_key_and_the_reason() {
    let base = "[[agent]]\nname = \"ai\"\nkind = \"cascaded\"\n";
    let cases: &[(&str, &str)] = &[
        (
            "[agent.stt]\napi_key_env = \"NO_SUCH_KEY\"\n",
            "voxline.toml: agent[0].stt.api_key_env: environment variable NO_SUCH_KEY is not set",
        ),
        (
            "[agent.stt]\nprovider = \"whisper\"\n",
            "agent[0].stt.provider: \"whisper\" is not one of deepgram, openai",
        ),
        (
            "[agent.stt]\nurl = \"https://api.deepgram.com/v1/listen\"\n",
            "agent[0].stt.url: \"https://api.deepgram.com/v1/listen\" is not a ws:// or wss:// URL",
        ),
        (
            "[agent.stt]\nutterance_end_ms = 500\n",
            "agent[0].stt.utterance_end_ms: must be between 1000 and 5000 (got 500)",
        ),
        (
            "[agent.llm]\nurl = \"ws://x/v1\"\n",
            "agent[0].llm.url: \"ws://x/v1\" is not a http:// or https:// URL",
        ),
        (
            "[agent.llm]\ntemperature = 3.0\n",
            "agent[0].llm.temperature: must be between 0.0 and 2.0 (got 3)",
        ),
        (
            "[agent.llm]\ntimeout_ms = 10\n",
            "agent[0].llm.timeout_ms: must be between 100 and 60000 (got 10)",
        ),
        (
            "[agent.tts]\nprovider = \"polly\"\n",
            "agent[0].tts.provider: \"polly\" is not one of openai, deepgram",
        ),
        (
            "[agent.tts]\nprovider = \"deepgram\"\nmodel = \"aura-2\"\n",
            "agent[0].tts.model: Deepgram's model is the voice",
        ),
        ("[agent.tts]\nunknown = 1\n", "unknown field `unknown`"),
        (
            "[agent.tts]\nprovider = \"espeak\"\nurl = \"http://x\"\n",
            "agent[0].tts.url: espeak speaks on this machine: only voice applies",
        ),
        (
            "[agent.fallback]\nswitch_prompt = \"Hold on\"\n",
            "agent[0].fallback.switch_prompt: has no effect without fallback.backends",
        ),
        (
            "turn_silence_ms = 50\n",
            "agent[0].turn_silence_ms: must be between 100 and 5000 (got 50)",
        ),
        (
            "[agent.realtime]\nvoice = \"marin\"\n",
            "agent[0].realtime: [agent.realtime] only goes with kind = \"realtime\" or \"realtime\" in fallback.backends",
        ),
        (
            "[agent.fallback]\nbackends = [\"cascaded\"]\n",
            "agent[0].fallback.backends[0]: \"cascaded\" is already in the chain",
        ),
        (
            "[agent.fallback]\nbackends = [\"gemini\"]\n",
            "agent[0].fallback.backends[0]: \"gemini\" is not one of realtime, cascaded",
        ),
    ];
    for (extra, want) in cases {
        let err = load(&format!("{base}{extra}")).expect_err(extra);
        assert!(err.contains(want), "{extra:?}: got {err:?}, want {want:?}");
    }
    // The cascaded sections on a realtime agent without a cascaded fallback.
    let err =
        load("[[agent]]\nname = \"ai\"\nkind = \"realtime\"\n[agent.stt]\nmodel = \"nova-3\"\n")
            .unwrap_err();
    assert!(
        err.contains("agent[0].stt: stt only goes with kind = \"cascaded\""),
        "{err}"
    );
    let err =
        load("[[agent]]\nname = \"ai\"\nkind = \"realtime\"\nturn_silence_ms = 400\n").unwrap_err();
    assert!(err.contains("agent[0].turn_silence_ms"), "{err}");
}

#[test]
fn with_both_keys_the_embedded_assistant_is_cascaded() {
    let cfg = Config::embedded_default_with_env(env);
    let a = cfg.route_for("1").unwrap();
    assert_eq!(a.name, BUILTIN_ASSISTANT_AGENT);
    assert_eq!(a.kind, AgentKind::Cascaded);
    let b = backends(&cfg, BUILTIN_ASSISTANT_AGENT);
    let [BackendConfig::Cascaded(c)] = b.as_slice() else {
        panic!("{b:?}");
    };
    assert_eq!(c.tts.provider, TtsProvider::DeepgramWs);
    assert!(cfg.describe_default_route().unwrap().contains("cascaded"));
    // OpenAI's key alone: the realtime assistant.
    let only_openai = |v: &str| (v == "OPENAI_API_KEY").then(|| "sk".to_owned());
    let cfg = Config::embedded_default_with_env(only_openai);
    assert_eq!(cfg.route_for("1").unwrap().kind, AgentKind::Realtime);
}
