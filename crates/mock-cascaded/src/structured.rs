//! Non-streaming chat completions with Structured Outputs (`response_format` of type
//! `json_schema`), as OpenAI's server answers them.
//!
//! Checks, with OpenAI's wording where it has one:
//! - `response_format.type` is `text`, `json_object` or `json_schema`;
//! - `json_schema.name` is 1 to 64 of `[A-Za-z0-9_-]` and `json_schema.schema` an object;
//! - with `strict: true`, the schema must be what strict mode supports: the root an object,
//!   every object with `"additionalProperties": false` and every property in `required`
//!   ("Invalid schema for response_format '…': In context=(…), …").
//!
//! The answer is a `chat.completion` whose `message.content` is a JSON text matching the
//! schema: for each property the value the test scripted ([`AnalysisReply::Fill`]) or, if
//! none, one made from the schema (the first `enum` value, an empty string, 0, false, an
//! empty array, null where allowed); a property named `summary` of type string gets the
//! first caller line of the transcript ("The caller said: …"). A scripted value that does
//! not match its property's schema is a mock error (HTTP 500), so a test cannot pass with
//! an answer the real model could not give. [`AnalysisReply::Refuse`] answers with
//! `message.refusal`, [`AnalysisReply::Status`] with an error status.

use serde_json::{Map, Value, json};

/// One scripted answer to a Structured Outputs request.
#[derive(Debug, Clone)]
pub enum AnalysisReply {
    /// Answer with these values for the named top-level properties (nested objects: give
    /// the whole object), the rest made from the schema.
    Fill(Map<String, Value>),
    /// Refuse (`message.refusal`, `content` null).
    Refuse(String),
    /// Answer this HTTP status with an OpenAI error body.
    Status(u16),
}

/// The first thing wrong with `response_format`, as OpenAI words it.
pub(crate) fn check_response_format(body: &Value) -> Result<(), String> {
    let Some(rf) = body.get("response_format") else {
        return Ok(());
    };
    let kind = rf.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" | "json_object" => return Ok(()),
        "json_schema" => {}
        other => {
            return Err(format!(
                "Invalid value: '{other}'. Supported values are: 'json_object', 'json_schema', and 'text'."
            ));
        }
    }
    let js = rf
        .get("json_schema")
        .ok_or("Missing required parameter: 'response_format.json_schema'.")?;
    let name = js.get("name").and_then(Value::as_str).unwrap_or("");
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(format!(
            "Invalid 'response_format.json_schema.name': string does not match pattern. Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'. (got {name:?})"
        ));
    }
    let schema = match js.get("schema") {
        Some(s) if s.is_object() => s,
        _ => {
            return Err("Invalid 'response_format.json_schema.schema': expected an object.".into());
        }
    };
    if js.get("strict") == Some(&Value::Bool(true)) {
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(format!(
                "Invalid schema for response_format '{name}': schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{}\"'.",
                schema.get("type").and_then(Value::as_str).unwrap_or("none")
            ));
        }
        check_strict(schema, &[])
            .map_err(|m| format!("Invalid schema for response_format '{name}': {m}"))?;
    }
    Ok(())
}

fn context(path: &[String]) -> String {
    path.iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_strict(s: &Value, path: &[String]) -> Result<(), String> {
    let is_object = match s.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => false,
    };
    if is_object {
        if s.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Err(format!(
                "In context=({}), 'additionalProperties' is required to be supplied and to be false.",
                context(path)
            ));
        }
        let props = s
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let required: Vec<&str> = s
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(missing) = props.keys().find(|k| !required.contains(&k.as_str())) {
            return Err(format!(
                "In context=({}), 'required' is required to be supplied and to be an array including every key in properties. Missing '{missing}'.",
                context(path)
            ));
        }
        for (k, sub) in &props {
            let mut p = path.to_vec();
            p.push("properties".into());
            p.push(k.clone());
            check_strict(sub, &p)?;
        }
    }
    if let Some(items) = s.get("items") {
        let mut p = path.to_vec();
        p.push("items".into());
        check_strict(items, &p)?;
    }
    if let Some(Value::Array(alts)) = s.get("anyOf") {
        for (i, alt) in alts.iter().enumerate() {
            let mut p = path.to_vec();
            p.push("anyOf".into());
            p.push(i.to_string());
            check_strict(alt, &p)?;
        }
    }
    Ok(())
}

/// The schema of a `json_schema` request.
pub(crate) fn schema_of(body: &Value) -> Option<&Value> {
    body.pointer("/response_format/json_schema/schema")
}

/// The first caller line of the user messages' transcript, if any.
fn first_caller_line(body: &Value) -> Option<String> {
    body.get("messages")?
        .as_array()?
        .iter()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str())
        .flat_map(str::lines)
        .find_map(|l| l.strip_prefix("Caller: ").map(str::to_owned))
}

/// An instance of `schema` (see the module docs), `fill` giving top-level values.
pub(crate) fn answer(
    body: &Value,
    schema: &Value,
    fill: &Map<String, Value>,
) -> Result<Value, String> {
    let mut out = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, sub) in &props {
        let v = match fill.get(k) {
            Some(v) => {
                if let Err(e) = matches(sub, v) {
                    return Err(format!(
                        "the scripted value of {k} does not match its schema: {e}"
                    ));
                }
                v.clone()
            }
            None if k == "summary" && sub["type"] == "string" => Value::String(
                first_caller_line(body)
                    .map(|l| format!("The caller said: {l}"))
                    .unwrap_or_else(|| "Nobody said anything.".into()),
            ),
            None => made_up(sub),
        };
        out.insert(k.clone(), v);
    }
    Ok(Value::Object(out))
}

fn made_up(s: &Value) -> Value {
    if let Some(Value::Array(e)) = s.get("enum")
        && let Some(first) = e.first()
    {
        return first.clone();
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if types.contains(&"null") {
        return Value::Null;
    }
    match types.first().copied() {
        Some("string") => json!(""),
        Some("number") | Some("integer") => json!(0),
        Some("boolean") => json!(false),
        Some("array") => json!([]),
        Some("object") => {
            let mut m = Map::new();
            for (k, sub) in s
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                m.insert(k.clone(), made_up(sub));
            }
            Value::Object(m)
        }
        _ => Value::Null,
    }
}

/// Whether `v` matches `s` (types, enum, required, additionalProperties, items).
fn matches(s: &Value, v: &Value) -> Result<(), String> {
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_ok = types.is_empty()
        || types.iter().any(|t| match *t {
            "string" => v.is_string(),
            "number" => v.is_number(),
            "integer" => v.is_i64() || v.is_u64(),
            "boolean" => v.is_boolean(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            "null" => v.is_null(),
            _ => false,
        });
    if !type_ok {
        return Err(format!("{v} is not {}", types.join(" or ")));
    }
    if let Some(Value::Array(e)) = s.get("enum")
        && !e.contains(v)
    {
        return Err(format!("{v} is not in the enum"));
    }
    if let Value::Object(o) = v {
        let props = s.get("properties").and_then(Value::as_object);
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !o.contains_key(r) {
                return Err(format!("{r} is missing"));
            }
        }
        for (k, sub) in o {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => matches(ps, sub)?,
                None => return Err(format!("{k} is not a property")),
            }
        }
    }
    if let (Value::Array(items), Some(is)) = (v, s.get("items")) {
        for i in items {
            matches(is, i)?;
        }
    }
    Ok(())
}

/// A `chat.completion` object.
pub(crate) fn completion(model: &str, content: Option<String>, refusal: Option<String>) -> Value {
    json!({
        "id": "chatcmpl-mock-structured",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": refusal},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    })
}
