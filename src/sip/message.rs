//! Message framing, limits and header access on top of `rsip`.
//!
//! `rsip` parses and prints messages, but it neither checks Content-Length nor understands
//! compact header names or folded lines. This module does that work before handing bytes to
//! `rsip`, and caches the few header fields every layer needs in [`Msg`].
//!
//! A message that cannot be parsed, but whose request line and essential headers can be read,
//! is answered with a `400` carrying a reason phrase ([`Rejected::reply`]). Anything else is
//! dropped and counted by the caller.

use std::fmt::Write as _;
use std::net::IpAddr;

use rsip::headers::UntypedHeader;
use rsip::{Header, Headers};

use super::builder::{ALLOW, reason_phrase};
use super::transport::Transport;

/// The magic cookie that starts every RFC 3261 branch (RFC 3261 §8.1.1.7).
pub const BRANCH_MAGIC_COOKIE: &str = "z9hG4bK";

/// The SIP version token (RFC 3261 §7.1).
pub const SIP_VERSION: &str = "SIP/2.0";

/// Limits applied to every incoming message before it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest message accepted, in bytes (head plus body).
    pub max_message_bytes: usize,
    /// The largest number of header lines accepted.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 65_535,
            max_headers: 128,
        }
    }
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Larger than [`Limits::max_message_bytes`].
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The size seen.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// More header lines than [`Limits::max_headers`].
    #[error("more than {limit} header lines")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// No blank line ends the header section.
    #[error("no end of headers")]
    NoHeaderEnd,
    /// The body is shorter than the Content-Length header declares.
    #[error("body of {actual} bytes is shorter than Content-Length {declared}")]
    BodyTooShort {
        /// Content-Length.
        declared: usize,
        /// Bytes present.
        actual: usize,
    },
    /// Content-Length is not a number, or is missing on a stream transport.
    #[error("bad or missing Content-Length")]
    BadContentLength,
    /// Not UTF-8 in the header section.
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// The start line is not a SIP request or status line.
    #[error("bad start line")]
    BadStartLine,
    /// The method is not one this stack knows.
    #[error("unknown method {0}")]
    UnknownMethod(String),
    /// A mandatory header (RFC 3261 §8.1.1) is missing.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header is present but unreadable.
    #[error("malformed {0} header")]
    BadHeader(&'static str),
    /// The CSeq method differs from the request method (RFC 3261 §8.1.1.5).
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    /// A SIP version other than 2.0 (RFC 3261 §8.2.2.3... answered 505, §21.5.16).
    #[error("SIP version {0} is not supported")]
    VersionNotSupported(String),
    /// A Request-URI scheme other than sip, sips or tel (RFC 3261 §8.2.2.1: 416).
    #[error("unsupported URI scheme in {0:.40}")]
    UnsupportedScheme(String),
    /// A Request-URI that is not a bare URI: in `<>`, or with headers (RFC 3261 §19.1.5
    /// forbids headers in a Request-URI; RFC 4475 §3.1.2.7, §3.1.2.11).
    #[error("malformed Request-URI")]
    BadRequestUri,
    /// A header that may appear once appears more than once (RFC 3261 §7.3.1; RFC 4475
    /// §3.3.8).
    #[error("more than one {0} header")]
    DuplicateHeader(&'static str),
    /// `rsip` rejected the message.
    #[error("syntax error: {0}")]
    Syntax(String),
}

impl ParseError {
    /// The reason phrase of a 400 sent for this error.
    pub fn reason_phrase(&self) -> String {
        match self {
            ParseError::MissingHeader(h) => format!("Bad Request - missing {h}"),
            ParseError::BadHeader(h) => format!("Bad Request - malformed {h}"),
            ParseError::BodyTooShort { .. } => {
                "Bad Request - body shorter than Content-Length".into()
            }
            ParseError::BadContentLength => "Bad Request - bad Content-Length".into(),
            ParseError::CSeqMethodMismatch => "Bad Request - CSeq method mismatch".into(),
            ParseError::DuplicateHeader(h) => format!("Bad Request - more than one {h}"),
            ParseError::BadRequestUri => "Bad Request - malformed Request-URI".into(),
            ParseError::UnknownMethod(_) => "Not Implemented".into(),
            ParseError::TooLarge { .. } => "Message Too Large".into(),
            ParseError::VersionNotSupported(_) => "Version Not Supported".into(),
            ParseError::UnsupportedScheme(_) => "Unsupported URI Scheme".into(),
            _ => "Bad Request - malformed message".into(),
        }
    }

    /// The status code of a reply for this error: 501 for an unknown method (RFC 3261
    /// §8.2.1), 513 for an oversized message (§21.5.14), 505 for another SIP version
    /// (§21.5.16), 416 for an unsupported Request-URI scheme (§8.2.2.1), otherwise 400.
    pub fn status_code(&self) -> u16 {
        match self {
            ParseError::UnknownMethod(_) => 501,
            ParseError::TooLarge { .. } => 513,
            ParseError::VersionNotSupported(_) => 505,
            ParseError::UnsupportedScheme(_) => 416,
            _ => 400,
        }
    }
}

/// A message that was not accepted, with the reply to send when one can be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Why.
    pub error: ParseError,
    /// A complete response to send back (only for requests other than ACK).
    pub reply: Option<Vec<u8>>,
}

/// The request method, as far as this stack cares.
pub type Method = rsip::Method;

/// A parsed CSeq header (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number.
    pub seq: u32,
    /// The method.
    pub method: Method,
}

/// The fields of the top Via header that routing and matching need (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaInfo {
    /// The transport token.
    pub transport: Option<Transport>,
    /// The sent-by host.
    pub host: String,
    /// The sent-by port, if given.
    pub port: Option<u16>,
    /// The branch parameter.
    pub branch: Option<String>,
    /// `received` (RFC 3261 §18.2.1).
    pub received: Option<IpAddr>,
    /// `rport`: `None` when absent, `Some(None)` when present without a value (RFC 3581).
    pub rport: Option<Option<u16>>,
    /// `alias`: the sender asks that its connection be reused for requests to its sent-by
    /// address (RFC 5923 §5).
    pub alias: bool,
}

/// A parsed, checked message with its key header fields cached.
#[derive(Debug, Clone)]
pub struct Msg {
    /// The `rsip` message.
    pub inner: rsip::SipMessage,
    /// Call-ID.
    pub call_id: String,
    /// CSeq.
    pub cseq: CSeq,
    /// The From tag.
    pub from_tag: Option<String>,
    /// The To tag.
    pub to_tag: Option<String>,
    /// The top Via.
    pub via: ViaInfo,
    /// The raw top Via value.
    pub via_raw: String,
}

impl Msg {
    /// Drops the headers and the body, keeping the fields parsed out of them (Call-ID, CSeq,
    /// tags, top Via): what a transaction that only resends its response needs.
    pub fn strip(&mut self) {
        let (headers, body) = match &mut self.inner {
            rsip::SipMessage::Request(r) => (&mut r.headers, &mut r.body),
            rsip::SipMessage::Response(r) => (&mut r.headers, &mut r.body),
        };
        *headers = Headers::default();
        *body = Vec::new();
        self.via_raw = String::new();
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        match &self.inner {
            rsip::SipMessage::Request(r) => &r.headers,
            rsip::SipMessage::Response(r) => &r.headers,
        }
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        match &self.inner {
            rsip::SipMessage::Request(r) => &r.body,
            rsip::SipMessage::Response(r) => &r.body,
        }
    }

    /// The request, if this is one.
    pub fn request(&self) -> Option<&rsip::Request> {
        match &self.inner {
            rsip::SipMessage::Request(r) => Some(r),
            rsip::SipMessage::Response(_) => None,
        }
    }

    /// The response, if this is one.
    pub fn response(&self) -> Option<&rsip::Response> {
        match &self.inner {
            rsip::SipMessage::Request(_) => None,
            rsip::SipMessage::Response(r) => Some(r),
        }
    }

    /// The status code, for a response.
    pub fn status(&self) -> Option<u16> {
        self.response().map(|r| r.status_code.code())
    }

    /// The first value of a header, by name (case-insensitive, compact forms normalised).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(self.headers(), name)
    }

    /// The content type of the body, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
    }

    /// Whether a comma-separated option tag header (Require, Supported, Allow…) lists `tag`.
    pub fn has_option(&self, header_name: &str, tag: &str) -> bool {
        headers_named(self.headers(), header_name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(tag))
    }
}

/// Parses one complete message (a UDP datagram, or one framed from a stream).
///
/// On UDP a body longer than Content-Length is cut (RFC 3261 §18.3); a shorter one is an error.
/// A missing Content-Length on UDP means "the rest of the datagram"; on a stream the framer has
/// already required it.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Msg, Rejected> {
    let pre = match preprocess(bytes, limits) {
        Ok(p) => p,
        Err(error) => {
            let reply = build_rejection(bytes, &error);
            return Err(Rejected { error, reply });
        }
    };
    match finish_parse(&pre) {
        Ok(m) => Ok(m),
        Err(error) => {
            let reply = build_rejection(&pre, &error);
            Err(Rejected { error, reply })
        }
    }
}

/// Splits a byte stream into SIP messages by Content-Length (RFC 3261 §18.3).
///
/// Leading CRLFs between messages are keepalives (RFC 5626 §3.5.1): a double CRLF "ping" is
/// reported so the runtime can answer with a single CRLF "pong".
#[derive(Debug, Default)]
pub struct StreamFramer {
    buf: Vec<u8>,
}

/// One item taken from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message's bytes.
    Message(Vec<u8>),
    /// A CRLFCRLF keepalive ping; answer with CRLF.
    Ping,
    /// The stream cannot be framed (no usable Content-Length, or too large); close it.
    Broken(ParseError),
}

impl StreamFramer {
    /// A new, empty framer.
    pub fn new() -> Self {
        StreamFramer::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Takes the next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self, limits: &Limits) -> Option<Frame> {
        // Keepalives between messages.
        let mut skip = 0;
        while skip < self.buf.len() && (self.buf[skip] == b'\r' || self.buf[skip] == b'\n') {
            skip += 1;
        }
        if skip > 0 {
            let is_ping = self.buf[..skip].windows(4).any(|w| w == b"\r\n\r\n");
            self.buf.drain(..skip);
            if is_ping {
                return Some(Frame::Ping);
            }
        }
        if self.buf.is_empty() {
            return None;
        }
        let Some((head_end, body_start)) = find_head_end(&self.buf) else {
            if self.buf.len() > limits.max_message_bytes {
                return Some(Frame::Broken(ParseError::TooLarge {
                    size: self.buf.len(),
                    limit: limits.max_message_bytes,
                }));
            }
            return None;
        };
        let head = match std::str::from_utf8(&self.buf[..head_end]) {
            Ok(h) => h,
            Err(_) => return Some(Frame::Broken(ParseError::NotUtf8)),
        };
        let declared = match content_length_of(head) {
            Ok(Some(n)) => n,
            Ok(None) | Err(_) => return Some(Frame::Broken(ParseError::BadContentLength)),
        };
        let total = body_start + declared;
        if total > limits.max_message_bytes {
            return Some(Frame::Broken(ParseError::TooLarge {
                size: total,
                limit: limits.max_message_bytes,
            }));
        }
        if self.buf.len() < total {
            return None;
        }
        let msg: Vec<u8> = self.buf.drain(..total).collect();
        Some(Frame::Message(msg))
    }

    /// Bytes buffered but not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// The first value of a header by name (case-insensitive; compact forms are normalised at parse).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find_map(|h| {
        let (n, v) = name_value(h);
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// All values of a header by name, one per header line.
pub fn headers_named<'a>(
    headers: &'a Headers,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers.iter().filter_map(move |h| {
        let (n, v) = name_value(h);
        n.eq_ignore_ascii_case(name).then_some(v)
    })
}

/// The name and value of an `rsip` header.
pub fn name_value(h: &Header) -> (&str, &str) {
    match h {
        Header::Accept(v) => ("Accept", v.value()),
        Header::AcceptEncoding(v) => ("Accept-Encoding", v.value()),
        Header::AcceptLanguage(v) => ("Accept-Language", v.value()),
        Header::AlertInfo(v) => ("Alert-Info", v.value()),
        Header::Allow(v) => ("Allow", v.value()),
        Header::AuthenticationInfo(v) => ("Authentication-Info", v.value()),
        Header::Authorization(v) => ("Authorization", v.value()),
        Header::CSeq(v) => ("CSeq", v.value()),
        Header::CallId(v) => ("Call-ID", v.value()),
        Header::CallInfo(v) => ("Call-Info", v.value()),
        Header::Contact(v) => ("Contact", v.value()),
        Header::ContentDisposition(v) => ("Content-Disposition", v.value()),
        Header::ContentEncoding(v) => ("Content-Encoding", v.value()),
        Header::ContentLanguage(v) => ("Content-Language", v.value()),
        Header::ContentLength(v) => ("Content-Length", v.value()),
        Header::ContentType(v) => ("Content-Type", v.value()),
        Header::Date(v) => ("Date", v.value()),
        Header::ErrorInfo(v) => ("Error-Info", v.value()),
        Header::Event(v) => ("Event", v.value()),
        Header::Expires(v) => ("Expires", v.value()),
        Header::From(v) => ("From", v.value()),
        Header::InReplyTo(v) => ("In-Reply-To", v.value()),
        Header::MaxForwards(v) => ("Max-Forwards", v.value()),
        Header::MimeVersion(v) => ("MIME-Version", v.value()),
        Header::MinExpires(v) => ("Min-Expires", v.value()),
        Header::Organization(v) => ("Organization", v.value()),
        Header::Other(n, v) => (n.as_str(), v.as_str()),
        Header::Priority(v) => ("Priority", v.value()),
        Header::ProxyAuthenticate(v) => ("Proxy-Authenticate", v.value()),
        Header::ProxyAuthorization(v) => ("Proxy-Authorization", v.value()),
        Header::ProxyRequire(v) => ("Proxy-Require", v.value()),
        Header::RecordRoute(v) => ("Record-Route", v.value()),
        Header::ReplyTo(v) => ("Reply-To", v.value()),
        Header::Require(v) => ("Require", v.value()),
        Header::RetryAfter(v) => ("Retry-After", v.value()),
        Header::Route(v) => ("Route", v.value()),
        Header::Server(v) => ("Server", v.value()),
        Header::Subject(v) => ("Subject", v.value()),
        Header::SubscriptionState(v) => ("Subscription-State", v.value()),
        Header::Supported(v) => ("Supported", v.value()),
        Header::Timestamp(v) => ("Timestamp", v.value()),
        Header::To(v) => ("To", v.value()),
        Header::Unsupported(v) => ("Unsupported", v.value()),
        Header::UserAgent(v) => ("User-Agent", v.value()),
        Header::Via(v) => ("Via", v.value()),
        Header::Warning(v) => ("Warning", v.value()),
        Header::WwwAuthenticate(v) => ("WWW-Authenticate", v.value()),
    }
}

/// Builds an `rsip` header from a name and value (known names become typed variants, so
/// `rsip`'s own accessors keep working).
pub fn make_header(name: &str, value: impl Into<String>) -> Header {
    let value = value.into();
    match name {
        "Via" => Header::Via(rsip::headers::Via::new(value)),
        "From" => Header::From(rsip::headers::From::new(value)),
        "To" => Header::To(rsip::headers::To::new(value)),
        "Call-ID" => Header::CallId(rsip::headers::CallId::new(value)),
        "CSeq" => Header::CSeq(rsip::headers::CSeq::new(value)),
        "Contact" => Header::Contact(rsip::headers::Contact::new(value)),
        "Max-Forwards" => Header::MaxForwards(rsip::headers::MaxForwards::new(value)),
        "Content-Type" => Header::ContentType(rsip::headers::ContentType::new(value)),
        "Content-Length" => Header::ContentLength(rsip::headers::ContentLength::new(value)),
        "Route" => Header::Route(rsip::headers::Route::new(value)),
        "Record-Route" => Header::RecordRoute(rsip::headers::RecordRoute::new(value)),
        "Expires" => Header::Expires(rsip::headers::Expires::new(value)),
        "Authorization" => Header::Authorization(rsip::headers::Authorization::new(value)),
        "Proxy-Authorization" => {
            Header::ProxyAuthorization(rsip::headers::ProxyAuthorization::new(value))
        }
        "User-Agent" => Header::UserAgent(rsip::headers::UserAgent::new(value)),
        "Server" => Header::Server(rsip::headers::Server::new(value)),
        "Allow" => Header::Allow(rsip::headers::Allow::new(value)),
        "Supported" => Header::Supported(rsip::headers::Supported::new(value)),
        "Require" => Header::Require(rsip::headers::Require::new(value)),
        "Retry-After" => Header::RetryAfter(rsip::headers::RetryAfter::new(value)),
        _ => Header::Other(name.to_string(), value),
    }
}

/// Splits a header value at top-level commas (not inside quotes or angle brackets), leaving
/// out empty elements.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = split_list_keeping_empty(value);
    out.retain(|part| !part.is_empty());
    out
}

/// The URI inside a name-addr (`"Bob" <sip:bob@h>;tag=x` → `sip:bob@h`) or an addr-spec
/// (`sip:bob@h;tag=x` → `sip:bob@h`; header parameters follow the first `;` there).
pub fn uri_of(value: &str) -> &str {
    let v = value.trim();
    if let Some(open) = find_unquoted(v, b'<') {
        let rest = &v[open + 1..];
        return match rest.find('>') {
            Some(close) => rest[..close].trim(),
            None => rest.trim(),
        };
    }
    match v.find(';') {
        Some(i) => v[..i].trim(),
        None => v,
    }
}

/// A header parameter of a name-addr value (after `>` if present): `param("<sip:a>;tag=1", "tag")`.
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let v = value.trim();
    let params = match find_unquoted(v, b'<') {
        Some(open) => {
            let close = v[open..].find('>').map(|c| open + c + 1).unwrap_or(v.len());
            &v[close..]
        }
        None => v.find(';').map(|i| &v[i..]).unwrap_or(""),
    };
    param_in(params, name)
}

/// A `;name=value` parameter in a parameter list (name case-insensitive). A flag parameter
/// without a value yields `Some("")`.
pub fn param_in<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    for p in params.split(';') {
        let p = p.trim();
        if p.is_empty() {
            continue;
        }
        let (n, val) = match p.find('=') {
            Some(i) => (p[..i].trim(), p[i + 1..].trim()),
            None => (p, ""),
        };
        if n.eq_ignore_ascii_case(name) {
            return Some(val.trim_matches('"'));
        }
    }
    None
}

/// Parses a Via value (the first via-parm if several are comma-separated).
pub fn parse_via(value: &str) -> Option<ViaInfo> {
    let first = split_list(value).into_iter().next()?;
    parse_via_value(first)
}

/// One via-parm (RFC 3261 §20.42): `sent-protocol LWS sent-by *( SEMI via-params )`, where
/// the slashes of sent-protocol may have whitespace around them (SLASH = SWS "/" SWS, as in
/// RFC 4475 §3.1.1.1), and every parameter has a name.
fn parse_via_value(v: &str) -> Option<ViaInfo> {
    let mut fields = [""; 3];
    let mut rest = v.trim_start();
    for (i, field) in fields.iter_mut().enumerate() {
        if i > 0 {
            rest = rest.trim_start().strip_prefix('/')?.trim_start();
        }
        let end = rest
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(rest.len());
        *field = &rest[..end];
        rest = &rest[end..];
    }
    let [name, ver, transport] = fields;
    if !name.eq_ignore_ascii_case("SIP") || ver != "2.0" || transport.is_empty() {
        return None;
    }
    // LWS between sent-protocol and sent-by.
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim();
    let (sent_by, params) = match rest.find(';') {
        Some(i) => (rest[..i].trim(), &rest[i..]),
        None => (rest, ""),
    };
    let valid_params = params.split(';').skip(1).all(|p| {
        let name = p.split('=').next().unwrap_or("").trim();
        !name.is_empty() && name.bytes().all(is_token_char)
    });
    if sent_by.is_empty() || sent_by.contains(char::is_whitespace) || !valid_params {
        return None;
    }
    let (host, port) = split_host_port(sent_by)?;
    let rport = param_in(params, "rport").map(|v| v.parse::<u16>().ok());
    Some(ViaInfo {
        transport: Transport::parse(transport),
        host: host.to_string(),
        port,
        branch: param_in(params, "branch").map(str::to_string),
        received: param_in(params, "received").and_then(|v| v.parse().ok()),
        rport,
        alias: param_in(params, "alias").is_some(),
    })
}

/// Whether a Via header value is a list of well-formed via-parms, with no empty element
/// (RFC 4475 §3.1.2.1: `Via: SIP/2.0/UDP 192.0.2.15;;,;,,` is not).
fn valid_via_list(value: &str) -> bool {
    split_list_keeping_empty(value)
        .into_iter()
        .all(|v| parse_via_value(v).is_some())
}

/// Headers that may appear at most once in a message (RFC 3261 §7.3.1: only headers whose
/// grammar is a comma-separated list may be repeated).
const SINGLETONS: [&str; 6] = [
    "Call-ID",
    "CSeq",
    "From",
    "To",
    "Max-Forwards",
    "Content-Type",
];

/// Whether a media type such as a Content-Type value (with or without parameters) is
/// `want`, case-insensitively (RFC 3261 §20.15).
pub fn media_type_is(value: &str, want: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(want))
}

/// A token character (RFC 3261 §25.1).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Checks a Request-URI before `rsip` sees it: a bare URI (no `<>`, no headers), of a scheme
/// voxline serves.
fn check_request_uri(uri: &str) -> Result<(), ParseError> {
    if uri.starts_with('<') || uri.contains('>') || uri.contains('?') {
        return Err(ParseError::BadRequestUri);
    }
    let scheme = uri.split(':').next().unwrap_or("");
    if !["sip", "sips", "tel"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
    {
        return Err(ParseError::UnsupportedScheme(uri.to_string()));
    }
    Ok(())
}

/// Whether a From, To or Contact value is a well-formed name-addr or addr-spec as far as
/// voxline reads it (RFC 3261 §20.10, §25.1): quotes balanced; a `<` closed by a `>` with no
/// whitespace just inside them (LAQUOT, RAQUOT), no unquoted comma in the display name, and
/// only parameters after the `>`; an addr-spec without `<>` may not hold `,` or `?`
/// (RFC 4475 §3.1.2.6, §3.1.2.13, §3.1.2.14, §3.1.2.15).
fn valid_name_addr(value: &str) -> bool {
    let v = value.trim();
    let b = v.as_bytes();
    let (mut in_quotes, mut lt, mut gt) = (false, None, None);
    let mut comma_outside = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if in_quotes => i += 1,
            b'"' if lt.is_none() => in_quotes = !in_quotes,
            b'<' if !in_quotes && lt.is_none() => lt = Some(i),
            b'>' if !in_quotes && lt.is_some() && gt.is_none() => gt = Some(i),
            b',' if !in_quotes && (lt.is_none() || gt.is_some()) => comma_outside = true,
            _ => {}
        }
        i += 1;
    }
    if in_quotes || comma_outside {
        return false;
    }
    match (lt, gt) {
        (Some(l), Some(g)) => {
            let inside_ok = b.get(l + 1).is_some_and(|c| !c.is_ascii_whitespace())
                && b.get(g - 1).is_some_and(|c| !c.is_ascii_whitespace());
            let after = v[g + 1..].trim_start();
            inside_ok && (after.is_empty() || after.starts_with(';'))
        }
        (Some(_), None) => false,
        (None, _) => {
            let spec = v.split(';').next().unwrap_or("").trim();
            !spec.contains(['?', '>', ',']) && !spec.contains(char::is_whitespace)
        }
    }
}

/// Splits a header value at top-level commas, keeping empty elements.
fn split_list_keeping_empty(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_quotes, mut in_angle, mut start) = (false, false, 0);
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b'<' if !in_quotes => in_angle = true,
            b'>' if !in_quotes => in_angle = false,
            b',' if !in_quotes && !in_angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    out.push(value.get(start..).unwrap_or("").trim());
    out
}

/// Splits `host[:port]`, including `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']')?;
        let host = &rest[..close];
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    match s.rfind(':') {
        Some(i) if s[..i].contains(':') => Some((s, None)), // bare IPv6 without brackets
        Some(i) => Some((&s[..i], Some(s[i + 1..].parse().ok()?))),
        None => Some((s, None)),
    }
}

/// Host and port of a SIP URI string (`sip:user@host:port;params`).
pub fn uri_host_port(uri: &str) -> Option<(String, Option<u16>)> {
    let u = uri.trim();
    let rest = u
        .strip_prefix("sip:")
        .or_else(|| u.strip_prefix("sips:"))
        .or_else(|| u.strip_prefix("SIP:"))?;
    let rest = match rest.rfind('@') {
        Some(i) => &rest[i + 1..],
        None => rest,
    };
    let end = rest.find([';', '?']).unwrap_or(rest.len());
    let (h, p) = split_host_port(&rest[..end])?;
    Some((h.to_string(), p))
}

/// The user part of a SIP URI string, if any.
pub fn uri_user(uri: &str) -> Option<&str> {
    let u = uri.trim();
    let rest = u.strip_prefix("sip:").or_else(|| u.strip_prefix("sips:"))?;
    let at = rest.rfind('@')?;
    let user = &rest[..at];
    Some(user.split(':').next().unwrap_or(user))
}

/// A URI parameter (`sip:h;transport=tcp;lr`).
pub fn uri_param<'a>(uri: &'a str, name: &str) -> Option<&'a str> {
    let u = uri.trim();
    let end = u.find('?').unwrap_or(u.len());
    u[..end].find(';').and_then(|i| param_in(&u[i..end], name))
}

// ----- private helpers -----

fn find_unquoted(s: &str, needle: u8) -> Option<usize> {
    let mut in_quotes = false;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            c if c == needle && !in_quotes => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Returns (end of header lines, start of body).
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn content_length_of(head: &str) -> Result<Option<usize>, ParseError> {
    for line in head.lines().skip(1) {
        let Some(colon) = line.find(':') else {
            continue;
        };
        let name = line[..colon].trim();
        if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
            return line[colon + 1..]
                .trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|_| ParseError::BadContentLength);
        }
    }
    Ok(None)
}

/// Compact header forms (RFC 3261 §7.3.3, RFC 3515, RFC 4028).
fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'r' => "Refer-To",
        b'x' => "Session-Expires",
        b'o' => "Event",
        _ => name,
    }
}

/// Checks limits, unfolds continuation lines, expands compact names, fixes line endings and
/// applies Content-Length. Returns a normalised message ready for `rsip`.
fn preprocess(bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, ParseError> {
    if bytes.len() > limits.max_message_bytes {
        return Err(ParseError::TooLarge {
            size: bytes.len(),
            limit: limits.max_message_bytes,
        });
    }
    // Tolerate leading CRLFs (RFC 3261 §7.5).
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let (head_end, body_start) = find_head_end(bytes).ok_or(ParseError::NoHeaderEnd)?;
    let head = std::str::from_utf8(&bytes[..head_end]).map_err(|_| ParseError::NotUtf8)?;
    let body = &bytes[body_start..];

    let mut out = String::with_capacity(bytes.len() + 32);
    let mut lines: Vec<String> = Vec::new();
    for raw in head.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if (line.starts_with(' ') || line.starts_with('\t')) && !lines.is_empty() {
            // Folded continuation (RFC 3261 §7.3.1): join with a single space.
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
            continue;
        }
        lines.push(line.to_string());
    }
    if lines.len().saturating_sub(1) > limits.max_headers {
        return Err(ParseError::TooManyHeaders {
            limit: limits.max_headers,
        });
    }
    let mut declared = None;
    for (i, line) in lines.iter().enumerate() {
        if i == 0 {
            out.push_str(&start_line_for_rsip(line.trim_end()));
            out.push_str("\r\n");
            continue;
        }
        let Some(colon) = line.find(':') else {
            return Err(ParseError::Syntax(format!(
                "header line without colon: {line:.40}"
            )));
        };
        let name = expand_compact(line[..colon].trim());
        let value = line[colon + 1..].trim();
        if name.eq_ignore_ascii_case("Content-Length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| ParseError::BadContentLength)?;
            // Two different lengths: which one frames the body is anyone's guess (RFC 4475
            // §3.3.9).
            if declared.is_some_and(|d| d != n) {
                return Err(ParseError::BadContentLength);
            }
            declared = Some(n);
            continue; // re-added below with the real length
        }
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let body = match declared {
        Some(n) if n > body.len() => {
            return Err(ParseError::BodyTooShort {
                declared: n,
                actual: body.len(),
            });
        }
        Some(n) => &body[..n],
        None => body,
    };
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    let mut v = out.into_bytes();
    v.extend_from_slice(body);
    Ok(v)
}

/// The start line as `rsip` can read it, meaning unchanged:
///
/// * a status line with an empty reason phrase (RFC 4475 §3.1.1.13: `SIP/2.0 100 `, which
///   the grammar allows) gets the code's standard phrase;
/// * a `;` in the user part of a Request-URI (RFC 4475 §3.1.1.9: `sip:user;par=v@host`, an
///   unusual but valid user) is carried escaped, as `%3B`.
fn start_line_for_rsip(line: &str) -> String {
    let mut parts = line.splitn(3, ' ');
    let (a, b, c) = (parts.next(), parts.next(), parts.next());
    match (a, b, c) {
        (Some(v), Some(code), None) if v.starts_with("SIP/") => {
            let phrase = code.parse().map_or("Unknown", reason_phrase);
            format!("{v} {code} {phrase}")
        }
        (Some(method), Some(uri), Some(ver)) if !method.starts_with("SIP/") => {
            match (uri.find(':'), uri.rfind('@')) {
                (Some(colon), Some(at)) if colon < at && uri[colon..at].contains(';') => {
                    let user = uri[colon + 1..at].replace(';', "%3B");
                    format!("{method} {}{user}{} {ver}", &uri[..=colon], &uri[at..])
                }
                _ => line.to_string(),
            }
        }
        _ => line.to_string(),
    }
}

fn finish_parse(pre: &[u8]) -> Result<Msg, ParseError> {
    let first_line_end = pre.iter().position(|b| *b == b'\r').unwrap_or(pre.len());
    let first = std::str::from_utf8(&pre[..first_line_end]).map_err(|_| ParseError::NotUtf8)?;
    let is_response = first.starts_with("SIP/");
    if !is_response {
        let mut it = first.split(' ');
        let method = it.next().unwrap_or("");
        let uri = it.next().unwrap_or("");
        let ver = it.next().unwrap_or("");
        if method.is_empty() || uri.is_empty() || it.next().is_some() {
            return Err(ParseError::BadStartLine);
        }
        if ver != SIP_VERSION {
            return Err(match ver.strip_prefix("SIP/") {
                Some(v) if !v.is_empty() => ParseError::VersionNotSupported(ver.to_string()),
                _ => ParseError::BadStartLine,
            });
        }
        if method.parse::<rsip::Method>().is_err() || method.bytes().any(|b| b.is_ascii_lowercase())
        {
            return Err(ParseError::UnknownMethod(method.to_string()));
        }
        check_request_uri(uri)?;
    }
    let inner = rsip::SipMessage::try_from(pre).map_err(|e| ParseError::Syntax(e.to_string()))?;
    let headers = match &inner {
        rsip::SipMessage::Request(r) => &r.headers,
        rsip::SipMessage::Response(r) => &r.headers,
    };
    for name in SINGLETONS {
        if headers_named(headers, name).nth(1).is_some() {
            return Err(ParseError::DuplicateHeader(name));
        }
    }
    let via_raw = header(headers, "Via")
        .ok_or(ParseError::MissingHeader("Via"))?
        .to_string();
    if !headers_named(headers, "Via").all(valid_via_list) {
        return Err(ParseError::BadHeader("Via"));
    }
    let via = parse_via(&via_raw).ok_or(ParseError::BadHeader("Via"))?;
    let from = header(headers, "From").ok_or(ParseError::MissingHeader("From"))?;
    let to = header(headers, "To").ok_or(ParseError::MissingHeader("To"))?;
    let call_id = header(headers, "Call-ID").ok_or(ParseError::MissingHeader("Call-ID"))?;
    if call_id.trim().is_empty() {
        return Err(ParseError::BadHeader("Call-ID"));
    }
    let cseq_raw = header(headers, "CSeq").ok_or(ParseError::MissingHeader("CSeq"))?;
    let cseq = parse_cseq(cseq_raw).ok_or(ParseError::BadHeader("CSeq"))?;
    if uri_of(from).is_empty() || !valid_name_addr(from) {
        return Err(ParseError::BadHeader("From"));
    }
    if uri_of(to).is_empty() || !valid_name_addr(to) {
        return Err(ParseError::BadHeader("To"));
    }
    let contacts_ok = headers_named(headers, "Contact")
        .flat_map(split_list)
        .all(|c| c == "*" || valid_name_addr(c));
    if !contacts_ok {
        return Err(ParseError::BadHeader("Contact"));
    }
    if let rsip::SipMessage::Request(r) = &inner
        && r.method != cseq.method
    {
        return Err(ParseError::CSeqMethodMismatch);
    }
    let from_tag = param(from, "tag")
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    let to_tag = param(to, "tag")
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok(Msg {
        call_id: call_id.trim().to_string(),
        cseq,
        from_tag,
        to_tag,
        via,
        via_raw,
        inner,
    })
}

/// Parses `CSeq: 1 INVITE`; the number must fit 31 bits (RFC 3261 §8.1.1.5).
pub fn parse_cseq(v: &str) -> Option<CSeq> {
    let mut it = v.split_whitespace();
    let seq: u32 = it.next()?.parse().ok()?;
    if seq >= 1 << 31 {
        return None;
    }
    let method_tok = it.next()?;
    if it.next().is_some() {
        return None;
    }
    let method: rsip::Method = method_tok.parse().ok()?;
    Some(CSeq { seq, method })
}

/// Builds a reply to a request that failed to parse, from whatever raw lines are readable.
/// Returns `None` for responses, ACKs, and requests without the headers a reply must echo.
fn build_rejection(bytes: &[u8], error: &ParseError) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_start_matches(['\r', '\n']);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next()?;
    let method = first.split(' ').next()?;
    if first.starts_with("SIP/") || method.eq_ignore_ascii_case("ACK") || method.is_empty() {
        return None;
    }
    let version_ok = first.ends_with(SIP_VERSION)
        || matches!(error, ParseError::VersionNotSupported(v) if first.ends_with(v.as_str()));
    if !version_ok {
        return None;
    }
    let mut vias = Vec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.find(':') else {
            continue;
        };
        let name = expand_compact(line[..colon].trim());
        let value = line[colon + 1..].trim();
        match name.to_ascii_lowercase().as_str() {
            "via" => vias.push(value.to_string()),
            "from" => from = Some(value.to_string()),
            "to" => to = Some(value.to_string()),
            "call-id" => call_id = Some(value.to_string()),
            "cseq" => cseq = Some(value.to_string()),
            _ => {}
        }
    }
    // Without a Via there is nowhere to send the answer. A request that lacks From, To or
    // Call-ID still gets its 400, with what it has (RFC 4475 §3.3.1).
    if vias.is_empty() {
        return None;
    }
    let mut out = format!(
        "{SIP_VERSION} {} {}\r\n",
        error.status_code(),
        error.reason_phrase()
    );
    for v in vias {
        out.push_str("Via: ");
        out.push_str(&v);
        out.push_str("\r\n");
    }
    for (name, value) in [("From", from), ("To", to), ("Call-ID", call_id)] {
        if let Some(v) = value {
            let _ = write!(out, "{name}: {v}\r\n");
        }
    }
    if matches!(error, ParseError::UnknownMethod(_)) {
        // RFC 3261 §8.2.1: a 501 lists the methods understood.
        let _ = write!(out, "Allow: {ALLOW}\r\n");
    }
    // A reply needs a CSeq; echo it when readable, else synthesise from the method.
    let cseq = cseq.unwrap_or_else(|| format!("0 {method}"));
    let _ = write!(out, "CSeq: {cseq}\r\nContent-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:1000@127.0.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1;rport\r\n\
f: \"Alice\" <sip:alice@10.0.0.1>;tag=abc\r\n\
t: <sip:1000@127.0.0.1>\r\n\
i: call-1@10.0.0.1\r\n\
CSeq: 1 INVITE\r\n\
Subject: folded\r\n  line\r\n\
l: 4\r\n\r\nbodyEXTRA";

    #[test]
    fn parses_compact_folded_and_cuts_long_body() {
        let m = parse(INVITE.as_bytes(), &Limits::default()).expect("parses");
        assert_eq!(m.call_id, "call-1@10.0.0.1");
        assert_eq!(m.cseq.seq, 1);
        assert_eq!(m.from_tag.as_deref(), Some("abc"));
        assert_eq!(m.to_tag, None);
        assert_eq!(m.body(), b"body");
        assert_eq!(m.header("Subject"), Some("folded line"));
        assert_eq!(m.via.branch.as_deref(), Some("z9hG4bK-1"));
        assert_eq!(m.via.rport, Some(None));
        assert_eq!(m.via.port, Some(5070));
    }

    #[test]
    fn short_body_is_400_with_reason() {
        let bad = INVITE.replace("l: 4", "l: 40");
        let r = parse(bad.as_bytes(), &Limits::default()).expect_err("rejected");
        assert!(matches!(
            r.error,
            ParseError::BodyTooShort {
                declared: 40,
                actual: 9
            }
        ));
        let reply = String::from_utf8(r.reply.expect("answerable")).expect("utf8");
        assert!(
            reply.starts_with("SIP/2.0 400 Bad Request - body shorter than Content-Length\r\n")
        );
        assert!(reply.contains("Call-ID: call-1@10.0.0.1\r\n"));
    }

    #[test]
    fn missing_cseq_is_400() {
        let bad = INVITE.replace("CSeq: 1 INVITE\r\n", "");
        let r = parse(bad.as_bytes(), &Limits::default()).expect_err("rejected");
        assert_eq!(r.error, ParseError::MissingHeader("CSeq"));
        let reply = String::from_utf8(r.reply.expect("answerable")).expect("utf8");
        assert!(reply.starts_with("SIP/2.0 400 Bad Request - missing CSeq"));
    }

    #[test]
    fn garbage_is_dropped_without_reply() {
        for g in [
            &b"\x00\x01\x02"[..],
            b"hello world\r\n\r\n",
            b"",
            b"SIP/2.0 200 OK\r\n\r\n",
        ] {
            let r = parse(g, &Limits::default()).expect_err("rejected");
            assert!(r.reply.is_none(), "{r:?}");
        }
    }

    #[test]
    fn limits_apply() {
        let limits = Limits {
            max_message_bytes: 100,
            max_headers: 3,
        };
        let r = parse(INVITE.as_bytes(), &limits).expect_err("too large");
        assert!(matches!(r.error, ParseError::TooLarge { .. }));
        let limits = Limits {
            max_message_bytes: 10_000,
            max_headers: 3,
        };
        let r = parse(INVITE.as_bytes(), &limits).expect_err("too many");
        assert!(matches!(r.error, ParseError::TooManyHeaders { limit: 3 }));
    }

    #[test]
    fn unknown_method_is_501() {
        let bad = INVITE
            .replace("INVITE sip", "FROB sip")
            .replace("1 INVITE", "1 FROB");
        let r = parse(bad.as_bytes(), &Limits::default()).expect_err("rejected");
        assert_eq!(r.error.status_code(), 501);
        assert!(r.reply.is_some());
    }

    #[test]
    fn framer_splits_by_content_length() {
        let mut f = StreamFramer::new();
        let one = "OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 3\r\n\r\nabc";
        let both = format!("\r\n\r\n{one}{one}");
        let (a, b) = both.as_bytes().split_at(30);
        f.push(a);
        let limits = Limits::default();
        assert_eq!(f.next_frame(&limits), Some(Frame::Ping));
        assert_eq!(f.next_frame(&limits), None);
        f.push(b);
        assert_eq!(
            f.next_frame(&limits),
            Some(Frame::Message(one.as_bytes().to_vec()))
        );
        assert_eq!(
            f.next_frame(&limits),
            Some(Frame::Message(one.as_bytes().to_vec()))
        );
        assert_eq!(f.next_frame(&limits), None);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n");
        assert_eq!(
            f.next_frame(&limits),
            Some(Frame::Broken(ParseError::BadContentLength))
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(uri_of("\"A, B\" <sip:a@b;lr>;tag=1"), "sip:a@b;lr");
        assert_eq!(param("\"A;B\" <sip:a@b;x=y>;tag=1", "tag"), Some("1"));
        assert_eq!(param("sip:a@b;tag=2", "tag"), Some("2"));
        assert_eq!(
            split_list("<sip:a;lr>, <sip:b,c>, \"x,y\" <sip:c>").len(),
            3
        );
        assert_eq!(
            uri_host_port("sip:u@[::1]:5070;transport=tcp"),
            Some(("::1".into(), Some(5070)))
        );
        assert_eq!(uri_user("sip:1000@host"), Some("1000"));
        assert_eq!(uri_param("sip:h;transport=tcp;lr", "lr"), Some(""));
        assert_eq!(parse_cseq("4711 INVITE").map(|c| c.seq), Some(4711));
        assert!(parse_cseq("99999999999 INVITE").is_none());
    }
}
