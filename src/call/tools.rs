//! The tools an AI agent may call during a call: the built-in telephony tools (`hang_up`,
//! `transfer_call`, `send_dtmf`) and HTTP tools that POST to a configured URL.
//!
//! This module is pure tool logic and knows nothing of SIP. The call layer:
//!
//! 1. declares [`AgentTools::specs`] to the backend ([`CallContext::tools`]);
//! 2. on [`BackendEvent::ToolCall`], turns the name and arguments into a [`ToolRequest`] with
//!    [`parse_request`];
//! 3. carries out a built-in request itself (BYE, REFER, DTMF), or runs an HTTP tool with
//!    [`run_http`];
//! 4. answers with [`BackendControl::ToolResult`]: the tool's output, or
//!    [`ToolError::to_output`] when anything failed. Errors always go back to the model as an
//!    output, never dropped, so the agent can tell the caller or try again.
//!
//! [`CallContext::tools`]: crate::agent::backend::CallContext::tools
//! [`BackendEvent::ToolCall`]: crate::agent::backend::BackendEvent::ToolCall
//! [`BackendControl::ToolResult`]: crate::agent::backend::BackendControl::ToolResult

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tracing::debug;

use crate::agent::backend::{CallContext, ToolSpec};
use crate::media::dtmf::Digit;

/// Name of the built-in tool that ends the call.
pub const HANG_UP: &str = "hang_up";

/// Name of the built-in tool that transfers the caller (blind transfer).
pub const TRANSFER_CALL: &str = "transfer_call";

/// Name of the built-in tool that sends DTMF keys on the call.
pub const SEND_DTMF: &str = "send_dtmf";

/// The names no HTTP tool may take, whether or not the built-in tool is enabled.
pub const RESERVED_NAMES: [&str; 3] = [HANG_UP, TRANSFER_CALL, SEND_DTMF];

/// The most keys one `send_dtmf` call may send.
pub const MAX_DTMF_DIGITS: usize = 64;

/// The most bytes of an HTTP tool's answer given to the model (16 KiB), the truncation note
/// included.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;

/// The most bytes of a non-2xx answer's body quoted in [`ToolError::Status`].
pub const MAX_ERROR_EXCERPT_BYTES: usize = 512;

/// The longest transfer target accepted from the model when any target is allowed.
pub const MAX_TRANSFER_TARGET_LEN: usize = 256;

/// The longest hang-up reason kept (longer ones are cut at a character boundary).
pub const MAX_REASON_LEN: usize = 200;

/// The output of a 2xx answer with an empty body (the model needs some output).
pub const EMPTY_BODY_OUTPUT: &str = r#"{"ok":true}"#;

/// Appended to an HTTP tool's output that was cut at [`MAX_OUTPUT_BYTES`].
pub const TRUNCATION_NOTE: &str =
    "\n[voxline: the tool's answer was longer than 16 KiB and was cut here]";

/// The tools one agent offers the model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentTools {
    /// Offer `hang_up`.
    pub hang_up: bool,
    /// Offer `transfer_call` under this policy (`None`: not offered; see
    /// [`TransferPolicy::offered`]).
    pub transfer: Option<TransferPolicy>,
    /// Offer `send_dtmf`.
    pub send_dtmf: bool,
    /// HTTP tools, declared after the built-in ones in this order.
    pub http: Vec<HttpTool>,
}

/// Which targets `transfer_call` may reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferPolicy {
    /// The allow-list. When it is not empty, only these targets are accepted (by label or
    /// by URI) and the schema enumerates their labels.
    pub targets: Vec<TransferTarget>,
    /// With an empty allow-list: accept any target the model names (a number or a SIP URI,
    /// checked only for characters that cannot be in one). When false and the allow-list is
    /// empty, `transfer_call` is not offered. Ignored when the allow-list is not empty.
    pub allow_any: bool,
}

/// One allowed transfer target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferTarget {
    /// The label the model uses, e.g. `"sales"` (matched without regard to ASCII case).
    pub name: String,
    /// Where the call goes, e.g. `"sip:sales@pbx.example.com"`.
    pub uri: String,
}

/// A tool carried out by an HTTP POST (see [`run_http`] for the request and response).
#[derive(Clone, PartialEq)]
pub struct HttpTool {
    /// The function name the model calls (`[A-Za-z0-9_-]{1,64}`, not a built-in name).
    pub name: String,
    /// What it does and when to call it (the model reads this).
    pub description: String,
    /// JSON Schema of the arguments: an object schema (`"type": "object"`).
    pub parameters: Value,
    /// Where to POST (`http` or `https`). May carry credentials or a token in its query;
    /// only its scheme, host, port and path are ever logged or reported.
    pub url: String,
    /// The whole exchange (connect, request, answer body) must finish within this.
    pub timeout: Duration,
    /// Extra request headers. Values may be secrets: never logged, redacted in `Debug`.
    pub headers: Vec<(String, String)>,
}

/// The call a tool runs for, as an HTTP tool is told of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ToolCallContext {
    /// voxline's id of the call.
    pub id: String,
    /// The caller (number or SIP user).
    pub caller: String,
    /// The number or user called.
    pub called: String,
    /// `"inbound"` or `"outbound"`.
    pub direction: String,
    /// The call's variables (as for instruction templates).
    pub variables: BTreeMap<String, String>,
}

/// What the model asked for, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolRequest {
    /// End the call (after the goodbye has played).
    HangUp {
        /// The model's reason, for logs and records (at most [`MAX_REASON_LEN`] bytes).
        reason: Option<String>,
    },
    /// Blind-transfer the caller.
    Transfer {
        /// The target: an allow-listed URI, or, when any target is allowed, the model's
        /// string (a number or a URI) as given, trimmed.
        uri: String,
    },
    /// Send these keys, in order (1 to [`MAX_DTMF_DIGITS`]).
    SendDtmf {
        /// The keys.
        digits: Vec<Digit>,
    },
    /// Run the HTTP tool of this name with [`run_http`].
    Http(String),
    /// A tool this agent does not offer (answer with [`ToolError::UnknownTool`]).
    Unknown(String),
}

/// Why a tool call failed. Every variant becomes an output for the model with
/// [`ToolError::to_output`]; the messages never contain header values, URL credentials or
/// URL query strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The agent offers no tool of this name.
    #[error("there is no tool named \"{0}\"")]
    UnknownTool(String),
    /// The arguments are not what the tool's schema asks for.
    #[error("invalid arguments for {tool}: {reason}")]
    InvalidArguments {
        /// The tool's name.
        tool: String,
        /// What is wrong.
        reason: String,
    },
    /// `transfer_call` named a target outside the allow-list.
    #[error("transfer target \"{target}\" is not allowed; allowed targets: {}", allowed.join(", "))]
    NotAllowed {
        /// What the model asked for (at most 100 bytes of it).
        target: String,
        /// The allowed labels.
        allowed: Vec<String>,
    },
    /// The HTTP tool did not answer in time.
    #[error("the tool did not answer within {after_ms} ms")]
    Timeout {
        /// The limit, in milliseconds.
        after_ms: u64,
    },
    /// The HTTP tool answered with a status other than 2xx.
    #[error(
        "the tool's server answered HTTP {status}{}",
        excerpt_suffix(body_excerpt)
    )]
    Status {
        /// The status code.
        status: u16,
        /// The start of the answer's body (at most [`MAX_ERROR_EXCERPT_BYTES`]).
        body_excerpt: String,
    },
    /// The HTTP request failed (connection refused, DNS, TLS, bad header). Names the URL
    /// without credentials or query string.
    #[error("the tool could not be reached: {0}")]
    Http(String),
}

/// An [`AgentTools`] that cannot be declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolConfigError {
    /// A name outside `[A-Za-z0-9_-]{1,64}`.
    #[error("tool name \"{0}\" is invalid: use 1 to 64 of A-Z a-z 0-9 _ -")]
    InvalidName(String),
    /// Two tools share a name.
    #[error("two tools are named \"{0}\"")]
    DuplicateName(String),
    /// An HTTP tool took a built-in tool's name.
    #[error("\"{0}\" is the name of a built-in tool")]
    ReservedName(String),
    /// An HTTP tool without a description.
    #[error("tool \"{0}\" has no description")]
    MissingDescription(String),
    /// An HTTP tool's parameters are not an object schema.
    #[error("tool \"{tool}\": parameters must be a JSON Schema object with \"type\": \"object\"")]
    InvalidParameters {
        /// The tool's name.
        tool: String,
    },
    /// An HTTP tool's URL is not an absolute `http` or `https` URL.
    #[error("tool \"{tool}\": invalid url: {reason}")]
    InvalidUrl {
        /// The tool's name.
        tool: String,
        /// What is wrong (never the URL itself).
        reason: String,
    },
    /// An HTTP tool with a zero timeout.
    #[error("tool \"{0}\": the timeout must be more than zero")]
    ZeroTimeout(String),
    /// A header name or value that HTTP cannot carry (the value is not shown).
    #[error("tool \"{tool}\": header \"{header}\" has an invalid name or value")]
    InvalidHeader {
        /// The tool's name.
        tool: String,
        /// The header's name.
        header: String,
    },
    /// A transfer target with an empty or duplicate label, or a URI that cannot be one.
    #[error("transfer target \"{name}\": {reason}")]
    InvalidTransferTarget {
        /// The target's label.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl AgentTools {
    /// Builds and validates the tool set (see [`AgentTools::validate`]).
    pub fn new(
        hang_up: bool,
        transfer: Option<TransferPolicy>,
        send_dtmf: bool,
        http: Vec<HttpTool>,
    ) -> Result<AgentTools, ToolConfigError> {
        let tools = AgentTools {
            hang_up,
            transfer,
            send_dtmf,
            http,
        };
        tools.validate()?;
        Ok(tools)
    }

    /// Checks that every tool can be declared: names valid and unique (HTTP tools may not
    /// take a built-in name), HTTP tools with a description, an object schema, an `http(s)`
    /// URL, a timeout and valid headers, transfer targets with unique labels and plausible
    /// URIs.
    pub fn validate(&self) -> Result<(), ToolConfigError> {
        let mut names: HashSet<&str> = HashSet::new();
        for tool in &self.http {
            if !valid_tool_name(&tool.name) {
                return Err(ToolConfigError::InvalidName(tool.name.clone()));
            }
            if RESERVED_NAMES.contains(&tool.name.as_str()) {
                return Err(ToolConfigError::ReservedName(tool.name.clone()));
            }
            if !names.insert(&tool.name) {
                return Err(ToolConfigError::DuplicateName(tool.name.clone()));
            }
            tool.validate()?;
        }
        if let Some(policy) = &self.transfer {
            policy.validate()?;
        }
        Ok(())
    }

    /// The tools to declare to the model: the enabled built-ins (`hang_up`,
    /// `transfer_call`, `send_dtmf`, in that order), then the HTTP tools in order.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let mut specs = Vec::with_capacity(3 + self.http.len());
        if self.hang_up {
            specs.push(hang_up_spec());
        }
        if let Some(policy) = self.offered_transfer() {
            specs.push(transfer_spec(policy));
        }
        if self.send_dtmf {
            specs.push(send_dtmf_spec());
        }
        specs.extend(self.http.iter().map(|t| ToolSpec {
            name: t.name.clone(),
            description: t.description.clone(),
            parameters: t.parameters.clone(),
        }));
        specs
    }

    /// The HTTP tool of this name.
    pub fn http_tool(&self, name: &str) -> Option<&HttpTool> {
        self.http.iter().find(|t| t.name == name)
    }

    /// The transfer policy if `transfer_call` is offered.
    fn offered_transfer(&self) -> Option<&TransferPolicy> {
        self.transfer.as_ref().filter(|p| p.offered())
    }
}

impl TransferPolicy {
    /// True when `transfer_call` is offered: the allow-list is not empty, or any target is
    /// allowed.
    pub fn offered(&self) -> bool {
        !self.targets.is_empty() || self.allow_any
    }

    /// The target the model named, by label (ASCII case ignored) or URI; with an empty
    /// allow-list and `allow_any`, the model's string itself once checked.
    pub fn resolve(&self, target: &str) -> Result<String, ToolError> {
        let target = target.trim();
        if target.is_empty() {
            return Err(invalid(TRANSFER_CALL, "\"target\" is empty"));
        }
        if !self.targets.is_empty() {
            return self
                .targets
                .iter()
                .find(|t| t.uri == target || t.name.eq_ignore_ascii_case(target))
                .map(|t| t.uri.clone())
                .ok_or_else(|| ToolError::NotAllowed {
                    target: cut_at_char_boundary(target, 100).to_owned(),
                    allowed: self.targets.iter().map(|t| t.name.clone()).collect(),
                });
        }
        if !self.allow_any {
            return Err(ToolError::UnknownTool(TRANSFER_CALL.to_owned()));
        }
        if target.len() > MAX_TRANSFER_TARGET_LEN {
            return Err(invalid(
                TRANSFER_CALL,
                format!("\"target\" is longer than {MAX_TRANSFER_TARGET_LEN} characters"),
            ));
        }
        if let Some(reason) = uri_problem(target) {
            return Err(invalid(TRANSFER_CALL, format!("\"target\" {reason}")));
        }
        Ok(target.to_owned())
    }

    fn validate(&self) -> Result<(), ToolConfigError> {
        let mut labels: HashSet<String> = HashSet::new();
        for t in &self.targets {
            let bad = |reason: &str| ToolConfigError::InvalidTransferTarget {
                name: t.name.clone(),
                reason: reason.to_owned(),
            };
            if t.name.trim().is_empty() {
                return Err(bad("the label is empty"));
            }
            if !labels.insert(t.name.to_ascii_lowercase()) {
                return Err(bad("two targets have this label"));
            }
            if t.uri.is_empty() {
                return Err(bad("the uri is empty"));
            }
            if let Some(reason) = uri_problem(&t.uri) {
                return Err(bad(&format!("the uri {reason}")));
            }
        }
        Ok(())
    }
}

impl HttpTool {
    fn validate(&self) -> Result<(), ToolConfigError> {
        if self.description.trim().is_empty() {
            return Err(ToolConfigError::MissingDescription(self.name.clone()));
        }
        let is_object_schema = self
            .parameters
            .as_object()
            .is_some_and(|o| o.get("type").and_then(Value::as_str) == Some("object"));
        if !is_object_schema {
            return Err(ToolConfigError::InvalidParameters {
                tool: self.name.clone(),
            });
        }
        match url::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
                if u.host_str().is_none_or(str::is_empty) {
                    return Err(ToolConfigError::InvalidUrl {
                        tool: self.name.clone(),
                        reason: "no host".to_owned(),
                    });
                }
            }
            Ok(u) => {
                return Err(ToolConfigError::InvalidUrl {
                    tool: self.name.clone(),
                    reason: format!("scheme \"{}\" is not http or https", u.scheme()),
                });
            }
            Err(e) => {
                return Err(ToolConfigError::InvalidUrl {
                    tool: self.name.clone(),
                    reason: e.to_string(),
                });
            }
        }
        if self.timeout.is_zero() {
            return Err(ToolConfigError::ZeroTimeout(self.name.clone()));
        }
        header_map(self).map_err(|header| ToolConfigError::InvalidHeader {
            tool: self.name.clone(),
            header,
        })?;
        Ok(())
    }
}

impl fmt::Debug for HttpTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, _)| format!("{name}: ***"))
            .collect();
        f.debug_struct("HttpTool")
            .field("name", &self.name)
            .field("description", &self.description)
            .field("parameters", &self.parameters)
            .field("url", &redacted_url(&self.url))
            .field("timeout", &self.timeout)
            .field("headers", &headers)
            .finish()
    }
}

impl ToolCallContext {
    /// The context of call `id`, taken from what its backend was started with.
    pub fn from_call(id: impl Into<String>, call: &CallContext) -> ToolCallContext {
        ToolCallContext {
            id: id.into(),
            caller: call.caller.clone(),
            called: call.called.clone(),
            direction: call.direction.clone(),
            variables: call.variables.clone(),
        }
    }
}

impl ToolError {
    /// The error as a tool output the model can read: a JSON object `{"error": "..."}`.
    pub fn to_output(&self) -> String {
        json!({ "error": self.to_string() }).to_string()
    }
}

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

/// A client for [`run_http`]: rustls, no redirects (a redirect would carry the tool's
/// headers, secrets included, to another URL; a 3xx answer is reported as
/// [`ToolError::Status`]), user agent `voxline/VERSION`. Proxies follow the usual
/// `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` variables.
pub fn http_client() -> Result<reqwest::Client, ToolError> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("voxline/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ToolError::Http(format!("cannot build the HTTP client: {}", error_chain(&e))))
}

/// Runs an HTTP tool: POSTs `application/json`
/// `{"tool": NAME, "arguments": {...}, "call": {"id", "caller", "called", "direction",
/// "variables"}}` to [`HttpTool::url`] with its headers, and waits at most
/// [`HttpTool::timeout`] for the whole answer.
///
/// A 2xx answer's body is the output, as text (invalid UTF-8 replaced), cut at a character
/// boundary to [`MAX_OUTPUT_BYTES`] with [`TRUNCATION_NOTE`] at the end; an empty body gives
/// [`EMPTY_BODY_OUTPUT`]. Any other status is [`ToolError::Status`]; no answer in time is
/// [`ToolError::Timeout`]; a failed connection is [`ToolError::Http`].
pub async fn run_http(
    client: &reqwest::Client,
    tool: &HttpTool,
    call: &ToolCallContext,
    arguments: &Value,
) -> Result<String, ToolError> {
    let args = normalize_arguments(&tool.name, arguments)?;
    let headers = header_map(tool).map_err(|header| {
        ToolError::Http(format!("header \"{header}\" has an invalid name or value"))
    })?;
    let body = json!({ "tool": tool.name, "arguments": args, "call": call });
    let after_ms = u64::try_from(tool.timeout.as_millis()).unwrap_or(u64::MAX);
    debug!(tool = %tool.name, url = %redacted_url(&tool.url), call = %call.id, "tool: POST");
    let exchange = async {
        let response = client
            .post(&tool.url)
            .headers(headers)
            .timeout(tool.timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| request_error(tool, after_ms, e))?;
        let status = response.status();
        if status.is_success() {
            let (bytes, cut) = read_capped(response, MAX_OUTPUT_BYTES)
                .await
                .map_err(|e| request_error(tool, after_ms, e))?;
            debug!(tool = %tool.name, status = status.as_u16(), bytes = bytes.len(), cut, "tool: answered");
            Ok(success_output(&bytes, cut))
        } else {
            // The excerpt is best effort: a body that fails to arrive leaves it empty.
            let (bytes, cut) = read_capped(response, MAX_ERROR_EXCERPT_BYTES)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            let mut body_excerpt =
                cut_at_char_boundary(text.trim(), MAX_ERROR_EXCERPT_BYTES).to_owned();
            if cut {
                body_excerpt.push('…');
            }
            debug!(tool = %tool.name, status = status.as_u16(), "tool: error status");
            Err(ToolError::Status {
                status: status.as_u16(),
                body_excerpt,
            })
        }
    };
    match tokio::time::timeout(tool.timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(ToolError::Timeout { after_ms }),
    }
}

/// True for a function name the Realtime API accepts: 1 to 64 of `A-Za-z0-9_-`.
fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn invalid(tool: &str, reason: impl Into<String>) -> ToolError {
    ToolError::InvalidArguments {
        tool: tool.to_owned(),
        reason: reason.into(),
    }
}

fn required_string<'a>(
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
fn uri_problem(uri: &str) -> Option<&'static str> {
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains spaces or control characters")
    } else if uri.contains(['<', '>', '"']) {
        Some("contains < > or \"")
    } else {
        None
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary.
fn cut_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    // invariant: `end` is a char boundary no greater than `s.len()`.
    s.get(..end).unwrap_or_default()
}

fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt}")
    }
}

/// The tool's headers, every value marked sensitive; `Err(name)` for the first header that
/// HTTP cannot carry.
fn header_map(tool: &HttpTool) -> Result<reqwest::header::HeaderMap, String> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let mut map = HeaderMap::with_capacity(tool.headers.len());
    for (name, value) in &tool.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| name.clone())?;
        let mut header_value = HeaderValue::from_str(value).map_err(|_| name.clone())?;
        header_value.set_sensitive(true);
        map.append(header_name, header_value);
    }
    Ok(map)
}

/// `scheme://host:port/path`, with `?…` when there was a query: no credentials, no query.
fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let query = if u.query().is_some() { "?…" } else { "" };
            format!("{}://{host}{port}{}{query}", u.scheme(), u.path())
        }
        Err(_) => "(invalid url)".to_owned(),
    }
}

/// The error for a failed request: [`ToolError::Timeout`] when reqwest timed out, else
/// [`ToolError::Http`] with the redacted URL and the causes (reqwest's own message names
/// the full URL, so it is dropped).
fn request_error(tool: &HttpTool, after_ms: u64, e: reqwest::Error) -> ToolError {
    if e.is_timeout() {
        return ToolError::Timeout { after_ms };
    }
    ToolError::Http(format!(
        "{}: {}",
        redacted_url(&tool.url),
        error_chain(&e.without_url())
    ))
}

/// An error and its sources, joined with `": "`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Reads at most `limit` bytes of the body; the flag is true when more was left unread.
async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit.saturating_sub(bytes.len());
        if chunk.len() > room {
            bytes.extend(chunk.iter().take(room));
            return Ok((bytes, true));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, false))
}

/// The model's output for a 2xx body (see [`run_http`]).
fn success_output(bytes: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    if !cut {
        if text.trim().is_empty() {
            return EMPTY_BODY_OUTPUT.to_owned();
        }
        if text.len() <= MAX_OUTPUT_BYTES {
            return text.into_owned();
        }
    }
    // Cut (or grown past the limit by replacement characters): keep room for the note.
    let keep = MAX_OUTPUT_BYTES - TRUNCATION_NOTE.len();
    let mut output = cut_at_char_boundary(&text, keep).to_owned();
    output.push_str(TRUNCATION_NOTE);
    output
}

fn hang_up_spec() -> ToolSpec {
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

fn transfer_spec(policy: &TransferPolicy) -> ToolSpec {
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

fn send_dtmf_spec() -> ToolSpec {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn http_tool(name: &str) -> HttpTool {
        HttpTool {
            name: name.to_owned(),
            description: "Look up an order.".to_owned(),
            parameters: json!({"type": "object", "properties": {"order": {"type": "string"}}}),
            url: "https://user:pw@tools.example.com:8443/order?key=s3cret".to_owned(),
            timeout: Duration::from_secs(5),
            headers: vec![("Authorization".to_owned(), "Bearer s3cret".to_owned())],
        }
    }

    fn targets() -> TransferPolicy {
        TransferPolicy {
            targets: vec![
                TransferTarget {
                    name: "sales".to_owned(),
                    uri: "sip:sales@pbx.example.com".to_owned(),
                },
                TransferTarget {
                    name: "Support".to_owned(),
                    uri: "sip:200@pbx.example.com".to_owned(),
                },
            ],
            allow_any: false,
        }
    }

    fn all_tools() -> AgentTools {
        AgentTools::new(true, Some(targets()), true, vec![http_tool("lookup_order")])
            .expect("valid")
    }

    fn names(specs: &[ToolSpec]) -> Vec<&str> {
        specs.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn specs_list_builtins_first_then_http_tools() {
        let specs = all_tools().specs();
        assert_eq!(
            names(&specs),
            ["hang_up", "transfer_call", "send_dtmf", "lookup_order"]
        );
        assert_eq!(
            specs[0].description,
            "End the call. Say a short goodbye before calling this."
        );
        assert_eq!(
            specs[0].parameters["properties"]["reason"]["type"],
            "string"
        );
        assert_eq!(specs[0].parameters["required"], json!([]));
        assert_eq!(specs[2].parameters["required"], json!(["digits"]));
        assert_eq!(specs[3].description, "Look up an order.");
        assert_eq!(specs[3].parameters, http_tool("x").parameters);
    }

    #[test]
    fn disabled_builtins_are_not_declared() {
        let tools = AgentTools {
            http: vec![http_tool("a")],
            ..AgentTools::default()
        };
        assert_eq!(names(&tools.specs()), ["a"]);
        assert!(AgentTools::default().specs().is_empty());
    }

    #[test]
    fn transfer_schema_enumerates_the_allow_list() {
        let tools = AgentTools {
            transfer: Some(targets()),
            ..AgentTools::default()
        };
        let spec = &tools.specs()[0];
        assert_eq!(spec.name, TRANSFER_CALL);
        assert_eq!(
            spec.parameters["properties"]["target"]["enum"],
            json!(["sales", "Support"])
        );
        assert_eq!(spec.parameters["required"], json!(["target"]));
        assert!(
            spec.description.contains(
                "\"sales\" (sip:sales@pbx.example.com), \"Support\" (sip:200@pbx.example.com)"
            ),
            "{}",
            spec.description
        );
    }

    #[test]
    fn transfer_without_allow_list() {
        let any = AgentTools {
            transfer: Some(TransferPolicy {
                targets: vec![],
                allow_any: true,
            }),
            ..AgentTools::default()
        };
        let spec = &any.specs()[0];
        assert!(
            spec.parameters["properties"]["target"]
                .get("enum")
                .is_none()
        );
        assert_eq!(
            parse_request(&any, TRANSFER_CALL, &json!({"target": " +15551234567 "})),
            Ok(ToolRequest::Transfer {
                uri: "+15551234567".to_owned()
            })
        );
        assert!(matches!(
            parse_request(&any, TRANSFER_CALL, &json!({"target": "sip:a@b>\r\nX: y"})),
            Err(ToolError::InvalidArguments { .. })
        ));
        let long = "1".repeat(MAX_TRANSFER_TARGET_LEN + 1);
        assert!(matches!(
            parse_request(&any, TRANSFER_CALL, &json!({ "target": long })),
            Err(ToolError::InvalidArguments { .. })
        ));

        // Empty allow-list and no free targets: the tool is not offered at all.
        let none = AgentTools {
            transfer: Some(TransferPolicy::default()),
            ..AgentTools::default()
        };
        assert!(none.specs().is_empty());
        assert_eq!(
            parse_request(&none, TRANSFER_CALL, &json!({"target": "sip:x@y"})),
            Ok(ToolRequest::Unknown(TRANSFER_CALL.to_owned()))
        );
    }

    #[test]
    fn transfer_by_label_or_uri_within_the_allow_list() {
        let tools = all_tools();
        assert_eq!(
            parse_request(&tools, TRANSFER_CALL, &json!({"target": "sales"})),
            Ok(ToolRequest::Transfer {
                uri: "sip:sales@pbx.example.com".to_owned()
            })
        );
        assert_eq!(
            parse_request(&tools, TRANSFER_CALL, &json!({"target": "support"})),
            Ok(ToolRequest::Transfer {
                uri: "sip:200@pbx.example.com".to_owned()
            })
        );
        assert_eq!(
            parse_request(
                &tools,
                TRANSFER_CALL,
                &json!({"target": "sip:200@pbx.example.com"})
            ),
            Ok(ToolRequest::Transfer {
                uri: "sip:200@pbx.example.com".to_owned()
            })
        );
        let err = parse_request(&tools, TRANSFER_CALL, &json!({"target": "sip:evil@x"}))
            .expect_err("not allowed");
        assert_eq!(
            err,
            ToolError::NotAllowed {
                target: "sip:evil@x".to_owned(),
                allowed: vec!["sales".to_owned(), "Support".to_owned()],
            }
        );
        assert_eq!(
            err.to_output(),
            r#"{"error":"transfer target \"sip:evil@x\" is not allowed; allowed targets: sales, Support"}"#
        );
        assert!(matches!(
            parse_request(&tools, TRANSFER_CALL, &json!({})),
            Err(ToolError::InvalidArguments { .. })
        ));
        assert!(matches!(
            parse_request(&tools, TRANSFER_CALL, &json!({"target": 5})),
            Err(ToolError::InvalidArguments { .. })
        ));
    }

    #[test]
    fn hang_up_reasons() {
        let tools = all_tools();
        assert_eq!(
            parse_request(&tools, HANG_UP, &json!({})),
            Ok(ToolRequest::HangUp { reason: None })
        );
        assert_eq!(
            parse_request(&tools, HANG_UP, &Value::Null),
            Ok(ToolRequest::HangUp { reason: None })
        );
        assert_eq!(
            parse_request(&tools, HANG_UP, &json!({"reason": " caller said bye "})),
            Ok(ToolRequest::HangUp {
                reason: Some("caller said bye".to_owned())
            })
        );
        assert_eq!(
            parse_request(&tools, HANG_UP, &json!({"reason": ""})),
            Ok(ToolRequest::HangUp { reason: None })
        );
        assert_eq!(
            parse_request(&tools, HANG_UP, &json!({"reason": 42})),
            Ok(ToolRequest::HangUp {
                reason: Some("42".to_owned())
            })
        );
        let long = "é".repeat(MAX_REASON_LEN);
        match parse_request(&tools, HANG_UP, &json!({ "reason": long })) {
            Ok(ToolRequest::HangUp { reason: Some(r) }) => {
                assert_eq!(r.len(), MAX_REASON_LEN);
                assert!(r.chars().all(|c| c == 'é'));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn arguments_as_a_json_string_are_accepted() {
        let tools = all_tools();
        assert_eq!(
            parse_request(&tools, SEND_DTMF, &json!("{\"digits\": \"12#\"}")),
            Ok(ToolRequest::SendDtmf {
                digits: vec![Digit::D1, Digit::D2, Digit::Hash]
            })
        );
        assert_eq!(
            parse_request(&tools, HANG_UP, &json!("")),
            Ok(ToolRequest::HangUp { reason: None })
        );
        assert!(matches!(
            parse_request(&tools, SEND_DTMF, &json!("{not json")),
            Err(ToolError::InvalidArguments { ref tool, .. }) if tool == SEND_DTMF
        ));
        assert!(matches!(
            parse_request(&tools, SEND_DTMF, &json!("[1, 2]")),
            Err(ToolError::InvalidArguments { .. })
        ));
        assert!(matches!(
            parse_request(&tools, SEND_DTMF, &json!([1, 2])),
            Err(ToolError::InvalidArguments { .. })
        ));
    }

    #[test]
    fn dtmf_digits() {
        assert_eq!(
            parse_digits("0-9 *#abcD"),
            Ok(vec![
                Digit::D0,
                Digit::D9,
                Digit::Star,
                Digit::Hash,
                Digit::A,
                Digit::B,
                Digit::C,
                Digit::D
            ])
        );
        assert_eq!(parse_digits(&"1".repeat(64)).map(|d| d.len()), Ok(64));
        assert!(matches!(
            parse_digits(&"1".repeat(65)),
            Err(ToolError::InvalidArguments { .. })
        ));
        assert!(matches!(
            parse_digits(" - "),
            Err(ToolError::InvalidArguments { .. })
        ));
        let err = parse_digits("12,3").expect_err("comma");
        assert_eq!(
            err.to_string(),
            "invalid arguments for send_dtmf: ',' is not a phone key (use 0-9, *, #, A-D)"
        );
        assert!(matches!(
            parse_request(&all_tools(), SEND_DTMF, &json!({"digits": 12})),
            Err(ToolError::InvalidArguments { .. })
        ));
    }

    #[test]
    fn http_and_unknown_names() {
        let tools = all_tools();
        assert_eq!(
            parse_request(&tools, "lookup_order", &json!({"order": "A1"})),
            Ok(ToolRequest::Http("lookup_order".to_owned()))
        );
        assert!(matches!(
            parse_request(&tools, "lookup_order", &json!(3)),
            Err(ToolError::InvalidArguments { .. })
        ));
        assert_eq!(
            parse_request(&tools, "nope", &json!({})),
            Ok(ToolRequest::Unknown("nope".to_owned()))
        );
        // A disabled built-in is unknown.
        let only_http = AgentTools {
            http: vec![http_tool("lookup_order")],
            ..AgentTools::default()
        };
        assert_eq!(
            parse_request(&only_http, HANG_UP, &json!({})),
            Ok(ToolRequest::Unknown(HANG_UP.to_owned()))
        );
        assert_eq!(
            ToolError::UnknownTool("nope".to_owned()).to_output(),
            r#"{"error":"there is no tool named \"nope\""}"#
        );
    }

    #[test]
    fn validation_rejects_bad_tool_sets() {
        let dup = AgentTools::new(false, None, false, vec![http_tool("a"), http_tool("a")]);
        assert_eq!(dup, Err(ToolConfigError::DuplicateName("a".to_owned())));

        let reserved = AgentTools::new(false, None, false, vec![http_tool(HANG_UP)]);
        assert_eq!(
            reserved,
            Err(ToolConfigError::ReservedName(HANG_UP.to_owned()))
        );

        for bad in ["", "has space", "x.y", &"a".repeat(65)] {
            assert_eq!(
                AgentTools::new(false, None, false, vec![http_tool(bad)]),
                Err(ToolConfigError::InvalidName(bad.to_owned()))
            );
        }

        let mut t = http_tool("a");
        t.parameters = json!({"type": "string"});
        assert!(matches!(
            AgentTools::new(false, None, false, vec![t]),
            Err(ToolConfigError::InvalidParameters { .. })
        ));

        let mut t = http_tool("a");
        t.url = "ftp://example.com/x".to_owned();
        assert!(matches!(
            AgentTools::new(false, None, false, vec![t]),
            Err(ToolConfigError::InvalidUrl { .. })
        ));

        let mut t = http_tool("a");
        t.url = "not a url".to_owned();
        assert!(matches!(
            AgentTools::new(false, None, false, vec![t]),
            Err(ToolConfigError::InvalidUrl { .. })
        ));

        let mut t = http_tool("a");
        t.timeout = Duration::ZERO;
        assert_eq!(
            AgentTools::new(false, None, false, vec![t]),
            Err(ToolConfigError::ZeroTimeout("a".to_owned()))
        );

        let mut t = http_tool("a");
        t.headers = vec![("X-Key".to_owned(), "line\nbreak-s3cret".to_owned())];
        let err = AgentTools::new(false, None, false, vec![t]).expect_err("bad header");
        assert!(!err.to_string().contains("s3cret"), "{err}");

        let mut t = http_tool("a");
        t.description = " ".to_owned();
        assert_eq!(
            AgentTools::new(false, None, false, vec![t]),
            Err(ToolConfigError::MissingDescription("a".to_owned()))
        );

        let mut policy = targets();
        policy.targets.push(TransferTarget {
            name: "SALES".to_owned(),
            uri: "sip:x@y".to_owned(),
        });
        assert!(matches!(
            AgentTools::new(false, Some(policy), false, vec![]),
            Err(ToolConfigError::InvalidTransferTarget { .. })
        ));

        let policy = TransferPolicy {
            targets: vec![TransferTarget {
                name: "x".to_owned(),
                uri: "sip:a b".to_owned(),
            }],
            allow_any: false,
        };
        assert!(matches!(
            AgentTools::new(false, Some(policy), false, vec![]),
            Err(ToolConfigError::InvalidTransferTarget { .. })
        ));
    }

    #[test]
    fn debug_redacts_secrets() {
        let text = format!("{:?}", http_tool("lookup_order"));
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains("pw"), "{text}");
        assert!(text.contains("Authorization: ***"), "{text}");
        assert!(
            text.contains("https://tools.example.com:8443/order?…"),
            "{text}"
        );
    }

    #[test]
    fn outputs_are_capped_at_a_char_boundary() {
        assert_eq!(success_output(b"", false), EMPTY_BODY_OUTPUT);
        assert_eq!(success_output(b"{\"a\":1}", false), "{\"a\":1}");
        let body = "€".repeat(MAX_OUTPUT_BYTES / 3 + 1);
        let out = success_output(&body.as_bytes()[..MAX_OUTPUT_BYTES], true);
        assert!(out.len() <= MAX_OUTPUT_BYTES);
        assert!(out.ends_with(TRUNCATION_NOTE));
        let kept = out.strip_suffix(TRUNCATION_NOTE).expect("note");
        assert!(kept.chars().all(|c| c == '€'));
        assert!(kept.len() > MAX_OUTPUT_BYTES - TRUNCATION_NOTE.len() - 3);
        assert_eq!(cut_at_char_boundary("aé", 2), "a");
        assert_eq!(cut_at_char_boundary("aé", 3), "aé");
    }

    #[test]
    fn error_outputs_are_json_objects() {
        let e = ToolError::Status {
            status: 500,
            body_excerpt: "boom".to_owned(),
        };
        let v: Value = serde_json::from_str(&e.to_output()).expect("json");
        assert_eq!(
            v,
            json!({"error": "the tool's server answered HTTP 500: boom"})
        );
        let e = ToolError::Timeout { after_ms: 200 };
        assert_eq!(
            e.to_output(),
            r#"{"error":"the tool did not answer within 200 ms"}"#
        );
    }

    #[test]
    fn tool_call_context_from_call() {
        let call = CallContext {
            caller: "+1555".to_owned(),
            called: "100".to_owned(),
            direction: "inbound".to_owned(),
            variables: BTreeMap::from([("k".to_owned(), "v".to_owned())]),
            call_format: crate::agent::backend::AudioFormat::Pcmu8k,
            tools: vec![],
        };
        let ctx = ToolCallContext::from_call("c1", &call);
        assert_eq!(
            serde_json::to_value(&ctx).expect("json"),
            json!({"id": "c1", "caller": "+1555", "called": "100", "direction": "inbound",
                   "variables": {"k": "v"}})
        );
    }
}
