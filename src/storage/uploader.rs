//! The `[recording_upload]` task: every [`POLL`] it uploads the recordings of finished calls
//! that have none yet (oldest first), records where each went (`recording_url`), and, with
//! `delete_local`, deletes the local file. What it has not uploaded when voxline stops is
//! uploaded after the next start: the database is the queue. A failed upload is tried again
//! after [`RETRY_FIRST`], doubling up to [`RETRY_MAX`]; the recording stays on disk and
//! playable meanwhile. Each pass also deletes the uploaded copies of calls that retention
//! (`retention_days`) has expired.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::s3::{S3Client, S3Error};
use crate::records::RecordsError;
use crate::records::uploads::UploadStore;

/// How often the task looks for recordings to upload.
pub const POLL: Duration = Duration::from_secs(2);

/// The most recordings looked at in one pass.
pub const BATCH: u32 = 50;

/// The first wait after a failed upload; it doubles after each failure.
pub const RETRY_FIRST: Duration = Duration::from_secs(5);

/// The longest wait between two attempts of one upload.
pub const RETRY_MAX: Duration = Duration::from_secs(600);

type Store = crate::records::shared::Shared<UploadStore>;

/// Runs `f` on the store on tokio's blocking pool.
async fn with<T: Send + 'static>(
    store: &Store,
    f: impl FnOnce(&UploadStore) -> Result<T, RecordsError> + Send + 'static,
) -> Result<T, String> {
    store.with(move |s| f(s)).await
}

/// Uploads recordings to `client`'s bucket from the records database `db`, until voxline
/// stops.
/// `node`: in a cluster, this node's recordings only (files on its disk).
pub async fn run(client: S3Client, db: crate::records::StoreLocation, node: Option<String>) {
    let opened = tokio::task::spawn_blocking(move || {
        UploadStore::open(&db).map(|mut s| {
            s.set_node(node);
            s
        })
    });
    let store = match opened.await {
        Ok(Ok(s)) => Store::new(s),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "recording upload: cannot open the records; recordings stay local");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "recording upload: cannot open the records; recordings stay local");
            return;
        }
    };
    // Per record: when to try again, and the wait after that.
    let mut retry: HashMap<String, (Instant, Duration)> = HashMap::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let pending = match with(&store, |s| s.pending(BATCH)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "recording upload: cannot read the records");
                continue;
            }
        };
        let now = Instant::now();
        retry.retain(|id, _| pending.iter().any(|p| &p.id == id));
        for p in pending {
            if retry.get(&p.id).is_some_and(|(at, _)| *at > now) {
                continue;
            }
            let key = client.key_of(&p.id);
            match client.put_file(&key, &p.path).await {
                Ok(size) => {
                    retry.remove(&p.id);
                    let url = client.url_of(&key);
                    tracing::info!(record = %p.id, %url, bytes = size, "recording uploaded");
                    stored(&store, &client, &p.id, &url, p.path).await;
                }
                Err(S3Error::File { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    // Nothing left to upload: the record says the recording is gone.
                    tracing::error!(record = %p.id, path = %p.path.display(), "recording upload: the recording's file is gone");
                    let id = p.id.clone();
                    if let Err(e) = with(&store, move |s| s.file_gone(&id)).await {
                        tracing::warn!(record = %p.id, error = %e, "recording upload: cannot update the record");
                    }
                }
                Err(e) => {
                    let wait = retry.get(&p.id).map_or(RETRY_FIRST, |(_, w)| *w);
                    tracing::warn!(record = %p.id, error = %e, retry_in_s = wait.as_secs(), "recording upload failed");
                    retry.insert(p.id, (now + wait, (wait * 2).min(RETRY_MAX)));
                }
            }
        }
        // Cheap when none is due: a partial index holds only the expired uploads.
        expire(&store, &client).await;
    }
}

/// Records the upload of `id`, then deletes the local file if `delete_local` asks (and
/// records that too). A stop between the two leaves a record whose path names a deleted
/// file and whose upload is recorded: `GET /records/{id}/recording` then serves the copy.
async fn stored(store: &Store, client: &S3Client, id: &str, url: &str, path: PathBuf) {
    let (i, u) = (id.to_owned(), url.to_owned());
    if let Err(e) = with(store, move |s| s.uploaded(&i, &u, false)).await {
        tracing::warn!(record = %id, error = %e, "recording upload: stored, but not recorded (it will be uploaded again)");
        return;
    }
    if !client.settings().delete_local {
        return;
    }
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(record = %id, path = %path.display(), error = %e, "recording upload: the local file cannot be deleted");
            return;
        }
    }
    let (i, u) = (id.to_owned(), url.to_owned());
    if let Err(e) = with(store, move |s| s.uploaded(&i, &u, true)).await {
        tracing::warn!(record = %id, error = %e, "recording upload: the local file's deletion is not recorded");
    }
}

/// Deletes the uploaded copies of the calls retention has expired.
async fn expire(store: &Store, client: &S3Client) {
    let expired = match with(store, |s| s.expired(BATCH)).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "recording upload: cannot read the expired recordings");
            return;
        }
    };
    for (id, url) in expired {
        let Some(key) = client.key_in(&url) else {
            tracing::warn!(record = %id, %url, "retention: the uploaded recording is not in the configured bucket; left there");
            continue;
        };
        match client.delete(&key).await {
            Ok(()) => {
                tracing::info!(record = %id, %url, "retention: uploaded recording deleted");
                let i = id.clone();
                if let Err(e) = with(store, move |s| s.remote_deleted(&i)).await {
                    tracing::warn!(record = %id, error = %e, "retention: the deletion is not recorded");
                }
            }
            Err(e) => {
                tracing::warn!(record = %id, error = %e, "retention: the uploaded recording cannot be deleted (tried again later)");
            }
        }
    }
}
