//! Incoming responses: client transaction matching (§17.1.3), INVITE outcomes, forks, authentication retries.

use super::*;

impl SipStack {
    // ===== response handling =====

    pub(super) fn on_response(&mut self, now: Instant, peer: Peer, msg: Msg) {
        let Some(branch) = msg.via.branch.clone() else {
            self.counters.stray_responses += 1;
            return;
        };
        let key = ClientKey {
            branch,
            method: msg.cseq.method as u8,
        };
        let Some(id) = self.client_index.get(&key).copied() else {
            self.counters.stray_responses += 1;
            return;
        };
        let code = msg.status().unwrap_or(0);
        let Some(entry) = self.clients.get_mut(&id) else {
            return;
        };
        let acts = entry.tx.handle_response(now, code);
        let (purpose, tx_peer) = (entry.purpose, entry.peer);
        let is_invite = entry.tx.kind() == TxKind::Invite;
        let mut pass_up = false;
        for a in acts {
            match a {
                TxAction::PassUp => pass_up = true,
                TxAction::Send(b) => self.send(tx_peer, b),
                _ => {}
            }
        }
        if is_invite && (300..700).contains(&code) && pass_up {
            // Build and store the ACK for the non-2xx (§17.1.1.3).
            if let Some(ack) = self.non_2xx_ack(id, &msg)
                && let Some(e) = self.clients.get_mut(&id)
            {
                let act = e.tx.set_ack(ack);
                let p = e.peer;
                if let TxAction::Send(b) = act {
                    self.send(p, b);
                }
            }
        }
        self.schedule_client(id);
        if !pass_up {
            // Absorbed by the transaction (a 2xx retransmission to INVITE is passed up in the
            // Accepted state, RFC 6026).
            return;
        }
        match purpose {
            Purpose::Invite(h) => self.on_invite_response(now, id, h, msg),
            Purpose::ReInvite(h) => self.on_reinvite_response(now, id, h, msg),
            // The call ended for the TU when the BYE was sent; its response changes nothing.
            Purpose::Bye(_) => {}
            Purpose::Refer(h) => {
                if code >= 200 {
                    self.event(SipEvent::ReferProgress {
                        call: h,
                        status: code,
                        done: !(200..300).contains(&code),
                    });
                }
            }
            Purpose::Update(h) => {
                if (200..300).contains(&code) {
                    let se = session_expires(&msg);
                    self.refresh_session(now, h, se, true);
                } else if code == 408 || code == 481 {
                    self.send_bye(now, h, EndReason::DialogLost(code));
                }
            }
            Purpose::Register(rid) => self.on_register_response(now, rid, msg),
            Purpose::Keepalive => {
                tracing::debug!(%peer, code, "OPTIONS keepalive answered");
            }
            Purpose::Cancel | Purpose::Other => {}
        }
    }

    pub(super) fn on_invite_response(
        &mut self,
        now: Instant,
        client_id: u64,
        handle: CallHandle,
        msg: Msg,
    ) {
        let code = msg.status().unwrap_or(0);
        let Some(call) = self.calls.get_mut(&handle) else {
            // The call is gone; a 2xx still needs ACK and BYE (§13.2.2.4).
            return;
        };
        let body = (!msg.body().is_empty()).then(|| {
            Body::new(
                msg.content_type().unwrap_or("application/sdp"),
                msg.body().to_vec(),
            )
        });
        match code {
            100 => {
                if let Some(uac) = call.uac.as_mut() {
                    uac.got_provisional = true;
                    if uac.hangup_requested {
                        self.send_cancel(now, handle);
                    }
                }
            }
            101..=199 => {
                if let Some(tag) = &msg.to_tag
                    && call.dialog.id.remote_tag.is_empty()
                {
                    call.dialog.id.remote_tag = tag.clone();
                    call.dialog.remote_uri = msg.header("To").unwrap_or_default().to_string();
                    call.dialog.refresh_target(&msg);
                    let mut rr = record_routes(&msg);
                    if !rr.is_empty() {
                        rr.reverse();
                        call.dialog.route_set = rr;
                    }
                }
                let mut send_prack = None;
                if msg.has_option("Require", TAG_100REL)
                    && call.options.rel100 != Rel100::Disabled
                    && let Some(rseq) = msg
                        .header("RSeq")
                        .and_then(|v| v.trim().parse::<u32>().ok())
                    && let Some(uac) = call.uac.as_mut()
                {
                    if uac.acked_prack.contains(&rseq) {
                        // RFC 3262 §4: a retransmitted reliable provisional is discarded.
                        return;
                    }
                    uac.acked_prack.push(rseq);
                    send_prack = Some(format!("{rseq} {} INVITE", msg.cseq.seq));
                }
                let mut cancel = false;
                if let Some(uac) = call.uac.as_mut() {
                    uac.got_provisional = true;
                    cancel = uac.hangup_requested;
                }
                if let Some(rack) = send_prack {
                    let _ = self.in_dialog_request(
                        now,
                        handle,
                        Method::PRack,
                        vec![("RAck", rack)],
                        None,
                        Purpose::Other,
                    );
                }
                if cancel {
                    self.send_cancel(now, handle);
                } else {
                    self.event(SipEvent::Progress {
                        call: handle,
                        status: code,
                        body,
                    });
                }
            }
            200..=299 => {
                let first = call.state == CallState::Early;
                let same_fork = call.dialog.id.remote_tag.is_empty()
                    || msg.to_tag.as_deref() == Some(call.dialog.id.remote_tag.as_str());
                if !first {
                    if !same_fork {
                        // A 2xx from another fork: ACK it and end that dialog (§13.2.2.4).
                        self.ack_and_bye_fork(now, handle, &msg);
                        return;
                    }
                    if let Some(ack) = self.clients.get(&client_id).and_then(|e| e.ack_2xx.clone())
                        && let Some(p) = self.clients.get(&client_id).map(|e| e.peer)
                    {
                        self.send(p, ack); // 2xx retransmission: resend the ACK (§13.2.2.4)
                    }
                    return;
                }
                if let Some(tag) = &msg.to_tag {
                    call.dialog.id.remote_tag = tag.clone();
                }
                call.dialog.remote_uri = msg.header("To").unwrap_or_default().to_string();
                call.dialog.refresh_target(&msg);
                let mut rr = record_routes(&msg);
                rr.reverse();
                if !rr.is_empty() || call.dialog.route_set.is_empty() {
                    call.dialog.route_set = rr;
                }
                call.dialog.remote_seq = None;
                call.state = CallState::Confirmed;
                call.peer_allows_update = msg.has_option("Allow", "UPDATE");
                let hangup = call
                    .uac
                    .as_ref()
                    .map(|u| u.hangup_requested)
                    .unwrap_or(false);
                let cseq = msg.cseq.seq;
                // ACK for the 2xx: a new transaction-less request (§13.2.2.4).
                let ack = self.build_in_dialog(handle, Method::Ack, cseq, Vec::new(), None);
                if let Some((peer, bytes)) = ack {
                    self.send(peer, bytes.clone());
                    if let Some(e) = self.clients.get_mut(&client_id) {
                        e.ack_2xx = Some(bytes);
                    }
                }
                let se = session_expires(&msg);
                if let Some((secs, refresher)) = se {
                    let we_refresh = refresher.as_deref() != Some("uas");
                    self.start_session(
                        now,
                        handle,
                        Duration::from_secs(u64::from(secs)),
                        we_refresh,
                    );
                }
                if hangup {
                    // We cancelled, but the 2xx won the race: ACK then BYE (§9.1).
                    self.send_bye(now, handle, EndReason::Cancelled);
                } else {
                    self.event(SipEvent::Answered { call: handle, body });
                }
            }
            401 | 407 => {
                let header = if code == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                let values: Vec<&str> = message::headers_named(msg.headers(), header).collect();
                let challenge = select_challenge(&values);
                let Some(uac) = call.uac.as_mut() else { return };
                // One retry per challenge; a stale nonce may be retried, a few times at most.
                let retry = match (&challenge, &uac.spec.credentials) {
                    (Some(c), Some(_)) => {
                        uac.auth_attempts == 0 || (c.stale && uac.auth_attempts < MAX_AUTH_ATTEMPTS)
                    }
                    _ => false,
                };
                if !retry || uac.hangup_requested {
                    self.fail_call(now, handle, code);
                    return;
                }
                uac.auth_attempts += 1;
                if let Some(c) = challenge {
                    uac.digest.set_challenge(c);
                }
                uac.cseq += 1;
                let cseq = uac.cseq;
                // §12.1.2: the dialog's local CSeq starts at the INVITE's that creates it.
                call.dialog.local_seq = cseq;
                let spec = uac.spec.clone();
                let cnonce = self.random_hex(16);
                let auth = {
                    let Some(call) = self.calls.get_mut(&handle) else {
                        return;
                    };
                    let Some(uac) = call.uac.as_mut() else { return };
                    let creds = spec.credentials.as_ref();
                    creds.and_then(|cr| {
                        uac.digest.authorization(
                            cr,
                            "INVITE",
                            &spec.request_uri,
                            spec.body.as_ref().map(|b| b.data.as_slice()).unwrap_or(b""),
                            &cnonce,
                        )
                    })
                };
                let name = if code == 401 {
                    "Authorization"
                } else {
                    "Proxy-Authorization"
                };
                let new_client =
                    self.send_initial_invite(now, handle, &spec, cseq, auth.map(|a| (name, a)));
                if let Some(u) = self.calls.get_mut(&handle).and_then(|c| c.uac.as_mut()) {
                    u.client = new_client;
                    u.got_provisional = false;
                }
            }
            _ => self.fail_call(now, handle, code),
        }
    }

    /// ACKs a 2xx from a second fork of our INVITE and sends BYE on that dialog at once
    /// (RFC 3261 §13.2.2.4: only one dialog is kept).
    pub(super) fn ack_and_bye_fork(&mut self, now: Instant, handle: CallHandle, msg: &Msg) {
        let Some(call) = self.calls.get(&handle) else {
            return;
        };
        let mut fork = call.dialog.clone();
        fork.id.remote_tag = msg.to_tag.clone().unwrap_or_default();
        fork.remote_uri = msg.header("To").unwrap_or_default().to_string();
        fork.refresh_target(msg);
        let mut rr = record_routes(msg);
        rr.reverse();
        fork.route_set = rr;
        let peer = fork.next_hop();
        let local_addr = self.local_addr(
            peer.transport,
            peer.addr.ip(),
            contact_ip(&fork.local_contact),
        );
        for (method, seq) in [(Method::Ack, msg.cseq.seq), (Method::Bye, msg.cseq.seq + 1)] {
            let branch = self.new_branch();
            let bytes = build_request(&RequestSpec {
                method,
                uri: &fork.remote_target,
                via: via_value(peer.transport, local_addr, &branch),
                from: &fork.local_uri,
                to: &fork.remote_uri,
                call_id: &fork.id.call_id,
                cseq: seq,
                contact: None,
                routes: fork.routes(),
                extra: Vec::new(),
                body: None,
                user_agent: &self.config.user_agent,
            });
            if method == Method::Ack {
                self.send(peer, bytes);
            } else {
                self.start_client(now, peer, method, branch, bytes, Purpose::Other, None);
            }
        }
    }

    pub(super) fn on_reinvite_response(
        &mut self,
        now: Instant,
        client_id: u64,
        handle: CallHandle,
        msg: Msg,
    ) {
        let code = msg.status().unwrap_or(0);
        if code < 200 {
            return;
        }
        let body = (!msg.body().is_empty()).then(|| {
            Body::new(
                msg.content_type().unwrap_or("application/sdp"),
                msg.body().to_vec(),
            )
        });
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if call.client_reinvite == Some(client_id) {
            call.client_reinvite = None;
        } else if (200..300).contains(&code) {
            // Retransmitted 2xx: resend ACK.
            if let Some((p, b)) = self
                .clients
                .get(&client_id)
                .and_then(|e| e.ack_2xx.clone().map(|b| (e.peer, b)))
            {
                self.send(p, b);
            }
            return;
        }
        if (200..300).contains(&code) {
            call.dialog.refresh_target(&msg);
            let ack = self.build_in_dialog(handle, Method::Ack, msg.cseq.seq, Vec::new(), None);
            if let Some((peer, bytes)) = ack {
                self.send(peer, bytes.clone());
                if let Some(e) = self.clients.get_mut(&client_id) {
                    e.ack_2xx = Some(bytes);
                }
            }
            let se = session_expires(&msg);
            self.refresh_session(now, handle, se, true);
        } else if code == 408 || code == 481 {
            // RFC 5057 §5.1: the dialog is gone.
            self.send_bye(now, handle, EndReason::DialogLost(code));
        }
        self.event(SipEvent::ModifyResult {
            call: handle,
            status: code,
            body,
        });
    }

    pub(super) fn on_register_response(&mut self, now: Instant, rid: RegistrationId, msg: Msg) {
        let Some(reg) = self.regs.get_mut(&rid) else {
            return;
        };
        match reg.handle_response(now, &msg) {
            RegistrationAction::SendAgain => self.send_register(now, rid),
            RegistrationAction::Report(state) => {
                self.schedule(TimerRef::Reg(rid), reg_deadline(self.regs.get(&rid)));
                self.event(SipEvent::Registration { id: rid, state });
            }
            RegistrationAction::Nothing => {}
        }
    }
}
