//! `GET /openapi.json`: the OpenAPI 3.1 document generated from the handlers (utoipa), and
//! schemathesis (PyPI) run against it: every operation fuzzed with valid and invalid data,
//! every response checked (no 5xx, documented status, content type and headers, body
//! matching its schema, 401 without the token, 405 for undocumented methods), and the
//! document's links followed (create, then read, change and delete what was created).
//!
//! schemathesis places calls (`POST /calls`, campaigns) to whatever targets it makes up, so
//! voxline and schemathesis run in a network namespace of their own, with only a loopback:
//! nothing it dials leaves the machine. The exceptions to the checks are in
//! `tests/api/schemathesis.toml`, each with its reason.

use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{VoxlineProcess, http_request};

const TOKEN: &str = "schemathesis-test-token";

/// The port voxline's API listens on inside the namespace (the namespace's own loopback:
/// nothing else is there).
const NS_HTTP_PORT: u16 = 18080;

/// Test cases per operation and phase; the seed keeps a run reproducible.
const MAX_EXAMPLES: &str = "40";
const SEED: &str = "20261204";

fn document(vox: &VoxlineProcess) -> serde_json::Value {
    let (code, body) = http_request(
        vox.http_addr(),
        "GET",
        "/openapi.json",
        None,
        Duration::from_secs(5),
    )
    .expect("GET /openapi.json");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("the document is JSON")
}

fn operations(doc: &serde_json::Value) -> Vec<(String, String, &serde_json::Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((method.to_uppercase(), path.clone(), op));
        }
    }
    out
}

#[test]
fn the_document_is_openapi_3_1_and_names_every_operation_once() {
    let vox = VoxlineProcess::spawn_with_env(
        "[http]\ntoken_env = \"VOXLINE_TEST_TOKEN\"\n",
        &[("VOXLINE_TEST_TOKEN", TOKEN)],
    );
    let doc = document(&vox);
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    // Every route of the API (GET /sip, a WebSocket, is the one left out).
    for (method, path) in [
        ("GET", "/health"),
        ("POST", "/drain"),
        ("GET", "/calls"),
        ("POST", "/calls"),
        ("GET", "/calls/{id}"),
        ("POST", "/calls/{id}/hangup"),
        ("POST", "/calls/{id}/dtmf"),
        ("POST", "/calls/{id}/transfer"),
        ("GET", "/records"),
        ("GET", "/records/{id}/recording"),
        ("GET", "/analytics"),
        ("GET", "/events"),
        ("POST", "/console/login"),
        ("GET", "/console/session"),
        ("POST", "/console/logout"),
        ("GET", "/"),
        ("GET", "/console/app.js"),
        ("GET", "/console/login.js"),
        ("GET", "/console/console.css"),
        ("GET", "/metrics"),
        ("GET", "/agents"),
        ("POST", "/agents"),
        ("GET", "/agents/{name}"),
        ("PUT", "/agents/{name}"),
        ("DELETE", "/agents/{name}"),
        ("GET", "/routes"),
        ("PUT", "/routes/{number}"),
        ("DELETE", "/routes/{number}"),
        ("GET", "/webhooks/endpoints"),
        ("POST", "/webhooks/endpoints"),
        ("DELETE", "/webhooks/endpoints/{name}"),
        ("GET", "/webhooks/deliveries"),
        ("GET", "/webhooks/deliveries/{id}"),
        ("POST", "/webhooks/deliveries/{id}/redeliver"),
        ("GET", "/memory/{number}"),
        ("DELETE", "/memory/{number}"),
        ("GET", "/campaigns"),
        ("POST", "/campaigns"),
        ("GET", "/campaigns/{id}"),
        ("POST", "/campaigns/{id}/pause"),
        ("POST", "/campaigns/{id}/resume"),
        ("POST", "/campaigns/{id}/cancel"),
        ("GET", "/phone"),
        ("GET", "/phone/config.json"),
        ("GET", "/phone/transcript"),
    ] {
        assert!(
            ops.iter().any(|(m, p, _)| m == method && p == path),
            "{method} {path} is not in the document"
        );
    }
    assert_eq!(ops.len(), 45, "an operation the list above does not know");
    // operationId is unique (OpenAPI 3.1 §4.8.10), and every link names one.
    let ids: Vec<&str> = ops
        .iter()
        .map(|(m, p, op)| {
            op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{m} {p} has no operationId"))
        })
        .collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "repeated operationId: {ids:?}");
    let mut links = 0;
    for (m, p, op) in &ops {
        for (status, response) in op["responses"].as_object().expect("responses") {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                let target = link["operationId"].as_str().unwrap_or_else(|| {
                    panic!("{m} {p} {status}: link {name} has no operationId: {link}")
                });
                assert!(unique.contains(target), "{m} {p}: link to {target}");
                links += 1;
            }
        }
    }
    assert!(links >= 10, "{links} links");
    // With a token: the bearer scheme or a console session (its cookie), required
    // everywhere but the public operations.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["session"]["name"],
        "voxline_session"
    );
    assert_eq!(
        doc["paths"]["/calls"]["get"]["security"],
        serde_json::json!([{"bearer": []}, {"session": []}])
    );
    for (m, p, op) in &ops {
        // The console's login and session judge the secret and the cookie themselves (and
        // say 401 for their own reasons).
        let console =
            ["/console/login", "/console/session", "/console/logout"].contains(&p.as_str());
        // The pages before a login: the login page (`/` without a session), its script and
        // the style sheet. The console's own script needs a session.
        let page = ["/", "/console/login.js", "/console/console.css"].contains(&p.as_str());
        let public = p == "/health" || p.starts_with("/phone") || console || page;
        assert_eq!(op.get("security").is_none(), public, "{m} {p}");
        if !console {
            assert_eq!(op["responses"].get("401").is_none(), public, "{m} {p}");
        }
    }
    // The error body every error answer has.
    assert_eq!(
        doc["components"]["schemas"]["ErrorBody"]["required"],
        serde_json::json!(["error"])
    );
}

#[test]
fn without_a_token_the_document_asks_for_none() {
    let vox = VoxlineProcess::spawn("[http]\nrate_limit_per_s = 0\n");
    let doc = document(&vox);
    assert!(doc["components"].get("securitySchemes").is_none(), "{doc}");
    for (m, p, op) in operations(&doc) {
        assert!(op.get("security").is_none(), "{m} {p}");
        if !p.starts_with("/console") {
            assert!(op["responses"].get("401").is_none(), "{m} {p}");
        }
        // No rate limit: no 429 either.
        assert!(op["responses"].get("429").is_none(), "{m} {p}");
    }
}

/// `unshare` for a new network namespace: as root directly, otherwise in a user namespace
/// of its own (where the caller is root).
fn unshare_net() -> Command {
    let mut cmd = Command::new("unshare");
    // The effective uid, from /proc.
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        cmd.args(["--user", "--map-root-user"]);
    }
    cmd.arg("--net");
    cmd
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_off_its_schema() {
    let dir = tempfile::Builder::new()
        .prefix("voxline-schemathesis-")
        .tempdir()
        .expect("tempdir");
    let d = dir.path();
    let config = d.join("voxline.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{data}\"\n\
             [sip]\nudp_listen = [\"127.0.0.1:15060\"]\ntcp_listen = []\n\
             [http]\nlisten = \"127.0.0.1:{NS_HTTP_PORT}\"\ntoken_env = \"VOXLINE_TEST_TOKEN\"\n\
             rate_limit_per_s = 0\n",
            data = d.join("data").display()
        ),
    )
    .expect("write config");
    let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/schemathesis.toml");
    // Inside the namespace: the loopback up, voxline started, schemathesis run against it,
    // voxline stopped; the script's exit status is schemathesis'.
    let script = r#"
        ip link set lo up || exit 90
        "$VOXLINE" run --config "$CONFIG" > "$DIR/voxline.log" 2>&1 &
        vox=$!
        st --config-file "$SETTINGS" run "http://127.0.0.1:$PORT/openapi.json" \
            -H "Authorization: Bearer $VOXLINE_TEST_TOKEN" \
            --wait-for-schema 30 --max-examples "$MAX_EXAMPLES" --seed "$SEED" \
            --workers 2 --no-color --generation-database none > "$DIR/st.log" 2>&1
        rc=$?
        kill "$vox"
        wait "$vox"
        exit $rc
    "#;
    let status = unshare_net()
        .args(["sh", "-c", script])
        .current_dir(d)
        .env("VOXLINE", env!("CARGO_BIN_EXE_voxline"))
        .env("CONFIG", &config)
        .env("DIR", d)
        .env("SETTINGS", &settings)
        .env("PORT", NS_HTTP_PORT.to_string())
        .env("MAX_EXAMPLES", MAX_EXAMPLES)
        .env("SEED", SEED)
        .env("VOXLINE_TEST_TOKEN", TOKEN)
        .env("VOXLINE_LOG", "info")
        .status()
        .expect("unshare (util-linux) runs");
    let st_log = std::fs::read_to_string(d.join("st.log")).unwrap_or_default();
    let vox_log = std::fs::read_to_string(d.join("voxline.log")).unwrap_or_default();
    assert_ne!(
        status.code(),
        Some(90),
        "cannot bring the namespace's loopback up (apt-get install iproute2)"
    );
    assert!(
        !st_log.is_empty(),
        "schemathesis did not run (python3 -m pip install schemathesis): {status}"
    );
    assert!(
        status.success(),
        "schemathesis failed ({status}):\n{st_log}\n--- voxline's log (end):\n{}",
        tail(&vox_log, 60)
    );
    // It really tested: every phase ran and many cases passed.
    assert!(st_log.contains("Tested: 43"), "{st_log}");
    assert!(!vox_log.contains("panicked"), "{vox_log}");
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
