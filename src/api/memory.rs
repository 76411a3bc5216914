//! `GET /memory/{number}` and `DELETE /memory/{number}`: what agents remember of a caller
//! ([`crate::records::memory`]), for privacy requests (access and erasure). The number is the
//! caller as calls record it (the From user part, e.g. `+15551230000`), matched exactly.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::doc::ErrorBody;
use super::{ApiError, ApiState, authorize};
use crate::call::postcall::CallerMemory;
use crate::records::memory::Memory;

/// `GET /memory/{number}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CallerMemories {
    /// The caller.
    caller: String,
    /// Each agent's memory of the caller.
    memories: Vec<Memory>,
}

/// `DELETE /memory/{number}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct MemoryDeleted {
    /// The caller.
    caller: String,
    /// How many agents' memories were erased.
    deleted: usize,
}

/// The path parameter.
const NUMBER: &str = "the caller as calls record it (the From user part), matched exactly";

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
#[utoipa::path(get, path = "/memory/{number}", operation_id = "get_memory", tag = "memory",
    params(("number" = String, Path, description = NUMBER)),
    responses(
        (status = 200, description = "what agents remember of the caller", body = CallerMemories),
        (status = 404, description = "no database (call records are off)", body = ErrorBody),
    ))]
pub(super) async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Result<Json<CallerMemories>, ApiError> {
    authorize(&state, &headers)?;
    let number = caller(number)?;
    let n = number.clone();
    let memories = store(&state)?
        .with(move |s| s.for_caller(&n))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(CallerMemories {
        caller: number,
        memories,
    }))
}

/// Forgets the caller for every agent.
#[utoipa::path(delete, path = "/memory/{number}", operation_id = "delete_memory", tag = "memory",
    params(("number" = String, Path, description = NUMBER)),
    responses(
        (status = 200, description = "the caller is forgotten", body = MemoryDeleted),
        (status = 404, description = "no database (call records are off)", body = ErrorBody),
    ))]
pub(super) async fn delete(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Result<Json<MemoryDeleted>, ApiError> {
    authorize(&state, &headers)?;
    let number = caller(number)?;
    let n = number.clone();
    let deleted = store(&state)?
        .with(move |s| s.forget(&n))
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(deleted, "caller memory deleted on request");
    Ok(Json(MemoryDeleted {
        caller: number,
        deleted,
    }))
}
