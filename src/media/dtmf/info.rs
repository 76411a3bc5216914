//! DTMF in SIP INFO bodies: `application/dtmf-relay` and `application/dtmf`.
//!
//! Neither format has an RFC; both are de-facto (Cisco's `dtmf-relay`, and the older
//! `application/dtmf` used by some gateways):
//!
//! ```text
//! Content-Type: application/dtmf-relay      Content-Type: application/dtmf
//!
//! Signal=5                                  5
//! Duration=160
//! ```
//!
//! Parsing is tolerant of what real peers send: any case for the keys, spaces around `=`,
//! LF-only line ends, unknown extra lines, a missing `Duration` (then
//! [`DEFAULT_DURATION_MS`]), lower-case `a`-`d`, and the numeric event codes 10-15 for
//! `*`, `#` and `A`-`D` (RFC 4733 §3.2 numbering, sent by some devices). Anything else is an
//! [`InfoError`].

use std::fmt::Write as _;
use std::time::Instant;

use super::{Digit, DtmfDigit, DtmfMethod};

/// Content type of the Cisco-style `Signal=`/`Duration=` body.
pub const CONTENT_TYPE_DTMF_RELAY: &str = "application/dtmf-relay";

/// Content type of the body that is just the key.
pub const CONTENT_TYPE_DTMF: &str = "application/dtmf";

/// Duration assumed when a body does not say (the customary default of SIP phones).
pub const DEFAULT_DURATION_MS: u32 = 250;

/// What is wrong with an INFO DTMF body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InfoError {
    /// The content type is neither `application/dtmf-relay` nor `application/dtmf`.
    #[error("unsupported DTMF INFO content type '{0}'")]
    UnsupportedContentType(String),
    /// The body is not UTF-8 text.
    #[error("DTMF INFO body is not text")]
    NotText,
    /// The body is empty or blank.
    #[error("empty DTMF INFO body")]
    Empty,
    /// A `dtmf-relay` body has no `Signal=` line.
    #[error("DTMF INFO body has no Signal")]
    MissingSignal,
    /// A field appears twice.
    #[error("DTMF INFO body repeats '{0}'")]
    DuplicateField(String),
    /// The signal is not a DTMF key (a hook flash, `!` or `16`, included).
    #[error("DTMF INFO signal '{0}' is not a DTMF key")]
    BadSignal(String),
    /// The duration is not a whole number of milliseconds.
    #[error("DTMF INFO duration '{0}' is not a number of milliseconds")]
    BadDuration(String),
    /// A `dtmf-relay` line is not `name=value`.
    #[error("malformed DTMF INFO line '{0}'")]
    MalformedLine(String),
}

/// The two body formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InfoFormat {
    /// `application/dtmf-relay`: `Signal=5\r\nDuration=160\r\n`.
    DtmfRelay,
    /// `application/dtmf`: `5`.
    Dtmf,
}

impl InfoFormat {
    /// The format for a `Content-Type` value; parameters (`; charset=...`) and case are
    /// ignored.
    pub fn from_content_type(content_type: &str) -> Result<Self, InfoError> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case(CONTENT_TYPE_DTMF_RELAY) {
            Ok(InfoFormat::DtmfRelay)
        } else if media_type.eq_ignore_ascii_case(CONTENT_TYPE_DTMF) {
            Ok(InfoFormat::Dtmf)
        } else {
            Err(InfoError::UnsupportedContentType(content_type.to_owned()))
        }
    }

    /// The `Content-Type` to send this format with.
    pub const fn content_type(self) -> &'static str {
        match self {
            InfoFormat::DtmfRelay => CONTENT_TYPE_DTMF_RELAY,
            InfoFormat::Dtmf => CONTENT_TYPE_DTMF,
        }
    }
}

/// A key press carried by one INFO request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoDtmf {
    /// The key.
    pub digit: Digit,
    /// How long it was held; [`DEFAULT_DURATION_MS`] when the body does not say.
    pub duration_ms: u32,
}

impl InfoDtmf {
    /// The key press as a [`DtmfDigit`], for a request that arrived at `now`.
    pub fn to_dtmf_digit(&self, now: Instant) -> DtmfDigit {
        DtmfDigit {
            digit: self.digit,
            method: DtmfMethod::SipInfo,
            duration_ms: self.duration_ms,
            at: now,
        }
    }

    /// The body to send in this format (`application/dtmf` carries no duration).
    pub fn to_body(&self, format: InfoFormat) -> String {
        match format {
            InfoFormat::DtmfRelay => build_dtmf_relay(self.digit, self.duration_ms),
            InfoFormat::Dtmf => build_dtmf(self.digit),
        }
    }
}

/// Parses an INFO body of either format, chosen by its `Content-Type`.
pub fn parse_info_body(content_type: &str, body: &[u8]) -> Result<InfoDtmf, InfoError> {
    match InfoFormat::from_content_type(content_type)? {
        InfoFormat::DtmfRelay => parse_dtmf_relay(body),
        InfoFormat::Dtmf => parse_dtmf(body),
    }
}

/// Parses an `application/dtmf-relay` body.
pub fn parse_dtmf_relay(body: &[u8]) -> Result<InfoDtmf, InfoError> {
    let text = std::str::from_utf8(body).map_err(|_| InfoError::NotText)?;
    if text.trim().is_empty() {
        return Err(InfoError::Empty);
    }
    let mut signal = None;
    let mut duration = None;
    for line in text.split('\n').map(str::trim).filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| InfoError::MalformedLine(line.to_owned()))?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err(InfoError::MalformedLine(line.to_owned()));
        }
        if name.eq_ignore_ascii_case("signal") {
            if signal.is_some() {
                return Err(InfoError::DuplicateField(name.to_owned()));
            }
            signal = Some(parse_signal(value)?);
        } else if name.eq_ignore_ascii_case("duration") {
            if duration.is_some() {
                return Err(InfoError::DuplicateField(name.to_owned()));
            }
            duration = Some(parse_duration(value)?);
        }
        // Other fields are ignored.
    }
    Ok(InfoDtmf {
        digit: signal.ok_or(InfoError::MissingSignal)?,
        duration_ms: duration.flatten().unwrap_or(DEFAULT_DURATION_MS),
    })
}

/// Parses an `application/dtmf` body: the key alone, surrounding white space allowed.
pub fn parse_dtmf(body: &[u8]) -> Result<InfoDtmf, InfoError> {
    let text = std::str::from_utf8(body).map_err(|_| InfoError::NotText)?;
    let value = text.trim();
    if value.is_empty() {
        return Err(InfoError::Empty);
    }
    Ok(InfoDtmf {
        digit: parse_signal(value)?,
        duration_ms: DEFAULT_DURATION_MS,
    })
}

/// An `application/dtmf-relay` body: `Signal=<key>\r\nDuration=<ms>\r\n`.
pub fn build_dtmf_relay(digit: Digit, duration_ms: u32) -> String {
    let mut body = String::new();
    // Writing to a String cannot fail.
    let _ = write!(body, "Signal={digit}\r\nDuration={duration_ms}\r\n");
    body
}

/// An `application/dtmf` body: the key alone.
pub fn build_dtmf(digit: Digit) -> String {
    digit.to_string()
}

/// A key, as one character or as an RFC 4733 event code 0-15.
fn parse_signal(value: &str) -> Result<Digit, InfoError> {
    let bad = || InfoError::BadSignal(value.to_owned());
    if value.is_empty() {
        return Err(InfoError::MissingSignal);
    }
    if let Ok(d) = value.parse::<Digit>() {
        return Ok(d);
    }
    if value.len() <= 2 && value.bytes().all(|b| b.is_ascii_digit()) {
        let code: u8 = value.parse().map_err(|_| bad())?;
        return Digit::from_event_code(code).ok_or_else(bad);
    }
    Err(bad())
}

/// A duration in milliseconds; an empty value means "not given".
fn parse_duration(value: &str) -> Result<Option<u32>, InfoError> {
    if value.is_empty() {
        return Ok(None);
    }
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InfoError::BadDuration(value.to_owned()));
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| InfoError::BadDuration(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_forms() {
        assert_eq!(parse_signal("5"), Ok(Digit::D5));
        assert_eq!(parse_signal("b"), Ok(Digit::B));
        assert_eq!(parse_signal("10"), Ok(Digit::Star));
        assert_eq!(parse_signal("11"), Ok(Digit::Hash));
        assert_eq!(parse_signal("07"), Ok(Digit::D7));
        assert_eq!(parse_signal("16"), Err(InfoError::BadSignal("16".into())));
        assert_eq!(parse_signal("!"), Err(InfoError::BadSignal("!".into())));
        assert_eq!(parse_signal("123"), Err(InfoError::BadSignal("123".into())));
    }

    #[test]
    fn duration_forms() {
        assert_eq!(parse_duration("160"), Ok(Some(160)));
        assert_eq!(parse_duration(""), Ok(None));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("1e3").is_err());
        assert!(parse_duration("99999999999").is_err());
    }
}
