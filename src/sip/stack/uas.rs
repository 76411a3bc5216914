//! Answering inbound calls: the UAS commands (RFC 3261 §13.3).

use super::*;

impl SipStack {
    // ===== UAS commands =====

    /// Answers the initial INVITE of an inbound call: 1xx (180/183), 2xx (with the answer, or
    /// with an offer for a late-offer INVITE) or 3xx–6xx to reject.
    pub fn respond(
        &mut self,
        now: Instant,
        call: CallHandle,
        status: u16,
        body: Option<Body>,
    ) -> Result<(), StackError> {
        self.respond_with(now, call, status, None, Vec::new(), body)
    }

    /// Like [`Self::respond`] with a reason phrase and extra headers.
    pub fn respond_with(
        &mut self,
        now: Instant,
        handle: CallHandle,
        status: u16,
        reason: Option<&str>,
        extra: Vec<(&'static str, String)>,
        body: Option<Body>,
    ) -> Result<(), StackError> {
        self.now = now;
        if !(101..700).contains(&status) {
            return Err(StackError::BadStatus(status));
        }
        let call = self.unanswered_inbound(handle)?;
        let tx_id = call.server_invite.ok_or(StackError::BadState(handle))?;
        self.respond_invite_tx(now, handle, tx_id, status, reason, extra, body, true);
        Ok(())
    }

    /// Gives an inbound call its own extensions (its trunk's), replacing the stack's
    /// [`StackConfig::call_options`]. Call it on [`SipEvent::IncomingCall`], before the first
    /// response. When the INVITE's 100rel use cannot meet `options` the stack refuses the call
    /// itself — 420 (it requires 100rel, `options` disable it) or 421 (`options` require
    /// 100rel, it does not support it) — and returns `Err(Refused(status))`.
    pub fn set_call_options(
        &mut self,
        now: Instant,
        handle: CallHandle,
        options: CallOptions,
    ) -> Result<(), StackError> {
        self.now = now;
        let call = self.unanswered_inbound(handle)?;
        call.options = options;
        match options.rel100_refusal(call.peer_rel100) {
            Some((status, header)) => {
                self.respond_with(now, handle, status, None, vec![header], None)?;
                Err(StackError::Refused(status))
            }
            None => Ok(()),
        }
    }

    /// An inbound call not answered yet: what the initial-INVITE commands act on.
    pub(super) fn unanswered_inbound(
        &mut self,
        handle: CallHandle,
    ) -> Result<&mut Call, StackError> {
        let call = self
            .calls
            .get_mut(&handle)
            .ok_or(StackError::NoSuchCall(handle))?;
        if call.direction != CallDirection::Inbound || call.state != CallState::Early {
            return Err(StackError::BadState(handle));
        }
        Ok(call)
    }

    /// Answers the peer's re-INVITE or UPDATE reported by [`SipEvent::Modify`].
    pub fn respond_modify(
        &mut self,
        now: Instant,
        handle: CallHandle,
        status: u16,
        body: Option<Body>,
    ) -> Result<(), StackError> {
        self.now = now;
        let call = self
            .calls
            .get_mut(&handle)
            .ok_or(StackError::NoSuchCall(handle))?;
        if let Some(tx_id) = call.server_update.take() {
            if (200..300).contains(&status)
                && let Some(b) = &body
            {
                call.last_local_body = Some(b.clone());
            }
            let extra = self.session_headers(handle, false);
            self.respond_server(now, tx_id, status, None, extra, body.as_ref(), Some(handle));
            return Ok(());
        }
        let tx_id = call.server_invite.ok_or(StackError::BadState(handle))?;
        if call.state != CallState::Confirmed {
            return Err(StackError::BadState(handle));
        }
        self.respond_invite_tx(now, handle, tx_id, status, None, Vec::new(), body, false);
        Ok(())
    }
}
