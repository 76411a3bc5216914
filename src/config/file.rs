//! The raw shape of `voxline.toml` and of a SIP profile file, exactly as written.
//!
//! Every key is optional here (defaults are applied when resolving) except the few
//! that identify an entry (`trunk.name`, `trunk.host`, `route.*`, `agent.name/kind`).
//! `deny_unknown_fields` everywhere turns a typo into an error.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use super::{AgentKind, AtLimit, DtmfMode, PrackMode, SrtpMode, TrunkTransport};

/// The whole `voxline.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    #[serde(default)]
    pub sip: FileSip,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub http: FileHttp,
    #[serde(default)]
    pub media: FileMedia,
    #[serde(default, rename = "trunk")]
    pub trunks: Vec<FileTrunk>,
    #[serde(default, rename = "route")]
    pub routes: Vec<FileRoute>,
    #[serde(default, rename = "agent")]
    pub agents: Vec<FileAgent>,
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<super::webhooks::FileWebhook>,
    pub profile_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub retention_days: Option<u32>,
    pub redaction: Option<FileRedaction>,
    pub pricing: Option<FilePricing>,
    pub recording_upload: Option<FileRecordingUpload>,
    pub store: Option<super::cluster::FileStore>,
    pub cluster: Option<super::cluster::FileCluster>,
}

/// `[recording_upload]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRecordingUpload {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub access_key_env: Option<String>,
    pub secret_key_env: Option<String>,
    pub path_style: Option<bool>,
    pub delete_local: Option<bool>,
    pub timeout_s: Option<u64>,
}

/// `[pricing]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FilePricing {
    pub currency: Option<String>,
    pub telephony_per_minute: Option<f64>,
    #[serde(default)]
    pub agent_per_minute: std::collections::BTreeMap<String, f64>,
}

/// `[redaction]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRedaction {
    pub kinds: Option<Vec<String>>,
    #[serde(default, rename = "pattern")]
    pub patterns: Vec<FileRedactionPattern>,
}

/// `[[redaction.pattern]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRedactionPattern {
    pub name: String,
    pub regex: String,
}

/// `[sip]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSip {
    pub udp_listen: Option<Vec<SocketAddr>>,
    pub tcp_listen: Option<Vec<SocketAddr>>,
    pub tls_listen: Option<Vec<SocketAddr>>,
    pub ws_listen: Option<Vec<SocketAddr>>,
    pub wss_listen: Option<Vec<SocketAddr>>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_client_cert_file: Option<PathBuf>,
    pub tls_client_key_file: Option<PathBuf>,
    pub external_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub domain: Option<String>,
    pub t1_ms: Option<u32>,
    pub t2_ms: Option<u32>,
    pub t4_ms: Option<u32>,
    pub max_message_bytes: Option<u32>,
    pub max_headers: Option<u32>,
    pub tcp_keepalive_s: Option<u32>,
    pub tcp_max_connections: Option<u32>,
    pub tcp_max_per_source: Option<u32>,
    pub tcp_idle_timeout_s: Option<u32>,
    pub tcp_message_timeout_s: Option<u32>,
    pub session_expires_s: Option<u32>,
    pub min_se_s: Option<u32>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLimits {
    pub max_calls: Option<u32>,
    pub at_limit: Option<AtLimit>,
    pub retry_after_s: Option<u32>,
    pub no_answer_timeout_s: Option<u32>,
    pub max_transactions: Option<u32>,
    pub drain_deadline_s: Option<u32>,
}

/// `[http]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHttp {
    pub listen: Option<SocketAddr>,
    pub token_env: Option<String>,
    pub console_password_env: Option<String>,
    pub max_connections: Option<u32>,
    pub max_connections_per_source: Option<u32>,
    pub idle_timeout_s: Option<u32>,
    pub rate_limit_per_s: Option<u32>,
    pub rate_limit_burst: Option<u32>,
}

/// `[media]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileMedia {
    pub codecs: Option<Vec<String>>,
    pub telephone_event: Option<bool>,
    pub ptime_ms: Option<u32>,
    pub rtp_port_min: Option<u16>,
    pub rtp_port_max: Option<u16>,
    pub rtcp_mux: Option<bool>,
    pub rtp_timeout_s: Option<u64>,
    pub jitter_min_ms: Option<u32>,
    pub jitter_max_ms: Option<u32>,
    pub srtp: Option<SrtpMode>,
    pub srtp_suites: Option<Vec<String>>,
}

/// One `[[trunk]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTrunk {
    pub name: String,
    pub profile: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub transport: Option<TrunkTransport>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password: Option<String>,
    pub register: Option<bool>,
    pub register_expires_s: Option<u32>,
    pub outbound_proxy: Option<String>,
    pub from_user: Option<String>,
    pub from_domain: Option<String>,
    pub allow_from: Option<Vec<String>>,
    pub codecs: Option<Vec<String>>,
    pub dtmf: Option<DtmfMode>,
    pub session_timers: Option<bool>,
    pub prack: Option<PrackMode>,
    pub options_keepalive_s: Option<u32>,
    pub srtp: Option<SrtpMode>,
    pub srtp_suites: Option<Vec<String>>,
    pub max_calls: Option<u32>,
    pub max_calls_per_s: Option<u32>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRoute {
    pub number: String,
    pub agent: String,
}

/// One `[[agent]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAgent {
    pub name: String,
    pub kind: AgentKind,
    pub greeting: Option<String>,
    pub answer_after_ms: Option<u64>,
    pub hangup_after_ms: Option<u64>,
    pub record: Option<bool>,
    pub echo_delay_ms: Option<u64>,
    pub play_file: Option<PathBuf>,
    pub tone_hz: Option<f32>,
    pub tone_dbfs: Option<f32>,
    pub tone_ms: Option<u64>,
    pub repeat: Option<bool>,
    pub instructions: Option<String>,
    pub allow_from: Option<Vec<String>>,
    pub realtime: Option<FileRealtime>,
    pub tools: Option<FileTools>,
    #[serde(default, rename = "http_tool")]
    pub http_tools: Vec<FileHttpTool>,
    pub fallback: Option<FileFallback>,
    pub dsp: Option<FileDsp>,
    pub turn_silence_ms: Option<u64>,
    pub stt: Option<FileStt>,
    pub llm: Option<FileLlm>,
    pub tts: Option<FileTts>,
    pub memory: Option<bool>,
    pub analysis: Option<FileAnalysis>,
}

/// `[agent.analysis]` (realtime and cascaded agents)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileAnalysis {
    pub provider: Option<String>,
    pub url: Option<String>,
    pub model: Option<String>,
    pub api_key_env: Option<String>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub timeout_ms: Option<u64>,
    pub instructions: Option<String>,
    pub outcome_schema: Option<toml::Value>,
}

/// `[agent.stt]` (cascaded agents)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileStt {
    pub provider: Option<String>,
    pub url: Option<String>,
    pub model: Option<String>,
    pub language: Option<String>,
    pub api_key_env: Option<String>,
    pub endpointing_ms: Option<u32>,
    pub utterance_end_ms: Option<u32>,
    pub connect_timeout_ms: Option<u64>,
    pub reconnect_budget_ms: Option<u64>,
}

/// `[agent.llm]` (cascaded agents)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLlm {
    pub provider: Option<String>,
    pub url: Option<String>,
    pub model: Option<String>,
    pub api_key_env: Option<String>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    pub timeout_ms: Option<u64>,
}

/// `[agent.tts]` (cascaded agents)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTts {
    pub provider: Option<String>,
    pub url: Option<String>,
    pub model: Option<String>,
    pub voice: Option<String>,
    pub api_key_env: Option<String>,
    pub timeout_ms: Option<u64>,
}

/// `[agent.dsp]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileDsp {
    pub enabled: Option<bool>,
    pub echo_cancellation: Option<bool>,
    pub noise_suppression: Option<String>,
    pub vad: Option<bool>,
    pub vad_threshold: Option<f32>,
    pub min_speech_ms: Option<u64>,
    pub barge_in: Option<String>,
}

/// `[agent.realtime]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileRealtime {
    pub url: Option<String>,
    pub model: Option<String>,
    pub api_key_env: Option<String>,
    pub azure: Option<bool>,
    pub voice: Option<String>,
    pub temperature: Option<f32>,
    pub turn_detection: Option<String>,
    pub vad_threshold: Option<f32>,
    pub vad_prefix_padding_ms: Option<u32>,
    pub vad_silence_ms: Option<u32>,
    pub vad_eagerness: Option<String>,
    pub transcription_model: Option<String>,
    pub noise_reduction: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub reconnect: Option<bool>,
    pub jitter_min_ms: Option<u32>,
}

/// `[agent.tools]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTools {
    pub hang_up: Option<bool>,
    pub send_dtmf: Option<bool>,
    #[serde(default, rename = "transfer_target")]
    pub transfer_targets: Vec<FileTransferTarget>,
}

/// `[[agent.tools.transfer_target]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTransferTarget {
    pub name: String,
    pub uri: String,
}

/// `[[agent.http_tool]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileHttpTool {
    pub name: String,
    pub description: String,
    pub parameters: Option<toml::Value>,
    pub url: String,
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub header_env: std::collections::BTreeMap<String, String>,
}

/// `[agent.fallback]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileFallback {
    pub backends: Option<Vec<String>>,
    pub switch_prompt: Option<String>,
    pub switch_voice: Option<String>,
    pub sip_code: Option<u16>,
    pub play_file: Option<PathBuf>,
    pub tone_hz: Option<f32>,
    pub tone_ms: Option<u64>,
    pub transfer_to: Option<String>,
}

/// A SIP profile file, `sip-profiles/NAME.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileProfile {
    pub description: Option<String>,
    pub transport: Option<TrunkTransport>,
    pub port: Option<u16>,
    pub register: Option<bool>,
    pub register_expires_s: Option<u32>,
    pub dtmf: Option<DtmfMode>,
    pub srtp: Option<SrtpMode>,
    pub codecs: Option<Vec<String>>,
    pub session_timers: Option<bool>,
    pub prack: Option<PrackMode>,
    pub options_keepalive_s: Option<u32>,
    pub from_domain_from_host: Option<bool>,
    pub notes: Option<String>,
}
