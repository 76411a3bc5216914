//! Shipped SIP profiles, the example file, profile merging, defaults and routing.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use voxline::config::{
    AgentKind, AtLimit, Cidr, Codec, Config, DtmfMode, PrackMode, Profile, RoutePattern, SrtpMode,
    TrunkTransport,
};

const SHIPPED: [&str; 10] = [
    "asterisk",
    "freeswitch",
    "jambonz",
    "kamailio",
    "twilio",
    "telnyx",
    "twilio-secure",
    "telnyx-secure",
    "generic",
    "generic-tls",
];

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn builtin_list_is_the_shipped_set() {
    let names: Vec<&str> = Profile::builtin_names().collect();
    assert_eq!(names, SHIPPED);
}

#[test]
fn embedded_profiles_equal_the_files_on_disk() {
    for name in SHIPPED {
        let on_disk =
            std::fs::read_to_string(Path::new("sip-profiles").join(format!("{name}.toml")))
                .unwrap();
        assert_eq!(
            Profile::builtin_source(name),
            Some(on_disk.as_str()),
            "{name}"
        );
    }
}

#[test]
fn every_shipped_profile_parses_and_merges_into_a_trunk() {
    for name in SHIPPED {
        let profile = Profile::builtin(name).unwrap().unwrap();
        // Give credentials so profiles that register resolve too.
        let text = format!(
            "[[trunk]]\nname = \"t\"\nprofile = \"{name}\"\nhost = \"192.0.2.1\"\n\
             username = \"u\"\npassword_env = \"PW\"\n"
        );
        let cfg = Config::from_toml_str_with_env(&text, "voxline.toml", env_with(&[("PW", "s")]))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let t = &cfg.trunks[0];
        assert_eq!(t.profile, name);
        assert_eq!(t.port, profile.port, "{name}");
        assert_eq!(t.transport, profile.transport, "{name}");
        assert_eq!(t.register, profile.register, "{name}");
        assert_eq!(t.register_expires, profile.register_expires, "{name}");
        assert_eq!(t.dtmf, profile.dtmf, "{name}");
        assert_eq!(t.prack, profile.prack, "{name}");
        assert_eq!(t.session_timers, profile.session_timers, "{name}");
        assert_eq!(t.options_keepalive, profile.options_keepalive, "{name}");
        let expected_codecs = profile.codecs.clone().unwrap_or(cfg.media.codecs.clone());
        assert_eq!(t.codecs, expected_codecs, "{name}");
        assert_eq!(t.password.as_ref().map(|p| p.expose()), Some("s"));
        assert_eq!(t.allow_from, vec![Cidr::from(ip("192.0.2.1"))], "{name}");
    }
}

#[test]
fn shipped_profile_choices_are_as_documented() {
    let p = |n: &str| Profile::builtin(n).unwrap().unwrap();
    // Registering profiles: the PBXs (as an extension) and Telnyx credential auth.
    for name in ["asterisk", "freeswitch", "telnyx", "telnyx-secure"] {
        assert!(p(name).register, "{name} registers");
    }
    for name in [
        "jambonz",
        "kamailio",
        "twilio",
        "twilio-secure",
        "generic",
        "generic-tls",
    ] {
        assert!(!p(name).register, "{name} does not register");
    }
    assert_eq!(p("twilio").codecs, Some(vec![Codec::Pcmu, Codec::Pcma]));
    assert_eq!(
        p("asterisk").codecs,
        Some(vec![Codec::G722, Codec::Pcmu, Codec::Pcma])
    );
    assert_eq!(p("kamailio").codecs, None);
    for name in SHIPPED {
        let prof = p(name);
        let (port, transport, srtp) = match name {
            "generic-tls" => (5061, TrunkTransport::Tls, SrtpMode::Off),
            "twilio-secure" | "telnyx-secure" => (5061, TrunkTransport::Tls, SrtpMode::Mandatory),
            _ => (5060, TrunkTransport::Udp, SrtpMode::Off),
        };
        assert_eq!(prof.port, port, "{name}");
        assert_eq!(prof.transport, transport, "{name}");
        assert_eq!(prof.srtp, srtp, "{name}");
        assert_eq!(prof.dtmf, DtmfMode::Rfc4733, "{name}");
    }
}

#[test]
fn example_file_loads_with_its_env_vars() {
    let env = env_with(&[("PBX_PASSWORD", "pbx-secret"), ("VOXLINE_API_TOKEN", "tok")]);
    let cfg = Config::load_with_env(Path::new("voxline.example.toml"), env).unwrap();
    assert_eq!(cfg.trunks.len(), 2);
    let pbx = cfg.trunk("pbx").unwrap();
    assert_eq!(pbx.profile, "asterisk");
    assert!(pbx.register);
    assert_eq!(pbx.register_expires, Duration::from_secs(600));
    assert_eq!(pbx.password.as_ref().unwrap().expose(), "pbx-secret");
    assert_eq!(pbx.outbound_proxy.as_deref(), Some("sip:192.0.2.2:5060"));
    assert_eq!(pbx.codecs, vec![Codec::G722, Codec::Pcma, Codec::Pcmu]);
    assert_eq!(pbx.allow_from.len(), 2);
    let twilio = cfg.trunk("twilio").unwrap();
    assert!(!twilio.register);
    assert_eq!(twilio.password, None);
    assert_eq!(
        twilio.from_domain.as_deref(),
        Some("example.pstn.twilio.com")
    );
    assert_eq!(cfg.http.token.as_ref().unwrap().expose(), "tok");
    assert_eq!(cfg.limits.at_limit, AtLimit::Unavailable);
    assert_eq!(cfg.sip.external_ip, Some(ip("203.0.113.10")));
    assert_eq!(cfg.profile_dir, None);
    assert_eq!(cfg.data_dir, Path::new("./data"));
    assert_eq!(cfg.route_for("voxline").unwrap().name, "support");
    assert_eq!(cfg.route_for("+14155550199").unwrap().name, "hold");
}

#[test]
fn example_file_without_its_env_vars_names_the_first_missing_one() {
    let err = Config::load_with_env(Path::new("voxline.example.toml"), no_env).unwrap_err();
    assert_eq!(
        err.to_string(),
        "voxline.example.toml: http.token_env: environment variable VOXLINE_API_TOKEN is not set"
    );
}

#[test]
fn trunk_keys_override_profile_keys() {
    let text = r#"
[[trunk]]
name = "pbx"
profile = "asterisk"
host = "pbx.example.com"
port = 5070
transport = "tcp"
register = false
register_expires_s = 120
codecs = ["pcma"]
dtmf = "info"
session_timers = false
prack = "disabled"
options_keepalive_s = 15
from_domain = "example.com"
"#;
    let cfg = Config::from_toml_str_with_env(text, "voxline.toml", no_env).unwrap();
    let t = &cfg.trunks[0];
    assert_eq!(t.port, 5070);
    assert_eq!(t.transport, TrunkTransport::Tcp);
    assert!(!t.register);
    assert_eq!(t.register_expires, Duration::from_secs(120));
    assert_eq!(t.codecs, vec![Codec::Pcma]);
    assert_eq!(t.dtmf, DtmfMode::Info);
    assert!(!t.session_timers);
    assert_eq!(t.prack, PrackMode::Disabled);
    assert_eq!(t.options_keepalive, Some(Duration::from_secs(15)));
    assert_eq!(t.from_domain.as_deref(), Some("example.com"));
    // A DNS host gives no implicit allow_from.
    assert!(t.allow_from.is_empty());
}

#[test]
fn profile_defaults_fill_what_the_trunk_leaves_out() {
    let text = "[[trunk]]\nname = \"j\"\nprofile = \"jambonz\"\nhost = \"sbc.example.com\"\n";
    let cfg = Config::from_toml_str_with_env(text, "voxline.toml", no_env).unwrap();
    let t = &cfg.trunks[0];
    assert_eq!(t.codecs, vec![Codec::Pcmu, Codec::Pcma]);
    assert_eq!(t.from_domain.as_deref(), Some("sbc.example.com"));
    assert_eq!(t.username, None);
    assert_eq!(t.password, None);
    assert!(t.session_timers);
}

#[test]
fn the_generic_tls_profile_dials_tls_on_5061() {
    let cfg = Config::from_toml_str_with_env(
        "[[trunk]]\nname = \"pbx\"\nprofile = \"generic-tls\"\nhost = \"pbx.example.com\"\n",
        "voxline.toml",
        no_env,
    )
    .unwrap();
    assert_eq!(cfg.trunks[0].transport, TrunkTransport::Tls);
    assert_eq!(cfg.trunks[0].port, 5061);
    // A plain profile switched to TLS takes TLS's port too.
    let cfg = Config::from_toml_str_with_env(
        "[[trunk]]\nname = \"pbx\"\nhost = \"pbx.example.com\"\ntransport = \"tls\"\n",
        "voxline.toml",
        no_env,
    )
    .unwrap();
    assert_eq!(cfg.trunks[0].port, 5061);
}

#[test]
fn trunk_without_profile_uses_generic() {
    let text = "[[trunk]]\nname = \"x\"\nhost = \"192.0.2.9\"\n";
    let cfg = Config::from_toml_str_with_env(text, "voxline.toml", no_env).unwrap();
    assert_eq!(cfg.trunks[0].profile, "generic");
    assert_eq!(cfg.trunks[0].codecs, vec![Codec::Pcmu, Codec::Pcma]);
}

#[test]
fn session_timers_off_globally_wins_over_profile() {
    let text = "[sip]\nsession_expires_s = 0\n[[trunk]]\nname = \"x\"\nhost = \"192.0.2.9\"\nsession_timers = true\n";
    let cfg = Config::from_toml_str_with_env(text, "voxline.toml", no_env).unwrap();
    assert_eq!(cfg.sip.session_expires, None);
    assert!(!cfg.trunks[0].session_timers);
}

#[test]
fn profile_dir_is_searched_before_builtins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("asterisk.toml"),
        "description = \"mine\"\nport = 5080\nregister = false\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("custom.toml"), "transport = \"tcp\"\n").unwrap();
    std::fs::write(
        dir.path().join("voxline.toml"),
        "profile_dir = \".\"\n\n[[trunk]]\nname = \"a\"\nprofile = \"asterisk\"\nhost = \"192.0.2.1\"\n\n\
         [[trunk]]\nname = \"c\"\nprofile = \"custom\"\nhost = \"192.0.2.2\"\n\n\
         [[trunk]]\nname = \"f\"\nprofile = \"freeswitch\"\nhost = \"192.0.2.3\"\nregister = false\n",
    )
    .unwrap();
    let cfg = Config::load_with_env(&dir.path().join("voxline.toml"), no_env).unwrap();
    // Relative paths are taken from the directory holding the file.
    assert_eq!(cfg.profile_dir.as_deref(), Some(dir.path()));
    assert_eq!(cfg.data_dir, dir.path().join("data"));
    let a = cfg.trunk("a").unwrap();
    assert_eq!(a.port, 5080);
    assert!(!a.register);
    assert_eq!(cfg.trunk("c").unwrap().transport, TrunkTransport::Tcp);
    // Not in profile_dir: falls back to the built-in profile.
    assert_eq!(
        cfg.trunk("f").unwrap().codecs,
        vec![Codec::G722, Codec::Pcmu, Codec::Pcma, Codec::Opus]
    );
}

#[test]
fn embedded_default_values_are_as_documented() {
    let cfg = Config::embedded_default();
    let any5060 = vec!["0.0.0.0:5060".parse().unwrap()];
    assert_eq!(cfg.sip.udp_listen, any5060);
    assert_eq!(cfg.sip.tcp_listen, any5060);
    assert_eq!(cfg.sip.external_ip, None);
    // The default does not advertise the version.
    assert_eq!(cfg.sip.user_agent, "voxline");
    assert_eq!(cfg.sip.domain, None);
    assert_eq!(cfg.sip.t1, Duration::from_millis(500));
    assert_eq!(cfg.sip.t2, Duration::from_millis(4000));
    assert_eq!(cfg.sip.t4, Duration::from_millis(5000));
    assert_eq!(cfg.sip.max_message_bytes, 65535);
    assert_eq!(cfg.sip.max_headers, 128);
    assert_eq!(cfg.sip.tcp_keepalive, Some(Duration::from_secs(30)));
    assert_eq!(cfg.sip.session_expires, Some(Duration::from_secs(1800)));
    assert_eq!(cfg.sip.min_se, Duration::from_secs(90));
    assert_eq!(cfg.limits.max_calls, 1000);
    assert_eq!(cfg.limits.at_limit, AtLimit::Busy);
    assert_eq!(cfg.limits.retry_after, Duration::from_secs(30));
    assert_eq!(cfg.limits.no_answer_timeout, Some(Duration::from_secs(60)));
    assert_eq!(cfg.http.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(cfg.http.token_env, None);
    assert_eq!(cfg.http.token, None);
    assert_eq!(
        cfg.media.codecs,
        vec![Codec::Pcmu, Codec::Pcma, Codec::G722, Codec::Opus]
    );
    assert!(cfg.media.telephone_event);
    assert_eq!(cfg.media.ptime, Duration::from_millis(20));
    assert_eq!(cfg.media.rtp_ports.min(), 10000);
    assert_eq!(cfg.media.rtp_ports.max(), 20000);
    assert!(cfg.media.rtcp_mux);
    assert!(cfg.trunks.is_empty());
    assert_eq!(cfg.routes.len(), 1);
    assert_eq!(cfg.routes[0].pattern, RoutePattern::Any);
    assert_eq!(cfg.routes[0].agent, "echo");
    assert_eq!(cfg.agents.len(), 2);
    assert_eq!(cfg.agents[0].name, "hold");
    assert_eq!(cfg.agents[0].kind, AgentKind::Hold);
    assert!(cfg.agents[0].builtin);
    assert_eq!(cfg.agents[1].name, "echo");
    assert_eq!(cfg.agents[1].kind, AgentKind::Echo);
    assert!(cfg.agents[1].builtin);
    assert_eq!(cfg.profile_dir, None);
    assert_eq!(cfg.data_dir, Path::new("./data"));
    assert_eq!(cfg.route_for("anything").unwrap().name, "echo");
}

#[test]
fn empty_file_equals_embedded_default() {
    let cfg = Config::from_toml_str_with_env("# nothing\n", "voxline.toml", no_env).unwrap();
    assert_eq!(cfg, Config::embedded_default());
}

#[test]
fn routes_first_match_wins_exact_prefix_any() {
    let text = r#"
[[route]]
number = "1000"
agent = "sales"

[[route]]
number = "10*"
agent = "support"

[[route]]
number = "*"
agent = "hold"

[[route]]
number = "1001"
agent = "sales"

[[agent]]
name = "sales"
kind = "hold"

[[agent]]
name = "support"
kind = "hold"
greeting = "hi"
"#;
    let cfg = Config::from_toml_str_with_env(text, "voxline.toml", no_env).unwrap();
    let agent = |u: &str| cfg.route_for(u).map(|a| a.name.as_str());
    assert_eq!(agent("1000"), Some("sales"));
    assert_eq!(agent("1001"), Some("support")); // "10*" comes before the exact "1001"
    assert_eq!(agent("10"), Some("support"));
    assert_eq!(agent("2000"), Some("hold"));
    assert_eq!(agent(""), Some("hold"));
    assert_eq!(
        cfg.agent("support").unwrap().greeting.as_deref(),
        Some("hi")
    );
    // The built-in hold and echo agents are appended after the file's agents.
    let names: Vec<&str> = cfg.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["sales", "support", "hold", "echo"]);
}

#[test]
fn routes_without_catch_all_leave_unmatched_numbers_unrouted() {
    let text = "[[route]]\nnumber = \"+4930*\"\nagent = \"hold\"\n";
    let cfg = Config::from_toml_str_with_env(text, "voxline.toml", no_env).unwrap();
    assert_eq!(cfg.route_for("+493012345").unwrap().name, "hold");
    assert!(cfg.route_for("+4940123").is_none());
}

#[test]
fn own_agent_named_hold_replaces_the_builtin() {
    let text = "[[agent]]\nname = \"hold\"\nkind = \"hold\"\ngreeting = \"mine\"\n";
    let cfg = Config::from_toml_str_with_env(text, "voxline.toml", no_env).unwrap();
    assert_eq!(
        cfg.agents.len(),
        2,
        "the file's hold plus the built-in echo"
    );
    assert!(!cfg.agents[0].builtin);
    assert_eq!(cfg.agent("hold").unwrap().greeting.as_deref(), Some("mine"));
}

#[test]
fn trunk_for_source_uses_allow_from_in_file_order() {
    let text = r#"
[[trunk]]
name = "pbx"
host = "192.0.2.20"

[[trunk]]
name = "carrier"
host = "sip.example.net"
allow_from = ["198.51.100.0/24", "2001:db8:5::/48"]

[[trunk]]
name = "wide"
host = "sip.example.org"
allow_from = ["198.51.0.0/16"]

[[trunk]]
name = "none"
host = "192.0.2.30"
allow_from = []
"#;
    let cfg = Config::from_toml_str_with_env(text, "voxline.toml", no_env).unwrap();
    let name = |s: &str| cfg.trunk_for_source(ip(s)).map(|t| t.name.as_str());
    assert_eq!(name("192.0.2.20"), Some("pbx"));
    assert_eq!(name("::ffff:192.0.2.20"), Some("pbx"));
    assert_eq!(name("192.0.2.21"), None);
    assert_eq!(name("198.51.100.7"), Some("carrier"));
    assert_eq!(name("198.51.7.7"), Some("wide"));
    assert_eq!(name("2001:db8:5:1::9"), Some("carrier"));
    // An explicit empty allow_from disables the implicit host entry.
    assert_eq!(name("192.0.2.30"), None);
}

#[test]
fn inline_password_is_accepted() {
    let text = "[[trunk]]\nname = \"x\"\nhost = \"192.0.2.9\"\nregister = true\nusername = \"u\"\npassword = \"p\"\n";
    let cfg = Config::from_toml_str_with_env(text, "voxline.toml", no_env).unwrap();
    assert_eq!(cfg.trunks[0].password.as_ref().unwrap().expose(), "p");
    // Debug output never shows it.
    assert!(!format!("{cfg:?}").contains("\"p\""));
}
