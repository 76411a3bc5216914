//! Incoming requests: transaction matching (RFC 3261 §17.2.3, RFC 2543 fallback), the UAS checks and in-dialog requests.

use super::*;

impl SipStack {
    // ===== request handling =====

    pub(super) fn on_request(&mut self, now: Instant, peer: Peer, mut msg: Msg) {
        annotate_via(&mut msg, peer);
        self.note_alias(peer, &msg.via);
        let Some(method) = msg.request().map(|r| r.method) else {
            return;
        };
        match method {
            Method::Ack => return self.on_ack(now, peer, msg),
            Method::Cancel => return self.on_cancel(now, peer, msg),
            _ => {}
        }
        let key = server_key(&msg, method);
        if let Some(id) = self.server_index.get(&key).copied() {
            self.counters.retransmissions_absorbed += 1;
            if let Some(e) = self.servers.get_mut(&id) {
                let acts = e.tx.handle_retransmission();
                let p = e.peer;
                self.apply_server_actions(id, p, acts);
            }
            return;
        }
        if !self.admit(method, msg.to_tag.is_some()) {
            self.refuse_overloaded(now, peer, &msg, method);
            return;
        }
        let kind = if method == Method::Invite {
            TxKind::Invite
        } else {
            TxKind::NonInvite
        };
        let tx = ServerTransaction::new(kind, peer.transport.is_reliable(), self.config.timers);
        let id = self.alloc_id();
        self.server_index.insert(key.clone(), id);
        self.counters.transactions_started += 1;
        self.servers.insert(
            id,
            ServerEntry {
                tx,
                key,
                peer,
                req: msg,
                call: None,
            },
        );

        let Some(entry) = self.servers.get(&id) else {
            return;
        };
        let to_tag = entry.req.to_tag.clone();
        if method == Method::Invite {
            // 100 Trying at once (§17.2.1), so the peer stops retransmitting.
            self.respond_server(now, id, 100, None, Vec::new(), None, None);
        }
        match to_tag {
            Some(tag) => self.on_in_dialog_request(now, id, method, tag),
            None => self.on_out_of_dialog_request(now, id, method),
        }
    }

    /// Whether a new request may start a server transaction (see
    /// [`StackConfig::max_transactions`]).
    pub(super) fn admit(&mut self, method: Method, in_dialog: bool) -> bool {
        let live = self.servers.len();
        let max = self.config.max_transactions;
        let admitted = if in_dialog || method == Method::Invite {
            live < max
        } else {
            live < max / 2
        };
        if !admitted && !self.overloaded {
            self.overloaded = true;
            tracing::warn!(
                live,
                max_transactions = max,
                "SIP overload: new requests are dropped (INVITE: 503) until transactions end"
            );
        }
        admitted
    }

    /// A request refused under overload: 503 without state for an INVITE (so that a caller's
    /// proxy tries elsewhere at once), nothing for the rest.
    pub(super) fn refuse_overloaded(
        &mut self,
        now: Instant,
        peer: Peer,
        msg: &Msg,
        method: Method,
    ) {
        self.now = now;
        self.counters.dropped_overload += 1;
        if method == Method::Invite {
            let tag = self.new_tag();
            let extra = vec![
                ("Retry-After", OVERLOAD_RETRY_AFTER_S.to_string()),
                ("Server", self.config.user_agent.clone()),
            ];
            let bytes = build_response(msg, 503, reason_phrase(503), Some(&tag), &extra, None);
            self.send(peer, bytes);
        }
    }

    /// Gives memory back after a burst: shrinks the transaction maps and the timer heap when
    /// they are mostly empty, and notes the end of an overload.
    pub(super) fn shrink_after_burst(&mut self) {
        fn oversized(len: usize, capacity: usize) -> bool {
            capacity > SHRINK_MIN && capacity > len.saturating_mul(SHRINK_FACTOR)
        }
        if oversized(self.servers.len(), self.servers.capacity()) {
            self.servers.shrink_to(self.servers.len() * 2);
            self.server_index.shrink_to(self.server_index.len() * 2);
        }
        if oversized(self.clients.len(), self.clients.capacity()) {
            self.clients.shrink_to(self.clients.len() * 2);
            self.client_index.shrink_to(self.client_index.len() * 2);
        }
        if oversized(self.timers.len(), self.timers.capacity()) {
            self.timers.shrink_to(self.timers.len() * 2);
        }
        if oversized(self.out.len(), self.out.capacity()) {
            self.out.shrink_to(self.out.len() * 2);
        }
        if self.overloaded && self.servers.len() < self.config.max_transactions / 4 {
            self.overloaded = false;
            tracing::info!(
                live = self.servers.len(),
                dropped_total = self.counters.dropped_overload,
                "SIP overload over"
            );
        }
    }

    pub(super) fn on_out_of_dialog_request(&mut self, now: Instant, id: u64, method: Method) {
        match method {
            Method::Invite => self.on_initial_invite(now, id),
            Method::Options => {
                if self.refuse_unsupported(now, id) {
                    return;
                }
                if let Some(retry_after_s) = self.draining {
                    let extra = vec![("Retry-After", retry_after_s.to_string())];
                    self.respond_server(now, id, 503, None, extra, None, None);
                    return;
                }
                let extra = vec![
                    ("Allow", ALLOW.to_string()),
                    ("Accept", ACCEPT.to_string()),
                    ("Supported", SUPPORTED.to_string()),
                ];
                self.respond_server(now, id, 200, None, extra, None, None);
            }
            Method::Bye
            | Method::Info
            | Method::Update
            | Method::PRack
            | Method::Notify
            | Method::Refer => {
                self.respond_server(now, id, 481, None, Vec::new(), None, None);
            }
            _ => {
                let extra = vec![("Allow", ALLOW.to_string())];
                self.respond_server(now, id, 405, None, extra, None, None);
            }
        }
    }

    /// The UAS checks of RFC 3261 §8.2.2 that do not depend on the method: a Request-URI of
    /// a scheme voxline serves (416), and only extensions it supports in Require (420, with
    /// Unsupported; Proxy-Require is for proxies). Answers and returns true when one fails.
    pub(super) fn refuse_unsupported(&mut self, now: Instant, id: u64) -> bool {
        let Some(req) = self.servers.get(&id).map(|e| &e.req) else {
            return true;
        };
        let uri = req.request().map(|r| r.uri.to_string()).unwrap_or_default();
        if !(uri.starts_with("sip:") || uri.starts_with("sips:") || uri.starts_with("tel:")) {
            self.respond_server(now, id, 416, None, Vec::new(), None, None);
            return true;
        }
        let unsupported: Vec<String> = message::headers_named(req.headers(), "Require")
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_string())
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("100rel")
                    && !t.eq_ignore_ascii_case("timer")
            })
            .collect();
        if !unsupported.is_empty() {
            let extra = vec![("Unsupported", unsupported.join(", "))];
            self.respond_server(now, id, 420, None, extra, None, None);
            return true;
        }
        false
    }

    pub(super) fn on_initial_invite(&mut self, now: Instant, id: u64) {
        let Some(entry) = self.servers.get(&id) else {
            return;
        };
        let req = &entry.req;
        let peer = entry.peer;
        let from_tag = req.from_tag.clone().unwrap_or_default();
        // A retransmission arriving after the transaction is gone, or a merged request.
        if let Some(h) = self
            .uas_index
            .get(&(req.call_id.clone(), from_tag.clone()))
            .copied()
        {
            let same_seq =
                self.calls.get(&h).and_then(|c| c.dialog.remote_seq) == Some(req.cseq.seq);
            if same_seq {
                // Absorb: the 2xx is being retransmitted by the call anyway.
                self.forget_server(id);
                return;
            }
            self.respond_server(now, id, 482, None, Vec::new(), None, None);
            return;
        }
        // Max-Forwards (§16.3 step 3 applies to UAs answering as endpoints: 483 at zero).
        if req
            .header("Max-Forwards")
            .and_then(|v| v.trim().parse::<u32>().ok())
            == Some(0)
        {
            self.respond_server(now, id, 483, None, Vec::new(), None, None);
            return;
        }
        if self.refuse_unsupported(now, id) {
            return;
        }
        let Some(req) = self.servers.get(&id).map(|e| &e.req) else {
            return;
        };
        // Content processing (§8.2.3): a body voxline cannot read gets 415, a request that
        // accepts no answer voxline can give gets 406; both say what voxline accepts.
        let body_type_ok = req.body().is_empty()
            || req
                .content_type()
                .is_some_and(|t| message::media_type_is(t, ACCEPT));
        let accept_ok = message::headers_named(req.headers(), "Accept")
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .fold(None, |ok: Option<bool>, t| {
                let this = ["application/sdp", "application/*", "*/*"]
                    .iter()
                    .any(|m| message::media_type_is(t, m));
                Some(ok.unwrap_or(false) || this)
            })
            .unwrap_or(true);
        if !body_type_ok || !accept_ok {
            let status = if body_type_ok { 406 } else { 415 };
            let extra = vec![("Accept", ACCEPT.to_string())];
            self.respond_server(now, id, status, None, extra, None, None);
            return;
        }
        // Session-Expires below our Min-SE: 422 (RFC 4028 §8.1).
        if let Some(se) = session_expires(req)
            && Duration::from_secs(u64::from(se.0)) < self.config.min_se
        {
            let extra = vec![("Min-SE", self.config.min_se.as_secs().to_string())];
            self.respond_server(now, id, 422, None, extra, None, None);
            return;
        }
        if let Some(retry_after_s) = self.draining {
            self.counters.refused_draining += 1;
            let extra = vec![("Retry-After", retry_after_s.to_string())];
            self.respond_server(now, id, 503, None, extra, None, None);
            return;
        }
        if self.active_calls >= self.config.max_calls {
            self.counters.refused_at_limit += 1;
            match self.config.at_limit {
                LimitResponse::Busy => {
                    self.respond_server(now, id, 486, None, Vec::new(), None, None)
                }
                LimitResponse::Unavailable { retry_after_s } => {
                    let extra = vec![("Retry-After", retry_after_s.to_string())];
                    self.respond_server(now, id, 503, None, extra, None, None)
                }
            }
            return;
        }
        let Some(entry) = self.servers.get(&id) else {
            return;
        };
        let req = entry.req.clone();
        let handle = self.new_call_handle();
        let local_tag = self.new_tag();
        let to_value = req.header("To").unwrap_or_default().to_string();
        let from_value = req.header("From").unwrap_or_default().to_string();
        let request_uri = req.request().map(|r| r.uri.to_string()).unwrap_or_default();
        let req_host_ip =
            message::uri_host_port(&request_uri).and_then(|(h, _)| h.parse::<IpAddr>().ok());
        let local_addr = self.local_addr(
            peer.transport,
            peer.addr.ip(),
            req_host_ip.filter(|ip| !ip.is_unspecified()),
        );
        let remote_target = req
            .header("Contact")
            .map(message::uri_of)
            .unwrap_or_default()
            .to_string();
        let dialog = Dialog {
            id: DialogId {
                call_id: req.call_id.clone(),
                local_tag: local_tag.clone(),
                remote_tag: from_tag.clone(),
            },
            local_uri: format!("{to_value};tag={local_tag}"),
            remote_uri: from_value.clone(),
            local_seq: self.rng.gen_range(1..10_000),
            remote_seq: Some(req.cseq.seq),
            remote_target: if remote_target.is_empty() {
                format!("sip:{}", peer.addr)
            } else {
                remote_target
            },
            route_set: record_routes(&req),
            local_contact: contact_for(local_addr, peer.transport),
            peer,
        };
        let body = (!req.body().is_empty()).then(|| {
            Body::new(
                req.content_type().unwrap_or("application/sdp"),
                req.body().to_vec(),
            )
        });
        let rel100 = PeerRel100 {
            requires: req.has_option("Require", TAG_100REL),
            supports: req.has_option("Supported", TAG_100REL),
        };
        let call = Call {
            direction: CallDirection::Inbound,
            state: CallState::Early,
            dialog,
            server_invite: Some(id),
            server_update: None,
            pending_2xx: None,
            reliable: None,
            rseq: self.rng.gen_range(1..10_000),
            peer_rel100: rel100,
            options: self.config.call_options,
            uac: None,
            client_reinvite: None,
            session: None,
            peer_allows_update: req.has_option("Allow", "UPDATE"),
            last_local_body: None,
            bye_after_ack: false,
            linger_until: None,
            initial_ack_seen: false,
        };
        self.calls.insert(handle, call);
        self.active_calls += 1;
        self.dialogs
            .insert((req.call_id.clone(), local_tag), handle);
        self.uas_index
            .insert((req.call_id.clone(), from_tag), handle);
        if let Some(e) = self.servers.get_mut(&id) {
            e.call = Some(handle);
        }
        if let Some((status, header)) = self.config.call_options.rel100_refusal(rel100) {
            let _ = self.respond_with(now, handle, status, None, vec![header], None);
            return;
        }
        self.event(SipEvent::IncomingCall(IncomingCall {
            call: handle,
            call_id: CallId(req.call_id.clone()),
            request_uri,
            from: from_value,
            to: to_value,
            source: peer,
            body,
        }));
    }

    pub(super) fn on_in_dialog_request(
        &mut self,
        now: Instant,
        id: u64,
        method: Method,
        to_tag: String,
    ) {
        let Some(entry) = self.servers.get(&id) else {
            return;
        };
        let key = (entry.req.call_id.clone(), to_tag);
        let Some(handle) = self.dialogs.get(&key).copied() else {
            self.respond_server(now, id, 481, None, Vec::new(), None, None);
            return;
        };
        let seq = entry.req.cseq.seq;
        let Some(call) = self.calls.get_mut(&handle) else {
            self.respond_server(now, id, 481, None, Vec::new(), None, None);
            return;
        };
        if call.state == CallState::Ended {
            self.respond_server(now, id, 481, None, Vec::new(), None, None);
            return;
        }
        if !call.dialog.accept_remote_seq(seq, false) {
            // §12.2.2: lower CSeq than the last one.
            self.respond_server(
                now,
                id,
                500,
                Some("Server Internal Error - CSeq out of order"),
                Vec::new(),
                None,
                None,
            );
            return;
        }
        if let Some(e) = self.servers.get_mut(&id) {
            e.call = Some(handle);
        }
        match method {
            Method::Bye => self.on_bye(now, id, handle),
            Method::Invite => self.on_reinvite(now, id, handle),
            Method::Update => self.on_update(now, id, handle),
            Method::Info => {
                let body = self.request_body(id);
                self.respond_server(now, id, 200, None, Vec::new(), None, Some(handle));
                self.event(SipEvent::Info { call: handle, body });
            }
            Method::Options => {
                let extra = vec![
                    ("Allow", ALLOW.to_string()),
                    ("Supported", self.supported(handle)),
                ];
                self.respond_server(now, id, 200, None, extra, None, Some(handle));
            }
            Method::Notify => self.on_notify(now, id, handle),
            Method::PRack => self.on_prack(now, id, handle),
            _ => {
                let extra = vec![("Allow", ALLOW.to_string())];
                self.respond_server(now, id, 405, None, extra, None, Some(handle));
            }
        }
    }

    pub(super) fn on_bye(&mut self, now: Instant, id: u64, handle: CallHandle) {
        self.respond_server(now, id, 200, None, Vec::new(), None, Some(handle));
        // A pending INVITE (initial with early dialog, or re-INVITE) gets 487 (§15.1.2).
        if let Some(tx) = self
            .calls
            .get_mut(&handle)
            .and_then(|c| c.server_invite.take())
        {
            self.respond_server(now, tx, 487, None, Vec::new(), None, Some(handle));
        }
        self.end_call(now, handle, EndReason::RemoteBye);
    }

    pub(super) fn on_reinvite(&mut self, now: Instant, id: u64, handle: CallHandle) {
        let Some(call) = self.calls.get(&handle) else {
            return;
        };
        if call.client_reinvite.is_some() {
            // Glare (§14.1): 491.
            self.respond_server(now, id, 491, None, Vec::new(), None, Some(handle));
            return;
        }
        if call.server_invite.is_some() || call.pending_2xx.is_some() {
            // §14.2: 500 with Retry-After when our previous answer is still outstanding.
            let retry = self.rng.gen_range(0..10).to_string();
            self.respond_server(
                now,
                id,
                500,
                None,
                vec![("Retry-After", retry)],
                None,
                Some(handle),
            );
            return;
        }
        let req = self.servers.get(&id).map(|e| e.req.clone());
        let Some(req) = req else { return };
        let peer_session = session_expires(&req);
        let body = (!req.body().is_empty()).then(|| {
            Body::new(
                req.content_type().unwrap_or("application/sdp"),
                req.body().to_vec(),
            )
        });
        if let Some(call) = self.calls.get_mut(&handle) {
            call.dialog.refresh_target(&req);
            call.server_invite = Some(id);
        }
        self.refresh_session(now, handle, peer_session, false);
        self.event(SipEvent::Modify { call: handle, body });
    }

    pub(super) fn on_update(&mut self, now: Instant, id: u64, handle: CallHandle) {
        let req = self.servers.get(&id).map(|e| e.req.clone());
        let Some(req) = req else { return };
        let peer_session = session_expires(&req);
        if let Some(call) = self.calls.get_mut(&handle) {
            call.dialog.refresh_target(&req);
        }
        self.refresh_session(now, handle, peer_session, false);
        if req.body().is_empty() {
            // A session refresh without an offer (RFC 4028 §9).
            let extra = self.session_headers(handle, false);
            self.respond_server(now, id, 200, None, extra, None, Some(handle));
            return;
        }
        if let Some(call) = self.calls.get_mut(&handle) {
            if call.server_update.is_some() || call.client_reinvite.is_some() {
                self.respond_server(now, id, 491, None, Vec::new(), None, Some(handle));
                return;
            }
            call.server_update = Some(id);
        }
        let body = Some(Body::new(
            req.content_type().unwrap_or("application/sdp"),
            req.body().to_vec(),
        ));
        self.event(SipEvent::Modify { call: handle, body });
    }

    pub(super) fn on_notify(&mut self, now: Instant, id: u64, handle: CallHandle) {
        let req = self.servers.get(&id).map(|e| e.req.clone());
        let Some(req) = req else { return };
        let is_refer = req
            .header("Event")
            .or_else(|| req.header("o"))
            .map(|e| e.trim().to_ascii_lowercase().starts_with("refer"))
            .unwrap_or(false);
        if !is_refer {
            self.respond_server(now, id, 489, None, Vec::new(), None, Some(handle));
            return;
        }
        self.respond_server(now, id, 200, None, Vec::new(), None, Some(handle));
        let frag = String::from_utf8_lossy(req.body()).to_string();
        let status = frag
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("SIP/2.0 "))
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse::<u16>().ok());
        let terminated = req
            .header("Subscription-State")
            .map(|s| s.trim().to_ascii_lowercase().starts_with("terminated"))
            .unwrap_or(false);
        if let Some(status) = status {
            self.event(SipEvent::ReferProgress {
                call: handle,
                status,
                done: terminated || status >= 200,
            });
        }
    }

    pub(super) fn on_prack(&mut self, now: Instant, id: u64, handle: CallHandle) {
        let rack = self
            .servers
            .get(&id)
            .and_then(|e| e.req.header("RAck").map(str::to_string));
        let rseq = rack
            .as_deref()
            .and_then(|r| r.split_whitespace().next())
            .and_then(|s| s.parse::<u32>().ok());
        let matched = self
            .calls
            .get_mut(&handle)
            .and_then(|c| match (&c.reliable, rseq) {
                (Some((pending, _)), Some(r)) if *pending == r => c.reliable.take(),
                _ => None,
            })
            .is_some();
        let code = if matched { 200 } else { 481 };
        self.respond_server(now, id, code, None, Vec::new(), None, Some(handle));
    }

    pub(super) fn on_ack(&mut self, now: Instant, peer: Peer, mut msg: Msg) {
        // ACK for a non-2xx final response: same branch as the INVITE (§17.2.1).
        let key = server_key(&msg, Method::Invite);
        if let Some(id) = self.server_index.get(&key).copied()
            && let Some(e) = self.servers.get_mut(&id)
            && e.tx.state() == ServerState::Completed
        {
            let acts = e.tx.handle_ack(now);
            let p = e.peer;
            self.apply_server_actions(id, p, acts);
            return;
        }
        // ACK for a 2xx: a new transaction-less request within the dialog (§13.3.1.4).
        let Some(tag) = msg.to_tag.clone() else {
            return;
        };
        let Some(handle) = self.dialogs.get(&(msg.call_id.clone(), tag)).copied() else {
            return;
        };
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if call.pending_2xx.is_none() {
            return; // a retransmitted ACK
        }
        call.pending_2xx = None;
        call.initial_ack_seen = true;
        call.dialog.refresh_target(&msg);
        if peer.transport.is_reliable() {
            call.dialog.peer = peer;
        }
        let body_bytes = std::mem::take(match &mut msg.inner {
            rsip::SipMessage::Request(r) => &mut r.body,
            rsip::SipMessage::Response(r) => &mut r.body,
        });
        let body = (!body_bytes.is_empty())
            .then(|| Body::new(msg.content_type().unwrap_or("application/sdp"), body_bytes));
        let bye = call.bye_after_ack;
        self.event(SipEvent::Acked { call: handle, body });
        if bye {
            self.send_bye(now, handle, EndReason::LocalBye);
        }
    }

    pub(super) fn on_cancel(&mut self, now: Instant, peer: Peer, msg: Msg) {
        let invite_key = server_key(&msg, Method::Invite);
        let cancel_key = server_key(&msg, Method::Cancel);
        if let Some(id) = self.server_index.get(&cancel_key).copied() {
            // Retransmitted CANCEL.
            if let Some(e) = self.servers.get_mut(&id) {
                let acts = e.tx.handle_retransmission();
                let p = e.peer;
                self.apply_server_actions(id, p, acts);
            }
            return;
        }
        let tx = ServerTransaction::new(
            TxKind::NonInvite,
            peer.transport.is_reliable(),
            self.config.timers,
        );
        let cid = self.alloc_id();
        self.server_index.insert(cancel_key.clone(), cid);
        self.counters.transactions_started += 1;
        self.servers.insert(
            cid,
            ServerEntry {
                tx,
                key: cancel_key,
                peer,
                req: msg,
                call: None,
            },
        );
        let Some(invite_id) = self.server_index.get(&invite_key).copied() else {
            self.respond_server(now, cid, 481, None, Vec::new(), None, None);
            return;
        };
        // §9.2: 200 to the CANCEL; 487 to the INVITE if it has no final response yet.
        let (is_final, handle, to_tag) = match self.servers.get(&invite_id) {
            Some(e) => (
                e.tx.is_final(),
                e.call,
                e.call
                    .and_then(|h| self.calls.get(&h))
                    .map(|c| c.dialog.id.local_tag.clone()),
            ),
            None => (true, None, None),
        };
        self.respond_server_tagged(now, cid, 200, None, Vec::new(), None, to_tag.as_deref());
        if is_final {
            return; // CANCEL raced the final response: nothing else changes.
        }
        self.respond_server(now, invite_id, 487, None, Vec::new(), None, handle);
        if let Some(h) = handle {
            if let Some(c) = self.calls.get_mut(&h) {
                c.server_invite = None;
                c.reliable = None;
            }
            self.end_call(now, h, EndReason::Cancelled);
        }
    }
}
