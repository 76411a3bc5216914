//! The storage seam: one synchronous connection to the records database, either the embedded
//! SQLite file (the default) or PostgreSQL (`[store] url = "postgres://…"`, for a cluster of
//! nodes sharing their state).
//!
//! Every table module (`store`, `agents`, `outbox`, `campaigns`, `memory`, `uploads`,
//! `retention`, `search`) writes its SQL once, in the subset both engines share, and runs it
//! through a [`Db`]:
//!
//! * placeholders are SQLite's `?1`…`?N` (or `?`); for PostgreSQL they become `$1`…`$N`;
//! * values are [`Value`]s (`NULL`, 64-bit integer, double, text, bytes): booleans and
//!   times are integers in both engines;
//! * the schema is written with SQLite's type names; for PostgreSQL, [`pg_schema`] maps
//!   `INTEGER` to `BIGINT`, `REAL` to `DOUBLE PRECISION`, `BLOB` to `BYTEA` and an
//!   `INTEGER PRIMARY KEY AUTOINCREMENT` to `BIGSERIAL PRIMARY KEY`;
//! * where the engines differ (row locks, case-insensitive `LIKE`), the caller asks
//!   [`Db::dialect`].
//!
//! A PostgreSQL connection caches its prepared statements and reconnects by itself when the
//! server has closed it (the statement in flight fails; the next one reconnects).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use postgres::types::{FromSql, IsNull, ToSql as PgToSql, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, ValueRef};

/// Where the records database lives: `[store] url`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded SQLite database, `voxline.db` in this data directory.
    Sqlite {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// A PostgreSQL database shared by the cluster's nodes.
    Postgres {
        /// The connection URL (`postgres://user:password@host:port/dbname`), as configured.
        url: String,
    },
}

impl fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreLocation({})", self.name().display())
    }
}

impl StoreLocation {
    /// The SQLite database of `data_dir`.
    pub fn sqlite(data_dir: impl Into<PathBuf>) -> StoreLocation {
        StoreLocation::Sqlite {
            data_dir: data_dir.into(),
        }
    }

    /// Parses `[store] url`: `sqlite` (the data directory's file), or a `postgres://` /
    /// `postgresql://` URL the driver accepts. TLS to PostgreSQL is not built in:
    /// `sslmode=require` (or `verify-*`) is refused rather than silently ignored.
    pub fn parse(url: &str, data_dir: &Path) -> Result<StoreLocation, String> {
        if url == "sqlite" {
            return Ok(StoreLocation::sqlite(data_dir));
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "expected \"sqlite\" or a postgres:// URL, got {:?}",
                redact_url(url)
            ));
        }
        let config: postgres::Config = url
            .parse()
            .map_err(|e| format!("{}: {e}", redact_url(url)))?;
        if config.get_ssl_mode() == postgres::config::SslMode::Require {
            return Err(format!(
                "{}: sslmode=require: voxline connects to PostgreSQL without TLS; use a \
                 Unix socket, a private network or a TLS-terminating proxy",
                redact_url(url)
            ));
        }
        if config.get_dbname().is_none() {
            return Err(format!("{}: the URL names no database", redact_url(url)));
        }
        Ok(StoreLocation::Postgres {
            url: url.to_owned(),
        })
    }

    /// What errors and logs call this database: the SQLite file, or the URL without its
    /// password.
    pub fn name(&self) -> PathBuf {
        match self {
            StoreLocation::Sqlite { data_dir } => data_dir.join(super::DB_FILE_NAME),
            StoreLocation::Postgres { url } => PathBuf::from(redact_url(url)),
        }
    }

    /// Whether this is PostgreSQL (shared by several nodes).
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreLocation::Postgres { .. })
    }
}

/// `url` with the password (between `user:` and `@`) replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (a, h),
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// Which SQL engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A database failure below the records layer (which adds the database's name and the
/// operation, [`super::RecordsError::Database`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// SQLite refused or failed.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused or failed (or the connection broke).
    #[error("PostgreSQL: {}", pg_detail(.0))]
    Postgres(#[from] postgres::Error),
    /// A column held a value of another type than the code reads.
    #[error("column {index}: {reason}")]
    Column {
        /// The column's position in the result.
        index: usize,
        /// What was found.
        reason: String,
    },
    /// A query that must return a row returned none.
    #[error("the query returned no row")]
    NoRow,
}

/// A PostgreSQL error with the server's message (the driver's `Display` says only "db error").
fn pg_detail(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

impl DbError {
    /// Whether this is a unique or primary-key violation (an insert of a key that exists).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            }
            DbError::Postgres(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

/// One value sent to or read from the database.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A 64-bit integer (also booleans and times).
    Int(i64),
    /// A double.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Blob(_) => "bytes",
        }
    }
}

/// A Rust value that can be a query parameter.
pub trait ToValue {
    /// The value sent.
    fn to_value(&self) -> Value;
}

/// A Rust value a column can be read as.
pub trait FromValue: Sized {
    /// Converts, or says why not.
    fn from_value(v: Value) -> Result<Self, String>;
}

macro_rules! int_values {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Int(i64::from(*self))
            }
        }
        impl FromValue for $t {
            fn from_value(v: Value) -> Result<Self, String> {
                match v {
                    Value::Int(i) => <$t>::try_from(i)
                        .map_err(|_| format!("{i} does not fit in {}", stringify!($t))),
                    other => Err(format!("expected an integer, found {}", other.kind())),
                }
            }
        }
    )*};
}
int_values!(i64, i32, u32, u16, u8);

impl ToValue for u64 {
    fn to_value(&self) -> Value {
        // Counts and sizes; one past i64::MAX saturates rather than wrapping negative.
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl FromValue for u64 {
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => u64::try_from(i).map_err(|_| format!("{i} is negative")),
            other => Err(format!("expected an integer, found {}", other.kind())),
        }
    }
}

impl ToValue for usize {
    fn to_value(&self) -> Value {
        Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl FromValue for bool {
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(i != 0),
            other => Err(format!("expected an integer, found {}", other.kind())),
        }
    }
}

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}

impl FromValue for f64 {
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Real(r) => Ok(r),
            // SQLite stores a whole REAL as an integer when it can.
            Value::Int(i) => Ok(i as f64),
            other => Err(format!("expected a real, found {}", other.kind())),
        }
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl FromValue for String {
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s),
            other => Err(format!("expected text, found {}", other.kind())),
        }
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b),
            other => Err(format!("expected bytes, found {}", other.kind())),
        }
    }
}

impl FromValue for Value {
    fn from_value(v: Value) -> Result<Self, String> {
        Ok(v)
    }
}

impl ToValue for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

impl ToValue for super::UnixMs {
    fn to_value(&self) -> Value {
        Value::Int(self.0)
    }
}

impl FromValue for super::UnixMs {
    fn from_value(v: Value) -> Result<Self, String> {
        i64::from_value(v).map(super::UnixMs)
    }
}

impl ToValue for super::Direction {
    fn to_value(&self) -> Value {
        Value::Text(self.as_str().to_owned())
    }
}

/// The parameters of one statement: `params![a, b, c]`.
macro_rules! params {
    () => { &[] as &[&dyn $crate::records::db::ToValue] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::records::db::ToValue),+] as &[&dyn $crate::records::db::ToValue] };
}
pub(crate) use params;

/// One result row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `index` as `T`.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T, DbError> {
        let v = self.0.get(index).cloned().ok_or_else(|| DbError::Column {
            index,
            reason: format!("the row has {} columns", self.0.len()),
        })?;
        T::from_value(v).map_err(|reason| DbError::Column { index, reason })
    }
}

/// One connection to the records database (see the module docs). Not `Sync`: share it
/// behind a mutex.
pub struct Db {
    conn: Conn,
    name: PathBuf,
}

enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<Pg>>),
}

struct Pg {
    /// `None` once dropped, or after the connection broke (the next use reconnects).
    client: Option<postgres::Client>,
    url: String,
    /// Prepared statements by their SQLite-dialect text.
    statements: HashMap<String, postgres::Statement>,
}

impl Drop for Pg {
    fn drop(&mut self) {
        // The driver's Drop blocks on its own runtime, which panics on a tokio worker; inside
        // a tokio context the connection is closed on a thread of its own.
        let Some(client) = self.client.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let spawned = std::thread::Builder::new()
                .name("voxline-pg-close".into())
                .spawn(move || drop(client));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "PostgreSQL connection left to the server to close");
            }
        } else {
            drop(client);
        }
    }
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Db({})", self.name.display())
    }
}

/// Most prepared statements one PostgreSQL connection keeps (the search builds its SQL from
/// the filters given, so the set is bounded but large).
const PG_STATEMENT_CACHE: usize = 256;

impl Db {
    /// Wraps an open SQLite connection; `name` is the file.
    pub fn sqlite(conn: rusqlite::Connection, name: PathBuf) -> Db {
        Db {
            conn: Conn::Sqlite(conn),
            name,
        }
    }

    /// Connects to PostgreSQL at `url`. Blocking; never call it on an async worker thread
    /// (the driver runs its own small runtime).
    pub fn postgres(url: &str) -> Result<Db, DbError> {
        let client = postgres::Client::connect(url, postgres::NoTls)?;
        Ok(Db {
            conn: Conn::Postgres(Box::new(RefCell::new(Pg {
                client: Some(client),
                url: url.to_owned(),
                statements: HashMap::new(),
            }))),
            name: PathBuf::from(redact_url(url)),
        })
    }

    /// The database's name in errors: the SQLite file, or the URL without its password.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// The engine.
    pub fn dialect(&self) -> Dialect {
        match self.conn {
            Conn::Sqlite(_) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// ` FOR UPDATE` on PostgreSQL (lock the rows a transaction read and will write), empty
    /// on SQLite (whose write transaction already excludes every other writer).
    pub fn for_update(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, the WAL checks).
    pub fn as_sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.conn {
            Conn::Sqlite(c) => Some(c),
            Conn::Postgres(_) => None,
        }
    }

    /// Runs one statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<usize, DbError> {
        match &self.conn {
            Conn::Sqlite(c) => {
                let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
                let mut st = c.prepare_cached(sql)?;
                Ok(st.execute(rusqlite::params_from_iter(values.iter()))?)
            }
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
                let n =
                    pg.with_statement(sql, |client, st| client.execute(st, &pg_params(&values)))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs a query; `f` turns each row into a `T`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        mut f: impl FnMut(&Row) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let values: Vec<Value> = params.iter().map(|p| p.to_value()).collect();
        match &self.conn {
            Conn::Sqlite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let columns = st.column_count();
                let mut rows = st.query(rusqlite::params_from_iter(values.iter()))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut row = Vec::with_capacity(columns);
                    for i in 0..columns {
                        row.push(from_sqlite(r.get_ref(i)?));
                    }
                    out.push(f(&Row(row))?);
                }
                Ok(out)
            }
            Conn::Postgres(pg) => {
                let rows = pg
                    .borrow_mut()
                    .with_statement(sql, |client, st| client.query(st, &pg_params(&values)))?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let mut row = Vec::with_capacity(r.len());
                    for i in 0..r.len() {
                        row.push(r.try_get::<_, Value>(i)?);
                    }
                    out.push(f(&Row(row))?);
                }
                Ok(out)
            }
        }
    }

    /// Runs a query for at most one row.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&Row) -> Result<T, DbError>,
    ) -> Result<Option<T>, DbError> {
        let mut f = Some(f);
        let mut rows = self.query_map(sql, params, |r| match f.take() {
            Some(f) => f(r).map(Some),
            None => Ok(None),
        })?;
        Ok(if rows.is_empty() {
            None
        } else {
            rows.swap_remove(0)
        })
    }

    /// Runs a query that returns exactly one row ([`DbError::NoRow`] if none).
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn ToValue],
        f: impl FnOnce(&Row) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.query_opt(sql, params, f)?.ok_or(DbError::NoRow)
    }

    /// Runs statements without parameters (several, separated by `;`).
    pub fn batch(&self, sql: &str) -> Result<(), DbError> {
        match &self.conn {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(pg) => {
                let mut pg = pg.borrow_mut();
                Ok(pg.client()?.batch_execute(sql)?)
            }
        }
    }

    /// Starts a transaction that writes: SQLite takes the write lock now (`BEGIN
    /// IMMEDIATE`), so it cannot fail later on a lock upgrade.
    pub fn begin(&self) -> Result<(), DbError> {
        self.batch(match self.dialect() {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        })
    }

    /// Commits the transaction.
    pub fn commit(&self) -> Result<(), DbError> {
        self.batch("COMMIT")
    }

    /// Rolls the transaction back (an error doing so is ignored: the transaction is gone
    /// either way, and the caller reports the error that made it roll back).
    pub fn rollback(&self) {
        let _ = self.batch("ROLLBACK");
    }

    /// Runs `f` in a transaction: committed if `f` returns `Ok`, rolled back otherwise.
    /// `err` turns a failure to begin or commit into the caller's error.
    pub fn transaction<T, E>(
        &self,
        err: impl Fn(DbError) -> E,
        f: impl FnOnce(&Db) -> Result<T, E>,
    ) -> Result<T, E> {
        self.begin().map_err(&err)?;
        match f(self) {
            Ok(v) => {
                if let Err(e) = self.commit() {
                    self.rollback();
                    return Err(err(e));
                }
                Ok(v)
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }
}

impl Pg {
    /// The connection; one the server closed is replaced by a new one (its prepared
    /// statements forgotten).
    fn client(&mut self) -> Result<&mut postgres::Client, DbError> {
        let client = match self.client.take() {
            Some(c) if !c.is_closed() => c,
            closed => {
                if closed.is_some() {
                    tracing::warn!(db = %redact_url(&self.url), "PostgreSQL connection closed; reconnecting");
                }
                self.statements.clear();
                postgres::Client::connect(&self.url, postgres::NoTls)?
            }
        };
        Ok(self.client.insert(client))
    }

    /// Runs `f` with the prepared statement for `sql` (prepared and cached on first use).
    fn with_statement<T>(
        &mut self,
        sql: &str,
        f: impl FnOnce(&mut postgres::Client, &postgres::Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, DbError> {
        self.client()?;
        let st = match self.statements.get(sql) {
            Some(st) => st.clone(),
            None => {
                let st = self.client()?.prepare(&pg_sql(sql))?;
                if self.statements.len() >= PG_STATEMENT_CACHE {
                    self.statements.clear();
                }
                self.statements.insert(sql.to_owned(), st.clone());
                st
            }
        };
        Ok(f(self.client()?, &st)?)
    }
}

fn pg_params(values: &[Value]) -> Vec<&(dyn PgToSql + Sync)> {
    values.iter().map(|v| v as &(dyn PgToSql + Sync)).collect()
}

fn from_sqlite(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(rusqlite::types::Value::Null),
            Value::Int(i) => ToSqlOutput::from(*i),
            Value::Real(r) => ToSqlOutput::from(*r),
            Value::Text(s) => ToSqlOutput::from(s.as_str()),
            Value::Blob(b) => ToSqlOutput::from(b.as_slice()),
        })
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl PgToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxError> {
        let mismatch = || -> BoxError { format!("cannot send {} as {ty}", self.kind()).into() };
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                Type::FLOAT8 => (*i as f64).to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Value::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (*r as f32).to_sql(ty, out),
                _ => Err(mismatch()),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(ty, out)
                }
                _ => Err(mismatch()),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(mismatch()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT2 => Value::Int(i64::from(i16::from_sql(ty, raw)?)),
            Type::BOOL => Value::Int(i64::from(bool::from_sql(ty, raw)?)),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Value::Text(String::from_sql(ty, raw)?)
            }
            Type::BYTEA => Value::Blob(Vec::<u8>::from_sql(ty, raw)?),
            Type::VOID => Value::Null,
            _ => return Err(format!("column type {ty} is not read by voxline").into()),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// SQLite-dialect SQL for PostgreSQL: `?N` becomes `$N` and a bare `?` the next number,
/// outside quoted strings and identifiers.
pub fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut next = 1u32;
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == q {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                out.push('$');
                if digits.is_empty() {
                    // SQLite numbers a bare `?` one past the largest number so far.
                    out.push_str(&next.to_string());
                    next += 1;
                } else {
                    if let Ok(n) = digits.parse::<u32>() {
                        next = next.max(n.saturating_add(1));
                    }
                    out.push_str(&digits);
                }
            }
            None => out.push(c),
        }
    }
    out
}

/// A migration written for SQLite, for PostgreSQL (see the module docs).
pub fn pg_schema(sql: &str) -> String {
    let words = [
        ("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY"),
        ("INTEGER", "BIGINT"),
        ("REAL", "DOUBLE PRECISION"),
        ("BLOB", "BYTEA"),
    ];
    let mut out = sql.to_owned();
    for (from, to) in words {
        out = replace_word(&out, from, to);
    }
    out
}

/// Replaces `from` where it stands as a whole word.
fn replace_word(s: &str, from: &str, to: &str) -> String {
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(from) {
        out.push_str(&rest[..i]);
        let before = out.chars().last();
        let after = rest[i + from.len()..].chars().next();
        if is_word(before) || is_word(after) {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        rest = &rest[i + from.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_outside_strings() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ?1 AND c LIKE ? ESCAPE '\\' AND d = '?' AND e = ?"),
            "SELECT a FROM t WHERE b = $1 AND c LIKE $2 ESCAPE '\\' AND d = '?' AND e = $3"
        );
        assert_eq!(pg_sql("VALUES (?12, ?3)"), "VALUES ($12, $3)");
    }

    #[test]
    fn schema_types_map_by_whole_word() {
        assert_eq!(
            pg_schema(
                "CREATE TABLE x (seq INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, \
                 r REAL, b BLOB, integers TEXT, realm TEXT)"
            ),
            "CREATE TABLE x (seq BIGSERIAL PRIMARY KEY, n BIGINT NOT NULL, \
             r DOUBLE PRECISION, b BYTEA, integers TEXT, realm TEXT)"
        );
    }

    #[test]
    fn store_url_is_checked_and_its_password_kept_out_of_names() {
        let dir = Path::new("/var/lib/voxline");
        assert_eq!(
            StoreLocation::parse("sqlite", dir).unwrap(),
            StoreLocation::sqlite(dir)
        );
        let pg =
            StoreLocation::parse("postgres://vox:secret@db.example:5432/voxline", dir).unwrap();
        assert!(pg.is_shared());
        assert_eq!(
            pg.name(),
            PathBuf::from("postgres://vox:***@db.example:5432/voxline")
        );
        assert!(!format!("{pg:?}").contains("secret"));
        let e = StoreLocation::parse("mysql://vox:secret@db/voxline", dir).unwrap_err();
        assert!(e.contains("expected") && !e.contains("secret"), "{e}");
        let e = StoreLocation::parse("postgres://vox@db/voxline?sslmode=require", dir).unwrap_err();
        assert!(e.contains("sslmode=require"), "{e}");
        let e = StoreLocation::parse("postgres://vox@db", dir).unwrap_err();
        assert!(e.contains("no database"), "{e}");
    }

    #[test]
    fn values_convert_with_checks() {
        assert_eq!(Row(vec![Value::Int(7)]).get::<u32>(0).unwrap(), 7);
        assert!(Row(vec![Value::Int(-1)]).get::<u32>(0).is_err());
        assert!(Row(vec![Value::Text("x".into())]).get::<i64>(0).is_err());
        assert_eq!(
            Row(vec![Value::Null]).get::<Option<String>>(0).unwrap(),
            None
        );
        assert!(Row(vec![]).get::<i64>(0).is_err());
        assert!(Row(vec![Value::Int(1)]).get::<bool>(0).unwrap());
        assert_eq!(Row(vec![Value::Int(2)]).get::<f64>(0).unwrap(), 2.0);
    }
}
