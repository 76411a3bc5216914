//! `[[webhook]]` in voxline.toml: every mistake names the file, the key and the reason, and a
//! good endpoint comes out with its defaults.

use std::time::Duration;

use voxline::config::Config;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn env(var: &str) -> Option<String> {
    match var {
        "HOOK_SECRET" => Some(SECRET.to_owned()),
        "BAD_SECRET" => Some("s3cret".to_owned()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, String> {
    Config::from_toml_str_with_env(text, "voxline.toml", env).map_err(|e| e.to_string())
}

fn hook(extra: &str) -> String {
    format!(
        "[[webhook]]\nurl = \"https://crm.example.com/hooks\"\nsecret_env = \"HOOK_SECRET\"\n{extra}"
    )
}

#[test]
fn an_endpoint_takes_its_defaults() {
    let cfg = load(&hook("")).expect("valid");
    let ep = &cfg.webhooks[0];
    assert_eq!(ep.name, "https://crm.example.com/hooks");
    assert_eq!(ep.events.len(), 9, "every event by default");
    assert_eq!(ep.timeout, Duration::from_secs(10));
    assert_eq!(ep.backoff_initial, Duration::from_secs(5));
    assert_eq!(ep.backoff_max, Duration::from_secs(600));
    assert_eq!(ep.give_up_after, Duration::from_secs(24 * 3600));
    let cfg = load(&hook(
        "name = \"crm\"\nevents = [\"call.ended\"]\ntimeout_s = 3\nbackoff_initial_ms = 100\nbackoff_max_s = 60\ngive_up_after_h = 48\n",
    ))
    .expect("valid");
    let ep = &cfg.webhooks[0];
    assert_eq!(ep.name, "crm");
    assert_eq!(ep.events.len(), 1);
    assert_eq!(ep.timeout, Duration::from_secs(3));
    assert_eq!(ep.give_up_after, Duration::from_secs(48 * 3600));
}

#[test]
fn mistakes_name_the_key_and_the_reason() {
    let cases = [
        (
            "[[webhook]]\nurl = \"ftp://x\"\nsecret_env = \"HOOK_SECRET\"\n".to_owned(),
            "voxline.toml: webhook[0].url: \"ftp://x\" is not an http:// or https:// URL",
        ),
        (
            "[[webhook]]\nurl = \"https://x\"\nsecret_env = \"NOPE\"\n".to_owned(),
            "voxline.toml: webhook[0].secret_env: environment variable NOPE is not set (it holds the endpoint's signing secret (whsec_...))",
        ),
        (
            "[[webhook]]\nurl = \"https://x\"\nsecret_env = \"BAD_SECRET\"\n".to_owned(),
            "voxline.toml: webhook[0].secret_env: the value of BAD_SECRET: a Standard Webhooks secret starts with \"whsec_\"",
        ),
        (
            hook("events = [\"call.ended\", \"call.exploded\"]\n"),
            "voxline.toml: webhook[0].events[1]: unknown event \"call.exploded\" (known: call.started, call.answered, call.ended, transcript.ready, recording.ready, tool.called, backend.failover, call.analyzed, campaign.target.done)",
        ),
        (
            hook("events = []\n"),
            "voxline.toml: webhook[0].events: must not be empty",
        ),
        (
            hook("timeout_s = 0\n"),
            "voxline.toml: webhook[0].timeout_s: must be between 1 and 300 (got 0)",
        ),
        (
            format!("{}{}", hook(""), hook("")),
            "voxline.toml: webhook[1].name: duplicate name \"https://crm.example.com/hooks\" (already used by webhook[0])",
        ),
        (hook("retries = 3\n"), ""),
    ];
    for (text, want) in cases {
        let got = load(&text).expect_err(&text);
        if want.is_empty() {
            // An unknown key: the TOML parser's message names it.
            assert!(got.contains("retries"), "{got}");
        } else {
            assert_eq!(got, want, "{text}");
        }
    }
}
