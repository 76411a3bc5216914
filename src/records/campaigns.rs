//! Outbound campaigns, durable: a campaign's settings and its targets (a number and
//! variables each) with where each stands. The runner (`crate::campaigns`) claims due targets
//! one at a time ([`CampaignStore::claim`]: `pending` → `dialing`, one attempt counted) and
//! reports each attempt's result ([`CampaignStore::finish_attempt`]), which makes the target
//! `pending` again for a retry or final (`done`, `failed`), the final state and its
//! `campaign.target.done` webhook event in one transaction.
//!
//! After a crash, targets left `dialing` are put back by [`CampaignStore::recover`]: the
//! attempt stays counted, its result is `interrupted`, and it is retried only when attempts
//! remain (a call that was in progress may have been answered, so a crash never dials a
//! target more often than `max_attempts`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::db::{Db, DbError, Row, StoreLocation, params};
use serde::{Deserialize, Serialize};

use super::outbox::{EventType, enqueue_event};
use super::{RecordsError, UnixMs};

/// The `campaigns` and `campaign_targets` tables (a migration of the records database).
pub(super) const MIGRATION: &str = "
    CREATE TABLE campaigns (
        id         TEXT PRIMARY KEY NOT NULL,
        name       TEXT NOT NULL,
        agent      TEXT NOT NULL,
        state      TEXT NOT NULL,
        settings   TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE campaign_targets (
        campaign        TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        number          TEXT NOT NULL,
        variables       TEXT NOT NULL DEFAULT '{}',
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_result     TEXT,
        history         TEXT NOT NULL DEFAULT '[]',
        updated_at      INTEGER NOT NULL,
        PRIMARY KEY (campaign, seq)
    );
    CREATE INDEX campaign_targets_due ON campaign_targets (campaign, state, next_attempt_at);
";

/// Migration 18: the campaign's pacing, kept in its row so that every node dialing it
/// shares it: the theoretical arrival time (GCRA) of its next call, in Unix ms.
pub(super) const PACING_MIGRATION: &str = "
    ALTER TABLE campaigns ADD COLUMN next_call_at INTEGER NOT NULL DEFAULT 0;
";

/// Migration 20: the cluster node dialing each target (recovery after a restart or a death
/// takes that node's targets only).
pub(super) const TARGET_NODE_MIGRATION: &str = "
    ALTER TABLE campaign_targets ADD COLUMN node TEXT;
";

/// Migration 21: the trunk each dialing target's call goes through, and each trunk's pace
/// for campaign calls (GCRA, like `campaigns.next_call_at`), so that a trunk's limits hold
/// for the campaign calls of every node.
pub(super) const TRUNK_LIMITS_MIGRATION: &str = "
    ALTER TABLE campaign_targets ADD COLUMN trunk TEXT;
    CREATE INDEX campaign_targets_trunk_dialing ON campaign_targets (trunk) WHERE state = 'dialing';
    CREATE TABLE trunk_pacing (
        trunk        TEXT PRIMARY KEY NOT NULL,
        next_call_at INTEGER NOT NULL
    );
";

/// A trunk's limits as campaign claims keep them across the cluster: `[[trunk]]`'s
/// `max_calls` and `max_calls_per_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrunkLimits {
    /// The trunk's name.
    pub name: String,
    /// At most this many campaign targets dialing through it at once, on all nodes.
    pub max_calls: Option<u32>,
    /// At most this many new campaign calls a second through it, on all nodes.
    pub calls_per_s: Option<f64>,
}

/// The GCRA step shared by the campaign's and the trunk's pace: `Some(next)` (the schedule
/// after this call) if a call may start at `now` with `tat` the scheduled time, `None` if
/// not yet. A call up to half an interval late keeps the schedule.
fn pace(tat: i64, now: i64, calls_per_s: f64) -> Option<i64> {
    let interval = if calls_per_s > 0.0 {
        (1000.0 / calls_per_s).round().max(1.0) as i64
    } else {
        i64::MAX / 4
    };
    let tat = tat.max(now.saturating_sub(interval / 2));
    (tat <= now).then(|| tat.saturating_add(interval))
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptResult {
    /// The call was answered (the target is done).
    Answered,
    /// 486 Busy Here or 600 Busy Everywhere.
    Busy,
    /// Not answered within the ring timeout, or 480/408/487.
    NoAnswer,
    /// Any other failure (a 4xx-6xx, no route, no response).
    Failed,
    /// voxline stopped while the attempt was in progress.
    Interrupted,
}

impl AttemptResult {
    /// Its name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Answered => "answered",
            AttemptResult::Busy => "busy",
            AttemptResult::NoAnswer => "no_answer",
            AttemptResult::Failed => "failed",
            AttemptResult::Interrupted => "interrupted",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<AttemptResult> {
        [
            AttemptResult::Answered,
            AttemptResult::Busy,
            AttemptResult::NoAnswer,
            AttemptResult::Failed,
            AttemptResult::Interrupted,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Where a campaign stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    /// Dialing (within its window).
    Running,
    /// Stopped by the API; resumes with `resume`.
    Paused,
    /// Stopped for good; its pending targets are cancelled.
    Cancelled,
    /// Every target is final.
    Done,
}

impl CampaignState {
    /// Its name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignState::Running => "running",
            CampaignState::Paused => "paused",
            CampaignState::Cancelled => "cancelled",
            CampaignState::Done => "done",
        }
    }

    fn parse(s: &str) -> Option<CampaignState> {
        [
            CampaignState::Running,
            CampaignState::Paused,
            CampaignState::Cancelled,
            CampaignState::Done,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Waiting for its (next) attempt.
    Pending,
    /// A call is in progress.
    Dialing,
    /// Answered.
    Done,
    /// Given up: a result not retried, or no attempts left.
    Failed,
    /// The campaign was cancelled before it was done.
    Cancelled,
}

impl TargetState {
    /// Its name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Pending => "pending",
            TargetState::Dialing => "dialing",
            TargetState::Done => "done",
            TargetState::Failed => "failed",
            TargetState::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<TargetState> {
        [
            TargetState::Pending,
            TargetState::Dialing,
            TargetState::Done,
            TargetState::Failed,
            TargetState::Cancelled,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// A calling window: days and hours, in a time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CallingWindow {
    /// From (`"09:00"`), inclusive.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub start: String,
    /// Until (`"17:30"`), exclusive; before `start` for a window across midnight.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$")]
    pub end: String,
    /// An IANA time zone (`"Europe/Berlin"`).
    pub timezone: String,
    /// The weekdays (`"mon"` … `"sun"`) on which the window opens; all when empty.
    #[serde(default)]
    #[schema(value_type = Vec<String>, pattern = "^(mon|tue|wed|thu|fri|sat|sun)$")]
    pub days: Vec<String>,
}

/// When and how often a target is tried again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RetryPolicy {
    /// The results that are retried (`busy`, `no_answer`, `failed`; `interrupted` always
    /// is while attempts remain).
    pub on: Vec<AttemptResult>,
    /// The most attempts per target, the first included (1: no retry).
    pub max_attempts: u32,
    /// The wait before the second attempt; doubled for each further one.
    pub backoff_s: u32,
}

/// A campaign's settings (checked by the campaign layer before they get here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignSettings {
    /// The trunk the calls go through (`None`: targets are SIP URIs, dialled directly).
    pub trunk: Option<String>,
    /// The most calls of this campaign at once.
    pub max_concurrent: u32,
    /// The most new calls per second.
    pub calls_per_s: f64,
    /// When calls may start (`None`: any time).
    pub window: Option<CallingWindow>,
    /// Retries.
    pub retry: RetryPolicy,
    /// Hang up an attempt that is not answered within this.
    pub ring_timeout_s: u32,
}

/// A new campaign.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCampaign {
    /// A label.
    pub name: String,
    /// The agent that talks on the calls.
    pub agent: String,
    /// The settings.
    pub settings: CampaignSettings,
    /// The targets, in dialing order.
    pub targets: Vec<NewTarget>,
}

/// A target to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTarget {
    /// A number (dialled through the trunk) or a SIP URI.
    pub number: String,
    /// The call's variables (`{{var.NAME}}` in the agent's instructions).
    pub variables: BTreeMap<String, String>,
}

/// Target counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TargetCounts {
    /// Waiting.
    pub pending: u64,
    /// In a call.
    pub dialing: u64,
    /// Answered.
    pub done: u64,
    /// Given up.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

/// A campaign as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Campaign {
    /// Its id.
    pub id: String,
    /// Its label.
    pub name: String,
    /// The agent.
    pub agent: String,
    /// Where it stands.
    pub state: CampaignState,
    /// Its settings.
    pub settings: CampaignSettings,
    /// When it was created.
    pub created_at: UnixMs,
    /// When its state last changed.
    pub updated_at: UnixMs,
    /// Its targets by state.
    pub counts: TargetCounts,
}

/// One attempt on a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// When it ended.
    pub at: UnixMs,
    /// How it ended.
    pub result: AttemptResult,
    /// The call's record, if the call started.
    pub record_id: Option<String>,
    /// The final SIP status, if any.
    pub sip_code: Option<u16>,
}

/// A target as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Target {
    /// The campaign.
    pub campaign: String,
    /// Its place in the list, from 0.
    pub seq: u32,
    /// The number or URI.
    pub number: String,
    /// The call's variables.
    pub variables: BTreeMap<String, String>,
    /// Where it stands.
    pub state: TargetState,
    /// Attempts made (or in progress).
    pub attempts: u32,
    /// When it is due (pending targets).
    pub next_attempt_at: UnixMs,
    /// The last attempt's result.
    pub last_result: Option<AttemptResult>,
    /// Every attempt, oldest first.
    pub history: Vec<Attempt>,
    /// When it last changed.
    pub updated_at: UnixMs,
}

/// The campaign tables, through their own read-write connection. Blocking: from async
/// code, use it inside `spawn_blocking`.
#[derive(Debug)]
pub struct CampaignStore {
    conn: Db,
    path: PathBuf,
    subscriptions: super::outbox::SharedSubscriptions,
    redactor: std::sync::Arc<super::redact::Redactor>,
    next_id: u64,
    /// The cluster node this store claims for (`campaign_targets.node`).
    node: Option<String>,
}

impl CampaignStore {
    /// Opens the campaigns of the records database `path` (created and migrated by the
    /// record store); `campaign.target.done` events go to `subs`, their free text (the
    /// variables) redacted by `redactor`.
    pub fn open(
        at: &StoreLocation,
        subs: super::outbox::SharedSubscriptions,
        redactor: std::sync::Arc<super::redact::Redactor>,
    ) -> Result<CampaignStore, RecordsError> {
        Ok(CampaignStore {
            conn: super::store::open_read_write(at, "open campaigns")?,
            path: at.name(),
            subscriptions: subs,
            redactor,
            next_id: 0,
            node: None,
        })
    }

    fn sql(&self, op: &'static str) -> impl FnOnce(DbError) -> RecordsError + '_ {
        move |source| RecordsError::Database {
            path: self.path.clone(),
            op,
            source,
        }
    }

    fn encode<T: Serialize>(
        &self,
        op: &'static str,
        id: &str,
        column: &'static str,
        v: &T,
    ) -> Result<String, RecordsError> {
        serde_json::to_string(v).map_err(|source| RecordsError::Encode {
            path: self.path.clone(),
            op,
            id: id.to_owned(),
            column,
            source,
        })
    }

    /// Stores a new campaign (running) with its targets, all due now; returns it.
    pub fn create(&mut self, c: &NewCampaign, now: UnixMs) -> Result<Campaign, RecordsError> {
        self.next_id += 1;
        // The time, this store's count and 16 random bits: nodes creating campaigns in the
        // same millisecond get different ids.
        let id = format!(
            "cmp-{}-{}{:04x}",
            now.0,
            self.next_id,
            rand::random::<u16>()
        );
        let settings = self.encode("campaign create", &id, "settings", &c.settings)?;
        let mut vars = Vec::with_capacity(c.targets.len());
        for t in &c.targets {
            vars.push(self.encode("campaign create", &id, "variables", &t.variables)?);
        }
        let path = self.path.clone();
        let sql = |op: &'static str| super::store::sql(&path, op);
        self.conn
            .transaction(
                |e| e,
                |tx| {
                    tx.execute(
                        "INSERT INTO campaigns (id, name, agent, state, settings, created_at, \
                     updated_at) VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?5)",
                        params![id, c.name, c.agent, settings, now.0],
                    )?;
                    for (seq, (t, v)) in c.targets.iter().zip(&vars).enumerate() {
                        tx.execute(
                        "INSERT INTO campaign_targets (campaign, seq, number, variables, state, \
                         next_attempt_at, updated_at) VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)",
                        params![id, seq as i64, t.number, v, now.0],
                    )?;
                    }
                    Ok::<(), DbError>(())
                },
            )
            .map_err(sql("campaign create"))?;
        self.get(&id)?.ok_or_else(|| RecordsError::NotFound {
            path: self.path.clone(),
            op: "campaign create",
            id,
        })
    }

    /// One campaign, with its counts.
    pub fn get(&self, id: &str) -> Result<Option<Campaign>, RecordsError> {
        let raw = self
            .conn
            .query_opt(
                "SELECT id, name, agent, state, settings, created_at, updated_at FROM campaigns \
                 WHERE id = ?1",
                params![id],
                raw_campaign,
            )
            .map_err(self.sql("campaign get"))?;
        raw.map(|r| self.decode_campaign(r)).transpose()
    }

    /// Every campaign, newest first.
    pub fn list(&self) -> Result<Vec<Campaign>, RecordsError> {
        let rows = self
            .conn
            .query_map(
                "SELECT id, name, agent, state, settings, created_at, updated_at FROM campaigns \
                 ORDER BY created_at DESC, id DESC",
                params![],
                raw_campaign,
            )
            .map_err(self.sql("campaign list"))?;
        rows.into_iter().map(|r| self.decode_campaign(r)).collect()
    }

    fn decode_campaign(&self, r: RawCampaign) -> Result<Campaign, RecordsError> {
        let mut c = self.decode_settings(r)?;
        c.counts = self.counts(&c.id)?;
        Ok(c)
    }

    /// A campaign row without its counts (which cost a pass over its targets).
    fn decode_settings(&self, r: RawCampaign) -> Result<Campaign, RecordsError> {
        let corrupt = |column: &'static str, reason: String| RecordsError::CorruptRow {
            path: self.path.clone(),
            op: "campaign read",
            id: r.id.clone(),
            column,
            reason,
        };
        let state = CampaignState::parse(&r.state)
            .ok_or_else(|| corrupt("state", format!("unknown state {:?}", r.state)))?;
        let settings =
            serde_json::from_str(&r.settings).map_err(|e| corrupt("settings", e.to_string()))?;
        Ok(Campaign {
            id: r.id,
            name: r.name,
            agent: r.agent,
            state,
            settings,
            created_at: UnixMs(r.created_at),
            updated_at: UnixMs(r.updated_at),
            counts: TargetCounts::default(),
        })
    }

    fn counts(&self, id: &str) -> Result<TargetCounts, RecordsError> {
        let mut c = TargetCounts::default();
        let rows = self
            .conn
            .query_map(
                "SELECT state, COUNT(*) FROM campaign_targets WHERE campaign = ?1 GROUP BY state",
                params![id],
                |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
            )
            .map_err(self.sql("campaign counts"))?;
        for (state, n) in rows {
            let n = n.max(0) as u64;
            match TargetState::parse(&state) {
                Some(TargetState::Pending) => c.pending = n,
                Some(TargetState::Dialing) => c.dialing = n,
                Some(TargetState::Done) => c.done = n,
                Some(TargetState::Failed) => c.failed = n,
                Some(TargetState::Cancelled) => c.cancelled = n,
                None => {}
            }
        }
        Ok(c)
    }

    /// A campaign's targets in list order, skipping `offset`, at most `limit`.
    pub fn targets(&self, id: &str, limit: u32, offset: u32) -> Result<Vec<Target>, RecordsError> {
        let rows = self
            .conn
            .query_map(
                &format!(
                    "SELECT {TARGET_COLUMNS} FROM campaign_targets WHERE campaign = ?1 \
                 ORDER BY seq LIMIT ?2 OFFSET ?3"
                ),
                params![id, limit, offset],
                raw_target,
            )
            .map_err(self.sql("campaign targets"))?;
        rows.into_iter().map(|r| r.decode(&self.path)).collect()
    }

    /// Sets a campaign's state: pause (running → paused), resume (paused → running), cancel
    /// (running or paused → cancelled, its pending targets cancelled), done. Returns the
    /// state before, or `None` when there is no such campaign; a change that does not apply
    /// (resuming a running campaign) changes nothing.
    pub fn set_state(
        &mut self,
        id: &str,
        to: CampaignState,
        now: UnixMs,
    ) -> Result<Option<CampaignState>, RecordsError> {
        let Some(c) = self.get(id)? else {
            return Ok(None);
        };
        let allowed = matches!(
            (c.state, to),
            (CampaignState::Running, CampaignState::Paused)
                | (CampaignState::Paused, CampaignState::Running)
                | (
                    CampaignState::Running | CampaignState::Paused,
                    CampaignState::Cancelled
                )
                | (CampaignState::Running, CampaignState::Done)
        );
        if !allowed {
            return Ok(Some(c.state));
        }
        let path = self.path.clone();
        let sql = |op: &'static str| super::store::sql(&path, op);
        self.conn
            .transaction(
                |e| e,
                |tx| {
                    tx.execute(
                        "UPDATE campaigns SET state = ?2, updated_at = ?3 WHERE id = ?1",
                        params![id, to.as_str(), now.0],
                    )?;
                    if to == CampaignState::Cancelled {
                        tx.execute(
                            "UPDATE campaign_targets SET state = 'cancelled', updated_at = ?2 \
                         WHERE campaign = ?1 AND state = 'pending'",
                            params![id, now.0],
                        )?;
                    }
                    Ok::<(), DbError>(())
                },
            )
            .map_err(sql("campaign state"))?;
        Ok(Some(c.state))
    }

    /// The running campaigns, oldest first, without their counts (the runner reads this
    /// every tick: the campaign rows only, none of the targets).
    pub fn running(&self) -> Result<Vec<Campaign>, RecordsError> {
        let rows = self
            .conn
            .query_map(
                "SELECT id, name, agent, state, settings, created_at, updated_at FROM campaigns \
                 WHERE state = 'running' ORDER BY created_at",
                params![],
                raw_campaign,
            )
            .map_err(self.sql("campaigns running"))?;
        rows.into_iter().map(|r| self.decode_settings(r)).collect()
    }

    /// Claims the campaign's next due target (the earliest due, then list order): it
    /// becomes `dialing` with one more attempt, in one statement, so no target is claimed
    /// twice. On PostgreSQL, where several nodes claim at once, the choice skips rows
    /// another node's claim has locked (`FOR UPDATE SKIP LOCKED`), and the update checks
    /// the state again.
    pub fn claim(&mut self, id: &str, now: UnixMs) -> Result<Option<Target>, RecordsError> {
        let raw =
            claim_in(&self.conn, id, now, &self.node, &None).map_err(self.sql("campaign claim"))?;
        raw.map(|r| r.decode(&self.path)).transpose()
    }

    /// [`claim`](Self::claim) within the campaign's limits, kept in the database so that
    /// they hold across every node dialing it: at most `max_concurrent` targets `dialing`
    /// at once, and calls started one every `1 / calls_per_s` (the campaign row's
    /// `next_call_at`, a GCRA without burst; a claim up to half an interval late keeps the
    /// schedule, so the runner's ticks do not slow the pace: at most `calls_per_s + 1` calls
    /// start in any one second). The campaign's row
    /// is locked meanwhile (the write transaction on SQLite, `FOR UPDATE` on PostgreSQL), so
    /// nodes claiming at once take turns. `None`: no target is due, or a limit is reached.
    ///
    /// With `trunk`, that trunk's limits hold the same way for the campaign calls through it
    /// (of every campaign, on every node): its row in `trunk_pacing` is locked too.
    pub fn claim_within(
        &mut self,
        id: &str,
        now: UnixMs,
        max_concurrent: u32,
        calls_per_s: f64,
        trunk: Option<&TrunkLimits>,
    ) -> Result<Option<Target>, RecordsError> {
        const OP: &str = "campaign claim";
        let path = self.path.clone();
        let claimed = self.conn.transaction(
            |e| e,
            |tx| {
                let lock = tx.for_update();
                let Some(tat) = tx.query_opt(
                    &format!("SELECT next_call_at FROM campaigns WHERE id = ?1{lock}"),
                    params![id],
                    |r| r.get::<i64>(0),
                )?
                else {
                    return Ok(None);
                };
                let dialing: i64 = tx.query_row(
                "SELECT COUNT(*) FROM campaign_targets WHERE campaign = ?1 AND state = 'dialing'",
                params![id],
                |r| r.get(0),
            )?;
                if dialing >= i64::from(max_concurrent) {
                    return Ok(None);
                }
                let Some(next) = pace(tat, now.0, calls_per_s) else {
                    return Ok(None);
                };
                let mut trunk_next = None;
                if let Some(t) = trunk {
                    tx.execute(
                        "INSERT INTO trunk_pacing (trunk, next_call_at) VALUES (?1, 0) \
                         ON CONFLICT (trunk) DO NOTHING",
                        params![t.name],
                    )?;
                    let trunk_tat: i64 = tx.query_row(
                        &format!("SELECT next_call_at FROM trunk_pacing WHERE trunk = ?1{lock}"),
                        params![t.name],
                        |r| r.get(0),
                    )?;
                    if let Some(max) = t.max_calls {
                        let busy: i64 = tx.query_row(
                            "SELECT COUNT(*) FROM campaign_targets \
                             WHERE trunk = ?1 AND state = 'dialing'",
                            params![t.name],
                            |r| r.get(0),
                        )?;
                        if busy >= i64::from(max) {
                            return Ok(None);
                        }
                    }
                    if let Some(cps) = t.calls_per_s {
                        let Some(n) = pace(trunk_tat, now.0, cps) else {
                            return Ok(None);
                        };
                        trunk_next = Some(n);
                    }
                }
                let trunk_name = trunk.map(|t| t.name.clone());
                let Some(raw) = claim_in(tx, id, now, &self.node, &trunk_name)? else {
                    return Ok(None);
                };
                tx.execute(
                    "UPDATE campaigns SET next_call_at = ?2 WHERE id = ?1",
                    params![id, next],
                )?;
                if let (Some(t), Some(n)) = (trunk, trunk_next) {
                    tx.execute(
                        "UPDATE trunk_pacing SET next_call_at = ?2 WHERE trunk = ?1",
                        params![t.name, n],
                    )?;
                }
                Ok::<_, DbError>(Some(raw))
            },
        );
        claimed
            .map_err(sql_err(&path, OP))?
            .map(|r| r.decode(&path))
            .transpose()
    }

    /// Gives a claimed target back without an attempt (the trunk was at its limit, so no
    /// call was placed): `pending` again, due after `delay_ms`.
    pub fn release(
        &mut self,
        id: &str,
        seq: u32,
        now: UnixMs,
        delay_ms: i64,
    ) -> Result<(), RecordsError> {
        self.conn
            .execute(
                "UPDATE campaign_targets SET state = 'pending', attempts = attempts - 1, \
                 next_attempt_at = ?3, updated_at = ?4 \
                 WHERE campaign = ?1 AND seq = ?2 AND state = 'dialing'",
                params![id, seq, now.0.saturating_add(delay_ms), now.0],
            )
            .map_err(self.sql("campaign release"))?;
        Ok(())
    }

    /// When the campaign's next pending target is due, if it has one.
    pub fn next_due(&self, id: &str) -> Result<Option<UnixMs>, RecordsError> {
        self.conn
            .query_row(
                "SELECT MIN(next_attempt_at) FROM campaign_targets \
                 WHERE campaign = ?1 AND state = 'pending'",
                params![id],
                |r| r.get::<Option<i64>>(0),
            )
            .map(|v| v.map(UnixMs))
            .map_err(self.sql("campaign next due"))
    }

    /// Records an attempt's end: the target is `done` (answered), `pending` again after the
    /// backoff (a retried result with attempts left), or `failed`. A final state writes the
    /// `campaign.target.done` event in the same transaction. When no target is pending or
    /// dialing any more, a running campaign becomes `done`. Returns the target's new state.
    pub fn finish_attempt(
        &mut self,
        id: &str,
        seq: u32,
        attempt: Attempt,
        now: UnixMs,
    ) -> Result<TargetState, RecordsError> {
        let Some(c) = self.get(id)? else {
            return Err(RecordsError::NotFound {
                path: self.path.clone(),
                op: "campaign attempt",
                id: id.to_owned(),
            });
        };
        let path = self.path.clone();
        let sql = |op: &'static str| super::store::sql(&path, op);
        let subscriptions = &self.subscriptions;
        let redactor = &self.redactor;
        self.conn.transaction(sql("campaign attempt"), |tx| {
            let raw = tx
                .query_row(
                    &format!(
                        "SELECT {TARGET_COLUMNS} FROM campaign_targets WHERE campaign = ?1 AND seq = ?2"
                    ),
                    params![id, seq],
                    raw_target,
                )
                .map_err(sql("campaign attempt"))?;
            let mut t = raw.decode(&path)?;
            let retry = &c.settings.retry;
            let retried =
                attempt.result == AttemptResult::Interrupted || retry.on.contains(&attempt.result);
            let state = if attempt.result == AttemptResult::Answered {
                TargetState::Done
            } else if c.state == CampaignState::Cancelled {
                TargetState::Cancelled
            } else if retried && t.attempts < retry.max_attempts {
                TargetState::Pending
            } else {
                TargetState::Failed
            };
            let backoff_ms = i64::from(retry.backoff_s)
                .saturating_mul(1000)
                .saturating_mul(1_i64 << t.attempts.saturating_sub(1).min(16));
            t.last_result = Some(attempt.result);
            t.history.push(attempt);
            t.state = state;
            t.updated_at = now;
            if state == TargetState::Pending {
                t.next_attempt_at = UnixMs(now.0.saturating_add(backoff_ms));
            }
            let history = serde_json::to_string(&t.history).map_err(|source| RecordsError::Encode {
                path: path.clone(),
                op: "campaign attempt",
                id: format!("{id}/{seq}"),
                column: "history",
                source,
            })?;
            tx.execute(
                "UPDATE campaign_targets SET state = ?3, next_attempt_at = ?4, last_result = ?5, \
                 history = ?6, updated_at = ?7 WHERE campaign = ?1 AND seq = ?2",
                params![
                    id,
                    seq,
                    state.as_str(),
                    t.next_attempt_at.0,
                    t.last_result.map(AttemptResult::as_str),
                    history,
                    now.0
                ],
            )
            .map_err(sql("campaign attempt"))?;
            if state != TargetState::Pending {
                let subs = super::outbox::current(subscriptions);
                let data = serde_json::json!({ "campaign": id, "campaign_name": c.name, "target": t });
                enqueue_event(
                    tx,
                    &subs,
                    redactor,
                    &format!("{id}/{seq}"),
                    EventType::CampaignTargetDone,
                    &data,
                )
                .map_err(sql("campaign attempt"))?;
            }
            let open: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM campaign_targets WHERE campaign = ?1 \
                     AND state IN ('pending', 'dialing')",
                    params![id],
                    |r| r.get(0),
                )
                .map_err(sql("campaign attempt"))?;
            if open == 0 {
                tx.execute(
                    "UPDATE campaigns SET state = 'done', updated_at = ?2 \
                     WHERE id = ?1 AND state = 'running'",
                    params![id, now.0],
                )
                .map_err(sql("campaign attempt"))?;
            }
            Ok(state)
        })
    }

    /// Claims from now on are cluster node `node`'s.
    pub fn set_node(&mut self, node: Option<String>) {
        self.node = node;
    }

    /// After a restart: every target this store's node left `dialing` (every one, on a
    /// single node) gets an `interrupted` attempt (retried while attempts remain). Returns
    /// how many there were.
    pub fn recover(&mut self, now: UnixMs) -> Result<usize, RecordsError> {
        let node = self.node.clone();
        self.recover_node(node.as_deref(), now)
    }

    /// [`recover`](Self::recover) for the targets node `node` was dialing (all, for
    /// `None`): a surviving node runs it for a node that died.
    pub fn recover_node(&mut self, node: Option<&str>, now: UnixMs) -> Result<usize, RecordsError> {
        let left: Vec<(String, u32)> = match node {
            None => self.conn.query_map(
                "SELECT campaign, seq FROM campaign_targets WHERE state = 'dialing'",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            ),
            Some(n) => self.conn.query_map(
                "SELECT campaign, seq FROM campaign_targets WHERE state = 'dialing' AND node = ?1",
                params![n],
                |r| Ok((r.get(0)?, r.get(1)?)),
            ),
        }
        .map_err(self.sql("campaign recover"))?;
        for (id, seq) in &left {
            self.finish_attempt(
                id,
                *seq,
                Attempt {
                    at: now,
                    result: AttemptResult::Interrupted,
                    record_id: None,
                    sip_code: None,
                },
                now,
            )?;
        }
        Ok(left.len())
    }
}

/// The claim statement of [`CampaignStore::claim`] on `conn` (inside a transaction or not).
fn claim_in(
    conn: &Db,
    id: &str,
    now: UnixMs,
    node: &Option<String>,
    trunk: &Option<String>,
) -> Result<Option<RawTarget>, DbError> {
    let skip_locked = match conn.dialect() {
        super::db::Dialect::Sqlite => "",
        super::db::Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
    };
    conn.query_opt(
        &format!(
            "UPDATE campaign_targets SET state = 'dialing', attempts = attempts + 1, \
             updated_at = ?2, node = ?3, trunk = ?4 WHERE campaign = ?1 AND state = 'pending' \
             AND seq = \
             (SELECT seq FROM campaign_targets WHERE campaign = ?1 AND \
             state = 'pending' AND next_attempt_at <= ?2 \
             ORDER BY next_attempt_at, seq LIMIT 1{skip_locked}) \
             RETURNING {TARGET_COLUMNS}"
        ),
        params![id, now.0, node, trunk],
        raw_target,
    )
}

/// Maps a database error to the store's error, for `path`.
fn sql_err<'a>(path: &'a Path, op: &'static str) -> impl Fn(DbError) -> RecordsError + 'a {
    super::store::sql(path, op)
}

const TARGET_COLUMNS: &str = "campaign, seq, number, variables, state, attempts, \
    next_attempt_at, last_result, history, updated_at";

struct RawCampaign {
    id: String,
    name: String,
    agent: String,
    state: String,
    settings: String,
    created_at: i64,
    updated_at: i64,
}

fn raw_campaign(r: &Row) -> Result<RawCampaign, DbError> {
    Ok(RawCampaign {
        id: r.get(0)?,
        name: r.get(1)?,
        agent: r.get(2)?,
        state: r.get(3)?,
        settings: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

struct RawTarget {
    campaign: String,
    seq: u32,
    number: String,
    variables: String,
    state: String,
    attempts: u32,
    next_attempt_at: i64,
    last_result: Option<String>,
    history: String,
    updated_at: i64,
}

fn raw_target(r: &Row) -> Result<RawTarget, DbError> {
    Ok(RawTarget {
        campaign: r.get(0)?,
        seq: r.get(1)?,
        number: r.get(2)?,
        variables: r.get(3)?,
        state: r.get(4)?,
        attempts: r.get(5)?,
        next_attempt_at: r.get(6)?,
        last_result: r.get(7)?,
        history: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

impl RawTarget {
    fn decode(self, path: &Path) -> Result<Target, RecordsError> {
        let id = format!("{}/{}", self.campaign, self.seq);
        let corrupt = |column: &'static str, reason: String| RecordsError::CorruptRow {
            path: path.to_path_buf(),
            op: "campaign target read",
            id: id.clone(),
            column,
            reason,
        };
        let state = TargetState::parse(&self.state)
            .ok_or_else(|| corrupt("state", format!("unknown state {:?}", self.state)))?;
        let last_result = match &self.last_result {
            Some(s) => Some(
                AttemptResult::parse(s)
                    .ok_or_else(|| corrupt("last_result", format!("unknown result {s:?}")))?,
            ),
            None => None,
        };
        Ok(Target {
            variables: serde_json::from_str(&self.variables)
                .map_err(|e| corrupt("variables", e.to_string()))?,
            history: serde_json::from_str(&self.history)
                .map_err(|e| corrupt("history", e.to_string()))?,
            campaign: self.campaign,
            seq: self.seq,
            number: self.number,
            state,
            attempts: self.attempts,
            next_attempt_at: UnixMs(self.next_attempt_at),
            last_result,
            updated_at: UnixMs(self.updated_at),
        })
    }
}
