//! `GET /webhooks/deliveries`, `GET /webhooks/deliveries/{id}` and
//! `POST /webhooks/deliveries/{id}/redeliver`: the webhook outbox over HTTP, and its counters
//! for `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, authorize};
use crate::records::outbox::DeliveryState;
use crate::webhooks::{SharedOutbox, WebhookCounters, with_outbox};

/// The default and largest `limit` of `GET /webhooks/deliveries`.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// The webhook outbox as the API sees it.
#[derive(Clone)]
pub struct WebhookApi {
    /// The outbox.
    pub outbox: SharedOutbox,
    /// The delivery tasks' counters.
    pub counters: Arc<WebhookCounters>,
}

/// `GET /webhooks/deliveries` query.
#[derive(Debug, Deserialize)]
pub(super) struct DeliveriesQuery {
    state: Option<String>,
    limit: Option<u32>,
}

fn webhooks(state: &ApiState) -> Result<&WebhookApi, ApiError> {
    state.webhooks.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "webhooks are not configured (no [[webhook]], or call records are off)",
        )
    })
}

fn internal(e: crate::records::RecordsError) -> ApiError {
    ApiError::internal(e.to_string())
}

/// Deliveries newest first: `?state=pending|delivered|dead&limit=N` (at most 1000).
pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<DeliveriesQuery>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let api = webhooks(&state)?;
    let filter = match q.state.as_deref() {
        None => None,
        Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("state must be pending, delivered or dead (got {s:?})"),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("limit must be between 1 and {MAX_LIMIT} (got {limit})"),
        ));
    }
    let rows = with_outbox(&api.outbox, move |o| o.list(filter, limit))
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "deliveries": rows })))
}

/// One delivery.
pub(super) async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let api = webhooks(&state)?;
    let row = with_outbox(&api.outbox, move |o| o.get(&id))
        .await
        .map_err(internal)?;
    match row {
        Some(r) => Ok(Json(json!(r))),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "no such delivery")),
    }
}

/// Sends a delivery again (pending, due now, the same id), whatever its state.
pub(super) async fn redeliver(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let api = webhooks(&state)?;
    let key = id.clone();
    let found = with_outbox(&api.outbox, move |o| o.redeliver(&key))
        .await
        .map_err(internal)?;
    if !found {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such delivery"));
    }
    Ok(Json(json!({ "id": id, "state": "pending" })))
}

/// The webhook counters in the Prometheus text format.
pub(super) async fn render_metrics(out: &mut String, api: &WebhookApi) {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let c = &api.counters;
    let _ = writeln!(
        out,
        "# HELP voxline_webhook_attempts_total Webhook delivery attempts, by result.\n\
         # TYPE voxline_webhook_attempts_total counter\n\
         voxline_webhook_attempts_total{{result=\"delivered\"}} {}\n\
         voxline_webhook_attempts_total{{result=\"failed\"}} {}\n\
         voxline_webhook_attempts_total{{result=\"dead\"}} {}",
        c.delivered.load(Relaxed),
        c.failed.load(Relaxed),
        c.dead.load(Relaxed),
    );
    if let Ok(pending) = with_outbox(&api.outbox, |o| o.pending()).await {
        let _ = writeln!(
            out,
            "# HELP voxline_webhook_pending Webhook deliveries waiting for an attempt.\n\
             # TYPE voxline_webhook_pending gauge\n\
             voxline_webhook_pending {pending}"
        );
    }
}
