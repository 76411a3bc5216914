//! `GET/POST /agents`, `GET/PUT/DELETE /agents/{name}`: agents kept as data, versioned
//! ([`crate::records::agents`]), beside voxline.toml's (read-only). A definition is the JSON
//! of a `[[agent]]` table, checked as voxline.toml's agents are; a change applies to the next
//! call that names the agent.
//!
//! `GET /routes`, `PUT/DELETE /routes/{number}`: called numbers routed to agents (an API
//! agent or a voxline.toml one), checked before voxline.toml's routes. After every change to
//! a route or an agent, the call manager's [`DynamicRoutes`] is rebuilt from the database.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::doc::ErrorBody;
use super::{ApiError, ApiState, authorize, json_body};
use crate::call::{AgentSpec, DynamicRoutes, Routes, valid_route_pattern};
use crate::records::UnixMs;
use crate::records::agents::{AgentStore, AgentStoreError, AgentVersion, ApiRoute};

/// The agents store as the API sees it.
#[derive(Clone)]
pub struct AgentsApi {
    /// The store (a std mutex: one query at a time, on the blocking pool).
    pub store: crate::records::shared::Shared<AgentStore>,
    /// The call manager's routes set through the API.
    pub routes: DynamicRoutes,
}

impl AgentsApi {
    /// Runs `f` on the store on tokio's blocking pool.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&AgentStore) -> Result<T, AgentStoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let r = self
            .store
            .run(move |s| f(s))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        r.map_err(|e| match e {
            AgentStoreError::Exists(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            AgentStoreError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            other => ApiError::internal(other.to_string()),
        })
    }

    /// Rebuilds the call manager's API routes from the database: each route's agent is
    /// voxline.toml's of that name or the newest version of the API's. A route whose agent
    /// was deleted (or no longer checks) is left out, with a warning.
    pub async fn rebuild_routes(&self, config_agents: &[AgentSpec]) -> Result<(), ApiError> {
        let routes = self.with(|s| Ok(s.routes()?)).await?;
        let mut table = Routes::default();
        for r in routes {
            let spec = match config_agents.iter().find(|a| a.name == r.agent) {
                Some(a) => Some(a.clone()),
                None => self.spec(&r.agent).await.unwrap_or_else(|e| {
                    tracing::warn!(number = %r.number, agent = %r.agent, error = %e.message, "route left out");
                    None
                }),
            };
            match spec {
                Some(spec) => table.push(r.number, spec),
                None => {
                    tracing::warn!(number = %r.number, agent = %r.agent, "route left out: no such agent");
                }
            }
        }
        self.routes.replace(table);
        Ok(())
    }

    /// The current version of `name` as a call's agent (`version` set), if the store has it.
    pub(super) async fn spec(&self, name: &str) -> Result<Option<AgentSpec>, ApiError> {
        let key = name.to_owned();
        let Some(v) = self.with(move |s| Ok(s.current(&key)?)).await? else {
            return Ok(None);
        };
        let section = crate::config::agent_from_json(&v.definition, &env).map_err(|e| {
            // Stored definitions were checked when written; an environment variable may have
            // gone since.
            ApiError::new(
                StatusCode::CONFLICT,
                format!("agent {name:?} version {}: {e}", v.version),
            )
        })?;
        let mut spec = crate::config::agent_spec(&section);
        spec.version = Some(v.version);
        Ok(Some(spec))
    }
}

impl AgentsApi {
    /// Version `version` of the API agent `name` as a call's agent (`version` set); `None`
    /// when the store has no such version or that version deleted the agent.
    pub async fn spec_at(&self, name: &str, version: u32) -> Result<Option<AgentSpec>, ApiError> {
        let key = name.to_owned();
        let versions = self.with(move |s| Ok(s.versions(&key)?)).await?;
        let Some(v) = versions
            .into_iter()
            .find(|v| v.version == version && !v.deleted)
        else {
            return Ok(None);
        };
        let section = crate::config::agent_from_json(&v.definition, &env).map_err(|e| {
            ApiError::new(
                StatusCode::CONFLICT,
                format!("agent {name:?} version {version}: {e}"),
            )
        })?;
        let mut spec = crate::config::agent_spec(&section);
        spec.version = Some(version);
        Ok(Some(spec))
    }
}

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

fn store(state: &ApiState) -> Result<&AgentsApi, ApiError> {
    state.agents_db.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "agents through the API need call records (the database)",
        )
    })
}

/// An agent as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AgentView {
    /// Its name.
    name: String,
    /// `config` (voxline.toml or built in) or `api`.
    source: &'static str,
    /// `true` for voxline.toml's and the built-in agents.
    read_only: bool,
    /// The current version (API agents).
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u32>,
    /// The current definition: the `[[agent]]` table as JSON (API agents).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    definition: Option<Value>,
    /// When the current version was written (API agents).
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<UnixMs>,
    /// Every version, oldest first (`GET /agents/{name}` of an API agent).
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<Vec<AgentVersion>>,
}

/// `GET /agents` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AgentList {
    /// voxline.toml's agents, then the API's.
    agents: Vec<AgentView>,
}

/// `DELETE /agents/{name}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AgentDeleted {
    /// The agent.
    name: String,
    /// The version that deleted it.
    version: u32,
    /// `true`.
    deleted: bool,
}

/// `GET /routes` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RouteList {
    /// In the order they are checked.
    routes: Vec<ApiRoute>,
}

/// `DELETE /routes/{number}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RouteDeleted {
    /// The route's number.
    number: String,
    /// `true`.
    deleted: bool,
}

/// A config agent (voxline.toml or built in): read-only here.
fn config_agent(state: &ApiState, name: &str) -> Option<AgentView> {
    state
        .agents
        .iter()
        .find(|a| a.name == name)
        .map(|a| AgentView {
            name: a.name.clone(),
            source: "config",
            read_only: true,
            version: None,
            definition: None,
            created_at: None,
            versions: None,
        })
}

fn read_only(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!("agent {name:?} comes from voxline.toml (or is built in): it is read-only here"),
    )
}

fn view(v: &AgentVersion) -> AgentView {
    AgentView {
        name: v.name.clone(),
        source: "api",
        read_only: false,
        version: Some(v.version),
        definition: Some(v.definition.clone()),
        created_at: Some(v.created_at),
        versions: None,
    }
}

/// The path parameter of an agent.
const AGENT_NAME: &str = "the agent's name";

/// Checks a definition for `name`: the body's `name`, when given, must be it.
fn checked(name: &str, mut body: Value) -> Result<Value, ApiError> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object with the keys of [[agent]]",
        ));
    };
    match obj.get("name") {
        None => {
            obj.insert("name".into(), Value::String(name.to_owned()));
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("name {other} does not match the agent {name:?} of the path"),
            ));
        }
    }
    crate::config::agent_from_json(&body, &env)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(body)
}

/// Every agent: voxline.toml's (read-only) and the API's (current versions).
#[utoipa::path(get, path = "/agents", operation_id = "list_agents", tag = "agents", responses(
    (status = 200, description = "every agent", body = AgentList),
))]
pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<AgentList>, ApiError> {
    authorize(&state, &headers)?;
    let mut out: Vec<AgentView> = state
        .agents
        .iter()
        .filter_map(|a| config_agent(&state, &a.name))
        .collect();
    if let Some(db) = &state.agents_db {
        out.extend(db.with(|s| Ok(s.list()?)).await?.iter().map(view));
    }
    Ok(Json(AgentList { agents: out }))
}

/// One agent, with every version of an API agent.
#[utoipa::path(get, path = "/agents/{name}", operation_id = "get_agent", tag = "agents",
    params(("name" = String, Path, description = AGENT_NAME)),
    responses(
        (status = 200, description = "the agent", body = AgentView),
        (status = 404, description = "no such agent (or no database)", body = ErrorBody),
    ))]
pub(super) async fn get(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    authorize(&state, &headers)?;
    if let Some(a) = config_agent(&state, &name) {
        return Ok(Json(a));
    }
    let db = store(&state)?;
    let key = name.clone();
    let versions = db.with(move |s| Ok(s.versions(&key)?)).await?;
    match versions.last() {
        Some(cur) if !cur.deleted => {
            let mut v = view(cur);
            v.versions = Some(versions);
            Ok(Json(v))
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no agent {name:?}"),
        )),
    }
}

/// Creates an agent (version 1).
#[utoipa::path(post, path = "/agents", operation_id = "create_agent", tag = "agents",
    request_body(content = Object, description = "an `[[agent]]` table as JSON, with its `name`",
        example = json!({"name": "greeter", "kind": "play", "tone_hz": 440, "tone_ms": 300})),
    responses(
        (status = 201, description = "the agent", body = AgentView),
        (status = 404, description = "no database (call records are off)", body = ErrorBody),
        (status = 409, description = "the name is taken", body = ErrorBody),
    ))]
pub(super) async fn create(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let body = json_body(body)?;
    let Some(name) = body.get("name").and_then(Value::as_str).map(str::to_owned) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the agent needs a \"name\"",
        ));
    };
    if config_agent(&state, &name).is_some() {
        return Err(read_only(&name));
    }
    let db = store(&state)?;
    let definition = checked(&name, body)?;
    let v = db.with(move |s| s.create(&name, &definition)).await?;
    tracing::info!(agent = %v.name, version = v.version, "agent created through the API");
    routes_changed(&state, db).await?;
    Ok((StatusCode::CREATED, Json(view(&v))).into_response())
}

/// Writes a new version of an agent (creating it when it does not exist).
#[utoipa::path(put, path = "/agents/{name}", operation_id = "update_agent", tag = "agents",
    params(("name" = String, Path, description = AGENT_NAME)),
    request_body(content = Object,
        description = "an `[[agent]]` table as JSON (its `name`, if given, must be the path's)",
        example = json!({"kind": "echo"})),
    responses(
        (status = 200, description = "the agent's new version", body = AgentView),
        (status = 404, description = "no database (call records are off)", body = ErrorBody),
        (status = 409, description = "the agent is voxline.toml's", body = ErrorBody),
    ))]
pub(super) async fn update(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<AgentView>, ApiError> {
    authorize(&state, &headers)?;
    let body = json_body(body)?;
    if config_agent(&state, &name).is_some() {
        return Err(read_only(&name));
    }
    let db = store(&state)?;
    let definition = checked(&name, body)?;
    let v = db.with(move |s| s.update(&name, &definition)).await?;
    tracing::info!(agent = %v.name, version = v.version, "agent changed through the API");
    routes_changed(&state, db).await?;
    Ok(Json(view(&v)))
}

/// Deletes an agent (its versions stay for the records).
#[utoipa::path(delete, path = "/agents/{name}", operation_id = "delete_agent", tag = "agents",
    params(("name" = String, Path, description = AGENT_NAME)),
    responses(
        (status = 200, description = "the agent is deleted", body = AgentDeleted),
        (status = 404, description = "no such agent (or no database)", body = ErrorBody),
        (status = 409, description = "the agent is voxline.toml's", body = ErrorBody),
    ))]
pub(super) async fn delete(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<AgentDeleted>, ApiError> {
    authorize(&state, &headers)?;
    if config_agent(&state, &name).is_some() {
        return Err(read_only(&name));
    }
    let db = store(&state)?;
    let v = db.with(move |s| s.delete(&name)).await?;
    tracing::info!(agent = %v.name, version = v.version, "agent deleted through the API");
    routes_changed(&state, db).await?;
    Ok(Json(AgentDeleted {
        name: v.name,
        version: v.version,
        deleted: true,
    }))
}

/// `PUT /routes/{number}` body.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteBody {
    /// The agent that answers the number.
    agent: String,
}

/// The path parameter of a route.
const ROUTE_NUMBER: &str = "a called user part, `prefix*`, or `*`";

/// The routes set through the API, in the order they are checked (before voxline.toml's).
#[utoipa::path(get, path = "/routes", tag = "agents", responses(
    (status = 200, description = "the API's routes", body = RouteList),
    (status = 404, description = "no database (call records are off)", body = ErrorBody),
))]
pub(super) async fn list_routes(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<RouteList>, ApiError> {
    authorize(&state, &headers)?;
    let db = store(&state)?;
    let routes = db.with(|s| Ok(s.routes()?)).await?;
    Ok(Json(RouteList { routes }))
}

/// Routes `number` (a called user part, `prefix*` or `*`) to an agent.
#[utoipa::path(put, path = "/routes/{number}", tag = "agents",
    params(("number" = String, Path, description = ROUTE_NUMBER)),
    request_body(content = RouteBody, example = json!({"agent": "echo"})),
    responses(
        (status = 200, description = "the route", body = ApiRoute),
        (status = 404, description = "no database (call records are off)", body = ErrorBody),
    ))]
pub(super) async fn set_route(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(number): Path<String>,
    body: Result<Json<RouteBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ApiRoute>, ApiError> {
    authorize(&state, &headers)?;
    let body = json_body(body)?;
    if !valid_route_pattern(&number) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{number:?} is not a route: a called user part (letters, digits, + # . _ -), optionally ending in *, or *"
            ),
        ));
    }
    let db = store(&state)?;
    let known =
        state.agents.iter().any(|a| a.name == body.agent) || db.spec(&body.agent).await?.is_some();
    if !known {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("unknown agent {:?}", body.agent),
        ));
    }
    let agent = body.agent.clone();
    let route = db.with(move |s| Ok(s.set_route(&number, &agent)?)).await?;
    routes_changed(&state, db).await?;
    tracing::info!(number = %route.number, agent = %route.agent, "route set through the API");
    Ok(Json(route))
}

/// Removes a route set through the API.
#[utoipa::path(delete, path = "/routes/{number}", tag = "agents",
    params(("number" = String, Path, description = ROUTE_NUMBER)),
    responses(
        (status = 200, description = "the route is removed", body = RouteDeleted),
        (status = 404, description = "no such route (or no database)", body = ErrorBody),
    ))]
pub(super) async fn delete_route(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Result<Json<RouteDeleted>, ApiError> {
    authorize(&state, &headers)?;
    let db = store(&state)?;
    let key = number.clone();
    if !db.with(move |s| Ok(s.delete_route(&key)?)).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no route {number:?} set through the API"),
        ));
    }
    routes_changed(&state, db).await?;
    tracing::info!(number = %number, "route removed through the API");
    Ok(Json(RouteDeleted {
        number,
        deleted: true,
    }))
}

/// After a change of routes or agents: this node's route table is rebuilt, and in a
/// cluster the other nodes are told to rebuild theirs.
async fn routes_changed(state: &ApiState, db: &AgentsApi) -> Result<(), ApiError> {
    db.rebuild_routes(&state.agents).await?;
    if let Some(c) = &state.cluster {
        c.node.changed("routes").await;
    }
    Ok(())
}
