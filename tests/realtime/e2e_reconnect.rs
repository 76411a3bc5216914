//! The WebSocket drops mid-call: the client reconnects (within its 1 s budget), replays the
//! conversation so far into the new session, and the call goes on: the caller's next turn is
//! answered with audio over the new connection, on the same RTP stream.

use crate::realtime_e2e_support;

use std::time::Duration;

use realtime_e2e_support::{RealtimeE2e, agent_bytes, talk_until_answered};
use voxline_mock_realtime::MockConfig;

#[test]
fn the_call_survives_a_dropped_backend_connection() {
    let h = RealtimeE2e::start(MockConfig::default(), "", "", "");
    let (mut sip, mut rtp, to) = h.call("1000");
    let first = talk_until_answered(&mut rtp, to, 30, 90);
    assert!(
        !agent_bytes(&first).is_empty(),
        "no reply to the first turn"
    );
    h.mock.drop_connections();
    assert!(
        h.wait(Duration::from_secs(3), |m| m.connections() == 2),
        "no reconnection:\n{}",
        h.vox.output()
    );
    let second = talk_until_answered(&mut rtp, to, 30, 90);
    assert!(
        agent_bytes(&second).len() >= 7000,
        "the second turn was not answered after the reconnection ({} bytes)",
        agent_bytes(&second).len()
    );
    assert_eq!(
        h.mock.sessions().len(),
        2,
        "the new connection set up its session"
    );
    // The replayed conversation: the first turn's items were created in the new session.
    assert!(
        !h.mock.items_created().is_empty(),
        "the conversation was not replayed"
    );
    assert_eq!(sip.bye(), 200);
}
