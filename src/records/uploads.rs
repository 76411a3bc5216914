//! The records' side of `[recording_upload]`: which recordings wait for their upload, which
//! uploaded copies retention has expired, and writing each outcome. A connection of its own
//! on the records database (like [`super::retention`]); the uploader
//! ([`crate::storage::uploader`]) calls it on the blocking pool.

use std::path::PathBuf;

use super::db::{Db, Dialect, StoreLocation, ToValue, params};

use super::RecordsError;
use super::store::{open_read_write, sql};

/// Schema 15: where a recording was uploaded, and a partial index of the recordings still
/// to upload (finished calls with a local file and no upload), so the uploader's look costs
/// nothing when none waits.
pub(super) const MIGRATION: &str = "
    ALTER TABLE calls ADD COLUMN recording_url TEXT;
    CREATE INDEX calls_upload_pending ON calls (ended_at)
        WHERE ended_at IS NOT NULL AND recording_path IS NOT NULL AND recording_url IS NULL;
    CREATE INDEX calls_upload_expired ON calls (media_deleted_at)
        WHERE recording_url IS NOT NULL AND media_deleted_at IS NOT NULL;
";

/// A recording to upload: its record and local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The record's id.
    pub id: String,
    /// The local WAV file.
    pub path: PathBuf,
}

/// The uploads' view of the records database.
#[derive(Debug)]
pub struct UploadStore {
    conn: Db,
    path: PathBuf,
    /// The cluster node whose recordings this store uploads (they are files on its disk).
    node: Option<String>,
}

impl UploadStore {
    /// Opens the records database at `path` (voxline.db, created by the record writer).
    pub fn open(at: &StoreLocation) -> Result<UploadStore, RecordsError> {
        Ok(UploadStore {
            conn: open_read_write(at, "open uploads")?,
            path: at.name(),
            node: None,
        })
    }

    /// Only the calls of cluster node `node` from now on: the others' recordings are files
    /// on their disks, uploaded (and expired) by them.
    pub fn set_node(&mut self, node: Option<String>) {
        self.node = node;
    }

    /// `limit`, then the node when this store is a cluster node's (for [`Self::node_filter`]).
    fn params<'a>(&'a self, limit: &'a u32) -> Vec<&'a dyn ToValue> {
        let mut p: Vec<&dyn ToValue> = vec![limit];
        if let Some(n) = &self.node {
            p.push(n);
        }
        p
    }

    /// ` AND node = ?N` when this store is a cluster node's.
    fn node_filter(&self, n: usize) -> String {
        match self.node {
            Some(_) => format!(" AND node = ?{n}"),
            None => String::new(),
        }
    }

    /// `INDEXED BY index` for SQLite, which otherwise may pick the `ended_at` index and scan
    /// every finished call; PostgreSQL plans with statistics and has no such clause.
    fn indexed_by(&self, index: &str) -> String {
        match self.conn.dialect() {
            Dialect::Sqlite => format!("INDEXED BY {index}"),
            Dialect::Postgres => String::new(),
        }
    }

    /// Finished calls whose recording has no upload yet, oldest first, at most `limit`.
    pub fn pending(&self, limit: u32) -> Result<Vec<PendingUpload>, RecordsError> {
        const OP: &str = "pending uploads";
        self.conn
            .query_map(
                &format!(
                    "SELECT id, recording_path FROM calls {} \
                     WHERE ended_at IS NOT NULL AND recording_path IS NOT NULL \
                     AND recording_url IS NULL{} ORDER BY ended_at LIMIT ?1",
                    self.indexed_by("calls_upload_pending"),
                    self.node_filter(2)
                ),
                &self.params(&limit),
                |r| {
                    Ok(PendingUpload {
                        id: r.get(0)?,
                        path: PathBuf::from(r.get::<String>(1)?),
                    })
                },
            )
            .map_err(sql(&self.path, OP))
    }

    /// Records that the recording of `id` is at `url`; with `local_deleted`, that its local
    /// file is gone (its path is cleared).
    pub fn uploaded(&self, id: &str, url: &str, local_deleted: bool) -> Result<(), RecordsError> {
        self.conn
            .execute(
                "UPDATE calls SET recording_url = ?2, \
                 recording_path = CASE WHEN ?3 THEN NULL ELSE recording_path END WHERE id = ?1",
                params![id, url, local_deleted],
            )
            .map_err(sql(&self.path, "set recording_url"))?;
        Ok(())
    }

    /// Records that the recording of `id` is lost: its local file is gone before it was
    /// uploaded (its path is cleared).
    pub fn file_gone(&self, id: &str) -> Result<(), RecordsError> {
        self.conn
            .execute(
                "UPDATE calls SET recording_path = NULL WHERE id = ?1",
                params![id],
            )
            .map_err(sql(&self.path, "clear recording_path"))?;
        Ok(())
    }

    /// Uploaded recordings of calls retention has expired (`media_deleted_at` set): (id,
    /// url), at most `limit`.
    pub fn expired(&self, limit: u32) -> Result<Vec<(String, String)>, RecordsError> {
        const OP: &str = "expired uploads";
        self.conn
            .query_map(
                &format!(
                    "SELECT id, recording_url FROM calls {} \
                     WHERE recording_url IS NOT NULL AND media_deleted_at IS NOT NULL{} LIMIT ?1",
                    self.indexed_by("calls_upload_expired"),
                    self.node_filter(2)
                ),
                &self.params(&limit),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(sql(&self.path, OP))
    }

    /// Records that the uploaded copy of `id` is deleted.
    pub fn remote_deleted(&self, id: &str) -> Result<(), RecordsError> {
        self.conn
            .execute(
                "UPDATE calls SET recording_url = NULL WHERE id = ?1",
                params![id],
            )
            .map_err(sql(&self.path, "clear recording_url"))?;
        Ok(())
    }
}
