//! Caller memory: per (agent, caller number), what the agent should know the next time this
//! caller rings — the facts it stored with the `remember` tool, and the summary of the last
//! call (from the post-call analysis). The next call's instructions include it through
//! `{{memory}}`; `GET/DELETE /memory/{number}` serve privacy requests.
//!
//! A fact is written the moment the tool runs (a crash later in the call loses nothing);
//! the summary when the analysis has finished. The caller is the number (or SIP user) as the
//! call layer gives it, matched exactly.

use std::path::{Path, PathBuf};

use super::db::{Db, DbError, Row, StoreLocation, params};
use serde::{Deserialize, Serialize};

use super::{RecordsError, UnixMs};

/// The `memory` table (a migration of the records database).
pub(super) const MIGRATION: &str = "
    CREATE TABLE memory (
        agent       TEXT NOT NULL,
        caller      TEXT NOT NULL,
        summary     TEXT,
        facts       TEXT NOT NULL DEFAULT '[]',
        updated_at  INTEGER NOT NULL,
        last_record TEXT,
        PRIMARY KEY (agent, caller)
    );
    CREATE INDEX memory_caller ON memory (caller);
";

/// The most facts kept per (agent, caller): the oldest go first.
pub const MAX_FACTS: usize = 20;

/// The longest fact kept, in bytes (a longer one is cut at a character boundary).
pub const MAX_FACT_LEN: usize = 300;

/// The longest summary kept, in bytes.
pub const MAX_SUMMARY_LEN: usize = 2000;

/// One fact the agent stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fact {
    /// The fact, as the agent worded it.
    pub text: String,
    /// When it was stored.
    pub at: UnixMs,
    /// The record of the call it came from.
    pub record_id: String,
}

/// What one agent remembers of one caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Memory {
    /// The agent's name.
    pub agent: String,
    /// The caller.
    pub caller: String,
    /// The last analysed call's summary.
    pub summary: Option<String>,
    /// The facts, oldest first (at most [`MAX_FACTS`]).
    pub facts: Vec<Fact>,
    /// When it last changed.
    pub updated_at: UnixMs,
    /// The record of the last call that changed it.
    pub last_record: Option<String>,
}

impl Memory {
    /// The text `{{memory}}` stands for: the summary and the facts, or an empty string.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(s) = &self.summary {
            out.push_str("Summary of the last call: ");
            out.push_str(s);
        }
        if !self.facts.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str("What you noted about this caller:");
            for f in &self.facts {
                out.push_str("\n- ");
                out.push_str(&f.text);
            }
        }
        out
    }
}

/// The memory table, through its own read-write connection (WAL shares the file with the
/// record writer). Blocking: from async code, use it inside `spawn_blocking`.
#[derive(Debug)]
pub struct MemoryStore {
    conn: Db,
    path: PathBuf,
    redactor: std::sync::Arc<super::redact::Redactor>,
}

impl MemoryStore {
    /// Opens the memory of the records database `path` (created and migrated by the record
    /// store).
    pub fn open(at: &StoreLocation) -> Result<MemoryStore, RecordsError> {
        Ok(MemoryStore {
            conn: super::store::open_read_write(at, "open memory")?,
            path: at.name(),
            redactor: Default::default(),
        })
    }

    /// Redacts facts and summaries with `redactor` before they are stored.
    pub fn set_redactor(&mut self, redactor: std::sync::Arc<super::redact::Redactor>) {
        self.redactor = redactor;
    }

    fn sql(&self, op: &'static str) -> impl FnOnce(DbError) -> RecordsError + '_ {
        move |source| RecordsError::Database {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// What `agent` remembers of `caller`, if anything.
    pub fn get(&self, agent: &str, caller: &str) -> Result<Option<Memory>, RecordsError> {
        self.conn
            .query_opt(
                "SELECT agent, caller, summary, facts, updated_at, last_record FROM memory \
                 WHERE agent = ?1 AND caller = ?2",
                params![agent, caller],
                row,
            )
            .map_err(self.sql("memory get"))?
            .map(|r| r.decode(&self.path))
            .transpose()
    }

    /// What every agent remembers of `caller`, by agent.
    pub fn for_caller(&self, caller: &str) -> Result<Vec<Memory>, RecordsError> {
        let rows = self
            .conn
            .query_map(
                "SELECT agent, caller, summary, facts, updated_at, last_record FROM memory \
                 WHERE caller = ?1 ORDER BY agent",
                params![caller],
                row,
            )
            .map_err(self.sql("memory of caller"))?;
        rows.into_iter().map(|r| r.decode(&self.path)).collect()
    }

    /// Forgets `caller` for every agent; returns how many agents had a memory of them.
    pub fn forget(&mut self, caller: &str) -> Result<usize, RecordsError> {
        self.conn
            .execute("DELETE FROM memory WHERE caller = ?1", params![caller])
            .map_err(self.sql("memory forget"))
    }

    /// Adds a fact (cut to [`MAX_FACT_LEN`]; an exact repeat moves to the end instead of
    /// being kept twice; beyond [`MAX_FACTS`] the oldest go).
    pub fn add_fact(
        &mut self,
        agent: &str,
        caller: &str,
        fact: &str,
        record_id: &str,
        now: UnixMs,
    ) -> Result<(), RecordsError> {
        let redacted = self.redactor.text(fact.trim()).into_owned();
        let text = cut(&redacted, MAX_FACT_LEN).to_owned();
        self.change(agent, caller, record_id, now, |m| {
            m.facts.retain(|f| f.text != text);
            m.facts.push(Fact {
                text,
                at: now,
                record_id: record_id.to_owned(),
            });
            let excess = m.facts.len().saturating_sub(MAX_FACTS);
            m.facts.drain(..excess);
        })
    }

    /// Replaces the summary (cut to [`MAX_SUMMARY_LEN`]).
    pub fn set_summary(
        &mut self,
        agent: &str,
        caller: &str,
        summary: &str,
        record_id: &str,
        now: UnixMs,
    ) -> Result<(), RecordsError> {
        let redacted = self.redactor.text(summary.trim()).into_owned();
        let text = cut(&redacted, MAX_SUMMARY_LEN).to_owned();
        self.change(agent, caller, record_id, now, |m| m.summary = Some(text))
    }

    /// Reads, changes and writes one memory in one transaction.
    fn change(
        &mut self,
        agent: &str,
        caller: &str,
        record_id: &str,
        now: UnixMs,
        f: impl FnOnce(&mut Memory),
    ) -> Result<(), RecordsError> {
        let path = self.path.clone();
        let sql = |op: &'static str| super::store::sql(&path, op);
        self.conn.transaction(sql("memory commit"), |tx| {
            let current = tx
                .query_opt(
                    &format!(
                        "SELECT agent, caller, summary, facts, updated_at, last_record FROM memory \
                     WHERE agent = ?1 AND caller = ?2{}",
                        tx.for_update()
                    ),
                    params![agent, caller],
                    row,
                )
                .map_err(sql("memory read"))?
                .map(|r| r.decode(&path))
                .transpose()?;
            let mut m = current.unwrap_or_else(|| Memory {
                agent: agent.to_owned(),
                caller: caller.to_owned(),
                summary: None,
                facts: Vec::new(),
                updated_at: now,
                last_record: None,
            });
            f(&mut m);
            m.updated_at = now;
            m.last_record = Some(record_id.to_owned());
            let facts = serde_json::to_string(&m.facts).map_err(|e| RecordsError::Encode {
                path: path.clone(),
                op: "memory write",
                id: format!("{agent}/{caller}"),
                column: "facts",
                source: e,
            })?;
            tx.execute(
                "INSERT INTO memory (agent, caller, summary, facts, updated_at, last_record) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(agent, caller) DO UPDATE SET \
             summary = excluded.summary, facts = excluded.facts, \
             updated_at = excluded.updated_at, last_record = excluded.last_record",
                params![agent, caller, m.summary, facts, now.0, m.last_record],
            )
            .map_err(sql("memory write"))?;
            Ok(())
        })
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct RawMemory {
    agent: String,
    caller: String,
    summary: Option<String>,
    facts: String,
    updated_at: i64,
    last_record: Option<String>,
}

fn row(r: &Row) -> Result<RawMemory, DbError> {
    Ok(RawMemory {
        agent: r.get(0)?,
        caller: r.get(1)?,
        summary: r.get(2)?,
        facts: r.get(3)?,
        updated_at: r.get(4)?,
        last_record: r.get(5)?,
    })
}

impl RawMemory {
    fn decode(self, path: &Path) -> Result<Memory, RecordsError> {
        let facts = serde_json::from_str(&self.facts).map_err(|e| RecordsError::CorruptRow {
            path: path.to_path_buf(),
            op: "memory read",
            id: format!("{}/{}", self.agent, self.caller),
            column: "facts",
            reason: e.to_string(),
        })?;
        Ok(Memory {
            agent: self.agent,
            caller: self.caller,
            summary: self.summary,
            facts,
            updated_at: UnixMs(self.updated_at),
            last_record: self.last_record,
        })
    }
}
