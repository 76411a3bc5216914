//! Liveness of the tasks a call cannot do without: the SIP driver and the media workers.
//!
//! A panic inside a tokio task ends only that task; the process would go on, answering
//! `/health` with "ok" while no call can be set up (a dead driver) or a share of the calls
//! hears nothing (a dead media worker). [`supervise`] watches such a task: when it ends by a
//! panic, or ends at all when it should run for the life of the process, the death is logged
//! with the panic's message, recorded for `/health` ([`dead`]), and announced to whoever
//! waits in [`wait_for_death`] (`voxline run` then exits non-zero, so that a supervisor such
//! as systemd restarts it).

use std::sync::{Mutex, OnceLock, PoisonError};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The deaths recorded so far, and a wake-up for the waiter.
struct Registry {
    dead: Mutex<Vec<String>>,
    notify: Notify,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        dead: Mutex::new(Vec::new()),
        notify: Notify::new(),
    })
}

/// Records that `what` died, and why.
pub fn report_death(what: &str, why: &str) {
    tracing::error!(
        task = what,
        reason = why,
        "a task voxline cannot run without has died"
    );
    let r = registry();
    r.dead
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(format!("{what}: {why}"));
    r.notify.notify_waiters();
    r.notify.notify_one();
}

/// The tasks that died, with why; empty while all is well.
pub fn dead() -> Vec<String> {
    registry()
        .dead
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Waits until some supervised task has died; returns the first death.
pub async fn wait_for_death() -> String {
    loop {
        let notified = registry().notify.notified();
        if let Some(first) = dead().into_iter().next() {
            return first;
        }
        notified.await;
    }
}

/// Watches `task`, named `what`: a panic, or an end whose output `expected_end` does not
/// accept, is reported by [`report_death`]. Returns the watcher's handle, which finishes
/// when the task does.
pub fn supervise<T, F>(what: String, task: JoinHandle<T>, expected_end: F) -> JoinHandle<()>
where
    T: Send + 'static,
    F: Fn(&T) -> bool + Send + 'static,
{
    tokio::spawn(async move {
        match task.await {
            Ok(out) if expected_end(&out) => {}
            Ok(_) => report_death(&what, "stopped"),
            Err(e) if e.is_panic() => {
                let payload = e.into_panic();
                let why = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panicked".to_string());
                report_death(&what, &format!("panicked: {why}"));
            }
            // Cancelled: the runtime is shutting down.
            Err(_) => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_reported_and_wakes_the_waiter() {
        let waiter = tokio::spawn(wait_for_death());
        let task = tokio::spawn(async {
            panic!("test panic in a supervised task");
        });
        supervise("test worker".into(), task, |_: &()| false)
            .await
            .expect("watcher");
        let first = waiter.await.expect("waiter");
        assert!(first.contains("test worker"), "{first}");
        assert!(first.contains("test panic"), "{first}");
        assert!(dead().iter().any(|d| d.contains("test worker")));
        // A task that ends when it is expected to is no death.
        let before = dead().len();
        supervise("finite".into(), tokio::spawn(async {}), |_: &()| true)
            .await
            .expect("watcher");
        assert_eq!(dead().len(), before);
    }
}
