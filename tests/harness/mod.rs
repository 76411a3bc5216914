//! Shared test harness for the sans-IO SIP stack: a virtual clock that drives a
//! [`SipStack`] from deadline to deadline, a text view of transmitted messages, a scripted
//! "fake peer" that writes SIP requests and responses as text, and a seeded lossy network
//! that joins two stacks.
//!
//! Nothing here opens a socket or sleeps: time is an `Instant` taken once and advanced by
//! hand, so every timing below is exact and every run is identical.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use voxline::sip::transaction::TimerConfig;
use voxline::sip::{Body, Output, Peer, SipEvent, SipStack, StackConfig, Transport};

/// The seed every stack in the suite starts from.
pub const SEED: u64 = 0x5eed_0001;

/// voxline's own address in the tests (TEST-NET-1).
pub const VOX_ADDR: &str = "192.0.2.1:5060";
/// The fake peer's address.
pub const PEER_ADDR: &str = "192.0.2.10:5060";

/// A hard cap on loop iterations, so a stack that never settles fails instead of hanging.
const MAX_STEPS: usize = 100_000;

/// Milliseconds as a `Duration`.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Seconds as a `Duration`.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A socket address from a literal.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

/// A UDP peer.
pub fn udp(s: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: addr(s),
    }
}

/// A TCP peer.
pub fn tcp(s: &str) -> Peer {
    Peer {
        transport: Transport::Tcp,
        addr: addr(s),
    }
}

/// The configuration used by most tests: voxline listens on [`VOX_ADDR`] over UDP and TCP.
pub fn config() -> StackConfig {
    StackConfig {
        listen: vec![
            (Transport::Udp, addr(VOX_ADDR)),
            (Transport::Tcp, addr(VOX_ADDR)),
        ],
        ..StackConfig::default()
    }
}

/// [`config`] with custom T1 and T2.
pub fn config_with_timers(t1: Duration, t2: Duration) -> StackConfig {
    StackConfig {
        timers: TimerConfig {
            t1,
            t2,
            ..TimerConfig::default()
        },
        ..config()
    }
}

/// A small SDP body.
pub fn sdp(direction: &str) -> Body {
    let text = format!(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
    );
    Body::new("application/sdp", text)
}

// ===================================================================================== wire

/// A transmitted (or hand-written) SIP message, read as text.
#[derive(Clone, PartialEq, Eq)]
pub struct Wire {
    /// The whole message.
    pub text: String,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\n{}", self.text)
    }
}

impl Wire {
    /// Wraps bytes (which must be UTF-8).
    pub fn new(bytes: &[u8]) -> Self {
        Wire {
            text: String::from_utf8(bytes.to_vec()).expect("SIP text is UTF-8"),
        }
    }

    /// The first line.
    pub fn start_line(&self) -> &str {
        self.text.split("\r\n").next().unwrap_or("")
    }

    /// The method, for a request.
    pub fn method(&self) -> Option<&str> {
        let l = self.start_line();
        (!l.starts_with("SIP/2.0")).then(|| l.split(' ').next().unwrap_or(""))
    }

    /// Whether this is a request with this method.
    pub fn is(&self, method: &str) -> bool {
        self.method() == Some(method)
    }

    /// The Request-URI, for a request.
    pub fn uri(&self) -> &str {
        self.start_line().split(' ').nth(1).unwrap_or("")
    }

    /// The status code, for a response.
    pub fn status(&self) -> Option<u16> {
        let l = self.start_line();
        l.strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
    }

    /// The reason phrase, for a response.
    pub fn reason(&self) -> &str {
        self.start_line().splitn(3, ' ').nth(2).unwrap_or("")
    }

    /// The header section.
    fn head(&self) -> &str {
        self.text.split("\r\n\r\n").next().unwrap_or("")
    }

    /// All values of a header, one per header line, in order (compact forms understood).
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.head()
            .split("\r\n")
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                let n = expand_compact(n.trim());
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .collect()
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }

    /// The first value of a header, which must be present.
    pub fn h(&self, name: &str) -> String {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
    }

    /// The body.
    pub fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("")
    }

    /// The top Via's branch.
    pub fn branch(&self) -> String {
        param(&self.h("Via"), "branch").unwrap_or_default()
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> (u32, String) {
        let v = self.h("CSeq");
        let mut it = v.split_whitespace();
        let n = it.next().and_then(|n| n.parse().ok()).expect("CSeq number");
        (n, it.next().unwrap_or("").to_string())
    }

    /// Call-ID.
    pub fn call_id(&self) -> String {
        self.h("Call-ID")
    }

    /// The From tag.
    #[allow(clippy::wrong_self_convention)] // "From tag", not a conversion
    pub fn from_tag(&self) -> Option<String> {
        param(&self.h("From"), "tag")
    }

    /// The To tag.
    pub fn to_tag(&self) -> Option<String> {
        param(&self.h("To"), "tag")
    }

    /// The URI in the Contact header.
    pub fn contact_uri(&self) -> Option<String> {
        self.header("Contact").map(|c| uri_of(&c).to_string())
    }
}

/// Compact header names (RFC 3261 §7.3.3).
fn expand_compact(name: &str) -> &str {
    match name {
        "i" => "Call-ID",
        "m" => "Contact",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "f" => "From",
        "t" => "To",
        "v" => "Via",
        "k" => "Supported",
        "x" => "Session-Expires",
        "o" => "Event",
        "r" => "Refer-To",
        _ => name,
    }
}

/// A header parameter (after the name-addr's `>` when there is one): `tag`, `branch`…
pub fn param(value: &str, name: &str) -> Option<String> {
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value.split_once(';').map(|(_, p)| p).unwrap_or(""),
    };
    params.split(';').map(str::trim).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// The URI of a name-addr (`"A" <sip:a@h>;tag=1` → `sip:a@h`) or an addr-spec.
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

// =================================================================================== driver

/// One message the stack sent, with the virtual time (since start) it was sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Time since the driver started.
    pub at: Duration,
    /// Destination.
    pub peer: Peer,
    /// The message.
    pub msg: Wire,
}

/// A stack driven by a virtual clock.
pub struct Driver {
    /// The stack.
    pub stack: SipStack,
    /// Time zero.
    pub t0: Instant,
    /// The current virtual time.
    pub now: Instant,
    /// When the stack next wants `handle_timeout`.
    pub deadline: Instant,
    /// Transmits not yet taken by the test.
    pub sent: VecDeque<Sent>,
    /// Events not yet taken by the test, with their time since start.
    pub events: VecDeque<(Duration, SipEvent)>,
    /// Every transmit since the start.
    pub all_sent: Vec<Sent>,
    /// Every event since the start.
    pub all_events: Vec<(Duration, SipEvent)>,
    /// How many times `handle_timeout` was called.
    pub wakeups: usize,
}

impl Driver {
    /// A stack with [`SEED`].
    pub fn new(config: StackConfig) -> Self {
        Self::with_seed(config, SEED)
    }

    /// A stack with a given seed.
    pub fn with_seed(config: StackConfig, seed: u64) -> Self {
        Self::starting_at(config, seed, Instant::now())
    }

    /// A stack with a given seed whose clock starts at `t0`.
    pub fn starting_at(config: StackConfig, seed: u64, t0: Instant) -> Self {
        let mut d = Driver {
            stack: SipStack::new(config, seed, t0),
            t0,
            now: t0,
            deadline: t0,
            sent: VecDeque::new(),
            events: VecDeque::new(),
            all_sent: Vec::new(),
            all_events: Vec::new(),
            wakeups: 0,
        };
        d.drain();
        d
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// The absolute instant `d` after the start.
    pub fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    /// Polls the stack until `Output::Timeout`, recording transmits and events.
    pub fn drain(&mut self) {
        for _ in 0..MAX_STEPS {
            match self.stack.poll_output() {
                Output::Transmit(t) => {
                    let s = Sent {
                        at: self.elapsed(),
                        peer: t.peer,
                        msg: Wire::new(&t.payload),
                    };
                    self.all_sent.push(s.clone());
                    self.sent.push_back(s);
                }
                Output::Event(e) => {
                    self.all_events.push((self.elapsed(), e.clone()));
                    self.events.push_back((self.elapsed(), e));
                }
                Output::Timeout(t) => {
                    self.deadline = t;
                    return;
                }
            }
        }
        panic!("poll_output never returned Timeout");
    }

    /// Feeds bytes from `from` at the current time.
    pub fn deliver(&mut self, from: Peer, text: impl AsRef<[u8]>) {
        let now = self.now;
        self.stack.handle_message(now, from, text.as_ref());
        self.drain();
    }

    /// Runs a command at the current time, then drains.
    pub fn cmd<R>(&mut self, f: impl FnOnce(&mut SipStack, Instant) -> R) -> R {
        let now = self.now;
        let r = f(&mut self.stack, now);
        self.drain();
        r
    }

    /// Fires every timer due at or before `t`, in order, then sets the clock to `t`.
    pub fn advance_to(&mut self, t: Instant) {
        assert!(t >= self.now, "time goes forward");
        for _ in 0..MAX_STEPS {
            if self.deadline > t {
                self.now = t;
                return;
            }
            self.now = self.deadline.max(self.now);
            self.wakeups += 1;
            let now = self.now;
            self.stack.handle_timeout(now);
            self.drain();
        }
        panic!("timers never settled before {:?}", t - self.t0);
    }

    /// Advances the clock by `d`.
    pub fn advance(&mut self, d: Duration) {
        let t = self.now + d;
        self.advance_to(t);
    }

    /// Advances to `d` after the start.
    pub fn advance_to_offset(&mut self, d: Duration) {
        let t = self.t0 + d;
        self.advance_to(t);
    }

    /// Takes the transmits collected so far.
    pub fn take_sent(&mut self) -> Vec<Sent> {
        self.sent.drain(..).collect()
    }

    /// Takes the events collected so far.
    pub fn take_events(&mut self) -> Vec<SipEvent> {
        self.events.drain(..).map(|(_, e)| e).collect()
    }

    /// Takes the single transmit that must have been sent; panics otherwise.
    pub fn take_one(&mut self) -> Wire {
        let s = self.take_sent();
        assert_eq!(s.len(), 1, "expected exactly one transmit, got {s:#?}");
        s.into_iter().next().map(|s| s.msg).expect("one")
    }

    /// Takes the transmits and returns the one request with `method` (others are kept out).
    pub fn take_request(&mut self, method: &str) -> Wire {
        let s = self.take_sent();
        let mut found: Vec<Wire> = s
            .into_iter()
            .filter(|s| s.msg.is(method))
            .map(|s| s.msg)
            .collect();
        assert_eq!(found.len(), 1, "expected one {method}, got {found:#?}");
        found.remove(0)
    }

    /// Takes the transmits and returns the one response with `code`.
    pub fn take_response(&mut self, code: u16) -> Wire {
        let s = self.take_sent();
        let mut found: Vec<Wire> = s
            .into_iter()
            .filter(|s| s.msg.status() == Some(code))
            .map(|s| s.msg)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {code} response, got {found:#?}"
        );
        found.remove(0)
    }

    /// Takes the single event that must have been emitted.
    pub fn take_event(&mut self) -> SipEvent {
        let e = self.take_events();
        assert_eq!(e.len(), 1, "expected exactly one event, got {e:#?}");
        e.into_iter().next().expect("one")
    }

    /// The start lines of transmits not yet taken (handy in failure messages).
    pub fn pending_lines(&self) -> Vec<String> {
        self.sent
            .iter()
            .map(|s| s.msg.start_line().to_string())
            .collect()
    }

    /// Times (since start) at which a transmit matching `pred` was sent, since the start.
    pub fn times_of(&self, pred: impl Fn(&Wire) -> bool) -> Vec<Duration> {
        self.all_sent
            .iter()
            .filter(|s| pred(&s.msg))
            .map(|s| s.at)
            .collect()
    }
}

/// Times from T1 multiples: `t1_times(t1, &[0, 1, 3])` = `[0, t1, 3·t1]`.
pub fn t1_times(t1: Duration, multiples: &[u32]) -> Vec<Duration> {
    multiples.iter().map(|m| t1 * *m).collect()
}

// ================================================================================ fake peer

/// A request under construction.
#[derive(Debug, Clone)]
pub struct Req {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Option<(String, String)>,
}

impl Req {
    /// A request with no headers yet.
    pub fn new(method: &str, uri: &str) -> Self {
        Req {
            method: method.to_string(),
            uri: uri.to_string(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Appends a header.
    pub fn h(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Replaces (or appends) a header.
    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        let value = value.into();
        match self
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(h) => h.1 = value,
            None => self.headers.push((name.to_string(), value)),
        }
        self
    }

    /// Removes a header.
    pub fn without(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// Sets the body.
    pub fn body(mut self, content_type: &str, body: &str) -> Self {
        self.body = Some((content_type.to_string(), body.to_string()));
        self
    }

    /// Sets an SDP body.
    pub fn sdp(self, b: &Body) -> Self {
        let text = String::from_utf8(b.data.clone()).expect("sdp");
        self.body(&b.content_type, &text)
    }

    /// Prints it, with Content-Length.
    pub fn build(&self) -> String {
        let mut out = format!("{} {} SIP/2.0\r\n", self.method, self.uri);
        print_rest(&mut out, &self.headers, self.body.as_ref());
        out
    }
}

/// A response under construction.
#[derive(Debug, Clone)]
pub struct Resp {
    code: u16,
    reason: String,
    headers: Vec<(String, String)>,
    body: Option<(String, String)>,
}

impl Resp {
    /// A response to `req`: Vias, From, To (with `to_tag` added when it has none), Call-ID and
    /// CSeq copied (RFC 3261 §8.2.6).
    pub fn to(req: &Wire, code: u16, reason: &str, to_tag: Option<&str>) -> Self {
        let mut headers = Vec::new();
        for v in req.headers("Via") {
            headers.push(("Via".to_string(), v));
        }
        headers.push(("From".to_string(), req.h("From")));
        let to = req.h("To");
        let to = match (to_tag, param(&to, "tag")) {
            (Some(t), None) => format!("{to};tag={t}"),
            _ => to,
        };
        headers.push(("To".to_string(), to));
        headers.push(("Call-ID".to_string(), req.call_id()));
        headers.push(("CSeq".to_string(), req.h("CSeq")));
        Resp {
            code,
            reason: reason.to_string(),
            headers,
            body: None,
        }
    }

    /// Appends a header.
    pub fn h(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Replaces the top Via (e.g. to add `received`/`rport` as a registrar would).
    pub fn top_via(mut self, value: impl Into<String>) -> Self {
        if let Some(h) = self.headers.iter_mut().find(|(n, _)| n == "Via") {
            h.1 = value.into();
        }
        self
    }

    /// Sets the body.
    pub fn body(mut self, content_type: &str, body: &str) -> Self {
        self.body = Some((content_type.to_string(), body.to_string()));
        self
    }

    /// Sets an SDP body.
    pub fn sdp(self, b: &Body) -> Self {
        let text = String::from_utf8(b.data.clone()).expect("sdp");
        self.body(&b.content_type, &text)
    }

    /// Prints it.
    pub fn build(&self) -> String {
        let mut out = format!("SIP/2.0 {} {}\r\n", self.code, self.reason);
        print_rest(&mut out, &self.headers, self.body.as_ref());
        out
    }
}

fn print_rest(out: &mut String, headers: &[(String, String)], body: Option<&(String, String)>) {
    for (n, v) in headers {
        out.push_str(n);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    match body {
        Some((ct, b)) => {
            out.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            ));
        }
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
}

/// A scripted SIP peer ("phone"): it names itself, writes Vias and branches, and keeps no
/// transaction state — the test decides what it sends and when.
#[derive(Debug, Clone)]
pub struct Phone {
    /// The address the stack sees messages come from.
    pub peer: Peer,
    /// User part of its URIs.
    pub user: String,
    counter: u32,
}

impl Phone {
    /// A phone at [`PEER_ADDR`] over UDP.
    pub fn new() -> Self {
        Self::at(udp(PEER_ADDR))
    }

    /// A phone at a given peer address.
    pub fn at(peer: Peer) -> Self {
        Phone {
            peer,
            user: "alice".to_string(),
            counter: 0,
        }
    }

    fn next(&mut self) -> u32 {
        self.counter += 1;
        self.counter
    }

    /// A fresh RFC 3261 branch.
    pub fn branch(&mut self) -> String {
        format!("z9hG4bKph{}", self.next())
    }

    /// A fresh tag.
    pub fn tag(&mut self) -> String {
        format!("phtag{}", self.next())
    }

    /// A Via value with `branch`.
    pub fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.peer.transport, self.peer.addr
        )
    }

    /// Its own URI.
    pub fn uri(&self) -> String {
        format!("sip:{}@{}", self.user, self.peer.addr)
    }

    /// Its Contact value.
    pub fn contact(&self) -> String {
        match self.peer.transport {
            Transport::Udp => format!("<{}>", self.uri()),
            Transport::Tcp => format!("<{};transport=tcp>", self.uri()),
            Transport::Tls => format!("<{};transport=tls>", self.uri()),
            Transport::Ws => format!("<{};transport=ws>", self.uri()),
            Transport::Wss => format!("<{};transport=wss>", self.uri()),
        }
    }

    /// Starts a call to voxline: a dialog in which the phone is the UAC.
    pub fn call(&mut self, to_uri: &str) -> PeerDialog {
        let tag = self.tag();
        let n = self.next();
        PeerDialog {
            call_id: format!("call{n}@{}", self.peer.addr.ip()),
            local: format!("\"Alice\" <{}>;tag={tag}", self.uri()),
            remote: format!("<{to_uri}>"),
            local_seq: 1,
            target: to_uri.to_string(),
            routes: Vec::new(),
            invite: None,
        }
    }

    /// A dialog in which voxline called the phone, from voxline's INVITE and the To tag the
    /// phone answers with.
    pub fn answer_dialog(&self, invite: &Wire, my_tag: &str) -> PeerDialog {
        let mut routes: Vec<String> = invite.headers("Record-Route");
        routes.retain(|r| !r.is_empty());
        PeerDialog {
            call_id: invite.call_id(),
            local: format!("{};tag={my_tag}", invite.h("To")),
            remote: invite.h("From"),
            local_seq: 100,
            target: invite.contact_uri().expect("INVITE has Contact"),
            routes,
            invite: None,
        }
    }

    /// A response to a request from voxline, with this phone's Contact.
    pub fn respond(&self, req: &Wire, code: u16, reason: &str, to_tag: Option<&str>) -> Resp {
        let r = Resp::to(req, code, reason, to_tag);
        if (101..300).contains(&code) && req.is("INVITE") {
            r.h("Contact", self.contact())
        } else {
            r
        }
    }
}

impl Default for Phone {
    fn default() -> Self {
        Self::new()
    }
}

/// The phone's side of a dialog with voxline.
#[derive(Debug, Clone)]
pub struct PeerDialog {
    /// Call-ID.
    pub call_id: String,
    /// The phone's From/To value with its tag.
    pub local: String,
    /// voxline's From/To value (with its tag once known).
    pub remote: String,
    /// The phone's last CSeq.
    pub local_seq: u32,
    /// Where in-dialog requests go (voxline's Contact once known).
    pub target: String,
    /// Route values.
    pub routes: Vec<String>,
    /// The initial INVITE the phone sent, once built.
    pub invite: Option<Wire>,
}

impl PeerDialog {
    /// The initial INVITE (CSeq 1). Stored so that ACK and CANCEL can reuse its branch.
    pub fn invite(&mut self, phone: &mut Phone) -> Req {
        let branch = phone.branch();
        self.request_with(phone, "INVITE", 1, &branch)
            .h(
                "Allow",
                "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY",
            )
            .h("Supported", "timer")
    }

    /// Remembers the INVITE as sent (call after building it).
    pub fn sent_invite(&mut self, text: &str) {
        self.invite = Some(Wire {
            text: text.to_string(),
        });
    }

    /// Learns voxline's tag and Contact from a response to the INVITE.
    pub fn learn(&mut self, resp: &Wire) {
        if param(&self.remote, "tag").is_none() {
            self.remote = resp.h("To");
        }
        if let Some(c) = resp.contact_uri() {
            self.target = c;
        }
        let mut rr = resp.headers("Record-Route");
        rr.reverse();
        if !rr.is_empty() {
            self.routes = rr;
        }
    }

    /// A new in-dialog request with the next CSeq and a fresh branch.
    pub fn request(&mut self, phone: &mut Phone, method: &str) -> Req {
        self.local_seq += 1;
        let branch = phone.branch();
        self.request_with(phone, method, self.local_seq, &branch)
    }

    /// A request with an explicit CSeq number and branch.
    pub fn request_with(&self, phone: &Phone, method: &str, cseq: u32, branch: &str) -> Req {
        let mut r = Req::new(method, &self.target)
            .h("Via", phone.via(branch))
            .h("Max-Forwards", "70")
            .h("From", self.local.clone())
            .h("To", self.remote.clone())
            .h("Call-ID", self.call_id.clone())
            .h("CSeq", format!("{cseq} {method}"));
        for route in &self.routes {
            r = r.h("Route", route.clone());
        }
        if matches!(
            method,
            "INVITE" | "UPDATE" | "REFER" | "SUBSCRIBE" | "NOTIFY"
        ) {
            r = r.h("Contact", phone.contact());
        }
        r
    }

    /// The ACK for a 2xx to the INVITE with CSeq `cseq` (a new transaction: fresh branch).
    pub fn ack_2xx(&self, phone: &mut Phone, cseq: u32) -> Req {
        let branch = phone.branch();
        self.request_with(phone, "ACK", cseq, &branch)
    }

    /// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): the INVITE's branch,
    /// Request-URI and From, the response's To.
    pub fn ack_non_2xx(&self, resp: &Wire) -> String {
        let inv = self.invite.as_ref().expect("INVITE sent");
        Req::new("ACK", inv.uri())
            .h("Via", inv.h("Via"))
            .h("Max-Forwards", "70")
            .h("From", inv.h("From"))
            .h("To", resp.h("To"))
            .h("Call-ID", inv.call_id())
            .h("CSeq", format!("{} ACK", inv.cseq().0))
            .build()
    }

    /// The CANCEL for the INVITE (RFC 3261 §9.1): same branch, Request-URI, From, To, CSeq number.
    pub fn cancel(&self) -> String {
        let inv = self.invite.as_ref().expect("INVITE sent");
        Req::new("CANCEL", inv.uri())
            .h("Via", inv.h("Via"))
            .h("Max-Forwards", "70")
            .h("From", inv.h("From"))
            .h("To", inv.h("To"))
            .h("Call-ID", inv.call_id())
            .h("CSeq", format!("{} CANCEL", inv.cseq().0))
            .build()
    }
}

// ================================================================================= scenarios

/// An inbound call set up to the point where voxline has the INVITE: the phone's dialog, the
/// INVITE text and voxline's handle.
pub struct Inbound {
    /// The phone.
    pub phone: Phone,
    /// Its dialog.
    pub dialog: PeerDialog,
    /// The handle voxline gave the call.
    pub call: voxline::sip::CallHandle,
}

/// The phone sends an INVITE (with `extra` headers and an SDP offer); checks 100 Trying and
/// IncomingCall and returns the pieces.
pub fn inbound_invite(d: &mut Driver, extra: &[(&str, &str)]) -> Inbound {
    let mut phone = Phone::new();
    inbound_invite_from(d, &mut phone, extra).into_inbound(phone)
}

/// Like [`inbound_invite`] with a given phone.
pub fn inbound_invite_from(
    d: &mut Driver,
    phone: &mut Phone,
    extra: &[(&str, &str)],
) -> InboundParts {
    let mut dialog = phone.call("sip:1000@192.0.2.1");
    let mut req = dialog.invite(phone).h("Contact", phone.contact());
    for (n, v) in extra {
        req = req.set(n, *v);
    }
    let text = req.sdp(&sdp("sendrecv")).build();
    dialog.sent_invite(&text);
    d.deliver(phone.peer, &text);
    let trying = d.take_one();
    assert_eq!(trying.status(), Some(100), "100 Trying at once");
    let call = match d.take_event() {
        SipEvent::IncomingCall(c) => c.call,
        e => panic!("expected IncomingCall, got {e:?}"),
    };
    InboundParts { dialog, call }
}

/// The parts of [`Inbound`] without the phone.
pub struct InboundParts {
    /// Dialog.
    pub dialog: PeerDialog,
    /// Handle.
    pub call: voxline::sip::CallHandle,
}

impl InboundParts {
    /// Joins with the phone.
    pub fn into_inbound(self, phone: Phone) -> Inbound {
        Inbound {
            phone,
            dialog: self.dialog,
            call: self.call,
        }
    }
}

/// An inbound call answered with 200 and ACKed: returns the pieces; nothing is left queued.
pub fn established_inbound(d: &mut Driver, extra: &[(&str, &str)]) -> Inbound {
    let mut c = inbound_invite(d, extra);
    d.cmd(|s, now| s.respond(now, c.call, 200, Some(sdp("sendrecv"))))
        .expect("answer");
    let ok = d.take_response(200);
    c.dialog.learn(&ok);
    let ack = c.dialog.ack_2xx(&mut c.phone, 1).build();
    d.deliver(c.phone.peer, ack);
    match d.take_event() {
        SipEvent::Acked { call, .. } => assert_eq!(call, c.call),
        e => panic!("expected Acked, got {e:?}"),
    }
    assert!(d.take_sent().is_empty());
    c
}

/// An outgoing call specification to the phone at `next_hop`.
pub fn outgoing(next_hop: Peer) -> voxline::sip::OutgoingCall {
    voxline::sip::OutgoingCall {
        request_uri: format!("sip:bob@{}", next_hop.addr),
        from_uri: "sip:voxline@192.0.2.1".to_string(),
        from_display: Some("Voxline".to_string()),
        to_uri: format!("sip:bob@{}", next_hop.addr),
        next_hop,
        routes: Vec::new(),
        body: Some(sdp("sendrecv")),
        credentials: None,
        local_ip: None,
        extra_headers: Vec::new(),
        options: None,
    }
}

/// An outbound call answered by the phone with 200 and ACKed by voxline. Returns the phone,
/// its dialog, voxline's handle and voxline's INVITE.
pub struct Outbound {
    /// The phone.
    pub phone: Phone,
    /// Its dialog (the phone is the UAS).
    pub dialog: PeerDialog,
    /// The handle.
    pub call: voxline::sip::CallHandle,
    /// voxline's INVITE.
    pub invite: Wire,
}

/// voxline calls the phone; the phone answers 200 with `extra` headers; voxline ACKs.
pub fn established_outbound(d: &mut Driver, extra: &[(&str, &str)]) -> Outbound {
    let mut phone = Phone::new();
    let call = d.cmd(|s, now| s.invite(now, outgoing(phone.peer)));
    let invite = d.take_request("INVITE");
    let tag = phone.tag();
    let mut ok = phone
        .respond(&invite, 200, "OK", Some(&tag))
        .sdp(&sdp("sendrecv"));
    for (n, v) in extra {
        ok = ok.h(n, *v);
    }
    d.deliver(phone.peer, ok.build());
    let ack = d.take_request("ACK");
    assert_eq!(ack.cseq(), (1, "ACK".to_string()));
    match d.take_event() {
        SipEvent::Answered { call: c, .. } => assert_eq!(c, call),
        e => panic!("expected Answered, got {e:?}"),
    }
    let dialog = phone.answer_dialog(&invite, &tag);
    Outbound {
        phone,
        dialog,
        call,
        invite,
    }
}

// ============================================================================ lossy network

/// A packet in flight.
#[derive(Debug, Clone)]
pub struct Packet {
    /// When it arrives.
    pub arrive: Instant,
    /// Sequence number (ties broken by send order).
    pub seq: u64,
    /// Sender, as the receiver sees it.
    pub from: Peer,
    /// Destination address.
    pub to: SocketAddr,
    /// Bytes.
    pub payload: Vec<u8>,
}

/// A seeded lossy, delaying (and so reordering) datagram network.
pub struct LossyNet {
    rng: StdRng,
    /// Probability a packet is dropped.
    pub loss: f64,
    /// Smallest one-way delay.
    pub min_delay: Duration,
    /// Largest one-way delay.
    pub max_delay: Duration,
    in_flight: Vec<Packet>,
    seq: u64,
    /// Packets dropped so far.
    pub dropped: u64,
    /// Packets delivered so far.
    pub delivered: u64,
}

impl LossyNet {
    /// A network with a seed, a loss probability and a delay range.
    pub fn new(seed: u64, loss: f64, min_delay: Duration, max_delay: Duration) -> Self {
        LossyNet {
            rng: StdRng::seed_from_u64(seed),
            loss,
            min_delay,
            max_delay,
            in_flight: Vec::new(),
            seq: 0,
            dropped: 0,
            delivered: 0,
        }
    }

    /// Sends a packet at `now` (it may be dropped).
    pub fn send(&mut self, now: Instant, from: Peer, to: SocketAddr, payload: Vec<u8>) {
        if self.rng.gen_bool(self.loss) {
            self.dropped += 1;
            return;
        }
        let span = self.max_delay.saturating_sub(self.min_delay).as_micros() as u64;
        let extra = if span == 0 {
            0
        } else {
            self.rng.gen_range(0..=span)
        };
        let arrive = now + self.min_delay + Duration::from_micros(extra);
        self.seq += 1;
        self.in_flight.push(Packet {
            arrive,
            seq: self.seq,
            from,
            to,
            payload,
        });
    }

    /// The next arrival time.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.iter().map(|p| p.arrive).min()
    }

    /// Removes and returns every packet that arrives at or before `now`, in arrival order.
    pub fn due(&mut self, now: Instant) -> Vec<Packet> {
        let mut due: Vec<Packet> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].arrive <= now {
                due.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|p| (p.arrive, p.seq));
        self.delivered += due.len() as u64;
        due
    }
}

/// Which node of a [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first stack.
    A,
    /// The second stack.
    B,
}

/// Two stacks joined by a [`LossyNet`], sharing one virtual clock.
pub struct Sim {
    /// Node A.
    pub a: Driver,
    /// Node A's address.
    pub a_addr: SocketAddr,
    /// Node B.
    pub b: Driver,
    /// Node B's address.
    pub b_addr: SocketAddr,
    /// The network.
    pub net: LossyNet,
}

impl Sim {
    /// Two stacks listening on `a_addr` and `b_addr` over UDP.
    pub fn new(a_addr: SocketAddr, b_addr: SocketAddr, net: LossyNet, seed: u64) -> Self {
        let cfg = |a: SocketAddr| StackConfig {
            listen: vec![(Transport::Udp, a)],
            ..StackConfig::default()
        };
        let a = Driver::with_seed(cfg(a_addr), seed);
        // One clock for both.
        let b = Driver::starting_at(cfg(b_addr), seed.wrapping_add(1), a.t0);
        Sim {
            a,
            a_addr,
            b,
            b_addr,
            net,
        }
    }

    /// The current time.
    pub fn now(&self) -> Instant {
        self.a.now
    }

    /// Moves every transmit of both nodes into the network.
    pub fn flush(&mut self) {
        let now = self.now();
        for s in self.a.take_sent() {
            let from = Peer {
                transport: Transport::Udp,
                addr: self.a_addr,
            };
            self.net
                .send(now, from, s.peer.addr, s.msg.text.into_bytes());
        }
        for s in self.b.take_sent() {
            let from = Peer {
                transport: Transport::Udp,
                addr: self.b_addr,
            };
            self.net
                .send(now, from, s.peer.addr, s.msg.text.into_bytes());
        }
    }

    /// Runs until `end`, calling `react` for each event of either node (the callback may give
    /// that node commands; their output is routed at once).
    pub fn run_until(&mut self, end: Instant, mut react: impl FnMut(Side, &mut Driver, SipEvent)) {
        self.flush();
        self.dispatch(&mut react);
        for _ in 0..MAX_STEPS {
            let next = [
                Some(self.a.deadline),
                Some(self.b.deadline),
                self.net.next_arrival(),
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("some deadline");
            if next > end {
                self.a.now = end;
                self.b.now = end;
                return;
            }
            let next = next.max(self.now());
            self.a.now = next;
            self.b.now = next;
            for p in self.net.due(next) {
                if p.to == self.a_addr {
                    self.a.deliver(p.from, &p.payload);
                } else if p.to == self.b_addr {
                    self.b.deliver(p.from, &p.payload);
                }
            }
            if self.a.deadline <= next {
                self.a.wakeups += 1;
                self.a.stack.handle_timeout(next);
                self.a.drain();
            }
            if self.b.deadline <= next {
                self.b.wakeups += 1;
                self.b.stack.handle_timeout(next);
                self.b.drain();
            }
            self.dispatch(&mut react);
            self.flush();
        }
        panic!("simulation did not settle");
    }

    fn dispatch(&mut self, react: &mut impl FnMut(Side, &mut Driver, SipEvent)) {
        loop {
            if let Some((_, e)) = self.a.events.pop_front() {
                react(Side::A, &mut self.a, e);
            } else if let Some((_, e)) = self.b.events.pop_front() {
                react(Side::B, &mut self.b, e);
            } else {
                return;
            }
        }
    }
}

// ============================================================================= registration

/// A registration of `1000@pbx.example.com` through `next_hop`.
pub fn reg_config(
    next_hop: Peer,
    credentials: Option<voxline::sip::auth::Credentials>,
) -> voxline::sip::registration::RegistrationConfig {
    voxline::sip::registration::RegistrationConfig {
        registrar: "sip:pbx.example.com".to_string(),
        aor: "sip:1000@pbx.example.com".to_string(),
        contact_user: "1000".to_string(),
        credentials,
        expires: 3600,
        next_hop,
        routes: Vec::new(),
        local_addr: addr(VOX_ADDR),
    }
}

/// Credentials for the registrar and proxy tests.
pub fn creds(password: &str) -> voxline::sip::auth::Credentials {
    voxline::sip::auth::Credentials {
        username: "1000".to_string(),
        password: password.to_string(),
    }
}
