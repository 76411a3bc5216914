//! voxline registers over TLS to a real TLS registrar: Kamailio (Debian's `kamailio` with
//! `kamailio-tls-modules`), started here on a loopback port with its registrar, digest
//! authentication (`pv_www_authenticate`) and a TLS server that requires and verifies a
//! client certificate (mutual TLS).
//!
//! * With `tls_client_cert_file`/`tls_client_key_file` signed by the CA Kamailio trusts, and
//!   Kamailio's certificate verified against `tls_ca_file`, voxline registers (after the 401
//!   challenge): Kamailio logs the REGISTER over TLS with a verified client certificate
//!   (`CN=voxline-client`) and the saved binding, voxline logs "registered".
//! * Without a client certificate, Kamailio refuses the handshake ("peer did not return a
//!   certificate"): voxline does not register and logs that the registration failed with
//!   503 because the connection failed (not a 408 "no response").

use crate::common;
use crate::tls::TestCerts;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{KAMAILIO_MODULES as MODULES, KamailioProcess, VoxlineProcess, free_tcp_port};
const PASSWORD: &str = "s3cret";

/// The TLS registrar: Kamailio with this test's configuration.
struct Kamailio(KamailioProcess);

impl Kamailio {
    fn start(dir: &Path, port: u16, certs: &TestCerts) -> Kamailio {
        assert!(
            Path::new(MODULES).join("tls.so").is_file(),
            "Kamailio's TLS module is missing: apt-get install kamailio kamailio-tls-modules"
        );
        let tls_cfg = dir.join("tls.cfg");
        std::fs::write(
            &tls_cfg,
            format!(
                "[server:default]\nmethod = TLSv1.2+\nverify_certificate = yes\n\
                 require_certificate = yes\nprivate_key = {}\ncertificate = {}\nca_list = {}\n\n\
                 [client:default]\nverify_certificate = no\nrequire_certificate = no\n",
                certs.key.display(),
                certs.cert.display(),
                certs.ca.display()
            ),
        )
        .expect("tls.cfg");
        let cfg = dir.join("kamailio.cfg");
        std::fs::write(
            &cfg,
            format!(
                r#"#!KAMAILIO
debug=2
log_stderror=yes
children=1
tcp_children=2
disable_tcp=no
enable_tls=yes
auto_aliases=no
listen=tls:127.0.0.1:{port}
mpath="{MODULES}/"
loadmodule "tm.so"
loadmodule "tls.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
modparam("tls", "config", "{tls}")
modparam("usrloc", "db_mode", 0)
request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
  if (is_method("REGISTER")) {{
    xlog("L_NOTICE", "TEST REGISTER proto=$proto verified=$tls_peer_verified cn=$tls_peer_subject_cn\n");
    if (!pv_www_authenticate("$td", "{PASSWORD}", "0")) {{ www_challenge("$td", "0"); exit; }}
    if (!save("location")) {{ sl_reply_error(); exit; }}
    xlog("L_NOTICE", "TEST REGISTERED $tu\n");
    exit;
  }}
  sl_send_reply("404", "Not here");
}}
"#,
                tls = tls_cfg.display()
            ),
        )
        .expect("kamailio.cfg");
        // Up when its TLS port accepts.
        Kamailio(KamailioProcess::spawn(
            &cfg,
            &["-m", "32", "-M", "4"],
            dir,
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        ))
    }

    fn log(&self) -> String {
        self.0.log()
    }
}

/// voxline with a trunk that registers to Kamailio over TLS; `client` adds the client
/// certificate.
fn voxline(port: u16, certs: &TestCerts, client: bool) -> VoxlineProcess {
    let client_lines = if client {
        format!(
            "tls_client_cert_file = \"{}\"\ntls_client_key_file = \"{}\"\n",
            certs.client_cert.display(),
            certs.client_key.display()
        )
    } else {
        String::new()
    };
    VoxlineProcess::spawn_with_env(
        &format!(
            "[sip]\ntls_ca_file = \"{}\"\n{client_lines}\n\
             [[trunk]]\nname = \"kamailio\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             transport = \"tls\"\nregister = true\nusername = \"voxline\"\n\
             password_env = \"KAM_PASSWORD\"\nregister_expires_s = 300\n",
            certs.ca.display()
        ),
        &[("KAM_PASSWORD", PASSWORD)],
    )
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = what;
    false
}

#[test]
fn voxline_registers_over_mutual_tls_to_kamailio() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::new(&["127.0.0.1"]);
    let port = free_tcp_port();
    let kam = Kamailio::start(dir.path(), port, &certs);
    let mut vox = voxline(port, &certs, true);
    let registered = wait_for("registered", Duration::from_secs(10), || {
        vox.output()
            .lines()
            .any(|l| l.contains("registered") && !l.contains("failed"))
    });
    let report = || {
        format!(
            "---- voxline ----\n{}\n---- kamailio ----\n{}",
            vox.output(),
            kam.log()
        )
    };
    assert!(registered, "voxline did not register\n{}", report());
    let klog = kam.log();
    assert!(
        klog.lines()
            .any(|l| l.contains("TEST REGISTER proto=tls verified=1 cn=voxline-client")),
        "Kamailio did not see a verified client certificate\n{}",
        report()
    );
    assert!(
        klog.contains("TEST REGISTERED sip:voxline@127.0.0.1"),
        "no binding saved\n{}",
        report()
    );
    vox.assert_running();
}

#[test]
fn without_a_client_certificate_kamailio_refuses_the_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = TestCerts::new(&["127.0.0.1"]);
    let port = free_tcp_port();
    let kam = Kamailio::start(dir.path(), port, &certs);
    let mut vox = voxline(port, &certs, false);
    let failed = wait_for("failed", Duration::from_secs(10), || {
        vox.output()
            .lines()
            .any(|l| l.contains("registration failed"))
    });
    let out = vox.output();
    assert!(
        out.lines().any(|l| l.contains("registration failed")
            && l.contains("status=503")
            && l.contains("the connection to the registrar failed or closed")),
        "the failure does not say the connection failed\n{out}"
    );
    assert!(
        failed,
        "no failed registration\n{out}\n---- kamailio ----\n{}",
        kam.log()
    );
    assert!(
        !out.lines()
            .any(|l| l.contains(" registered ") || l.ends_with(" registered")),
        "registered without a client certificate\n{out}"
    );
    assert!(!kam.log().contains("TEST REGISTERED"), "{}", kam.log());
    vox.assert_running();
}
