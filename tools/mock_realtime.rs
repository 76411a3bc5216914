//! A local mock of the OpenAI Realtime API (GA protocol) for trying voxline without an
//! OpenAI account: `voxline_mock_realtime`, served until Ctrl-C.
//!
//! `cargo run --bin voxline-mock-realtime -- --listen 127.0.0.1:8765 --api-key sk-mock --pace`
//!
//! Point an agent at `ws://127.0.0.1:8765/v1/realtime` with the same key. Every reply is a
//! tone (or `--wav FILE`, PCM16 at any rate) with the transcript `--text`; `--tool-turn N
//! --tool-name NAME --tool-args JSON` answers the Nth caller turn with a function call.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use clap::Parser;
use voxline::dsp::{resample, wav};
use voxline_mock_realtime::{MockConfig, MockServer, PCM_RATE, ToolScript, tone};

#[derive(Debug, Parser)]
#[command(
    name = "voxline-mock-realtime",
    about = "Local mock of the OpenAI Realtime API (GA)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8765")]
    listen: SocketAddr,
    /// The API key clients must send (default: $OPENAI_API_KEY, else sk-mock).
    #[arg(long)]
    api_key: Option<String>,
    /// Expect the key in an `api-key` header (Azure) instead of `Authorization: Bearer`.
    #[arg(long)]
    azure: bool,
    /// Refuse every upgrade with this HTTP status (401, 429…).
    #[arg(long)]
    reject_status: Option<u16>,
    /// Reply with this PCM16 WAV file instead of a tone.
    #[arg(long)]
    wav: Option<std::path::PathBuf>,
    /// Tone frequency in Hz.
    #[arg(long, default_value_t = 440.0)]
    tone_hz: f64,
    /// Tone length in ms.
    #[arg(long, default_value_t = 1500)]
    tone_ms: u64,
    /// The reply's transcript.
    #[arg(long, default_value = "Hello from the mock realtime server")]
    text: String,
    /// Audio per delta event, ms.
    #[arg(long, default_value_t = 40)]
    chunk_ms: u64,
    /// Send audio in real time instead of all at once.
    #[arg(long)]
    pace: bool,
    /// RMS (PCM16 scale) above which caller audio counts as speech.
    #[arg(long, default_value_t = 1000.0)]
    vad_threshold: f64,
    /// Answer this caller turn (1 = first) with a function call.
    #[arg(long)]
    tool_turn: Option<u32>,
    /// The function to call.
    #[arg(long, default_value = "lookup")]
    tool_name: String,
    /// The call's arguments (JSON text, sent as is).
    #[arg(long, default_value = "{}")]
    tool_args: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        // RUST_LOG as a list of levels (`debug`, `info,voxline_mock_realtime=trace`).
        let filter = std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
            });
        let most = filter
            .iter()
            .map(|(_, level)| level)
            .chain(filter.default_level())
            .max()
            .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
        tracing_subscriber::fmt()
            .with_max_level(most)
            .finish()
            .with::<tracing_subscriber::filter::Targets>(filter)
            .init();
    }
    let args = Args::parse();
    let reply = match &args.wav {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let file = wav::parse_pcm16(&bytes).with_context(|| format!("{}", path.display()))?;
            let spec = file.spec;
            let mono = wav::mix_to_mono(&file.samples, spec.channels());
            resample::resample_all(&mono, spec.sample_rate(), PCM_RATE)?
        }
        None => tone(args.tone_hz, 8000.0, args.tone_ms, PCM_RATE),
    };
    if reply.is_empty() {
        bail!("the reply audio is empty");
    }
    let cfg = MockConfig {
        api_key: args
            .api_key
            .or_else(|| std::env::var("OPENAI_API_KEY").ok())
            .unwrap_or_else(|| "sk-mock".to_owned()),
        azure: args.azure,
        reject_status: args.reject_status,
        vad_rms_threshold: args.vad_threshold,
        reply_pcm24k: reply,
        reply_text: args.text,
        chunk_ms: args.chunk_ms,
        pace: args.pace,
        tool_call: args.tool_turn.map(|on_turn| ToolScript {
            on_turn,
            name: args.tool_name,
            arguments: args.tool_args,
        }),
        ..MockConfig::default()
    };
    let server = MockServer::bind(args.listen, cfg).await?;
    println!("mock realtime server on {}", server.url());
    tokio::signal::ctrl_c().await?;
    println!(
        "{} connections, {} client events, {} errors sent",
        server.connections(),
        server.received_events().len(),
        server.errors_sent().len()
    );
    Ok(())
}
