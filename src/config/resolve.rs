//! From the raw file to a validated [`Config`]: defaults, profile merging, environment
//! lookups and every semantic check.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ai::{AiRaw, DEFAULT_FALLBACK_CODE};
use super::error::{ConfigError, ConfigErrorKind};
use super::file::{
    FileAgent, FileConfig, FileDsp, FileHttp, FileLimits, FileMedia, FileRealtime, FileSip,
    FileTrunk,
};
use super::profile::{DEFAULT_PROFILE, MIN_REGISTER_EXPIRES_S, Profile, secs_or_off};
use super::{
    AgentKind, AgentSection, AtLimit, BUILTIN_ASSISTANT_AGENT, BUILTIN_ECHO_AGENT,
    BUILTIN_HOLD_AGENT, Cidr, Codec, Config, DEFAULT_API_KEY_ENV, DEFAULT_GREETING,
    DEFAULT_INSTRUCTIONS, DspSection, FallbackSection, HttpSection, LimitsSection, MediaSection,
    PlaySource, Route, RoutePattern, RtpPortRange, Secret, SipSection, SrtpSuite, SrtpSuites,
    ToolsSection, Trunk, TrunkTransport,
};

/// Default SIP port (RFC 3261 §19.1.2).
const SIP_PORT: u16 = 5060;
/// The default TLS listener port (RFC 3261 §19.1.2).
const SIPS_PORT: u16 = 5061;
/// RFC 3261 §17.1.1.2 default T1, ms.
const DEFAULT_T1_MS: u32 = 500;
/// RFC 3261 §17.1.2.2 default T2, ms.
const DEFAULT_T2_MS: u32 = 4000;
/// RFC 3261 §17.1.2.2 default T4, ms.
const DEFAULT_T4_MS: u32 = 5000;
/// Default and upper bound of `max_message_bytes` (the largest UDP payload).
const MAX_MESSAGE_BYTES: u32 = 65535;
/// Lower bound of `max_message_bytes`: RFC 3261 §18.1.1 expects messages up to 1300
/// bytes over UDP; 1500 leaves room.
const MIN_MESSAGE_BYTES: u32 = 1500;
/// Default `max_headers`.
const DEFAULT_MAX_HEADERS: u32 = 128;
/// Lower bound of `max_headers`: a request needs about ten header fields.
const MIN_HEADERS: u32 = 16;
/// Default CRLF keepalive on TCP (RFC 5626 §4.4.1 suggests 95-120 s for TCP; 30 s
/// keeps NAT bindings of cheap routers alive).
/// Default `user_agent`: the product without its version, which would tell an attacker
/// which advisories apply.
const DEFAULT_USER_AGENT: &str = "voxline";
const DEFAULT_TCP_KEEPALIVE_S: u32 = 30;
/// Default session interval (RFC 4028 §4 recommends 1800 s).
const DEFAULT_SESSION_EXPIRES_S: u32 = 1800;
/// Min-SE floor (RFC 4028 §5: MUST NOT be less than 90 s).
const MIN_SE_FLOOR_S: u32 = 90;
/// Default concurrent calls.
const DEFAULT_MAX_CALLS: u32 = 1000;
/// Fewest `limits.max_transactions`: room for a handful of calls and their requests.
const MIN_MAX_TRANSACTIONS: u32 = 64;
/// How long calls in progress may go on while draining, by default: an hour.
const DEFAULT_DRAIN_DEADLINE_S: u32 = 3600;
/// The longest drain deadline: a day.
const MAX_DRAIN_DEADLINE_S: u32 = 86_400;

/// Default Retry-After with 503.
const DEFAULT_RETRY_AFTER_S: u32 = 30;
/// Default outbound ring timeout.
const DEFAULT_NO_ANSWER_TIMEOUT_S: u32 = 60;
/// Default HTTP API address.
const DEFAULT_HTTP_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 8080);
/// Default packet time.
const DEFAULT_PTIME_MS: u32 = 20;
/// Default RTP range.
const DEFAULT_RTP_PORT_MIN: u16 = 10000;
/// Default RTP range.
const DEFAULT_RTP_PORT_MAX: u16 = 20000;
/// Default `data_dir`.
const DEFAULT_DATA_DIR: &str = "./data";

/// Parses `text` and resolves it. `base` is the directory relative paths are taken from.
pub(crate) fn parse_and_resolve(
    text: &str,
    origin: &str,
    base: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let file: FileConfig =
        toml::from_str(text).map_err(|e| ConfigError::from_toml(origin, text, &e))?;
    Resolver { origin, env }.resolve(file, base)
}

/// Checks `got >= min`.
pub(crate) fn at_least(origin: &str, key: &str, got: u64, min: u64) -> Result<(), ConfigError> {
    if got < min {
        return Err(ConfigError::at(
            origin,
            key,
            ConfigErrorKind::TooSmall { min, got },
        ));
    }
    Ok(())
}

/// Parses a codec list: known names, no duplicates, not empty. Errors at `key[i]`.
pub(crate) fn parse_codecs(
    list: &[String],
    origin: &str,
    key: &str,
) -> Result<Vec<Codec>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::at(origin, key, ConfigErrorKind::Empty));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, name) in list.iter().enumerate() {
        let item_key = format!("{key}[{i}]");
        let codec: Codec = name.parse().map_err(|_| {
            ConfigError::at(
                origin,
                item_key.clone(),
                ConfigErrorKind::UnknownCodec(name.clone()),
            )
        })?;
        if out.contains(&codec) {
            return Err(ConfigError::at(
                origin,
                item_key,
                ConfigErrorKind::DuplicateCodec(codec.name().to_owned()),
            ));
        }
        out.push(codec);
    }
    Ok(out)
}

/// Parses an SRTP suite list: known names, no duplicates, not empty. Errors at `key[i]`.
pub(crate) fn parse_srtp_suites(
    list: &[String],
    origin: &str,
    key: &str,
) -> Result<SrtpSuites, ConfigError> {
    let mut out: Vec<SrtpSuite> = Vec::with_capacity(list.len());
    for (i, name) in list.iter().enumerate() {
        let item_key = format!("{key}[{i}]");
        let suite = SrtpSuite::parse(name).ok_or_else(|| {
            ConfigError::at(
                origin,
                item_key.clone(),
                ConfigErrorKind::UnknownSrtpSuite(name.clone()),
            )
        })?;
        if out.contains(&suite) {
            return Err(ConfigError::at(
                origin,
                item_key,
                ConfigErrorKind::DuplicateSrtpSuite(name.clone()),
            ));
        }
        out.push(suite);
    }
    SrtpSuites::new(out).ok_or_else(|| ConfigError::at(origin, key, ConfigErrorKind::Empty))
}

/// A trunk, agent or profile name: letters, digits, `-`, `_`, `.`, not starting with `.`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(super) struct Resolver<'a> {
    origin: &'a str,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Resolver<'a> {
    /// A resolver whose errors name `origin` and whose secrets come from `env`.
    pub(super) fn new(origin: &'a str, env: &'a dyn Fn(&str) -> Option<String>) -> Resolver<'a> {
        Resolver { origin, env }
    }

    pub(super) fn err(&self, key: impl Into<String>, kind: ConfigErrorKind) -> ConfigError {
        ConfigError::at(self.origin, key, kind)
    }

    fn at_least(&self, key: &str, got: u32, min: u32) -> Result<(), ConfigError> {
        at_least(self.origin, key, u64::from(got), u64::from(min))
    }

    pub(super) fn in_range(
        &self,
        key: &str,
        got: u32,
        min: u32,
        max: u32,
    ) -> Result<(), ConfigError> {
        if got < min || got > max {
            return Err(self.err(
                key,
                ConfigErrorKind::OutOfRange {
                    min: u64::from(min),
                    max: u64::from(max),
                    got: u64::from(got),
                },
            ));
        }
        Ok(())
    }

    /// Reads environment variable `var` (named at `key`); empty counts as unset.
    pub(super) fn env_var(
        &self,
        key: &str,
        var: &str,
        why: Option<&str>,
    ) -> Result<Secret, ConfigError> {
        if var.trim().is_empty() {
            return Err(self.err(key, ConfigErrorKind::Empty));
        }
        match (self.env)(var) {
            Some(v) if !v.is_empty() => Ok(Secret::new(v)),
            _ => Err(self.err(
                key,
                ConfigErrorKind::EnvVarNotSet {
                    var: var.to_owned(),
                    why: why.map(str::to_owned),
                },
            )),
        }
    }

    fn host(&self, key: &str, text: &str) -> Result<String, ConfigError> {
        check_host(text).map_err(|reason| {
            self.err(
                key,
                ConfigErrorKind::InvalidHost {
                    text: text.to_owned(),
                    reason,
                },
            )
        })
    }

    fn resolve(&self, file: FileConfig, base: Option<&Path>) -> Result<Config, ConfigError> {
        let sip = self.sip(file.sip)?;
        let limits = self.limits(file.limits)?;
        let http = self.http(file.http)?;
        let media = self.media(file.media)?;
        let rebase = |p: PathBuf| match base {
            Some(b) if p.is_relative() => b.join(p.strip_prefix(".").unwrap_or(&p)),
            _ => p,
        };
        let profile_dir = file.profile_dir.map(rebase);
        if let Some(dir) = &profile_dir
            && !dir.is_dir()
        {
            return Err(self.err("profile_dir", ConfigErrorKind::NotADirectory(dir.clone())));
        }
        let data_dir = rebase(
            file.data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        );
        let agents = self.agents(file.agents, &rebase)?;
        let routes = self.routes(file.routes, &agents)?;
        let mut profiles: HashMap<String, Profile> = HashMap::new();
        let mut trunks: Vec<Trunk> = Vec::with_capacity(file.trunks.len());
        for (i, raw) in file.trunks.into_iter().enumerate() {
            let trunk = self.trunk(i, raw, &sip, &media, profile_dir.as_deref(), &mut profiles)?;
            if let Some(j) = trunks.iter().position(|t| t.name == trunk.name) {
                return Err(self.err(
                    format!("trunk[{i}].name"),
                    ConfigErrorKind::DuplicateName {
                        name: trunk.name,
                        first: format!("trunk[{j}].name"),
                    },
                ));
            }
            trunks.push(trunk);
        }
        let webhooks = self.webhooks(file.webhooks)?;
        let retention_days = file.retention_days.filter(|d| *d > 0);
        let redaction = std::sync::Arc::new(self.redaction(file.redaction.unwrap_or_default())?);
        let pricing = file.pricing.map(|p| self.pricing(p)).transpose()?;
        let recording_upload = file
            .recording_upload
            .map(|u| self.recording_upload(u))
            .transpose()?;
        let store = self.store(file.store, &data_dir)?;
        let cluster = self.cluster(file.cluster, &store)?;
        Ok(Config {
            sip,
            limits,
            http,
            media,
            trunks,
            routes,
            agents,
            profile_dir,
            data_dir,
            webhooks,
            retention_days,
            redaction,
            pricing,
            recording_upload,
            store,
            cluster,
        })
    }

    /// `[recording_upload]`: `endpoint` (an `http`/`https` URL), `bucket` (a valid S3
    /// bucket name), `access_key_env` and `secret_key_env` are required; `region` (default
    /// `us-east-1`), `prefix`, `path_style` (default `true`), `delete_local` (default
    /// `false`), `timeout_s` (1 to 3600, default 300).
    fn recording_upload(
        &self,
        f: super::file::FileRecordingUpload,
    ) -> Result<crate::storage::S3Settings, ConfigError> {
        const T: &str = "recording_upload";
        let bad = |key: &str, why: String| {
            self.err(format!("{T}.{key}"), ConfigErrorKind::RecordingUpload(why))
        };
        let required = |key: &str, v: Option<String>| {
            v.filter(|v| !v.trim().is_empty())
                .ok_or_else(|| bad(key, "is required".into()))
        };
        let endpoint_text = required("endpoint", f.endpoint)?;
        let endpoint = url::Url::parse(&endpoint_text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| {
                bad(
                    "endpoint",
                    format!("must be an http or https URL (got {endpoint_text:?})"),
                )
            })?;
        let bucket = required("bucket", f.bucket)?;
        // S3's bucket naming rules: 3 to 63 lowercase letters, digits, dots and hyphens,
        // starting and ending with a letter or digit.
        let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| edge_ok(b) || b == b'.' || b == b'-')
            && bucket.bytes().next().is_some_and(edge_ok)
            && bucket.bytes().last().is_some_and(edge_ok);
        if !valid_bucket {
            return Err(bad(
                "bucket",
                format!(
                    "must be 3 to 63 lowercase letters, digits, dots and hyphens (got {bucket:?})"
                ),
            ));
        }
        let prefix = f.prefix.unwrap_or_default();
        if prefix.starts_with('/') || prefix.len() > 512 {
            return Err(bad(
                "prefix",
                format!("must not start with / and be at most 512 bytes (got {prefix:?})"),
            ));
        }
        let access_var = required("access_key_env", f.access_key_env)?;
        let access_key = self.env_var(&format!("{T}.access_key_env"), &access_var, None)?;
        let secret_var = required("secret_key_env", f.secret_key_env)?;
        let secret_key = self.env_var(&format!("{T}.secret_key_env"), &secret_var, None)?;
        let timeout_s = f.timeout_s.unwrap_or(300);
        if !(1..=3600).contains(&timeout_s) {
            return Err(self.err(
                format!("{T}.timeout_s"),
                ConfigErrorKind::OutOfRange {
                    min: 1,
                    max: 3600,
                    got: timeout_s,
                },
            ));
        }
        Ok(crate::storage::S3Settings {
            endpoint,
            region: f
                .region
                .filter(|r| !r.trim().is_empty())
                .unwrap_or_else(|| "us-east-1".into()),
            bucket,
            prefix,
            access_key,
            secret_key,
            path_style: f.path_style.unwrap_or(true),
            delete_local: f.delete_local.unwrap_or(false),
            timeout: std::time::Duration::from_secs(timeout_s),
        })
    }

    /// `[pricing]`: `currency` (three capital letters, default `USD`), `telephony_per_minute`
    /// and `[pricing.agent_per_minute]`, prices that are finite and not negative.
    fn pricing(&self, f: super::file::FilePricing) -> Result<super::Pricing, ConfigError> {
        let bad = |key: String, why: String| self.err(key, ConfigErrorKind::Pricing(why));
        let currency = f.currency.unwrap_or_else(|| "USD".into());
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(bad(
                "pricing.currency".into(),
                format!("must be an ISO 4217 code like USD (got {currency:?})"),
            ));
        }
        // In millionths; at most 1,000,000 a minute, a bound no price reaches.
        let price = |key: String, v: f64| {
            if v.is_finite() && (0.0..=1e6).contains(&v) {
                Ok((v * 1e6).round() as u64)
            } else {
                Err(bad(
                    key,
                    format!("must be a price from 0 to 1000000 a minute (got {v})"),
                ))
            }
        };
        let telephony_micros_per_minute = price(
            "pricing.telephony_per_minute".into(),
            f.telephony_per_minute.unwrap_or(0.0),
        )?;
        let mut agent_micros_per_minute = std::collections::BTreeMap::new();
        for (agent, v) in f.agent_per_minute {
            let v = price(format!("pricing.agent_per_minute.{agent}"), v)?;
            agent_micros_per_minute.insert(agent, v);
        }
        Ok(super::Pricing {
            currency,
            telephony_micros_per_minute,
            agent_micros_per_minute,
        })
    }

    /// `[redaction]`: `kinds` (built-in ones; `["all"]` for every one) and
    /// `[[redaction.pattern]]` (`name`, `regex`).
    fn redaction(
        &self,
        f: super::file::FileRedaction,
    ) -> Result<crate::records::redact::Redactor, ConfigError> {
        use crate::records::redact::{PiiKind, Redactor};
        let mut kinds = Vec::new();
        for (i, k) in f.kinds.unwrap_or_default().iter().enumerate() {
            if k == "all" {
                kinds.extend(PiiKind::ALL);
                continue;
            }
            let kind = PiiKind::parse(k).ok_or_else(|| {
                self.err(
                    format!("redaction.kinds[{i}]"),
                    ConfigErrorKind::AgentSetting(format!(
                        "{k:?} is not one of all, card, email, phone, ssn, iban"
                    )),
                )
            })?;
            kinds.push(kind);
        }
        let mut custom = Vec::new();
        for (i, p) in f.patterns.into_iter().enumerate() {
            if !valid_name(&p.name) {
                return Err(self.err(
                    format!("redaction.pattern[{i}].name"),
                    ConfigErrorKind::InvalidName(p.name),
                ));
            }
            if let Err(e) = regex::Regex::new(&p.regex) {
                return Err(self.err(
                    format!("redaction.pattern[{i}].regex"),
                    ConfigErrorKind::AgentSetting(e.to_string()),
                ));
            }
            custom.push((p.name, p.regex));
        }
        Redactor::new(&kinds, &custom)
            .map_err(|e| self.err("redaction", ConfigErrorKind::AgentSetting(e)))
    }

    /// `tls_listen`, `tls_cert_file` and `tls_key_file`, the files loaded once to check them.
    #[allow(clippy::type_complexity)]
    fn tls_listener(
        &self,
        f: &FileSip,
    ) -> Result<(Vec<SocketAddr>, Option<PathBuf>, Option<PathBuf>), ConfigError> {
        let (cert, key) = match (&f.tls_cert_file, &f.tls_key_file) {
            (None, None) => {
                for (key, list) in [
                    ("sip.tls_listen", &f.tls_listen),
                    ("sip.wss_listen", &f.wss_listen),
                ] {
                    if list.as_ref().is_some_and(|l| !l.is_empty()) {
                        return Err(self.err(
                            key,
                            ConfigErrorKind::Tls(
                                "a TLS or WSS listener needs tls_cert_file and tls_key_file".into(),
                            ),
                        ));
                    }
                }
                return Ok((Vec::new(), None, None));
            }
            (Some(_), None) => {
                return Err(self.err(
                    "sip.tls_key_file",
                    ConfigErrorKind::Tls("tls_cert_file is set: its key is needed too".into()),
                ));
            }
            (None, Some(_)) => {
                return Err(self.err(
                    "sip.tls_cert_file",
                    ConfigErrorKind::Tls(
                        "tls_key_file is set: its certificate is needed too".into(),
                    ),
                ));
            }
            (Some(c), Some(k)) => (c.clone(), k.clone()),
        };
        if let Err(e) = crate::runtime::tls::server_config(&cert, &key) {
            let key_name = if e.to_string().starts_with(&key.display().to_string()) {
                "sip.tls_key_file"
            } else {
                "sip.tls_cert_file"
            };
            return Err(self.err(key_name, ConfigErrorKind::Tls(e.to_string())));
        }
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), SIPS_PORT);
        let listen = f.tls_listen.clone().unwrap_or_else(|| vec![any]);
        Ok((listen, Some(cert), Some(key)))
    }

    fn sip(&self, f: FileSip) -> Result<SipSection, ConfigError> {
        let (tls_listen, tls_cert_file, tls_key_file) = self.tls_listener(&f)?;
        if let Some(ca) = &f.tls_ca_file {
            crate::runtime::tls::client_config(Some(ca), None)
                .map_err(|e| self.err("sip.tls_ca_file", ConfigErrorKind::Tls(e.to_string())))?;
        }
        let tls_client_cert = match (&f.tls_client_cert_file, &f.tls_client_key_file) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.err(
                    "sip.tls_client_key_file",
                    ConfigErrorKind::Tls(
                        "tls_client_cert_file is set: its key is needed too".into(),
                    ),
                ));
            }
            (None, Some(_)) => {
                return Err(self.err(
                    "sip.tls_client_cert_file",
                    ConfigErrorKind::Tls(
                        "tls_client_key_file is set: its certificate is needed too".into(),
                    ),
                ));
            }
            (Some(cert), Some(key)) => {
                let client = crate::runtime::tls::ClientCert { cert, key };
                if let Err(e) = crate::runtime::tls::client_config(None, Some(client)) {
                    let key_name = if e.to_string().starts_with(&key.display().to_string()) {
                        "sip.tls_client_key_file"
                    } else {
                        "sip.tls_client_cert_file"
                    };
                    return Err(self.err(key_name, ConfigErrorKind::Tls(e.to_string())));
                }
                Some((cert.clone(), key.clone()))
            }
        };
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), SIP_PORT);
        let udp_listen = f.udp_listen.unwrap_or_else(|| vec![any]);
        let tcp_listen = f.tcp_listen.unwrap_or_else(|| vec![any]);
        let ws_listen = f.ws_listen.clone().unwrap_or_default();
        let wss_listen = f.wss_listen.clone().unwrap_or_default();
        if udp_listen.is_empty()
            && tcp_listen.is_empty()
            && tls_listen.is_empty()
            && ws_listen.is_empty()
            && wss_listen.is_empty()
        {
            return Err(self.err("sip", ConfigErrorKind::NoListener));
        }
        let user_agent = f
            .user_agent
            .unwrap_or_else(|| DEFAULT_USER_AGENT.to_owned());
        if user_agent.trim().is_empty() {
            return Err(self.err("sip.user_agent", ConfigErrorKind::Empty));
        }
        let domain = match f.domain {
            Some(d) => Some(self.host("sip.domain", &d)?),
            None => None,
        };
        let t1 = f.t1_ms.unwrap_or(DEFAULT_T1_MS);
        let t2 = f.t2_ms.unwrap_or(DEFAULT_T2_MS);
        let t4 = f.t4_ms.unwrap_or(DEFAULT_T4_MS);
        self.at_least("sip.t1_ms", t1, 1)?;
        self.at_least("sip.t2_ms", t2, 1)?;
        self.at_least("sip.t4_ms", t4, 1)?;
        if t1 > t2 {
            return Err(self.err("sip.t1_ms", ConfigErrorKind::TimerOrder { t1, t2 }));
        }
        let max_message_bytes = f.max_message_bytes.unwrap_or(MAX_MESSAGE_BYTES);
        self.in_range(
            "sip.max_message_bytes",
            max_message_bytes,
            MIN_MESSAGE_BYTES,
            MAX_MESSAGE_BYTES,
        )?;
        let tcp = crate::runtime::TcpLimits::default();
        let tcp_max_connections = f
            .tcp_max_connections
            .unwrap_or(u32::try_from(tcp.max_connections).unwrap_or(u32::MAX));
        self.at_least("sip.tcp_max_connections", tcp_max_connections, 1)?;
        let tcp_max_per_source = f
            .tcp_max_per_source
            .unwrap_or(u32::try_from(tcp.max_per_source).unwrap_or(u32::MAX));
        self.at_least("sip.tcp_max_per_source", tcp_max_per_source, 1)?;
        let tcp_idle_timeout_s = f
            .tcp_idle_timeout_s
            .unwrap_or(u32::try_from(tcp.idle_timeout.as_secs()).unwrap_or(u32::MAX));
        self.at_least("sip.tcp_idle_timeout_s", tcp_idle_timeout_s, 1)?;
        let tcp_message_timeout_s = f
            .tcp_message_timeout_s
            .unwrap_or(u32::try_from(tcp.message_timeout.as_secs()).unwrap_or(u32::MAX));
        self.at_least("sip.tcp_message_timeout_s", tcp_message_timeout_s, 1)?;
        let max_headers = f.max_headers.unwrap_or(DEFAULT_MAX_HEADERS);
        self.at_least("sip.max_headers", max_headers, MIN_HEADERS)?;
        let min_se = f.min_se_s.unwrap_or(MIN_SE_FLOOR_S);
        self.at_least("sip.min_se_s", min_se, MIN_SE_FLOOR_S)?;
        let session_expires = f.session_expires_s.unwrap_or(DEFAULT_SESSION_EXPIRES_S);
        if session_expires != 0 && session_expires < min_se {
            return Err(self.err(
                "sip.session_expires_s",
                ConfigErrorKind::SessionExpiresBelowMinSe {
                    got: session_expires,
                    min_se,
                },
            ));
        }
        Ok(SipSection {
            udp_listen,
            tcp_listen,
            tls_listen,
            ws_listen,
            wss_listen,
            tls_cert_file,
            tls_key_file,
            tls_ca_file: f.tls_ca_file.clone(),
            tls_client_cert,
            external_ip: f.external_ip,
            user_agent,
            domain,
            t1: ms(t1),
            t2: ms(t2),
            t4: ms(t4),
            max_message_bytes: max_message_bytes as usize,
            max_headers: max_headers as usize,
            tcp_keepalive: secs_or_off(f.tcp_keepalive_s.unwrap_or(DEFAULT_TCP_KEEPALIVE_S)),
            tcp_limits: crate::runtime::TcpLimits {
                max_connections: tcp_max_connections as usize,
                max_per_source: tcp_max_per_source as usize,
                idle_timeout: secs(tcp_idle_timeout_s),
                message_timeout: secs(tcp_message_timeout_s),
            },
            session_expires: secs_or_off(session_expires),
            min_se: secs(min_se),
        })
    }

    fn limits(&self, f: FileLimits) -> Result<LimitsSection, ConfigError> {
        let max_calls = f.max_calls.unwrap_or(DEFAULT_MAX_CALLS);
        self.at_least("limits.max_calls", max_calls, 1)?;
        let retry_after = f.retry_after_s.unwrap_or(DEFAULT_RETRY_AFTER_S);
        self.at_least("limits.retry_after_s", retry_after, 1)?;
        let max_transactions = f
            .max_transactions
            .unwrap_or(crate::sip::stack::DEFAULT_MAX_TRANSACTIONS as u32);
        self.at_least(
            "limits.max_transactions",
            max_transactions,
            MIN_MAX_TRANSACTIONS,
        )?;
        let drain_deadline_s = f.drain_deadline_s.unwrap_or(DEFAULT_DRAIN_DEADLINE_S);
        if !(1..=MAX_DRAIN_DEADLINE_S).contains(&drain_deadline_s) {
            return Err(self.err(
                "limits.drain_deadline_s",
                ConfigErrorKind::OutOfRange {
                    min: 1,
                    max: u64::from(MAX_DRAIN_DEADLINE_S),
                    got: u64::from(drain_deadline_s),
                },
            ));
        }
        Ok(LimitsSection {
            drain_deadline: secs(drain_deadline_s),
            max_transactions: max_transactions as usize,
            max_calls,
            at_limit: f.at_limit.unwrap_or(AtLimit::Busy),
            retry_after: secs(retry_after),
            no_answer_timeout: secs_or_off(
                f.no_answer_timeout_s.unwrap_or(DEFAULT_NO_ANSWER_TIMEOUT_S),
            ),
        })
    }

    fn http(&self, f: FileHttp) -> Result<HttpSection, ConfigError> {
        let token = match &f.token_env {
            Some(var) => Some(self.env_var("http.token_env", var, None)?),
            None => None,
        };
        let console_password = match &f.console_password_env {
            Some(var) => Some(self.env_var("http.console_password_env", var, None)?),
            None => None,
        };
        let defaults = crate::api::HttpLimits::default();
        let max_connections = f.max_connections.unwrap_or(defaults.max_connections as u32);
        self.at_least("http.max_connections", max_connections, 1)?;
        let per_source = f
            .max_connections_per_source
            .unwrap_or(defaults.max_per_source as u32);
        self.at_least("http.max_connections_per_source", per_source, 1)?;
        let idle = f
            .idle_timeout_s
            .unwrap_or(defaults.idle_timeout.as_secs() as u32);
        self.at_least("http.idle_timeout_s", idle, 1)?;
        let rate = f.rate_limit_per_s.unwrap_or(defaults.rate_per_s);
        let burst = f.rate_limit_burst.unwrap_or(defaults.rate_burst.max(rate));
        if rate > 0 {
            self.at_least("http.rate_limit_burst", burst, 1)?;
        }
        Ok(HttpSection {
            listen: f.listen.unwrap_or(DEFAULT_HTTP_LISTEN),
            token_env: f.token_env,
            token,
            console_password,
            limits: crate::api::HttpLimits {
                max_connections: max_connections as usize,
                max_per_source: per_source as usize,
                idle_timeout: secs(idle),
                rate_per_s: rate,
                rate_burst: burst,
            },
        })
    }

    fn media(&self, f: FileMedia) -> Result<MediaSection, ConfigError> {
        let codecs = match &f.codecs {
            Some(list) => parse_codecs(list, self.origin, "media.codecs")?,
            None => Codec::ALL.to_vec(),
        };
        let ptime = f.ptime_ms.unwrap_or(DEFAULT_PTIME_MS);
        if !matches!(ptime, 10 | 20 | 30) {
            return Err(self.err("media.ptime_ms", ConfigErrorKind::Ptime(ptime)));
        }
        let min = f.rtp_port_min.unwrap_or(DEFAULT_RTP_PORT_MIN);
        let max = f.rtp_port_max.unwrap_or(DEFAULT_RTP_PORT_MAX);
        self.at_least("media.rtp_port_min", u32::from(min), 2)?;
        if !min.is_multiple_of(2) {
            return Err(self.err("media.rtp_port_min", ConfigErrorKind::OddPort(min)));
        }
        if min >= max {
            return Err(self.err(
                "media.rtp_port_min",
                ConfigErrorKind::PortOrder { min, max },
            ));
        }
        let jitter_min = f.jitter_min_ms.unwrap_or(20);
        let jitter_max = f.jitter_max_ms.unwrap_or(200);
        if !(10..=1000).contains(&jitter_min) {
            return Err(self.err(
                "media.jitter_min_ms",
                ConfigErrorKind::OutOfRange {
                    min: 10,
                    max: 1000,
                    got: u64::from(jitter_min),
                },
            ));
        }
        if jitter_max < jitter_min || jitter_max > 2000 {
            return Err(self.err(
                "media.jitter_max_ms",
                ConfigErrorKind::OutOfRange {
                    min: u64::from(jitter_min),
                    max: 2000,
                    got: u64::from(jitter_max),
                },
            ));
        }
        Ok(MediaSection {
            codecs,
            telephone_event: f.telephone_event.unwrap_or(true),
            ptime: ms(ptime),
            rtp_ports: RtpPortRange { min, max },
            rtcp_mux: f.rtcp_mux.unwrap_or(true),
            rtp_timeout: match f.rtp_timeout_s.unwrap_or(30) {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
            jitter_min: ms(jitter_min),
            jitter_max: ms(jitter_max),
            srtp: f.srtp.unwrap_or_default(),
            srtp_suites: match &f.srtp_suites {
                Some(list) => parse_srtp_suites(list, self.origin, "media.srtp_suites")?,
                None => SrtpSuites::default(),
            },
        })
    }

    pub(super) fn agents(
        &self,
        raw: Vec<FileAgent>,
        rebase: &dyn Fn(PathBuf) -> PathBuf,
    ) -> Result<Vec<AgentSection>, ConfigError> {
        let mut agents: Vec<AgentSection> = Vec::with_capacity(raw.len() + 1);
        for (i, a) in raw.into_iter().enumerate() {
            let key = format!("agent[{i}].name");
            if !valid_name(&a.name) {
                return Err(self.err(key, ConfigErrorKind::InvalidName(a.name)));
            }
            if let Some(j) = agents.iter().position(|b| b.name == a.name) {
                return Err(self.err(
                    key,
                    ConfigErrorKind::DuplicateName {
                        name: a.name,
                        first: format!("agent[{j}].name"),
                    },
                ));
            }
            let play = match (a.kind, a.play_file, a.tone_hz) {
                (AgentKind::Play, Some(_), Some(_)) => {
                    return Err(self.err(
                        format!("agent[{i}].play_file"),
                        ConfigErrorKind::AgentSetting("give play_file or tone_hz, not both".into()),
                    ));
                }
                (AgentKind::Play, Some(file), None) => Some(PlaySource::File(rebase(file))),
                (AgentKind::Play, None, Some(hz)) => {
                    if !(20.0..=20_000.0).contains(&hz) {
                        return Err(self.err(
                            format!("agent[{i}].tone_hz"),
                            ConfigErrorKind::AgentSetting(format!(
                                "must be between 20 and 20000 Hz (got {hz})"
                            )),
                        ));
                    }
                    let dbfs = a.tone_dbfs.unwrap_or(-12.0);
                    if !(-90.0..=0.0).contains(&dbfs) {
                        return Err(self.err(
                            format!("agent[{i}].tone_dbfs"),
                            ConfigErrorKind::AgentSetting(format!(
                                "must be between -90 and 0 dBFS (got {dbfs})"
                            )),
                        ));
                    }
                    let duration = Duration::from_millis(a.tone_ms.unwrap_or(5000).max(1));
                    Some(PlaySource::Tone { hz, dbfs, duration })
                }
                (AgentKind::Play, None, None) => {
                    return Err(self.err(
                        format!("agent[{i}]"),
                        ConfigErrorKind::AgentSetting(
                            "a play agent needs play_file or tone_hz".into(),
                        ),
                    ));
                }
                (_, Some(_), _) | (_, _, Some(_)) => {
                    return Err(self.err(
                        format!("agent[{i}].kind"),
                        ConfigErrorKind::AgentSetting(
                            "play_file and tone_hz only go with kind = \"play\"".into(),
                        ),
                    ));
                }
                _ => None,
            };
            let is_ai = matches!(a.kind, AgentKind::Realtime | AgentKind::Cascaded);
            if !is_ai && (a.memory.is_some() || a.analysis.is_some()) {
                let k = if a.memory.is_some() {
                    "memory"
                } else {
                    "analysis"
                };
                return Err(self.err(
                    format!("agent[{i}].{k}"),
                    ConfigErrorKind::AgentSetting(format!(
                        "{k} only goes with kind = \"realtime\" or \"cascaded\""
                    )),
                ));
            }
            let memory = a.memory.unwrap_or(false);
            self.check_memory(
                &format!("agent[{i}]"),
                memory,
                a.instructions.as_deref(),
                a.greeting.as_deref(),
            )?;
            let analysis = match a.analysis {
                Some(f) => Some(self.analysis_section(&format!("agent[{i}]"), f)?),
                None => None,
            };
            let ai = self.ai_settings(
                i,
                a.kind,
                AiRaw {
                    instructions: a.instructions,
                    allow_from: a.allow_from,
                    realtime: a.realtime,
                    tools: a.tools,
                    http_tools: a.http_tools,
                    fallback: a.fallback,
                    dsp: a.dsp,
                    cascaded: super::cascaded::CascadedRaw {
                        stt: a.stt,
                        llm: a.llm,
                        tts: a.tts,
                        turn_silence_ms: a.turn_silence_ms,
                        dsp: None,
                    },
                },
                rebase,
            )?;
            agents.push(AgentSection {
                name: a.name,
                kind: a.kind,
                instructions: ai.instructions,
                allow_from: ai.allow_from,
                realtime: ai.realtime,
                tools: ai.tools,
                http_tools: ai.http_tools,
                fallback: ai.fallback,
                dsp: ai.dsp,
                cascaded: ai.cascaded,
                greeting: a.greeting,
                answer_after: std::time::Duration::from_millis(a.answer_after_ms.unwrap_or(0)),
                hangup_after: a.hangup_after_ms.map(std::time::Duration::from_millis),
                record: a.record.unwrap_or(true),
                echo_delay: Duration::from_millis(a.echo_delay_ms.unwrap_or(0)),
                play,
                repeat: a.repeat.unwrap_or(false),
                builtin: false,
                memory,
                analysis,
            });
        }
        for (name, kind) in [
            (BUILTIN_HOLD_AGENT, AgentKind::Hold),
            (BUILTIN_ECHO_AGENT, AgentKind::Echo),
        ] {
            if !agents.iter().any(|a| a.name == name) {
                agents.push(AgentSection {
                    name: name.to_owned(),
                    kind,
                    greeting: None,
                    answer_after: Duration::ZERO,
                    hangup_after: None,
                    record: true,
                    echo_delay: Duration::ZERO,
                    play: None,
                    repeat: false,
                    builtin: true,
                    instructions: None,
                    allow_from: Vec::new(),
                    realtime: None,
                    tools: ToolsSection::default(),
                    http_tools: Vec::new(),
                    fallback: FallbackSection::default(),
                    dsp: DspSection::default(),
                    cascaded: None,
                    memory: false,
                    analysis: None,
                });
            }
        }
        // With an API key in the environment, the built-in assistant exists too: realtime
        // with OPENAI_API_KEY, cascaded (Deepgram and OpenAI) with DEEPGRAM_API_KEY as well.
        let set = |var: &str| (self.env)(var).is_some_and(|k| !k.is_empty());
        if !agents.iter().any(|a| a.name == BUILTIN_ASSISTANT_AGENT) && set(DEFAULT_API_KEY_ENV) {
            let (kind, realtime, cascaded, dsp, greeting) = if set(super::DEEPGRAM_API_KEY_ENV) {
                let (c, dsp) = self.cascaded_section(
                    "agent[assistant]",
                    super::cascaded::CascadedRaw {
                        stt: None,
                        llm: None,
                        tts: Some(super::file::FileTts {
                            provider: Some("deepgram".into()),
                            ..Default::default()
                        }),
                        turn_silence_ms: None,
                        dsp: None,
                    },
                )?;
                (
                    AgentKind::Cascaded,
                    None,
                    Some(c),
                    dsp,
                    super::DEFAULT_CASCADED_GREETING,
                )
            } else {
                let realtime =
                    self.realtime_section("agent[assistant].realtime", FileRealtime::default())?;
                let dsp = self.dsp_section(
                    "agent[assistant]",
                    FileDsp::default(),
                    &realtime.turn_detection,
                )?;
                (
                    AgentKind::Realtime,
                    Some(realtime),
                    None,
                    dsp,
                    DEFAULT_GREETING,
                )
            };
            agents.push(AgentSection {
                dsp,
                name: BUILTIN_ASSISTANT_AGENT.to_owned(),
                kind,
                greeting: Some(greeting.to_owned()),
                answer_after: Duration::ZERO,
                hangup_after: None,
                record: true,
                echo_delay: Duration::ZERO,
                play: None,
                repeat: false,
                builtin: true,
                instructions: Some(DEFAULT_INSTRUCTIONS.to_owned()),
                allow_from: Vec::new(),
                realtime,
                tools: ToolsSection {
                    hang_up: true,
                    send_dtmf: false,
                    transfer_targets: Vec::new(),
                },
                http_tools: Vec::new(),
                fallback: FallbackSection {
                    sip_code: DEFAULT_FALLBACK_CODE,
                    prompt: None,
                    transfer_to: None,
                    backends: Vec::new(),
                    switch_prompt: None,
                },
                cascaded,
                memory: false,
                analysis: None,
            });
        }
        Ok(agents)
    }

    fn routes(
        &self,
        raw: Vec<super::file::FileRoute>,
        agents: &[AgentSection],
    ) -> Result<Vec<Route>, ConfigError> {
        if raw.is_empty() {
            let assistant = agents
                .iter()
                .any(|a| a.name == BUILTIN_ASSISTANT_AGENT && a.builtin);
            return Ok(vec![Route {
                pattern: RoutePattern::Any,
                agent: if assistant {
                    BUILTIN_ASSISTANT_AGENT
                } else {
                    BUILTIN_ECHO_AGENT
                }
                .to_owned(),
            }]);
        }
        let mut routes = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let pattern = parse_pattern(&r.number).map_err(|reason| {
                self.err(
                    format!("route[{i}].number"),
                    ConfigErrorKind::InvalidPattern {
                        text: r.number.clone(),
                        reason,
                    },
                )
            })?;
            if !agents.iter().any(|a| a.name == r.agent) {
                return Err(self.err(
                    format!("route[{i}].agent"),
                    ConfigErrorKind::UnknownAgent {
                        name: r.agent,
                        known: agents
                            .iter()
                            .map(|a| a.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                ));
            }
            routes.push(Route {
                pattern,
                agent: r.agent,
            });
        }
        Ok(routes)
    }

    fn trunk(
        &self,
        i: usize,
        t: FileTrunk,
        sip: &SipSection,
        media: &MediaSection,
        profile_dir: Option<&Path>,
        profiles: &mut HashMap<String, Profile>,
    ) -> Result<Trunk, ConfigError> {
        let key = |k: &str| format!("trunk[{i}].{k}");
        if !valid_name(&t.name) {
            return Err(self.err(key("name"), ConfigErrorKind::InvalidName(t.name)));
        }
        let profile_name = t.profile.unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
        let profile = match profiles.get(&profile_name) {
            Some(p) => p.clone(),
            None => {
                let p = Profile::find(&profile_name, profile_dir, self.origin, &key("profile"))?;
                profiles.insert(profile_name.clone(), p.clone());
                p
            }
        };
        let host = self.host(&key("host"), &t.host)?;
        let transport = t.transport.unwrap_or(profile.transport);
        // A trunk switched to TLS on a plain profile listens on the TLS port, 5061.
        let port = t.port.unwrap_or(
            if transport == TrunkTransport::Tls && profile.transport != transport {
                SIPS_PORT
            } else {
                profile.port
            },
        );
        self.at_least(&key("port"), u32::from(port), 1)?;
        if transport == TrunkTransport::Udp && sip.udp_listen.is_empty() {
            return Err(self.err(key("transport"), ConfigErrorKind::NoUdpListener));
        }
        let username = match t.username {
            Some(u) if u.trim().is_empty() => {
                return Err(self.err(key("username"), ConfigErrorKind::Empty));
            }
            other => other,
        };
        let register = t.register.unwrap_or(profile.register);
        let why = register.then_some("register = true needs the password");
        let password = match (t.password, t.password_env) {
            (Some(_), Some(_)) => {
                return Err(self.err(key("password"), ConfigErrorKind::PasswordConflict));
            }
            (Some(p), None) if p.is_empty() => {
                return Err(self.err(key("password"), ConfigErrorKind::Empty));
            }
            (Some(p), None) => Some(Secret::new(p)),
            (None, Some(var)) => Some(self.env_var(&key("password_env"), &var, why)?),
            (None, None) => None,
        };
        if register && username.is_none() {
            return Err(self.err(
                key("username"),
                ConfigErrorKind::MissingCredential("username"),
            ));
        }
        if register && password.is_none() {
            return Err(self.err(
                key("password_env"),
                ConfigErrorKind::MissingCredential("password_env (or password)"),
            ));
        }
        let register_expires = match t.register_expires_s {
            Some(s) => {
                self.at_least(&key("register_expires_s"), s, MIN_REGISTER_EXPIRES_S)?;
                secs(s)
            }
            None => profile.register_expires,
        };
        let outbound_proxy = match t.outbound_proxy {
            Some(uri) => Some(check_sip_uri(&uri).map_err(|reason| {
                self.err(
                    key("outbound_proxy"),
                    ConfigErrorKind::InvalidUri {
                        text: uri.clone(),
                        reason,
                    },
                )
            })?),
            None => None,
        };
        let from_user = match t.from_user {
            Some(u) if u.trim().is_empty() => {
                return Err(self.err(key("from_user"), ConfigErrorKind::Empty));
            }
            other => other,
        };
        let from_domain = match t.from_domain {
            Some(d) => Some(self.host(&key("from_domain"), &d)?),
            None => profile.from_domain_from_host.then(|| host.clone()),
        };
        let allow_from = match t.allow_from {
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (j, text) in list.iter().enumerate() {
                    let cidr: Cidr = text.parse().map_err(|reason| {
                        self.err(
                            format!("trunk[{i}].allow_from[{j}]"),
                            ConfigErrorKind::InvalidCidr {
                                text: text.clone(),
                                reason,
                            },
                        )
                    })?;
                    out.push(cidr);
                }
                out
            }
            None => match host.parse::<IpAddr>() {
                Ok(ip) => vec![Cidr::from(ip)],
                Err(_) => Vec::new(),
            },
        };
        let codecs = match &t.codecs {
            Some(list) => parse_codecs(list, self.origin, &key("codecs"))?,
            None => profile
                .codecs
                .clone()
                .unwrap_or_else(|| media.codecs.clone()),
        };
        let session_timers =
            t.session_timers.unwrap_or(profile.session_timers) && sip.session_expires.is_some();
        if t.max_calls == Some(0) {
            return Err(self.err(
                key("max_calls"),
                ConfigErrorKind::AgentSetting(
                    "must be at least 1 (leave it out for no limit)".into(),
                ),
            ));
        }
        if let Some(r) = t.max_calls_per_s
            && !(1..=10_000).contains(&r)
        {
            return Err(self.err(
                key("max_calls_per_s"),
                ConfigErrorKind::OutOfRange {
                    min: 1,
                    max: 10_000,
                    got: u64::from(r),
                },
            ));
        }
        Ok(Trunk {
            name: t.name,
            profile: profile_name,
            host,
            port,
            transport,
            username,
            password,
            register,
            register_expires,
            outbound_proxy,
            from_user,
            from_domain,
            allow_from,
            codecs,
            dtmf: t.dtmf.unwrap_or(profile.dtmf),
            srtp: t.srtp.unwrap_or(profile.srtp),
            srtp_suites: match &t.srtp_suites {
                Some(list) => parse_srtp_suites(list, self.origin, &key("srtp_suites"))?,
                None => SrtpSuites::default(),
            },
            max_calls: t.max_calls,
            max_calls_per_s: t.max_calls_per_s,
            session_timers,
            prack: t.prack.unwrap_or(profile.prack),
            options_keepalive: match t.options_keepalive_s {
                Some(s) => secs_or_off(s),
                None => profile.options_keepalive,
            },
        })
    }
}

pub(super) fn ms(v: u32) -> Duration {
    Duration::from_millis(u64::from(v))
}

pub(super) fn secs(v: u32) -> Duration {
    Duration::from_secs(u64::from(v))
}

/// Parses `route.number`: `*`, `PREFIX*` or an exact user part.
fn parse_pattern(text: &str) -> Result<RoutePattern, &'static str> {
    let t = text.trim();
    if t.is_empty() {
        return Err("must not be empty (use \"*\" to match everything)");
    }
    if t.chars().any(char::is_whitespace) {
        return Err("must not contain spaces");
    }
    if t == "*" {
        return Ok(RoutePattern::Any);
    }
    let (body, prefix) = match t.strip_suffix('*') {
        Some(b) => (b, true),
        None => (t, false),
    };
    if body.contains('*') {
        return Err("'*' is allowed only at the end");
    }
    Ok(if prefix {
        RoutePattern::Prefix(body.to_owned())
    } else {
        RoutePattern::Exact(body.to_owned())
    })
}

/// Checks a host: an IP address (IPv6 with or without brackets) or a DNS name.
/// Returns it normalised (IPv6 brackets removed, trailing dot dropped).
pub(super) fn check_host(text: &str) -> Result<String, &'static str> {
    let t = text.trim();
    if t.is_empty() {
        return Err("is empty");
    }
    let unbracketed = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    if unbracketed.parse::<IpAddr>().is_ok() {
        return Ok(unbracketed.to_owned());
    }
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") || lower.contains("://") {
        return Err("give a host name or IP address, not a URI");
    }
    if t.contains(':') {
        return Err("give the port in `port`, not in the host");
    }
    let name = t.strip_suffix('.').unwrap_or(t);
    if name.len() > 253 {
        return Err("is longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty or over-long DNS label");
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err("may contain only letters, digits, '-', '_' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a DNS label starting or ending with '-'");
        }
    }
    Ok(name.to_owned())
}

/// Checks an `outbound_proxy` URI: `sip:host[:port][;params]`.
pub(super) fn check_sip_uri(text: &str) -> Result<String, &'static str> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    if lower.starts_with("sips:") {
        return Err("sips: (TLS) is not supported; use sip:");
    }
    let Some(rest) = lower.strip_prefix("sip:") else {
        return Err("must start with \"sip:\"");
    };
    if rest.is_empty() || rest.starts_with(';') || rest.starts_with(':') {
        return Err("has no host");
    }
    if t.chars().any(char::is_whitespace) {
        return Err("must not contain spaces");
    }
    Ok(t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(parse_pattern("*"), Ok(RoutePattern::Any));
        assert_eq!(
            parse_pattern("1000"),
            Ok(RoutePattern::Exact("1000".into()))
        );
        assert_eq!(
            parse_pattern("+49*"),
            Ok(RoutePattern::Prefix("+49".into()))
        );
        assert!(parse_pattern("1*0").is_err());
        assert!(parse_pattern("").is_err());
        assert!(parse_pattern("10 00").is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(check_host("pbx.example.com"), Ok("pbx.example.com".into()));
        assert_eq!(check_host("pbx.example.com."), Ok("pbx.example.com".into()));
        assert_eq!(check_host("192.0.2.1"), Ok("192.0.2.1".into()));
        assert_eq!(check_host("[2001:db8::1]"), Ok("2001:db8::1".into()));
        assert_eq!(check_host("2001:db8::1"), Ok("2001:db8::1".into()));
        assert!(check_host("pbx.example.com:5060").is_err());
        assert!(check_host("sip:pbx.example.com").is_err());
        assert!(check_host("a..b").is_err());
        assert!(check_host("bad host").is_err());
        assert!(check_host("").is_err());
    }

    #[test]
    fn sip_uris() {
        assert!(check_sip_uri("sip:10.0.0.2:5060").is_ok());
        assert!(check_sip_uri("sip:proxy.example.com;lr").is_ok());
        assert!(check_sip_uri("SIP:proxy.example.com").is_ok());
        assert!(check_sip_uri("sips:proxy.example.com").is_err());
        assert!(check_sip_uri("proxy.example.com").is_err());
        assert!(check_sip_uri("sip:").is_err());
    }

    #[test]
    fn names() {
        assert!(valid_name("pbx-1.main_2"));
        assert!(!valid_name(""));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("../etc"));
        assert!(!valid_name("a b"));
    }
}
