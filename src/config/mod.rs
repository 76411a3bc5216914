//! `voxline.toml` and the SIP profiles in `sip-profiles/`.
//!
//! [`Config::load`] reads the file, [`Config::from_toml_str`] parses text, and
//! [`Config::embedded_default`] is what an empty file means. Parsing is strict: every
//! table uses `deny_unknown_fields`, and the values are checked after parsing (packet
//! time, port range, codec names, trunk/agent names, profiles, routes, credentials,
//! CIDRs, timers). Every [`ConfigError`] names the file, the dotted key and the reason.
//!
//! The result is plain typed data: a [`Trunk`] already has its profile merged in and
//! its password read from the environment. This module depends on no other voxline
//! module; the binary maps these structs to the cores' own configurations.
//!
//! The reference of every key is `docs/configuration.md`; `voxline.example.toml` is a
//! commented example.

mod agent_json;
mod ai;
mod cascaded;
mod cidr;
pub mod cluster;
mod dsp;
mod error;
mod file;
mod outcomes;
mod profile;
mod resolve;
mod webhooks;
mod wiring;

pub use agent_json::{AGENT_DEFINITION, agent_from_json};
pub use webhooks::{WEBHOOK_DEFINITION, webhook_from_json};
pub use wiring::{CallSetup, agent_spec};

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use crate::sdp::{SrtpMode, SrtpSuite, SrtpSuites};
use serde::Deserialize;

pub use cidr::{Cidr, CidrError};
pub use error::{ConfigError, ConfigErrorKind, Position};
pub use profile::{DEFAULT_PROFILE, Profile};

/// Name of the agent that always exists: it answers the call and holds it.
pub const BUILTIN_HOLD_AGENT: &str = "hold";
/// The name of the built-in echo agent.
pub const BUILTIN_ECHO_AGENT: &str = "echo";
/// The name of the built-in realtime agent, present when `OPENAI_API_KEY` is set.
pub const BUILTIN_ASSISTANT_AGENT: &str = "assistant";
/// The environment variable a realtime agent reads its API key from by default.
pub const DEFAULT_API_KEY_ENV: &str = "OPENAI_API_KEY";
/// The built-in assistant's instructions.
pub const DEFAULT_INSTRUCTIONS: &str = "You are a friendly, helpful voice assistant answering a phone call. \
Speak naturally and keep your answers short: one or two sentences. The caller's number is {{caller}}. \
When the caller says goodbye or wants to end the call, say goodbye and call the hang_up tool.";
/// The built-in assistant's greeting.
pub const DEFAULT_GREETING: &str = "Greet the caller briefly and ask how you can help.";
/// The built-in cascaded assistant's greeting (spoken as written).
pub const DEFAULT_CASCADED_GREETING: &str = "Hello! How can I help you today?";
/// With this key set too (besides `OPENAI_API_KEY`), the built-in assistant is cascaded:
/// Deepgram speech to text and speech, OpenAI's LLM.
pub const DEEPGRAM_API_KEY_ENV: &str = "DEEPGRAM_API_KEY";

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[sip]`: listeners, identity, RFC 3261 timers, message limits.
    pub sip: SipSection,
    /// `[limits]`: call admission.
    pub limits: LimitsSection,
    /// `[http]`: the control API.
    pub http: HttpSection,
    /// `[media]`: codecs and RTP ports.
    pub media: MediaSection,
    /// `[[trunk]]` entries, profile merged, in file order.
    pub trunks: Vec<Trunk>,
    /// `[[route]]` entries in file order (first match wins). When the file has no
    /// `[[route]]` at all this is one route `"*"` to the built-in `hold` agent.
    pub routes: Vec<Route>,
    /// `[[agent]]` entries in file order, followed by the built-in `hold` agent unless
    /// the file defines an agent with that name.
    pub agents: Vec<AgentSection>,
    /// `profile_dir`: searched for `NAME.toml` before the built-in profiles.
    pub profile_dir: Option<PathBuf>,
    /// `data_dir` (default `./data`).
    pub data_dir: PathBuf,
    /// `[[webhook]]`: endpoints that receive signed call events (needs call records).
    pub webhooks: Vec<crate::webhooks::Endpoint>,
    /// `retention_days`: delete recordings and transcripts of calls that ended this many
    /// days ago (`None`: keep them).
    pub retention_days: Option<u32>,
    /// `[redaction]`: PII redaction of stored transcripts, memory, analyses and webhook
    /// payloads (empty: off).
    pub redaction: std::sync::Arc<crate::records::redact::Redactor>,
    /// `[pricing]`: the price table of the analytics' cost estimate (`None`: no estimate).
    pub pricing: Option<Pricing>,
    /// `[recording_upload]`: upload each recording to S3-compatible storage after the call
    /// (`None`: recordings stay local only).
    pub recording_upload: Option<crate::storage::S3Settings>,
    /// `[store]`: where call records and the other shared state live (the data directory's
    /// SQLite by default; PostgreSQL for a cluster).
    pub store: crate::records::StoreLocation,
    /// `[cluster]`: this node's identity among the nodes sharing a PostgreSQL store
    /// (`None`: a single node).
    pub cluster: Option<cluster::ClusterSection>,
}

/// `[pricing]`: what an answered minute costs, for the cost estimate in `GET /analytics`.
/// Prices are kept in millionths of the currency's unit (exact, and comparable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    /// An ISO 4217 code (`USD`), shown with the figures.
    pub currency: String,
    /// Every answered minute: the carrier's price, in millionths.
    pub telephony_micros_per_minute: u64,
    /// Per agent name, the AI's price of an answered minute in millionths; `"*"` for agents
    /// not named.
    pub agent_micros_per_minute: std::collections::BTreeMap<String, u64>,
}

impl Pricing {
    /// The estimated cost of `talk_seconds` of `agent`'s answered calls, in the currency.
    pub fn cost(&self, agent: &str, talk_seconds: f64) -> f64 {
        let ai = self
            .agent_micros_per_minute
            .get(agent)
            .or_else(|| self.agent_micros_per_minute.get("*"))
            .copied()
            .unwrap_or(0);
        let per_minute = (self.telephony_micros_per_minute + ai) as f64 / 1e6;
        talk_seconds / 60.0 * per_minute
    }
}

/// `[sip]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSection {
    /// `udp_listen`: UDP sockets to bind; empty means no UDP.
    pub udp_listen: Vec<SocketAddr>,
    /// `tcp_listen`: TCP sockets to listen on; empty means no TCP.
    pub tcp_listen: Vec<SocketAddr>,
    /// `tls_listen`: TLS sockets to listen on (default `0.0.0.0:5061` when a certificate is
    /// set, else none).
    pub tls_listen: Vec<SocketAddr>,
    /// `ws_listen`: SIP over WebSocket (RFC 7118) sockets to listen on, for browsers' SIP
    /// stacks (default none).
    pub ws_listen: Vec<SocketAddr>,
    /// `wss_listen`: SIP over secure WebSocket sockets (default none; needs the certificate
    /// and key of `tls_cert_file` and `tls_key_file`).
    pub wss_listen: Vec<SocketAddr>,
    /// `tls_cert_file`, `tls_key_file`: the TLS listener's certificate chain and key (PEM),
    /// checked at load.
    pub tls_cert_file: Option<PathBuf>,
    /// See `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// `tls_ca_file`: the CA certificates outbound TLS connections verify servers against,
    /// instead of Mozilla's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// `tls_client_cert_file`, `tls_client_key_file`: a certificate chain and key (PEM)
    /// outbound TLS connections present to a server that asks for one (mutual TLS), checked
    /// at load.
    pub tls_client_cert: Option<(PathBuf, PathBuf)>,
    /// `external_ip`: address advertised in Contact/Via/SDP when behind NAT.
    pub external_ip: Option<IpAddr>,
    /// `user_agent`: the User-Agent / Server header value.
    pub user_agent: String,
    /// `domain`: our host part for From when calling out without a trunk.
    pub domain: Option<String>,
    /// `t1_ms`: RTT estimate, RFC 3261 §17.1.1.1.
    pub t1: Duration,
    /// `t2_ms`: maximum retransmit interval for non-INVITE requests and INVITE
    /// responses, RFC 3261 §17.1.2.2.
    pub t2: Duration,
    /// `t4_ms`: maximum time a message stays in the network, RFC 3261 §17.1.2.2.
    pub t4: Duration,
    /// `max_message_bytes`: largest SIP message accepted.
    pub max_message_bytes: usize,
    /// `max_headers`: most header fields accepted in one message.
    pub max_headers: usize,
    /// `tcp_keepalive_s`: CRLF keepalive interval on TCP (RFC 5626 §3.5.1); `None` = off.
    pub tcp_keepalive: Option<Duration>,
    /// `tcp_max_connections`, `tcp_max_per_source`, `tcp_idle_timeout_s`,
    /// `tcp_message_timeout_s`: limits on SIP over TCP.
    pub tcp_limits: crate::runtime::TcpLimits,
    /// `session_expires_s`: RFC 4028 session interval we ask for; `None` = session
    /// timers off.
    pub session_expires: Option<Duration>,
    /// `min_se_s`: smallest session interval we accept (RFC 4028 §5, at least 90 s).
    pub min_se: Duration,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsSection {
    /// `max_calls`: concurrent calls, at least 1.
    pub max_calls: u32,
    /// `at_limit`: how to refuse a call over the limit.
    pub at_limit: AtLimit,
    /// `retry_after_s`: the Retry-After value sent with 503 (RFC 3261 §20.33).
    pub retry_after: Duration,
    /// `no_answer_timeout_s`: outbound ring timeout; `None` (0 in the file) = no timeout.
    pub no_answer_timeout: Option<Duration>,
    /// `max_transactions`: the most live SIP server transactions (see
    /// [`crate::sip::StackConfig::max_transactions`]).
    pub max_transactions: usize,
    /// `drain_deadline_s`: while draining (`POST /drain`, SIGTERM with `--drain`), how long
    /// calls in progress may go on before voxline hangs them up and exits.
    pub drain_deadline: Duration,
}

/// `limits.at_limit`: the final response for a call over `max_calls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AtLimit {
    /// `"busy"`: 486 Busy Here.
    Busy,
    /// `"unavailable"`: 503 Service Unavailable with Retry-After.
    Unavailable,
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSection {
    /// `listen`: address of the HTTP API.
    pub listen: SocketAddr,
    /// `token_env`: name of the environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// The bearer token read from `token_env` (`None` when `token_env` is not set:
    /// the API then requires no token).
    pub token: Option<Secret>,
    /// The web console's password, read from `console_password_env`: a login with it (or
    /// with the token) opens a console session. Setting it makes the API require the token
    /// or a session even without `token_env`.
    pub console_password: Option<Secret>,
    /// `max_connections`, `max_connections_per_source`, `idle_timeout_s`.
    pub limits: crate::api::HttpLimits,
}

/// `[media]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// `codecs`: offered/accepted codecs in preference order (non-empty, no duplicates).
    pub codecs: Vec<Codec>,
    /// `telephone_event`: offer RFC 4733 telephone-event.
    pub telephone_event: bool,
    /// `ptime_ms`: packet time, 10, 20 or 30 ms.
    pub ptime: Duration,
    /// `rtp_port_min` / `rtp_port_max`.
    pub rtp_ports: RtpPortRange,
    /// `rtcp_mux`: offer RTP/RTCP multiplexing (RFC 5761).
    pub rtcp_mux: bool,
    /// `rtp_timeout_s`: hang up when no RTP arrives for this long (0 = never; default 30).
    pub rtp_timeout: Option<Duration>,
    /// `jitter_min_ms` / `jitter_max_ms`: bounds of the adaptive jitter buffer (20 / 200).
    pub jitter_min: Duration,
    /// See `jitter_min`.
    pub jitter_max: Duration,
    /// `srtp`: SRTP for calls that match no trunk: off (default), optional or mandatory.
    pub srtp: SrtpMode,
    /// `srtp_suites`: the SRTP suites those calls offer and accept, in order.
    pub srtp_suites: SrtpSuites,
}

/// The RTP port range: `min` is even and `min < max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPortRange {
    min: u16,
    max: u16,
}

impl RtpPortRange {
    /// First port of the range (even).
    pub fn min(&self) -> u16 {
        self.min
    }

    /// Last port of the range (inclusive).
    pub fn max(&self) -> u16 {
        self.max
    }
}

/// A codec voxline can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 µ-law (`"pcmu"`).
    Pcmu,
    /// G.711 A-law (`"pcma"`).
    Pcma,
    /// G.722 (`"g722"`).
    G722,
    /// Opus (`"opus"`).
    Opus,
}

impl Codec {
    /// Every codec, in the default preference order.
    pub const ALL: [Codec; 4] = [Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus];

    /// The configuration name (`"pcmu"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "pcmu",
            Codec::Pcma => "pcma",
            Codec::G722 => "g722",
            Codec::Opus => "opus",
        }
    }
}

/// A codec name outside pcmu, pcma, g722, opus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown codec \"{0}\" (known: pcmu, pcma, g722, opus)")]
pub struct UnknownCodec(pub String);

impl FromStr for Codec {
    type Err = UnknownCodec;

    /// Parses a codec name, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Codec, UnknownCodec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownCodec(s.to_owned()))
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A trunk with its profile merged in and its password resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    /// `name`: unique.
    pub name: String,
    /// `profile`: name of the profile used (default `"generic"`).
    pub profile: String,
    /// `host`: DNS name or IP address of the peer.
    pub host: String,
    /// `port` (from the trunk, else the profile).
    pub port: u16,
    /// `transport` (from the trunk, else the profile).
    pub transport: TrunkTransport,
    /// `username` for REGISTER and digest authentication.
    pub username: Option<String>,
    /// The password, from `password` or the variable named by `password_env`.
    pub password: Option<Secret>,
    /// `register`: send REGISTER to the peer as an extension would.
    pub register: bool,
    /// `register_expires_s`: the Expires we ask for.
    pub register_expires: Duration,
    /// `outbound_proxy`: a `sip:` URI every request to this trunk is sent through.
    pub outbound_proxy: Option<String>,
    /// `from_user`: user part of From on calls through this trunk.
    pub from_user: Option<String>,
    /// `from_domain`, or `host` when the profile says `from_domain_from_host = true`.
    pub from_domain: Option<String>,
    /// `allow_from`: sources whose requests belong to this trunk. When the file gives
    /// none and `host` is an IP address, that single address.
    pub allow_from: Vec<Cidr>,
    /// `codecs`: trunk, else profile, else `media.codecs`.
    pub codecs: Vec<Codec>,
    /// `dtmf` (trunk, else profile).
    pub dtmf: DtmfMode,
    /// `srtp` (trunk, else profile): off, optional or mandatory.
    pub srtp: SrtpMode,
    /// `srtp_suites`: the SRTP suites its calls offer and accept, in order (default: all).
    pub srtp_suites: SrtpSuites,
    /// `max_calls`: the most calls through this trunk at once, inbound and outbound (`None`:
    /// only `[limits] max_calls`).
    pub max_calls: Option<u32>,
    /// `max_calls_per_s`: the most new outbound calls per second through it (`None`: no
    /// limit).
    pub max_calls_per_s: Option<u32>,
    /// `session_timers` (trunk, else profile) — and only if `sip.session_expires_s` is
    /// not 0.
    pub session_timers: bool,
    /// `prack` (trunk, else profile).
    pub prack: PrackMode,
    /// `options_keepalive_s` (trunk, else profile); `None` = no OPTIONS pings.
    pub options_keepalive: Option<Duration>,
}

/// How SIP reaches a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    /// `"udp"`
    Udp,
    /// `"tcp"`
    Tcp,
    /// `"tls"`: TLS over TCP (needs nothing of `[sip]`: outbound connections verify the
    /// server against Mozilla's roots or `sip.tls_ca_file`).
    Tls,
}

/// How DTMF digits travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtmfMode {
    /// `"rfc4733"`: RTP telephone-event packets (RFC 4733).
    Rfc4733,
    /// `"info"`: SIP INFO requests.
    Info,
    /// `"inband"`: tones inside the audio.
    Inband,
}

/// Reliable provisional responses (RFC 3262, `100rel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrackMode {
    /// `"supported"`: advertise `Supported: 100rel`, use it when the peer asks.
    Supported,
    /// `"required"`: send `Require: 100rel`.
    Required,
    /// `"disabled"`: never use 100rel.
    Disabled,
}

/// A route: which agent answers which called number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `number`, parsed.
    pub pattern: RoutePattern,
    /// `agent`: name of an entry of [`Config::agents`].
    pub agent: String,
}

/// `route.number`: matched against the user part of the Request-URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutePattern {
    /// `"1000"`: exactly this user part.
    Exact(String),
    /// `"+4930*"`: any user part starting with this prefix (possibly empty after it).
    Prefix(String),
    /// `"*"`: anything.
    Any,
}

impl RoutePattern {
    /// Whether `called_user` matches (case-sensitive).
    pub fn matches(&self, called_user: &str) -> bool {
        match self {
            RoutePattern::Exact(n) => n == called_user,
            RoutePattern::Prefix(p) => called_user.starts_with(p.as_str()),
            RoutePattern::Any => true,
        }
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoutePattern::Exact(n) => f.write_str(n),
            RoutePattern::Prefix(p) => write!(f, "{p}*"),
            RoutePattern::Any => f.write_str("*"),
        }
    }
}

/// An `[[agent]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSection {
    /// `name`: unique.
    pub name: String,
    /// `kind`.
    pub kind: AgentKind,
    /// `greeting`: free text (unused by `hold`).
    pub greeting: Option<String>,
    /// `answer_after_ms`: ring this long before answering (default 0).
    pub answer_after: std::time::Duration,
    /// `hangup_after_ms`: hang up this long after the call is established (default: never).
    pub hangup_after: Option<std::time::Duration>,
    /// `record`: write a two-channel WAV of the call to `data_dir/recordings` (default true).
    pub record: bool,
    /// `echo_delay_ms` (echo agent): play the caller's audio back this much later (default 0).
    pub echo_delay: std::time::Duration,
    /// What the play agent plays: `play_file`, or a tone (`tone_hz`, `tone_dbfs`, `tone_ms`).
    pub play: Option<PlaySource>,
    /// `repeat` (play agent): loop instead of hanging up at the end (default false).
    pub repeat: bool,
    /// True for a built-in agent (`hold`, `echo`, `assistant`) that the file did not define.
    pub builtin: bool,
    /// `instructions` (realtime agent): the system instructions, a template.
    pub instructions: Option<String>,
    /// `allow_from` (realtime agent): sources allowed to call it, besides the trunks'
    /// `allow_from`. When both are empty, loopback only.
    pub allow_from: Vec<Cidr>,
    /// `[agent.realtime]`: the backend (realtime agents only).
    pub realtime: Option<RealtimeSection>,
    /// `[agent.tools]`: the built-in telephony tools.
    pub tools: ToolsSection,
    /// `[[agent.http_tool]]`: HTTP tools.
    pub http_tools: Vec<HttpToolSection>,
    /// `[agent.fallback]`: what happens when the backend cannot be reached.
    pub fallback: FallbackSection,
    /// `[agent.dsp]`: the voice chain on the agent's calls (realtime agents).
    pub dsp: DspSection,
    /// `[agent.stt]`, `[agent.llm]`, `[agent.tts]` and `turn_silence_ms` (cascaded agents).
    pub cascaded: Option<CascadedSection>,
    /// `memory` (AI agents, default false): remember callers across calls — the `remember`
    /// tool, the last call's summary (with `[agent.analysis]`), `{{memory}}` in the
    /// instructions.
    pub memory: bool,
    /// `[agent.analysis]` (AI agents): the post-call analysis, if any.
    pub analysis: Option<crate::agent::analysis::AnalysisConfig>,
}

/// A cascaded agent's providers, resolved (keys read from the environment).
#[derive(Debug, Clone, PartialEq)]
pub struct CascadedSection {
    /// `[agent.stt]`.
    pub stt: crate::agent::cascaded::stt::SttConfig,
    /// `[agent.llm]`.
    pub llm: crate::agent::cascaded::chat::ChatConfig,
    /// `[agent.tts]`.
    pub tts: crate::agent::cascaded::tts::TtsConfig,
    /// Who ends the caller's turn: voxline's VAD (after `turn_silence_ms`, default 500)
    /// with the STT, or the STT alone when `[agent.dsp]` turns the VAD off.
    pub turn_end: crate::agent::cascaded::TurnEnd,
}

impl Eq for CascadedSection {}

/// `[agent.dsp]`: the voice chain between the caller and a realtime agent (docs/dsp.md).
#[derive(Debug, Clone, PartialEq)]
pub struct DspSection {
    /// The stages: `enabled`, `echo_cancellation`, `noise_suppression`, `vad`,
    /// `vad_threshold`, `min_speech_ms`, and the end-of-turn silence (`vad_silence_ms` of
    /// `[agent.realtime]` with `turn_detection = "local"`). All off with `enabled = false`.
    pub chain: crate::dsp::chain::ChainConfig,
    /// `barge_in`: who decides that the caller interrupts the agent.
    pub barge_in: crate::call::BargeIn,
}

impl Eq for DspSection {}

impl Default for DspSection {
    fn default() -> Self {
        DspSection {
            chain: crate::dsp::chain::ChainConfig::default(),
            barge_in: crate::call::BargeIn::Local,
        }
    }
}

/// `[agent.realtime]`: how a realtime agent reaches its backend.
#[derive(Debug, Clone, PartialEq)]
pub struct RealtimeSection {
    /// `url` (default `wss://api.openai.com/v1/realtime`).
    pub url: String,
    /// `model` (default `gpt-realtime`), the deployment name on Azure.
    pub model: String,
    /// `api_key_env` (default `OPENAI_API_KEY`).
    pub api_key_env: String,
    /// The key read from `api_key_env`.
    pub api_key: Secret,
    /// `azure`: send the key as `api-key` (Azure OpenAI).
    pub azure: bool,
    /// `voice`.
    pub voice: Option<String>,
    /// `temperature` (not part of the GA session: ignored with a warning).
    pub temperature: Option<f32>,
    /// `turn_detection` and the `vad_*` settings.
    pub turn_detection: TurnDetectionSetting,
    /// `transcription_model`: transcribe the caller (default `gpt-4o-transcribe`; `""` off).
    pub transcription_model: Option<String>,
    /// `noise_reduction`: `none`, `near_field` (default) or `far_field`.
    pub noise_reduction: NoiseReductionSetting,
    /// `connect_timeout_ms` (default 5000).
    pub connect_timeout: Duration,
    /// `reconnect` after a mid-call drop (default true).
    pub reconnect: bool,
    /// `jitter_min_ms`: the jitter buffer's minimum delay on this agent's calls (default 10;
    /// the caller's audio goes to a model, which wants it early more than perfectly smooth).
    pub jitter_min: Duration,
}

impl Eq for RealtimeSection {}

/// `agent.realtime.turn_detection`.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnDetectionSetting {
    /// `"none"`: no automatic turns.
    None,
    /// `"server_vad"` (default).
    ServerVad {
        /// `vad_threshold` (0.0–1.0).
        threshold: Option<f32>,
        /// `vad_prefix_padding_ms`.
        prefix_padding_ms: Option<u32>,
        /// `vad_silence_ms`.
        silence_ms: Option<u32>,
    },
    /// `"semantic_vad"`.
    SemanticVad {
        /// `vad_eagerness`: `low`, `medium`, `high` or `auto`.
        eagerness: Option<String>,
    },
    /// `"local"`: voxline's own VAD ends the caller's turn (the server's is off).
    Local {
        /// `vad_silence_ms`: silence that ends a turn (default 500).
        silence_ms: Option<u32>,
    },
}

/// `agent.realtime.noise_reduction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseReductionSetting {
    /// `"none"`.
    None,
    /// `"near_field"`: handsets and headsets.
    NearField,
    /// `"far_field"`: speakerphones.
    FarField,
}

/// `[agent.tools]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolsSection {
    /// `hang_up` (default true).
    pub hang_up: bool,
    /// `send_dtmf` (default false).
    pub send_dtmf: bool,
    /// `[[agent.tools.transfer_target]]`: where `transfer_call` may transfer to (the tool is
    /// offered only when there is at least one).
    pub transfer_targets: Vec<(String, String)>,
}

/// `[[agent.http_tool]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpToolSection {
    /// `name`.
    pub name: String,
    /// `description`.
    pub description: String,
    /// `parameters`: JSON Schema of the arguments (default: an object without properties).
    pub parameters: serde_json::Value,
    /// `url` (http or https).
    pub url: String,
    /// `timeout_ms` (default 5000).
    pub timeout: Duration,
    /// `headers` and `header_env` (values read from the environment), merged.
    pub headers: Vec<(String, Secret)>,
}

impl Eq for HttpToolSection {}

/// `[agent.fallback]`: when the backend is unreachable (before the answer) or lost for good.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FallbackSection {
    /// `sip_code`: refuse the call with this status when there is no prompt and no
    /// `transfer_to` (default 503).
    pub sip_code: u16,
    /// `play_file` or `tone_hz`: answer and play this.
    pub prompt: Option<PlaySource>,
    /// `transfer_to`: then transfer here (else hang up).
    pub transfer_to: Option<String>,
    /// `backends`: the backends that take over, in order, when the agent's own (its `kind`)
    /// fails mid-call or cannot be reached; the prompt, transfer or status above come after
    /// the last of them.
    pub backends: Vec<AgentKind>,
    /// `switch_prompt` and `switch_voice`: what espeak-ng says while the next backend
    /// connects (default "One moment, please." in `en-us` when there are `backends`; `""`:
    /// nothing).
    pub switch_prompt: Option<(String, String)>,
}

/// What the caller hears while the next backend of the chain connects.
pub const DEFAULT_SWITCH_PROMPT: &str = "One moment, please.";

/// What a `play` agent plays.
#[derive(Debug, Clone, PartialEq)]
pub enum PlaySource {
    /// A WAV file (PCM 16-bit), path resolved against the config file's directory.
    File(PathBuf),
    /// A sine tone.
    Tone {
        /// Frequency.
        hz: f32,
        /// Level in dBFS (default -12).
        dbfs: f32,
        /// Length (default 5 s).
        duration: std::time::Duration,
    },
}

impl Eq for PlaySource {}

/// `agent.kind`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// `"hold"`: answers and holds the call (signalling only; sends silence).
    Hold,
    /// `"echo"`: plays the caller's audio back, like Asterisk's echo test.
    Echo,
    /// `"play"`: plays a WAV file or a tone, then hangs up (or loops with `repeat`).
    Play,
    /// `"realtime"`: a speech-to-speech AI backend (OpenAI Realtime or compatible).
    Realtime,
    /// `"cascaded"`: streaming speech-to-text, an LLM and text-to-speech.
    Cascaded,
}

/// A secret string (password, API token) whose `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret value. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Config {
    /// The configuration an empty file gives: listeners on `0.0.0.0:5060` (UDP and TCP),
    /// no trunks, every number routed to the built-in `hold` agent.
    pub fn embedded_default() -> Config {
        Config::embedded_default_with_env(process_env)
    }

    /// [`Config::embedded_default`] with environment variables looked up through `env`: with
    /// `OPENAI_API_KEY` set, calls go to the built-in realtime `assistant` (loopback callers
    /// only); without it, to `echo`.
    #[allow(clippy::expect_used)] // the invariant is stated below
    pub fn embedded_default_with_env(env: impl Fn(&str) -> Option<String>) -> Config {
        match Config::from_toml_str_with_env("", "(embedded default)", &env) {
            Ok(c) => c,
            // invariant: the empty document has no trunks and only built-in defaults, which
            // validate with or without the key (tests `embedded_default_*`); the only env
            // lookups are the optional OPENAI_API_KEY and DEEPGRAM_API_KEY.
            Err(_) => Config::from_toml_str_with_env("", "(embedded default)", |_| None)
                .expect("built-in defaults are valid"),
        }
    }

    /// Why calls to `called_user` go where they go, for the startup log: the agent's name and
    /// a sentence.
    pub fn describe_default_route(&self) -> Option<String> {
        let a = self.route_for("")?;
        Some(match (a.builtin, a.kind) {
            (true, AgentKind::Realtime) => format!(
                "no [[route]] configured and {DEFAULT_API_KEY_ENV} is set: calls go to the built-in realtime agent `{}`. \
                 It answers loopback callers only; to open it, add an [[agent]] with kind = \"realtime\" and allow_from, \
                 or trunks with allow_from (see docs/agents.md)",
                a.name
            ),
            (true, AgentKind::Cascaded) => format!(
                "no [[route]] configured and {DEFAULT_API_KEY_ENV} and {DEEPGRAM_API_KEY_ENV} are set: calls go to the built-in cascaded agent `{}` \
                 (Deepgram speech to text and speech, OpenAI's LLM). It answers loopback callers only; to open it, add an [[agent]] \
                 with allow_from, or trunks with allow_from (see docs/agents.md)",
                a.name
            ),
            (true, AgentKind::Echo) => format!(
                "no [[route]] configured and {DEFAULT_API_KEY_ENV} is not set: calls go to the built-in `{}` agent",
                a.name
            ),
            _ => format!(
                "numbers without a more specific route go to agent `{}`",
                a.name
            ),
        })
    }

    /// Reads and validates the file at `path`, taking environment variables from the
    /// process environment. Relative `data_dir` and `profile_dir` are taken relative to
    /// the directory holding the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_env(path, process_env)
    }

    /// Like [`Config::load`], with environment variables looked up through `env`.
    pub fn load_with_env(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            position: None,
            key: None,
            kind: Box::new(ConfigErrorKind::Read(e)),
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        resolve::parse_and_resolve(&text, &origin, base, &env)
    }

    /// Parses and validates TOML `text`; `origin` names it in errors (e.g. the file
    /// name). Environment variables come from the process environment; relative paths
    /// stay relative to the working directory.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str_with_env(text, origin, process_env)
    }

    /// Like [`Config::from_toml_str`], with environment variables looked up through
    /// `env` (so tests need not touch the process environment).
    pub fn from_toml_str_with_env(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        resolve::parse_and_resolve(text, origin, None, &env)
    }

    /// The agent that answers a call to `called_user` (the user part of the
    /// Request-URI): the first route whose pattern matches. `None` when no route
    /// matches.
    pub fn route_for(&self, called_user: &str) -> Option<&AgentSection> {
        let route = self
            .routes
            .iter()
            .find(|r| r.pattern.matches(called_user))?;
        self.agent(&route.agent)
    }

    /// The agent named `name`.
    pub fn agent(&self, name: &str) -> Option<&AgentSection> {
        self.agents.iter().find(|a| a.name == name)
    }

    /// The trunk named `name`.
    pub fn trunk(&self, name: &str) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.name == name)
    }

    /// The first trunk whose `allow_from` contains `ip`.
    pub fn trunk_for_source(&self, ip: IpAddr) -> Option<&Trunk> {
        self.trunks
            .iter()
            .find(|t| t.allow_from.iter().any(|c| c.contains(ip)))
    }
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_equals_empty_file() {
        let empty = Config::from_toml_str_with_env("", "x.toml", |_| None).unwrap();
        assert_eq!(Config::embedded_default_with_env(|_| None), empty);
        assert_eq!(empty.route_for("123").unwrap().name, BUILTIN_ECHO_AGENT);
    }

    #[test]
    fn embedded_default_with_api_key_is_the_realtime_assistant() {
        let env = |v: &str| (v == DEFAULT_API_KEY_ENV).then(|| "sk-test".to_owned());
        let c = Config::embedded_default_with_env(env);
        let a = c.route_for("123").unwrap();
        assert_eq!(a.name, BUILTIN_ASSISTANT_AGENT);
        assert_eq!(a.kind, AgentKind::Realtime);
        assert!(a.allow_from.is_empty());
        assert_eq!(a.realtime.as_ref().unwrap().api_key.expose(), "sk-test");
        assert!(c.describe_default_route().unwrap().contains("loopback"));
    }

    #[test]
    fn codec_names_round_trip() {
        for c in Codec::ALL {
            assert_eq!(c.name().parse::<Codec>(), Ok(c));
        }
        assert_eq!("PCMU".parse::<Codec>(), Ok(Codec::Pcmu));
        assert_eq!("g729".parse::<Codec>(), Err(UnknownCodec("g729".into())));
    }

    #[test]
    fn route_patterns() {
        assert!(RoutePattern::Exact("1000".into()).matches("1000"));
        assert!(!RoutePattern::Exact("1000".into()).matches("10000"));
        assert!(RoutePattern::Prefix("+49".into()).matches("+4930123"));
        assert!(RoutePattern::Prefix("+49".into()).matches("+49"));
        assert!(!RoutePattern::Prefix("+49".into()).matches("+4"));
        assert!(RoutePattern::Any.matches(""));
        assert_eq!(RoutePattern::Prefix("9".into()).to_string(), "9*");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }
}
