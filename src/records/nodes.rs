//! The cluster's nodes in the shared store (PostgreSQL): who is up, where its API is, when
//! it last showed it was alive, and which record-id prefix it uses. Times here are the
//! database's clock ([`DB_NOW_MS`]), so the nodes' clocks may disagree without a live node
//! being taken for dead.
//!
//! * [`NodeStore::join`] registers (or re-registers) a node and gives it a record-id prefix
//!   no other node uses.
//! * [`NodeStore::heartbeat`] renews the node's row (every `[cluster] heartbeat_s`).
//! * [`NodeStore::reap`] finds nodes silent for longer than `[cluster] node_timeout_s`:
//!   each is marked dead and its calls in progress unfinished, in one transaction, by
//!   exactly one surviving node (the row lock decides which).
//! * [`NodeStore::owner`] and [`NodeStore::active_elsewhere`] serve the API of any node:
//!   which node handles a call, and the other nodes' calls in progress.

use std::path::PathBuf;

use serde::Serialize;

use super::db::{Db, DbError, Dialect, StoreLocation, params};
use super::store::{COLUMNS, query_many, sql};
use super::{CallRecord, RecordsError, UnixMs};

/// Migration 16: which node handles each call, and the nodes.
pub(super) const MIGRATION: &str = "
    ALTER TABLE calls ADD COLUMN node TEXT;
    CREATE INDEX calls_node_active ON calls (node) WHERE ended_at IS NULL AND unfinished = 0;
    CREATE TABLE nodes (
        node_id       TEXT PRIMARY KEY NOT NULL,
        api_url       TEXT NOT NULL,
        record_prefix INTEGER NOT NULL,
        started_at    INTEGER NOT NULL,
        heartbeat_at  INTEGER NOT NULL,
        state         TEXT NOT NULL DEFAULT 'up'
                      CHECK (state IN ('up', 'draining', 'left', 'dead'))
    );
";

/// Migration 17: leases, each job of the cluster held by one node at a time.
pub(super) const LEASES_MIGRATION: &str = "
    CREATE TABLE leases (
        name       TEXT PRIMARY KEY NOT NULL,
        holder     TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
";

/// Migration 19: a counter per kind of shared setting (`routes`, `webhooks`) that a node
/// bumps when it changes one through its API; the other nodes see the count move and reload.
pub(super) const GENERATIONS_MIGRATION: &str = "
    CREATE TABLE generations (
        name TEXT PRIMARY KEY NOT NULL,
        n    INTEGER NOT NULL
    );
";

/// The database's clock in Unix milliseconds (PostgreSQL).
pub const DB_NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// The `end_reason` the reaper writes into the calls of a node that died.
pub const NODE_DIED_END_REASON: &str = "unfinished: its voxline node stopped during the call";

/// A node as the store has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NodeRow {
    /// `[cluster] node_id`.
    pub node_id: String,
    /// Its API's base URL.
    pub api_url: String,
    /// `up`, `draining`, `left` (stopped cleanly) or `dead` (silent past the timeout).
    pub state: String,
    /// When it last joined (database clock).
    pub started_at: UnixMs,
    /// Its last heartbeat (database clock).
    pub heartbeat_at: UnixMs,
}

/// What [`NodeStore::reap`] did to one dead node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// The node.
    pub node_id: String,
    /// Its calls marked unfinished.
    pub calls: usize,
}

/// The nodes table, through its own connection. Blocking: from async code, use it on the
/// blocking pool.
#[derive(Debug)]
pub struct NodeStore {
    conn: Db,
    path: PathBuf,
}

impl NodeStore {
    /// Opens the nodes of the shared store `at` (created and migrated by the record store).
    /// Fails on SQLite: a node alone has no cluster.
    pub fn open(at: &StoreLocation) -> Result<NodeStore, RecordsError> {
        let conn = super::store::open_read_write(at, "open nodes")?;
        let path = at.name();
        if conn.dialect() != Dialect::Postgres {
            return Err(RecordsError::Database {
                path,
                op: "open nodes",
                source: DbError::Column {
                    index: 0,
                    reason: "the cluster needs a PostgreSQL store".into(),
                },
            });
        }
        Ok(NodeStore { conn, path })
    }

    /// Registers `node` (up, heartbeat now) with its API's URL, and returns a record-id
    /// prefix for it: at least `wanted` (the caller's clock in ms, so ids keep growing
    /// across restarts) and above every other node's, so no two nodes make the same record
    /// id. Serialised with the other nodes' joins by a row lock on the table.
    pub fn join(&self, node: &str, api_url: &str, wanted: u64) -> Result<u64, RecordsError> {
        const OP: &str = "node join";
        let wanted = i64::try_from(wanted).unwrap_or(i64::MAX);
        self.conn
            .transaction(
                |e| e,
                |tx| {
                    tx.batch("LOCK TABLE nodes IN SHARE ROW EXCLUSIVE MODE")?;
                    let highest: i64 = tx.query_row(
                        "SELECT CAST(COALESCE(MAX(record_prefix), 0) AS BIGINT) FROM nodes \
                     WHERE node_id <> ?1",
                        params![node],
                        |r| r.get(0),
                    )?;
                    let prefix = wanted.max(highest.saturating_add(1));
                    tx.execute(
                        &format!(
                            "INSERT INTO nodes (node_id, api_url, record_prefix, started_at, \
                         heartbeat_at, state) VALUES (?1, ?2, ?3, {DB_NOW_MS}, {DB_NOW_MS}, 'up') \
                         ON CONFLICT (node_id) DO UPDATE SET api_url = excluded.api_url, \
                         record_prefix = excluded.record_prefix, \
                         started_at = excluded.started_at, \
                         heartbeat_at = excluded.heartbeat_at, state = 'up'"
                        ),
                        params![node, api_url, prefix],
                    )?;
                    Ok::<_, DbError>(prefix)
                },
            )
            .map(|p| u64::try_from(p).unwrap_or(0))
            .map_err(sql(&self.path, OP))
    }

    /// Renews `node`'s heartbeat with its state (`up` or `draining`). Returns the state the
    /// row had: `dead` means another node took this one for dead (its calls were marked
    /// unfinished; their final records will correct that).
    pub fn heartbeat(&self, node: &str, state: &str) -> Result<Option<String>, RecordsError> {
        const OP: &str = "node heartbeat";
        self.conn
            .query_opt(
                &format!(
                    "UPDATE nodes SET heartbeat_at = {DB_NOW_MS}, state = ?2 \
                     FROM (SELECT node_id, state AS before FROM nodes WHERE node_id = ?1 \
                     FOR UPDATE) old WHERE nodes.node_id = old.node_id RETURNING old.before"
                ),
                params![node, state],
                |r| r.get(0),
            )
            .map_err(sql(&self.path, OP))
    }

    /// Marks `node` as left (a clean stop).
    pub fn leave(&self, node: &str) -> Result<(), RecordsError> {
        self.conn
            .execute(
                &format!(
                    "UPDATE nodes SET state = 'left', heartbeat_at = {DB_NOW_MS} \
                     WHERE node_id = ?1"
                ),
                params![node],
            )
            .map(|_| ())
            .map_err(sql(&self.path, "node leave"))
    }

    /// Finds the nodes (other than `me`) silent for longer than `timeout_ms`: each becomes
    /// `dead` and its calls in progress unfinished, in one transaction. A node another
    /// survivor reaped first is not reaped again (the update sees it dead already).
    pub fn reap(&self, me: &str, timeout_ms: i64) -> Result<Vec<Reaped>, RecordsError> {
        const OP: &str = "node reap";
        self.conn.transaction(sql(&self.path, OP), |tx| {
            let dead: Vec<String> = tx
                .query_map(
                    &format!(
                        "UPDATE nodes SET state = 'dead' WHERE state IN ('up', 'draining') \
                         AND node_id <> ?1 AND heartbeat_at < {DB_NOW_MS} - ?2 \
                         RETURNING node_id"
                    ),
                    params![me, timeout_ms],
                    |r| r.get(0),
                )
                .map_err(sql(&self.path, OP))?;
            let mut out = Vec::with_capacity(dead.len());
            for node_id in dead {
                let calls = tx
                    .execute(
                        "UPDATE calls SET unfinished = 1, end_reason = ?1 \
                         WHERE node = ?2 AND ended_at IS NULL AND unfinished = 0",
                        params![NODE_DIED_END_REASON, node_id],
                    )
                    .map_err(sql(&self.path, OP))?;
                out.push(Reaped { node_id, calls });
            }
            Ok(out)
        })
    }

    /// Takes or renews the lease `name` for `holder` for `ttl_ms` from now (database clock):
    /// granted when nobody holds it, `holder` holds it already, or the holder let it expire.
    /// Returns whether `holder` holds it now. One statement: two nodes asking at once
    /// cannot both get it.
    pub fn lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, RecordsError> {
        self.conn
            .query_opt(
                &format!(
                    "INSERT INTO leases (name, holder, expires_at) \
                     VALUES (?1, ?2, {DB_NOW_MS} + ?3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                     expires_at = excluded.expires_at \
                     WHERE leases.holder = excluded.holder OR leases.expires_at < {DB_NOW_MS} \
                     RETURNING holder"
                ),
                params![name, holder, ttl_ms],
                |r| r.get::<String>(0),
            )
            .map(|h| h.is_some())
            .map_err(sql(&self.path, "lease"))
    }

    /// Gives the lease `name` up if `holder` has it (a clean stop: another node takes it
    /// on its next heartbeat instead of waiting for it to expire).
    pub fn release(&self, name: &str, holder: &str) -> Result<(), RecordsError> {
        self.conn
            .execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )
            .map(|_| ())
            .map_err(sql(&self.path, "lease release"))
    }

    /// Who holds each lease now (`name`, holder), by name; expired ones left out.
    pub fn leases(&self) -> Result<Vec<(String, String)>, RecordsError> {
        self.conn
            .query_map(
                &format!(
                    "SELECT name, holder FROM leases WHERE expires_at >= {DB_NOW_MS} \
                     ORDER BY name"
                ),
                params![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sql(&self.path, "leases"))
    }

    /// Counts one more change of the settings `name` (`routes`, `webhooks`).
    pub fn bump(&self, name: &str) -> Result<(), RecordsError> {
        self.conn
            .execute(
                "INSERT INTO generations (name, n) VALUES (?1, 1) \
                 ON CONFLICT (name) DO UPDATE SET n = generations.n + 1",
                params![name],
            )
            .map(|_| ())
            .map_err(sql(&self.path, "generation bump"))
    }

    /// The change count of every kind of setting, by name.
    pub fn generations(&self) -> Result<Vec<(String, i64)>, RecordsError> {
        self.conn
            .query_map(
                "SELECT name, n FROM generations ORDER BY name",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sql(&self.path, "generations"))
    }

    /// Every node, by id.
    pub fn list(&self) -> Result<Vec<NodeRow>, RecordsError> {
        self.conn
            .query_map(
                "SELECT node_id, api_url, state, started_at, heartbeat_at FROM nodes \
                 ORDER BY node_id",
                params![],
                |r| {
                    Ok(NodeRow {
                        node_id: r.get(0)?,
                        api_url: r.get(1)?,
                        state: r.get(2)?,
                        started_at: r.get(3)?,
                        heartbeat_at: r.get(4)?,
                    })
                },
            )
            .map_err(sql(&self.path, "node list"))
    }

    /// The node that handles the call with record id `record_id`, and its API's URL, if the
    /// call is in progress on a node that is up or draining.
    pub fn owner(&self, record_id: &str) -> Result<Option<(String, String)>, RecordsError> {
        self.conn
            .query_opt(
                "SELECT n.node_id, n.api_url FROM calls c JOIN nodes n ON n.node_id = c.node \
                 WHERE c.id = ?1 AND c.ended_at IS NULL AND c.unfinished = 0 \
                 AND n.state IN ('up', 'draining')",
                params![record_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sql(&self.path, "call owner"))
    }

    /// The API's URL of `node`, if it is up or draining.
    pub fn api_url(&self, node: &str) -> Result<Option<String>, RecordsError> {
        self.conn
            .query_opt(
                "SELECT api_url FROM nodes WHERE node_id = ?1 AND state IN ('up', 'draining')",
                params![node],
                |r| r.get(0),
            )
            .map_err(sql(&self.path, "node api_url"))
    }

    /// The calls in progress on the nodes other than `me`, oldest first.
    pub fn active_elsewhere(&self, me: &str) -> Result<Vec<CallRecord>, RecordsError> {
        query_many(
            &self.conn,
            &self.path,
            "calls elsewhere",
            &format!(
                "SELECT {COLUMNS} FROM calls WHERE ended_at IS NULL AND unfinished = 0 \
                 AND node IS NOT NULL AND node <> ?1 ORDER BY started_at, id"
            ),
            params![me],
        )
    }
}
