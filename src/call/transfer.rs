//! Blind transfer of a call (RFC 3515 REFER, RFC 5589 §6): the target rule, the outcome, and
//! the call layer's part of it.
//!
//! The flow, driven by [`super::CallManager`]:
//!
//! 1. [`super::CallCommand::Transfer`] names the call and a target. The target is parsed into a
//!    [`TransferTarget`] (see [`TransferTarget::parse`] for the rule), and REFER goes out with
//!    `Refer-To: <target>`.
//! 2. The REFER's own response and the NOTIFY sipfrags arrive as
//!    [`crate::sip::SipEvent::ReferProgress`]. The first report with `done` settles the
//!    transfer: a 2xx is a [`TransferOutcome`], anything else [`TransferError::Rejected`].
//! 3. After a 2xx, voxline (the transferor) hangs up its own leg with BYE, as RFC 5589 §6
//!    describes; after a failure the call stays up. A call that ends while the transfer is
//!    pending settles it with [`TransferError::CallEnded`].
//!
//! The outcome is logged and shown in the call's [`super::CallInfo::transfer`]
//! (`"sip:200@pbx -> 200"`).

use std::net::Ipv6Addr;
use std::time::Instant;

use tokio::sync::oneshot;

use super::CallManager;
use crate::sip::{CallHandle, SipStack, StackError};

/// The longest transfer target accepted, in bytes.
pub const MAX_TARGET_LEN: usize = 512;

/// A successful transfer: the final status the transferee reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferOutcome {
    /// The status of the final NOTIFY's `message/sipfrag` body (RFC 3515 §2.4.5), a 2xx.
    pub status: u16,
}

/// Why a transfer did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// No such call (it ended, or never existed).
    #[error("no such call")]
    NoSuchCall,
    /// The call is not answered (and confirmed by ACK) yet: REFER needs a dialog.
    #[error("the call is not answered")]
    NotAnswered,
    /// A transfer of this call is already waiting for its outcome.
    #[error("a transfer of this call is already in progress")]
    AlreadyTransferring,
    /// The target is not a usable URI or user (see [`TransferTarget::parse`]).
    #[error("invalid transfer target: {0}")]
    InvalidTarget(String),
    /// The transferee refused: the REFER got a non-2xx final response, or the final NOTIFY's
    /// sipfrag carried a non-2xx status (408 when the REFER timed out).
    #[error("transfer rejected with {status}")]
    Rejected {
        /// The REFER's response code or the sipfrag's status code.
        status: u16,
    },
    /// The call ended before the transfer's outcome was known.
    #[error("the call ended before the transfer completed")]
    CallEnded,
    /// The SIP stack could not send the REFER.
    #[error("cannot send REFER: {0}")]
    Stack(String),
}

/// A transfer target as it goes into `Refer-To: <...>`: a `sip:`, `sips:` or `tel:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferTarget(String);

impl TransferTarget {
    /// Parses a transfer target.
    ///
    /// * A `sip:` or `sips:` URI (scheme in any case) is taken as given: it needs a host
    ///   (a name, an IPv4 address or a bracketed IPv6 address) with an optional port; the user
    ///   part, parameters and headers are kept.
    /// * A `tel:` URI (RFC 3966) is taken as given: a global number (`tel:+14155550100`,
    ///   visual separators `-.()` allowed) or a local number with a `phone-context` parameter.
    /// * A bare number or user (`200`, `+14155550100`, `sales`: letters, digits and
    ///   `- _ . ! ~ * ' ( ) +`) becomes `sip:USER@HOST` where `HOST` is the host (and port, if
    ///   it names one) of the remote party's URI in the dialog: the `From` of an inbound
    ///   call, the `To` of an outbound call. That is usually the PBX or trunk that can route
    ///   the number. `remote_host` is that host (with port), or `None` when it is unknown,
    ///   in which case a bare target is an error.
    ///
    /// Whitespace, control characters, non-ASCII and `<`, `>`, `"` are refused anywhere, so
    /// a target can never break out of the `Refer-To` header. Anything else is
    /// [`TransferError::InvalidTarget`] with the reason.
    pub fn parse(input: &str, remote_host: Option<&str>) -> Result<TransferTarget, TransferError> {
        let invalid = |why: &str| TransferError::InvalidTarget(why.to_string());
        let t = input.trim();
        if t.is_empty() {
            return Err(invalid("the target is empty"));
        }
        if t.len() > MAX_TARGET_LEN {
            return Err(invalid("the target is longer than 512 bytes"));
        }
        if let Some(c) = t.chars().find(|c| !is_uri_char(*c)) {
            return Err(TransferError::InvalidTarget(format!(
                "the target may not contain {c:?}"
            )));
        }
        match t.split_once(':') {
            Some((scheme, rest))
                if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") =>
            {
                check_sip_uri(rest).map_err(invalid)?;
                Ok(TransferTarget(t.to_string()))
            }
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("tel") => {
                check_tel_uri(rest).map_err(invalid)?;
                Ok(TransferTarget(t.to_string()))
            }
            Some(_) => Err(invalid(
                "the target must be a sip:, sips: or tel: URI, or a bare number or user",
            )),
            None if t.chars().all(is_user_char) => {
                let host = remote_host.ok_or_else(|| {
                    invalid("a bare number needs a host, and the call's remote URI has none")
                })?;
                Ok(TransferTarget(format!("sip:{t}@{host}")))
            }
            None => Err(invalid(
                "a bare number or user may hold only letters, digits and - _ . ! ~ * ' ( ) +",
            )),
        }
    }

    /// The URI.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TransferTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A transfer waiting for its outcome.
#[derive(Debug)]
pub(super) struct PendingTransfer {
    target: TransferTarget,
    reply: oneshot::Sender<Result<TransferOutcome, TransferError>>,
}

impl CallManager {
    /// Starts a blind transfer (the `Transfer` command). Errors are sent to `reply` at once;
    /// otherwise the REFER is out and `reply` waits in the call's state for the outcome.
    pub(super) fn transfer(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        target: &str,
        reply: oneshot::Sender<Result<TransferOutcome, TransferError>>,
    ) {
        match self.send_refer(now, stack, call, target) {
            Ok(target) => {
                tracing::info!(%call, %target, "transfer: REFER sent");
                let shown = format!("{target} -> pending");
                if let Some(c) = self.calls.get_mut(&call) {
                    c.transfer = Some(PendingTransfer { target, reply });
                }
                self.update_info(call, |i| i.transfer = Some(shown));
            }
            Err(e) => {
                tracing::info!(%call, target, error = %e, "transfer refused");
                let _ = reply.send(Err(e));
            }
        }
    }

    /// A `ReferProgress` event: settles the pending transfer when `done`, and hangs up our
    /// leg after a 2xx (RFC 5589 §6).
    pub(super) fn on_refer_progress(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        status: u16,
        done: bool,
    ) {
        tracing::info!(%call, status, done, "transfer progress");
        if !done {
            return;
        }
        let Some(pending) = self.calls.get_mut(&call).and_then(|c| c.transfer.take()) else {
            return;
        };
        let ok = (200..300).contains(&status);
        let shown = format!("{} -> {status}", pending.target);
        self.update_info(call, |i| i.transfer = Some(shown));
        let result = if ok {
            tracing::info!(%call, target = %pending.target, status, "transfer succeeded: hanging up our leg");
            if let Err(e) = stack.hangup(now, call) {
                tracing::warn!(%call, error = %e, "BYE after the transfer failed");
            }
            Ok(TransferOutcome { status })
        } else {
            tracing::info!(%call, target = %pending.target, status, "transfer failed: the call stays up");
            Err(TransferError::Rejected { status })
        };
        // The requester may have given up waiting (timeout); the outcome is recorded anyway.
        let _ = pending.reply.send(result);
    }

    /// The call ended: a transfer still pending fails with [`TransferError::CallEnded`].
    pub(super) fn end_pending_transfer(
        &mut self,
        call: CallHandle,
        pending: Option<PendingTransfer>,
    ) {
        let Some(pending) = pending else {
            return;
        };
        tracing::info!(%call, target = %pending.target, "call ended during the transfer");
        let shown = format!("{} -> call ended", pending.target);
        self.update_info(call, |i| i.transfer = Some(shown));
        let _ = pending.reply.send(Err(TransferError::CallEnded));
    }

    fn send_refer(
        &mut self,
        now: Instant,
        stack: &mut SipStack,
        call: CallHandle,
        target: &str,
    ) -> Result<TransferTarget, TransferError> {
        let c = self.calls.get(&call).ok_or(TransferError::NoSuchCall)?;
        let remote = self.table.read(call, |i| {
            if i.direction == "outbound" {
                i.to.clone()
            } else {
                i.from.clone()
            }
        });
        let target = TransferTarget::parse(
            target,
            remote.as_deref().and_then(remote_host_of).as_deref(),
        )?;
        if !c.answered {
            return Err(TransferError::NotAnswered);
        }
        if let Some(p) = &c.transfer {
            if !p.reply.is_closed() {
                return Err(TransferError::AlreadyTransferring);
            }
            // The requester gave up (timed out); its REFER is abandoned and a new one may go.
            tracing::warn!(%call, target = %p.target, "abandoning a transfer nobody waits for");
        }
        stack
            .refer(now, call, target.as_str())
            .map_err(|e| match e {
                StackError::NoSuchCall(_) => TransferError::NoSuchCall,
                StackError::BadState(_) => TransferError::NotAnswered,
                other => TransferError::Stack(other.to_string()),
            })?;
        Ok(target)
    }
}

/// `host` or `host:port` (IPv6 in brackets) of the URI in a From/To value, for completing a
/// bare transfer target. `None` for a URI without a SIP host (`tel:`).
fn remote_host_of(header_value: &str) -> Option<String> {
    let uri = crate::sip::message::uri_of(header_value);
    let lower = uri
        .get(..5)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let body = if lower.starts_with("sip:") {
        uri.get(4..)?
    } else if lower == "sips:" {
        uri.get(5..)?
    } else {
        return None;
    };
    let (host, port) = crate::sip::message::uri_host_port(&format!("sip:{body}"))?;
    if host.is_empty() || !host.chars().all(is_uri_char) {
        return None;
    }
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    Some(match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// Characters allowed anywhere in a target: printable ASCII except space, `<`, `>` and `"`.
fn is_uri_char(c: char) -> bool {
    c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"')
}

/// A bare user: RFC 3261 `unreserved` characters and `+`.
fn is_user_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '_' | '.' | '!' | '~' | '*' | '\'' | '(' | ')' | '+'
        )
}

/// Checks what follows `sip:` / `sips:`: `[userinfo@]host[:port][;params][?headers]`.
fn check_sip_uri(rest: &str) -> Result<(), &'static str> {
    let hostpart = match rest.split_once('@') {
        Some(("", _)) => return Err("the URI's user part is empty"),
        Some((_, h)) => h,
        None => rest,
    };
    let hostport = hostpart.split([';', '?']).next().unwrap_or("");
    let (host, port, is_v6) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or("unclosed IPv6 bracket")?;
            addr.parse::<Ipv6Addr>()
                .map_err(|_| "not an IPv6 address in brackets")?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or("junk after the IPv6 address")?,
                ),
            };
            (addr, port, true)
        }
        None => match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p), false),
            None => (hostport, None, false),
        },
    };
    if host.is_empty() {
        return Err("the URI has no host");
    }
    if !is_v6
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err("the URI's host is not a host name or IP address");
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err("the URI's port is not a number from 1 to 65535"),
        }
    }
    Ok(())
}

/// Checks what follows `tel:` (RFC 3966 §3): a global number, or a local number with a
/// `phone-context` parameter.
fn check_tel_uri(rest: &str) -> Result<(), &'static str> {
    let (number, params) = match rest.split_once(';') {
        Some((n, p)) => (n, Some(p)),
        None => (rest, None),
    };
    let visual = |c: char| matches!(c, '-' | '.' | '(' | ')');
    if let Some(global) = number.strip_prefix('+') {
        if !global.chars().any(|c| c.is_ascii_digit())
            || !global.chars().all(|c| c.is_ascii_digit() || visual(c))
        {
            return Err("a global tel: number is + and digits");
        }
        return Ok(());
    }
    if number.is_empty()
        || !number
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '*' || c == '#' || visual(c))
    {
        return Err("a tel: number holds digits, * and #");
    }
    let has_context = params.is_some_and(|p| {
        p.split(';').any(|kv| {
            kv.split_once('=')
                .is_some_and(|(k, v)| k.eq_ignore_ascii_case("phone-context") && !v.is_empty())
        })
    });
    if !has_context {
        return Err("a local tel: number needs a phone-context parameter (RFC 3966 §5.1.5)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str, host: Option<&str>) -> String {
        TransferTarget::parse(input, host)
            .unwrap_or_else(|e| panic!("{input:?}: {e}"))
            .as_str()
            .to_string()
    }

    fn err(input: &str, host: Option<&str>) -> String {
        match TransferTarget::parse(input, host) {
            Err(TransferError::InvalidTarget(why)) => why,
            other => panic!("{input:?}: expected InvalidTarget, got {other:?}"),
        }
    }

    #[test]
    fn uris_are_taken_as_given() {
        assert_eq!(ok("sip:bob@example.com", None), "sip:bob@example.com");
        assert_eq!(
            ok(" sips:bob@example.com:5061 ", None),
            "sips:bob@example.com:5061"
        );
        assert_eq!(
            ok("SIP:200@10.0.0.1;user=phone", None),
            "SIP:200@10.0.0.1;user=phone"
        );
        assert_eq!(ok("sip:[2001:db8::1]:5080", None), "sip:[2001:db8::1]:5080");
        assert_eq!(ok("sip:pbx.example.com", None), "sip:pbx.example.com");
        assert_eq!(ok("tel:+1-415-555-0100", None), "tel:+1-415-555-0100");
        assert_eq!(
            ok("tel:7042;phone-context=example.com", None),
            "tel:7042;phone-context=example.com"
        );
    }

    #[test]
    fn bare_users_get_the_remote_host() {
        assert_eq!(
            ok("200", Some("pbx.example.com")),
            "sip:200@pbx.example.com"
        );
        assert_eq!(
            ok("+14155550100", Some("10.0.0.1:5080")),
            "sip:+14155550100@10.0.0.1:5080"
        );
        assert_eq!(ok("sales", Some("[::1]:5060")), "sip:sales@[::1]:5060");
        assert!(err("200", None).contains("needs a host"));
    }

    #[test]
    fn bad_targets_are_refused_with_the_reason() {
        assert!(err("", Some("h")).contains("empty"));
        assert!(err("   ", Some("h")).contains("empty"));
        assert!(err("http://example.com", Some("h")).contains("sip:, sips: or tel:"));
        assert!(err("sip:", None).contains("no host"));
        assert!(err("sip:@host", None).contains("user part is empty"));
        assert!(err("sip:bob@", None).contains("no host"));
        assert!(err("sip:bob@host:0", None).contains("port"));
        assert!(err("sip:bob@host:99999", None).contains("port"));
        assert!(err("sip:bob@ho_st", None).contains("host"));
        assert!(err("sip:[zz]", None).contains("IPv6"));
        assert!(err("tel:", None).contains("tel:"));
        assert!(err("tel:+", None).contains("global"));
        assert!(err("tel:1234", None).contains("phone-context"));
        assert!(err("bob@example.com", Some("h")).contains("only letters"));
        let long = format!("sip:{}@h", "a".repeat(MAX_TARGET_LEN));
        assert!(err(&long, None).contains("longer"));
    }

    #[test]
    fn nothing_can_break_out_of_the_refer_to_header() {
        for bad in [
            "sip:bob@h\r\nX-Evil: 1",
            "sip:bob@h>;x=<sip:a@b",
            "sip:bob@h x",
            "sip:b\"ob@h",
            "sip:böb@h",
            "2\t00",
        ] {
            assert!(err(bad, Some("h")).contains("may not contain"), "{bad:?}");
        }
    }

    #[test]
    fn remote_host_comes_from_the_header_uri() {
        assert_eq!(
            remote_host_of("\"Alice\" <sip:alice@pbx.example.com>;tag=1").as_deref(),
            Some("pbx.example.com")
        );
        assert_eq!(
            remote_host_of("<sip:sipp@127.0.0.1:5061>;tag=9").as_deref(),
            Some("127.0.0.1:5061")
        );
        assert_eq!(
            remote_host_of("sips:bob@[2001:db8::1]:5061").as_deref(),
            Some("[2001:db8::1]:5061")
        );
        assert_eq!(remote_host_of("<tel:+14155550100>"), None);
        assert_eq!(remote_host_of("garbage"), None);
    }
}
