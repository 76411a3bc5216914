//! The call-record database: SQLite at `DATA_DIR/voxline.db`.
//!
//! ## Durability choices
//!
//! * `journal_mode=WAL`: a commit appends to `voxline.db-wal`; readers never block the writer
//!   and the writer never blocks readers, so the HTTP API can list calls while calls are being
//!   recorded. WAL is a property of the file and stays on.
//! * `synchronous=FULL`: every commit fsyncs the WAL before `COMMIT` returns. So once
//!   [`RecordStore::finish`] has returned, the record survives a process crash **and** an
//!   OS crash or power loss. With `synchronous=NORMAL` it would survive a process crash (the
//!   WAL pages are in the OS page cache) but the last commits before a power loss could roll
//!   back. voxline writes three small rows per call (start, answer, finish); the writer
//!   commits everything queued in one transaction (up to 256 rows), so the fsync is shared
//!   under load and cheap, and it happens on the writer thread of [`RecordWriter`], never on a
//!   tokio worker. Either way a crash never corrupts the file: a commit that was cut off is
//!   rolled back when the database is next opened.
//! * Every write is one statement, atomic on its own; [`RecordStore::finish`] writes the whole
//!   final row in one upsert, so a reader sees either the row as it was during the call or the final row.
//!
//! ## Crash recovery
//!
//! [`RecordStore::open`] marks every row without `ended_at` (and not already marked) as
//! [unfinished](CallRecord::unfinished) with `end_reason` = [`UNFINISHED_END_REASON`], and
//! reports how many it marked ([`RecordStore::recovered_unfinished`]). `ended_at` stays
//! `NULL`: when the call really ended is unknown. This assumes one voxline process per data
//! directory: a second process opening the same directory would mark the first one's live
//! calls as unfinished.
//!
//! ## Schema
//!
//! The `schema_version` table holds one row per applied migration; [`RecordStore::open`]
//! applies the missing ones in one transaction and refuses a database whose version is newer
//! than this build knows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::db::{Db, DbError, Dialect, Row, StoreLocation, ToValue, params};

use super::outbox::{self, Subscription};
use super::{
    CallRecord, DB_FILE_NAME, Direction, RecordsError, ToolCallRecord, TurnLatency,
    UNFINISHED_END_REASON, UnixMs,
};

/// How long a connection waits for a lock held by another connection before failing with
/// `SQLITE_BUSY`. In WAL mode only the rare checkpoint-restart can make a reader wait.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Another read-write connection to the records database (the outbox's, the agents', ...).
/// SQLite: the existing file, with the store's busy timeout and `synchronous=FULL`;
/// PostgreSQL: a new connection. Blocking. `op` names it in errors.
pub(super) fn open_read_write(at: &StoreLocation, op: &'static str) -> Result<Db, RecordsError> {
    let path = at.name();
    match at {
        StoreLocation::Sqlite { .. } => {
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(lite(&path, op))?;
            conn.busy_timeout(BUSY_TIMEOUT)
                .map_err(lite(&path, "set busy_timeout"))?;
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(lite(&path, "set synchronous=FULL"))?;
            Ok(Db::sqlite(conn, path))
        }
        StoreLocation::Postgres { url } => Db::postgres(url).map_err(sql(&path, op)),
    }
}

/// The synchronous database: one read-write connection. Use it directly from synchronous
/// code (tools, tests); async code uses [`RecordWriter`] and [`RecordReader`].
#[derive(Debug)]
pub struct RecordStore {
    conn: Db,
    path: PathBuf,
    location: StoreLocation,
    /// The cluster node this store writes for (`calls.node`), if any.
    node: Option<String>,
    recovered: usize,
    /// The webhook endpoints whose events each operation writes to the outbox.
    subscriptions: outbox::SharedSubscriptions,
    redactor: Arc<super::redact::Redactor>,
}

impl RecordStore {
    /// Opens (creating if needed) `data_dir/voxline.db`: creates the directory, sets
    /// `journal_mode=WAL` and `synchronous=FULL`, migrates the schema, then runs the
    /// crash-recovery pass (see the module docs).
    pub fn open(data_dir: impl AsRef<Path>) -> Result<RecordStore, RecordsError> {
        RecordStore::open_at(&StoreLocation::sqlite(data_dir.as_ref()))
    }

    /// Opens the records database at `at`: [`open`](Self::open) for SQLite; for PostgreSQL,
    /// connects, migrates the schema (one node at a time, under an advisory lock) and runs
    /// the same recovery pass. Blocking.
    pub fn open_at(at: &StoreLocation) -> Result<RecordStore, RecordsError> {
        RecordStore::open_for(at, None)
    }

    /// [`open_at`](Self::open_at) for cluster node `node`: the calls it records carry its
    /// id, and on PostgreSQL the recovery pass marks only its own calls (another node's
    /// calls are its own business, or the cluster's reaper's when that node dies).
    pub fn open_for(at: &StoreLocation, node: Option<&str>) -> Result<RecordStore, RecordsError> {
        let conn = match at {
            StoreLocation::Sqlite { data_dir } => open_sqlite(data_dir)?,
            StoreLocation::Postgres { .. } => open_read_write(at, "open")?,
        };
        let mut store = RecordStore {
            path: conn.name().to_path_buf(),
            conn,
            location: at.clone(),
            node: node.map(str::to_owned),
            recovered: 0,
            subscriptions: Default::default(),
            redactor: Arc::default(),
        };
        store.migrate()?;
        store.recovered = store.recover()?;
        Ok(store)
    }

    /// The database's name: the SQLite file, or the PostgreSQL URL without its password.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the database is.
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// How many in-progress rows the recovery pass of [`open`](Self::open) marked unfinished.
    pub fn recovered_unfinished(&self) -> usize {
        self.recovered
    }

    /// Inserts the record of a call that has just started. Fails if a record with the same
    /// id exists.
    pub fn insert_started(&mut self, record: &CallRecord) -> Result<(), RecordsError> {
        const OP: &str = "insert_started";
        let row = EncodedJson::new(&self.path, OP, record)?;
        self.conn
            .execute(
                &format!("INSERT INTO calls ({COLUMNS}) VALUES ({PLACEHOLDERS})"),
                &record_params(record, &row, &self.node),
            )
            .map_err(sql(&self.path, OP))?;
        Ok(())
    }

    /// Sets `answered_at` of a record.
    pub fn update_answered(&mut self, id: &str, at: UnixMs) -> Result<(), RecordsError> {
        const OP: &str = "update_answered";
        let n = self
            .conn
            .execute(
                "UPDATE calls SET answered_at = ?1 WHERE id = ?2",
                params![at, id],
            )
            .map_err(sql(&self.path, OP))?;
        if n == 0 {
            return Err(RecordsError::NotFound {
                path: self.path.clone(),
                op: OP,
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    /// Writes the final record of a call in one transaction: inserts it, or replaces every
    /// column of the existing row. `record.ended_at` must be set. Once this returns `Ok`, the
    /// record is on disk (fsynced).
    pub fn finish(&mut self, record: &CallRecord) -> Result<(), RecordsError> {
        const OP: &str = "finish";
        if record.ended_at.is_none() {
            return Err(RecordsError::NotEnded {
                path: self.path.clone(),
                id: record.id.clone(),
            });
        }
        let row = EncodedJson::new(&self.path, OP, record)?;
        // One statement: atomic on its own, inside a batch's transaction or not.
        self.conn
            .execute(
                &format!(
                    "INSERT INTO calls ({COLUMNS}) VALUES ({PLACEHOLDERS}) \
                     ON CONFLICT(id) DO UPDATE SET {UPSERT_SET}"
                ),
                &record_params(record, &row, &self.node),
            )
            .map_err(sql(&self.path, OP))?;
        Ok(())
    }

    /// Stores a call's post-call analysis. The row exists from the call's start
    /// ([`insert_started`](Self::insert_started)), so the analysis may come before or after
    /// the final record; [`finish`](Self::finish) keeps it.
    pub fn set_analysis(
        &mut self,
        id: &str,
        analysis: &super::CallAnalysis,
    ) -> Result<(), RecordsError> {
        const OP: &str = "set_analysis";
        let text = serde_json::to_string(analysis).map_err(|source| RecordsError::Encode {
            path: self.path.clone(),
            op: OP,
            id: id.to_owned(),
            column: "analysis",
            source,
        })?;
        let n = self
            .conn
            .execute(
                "UPDATE calls SET analysis = ?1 WHERE id = ?2",
                params![text, id],
            )
            .map_err(sql(&self.path, OP))?;
        if n == 0 {
            return Err(RecordsError::NotFound {
                path: self.path.clone(),
                op: OP,
                id: id.to_owned(),
            });
        }
        Ok(())
    }

    /// From now on, every [`apply`](Self::apply) also writes the webhook events of `subs`
    /// to the outbox ([`super::outbox`]), in the same savepoint as the record change.
    pub fn set_subscriptions(&mut self, subs: Vec<Subscription>) {
        self.subscriptions = std::sync::Arc::new(std::sync::RwLock::new(subs));
    }

    /// Like [`set_subscriptions`](Self::set_subscriptions), with a list others change
    /// (endpoints added and removed through the API apply to the next operation).
    pub fn share_subscriptions(&mut self, subs: outbox::SharedSubscriptions) {
        self.subscriptions = subs;
    }

    /// Redacts the free text of the webhook events' payloads with `redactor`
    /// ([`super::redact::Redactor::json`]).
    pub fn set_redactor(&mut self, redactor: Arc<super::redact::Redactor>) {
        self.redactor = redactor;
    }

    /// Applies one [`RecordOp`], with its webhook events when there are subscriptions: the
    /// change and its events are one savepoint, so both are written or neither is.
    pub fn apply(&mut self, op: &RecordOp) -> Result<(), RecordsError> {
        self.apply_in(op, false)
    }

    /// An operation and its events inside the caller's transaction, without a savepoint:
    /// the caller rolls the whole transaction back if this fails.
    fn apply_unguarded(&mut self, op: &RecordOp) -> Result<(), RecordsError> {
        const OP: &str = "apply with webhook events";
        self.apply_record(op)?;
        let subs = outbox::current(&self.subscriptions);
        if subs.is_empty() {
            return Ok(());
        }
        outbox::enqueue(&self.conn, &subs, &self.redactor, op).map_err(sql(&self.path, OP))
    }

    /// [`apply`](Self::apply), inside a transaction the caller opened (`in_tx`) or not.
    /// Outside one, an operation with webhook events is its own transaction. Inside one
    /// (SQLite), it is a savepoint, so that its failure leaves the transaction's other
    /// operations in.
    fn apply_in(&mut self, op: &RecordOp, in_tx: bool) -> Result<(), RecordsError> {
        const OP: &str = "apply with webhook events";
        let subs = outbox::current(&self.subscriptions);
        if subs.is_empty() {
            return self.apply_record(op);
        }
        if !in_tx {
            self.conn.begin().map_err(sql(&self.path, OP))?;
            let result = self.apply_record(op).and_then(|()| {
                outbox::enqueue(&self.conn, &subs, &self.redactor, op).map_err(sql(&self.path, OP))
            });
            return match result {
                Ok(()) => self.conn.commit().map_err(sql(&self.path, OP)),
                Err(e) => {
                    self.conn.rollback();
                    Err(e)
                }
            };
        }
        self.conn
            .batch("SAVEPOINT record_op")
            .map_err(sql(&self.path, OP))?;
        let result = self.apply_record(op).and_then(|()| {
            outbox::enqueue(&self.conn, &subs, &self.redactor, op).map_err(sql(&self.path, OP))
        });
        let end = match result {
            Ok(()) => "RELEASE record_op",
            Err(_) => "ROLLBACK TO record_op; RELEASE record_op",
        };
        self.conn.batch(end).map_err(sql(&self.path, OP))?;
        result
    }

    fn apply_record(&mut self, op: &RecordOp) -> Result<(), RecordsError> {
        match op {
            RecordOp::Started(r) => self.insert_started(r),
            RecordOp::Answered { id, at } => self.update_answered(id, *at),
            RecordOp::Finished(r) => self.finish(r),
            RecordOp::Analyzed { id, analysis } => self.set_analysis(id, analysis),
        }
    }

    /// Applies several [`RecordOp`]s in order in one transaction: one commit (one fsync)
    /// for all of them, so that the writer keeps up with thousands of calls a second. Each
    /// operation is one statement, atomic on its own: one that fails (a missing row, a
    /// duplicate id) leaves the others in. Returns each operation's result; if the commit
    /// itself fails, the batch is rolled back and applied again one by one.
    pub fn apply_batch(&mut self, ops: &[RecordOp]) -> Vec<Result<(), RecordsError>> {
        const OP: &str = "apply_batch";
        if ops.len() > 1 && self.conn.begin().is_ok() {
            if self.conn.dialect() == Dialect::Postgres {
                // No savepoint per operation (two more round trips each): the batch goes in
                // whole, and if one operation fails (which aborts the transaction there) it
                // is rolled back and applied again one by one, each operation with its
                // events its own transaction.
                let mut failed = false;
                for op in ops {
                    if self.apply_unguarded(op).is_err() {
                        failed = true;
                        break;
                    }
                }
                if !failed && self.conn.commit().is_ok() {
                    return ops.iter().map(|_| Ok(())).collect();
                }
                self.conn.rollback();
                return ops.iter().map(|op| self.apply(op)).collect();
            }
            let results: Vec<_> = ops.iter().map(|op| self.apply_in(op, true)).collect();
            match self.conn.commit() {
                Ok(()) => return results,
                Err(e) => {
                    tracing::warn!(error = %sql(&self.path, OP)(e), ops = ops.len(), "call records: a batch did not commit; writing its rows one by one");
                    self.conn.rollback();
                }
            }
        }
        ops.iter().map(|op| self.apply(op)).collect()
    }

    /// The record with this id, if any.
    pub fn get(&self, id: &str) -> Result<Option<CallRecord>, RecordsError> {
        query_get(&self.conn, &self.path, id)
    }

    /// Records newest first (by `started_at`), skipping `offset` and returning at most
    /// `limit`.
    pub fn list(&self, limit: u32, offset: u32) -> Result<Vec<CallRecord>, RecordsError> {
        query_list(&self.conn, &self.path, limit, offset)
    }

    /// Calls in progress (no `ended_at`, not unfinished), oldest first.
    pub fn list_active(&self) -> Result<Vec<CallRecord>, RecordsError> {
        query_active(&self.conn, &self.path)
    }
}

/// A write for [`RecordWriter`]: one of the [`RecordStore`] write methods.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordOp {
    /// [`RecordStore::insert_started`].
    Started(Box<CallRecord>),
    /// [`RecordStore::update_answered`].
    Answered {
        /// Record id.
        id: String,
        /// When the call was answered.
        at: UnixMs,
    },
    /// [`RecordStore::finish`].
    Finished(Box<CallRecord>),
    /// [`RecordStore::set_analysis`].
    Analyzed {
        /// Record id.
        id: String,
        /// The analysis.
        analysis: Box<super::CallAnalysis>,
    },
}

impl RecordOp {
    /// The operation's name, as used in errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            RecordOp::Started(_) => "insert_started",
            RecordOp::Answered { .. } => "update_answered",
            RecordOp::Finished(_) => "finish",
            RecordOp::Analyzed { .. } => "set_analysis",
        }
    }

    /// The id of the record the operation writes.
    pub fn id(&self) -> &str {
        match self {
            RecordOp::Started(r) | RecordOp::Finished(r) => &r.id,
            RecordOp::Answered { id, .. } | RecordOp::Analyzed { id, .. } => id,
        }
    }
}

/// Counters of a [`RecordWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Operations written to the database.
    pub applied: u64,
    /// Operations the database refused (logged with `tracing::error!`, the record as JSON).
    pub failed: u64,
    /// Operations [`RecordWriter::send`] dropped because the queue was full or the writer
    /// had stopped.
    pub dropped: u64,
}

/// The write side for async code: a dedicated thread owns the read-write connection and
/// applies [`RecordOp`]s in the order they were sent, taken from a bounded queue.
///
/// [`send`](Self::send) never blocks: when the queue is full the operation is dropped,
/// counted and reported as an error (backpressure shows up as errors, never as a stalled
/// tokio worker). Cloning gives another handle to the same thread.
/// [`shutdown`](Self::shutdown) writes out everything queued and joins the thread; call it
/// before the process exits, or queued operations may be lost with the process.
#[derive(Debug, Clone)]
pub struct RecordWriter {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
}

impl RecordWriter {
    /// Queue capacity used by [`spawn`](Self::spawn).
    pub const DEFAULT_CAPACITY: usize = 1024;

    /// Opens the store (see [`RecordStore::open`]; errors come back here), starts the writer
    /// thread, and opens a read-only connection for queries.
    pub fn spawn(data_dir: impl AsRef<Path>) -> Result<(RecordWriter, RecordReader), RecordsError> {
        RecordWriter::spawn_with_capacity(data_dir, RecordWriter::DEFAULT_CAPACITY)
    }

    /// [`spawn`](Self::spawn) with a given queue capacity (at least 1).
    pub fn spawn_with_capacity(
        data_dir: impl AsRef<Path>,
        capacity: usize,
    ) -> Result<(RecordWriter, RecordReader), RecordsError> {
        RecordWriter::spawn_with(
            &StoreLocation::sqlite(data_dir.as_ref()),
            None,
            capacity,
            Arc::default(),
            Arc::default(),
        )
    }

    /// [`spawn_with_capacity`](Self::spawn_with_capacity), the writer also writing the
    /// webhook events of `subs` with each operation (see [`RecordStore::set_subscriptions`]),
    /// their free text redacted by `redactor`.
    /// The database is `at`, written for cluster node `node` ([`RecordStore::open_for`]).
    pub fn spawn_with(
        at: &StoreLocation,
        node: Option<&str>,
        capacity: usize,
        subs: outbox::SharedSubscriptions,
        redactor: Arc<super::redact::Redactor>,
    ) -> Result<(RecordWriter, RecordReader), RecordsError> {
        let capacity = capacity.max(1);
        let mut store = RecordStore::open_for(at, node)?;
        store.share_subscriptions(subs);
        store.set_redactor(redactor);
        let path = store.path.clone();
        let reader = RecordReader::open_at(at)?;
        let shared = Arc::new(Shared {
            path: path.clone(),
            location: at.clone(),
            capacity,
            recovered: store.recovered,
            applied: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            thread: Mutex::new(None),
        });
        let (tx, rx) = sync_channel(capacity);
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("voxline-records".into())
            .spawn(move || writer_loop(store, rx, &thread_shared))
            .map_err(|e| RecordsError::WriterThread {
                path: path.clone(),
                op: "spawn",
                reason: e.to_string(),
            })?;
        *lock(&shared.thread) = Some(handle);
        Ok((RecordWriter { tx, shared }, reader))
    }

    /// Queues an operation without blocking. Fails (and counts the drop) when the queue is
    /// full or the writer has stopped.
    pub fn send(&self, op: RecordOp) -> Result<(), RecordsError> {
        let name = op.name();
        match self.tx.try_send(Msg::Op(op)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                Err(RecordsError::QueueFull {
                    path: self.shared.path.clone(),
                    op: name,
                    capacity: self.shared.capacity,
                })
            }
            Err(TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                Err(RecordsError::WriterStopped {
                    path: self.shared.path.clone(),
                    op: name,
                })
            }
        }
    }

    /// Blocks until every operation sent before this call has been applied (or has failed).
    /// Blocking: from async code, call it inside `spawn_blocking`.
    pub fn flush(&self) -> Result<(), RecordsError> {
        let (ack_tx, ack_rx) = sync_channel(1);
        let stopped = || RecordsError::WriterStopped {
            path: self.shared.path.clone(),
            op: "flush",
        };
        self.tx.send(Msg::Flush(ack_tx)).map_err(|_| stopped())?;
        ack_rx.recv().map_err(|_| stopped())
    }

    /// The writer's counters so far.
    pub fn stats(&self) -> WriterStats {
        self.shared.stats()
    }

    /// How many in-progress rows the recovery pass marked unfinished when the store was
    /// opened.
    pub fn recovered_unfinished(&self) -> usize {
        self.shared.recovered
    }

    /// The database's name: the SQLite file, or the PostgreSQL URL without its password.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Where the database is (to open the other tables' connections).
    pub fn location(&self) -> &StoreLocation {
        &self.shared.location
    }

    /// Applies everything queued, stops the thread and joins it; returns the final counters.
    /// Other clones' later sends fail with [`RecordsError::WriterStopped`]. Blocking (waits
    /// for the queue to drain).
    pub fn shutdown(self) -> Result<WriterStats, RecordsError> {
        // A closed channel means the thread is already gone; joining below says how it ended.
        let _ = self.tx.send(Msg::Shutdown);
        let handle = lock(&self.shared.thread).take();
        if let Some(handle) = handle {
            handle.join().map_err(|_| RecordsError::WriterThread {
                path: self.shared.path.clone(),
                op: "shutdown",
                reason: "the writer thread panicked".into(),
            })?;
        }
        Ok(self.shared.stats())
    }
}

/// The read side for async code: a read-only connection (WAL lets it read while the writer
/// writes). Its methods are synchronous but do not wait for the writer; they read the
/// committed state. Cloning shares the connection (queries take turns).
#[derive(Debug, Clone)]
pub struct RecordReader {
    conn: Arc<Mutex<Db>>,
    path: PathBuf,
    location: StoreLocation,
}

impl RecordReader {
    /// Opens `data_dir/voxline.db` read-only, for example for a tool that lists calls while
    /// voxline runs. The database must exist (a [`RecordStore`] created it).
    pub fn open(data_dir: impl AsRef<Path>) -> Result<RecordReader, RecordsError> {
        RecordReader::open_at(&StoreLocation::sqlite(data_dir.as_ref()))
    }

    /// Opens a reading connection to the database at `at`: read-only for SQLite (the file
    /// must exist), a new connection for PostgreSQL. Blocking.
    pub fn open_at(at: &StoreLocation) -> Result<RecordReader, RecordsError> {
        let conn = match at {
            StoreLocation::Sqlite { data_dir } => open_read_only(&data_dir.join(DB_FILE_NAME))?,
            StoreLocation::Postgres { .. } => open_read_write(at, "open reader")?,
        };
        Ok(RecordReader {
            path: conn.name().to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
            location: at.clone(),
        })
    }

    /// The database's name: the SQLite file, or the PostgreSQL URL without its password.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the database is.
    pub fn location(&self) -> &StoreLocation {
        &self.location
    }

    /// The record with this id, if any.
    pub fn get(&self, id: &str) -> Result<Option<CallRecord>, RecordsError> {
        query_get(&lock(&self.conn), &self.path, id)
    }

    /// Records newest first, as [`RecordStore::list`].
    pub fn list(&self, limit: u32, offset: u32) -> Result<Vec<CallRecord>, RecordsError> {
        query_list(&lock(&self.conn), &self.path, limit, offset)
    }

    /// Calls in progress, as [`RecordStore::list_active`].
    pub fn list_active(&self) -> Result<Vec<CallRecord>, RecordsError> {
        query_active(&lock(&self.conn), &self.path)
    }

    /// Runs `f` with the connection (locked) and the database's path.
    pub(super) fn with_conn<T>(&self, f: impl FnOnce(&Db, &Path) -> T) -> T {
        f(&lock(&self.conn), &self.path)
    }
}

/// Opens (creating if needed) `data_dir/voxline.db` read-write, in WAL mode with
/// `synchronous=FULL`.
fn open_sqlite(dir: &Path) -> Result<Db, RecordsError> {
    std::fs::create_dir_all(dir).map_err(|source| RecordsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(DB_FILE_NAME);
    let conn = Connection::open(&path).map_err(lite(&path, "open"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(lite(&path, "set busy_timeout"))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(lite(&path, "set journal_mode=WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(RecordsError::NoWal { path, mode });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(lite(&path, "set synchronous=FULL"))?;
    Ok(Db::sqlite(conn, path))
}

fn open_read_only(path: &Path) -> Result<Db, RecordsError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(lite(path, "open read-only"))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(lite(path, "set busy_timeout"))?;
    Ok(Db::sqlite(conn, path.to_path_buf()))
}

// ---------------------------------------------------------------------------------------
// Private: schema, row encoding, queries, the writer thread.

/// The key of the PostgreSQL advisory lock that serialises migrations ("voxline" in ASCII).
const MIGRATION_LOCK: i64 = 0x0076_6f78_6c69_6e65;

/// Schema migrations; `MIGRATIONS[i]` brings the schema to version `i + 1`. Written in
/// SQLite's dialect; PostgreSQL gets them through [`super::db::pg_schema`].
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE calls (
        id              TEXT PRIMARY KEY NOT NULL,
        call_id         TEXT NOT NULL,
        from_uri        TEXT NOT NULL,
        to_uri          TEXT NOT NULL,
        direction       TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
        trunk           TEXT,
        agent           TEXT NOT NULL,
        started_at      INTEGER NOT NULL,
        answered_at     INTEGER,
        ended_at        INTEGER,
        end_reason      TEXT,
        sip_code        INTEGER,
        codec           TEXT,
        loss_percent    REAL,
        jitter_ms       REAL,
        mos             REAL,
        turn_latencies  TEXT NOT NULL DEFAULT '[]',
        tool_calls      TEXT NOT NULL DEFAULT '[]',
        transcript_path TEXT,
        recording_path  TEXT,
        unfinished      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX calls_started_at ON calls (started_at);
    CREATE INDEX calls_call_id ON calls (call_id);
    CREATE INDEX calls_active ON calls (started_at) WHERE ended_at IS NULL AND unfinished = 0;
",
    "
    ALTER TABLE calls ADD COLUMN transfer TEXT;
",
    "
    ALTER TABLE calls ADD COLUMN dsp TEXT;
",
    "
    ALTER TABLE calls ADD COLUMN backend_switches TEXT NOT NULL DEFAULT '[]';
",
    outbox::MIGRATION,
    super::agents::MIGRATION,
    "
    ALTER TABLE calls ADD COLUMN agent_version INTEGER;
",
    super::agents::ROUTES_MIGRATION,
    "
    ALTER TABLE calls ADD COLUMN media_deleted_at INTEGER;
    CREATE INDEX calls_ended_at ON calls (ended_at) WHERE ended_at IS NOT NULL;
",
    "
    ALTER TABLE calls ADD COLUMN analysis TEXT;
",
    super::memory::MIGRATION,
    super::campaigns::MIGRATION,
    outbox::ENDPOINTS_MIGRATION,
    "
    ALTER TABLE calls ADD COLUMN barge_ins INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX calls_agent_started ON calls (agent, started_at);
",
    super::uploads::MIGRATION,
    super::nodes::MIGRATION,
    super::nodes::LEASES_MIGRATION,
    super::campaigns::PACING_MIGRATION,
    super::nodes::GENERATIONS_MIGRATION,
    super::campaigns::TARGET_NODE_MIGRATION,
    super::campaigns::TRUNK_LIMITS_MIGRATION,
];

/// The `calls` columns in [`record_params`] order.
pub(super) const COLUMNS: &str = "id, call_id, from_uri, to_uri, direction, trunk, agent, started_at, \
    answered_at, ended_at, end_reason, sip_code, codec, loss_percent, jitter_ms, mos, \
    turn_latencies, tool_calls, transcript_path, recording_path, unfinished, transfer, dsp, \
    backend_switches, agent_version, media_deleted_at, analysis, barge_ins, recording_url, node";

const PLACEHOLDERS: &str = "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30";

/// Every column but `id` replaced by the new row's value; `analysis` only by a value (the
/// analysis may be written before the final record).
const UPSERT_SET: &str = "call_id = excluded.call_id, from_uri = excluded.from_uri, \
    to_uri = excluded.to_uri, direction = excluded.direction, trunk = excluded.trunk, \
    agent = excluded.agent, started_at = excluded.started_at, \
    answered_at = excluded.answered_at, ended_at = excluded.ended_at, \
    end_reason = excluded.end_reason, sip_code = excluded.sip_code, codec = excluded.codec, \
    loss_percent = excluded.loss_percent, jitter_ms = excluded.jitter_ms, mos = excluded.mos, \
    turn_latencies = excluded.turn_latencies, tool_calls = excluded.tool_calls, \
    transcript_path = excluded.transcript_path, recording_path = excluded.recording_path, \
    unfinished = excluded.unfinished, transfer = excluded.transfer, dsp = excluded.dsp, \
    backend_switches = excluded.backend_switches, agent_version = excluded.agent_version, \
    media_deleted_at = excluded.media_deleted_at, \
    analysis = COALESCE(excluded.analysis, calls.analysis), barge_ins = excluded.barge_ins, \
    recording_url = COALESCE(excluded.recording_url, calls.recording_url), node = excluded.node";

impl RecordStore {
    fn migrate(&mut self) -> Result<(), RecordsError> {
        const OP: &str = "migrate schema";
        let path = self.path.clone();
        let dialect = self.conn.dialect();
        self.conn.transaction(sql(&path, OP), |tx| {
            if dialect == Dialect::Postgres {
                // Nodes starting together migrate one after the other; the lock ends with
                // the transaction.
                tx.query_row(
                    "SELECT pg_advisory_xact_lock(?1)",
                    params![MIGRATION_LOCK],
                    |_| Ok(()),
                )
                .map_err(sql(&path, OP))?;
            }
            let version_table = "CREATE TABLE IF NOT EXISTS schema_version (
                    version    INTEGER PRIMARY KEY NOT NULL,
                    applied_at INTEGER NOT NULL
                );";
            let version_table = match dialect {
                Dialect::Sqlite => version_table.to_owned(),
                Dialect::Postgres => super::db::pg_schema(version_table),
            };
            tx.batch(&version_table).map_err(sql(&path, OP))?;
            let current: i64 = tx
                .query_row(
                    "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM schema_version",
                    params![],
                    |r| r.get(0),
                )
                .map_err(sql(&path, OP))?;
            let supported = MIGRATIONS.len() as i64;
            if current > supported {
                return Err(RecordsError::SchemaTooNew {
                    path: path.clone(),
                    found: current,
                    supported,
                });
            }
            for (version, migration) in (1_i64..).zip(MIGRATIONS).skip(current.max(0) as usize) {
                let ddl = match dialect {
                    Dialect::Sqlite => (*migration).to_owned(),
                    Dialect::Postgres => super::db::pg_schema(migration),
                };
                tx.batch(&ddl).map_err(sql(&path, OP))?;
                tx.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                    params![version, UnixMs::now().0],
                )
                .map_err(sql(&path, OP))?;
            }
            Ok(())
        })
    }

    /// The crash-recovery pass: marks in-progress rows unfinished; returns how many.
    fn recover(&mut self) -> Result<usize, RecordsError> {
        const OP: &str = "mark unfinished calls";
        match (self.conn.dialect(), &self.node) {
            // One process per data directory: every call in progress was this one's.
            (Dialect::Sqlite, _) => self.conn.execute(
                "UPDATE calls SET unfinished = 1, end_reason = ?1 \
                 WHERE ended_at IS NULL AND unfinished = 0",
                params![UNFINISHED_END_REASON],
            ),
            (Dialect::Postgres, Some(node)) => self.conn.execute(
                "UPDATE calls SET unfinished = 1, end_reason = ?1 \
                 WHERE ended_at IS NULL AND unfinished = 0 AND node = ?2",
                params![UNFINISHED_END_REASON, node],
            ),
            // A shared store opened by no node (a tool): nothing is known to be dead.
            (Dialect::Postgres, None) => Ok(0),
        }
        .map_err(sql(&self.path, OP))
    }
}

/// The JSON columns of a record, encoded.
struct EncodedJson {
    turn_latencies: String,
    tool_calls: String,
    dsp: Option<String>,
    backend_switches: String,
    analysis: Option<String>,
}

impl EncodedJson {
    fn new(path: &Path, op: &'static str, r: &CallRecord) -> Result<EncodedJson, RecordsError> {
        let enc = |column: &'static str, source| RecordsError::Encode {
            path: path.to_path_buf(),
            op,
            id: r.id.clone(),
            column,
            source,
        };
        Ok(EncodedJson {
            turn_latencies: serde_json::to_string(&r.turn_latencies)
                .map_err(|e| enc("turn_latencies", e))?,
            tool_calls: serde_json::to_string(&r.tool_calls).map_err(|e| enc("tool_calls", e))?,
            backend_switches: serde_json::to_string(&r.backend_switches)
                .map_err(|e| enc("backend_switches", e))?,
            dsp: r
                .dsp
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| enc("dsp", e))?,
            analysis: r
                .analysis
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| enc("analysis", e))?,
        })
    }
}

/// Parameters in [`COLUMNS`] order.
/// `node` is the writing store's, when it has one (a cluster node), else the record's.
fn record_params<'a>(
    r: &'a CallRecord,
    json: &'a EncodedJson,
    node: &'a Option<String>,
) -> [&'a dyn ToValue; 30] {
    let node = if node.is_some() { node } else { &r.node };
    [
        &r.id,
        &r.call_id,
        &r.from,
        &r.to,
        &r.direction,
        &r.trunk,
        &r.agent,
        &r.started_at,
        &r.answered_at,
        &r.ended_at,
        &r.end_reason,
        &r.sip_code,
        &r.codec,
        &r.loss_percent,
        &r.jitter_ms,
        &r.mos,
        &json.turn_latencies,
        &json.tool_calls,
        &r.transcript_path,
        &r.recording_path,
        &r.unfinished,
        &r.transfer,
        &json.dsp,
        &json.backend_switches,
        &r.agent_version,
        &r.media_deleted_at,
        &json.analysis,
        &r.barge_ins,
        &r.recording_url,
        node,
    ]
}

/// A row as SQLite returns it, before the checks that turn it into a [`CallRecord`].
struct RawRow {
    id: String,
    call_id: String,
    from: String,
    to: String,
    direction: String,
    trunk: Option<String>,
    agent: String,
    started_at: i64,
    answered_at: Option<i64>,
    ended_at: Option<i64>,
    end_reason: Option<String>,
    sip_code: Option<i64>,
    codec: Option<String>,
    loss_percent: Option<f64>,
    jitter_ms: Option<f64>,
    mos: Option<f64>,
    turn_latencies: String,
    tool_calls: String,
    transcript_path: Option<String>,
    recording_path: Option<String>,
    unfinished: bool,
    transfer: Option<String>,
    dsp: Option<String>,
    backend_switches: String,
    agent_version: Option<u32>,
    media_deleted_at: Option<i64>,
    analysis: Option<String>,
    barge_ins: u32,
    recording_url: Option<String>,
    node: Option<String>,
}

impl RawRow {
    /// Reads a row selected with [`COLUMNS`].
    fn read(row: &Row) -> Result<RawRow, DbError> {
        Ok(RawRow {
            id: row.get(0)?,
            call_id: row.get(1)?,
            from: row.get(2)?,
            to: row.get(3)?,
            direction: row.get(4)?,
            trunk: row.get(5)?,
            agent: row.get(6)?,
            started_at: row.get(7)?,
            answered_at: row.get(8)?,
            ended_at: row.get(9)?,
            end_reason: row.get(10)?,
            sip_code: row.get(11)?,
            codec: row.get(12)?,
            loss_percent: row.get(13)?,
            jitter_ms: row.get(14)?,
            mos: row.get(15)?,
            turn_latencies: row.get(16)?,
            tool_calls: row.get(17)?,
            transcript_path: row.get(18)?,
            recording_path: row.get(19)?,
            unfinished: row.get(20)?,
            transfer: row.get(21)?,
            dsp: row.get(22)?,
            backend_switches: row.get(23)?,
            agent_version: row.get(24)?,
            media_deleted_at: row.get(25)?,
            analysis: row.get(26)?,
            barge_ins: row.get(27)?,
            recording_url: row.get(28)?,
            node: row.get(29)?,
        })
    }

    fn into_record(self, path: &Path, op: &'static str) -> Result<CallRecord, RecordsError> {
        let corrupt = |column: &'static str, reason: String| RecordsError::CorruptRow {
            path: path.to_path_buf(),
            op,
            id: self.id.clone(),
            column,
            reason,
        };
        let direction = Direction::parse(&self.direction)
            .ok_or_else(|| corrupt("direction", format!("unknown value {:?}", self.direction)))?;
        let sip_code = self
            .sip_code
            .map(|c| u16::try_from(c).map_err(|_| corrupt("sip_code", format!("{c} is not a u16"))))
            .transpose()?;
        let turn_latencies: Vec<TurnLatency> = serde_json::from_str(&self.turn_latencies)
            .map_err(|e| corrupt("turn_latencies", e.to_string()))?;
        let tool_calls: Vec<ToolCallRecord> = serde_json::from_str(&self.tool_calls)
            .map_err(|e| corrupt("tool_calls", e.to_string()))?;
        let dsp = self
            .dsp
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt("dsp", e.to_string()))?;
        let backend_switches = serde_json::from_str(&self.backend_switches)
            .map_err(|e| corrupt("backend_switches", e.to_string()))?;
        let analysis = self
            .analysis
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt("analysis", e.to_string()))?;
        Ok(CallRecord {
            id: self.id,
            call_id: self.call_id,
            from: self.from,
            to: self.to,
            direction,
            trunk: self.trunk,
            agent: self.agent,
            agent_version: self.agent_version,
            media_deleted_at: self.media_deleted_at.map(UnixMs),
            analysis,
            started_at: UnixMs(self.started_at),
            answered_at: self.answered_at.map(UnixMs),
            ended_at: self.ended_at.map(UnixMs),
            end_reason: self.end_reason,
            sip_code,
            codec: self.codec,
            loss_percent: self.loss_percent,
            jitter_ms: self.jitter_ms,
            mos: self.mos,
            turn_latencies,
            tool_calls,
            transcript_path: self.transcript_path,
            recording_path: self.recording_path,
            unfinished: self.unfinished,
            transfer: self.transfer,
            dsp,
            backend_switches,
            barge_ins: self.barge_ins,
            recording_url: self.recording_url,
            node: self.node,
        })
    }
}

fn query_get(conn: &Db, path: &Path, id: &str) -> Result<Option<CallRecord>, RecordsError> {
    const OP: &str = "get";
    conn.query_opt(
        &format!("SELECT {COLUMNS} FROM calls WHERE id = ?1"),
        params![id],
        RawRow::read,
    )
    .map_err(sql(path, OP))?
    .map(|raw| raw.into_record(path, OP))
    .transpose()
}

fn query_list(
    conn: &Db,
    path: &Path,
    limit: u32,
    offset: u32,
) -> Result<Vec<CallRecord>, RecordsError> {
    query_many(
        conn,
        path,
        "list",
        &format!(
            "SELECT {COLUMNS} FROM calls ORDER BY started_at DESC, id DESC LIMIT ?1 OFFSET ?2"
        ),
        params![limit, offset],
    )
}

fn query_active(conn: &Db, path: &Path) -> Result<Vec<CallRecord>, RecordsError> {
    query_many(
        conn,
        path,
        "list_active",
        &format!(
            "SELECT {COLUMNS} FROM calls WHERE ended_at IS NULL AND unfinished = 0 \
             ORDER BY started_at, id"
        ),
        params![],
    )
}

pub(super) fn query_many(
    conn: &Db,
    path: &Path,
    op: &'static str,
    query: &str,
    params: &[&dyn ToValue],
) -> Result<Vec<CallRecord>, RecordsError> {
    conn.query_map(query, params, RawRow::read)
        .map_err(sql(path, op))?
        .into_iter()
        .map(|raw| raw.into_record(path, op))
        .collect()
}

/// Maps a database error to [`RecordsError::Database`].
pub(super) fn sql<'a>(path: &'a Path, op: &'static str) -> impl Fn(DbError) -> RecordsError + 'a {
    move |source| RecordsError::Database {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Maps an error of rusqlite itself (opening, pragmas) to [`RecordsError::Database`].
fn lite<'a>(path: &'a Path, op: &'static str) -> impl Fn(rusqlite::Error) -> RecordsError + 'a {
    move |e| sql(path, op)(DbError::Sqlite(e))
}

/// Locks a mutex, ignoring poisoning: the guarded values (a connection, a join handle) stay
/// usable after a panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the writer thread receives.
enum Msg {
    Op(RecordOp),
    Flush(SyncSender<()>),
    Shutdown,
}

/// State shared by the [`RecordWriter`] clones and the thread.
#[derive(Debug)]
struct Shared {
    path: PathBuf,
    location: StoreLocation,
    capacity: usize,
    recovered: usize,
    applied: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    fn stats(&self) -> WriterStats {
        WriterStats {
            applied: self.applied.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The writer thread: applies operations in order until `Shutdown` or until every sender is
/// gone (after draining the queue either way).
fn writer_loop(mut store: RecordStore, rx: Receiver<Msg>, shared: &Shared) {
    let mut batch: Vec<RecordOp> = Vec::with_capacity(WRITE_BATCH);
    let mut stopping = false;
    loop {
        // After a shutdown, operations other handles queued behind it are still written.
        let first = if stopping {
            rx.try_recv().ok()
        } else {
            rx.recv().ok()
        };
        let Some(first) = first else {
            break;
        };
        // Everything already queued goes into one transaction, up to WRITE_BATCH operations;
        // a flush or the shutdown ends the batch (operations queued before them are written
        // first, in order).
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Op(op) => batch.push(op),
                Msg::Flush(ack) => {
                    write_batch(&mut store, &mut batch, shared);
                    let _ = ack.send(());
                }
                Msg::Shutdown => stopping = true,
            }
            if batch.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        write_batch(&mut store, &mut batch, shared);
    }
}

/// Most operations the writer commits in one transaction.
const WRITE_BATCH: usize = 256;

fn write_batch(store: &mut RecordStore, batch: &mut Vec<RecordOp>, shared: &Shared) {
    if batch.is_empty() {
        return;
    }
    let results = store.apply_batch(batch);
    for (op, result) in batch.drain(..).zip(results) {
        match result {
            Ok(()) => {
                shared.applied.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                // Keep the data somewhere: the log gets the whole operation.
                let data = match &op {
                    RecordOp::Started(r) | RecordOp::Finished(r) => {
                        serde_json::to_string(r).unwrap_or_default()
                    }
                    RecordOp::Answered { at, .. } => format!("answered_at={}", at.0),
                    RecordOp::Analyzed { analysis, .. } => {
                        serde_json::to_string(analysis).unwrap_or_default()
                    }
                };
                tracing::error!(error = %e, id = op.id(), record = %data, "call record not written");
            }
        }
    }
}
