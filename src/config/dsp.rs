//! `[agent.dsp]`: the voice chain's settings, checked.

use std::time::Duration;

use super::error::{ConfigError, ConfigErrorKind};
use super::file::FileDsp;
use super::resolve::Resolver;
use super::{DspSection, TurnDetectionSetting};
use crate::call::BargeIn;
use crate::dsp::chain::ChainConfig;
use crate::dsp::ns::NsLevel;
use crate::dsp::speech::{DEFAULT_END_SILENCE, SpeechConfig};

/// The longest `min_speech_ms`.
const MAX_MIN_SPEECH_MS: u64 = 2000;

impl Resolver<'_> {
    /// Resolves the `[agent.dsp]` of the agent at `agent` (`agent[3]`), given its turn
    /// detection (`local` needs the VAD).
    pub(super) fn dsp_section(
        &self,
        agent: &str,
        f: FileDsp,
        turns: &TurnDetectionSetting,
    ) -> Result<DspSection, ConfigError> {
        let k = |name: &str| format!("{agent}.dsp.{name}");
        let bad = |name: &str, why: String| self.err(k(name), ConfigErrorKind::AgentSetting(why));
        let enabled = f.enabled.unwrap_or(true);
        if !enabled {
            let set = [
                ("echo_cancellation", f.echo_cancellation.is_some()),
                ("noise_suppression", f.noise_suppression.is_some()),
                ("vad", f.vad.is_some()),
                ("vad_threshold", f.vad_threshold.is_some()),
                ("min_speech_ms", f.min_speech_ms.is_some()),
            ];
            if let Some((name, _)) = set.iter().find(|(_, on)| *on) {
                return Err(bad(
                    name,
                    "has no effect with enabled = false (the whole chain is off)".into(),
                ));
            }
        }
        let local_turns = matches!(turns, TurnDetectionSetting::Local { .. });
        let barge_in = match f.barge_in.as_deref() {
            None if enabled => BargeIn::Local,
            None => BargeIn::Server,
            Some(text) => BargeIn::parse(text).ok_or_else(|| {
                bad(
                    "barge_in",
                    format!("\"{text}\" is not one of local, server, both"),
                )
            })?,
        };
        let noise_suppression = match f.noise_suppression.as_deref() {
            None | Some("off") => None,
            Some(text) => Some(NsLevel::parse(text).ok_or_else(|| {
                bad(
                    "noise_suppression",
                    format!("\"{text}\" is not one of off, low, moderate, high, very_high"),
                )
            })?),
        };
        let min_speech_ms = f.min_speech_ms.unwrap_or(200);
        if min_speech_ms > MAX_MIN_SPEECH_MS {
            return Err(self.err(
                k("min_speech_ms"),
                ConfigErrorKind::OutOfRange {
                    min: 0,
                    max: MAX_MIN_SPEECH_MS,
                    got: min_speech_ms,
                },
            ));
        }
        let threshold = f
            .vad_threshold
            .unwrap_or(crate::dsp::speech::DEFAULT_THRESHOLD);
        if !(0.0..=1.0).contains(&threshold) {
            return Err(bad(
                "vad_threshold",
                format!("must be between 0.0 and 1.0 (got {threshold})"),
            ));
        }
        let vad = f.vad.unwrap_or(true) && enabled;
        // What needs the VAD, and the VAD needs the chain.
        if !vad && barge_in != BargeIn::Server {
            let why = if enabled {
                "vad = false"
            } else {
                "enabled = false"
            };
            return Err(bad(
                "barge_in",
                format!(
                    "\"{}\" needs voxline's VAD, which {why} turns off (use \"server\")",
                    barge_in.as_str()
                ),
            ));
        }
        if local_turns && barge_in == BargeIn::Server {
            return Err(bad(
                "barge_in",
                "\"server\" needs the server's turn detection, which turn_detection = \"local\" turns off (use \"local\" or \"both\")".into(),
            ));
        }
        if !vad && local_turns {
            return Err(self.err(
                format!("{agent}.realtime.turn_detection"),
                ConfigErrorKind::AgentSetting(
                    "\"local\" needs voxline's VAD, which [agent.dsp] turns off".into(),
                ),
            ));
        }
        let end_silence = match turns {
            TurnDetectionSetting::Local {
                silence_ms: Some(ms),
            } => Duration::from_millis(u64::from(*ms)),
            _ => DEFAULT_END_SILENCE,
        };
        Ok(DspSection {
            chain: ChainConfig {
                echo_cancellation: enabled && f.echo_cancellation.unwrap_or(true),
                noise_suppression: noise_suppression.filter(|_| enabled),
                speech: vad.then_some(SpeechConfig {
                    threshold,
                    min_speech: Duration::from_millis(min_speech_ms),
                    end_silence,
                }),
            },
            barge_in,
        })
    }
}
