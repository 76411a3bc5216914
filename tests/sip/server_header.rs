//! The Server and User-Agent header of a real voxline process: by default the product name
//! without its version (a version tells a scanner which advisories apply), and what
//! `[sip] user_agent` says when set.

use crate::common;

use std::time::Duration;

use common::*;

/// voxline's Server header in its answer to an OPTIONS.
fn server_header(vox: &VoxlineProcess) -> Option<String> {
    let udp = RawUdp::bind();
    let id = unique("server-");
    udp.send(
        vox.sip_addr(),
        options_request("UDP", udp.local, vox.sip_addr(), &id).as_bytes(),
    );
    let reply = udp
        .final_response(vox.sip_addr(), Duration::from_secs(5))
        .expect("OPTIONS answered");
    header(&reply, "Server", None).map(str::to_string)
}

#[test]
fn the_default_server_header_has_no_version() {
    let vox = VoxlineProcess::spawn("");
    assert_eq!(server_header(&vox).as_deref(), Some("voxline"));
}

#[test]
fn user_agent_sets_the_server_header() {
    let vox = VoxlineProcess::spawn("[sip]\nuser_agent = \"acme-edge/7\"\n");
    assert_eq!(server_header(&vox).as_deref(), Some("acme-edge/7"));
}
