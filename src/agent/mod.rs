//! Agents: what talks to the caller. Nothing here knows of SIP or RTP: an agent sees the
//! caller's audio as mono PCM16 frames at the call's sample rate, one frame per tick, and
//! returns the audio to send.
//!
//! This module holds the local, frame-driven agents that need no AI backend: [`Echo`]
//! (the caller hears themselves, like Asterisk's echo test) and [`Play`] (a WAV file or a
//! tone). They implement [`LocalAgent`], a sans-IO trait: the runtime calls
//! [`LocalAgent::on_frame`] once per tick with the frame it decoded and sends what the agent
//! wrote. Only [`Play::new`] touches the file system, once, to load its file.
//!
//! AI backends sit behind the [`backend`] seam (audio chunks and events over bounded
//! channels); [`realtime`] is the OpenAI Realtime API client.

pub mod analysis;
pub mod backend;
pub mod cascaded;
pub mod chain;
pub(crate) mod echo;
pub(crate) mod play;
pub mod realtime;
pub mod text;
pub mod ws;

pub use echo::Echo;
pub use play::{Play, PlayError, PlaySource, PlaySpec};

use std::time::Duration;

use backend::{BackendError, BackendHandle, CallContext};

/// Which AI backend an agent uses, and how to reach it.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendConfig {
    /// A speech-to-speech model over the OpenAI Realtime protocol.
    Realtime(realtime::RealtimeConfig),
    /// Streaming STT, an LLM and streaming TTS.
    Cascaded(cascaded::CascadedConfig),
}

impl BackendConfig {
    /// `realtime` or `cascaded` (for logs, the transcript and the record).
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::Realtime(_) => "realtime",
            BackendConfig::Cascaded(_) => "cascaded",
        }
    }
}

/// Starts a backend session for one call: the first of `backends` that connects, and with
/// more than one, the fallback chain between them ([`chain`]), which says `switch_prompt`
/// (text, espeak-ng voice) while it switches.
pub async fn connect(
    backends: &[BackendConfig],
    switch_prompt: Option<(String, String)>,
    ctx: CallContext,
) -> Result<BackendHandle, BackendError> {
    match backends {
        [one] => connect_one(one, ctx).await,
        many => chain::connect(many.to_vec(), switch_prompt, ctx).await,
    }
}

/// Starts one backend.
pub(crate) async fn connect_one(
    cfg: &BackendConfig,
    ctx: CallContext,
) -> Result<BackendHandle, BackendError> {
    match cfg {
        BackendConfig::Realtime(r) => realtime::connect(r.clone(), ctx).await,
        BackendConfig::Cascaded(c) => cascaded::connect(c.clone(), ctx).await,
    }
}

/// What the agent wants after a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentAction {
    /// Keep the call up.
    Continue,
    /// Hang up now (the `out` of that tick is empty: the agent's last audio went out on the
    /// ticks before).
    HangUp,
}

/// A frame-driven local agent.
pub trait LocalAgent: Send {
    /// One tick: `caller` is the caller's audio for this frame (after the jitter buffer and
    /// decoding); the agent appends the audio to send this tick to `out`, which the runtime
    /// passes in empty. Leaving `out` empty means silence.
    fn on_frame(&mut self, caller: &[i16], out: &mut Vec<i16>) -> AgentAction;

    /// A DTMF digit from the caller (`0-9`, `*`, `#`, `A-D`), whichever way it arrived.
    fn on_dtmf(&mut self, _digit: char) {}
}

/// The audio a call carries: mono PCM16 at `sample_rate`, in frames of `frame_samples`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameFormat {
    sample_rate: u32,
    frame_samples: usize,
}

/// Why a [`FrameFormat`] is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Zero sample rate or frame duration.
    #[error("sample rate and frame duration must be non-zero")]
    Zero,
    /// The frame duration is not a whole number of samples at this rate.
    #[error("{ptime:?} is not a whole number of samples at {sample_rate} Hz")]
    FractionalFrame {
        /// The rate.
        sample_rate: u32,
        /// The frame duration.
        ptime: Duration,
    },
}

impl FrameFormat {
    /// Frames of `ptime` at `sample_rate` Hz (for example 8000 Hz and 20 ms: 160 samples).
    pub fn new(sample_rate: u32, ptime: Duration) -> Result<FrameFormat, FormatError> {
        if sample_rate == 0 || ptime.is_zero() {
            return Err(FormatError::Zero);
        }
        let scaled = u128::from(sample_rate) * ptime.as_nanos();
        if !scaled.is_multiple_of(1_000_000_000) {
            return Err(FormatError::FractionalFrame { sample_rate, ptime });
        }
        let frame_samples = usize::try_from(scaled / 1_000_000_000)
            .map_err(|_| FormatError::FractionalFrame { sample_rate, ptime })?;
        Ok(FrameFormat {
            sample_rate,
            frame_samples,
        })
    }

    /// Sample rate in Hz.
    pub fn sample_rate(self) -> u32 {
        self.sample_rate
    }

    /// Samples per frame.
    pub fn frame_samples(self) -> usize {
        self.frame_samples
    }

    /// Samples in `d` at this rate, rounded to the nearest sample.
    pub fn samples_in(self, d: Duration) -> u64 {
        let n = (u128::from(self.sample_rate) * d.as_nanos() + 500_000_000) / 1_000_000_000;
        u64::try_from(n).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_format() {
        let f = FrameFormat::new(8000, Duration::from_millis(20)).unwrap();
        assert_eq!((f.sample_rate(), f.frame_samples()), (8000, 160));
        assert_eq!(
            FrameFormat::new(48000, Duration::from_millis(20))
                .unwrap()
                .frame_samples(),
            960
        );
        assert_eq!(
            FrameFormat::new(0, Duration::from_millis(20)),
            Err(FormatError::Zero)
        );
        assert!(matches!(
            FrameFormat::new(11025, Duration::from_millis(30)),
            Err(FormatError::FractionalFrame { .. })
        ));
        assert_eq!(f.samples_in(Duration::from_millis(125)), 1000);
    }
}
