//! Post-call analysis: a finished call's transcript goes to an OpenAI-compatible chat model
//! with a JSON schema (Structured Outputs, `response_format: {"type": "json_schema", …}` in
//! strict mode), and the answer is a summary plus the agent's outcome fields (a case number,
//! the next step, whether the caller was satisfied…).
//!
//! This module knows nothing of SIP or records: it takes the conversation as
//! [`HistoryItem`]s and returns an [`Analysis`] or an [`AnalysisError`]. The call layer runs
//! it after the call and stores the result.
//!
//! The request is one non-streaming `POST {url}/chat/completions`. The model's answer
//! (`choices[0].message.content`, a JSON text) is checked against the schema here too,
//! since an OpenAI-compatible server that does not enforce the schema may answer anything;
//! a `refusal` or a reply cut at the token limit (`finish_reason: "length"`) is an error.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::backend::{HistoryItem, Role};
use super::cascaded::chat::{ChatConfig, LlmError, error_message, without_url};

/// The name of the response format sent to the model (`json_schema.name`: `[A-Za-z0-9_-]`,
/// at most 64 characters).
pub const SCHEMA_NAME: &str = "call_analysis";

/// The default instructions given to the analysis model.
pub const DEFAULT_ANALYSIS_INSTRUCTIONS: &str = "You analyse a finished phone call between a \
    caller and an AI agent. Write `summary`: two or three sentences a colleague could read \
    before the caller's next call (who called, what they wanted, what was agreed). Fill \
    `outcome` from what was actually said; never invent a value.";

/// The default limit for the whole analysis request.
pub const DEFAULT_ANALYSIS_TIMEOUT: Duration = Duration::from_secs(30);

/// The most characters of transcript sent (the end of a longer call is kept: it holds the
/// outcome).
pub const MAX_TRANSCRIPT_CHARS: usize = 48_000;

/// How one agent's calls are analysed.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisConfig {
    /// The model and where to reach it (`stream` is not used; `timeout` bounds the whole
    /// request).
    pub chat: ChatConfig,
    /// The system instructions.
    pub instructions: String,
    /// The outcome's JSON schema (an object schema, made strict with [`strict_schema`]);
    /// `None`: a summary only.
    pub outcome_schema: Option<Value>,
}

// The temperature is a setting, never NaN: equality is total.
impl Eq for AnalysisConfig {}

/// What the model made of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// A short summary of the call.
    pub summary: String,
    /// The outcome fields, matching the schema (`None` without a schema).
    pub outcome: Option<Value>,
}

/// Why an analysis failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnalysisError {
    /// The request failed (connection, timeout, HTTP status).
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// The model refused to answer (`message.refusal`).
    #[error("the model refused: {0}")]
    Refused(String),
    /// The answer was cut at the token limit (`finish_reason: "length"`).
    #[error("the answer was cut at the model's token limit")]
    Truncated,
    /// The answer is not what the schema asks for.
    #[error("the answer does not match the schema: {0}")]
    Invalid(String),
    /// There was nothing to analyse (no one said anything).
    #[error("the call has no transcript to analyse")]
    Empty,
}

impl AnalysisError {
    /// Whether trying again later may succeed (a connection failure, a timeout, 429 or a
    /// 5xx status).
    pub fn is_transient(&self) -> bool {
        match self {
            AnalysisError::Llm(LlmError::Connect(_) | LlmError::Timeout(_)) => true,
            AnalysisError::Llm(LlmError::RateLimited { .. }) => true,
            AnalysisError::Llm(LlmError::Http { status, .. }) => *status >= 500,
            _ => false,
        }
    }
}

/// Makes an object schema fit Structured Outputs' strict mode: every object gets
/// `"additionalProperties": false` and lists all its properties in `required` where it did
/// not say otherwise. Errors say where the schema cannot be strict (`additionalProperties`
/// true, a property left out of `required`, an object without `properties`, a top level
/// that is not an object), with the location (`.field.sub`).
pub fn strict_schema(schema: &Value) -> Result<Value, String> {
    let mut s = schema.clone();
    if s.get("type").and_then(Value::as_str) != Some("object") {
        return Err("the top level must be an object schema (\"type\": \"object\")".into());
    }
    make_strict(&mut s, "")?;
    Ok(s)
}

fn make_strict(s: &mut Value, path: &str) -> Result<(), String> {
    let Some(obj) = s.as_object_mut() else {
        return Err(format!("{}: a schema must be an object", show(path)));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("object") => {
            let props = match obj.get_mut("properties") {
                Some(Value::Object(p)) => p,
                _ => {
                    return Err(format!(
                        "{}: an object needs \"properties\" in strict mode",
                        show(path)
                    ));
                }
            };
            let names: Vec<String> = props.keys().cloned().collect();
            for (name, sub) in props.iter_mut() {
                make_strict(sub, &format!("{path}.{name}"))?;
            }
            match obj.get("additionalProperties") {
                None => {
                    obj.insert("additionalProperties".into(), Value::Bool(false));
                }
                Some(Value::Bool(false)) => {}
                Some(_) => {
                    return Err(format!(
                        "{}: \"additionalProperties\" must be false in strict mode",
                        show(path)
                    ));
                }
            }
            match obj.get("required") {
                None => {
                    obj.insert("required".into(), json!(names));
                }
                Some(Value::Array(req)) => {
                    if let Some(missing) = names.iter().find(|n| !req.iter().any(|r| r == *n)) {
                        return Err(format!(
                            "{}: \"{missing}\" must be in \"required\" in strict mode (use a \
                             type that allows null for an optional field)",
                            show(path)
                        ));
                    }
                }
                Some(_) => return Err(format!("{}: \"required\" must be an array", show(path))),
            }
        }
        Some("array") => {
            if let Some(items) = obj.get_mut("items") {
                make_strict(items, &format!("{path}[]"))?;
            }
        }
        _ => {}
    }
    if let Some(Value::Array(alts)) = obj.get_mut("anyOf") {
        for (i, alt) in alts.iter_mut().enumerate() {
            make_strict(alt, &format!("{path}.anyOf[{i}]"))?;
        }
    }
    Ok(())
}

fn show(path: &str) -> &str {
    if path.is_empty() { "the schema" } else { path }
}

/// The schema the model answers: `summary` (a string) and, with an outcome schema,
/// `outcome`.
pub fn response_schema(outcome: Option<&Value>) -> Value {
    let mut props = Map::new();
    props.insert(
        "summary".into(),
        json!({"type": "string", "description": "A short summary of the call."}),
    );
    let mut required = vec!["summary"];
    if let Some(o) = outcome {
        props.insert("outcome".into(), o.clone());
        required.push("outcome");
    }
    json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    })
}

/// The transcript as the model reads it: one `Caller: …` or `Agent: …` line per utterance,
/// the end kept when it is longer than [`MAX_TRANSCRIPT_CHARS`].
pub fn transcript_text(items: &[HistoryItem]) -> String {
    let mut lines: Vec<String> = items
        .iter()
        .filter(|i| !i.text.trim().is_empty())
        .map(|i| {
            let who = match i.role {
                Role::Caller => "Caller",
                Role::Agent => "Agent",
            };
            format!("{who}: {}", i.text.trim())
        })
        .collect();
    let mut total: usize = lines.iter().map(|l| l.len() + 1).sum();
    let mut cut = 0;
    while total > MAX_TRANSCRIPT_CHARS && cut < lines.len() {
        total -= lines[cut].len() + 1;
        cut += 1;
    }
    if cut > 0 {
        lines.drain(..cut);
        lines.insert(0, "[the start of the call is left out]".into());
    }
    lines.join("\n")
}

/// The request body: the instructions, the transcript, and the strict response format.
pub fn request_body(cfg: &AnalysisConfig, transcript: &str) -> Value {
    let mut body = json!({
        "model": cfg.chat.model,
        "messages": [
            {"role": "system", "content": cfg.instructions},
            {"role": "user", "content": format!("The call's transcript:\n\n{transcript}")},
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": SCHEMA_NAME,
                "strict": true,
                "schema": response_schema(cfg.outcome_schema.as_ref()),
            }
        },
    });
    if let Some(t) = cfg.chat.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = cfg.chat.max_tokens {
        body["max_tokens"] = json!(m);
    }
    body
}

/// Analyses one call's conversation.
pub async fn analyze(
    client: &reqwest::Client,
    cfg: &AnalysisConfig,
    conversation: &[HistoryItem],
) -> Result<Analysis, AnalysisError> {
    let transcript = transcript_text(conversation);
    if transcript.is_empty() {
        return Err(AnalysisError::Empty);
    }
    let body = request_body(cfg, &transcript);
    let text = post(client, &cfg.chat, &body).await?;
    parse_response(&text, cfg.outcome_schema.as_ref())
}

async fn post(
    client: &reqwest::Client,
    cfg: &ChatConfig,
    body: &Value,
) -> Result<String, LlmError> {
    let timeout_ms = u64::try_from(cfg.timeout.as_millis()).unwrap_or(u64::MAX);
    let url = format!("{}/chat/completions", cfg.url.trim_end_matches('/'));
    let mut req = client.post(&url).json(body);
    if let Some(key) = &cfg.api_key {
        req = req.bearer_auth(key.expose());
    }
    let exchange = async {
        let resp = req
            .send()
            .await
            .map_err(|e| LlmError::Connect(without_url(&e)))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| LlmError::Connect(without_url(&e)))?;
        if status != 200 {
            let message = error_message(&text);
            return Err(match status {
                401 | 403 => LlmError::Unauthorized { status, message },
                429 => LlmError::RateLimited { message },
                _ => LlmError::Http { status, message },
            });
        }
        Ok(text)
    };
    tokio::time::timeout(cfg.timeout, exchange)
        .await
        .map_err(|_| LlmError::Timeout(timeout_ms))?
}

/// Reads a chat completion's answer: `choices[0].message` with a refusal, or a JSON
/// `content` that must match [`response_schema`].
pub fn parse_response(
    text: &str,
    outcome_schema: Option<&Value>,
) -> Result<Analysis, AnalysisError> {
    let protocol = |m: String| AnalysisError::Llm(LlmError::Protocol(m));
    let v: Value =
        serde_json::from_str(text).map_err(|e| protocol(format!("the answer is not JSON: {e}")))?;
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| protocol("the answer has no choices".into()))?;
    let message = choice
        .get("message")
        .ok_or_else(|| protocol("the choice has no message".into()))?;
    if let Some(r) = message.get("refusal").and_then(Value::as_str) {
        return Err(AnalysisError::Refused(r.to_owned()));
    }
    if choice.get("finish_reason").and_then(Value::as_str) == Some("length") {
        return Err(AnalysisError::Truncated);
    }
    let content = message
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| protocol("the message has no content".into()))?;
    let answer: Value = serde_json::from_str(content)
        .map_err(|e| AnalysisError::Invalid(format!("the content is not JSON: {e}")))?;
    let schema = response_schema(outcome_schema);
    check_instance(&schema, &answer, "").map_err(AnalysisError::Invalid)?;
    let summary = answer
        .get("summary")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .to_owned();
    Ok(Analysis {
        summary,
        outcome: answer.get("outcome").cloned(),
    })
}

/// Checks `v` against the parts of JSON Schema that Structured Outputs uses: `type` (one or
/// a list), `enum`, `const`, `properties`, `required`, `additionalProperties: false`,
/// `items` and `anyOf`.
pub fn check_instance(schema: &Value, v: &Value, path: &str) -> Result<(), String> {
    let at = || {
        if path.is_empty() {
            "the answer".to_owned()
        } else {
            path.to_owned()
        }
    };
    if let Some(Value::Array(alts)) = schema.get("anyOf") {
        if alts.iter().any(|a| check_instance(a, v, path).is_ok()) {
            return Ok(());
        }
        return Err(format!("{} matches none of anyOf", at()));
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| type_matches(t, v)) {
            return Err(format!("{} must be {}", at(), types.join(" or ")));
        }
    }
    if let Some(Value::Array(options)) = schema.get("enum")
        && !options.contains(v)
    {
        return Err(format!("{} is not one of the allowed values", at()));
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        return Err(format!("{} must be {c}", at()));
    }
    if let Value::Object(obj) = v {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(req)) = schema.get("required") {
            for r in req.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    return Err(format!("{}.{r} is missing", at()));
                }
            }
        }
        for (k, sub) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check_instance(s, sub, &format!("{path}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{}.{k} is not in the schema", at()));
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (v, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check_instance(s, item, &format!("{path}[{i}]"))?;
        }
    }
    Ok(())
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Value {
        json!({
            "type": "object",
            "properties": {
                "case_number": {"type": ["string", "null"]},
                "resolved": {"type": "boolean"},
                "next_step": {"type": "string", "enum": ["callback", "none"]}
            }
        })
    }

    #[test]
    fn strict_schema_fills_required_and_additional_properties() {
        let s = strict_schema(&outcome()).unwrap();
        assert_eq!(s["additionalProperties"], json!(false));
        let req: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(req, ["case_number", "next_step", "resolved"]);
    }

    #[test]
    fn strict_schema_refuses_what_strict_mode_cannot_do() {
        let mut s = outcome();
        s["required"] = json!(["resolved"]);
        let e = strict_schema(&s).unwrap_err();
        assert!(e.contains("\"case_number\" must be in \"required\""), "{e}");
        let e = strict_schema(&json!({"type": "string"})).unwrap_err();
        assert!(e.contains("top level"), "{e}");
        let e = strict_schema(&json!({"type": "object", "properties": {"a": {"type": "object"}}}))
            .unwrap_err();
        assert!(e.contains(".a: an object needs"), "{e}");
        let e = strict_schema(
            &json!({"type": "object", "properties": {}, "additionalProperties": true}),
        )
        .unwrap_err();
        assert!(e.contains("additionalProperties"), "{e}");
    }

    #[test]
    fn answers_are_checked_against_the_schema() {
        let schema = strict_schema(&outcome()).unwrap();
        let ok = json!({"choices": [{"finish_reason": "stop", "message": {"role": "assistant",
            "content": "{\"summary\":\"Bob asked about his order.\",\"outcome\":{\"case_number\":\"C-17\",\"resolved\":true,\"next_step\":\"none\"}}"}}]});
        let a = parse_response(&ok.to_string(), Some(&schema)).unwrap();
        assert_eq!(a.summary, "Bob asked about his order.");
        assert_eq!(a.outcome.unwrap()["case_number"], "C-17");

        let bad = |content: &str| {
            json!({"choices": [{"finish_reason": "stop", "message": {"content": content}}]})
                .to_string()
        };
        for (content, expect) in [
            ("{\"summary\":\"x\"}", ".outcome is missing"),
            (
                "{\"summary\":\"x\",\"outcome\":{\"case_number\":1,\"resolved\":true,\"next_step\":\"none\"}}",
                ".outcome.case_number must be string or null",
            ),
            (
                "{\"summary\":\"x\",\"outcome\":{\"case_number\":null,\"resolved\":true,\"next_step\":\"later\"}}",
                "not one of the allowed values",
            ),
            (
                "{\"summary\":\"x\",\"extra\":1,\"outcome\":{\"case_number\":null,\"resolved\":true,\"next_step\":\"none\"}}",
                ".extra is not in the schema",
            ),
            ("not json", "not JSON"),
        ] {
            match parse_response(&bad(content), Some(&schema)) {
                Err(AnalysisError::Invalid(m)) => assert!(m.contains(expect), "{m}"),
                other => panic!("{content}: {other:?}"),
            }
        }
    }

    #[test]
    fn refusals_and_truncation_are_errors() {
        let refused = json!({"choices": [{"finish_reason": "stop", "message": {"content": null, "refusal": "I can't help with that."}}]});
        assert_eq!(
            parse_response(&refused.to_string(), None),
            Err(AnalysisError::Refused("I can't help with that.".into()))
        );
        let cut =
            json!({"choices": [{"finish_reason": "length", "message": {"content": "{\"summ"}}]});
        assert_eq!(
            parse_response(&cut.to_string(), None),
            Err(AnalysisError::Truncated)
        );
    }

    #[test]
    fn long_transcripts_keep_their_end() {
        let items: Vec<HistoryItem> = (0..2000)
            .map(|i| HistoryItem {
                role: if i % 2 == 0 {
                    Role::Caller
                } else {
                    Role::Agent
                },
                text: format!("utterance number {i} with some padding words"),
            })
            .collect();
        let t = transcript_text(&items);
        assert!(t.len() <= MAX_TRANSCRIPT_CHARS + 64);
        assert!(t.starts_with("[the start of the call is left out]"));
        assert!(t.ends_with("Agent: utterance number 1999 with some padding words"));
    }
}
