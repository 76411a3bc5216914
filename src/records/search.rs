//! Read queries over the `calls` table for the API and the console: a filtered page of
//! finished records ([`RecordReader::search`]) and per-agent, per-day figures
//! ([`RecordReader::analytics`]). Both are SQL over indexed columns (`started_at`,
//! `agent, started_at`), so they stay fast with hundreds of thousands of records.

use std::collections::BTreeMap;

use serde::Serialize;

use super::db::{DbError, Dialect, ToValue, Value as SqlValue};
use super::store::{COLUMNS, query_many, sql};
use super::{CallAnalysis, CallRecord, Direction, RecordReader, RecordsError, TurnLatency, UnixMs};

/// Which finished records [`RecordReader::search`] returns. Every field narrows; none set:
/// every finished record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordFilter {
    /// Text found (case-insensitively for ASCII) in the record's id, Call-ID, From, To,
    /// agent, end reason or analysis (summary and outcome).
    pub q: Option<String>,
    /// Only this agent's calls.
    pub agent: Option<String>,
    /// Only inbound or outbound calls.
    pub direction: Option<Direction>,
    /// Only answered (`true`) or unanswered (`false`) calls.
    pub answered: Option<bool>,
    /// Only calls started at or after this.
    pub since: Option<UnixMs>,
    /// Only calls started before this.
    pub until: Option<UnixMs>,
}

/// The longest search text taken.
pub const MAX_QUERY_LEN: usize = 200;

/// Distinct values counted per outcome field in [`DayAgent::outcomes`]; the rest count as
/// [`OTHER_OUTCOME`].
pub const MAX_OUTCOME_VALUES: usize = 20;

/// The bucket of outcome values past [`MAX_OUTCOME_VALUES`].
pub const OTHER_OUTCOME: &str = "(other)";

/// One agent's calls on one day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DayAgent {
    /// The day (`YYYY-MM-DD`) in the query's time zone, by the call's start.
    pub day: String,
    /// The agent.
    pub agent: String,
    /// Finished calls.
    pub calls: u64,
    /// Of those, answered.
    pub answered: u64,
    /// `answered / calls`.
    pub answer_rate: f64,
    /// Seconds from answer to end, all answered calls together.
    pub talk_seconds: f64,
    /// Mean seconds from answer to end of an answered call.
    pub mean_talk_seconds: Option<f64>,
    /// Conversational turns (AI agents).
    pub turns: u64,
    /// Median of the turns' response latency (caller's speech end → first reply RTP), ms.
    pub latency_p50_ms: Option<u64>,
    /// 95th percentile of it, ms.
    pub latency_p95_ms: Option<u64>,
    /// Times callers cut the agent short.
    pub barge_ins: u64,
    /// Switches to a fallback backend during calls.
    pub failovers: u64,
    /// Calls with a post-call analysis that succeeded.
    pub analyzed: u64,
    /// Per outcome field (top-level, string, boolean or integer values), the count of each
    /// value.
    pub outcomes: BTreeMap<String, BTreeMap<String, u64>>,
}

impl RecordReader {
    /// Finished records (ended, or cut off by a crash) matching `filter`, newest first:
    /// `limit` of them after skipping `offset`.
    pub fn search(
        &self,
        filter: &RecordFilter,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<CallRecord>, RecordsError> {
        self.with_conn(|conn, path| {
            let (clause, mut args) = where_clause(filter, conn.dialect());
            args.push(SqlValue::Int(i64::from(limit)));
            args.push(SqlValue::Int(i64::from(offset)));
            let query = format!(
                "SELECT {COLUMNS} FROM calls WHERE {clause} \
                 ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?"
            );
            query_many(conn, path, "search", &query, &as_params(&args))
        })
    }

    /// Answered calls started in `[since, before)` that have a transcript and no post-call
    /// analysis yet: the analyses a stop interrupted (with [`super::UNFINISHED_END_REASON`]
    /// records among them, cut off by a crash); oldest first, at most `limit`.
    ///
    /// `node`: in a cluster, only that node's calls (their transcripts are files on its
    /// disk, and each node resumes its own).
    pub fn pending_analyses(
        &self,
        since: UnixMs,
        before: UnixMs,
        limit: u32,
        node: Option<&str>,
    ) -> Result<Vec<CallRecord>, RecordsError> {
        let only_node = if node.is_some() { " AND node = ?4" } else { "" };
        let query = format!(
            "SELECT {COLUMNS} FROM calls WHERE analysis IS NULL AND transcript_path IS NOT NULL \
             AND answered_at IS NOT NULL AND started_at >= ?1 AND started_at < ?2{only_node} \
             ORDER BY started_at, id LIMIT ?3"
        );
        let (since, before) = (since.get(), before.get());
        let mut args: Vec<&dyn ToValue> = vec![&since, &before, &limit];
        if let Some(n) = &node {
            args.push(n);
        }
        self.with_conn(|conn, path| query_many(conn, path, "pending analyses", &query, &args))
    }

    /// Per agent and per day (in `tz`), the figures of finished calls started in
    /// `[since, until)`, only `agent`'s when given; ordered by day, then agent.
    pub fn analytics(
        &self,
        since: UnixMs,
        until: UnixMs,
        agent: Option<&str>,
        tz: &jiff::tz::TimeZone,
    ) -> Result<Vec<DayAgent>, RecordsError> {
        const OP: &str = "analytics";
        let filter = RecordFilter {
            agent: agent.map(str::to_owned),
            since: Some(since),
            until: Some(until),
            ..RecordFilter::default()
        };
        self.with_conn(|conn, path| {
            let (clause, args) = where_clause(&filter, conn.dialect());
            let query = format!(
                "SELECT agent, started_at, answered_at, ended_at, turn_latencies, \
                 backend_switches, barge_ins, analysis FROM calls WHERE {clause}"
            );
            let mut acc: BTreeMap<(String, String), Acc> = BTreeMap::new();
            conn.query_map(&query, &as_params(&args), |row| {
                let r = RowFigures {
                    agent: row.get(0)?,
                    started_at: row.get(1)?,
                    answered_at: row.get(2)?,
                    ended_at: row.get(3)?,
                    turns: row.get(4)?,
                    switches: row.get(5)?,
                    barge_ins: row.get(6)?,
                    analysis: row.get(7)?,
                };
                let day = day_of(r.started_at, tz);
                acc.entry((day, r.agent.clone())).or_default().add(&r);
                Ok::<(), DbError>(())
            })
            .map_err(sql(path, OP))?;
            Ok(acc
                .into_iter()
                .map(|((day, agent), a)| a.finish(day, agent))
                .collect())
        })
    }
}

/// `values` as statement parameters.
fn as_params(values: &[SqlValue]) -> Vec<&dyn ToValue> {
    values.iter().map(|v| v as &dyn ToValue).collect()
}

/// The `WHERE` of a filter over finished records, and its arguments in order. SQLite's
/// `LIKE` ignores ASCII case; PostgreSQL's `ILIKE` does the same.
fn where_clause(f: &RecordFilter, dialect: Dialect) -> (String, Vec<SqlValue>) {
    let like = match dialect {
        Dialect::Sqlite => "LIKE",
        Dialect::Postgres => "ILIKE",
    };
    let mut parts = vec!["(ended_at IS NOT NULL OR unfinished = 1)".to_owned()];
    let mut args = Vec::new();
    if let Some(q) = f.q.as_deref().filter(|q| !q.is_empty()) {
        let pattern = format!("%{}%", escape_like(q));
        let columns = [
            "id",
            "call_id",
            "from_uri",
            "to_uri",
            "agent",
            "end_reason",
            "analysis",
        ];
        let any: Vec<String> = columns
            .iter()
            .map(|c| format!("{c} {like} ? ESCAPE '\\'"))
            .collect();
        parts.push(format!("({})", any.join(" OR ")));
        // The same pattern for each of the columns.
        args.extend(std::iter::repeat_n(SqlValue::Text(pattern), 7));
    }
    if let Some(a) = &f.agent {
        parts.push("agent = ?".into());
        args.push(SqlValue::Text(a.clone()));
    }
    if let Some(d) = f.direction {
        parts.push("direction = ?".into());
        args.push(SqlValue::Text(d.as_str().into()));
    }
    match f.answered {
        Some(true) => parts.push("answered_at IS NOT NULL".into()),
        Some(false) => parts.push("answered_at IS NULL".into()),
        None => {}
    }
    if let Some(s) = f.since {
        parts.push("started_at >= ?".into());
        args.push(SqlValue::Int(s.0));
    }
    if let Some(u) = f.until {
        parts.push("started_at < ?".into());
        args.push(SqlValue::Int(u.0));
    }
    (parts.join(" AND "), args)
}

/// `text` with LIKE's wildcards (and the escape character) escaped with `\`.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `YYYY-MM-DD` of a Unix time in ms, in `tz`.
fn day_of(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(ts) => tz.to_datetime(ts).date().to_string(),
        Err(_) => "invalid".into(),
    }
}

/// The columns analytics reads of one row.
struct RowFigures {
    agent: String,
    started_at: i64,
    answered_at: Option<i64>,
    ended_at: Option<i64>,
    turns: String,
    switches: String,
    barge_ins: u32,
    analysis: Option<String>,
}

/// Running figures of one (day, agent).
#[derive(Default)]
struct Acc {
    calls: u64,
    answered: u64,
    talk_ms: i64,
    latencies: Vec<u64>,
    turns: u64,
    barge_ins: u64,
    failovers: u64,
    analyzed: u64,
    outcomes: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Acc {
    fn add(&mut self, r: &RowFigures) {
        self.calls += 1;
        if let Some(a) = r.answered_at {
            self.answered += 1;
            if let Some(e) = r.ended_at {
                self.talk_ms += (e - a).max(0);
            }
        }
        // A row that does not parse counts as a call without turns: the figures of the
        // others stay right (the record itself reports the damage when read).
        if let Ok(turns) = serde_json::from_str::<Vec<TurnLatency>>(&r.turns) {
            self.turns += turns.len() as u64;
            self.latencies
                .extend(turns.iter().filter_map(TurnLatency::response_latency_ms));
        }
        if let Ok(switches) = serde_json::from_str::<Vec<serde_json::Value>>(&r.switches) {
            self.failovers += switches.len() as u64;
        }
        self.barge_ins += u64::from(r.barge_ins);
        let analysis = r
            .analysis
            .as_deref()
            .and_then(|a| serde_json::from_str::<CallAnalysis>(a).ok());
        if let Some(a) = analysis.filter(|a| a.error.is_none()) {
            self.analyzed += 1;
            if let Some(serde_json::Value::Object(fields)) = &a.outcome {
                for (key, value) in fields {
                    let v = match value {
                        serde_json::Value::String(s) => s.clone(),
                        serde_json::Value::Bool(b) => b.to_string(),
                        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                        _ => continue,
                    };
                    let counts = self.outcomes.entry(key.clone()).or_default();
                    let v = if counts.contains_key(&v) || counts.len() < MAX_OUTCOME_VALUES {
                        v
                    } else {
                        OTHER_OUTCOME.to_owned()
                    };
                    *counts.entry(v).or_default() += 1;
                }
            }
        }
    }

    fn finish(mut self, day: String, agent: String) -> DayAgent {
        self.latencies.sort_unstable();
        let talk_seconds = self.talk_ms as f64 / 1000.0;
        DayAgent {
            day,
            agent,
            calls: self.calls,
            answered: self.answered,
            answer_rate: if self.calls == 0 {
                0.0
            } else {
                self.answered as f64 / self.calls as f64
            },
            talk_seconds,
            mean_talk_seconds: (self.answered > 0).then(|| talk_seconds / self.answered as f64),
            turns: self.turns,
            latency_p50_ms: percentile(&self.latencies, 50),
            latency_p95_ms: percentile(&self.latencies, 95),
            barge_ins: self.barge_ins,
            failovers: self.failovers,
            analyzed: self.analyzed,
            outcomes: self.outcomes,
        }
    }
}

/// The nearest-rank `p`th percentile of sorted values.
fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), Some(50));
        assert_eq!(percentile(&v, 95), Some(95));
        assert_eq!(percentile(&[7], 95), Some(7));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("50%_a\\b"), "50\\%\\_a\\\\b");
    }
}
