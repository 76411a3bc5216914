//! Building outgoing requests and responses with `rsip`.

use std::fmt::Write as _;

use rsip::{Header, Headers};

use super::Body;
use super::message::{Msg, SIP_VERSION, make_header};

/// Methods voxline accepts, for Allow headers (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, PRACK, REFER, NOTIFY";
/// Extensions voxline supports (RFC 3262 100rel, RFC 4028 timer, RFC 3515 norefersub is not).
pub const SUPPORTED: &str = "100rel, timer";

/// The body types voxline reads (RFC 3261 §20.1): offers and answers in SDP.
pub const ACCEPT: &str = "application/sdp";
/// Max-Forwards on new requests (RFC 3261 §8.1.1.6).
pub const MAX_FORWARDS: u32 = 70;

/// The fields of an outgoing request.
#[derive(Debug, Clone)]
pub struct RequestSpec<'a> {
    /// Method.
    pub method: rsip::Method,
    /// Request-URI.
    pub uri: &'a str,
    /// Complete top Via value.
    pub via: String,
    /// From value.
    pub from: &'a str,
    /// To value.
    pub to: &'a str,
    /// Call-ID.
    pub call_id: &'a str,
    /// CSeq number.
    pub cseq: u32,
    /// Contact value, if any.
    pub contact: Option<&'a str>,
    /// Route values, in order.
    pub routes: &'a [String],
    /// Further headers.
    pub extra: Vec<(&'static str, String)>,
    /// Body.
    pub body: Option<&'a Body>,
    /// User-Agent value.
    pub user_agent: &'a str,
}

/// Builds and prints a request.
pub fn build_request(spec: &RequestSpec<'_>) -> Vec<u8> {
    let mut headers: Vec<Header> = Vec::with_capacity(12 + spec.extra.len());
    headers.push(make_header("Via", spec.via.clone()));
    headers.push(make_header("Max-Forwards", MAX_FORWARDS.to_string()));
    headers.push(make_header("From", spec.from));
    headers.push(make_header("To", spec.to));
    headers.push(make_header("Call-ID", spec.call_id));
    headers.push(make_header(
        "CSeq",
        format!("{} {}", spec.cseq, spec.method),
    ));
    for r in spec.routes {
        headers.push(make_header("Route", r.clone()));
    }
    if let Some(c) = spec.contact {
        headers.push(make_header("Contact", c));
    }
    headers.push(make_header("User-Agent", spec.user_agent));
    for (n, v) in &spec.extra {
        headers.push(make_header(n, v.clone()));
    }
    let body = finish_body(&mut headers, spec.body);
    // rsip's Uri parser is strict; print the start line ourselves and let rsip print headers.
    let mut out = String::with_capacity(512 + body.len());
    let _ = write!(out, "{} {} {}\r\n", spec.method, spec.uri, SIP_VERSION);
    let _ = write!(out, "{}", Headers::from(headers));
    out.push_str("\r\n");
    let mut v = out.into_bytes();
    v.extend_from_slice(&body);
    v
}

/// Builds and prints a response to `req` (RFC 3261 §8.2.6): Via (all, as received and
/// annotated), From, To (with `to_tag` added when it has none), Call-ID and CSeq are copied.
pub fn build_response(
    req: &Msg,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&'static str, String)],
    body: Option<&Body>,
) -> Vec<u8> {
    let mut headers: Vec<Header> = Vec::with_capacity(10 + extra.len());
    let mut first_via = true;
    for h in req.headers().iter() {
        let (name, value) = super::message::name_value(h);
        match name {
            "Via" => {
                if first_via {
                    headers.push(make_header("Via", req.via_raw.clone()));
                    first_via = false;
                } else {
                    headers.push(make_header("Via", value));
                }
            }
            "From" | "Call-ID" | "CSeq" => headers.push(make_header(name, value)),
            "To" => {
                let v = match (to_tag, &req.to_tag) {
                    (Some(tag), None) if code > 100 => format!("{value};tag={tag}"),
                    _ => value.to_string(),
                };
                headers.push(make_header("To", v));
            }
            "Record-Route" if (101..300).contains(&code) => headers.push(make_header(name, value)),
            _ => {}
        }
    }
    for (n, v) in extra {
        headers.push(make_header(n, v.clone()));
    }
    let body = finish_body(&mut headers, body);
    let mut out = String::with_capacity(400 + body.len());
    let _ = write!(out, "{SIP_VERSION} {code} {reason}\r\n");
    let _ = write!(out, "{}", Headers::from(headers));
    out.push_str("\r\n");
    let mut v = out.into_bytes();
    v.extend_from_slice(&body);
    v
}

/// The standard reason phrase for a status code (RFC 3261 §21).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        489 => "Bad Event",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        _ => "Unknown",
    }
}

fn finish_body(headers: &mut Vec<Header>, body: Option<&Body>) -> Vec<u8> {
    match body {
        Some(b) if !b.data.is_empty() => {
            headers.push(make_header("Content-Type", b.content_type.clone()));
            headers.push(make_header("Content-Length", b.data.len().to_string()));
            b.data.clone()
        }
        _ => {
            headers.push(make_header("Content-Length", "0"));
            Vec::new()
        }
    }
}
