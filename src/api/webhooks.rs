//! `GET /webhooks/deliveries`, `GET /webhooks/deliveries/{id}` and
//! `POST /webhooks/deliveries/{id}/redeliver`: the webhook outbox over HTTP, and its counters
//! for `/metrics`. `GET/POST /webhooks/endpoints` and `DELETE /webhooks/endpoints/{name}`:
//! endpoints added through the API (kept in the records database, beside voxline.toml's,
//! which are read-only), each with a secret voxline makes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, authorize};
use crate::records::outbox::{DeliveryState, SharedSubscriptions};
use crate::webhooks::{Endpoint, Secret, SharedOutbox, WebhookCounters, with_outbox};

/// The default and largest `limit` of `GET /webhooks/deliveries`.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// The webhook outbox and endpoints as the API sees them.
#[derive(Clone)]
pub struct WebhookApi {
    /// The outbox.
    pub outbox: SharedOutbox,
    /// The delivery tasks' counters.
    pub counters: Arc<WebhookCounters>,
    /// The client the delivery tasks use.
    pub client: reqwest::Client,
    /// The subscriptions in force (the record writer and the campaigns read them).
    pub subs: SharedSubscriptions,
    /// The running delivery tasks, by endpoint name.
    pub tasks: Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>,
    /// voxline.toml's endpoints (read-only through the API).
    pub config_names: Arc<Vec<String>>,
}

impl WebhookApi {
    /// Starts delivering to `ep` and subscribes it (replacing a task of the same name).
    pub fn run(&self, ep: Endpoint) {
        let name = ep.name.clone();
        {
            let mut subs = self.subs.write().unwrap_or_else(PoisonError::into_inner);
            subs.retain(|s| s.endpoint != name);
            subs.push(ep.subscription());
        }
        let task = tokio::spawn(crate::webhooks::run_endpoint(
            ep,
            self.outbox.clone(),
            self.client.clone(),
            self.counters.clone(),
        ));
        let old = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, task.abort_handle());
        if let Some(old) = old {
            old.abort();
        }
    }

    /// Unsubscribes the endpoint `name` and stops its task.
    fn stop(&self, name: &str) {
        self.subs
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|s| s.endpoint != name);
        if let Some(t) = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
        {
            t.abort();
        }
    }
}

/// A new signing secret: `whsec_` and base64 of 32 random bytes.
fn new_secret() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// Every endpoint: voxline.toml's (`"source": "config"`) and the API's (`"source": "api"`).
/// Secrets are never shown here.
pub(super) async fn list_endpoints(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let api = webhooks(&state)?;
    let stored = with_outbox(&api.outbox, |o| o.api_endpoints())
        .await
        .map_err(internal)?;
    let subs = crate::records::outbox::current(&api.subs);
    let mut out: Vec<Value> = api
        .config_names
        .iter()
        .map(|name| {
            let events: Vec<&str> = subs
                .iter()
                .find(|s| &s.endpoint == name)
                .map(|s| s.events.iter().map(|e| e.name()).collect())
                .unwrap_or_default();
            json!({"name": name, "source": "config", "read_only": true, "events": events})
        })
        .collect();
    out.extend(stored.into_iter().map(|s| {
        let mut v = s.definition;
        v["source"] = json!("api");
        v["created_at"] = json!(s.created_at);
        v
    }));
    Ok(Json(json!({ "endpoints": out })))
}

/// Adds an endpoint: a `[[webhook]]` as JSON without `secret_env`, `name` required →
/// `201` with the `secret` (shown this once); `409` when the name is taken.
pub(super) async fn create_endpoint(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&state, &headers)?;
    let definition = super::json_body(body)?;
    let api = webhooks(&state)?.clone();
    let secret = new_secret();
    let parsed = Secret::parse(&secret).map_err(|e| ApiError::internal(e.to_string()))?;
    let ep = crate::config::webhook_from_json(&definition, parsed)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    if api.config_names.contains(&ep.name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("endpoint {:?} is voxline.toml's", ep.name),
        ));
    }
    let stored = crate::records::outbox::StoredEndpoint {
        name: ep.name.clone(),
        definition: definition.clone(),
        secret: secret.clone(),
        created_at: crate::records::UnixMs::now(),
    };
    let added = with_outbox(&api.outbox, move |o| o.add_endpoint(&stored))
        .await
        .map_err(internal)?;
    if !added {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("endpoint {:?} exists", ep.name),
        ));
    }
    tracing::info!(endpoint = %ep.name, url = %ep.url, "webhook endpoint added through the API");
    let name = ep.name.clone();
    api.run(ep);
    let mut v = definition;
    v["name"] = json!(name);
    v["source"] = json!("api");
    v["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(v)))
}

/// Deletes an endpoint added through the API; its pending deliveries become dead.
pub(super) async fn delete_endpoint(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let api = webhooks(&state)?.clone();
    if api.config_names.contains(&name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("endpoint {name:?} is voxline.toml's: remove it there"),
        ));
    }
    // Unsubscribed first, so no new row is written for it after its rows are buried.
    api.stop(&name);
    let key = name.clone();
    let removed = with_outbox(&api.outbox, move |o| o.remove_endpoint(&key))
        .await
        .map_err(internal)?;
    if !removed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no endpoint {name:?} added through the API"),
        ));
    }
    tracing::info!(endpoint = %name, "webhook endpoint deleted through the API");
    Ok(Json(json!({ "name": name, "deleted": true })))
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
            "webhooks need call records (data_dir), which are off",
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
