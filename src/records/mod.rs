//! Call records, transcripts and their storage: every call leaves a row in SQLite
//! (`DATA_DIR/voxline.db`) and a JSONL transcript file.
//!
//! `records` sits on top of the crate like `api` and `config`: it takes plain data in and
//! knows nothing of SIP or media internals.
//!
//! * [`store`]: [`RecordStore`] (the SQLite database, synchronous) and the pair
//!   [`RecordWriter`] / [`RecordReader`] for async code: writes go through a bounded
//!   channel to one dedicated thread, reads use a second, read-only connection, so a tokio
//!   worker never waits on a disk write.
//! * [`transcript`]: [`TranscriptWriter`] (one JSONL line per utterance, written out line by
//!   line) and [`read_transcript`], which tolerates a line torn by a crash.
//!
//! ## Times
//!
//! Wall-clock times ([`CallRecord::started_at`], `answered_at`, `ended_at`, a transcript
//! entry's `at`) are [`UnixMs`]: milliseconds since the Unix epoch, UTC. They are stored as
//! SQLite `INTEGER`s, sort and compare as numbers, and SQLite can render them:
//! `SELECT datetime(started_at / 1000, 'unixepoch') FROM calls`. Offsets inside a call
//! (turn latencies, tool-call starts, a transcript entry's `t_ms`) are milliseconds since
//! the call was answered (for a call never answered: since it started), taken from a
//! monotonic clock by the caller.
//!
//! ## Durability
//!
//! A row is committed with `journal_mode=WAL` and `synchronous=FULL`; see [`store`] for what
//! that guarantees across a process crash and a power loss. A call in progress when voxline
//! stopped is marked [unfinished](CallRecord::unfinished) the next time the store is opened.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub mod db;
pub(crate) mod store;
pub(crate) mod transcript;

pub use db::StoreLocation;
pub use store::{RecordOp, RecordReader, RecordStore, RecordWriter, WriterStats};

pub mod agents;
pub mod campaigns;
pub mod memory;
pub mod nodes;
pub mod outbox;
pub mod redact;
pub mod retention;
pub mod search;
pub mod shared;
pub mod uploads;
pub use transcript::{
    Role, SkippedLine, Transcript, TranscriptEntry, TranscriptWriter, read_transcript,
};

/// File name of the database inside the data directory.
pub const DB_FILE_NAME: &str = "voxline.db";

/// The `end_reason` the crash-recovery pass writes into a call that was still in progress
/// when voxline stopped (crash, kill, power loss).
pub const UNFINISHED_END_REASON: &str = "unfinished: voxline stopped during the call";

/// A wall-clock instant: milliseconds since the Unix epoch (1970-01-01T00:00:00Z).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct UnixMs(pub(crate) i64);

impl UnixMs {
    /// Wraps a raw value.
    pub const fn new(v: i64) -> Self {
        Self(v)
    }

    /// The raw value.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl From<i64> for UnixMs {
    fn from(v: i64) -> Self {
        Self(v)
    }
}

impl UnixMs {
    /// The current wall-clock time. A clock set before 1970 gives a negative value; one past
    /// the year 292 million saturates.
    pub fn now() -> UnixMs {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => UnixMs(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => UnixMs(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// RFC 3339 in UTC with milliseconds, e.g. `2026-12-04T17:20:02.123Z` (proleptic
    /// Gregorian; times before 1970 print as 1970).
    pub fn to_rfc3339(self) -> String {
        let ms = self.0.max(0);
        let secs = ms / 1000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            ms % 1000
        )
    }
}

/// Which side placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The far end called voxline.
    Inbound,
    /// voxline placed the call (HTTP API or CLI).
    Outbound,
}

impl Direction {
    /// `"inbound"` or `"outbound"`, as stored in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// Parses `"inbound"` / `"outbound"`.
    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "inbound" => Some(Direction::Inbound),
            "outbound" => Some(Direction::Outbound),
            _ => None,
        }
    }
}

/// Latency figures of one conversational turn, in ms since the call was answered.
///
/// `caller_speech_end_ms` is when the caller's speech ended (end of utterance as detected);
/// `first_backend_audio_ms` when the agent backend's first audio of the reply arrived;
/// `first_rtp_out_ms` when the first RTP packet of the reply left. The two latter are `None`
/// when the turn never produced a reply (barge-in, hang-up, backend error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TurnLatency {
    /// End of the caller's speech.
    pub caller_speech_end_ms: u64,
    /// First audio of the reply received from the backend.
    pub first_backend_audio_ms: Option<u64>,
    /// First RTP packet of the reply sent.
    pub first_rtp_out_ms: Option<u64>,
    /// Cascaded backends: from sending the utterance's last audio to the STT to its final
    /// transcript, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stt_final_ms: Option<u64>,
    /// Cascaded backends: from the LLM request to its first token, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_first_token_ms: Option<u64>,
    /// Cascaded backends: from the first TTS request of the reply to its first audio, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tts_first_byte_ms: Option<u64>,
}

impl TurnLatency {
    /// Backend latency: speech end to first backend audio, if the reply came.
    pub fn backend_latency_ms(&self) -> Option<u64> {
        self.first_backend_audio_ms
            .map(|t| t.saturating_sub(self.caller_speech_end_ms))
    }

    /// Mouth-to-ear latency on voxline's side: speech end to first RTP packet out.
    pub fn response_latency_ms(&self) -> Option<u64> {
        self.first_rtp_out_ms
            .map(|t| t.saturating_sub(self.caller_speech_end_ms))
    }
}

/// One tool (function) call the agent made during the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCallRecord {
    /// Tool name.
    pub name: String,
    /// Arguments as the backend sent them (usually a JSON text).
    pub arguments: String,
    /// What the tool returned, if it returned.
    pub output: Option<String>,
    /// Why the tool failed, if it failed.
    pub error: Option<String>,
    /// When the call started, in ms since the call was answered.
    pub started_ms: u64,
    /// How long the tool took, in ms.
    pub duration_ms: u64,
}

/// The record of one call: one row of the `calls` table.
///
/// A record is inserted when the call starts ([`RecordStore::insert_started`]), its
/// `answered_at` is set on answer, and the whole row is rewritten when the call ends
/// ([`RecordStore::finish`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallRecord {
    /// Unique key of the record (the caller picks it; for example the SIP Call-ID joined
    /// with a local counter, since a Call-ID alone may repeat).
    pub id: String,
    /// The SIP Call-ID.
    pub call_id: String,
    /// The From URI (caller).
    pub from: String,
    /// The To URI (callee).
    pub to: String,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Name of the trunk the call went through, if any.
    pub trunk: Option<String>,
    /// Name of the agent that handled the call.
    pub agent: String,
    /// The version of an agent defined through the API that handled the call; `None` for
    /// voxline.toml's agents. Schema version 7.
    #[serde(default)]
    pub agent_version: Option<u32>,
    /// When the call started (INVITE received or sent).
    pub started_at: UnixMs,
    /// When the call was answered (200 OK sent or received), if it was.
    pub answered_at: Option<UnixMs>,
    /// When the call ended; `None` while it is in progress, and for an unfinished call.
    pub ended_at: Option<UnixMs>,
    /// Why the call ended (`"caller hung up"`, `"486 Busy Here"`, ...); `None` while in
    /// progress. An unfinished call has [`UNFINISHED_END_REASON`].
    pub end_reason: Option<String>,
    /// Final SIP status code of the INVITE, if there was one.
    pub sip_code: Option<u16>,
    /// Negotiated codec (for example `"PCMU/8000"`), once known.
    pub codec: Option<String>,
    /// Received packet loss in percent, from RTP/RTCP statistics.
    pub loss_percent: Option<f64>,
    /// Interarrival jitter in ms.
    pub jitter_ms: Option<f64>,
    /// Estimated MOS (1.0 to 5.0).
    pub mos: Option<f64>,
    /// Per-turn latencies, in turn order (stored as a JSON array).
    pub turn_latencies: Vec<TurnLatency>,
    /// Tool calls, in call order (stored as a JSON array).
    pub tool_calls: Vec<ToolCallRecord>,
    /// Switches between the agent's backends during the call.
    #[serde(default)]
    pub backend_switches: Vec<BackendSwitch>,
    /// Path of the JSONL transcript, if one is kept.
    pub transcript_path: Option<String>,
    /// Path of the recording, if one is kept.
    pub recording_path: Option<String>,
    /// `true` when voxline stopped while the call was in progress, so the record is
    /// incomplete (set by the recovery pass of [`RecordStore::open`]).
    pub unfinished: bool,
    /// The last blind transfer and its outcome, `"TARGET -> STATUS"` (`"sip:200@pbx -> 200"`,
    /// `"... -> failed: REFER rejected with 403"`), whether the API or the agent asked for
    /// it. Schema version 2; `None` in rows written before.
    #[serde(default)]
    pub transfer: Option<String>,
    /// The voice chain's figures (AI calls with the chain on). Schema version 3; `None` in
    /// rows written before.
    #[serde(default)]
    pub dsp: Option<DspInfo>,
    /// When retention (`retention_days`) deleted the call's recording and transcript; their
    /// paths are then `None`. Schema version 9.
    #[serde(default)]
    pub media_deleted_at: Option<UnixMs>,
    /// The post-call analysis (summary and outcome fields), once it has run; written after
    /// the call's end by [`RecordOp::Analyzed`]. Schema version 10.
    #[serde(default)]
    pub analysis: Option<CallAnalysis>,
    /// Times the caller cut the agent short (barge-ins, local or the backend's). Schema
    /// version 14; 0 in rows written before.
    #[serde(default)]
    pub barge_ins: u32,
    /// Where `[recording_upload]` stored the recording (`s3://BUCKET/KEY`), once it has; the
    /// local `recording_path` is `None` after that if the upload deletes the local file.
    /// Schema version 15.
    #[serde(default)]
    pub recording_url: Option<String>,
    /// The cluster node that handles (or handled) the call: `[cluster] node_id`, written by
    /// the node's record store; `None` on a single node. Schema version 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The result of a call's post-call analysis, as the record keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallAnalysis {
    /// A short summary of the call (`None` when the analysis failed).
    pub summary: Option<String>,
    /// The outcome fields, matching the agent's schema (`None` without a schema or when the
    /// analysis failed).
    pub outcome: Option<serde_json::Value>,
    /// Why the analysis failed, if it did.
    pub error: Option<String>,
    /// The model that made it.
    pub model: String,
    /// When it finished.
    pub at: UnixMs,
}

/// A mid-call switch to the next backend of the agent's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackendSwitch {
    /// When, in ms from the answer.
    pub at_ms: u64,
    /// The backend that failed (`realtime`, `cascaded`).
    pub from: String,
    /// The one that took over.
    pub to: String,
    /// Why the first one failed.
    pub reason: String,
}

/// A call's voice chain (echo cancellation, noise suppression, VAD), as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DspInfo {
    /// Caller frames processed.
    pub frames: u64,
    /// CPU time per stage, µs in all: `echo_cancellation`, `noise_suppression`, `vad`.
    pub stage_us: DspStageUs,
    /// Mean CPU time of the whole chain per frame, µs.
    pub us_per_frame: f64,
    /// The echo canceller's ERLE estimate, dB.
    pub erle_db: Option<f64>,
    /// The echo path's delay the canceller found, ms.
    pub echo_delay_ms: Option<i32>,
    /// Caller speech starts the VAD found.
    pub speech_starts: u64,
    /// Frames the leak guard kept from the VAD as echo leaking through the canceller.
    #[serde(default)]
    pub echo_frames: u64,
    /// Barge-ins decided by the local VAD.
    pub local_barge_ins: u64,
    /// Turns ended by the local VAD.
    pub local_turns: u64,
    /// Frames a stage failed on (passed on unprocessed).
    pub errors: u64,
}

/// CPU time per stage, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DspStageUs {
    /// Echo cancellation.
    pub echo_cancellation: u64,
    /// Noise suppression.
    pub noise_suppression: u64,
    /// VAD.
    pub vad: u64,
}

impl CallRecord {
    /// A record for a call that has just started: everything that is known only later is
    /// empty.
    pub fn started(
        id: impl Into<String>,
        call_id: impl Into<String>,
        from: impl Into<String>,
        to: impl Into<String>,
        direction: Direction,
        agent: impl Into<String>,
        started_at: UnixMs,
    ) -> CallRecord {
        CallRecord {
            id: id.into(),
            call_id: call_id.into(),
            from: from.into(),
            to: to.into(),
            direction,
            trunk: None,
            agent: agent.into(),
            agent_version: None,
            media_deleted_at: None,
            analysis: None,
            barge_ins: 0,
            recording_url: None,
            node: None,
            started_at,
            answered_at: None,
            ended_at: None,
            end_reason: None,
            sip_code: None,
            codec: None,
            loss_percent: None,
            jitter_ms: None,
            mos: None,
            turn_latencies: Vec::new(),
            tool_calls: Vec::new(),
            backend_switches: Vec::new(),
            transcript_path: None,
            recording_path: None,
            unfinished: false,
            transfer: None,
            dsp: None,
        }
    }
}

/// An error of the records layer. Every variant names the file (or database) and the operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordsError {
    /// The data directory could not be created.
    #[error("{}: create data directory: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A database operation failed (SQLite or PostgreSQL).
    #[error("{}: {op}: {source}", path.display())]
    Database {
        /// The database: the SQLite file, or the PostgreSQL URL without its password.
        path: PathBuf,
        /// What was being done (`"open"`, `"insert_started"`, ...).
        op: &'static str,
        /// The database's error.
        #[source]
        source: db::DbError,
    },
    /// The database says WAL mode could not be enabled (for example on a file system
    /// without shared memory support).
    #[error("{}: set journal_mode=WAL: SQLite kept journal mode {mode:?}", path.display())]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite reported.
        mode: String,
    },
    /// The database was written by a newer voxline.
    #[error(
        "{}: open: schema version {found} is newer than this voxline supports ({supported})",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Version found in `schema_version`.
        found: i64,
        /// Highest version this build knows.
        supported: i64,
    },
    /// A stored row could not be turned back into a [`CallRecord`].
    #[error("{}: {op}: record {id:?}: column {column}: {reason}", path.display())]
    CorruptRow {
        /// The database file.
        path: PathBuf,
        /// The read operation.
        op: &'static str,
        /// The record's id.
        id: String,
        /// The column that failed.
        column: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A record could not be encoded (JSON columns).
    #[error("{}: {op}: record {id:?}: encode {column}: {source}", path.display())]
    Encode {
        /// The database file.
        path: PathBuf,
        /// The write operation.
        op: &'static str,
        /// The record's id.
        id: String,
        /// The column being encoded.
        column: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// An update named a record that does not exist.
    #[error("{}: {op}: no record with id {id:?}", path.display())]
    NotFound {
        /// The database file.
        path: PathBuf,
        /// The operation.
        op: &'static str,
        /// The id looked for.
        id: String,
    },
    /// [`RecordStore::finish`] was given a record without `ended_at`.
    #[error("{}: finish: record {id:?} has no ended_at", path.display())]
    NotEnded {
        /// The database file.
        path: PathBuf,
        /// The record's id.
        id: String,
    },
    /// The writer's queue was full; the operation was dropped (and counted).
    #[error("{}: {op}: record writer queue full ({capacity} pending), operation dropped", path.display())]
    QueueFull {
        /// The database file.
        path: PathBuf,
        /// The operation dropped.
        op: &'static str,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The writer thread has stopped; the operation was dropped (and counted).
    #[error("{}: {op}: record writer thread has stopped, operation dropped", path.display())]
    WriterStopped {
        /// The database file.
        path: PathBuf,
        /// The operation dropped.
        op: &'static str,
    },
    /// The writer thread could not be started, or panicked.
    #[error("{}: {op}: record writer thread failed: {reason}", path.display())]
    WriterThread {
        /// The database file.
        path: PathBuf,
        /// `"spawn"` or `"shutdown"`.
        op: &'static str,
        /// What happened.
        reason: String,
    },
    /// A transcript file operation failed.
    #[error("{}: {op}: {source}", path.display())]
    TranscriptIo {
        /// The transcript file.
        path: PathBuf,
        /// `"create"`, `"append"`, `"sync"` or `"read"`.
        op: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A transcript entry could not be encoded.
    #[error("{}: append: encode entry: {source}", path.display())]
    TranscriptEncode {
        /// The transcript file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_milliseconds() {
        assert_eq!(UnixMs(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            UnixMs(1_796_402_402_123).to_rfc3339(),
            "2026-12-04T16:40:02.123Z"
        );
        assert_eq!(
            UnixMs(951_782_400_500).to_rfc3339(),
            "2000-02-29T00:00:00.500Z"
        );
    }

    #[test]
    fn direction_text_round_trips_and_rejects_unknown() {
        for d in [Direction::Inbound, Direction::Outbound] {
            assert_eq!(Direction::parse(d.as_str()), Some(d));
            assert_eq!(
                serde_json::to_string(&d).unwrap(),
                format!("\"{}\"", d.as_str())
            );
        }
        assert_eq!(Direction::parse("Inbound"), None);
    }

    #[test]
    fn turn_latency_never_goes_negative() {
        let t = TurnLatency {
            caller_speech_end_ms: 1_000,
            first_backend_audio_ms: Some(900),
            first_rtp_out_ms: Some(1_250),
            stt_final_ms: None,
            llm_first_token_ms: None,
            tts_first_byte_ms: None,
        };
        assert_eq!(t.backend_latency_ms(), Some(0));
        assert_eq!(t.response_latency_ms(), Some(250));
    }

    #[test]
    fn unix_ms_is_milliseconds_and_serializes_as_a_number() {
        // 2020-01-01T00:00:00Z in ms; any clock this runs on is later.
        assert!(UnixMs::now().0 > 1_577_836_800_000);
        assert_eq!(serde_json::to_string(&UnixMs(42)).unwrap(), "42");
    }
}
