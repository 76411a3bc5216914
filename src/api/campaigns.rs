//! `POST /campaigns`, `GET /campaigns`, `GET /campaigns/{id}` and
//! `POST /campaigns/{id}/pause|resume|cancel`: outbound campaigns ([`crate::campaigns`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, authorize, json_body};
use crate::campaigns::{Campaigns, check_settings, target_uri};
use crate::records::UnixMs;
use crate::records::campaigns::{
    AttemptResult, CallingWindow, CampaignSettings, CampaignState, NewCampaign, NewTarget,
    RetryPolicy,
};

/// The largest `POST /campaigns` body (a target list), 8 MiB.
pub const MAX_CAMPAIGN_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The most targets in one campaign.
pub const MAX_TARGETS: usize = 100_000;

/// The default and largest page of targets in `GET /campaigns/{id}`.
const DEFAULT_TARGET_PAGE: u32 = 1000;

/// `POST /campaigns`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateCampaign {
    name: Option<String>,
    agent: String,
    trunk: Option<String>,
    targets: Vec<CreateTarget>,
    max_concurrent: Option<u32>,
    calls_per_s: Option<f64>,
    window: Option<CallingWindow>,
    retry: Option<CreateRetry>,
    ring_timeout_s: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTarget {
    number: String,
    variables: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRetry {
    on: Option<Vec<String>>,
    max_attempts: Option<u32>,
    backoff_s: Option<u32>,
}

/// `GET /campaigns/{id}` query.
#[derive(Debug, Deserialize)]
pub(super) struct TargetPage {
    limit: Option<u32>,
    offset: Option<u32>,
}

fn campaigns(state: &ApiState) -> Result<&Campaigns, ApiError> {
    state.campaigns.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "campaigns need call records (data_dir), which are off",
        )
    })
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, m)
}

fn internal(e: crate::records::RecordsError) -> ApiError {
    ApiError::internal(e.to_string())
}

/// Creates a campaign; it starts at once (within its window).
pub(super) async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<CreateCampaign>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&state, &headers)?;
    let req = json_body(body)?;
    let store = campaigns(&state)?.clone();
    if super::agent_by_name(&state, &req.agent).await?.is_none() {
        return Err(bad(format!("agent: unknown agent {:?}", req.agent)));
    }
    let trunk = match &req.trunk {
        Some(t) => Some(
            state
                .handle
                .trunk(t)
                .ok_or_else(|| bad(format!("trunk: no trunk named {t:?}")))?,
        ),
        None => None,
    };
    if req.targets.is_empty() || req.targets.len() > MAX_TARGETS {
        return Err(bad(format!("targets: 1 to {MAX_TARGETS} targets")));
    }
    let mut targets = Vec::with_capacity(req.targets.len());
    for (i, t) in req.targets.into_iter().enumerate() {
        target_uri(&t.number, trunk).map_err(|e| bad(format!("targets[{i}].number: {e}")))?;
        let variables: BTreeMap<String, String> = super::check_variables(t.variables)
            .map_err(|e| bad(format!("targets[{i}].{}", e.message())))?;
        targets.push(NewTarget {
            number: t.number,
            variables,
        });
    }
    let retry = req.retry.unwrap_or(CreateRetry {
        on: None,
        max_attempts: None,
        backoff_s: None,
    });
    let on = match retry.on {
        Some(list) => {
            let mut on = Vec::new();
            for (i, r) in list.iter().enumerate() {
                match AttemptResult::parse(r) {
                    Some(
                        x @ (AttemptResult::Busy | AttemptResult::NoAnswer | AttemptResult::Failed),
                    ) => on.push(x),
                    _ => {
                        return Err(bad(format!(
                            "retry.on[{i}]: {r:?} is not busy, no_answer or failed"
                        )));
                    }
                }
            }
            on
        }
        None => vec![AttemptResult::Busy, AttemptResult::NoAnswer],
    };
    let settings = CampaignSettings {
        trunk: req.trunk,
        max_concurrent: req.max_concurrent.unwrap_or(1),
        calls_per_s: req.calls_per_s.unwrap_or(1.0),
        window: req.window,
        retry: RetryPolicy {
            on,
            max_attempts: retry.max_attempts.unwrap_or(3),
            backoff_s: retry.backoff_s.unwrap_or(300),
        },
        ring_timeout_s: req.ring_timeout_s.unwrap_or(30),
    };
    check_settings(&settings).map_err(|e| bad(e.to_string()))?;
    let new = NewCampaign {
        name: req.name.unwrap_or_else(|| "campaign".into()),
        agent: req.agent,
        settings,
        targets,
    };
    let created = store
        .with(move |s| s.create(&new, UnixMs::now()))
        .await
        .map_err(internal)?;
    tracing::info!(campaign = %created.id, targets = created.counts.pending, "campaign created");
    store.wake();
    Ok((StatusCode::CREATED, Json(json!(created))))
}

/// Every campaign with its counts, newest first.
pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let all = campaigns(&state)?
        .with(|s| s.list())
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "campaigns": all })))
}

/// One campaign with a page of its targets (`?limit=` up to 1000, `&offset=`).
pub(super) async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(page): Query<TargetPage>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let limit = page.limit.unwrap_or(DEFAULT_TARGET_PAGE);
    if limit == 0 || limit > DEFAULT_TARGET_PAGE {
        return Err(bad(format!("limit must be 1 to {DEFAULT_TARGET_PAGE}")));
    }
    let offset = page.offset.unwrap_or(0);
    let cid = id.clone();
    let found = campaigns(&state)?
        .with(move |s| {
            Ok(match s.get(&cid)? {
                Some(c) => Some((c, s.targets(&cid, limit, offset)?)),
                None => None,
            })
        })
        .await
        .map_err(internal)?;
    let Some((c, targets)) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no campaign {id:?}"),
        ));
    };
    let mut v = json!(c);
    v["targets"] = json!(targets);
    Ok(Json(v))
}

async fn change(state: &ApiState, id: String, to: CampaignState) -> Result<Json<Value>, ApiError> {
    let store = campaigns(state)?.clone();
    let cid = id.clone();
    let (before, after) = store
        .with(move |s| {
            let before = s.set_state(&cid, to, UnixMs::now())?;
            Ok((before, s.get(&cid)?))
        })
        .await
        .map_err(internal)?;
    let (Some(before), Some(after)) = (before, after) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no campaign {id:?}"),
        ));
    };
    if before == to || after.state != to {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "campaign {id} is {}: it cannot become {}",
                before.as_str(),
                to.as_str()
            ),
        ));
    }
    tracing::info!(campaign = %id, from = before.as_str(), to = to.as_str(), "campaign state changed");
    store.wake();
    Ok(Json(json!(after)))
}

/// Pauses a running campaign (calls in progress go on; no new ones).
pub(super) async fn pause(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    change(&state, id, CampaignState::Paused).await
}

/// Resumes a paused campaign.
pub(super) async fn resume(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    change(&state, id, CampaignState::Running).await
}

/// Cancels a campaign: its pending targets are cancelled; calls in progress go on.
pub(super) async fn cancel(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    change(&state, id, CampaignState::Cancelled).await
}
