//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! It is generated from the code: every handler carries a `#[utoipa::path]` annotation, the
//! router is built with utoipa-axum's `OpenApiRouter` and `routes!`, so a route cannot exist
//! without its operation in the document (or the other way round), and the request and
//! response bodies are the Rust types the handlers read and write (`ToSchema`). The one route
//! outside it is `GET /sip`, SIP over WebSocket: a protocol switch, which OpenAPI does not
//! describe. `GET /openapi.json` itself is not in it either.
//!
//! What every operation shares is added once, by [`finish`], from the settings the API runs
//! with: the bearer scheme and `401` when a token is configured, `429` when rate limits are
//! on, `400`/`413`/`415` for operations with a JSON body, and `500`.

use serde::Serialize;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder,
};
use utoipa::{OpenApi, PartialSchema as _, ToSchema};

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// The SIP status behind the error, when there is one (a transfer the far end refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// The operations served without the bearer token: the health probe, the console's login
/// and session (they judge the cookie themselves), and the browser phone (its page, its settings, its own call's transcript and its SIP WebSocket).
pub const PUBLIC_PATHS: &[&str] = &[
    "/health",
    "/phone",
    "/phone/config.json",
    "/phone/transcript",
    "/console/login",
    "/console/session",
    "/console/logout",
    "/",
    "/console/login.js",
    "/console/console.css",
];

/// OpenAPI links (§4.8.20): which operation's answer names the resource another operation
/// takes, so that a client (or schemathesis' stateful phase) can follow them. Each is (path,
/// method, status, target operation id, the target's parameter, where its value is).
const LINKS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "/calls",
        "post",
        "201",
        "get_call",
        "id",
        "$response.body#/id",
    ),
    (
        "/calls",
        "post",
        "201",
        "hangup_call",
        "id",
        "$response.body#/id",
    ),
    (
        "/calls",
        "post",
        "201",
        "send_dtmf",
        "id",
        "$response.body#/id",
    ),
    (
        "/calls",
        "post",
        "201",
        "transfer_call",
        "id",
        "$response.body#/id",
    ),
    (
        "/agents",
        "post",
        "201",
        "get_agent",
        "name",
        "$response.body#/name",
    ),
    (
        "/agents",
        "post",
        "201",
        "update_agent",
        "name",
        "$response.body#/name",
    ),
    (
        "/agents",
        "post",
        "201",
        "delete_agent",
        "name",
        "$response.body#/name",
    ),
    (
        "/routes/{number}",
        "put",
        "200",
        "delete_route",
        "number",
        "$response.body#/number",
    ),
    (
        "/webhooks/endpoints",
        "post",
        "201",
        "delete_endpoint",
        "name",
        "$response.body#/name",
    ),
    (
        "/campaigns",
        "post",
        "201",
        "get_campaign",
        "id",
        "$response.body#/id",
    ),
    (
        "/campaigns",
        "post",
        "201",
        "pause_campaign",
        "id",
        "$response.body#/id",
    ),
    (
        "/campaigns",
        "post",
        "201",
        "resume_campaign",
        "id",
        "$response.body#/id",
    ),
    (
        "/campaigns",
        "post",
        "201",
        "cancel_campaign",
        "id",
        "$response.body#/id",
    ),
];

/// The name of the bearer security scheme in the document.
const BEARER: &str = "bearer";

/// The name of the console session's security scheme (its cookie).
const SESSION: &str = "session";

/// What authorises API requests, as configured.
#[derive(Debug, Clone, Copy)]
pub(super) struct Security {
    /// `[http] token_env` is set: the bearer token.
    pub token: bool,
    /// A token or a console password is set: console sessions (and authorisation at all).
    pub sessions: bool,
}

/// The document's fixed part; the operations come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "voxline",
        description = "The HTTP API of voxline, a SIP/RTP user agent for AI voice agents: \
                       calls, records, agents, routes, webhooks, caller memory and campaigns."
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "calls", description = "Live calls and call records"),
        (name = "agents", description = "Agents and routes kept as data"),
        (name = "webhooks", description = "Webhook endpoints and deliveries"),
        (name = "memory", description = "What agents remember of callers"),
        (name = "campaigns", description = "Outbound campaigns"),
        (name = "service", description = "Health, metrics and the browser phone"),
        (name = "console", description = "The web console's pages and its sessions"),
    )
)]
pub(super) struct ApiDoc;

/// Adds what every operation shares (see the module doc) to the router's document.
pub(super) fn finish(mut doc: Document, security: Security, rate_limited: bool) -> Document {
    let secured = security.sessions;
    if secured {
        let components = doc.components.get_or_insert_with(Default::default);
        if security.token {
            components.security_schemes.insert(
                BEARER.to_owned(),
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some("The API token ([http] token_env)."))
                        .build(),
                ),
            );
        }
        components.security_schemes.insert(
            SESSION.to_owned(),
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                super::console::SESSION_COOKIE,
                "A console session (POST /console/login); requests that change something \
                 also send its X-Voxline-CSRF token.",
            ))),
        );
    }
    // Either scheme authorises a request.
    let requirements: Vec<SecurityRequirement> = [(security.token, BEARER), (true, SESSION)]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| SecurityRequirement::new(name, Vec::<String>::new()))
        .collect();
    let error = || {
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))))
            .build()
    };
    let response = |text: &str| {
        ResponseBuilder::new()
            .description(text)
            .content("application/json", error())
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        add_links(path, item);
        let public = PUBLIC_PATHS.contains(&path.as_str());
        let operations = [
            (false, &mut item.get),
            (true, &mut item.put),
            (true, &mut item.post),
            (true, &mut item.delete),
            (true, &mut item.patch),
        ];
        for (changes, op) in operations {
            let Some(op) = op else { continue };
            let responses = &mut op.responses.responses;
            let mut add = |code: &str, r: ResponseBuilder| {
                responses
                    .entry(code.to_owned())
                    .or_insert_with(|| RefOr::T(r.build()));
            };
            if secured && !public {
                op.security = Some(requirements.clone());
                add(
                    "401",
                    response("The bearer token (or a console session) is missing or wrong."),
                );
                if changes {
                    add(
                        "403",
                        response("A console session's request without its X-Voxline-CSRF token."),
                    );
                }
            }
            if rate_limited && path != "/health" {
                add(
                    "429",
                    response("Too many requests from this client ([http] rate_limit_per_s).")
                        .header(
                            "Retry-After",
                            HeaderBuilder::new()
                                .schema(u64::schema())
                                .description(Some("Seconds to wait."))
                                .build(),
                        ),
                );
            }
            if op.request_body.is_some() {
                add(
                    "400",
                    response("The body is not valid JSON, or not what the operation takes."),
                );
                add(
                    "413",
                    response("The body is larger than the operation accepts."),
                );
                add("415", response("The body is not sent as application/json."));
            }
            if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                add("400", response("A path or query parameter is invalid."));
            }
            add(
                "500",
                response("voxline failed inside (its database could not be read or written)."),
            );
        }
    }
    doc
}

/// Adds [`LINKS`] to the responses of `path`'s operations.
fn add_links(path: &str, item: &mut utoipa::openapi::PathItem) {
    for &(from, method, status, target, param, value) in LINKS {
        if from != path {
            continue;
        }
        let op = match method {
            "get" => &mut item.get,
            "put" => &mut item.put,
            "post" => &mut item.post,
            "delete" => &mut item.delete,
            _ => continue,
        };
        let Some(op) = op else { continue };
        if let Some(RefOr::T(response)) = op.responses.responses.get_mut(status) {
            let link = LinkBuilder::new()
                .operation_id(target)
                .parameter(param, value)
                .build();
            response.links.insert(target.to_owned(), RefOr::T(link));
        }
    }
}

/// The document as JSON. utoipa 5.5 writes a Link object's `operationId` and `requestBody` in
/// snake case (`operation_id`); they are renamed here to the names OpenAPI 3.1 §4.8.20 gives.
pub(super) fn to_json(doc: &Document) -> Result<String, serde_json::Error> {
    let mut v = serde_json::to_value(doc)?;
    if let Some(paths) = v
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
    {
        let links = paths
            .values_mut()
            .filter_map(serde_json::Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(|op| op.get_mut("responses"))
            .filter_map(serde_json::Value::as_object_mut)
            .flat_map(|responses| responses.values_mut())
            .filter_map(|r| r.get_mut("links"))
            .filter_map(serde_json::Value::as_object_mut)
            .flat_map(|links| links.values_mut())
            .filter_map(serde_json::Value::as_object_mut);
        for link in links {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("request_body", "requestBody"),
            ] {
                if let Some(x) = link.remove(from) {
                    link.insert(to.to_owned(), x);
                }
            }
        }
    }
    serde_json::to_string(&v)
}
