//! Console sessions: a login with the console password (or the API token) sets an HttpOnly,
//! SameSite=Strict cookie the API accepts like the token; a request that changes something
//! with the cookie alone needs the session's CSRF token; logout ends the session; without a
//! token or password there is nothing to log in with.

use std::time::Duration;

use crate::common::VoxlineProcess;

const PASSWORD: &str = "correct horse battery staple";
const TOKEN: &str = "api-token-for-the-console-test";

/// One request with extra header lines; (status, head, body).
fn req(
    vox: &VoxlineProcess,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    crate::common::http_request_headers(
        vox.http_addr(),
        method,
        path,
        headers,
        body,
        Duration::from_secs(5),
    )
    .unwrap()
}

/// Logs in with `secret`: the cookie (`voxline_session=...`) and the CSRF token.
fn login(vox: &VoxlineProcess, secret: &str) -> (String, String) {
    let body = serde_json::json!({ "secret": secret }).to_string();
    let (code, head, body) = req(vox, "POST", "/console/login", &[], Some(&body));
    assert_eq!(code, 200, "{head}\n{body}");
    let set = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .expect("Set-Cookie");
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    let cookie = set.split(';').next().unwrap().to_owned();
    let csrf: serde_json::Value = serde_json::from_str(&body).unwrap();
    (cookie, csrf["csrf"].as_str().unwrap().to_owned())
}

fn spawn(config: &str) -> VoxlineProcess {
    // data_dir: relative to voxline's working directory, the process's own temporary one.
    VoxlineProcess::spawn_with_env(
        &format!("data_dir = \"data\"\n[http]\nrate_limit_per_s = 0\n{config}"),
        &[("CONSOLE_PASSWORD", PASSWORD), ("CONSOLE_TOKEN", TOKEN)],
    )
}

#[test]
fn a_password_session_opens_the_api_and_guards_changes_with_csrf() {
    let vox = spawn("console_password_env = \"CONSOLE_PASSWORD\"\n");
    // A password alone secures the API: nothing without a session.
    let (code, _, body) = req(&vox, "GET", "/calls", &[], None);
    assert_eq!(code, 401, "{body}");
    let (code, _, _) = req(&vox, "GET", "/console/session", &[], None);
    assert_eq!(code, 401);
    // A wrong secret.
    let (code, _, body) = req(
        &vox,
        "POST",
        "/console/login",
        &[],
        Some(r#"{"secret":"guess"}"#),
    );
    assert_eq!(code, 401, "{body}");
    let (cookie, csrf) = login(&vox, PASSWORD);
    let with = [("Cookie", cookie.as_str())];
    let (code, _, body) = req(&vox, "GET", "/calls", &with, None);
    assert_eq!((code, body.as_str()), (200, "[]"));
    let (code, _, body) = req(&vox, "GET", "/console/session", &with, None);
    assert_eq!(code, 200);
    assert!(body.contains(&csrf), "{body}");
    // A change with the cookie alone: refused before the handler runs.
    let agent = r#"{"name":"greeter","kind":"echo"}"#;
    let (code, _, body) = req(&vox, "POST", "/agents", &with, Some(agent));
    assert_eq!(code, 403, "{body}");
    let (code, _, _) = req(&vox, "GET", "/agents/greeter", &with, None);
    assert_eq!(code, 404, "the refused request changed something");
    let wrong = [("Cookie", cookie.as_str()), ("X-Voxline-CSRF", "nope")];
    let (code, _, _) = req(&vox, "POST", "/agents", &wrong, Some(agent));
    assert_eq!(code, 403);
    let good = [
        ("Cookie", cookie.as_str()),
        ("X-Voxline-CSRF", csrf.as_str()),
    ];
    let (code, _, body) = req(&vox, "POST", "/agents", &good, Some(agent));
    assert_eq!(code, 201, "{body}");
    // Logging in again with a live cookie (a page that lost its CSRF token) is no change the
    // cookie authorises: no CSRF token needed.
    let body = serde_json::json!({ "secret": PASSWORD }).to_string();
    let (code, _, _) = req(&vox, "POST", "/console/login", &with, Some(&body));
    assert_eq!(code, 200);
    // Logout ends the session and clears the cookie.
    let (code, head, _) = req(&vox, "POST", "/console/logout", &good, None);
    assert_eq!(code, 204);
    assert!(head.contains("Max-Age=0"), "{head}");
    let (code, _, _) = req(&vox, "GET", "/calls", &with, None);
    assert_eq!(code, 401);
    // A made-up cookie is no session.
    let (code, _, _) = req(
        &vox,
        "GET",
        "/calls",
        &[("Cookie", "voxline_session=forged")],
        None,
    );
    assert_eq!(code, 401);
}

#[test]
fn the_token_opens_a_session_too_and_bearer_requests_need_no_csrf() {
    let vox = spawn("token_env = \"CONSOLE_TOKEN\"\n");
    let (cookie, _) = login(&vox, TOKEN);
    let (code, _, _) = req(
        &vox,
        "GET",
        "/records",
        &[("Cookie", cookie.as_str())],
        None,
    );
    assert_eq!(code, 200);
    // The password is not configured: it opens nothing.
    let (code, _, _) = req(
        &vox,
        "POST",
        "/console/login",
        &[],
        Some(&serde_json::json!({ "secret": PASSWORD }).to_string()),
    );
    assert_eq!(code, 401);
    // A bearer request is not a console request: no CSRF token needed.
    let bearer = format!("Bearer {TOKEN}");
    let (code, _, body) = req(
        &vox,
        "POST",
        "/agents",
        &[("Authorization", bearer.as_str())],
        Some(r#"{"name":"greeter","kind":"echo"}"#),
    );
    assert_eq!(code, 201, "{body}");
}

#[test]
fn without_a_token_or_password_there_is_no_login() {
    let vox = spawn("");
    let (code, _, body) = req(
        &vox,
        "POST",
        "/console/login",
        &[],
        Some(r#"{"secret":"x"}"#),
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("console_password_env"), "{body}");
}

/// The value of header `name` in a response head (names are matched without case).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn the_console_pages_need_a_session_and_forbid_inline_script() {
    let vox = spawn("console_password_env = \"CONSOLE_PASSWORD\"\n");
    // Without a session: `/` is the login page, and the console's script is refused.
    let (code, head, body) = req(&vox, "GET", "/", &[], None);
    assert_eq!(code, 200, "{head}");
    assert!(body.contains("id=\"login-form\""), "{body}");
    assert!(!body.contains("app.js"), "{body}");
    let csp = header(&head, "content-security-policy").expect("CSP");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&head, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&head, "cache-control"), Some("no-store"));
    let (code, _, _) = req(&vox, "GET", "/console/app.js", &[], None);
    assert_eq!(code, 401);
    // The login page's own assets are public.
    let (code, head, body) = req(&vox, "GET", "/console/login.js", &[], None);
    assert_eq!(code, 200);
    assert!(
        header(&head, "content-type").is_some_and(|t| t.starts_with("text/javascript")),
        "{head}"
    );
    assert!(body.contains("/console/login"), "{body}");
    let (code, head, _) = req(&vox, "GET", "/console/console.css", &[], None);
    assert_eq!(code, 200);
    assert!(
        header(&head, "content-type").is_some_and(|t| t.starts_with("text/css")),
        "{head}"
    );

    // With a session: the console, which knows the API is secured, and its script.
    let (cookie, _) = login(&vox, PASSWORD);
    let with = [("Cookie", cookie.as_str())];
    let (code, _, body) = req(&vox, "GET", "/", &with, None);
    assert_eq!(code, 200);
    assert!(body.contains("data-secured=\"true\""), "{body}");
    assert!(body.contains("/console/app.js"), "{body}");
    let (code, head, body) = req(&vox, "GET", "/console/app.js", &with, None);
    assert_eq!(code, 200, "{head}");
    assert!(body.contains("EventSource(\"/events\")"), "{body}");
    // Logging out changes something: the cookie alone is not enough.
    let (code, _, _) = req(&vox, "POST", "/console/logout", &with, None);
    assert_eq!(code, 403, "logout needs the CSRF token too");
    // A cookie of no session gets the login page.
    let (code, _, body) = req(
        &vox,
        "GET",
        "/",
        &[("Cookie", "voxline_session=made-up")],
        None,
    );
    assert_eq!(code, 200);
    assert!(body.contains("id=\"login-form\""), "{body}");
}

#[test]
fn an_open_api_has_an_open_console_that_says_so() {
    let vox = spawn("");
    let (code, _, body) = req(&vox, "GET", "/", &[], None);
    assert_eq!(code, 200);
    assert!(body.contains("data-secured=\"false\""), "{body}");
    assert!(body.contains("id=\"open-banner\""), "{body}");
    let (code, _, _) = req(&vox, "GET", "/console/app.js", &[], None);
    assert_eq!(code, 200);
}
