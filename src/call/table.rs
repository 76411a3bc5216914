//! What the call layer shows of its calls: the call table the HTTP API reads, and the call
//! records written to SQLite.

use std::collections::HashMap;
use std::time::Instant;

use crate::sip::{CallHandle, EndReason};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::manager::CallManager;
use super::metrics;

/// A call as shown by the HTTP API.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CallInfo {
    /// The stack's handle number.
    pub id: u64,
    /// The id of the call's record in the database (`{prefix}-{id}`), usable with
    /// `GET /calls/{record_id}` after the call left this table.
    pub record_id: String,
    /// SIP Call-ID.
    pub call_id: String,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// From / caller.
    pub from: String,
    /// To / called.
    pub to: String,
    /// The agent.
    pub agent: String,
    /// The agent's version, for an agent defined through the API.
    pub agent_version: Option<u32>,
    /// `ringing`, `answered`, `ended`.
    pub state: &'static str,
    /// The negotiated codec, once known.
    pub codec: Option<String>,
    /// Whether the peer has put us on hold.
    pub on_hold: bool,
    /// Seconds since the epoch when the call started.
    pub started_at: f64,
    /// Seconds since the epoch when it was answered.
    pub answered_at: Option<f64>,
    /// Seconds since the epoch when it ended.
    pub ended_at: Option<f64>,
    /// Why it ended.
    pub end_reason: Option<String>,
    /// DTMF digits received, in order.
    pub dtmf: Vec<String>,
    /// The recording's path, if the call is recorded.
    pub recording: Option<String>,
    /// Media statistics (updated every second while the call runs).
    pub media: Option<crate::media::stream::MediaStats>,
    /// The AI agent's transcript file, if it writes one.
    pub transcript: Option<String>,
    /// Latency figures of each conversational turn (AI agents).
    pub turns: Vec<crate::records::TurnLatency>,
    /// Tools the AI agent called.
    pub tool_calls: Vec<crate::records::ToolCallRecord>,
    /// Switches between the agent's backends.
    pub backend_switches: Vec<crate::records::BackendSwitch>,
    /// The voice chain's figures (AI agents with the chain on; updated every second).
    pub dsp: Option<crate::records::DspInfo>,
    /// The last blind transfer: `"TARGET -> STATUS"` (`"sip:200@pbx -> 200"`), `-> pending`
    /// while waiting, `-> call ended` if the call ended first.
    pub transfer: Option<String>,
    /// Times the caller cut the agent short (AI agents; updated every second).
    pub barge_ins: u32,
    /// The cluster node that handles the call (`[cluster] node_id`; absent on a single
    /// node). A call on another node is shown from its record: without live media figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl CallInfo {
    /// A call in progress on another node, as its record shows it (`id` is 0: handle
    /// numbers are per node; use `record_id`).
    pub fn from_record(r: &crate::records::CallRecord) -> CallInfo {
        let secs = |t: crate::records::UnixMs| t.get() as f64 / 1000.0;
        CallInfo {
            id: 0,
            record_id: r.id.clone(),
            call_id: r.call_id.clone(),
            direction: r.direction.as_str(),
            from: r.from.clone(),
            to: r.to.clone(),
            agent: r.agent.clone(),
            agent_version: r.agent_version,
            state: if r.answered_at.is_some() {
                "answered"
            } else {
                "ringing"
            },
            codec: r.codec.clone(),
            on_hold: false,
            started_at: secs(r.started_at),
            answered_at: r.answered_at.map(secs),
            ended_at: None,
            end_reason: None,
            dtmf: Vec::new(),
            recording: r.recording_path.clone(),
            media: None,
            transcript: r.transcript_path.clone(),
            turns: r.turn_latencies.clone(),
            tool_calls: r.tool_calls.clone(),
            backend_switches: r.backend_switches.clone(),
            dsp: r.dsp.clone(),
            transfer: r.transfer.clone(),
            barge_ins: r.barge_ins,
            node: r.node.clone(),
        }
    }
}

/// A call's voice chain figures from its chain's counters and its bridge's.
pub(crate) fn dsp_info(
    c: &crate::dsp::chain::ChainStats,
    b: &super::bridge::BridgeStats,
) -> crate::records::DspInfo {
    let us = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    crate::records::DspInfo {
        frames: c.frames,
        stage_us: crate::records::DspStageUs {
            echo_cancellation: us(c.time.aec),
            noise_suppression: us(c.time.ns),
            vad: us(c.time.vad),
        },
        us_per_frame: if c.frames == 0 {
            0.0
        } else {
            c.time.total().as_secs_f64() * 1e6 / c.frames as f64
        },
        erle_db: c.aec.erle_db.map(|e| (e * 10.0).round() / 10.0),
        echo_delay_ms: c.aec.delay_ms,
        speech_starts: c.speech_starts,
        echo_frames: c.echo_frames,
        local_barge_ins: b.local_barge_ins,
        local_turns: b.local_turns,
        errors: c.errors,
    }
}

/// The table of calls shared with the HTTP API, keyed by call handle. The call layer writes
/// it; everyone else reads copies. Its lock is held only inside these methods, for short
/// synchronous updates and reads, never across an `.await`.
#[derive(Debug, Clone, Default)]
pub struct CallTable {
    calls: Arc<Mutex<HashMap<u64, CallInfo>>>,
}

impl CallTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The table, locked. A panic while it was held leaves plain data behind (each update is
    /// one closure over one entry), so a poisoned lock is used as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CallInfo>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of one call's entry.
    pub fn get(&self, id: u64) -> Option<CallInfo> {
        self.lock().get(&id).cloned()
    }

    /// Copies of the entries of the calls that have not ended, by id.
    pub fn active(&self) -> Vec<CallInfo> {
        let mut v: Vec<CallInfo> = self
            .lock()
            .values()
            .filter(|c| c.state != "ended")
            .cloned()
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// How many calls have not ended.
    pub fn active_count(&self) -> usize {
        self.lock().values().filter(|c| c.state != "ended").count()
    }

    /// Copies of every entry (ended calls too, up to the history kept), by id.
    pub fn all(&self) -> Vec<CallInfo> {
        let mut v: Vec<CallInfo> = self.lock().values().cloned().collect();
        v.sort_by_key(|c| c.id);
        v
    }

    /// Reads one field (or anything) of a call's entry without copying the entry.
    pub fn read<R>(&self, call: CallHandle, f: impl FnOnce(&CallInfo) -> R) -> Option<R> {
        self.lock().get(&call.0).map(f)
    }

    /// Changes a call's entry, if it is still there.
    pub(crate) fn update(&self, call: CallHandle, f: impl FnOnce(&mut CallInfo)) {
        if let Some(i) = self.lock().get_mut(&call.0) {
            f(i);
        }
    }

    fn insert(&self, info: CallInfo) {
        self.lock().insert(info.id, info);
    }

    /// Keeps at most `keep` ended calls, dropping the ones that ended first.
    fn trim_ended(&self, keep: usize) {
        let mut t = self.lock();
        let ended = t.values().filter(|i| i.state == "ended").count();
        if ended > keep {
            let mut olds: Vec<(f64, u64)> = t
                .values()
                .filter(|i| i.state == "ended")
                .map(|i| (i.ended_at.unwrap_or(0.0), i.id))
                .collect();
            olds.sort_by(|a, b| a.0.total_cmp(&b.0));
            for (_, id) in olds.into_iter().take(ended - keep) {
                t.remove(&id);
            }
        }
    }
}

impl CallManager {
    /// `now` as a record's time.
    fn unix_ms(&self, now: Instant) -> crate::records::UnixMs {
        crate::records::UnixMs(i64::try_from(self.unix(now).as_millis()).unwrap_or(i64::MAX))
    }

    /// The id of a call's record.
    pub fn record_id(&self, call: CallHandle) -> String {
        format!("{}-{}", self.record_prefix, call.0)
    }

    pub(super) fn record(&self, op: crate::records::RecordOp) {
        if let Some(w) = &self.records
            && let Err(e) = w.send(op)
        {
            tracing::warn!(error = %e, "call record not written");
        }
    }

    pub(super) fn record_answered(&self, call: CallHandle, now: Instant) {
        metrics::Metrics::inc(&metrics::Metrics::global().calls_answered);
        self.record(crate::records::RecordOp::Answered {
            id: self.record_id(call),
            at: self.unix_ms(now),
        });
    }

    /// The final record of a call, from the call table.
    pub(super) fn record_finished(&self, call: CallHandle, reason: &EndReason, now: Instant) {
        if self.records.is_none() {
            return;
        }
        let Some(info) = self.table.get(call.0) else {
            return;
        };
        use crate::records::{CallRecord, Direction as RecDirection, RecordOp, UnixMs};
        let ms = |secs: f64| UnixMs((secs * 1000.0) as i64);
        let direction = if info.direction == "outbound" {
            RecDirection::Outbound
        } else {
            RecDirection::Inbound
        };
        let mut r = CallRecord::started(
            self.record_id(call),
            info.call_id.clone(),
            info.from.clone(),
            info.to.clone(),
            direction,
            info.agent.clone(),
            ms(info.started_at),
        );
        r.agent_version = info.agent_version;
        r.answered_at = info.answered_at.map(ms);
        r.ended_at = Some(info.ended_at.map(ms).unwrap_or_else(|| self.unix_ms(now)));
        r.end_reason = Some(format!("{reason:?}"));
        r.sip_code = match reason {
            EndReason::Rejected(c) | EndReason::Failed(c) | EndReason::DialogLost(c) if *c > 0 => {
                Some(*c)
            }
            EndReason::Cancelled => Some(487),
            _ => None,
        };
        r.codec = info.codec.clone();
        if let Some(m) = &info.media {
            r.jitter_ms = Some(m.jitter_ms);
            r.mos = Some(m.mos);
            let expected = m.packets_lost + m.packets_received;
            r.loss_percent =
                (expected > 0).then(|| m.packets_lost as f64 * 100.0 / expected as f64);
        }
        r.recording_path = info.recording.clone();
        r.transcript_path = info.transcript.clone();
        r.turn_latencies = info.turns.clone();
        r.tool_calls = info.tool_calls.clone();
        r.backend_switches = info.backend_switches.clone();
        r.transfer = info.transfer.clone();
        r.dsp = info.dsp.clone();
        r.barge_ins = info.barge_ins;
        self.record(RecordOp::Finished(Box::new(r)));
    }

    #[allow(clippy::too_many_arguments)] // one call's identity, as the two callers have it
    pub(super) fn insert_info(
        &self,
        now: Instant,
        call: CallHandle,
        call_id: &str,
        direction: &'static str,
        from: String,
        to: String,
        agent: &super::AgentSpec,
    ) {
        let info = CallInfo {
            id: call.0,
            record_id: self.record_id(call),
            call_id: call_id.to_string(),
            direction,
            from,
            to,
            agent: agent.name.clone(),
            agent_version: agent.version,
            state: "ringing",
            codec: None,
            on_hold: false,
            started_at: self.unix(now).as_secs_f64(),
            answered_at: None,
            ended_at: None,
            end_reason: None,
            dtmf: Vec::new(),
            recording: None,
            media: None,
            transcript: None,
            turns: Vec::new(),
            tool_calls: Vec::new(),
            backend_switches: Vec::new(),
            dsp: None,
            transfer: None,
            barge_ins: 0,
            node: None,
        };
        let mut record = crate::records::CallRecord::started(
            self.record_id(call),
            info.call_id.clone(),
            info.from.clone(),
            info.to.clone(),
            if direction == "outbound" {
                crate::records::Direction::Outbound
            } else {
                crate::records::Direction::Inbound
            },
            agent.name.clone(),
            self.unix_ms(now),
        );
        record.agent_version = agent.version;
        self.table.insert(info);
        metrics::Metrics::inc(&metrics::Metrics::global().calls_started);
        self.record(crate::records::RecordOp::Started(Box::new(record)));
    }

    pub(super) fn update_info(&self, call: CallHandle, f: impl FnOnce(&mut CallInfo)) {
        self.table.update(call, f);
    }

    /// Keeps at most `ended_history` ended calls in the API table.
    pub(super) fn trim_table(&self) {
        self.table.trim_ended(self.ended_history);
    }
}
