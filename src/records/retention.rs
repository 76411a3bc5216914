//! Retention: the recordings and transcripts of calls that ended before a cutoff are deleted,
//! and their records say so (`media_deleted_at`, the paths cleared). The records themselves
//! stay. A file that is already gone counts as deleted; one that cannot be deleted (its
//! directory is read-only, say) is left with its record untouched and named in the log, and the
//! next sweep tries again.

use super::db::{StoreLocation, params};
use super::{RecordsError, UnixMs};

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Records whose files were deleted (and marked).
    pub records: u64,
    /// Files deleted.
    pub files: u64,
    /// Files that were already gone.
    pub missing: u64,
    /// Files that could not be deleted (their records were left for the next sweep).
    pub failed: u64,
}

/// Deletes the recordings and transcripts of up to `limit` calls that ended before `cutoff`
/// in the records database `db`, and marks their records at `now`.
/// `node`: in a cluster, only that node's calls (the files are on its disk).
pub fn sweep(
    db: &StoreLocation,
    cutoff: UnixMs,
    now: UnixMs,
    limit: u32,
    node: Option<&str>,
) -> Result<Sweep, RecordsError> {
    let conn = super::store::open_read_write(db, "open for retention")?;
    let err = |op: &'static str| {
        let path = db.name();
        move |source| RecordsError::Database { path, op, source }
    };
    let rows: Vec<(String, Option<String>, Option<String>)> = {
        let only_node = if node.is_some() { " AND node = ?3" } else { "" };
        let mut args: Vec<&dyn super::db::ToValue> = vec![&cutoff, &limit];
        if let Some(n) = &node {
            args.push(n);
        }
        conn.query_map(
            &format!(
                "SELECT id, recording_path, transcript_path FROM calls \
                 WHERE ended_at IS NOT NULL AND ended_at < ?1 AND media_deleted_at IS NULL \
                 AND (recording_path IS NOT NULL OR transcript_path IS NOT NULL \
                      OR recording_url IS NOT NULL){only_node} \
                 ORDER BY ended_at LIMIT ?2"
            ),
            &args,
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(err("retention select"))?
    };
    let mut out = Sweep::default();
    for (id, recording, transcript) in rows {
        let mut ok = true;
        for path in [recording, transcript].into_iter().flatten() {
            match std::fs::remove_file(&path) {
                Ok(()) => out.files += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.missing += 1,
                Err(e) => {
                    out.failed += 1;
                    ok = false;
                    tracing::warn!(record = %id, path = %path, error = %e, "retention: cannot delete the file; will try again");
                }
            }
        }
        if ok {
            conn.execute(
                "UPDATE calls SET recording_path = NULL, transcript_path = NULL, \
                 media_deleted_at = ?2 WHERE id = ?1",
                params![id, now],
            )
            .map_err(err("retention mark"))?;
            out.records += 1;
        }
    }
    Ok(out)
}
