//! End-to-end harness for cascaded agents: the provider mocks (Deepgram STT, chat
//! completions, TTS) on a runtime in this process, a real `voxline run` process whose agent
//! points at them, and the hand-made SIP + RTP peer of tests/media_peer as the caller.
#![allow(dead_code)] // each test uses a different part of this module

use std::time::Duration;

use voxline::agent::cascaded::chat::ChatConfig;
use voxline::agent::cascaded::stt::SttConfig;
use voxline::agent::cascaded::tts::TtsConfig;
use voxline::agent::cascaded::{ApiKey, CascadedConfig, TurnEnd};
use voxline_mock_cascaded::{MockProviders, ProvidersConfig};

use crate::common::VoxlineProcess;
use crate::media_peer::{FRAME, Rtp, RtpPeer, SipPeer};
use crate::realtime_e2e_support::{call, converse, frame_of, is_agent_audio, speech};

/// The environment variable the test agent reads every provider key from.
pub const KEY_ENV: &str = "VOXLINE_E2E_PROVIDER_KEY";
/// The key the mocks expect.
pub const KEY: &str = "dg-and-sk-e2e-mock";

/// The mocks (on their own runtime) and a voxline process using them.
pub struct CascadedE2e {
    /// The runtime the mocks run on.
    pub rt: tokio::runtime::Runtime,
    /// The mocks.
    pub mock: MockProviders,
    /// voxline.
    pub vox: VoxlineProcess,
    /// Its configuration, for [`CascadedE2e::respawn`].
    pub toml: String,
}

impl CascadedE2e {
    /// Starts the mocks (their key set to [`KEY`]) and voxline with one cascaded agent `bot`
    /// routed from every number, its STT Deepgram's and its TTS `tts` (`openai`, `deepgram`
    /// over REST, `deepgram-ws` over its socket, or `elevenlabs`). `agent_extra` is TOML
    /// inside the `[[agent]]` table, `tables_extra` after its sub-tables.
    pub fn start(
        cfg: ProvidersConfig,
        tts: &str,
        agent_extra: &str,
        tables_extra: &str,
    ) -> CascadedE2e {
        CascadedE2e::start_inner(
            cfg,
            "",
            "deepgram",
            Some(tts),
            "",
            agent_extra,
            tables_extra,
        )
    }

    /// Like [`CascadedE2e::start`] with the agent's `instructions` (a TOML literal string's
    /// content). In `tables_extra`, `@LLM_URL@` stands for the chat mock's base URL.
    pub fn start_with_instructions(
        cfg: ProvidersConfig,
        instructions: &str,
        agent_extra: &str,
        tables_extra: &str,
    ) -> CascadedE2e {
        let extra = format!("instructions = '{instructions}'\n{agent_extra}");
        CascadedE2e::start_inner(
            cfg,
            "",
            "deepgram",
            Some("openai"),
            "",
            &extra,
            tables_extra,
        )
    }

    /// [`CascadedE2e::start_with_instructions`] with the records in `data_dir`, which
    /// outlives the process: see [`CascadedE2e::respawn`].
    pub fn start_kept(
        cfg: ProvidersConfig,
        data_dir: &std::path::Path,
        instructions: &str,
        tables_extra: &str,
    ) -> CascadedE2e {
        let extra = format!("instructions = '{instructions}'\n");
        let top = format!("data_dir = \"{}\"\n", data_dir.display());
        CascadedE2e::start_inner(
            cfg,
            &top,
            "deepgram",
            Some("openai"),
            "",
            &extra,
            tables_extra,
        )
    }

    /// Kills voxline (SIGKILL) and starts it again with the same configuration.
    pub fn respawn(&mut self) {
        let fresh = VoxlineProcess::spawn_with_env(&self.toml, &[(KEY_ENV, KEY)]);
        let old = std::mem::replace(&mut self.vox, fresh);
        drop(old);
    }

    /// Like [`CascadedE2e::start`] with the STT `stt` (`deepgram` or `openai`).
    pub fn start_with_stt(cfg: ProvidersConfig, stt: &str, tts: &str) -> CascadedE2e {
        CascadedE2e::start_inner(cfg, "", stt, Some(tts), "", "", "")
    }

    /// Like [`CascadedE2e::start`], with `tts_table` (a whole `[agent.tts]` table) instead of
    /// one pointing at the mocks.
    pub fn start_with_tts(cfg: ProvidersConfig, tts_table: &str, agent_extra: &str) -> CascadedE2e {
        CascadedE2e::start_inner(cfg, "", "deepgram", None, tts_table, agent_extra, "")
    }

    #[allow(clippy::too_many_arguments)]
    fn start_inner(
        cfg: ProvidersConfig,
        top: &str,
        stt: &str,
        tts: Option<&str>,
        tts_table: &str,
        agent_extra: &str,
        tables_extra: &str,
    ) -> CascadedE2e {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mock = rt
            .block_on(MockProviders::start(ProvidersConfig {
                api_key: KEY.to_owned(),
                ..cfg
            }))
            .expect("mock providers");
        let tts_section = match tts {
            Some(provider) => {
                let (provider, url) = match provider {
                    "openai" => ("openai", mock.openai_url()),
                    "deepgram-ws" => ("deepgram", mock.tts_socket_url()),
                    "elevenlabs" => ("elevenlabs", mock.tts_socket_url()),
                    _ => ("deepgram", mock.deepgram_url()),
                };
                format!(
                    "[agent.tts]\nprovider = \"{provider}\"\nurl = \"{url}\"\napi_key_env = \"{KEY_ENV}\"\n"
                )
            }
            None => tts_table.to_owned(),
        };
        let instructions = if agent_extra.contains("instructions =") {
            String::new()
        } else {
            "instructions = \"You are a test agent. The caller is {{caller}}.\"".to_owned()
        };
        let tables_extra = tables_extra.replace("@LLM_URL@", &mock.openai_url());
        let toml = format!(
            r#"{top}
[[route]]
number = "*"
agent = "bot"

[[agent]]
name = "bot"
kind = "cascaded"
{instructions}
allow_from = ["127.0.0.0/8"]
{agent_extra}

[agent.stt]
provider = "{stt}"
url = "{stt_url}"
api_key_env = "{KEY_ENV}"

[agent.llm]
url = "{llm}"
model = "mock-model"
api_key_env = "{KEY_ENV}"

{tts_section}
{tables_extra}
"#,
            stt_url = match stt {
                "openai" => mock.openai_stt_url(),
                _ => mock.stt_url(),
            },
            llm = mock.openai_url(),
        );
        let vox = VoxlineProcess::spawn_with_env(&toml, &[(KEY_ENV, KEY)]);
        CascadedE2e {
            rt,
            mock,
            vox,
            toml,
        }
    }

    /// Waits up to `limit` for `cond` on the mocks.
    pub fn wait(&self, limit: Duration, cond: impl Fn(&MockProviders) -> bool) -> bool {
        self.rt.block_on(self.mock.wait_until(limit, cond))
    }

    /// Calls voxline with PCMU.
    pub fn call(&self, number: &str) -> (SipPeer, RtpPeer, std::net::SocketAddr) {
        call(self.vox.sip_addr(), number)
    }
}

/// The caller says `pcm` (8 kHz) starting at frame `from`, then stays silent, for `frames`
/// frames in all. Returns what it received.
pub fn say_and_listen(
    rtp: &mut RtpPeer,
    to: std::net::SocketAddr,
    pcm: &[i16],
    from: usize,
    frames: usize,
) -> Vec<Rtp> {
    converse(rtp, to, frames, |k, _| {
        let mut f = frame_of(pcm, k, from);
        f.resize(FRAME, 0);
        crate::media_peer::pcmu_encode(&f)
    })
}

/// Frames of agent audio among `packets`.
pub fn agent_frames(packets: &[Rtp]) -> usize {
    packets.iter().filter(|p| is_agent_audio(p)).count()
}

/// A question in espeak-ng's voice (8 kHz).
pub fn question(text: &str) -> Vec<i16> {
    speech("en-us", text)
}

/// The first finished call record in voxline's `data` directory under `work_dir`, waited for
/// up to 5 s (the record is written when the call's end has been processed).
pub fn finished_record(work_dir: &std::path::Path) -> Option<voxline::records::CallRecord> {
    let reader = voxline::records::RecordReader::open(work_dir.join("data")).expect("records");
    for _ in 0..50 {
        let found = reader
            .list(10, 0)
            .expect("list")
            .into_iter()
            .find(|r| r.ended_at.is_some());
        if found.is_some() {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// A voxline whose agent `bot` has a realtime and a cascaded backend, one the fallback of
/// the other, with both mocks (their keys set to [`KEY`]) on a runtime in this process.
pub struct ChainE2e {
    /// The runtime the mocks run on.
    pub rt: tokio::runtime::Runtime,
    /// The Realtime mock.
    pub realtime: voxline_mock_realtime::MockServer,
    /// The cascaded providers' mocks.
    pub providers: MockProviders,
    /// voxline.
    pub vox: VoxlineProcess,
}

impl ChainE2e {
    /// Starts the mocks and voxline: the agent's `kind` (`realtime` or `cascaded`),
    /// `realtime_extra` inside `[agent.realtime]`, `fallback` inside `[agent.fallback]`.
    pub fn start(
        realtime_cfg: voxline_mock_realtime::MockConfig,
        providers_cfg: ProvidersConfig,
        kind: &str,
        realtime_extra: &str,
        fallback: &str,
    ) -> ChainE2e {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let realtime = rt
            .block_on(voxline_mock_realtime::MockServer::start(
                voxline_mock_realtime::MockConfig {
                    api_key: KEY.into(),
                    ..realtime_cfg
                },
            ))
            .expect("realtime mock");
        let providers = rt
            .block_on(MockProviders::start(ProvidersConfig {
                api_key: KEY.into(),
                ..providers_cfg
            }))
            .expect("provider mocks");
        let toml = format!(
            r#"
[[route]]
number = "*"
agent = "bot"

[[agent]]
name = "bot"
kind = "{kind}"
instructions = "You are a test agent."
allow_from = ["127.0.0.0/8"]

[agent.realtime]
url = "{rt_url}"
api_key_env = "{KEY_ENV}"
noise_reduction = "none"
{realtime_extra}
[agent.stt]
url = "{stt}"
api_key_env = "{KEY_ENV}"

[agent.llm]
url = "{llm}"
api_key_env = "{KEY_ENV}"

[agent.tts]
provider = "deepgram"
url = "{tts}"
api_key_env = "{KEY_ENV}"

[agent.fallback]
{fallback}
"#,
            rt_url = realtime.url(),
            stt = providers.stt_url(),
            llm = providers.openai_url(),
            tts = providers.deepgram_url(),
        );
        let vox = VoxlineProcess::spawn_with_env(&toml, &[(KEY_ENV, KEY)]);
        ChainE2e {
            rt,
            realtime,
            providers,
            vox,
        }
    }
}

/// A cascaded backend's configuration for tests that drive the backend directly: the STT and
/// the LLM on `mock` (its key `key`), the given `tts`, a scripted `greeting`, turns ended by
/// the STT alone.
pub fn backend_config(
    mock: &MockProviders,
    key: &str,
    tts: TtsConfig,
    greeting: &str,
) -> CascadedConfig {
    CascadedConfig {
        stt: SttConfig {
            provider: voxline::agent::cascaded::stt::SttProvider::Deepgram,
            url: mock.stt_url(),
            model: "nova-3".into(),
            language: None,
            api_key: ApiKey::new(key),
            endpointing_ms: 300,
            utterance_end_ms: 1000,
            connect_timeout: Duration::from_secs(5),
            reconnect_budget: Duration::from_secs(2),
        },
        llm: ChatConfig {
            url: mock.openai_url(),
            model: "gpt-4o-mini".into(),
            api_key: Some(ApiKey::new(key)),
            temperature: None,
            max_tokens: None,
            timeout: Duration::from_secs(5),
        },
        tts,
        instructions: "You are a billing assistant.".into(),
        greeting: Some(greeting.into()),
        turn_end: TurnEnd::Stt,
    }
}
