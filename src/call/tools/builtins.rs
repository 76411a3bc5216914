//! The built-in tools: `hang_up`, `transfer_call`, `send_dtmf` and `remember` — their specs for the model
//! and the checks that turn a model's call into a [`ToolRequest`].

use super::*;

/// Turns a tool call into a [`ToolRequest`]. A name the agent does not offer (including a
/// built-in that is disabled) gives [`ToolRequest::Unknown`]; bad arguments, or a transfer
/// target outside a non-empty allow-list, give an error. `arguments` may be the arguments
/// object, or a JSON string holding it (some models send that); an empty string or `null`
/// counts as no arguments.
pub fn parse_request(
    tools: &AgentTools,
    name: &str,
    arguments: &Value,
) -> Result<ToolRequest, ToolError> {
    if name == HANG_UP && tools.hang_up {
        let args = normalize_arguments(HANG_UP, arguments)?;
        let reason = match args.get("reason") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.trim().to_owned()),
            // A reason of another type still ends the call: keep its JSON text.
            Some(other) => Some(other.to_string()),
        }
        .filter(|r| !r.is_empty())
        .map(|r| cut_at_char_boundary(&r, MAX_REASON_LEN).to_owned());
        return Ok(ToolRequest::HangUp { reason });
    }
    if name == TRANSFER_CALL
        && let Some(policy) = tools.offered_transfer()
    {
        let args = normalize_arguments(TRANSFER_CALL, arguments)?;
        let target = required_string(TRANSFER_CALL, &args, "target")?;
        let uri = policy.resolve(target)?;
        return Ok(ToolRequest::Transfer { uri });
    }
    if name == SEND_DTMF && tools.send_dtmf {
        let args = normalize_arguments(SEND_DTMF, arguments)?;
        let digits = parse_digits(required_string(SEND_DTMF, &args, "digits")?)?;
        return Ok(ToolRequest::SendDtmf { digits });
    }
    if name == REMEMBER && tools.remember {
        let args = normalize_arguments(REMEMBER, arguments)?;
        let fact = required_string(REMEMBER, &args, "fact")?.trim();
        if fact.is_empty() {
            return Err(invalid(REMEMBER, "\"fact\" is empty"));
        }
        if fact.len() > MAX_FACT_LEN {
            return Err(invalid(
                REMEMBER,
                format!("\"fact\" is longer than {MAX_FACT_LEN} bytes: keep it short"),
            ));
        }
        return Ok(ToolRequest::Remember {
            fact: fact.to_owned(),
        });
    }
    if let Some(tool) = tools.http_tool(name)
        && !RESERVED_NAMES.contains(&name)
    {
        normalize_arguments(&tool.name, arguments)?;
        return Ok(ToolRequest::Http(tool.name.clone()));
    }
    Ok(ToolRequest::Unknown(name.to_owned()))
}

/// The arguments object of a tool call: `arguments` itself when it is an object, the object
/// a JSON string holds, or an empty object for `null` or an empty string. Anything else is
/// [`ToolError::InvalidArguments`].
pub fn normalize_arguments(tool: &str, arguments: &Value) -> Result<Map<String, Value>, ToolError> {
    match arguments {
        Value::Object(map) => Ok(map.clone()),
        Value::Null => Ok(Map::new()),
        Value::String(text) if text.trim().is_empty() => Ok(Map::new()),
        Value::String(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(invalid(tool, "the arguments must be a JSON object")),
            Err(e) => Err(invalid(
                tool,
                format!("the arguments are not valid JSON: {e}"),
            )),
        },
        _ => Err(invalid(tool, "the arguments must be a JSON object")),
    }
}

/// Parses DTMF keys: `0`-`9`, `*`, `#`, `A`-`D` (lower case accepted); spaces and `-` between
/// keys are ignored. Between 1 and [`MAX_DTMF_DIGITS`] keys.
pub fn parse_digits(text: &str) -> Result<Vec<Digit>, ToolError> {
    let mut digits = Vec::new();
    for c in text.chars() {
        if c.is_whitespace() || c == '-' {
            continue;
        }
        let digit = Digit::from_char(c).ok_or_else(|| {
            invalid(
                SEND_DTMF,
                format!("'{c}' is not a phone key (use 0-9, *, #, A-D)"),
            )
        })?;
        if digits.len() == MAX_DTMF_DIGITS {
            return Err(invalid(
                SEND_DTMF,
                format!("at most {MAX_DTMF_DIGITS} keys per call"),
            ));
        }
        digits.push(digit);
    }
    if digits.is_empty() {
        return Err(invalid(SEND_DTMF, "\"digits\" has no keys"));
    }
    Ok(digits)
}

pub(super) fn required_string<'a>(
    tool: &str,
    args: &'a Map<String, Value>,
    key: &str,
) -> Result<&'a str, ToolError> {
    match args.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(tool, format!("\"{key}\" must be a string"))),
        None => Err(invalid(tool, format!("\"{key}\" is missing"))),
    }
}

/// Why `uri` cannot be a transfer target (a number or a URI), if it cannot: whitespace,
/// control characters, or characters that would break out of a `Refer-To` header.
pub(super) fn uri_problem(uri: &str) -> Option<&'static str> {
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains spaces or control characters")
    } else if uri.contains(['<', '>', '"']) {
        Some("contains < > or \"")
    } else {
        None
    }
}

pub(super) fn hang_up_spec() -> ToolSpec {
    ToolSpec {
        name: HANG_UP.to_owned(),
        description: "End the call. Say a short goodbye before calling this.".to_owned(),
        parameters: json!({
            "type": "object",
            "properties": {
                "reason": {
                    "type": "string",
                    "description": "Why the call ends, in a few words (for the call log)."
                }
            },
            "required": []
        }),
    }
}

pub(super) fn transfer_spec(policy: &TransferPolicy) -> ToolSpec {
    let intro = "Transfer the caller to another person or department. Tell the caller you are \
                 transferring them before calling this; your part of the call ends once the \
                 transfer is accepted.";
    if policy.targets.is_empty() {
        return ToolSpec {
            name: TRANSFER_CALL.to_owned(),
            description: intro.to_owned(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "target": {
                        "type": "string",
                        "description": "The phone number or SIP URI to transfer the caller to."
                    }
                },
                "required": ["target"]
            }),
        };
    }
    let listed: Vec<String> = policy
        .targets
        .iter()
        .map(|t| format!("\"{}\" ({})", t.name, t.uri))
        .collect();
    let labels: Vec<&str> = policy.targets.iter().map(|t| t.name.as_str()).collect();
    ToolSpec {
        name: TRANSFER_CALL.to_owned(),
        description: format!(
            "{intro} Only these targets are possible: {}.",
            listed.join(", ")
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "target": {
                    "type": "string",
                    "enum": labels,
                    "description": "Where to transfer the caller: one of the allowed targets."
                }
            },
            "required": ["target"]
        }),
    }
}

pub(super) fn send_dtmf_spec() -> ToolSpec {
    ToolSpec {
        name: SEND_DTMF.to_owned(),
        description: format!(
            "Press phone keys (DTMF tones) on this call, in order: for example to choose an \
             option in an automated phone menu or to enter a number you were asked for. \
             Keys: 0-9, *, #, A-D; at most {MAX_DTMF_DIGITS} per call."
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "digits": {
                    "type": "string",
                    "description": "The keys to press, e.g. \"1\" or \"4321#\".",
                    "pattern": "^[0-9*#A-D]{1,64}$"
                }
            },
            "required": ["digits"]
        }),
    }
}

pub(super) fn remember_spec() -> ToolSpec {
    ToolSpec {
        name: REMEMBER.to_owned(),
        description: format!(
            "Note one fact about the caller that will help on their next call (their name, \
             an order or case number, a preference, what they are waiting for). You will see \
             it again when they call back. One short sentence per call of this tool, at most \
             {MAX_FACT_LEN} bytes; do not note payment card numbers or passwords."
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "fact": {
                    "type": "string",
                    "description": "The fact, e.g. \"Prefers to be called Sam\"."
                }
            },
            "required": ["fact"]
        }),
    }
}
