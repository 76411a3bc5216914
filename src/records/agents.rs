//! Agents kept as data: their definitions in the records database, versioned. Every change
//! is a new version (the old ones stay, for the records of the calls they answered); a
//! deletion is a version too (`deleted`), so a name can come back later with the next
//! version number.
//!
//! The definition is the JSON of a `[[agent]]` table, stored as sent; checking it is the
//! configuration's job (`crate::config::agent_from_json`), before it gets here.

use std::path::PathBuf;

use super::db::{Db, DbError, Row, StoreLocation, params};
use serde::Serialize;

use super::{RecordsError, UnixMs};

/// The `agents` table (a migration of the records database).
pub(super) const MIGRATION: &str = "
    CREATE TABLE agents (
        name       TEXT NOT NULL,
        version    INTEGER NOT NULL,
        definition TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        deleted    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (name, version)
    );
";

/// The `routes` table: called numbers routed to agents through the API (a migration).
pub(super) const ROUTES_MIGRATION: &str = "
    CREATE TABLE routes (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        number     TEXT NOT NULL UNIQUE,
        agent      TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
";

/// A route set through the API: a called number (or `prefix*`, or `*`) and its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiRoute {
    /// The pattern.
    pub number: String,
    /// The agent's name.
    pub agent: String,
    /// When it was set.
    pub created_at: UnixMs,
}

/// One version of an agent.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AgentVersion {
    /// The agent's name.
    pub name: String,
    /// Its version, from 1.
    pub version: u32,
    /// The `[[agent]]` table as JSON (`null` for a deletion).
    pub definition: serde_json::Value,
    /// When this version was written.
    pub created_at: UnixMs,
    /// Whether this version deleted the agent.
    pub deleted: bool,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentStoreError {
    /// The database failed.
    #[error(transparent)]
    Records(#[from] RecordsError),
    /// `create` of a name that exists.
    #[error("agent {0:?} exists")]
    Exists(String),
    /// `update` or `delete` of a name that does not exist.
    #[error("no agent {0:?}")]
    NotFound(String),
}

/// The agents table, through its own connection (read-write; WAL shares the file with the
/// record writer).
#[derive(Debug)]
pub struct AgentStore {
    conn: Db,
    path: PathBuf,
}

impl AgentStore {
    /// Opens the agents of the records database `path` (created and migrated by the record
    /// store).
    pub fn open(at: &StoreLocation) -> Result<AgentStore, RecordsError> {
        Ok(AgentStore {
            conn: super::store::open_read_write(at, "open agents")?,
            path: at.name(),
        })
    }

    fn sql(&self, op: &'static str) -> impl FnOnce(DbError) -> RecordsError + '_ {
        move |source| RecordsError::Database {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// The latest version of `name` (a deleted agent's deletion included), if any.
    fn latest_row(&self, name: &str) -> Result<Option<AgentVersion>, RecordsError> {
        self.conn
            .query_opt(
                "SELECT name, version, definition, created_at, deleted FROM agents \
                 WHERE name = ?1 ORDER BY version DESC LIMIT 1",
                params![name],
                row,
            )
            .map_err(self.sql("agent latest"))
    }

    /// The current version of `name`, unless it does not exist or was deleted.
    pub fn current(&self, name: &str) -> Result<Option<AgentVersion>, RecordsError> {
        Ok(self.latest_row(name)?.filter(|v| !v.deleted))
    }

    /// Every version of `name`, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<AgentVersion>, RecordsError> {
        self.conn
            .query_map(
                "SELECT name, version, definition, created_at, deleted FROM agents \
                 WHERE name = ?1 ORDER BY version",
                params![name],
                row,
            )
            .map_err(self.sql("agent versions"))
    }

    /// The current version of every agent that is not deleted, by name.
    pub fn list(&self) -> Result<Vec<AgentVersion>, RecordsError> {
        self.conn
            .query_map(
                "SELECT a.name, a.version, a.definition, a.created_at, a.deleted FROM agents a \
                 WHERE a.version = (SELECT MAX(version) FROM agents b WHERE b.name = a.name) \
                 AND a.deleted = 0 ORDER BY a.name",
                params![],
                row,
            )
            .map_err(self.sql("agent list"))
    }

    fn write(
        &self,
        name: &str,
        version: u32,
        definition: Option<&serde_json::Value>,
    ) -> Result<AgentVersion, RecordsError> {
        let now = UnixMs::now();
        let text = definition.map_or_else(|| "null".to_owned(), |d| d.to_string());
        self.conn
            .execute(
                "INSERT INTO agents (name, version, definition, created_at, deleted) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, version, text, now, definition.is_none()],
            )
            .map_err(self.sql("agent write"))?;
        Ok(AgentVersion {
            name: name.to_owned(),
            version,
            definition: definition.cloned().unwrap_or(serde_json::Value::Null),
            created_at: now,
            deleted: definition.is_none(),
        })
    }

    /// Creates `name` (version 1, or the next after a deletion).
    pub fn create(
        &self,
        name: &str,
        definition: &serde_json::Value,
    ) -> Result<AgentVersion, AgentStoreError> {
        let next = match self.latest_row(name)? {
            Some(v) if !v.deleted => return Err(AgentStoreError::Exists(name.to_owned())),
            Some(v) => v.version + 1,
            None => 1,
        };
        Ok(self.write(name, next, Some(definition))?)
    }

    /// Writes a new version of `name`.
    pub fn update(
        &self,
        name: &str,
        definition: &serde_json::Value,
    ) -> Result<AgentVersion, AgentStoreError> {
        let cur = self
            .current(name)?
            .ok_or_else(|| AgentStoreError::NotFound(name.to_owned()))?;
        Ok(self.write(name, cur.version + 1, Some(definition))?)
    }

    /// Deletes `name` (a new version marks it deleted; the old ones stay).
    pub fn delete(&self, name: &str) -> Result<AgentVersion, AgentStoreError> {
        let cur = self
            .current(name)?
            .ok_or_else(|| AgentStoreError::NotFound(name.to_owned()))?;
        Ok(self.write(name, cur.version + 1, None)?)
    }
}

impl AgentStore {
    /// Routes `number` to `agent` (replacing its route, if it had one; a replaced route
    /// keeps its place in the order).
    pub fn set_route(&self, number: &str, agent: &str) -> Result<ApiRoute, RecordsError> {
        let now = UnixMs::now();
        self.conn
            .execute(
                "INSERT INTO routes (number, agent, created_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(number) DO UPDATE SET agent = excluded.agent, \
                 created_at = excluded.created_at",
                params![number, agent, now],
            )
            .map_err(self.sql("route set"))?;
        Ok(ApiRoute {
            number: number.to_owned(),
            agent: agent.to_owned(),
            created_at: now,
        })
    }

    /// Removes the route of `number`; whether it had one.
    pub fn delete_route(&self, number: &str) -> Result<bool, RecordsError> {
        self.conn
            .execute("DELETE FROM routes WHERE number = ?1", params![number])
            .map(|n| n > 0)
            .map_err(self.sql("route delete"))
    }

    /// The routes, in the order they were first set (the order they are checked in).
    pub fn routes(&self) -> Result<Vec<ApiRoute>, RecordsError> {
        self.conn
            .query_map(
                "SELECT number, agent, created_at FROM routes ORDER BY seq",
                params![],
                |r| {
                    Ok(ApiRoute {
                        number: r.get(0)?,
                        agent: r.get(1)?,
                        created_at: UnixMs(r.get(2)?),
                    })
                },
            )
            .map_err(self.sql("route list"))
    }
}

fn row(r: &Row) -> Result<AgentVersion, DbError> {
    let text: String = r.get(2)?;
    Ok(AgentVersion {
        name: r.get(0)?,
        version: r.get(1)?,
        definition: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        created_at: UnixMs(r.get(3)?),
        deleted: r.get(4)?,
    })
}
