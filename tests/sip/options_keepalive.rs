//! A trunk with `options_keepalive_s` gets an OPTIONS probe on a fixed schedule from a real
//! voxline process (keepalive / qualify towards the peer).

use crate::common;

use std::time::Duration;

use common::*;

#[test]
fn trunk_gets_periodic_options() {
    let peer = RawUdp::bind();
    let port = peer.local.port();
    let mut vox = VoxlineProcess::spawn(&format!(
        "[[trunk]]\nname = \"pbx\"\nprofile = \"generic\"\nhost = \"127.0.0.1\"\nport = {port}\nregister = false\noptions_keepalive_s = 1\n"
    ));
    let mut seen = 0;
    for _ in 0..2 {
        let msg = peer
            .recv_from(vox.sip_addr(), Duration::from_secs(4))
            .expect("an OPTIONS within 4 s");
        assert!(
            msg.starts_with(&format!("OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n")),
            "{msg}"
        );
        assert_eq!(header(&msg, "CSeq", None), Some("1 OPTIONS"));
        // Answer it like a PBX would.
        let mut reply = String::from("SIP/2.0 200 OK\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            reply.push_str(&format!(
                "{name}: {}\r\n",
                header(&msg, name, None).expect(name)
            ));
        }
        reply.push_str("Content-Length: 0\r\n\r\n");
        peer.send(vox.sip_addr(), reply.as_bytes());
        seen += 1;
    }
    assert_eq!(seen, 2);
    vox.assert_running();
}
