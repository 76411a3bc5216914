//! A cascaded agent's `[agent.stt]`, `[agent.llm]`, `[agent.tts]` and `turn_silence_ms`,
//! checked, with the keys read from the environment.

use std::time::Duration;

use super::error::{ConfigError, ConfigErrorKind};
use super::file::{FileDsp, FileLlm, FileStt, FileTts};
use super::resolve::Resolver;
use super::{CascadedSection, DspSection, TurnDetectionSetting};
use crate::agent::cascaded::chat::{
    ChatConfig, DEFAULT_CHAT_MODEL, DEFAULT_CHAT_TIMEOUT, DEFAULT_CHAT_URL,
};
use crate::agent::cascaded::stt::{
    DEFAULT_DEEPGRAM_STT_MODEL, DEFAULT_DEEPGRAM_STT_URL, DEFAULT_ENDPOINTING_MS,
    DEFAULT_UTTERANCE_END_MS, SttConfig, SttProvider,
};
use crate::agent::cascaded::stt_openai::{DEFAULT_OPENAI_STT_MODEL, DEFAULT_OPENAI_STT_URL};
use crate::agent::cascaded::tts::{
    DEFAULT_DEEPGRAM_TTS_URL, DEFAULT_DEEPGRAM_VOICE, DEFAULT_ELEVENLABS_MODEL,
    DEFAULT_ELEVENLABS_TTS_URL, DEFAULT_ELEVENLABS_VOICE, DEFAULT_ESPEAK_VOICE,
    DEFAULT_OPENAI_TTS_MODEL, DEFAULT_OPENAI_TTS_URL, DEFAULT_OPENAI_VOICE, DEFAULT_TTS_TIMEOUT,
    TtsConfig, TtsProvider,
};
use crate::agent::cascaded::{ApiKey, TurnEnd};
use crate::call::BargeIn;
use crate::dsp::speech::DEFAULT_END_SILENCE;

/// Where Deepgram keys are read from by default.
pub const DEEPGRAM_KEY_ENV: &str = "DEEPGRAM_API_KEY";
/// Where OpenAI keys are read from by default.
pub const OPENAI_KEY_ENV: &str = "OPENAI_API_KEY";
/// Where ElevenLabs keys are read from by default.
pub const ELEVENLABS_KEY_ENV: &str = "ELEVENLABS_API_KEY";
/// Shortest and longest `turn_silence_ms`.
const TURN_SILENCE_MS: (u64, u64) = (100, 5000);
/// Deepgram's smallest `utterance_end_ms`.
const MIN_UTTERANCE_END_MS: u32 = 1000;

/// What a cascaded agent's file sections hold.
pub(super) struct CascadedRaw {
    pub stt: Option<FileStt>,
    pub llm: Option<FileLlm>,
    pub tts: Option<FileTts>,
    pub turn_silence_ms: Option<u64>,
    pub dsp: Option<FileDsp>,
}

impl Resolver<'_> {
    /// Resolves a cascaded agent's providers and its voice chain (`agent`: `agent[3]`).
    pub(super) fn cascaded_section(
        &self,
        agent: &str,
        raw: CascadedRaw,
    ) -> Result<(CascadedSection, DspSection), ConfigError> {
        let bad = |key: String, why: String| self.err(key, ConfigErrorKind::AgentSetting(why));
        let CascadedRaw {
            stt,
            llm,
            tts,
            turn_silence_ms,
            dsp,
        } = raw;
        let raw_providers = CascadedRaw {
            stt,
            llm,
            tts,
            turn_silence_ms,
            dsp: None,
        };
        let mut dsp_raw = dsp.unwrap_or_default();
        if let Some(b) = dsp_raw.barge_in.as_deref()
            && BargeIn::parse(b).is_some_and(|b| b != BargeIn::Local)
        {
            return Err(bad(
                format!("{agent}.dsp.barge_in"),
                format!("\"{b}\": a cascaded agent has no server VAD; barge-in is \"local\""),
            ));
        }
        let vad = dsp_raw.enabled != Some(false) && dsp_raw.vad != Some(false);
        let silence_ms = turn_silence_ms.unwrap_or(DEFAULT_END_SILENCE.as_millis() as u64);
        if !(TURN_SILENCE_MS.0..=TURN_SILENCE_MS.1).contains(&silence_ms) {
            return Err(self.err(
                format!("{agent}.turn_silence_ms"),
                ConfigErrorKind::OutOfRange {
                    min: TURN_SILENCE_MS.0,
                    max: TURN_SILENCE_MS.1,
                    got: silence_ms,
                },
            ));
        }
        if !vad && turn_silence_ms.is_some() {
            return Err(bad(
                format!("{agent}.turn_silence_ms"),
                "has no effect without voxline's VAD ([agent.dsp] turns it off): the STT's endpointing ends turns".into(),
            ));
        }
        let turns = if vad {
            TurnDetectionSetting::Local {
                silence_ms: u32::try_from(silence_ms).ok(),
            }
        } else {
            TurnDetectionSetting::None
        };
        if !vad {
            // No VAD, no barge-in: a cascaded backend reports no speech of its own.
            dsp_raw.barge_in = Some("server".into());
        }
        let dsp = self.dsp_section(agent, dsp_raw, &turns)?;
        let turn_end = if dsp.chain.speech.is_some() {
            TurnEnd::VadAndStt
        } else {
            TurnEnd::Stt
        };
        let section = self.cascaded_providers(agent, raw_providers, turn_end)?;
        Ok((section, dsp))
    }

    /// A cascaded backend's providers (`agent`: `agent[3]`), its turns ended as `turn_end`
    /// says (a cascaded backend in a realtime agent's fallback chain).
    pub(super) fn cascaded_providers(
        &self,
        agent: &str,
        raw: CascadedRaw,
        turn_end: TurnEnd,
    ) -> Result<CascadedSection, ConfigError> {
        let stt = self.stt(&format!("{agent}.stt"), raw.stt.unwrap_or_default())?;
        let llm = self.llm(&format!("{agent}.llm"), raw.llm.unwrap_or_default())?;
        let tts = self.tts(&format!("{agent}.tts"), raw.tts.unwrap_or_default())?;
        Ok(CascadedSection {
            stt,
            llm,
            tts,
            turn_end,
        })
    }

    fn stt(&self, key: &str, f: FileStt) -> Result<SttConfig, ConfigError> {
        let k = |name: &str| format!("{key}.{name}");
        let (provider, url, model, env) = match f.provider.as_deref().unwrap_or("deepgram") {
            "deepgram" => (
                SttProvider::Deepgram,
                DEFAULT_DEEPGRAM_STT_URL,
                DEFAULT_DEEPGRAM_STT_MODEL,
                DEEPGRAM_KEY_ENV,
            ),
            "openai" => (
                SttProvider::OpenAi,
                DEFAULT_OPENAI_STT_URL,
                DEFAULT_OPENAI_STT_MODEL,
                OPENAI_KEY_ENV,
            ),
            other => {
                return Err(self.err(
                    k("provider"),
                    ConfigErrorKind::AgentSetting(format!(
                        "\"{other}\" is not one of deepgram, openai"
                    )),
                ));
            }
        };
        if provider == SttProvider::OpenAi && f.utterance_end_ms.is_some() {
            return Err(self.err(
                k("utterance_end_ms"),
                ConfigErrorKind::AgentSetting(
                    "Deepgram only: OpenAI's server VAD ends utterances (endpointing_ms)".into(),
                ),
            ));
        }
        let url = self.provider_url(&k("url"), f.url, url, &["ws", "wss"])?;
        let api_key = self.provider_key(&k("api_key_env"), f.api_key_env, env)?;
        let api_key = api_key.ok_or_else(|| {
            self.err(
                k("api_key_env"),
                ConfigErrorKind::AgentSetting("the STT needs a key".into()),
            )
        })?;
        let utterance_end_ms = f.utterance_end_ms.unwrap_or(DEFAULT_UTTERANCE_END_MS);
        if !(MIN_UTTERANCE_END_MS..=5000).contains(&utterance_end_ms) {
            return Err(self.err(
                k("utterance_end_ms"),
                ConfigErrorKind::OutOfRange {
                    min: u64::from(MIN_UTTERANCE_END_MS),
                    max: 5000,
                    got: u64::from(utterance_end_ms),
                },
            ));
        }
        let endpointing_ms = f.endpointing_ms.unwrap_or(DEFAULT_ENDPOINTING_MS);
        if !(10..=5000).contains(&endpointing_ms) {
            return Err(self.err(
                k("endpointing_ms"),
                ConfigErrorKind::OutOfRange {
                    min: 10,
                    max: 5000,
                    got: u64::from(endpointing_ms),
                },
            ));
        }
        Ok(SttConfig {
            provider,
            url,
            model: f.model.unwrap_or_else(|| model.to_owned()),
            language: f.language.filter(|l| !l.is_empty()),
            api_key,
            endpointing_ms,
            utterance_end_ms,
            connect_timeout: self.ms(&k("connect_timeout_ms"), f.connect_timeout_ms, 5000)?,
            reconnect_budget: self.ms(&k("reconnect_budget_ms"), f.reconnect_budget_ms, 2000)?,
        })
    }

    pub(super) fn llm(&self, key: &str, f: FileLlm) -> Result<ChatConfig, ConfigError> {
        let k = |name: &str| format!("{key}.{name}");
        match f.provider.as_deref().unwrap_or("openai") {
            "openai" => {}
            other => {
                return Err(self.err(
                    k("provider"),
                    ConfigErrorKind::AgentSetting(format!(
                        "\"{other}\" is not one of openai (any OpenAI-compatible server: set url)"
                    )),
                ));
            }
        }
        if let Some(t) = f.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(self.err(
                k("temperature"),
                ConfigErrorKind::AgentSetting(format!("must be between 0.0 and 2.0 (got {t})")),
            ));
        }
        if f.max_tokens == Some(0) {
            return Err(self.err(
                k("max_tokens"),
                ConfigErrorKind::AgentSetting("must be at least 1".into()),
            ));
        }
        Ok(ChatConfig {
            url: self.provider_url(&k("url"), f.url, DEFAULT_CHAT_URL, &["http", "https"])?,
            model: f.model.unwrap_or_else(|| DEFAULT_CHAT_MODEL.to_owned()),
            api_key: self.provider_key(&k("api_key_env"), f.api_key_env, OPENAI_KEY_ENV)?,
            temperature: f.temperature,
            max_tokens: f.max_tokens,
            timeout: self.ms(
                &k("timeout_ms"),
                f.timeout_ms,
                DEFAULT_CHAT_TIMEOUT.as_millis() as u64,
            )?,
        })
    }

    fn tts(&self, key: &str, f: FileTts) -> Result<TtsConfig, ConfigError> {
        let k = |name: &str| format!("{key}.{name}");
        let text = f.provider.as_deref().unwrap_or("openai");
        let provider = TtsProvider::parse(text).ok_or_else(|| {
            self.err(
                k("provider"),
                ConfigErrorKind::AgentSetting(format!(
                    "\"{text}\" is not one of openai, deepgram, elevenlabs, espeak"
                )),
            )
        })?;
        let (url, env, voice) = match provider {
            TtsProvider::OpenAi => (DEFAULT_OPENAI_TTS_URL, OPENAI_KEY_ENV, DEFAULT_OPENAI_VOICE),
            TtsProvider::DeepgramRest | TtsProvider::DeepgramWs => (
                DEFAULT_DEEPGRAM_TTS_URL,
                DEEPGRAM_KEY_ENV,
                DEFAULT_DEEPGRAM_VOICE,
            ),
            TtsProvider::ElevenLabs => (
                DEFAULT_ELEVENLABS_TTS_URL,
                ELEVENLABS_KEY_ENV,
                DEFAULT_ELEVENLABS_VOICE,
            ),
            TtsProvider::Espeak => {
                let set = [
                    ("url", f.url.is_some()),
                    ("model", f.model.is_some()),
                    ("api_key_env", f.api_key_env.is_some()),
                    ("timeout_ms", f.timeout_ms.is_some()),
                ];
                if let Some((name, _)) = set.iter().find(|(_, on)| *on) {
                    return Err(self.err(
                        k(name),
                        ConfigErrorKind::AgentSetting(
                            "espeak speaks on this machine: only voice applies".into(),
                        ),
                    ));
                }
                return Ok(TtsConfig {
                    provider,
                    url: String::new(),
                    model: String::new(),
                    voice: f.voice.unwrap_or_else(|| DEFAULT_ESPEAK_VOICE.to_owned()),
                    api_key: None,
                    timeout: DEFAULT_TTS_TIMEOUT,
                });
            }
        };
        // Deepgram speaks over its WebSocket (`ws://`, `wss://`, the default) or REST
        // (`http://`, `https://`): the URL's scheme says which.
        let schemes: &[&str] = match provider {
            TtsProvider::OpenAi => &["http", "https"],
            TtsProvider::ElevenLabs => &["ws", "wss"],
            _ => &["ws", "wss", "http", "https"],
        };
        let url = self.provider_url(&k("url"), f.url, url, schemes)?;
        let provider = match provider {
            TtsProvider::DeepgramRest if url.starts_with("ws") => TtsProvider::DeepgramWs,
            p => p,
        };
        if matches!(
            provider,
            TtsProvider::DeepgramRest | TtsProvider::DeepgramWs
        ) && f.model.is_some()
        {
            return Err(self.err(
                k("model"),
                ConfigErrorKind::AgentSetting(
                    "Deepgram's model is the voice: set voice (e.g. \"aura-2-thalia-en\")".into(),
                ),
            ));
        }
        let default_model = match provider {
            TtsProvider::ElevenLabs => DEFAULT_ELEVENLABS_MODEL,
            _ => DEFAULT_OPENAI_TTS_MODEL,
        };
        Ok(TtsConfig {
            provider,
            url,
            model: f.model.unwrap_or_else(|| default_model.to_owned()),
            voice: f.voice.unwrap_or_else(|| voice.to_owned()),
            api_key: self.provider_key(&k("api_key_env"), f.api_key_env, env)?,
            timeout: self.ms(
                &k("timeout_ms"),
                f.timeout_ms,
                DEFAULT_TTS_TIMEOUT.as_millis() as u64,
            )?,
        })
    }

    /// A provider URL with one of `schemes`.
    fn provider_url(
        &self,
        key: &str,
        url: Option<String>,
        default: &str,
        schemes: &[&str],
    ) -> Result<String, ConfigError> {
        let url = url.unwrap_or_else(|| default.to_owned());
        match url::Url::parse(&url) {
            Ok(u) if schemes.contains(&u.scheme()) && u.host().is_some() => Ok(url),
            _ => Err(self.err(
                key,
                ConfigErrorKind::AgentSetting(format!(
                    "\"{url}\" is not a {} URL",
                    schemes
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(" or ")
                )),
            )),
        }
    }

    /// The key from `api_key_env` (default `default_env`); `api_key_env = ""` means no key
    /// (a local server).
    fn provider_key(
        &self,
        key: &str,
        env: Option<String>,
        default_env: &str,
    ) -> Result<Option<ApiKey>, ConfigError> {
        let var = env.unwrap_or_else(|| default_env.to_owned());
        if var.is_empty() {
            return Ok(None);
        }
        match (self.env)(&var) {
            Some(v) if !v.is_empty() => Ok(Some(ApiKey::new(v))),
            _ => Err(self.err(
                key,
                ConfigErrorKind::EnvVarNotSet {
                    var,
                    why: Some("the provider needs its key (api_key_env = \"\" sends none)".into()),
                },
            )),
        }
    }

    /// A duration in ms between 100 ms and 60 s.
    fn ms(&self, key: &str, v: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
        let ms = v.unwrap_or(default);
        if !(100..=60_000).contains(&ms) {
            return Err(self.err(
                key,
                ConfigErrorKind::OutOfRange {
                    min: 100,
                    max: 60_000,
                    got: ms,
                },
            ));
        }
        Ok(Duration::from_millis(ms))
    }
}
