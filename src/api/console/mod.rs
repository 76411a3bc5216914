//! Console sessions: `POST /console/login` with the API token or the console password
//! (`[http] console_password_env`) opens a session, held in an `HttpOnly`, `SameSite=Strict`
//! cookie that the API then accepts like the bearer token. `GET /console/session` tells the
//! page whether its cookie is good (and its CSRF token), `POST /console/logout` ends it.
//!
//! Requests that change something (any method but GET and HEAD) and are authorised by the
//! cookie alone must also carry the session's CSRF token in `X-Voxline-CSRF` ([`csrf`], a
//! layer on every route): `SameSite=Strict` already keeps other sites' requests from
//! carrying the cookie, this keeps it so should a browser not honour it.
//!
//! Sessions live in memory: a restart logs everyone out. Each ends after
//! [`SESSION_IDLE`] without a request; at most [`MAX_SESSIONS`] are kept (the least recently
//! used goes first).
//!
//! The pages themselves are in [`pages`].

pub(super) mod pages;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::doc::ErrorBody;
use super::{ApiError, ApiState, constant_time_eq, json_body};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "voxline_session";

/// The header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-voxline-csrf";

/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

/// The most sessions kept at once.
pub const MAX_SESSIONS: usize = 1024;

/// The console's sessions, and what opens one.
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<String, Session>>>,
    /// The API token: it opens a session too.
    token: Option<Arc<str>>,
    /// `[http] console_password_env`'s value.
    password: Option<Arc<str>>,
}

struct Session {
    csrf: String,
    last_used: Instant,
}

impl Sessions {
    /// Sessions opened by the API token or the console password (neither: none can be).
    pub fn new(token: Option<Arc<str>>, password: Option<Arc<str>>) -> Sessions {
        Sessions {
            inner: Arc::default(),
            token,
            password,
        }
    }

    /// Whether the API needs authorisation: a token or a console password is configured.
    pub fn secured(&self) -> bool {
        self.token.is_some() || self.password.is_some()
    }

    /// Whether `secret` is the token or the password.
    fn opens(&self, secret: &str) -> bool {
        [&self.token, &self.password]
            .into_iter()
            .flatten()
            .any(|s| constant_time_eq(s.as_bytes(), secret.as_bytes()))
    }

    /// A new session: its id (the cookie) and CSRF token.
    fn open(&self, now: Instant) -> (String, String) {
        let (id, csrf) = (random_token(), random_token());
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, s| now.duration_since(s.last_used) < SESSION_IDLE);
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        map.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                last_used: now,
            },
        );
        (id, csrf)
    }

    /// The CSRF token of the live session `id`, which this use keeps alive.
    pub fn check(&self, id: &str, now: Instant) -> Option<String> {
        let mut map = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let live = map
            .get(id)
            .is_some_and(|s| now.duration_since(s.last_used) < SESSION_IDLE);
        if !live {
            map.remove(id);
            return None;
        }
        let s = map.get_mut(id)?;
        s.last_used = now;
        Some(s.csrf.clone())
    }

    fn close(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// 32 random bytes, URL-safe base64.
fn random_token() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// The session cookie's value in a request, if it has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.trim())
}

/// `POST /console/login` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    /// The API token or the console password.
    secret: String,
}

/// A session as the page sees it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SessionInfo {
    /// What to send in `X-Voxline-CSRF` with requests that change something.
    csrf: String,
}

fn not_enabled() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "the console needs [http] token_env or console_password_env",
    )
}

/// Opens a console session with the API token or the console password: the answer sets the
/// session cookie.
#[utoipa::path(post, path = "/console/login", tag = "console",
    request_body(content = Login, example = json!({"secret": "the token or the password"})),
    responses(
        (status = 200, description = "a session: the cookie is set", body = SessionInfo,
         headers(("Set-Cookie" = String, description = "voxline_session=...; HttpOnly; SameSite=Strict; Path=/"))),
        (status = 401, description = "neither the token nor the password", body = ErrorBody),
        (status = 404, description = "no token or password is configured", body = ErrorBody),
    ))]
pub(super) async fn login(
    State(state): State<ApiState>,
    body: Result<Json<Login>, JsonRejection>,
) -> Result<Response, ApiError> {
    let req = json_body(body)?;
    let sessions = &state.sessions;
    if !sessions.secured() {
        return Err(not_enabled());
    }
    if !sessions.opens(&req.secret) {
        tracing::info!("console login refused");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong token or password",
        ));
    }
    let (id, csrf) = sessions.open(Instant::now());
    let cookie = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_IDLE.as_secs()
    );
    let mut resp = Json(SessionInfo { csrf }).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// The session of the request's cookie.
#[utoipa::path(get, path = "/console/session", tag = "console", responses(
    (status = 200, description = "the cookie's session is live", body = SessionInfo),
    (status = 401, description = "no live session", body = ErrorBody),
))]
pub(super) async fn session(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<SessionInfo>, ApiError> {
    session_cookie(&headers)
        .and_then(|id| state.sessions.check(id, Instant::now()))
        .map(|csrf| Json(SessionInfo { csrf }))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no console session"))
}

/// Ends the cookie's session and clears the cookie.
#[utoipa::path(post, path = "/console/logout", tag = "console", responses(
    (status = 204, description = "the session is ended"),
))]
pub(super) async fn logout(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        state.sessions.close(id);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("voxline_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    resp
}

/// The CSRF rule (see the module doc): a request that changes something, carries a live
/// session's cookie and no bearer token must carry the session's CSRF token; otherwise 403.
pub(super) async fn csrf(
    State(sessions): State<Sessions>,
    request: Request,
    next: Next,
) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD);
    // A login does not use the cookie (a new one replaces it).
    let login = request.uri().path() == "/console/login";
    let headers = request.headers();
    if safe || login || headers.contains_key(header::AUTHORIZATION) {
        return next.run(request).await;
    }
    let Some(expected) = session_cookie(headers).and_then(|id| sessions.check(id, Instant::now()))
    else {
        return next.run(request).await;
    };
    let given = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "a console request that changes something needs its X-Voxline-CSRF token",
        )
        .into_response()
    }
}
