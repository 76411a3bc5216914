//! Which agent answers a call, and the media and trunk settings calls are made with.

use std::net::IpAddr;
use std::time::Duration;

use crate::sdp::CodecPrefs;
use std::sync::Arc;

use super::DtmfSendMethod;
use super::agent;
use super::manager::CallManager;

/// Which built-in agent answers the audio.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentKind {
    /// Answers and holds: sends silence, listens.
    Hold,
    /// Plays the caller's audio back after `delay`.
    Echo {
        /// Extra delay.
        delay: Duration,
    },
    /// Plays a file or a tone, then hangs up (or loops).
    Play(crate::agent::PlaySpec),
    /// A realtime AI backend (OpenAI Realtime or compatible).
    Ai(Arc<agent::AiAgent>),
}

/// An agent as the call layer uses it: how it answers and what it does with the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    /// The agent's name (for logs and the API).
    pub name: String,
    /// Ring this long before answering.
    pub answer_after: Duration,
    /// Hang up this long after the call is confirmed, if set.
    pub hangup_after: Option<Duration>,
    /// What answers the audio.
    pub kind: AgentKind,
    /// Record the call (two-channel WAV).
    pub record: bool,
    /// Variables of this call for the agent's instruction templates (`{{var.NAME}}`): set by
    /// `POST /calls` for an outbound call; empty otherwise.
    pub variables: std::collections::BTreeMap<String, String>,
    /// Sources allowed to call this agent (`None`: anyone). A caller from elsewhere gets 403.
    pub allow_from: Option<agent::AllowList>,
    /// The jitter buffer's minimum delay on this agent's calls, if not the media default.
    pub jitter_min: Option<Duration>,
    /// The version of an agent defined through the API (`None` for voxline.toml's).
    pub version: Option<u32>,
}

impl AgentSpec {
    /// The built-in `hold` agent: answers at once and holds the call until the far end hangs up.
    pub fn hold() -> Self {
        AgentSpec {
            name: "hold".into(),
            answer_after: Duration::ZERO,
            hangup_after: None,
            kind: AgentKind::Hold,
            record: false,
            variables: Default::default(),
            allow_from: None,
            jitter_min: None,
            version: None,
        }
    }

    /// The built-in `echo` agent.
    pub fn echo() -> Self {
        AgentSpec {
            name: "echo".into(),
            kind: AgentKind::Echo {
                delay: Duration::ZERO,
            },
            ..AgentSpec::hold()
        }
    }
}

/// Routing of called numbers to agents: first match wins.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    entries: Vec<(String, AgentSpec)>,
}

impl Routes {
    /// Adds a route: an exact user, a prefix ending in `*`, or `*`.
    pub fn push(&mut self, pattern: impl Into<String>, agent: AgentSpec) {
        self.entries.push((pattern.into(), agent));
    }

    /// The agent for a called user part (empty for none).
    pub fn agent_for(&self, called: &str) -> Option<&AgentSpec> {
        self.entries
            .iter()
            .find(|(p, _)| pattern_matches(p, called))
            .map(|(_, a)| a)
    }
}

/// Routes set through the API (`PUT /routes/{number}`), checked before voxline.toml's:
/// shared by the API, which replaces the whole list after every change of a route or of an
/// agent they name, and the call manager, which looks up each incoming call. A std `RwLock`,
/// held for one lookup or one swap, never across an await.
#[derive(Debug, Clone, Default)]
pub struct DynamicRoutes(Arc<std::sync::RwLock<Routes>>);

impl DynamicRoutes {
    /// Replaces the routes.
    pub fn replace(&self, routes: Routes) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = routes;
    }

    /// The agent for a called user part, if an API route matches it.
    pub fn agent_for(&self, called: &str) -> Option<AgentSpec> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .agent_for(called)
            .cloned()
    }
}

/// Whether `pattern` is a route pattern: a user part (letters, digits, `+ # . _ -`),
/// optionally ending in `*` (a prefix), or `*` alone.
pub fn valid_route_pattern(pattern: &str) -> bool {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    (pattern == "*" || !body.is_empty())
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '#' | '.' | '_' | '-'))
}

pub(super) fn pattern_matches(pattern: &str, called: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => called.starts_with(prefix),
        None => pattern == called,
    }
}

/// Media settings the call layer offers and accepts.
#[derive(Debug, Clone)]
pub struct MediaPolicy {
    /// Codec preference.
    pub codecs: CodecPrefs,
    /// Offer/accept telephone-event.
    pub telephone_event: bool,
    /// Packet time.
    pub ptime_ms: u32,
    /// Offer/accept rtcp-mux.
    pub rtcp_mux: bool,
    /// An external IP for the SDP `c=` line (NAT), overriding the signalling address.
    pub external_ip: Option<IpAddr>,
    /// Give up (CANCEL) on an outbound call not answered within this time.
    pub no_answer_timeout: Option<Duration>,
    /// Hang up when no RTP arrives for this long.
    pub rtp_timeout: Option<Duration>,
    /// Jitter-buffer bounds (min, max).
    pub jitter: (Duration, Duration),
    /// Where recordings go (`data_dir/recordings`); `None` disables recording.
    pub recordings_dir: Option<std::path::PathBuf>,
    /// Where AI agents' transcripts go (`data_dir/transcripts`); `None`: no transcripts.
    pub transcripts_dir: Option<std::path::PathBuf>,
    /// SRTP for calls that match no trunk.
    pub srtp: crate::sdp::SrtpMode,
    /// The SRTP suites those calls offer and accept.
    pub srtp_suites: crate::sdp::SrtpSuites,
}

impl Default for MediaPolicy {
    fn default() -> Self {
        MediaPolicy {
            codecs: CodecPrefs::default(),
            telephone_event: true,
            ptime_ms: 20,
            rtcp_mux: true,
            external_ip: None,
            no_answer_timeout: Some(Duration::from_secs(60)),
            rtp_timeout: Some(Duration::from_secs(30)),
            jitter: (Duration::from_millis(20), Duration::from_millis(200)),
            recordings_dir: None,
            transcripts_dir: None,
            srtp: crate::sdp::SrtpMode::Off,
            srtp_suites: crate::sdp::SrtpSuites::default(),
        }
    }
}

/// A trunk's call settings, for the calls that come from it or go out through it.
#[derive(Debug, Clone)]
pub struct TrunkPolicy {
    /// The trunk's name (an outbound call names its trunk).
    pub name: String,
    /// Sources whose calls belong to it; the first trunk that matches a call's source wins.
    pub sources: agent::AllowList,
    /// The codecs it offers and accepts, most preferred first.
    pub codecs: CodecPrefs,
    /// How key presses are sent when the API or the agent's tool names no method. Only
    /// [`DtmfSendMethod::Rfc4733`] offers and accepts `telephone-event` (with the media
    /// policy's `telephone_event`); the others leave it out of the SDP, so the trunk sends
    /// its digits the same way (or in-band).
    pub dtmf: DtmfSendMethod,
    /// The SIP extensions (session timers, 100rel) its calls use.
    pub sip: crate::sip::CallOptions,
    /// SRTP on its calls.
    pub srtp: crate::sdp::SrtpMode,
    /// The SRTP suites its calls offer and accept.
    pub srtp_suites: crate::sdp::SrtpSuites,
    /// The most calls through it at once, inbound and outbound (`None`: no own limit).
    pub max_calls: Option<u32>,
    /// The most new outbound calls per second through it (`None`: no limit).
    pub max_calls_per_s: Option<f64>,
}

impl CallManager {
    /// The trunk a call from `source` belongs to: the first whose sources contain it.
    pub(super) fn trunk_from(&self, source: IpAddr) -> Option<&TrunkPolicy> {
        self.trunks.iter().find(|t| t.sources.contains(source))
    }

    /// The trunk named `name`.
    pub(super) fn trunk_named(&self, name: Option<&str>) -> Option<&TrunkPolicy> {
        name.and_then(|n| self.trunks.iter().find(|t| t.name == n))
    }

    /// Calls in progress through the trunk `name`.
    pub(super) fn trunk_calls(&self, name: &str) -> usize {
        self.calls
            .values()
            .filter(|c| c.trunk.as_deref() == Some(name))
            .count()
    }

    /// Why the trunk `name` cannot take one more call now, if it cannot: its `max_calls` is
    /// reached, or (`outbound`) its `max_calls_per_s` bucket is empty. An outbound call that
    /// may go takes a token.
    pub(super) fn trunk_refusal(
        &mut self,
        now: std::time::Instant,
        name: &str,
        outbound: bool,
    ) -> Option<String> {
        let policy = self.trunks.iter().find(|t| t.name == name)?;
        let (max_calls, rate) = (policy.max_calls, policy.max_calls_per_s);
        if let Some(max) = max_calls
            && self.trunk_calls(name) >= max as usize
        {
            return Some(format!("trunk {name} is at its max_calls ({max})"));
        }
        if let (true, Some(rate)) = (outbound, rate) {
            let burst = rate.max(1.0);
            let (tokens, last) = self
                .trunk_rates
                .entry(name.to_owned())
                .or_insert((burst, now));
            *tokens =
                (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(burst);
            *last = now;
            if *tokens < 1.0 {
                return Some(format!("trunk {name} is at its max_calls_per_s ({rate})"));
            }
            *tokens -= 1.0;
        }
        None
    }
}
