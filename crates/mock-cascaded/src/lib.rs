//! Local mocks of the providers voxline's cascaded backend talks to, for tests and tools:
//! Deepgram's live speech-to-text over WebSocket ([`deepgram_stt`]), and over HTTP an
//! OpenAI-compatible chat completions stream, OpenAI's speech endpoint and Deepgram Aura's
//! REST endpoint ([`http`]).
//!
//! Each validates what the client sends as the real provider does (the auth scheme, required
//! and contradictory parameters, malformed JSON) and answers with that provider's error.
//! Everything received is recorded for assertions ([`MockProviders::chat_requests`],
//! [`MockProviders::tts_requests`], [`MockProviders::stt_controls`], …), and
//! [`MockProviders::drop_stt`] cuts every STT connection without a closing handshake.

pub mod deepgram_stt;
pub mod http;
pub mod openai_stt;
pub mod structured;
pub mod tts_ws;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use deepgram_stt::SttMockConfig;
pub use http::{ChatMockConfig, ChatReply, ChatRequest, TtsMockConfig, TtsRequest};
pub use structured::AnalysisReply;

/// What the mocks do.
#[derive(Debug, Clone, Default)]
pub struct ProvidersConfig {
    /// The key every provider expects.
    pub api_key: String,
    /// The STT mock.
    pub stt: SttMockConfig,
    /// The chat mock.
    pub chat: ChatMockConfig,
    /// The TTS mocks.
    pub tts: TtsMockConfig,
}

/// What the mocks received and sent.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub stt_connections: u64,
    pub stt_queries: Vec<String>,
    pub stt_audio_bytes: u64,
    pub stt_audio: Vec<u8>,
    pub stt_controls: Vec<String>,
    pub stt_sent: Vec<Value>,
    pub stt_utterances: u64,
    pub chat: Vec<ChatRequest>,
    pub tts: Vec<TtsRequest>,
    pub tts_socket_connections: u64,
    pub tts_socket_messages: Vec<String>,
    pub errors: Vec<String>,
}

pub(crate) struct Shared {
    pub key: String,
    pub stt_cfg: SttMockConfig,
    pub chat_cfg: ChatMockConfig,
    pub tts_cfg: TtsMockConfig,
    pub drop_tx: watch::Sender<u64>,
    pub stt_accepting: AtomicBool,
    rec: Mutex<Recorder>,
}

impl Shared {
    pub(crate) fn rec(&self) -> MutexGuard<'_, Recorder> {
        // A panicking test thread must not hide what was recorded.
        self.rec.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running mocks: one WebSocket port (STT) and one HTTP port (chat and TTS).
pub struct MockProviders {
    shared: Arc<Shared>,
    stt_addr: SocketAddr,
    http_addr: SocketAddr,
    tts_ws_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for MockProviders {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl MockProviders {
    /// Starts the mocks on loopback ports.
    pub async fn start(cfg: ProvidersConfig) -> std::io::Result<MockProviders> {
        let stt = TcpListener::bind(("127.0.0.1", 0)).await?;
        let http = TcpListener::bind(("127.0.0.1", 0)).await?;
        let tts_ws = TcpListener::bind(("127.0.0.1", 0)).await?;
        let (drop_tx, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            key: cfg.api_key,
            stt_cfg: cfg.stt,
            chat_cfg: cfg.chat,
            tts_cfg: cfg.tts,
            drop_tx,
            stt_accepting: AtomicBool::new(true),
            rec: Mutex::new(Recorder::default()),
        });
        let stt_addr = stt.local_addr()?;
        let http_addr = http.local_addr()?;
        let tts_ws_addr = tts_ws.local_addr()?;
        let router = http::router(shared.clone());
        let tasks = vec![
            tokio::spawn(deepgram_stt::run(stt, shared.clone())),
            tokio::spawn(tts_ws::run(tts_ws, shared.clone())),
            tokio::spawn(async move {
                // Like a real server: small chunks go out at once (without it, Nagle holds
                // each stream's second chunk until the client's delayed ACK, 40 ms).
                use axum::serve::ListenerExt as _;
                let http = http.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                let _ = axum::serve(http, router).await;
            }),
        ];
        Ok(MockProviders {
            shared,
            stt_addr,
            http_addr,
            tts_ws_addr,
            tasks,
        })
    }

    /// The STT URL (`ws://…/v1/listen`).
    pub fn stt_url(&self) -> String {
        format!("ws://{}/v1/listen", self.stt_addr)
    }

    /// The chat and OpenAI speech base URL (`http://…/v1`).
    pub fn openai_url(&self) -> String {
        format!("http://{}/v1", self.http_addr)
    }

    /// Deepgram's REST base URL (`http://…`; the client adds `/v1/speak`).
    pub fn deepgram_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The streaming TTS sockets' base URL (`ws://…`): Deepgram's `/v1/speak` and
    /// ElevenLabs' stream-input are both served there.
    pub fn tts_socket_url(&self) -> String {
        format!("ws://{}", self.tts_ws_addr)
    }

    /// OpenAI's transcription session URL (`ws://…/v1/realtime?intent=transcription`), on the
    /// same listener.
    pub fn openai_stt_url(&self) -> String {
        format!("ws://{}/v1/realtime?intent=transcription", self.tts_ws_addr)
    }

    /// TTS sockets accepted so far.
    pub fn tts_socket_connections(&self) -> u64 {
        self.shared.rec().tts_socket_connections
    }

    /// The TTS sockets' client messages: Deepgram's `type`s, ElevenLabs' whole JSON text.
    pub fn tts_socket_messages(&self) -> Vec<String> {
        self.shared.rec().tts_socket_messages.clone()
    }

    /// STT connections accepted so far.
    pub fn stt_connections(&self) -> u64 {
        self.shared.rec().stt_connections
    }

    /// The query string of every STT upgrade request (refused ones too).
    pub fn stt_queries(&self) -> Vec<String> {
        self.shared.rec().stt_queries.clone()
    }

    /// Audio bytes the STT mock received.
    pub fn stt_audio_bytes(&self) -> u64 {
        self.shared.rec().stt_audio_bytes
    }

    /// The audio the STT mock received, in arrival order (every connection's).
    pub fn stt_audio(&self) -> Vec<u8> {
        self.shared.rec().stt_audio.clone()
    }

    /// The `type`s of the STT control messages received, in order.
    pub fn stt_controls(&self) -> Vec<String> {
        self.shared.rec().stt_controls.clone()
    }

    /// Every message the STT mock sent.
    pub fn stt_sent(&self) -> Vec<Value> {
        self.shared.rec().stt_sent.clone()
    }

    /// Every chat request.
    pub fn chat_requests(&self) -> Vec<ChatRequest> {
        self.shared.rec().chat.clone()
    }

    /// Every accepted TTS request.
    pub fn tts_requests(&self) -> Vec<TtsRequest> {
        self.shared.rec().tts.clone()
    }

    /// Every request the mocks refused, and why.
    pub fn errors(&self) -> Vec<String> {
        self.shared.rec().errors.clone()
    }

    /// Cuts every STT connection without a closing handshake.
    pub fn drop_stt(&self) {
        self.shared.drop_tx.send_modify(|g| *g += 1);
    }

    /// Stop (or resume) accepting STT connections: new ones are closed at once.
    pub fn set_stt_accepting(&self, on: bool) {
        self.shared.stt_accepting.store(on, Ordering::SeqCst);
    }

    /// Waits until `cond` holds (checked every 10 ms), at most `limit`.
    pub async fn wait_until(&self, limit: Duration, cond: impl Fn(&MockProviders) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
