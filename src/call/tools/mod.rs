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

mod builtins;
mod http;
#[cfg(test)]
mod tests;

use builtins::*;
pub use builtins::{normalize_arguments, parse_digits, parse_request};
use http::*;
pub use http::{http_client, run_http};

/// Name of the built-in tool that ends the call.
pub const HANG_UP: &str = "hang_up";

/// Name of the built-in tool that transfers the caller (blind transfer).
pub const TRANSFER_CALL: &str = "transfer_call";

/// Name of the built-in tool that sends DTMF keys on the call.
pub const SEND_DTMF: &str = "send_dtmf";

/// Name of the built-in tool that stores a fact about the caller (agents with `memory`).
pub const REMEMBER: &str = "remember";

/// The names no HTTP tool may take, whether or not the built-in tool is enabled.
pub const RESERVED_NAMES: [&str; 4] = [HANG_UP, TRANSFER_CALL, SEND_DTMF, REMEMBER];

/// The most keys one `send_dtmf` call may send.
pub const MAX_DTMF_DIGITS: usize = 64;

/// The most bytes of an HTTP tool's answer given to the model (16 KiB), the truncation note
/// included.
pub const MAX_OUTPUT_BYTES: usize = 16 * 1024;

/// The most bytes of a non-2xx answer's body quoted in [`ToolError::Status`].
pub const MAX_ERROR_EXCERPT_BYTES: usize = 512;

/// The longest transfer target accepted from the model when any target is allowed.
pub const MAX_TRANSFER_TARGET_LEN: usize = 256;

/// The longest fact `remember` accepts, in bytes.
pub const MAX_FACT_LEN: usize = crate::records::memory::MAX_FACT_LEN;

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
    /// Offer `remember` (the agent has caller memory).
    pub remember: bool,
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
    /// Store this fact about the caller for their next calls.
    Remember {
        /// The fact, trimmed (at most [`MAX_FACT_LEN`] bytes).
        fact: String,
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
            remember: false,
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
    /// `transfer_call`, `send_dtmf`, `remember`, in that order), then the HTTP tools in
    /// order.
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
        if self.remember {
            specs.push(remember_spec());
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
