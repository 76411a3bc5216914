//! One case per configuration error kind: the message names the file, the dotted key and
//! the reason.

use std::path::Path;

use voxline::config::{Config, ConfigError, ConfigErrorKind, Position};

fn no_env(_: &str) -> Option<String> {
    None
}

fn err(text: &str) -> ConfigError {
    Config::from_toml_str_with_env(text, "voxline.toml", no_env)
        .expect_err("config should be rejected")
}

/// Asserts the full message and that the structured fields agree with it.
fn assert_msg(text: &str, expected: &str) -> ConfigError {
    let e = err(text);
    assert_eq!(e.to_string(), expected);
    assert_eq!(e.origin, "voxline.toml");
    e
}

const TRUNK: &str = "[[trunk]]\nname = \"pbx\"\nhost = \"192.0.2.1\"\n";

// ---- read and syntax errors -----------------------------------------------------

#[test]
fn unreadable_file_names_the_file() {
    let e = Config::load_with_env(Path::new("/nonexistent/voxline.toml"), no_env).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("/nonexistent/voxline.toml: cannot read file: "),
        "{msg}"
    );
    assert!(matches!(*e.kind, ConfigErrorKind::Read(_)));
}

#[test]
fn toml_syntax_error_has_line_column_and_key() {
    let e = err("[media]\nptime_ms = 20\ncodecs = [\"pcmu\",\n");
    let msg = e.to_string();
    assert!(matches!(*e.kind, ConfigErrorKind::Syntax(_)));
    assert_eq!(e.position.map(|p| p.line), Some(4), "{msg}");
    assert!(msg.starts_with("voxline.toml:4:1: media.codecs: "), "{msg}");
}

#[test]
fn toml_syntax_error_without_key() {
    let e = err("this is not toml\n");
    let msg = e.to_string();
    assert_eq!(e.position, Some(Position { line: 1, column: 6 }), "{msg}");
    assert!(msg.starts_with("voxline.toml:1:6: "), "{msg}");
}

#[test]
fn unknown_key_is_an_error_with_its_path() {
    let e = err("[sip]\nt1_ms = 500\nt1ms = 500\n");
    assert_eq!(e.position, Some(Position { line: 3, column: 1 }));
    let msg = e.to_string();
    assert!(
        msg.starts_with("voxline.toml:3:1: sip.t1ms: unknown field `t1ms`, expected one of"),
        "{msg}"
    );
}

#[test]
fn unknown_key_in_second_trunk() {
    let e = err(&format!("{TRUNK}\n{TRUNK}pasword = \"x\"\n"));
    let msg = e.to_string();
    assert!(
        msg.starts_with("voxline.toml:8:1: trunk[1].pasword: unknown field `pasword`"),
        "{msg}"
    );
}

#[test]
fn unknown_section_is_an_error() {
    let msg = err("[sipp]\nx = 1\n").to_string();
    assert!(
        msg.starts_with("voxline.toml:1:2: sipp: unknown field `sipp`"),
        "{msg}"
    );
}

#[test]
fn wrong_type_names_key_and_position() {
    let e = err("[sip]\nt1_ms = \"500\"\n");
    assert_eq!(e.key.as_deref(), Some("sip.t1_ms"));
    let msg = e.to_string();
    assert!(
        msg.starts_with("voxline.toml:2:9: sip.t1_ms: invalid type: string \"500\", expected u32"),
        "{msg}"
    );
}

#[test]
fn unknown_enum_value() {
    let msg = err(&format!("{TRUNK}transport = \"sctp\"\n")).to_string();
    assert_eq!(
        msg,
        "voxline.toml:4:13: trunk[0].transport: unknown variant `sctp`, expected one of `udp`, `tcp`, `tls`"
    );
}

#[test]
fn unknown_srtp_mode() {
    let msg = err(&format!("{TRUNK}srtp = \"required\"\n")).to_string();
    assert_eq!(
        msg,
        "voxline.toml:4:8: trunk[0].srtp: unknown variant `required`, expected one of `off`, `optional`, `mandatory`"
    );
    let msg = err("[media]\nsrtp = true\n").to_string();
    assert_eq!(msg, "voxline.toml:2:8: media.srtp: wanted string or table");
}

#[test]
fn srtp_comes_from_the_trunk_then_its_profile_then_off() {
    let c = voxline::config::Config::from_toml_str(
        &format!(
            "[media]\nsrtp = \"optional\"\n{TRUNK}profile = \"twilio-secure\"\n\
             [[trunk]]\nname = \"b\"\nhost = \"192.0.2.2\"\nsrtp = \"optional\"\n\
             [[trunk]]\nname = \"c\"\nhost = \"192.0.2.3\"\n"
        ),
        "voxline.toml",
    )
    .expect("valid");
    use voxline::config::SrtpMode;
    assert_eq!(c.media.srtp, SrtpMode::Optional);
    let modes: Vec<SrtpMode> = c.trunks.iter().map(|t| t.srtp).collect();
    assert_eq!(
        modes,
        [SrtpMode::Mandatory, SrtpMode::Optional, SrtpMode::Off]
    );
    assert_eq!(c.trunks[0].port, 5061, "twilio-secure is TLS on 5061");
}

#[test]
fn bad_socket_address() {
    let msg = err("[http]\nlisten = \"localhost\"\n").to_string();
    assert!(
        msg.starts_with("voxline.toml:2:10: http.listen: invalid socket address syntax"),
        "{msg}"
    );
}

#[test]
fn missing_required_key() {
    let msg = err("[[trunk]]\nname = \"pbx\"\n").to_string();
    assert!(
        msg.starts_with("voxline.toml:1:1: trunk[0]: missing field `host`"),
        "{msg}"
    );
}

#[test]
fn number_out_of_type_range() {
    let msg = err("[media]\nrtp_port_max = 70000\n").to_string();
    assert!(
        msg.starts_with("voxline.toml:2:16: media.rtp_port_max: invalid value: integer `70000`"),
        "{msg}"
    );
}

// ---- semantic errors ---------------------------------------------------------------

#[test]
fn ptime() {
    let e = assert_msg(
        "[media]\nptime_ms = 25\n",
        "voxline.toml: media.ptime_ms: must be 10, 20 or 30 (got 25)",
    );
    assert!(matches!(*e.kind, ConfigErrorKind::Ptime(25)));
    assert_eq!(e.key.as_deref(), Some("media.ptime_ms"));
    assert_eq!(e.position, None);
}

#[test]
fn odd_rtp_port() {
    assert_msg(
        "[media]\nrtp_port_min = 10001\n",
        "voxline.toml: media.rtp_port_min: must be even, RTP uses even ports (got 10001)",
    );
}

#[test]
fn rtp_port_order() {
    assert_msg(
        "[media]\nrtp_port_min = 20000\nrtp_port_max = 20000\n",
        "voxline.toml: media.rtp_port_min: must be less than media.rtp_port_max (got 20000 >= 20000)",
    );
}

#[test]
fn unknown_codec() {
    assert_msg(
        "[media]\ncodecs = [\"pcmu\", \"g729\"]\n",
        "voxline.toml: media.codecs[1]: unknown codec \"g729\" (known: pcmu, pcma, g722, opus)",
    );
}

#[test]
fn srtp_suites_are_known_names_once() {
    assert_msg(
        "[media]\nsrtp_suites = [\"AES_256_CM_HMAC_SHA1_80\"]\n",
        "voxline.toml: media.srtp_suites[0]: unknown SRTP suite \"AES_256_CM_HMAC_SHA1_80\" (known: AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, AEAD_AES_128_GCM)",
    );
    assert_msg(
        &format!("{TRUNK}srtp_suites = [\"AEAD_AES_128_GCM\", \"AEAD_AES_128_GCM\"]\n"),
        "voxline.toml: trunk[0].srtp_suites[1]: SRTP suite \"AEAD_AES_128_GCM\" is listed twice",
    );
    assert_msg(
        "[media]\nsrtp_suites = []\n",
        "voxline.toml: media.srtp_suites: must not be empty",
    );
}

#[test]
fn unknown_codec_in_trunk() {
    assert_msg(
        &format!("{TRUNK}codecs = [\"gsm\"]\n"),
        "voxline.toml: trunk[0].codecs[0]: unknown codec \"gsm\" (known: pcmu, pcma, g722, opus)",
    );
}

#[test]
fn duplicate_codec() {
    assert_msg(
        "[media]\ncodecs = [\"pcmu\", \"PCMU\"]\n",
        "voxline.toml: media.codecs[1]: codec \"pcmu\" is listed twice",
    );
}

#[test]
fn empty_codec_list() {
    assert_msg(
        "[media]\ncodecs = []\n",
        "voxline.toml: media.codecs: must not be empty",
    );
}

#[test]
fn duplicate_trunk_name() {
    assert_msg(
        &format!("{TRUNK}\n{TRUNK}"),
        "voxline.toml: trunk[1].name: duplicate name \"pbx\" (already used by trunk[0].name)",
    );
}

#[test]
fn duplicate_agent_name() {
    assert_msg(
        "[[agent]]\nname = \"a\"\nkind = \"hold\"\n[[agent]]\nname = \"a\"\nkind = \"hold\"\n",
        "voxline.toml: agent[1].name: duplicate name \"a\" (already used by agent[0].name)",
    );
}

#[test]
fn invalid_name() {
    assert_msg(
        "[[trunk]]\nname = \"my pbx\"\nhost = \"192.0.2.1\"\n",
        "voxline.toml: trunk[0].name: invalid name \"my pbx\": use letters, digits, '-', '_' or '.'",
    );
}

#[test]
fn unknown_profile() {
    let e = assert_msg(
        &format!("{TRUNK}profile = \"asterix\"\n"),
        "voxline.toml: trunk[0].profile: unknown profile \"asterix\" (looked in built-in profiles: \
         asterisk, freeswitch, jambonz, kamailio, twilio, telnyx, twilio-secure, telnyx-secure, \
         generic, generic-tls)",
    );
    assert!(matches!(*e.kind, ConfigErrorKind::UnknownProfile { .. }));
}

#[test]
fn profile_dir_not_a_directory() {
    assert_msg(
        "profile_dir = \"/nonexistent/profiles\"\n",
        "voxline.toml: profile_dir: \"/nonexistent/profiles\" is not a directory",
    );
}

#[test]
fn error_inside_a_profile_file_names_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("bad.toml");
    std::fs::write(&profile, "description = \"x\"\nptime = 20\n").unwrap();
    let text = format!(
        "profile_dir = \"{}\"\n{TRUNK}profile = \"bad\"\n",
        dir.path().display()
    );
    let msg = err(&text).to_string();
    let expected_start = format!("{}:2:1: ptime: unknown field `ptime`", profile.display());
    assert!(msg.starts_with(&expected_start), "{msg}");
}

#[test]
fn route_to_unknown_agent() {
    assert_msg(
        "[[route]]\nnumber = \"1000\"\nagent = \"suport\"\n[[agent]]\nname = \"support\"\nkind = \"hold\"\n",
        "voxline.toml: route[0].agent: unknown agent \"suport\" (defined: support, hold, echo)",
    );
}

#[test]
fn bad_route_pattern() {
    assert_msg(
        "[[route]]\nnumber = \"1*00\"\nagent = \"hold\"\n",
        "voxline.toml: route[0].number: invalid pattern \"1*00\": '*' is allowed only at the end",
    );
}

#[test]
fn missing_password_env_var_when_registering() {
    let e = assert_msg(
        &format!("{TRUNK}register = true\nusername = \"u\"\npassword_env = \"PBX_PASSWORD\"\n"),
        "voxline.toml: trunk[0].password_env: environment variable PBX_PASSWORD is not set \
         (register = true needs the password)",
    );
    assert!(matches!(
        *e.kind,
        ConfigErrorKind::EnvVarNotSet { ref var, .. } if var == "PBX_PASSWORD"
    ));
}

#[test]
fn empty_env_var_counts_as_unset() {
    let text = format!("{TRUNK}password_env = \"PW\"\n");
    let e =
        Config::from_toml_str_with_env(&text, "voxline.toml", |_| Some(String::new())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "voxline.toml: trunk[0].password_env: environment variable PW is not set"
    );
}

#[test]
fn missing_token_env_var() {
    assert_msg(
        "[http]\ntoken_env = \"VOXLINE_TEST_TOKEN_THAT_IS_NOT_SET\"\n",
        "voxline.toml: http.token_env: environment variable VOXLINE_TEST_TOKEN_THAT_IS_NOT_SET \
         is not set",
    );
}

#[test]
fn register_without_username() {
    assert_msg(
        &format!("{TRUNK}register = true\npassword = \"p\"\n"),
        "voxline.toml: trunk[0].username: register = true needs username",
    );
}

#[test]
fn register_without_password() {
    // The asterisk profile registers by default.
    assert_msg(
        &format!("{TRUNK}profile = \"asterisk\"\nusername = \"u\"\n"),
        "voxline.toml: trunk[0].password_env: register = true needs password_env (or password)",
    );
}

#[test]
fn password_and_password_env_together() {
    assert_msg(
        &format!("{TRUNK}password = \"p\"\npassword_env = \"PW\"\n"),
        "voxline.toml: trunk[0].password: set either password or password_env, not both",
    );
}

#[test]
fn bad_cidr() {
    let e = assert_msg(
        &format!("{TRUNK}allow_from = [\"192.0.2.0/24\", \"10.0.0.0/33\"]\n"),
        "voxline.toml: trunk[0].allow_from[1]: invalid CIDR \"10.0.0.0/33\": prefix length 33 \
         is longer than 32",
    );
    assert!(matches!(*e.kind, ConfigErrorKind::InvalidCidr { .. }));
}

#[test]
fn bad_host() {
    assert_msg(
        "[[trunk]]\nname = \"pbx\"\nhost = \"pbx.example.com:5060\"\n",
        "voxline.toml: trunk[0].host: invalid host \"pbx.example.com:5060\": give the port in \
         `port`, not in the host",
    );
}

#[test]
fn bad_outbound_proxy() {
    assert_msg(
        &format!("{TRUNK}outbound_proxy = \"10.0.0.2:5060\"\n"),
        "voxline.toml: trunk[0].outbound_proxy: invalid SIP URI \"10.0.0.2:5060\": must start \
         with \"sip:\"",
    );
}

#[test]
fn timer_order() {
    assert_msg(
        "[sip]\nt1_ms = 5000\nt2_ms = 4000\n",
        "voxline.toml: sip.t1_ms: must not be larger than sip.t2_ms (got 5000 > 4000)",
    );
}

#[test]
fn zero_t1() {
    assert_msg(
        "[sip]\nt1_ms = 0\n",
        "voxline.toml: sip.t1_ms: must be at least 1 (got 0)",
    );
}

#[test]
fn tcp_limits_at_least_one() {
    for key in [
        "tcp_max_connections",
        "tcp_max_per_source",
        "tcp_idle_timeout_s",
        "tcp_message_timeout_s",
    ] {
        assert_msg(
            &format!("[sip]\n{key} = 0\n"),
            &format!("voxline.toml: sip.{key}: must be at least 1 (got 0)"),
        );
    }
}

#[test]
fn max_calls_at_least_one() {
    let e = assert_msg(
        "[limits]\nmax_calls = 0\n",
        "voxline.toml: limits.max_calls: must be at least 1 (got 0)",
    );
    assert!(matches!(
        *e.kind,
        ConfigErrorKind::TooSmall { min: 1, got: 0 }
    ));
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str_with_env(text, "voxline.toml", no_env)
}

#[test]
fn redaction_is_checked() {
    assert_msg(
        "[redaction]\nkinds = [\"cards\"]\n",
        "voxline.toml: redaction.kinds[0]: \"cards\" is not one of all, card, email, phone, ssn, iban",
    );
    let e = load("[redaction]\n[[redaction.pattern]]\nname = \"member\"\nregex = \"M-(\\\\d\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("voxline.toml: redaction.pattern[0].regex: "),
        "{e}"
    );
    let cfg = load("[redaction]\nkinds = [\"all\"]\n[[redaction.pattern]]\nname = \"member\"\nregex = \"M-\\\\d{6}\"\n")
        .expect("valid");
    assert_eq!(
        cfg.redaction.text("M-123456 at ada@example.com"),
        "[redacted:member] at [redacted:email]"
    );
    assert!(load("").unwrap().redaction.is_empty(), "off by default");
}

#[test]
fn trunk_limits_are_checked() {
    let trunk = "[[trunk]]\nname = \"pbx\"\nhost = \"192.0.2.1\"\n";
    assert_msg(
        &format!("{trunk}max_calls = 0\n"),
        "voxline.toml: trunk[0].max_calls: must be at least 1 (leave it out for no limit)",
    );
    assert_msg(
        &format!("{trunk}max_calls_per_s = 0\n"),
        "voxline.toml: trunk[0].max_calls_per_s: must be between 1 and 10000 (got 0)",
    );
}

#[test]
fn max_message_bytes_range() {
    assert_msg(
        "[sip]\nmax_message_bytes = 100\n",
        "voxline.toml: sip.max_message_bytes: must be between 1500 and 65535 (got 100)",
    );
}

#[test]
fn min_se_floor() {
    assert_msg(
        "[sip]\nmin_se_s = 60\n",
        "voxline.toml: sip.min_se_s: must be at least 90 (got 60)",
    );
}

#[test]
fn session_expires_below_min_se() {
    assert_msg(
        "[sip]\nsession_expires_s = 100\nmin_se_s = 120\n",
        "voxline.toml: sip.session_expires_s: must be 0 (off) or at least sip.min_se_s = 120 \
         (got 100)",
    );
}

#[test]
fn register_expires_floor() {
    assert_msg(
        &format!("{TRUNK}register_expires_s = 30\n"),
        "voxline.toml: trunk[0].register_expires_s: must be at least 60 (got 30)",
    );
}

#[test]
fn no_listener_at_all() {
    assert_msg(
        "[sip]\nudp_listen = []\ntcp_listen = []\n",
        "voxline.toml: sip: udp_listen, tcp_listen, tls_listen, ws_listen and wss_listen are all \
         empty; at least one listener is needed",
    );
}

#[test]
fn udp_trunk_without_udp_listener() {
    assert_msg(
        &format!("[sip]\nudp_listen = []\n\n{TRUNK}"),
        "voxline.toml: trunk[0].transport: is \"udp\" but sip.udp_listen is empty",
    );
}

#[test]
fn empty_string_value() {
    assert_msg(
        "[sip]\nuser_agent = \" \"\n",
        "voxline.toml: sip.user_agent: must not be empty",
    );
}

#[test]
fn origin_is_the_loaded_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voxline.toml");
    std::fs::write(&path, "[media]\nptime_ms = 40\n").unwrap();
    let e = Config::load_with_env(&path, no_env).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: media.ptime_ms: must be 10, 20 or 30 (got 40)",
            path.display()
        )
    );
}

#[test]
fn play_agent_needs_a_source() {
    let err = Config::from_toml_str_with_env(
        "[[agent]]\nname = \"p\"\nkind = \"play\"\n",
        "voxline.toml",
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "voxline.toml: agent[0]: a play agent needs play_file or tone_hz"
    );
}

#[test]
fn tone_outside_range_names_the_key() {
    let err = Config::from_toml_str_with_env(
        "[[agent]]\nname = \"p\"\nkind = \"play\"\ntone_hz = 5.0\n",
        "voxline.toml",
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "voxline.toml: agent[0].tone_hz: must be between 20 and 20000 Hz (got 5)"
    );
}

#[test]
fn jitter_bounds_are_checked() {
    let err = Config::from_toml_str_with_env(
        "[media]\njitter_min_ms = 100\njitter_max_ms = 50\n",
        "voxline.toml",
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "voxline.toml: media.jitter_max_ms: must be between 100 and 2000 (got 50)"
    );
}

#[test]
fn pricing_is_checked() {
    assert_msg(
        "[pricing]\ncurrency = \"euro\"\n",
        "voxline.toml: pricing.currency: must be an ISO 4217 code like USD (got \"euro\")",
    );
    assert_msg(
        "[pricing]\ntelephony_per_minute = -0.01\n",
        "voxline.toml: pricing.telephony_per_minute: must be a price from 0 to 1000000 a minute (got -0.01)",
    );
    assert_msg(
        "[pricing.agent_per_minute]\nsales = nan\n",
        "voxline.toml: pricing.agent_per_minute.sales: must be a price from 0 to 1000000 a minute (got NaN)",
    );
    let cfg = load(
        "[pricing]\ncurrency = \"EUR\"\ntelephony_per_minute = 0.01\n\
         [pricing.agent_per_minute]\nsales = 0.05\n\"*\" = 0.02\n",
    )
    .expect("valid");
    let p = cfg.pricing.expect("[pricing]");
    assert_eq!(p.currency, "EUR");
    // Two minutes of sales: 2 × (0.01 + 0.05); of anyone else: 2 × (0.01 + 0.02).
    assert!((p.cost("sales", 120.0) - 0.12).abs() < 1e-9);
    assert!((p.cost("support", 120.0) - 0.06).abs() < 1e-9);
    assert!(
        load("").unwrap().pricing.is_none(),
        "no estimate by default"
    );
}

#[test]
fn recording_upload_is_checked() {
    const OK: &str = "endpoint = \"http://127.0.0.1:9000\"\nbucket = \"calls\"\n\
                      access_key_env = \"AK\"\nsecret_key_env = \"SK\"\n";
    assert_msg(
        "[recording_upload]\nbucket = \"calls\"\n",
        "voxline.toml: recording_upload.endpoint: is required",
    );
    assert_msg(
        "[recording_upload]\nendpoint = \"ftp://example.com\"\nbucket = \"calls\"\n",
        "voxline.toml: recording_upload.endpoint: must be an http or https URL (got \"ftp://example.com\")",
    );
    assert_msg(
        "[recording_upload]\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"Calls_2024\"\n",
        "voxline.toml: recording_upload.bucket: must be 3 to 63 lowercase letters, digits, dots and hyphens (got \"Calls_2024\")",
    );
    let e = err(&format!("[recording_upload]\n{OK}"));
    assert_eq!(
        e.key.as_deref(),
        Some("recording_upload.access_key_env"),
        "{e}"
    );
    assert!(e.to_string().contains("AK"), "{e}");
    assert_msg(
        &format!("[recording_upload]\n{OK}region = \"eu-west-1\"\nspeed = 1\n"),
        "voxline.toml:7:1: recording_upload.speed: unknown field `speed`, expected one of `endpoint`, `region`, `bucket`, `prefix`, `access_key_env`, `secret_key_env`, `path_style`, `delete_local`, `timeout_s`",
    );
    let env = |v: &str| Some(format!("value-of-{v}"));
    let cfg = Config::from_toml_str_with_env(
        &format!("[recording_upload]\n{OK}prefix = \"vox/\"\ndelete_local = true\n"),
        "voxline.toml",
        env,
    )
    .expect("valid");
    let u = cfg.recording_upload.expect("[recording_upload]");
    assert_eq!(u.access_key.expose(), "value-of-AK");
    assert_eq!(u.secret_key.expose(), "value-of-SK");
    assert_eq!(u.region, "us-east-1");
    assert!(u.path_style && u.delete_local);
    assert_eq!(u.timeout, std::time::Duration::from_secs(300));
    assert!(load("").unwrap().recording_upload.is_none());
}

#[test]
fn store_and_cluster_are_checked() {
    const PG: &str = "[store]\nurl = \"postgres://vox:secret@db.example/voxline\"\n";
    assert_msg(
        "[store]\nurl = \"mysql://vox:secret@db/voxline\"\n",
        "voxline.toml: store.url: expected \"sqlite\" or a postgres:// URL, got \"mysql://vox:***@db/voxline\"",
    );
    assert_msg(
        "[store]\nurl = \"postgres://vox@db/voxline\"\nurl_env = \"STORE\"\n",
        "voxline.toml: store.url: set url or url_env, not both",
    );
    assert_msg(
        "[store]\nurl_env = \"STORE_URL\"\n",
        "voxline.toml: store.url_env: the environment variable STORE_URL is not set",
    );
    assert_msg(
        "[store]\nurl = \"postgres://vox@db/voxline?sslmode=require\"\n",
        "voxline.toml: store.url: postgres://vox@db/voxline?sslmode=require: sslmode=require: voxline connects to PostgreSQL without TLS; use a Unix socket, a private network or a TLS-terminating proxy",
    );
    assert_msg(
        "[cluster]\nnode_id = \"a\"\n",
        "voxline.toml: cluster: needs a shared store: [store] url = \"postgres://…\"",
    );
    assert_msg(
        PG,
        "voxline.toml: cluster.node_id: is required with a PostgreSQL store (each node's calls are recorded under its id)",
    );
    assert_msg(
        &format!("{PG}[cluster]\nnode_id = \"node a\"\n"),
        "voxline.toml: cluster.node_id: must be 1 to 64 letters, digits, '.', '_' or '-' (got \"node a\")",
    );
    let e = err(&format!(
        "{PG}[cluster]\nnode_id = \"a\"\nheartbeat_s = 5\nnode_timeout_s = 10\n"
    ));
    assert_eq!(e.key.as_deref(), Some("cluster.node_timeout_s"), "{e}");
    let e = err(&format!(
        "{PG}[cluster]\nnode_id = \"a\"\napi_url = \"ftp://x\"\n"
    ));
    assert_eq!(e.key.as_deref(), Some("cluster.api_url"), "{e}");
    // A password never reaches an error or the configuration's Debug output.
    let cfg = load(&format!("{PG}[cluster]\nnode_id = \"vox-a\"\n")).expect("valid");
    assert!(!format!("{cfg:?}").contains("secret"));
    let c = cfg.cluster.expect("[cluster]");
    assert_eq!(c.node_id.as_str(), "vox-a");
    assert_eq!(c.heartbeat, std::time::Duration::from_secs(2));
    assert_eq!(c.node_timeout, std::time::Duration::from_secs(10));
    let env = |v: &str| (v == "STORE").then(|| "postgres://vox@db/voxline".to_owned());
    let cfg = Config::from_toml_str_with_env(
        "[store]\nurl_env = \"STORE\"\n[cluster]\nnode_id = \"b\"\n",
        "voxline.toml",
        env,
    )
    .expect("valid");
    assert!(cfg.store.is_shared());
    assert!(!load("").unwrap().store.is_shared());
}
