//! voxline registers to a trunk with digest authentication and un-registers on SIGTERM.
//!
//! SIPp (sipp-scenarios/uas_register.xml) plays the registrar: it challenges the first
//! REGISTER with 401 (MD5, qop=auth), verifies the digest of the second with
//! `<verifyauth>` for alice/secret (403 and failure otherwise) and answers 200, then
//! touches a marker file. The test then sends SIGTERM to voxline, which must send the
//! un-REGISTER (Expires: 0 or ;expires=0; SIPp challenges it too if it comes without
//! credentials), get its 200 and exit 0.

use crate::common;

use std::time::Duration;

use common::{Sipp, VoxlineProcess, scenario, wait_for_file};

fn config(registrar_port: u16) -> String {
    format!(
        r#"
[[trunk]]
name = "t"
profile = "generic"
host = "127.0.0.1"
port = {registrar_port}
transport = "udp"
username = "alice"
password = "secret"
register = true
register_expires_s = 3600
"#
    )
}

#[test]
fn registers_with_digest_and_unregisters_on_sigterm() {
    let registrar_dir = tempfile::tempdir().expect("tempdir");
    let marker = registrar_dir.path().join("registered");
    let marker_arg = marker.to_string_lossy().into_owned();
    let registrar = Sipp::spawn(
        &[
            "-sf",
            &scenario("uas_register.xml"),
            "-m",
            "1",
            "-set",
            "marker",
            &marker_arg,
        ],
        Duration::from_secs(20),
    );
    let mut vox = VoxlineProcess::spawn(&config(registrar.port()));

    if !wait_for_file(&marker, Duration::from_secs(10)) {
        let run = registrar.wait();
        panic!(
            "voxline did not complete its registration within 10 s\n{}",
            run.report()
        );
    }

    let status = vox.terminate(Duration::from_secs(10));
    let run = registrar.wait();
    run.assert_success("REGISTER with digest, then the un-REGISTER");
    assert!(
        run.log.contains("un-REGISTER"),
        "no un-REGISTER seen\n{}",
        run.report()
    );
    assert!(
        status.success(),
        "voxline exited with {status} after SIGTERM\n{}",
        vox.output()
    );
}
