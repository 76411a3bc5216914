//! Session timers (RFC 4028): negotiation, refreshes and expiry.

use super::*;

impl SipStack {
    // ===== session timers (RFC 4028) =====

    pub(super) fn negotiate_session_uas(
        &mut self,
        now: Instant,
        handle: CallHandle,
        peer_se: Option<(u32, Option<String>)>,
        supports_timer: bool,
    ) {
        let (interval, we_refresh) = match peer_se {
            Some((secs, refresher)) => {
                let we = match refresher.as_deref() {
                    Some("uas") => true,
                    Some(_) => false,
                    None => !supports_timer, // §9: choose; a peer that supports timers refreshes
                };
                (Duration::from_secs(u64::from(secs)), we)
            }
            None => match self.config.session_expires {
                Some(ours) => (ours, true),
                None => return,
            },
        };
        self.start_session(now, handle, interval, we_refresh);
    }

    pub(super) fn start_session(
        &mut self,
        now: Instant,
        handle: CallHandle,
        interval: Duration,
        we_refresh: bool,
    ) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if !call.options.session_timers {
            return; // this call's peer gets no session timers (a trunk's `session_timers`)
        }
        call.session = Some(SessionTimer {
            interval,
            we_refresh,
            deadline: session_deadline(now, interval, we_refresh),
        });
        self.schedule_call(handle);
    }

    pub(super) fn refresh_session(
        &mut self,
        now: Instant,
        handle: CallHandle,
        se: Option<(u32, Option<String>)>,
        we_sent: bool,
    ) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(s) = call.session.as_mut() else {
            if let Some((secs, refresher)) = se {
                // `refresher` names a role in this transaction: uac is whoever sent the request.
                let we = match refresher.as_deref() {
                    Some("uac") => we_sent,
                    Some("uas") => !we_sent,
                    _ => false,
                };
                self.start_session(now, handle, Duration::from_secs(u64::from(secs)), we);
            }
            return;
        };
        if let Some((secs, _)) = se {
            s.interval = Duration::from_secs(u64::from(secs));
        }
        s.deadline = session_deadline(now, s.interval, s.we_refresh);
        self.schedule_call(handle);
    }

    pub(super) fn session_refresh(&mut self, now: Instant, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if let Some(s) = call.session.as_mut() {
            // Until the refresh succeeds, the peer's expiry rule applies to us too.
            s.deadline = now + s.interval / 2;
        }
        if call.client_reinvite.is_some() || call.server_invite.is_some() {
            return;
        }
        if call.peer_allows_update {
            let extra = self.session_headers(handle, true);
            let _ = self.in_dialog_request(
                now,
                handle,
                Method::Update,
                extra,
                None,
                Purpose::Update(handle),
            );
        } else {
            self.send_reinvite(now, handle, None);
        }
    }

    /// The `Supported` value for a message of this call.
    pub(super) fn supported(&self, handle: CallHandle) -> String {
        self.calls.get(&handle).map_or_else(
            || self.config.call_options.supported(),
            |c| c.options.supported(),
        )
    }

    /// Session-Expires (and Require: timer) for a message of this call. `refresher` names a
    /// role in the transaction carrying the header (RFC 4028 §4): `we_are_uac` is true for
    /// requests we send, false for our responses.
    pub(super) fn session_headers(
        &self,
        handle: CallHandle,
        we_are_uac: bool,
    ) -> Vec<(&'static str, String)> {
        let Some(call) = self.calls.get(&handle) else {
            return Vec::new();
        };
        let Some(s) = &call.session else {
            return Vec::new();
        };
        let refresher = if s.we_refresh == we_are_uac {
            "uac"
        } else {
            "uas"
        };
        let mut v = vec![(
            "Session-Expires",
            format!("{};refresher={refresher}", s.interval.as_secs()),
        )];
        if !we_are_uac && !s.we_refresh {
            // The peer refreshes, so it supports timers: say we rely on it (§9).
            v.push(("Require", "timer".to_string()));
        }
        v
    }
}
