//! Turns a [`Config`] into the typed options of the layers below.

use super::{
    AtLimit, Config, DtmfMode, NoiseReductionSetting, PrackMode, TrunkTransport,
    TurnDetectionSetting,
};
use crate::agent::BackendConfig;
use crate::agent::cascaded::{CascadedConfig, TurnEnd};
use crate::agent::realtime::TurnDetection;
use crate::agent::realtime::client::{ApiKey, NoiseReduction, RealtimeConfig};
use crate::agent::{PlaySource as AgentPlaySource, PlaySpec};
use crate::call::agent::{AiAgent, AllowList, Fallback};
use crate::call::tools::{AgentTools, HttpTool, TransferPolicy, TransferTarget};
use crate::call::{
    AgentKind, AgentSpec, DtmfSendMethod, MediaPolicy, Routes, TrunkPolicy, TrunkSpec,
};
use crate::call::{BargeIn, Voice};
use crate::runtime::{KeepaliveSpec, Options, RegistrationSpec};
use crate::sdp::{Codec as SdpCodec, CodecPrefs};
use crate::sip::auth::Credentials;
use crate::sip::message::Limits;
use crate::sip::transaction::TimerConfig;
use crate::sip::{CallOptions, LimitResponse, Rel100, StackConfig, Transport};

impl Config {
    /// The runtime options this configuration describes.
    pub fn runtime_options(&self) -> Options {
        let stack = StackConfig {
            timers: TimerConfig {
                t1: self.sip.t1,
                t2: self.sip.t2,
                t4: self.sip.t4,
            },
            limits: Limits {
                max_message_bytes: self.sip.max_message_bytes,
                max_headers: self.sip.max_headers,
            },
            user_agent: self.sip.user_agent.clone(),
            listen: Vec::new(),
            advertised_ip: self.sip.external_ip,
            default_ip: self
                .sip
                .external_ip
                .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
            max_calls: self.limits.max_calls as usize,
            at_limit: match self.limits.at_limit {
                AtLimit::Busy => LimitResponse::Busy,
                AtLimit::Unavailable => LimitResponse::Unavailable {
                    retry_after_s: self.limits.retry_after.as_secs() as u32,
                },
            },
            session_expires: self.sip.session_expires,
            min_se: self.sip.min_se,
            // Calls from no trunk: session timers unless `session_expires_s = 0`; 100rel
            // when the caller requires it.
            call_options: CallOptions {
                session_timers: self.sip.session_expires.is_some(),
                rel100: Rel100::Supported,
            },
            max_transactions: self.limits.max_transactions,
        };
        let registrations = self
            .trunks
            .iter()
            .filter(|t| t.register)
            .map(|t| RegistrationSpec {
                name: t.name.clone(),
                host: t.host.clone(),
                port: Some(t.port),
                transport: transport(t.transport),
                user: t
                    .username
                    .clone()
                    .or_else(|| t.from_user.clone())
                    .unwrap_or_else(|| "voxline".into()),
                domain: t.from_domain.clone().unwrap_or_else(|| t.host.clone()),
                credentials: credentials(t),
                expires: t.register_expires.as_secs().min(u64::from(u32::MAX)) as u32,
                outbound_proxy: t.outbound_proxy.clone(),
            })
            .collect();
        let keepalives = self
            .trunks
            .iter()
            .filter_map(|t| {
                t.options_keepalive.map(|every| KeepaliveSpec {
                    name: t.name.clone(),
                    host: t.host.clone(),
                    port: Some(t.port),
                    transport: transport(t.transport),
                    every,
                })
            })
            .collect();
        Options {
            stack,
            udp_listen: self.sip.udp_listen.clone(),
            tcp_listen: self.sip.tcp_listen.clone(),
            tls_listen: self.sip.tls_listen.clone(),
            ws_listen: self.sip.ws_listen.clone(),
            wss_listen: self.sip.wss_listen.clone(),
            tls_cert_file: self.sip.tls_cert_file.clone(),
            tls_key_file: self.sip.tls_key_file.clone(),
            tls_ca_file: self.sip.tls_ca_file.clone(),
            tls_client_cert: self.sip.tls_client_cert.clone(),
            tcp_keepalive: self.sip.tcp_keepalive,
            tcp_limits: self.sip.tcp_limits,
            registrations,
            keepalives,
        }
    }

    /// What the call layer needs: routes, media policy, RTP ports, trunks.
    pub fn call_setup(&self) -> CallSetup {
        let mut routes = Routes::default();
        for r in &self.routes {
            let mut agent = self
                .agent(&r.agent)
                .map(agent_spec)
                .unwrap_or_else(AgentSpec::hold);
            if agent.allow_from.is_some() {
                agent.allow_from = Some(self.allow_list(&r.agent));
            }
            routes.push(r.pattern.to_string(), agent);
        }
        let codecs: Vec<SdpCodec> = self
            .media
            .codecs
            .iter()
            .filter_map(|c| c.name().parse().ok())
            .collect();
        let media = MediaPolicy {
            codecs: CodecPrefs::new(codecs).unwrap_or_default(),
            telephone_event: self.media.telephone_event,
            ptime_ms: self.media.ptime.as_millis() as u32,
            rtcp_mux: self.media.rtcp_mux,
            external_ip: self.sip.external_ip,
            no_answer_timeout: self.limits.no_answer_timeout,
            rtp_timeout: self.media.rtp_timeout,
            jitter: (self.media.jitter_min, self.media.jitter_max),
            recordings_dir: Some(self.data_dir.join("recordings")),
            transcripts_dir: Some(self.data_dir.join("transcripts")),
            srtp: self.media.srtp,
            srtp_suites: self.media.srtp_suites.clone(),
        };
        let trunks = self
            .trunks
            .iter()
            .map(|t| TrunkSpec {
                name: t.name.clone(),
                host: t.host.clone(),
                port: Some(t.port),
                transport: transport(t.transport),
                credentials: credentials(t),
                from_user: t.from_user.clone(),
                from_domain: t.from_domain.clone(),
                outbound_proxy: t.outbound_proxy.clone(),
            })
            .collect();
        let trunk_policies = self
            .trunks
            .iter()
            .map(|t| TrunkPolicy {
                name: t.name.clone(),
                sources: AllowList::new(t.allow_from.iter().map(|c| (c.network(), c.prefix()))),
                codecs: CodecPrefs::new(t.codecs.iter().filter_map(|c| c.name().parse().ok()))
                    .unwrap_or_else(|_| media.codecs.clone()),
                dtmf: match t.dtmf {
                    DtmfMode::Rfc4733 => DtmfSendMethod::Rfc4733,
                    DtmfMode::Info => DtmfSendMethod::Info,
                    DtmfMode::Inband => DtmfSendMethod::InBand,
                },
                srtp: t.srtp,
                srtp_suites: t.srtp_suites.clone(),
                max_calls: t.max_calls,
                max_calls_per_s: t.max_calls_per_s.map(f64::from),
                sip: CallOptions {
                    session_timers: t.session_timers,
                    rel100: match t.prack {
                        PrackMode::Supported => Rel100::Supported,
                        PrackMode::Required => Rel100::Required,
                        PrackMode::Disabled => Rel100::Disabled,
                    },
                },
            })
            .collect();
        CallSetup {
            routes,
            media,
            rtp_ports: (self.media.rtp_ports.min(), self.media.rtp_ports.max()),
            trunks,
            trunk_policies,
            domain: self.sip.domain.clone(),
        }
    }
}

impl Config {
    /// Who may call the realtime agent `name`: its own `allow_from` and every trunk's
    /// `allow_from`; loopback only when both are empty.
    pub fn allow_list(&self, name: &str) -> AllowList {
        let nets: Vec<(std::net::IpAddr, u8)> = self
            .agent(name)
            .into_iter()
            .flat_map(|a| a.allow_from.iter())
            .chain(self.trunks.iter().flat_map(|t| t.allow_from.iter()))
            .map(|c| (c.network(), c.prefix()))
            .collect();
        if nets.is_empty() {
            AllowList::loopback()
        } else {
            AllowList::new(nets)
        }
    }
}

/// The call layer's configuration.
#[derive(Debug, Clone)]
pub struct CallSetup {
    /// Routing of called numbers to agents.
    pub routes: Routes,
    /// Media policy.
    pub media: MediaPolicy,
    /// RTP port range `[min, max)`.
    pub rtp_ports: (u16, u16),
    /// Trunks for outbound calls.
    pub trunks: Vec<TrunkSpec>,
    /// Per-trunk call settings (codecs, DTMF, session timers, 100rel), for calls from and
    /// through each trunk.
    pub trunk_policies: Vec<TrunkPolicy>,
    /// Our SIP domain for From URIs without a trunk.
    pub domain: Option<String>,
}

/// The call-layer description of a configured agent.
pub fn agent_spec(a: &super::AgentSection) -> AgentSpec {
    let kind = match (a.kind, &a.play) {
        (super::AgentKind::Echo, _) => AgentKind::Echo {
            delay: a.echo_delay,
        },
        (super::AgentKind::Play, Some(src)) => AgentKind::Play(PlaySpec {
            source: match src {
                super::PlaySource::File(p) => AgentPlaySource::File(p.clone()),
                super::PlaySource::Tone { hz, dbfs, duration } => AgentPlaySource::Tone {
                    hz: f64::from(*hz),
                    dbfs: f64::from(*dbfs),
                    duration: *duration,
                },
            },
            repeat: a.repeat,
        }),
        (super::AgentKind::Realtime | super::AgentKind::Cascaded, _) => match ai_agent(a) {
            Some(r) => AgentKind::Ai(std::sync::Arc::new(r)),
            None => AgentKind::Hold,
        },
        _ => AgentKind::Hold,
    };
    let gated = matches!(kind, AgentKind::Ai(_));
    AgentSpec {
        name: a.name.clone(),
        answer_after: a.answer_after,
        hangup_after: a.hangup_after,
        kind,
        record: a.record,
        variables: Default::default(),
        version: None,
        jitter_min: a.realtime.as_ref().map(|r| r.jitter_min),
        // Completed with the trunks' lists by `call_setup`.
        allow_from: gated.then(|| {
            if a.allow_from.is_empty() {
                AllowList::loopback()
            } else {
                AllowList::new(a.allow_from.iter().map(|c| (c.network(), c.prefix())))
            }
        }),
    }
}

/// An AI agent's call-layer description (`None` without its backend sections, which
/// validation guarantees for kind = "realtime" and "cascaded").
fn ai_agent(a: &super::AgentSection) -> Option<AiAgent> {
    let build = |kind: super::AgentKind| -> Option<BackendConfig> {
        match kind {
            super::AgentKind::Realtime => Some(BackendConfig::Realtime(realtime_config(
                a,
                a.realtime.as_ref()?,
            ))),
            super::AgentKind::Cascaded => {
                let c = a.cascaded.as_ref()?;
                Some(BackendConfig::Cascaded(CascadedConfig {
                    stt: c.stt.clone(),
                    llm: c.llm.clone(),
                    tts: c.tts.clone(),
                    instructions: a.instructions.clone().unwrap_or_default(),
                    greeting: a.greeting.clone(),
                    turn_end: c.turn_end,
                }))
            }
            _ => None,
        }
    };
    let mut backends = vec![build(a.kind)?];
    for k in &a.fallback.backends {
        backends.push(build(*k)?);
    }
    let local_turns = match (a.kind, &a.realtime, &a.cascaded) {
        (super::AgentKind::Realtime, Some(r), _) => {
            matches!(r.turn_detection, TurnDetectionSetting::Local { .. })
        }
        (_, _, Some(c)) => c.turn_end == TurnEnd::VadAndStt,
        _ => false,
    };
    let transfer = (!a.tools.transfer_targets.is_empty()).then(|| TransferPolicy {
        targets: a
            .tools
            .transfer_targets
            .iter()
            .map(|(name, uri)| TransferTarget {
                name: name.clone(),
                uri: uri.clone(),
            })
            .collect(),
        allow_any: false,
    });
    let http = a
        .http_tools
        .iter()
        .map(|h| HttpTool {
            name: h.name.clone(),
            description: h.description.clone(),
            parameters: h.parameters.clone(),
            url: h.url.clone(),
            timeout: h.timeout,
            headers: h
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), v.expose().to_owned()))
                .collect(),
        })
        .collect();
    let mut tools = match AgentTools::new(a.tools.hang_up, transfer, a.tools.send_dtmf, http) {
        Ok(t) => t,
        Err(e) => {
            // Validation of the file covers what AgentTools checks; log rather than fail.
            tracing::error!(agent = %a.name, error = %e, "agent tools rejected: the agent runs without tools");
            AgentTools::default()
        }
    };
    tools.remember = a.memory;
    let fallback = match (&a.fallback.prompt, &a.fallback.transfer_to) {
        (None, None) => Fallback::Reject {
            code: a.fallback.sip_code,
        },
        (prompt, transfer_to) => Fallback::Prompt {
            prompt: prompt.as_ref().map(|p| PlaySpec {
                source: match p {
                    super::PlaySource::File(f) => AgentPlaySource::File(f.clone()),
                    super::PlaySource::Tone { hz, dbfs, duration } => AgentPlaySource::Tone {
                        hz: f64::from(*hz),
                        dbfs: f64::from(*dbfs),
                        duration: *duration,
                    },
                },
                repeat: false,
            }),
            transfer_to: transfer_to.clone(),
        },
    };
    Some(AiAgent {
        backends,
        switch_prompt: a.fallback.switch_prompt.clone(),
        tools,
        fallback,
        voice: Voice {
            chain: a.dsp.chain,
            barge_in: a.dsp.barge_in,
            local_turns,
        },
        memory: a.memory,
        analysis: a.analysis.clone(),
    })
}

/// The realtime client's configuration for a realtime agent.
fn realtime_config(a: &super::AgentSection, r: &super::RealtimeSection) -> RealtimeConfig {
    // With local barge-in only, the server must not cancel a response on its own when its
    // VAD hears the caller (a short "uh-huh" that voxline lets pass).
    let interrupt_response = (a.dsp.barge_in == BargeIn::Local).then_some(false);
    RealtimeConfig {
        url: r.url.clone(),
        model: r.model.clone(),
        api_key_env: r.api_key_env.clone(),
        api_key: Some(ApiKey::new(r.api_key.expose())),
        voice: r.voice.clone(),
        instructions: a.instructions.clone().unwrap_or_default(),
        temperature: r.temperature,
        turn_detection: match &r.turn_detection {
            // voxline ends the turns: the server's turn detection is off.
            TurnDetectionSetting::None | TurnDetectionSetting::Local { .. } => None,
            TurnDetectionSetting::ServerVad {
                threshold,
                prefix_padding_ms,
                silence_ms,
            } => Some(TurnDetection::ServerVad {
                threshold: *threshold,
                prefix_padding_ms: *prefix_padding_ms,
                silence_duration_ms: *silence_ms,
                create_response: None,
                interrupt_response,
            }),
            TurnDetectionSetting::SemanticVad { eagerness } => Some(TurnDetection::SemanticVad {
                eagerness: eagerness.clone(),
                create_response: None,
                interrupt_response,
            }),
        },
        input_transcription: r.transcription_model.clone(),
        noise_reduction: match r.noise_reduction {
            NoiseReductionSetting::None => NoiseReduction::None,
            NoiseReductionSetting::NearField => NoiseReduction::NearField,
            NoiseReductionSetting::FarField => NoiseReduction::FarField,
        },
        greeting: a.greeting.clone(),
        azure: r.azure,
        reconnect: r.reconnect,
        connect_timeout: r.connect_timeout,
        ..RealtimeConfig::default()
    }
}

fn transport(t: TrunkTransport) -> Transport {
    match t {
        TrunkTransport::Udp => Transport::Udp,
        TrunkTransport::Tcp => Transport::Tcp,
        TrunkTransport::Tls => Transport::Tls,
    }
}

fn credentials(t: &super::Trunk) -> Option<Credentials> {
    let password = t.password.as_ref()?;
    Some(Credentials {
        username: t.username.clone().unwrap_or_else(|| "voxline".into()),
        password: password.expose().to_string(),
    })
}
