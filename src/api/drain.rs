//! `POST /drain`: take this node out of service without dropping a call. The API only asks
//! ([`Drain::request`]); the process (main.rs) does the draining: the SIP stack answers new
//! INVITEs and OPTIONS probes 503 with Retry-After, calls in progress go on until they end or
//! `[limits] drain_deadline_s` passes (then voxline hangs them up with BYE), and voxline exits
//! 0. `GET /health` says `"draining"` (503) meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use tokio::sync::Notify;
use utoipa::ToSchema;

use super::{ApiError, ApiState, authorize};

/// The drain request, shared by the API and the process.
#[derive(Debug, Clone)]
pub struct Drain {
    requested: Arc<AtomicBool>,
    notify: Arc<Notify>,
    /// The longest calls in progress may go on (`[limits] drain_deadline_s`).
    pub deadline: Duration,
    /// The Retry-After of the 503s while draining (`[limits] retry_after_s`).
    pub retry_after: Duration,
}

impl Drain {
    /// Not draining; a drain lets calls go on up to `deadline`, and answers new calls 503
    /// with `retry_after`.
    pub fn new(deadline: Duration, retry_after: Duration) -> Drain {
        Drain {
            requested: Arc::default(),
            notify: Arc::default(),
            deadline,
            retry_after,
        }
    }

    /// The Retry-After of the 503s, whole seconds.
    pub fn retry_after_s(&self) -> u32 {
        u32::try_from(self.retry_after.as_secs()).unwrap_or(u32::MAX)
    }

    /// Asks for a drain; `false` if one was asked for already.
    pub fn request(&self) -> bool {
        let first = !self.requested.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_one();
        }
        first
    }

    /// Whether a drain was asked for.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Resolves once a drain is asked for.
    pub async fn requested(&self) {
        while !self.is_requested() {
            self.notify.notified().await;
        }
    }
}

/// `POST /drain` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Draining {
    /// `true`.
    draining: bool,
    /// Calls in progress now.
    active_calls: usize,
    /// The longest they may go on, seconds.
    deadline_s: u64,
}

/// Drains this node: new calls and OPTIONS probes get 503, calls in progress go on up to the
/// deadline, then voxline exits 0. Asking again changes nothing.
#[utoipa::path(post, path = "/drain", tag = "service", responses(
    (status = 202, description = "draining", body = Draining),
))]
pub(super) async fn drain(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<Draining>), ApiError> {
    authorize(&state, &headers)?;
    // The SIP stack refuses new calls before the answer: a probe right after it sees 503.
    state
        .handle
        .drain(state.drain.retry_after_s())
        .await
        .map_err(|e| ApiError::internal(format!("cannot drain: {e}")))?;
    if state.drain.request() {
        tracing::info!("drain asked for through the API");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Draining {
            draining: true,
            active_calls: state.handle.calls.active_count(),
            deadline_s: state.drain.deadline.as_secs(),
        }),
    ))
}
