//! The LLM: an OpenAI-compatible Chat Completions endpoint, streamed (server-sent events),
//! with tool calls. The base URL is configurable, so OpenAI, Groq, vLLM, Ollama and
//! llama.cpp's server all work.
//!
//! [`SseParser`] splits the response body into events (the W3C `text/event-stream` rules: `data:`
//! lines joined, a blank line ends an event, comments ignored); [`ToolCallAssembler`] puts
//! tool calls back together from their deltas (ids, names and arguments may be split across
//! chunks, several calls interleave by `index`). [`stream`] runs one request and reports
//! [`LlmEvent`]s on a bounded channel.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::backend::ToolSpec;
use super::ApiKey;

/// `data:` payload that ends an OpenAI stream.
pub const DONE_SENTINEL: &str = "[DONE]";
/// Largest SSE event accepted (a tool call's arguments come in many small events; one event
/// beyond this is a broken server).
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// One message of the conversation, as Chat Completions takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatMessage {
    /// `role: system`.
    System(String),
    /// `role: user`.
    User(String),
    /// `role: assistant`: what the agent said, and the tools it called.
    Assistant {
        /// The text (`None` when it only called tools).
        content: Option<String>,
        /// The tool calls.
        tool_calls: Vec<ToolCall>,
    },
    /// `role: tool`: a tool's result.
    Tool {
        /// The call it answers.
        call_id: String,
        /// The result.
        content: String,
    },
}

impl ChatMessage {
    /// The message as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            ChatMessage::System(c) => json!({ "role": "system", "content": c }),
            ChatMessage::User(c) => json!({ "role": "user", "content": c }),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut m = json!({ "role": "assistant", "content": content });
                if !tool_calls.is_empty() {
                    m["tool_calls"] = tool_calls
                        .iter()
                        .map(|t| {
                            json!({
                                "id": t.id,
                                "type": "function",
                                "function": { "name": t.name, "arguments": t.arguments },
                            })
                        })
                        .collect();
                }
                m
            }
            ChatMessage::Tool { call_id, content } => {
                json!({ "role": "tool", "tool_call_id": call_id, "content": content })
            }
        }
    }
}

/// A complete tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The provider's id (echoed in the result).
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments, JSON text exactly as streamed.
    pub arguments: String,
}

/// Splits a `text/event-stream` body into events' data.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: String,
    has_data: bool,
    overflow: bool,
}

/// Why an event stream is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// One event is larger than [`MAX_EVENT_BYTES`].
    #[error("an event is larger than {MAX_EVENT_BYTES} bytes")]
    TooLarge,
    /// A line is not UTF-8.
    #[error("the event stream is not UTF-8")]
    NotUtf8,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// Feeds `bytes`; appends the data of every event they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<String>) -> Result<(), SseError> {
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.on_line(&line, out)?;
            } else {
                if self.line.len() + self.data.len() > MAX_EVENT_BYTES {
                    self.overflow = true;
                    return Err(SseError::TooLarge);
                }
                self.line.push(b);
            }
        }
        Ok(())
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<String>) -> Result<(), SseError> {
        if line.is_empty() {
            if self.has_data {
                out.push(std::mem::take(&mut self.data));
                self.has_data = false;
            }
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(value);
            self.has_data = true;
        }
        Ok(())
    }
}

/// Puts streamed tool calls back together.
#[derive(Debug, Default)]
pub struct ToolCallAssembler {
    calls: Vec<(u64, ToolCall)>,
}

impl ToolCallAssembler {
    /// An empty assembler for one response.
    pub fn new() -> ToolCallAssembler {
        ToolCallAssembler::default()
    }

    /// Adds one chunk's `delta.tool_calls` array.
    pub fn push(&mut self, deltas: &[Value]) {
        for d in deltas {
            let index = match d.get("index").and_then(Value::as_u64) {
                Some(i) => i,
                // Servers that leave the index out send each call whole, or continue the last.
                None => match d.get("id").and_then(Value::as_str) {
                    Some(id) if !self.calls.iter().any(|(_, c)| c.id == id) => {
                        self.calls.iter().map(|(i, _)| i + 1).max().unwrap_or(0)
                    }
                    _ => self.calls.last().map(|(i, _)| *i).unwrap_or(0),
                },
            };
            let pos = match self.calls.iter().position(|(i, _)| *i == index) {
                Some(p) => p,
                None => {
                    self.calls.push((
                        index,
                        ToolCall {
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        },
                    ));
                    self.calls.len() - 1
                }
            };
            let Some((_, call)) = self.calls.get_mut(pos) else {
                continue;
            };
            if let Some(id) = d.get("id").and_then(Value::as_str)
                && !id.is_empty()
            {
                // The id comes whole (some servers repeat it in every delta).
                call.id = id.to_owned();
            }
            if let Some(f) = d.get("function") {
                if let Some(name) = f.get("name").and_then(Value::as_str) {
                    // Names come whole in the first delta from OpenAI; a server that splits
                    // them sends the pieces in order, and one that repeats it whole is caught.
                    if call.name != name {
                        call.name.push_str(name);
                    }
                }
                if let Some(args) = f.get("arguments").and_then(Value::as_str) {
                    call.arguments.push_str(args);
                }
            }
        }
    }

    /// Whether any call was started.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// The calls, in index order; a call without an id gets `call_N`.
    pub fn finish(self) -> Vec<ToolCall> {
        let mut calls = self.calls;
        calls.sort_by_key(|(i, _)| *i);
        calls
            .into_iter()
            .map(|(i, mut c)| {
                if c.id.is_empty() {
                    c.id = format!("call_{i}");
                }
                if c.arguments.trim().is_empty() {
                    c.arguments = "{}".to_owned();
                }
                c
            })
            .collect()
    }
}

/// How to reach the LLM.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatConfig {
    /// The API's base URL, up to `/v1` (`https://api.openai.com/v1`); `/chat/completions` is
    /// added.
    pub url: String,
    /// The model.
    pub model: String,
    /// The key, sent as `Authorization: Bearer` (`None`: no header, for local servers).
    pub api_key: Option<ApiKey>,
    /// Sampling temperature (`None`: the server's default).
    pub temperature: Option<f32>,
    /// Most tokens per reply (`max_tokens`; `None`: the server's default).
    pub max_tokens: Option<u32>,
    /// Limit for the response headers, and again between two chunks of the stream.
    pub timeout: Duration,
}

/// The default base URL.
pub const DEFAULT_CHAT_URL: &str = "https://api.openai.com/v1";
/// The default model.
pub const DEFAULT_CHAT_MODEL: &str = "gpt-4o-mini";
/// The default limit for the first byte and between chunks.
pub const DEFAULT_CHAT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a streaming request reports.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// The first token (or tool-call delta) arrived.
    FirstToken,
    /// More of the reply's text.
    Text(String),
    /// The reply is complete: its tool calls (if any) and the finish reason.
    Done {
        /// The calls, reassembled.
        tool_calls: Vec<ToolCall>,
        /// `stop`, `tool_calls`, `length`… (`None` if the server sent none).
        finish_reason: Option<String>,
    },
    /// The request failed.
    Failed(LlmError),
}

/// Why a chat request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The request could not be sent or the connection broke.
    #[error("LLM connection failed: {0}")]
    Connect(String),
    /// No answer (or no next chunk) in time.
    #[error("LLM timed out after {0} ms")]
    Timeout(u64),
    /// 401 or 403.
    #[error("LLM rejected the credentials (HTTP {status}): {message}")]
    Unauthorized {
        /// The status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// 429.
    #[error("LLM rate limit (HTTP 429): {message}")]
    RateLimited {
        /// The server's message.
        message: String,
    },
    /// Another status.
    #[error("LLM answered HTTP {status}: {message}")]
    Http {
        /// The status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The stream broke the protocol (bad JSON, an error event, cut short).
    #[error("LLM stream error: {0}")]
    Protocol(String),
}

/// The request body for `messages` and `tools`.
pub fn request_body(cfg: &ChatConfig, messages: &[ChatMessage], tools: &[ToolSpec]) -> Value {
    let mut body = json!({
        "model": cfg.model,
        // A reply the caller never heard is kept as an empty message (its place in the
        // history stays stable) but not sent: the API refuses an assistant message with
        // neither content nor tool calls.
        "messages": messages
            .iter()
            .filter(|m| !matches!(m, ChatMessage::Assistant { content: None, tool_calls } if tool_calls.is_empty()))
            .map(ChatMessage::to_json)
            .collect::<Vec<_>>(),
        "stream": true,
    });
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                })
            })
            .collect();
        body["tool_choice"] = json!("auto");
    }
    if let Some(t) = cfg.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = cfg.max_tokens {
        body["max_tokens"] = json!(m);
    }
    body
}

/// The error message in an OpenAI-style error body (`{"error": {"message": …}}`), else the
/// body's start.
pub fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error").map(|e| match e {
                Value::String(s) => s.clone(),
                e => e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
        })
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// Runs one streaming request; events go to `events` (the last is [`LlmEvent::Done`] or
/// [`LlmEvent::Failed`]). Dropping the future cancels the request.
pub async fn stream(
    client: reqwest::Client,
    cfg: ChatConfig,
    body: Value,
    events: mpsc::Sender<LlmEvent>,
) {
    let ev = match run(&client, &cfg, body, &events).await {
        Ok(done) => done,
        Err(e) => LlmEvent::Failed(e),
    };
    let _ = events.send(ev).await;
}

async fn run(
    client: &reqwest::Client,
    cfg: &ChatConfig,
    body: Value,
    events: &mpsc::Sender<LlmEvent>,
) -> Result<LlmEvent, LlmError> {
    let timeout_ms = u64::try_from(cfg.timeout.as_millis()).unwrap_or(u64::MAX);
    let url = format!("{}/chat/completions", cfg.url.trim_end_matches('/'));
    let mut req = client
        .post(&url)
        .header("Accept", "text/event-stream")
        .json(&body);
    if let Some(key) = &cfg.api_key {
        req = req.bearer_auth(key.expose());
    }
    let mut resp = match tokio::time::timeout(cfg.timeout, req.send()).await {
        Err(_) => return Err(LlmError::Timeout(timeout_ms)),
        Ok(Err(e)) => return Err(LlmError::Connect(without_url(&e))),
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    if status != 200 {
        let text = tokio::time::timeout(cfg.timeout, resp.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let message = error_message(&text);
        return Err(match status {
            401 | 403 => LlmError::Unauthorized { status, message },
            429 => LlmError::RateLimited { message },
            _ => LlmError::Http { status, message },
        });
    }
    let mut parser = SseParser::new();
    let mut tools = ToolCallAssembler::new();
    let mut finish_reason: Option<String> = None;
    let mut first = true;
    let mut datas = Vec::new();
    loop {
        let deadline = Instant::now() + cfg.timeout;
        let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Err(_) => return Err(LlmError::Timeout(timeout_ms)),
            Ok(Err(e)) => return Err(LlmError::Connect(without_url(&e))),
            Ok(Ok(None)) => {
                return Err(LlmError::Protocol("the stream ended before [DONE]".into()));
            }
            Ok(Ok(Some(c))) => c,
        };
        datas.clear();
        parser
            .push(&chunk, &mut datas)
            .map_err(|e| LlmError::Protocol(e.to_string()))?;
        for data in datas.drain(..) {
            if data.trim() == DONE_SENTINEL {
                return Ok(LlmEvent::Done {
                    tool_calls: tools.finish(),
                    finish_reason,
                });
            }
            let v: Value = serde_json::from_str(&data)
                .map_err(|e| LlmError::Protocol(format!("a chunk is not JSON: {e}")))?;
            if let Some(err) = v.get("error") {
                return Err(LlmError::Protocol(error_message(
                    &json!({ "error": err }).to_string(),
                )));
            }
            let Some(choice) = v
                .get("choices")
                .and_then(Value::as_array)
                .and_then(|c| c.first())
            else {
                // The usage chunk (`choices: []`) and keep-alives.
                continue;
            };
            if let Some(delta) = choice.get("delta") {
                let text = delta.get("content").and_then(Value::as_str);
                let calls = delta.get("tool_calls").and_then(Value::as_array);
                if first && (text.is_some_and(|t| !t.is_empty()) || calls.is_some()) {
                    first = false;
                    if events.send(LlmEvent::FirstToken).await.is_err() {
                        return Err(LlmError::Protocol("receiver gone".into()));
                    }
                }
                if let Some(t) = text
                    && !t.is_empty()
                    && events.send(LlmEvent::Text(t.to_owned())).await.is_err()
                {
                    return Err(LlmError::Protocol("receiver gone".into()));
                }
                if let Some(calls) = calls {
                    tools.push(calls);
                }
            }
            if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
                finish_reason = Some(r.to_owned());
            }
        }
    }
}

/// A reqwest error without its URL (which could carry a key in a query string).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "(url)");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_anywhere() {
        let body = b": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\n\nevent: e\ndata: [DONE]\n\n";
        for split in 1..body.len() {
            let mut p = SseParser::new();
            let mut out = Vec::new();
            p.push(&body[..split], &mut out).unwrap();
            p.push(&body[split..], &mut out).unwrap();
            assert_eq!(out, ["{\"a\":1}", "x\ny", "[DONE]"], "split at {split}");
        }
        let mut p = SseParser::new();
        let mut out = Vec::new();
        assert_eq!(
            p.push(&vec![b'a'; MAX_EVENT_BYTES + 2], &mut out),
            Err(SseError::TooLarge)
        );
    }

    #[test]
    fn parallel_tool_calls_reassembled_exactly() {
        let mut a = ToolCallAssembler::new();
        let deltas: Vec<Value> = vec![
            json!([{"index":0,"id":"call_A","type":"function","function":{"name":"lookup","arguments":""}}]),
            json!([{"index":0,"function":{"arguments":"{\"num"}}]),
            json!([{"index":1,"id":"call_B","type":"function","function":{"name":"hang","arguments":""}}]),
            json!([{"index":1,"function":{"name":"_up"}}]),
            json!([{"index":0,"function":{"arguments":"ber\": \"4"}}]),
            json!([{"index":1,"function":{"arguments":"{}"}}]),
            json!([{"index":0,"function":{"arguments":"2\"}"}}]),
        ];
        for d in &deltas {
            a.push(d.as_array().unwrap());
        }
        let calls = a.finish();
        assert_eq!(
            calls,
            [
                ToolCall {
                    id: "call_A".into(),
                    name: "lookup".into(),
                    arguments: "{\"number\": \"42\"}".into()
                },
                ToolCall {
                    id: "call_B".into(),
                    name: "hang_up".into(),
                    arguments: "{}".into()
                }
            ]
        );
        // A server that repeats the id and name in every delta, and one without indexes.
        let mut a = ToolCallAssembler::new();
        a.push(&[json!({"index":0,"id":"x","function":{"name":"f","arguments":"{\"a\""}})]);
        a.push(&[json!({"index":0,"id":"x","function":{"name":"f","arguments":":1}"}})]);
        a.push(&[json!({"id":"y","function":{"name":"g","arguments":"{}"}})]);
        let calls = a.finish();
        assert_eq!(calls[0].arguments, "{\"a\":1}");
        assert_eq!((calls[0].name.as_str(), calls[1].name.as_str()), ("f", "g"));
        assert_eq!(calls[1].id, "y");
    }

    #[test]
    fn messages_and_body() {
        let cfg = ChatConfig {
            url: "http://x/v1".into(),
            model: "m".into(),
            api_key: None,
            temperature: Some(0.5),
            max_tokens: None,
            timeout: DEFAULT_CHAT_TIMEOUT,
        };
        let msgs = [
            ChatMessage::System("be nice".into()),
            ChatMessage::User("hi".into()),
            ChatMessage::Assistant {
                content: None,
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "hang_up".into(),
                    arguments: "{}".into(),
                }],
            },
            ChatMessage::Tool {
                call_id: "c1".into(),
                content: "ok".into(),
            },
        ];
        let tools = [ToolSpec {
            name: "hang_up".into(),
            description: "end".into(),
            parameters: json!({"type":"object","properties":{}}),
        }];
        let b = request_body(&cfg, &msgs, &tools);
        assert_eq!(b["stream"], true);
        assert_eq!(b["messages"][2]["content"], Value::Null);
        assert_eq!(
            b["messages"][2]["tool_calls"][0]["function"]["name"],
            "hang_up"
        );
        assert_eq!(b["messages"][3]["tool_call_id"], "c1");
        assert_eq!(b["tools"][0]["type"], "function");
        assert_eq!(b["temperature"], 0.5);
        assert!(b.get("max_tokens").is_none());
        assert_eq!(
            error_message(
                r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error"}}"#
            ),
            "Incorrect API key"
        );
    }
}
