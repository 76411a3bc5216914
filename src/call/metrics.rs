//! Process-wide call metrics, exposed by `GET /metrics` in the Prometheus text format
//! (version 0.0.4): call counters, AI-backend failures, barge-ins, tool calls, and histograms
//! of each conversational turn's latency.
//!
//! Counters are relaxed atomics: updating one costs an uncontended atomic add, so the call
//! layer and the media workers record without locks.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (ms) of the latency histogram buckets (`+Inf` is implied).
pub const LATENCY_BUCKETS_MS: [u64; 12] =
    [20, 40, 60, 100, 200, 300, 500, 750, 1000, 1500, 2000, 5000];

/// A latency histogram (cumulative buckets when rendered).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, ms: u64) {
        if let Some(i) = LATENCY_BUCKETS_MS.iter().position(|b| ms <= *b)
            && let Some(b) = self.buckets.get(i)
        {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, bound) in self.buckets.iter().zip(LATENCY_BUCKETS_MS) {
            cumulative += b.load(Ordering::Relaxed);
            // Seconds, as Prometheus conventions ask.
            let le = bound as f64 / 1000.0;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The process's call metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Calls started (inbound offered or outbound placed).
    pub calls_started: AtomicU64,
    /// Calls answered.
    pub calls_answered: AtomicU64,
    /// Calls ended.
    pub calls_ended: AtomicU64,
    /// Calls refused because the source was not allowed for the agent (403).
    pub calls_forbidden: AtomicU64,
    /// AI backend connections that failed before or during a call.
    pub backend_failures: AtomicU64,
    /// Mid-call switches to the next backend of an agent's chain.
    pub backend_switches: AtomicU64,
    /// Barge-ins handled (agent audio flushed, response truncated).
    pub barge_ins: AtomicU64,
    /// Of those, decided by voxline's own VAD.
    pub local_barge_ins: AtomicU64,
    /// Caller turns ended by voxline's own VAD (local turn-taking).
    pub local_turns: AtomicU64,
    /// Caller frames through the voice chain.
    pub dsp_frames: AtomicU64,
    /// Time in echo cancellation, ns.
    pub dsp_aec_ns: AtomicU64,
    /// Time in noise suppression, ns.
    pub dsp_ns_ns: AtomicU64,
    /// Time in the VAD, ns.
    pub dsp_vad_ns: AtomicU64,
    /// Tool calls run.
    pub tool_calls: AtomicU64,
    /// Tool calls that returned an error to the model.
    pub tool_errors: AtomicU64,
    /// Caller speech end → first RTP packet of the reply.
    pub turn_response: Histogram,
    /// Caller speech end → first audio of the reply from the backend.
    pub turn_backend: Histogram,
    /// Cascaded: last audio to the STT → its final transcript.
    pub turn_stt: Histogram,
    /// Cascaded: LLM request → first token.
    pub turn_llm: Histogram,
    /// Cascaded: first TTS request → first audio.
    pub turn_tts: Histogram,
    /// Turns that ended without a reply (the caller spoke again, hang-up, error).
    pub turns_unanswered: AtomicU64,
}

impl Metrics {
    /// The process's metrics.
    pub fn global() -> &'static Metrics {
        static M: OnceLock<Metrics> = OnceLock::new();
        M.get_or_init(Metrics::default)
    }

    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a call's voice chain work since its last report (`now - before`).
    pub fn dsp(&self, before: &crate::dsp::chain::ChainStats, now: &crate::dsp::chain::ChainStats) {
        let ns = |a: std::time::Duration, b: std::time::Duration| {
            u64::try_from(a.saturating_sub(b).as_nanos()).unwrap_or(u64::MAX)
        };
        self.dsp_frames
            .fetch_add(now.frames.saturating_sub(before.frames), Ordering::Relaxed);
        self.dsp_aec_ns
            .fetch_add(ns(now.time.aec, before.time.aec), Ordering::Relaxed);
        self.dsp_ns_ns
            .fetch_add(ns(now.time.ns, before.time.ns), Ordering::Relaxed);
        self.dsp_vad_ns
            .fetch_add(ns(now.time.vad, before.time.vad), Ordering::Relaxed);
    }

    /// Records a finished turn.
    pub fn turn(&self, t: &crate::records::TurnLatency) {
        for (h, v) in [
            (&self.turn_stt, t.stt_final_ms),
            (&self.turn_llm, t.llm_first_token_ms),
            (&self.turn_tts, t.tts_first_byte_ms),
        ] {
            if let Some(ms) = v {
                h.observe(ms);
            }
        }
        match (t.response_latency_ms(), t.backend_latency_ms()) {
            (Some(r), b) => {
                self.turn_response.observe(r);
                if let Some(b) = b {
                    self.turn_backend.observe(b);
                }
            }
            (None, Some(b)) => self.turn_backend.observe(b),
            (None, None) => Metrics::inc(&self.turns_unanswered),
        }
    }

    /// The Prometheus text exposition, with `active_calls` as a gauge.
    pub fn render(&self, active_calls: u64) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &str, &AtomicU64); 13] = [
            (
                "voxline_calls_started_total",
                "Calls started.",
                &self.calls_started,
            ),
            (
                "voxline_calls_answered_total",
                "Calls answered.",
                &self.calls_answered,
            ),
            (
                "voxline_calls_ended_total",
                "Calls ended.",
                &self.calls_ended,
            ),
            (
                "voxline_calls_forbidden_total",
                "Calls refused with 403: source not allowed for the agent.",
                &self.calls_forbidden,
            ),
            (
                "voxline_backend_failures_total",
                "AI backend connections that failed before or during a call.",
                &self.backend_failures,
            ),
            (
                "voxline_backend_switches_total",
                "Mid-call switches to the next backend of an agent's chain.",
                &self.backend_switches,
            ),
            (
                "voxline_barge_ins_total",
                "Barge-ins handled.",
                &self.barge_ins,
            ),
            (
                "voxline_local_barge_ins_total",
                "Barge-ins decided by voxline's own VAD.",
                &self.local_barge_ins,
            ),
            (
                "voxline_local_turns_total",
                "Caller turns ended by voxline's own VAD.",
                &self.local_turns,
            ),
            (
                "voxline_dsp_frames_total",
                "Caller frames through the voice chain.",
                &self.dsp_frames,
            ),
            (
                "voxline_tool_calls_total",
                "Tool calls run.",
                &self.tool_calls,
            ),
            (
                "voxline_tool_errors_total",
                "Tool calls answered with an error.",
                &self.tool_errors,
            ),
            (
                "voxline_turns_unanswered_total",
                "Caller turns that got no reply.",
                &self.turns_unanswered,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", c.load(Ordering::Relaxed));
        }
        let stage = "voxline_dsp_stage_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {stage} CPU time in each stage of the voice chain."
        );
        let _ = writeln!(out, "# TYPE {stage} counter");
        for (name, c) in [
            ("echo_cancellation", &self.dsp_aec_ns),
            ("noise_suppression", &self.dsp_ns_ns),
            ("vad", &self.dsp_vad_ns),
        ] {
            let secs = c.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{stage}{{stage=\"{name}\"}} {secs}");
        }
        let _ = writeln!(out, "# HELP voxline_active_calls Calls in progress.");
        let _ = writeln!(out, "# TYPE voxline_active_calls gauge");
        let _ = writeln!(out, "voxline_active_calls {active_calls}");
        self.turn_response.render(
            &mut out,
            "voxline_turn_response_latency_seconds",
            "Caller speech end to the first RTP packet of the agent's reply.",
        );
        self.turn_backend.render(
            &mut out,
            "voxline_turn_backend_latency_seconds",
            "Caller speech end to the first audio of the reply from the AI backend.",
        );
        self.turn_stt.render(
            &mut out,
            "voxline_turn_stt_final_seconds",
            "Cascaded agents: the utterance's last audio sent to the STT to its final transcript.",
        );
        self.turn_llm.render(
            &mut out,
            "voxline_turn_llm_first_token_seconds",
            "Cascaded agents: the LLM request to its first token.",
        );
        self.turn_tts.render(
            &mut out,
            "voxline_turn_tts_first_byte_seconds",
            "Cascaded agents: the reply's first TTS request to its first audio.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        for ms in [15, 35, 35, 450, 9000] {
            m.turn_response.observe(ms);
        }
        Metrics::inc(&m.calls_started);
        let text = m.render(3);
        assert!(text.contains("voxline_calls_started_total 1\n"), "{text}");
        assert!(text.contains("voxline_active_calls 3\n"));
        let r = "voxline_turn_response_latency_seconds";
        assert!(
            text.contains(&format!("{r}_bucket{{le=\"0.02\"}} 1\n")),
            "{text}"
        );
        assert!(text.contains(&format!("{r}_bucket{{le=\"0.04\"}} 3\n")));
        assert!(text.contains(&format!("{r}_bucket{{le=\"0.3\"}} 3\n")));
        assert!(text.contains(&format!("{r}_bucket{{le=\"0.5\"}} 4\n")));
        assert!(text.contains(&format!("{r}_bucket{{le=\"5\"}} 4\n")));
        assert!(text.contains(&format!("{r}_bucket{{le=\"+Inf\"}} 5\n")));
        assert!(text.contains(&format!("{r}_sum 9.535\n")));
        assert!(text.contains(&format!("{r}_count 5\n")));
    }

    #[test]
    fn a_turn_without_reply_is_counted_as_unanswered() {
        let m = Metrics::default();
        m.turn(&crate::records::TurnLatency {
            caller_speech_end_ms: 100,
            first_backend_audio_ms: None,
            first_rtp_out_ms: None,
            stt_final_ms: None,
            llm_first_token_ms: None,
            tts_first_byte_ms: None,
        });
        m.turn(&crate::records::TurnLatency {
            caller_speech_end_ms: 100,
            first_backend_audio_ms: Some(400),
            first_rtp_out_ms: Some(420),
            stt_final_ms: None,
            llm_first_token_ms: None,
            tts_first_byte_ms: None,
        });
        assert_eq!(m.turns_unanswered.load(Ordering::Relaxed), 1);
        assert_eq!(m.turn_response.count(), 1);
        assert_eq!(m.turn_backend.count(), 1);
    }
}
