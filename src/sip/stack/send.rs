//! Building and sending requests and responses: Via, Contact, ACK, retransmission of 2xx and reliable 1xx.

use super::*;

impl SipStack {
    // ===== sending helpers =====

    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond_invite_tx(
        &mut self,
        now: Instant,
        handle: CallHandle,
        tx_id: u64,
        status: u16,
        reason: Option<&str>,
        mut extra: Vec<(&'static str, String)>,
        body: Option<Body>,
        initial: bool,
    ) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let contact = call.dialog.local_contact.clone();
        let mut reliable = false;
        if (101..200).contains(&status) || (200..300).contains(&status) {
            extra.push(("Contact", contact));
            extra.push(("Allow", ALLOW.to_string()));
            extra.push(("Supported", call.options.supported()));
        }
        if (101..200).contains(&status)
            && initial
            && call.options.reliable_provisionals(call.peer_rel100)
        {
            if call.reliable.is_some() {
                return; // RFC 3262 §3: one unacknowledged reliable provisional at a time.
            }
            call.rseq += 1;
            extra.push(("Require", "100rel".to_string()));
            extra.push(("RSeq", call.rseq.to_string()));
            reliable = true;
        }
        if let Some(b) = &body
            && (200..300).contains(&status)
        {
            call.last_local_body = Some(b.clone());
        }
        let rseq = call.rseq;
        if (200..300).contains(&status) {
            if initial {
                let se = self
                    .servers
                    .get(&tx_id)
                    .and_then(|e| session_expires(&e.req));
                let supports_timer = self
                    .servers
                    .get(&tx_id)
                    .is_some_and(|e| e.req.has_option("Supported", "timer"));
                self.negotiate_session_uas(now, handle, se, supports_timer);
            }
            extra.extend(self.session_headers(handle, false));
        }
        let local_tag = self
            .calls
            .get(&handle)
            .map(|c| c.dialog.id.local_tag.clone());
        let bytes = self.response_bytes(
            tx_id,
            status,
            reason,
            &extra,
            body.as_ref(),
            local_tag.as_deref(),
        );
        let Some(bytes) = bytes else { return };
        let t1 = self.config.timers.t1;
        let give_up = now + self.config.timers.t1x64();
        let reliable_tx = !self
            .servers
            .get(&tx_id)
            .is_some_and(|e| e.peer.transport.is_reliable());
        if let Some(e) = self.servers.get_mut(&tx_id) {
            let acts = e.tx.send_response(now, status, bytes.clone());
            let p = e.peer;
            self.apply_server_actions(tx_id, p, acts);
        }
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if reliable && reliable_tx {
            call.reliable = Some((
                rseq,
                Retransmit {
                    bytes: bytes.clone(),
                    next: now + t1,
                    interval: t1,
                    give_up,
                },
            ));
        } else if reliable {
            call.reliable = Some((
                rseq,
                Retransmit {
                    bytes: bytes.clone(),
                    next: give_up,
                    interval: t1,
                    give_up,
                },
            ));
        }
        if status >= 200 {
            call.server_invite = None;
            call.reliable = None;
        }
        match status {
            200..=299 => {
                call.state = CallState::Confirmed;
                // UAS core retransmits the 2xx until the ACK (§13.3.1.4); on TCP only the give-up.
                let next = if reliable_tx { now + t1 } else { give_up };
                call.pending_2xx = Some(Retransmit {
                    bytes,
                    next,
                    interval: t1,
                    give_up,
                });
            }
            300..=699 if initial => {
                self.end_call(now, handle, EndReason::Rejected(status));
            }
            _ => {}
        }
        self.schedule_call(handle);
    }

    pub(super) fn response_bytes(
        &self,
        tx_id: u64,
        status: u16,
        reason: Option<&str>,
        extra: &[(&'static str, String)],
        body: Option<&Body>,
        to_tag: Option<&str>,
    ) -> Option<Vec<u8>> {
        let e = self.servers.get(&tx_id)?;
        let mut all = extra.to_vec();
        all.push(("Server", self.config.user_agent.clone()));
        let reason = reason.unwrap_or_else(|| reason_phrase(status));
        Some(build_response(&e.req, status, reason, to_tag, &all, body))
    }

    /// Responds on a server transaction; the To tag is the call's local tag, or a fresh one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond_server(
        &mut self,
        now: Instant,
        tx_id: u64,
        status: u16,
        reason: Option<&str>,
        extra: Vec<(&'static str, String)>,
        body: Option<&Body>,
        call: Option<CallHandle>,
    ) {
        let tag = match call.and_then(|h| self.calls.get(&h)) {
            Some(c) => Some(c.dialog.id.local_tag.clone()),
            None if status > 100 => Some(self.new_tag()),
            None => None,
        };
        self.respond_server_tagged(now, tx_id, status, reason, extra, body, tag.as_deref());
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond_server_tagged(
        &mut self,
        now: Instant,
        tx_id: u64,
        status: u16,
        reason: Option<&str>,
        extra: Vec<(&'static str, String)>,
        body: Option<&Body>,
        to_tag: Option<&str>,
    ) {
        let Some(bytes) = self.response_bytes(tx_id, status, reason, &extra, body, to_tag) else {
            return;
        };
        if let Some(e) = self.servers.get_mut(&tx_id) {
            let acts = e.tx.send_response(now, status, bytes);
            if e.tx.kind() == TxKind::NonInvite && e.tx.is_final() {
                // From here on the transaction only resends its response (§17.2.2): the
                // parsed request is not needed for the 32 s it lingers over UDP.
                e.req.strip();
            }
            let p = e.peer;
            self.apply_server_actions(tx_id, p, acts);
        }
    }

    pub(super) fn apply_server_actions(&mut self, id: u64, peer: Peer, acts: Vec<TxAction>) {
        let mut terminated = false;
        for a in acts {
            match a {
                TxAction::Send(b) => self.send(peer, b),
                TxAction::Terminated => terminated = true,
                TxAction::TimedOut | TxAction::PassUp => {}
            }
        }
        if terminated {
            self.forget_server(id);
        } else {
            let d = self.servers.get(&id).and_then(|e| e.tx.deadline());
            self.schedule(TimerRef::Server(id), d);
        }
    }

    pub(super) fn forget_server(&mut self, id: u64) {
        if let Some(e) = self.servers.remove(&id) {
            self.server_index.remove(&e.key);
            if let Some(h) = e.call
                && let Some(c) = self.calls.get_mut(&h)
                && c.server_invite == Some(id)
                && e.tx.is_final()
            {
                c.server_invite = None;
            }
        }
    }

    pub(super) fn send_initial_invite(
        &mut self,
        now: Instant,
        handle: CallHandle,
        spec: &OutgoingCall,
        cseq: u32,
        auth: Option<(&'static str, String)>,
    ) -> u64 {
        let branch = self.new_branch();
        let Some(call) = self.calls.get(&handle) else {
            return 0;
        };
        let local_addr = self.local_addr(
            spec.next_hop.transport,
            spec.next_hop.addr.ip(),
            spec.local_ip,
        );
        let via = via_value(spec.next_hop.transport, local_addr, &branch);
        let options = call.options;
        let mut extra: Vec<(&'static str, String)> = vec![
            ("Allow", ALLOW.to_string()),
            ("Supported", options.supported()),
        ];
        if options.rel100 == Rel100::Required {
            extra.push(("Require", TAG_100REL.to_string()));
        }
        if let Some(se) = self
            .config
            .session_expires
            .filter(|_| options.session_timers)
        {
            extra.push(("Session-Expires", se.as_secs().to_string()));
            extra.push(("Min-SE", self.config.min_se.as_secs().to_string()));
        }
        extra.extend(spec.extra_headers.iter().cloned());
        if let Some(a) = auth {
            extra.push(a);
        }
        let to = format!("<{}>", spec.to_uri);
        let bytes = build_request(&RequestSpec {
            method: Method::Invite,
            uri: &spec.request_uri,
            via: via.clone(),
            from: &call.dialog.local_uri,
            to: &to,
            call_id: &call.dialog.id.call_id,
            cseq,
            contact: Some(&call.dialog.local_contact),
            routes: &spec.routes,
            extra,
            body: spec.body.as_ref(),
            user_agent: &self.config.user_agent,
        });
        let template = AckTemplate {
            uri: spec.request_uri.clone(),
            via,
            from: call.dialog.local_uri.clone(),
            to,
            call_id: call.dialog.id.call_id.clone(),
            cseq,
            routes: spec.routes.clone(),
        };
        self.start_client(
            now,
            spec.next_hop,
            Method::Invite,
            branch,
            bytes,
            Purpose::Invite(handle),
            Some(template),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_client(
        &mut self,
        now: Instant,
        peer: Peer,
        method: Method,
        branch: String,
        bytes: Vec<u8>,
        purpose: Purpose,
        ack_template: Option<AckTemplate>,
    ) -> u64 {
        let kind = if method == Method::Invite {
            TxKind::Invite
        } else {
            TxKind::NonInvite
        };
        let tx = ClientTransaction::new(
            kind,
            bytes.clone(),
            peer.transport.is_reliable(),
            self.config.timers,
            now,
        );
        let id = self.alloc_id();
        let key = ClientKey {
            branch,
            method: method as u8,
        };
        self.client_index.insert(key.clone(), id);
        self.counters.transactions_started += 1;
        self.clients.insert(
            id,
            ClientEntry {
                tx,
                key,
                peer,
                purpose,
                ack_template,
                ack_2xx: None,
            },
        );
        self.send(peer, bytes);
        self.schedule_client(id);
        id
    }

    pub(super) fn non_2xx_ack(&self, id: u64, resp: &Msg) -> Option<Vec<u8>> {
        let t = self.clients.get(&id)?.ack_template.as_ref()?;
        let to = resp.header("To").unwrap_or(&t.to);
        Some(self.template_request(t, Method::Ack, to))
    }

    /// A request that shares the INVITE's Request-URI, top Via, From, Call-ID, CSeq number and
    /// Route: the ACK for a non-2xx (§17.1.1.3) and CANCEL (§9.1).
    pub(super) fn template_request(&self, t: &AckTemplate, method: Method, to: &str) -> Vec<u8> {
        build_request(&RequestSpec {
            method,
            uri: &t.uri,
            via: t.via.clone(),
            from: &t.from,
            to,
            call_id: &t.call_id,
            cseq: t.cseq,
            contact: None,
            routes: &t.routes,
            extra: Vec::new(),
            body: None,
            user_agent: &self.config.user_agent,
        })
    }

    pub(super) fn send_cancel(&mut self, now: Instant, handle: CallHandle) {
        let Some(uac) = self.calls.get(&handle).and_then(|c| c.uac.as_ref()) else {
            return;
        };
        let Some(e) = self.clients.get(&uac.client) else {
            return;
        };
        if e.tx.state() != ClientState::Proceeding && e.tx.state() != ClientState::Calling {
            return;
        }
        let Some(t) = e.ack_template.clone() else {
            return;
        };
        let peer = e.peer;
        // §9.1: same Request-URI, Call-ID, From, To, CSeq number, top Via and Route.
        let bytes = self.template_request(&t, Method::Cancel, &t.to);
        let branch = e.key.branch.clone();
        if self.client_index.contains_key(&ClientKey {
            branch: branch.clone(),
            method: Method::Cancel as u8,
        }) {
            return;
        }
        let invite_id = uac.client;
        self.start_client(
            now,
            peer,
            Method::Cancel,
            branch,
            bytes,
            Purpose::Cancel,
            None,
        );
        // §9.1: the INVITE gets 64·T1 more for its final response (normally a 487).
        if let Some(e) = self.clients.get_mut(&invite_id) {
            e.tx.cancel_sent(now);
        }
        self.schedule_client(invite_id);
    }

    pub(super) fn send_bye(&mut self, now: Instant, handle: CallHandle, reason: EndReason) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if matches!(call.state, CallState::Ending | CallState::Ended) {
            return;
        }
        call.state = CallState::Ending;
        call.pending_2xx = None;
        call.session = None;
        let _ = self.in_dialog_request(
            now,
            handle,
            Method::Bye,
            Vec::new(),
            None,
            Purpose::Bye(handle),
        );
        // The call is over for the TU now; the BYE transaction finishes on its own.
        self.end_call(now, handle, reason);
    }

    pub(super) fn send_reinvite(&mut self, now: Instant, handle: CallHandle, body: Option<Body>) {
        let mut extra = self.session_headers(handle, true);
        extra.push(("Allow", ALLOW.to_string()));
        extra.push(("Supported", self.supported(handle)));
        if let Some(c) = self.calls.get_mut(&handle)
            && let Some(b) = &body
        {
            c.last_local_body = Some(b.clone());
        }
        let body = body.or_else(|| {
            self.calls
                .get(&handle)
                .and_then(|c| c.last_local_body.clone())
        });
        let seq = self
            .calls
            .get_mut(&handle)
            .map(|c| c.dialog.next_seq())
            .unwrap_or(1);
        let Some((peer, bytes)) =
            self.build_in_dialog(handle, Method::Invite, seq, extra, body.as_ref())
        else {
            return;
        };
        let branch = extract_branch(&bytes);
        // A non-2xx final response (491, 488…) must be ACKed too (§17.1.1.3).
        let template = self.calls.get(&handle).map(|c| AckTemplate {
            uri: c.dialog.remote_target.clone(),
            via: top_via(&bytes).unwrap_or_default(),
            from: c.dialog.local_uri.clone(),
            to: c.dialog.remote_uri.clone(),
            call_id: c.dialog.id.call_id.clone(),
            cseq: seq,
            routes: c.dialog.route_set.clone(),
        });
        let id = self.start_client(
            now,
            peer,
            Method::Invite,
            branch,
            bytes,
            Purpose::ReInvite(handle),
            template,
        );
        if let Some(c) = self.calls.get_mut(&handle) {
            c.client_reinvite = Some(id);
        }
    }

    pub(super) fn in_dialog_request(
        &mut self,
        now: Instant,
        handle: CallHandle,
        method: Method,
        extra: Vec<(&'static str, String)>,
        body: Option<&Body>,
        purpose: Purpose,
    ) -> Result<(), StackError> {
        let call = self
            .calls
            .get_mut(&handle)
            .ok_or(StackError::NoSuchCall(handle))?;
        if call.state == CallState::Ended {
            return Err(StackError::BadState(handle));
        }
        let seq = call.dialog.next_seq();
        let (peer, bytes) = self
            .build_in_dialog(handle, method, seq, extra, body)
            .ok_or(StackError::BadState(handle))?;
        let branch = extract_branch(&bytes);
        self.start_client(now, peer, method, branch, bytes, purpose, None);
        Ok(())
    }

    pub(super) fn build_in_dialog(
        &mut self,
        handle: CallHandle,
        method: Method,
        seq: u32,
        extra: Vec<(&'static str, String)>,
        body: Option<&Body>,
    ) -> Option<(Peer, Vec<u8>)> {
        let branch = self.new_branch();
        let call = self.calls.get(&handle)?;
        let d = &call.dialog;
        let peer = d.next_hop();
        let local_addr =
            self.local_addr(peer.transport, peer.addr.ip(), contact_ip(&d.local_contact));
        let via = via_value(peer.transport, local_addr, &branch);
        let contact = matches!(method, Method::Invite | Method::Update | Method::Refer)
            .then_some(d.local_contact.as_str());
        let bytes = build_request(&RequestSpec {
            method,
            uri: &d.remote_target,
            via,
            from: &d.local_uri,
            to: &d.remote_uri,
            call_id: &d.id.call_id,
            cseq: seq,
            contact,
            routes: d.routes(),
            extra,
            body,
            user_agent: &self.config.user_agent,
        });
        Some((peer, bytes))
    }

    pub(super) fn send_register(&mut self, now: Instant, id: RegistrationId) {
        let cnonce = self.random_hex(16);
        let branch = self.new_branch();
        let Some(reg) = self.regs.get_mut(&id) else {
            return;
        };
        reg.cseq += 1;
        reg.next_send = None;
        if !reg.unregistering {
            reg.state = RegistrationState::Registering;
        }
        let auth = reg.authorization(&cnonce);
        let via = via_value(reg.config.next_hop.transport, reg.contact_addr, &branch);
        let from = format!("<{}>;tag={}", reg.config.aor, reg.from_tag);
        let to = format!("<{}>", reg.config.aor);
        let mut extra: Vec<(&'static str, String)> =
            vec![("Expires", reg.expires_to_send().to_string())];
        extra.push(("Allow", ALLOW.to_string()));
        if let Some(a) = auth {
            extra.push(a);
        }
        let contact = reg.contact();
        let bytes = build_request(&RequestSpec {
            method: Method::Register,
            uri: &reg.config.registrar,
            via,
            from: &from,
            to: &to,
            call_id: &reg.call_id,
            cseq: reg.cseq,
            contact: Some(&contact),
            routes: &reg.config.routes,
            extra,
            body: None,
            user_agent: &self.config.user_agent,
        });
        let peer = reg.config.next_hop;
        self.start_client(
            now,
            peer,
            Method::Register,
            branch,
            bytes,
            Purpose::Register(id),
            None,
        );
    }
}
