//! Call bookkeeping and small helpers on the stack.

use super::*;

impl SipStack {
    // ===== call bookkeeping =====

    pub(super) fn end_call(&mut self, now: Instant, handle: CallHandle, reason: EndReason) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if call.state == CallState::Ended {
            return;
        }
        call.state = CallState::Ended;
        call.pending_2xx = None;
        call.reliable = None;
        call.session = None;
        call.linger_until = Some(now + ENDED_LINGER);
        self.active_calls = self.active_calls.saturating_sub(1);
        self.schedule_call(handle);
        self.event(SipEvent::Ended {
            call: handle,
            reason,
        });
    }

    pub(super) fn fail_call(&mut self, now: Instant, handle: CallHandle, status: u16) {
        let cancelled = self
            .calls
            .get(&handle)
            .and_then(|c| c.uac.as_ref())
            .is_some_and(|u| u.hangup_requested);
        // After our CANCEL, a 487 or no final response at all (§9.1) means "cancelled".
        let reason = if cancelled && matches!(status, 487 | 408) {
            EndReason::Cancelled
        } else {
            EndReason::Failed(status)
        };
        self.end_call(now, handle, reason);
    }

    pub(super) fn request_body(&self, id: u64) -> Option<Body> {
        let e = self.servers.get(&id)?;
        (!e.req.body().is_empty()).then(|| {
            Body::new(
                e.req.content_type().unwrap_or("application/octet-stream"),
                e.req.body().to_vec(),
            )
        })
    }

    // ===== small helpers =====

    pub(super) fn send(&mut self, peer: Peer, payload: Vec<u8>) {
        let peer = self.route_alias(peer);
        self.out
            .push_back(Output::Transmit(Transmit { peer, payload }));
    }

    pub(super) fn event(&mut self, e: SipEvent) {
        self.out.push_back(Output::Event(e));
    }

    pub(super) fn alloc_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn new_call_handle(&mut self) -> CallHandle {
        CallHandle(self.alloc_id())
    }

    pub(super) fn random_hex(&mut self, n: usize) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        (0..n)
            .map(|_| HEX[self.rng.gen_range(0..16)] as char)
            .collect()
    }

    pub(super) fn new_tag(&mut self) -> String {
        self.random_hex(10)
    }

    pub(super) fn new_branch(&mut self) -> String {
        format!("{BRANCH_MAGIC_COOKIE}{}", self.random_hex(16))
    }

    /// Our address towards `dest`: the configured advertised IP, else a specific listen IP,
    /// else the hint, else loopback for loopback peers, else the default IP.
    pub(super) fn local_addr(
        &self,
        transport: Transport,
        dest: IpAddr,
        hint: Option<IpAddr>,
    ) -> SocketAddr {
        let listen = self
            .config
            .listen
            .iter()
            .find(|(t, _)| *t == transport)
            .or_else(|| self.config.listen.first())
            .map(|(_, a)| *a)
            .unwrap_or_else(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060));
        let ip = if let Some(ip) = self.config.advertised_ip {
            ip
        } else if !listen.ip().is_unspecified() {
            listen.ip()
        } else if let Some(h) = hint {
            h
        } else if dest.is_loopback() {
            dest
        } else {
            self.config.default_ip
        };
        SocketAddr::new(ip, listen.port())
    }
}
