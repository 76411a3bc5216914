//! HTTP tools: the client, the request a tool call makes, and how its answer (or failure)
//! becomes the output the model reads.

use super::*;

impl HttpTool {
    pub(super) fn validate(&self) -> Result<(), ToolConfigError> {
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

/// The longest prefix of `s` of at most `max` bytes that ends at a character boundary.
pub(super) fn cut_at_char_boundary(s: &str, max: usize) -> &str {
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

pub(super) fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() {
        String::new()
    } else {
        format!(": {excerpt}")
    }
}

/// The tool's headers, every value marked sensitive; `Err(name)` for the first header that
/// HTTP cannot carry.
pub(super) fn header_map(tool: &HttpTool) -> Result<reqwest::header::HeaderMap, String> {
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
pub(super) fn redacted_url(url: &str) -> String {
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
pub(super) fn request_error(tool: &HttpTool, after_ms: u64, e: reqwest::Error) -> ToolError {
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
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
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

/// The model's output for a 2xx body (see [`run_http`]).
pub(super) fn success_output(bytes: &[u8], cut: bool) -> String {
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

/// Reads at most `limit` bytes of the body; the flag is true when more was left unread.
pub(super) async fn read_capped(
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
