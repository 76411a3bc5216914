//! The AI settings of an `[[agent]]` (realtime and cascaded agents): instructions, the
//! realtime backend, tools, HTTP tools, the fallback and the chain of backends.

use std::path::PathBuf;
use std::time::Duration;

use super::error::{ConfigError, ConfigErrorKind};
use super::file::{FileDsp, FileFallback, FileHttpTool, FileRealtime, FileTools};
use super::resolve::*;
use super::{
    AgentKind, Cidr, DEFAULT_API_KEY_ENV, DspSection, FallbackSection, HttpToolSection,
    NoiseReductionSetting, PlaySource, RealtimeSection, Secret, ToolsSection, TurnDetectionSetting,
};

/// The status a realtime call is refused with when its backend is unreachable (RFC 3261
/// §21.5.4, 503 Service Unavailable), unless `agent.fallback.sip_code` says otherwise.
pub(super) const DEFAULT_FALLBACK_CODE: u16 = 503;
/// The default realtime backend URL.
const DEFAULT_REALTIME_URL: &str = "wss://api.openai.com/v1/realtime";
/// The default realtime model.
const DEFAULT_REALTIME_MODEL: &str = "gpt-realtime";
/// The default caller transcription model.
const DEFAULT_TRANSCRIPTION_MODEL: &str = "gpt-4o-transcribe";
/// The jitter buffer's default minimum delay on realtime calls: half the general default, so
/// a frame that arrives before a tick is handed to the model at that tick.
const DEFAULT_REALTIME_JITTER_MIN_MS: u32 = 10;
/// The default HTTP tool timeout.
const DEFAULT_TOOL_TIMEOUT_MS: u64 = 5000;
/// The longest HTTP tool timeout accepted.
const MAX_TOOL_TIMEOUT_MS: u64 = 60_000;

/// The AI settings of one `[[agent]]`, as written.
pub(super) struct AiRaw {
    pub(super) instructions: Option<String>,
    pub(super) allow_from: Option<Vec<String>>,
    pub(super) realtime: Option<FileRealtime>,
    pub(super) tools: Option<FileTools>,
    pub(super) http_tools: Vec<FileHttpTool>,
    pub(super) fallback: Option<FileFallback>,
    pub(super) dsp: Option<FileDsp>,
    pub(super) cascaded: super::cascaded::CascadedRaw,
}

/// The AI settings of one agent, resolved.
pub(super) struct AiSettings {
    pub(super) instructions: Option<String>,
    pub(super) allow_from: Vec<Cidr>,
    pub(super) realtime: Option<RealtimeSection>,
    pub(super) tools: ToolsSection,
    pub(super) http_tools: Vec<HttpToolSection>,
    pub(super) fallback: FallbackSection,
    pub(super) dsp: DspSection,
    pub(super) cascaded: Option<super::CascadedSection>,
}

impl Resolver<'_> {
    pub(super) fn ai_settings(
        &self,
        i: usize,
        kind: AgentKind,
        raw: AiRaw,
        rebase: &dyn Fn(PathBuf) -> PathBuf,
    ) -> Result<AiSettings, ConfigError> {
        let key = |k: &str| format!("agent[{i}].{k}");
        let chain = self.backend_chain(&key("fallback.backends"), kind, &raw.fallback)?;
        let wants = |k: AgentKind| kind == k || chain.contains(&k);
        let c = &raw.cascaded;
        let cascaded_set = [
            ("stt", c.stt.is_some()),
            ("llm", c.llm.is_some()),
            ("tts", c.tts.is_some()),
            ("turn_silence_ms", c.turn_silence_ms.is_some()),
        ];
        if !wants(AgentKind::Cascaded)
            && let Some((k, _)) = cascaded_set.iter().find(|(_, on)| *on)
        {
            return Err(self.err(
                key(k),
                ConfigErrorKind::AgentSetting(format!(
                    "{k} only goes with kind = \"cascaded\" or \"cascaded\" in fallback.backends"
                )),
            ));
        }
        if kind != AgentKind::Cascaded && c.turn_silence_ms.is_some() {
            return Err(self.err(
                key("turn_silence_ms"),
                ConfigErrorKind::AgentSetting(
                    "only a cascaded agent's own setting; a realtime agent's turns follow [agent.realtime]".into(),
                ),
            ));
        }
        if !wants(AgentKind::Realtime) && raw.realtime.is_some() {
            return Err(self.err(
                key("realtime"),
                ConfigErrorKind::AgentSetting(
                    "[agent.realtime] only goes with kind = \"realtime\" or \"realtime\" in fallback.backends".into(),
                ),
            ));
        }
        if !matches!(kind, AgentKind::Realtime | AgentKind::Cascaded) {
            let set = [
                ("instructions", raw.instructions.is_some()),
                ("allow_from", raw.allow_from.is_some()),
                ("realtime", raw.realtime.is_some()),
                ("tools", raw.tools.is_some()),
                ("http_tool", !raw.http_tools.is_empty()),
                ("fallback", raw.fallback.is_some()),
                ("dsp", raw.dsp.is_some()),
            ];
            if let Some((k, _)) = set.iter().find(|(_, on)| *on) {
                return Err(self.err(
                    key(k),
                    ConfigErrorKind::AgentSetting(format!(
                        "{k} only goes with kind = \"realtime\" or \"cascaded\""
                    )),
                ));
            }
            return Ok(AiSettings {
                instructions: None,
                allow_from: Vec::new(),
                realtime: None,
                tools: ToolsSection::default(),
                http_tools: Vec::new(),
                fallback: FallbackSection::default(),
                dsp: DspSection::default(),
                cascaded: None,
            });
        }
        let mut allow_from = Vec::new();
        for (j, text) in raw.allow_from.unwrap_or_default().iter().enumerate() {
            let cidr: Cidr = text.parse().map_err(|reason| {
                self.err(
                    format!("agent[{i}].allow_from[{j}]"),
                    ConfigErrorKind::InvalidCidr {
                        text: text.clone(),
                        reason,
                    },
                )
            })?;
            allow_from.push(cidr);
        }
        let realtime = if wants(AgentKind::Realtime) {
            Some(self.realtime_section(&key("realtime"), raw.realtime.unwrap_or_default())?)
        } else {
            None
        };
        let (cascaded, dsp) = match (kind, &realtime) {
            (AgentKind::Cascaded, _) => {
                let (c, dsp) = self.cascaded_section(
                    &format!("agent[{i}]"),
                    super::cascaded::CascadedRaw {
                        dsp: raw.dsp,
                        ..raw.cascaded
                    },
                )?;
                (Some(c), dsp)
            }
            (_, Some(r)) => {
                let dsp = self.dsp_section(
                    &format!("agent[{i}]"),
                    raw.dsp.unwrap_or_default(),
                    &r.turn_detection,
                )?;
                // A cascaded fallback gets CommitTurn from voxline's VAD only when the
                // realtime agent has local turns; otherwise the STT ends its turns.
                let local = matches!(r.turn_detection, super::TurnDetectionSetting::Local { .. });
                let cascaded = if wants(AgentKind::Cascaded) {
                    Some(self.cascaded_providers(
                        &format!("agent[{i}]"),
                        raw.cascaded,
                        if local && dsp.chain.speech.is_some() {
                            crate::agent::cascaded::TurnEnd::VadAndStt
                        } else {
                            crate::agent::cascaded::TurnEnd::Stt
                        },
                    )?)
                } else {
                    None
                };
                (cascaded, dsp)
            }
            _ => (None, DspSection::default()),
        };
        let t = raw.tools.unwrap_or_default();
        let mut transfer_targets = Vec::new();
        for (j, target) in t.transfer_targets.into_iter().enumerate() {
            let k = format!("agent[{i}].tools.transfer_target[{j}]");
            if target.name.trim().is_empty() {
                return Err(self.err(format!("{k}.name"), ConfigErrorKind::Empty));
            }
            let uri = check_sip_uri(&target.uri).map_err(|reason| {
                self.err(
                    format!("{k}.uri"),
                    ConfigErrorKind::InvalidUri {
                        text: target.uri.clone(),
                        reason,
                    },
                )
            })?;
            transfer_targets.push((target.name, uri));
        }
        let tools = ToolsSection {
            hang_up: t.hang_up.unwrap_or(true),
            send_dtmf: t.send_dtmf.unwrap_or(false),
            transfer_targets,
        };
        let mut http_tools: Vec<HttpToolSection> = Vec::new();
        for (j, h) in raw.http_tools.into_iter().enumerate() {
            let k = |f: &str| format!("agent[{i}].http_tool[{j}].{f}");
            if !valid_tool_name(&h.name) {
                return Err(self.err(
                    k("name"),
                    ConfigErrorKind::AgentSetting(format!(
                        "\"{}\" is not a valid tool name (1 to 64 letters, digits, _ or -)",
                        h.name
                    )),
                ));
            }
            if crate::call::tools::RESERVED_NAMES.contains(&h.name.as_str())
                || http_tools.iter().any(|o| o.name == h.name)
            {
                return Err(self.err(
                    k("name"),
                    ConfigErrorKind::AgentSetting(format!(
                        "tool name \"{}\" is used twice (or is a built-in tool)",
                        h.name
                    )),
                ));
            }
            if !(h.url.starts_with("http://") || h.url.starts_with("https://"))
                || url::Url::parse(&h.url).is_err()
            {
                return Err(self.err(
                    k("url"),
                    ConfigErrorKind::AgentSetting(format!(
                        "\"{}\" is not an http:// or https:// URL",
                        h.url
                    )),
                ));
            }
            let timeout_ms = h.timeout_ms.unwrap_or(DEFAULT_TOOL_TIMEOUT_MS);
            if !(1..=MAX_TOOL_TIMEOUT_MS).contains(&timeout_ms) {
                return Err(self.err(
                    k("timeout_ms"),
                    ConfigErrorKind::OutOfRange {
                        min: 1,
                        max: MAX_TOOL_TIMEOUT_MS,
                        got: timeout_ms,
                    },
                ));
            }
            let parameters = match h.parameters {
                Some(v) => {
                    let json = serde_json::to_value(&v).map_err(|e| {
                        self.err(
                            k("parameters"),
                            ConfigErrorKind::AgentSetting(e.to_string()),
                        )
                    })?;
                    if !json.is_object() {
                        return Err(self.err(
                            k("parameters"),
                            ConfigErrorKind::AgentSetting(
                                "must be a table (a JSON Schema object)".into(),
                            ),
                        ));
                    }
                    json
                }
                None => serde_json::json!({ "type": "object", "properties": {} }),
            };
            let mut headers: Vec<(String, Secret)> = h
                .headers
                .into_iter()
                .map(|(n, v)| (n, Secret::new(v)))
                .collect();
            for (name, var) in h.header_env {
                let v = self.env_var(&k(&format!("header_env.{name}")), &var, None)?;
                headers.push((name, v));
            }
            http_tools.push(HttpToolSection {
                name: h.name,
                description: h.description,
                parameters,
                url: h.url,
                timeout: Duration::from_millis(timeout_ms),
                headers,
            });
        }
        let f = raw.fallback.unwrap_or_default();
        let sip_code = f.sip_code.unwrap_or(DEFAULT_FALLBACK_CODE);
        if !(400..=699).contains(&sip_code) {
            return Err(self.err(
                key("fallback.sip_code"),
                ConfigErrorKind::OutOfRange {
                    min: 400,
                    max: 699,
                    got: u64::from(sip_code),
                },
            ));
        }
        let prompt = match (f.play_file, f.tone_hz) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    key("fallback.play_file"),
                    ConfigErrorKind::AgentSetting("give play_file or tone_hz, not both".into()),
                ));
            }
            (Some(file), None) => Some(PlaySource::File(rebase(file))),
            (None, Some(hz)) => Some(PlaySource::Tone {
                hz,
                dbfs: -12.0,
                duration: Duration::from_millis(f.tone_ms.unwrap_or(2000).max(1)),
            }),
            (None, None) => None,
        };
        let transfer_to = match f.transfer_to {
            Some(uri) => Some(check_sip_uri(&uri).map_err(|reason| {
                self.err(
                    key("fallback.transfer_to"),
                    ConfigErrorKind::InvalidUri {
                        text: uri.clone(),
                        reason,
                    },
                )
            })?),
            None => None,
        };
        Ok(AiSettings {
            cascaded,
            instructions: raw.instructions,
            allow_from,
            realtime,
            tools,
            http_tools,
            fallback: FallbackSection {
                sip_code,
                prompt,
                transfer_to,
                switch_prompt: if chain.is_empty() {
                    if f.switch_prompt.is_some() || f.switch_voice.is_some() {
                        return Err(self.err(
                            key("fallback.switch_prompt"),
                            ConfigErrorKind::AgentSetting(
                                "has no effect without fallback.backends (nothing to switch to)"
                                    .into(),
                            ),
                        ));
                    }
                    None
                } else {
                    let text = f
                        .switch_prompt
                        .unwrap_or_else(|| super::DEFAULT_SWITCH_PROMPT.to_owned());
                    (!text.trim().is_empty())
                        .then(|| (text, f.switch_voice.unwrap_or_else(|| "en-us".to_owned())))
                },
                backends: chain,
            },
            dsp,
        })
    }

    /// `fallback.backends`: `realtime` or `cascaded`, each once, not the agent's own kind.
    fn backend_chain(
        &self,
        key: &str,
        kind: AgentKind,
        f: &Option<FileFallback>,
    ) -> Result<Vec<AgentKind>, ConfigError> {
        let mut chain = Vec::new();
        let names = f
            .as_ref()
            .and_then(|f| f.backends.clone())
            .unwrap_or_default();
        for (j, name) in names.iter().enumerate() {
            let k = match name.as_str() {
                "realtime" => AgentKind::Realtime,
                "cascaded" => AgentKind::Cascaded,
                other => {
                    return Err(self.err(
                        format!("{key}[{j}]"),
                        ConfigErrorKind::AgentSetting(format!(
                            "\"{other}\" is not one of realtime, cascaded"
                        )),
                    ));
                }
            };
            if k == kind || chain.contains(&k) {
                return Err(self.err(
                    format!("{key}[{j}]"),
                    ConfigErrorKind::AgentSetting(format!(
                        "\"{name}\" is already in the chain (the agent's kind comes first)"
                    )),
                ));
            }
            chain.push(k);
        }
        Ok(chain)
    }

    pub(super) fn realtime_section(
        &self,
        key: &str,
        r: FileRealtime,
    ) -> Result<RealtimeSection, ConfigError> {
        let k = |f: &str| format!("{key}.{f}");
        let url = r.url.unwrap_or_else(|| DEFAULT_REALTIME_URL.to_owned());
        if !(url.starts_with("ws://") || url.starts_with("wss://"))
            || url::Url::parse(&url).is_err()
        {
            return Err(self.err(
                k("url"),
                ConfigErrorKind::AgentSetting(format!("\"{url}\" is not a ws:// or wss:// URL")),
            ));
        }
        let api_key_env = r
            .api_key_env
            .unwrap_or_else(|| DEFAULT_API_KEY_ENV.to_owned());
        let api_key = self.env_var(
            &k("api_key_env"),
            &api_key_env,
            Some("a realtime agent needs its API key"),
        )?;
        let turn_detection = match r.turn_detection.as_deref().unwrap_or("server_vad") {
            "server_vad" => TurnDetectionSetting::ServerVad {
                threshold: r.vad_threshold,
                prefix_padding_ms: r.vad_prefix_padding_ms,
                silence_ms: r.vad_silence_ms,
            },
            "semantic_vad" => TurnDetectionSetting::SemanticVad {
                eagerness: r.vad_eagerness,
            },
            "local" => TurnDetectionSetting::Local {
                silence_ms: r.vad_silence_ms,
            },
            "none" => TurnDetectionSetting::None,
            other => {
                return Err(self.err(
                    k("turn_detection"),
                    ConfigErrorKind::AgentSetting(format!(
                        "\"{other}\" is not one of server_vad, semantic_vad, local, none"
                    )),
                ));
            }
        };
        if let Some(t) = r.vad_threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(self.err(
                k("vad_threshold"),
                ConfigErrorKind::AgentSetting(format!("must be between 0.0 and 1.0 (got {t})")),
            ));
        }
        let noise_reduction = match r.noise_reduction.as_deref().unwrap_or("near_field") {
            "none" => NoiseReductionSetting::None,
            "near_field" => NoiseReductionSetting::NearField,
            "far_field" => NoiseReductionSetting::FarField,
            other => {
                return Err(self.err(
                    k("noise_reduction"),
                    ConfigErrorKind::AgentSetting(format!(
                        "\"{other}\" is not one of none, near_field, far_field"
                    )),
                ));
            }
        };
        let transcription_model = match r.transcription_model {
            Some(m) if m.is_empty() => None,
            Some(m) => Some(m),
            None => Some(DEFAULT_TRANSCRIPTION_MODEL.to_owned()),
        };
        let connect_ms = r.connect_timeout_ms.unwrap_or(5000);
        if !(100..=60_000).contains(&connect_ms) {
            return Err(self.err(
                k("connect_timeout_ms"),
                ConfigErrorKind::OutOfRange {
                    min: 100,
                    max: 60_000,
                    got: connect_ms,
                },
            ));
        }
        let jitter_min_ms = r.jitter_min_ms.unwrap_or(DEFAULT_REALTIME_JITTER_MIN_MS);
        if !(10..=1000).contains(&jitter_min_ms) {
            return Err(self.err(
                k("jitter_min_ms"),
                ConfigErrorKind::OutOfRange {
                    min: 10,
                    max: 1000,
                    got: u64::from(jitter_min_ms),
                },
            ));
        }
        Ok(RealtimeSection {
            jitter_min: Duration::from_millis(u64::from(jitter_min_ms)),
            url,
            model: r.model.unwrap_or_else(|| DEFAULT_REALTIME_MODEL.to_owned()),
            api_key_env,
            api_key,
            azure: r.azure.unwrap_or(false),
            voice: r.voice,
            temperature: r.temperature,
            turn_detection,
            transcription_model,
            noise_reduction,
            connect_timeout: Duration::from_millis(connect_ms),
            reconnect: r.reconnect.unwrap_or(true),
        })
    }
}

/// A function name the OpenAI API accepts: 1–64 of `[A-Za-z0-9_-]`.
fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
