//! `memory` and `[agent.analysis]` in voxline.toml: the documented example loads and maps to
//! what the call layer runs (the `remember` tool offered, the strict outcome schema); each
//! mistake is refused with the dotted key and the reason.

use serde_json::json;
use voxline::call::AgentKind as CallAgentKind;
use voxline::config::{Config, agent_spec};

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

/// The example of docs/operations.md's "Caller memory and outcomes".
fn docs_example() -> String {
    let doc = include_str!("../../docs/operations.md");
    let start = doc.find("## Caller memory and outcomes").expect("section");
    let rest = &doc[start..];
    let open = rest.find("```toml\n").expect("toml fence") + "```toml\n".len();
    let close = rest[open..].find("```").expect("closing fence");
    rest[open..open + close].to_owned()
}

#[test]
fn the_documented_example_loads() {
    let cfg = load(&docs_example()).expect("the docs example is valid");
    let a = cfg.agent("desk").expect("agent");
    assert!(a.memory);
    let analysis = a.analysis.as_ref().expect("analysis");
    assert_eq!(analysis.chat.model, "gpt-4o-mini");
    assert_eq!(analysis.chat.timeout.as_millis(), 30_000);
    let schema = analysis.outcome_schema.as_ref().unwrap();
    assert_eq!(schema["additionalProperties"], json!(false));
    assert_eq!(
        schema["required"],
        json!(["case_number", "next_step", "resolved"])
    );
    let spec = agent_spec(a);
    let CallAgentKind::Ai(ai) = &spec.kind else {
        panic!("{:?}", spec.kind);
    };
    assert!(ai.memory);
    let tools: Vec<String> = ai.tools.specs().into_iter().map(|t| t.name).collect();
    assert!(tools.contains(&"remember".to_owned()), "{tools:?}");
}

#[test]
fn mistakes_name_the_key() {
    let base = r#"
[[agent]]
name = "a"
kind = "cascaded"
"#;
    for (extra, key, reason) in [
        (
            "instructions = \"Known: {{memory}}\"\n",
            "agent[0].instructions",
            "memory = false",
        ),
        (
            "memory = true\n[agent.analysis]\noutcome_schema = { type = \"string\" }\n",
            "agent[0].analysis.outcome_schema",
            "top level must be an object",
        ),
        (
            "[agent.analysis]\noutcome_schema = { type = \"object\", properties = { a = { type = \"string\" }, b = { type = \"string\" } }, required = [\"a\"] }\n",
            "agent[0].analysis.outcome_schema",
            "\"b\" must be in \"required\"",
        ),
        (
            "[agent.analysis]\ntimeout_ms = 0\n",
            "agent[0].analysis.timeout_ms",
            "",
        ),
        (
            "[agent.analysis]\ninstructions = \" \"\n",
            "agent[0].analysis.instructions",
            "",
        ),
        ("[agent.analysis]\nschema = 1\n", "agent", "unknown field"),
    ] {
        let e = load(&format!("{base}{extra}")).expect_err(extra);
        assert!(e.contains(key), "{extra}: {e}");
        assert!(e.contains(reason), "{extra}: {e}");
    }
    let e = load("[[agent]]\nname = \"p\"\nkind = \"echo\"\nmemory = true\n").unwrap_err();
    assert!(e.contains("agent[0].memory"), "{e}");
    // A tool may not take the built-in's name.
    let e = load(&format!(
        "{base}memory = true\n[[agent.http_tool]]\nname = \"remember\"\ndescription = \"x\"\nurl = \"http://127.0.0.1:9/\"\n"
    ))
    .unwrap_err();
    assert!(e.contains("agent[0].http_tool[0].name"), "{e}");
}
