//! `GET /memory/{number}` and `DELETE /memory/{number}`: what agents remember of a caller
//! ([`crate::records::memory`]), for privacy requests (access and erasure). The number is the
//! caller as calls record it (the From user part, e.g. `+15551230000`), matched exactly.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, ApiState, authorize};
use crate::call::postcall::CallerMemory;

/// The longest caller accepted in the path.
const MAX_CALLER_LEN: usize = 256;

fn store(state: &ApiState) -> Result<CallerMemory, ApiError> {
    state.memory.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "caller memory needs call records (data_dir), which are off",
        )
    })
}

fn caller(number: String) -> Result<String, ApiError> {
    if number.is_empty() || number.len() > MAX_CALLER_LEN {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the number must be 1 to {MAX_CALLER_LEN} bytes"),
        ));
    }
    Ok(number)
}

/// Every agent's memory of the caller (an empty list when there is none).
pub(super) async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let number = caller(number)?;
    let n = number.clone();
    let memories = store(&state)?
        .with(move |s| s.for_caller(&n))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(json!({ "caller": number, "memories": memories })))
}

/// Forgets the caller for every agent.
pub(super) async fn delete(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let number = caller(number)?;
    let n = number.clone();
    let deleted = store(&state)?
        .with(move |s| s.forget(&n))
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(deleted, "caller memory deleted on request");
    Ok(Json(json!({ "caller": number, "deleted": deleted })))
}
