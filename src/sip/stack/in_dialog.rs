//! Commands for either side of a dialog: BYE, re-INVITE, INFO, REFER, NOTIFY (RFC 3261 §14, §15).

use super::*;

impl SipStack {
    // ===== commands for either side =====

    /// Ends a call the right way for its state: BYE when confirmed, CANCEL for our INVITE
    /// before answer, 480 for an unanswered inbound INVITE.
    pub fn hangup(&mut self, now: Instant, handle: CallHandle) -> Result<(), StackError> {
        self.now = now;
        let call = self
            .calls
            .get_mut(&handle)
            .ok_or(StackError::NoSuchCall(handle))?;
        match (call.direction, call.state) {
            (_, CallState::Ended | CallState::Ending) => Ok(()),
            (CallDirection::Inbound, CallState::Early) => self.respond(now, handle, 480, None),
            (CallDirection::Outbound, CallState::Early) => {
                let Some(uac) = call.uac.as_mut() else {
                    return Err(StackError::BadState(handle));
                };
                uac.hangup_requested = true;
                if uac.got_provisional {
                    self.send_cancel(now, handle);
                }
                Ok(())
            }
            (_, CallState::Confirmed) => {
                if call.pending_2xx.is_some() && !call.initial_ack_seen {
                    // §15: no BYE before the ACK for our 2xx (or its timeout).
                    call.bye_after_ack = true;
                    return Ok(());
                }
                self.send_bye(now, handle, EndReason::LocalBye);
                Ok(())
            }
        }
    }

    /// Sends a re-INVITE with a new offer (hold, resume, codec change, refresh).
    pub fn reinvite(
        &mut self,
        now: Instant,
        handle: CallHandle,
        body: Body,
    ) -> Result<(), StackError> {
        self.now = now;
        let call = self
            .calls
            .get(&handle)
            .ok_or(StackError::NoSuchCall(handle))?;
        if call.state != CallState::Confirmed || call.pending_2xx.is_some() {
            return Err(StackError::BadState(handle));
        }
        if call.client_reinvite.is_some() || call.server_invite.is_some() {
            return Err(StackError::Pending(handle));
        }
        self.send_reinvite(now, handle, Some(body));
        Ok(())
    }

    /// Sends INFO with a body (for example `application/dtmf-relay`).
    pub fn send_info(
        &mut self,
        now: Instant,
        handle: CallHandle,
        body: Body,
    ) -> Result<(), StackError> {
        self.now = now;
        self.in_dialog_request(
            now,
            handle,
            Method::Info,
            Vec::new(),
            Some(&body),
            Purpose::Other,
        )
    }

    /// Sends REFER for a blind transfer to `target` (RFC 3515). Progress comes as
    /// [`SipEvent::ReferProgress`].
    pub fn refer(
        &mut self,
        now: Instant,
        handle: CallHandle,
        target: &str,
    ) -> Result<(), StackError> {
        self.now = now;
        let call = self
            .calls
            .get(&handle)
            .ok_or(StackError::NoSuchCall(handle))?;
        if call.state != CallState::Confirmed {
            return Err(StackError::BadState(handle));
        }
        let referred_by = format!("<{}>", message::uri_of(&call.dialog.local_uri));
        let extra = vec![
            ("Refer-To", format!("<{target}>")),
            ("Referred-By", referred_by),
        ];
        self.in_dialog_request(
            now,
            handle,
            Method::Refer,
            extra,
            None,
            Purpose::Refer(handle),
        )
    }
}
