//! Placing calls and registering: the UAC commands (RFC 3261 §13.2, §10).

use super::*;

impl SipStack {
    // ===== UAC =====

    /// Places an outbound call. Its progress comes as events for the returned handle.
    pub fn invite(&mut self, now: Instant, spec: OutgoingCall) -> CallHandle {
        self.now = now;
        let handle = self.new_call_handle();
        let local_tag = self.new_tag();
        let local_addr = self.local_addr(
            spec.next_hop.transport,
            spec.next_hop.addr.ip(),
            spec.local_ip,
        );
        let call_id = format!("{}@{}", self.random_hex(16), local_addr.ip());
        let from = match &spec.from_display {
            Some(d) => format!(
                "\"{}\" <{}>;tag={local_tag}",
                d.replace('"', ""),
                spec.from_uri
            ),
            None => format!("<{}>;tag={local_tag}", spec.from_uri),
        };
        let contact = contact_for(local_addr, spec.next_hop.transport);
        let dialog = Dialog {
            id: DialogId {
                call_id: call_id.clone(),
                local_tag: local_tag.clone(),
                remote_tag: String::new(),
            },
            local_uri: from,
            remote_uri: format!("<{}>", spec.to_uri),
            local_seq: 1,
            remote_seq: None,
            remote_target: spec.request_uri.clone(),
            route_set: spec.routes.clone(),
            local_contact: contact,
            peer: spec.next_hop,
        };
        self.dialogs.insert((call_id, local_tag), handle);
        let call = Call {
            direction: CallDirection::Outbound,
            state: CallState::Early,
            dialog,
            server_invite: None,
            server_update: None,
            pending_2xx: None,
            reliable: None,
            rseq: 0,
            peer_rel100: PeerRel100::default(),
            options: spec.options.unwrap_or(self.config.call_options),
            uac: None,
            client_reinvite: None,
            session: None,
            peer_allows_update: false,
            last_local_body: spec.body.clone(),
            bye_after_ack: false,
            linger_until: None,
            initial_ack_seen: true,
        };
        self.calls.insert(handle, call);
        self.active_calls += 1;
        let client = self.send_initial_invite(now, handle, &spec, 1, None);
        if let Some(call) = self.calls.get_mut(&handle) {
            call.uac = Some(UacInvite {
                spec,
                client,
                cseq: 1,
                digest: DigestClient::new(),
                auth_attempts: 0,
                got_provisional: false,
                hangup_requested: false,
                acked_prack: Vec::new(),
            });
        }
        handle
    }

    /// Starts a registration; it refreshes itself until [`Self::unregister`].
    pub fn register(&mut self, now: Instant, config: RegistrationConfig) -> RegistrationId {
        self.now = now;
        self.next_id += 1;
        let id = RegistrationId(self.next_id);
        let call_id = format!("{}@{}", self.random_hex(16), config.local_addr.ip());
        let tag = self.new_tag();
        let reg = Registration::new(id, config, call_id, tag, now);
        self.regs.insert(id, reg);
        self.send_register(now, id);
        id
    }

    /// Sends an out-of-dialog OPTIONS to `peer` (keepalive / qualify, RFC 3261 §11). It keeps
    /// NAT bindings open; a probe that gets no answer is logged.
    #[doc(alias = "qualify")]
    pub fn send_options(&mut self, now: Instant, peer: Peer, uri: &str) {
        self.now = now;
        let branch = self.new_branch();
        let local = self.local_addr(peer.transport, peer.addr.ip(), None);
        let call_id = format!("{}@{}", self.random_hex(16), local.ip());
        let from = format!(
            "<sip:voxline@{}>;tag={}",
            fmt_host_port(local),
            self.new_tag()
        );
        let to = format!("<{uri}>");
        let bytes = build_request(&RequestSpec {
            method: Method::Options,
            uri,
            via: via_value(peer.transport, local, &branch),
            from: &from,
            to: &to,
            call_id: &call_id,
            cseq: 1,
            contact: None,
            routes: &[],
            extra: vec![("Accept", "application/sdp".to_string())],
            body: None,
            user_agent: &self.config.user_agent,
        });
        self.start_client(
            now,
            peer,
            Method::Options,
            branch,
            bytes,
            Purpose::Keepalive,
            None,
        );
    }

    /// Removes a binding (REGISTER with Expires: 0).
    pub fn unregister(&mut self, now: Instant, id: RegistrationId) -> Result<(), StackError> {
        self.now = now;
        let reg = self
            .regs
            .get_mut(&id)
            .ok_or(StackError::NoSuchRegistration)?;
        reg.unregistering = true;
        if matches!(
            reg.state,
            RegistrationState::Registered { .. } | RegistrationState::Registering
        ) {
            self.send_register(now, id);
        } else {
            reg.next_send = None;
        }
        Ok(())
    }

    /// The current state of a registration.
    pub fn registration_state(&self, id: RegistrationId) -> Option<&RegistrationState> {
        self.regs.get(&id).map(|r| &r.state)
    }
}
