//! When the process runs out of file descriptors, opening a call's RTP sockets fails with an
//! error that says so, not one that blames the RTP port range (1,006 idle TCP connections
//! once made every call fail with "no RTP port free" while half the range was free).
//!
//! Its own test binary: it lowers this process's descriptor limit.

use voxline::runtime::rtp::{RtpPortError, RtpPorts};

#[test]
fn running_out_of_descriptors_is_reported_as_that() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let ports = RtpPorts::new([127, 0, 0, 1].into(), 46_000, 46_400);
    // A few calls' sockets fit.
    let first = ports
        .allocate(true)
        .expect("sockets with descriptors to spare");
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    // Leave no room: the limit is the number of descriptors open now.
    let open = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count() as u64;
    setrlimit(Resource::RLIMIT_NOFILE, open, hard).expect("setrlimit");
    let mut held = Vec::new();
    let err = loop {
        match ports.allocate(true) {
            Ok(s) => held.push(s),
            Err(e) => break e,
        }
        assert!(held.len() < 200, "the limit did not bite");
    };
    assert!(
        matches!(err, RtpPortError::OutOfDescriptors(_)),
        "wrong error: {err}"
    );
    assert!(err.to_string().contains("file descriptors"), "{err}");
    drop(held);
    drop(first);
}
