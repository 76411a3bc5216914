//! `voxline call` through a proxy that wants credentials (RFC 3261 22.3).
//!
//! SIPp (sipp-scenarios/uas_outbound_auth.xml) answers the first INVITE with 407
//! (MD5 or SHA-256, qop=auth), takes the second INVITE (which must answer that
//! challenge: realm, nonce, username alice, qop=auth), answers 200 with PCMU, and
//! expects voxline's BYE after `--hangup-after-ms`. `voxline call` must exit 0.
//!
//! SIPp 3.6's `<verifyauth>` reads only an Authorization header and only MD5, so the
//! Proxy-Authorization response is verified here, from SIPp's message trace, with
//! [`common::check_digest`] (itself checked against RFC 7616's examples and a header
//! SIPp computed).

use crate::common;

use std::time::Duration;

use common::{Sipp, check_digest, scenario, voxline_call};

fn config(proxy_port: u16) -> String {
    format!(
        r#"
[[trunk]]
name = "t"
profile = "generic"
host = "127.0.0.1"
port = {proxy_port}
transport = "udp"
username = "alice"
password = "secret"
register = false
"#
    )
}

fn outbound_call_through_407(algorithm: &str) {
    let proxy = Sipp::spawn(
        &[
            "-sf",
            &scenario("uas_outbound_auth.xml"),
            "-m",
            "1",
            "-set",
            "alg",
            algorithm,
        ],
        Duration::from_secs(20),
    );
    let uri = format!("sip:1000@{}", proxy.addr());
    let call = voxline_call(
        &uri,
        &config(proxy.port()),
        &["--hangup-after-ms", "500"],
        Duration::from_secs(15),
    );
    let run = proxy.wait();
    assert!(
        call.status.success(),
        "voxline call exited with {}\n{}\n{}",
        call.status,
        call.output(),
        run.report()
    );
    run.assert_success(&format!("outbound call answering a 407 ({algorithm})"));

    let credentials = run.header_values("Proxy-Authorization");
    assert_eq!(
        credentials.len(),
        1,
        "expected one INVITE with Proxy-Authorization\n{}",
        run.report()
    );
    let value = &credentials[0];
    assert!(
        value
            .to_ascii_lowercase()
            .contains(&format!("algorithm={}", algorithm.to_ascii_lowercase())),
        "credentials not for {algorithm}: {value}"
    );
    if let Err(e) = check_digest(value, "INVITE", "alice", "secret") {
        panic!("Proxy-Authorization does not verify: {e}\n{}", run.report());
    }
}

#[test]
fn outbound_call_answers_407_with_md5_digest() {
    outbound_call_through_407("MD5");
}

#[test]
fn outbound_call_answers_407_with_sha256_digest() {
    outbound_call_through_407("SHA-256");
}

/// The checker the tests above rely on, against known answers.
#[test]
fn digest_checker_agrees_with_rfc7616_and_sipp() {
    // RFC 7616 3.9.1.
    let rfc = |alg: &str, response: &str| {
        format!(
            r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm={alg}, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, response="{response}", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#
        )
    };
    let md5 = rfc("MD5", "8ca523f5e9506fed4657c9700eebdbec");
    let sha = rfc(
        "SHA-256",
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
    );
    assert_eq!(
        check_digest(&md5, "GET", "Mufasa", "Circle of Life"),
        Ok(())
    );
    assert_eq!(
        check_digest(&sha, "GET", "Mufasa", "Circle of Life"),
        Ok(())
    );
    assert!(check_digest(&md5, "GET", "Mufasa", "Circle of life").is_err());
    assert!(check_digest(&sha, "POST", "Mufasa", "Circle of Life").is_err());
    assert!(check_digest(&md5, "GET", "Simba", "Circle of Life").is_err());

    // What SIPp 3.6.1's [authentication] sent for alice/secret to a 407 (cnonce first).
    let sipp = r#"Digest username="alice",realm="voxline.test",cnonce="6b8b4567",nc=00000001,qop=auth,uri="sip:127.0.0.1:25060",nonce="5d41402abc4b2a76b9719d911017c592",response="1288c85be224a12ead9ee55de88d2cc0",algorithm=MD5,opaque="0pq""#;
    assert_eq!(check_digest(sipp, "INVITE", "alice", "secret"), Ok(()));
    assert!(check_digest(sipp, "INVITE", "alice", "wrong").is_err());
    assert!(check_digest(sipp, "REGISTER", "alice", "secret").is_err());
}
