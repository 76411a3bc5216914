//! [`Shared`]: one of the records database's stores (each a blocking connection) shared by
//! async code, which runs its operations on tokio's blocking pool, one at a time.

use std::sync::{Arc, Mutex, PoisonError};

use super::RecordsError;

/// A store behind a mutex, used from async code. Cloning shares it.
#[derive(Debug)]
pub struct Shared<T> {
    inner: Arc<Mutex<T>>,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Send + 'static> Shared<T> {
    /// Shares `store`.
    pub fn new(store: T) -> Shared<T> {
        Shared {
            inner: Arc::new(Mutex::new(store)),
        }
    }

    /// Runs `f` on the store on the blocking pool (never on a tokio worker: a PostgreSQL
    /// connection blocks on its own runtime). `Err` when the blocking task did not finish
    /// (`f` panicked, or the runtime is shutting down).
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut T) -> R + Send + 'static,
    ) -> Result<R, tokio::task::JoinError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while the lock was held left nothing half-written (each change is one
            // statement or one transaction): the store is usable.
            let mut guard = inner.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
    }

    /// [`run`](Self::run) for a store operation; an error is the store's message, or the
    /// blocking task's.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut T) -> Result<R, RecordsError> + Send + 'static,
    ) -> Result<R, String> {
        self.run(f)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}
