//! SIP over TLS against a real peer, baresip (Debian's SIPp is built without OpenSSL: its
//! `-t l1` cannot run), and the certificate checks.
//!
//! * baresip calls the echo agent over TLS, verifying voxline's certificate against the
//!   test CA; the call is answered and ends normally.
//! * A client that does not speak TLS to the TLS port gets nothing, is closed, and is counted
//!   (`voxline_sip_tls_failed_total`); voxline keeps serving.
//! * voxline calling out over TLS refuses a certificate from another CA, an expired one and
//!   one for another host, each with a warning naming the reason, and the call ends 503.
//! * A certificate file that is not one, and a key that does not go with its certificate, stop
//!   voxline at start with the key, the file and the reason.
//!
//! The certificates are made here (rcgen): a CA and a server certificate for the names each
//! test needs.

use crate::common;

use std::io::Write as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::media_peer::{CallSpy, wait_ended};
use common::{VoxlineProcess, free_sip_port, free_tcp_port, http_get, voxline_call};

/// A CA and a server certificate it signed, as PEM files in a temporary directory.
pub struct TestCerts {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's key.
    pub key: PathBuf,
    /// The CA's certificate (what a client verifies the server against).
    pub ca: PathBuf,
    /// A client certificate the same CA signed (CN `voxline-client`), for mutual TLS.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

impl TestCerts {
    /// A CA and a certificate for `names` (DNS names or IPs).
    pub fn new(names: &[&str]) -> TestCerts {
        TestCerts::with_expiry(names, false)
    }

    /// Like [`TestCerts::new`]; with `expired`, the server certificate's validity ended in
    /// 2020.
    pub fn with_expiry(names: &[&str], expired: bool) -> TestCerts {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "voxline test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA cert");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let cert = params.signed_by(&key, &ca, &ca_key).expect("cert");
        let client_key = rcgen::KeyPair::generate().expect("client key");
        let mut client_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("client params");
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "voxline-client");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params
            .signed_by(&client_key, &ca, &ca_key)
            .expect("client cert");
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write pem");
            p
        };
        TestCerts {
            cert: write("cert.pem", cert.pem() + &ca.pem()),
            key: write("key.pem", key.serialize_pem()),
            ca: write("ca.pem", ca.pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client-key.pem", client_key.serialize_pem()),
            dir,
        }
    }

    /// `[sip]` settings for a TLS listener on `port`.
    pub fn sip_table(&self, port: u16) -> String {
        format!(
            "[sip]\ntls_listen = [\"127.0.0.1:{port}\"]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        )
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// baresip's loadable modules (Debian/Ubuntu layout).
const BARESIP_MODULES: &str = "/usr/lib/baresip/modules";

/// Writes a baresip configuration into `conf`: loopback only, SIP on `port` (TLS on the
/// port after it), G.711, no sound card, `extra` config lines and the `account` line.
fn baresip_config(conf: &Path, port: u16, extra: &str, account: &str) {
    std::fs::create_dir_all(conf).expect("config dir");
    std::fs::write(
        conf.join("config"),
        format!(
            "poll_method\t\tpoll\n\
             sip_listen\t\t127.0.0.1:{port}\n\
             {extra}\
             net_interface\t\t127.0.0.1\n\
             audio_source\t\taubridge,nothing\n\
             audio_player\t\taubridge,nothing\n\
             audio_alert\t\taubridge,nothing\n\
             module_path\t\t{BARESIP_MODULES}\n\
             module\t\t\tg711.so\n\
             module\t\t\taubridge.so\n\
             module_app\t\taccount.so\n\
             module_app\t\tmenu.so\n",
        ),
    )
    .expect("baresip config");
    std::fs::write(conf.join("accounts"), format!("{account}\n")).expect("baresip accounts");
}

#[test]
fn baresip_calls_the_echo_agent_over_tls_verifying_voxlines_certificate() {
    // Debian's SIPp is built without OpenSSL (`-t l1` refuses to start), so the TLS peer
    // here is baresip (libre's TLS), which verifies voxline's certificate against the test
    // CA (`sip_cafile`) for the address it dials.
    let certs = TestCerts::new(&["localhost", "127.0.0.1"]);
    let port = free_tcp_port();
    let mut vox = VoxlineProcess::spawn(&certs.sip_table(port));
    let spy = CallSpy::start(vox.http_addr());
    let conf = certs.dir.path().join("baresip");
    let bport = free_sip_port();
    baresip_config(
        &conf,
        bport,
        &format!("sip_cafile\t\t{}\n", certs.ca.display()),
        "<sip:tester@127.0.0.1;transport=tls>;regint=0",
    );
    let log = certs.dir.path().join("baresip.log");
    let mut child = Command::new("baresip")
        .arg("-f")
        .arg(&conf)
        .arg("-e")
        .arg(format!("d sip:echo@127.0.0.1:{port};transport=tls"))
        .arg("-t")
        .arg("6")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("baresip (apt-get install baresip)");
    let baresip_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let id = spy.the_call(Duration::from_secs(8));
    let deadline = std::time::Instant::now() + Duration::from_secs(12);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let call = wait_ended(vox.http_addr(), id, Duration::from_secs(8));
    let report = || format!("call: {call:#}\n---- baresip ----\n{}", baresip_log());
    assert_eq!(call["state"], "ended", "{}", report());
    assert_eq!(call["codec"], "PCMU", "{}", report());
    assert!(
        call["answered_at"].is_number(),
        "the call over TLS was not answered\n{}",
        report()
    );
    let out = vox.output();
    assert!(
        out.lines()
            .any(|l| l.contains("incoming call") && l.contains("source=tls:127.0.0.1:")),
        "the call did not come in over TLS\n{out}"
    );
    vox.assert_running();
}

#[test]
fn a_client_that_does_not_speak_tls_is_closed_and_counted() {
    let certs = TestCerts::new(&["localhost"]);
    let port = free_tcp_port();
    let mut vox = VoxlineProcess::spawn(&certs.sip_table(port));
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Plain SIP where a ClientHello belongs.
    let _ = s.write_all(b"OPTIONS sip:voxline@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap_or(0);
    assert!(
        !String::from_utf8_lossy(&buf[..n]).contains("SIP/2.0"),
        "a SIP answer on the TLS port"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) =
            http_get(vox.http_addr(), "/metrics", Duration::from_secs(5)).expect("metrics");
        if metrics.contains("voxline_sip_tls_failed_total 1\n") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not counted:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    vox.assert_running();
}

/// Runs `voxline run` on `toml`, which must stop at start; its stderr. (Killed, and the
/// test failed, if it runs on for 10 s.)
fn check_fails(toml: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("voxline.toml");
    std::fs::write(&cfg, toml).expect("write");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_voxline"))
        .args(["run", "--config", path(&cfg)])
        .args([
            "--sip-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("run voxline");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("voxline started with:\n{toml}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "accepted:\n{toml}");
    std::fs::read_to_string(&err_path).unwrap_or_default()
}

#[test]
fn unusable_certificate_files_are_refused_with_the_file_and_the_reason() {
    let certs = TestCerts::new(&["localhost"]);
    // Not a certificate.
    let junk = certs.dir.path().join("junk.pem");
    std::fs::write(&junk, "this is not a certificate\n").unwrap();
    let err = check_fails(&format!(
        "[sip]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        junk.display(),
        certs.key.display()
    ));
    assert!(
        err.contains("sip.tls_cert_file")
            && err.contains(&junk.display().to_string())
            && err.contains("holds no certificate"),
        "{err}"
    );
    // A key that belongs to another certificate.
    let other = TestCerts::new(&["localhost"]);
    let err = check_fails(&format!(
        "[sip]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        certs.cert.display(),
        other.key.display()
    ));
    assert!(
        err.contains("sip.tls_key_file") && err.contains(&other.key.display().to_string()),
        "{err}"
    );
    // A listener without a certificate, and a missing file.
    let err = check_fails("[sip]\ntls_listen = [\"127.0.0.1:5061\"]\n");
    assert!(err.contains("sip.tls_listen"), "{err}");
    let err = check_fails(&format!(
        "[sip]\ntls_client_cert_file = \"{}\"\n",
        certs.client_cert.display()
    ));
    assert!(
        err.contains("sip.tls_client_key_file") && err.contains("its key is needed too"),
        "{err}"
    );
    let err = check_fails(&format!(
        "[sip]\ntls_client_cert_file = \"{}\"\ntls_client_key_file = \"{}\"\n",
        certs.client_cert.display(),
        certs.key.display()
    ));
    assert!(
        err.contains("sip.tls_client_key_file") && err.contains("does not go with"),
        "{err}"
    );
    let err = check_fails("[sip]\nwss_listen = [\"127.0.0.1:7443\"]\n");
    assert!(
        err.contains("sip.wss_listen") && err.contains("needs tls_cert_file and tls_key_file"),
        "{err}"
    );
    let err = check_fails(&format!(
        "[sip]\ntls_cert_file = \"{}/missing.pem\"\ntls_key_file = \"{}\"\n",
        certs.dir.path().display(),
        certs.key.display()
    ));
    assert!(err.contains("missing.pem"), "{err}");
}

/// baresip answering calls over TLS with `certs`' server certificate; the process, its TLS
/// port and its log path.
fn baresip_callee(certs: &TestCerts) -> (std::process::Child, u16, PathBuf) {
    let conf = certs.dir.path().join("callee");
    std::fs::create_dir_all(&conf).expect("config dir");
    let both = conf.join("cert+key.pem");
    std::fs::write(
        &both,
        std::fs::read_to_string(&certs.cert).unwrap()
            + &std::fs::read_to_string(&certs.key).unwrap(),
    )
    .expect("write cert+key");
    let port = crate::common::free_sip_port_with_tls();
    baresip_config(
        &conf,
        port,
        &format!("sip_certificate\t\t{}\n", both.display()),
        "<sip:callee@127.0.0.1>;answermode=auto;regint=0",
    );
    let log = conf.join("baresip.log");
    let child = Command::new("baresip")
        .arg("-f")
        .arg(&conf)
        .arg("-t")
        .arg("12")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("baresip (apt-get install baresip)");
    // baresip (libre) takes TLS on the port after its SIP port; wait until it listens.
    let tls_port = port + 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "baresip does not listen for TLS"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, tls_port, log)
}

/// `voxline call` to a baresip callee holding `callee`'s certificate, over TLS, with voxline
/// trusting `trusted_ca`; the call and baresip's log.
fn call_tls_callee(callee: &TestCerts, trusted_ca: &Path) -> (common::VoxlineCall, String) {
    let (mut child, port, log) = baresip_callee(callee);
    let config = format!("[sip]\ntls_ca_file = \"{}\"\n", trusted_ca.display());
    let call = voxline_call(
        &format!("sip:callee@127.0.0.1:{port};transport=tls"),
        &config,
        &["--hangup-after-ms", "500"],
        Duration::from_secs(20),
    );
    let _ = child.kill();
    let _ = child.wait();
    (call, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Asserts that the call was refused for its certificate, with `reason` in the warning, and
/// ended 503 (RFC 3261 §8.1.3.1: a transport error, not a timeout).
fn assert_refused(call: &common::VoxlineCall, reason: &str) {
    let out = call.output();
    assert!(!call.status.success(), "the call went through\n{out}");
    assert!(
        out.contains("TLS connection refused") && out.contains(reason),
        "{out}"
    );
    assert!(out.contains("end=Failed(503)"), "{out}");
}

#[test]
fn voxline_calls_out_over_tls_and_verifies_the_servers_certificate() {
    // The callee's certificate holds 127.0.0.1, and voxline trusts the test CA.
    let certs = TestCerts::new(&["127.0.0.1"]);
    let (call, baresip) = call_tls_callee(&certs, &certs.ca);
    assert!(
        call.status.success(),
        "voxline call exited with {}\n{}\n---- baresip ----\n{baresip}",
        call.status,
        call.output()
    );
    // Another CA: the same callee is refused, and voxline says why.
    let other = TestCerts::new(&["127.0.0.1"]);
    let (call, _) = call_tls_callee(&certs, &other.ca);
    assert_refused(&call, "invalid peer certificate");
}

#[test]
fn an_expired_or_wrong_host_certificate_is_refused_with_the_reason() {
    // Expired: signed by the CA voxline trusts, for the right address, but out of date.
    let certs = TestCerts::with_expiry(&["127.0.0.1"], true);
    let (call, _) = call_tls_callee(&certs, &certs.ca);
    assert_refused(&call, "certificate expired");
    // Wrong host: valid and trusted, but for localhost only, while voxline dials 127.0.0.1.
    let certs = TestCerts::new(&["localhost"]);
    let (call, _) = call_tls_callee(&certs, &certs.ca);
    assert_refused(&call, "not valid for name");
}
