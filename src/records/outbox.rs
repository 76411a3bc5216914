//! The webhook outbox: the events a call's record changes cause, kept in the records
//! database and written **in the same transaction** as the change (each [`RecordOp`] runs in
//! a savepoint with its events), so a record is never written without its events or the other
//! way round, whatever crashes when. The delivery side (`crate::webhooks`) reads due rows,
//! sends them and marks them delivered, failed for a later attempt, or dead.
//!
//! One row per (event, endpoint): each endpoint gets its own copy, with its own attempts and
//! state, and its own id (the Standard Webhooks `webhook-id`, stable across retries).
//!
//! Events (the payload's `type`), and what causes them:
//!
//! | event | when |
//! |---|---|
//! | `call.started` | a call's record is first written (the INVITE came in, or went out) |
//! | `call.answered` | the call was answered |
//! | `call.ended` | its final record is written (`data` is the record) |
//! | `transcript.ready` | with `call.ended`, when the call has a transcript |
//! | `recording.ready` | with `call.ended`, when the call has a recording |
//! | `tool.called` | with `call.ended`, one per tool call of the call |
//! | `backend.failover` | with `call.ended`, one per switch of backend |

use std::path::PathBuf;

use super::db::{Db, DbError, Dialect, Row, StoreLocation, ToValue, params};
use serde::Serialize;

use super::store::RecordOp;
use super::{CallRecord, RecordsError, UnixMs};

/// An event type a webhook endpoint can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum EventType {
    /// `call.started`.
    #[serde(rename = "call.started")]
    CallStarted,
    /// `call.answered`.
    #[serde(rename = "call.answered")]
    CallAnswered,
    /// `call.ended`.
    #[serde(rename = "call.ended")]
    CallEnded,
    /// `transcript.ready`.
    #[serde(rename = "transcript.ready")]
    TranscriptReady,
    /// `recording.ready`.
    #[serde(rename = "recording.ready")]
    RecordingReady,
    /// `tool.called`.
    #[serde(rename = "tool.called")]
    ToolCalled,
    /// `backend.failover`.
    #[serde(rename = "backend.failover")]
    BackendFailover,
    /// `call.analyzed`: the post-call analysis (summary and outcome) is stored.
    #[serde(rename = "call.analyzed")]
    CallAnalyzed,
    /// `campaign.target.done`: a campaign target reached its final state.
    #[serde(rename = "campaign.target.done")]
    CampaignTargetDone,
}

impl EventType {
    /// Every event type, in the order of the table above.
    pub const ALL: [EventType; 9] = [
        EventType::CallStarted,
        EventType::CallAnswered,
        EventType::CallEnded,
        EventType::TranscriptReady,
        EventType::RecordingReady,
        EventType::ToolCalled,
        EventType::BackendFailover,
        EventType::CallAnalyzed,
        EventType::CampaignTargetDone,
    ];

    /// Its name, as in the payload's `type` and in `[[webhook]] events`.
    pub fn name(self) -> &'static str {
        match self {
            EventType::CallStarted => "call.started",
            EventType::CallAnswered => "call.answered",
            EventType::CallEnded => "call.ended",
            EventType::TranscriptReady => "transcript.ready",
            EventType::RecordingReady => "recording.ready",
            EventType::ToolCalled => "tool.called",
            EventType::BackendFailover => "backend.failover",
            EventType::CallAnalyzed => "call.analyzed",
            EventType::CampaignTargetDone => "campaign.target.done",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// The subscriptions in force, shared by every writer of events (the record writer, the
/// campaigns) and changed by the API as endpoints come and go.
pub type SharedSubscriptions = std::sync::Arc<std::sync::RwLock<Vec<Subscription>>>;

/// A copy of the subscriptions in force (a poisoned lock still holds a whole list: each
/// change replaces or edits it in one step).
pub fn current(subs: &SharedSubscriptions) -> Vec<Subscription> {
    subs.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// An endpoint's subscription: its name (the outbox rows carry it) and the events it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The endpoint's name.
    pub endpoint: String,
    /// The events it takes.
    pub events: Vec<EventType>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Given up after the retry period; kept for inspection and redelivery.
    Dead,
}

impl DeliveryState {
    /// Its name in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<DeliveryState> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The message id (`webhook-id`), the same on every attempt.
    pub id: String,
    /// The endpoint's name.
    pub endpoint: String,
    /// The event type's name.
    pub event: String,
    /// The call record's id the event is about.
    pub record_id: String,
    /// The JSON body sent.
    pub payload: String,
    /// When the event was written.
    pub created_at: UnixMs,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (pending rows).
    pub next_attempt_at: UnixMs,
    /// Pending, delivered or dead.
    pub state: DeliveryState,
    /// The HTTP status of the last attempt, if it got one.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<UnixMs>,
}

/// The outbox table (a migration of the records database).
pub(super) const MIGRATION: &str = "
    CREATE TABLE outbox (
        seq             INTEGER PRIMARY KEY AUTOINCREMENT,
        id              TEXT NOT NULL UNIQUE,
        endpoint        TEXT NOT NULL,
        event           TEXT NOT NULL,
        record_id       TEXT NOT NULL,
        payload         TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        state           TEXT NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'delivered', 'dead')),
        last_status     INTEGER,
        last_error      TEXT,
        delivered_at    INTEGER
    );
    CREATE INDEX outbox_due ON outbox (endpoint, next_attempt_at) WHERE state = 'pending';
";

/// The `webhook_endpoints` table: endpoints added through the API (a migration).
pub(super) const ENDPOINTS_MIGRATION: &str = "
    CREATE TABLE webhook_endpoints (
        name       TEXT PRIMARY KEY NOT NULL,
        definition TEXT NOT NULL,
        secret     TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
";

/// An endpoint added through the API, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEndpoint {
    /// Its name.
    pub name: String,
    /// Its settings as the API took them (JSON: `url`, `events`, timings).
    pub definition: serde_json::Value,
    /// Its signing secret (`whsec_…`).
    pub secret: String,
    /// When it was added.
    pub created_at: UnixMs,
}

/// The envelope Standard Webhooks suggests: `type`, `timestamp` (RFC 3339) and `data`.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: String,
    data: &'a T,
}

/// The events `op` causes, each with its `data`.
fn events_of(op: &RecordOp) -> Vec<(EventType, serde_json::Value)> {
    match op {
        RecordOp::Started(r) => vec![(EventType::CallStarted, json(r))],
        RecordOp::Answered { id, at } => vec![(
            EventType::CallAnswered,
            serde_json::json!({ "id": id, "answered_at": at }),
        )],
        RecordOp::Finished(r) => ended_events(r),
        RecordOp::Analyzed { id, analysis } => vec![(
            EventType::CallAnalyzed,
            serde_json::json!({ "id": id, "analysis": analysis }),
        )],
    }
}

fn ended_events(r: &CallRecord) -> Vec<(EventType, serde_json::Value)> {
    let mut out = vec![(EventType::CallEnded, json(r))];
    if let Some(path) = &r.transcript_path {
        out.push((
            EventType::TranscriptReady,
            serde_json::json!({ "id": r.id, "call_id": r.call_id, "transcript_path": path }),
        ));
    }
    if let Some(path) = &r.recording_path {
        out.push((
            EventType::RecordingReady,
            serde_json::json!({ "id": r.id, "call_id": r.call_id, "recording_path": path }),
        ));
    }
    for t in &r.tool_calls {
        out.push((
            EventType::ToolCalled,
            serde_json::json!({ "id": r.id, "call_id": r.call_id, "tool_call": t }),
        ));
    }
    for s in &r.backend_switches {
        out.push((
            EventType::BackendFailover,
            serde_json::json!({ "id": r.id, "call_id": r.call_id, "switch": s }),
        ));
    }
    out
}

/// `v` as JSON. A record always serializes (string keys only; serde_json writes a float
/// JSON cannot hold as null), so the `Null` fallback is never taken.
fn json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// A new message id: `msg_`, the time in ms and 64 random bits, in hex (sortable by time).
fn message_id(now: UnixMs) -> String {
    use rand::RngCore as _;
    format!("msg_{:012x}{:016x}", now.0, rand::thread_rng().next_u64())
}

/// Writes the outbox rows `op` causes for `subs`, inside the caller's transaction (or
/// savepoint).
pub(super) fn enqueue(
    tx: &Db,
    subs: &[Subscription],
    redactor: &super::redact::Redactor,
    op: &RecordOp,
) -> Result<(), DbError> {
    if subs.is_empty() {
        return Ok(());
    }
    for (event, data) in events_of(op) {
        enqueue_event(tx, subs, redactor, op.id(), event, &data)?;
    }
    Ok(())
}

/// Writes one event (about `subject`: a record id, or a campaign target `CAMPAIGN/SEQ`) for
/// every endpoint of `subs` that takes it, inside the caller's transaction; its free text
/// redacted by `redactor`.
pub(super) fn enqueue_event(
    tx: &Db,
    subs: &[Subscription],
    redactor: &super::redact::Redactor,
    subject: &str,
    event: EventType,
    data: &serde_json::Value,
) -> Result<(), DbError> {
    let now = UnixMs::now();
    let mut body = None;
    for sub in subs.iter().filter(|s| s.events.contains(&event)) {
        let body = body.get_or_insert_with(|| {
            let mut data = data.clone();
            redactor.json(&mut data);
            serde_json::to_string(&Envelope {
                kind: event.name(),
                timestamp: now.to_rfc3339(),
                data: &data,
            })
            .unwrap_or_default()
        });
        tx.execute(
            "INSERT INTO outbox (id, endpoint, event, record_id, payload, created_at, \
             next_attempt_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![
                message_id(now),
                sub.endpoint,
                event.name(),
                subject,
                body.as_str(),
                now
            ],
        )?;
    }
    Ok(())
}

/// The delivery side's handle on the outbox: its own read-write connection to the records
/// database (WAL: it waits at most the busy timeout for the record writer's commits).
#[derive(Debug)]
pub struct Outbox {
    conn: Db,
    path: PathBuf,
}

const COLUMNS: &str = "id, endpoint, event, record_id, payload, created_at, attempts, \
    next_attempt_at, state, last_status, last_error, delivered_at";

fn row(r: &Row) -> Result<Delivery, DbError> {
    let state: String = r.get(8)?;
    Ok(Delivery {
        id: r.get(0)?,
        endpoint: r.get(1)?,
        event: r.get(2)?,
        record_id: r.get(3)?,
        payload: r.get(4)?,
        created_at: UnixMs(r.get(5)?),
        attempts: r.get(6)?,
        next_attempt_at: UnixMs(r.get(7)?),
        state: DeliveryState::parse(&state).unwrap_or(DeliveryState::Pending),
        last_status: r.get(9)?,
        last_error: r.get(10)?,
        delivered_at: r.get::<Option<i64>>(11)?.map(UnixMs),
    })
}

/// A row selected with [`COLUMNS`] and then `seq`.
fn row_with_seq(r: &Row) -> Result<(Delivery, i64), DbError> {
    Ok((row(r)?, r.get(12)?))
}

impl Outbox {
    /// Opens the outbox of the records database `path` (created by the record store).
    pub fn open(at: &StoreLocation) -> Result<Outbox, RecordsError> {
        Ok(Outbox {
            conn: super::store::open_read_write(at, "open outbox")?,
            path: at.name(),
        })
    }

    fn err(&self, op: &'static str) -> impl FnOnce(DbError) -> RecordsError + '_ {
        move |source| RecordsError::Database {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// Up to `limit` pending rows of `endpoint` due at `now`, oldest first.
    ///
    /// On PostgreSQL, where every node of a cluster runs a delivery task per endpoint, the
    /// rows are also claimed for `claim_ms`: their `next_attempt_at` moves that far ahead,
    /// so the other nodes skip them (`FOR UPDATE SKIP LOCKED`) while this one delivers.
    /// Marking a row delivered or failed ends the claim; a node that dies mid-delivery
    /// leaves the row to another node once the claim runs out (same `webhook-id`).
    pub fn due(
        &self,
        endpoint: &str,
        now: UnixMs,
        limit: u32,
        claim_ms: i64,
    ) -> Result<Vec<Delivery>, RecordsError> {
        let select = "SELECT seq FROM outbox WHERE state = 'pending' AND endpoint = ?1 \
                      AND next_attempt_at <= ?2 ORDER BY next_attempt_at, seq LIMIT ?3";
        let mut rows = match self.conn.dialect() {
            Dialect::Sqlite => self.conn.query_map(
                &format!(
                    "SELECT {COLUMNS}, seq FROM outbox WHERE seq IN ({select}) \
                     ORDER BY next_attempt_at, seq"
                ),
                params![endpoint, now, limit],
                row_with_seq,
            ),
            Dialect::Postgres => self.conn.query_map(
                &format!(
                    "UPDATE outbox SET next_attempt_at = ?4 WHERE seq IN \
                     ({select} FOR UPDATE SKIP LOCKED) RETURNING {COLUMNS}, seq"
                ),
                params![endpoint, now, limit, now.0.saturating_add(claim_ms)],
                row_with_seq,
            ),
        }
        .map_err(self.err("outbox due"))?;
        // Oldest first (RETURNING gives no order): by the sequence, which is creation order.
        rows.sort_by_key(|(_, seq)| *seq);
        Ok(rows.into_iter().map(|(d, _)| d).collect())
    }

    /// When `endpoint`'s next pending row is due, if it has one.
    pub fn next_due(&self, endpoint: &str) -> Result<Option<UnixMs>, RecordsError> {
        self.conn
            .query_row(
                "SELECT MIN(next_attempt_at) FROM outbox WHERE state = 'pending' AND endpoint = ?1",
                params![endpoint],
                |r| r.get::<Option<i64>>(0),
            )
            .map(|v| v.map(UnixMs))
            .map_err(self.err("outbox next due"))
    }

    /// Marks a row delivered.
    pub fn delivered(&self, id: &str, status: u16, at: UnixMs) -> Result<(), RecordsError> {
        self.conn
            .execute(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, \
                 last_status = ?2, last_error = NULL, delivered_at = ?3 WHERE id = ?1",
                params![id, status, at],
            )
            .map(|_| ())
            .map_err(self.err("outbox delivered"))
    }

    /// Records a failed attempt: due again at `next` (pending), or dead when `next` is
    /// `None`.
    pub fn failed(
        &self,
        id: &str,
        status: Option<u16>,
        error: &str,
        next: Option<UnixMs>,
    ) -> Result<(), RecordsError> {
        let (state, next) = match next {
            Some(t) => (DeliveryState::Pending, t),
            None => (DeliveryState::Dead, UnixMs::now()),
        };
        self.conn
            .execute(
                "UPDATE outbox SET state = ?2, attempts = attempts + 1, last_status = ?3, \
                 last_error = ?4, next_attempt_at = ?5 WHERE id = ?1",
                params![id, state.as_str(), status, error, next],
            )
            .map(|_| ())
            .map_err(self.err("outbox failed"))
    }

    /// Rows newest first, of one state or all, at most `limit`.
    pub fn list(
        &self,
        state: Option<DeliveryState>,
        limit: u32,
    ) -> Result<Vec<Delivery>, RecordsError> {
        let rows = self
            .conn
            .query_map(
                &format!(
                    "SELECT {COLUMNS} FROM outbox WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1) \
                 ORDER BY seq DESC LIMIT ?2"
                ),
                params![state.map(DeliveryState::as_str), limit],
                row,
            )
            .map_err(self.err("outbox list"))?;
        Ok(rows)
    }

    /// One row.
    pub fn get(&self, id: &str) -> Result<Option<Delivery>, RecordsError> {
        self.conn
            .query_opt(
                &format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1"),
                params![id],
                row,
            )
            .map_err(self.err("outbox get"))
    }

    /// Makes a row pending and due now (a dead or delivered one is sent again, with the same
    /// id). Returns whether the row exists.
    pub fn redeliver(&self, id: &str) -> Result<bool, RecordsError> {
        self.conn
            .execute(
                "UPDATE outbox SET state = 'pending', next_attempt_at = ?2 WHERE id = ?1",
                params![id, UnixMs::now()],
            )
            .map(|n| n > 0)
            .map_err(self.err("outbox redeliver"))
    }

    /// Pending rows of endpoints that are no longer configured become dead, so they are
    /// visible and can be redelivered once the endpoint is back. Returns how many.
    pub fn bury_orphans(&self, endpoints: &[String]) -> Result<usize, RecordsError> {
        // One placeholder per endpoint (the configuration's list: a handful).
        let filter = if endpoints.is_empty() {
            String::new()
        } else {
            format!(
                " AND endpoint NOT IN ({})",
                vec!["?"; endpoints.len()].join(", ")
            )
        };
        let values: Vec<&dyn ToValue> = endpoints.iter().map(|e| e as &dyn ToValue).collect();
        self.conn
            .execute(
                &format!(
                    "UPDATE outbox SET state = 'dead', \
                     last_error = 'the endpoint is no longer configured' \
                     WHERE state = 'pending'{filter}"
                ),
                &values,
            )
            .map_err(self.err("outbox orphans"))
    }

    /// The endpoints added through the API, by name.
    pub fn api_endpoints(&self) -> Result<Vec<StoredEndpoint>, RecordsError> {
        let rows = self
            .conn
            .query_map(
                "SELECT name, definition, secret, created_at FROM webhook_endpoints ORDER BY name",
                params![],
                |r| {
                    Ok((
                        r.get::<String>(0)?,
                        r.get::<String>(1)?,
                        r.get::<String>(2)?,
                        r.get::<i64>(3)?,
                    ))
                },
            )
            .map_err(self.err("endpoints list"))?;
        rows.into_iter()
            .map(|(name, def, secret, at)| {
                let definition =
                    serde_json::from_str(&def).map_err(|e| RecordsError::CorruptRow {
                        path: self.path.clone(),
                        op: "endpoints list",
                        id: name.clone(),
                        column: "definition",
                        reason: e.to_string(),
                    })?;
                Ok(StoredEndpoint {
                    name,
                    definition,
                    secret,
                    created_at: UnixMs(at),
                })
            })
            .collect()
    }

    /// Stores an endpoint added through the API; false when the name is taken.
    pub fn add_endpoint(&self, e: &StoredEndpoint) -> Result<bool, RecordsError> {
        let n = self
            .conn
            .execute(
                "INSERT INTO webhook_endpoints (name, definition, secret, created_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT(name) DO NOTHING",
                params![e.name, e.definition.to_string(), e.secret, e.created_at],
            )
            .map_err(self.err("endpoint add"))?;
        Ok(n == 1)
    }

    /// Removes an endpoint added through the API, its pending deliveries made dead (they
    /// stay for inspection); false when there was none.
    pub fn remove_endpoint(&self, name: &str) -> Result<bool, RecordsError> {
        let err = super::store::sql(&self.path, "endpoint remove");
        // This connection runs one statement at a time (the outbox's mutex): no other
        // transaction can be open on it.
        let n = self.conn.transaction(&err, |tx| {
            let n = tx
                .execute(
                    "DELETE FROM webhook_endpoints WHERE name = ?1",
                    params![name],
                )
                .map_err(&err)?;
            tx.execute(
                "UPDATE outbox SET state = 'dead', last_error = 'the endpoint was deleted' \
                 WHERE state = 'pending' AND endpoint = ?1",
                params![name],
            )
            .map_err(&err)?;
            Ok(n)
        })?;
        Ok(n == 1)
    }

    /// How many rows are pending, in all.
    pub fn pending(&self) -> Result<u64, RecordsError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
                params![],
                |r| r.get(0),
            )
            .map_err(self.err("outbox pending"))
    }
}
