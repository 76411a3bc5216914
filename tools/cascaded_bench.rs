//! Overhead of voxline's cascaded backend per turn, with zero-latency providers: the real
//! client (`voxline::agent::cascaded::connect`: Deepgram STT over WebSocket, chat completions
//! and TTS over HTTP) against the local mocks of `voxline_mock_cascaded`, in this process, no
//! SIP or RTP.
//!
//! ```sh
//! cargo run --release -p voxline-mock-cascaded --bin voxline-cascaded-bench -- --turns 200
//! cargo run --release -p voxline-mock-cascaded --bin voxline-cascaded-bench -- --turns 200 \
//!     --stt openai --tts deepgram-ws
//! ```
//!
//! `--stt` picks Deepgram's live protocol or OpenAI's transcription session; `--tts` Deepgram
//! over REST (`deepgram`) or its WebSocket (`deepgram-ws`), or ElevenLabs' stream-input.
//!
//! Each turn: 1 s of speech (a loud μ-law tone) and then exactly the STT's endpointing window
//! of silence go to the backend at once; the mock STT, working in audio time, finalizes the
//! utterance (`speech_final`) on the last silence frame. The figure is the time from handing
//! over that frame to the first audio of the reply: the STT client, the session, the LLM
//! stream's first sentence, the TTS request and the audio conversion, with providers that
//! answer at once. The mocks' own work is in it too, so it is an upper bound.
//!
//! Bounded: 127.0.0.1 only, at most [`MAX_TURNS`] turns, each waited for at most
//! [`TURN_LIMIT`].

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use voxline::agent::backend::{AudioChunk, AudioFormat, BackendControl, BackendEvent, CallContext};
use voxline::agent::cascaded::chat::ChatConfig;
use voxline::agent::cascaded::stt::{SttConfig, SttProvider};
use voxline::agent::cascaded::tts::{TtsConfig, TtsProvider};
use voxline::agent::cascaded::{ApiKey, CascadedConfig, TurnEnd, connect};
use voxline_mock_cascaded::{MockProviders, ProvidersConfig};
use voxline_mock_realtime::{tone, ulaw_encode};

/// Most turns a run may have.
const MAX_TURNS: usize = 10_000;
/// Longest wait for one turn's reply.
const TURN_LIMIT: Duration = Duration::from_secs(10);
/// The mock's key.
const KEY: &str = "bench-key";
/// Deepgram endpointing used here.
const ENDPOINTING_MS: u32 = 300;

#[derive(Parser)]
struct Args {
    /// Turns to measure.
    #[arg(long, default_value_t = 200)]
    turns: usize,
    /// The STT: `deepgram` or `openai`.
    #[arg(long, default_value = "deepgram")]
    stt: String,
    /// The TTS: `deepgram` (REST), `deepgram-ws` or `elevenlabs`.
    #[arg(long, default_value = "deepgram")]
    tts: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.turns == 0 || args.turns > MAX_TURNS {
        bail!("--turns must be 1..={MAX_TURNS}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let turns = args.turns;
    let mock = MockProviders::start(ProvidersConfig {
        api_key: KEY.into(),
        ..ProvidersConfig::default()
    })
    .await?;
    let key = || Some(ApiKey::new(KEY));
    let cfg = CascadedConfig {
        stt: SttConfig {
            provider: match args.stt.as_str() {
                "deepgram" => SttProvider::Deepgram,
                "openai" => SttProvider::OpenAi,
                other => bail!("--stt {other}: deepgram or openai"),
            },
            url: match args.stt.as_str() {
                "openai" => mock.openai_stt_url(),
                _ => mock.stt_url(),
            },
            model: match args.stt.as_str() {
                "openai" => "gpt-4o-transcribe".into(),
                _ => "nova-3".into(),
            },
            language: None,
            api_key: ApiKey::new(KEY),
            endpointing_ms: ENDPOINTING_MS,
            utterance_end_ms: 1000,
            connect_timeout: Duration::from_secs(5),
            reconnect_budget: Duration::from_secs(2),
        },
        llm: ChatConfig {
            url: mock.openai_url(),
            model: "bench".into(),
            api_key: key(),
            temperature: None,
            max_tokens: None,
            timeout: Duration::from_secs(10),
        },
        tts: TtsConfig {
            provider: match args.tts.as_str() {
                "deepgram" => TtsProvider::DeepgramRest,
                "deepgram-ws" => TtsProvider::DeepgramWs,
                "elevenlabs" => TtsProvider::ElevenLabs,
                other => bail!("--tts {other}: deepgram, deepgram-ws or elevenlabs"),
            },
            url: match args.tts.as_str() {
                "deepgram" => mock.deepgram_url(),
                _ => mock.tts_socket_url(),
            },
            model: match args.tts.as_str() {
                "elevenlabs" => "eleven_flash_v2_5".into(),
                _ => String::new(),
            },
            voice: "aura-2-thalia-en".into(),
            api_key: key(),
            timeout: Duration::from_secs(10),
        },
        instructions: "You are a benchmark.".into(),
        greeting: None,
        turn_end: TurnEnd::Stt,
    };
    let ctx = CallContext {
        caller: "bench".into(),
        called: "bench".into(),
        direction: "inbound".into(),
        variables: Default::default(),
        memory: String::new(),
        call_format: AudioFormat::Pcmu8k,
        tools: Vec::new(),
        history: Vec::new(),
    };
    let mut h = connect(cfg, ctx).await.context("connect")?;
    let speech: Vec<u8> = tone(300.0, 16000.0, 1000, 8000)
        .iter()
        .map(|s| ulaw_encode(*s))
        .collect();
    let silence = vec![0xFFu8; 8 * ENDPOINTING_MS as usize];
    let mut ms = Vec::with_capacity(turns);
    for _ in 0..turns {
        for frame in speech.chunks(160).chain(silence.chunks(160)) {
            let chunk = AudioChunk {
                format: AudioFormat::Pcmu8k,
                data: Bytes::copy_from_slice(frame),
            };
            h.control.send(BackendControl::Audio(chunk)).await?;
        }
        let t0 = Instant::now();
        let deadline = tokio::time::Instant::now() + TURN_LIMIT;
        // The first audio of the reply.
        loop {
            match tokio::time::timeout_at(deadline, h.events.recv()).await {
                Err(_) => bail!("no reply within {TURN_LIMIT:?}"),
                Ok(None) => bail!("the backend stopped"),
                Ok(Some(BackendEvent::Audio(_))) => break,
                Ok(Some(BackendEvent::Error { message, .. })) => bail!("backend error: {message}"),
                Ok(Some(_)) => {}
            }
        }
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        // The rest of the reply.
        loop {
            match tokio::time::timeout_at(deadline, h.events.recv()).await {
                Err(_) => bail!("the reply did not finish"),
                Ok(None) => bail!("the backend stopped"),
                Ok(Some(BackendEvent::ResponseDone)) => break,
                Ok(Some(_)) => {}
            }
        }
    }
    let _ = h.control.send(BackendControl::Close).await;
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    println!(
        "cascaded overhead per turn (last silence frame handed over -> first reply audio), {} turns:",
        ms.len()
    );
    println!(
        "  p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        pct(0.5),
        pct(0.95),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "  LLM requests {}, TTS requests {}, errors {:?}",
        mock.chat_requests().len(),
        mock.tts_requests().len(),
        mock.errors()
    );
    Ok(())
}
