//! `GET /webhooks/deliveries`, `GET /webhooks/deliveries/{id}` and
//! `POST /webhooks/deliveries/{id}/redeliver`: the webhook outbox over HTTP, and its counters
//! for `/metrics`. `GET/POST /webhooks/endpoints` and `DELETE /webhooks/endpoints/{name}`:
//! endpoints added through the API (kept in the records database, beside voxline.toml's,
//! which are read-only), each with a secret voxline makes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::doc::ErrorBody;
use super::{ApiError, ApiState, authorize};
use crate::records::UnixMs;
use crate::records::outbox::{Delivery, DeliveryState, SharedSubscriptions};
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
    /// Brings the endpoints added through the API to `stored` (as another node left them):
    /// starts the missing ones, stops those deleted. voxline.toml's stay as they are.
    pub fn sync_api_endpoints(&self, stored: Vec<Endpoint>) {
        let running: Vec<String> = self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for name in &running {
            if !self.config_names.contains(name) && !stored.iter().any(|e| &e.name == name) {
                tracing::info!(endpoint = %name, "webhook endpoint deleted on another node: stopped");
                self.stop(name);
            }
        }
        for ep in stored {
            if !running.contains(&ep.name) {
                tracing::info!(endpoint = %ep.name, "webhook endpoint added on another node: delivering");
                self.run(ep);
            }
        }
    }

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

/// A webhook endpoint as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EndpointView {
    /// Its name.
    name: String,
    /// `config` (voxline.toml) or `api`.
    source: &'static str,
    /// `true` for voxline.toml's endpoints.
    read_only: bool,
    /// The events it receives (all of them when not given).
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<String>>,
    /// When it was added (API endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<UnixMs>,
    /// Its signing secret: only in the answer to `POST /webhooks/endpoints`.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// The rest of an API endpoint's definition as given (`url`, timings).
    #[serde(flatten)]
    settings: serde_json::Map<String, Value>,
}

impl EndpointView {
    /// An API endpoint's view from its definition (a JSON object; `name` and `events` are
    /// taken out of it into their fields).
    fn api(name: String, definition: Value, created_at: UnixMs) -> EndpointView {
        let mut settings = match definition {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        settings.remove("name");
        let events = settings.remove("events").and_then(|e| {
            e.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
        });
        EndpointView {
            name,
            source: "api",
            read_only: false,
            events,
            created_at: Some(created_at),
            secret: None,
            settings,
        }
    }
}

/// `GET /webhooks/endpoints` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EndpointList {
    /// voxline.toml's endpoints, then the API's.
    endpoints: Vec<EndpointView>,
}

/// `DELETE /webhooks/endpoints/{name}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EndpointDeleted {
    /// The endpoint.
    name: String,
    /// `true`.
    deleted: bool,
}

/// Every endpoint: voxline.toml's (`"source": "config"`) and the API's (`"source": "api"`).
/// Secrets are never shown here.
#[utoipa::path(get, path = "/webhooks/endpoints", tag = "webhooks", responses(
    (status = 200, description = "every endpoint", body = EndpointList),
    (status = 404, description = "no database (call records are off)", body = ErrorBody),
))]
pub(super) async fn list_endpoints(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<EndpointList>, ApiError> {
    authorize(&state, &headers)?;
    let api = webhooks(&state)?;
    let stored = with_outbox(&api.outbox, |o| o.api_endpoints())
        .await
        .map_err(internal)?;
    let subs = crate::records::outbox::current(&api.subs);
    let mut out: Vec<EndpointView> = api
        .config_names
        .iter()
        .map(|name| {
            let events: Vec<String> = subs
                .iter()
                .find(|s| &s.endpoint == name)
                .map(|s| s.events.iter().map(|e| e.name().to_owned()).collect())
                .unwrap_or_default();
            EndpointView {
                name: name.clone(),
                source: "config",
                read_only: true,
                events: Some(events),
                created_at: None,
                secret: None,
                settings: serde_json::Map::new(),
            }
        })
        .collect();
    out.extend(
        stored
            .into_iter()
            .map(|s| EndpointView::api(s.name, s.definition, s.created_at)),
    );
    Ok(Json(EndpointList { endpoints: out }))
}

/// Adds an endpoint: a `[[webhook]]` as JSON without `secret_env`, `name` required →
/// `201` with the `secret` (shown this once); `409` when the name is taken.
#[utoipa::path(post, path = "/webhooks/endpoints", tag = "webhooks",
    request_body(content = Object,
        description = "`[[webhook]]`'s keys as JSON, without `secret_env`, with `name`",
        example = json!({"name": "crm", "url": "http://127.0.0.1:9/hooks", "events": ["call.ended"]})),
    responses(
        (status = 201, description = "the endpoint, with its secret (shown this once)", body = EndpointView),
        (status = 404, description = "no database (call records are off)", body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody),
    ))]
pub(super) async fn create_endpoint(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<EndpointView>), ApiError> {
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
    let created_at = UnixMs::now();
    let stored = crate::records::outbox::StoredEndpoint {
        name: ep.name.clone(),
        definition: definition.clone(),
        secret: secret.clone(),
        created_at,
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
    if let Some(c) = &state.cluster {
        c.node.changed("webhooks").await;
    }
    let mut view = EndpointView::api(name, definition, created_at);
    view.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(view)))
}

/// Deletes an endpoint added through the API; its pending deliveries become dead.
#[utoipa::path(delete, path = "/webhooks/endpoints/{name}", tag = "webhooks",
    params(("name" = String, Path, description = "the endpoint's name")),
    responses(
        (status = 200, description = "the endpoint is deleted", body = EndpointDeleted),
        (status = 404, description = "no such endpoint added through the API (or no database)", body = ErrorBody),
        (status = 409, description = "the endpoint is voxline.toml's", body = ErrorBody),
    ))]
pub(super) async fn delete_endpoint(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<EndpointDeleted>, ApiError> {
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
    if let Some(c) = &state.cluster {
        c.node.changed("webhooks").await;
    }
    Ok(Json(EndpointDeleted {
        name,
        deleted: true,
    }))
}

/// `GET /webhooks/deliveries` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveriesQuery {
    /// Only deliveries in this state.
    #[param(pattern = "^(pending|delivered|dead)$")]
    state: Option<String>,
    /// How many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// `GET /webhooks/deliveries` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeliveryList {
    /// Newest first.
    deliveries: Vec<Delivery>,
}

/// `POST /webhooks/deliveries/{id}/redeliver` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Redelivered {
    /// The delivery's id.
    id: String,
    /// `pending`.
    state: DeliveryState,
}

/// The path parameter of a delivery.
const DELIVERY_ID: &str = "the delivery's id (its webhook-id)";

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
#[utoipa::path(get, path = "/webhooks/deliveries", operation_id = "list_deliveries", tag = "webhooks", params(DeliveriesQuery),
    responses(
        (status = 200, description = "deliveries", body = DeliveryList),
        (status = 404, description = "no database (call records are off)", body = ErrorBody),
    ))]
pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Json<DeliveryList>, ApiError> {
    authorize(&state, &headers)?;
    let q = super::query(q)?;
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
    Ok(Json(DeliveryList { deliveries: rows }))
}

/// One delivery.
#[utoipa::path(get, path = "/webhooks/deliveries/{id}", operation_id = "get_delivery", tag = "webhooks",
    params(("id" = String, Path, description = DELIVERY_ID)),
    responses(
        (status = 200, description = "the delivery", body = Delivery),
        (status = 404, description = "no such delivery (or no database)", body = ErrorBody),
    ))]
pub(super) async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, ApiError> {
    authorize(&state, &headers)?;
    let api = webhooks(&state)?;
    let row = with_outbox(&api.outbox, move |o| o.get(&id))
        .await
        .map_err(internal)?;
    match row {
        Some(r) => Ok(Json(r)),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "no such delivery")),
    }
}

/// Sends a delivery again (pending, due now, the same id), whatever its state.
#[utoipa::path(post, path = "/webhooks/deliveries/{id}/redeliver", operation_id = "redeliver", tag = "webhooks",
    params(("id" = String, Path, description = DELIVERY_ID)),
    responses(
        (status = 200, description = "the delivery is pending again", body = Redelivered),
        (status = 404, description = "no such delivery (or no database)", body = ErrorBody),
    ))]
pub(super) async fn redeliver(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Redelivered>, ApiError> {
    authorize(&state, &headers)?;
    let api = webhooks(&state)?;
    let key = id.clone();
    let found = with_outbox(&api.outbox, move |o| o.redeliver(&key))
        .await
        .map_err(internal)?;
    if !found {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such delivery"));
    }
    Ok(Json(Redelivered {
        id,
        state: DeliveryState::Pending,
    }))
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
