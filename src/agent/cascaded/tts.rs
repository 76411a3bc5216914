//! Streaming text-to-speech over HTTP: one request per piece of a reply (a sentence or
//! clause), its audio streamed back as it arrives and handed on in the call's format.
//!
//! * **OpenAI** (`POST {url}/audio/speech`, `response_format: "pcm"`): 24 kHz PCM16, resampled
//!   to the call's rate (and G.711-encoded for a G.711 call).
//! * **Deepgram Aura, REST** (`POST {url}/v1/speak?model=…&encoding=…&sample_rate=…&container=none`):
//!   asked for the call's own format (μ-law or A-law at 8 kHz, or PCM16 at the call's rate), so
//!   nothing is resampled.
//!
//! * **espeak-ng** (`voxline_espeak`, no network): spoken on this machine, resampled from
//!   22 050 Hz to the call.
//! * **Deepgram Aura over WebSocket** and **ElevenLabs' stream-input**: see
//!   [`super::tts_socket`].
//!
//! [`Speaker`] speaks the pieces of one reply in order (over HTTP, one request at a time);
//! dropping it (a barge-in) cancels the request in flight, clears Deepgram's socket, or drops
//! ElevenLabs' one.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ApiKey;
use super::tts_socket::{DeepgramReply, DeepgramSocket, ElevenCmd, elevenlabs_reply};
use crate::agent::backend::{AudioChunk, AudioFormat};
use crate::dsp::resample::Resampler;
use crate::media::codec::g711::{alaw_encode, ulaw_encode};

/// OpenAI's speech output rate for `pcm`.
pub const OPENAI_PCM_RATE: u32 = 24_000;
/// OpenAI's base URL.
pub const DEFAULT_OPENAI_TTS_URL: &str = "https://api.openai.com/v1";
/// OpenAI's default speech model.
pub const DEFAULT_OPENAI_TTS_MODEL: &str = "gpt-4o-mini-tts";
/// OpenAI's default voice.
pub const DEFAULT_OPENAI_VOICE: &str = "alloy";
/// Deepgram's base URL (WebSocket; an `https://` URL selects the REST endpoint).
pub const DEFAULT_DEEPGRAM_TTS_URL: &str = "wss://api.deepgram.com";
/// ElevenLabs' base URL.
pub const DEFAULT_ELEVENLABS_TTS_URL: &str = "wss://api.elevenlabs.io";
/// ElevenLabs' default model (its lowest-latency one).
pub const DEFAULT_ELEVENLABS_MODEL: &str = "eleven_flash_v2_5";
/// ElevenLabs' default voice (a voice id: "Rachel").
pub const DEFAULT_ELEVENLABS_VOICE: &str = "21m00Tcm4TlvDq8ikWAM";
/// Deepgram's default voice (the model names the voice).
pub const DEFAULT_DEEPGRAM_VOICE: &str = "aura-2-thalia-en";
/// espeak-ng's default voice.
pub const DEFAULT_ESPEAK_VOICE: &str = "en-us";
/// The default limit for the response headers, and between two chunks of audio.
pub const DEFAULT_TTS_TIMEOUT: Duration = Duration::from_secs(10);
/// Pieces queued for one reply at most.
pub const PIECE_QUEUE: usize = 64;

/// Which TTS protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtsProvider {
    /// OpenAI's `/audio/speech`.
    OpenAi,
    /// Deepgram Aura over REST.
    DeepgramRest,
    /// Deepgram Aura over WebSocket (`Speak`, `Flush`, `Clear`), one socket per call.
    DeepgramWs,
    /// ElevenLabs' stream-input WebSocket, with character alignment.
    ElevenLabs,
    /// espeak-ng on this machine (no network): robotic, but always there.
    Espeak,
}

impl TtsProvider {
    /// Parses the config spelling (`openai`, `deepgram`).
    pub fn parse(s: &str) -> Option<TtsProvider> {
        Some(match s {
            "openai" => TtsProvider::OpenAi,
            "deepgram" => TtsProvider::DeepgramRest,
            "elevenlabs" => TtsProvider::ElevenLabs,
            "espeak" => TtsProvider::Espeak,
            _ => return None,
        })
    }
}

/// How to reach the TTS provider.
#[derive(Debug, Clone, PartialEq)]
pub struct TtsConfig {
    /// The protocol.
    pub provider: TtsProvider,
    /// Base URL.
    pub url: String,
    /// Model (OpenAI; Deepgram's model is the voice).
    pub model: String,
    /// Voice.
    pub voice: String,
    /// The key (`Authorization: Bearer` for OpenAI, `Token` for Deepgram).
    pub api_key: Option<ApiKey>,
    /// Limit for the response headers, and between chunks.
    pub timeout: Duration,
}

/// What a [`Speaker`] reports, per piece (`seq` counts the pieces of the reply from 0).
#[derive(Debug, Clone, PartialEq)]
pub enum TtsEvent {
    /// Audio of piece `seq`, in the call's format.
    Audio {
        /// The piece.
        seq: usize,
        /// The audio.
        chunk: AudioChunk,
    },
    /// Piece `seq`'s word starting at character `chars` of its text starts at byte `at` of
    /// its audio (from a provider that aligns text and audio).
    Mark {
        /// The piece.
        seq: usize,
        /// Byte offset in the piece's audio (the call's format).
        at: u64,
        /// Characters of the piece's text before the word.
        chars: usize,
    },
    /// Piece `seq` is complete.
    PieceDone {
        /// The piece.
        seq: usize,
    },
    /// Piece `seq` failed; the speaker stops.
    Failed {
        /// The piece.
        seq: usize,
        /// What happened.
        message: String,
        /// HTTP 429 or 5xx, a timeout or a broken connection (another backend may do better);
        /// false for a refusal of this request (a 4xx).
        retryable: bool,
    },
}

/// Speaks the pieces of one reply in order.
///
/// A piece's number (its `seq` in [`TtsEvent`]s) comes from [`Speaker::say`]: over HTTP each
/// piece is its own; a streaming socket may speak several pieces as one (Deepgram between two
/// flushes, ElevenLabs a whole reply), and then `say` returns the same number again.
#[derive(Debug)]
pub struct Speaker {
    inner: Inner,
    next: usize,
}

#[derive(Debug)]
enum Inner {
    Http {
        pieces: mpsc::Sender<(usize, String)>,
        task: JoinHandle<()>,
    },
    Deepgram {
        reply: DeepgramReply,
        /// The socket, when the speaker had to open its own.
        _own: Option<DeepgramSocket>,
    },
    Eleven {
        cmds: mpsc::Sender<ElevenCmd>,
        task: JoinHandle<()>,
    },
}

impl Drop for Speaker {
    fn drop(&mut self) {
        match &self.inner {
            Inner::Http { task, .. } | Inner::Eleven { task, .. } => task.abort(),
            // Dropping the reply clears the socket if the reply was not all spoken.
            Inner::Deepgram { .. } => {}
        }
    }
}

impl Speaker {
    /// Starts a speaker; its events go to `events`. A Deepgram WebSocket speaker uses the
    /// call's `socket`.
    pub fn start(
        client: reqwest::Client,
        cfg: TtsConfig,
        format: AudioFormat,
        events: mpsc::Sender<TtsEvent>,
        socket: Option<&mut DeepgramSocket>,
    ) -> Speaker {
        let inner = match cfg.provider {
            TtsProvider::DeepgramWs => match socket {
                Some(s) => Inner::Deepgram {
                    reply: s.reply(events),
                    _own: None,
                },
                None => {
                    let mut own = DeepgramSocket::start(cfg, format);
                    Inner::Deepgram {
                        reply: own.reply(events),
                        _own: Some(own),
                    }
                }
            },
            TtsProvider::ElevenLabs => {
                let (tx, rx) = mpsc::channel(PIECE_QUEUE);
                let task = tokio::spawn(elevenlabs_reply(cfg, format, rx, events));
                Inner::Eleven { cmds: tx, task }
            }
            _ => {
                let (tx, rx) = mpsc::channel::<(usize, String)>(PIECE_QUEUE);
                let task = tokio::spawn(speak_pieces(client, cfg, format, rx, events));
                Inner::Http { pieces: tx, task }
            }
        };
        Speaker { inner, next: 0 }
    }

    /// Queues a piece; the number its audio comes under. `None` if the queue is full or the
    /// speaker stopped.
    pub fn say(&mut self, text: String) -> Option<usize> {
        match &mut self.inner {
            Inner::Http { pieces, .. } => {
                let seq = self.next;
                pieces.try_send((seq, text)).ok()?;
                self.next += 1;
                Some(seq)
            }
            Inner::Deepgram { reply, .. } => reply.say(text),
            Inner::Eleven { cmds, .. } => {
                cmds.try_send(ElevenCmd::Say(text)).ok()?;
                Some(0)
            }
        }
    }

    /// The reply's text is complete (a streaming socket then speaks what it still holds).
    pub fn finish(&mut self) {
        match &mut self.inner {
            Inner::Http { .. } => {}
            Inner::Deepgram { reply, .. } => reply.finish(),
            Inner::Eleven { cmds, .. } => {
                let _ = cmds.try_send(ElevenCmd::Finish);
            }
        }
    }
}

/// Speaks pieces one HTTP request (or espeak-ng run) at a time.
async fn speak_pieces(
    client: reqwest::Client,
    cfg: TtsConfig,
    format: AudioFormat,
    mut rx: mpsc::Receiver<(usize, String)>,
    events: mpsc::Sender<TtsEvent>,
) {
    while let Some((seq, text)) = rx.recv().await {
        let result = speak(&client, &cfg, format, seq, &text, &events).await;
        let ev = match result {
            Ok(()) => TtsEvent::PieceDone { seq },
            Err((message, retryable)) => TtsEvent::Failed {
                seq,
                message,
                retryable,
            },
        };
        let failed = matches!(ev, TtsEvent::Failed { .. });
        if events.send(ev).await.is_err() || failed {
            return;
        }
    }
}

/// Converts a provider's audio to the call's format, across chunk boundaries.
pub(super) struct Converter {
    from: AudioFormat,
    to: AudioFormat,
    resampler: Option<Resampler>,
    odd: Option<u8>,
    samples: Vec<i16>,
    out: Vec<i16>,
}

impl Converter {
    pub(super) fn new(from: AudioFormat, to: AudioFormat) -> Result<Converter, String> {
        let resampler = if from.sample_rate() != to.sample_rate() {
            Some(Resampler::new(from.sample_rate(), to.sample_rate()).map_err(|e| e.to_string())?)
        } else {
            None
        };
        Ok(Converter {
            from,
            to,
            resampler,
            odd: None,
            samples: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Converts `bytes` (`flush`: the last of the piece).
    pub(super) fn convert(&mut self, bytes: &[u8], flush: bool) -> Result<Bytes, String> {
        if self.from == self.to {
            return Ok(Bytes::copy_from_slice(bytes));
        }
        // Only PCM16 sources reach here (G.711 is asked for only when the call is G.711).
        self.samples.clear();
        let mut it = bytes.iter().copied();
        if let Some(lo) = self.odd.take() {
            match it.next() {
                Some(hi) => self.samples.push(i16::from_le_bytes([lo, hi])),
                None => self.odd = Some(lo),
            }
        }
        while let Some(lo) = it.next() {
            match it.next() {
                Some(hi) => self.samples.push(i16::from_le_bytes([lo, hi])),
                None => self.odd = Some(lo),
            }
        }
        self.out.clear();
        match &mut self.resampler {
            Some(r) => {
                r.process(&self.samples, &mut self.out)
                    .map_err(|e| e.to_string())?;
                if flush {
                    r.flush(&mut self.out).map_err(|e| e.to_string())?;
                }
            }
            None => self.out.extend_from_slice(&self.samples),
        }
        Ok(Bytes::from(match self.to {
            AudioFormat::Pcmu8k => self
                .out
                .iter()
                .map(|s| ulaw_encode(*s))
                .collect::<Vec<u8>>(),
            AudioFormat::Pcma8k => self.out.iter().map(|s| alaw_encode(*s)).collect(),
            AudioFormat::Pcm16 { .. } => {
                let mut v = Vec::with_capacity(self.out.len() * 2);
                for s in &self.out {
                    v.extend_from_slice(&s.to_le_bytes());
                }
                v
            }
        }))
    }
}

/// The request for one piece, and the format its audio comes in.
fn request(
    client: &reqwest::Client,
    cfg: &TtsConfig,
    format: AudioFormat,
    text: &str,
) -> (reqwest::RequestBuilder, AudioFormat) {
    let base = cfg.url.trim_end_matches('/');
    match cfg.provider {
        TtsProvider::OpenAi => {
            let mut req = client.post(format!("{base}/audio/speech")).json(&json!({
                "model": cfg.model,
                "input": text,
                "voice": cfg.voice,
                "response_format": "pcm",
            }));
            if let Some(k) = &cfg.api_key {
                req = req.bearer_auth(k.expose());
            }
            (
                req,
                AudioFormat::Pcm16 {
                    rate: OPENAI_PCM_RATE,
                },
            )
        }
        // espeak-ng is local and the sockets are not HTTP: `speak` never asks for their
        // request.
        TtsProvider::DeepgramRest
        | TtsProvider::DeepgramWs
        | TtsProvider::ElevenLabs
        | TtsProvider::Espeak => {
            let (encoding, rate) = super::stt::deepgram_encoding(format);
            let mut req = client
                .post(format!("{base}/v1/speak"))
                .query(&[
                    ("model", cfg.voice.as_str()),
                    ("encoding", encoding),
                    ("sample_rate", &rate.to_string()),
                    ("container", "none"),
                ])
                .json(&json!({ "text": text }));
            if let Some(k) = &cfg.api_key {
                req = req.header("Authorization", format!("Token {}", k.expose()));
            }
            (req, format)
        }
    }
}

/// Speaks `text` with espeak-ng (off the runtime) in the call's format.
pub async fn speak_local(voice: &str, text: &str, format: AudioFormat) -> Result<Bytes, String> {
    let (voice, text) = (voice.to_owned(), text.to_owned());
    let speech =
        tokio::task::spawn_blocking(move || voxline_espeak::synthesize(&voice, None, &text))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    let mut conv = Converter::new(
        AudioFormat::Pcm16 {
            rate: speech.sample_rate,
        },
        format,
    )?;
    let bytes: Vec<u8> = speech
        .samples
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    conv.convert(&bytes, true)
}

async fn speak(
    client: &reqwest::Client,
    cfg: &TtsConfig,
    format: AudioFormat,
    seq: usize,
    text: &str,
    events: &mpsc::Sender<TtsEvent>,
) -> Result<(), (String, bool)> {
    if cfg.provider == TtsProvider::Espeak {
        let data = speak_local(&cfg.voice, text, format)
            .await
            .map_err(|e| (format!("local TTS: {e}"), false))?;
        if !data.is_empty() {
            let _ = events
                .send(TtsEvent::Audio {
                    seq,
                    chunk: AudioChunk { format, data },
                })
                .await;
        }
        return Ok(());
    }
    let timeout_ms = cfg.timeout.as_millis();
    let (req, source) = request(client, cfg, format, text);
    let mut conv = Converter::new(source, format).map_err(|e| (e, false))?;
    let mut resp = match tokio::time::timeout(cfg.timeout, req.send()).await {
        Err(_) => return Err((format!("TTS timed out after {timeout_ms} ms"), true)),
        Ok(Err(e)) => {
            return Err((
                format!("TTS connection failed: {}", super::chat::without_url(&e)),
                true,
            ));
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    if status != 200 {
        let body = tokio::time::timeout(cfg.timeout, resp.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let message = super::chat::error_message(&body);
        let retryable = status == 429 || status >= 500;
        return Err((format!("TTS answered HTTP {status}: {message}"), retryable));
    }
    loop {
        let chunk = match tokio::time::timeout(cfg.timeout, resp.chunk()).await {
            Err(_) => return Err((format!("TTS stalled for {timeout_ms} ms"), true)),
            Ok(Err(e)) => {
                return Err((
                    format!("TTS stream broke: {}", super::chat::without_url(&e)),
                    true,
                ));
            }
            Ok(Ok(c)) => c,
        };
        let last = chunk.is_none();
        let data = conv
            .convert(chunk.as_deref().unwrap_or_default(), last)
            .map_err(|e| (e, false))?;
        if !data.is_empty() {
            let ev = TtsEvent::Audio {
                seq,
                chunk: AudioChunk { format, data },
            };
            if events.send(ev).await.is_err() {
                return Ok(());
            }
        }
        if last {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converter_keeps_odd_bytes_and_rate() {
        let mut c =
            Converter::new(AudioFormat::Pcm16 { rate: 24000 }, AudioFormat::Pcmu8k).unwrap();
        // One second of 24 kHz audio in chunks of odd sizes.
        let pcm: Vec<u8> = (0..24000i32)
            .flat_map(|i| (((i % 48) * 300) as i16).to_le_bytes())
            .collect();
        let mut total = 0;
        for piece in pcm.chunks(777) {
            total += c.convert(piece, false).unwrap().len();
        }
        total += c.convert(&[], true).unwrap().len();
        assert!((7900..=8100).contains(&total), "{total} samples at 8 kHz");
        let mut same = Converter::new(AudioFormat::Pcmu8k, AudioFormat::Pcmu8k).unwrap();
        assert_eq!(
            same.convert(&[1, 2, 3], false).unwrap().as_ref(),
            &[1, 2, 3]
        );
    }
}
