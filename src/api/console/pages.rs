//! The web console's pages, embedded in the binary (no build step: plain HTML, CSS and one
//! JavaScript module each).
//!
//! * `GET /`: the console itself for a request with a live session (or the bearer token),
//!   the login page otherwise. With neither a token nor a console password configured the API
//!   is open, and so is the console (with a banner that says so).
//! * `GET /console/app.js`: the console's script, under the same rule as the API (401
//!   without a session), so that nothing of the console is served before a login.
//! * `GET /console/login.js`, `GET /console/console.css`: the login page's script and the
//!   style sheet, public.
//!
//! Every page is served with a Content-Security-Policy that allows only this origin's
//! scripts, styles, media and connections (no inline script), and may not be framed.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

use super::super::doc::ErrorBody;
use super::super::{ApiError, ApiState, authorize};

/// The console (served with a live session).
const APP_HTML: &str = include_str!("app.html");
/// The console's script.
const APP_JS: &str = include_str!("app.js");
/// The login page.
const LOGIN_HTML: &str = include_str!("login.html");
/// The login page's script.
const LOGIN_JS: &str = include_str!("login.js");
/// The style sheet of both.
const CSS: &str = include_str!("console.css");

/// What `app.html` holds where the page learns whether the API is secured.
const SECURED_MARK: &str = "{{secured}}";

/// The pages' Content-Security-Policy: this origin only, no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
                   frame-ancestors 'none'";

/// A response of `body` as `content_type`, never cached (a new voxline serves new assets),
/// with the console's security headers.
fn asset(content_type: &'static str, body: impl Into<axum::body::Body>) -> Response {
    let mut resp = Response::new(body.into());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// The web console: the console for a request with a session (or the API token, or on an
/// open API), the login page otherwise.
#[utoipa::path(get, path = "/", operation_id = "console_page", tag = "console", responses(
    (status = 200, description = "the console, or its login page", body = String, content_type = "text/html; charset=utf-8"),
))]
pub(in crate::api) async fn index(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if authorize(&state, &headers).is_err() {
        return asset("text/html; charset=utf-8", LOGIN_HTML);
    }
    let secured = if state.sessions.secured() {
        "true"
    } else {
        "false"
    };
    asset(
        "text/html; charset=utf-8",
        APP_HTML.replace(SECURED_MARK, secured),
    )
}

/// The console's script (for a request with a session, like the API).
#[utoipa::path(get, path = "/console/app.js", operation_id = "console_script", tag = "console", responses(
    (status = 200, description = "the console's script", body = String, content_type = "text/javascript; charset=utf-8"),
    (status = 401, description = "no session", body = ErrorBody),
))]
pub(in crate::api) async fn app_js(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    Ok(asset("text/javascript; charset=utf-8", APP_JS))
}

/// The login page's script.
#[utoipa::path(get, path = "/console/login.js", operation_id = "console_login_script", tag = "console", responses(
    (status = 200, description = "the login page's script", body = String, content_type = "text/javascript; charset=utf-8"),
))]
pub(in crate::api) async fn login_js() -> Response {
    asset("text/javascript; charset=utf-8", LOGIN_JS)
}

/// The console's style sheet.
#[utoipa::path(get, path = "/console/console.css", operation_id = "console_style", tag = "console", responses(
    (status = 200, description = "the style sheet", body = String, content_type = "text/css; charset=utf-8"),
))]
pub(in crate::api) async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}
