//! `POST /campaigns`, `GET /campaigns`, `GET /campaigns/{id}` and
//! `POST /campaigns/{id}/pause|resume|cancel`: outbound campaigns ([`crate::campaigns`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::doc::ErrorBody;
use super::{ApiError, ApiState, authorize, json_body};
use crate::campaigns::{Campaigns, check_settings, target_uri};
use crate::records::UnixMs;
use crate::records::campaigns::{
    AttemptResult, CallingWindow, Campaign, CampaignSettings, CampaignState, NewCampaign,
    NewTarget, RetryPolicy, Target,
};

/// The largest `POST /campaigns` body (a target list), 8 MiB.
pub const MAX_CAMPAIGN_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The most targets in one campaign.
pub const MAX_TARGETS: usize = 100_000;

/// The default and largest page of targets in `GET /campaigns/{id}`.
const DEFAULT_TARGET_PAGE: u32 = 1000;

/// `POST /campaigns`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateCampaign {
    /// A name for people (default `campaign`).
    name: Option<String>,
    /// The agent that talks to each target.
    agent: String,
    /// The trunk to call through; without one, a target's number must be a SIP URI.
    trunk: Option<String>,
    /// Who to call: 1 to 100,000 targets ([`MAX_TARGETS`]).
    #[schema(min_items = 1, max_items = 100_000)]
    targets: Vec<CreateTarget>,
    /// The most calls at once (default 1).
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 4_294_967_295_i64)]
    max_concurrent: Option<u32>,
    /// The most new calls a second (default 1; at most
    /// [`crate::campaigns::MAX_CALLS_PER_S`]).
    #[schema(exclusive_minimum = 0, maximum = 100)]
    calls_per_s: Option<f64>,
    /// When calls may start (default: any time).
    window: Option<CallingWindow>,
    /// Retries (default: on busy and no_answer, 3 attempts, 300 s apart, doubling).
    retry: Option<CreateRetry>,
    /// How long a target may ring (default 30 s; at most
    /// [`crate::campaigns::MAX_RING_TIMEOUT_S`]).
    #[schema(minimum = 1, maximum = 300)]
    ring_timeout_s: Option<u32>,
}

/// One target of `POST /campaigns`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTarget {
    /// A number (called through the trunk) or a SIP URI.
    number: String,
    /// Variables for the agent's instructions: string values.
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    variables: Option<serde_json::Map<String, Value>>,
}

/// The retry policy of `POST /campaigns`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRetry {
    /// Which results are retried: `busy`, `no_answer`, `failed`.
    #[schema(inline, value_type = Option<Vec<RetryOn>>)]
    on: Option<Vec<String>>,
    /// Attempts per target, the first included (at most [`crate::campaigns::MAX_ATTEMPTS`]).
    #[schema(minimum = 1, maximum = 10)]
    max_attempts: Option<u32>,
    /// The wait before the first retry, in seconds; it doubles after each.
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    backoff_s: Option<u32>,
}

/// A result a campaign may retry (the schema of `retry.on`'s items).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)] // Only its schema is used: `retry.on` is parsed by AttemptResult::parse.
enum RetryOn {
    Busy,
    NoAnswer,
    Failed,
}

/// `GET /campaigns/{id}` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TargetPage {
    /// Targets in the page (default and most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Targets to skip.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4_294_967_295_i64)]
    offset: Option<u32>,
}

/// `GET /campaigns` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CampaignList {
    /// Newest first.
    campaigns: Vec<Campaign>,
}

/// `GET /campaigns/{id}` answer: the campaign and a page of its targets.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CampaignView {
    #[serde(flatten)]
    campaign: Campaign,
    /// A page of the targets, in the order they were given.
    targets: Vec<Target>,
}

/// The path parameter.
const CAMPAIGN_ID: &str = "the campaign's id";

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
#[utoipa::path(post, path = "/campaigns", operation_id = "create_campaign", tag = "campaigns",
    request_body(content = CreateCampaign,
        example = json!({"agent": "echo", "targets": [{"number": "sip:100@127.0.0.1:9"}]})),
    responses(
        (status = 201, description = "the campaign", body = Campaign),
        (status = 404, description = "no database (call records are off)", body = ErrorBody),
    ))]
pub(super) async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<CreateCampaign>, JsonRejection>,
) -> Result<(StatusCode, Json<Campaign>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(created)))
}

/// Every campaign with its counts, newest first.
#[utoipa::path(get, path = "/campaigns", operation_id = "list_campaigns", tag = "campaigns", responses(
    (status = 200, description = "every campaign", body = CampaignList),
    (status = 404, description = "no database (call records are off)", body = ErrorBody),
))]
pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<CampaignList>, ApiError> {
    authorize(&state, &headers)?;
    let all = campaigns(&state)?
        .with(|s| s.list())
        .await
        .map_err(internal)?;
    Ok(Json(CampaignList { campaigns: all }))
}

/// One campaign with a page of its targets (`?limit=` up to 1000, `&offset=`).
#[utoipa::path(get, path = "/campaigns/{id}", operation_id = "get_campaign", tag = "campaigns",
    params(("id" = String, Path, description = CAMPAIGN_ID), TargetPage),
    responses(
        (status = 200, description = "the campaign and a page of targets", body = CampaignView),
        (status = 404, description = "no such campaign (or no database)", body = ErrorBody),
    ))]
pub(super) async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    page: Result<Query<TargetPage>, QueryRejection>,
) -> Result<Json<CampaignView>, ApiError> {
    authorize(&state, &headers)?;
    let page = super::query(page)?;
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
    Ok(Json(CampaignView {
        campaign: c,
        targets,
    }))
}

async fn change(
    state: &ApiState,
    id: String,
    to: CampaignState,
) -> Result<Json<Campaign>, ApiError> {
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
    Ok(Json(after))
}

/// Pauses a running campaign (calls in progress go on; no new ones).
#[utoipa::path(post, path = "/campaigns/{id}/pause", operation_id = "pause_campaign", tag = "campaigns",
    params(("id" = String, Path, description = CAMPAIGN_ID)),
    responses(
        (status = 200, description = "the campaign, paused", body = Campaign),
        (status = 404, description = "no such campaign (or no database)", body = ErrorBody),
        (status = 409, description = "the campaign cannot change so from its state", body = ErrorBody),
    ))]
pub(super) async fn pause(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Campaign>, ApiError> {
    authorize(&state, &headers)?;
    change(&state, id, CampaignState::Paused).await
}

/// Resumes a paused campaign.
#[utoipa::path(post, path = "/campaigns/{id}/resume", operation_id = "resume_campaign", tag = "campaigns",
    params(("id" = String, Path, description = CAMPAIGN_ID)),
    responses(
        (status = 200, description = "the campaign, running again", body = Campaign),
        (status = 404, description = "no such campaign (or no database)", body = ErrorBody),
        (status = 409, description = "the campaign cannot change so from its state", body = ErrorBody),
    ))]
pub(super) async fn resume(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Campaign>, ApiError> {
    authorize(&state, &headers)?;
    change(&state, id, CampaignState::Running).await
}

/// Cancels a campaign: its pending targets are cancelled; calls in progress go on.
#[utoipa::path(post, path = "/campaigns/{id}/cancel", operation_id = "cancel_campaign", tag = "campaigns",
    params(("id" = String, Path, description = CAMPAIGN_ID)),
    responses(
        (status = 200, description = "the campaign, cancelled", body = Campaign),
        (status = 404, description = "no such campaign (or no database)", body = ErrorBody),
        (status = 409, description = "the campaign cannot change so from its state", body = ErrorBody),
    ))]
pub(super) async fn cancel(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Campaign>, ApiError> {
    authorize(&state, &headers)?;
    change(&state, id, CampaignState::Cancelled).await
}
