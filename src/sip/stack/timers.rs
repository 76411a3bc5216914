//! Timers: transaction, call and registration deadlines, and the one heap that schedules them.

use super::*;

impl SipStack {
    // ===== timers =====

    pub(super) fn server_timeout(&mut self, now: Instant, id: u64) {
        let Some(e) = self.servers.get_mut(&id) else {
            return;
        };
        let acts = e.tx.handle_timeout(now);
        let p = e.peer;
        let call = e.call;
        let is_invite = e.tx.kind() == TxKind::Invite;
        for a in &acts {
            if *a == TxAction::TimedOut && is_invite {
                // Timer H: the ACK for our non-2xx never came. The call is over anyway.
                if let Some(h) = call {
                    self.end_call(now, h, EndReason::Rejected(0));
                }
            }
        }
        self.apply_server_actions(id, p, acts);
    }

    pub(super) fn client_timeout(&mut self, now: Instant, id: u64) {
        let Some(e) = self.clients.get_mut(&id) else {
            return;
        };
        let acts = e.tx.handle_timeout(now);
        let (p, purpose) = (e.peer, e.purpose);
        // A transport error counts as a 503 (RFC 3261 §8.1.3.1), a timer as a 408.
        let code = if e.tx.transport_failed() { 503 } else { 408 };
        let mut terminated = false;
        for a in acts {
            match a {
                TxAction::Send(b) => self.send(p, b),
                TxAction::TimedOut => match purpose {
                    Purpose::Invite(h) => {
                        if self
                            .calls
                            .get(&h)
                            .is_some_and(|c| c.state == CallState::Early)
                        {
                            self.fail_call(now, h, code);
                        }
                    }
                    Purpose::ReInvite(h) => {
                        if let Some(c) = self.calls.get_mut(&h) {
                            c.client_reinvite = None;
                        }
                        self.event(SipEvent::ModifyResult {
                            call: h,
                            status: 408,
                            body: None,
                        });
                        self.send_bye(now, h, EndReason::DialogLost(408));
                    }
                    Purpose::Bye(_) => {} // the call already ended when the BYE was sent
                    Purpose::Refer(h) => self.event(SipEvent::ReferProgress {
                        call: h,
                        status: 408,
                        done: true,
                    }),
                    Purpose::Update(h) => self.send_bye(now, h, EndReason::DialogLost(408)),
                    Purpose::Register(rid) => {
                        if let Some(reg) = self.regs.get_mut(&rid)
                            && let RegistrationAction::Report(state) = if code == 503 {
                                reg.handle_transport_failure(now)
                            } else {
                                reg.handle_timeout_failure(now)
                            }
                        {
                            self.schedule(TimerRef::Reg(rid), reg_deadline(self.regs.get(&rid)));
                            self.event(SipEvent::Registration { id: rid, state });
                        }
                    }
                    Purpose::Keepalive => {
                        tracing::warn!(%p, "OPTIONS keepalive got no answer: peer unreachable?");
                    }
                    Purpose::Cancel | Purpose::Other => {}
                },
                TxAction::Terminated => terminated = true,
                TxAction::PassUp => {}
            }
        }
        if terminated {
            if let Some(e) = self.clients.remove(&id) {
                self.client_index.remove(&e.key);
            }
        } else {
            self.schedule_client(id);
        }
    }

    pub(super) fn call_timeout(&mut self, now: Instant, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if let Some(until) = call.linger_until {
            if now >= until {
                let key = (
                    call.dialog.id.call_id.clone(),
                    call.dialog.id.local_tag.clone(),
                );
                let ukey = (
                    call.dialog.id.call_id.clone(),
                    call.dialog.id.remote_tag.clone(),
                );
                self.dialogs.remove(&key);
                if self.uas_index.get(&ukey) == Some(&handle) {
                    self.uas_index.remove(&ukey);
                }
                self.calls.remove(&handle);
            }
            return;
        }
        let peer = call.dialog.next_hop();
        let mut resend = Vec::new();
        let mut ack_timeout = false;
        if let Some(r) = call.pending_2xx.as_mut() {
            if now >= r.give_up {
                ack_timeout = true;
            } else if now >= r.next {
                resend.push(r.bytes.clone());
                r.interval = (r.interval * 2).min(self.config.timers.t2);
                r.next = now + r.interval;
            }
        }
        let mut prack_timeout = false;
        if let Some((_, r)) = call.reliable.as_mut() {
            if now >= r.give_up {
                prack_timeout = true;
            } else if now >= r.next {
                resend.push(r.bytes.clone());
                r.interval *= 2; // RFC 3262 §3: doubling, like Timer A
                r.next = now + r.interval;
            }
        }
        let mut refresh = false;
        let mut expired = false;
        if let Some(s) = &call.session
            && now >= s.deadline
        {
            if s.we_refresh {
                refresh = true
            } else {
                expired = true
            }
        }
        // 2xx and reliable 1xx go back the way the INVITE came (§17.2.1 response routing).
        let p = if call.direction == CallDirection::Inbound {
            call.dialog.peer
        } else {
            peer
        };
        for b in resend {
            self.send(p, b);
        }
        if ack_timeout {
            if let Some(c) = self.calls.get_mut(&handle) {
                c.pending_2xx = None;
            }
            self.send_bye(now, handle, EndReason::AckTimeout);
        } else if prack_timeout {
            if let Some(c) = self.calls.get_mut(&handle) {
                c.reliable = None;
            }
            // RFC 3262 §3: no PRACK after 64·T1 — reject the INVITE with 5xx.
            if self
                .calls
                .get(&handle)
                .is_some_and(|c| c.state == CallState::Early)
            {
                let _ = self.respond_with(
                    now,
                    handle,
                    504,
                    Some("Server Time-out - no PRACK"),
                    Vec::new(),
                    None,
                );
            }
        }
        if expired {
            self.send_bye(now, handle, EndReason::SessionExpired);
        } else if refresh {
            self.session_refresh(now, handle);
        }
        self.schedule_call(handle);
    }

    pub(super) fn reg_timeout(&mut self, now: Instant, id: RegistrationId) {
        let due = self
            .regs
            .get(&id)
            .and_then(|r| r.next_send)
            .is_some_and(|t| t <= now);
        if due {
            self.send_register(now, id);
        }
    }

    // ===== timer plumbing =====

    pub(super) fn schedule(&mut self, r: TimerRef, at: Option<Instant>) {
        if let Some(t) = at {
            self.timers.push(Reverse((t, r)));
        }
    }

    pub(super) fn schedule_client(&mut self, id: u64) {
        let d = self.clients.get(&id).and_then(|e| e.tx.deadline());
        self.schedule(TimerRef::Client(id), d);
    }

    pub(super) fn schedule_call(&mut self, h: CallHandle) {
        let d = self.calls.get(&h).and_then(call_deadline);
        self.schedule(TimerRef::Call(h), d);
    }

    /// Drops heap entries that no longer match their owner's deadline once they outnumber
    /// the live owners four to one (a long session-timer entry of an ended call would
    /// otherwise stay until it fires).
    pub(super) fn compact_timers(&mut self) {
        let live = self.servers.len() + self.clients.len() + self.calls.len() + self.regs.len();
        if self.timers.len() <= 1024 || self.timers.len() <= 4 * live {
            return;
        }
        let mut entries: Vec<(Instant, TimerRef)> = std::mem::take(&mut self.timers)
            .into_iter()
            .map(|Reverse(e)| e)
            .collect();
        entries.retain(|(t, r)| self.owner_deadline(*r) == Some(*t));
        entries.sort();
        entries.dedup();
        self.timers = entries.into_iter().map(Reverse).collect();
    }

    pub(super) fn owner_deadline(&self, r: TimerRef) -> Option<Instant> {
        match r {
            TimerRef::Server(id) => self.servers.get(&id).and_then(|e| e.tx.deadline()),
            TimerRef::Client(id) => self.clients.get(&id).and_then(|e| e.tx.deadline()),
            TimerRef::Call(h) => self.calls.get(&h).and_then(call_deadline),
            TimerRef::Reg(id) => reg_deadline(self.regs.get(&id)),
        }
    }
}
