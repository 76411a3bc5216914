//! When the process runs out of file descriptors, opening a call's RTP sockets fails with an
//! error that says so, not one that blames the RTP port range (1,006 idle TCP connections
//! once made every call fail with "no RTP port free" while half the range was free).
//!
//! Lowering the descriptor limit hits every thread of the process, and this binary runs its
//! tests in parallel: the check runs in a child process (this binary again, only
//! [`descriptors_child`]), so the other tests keep their descriptors.

use std::process::Command;

use voxline::runtime::rtp::{RtpPortError, RtpPorts};

/// Set in the child's environment.
const CHILD_ENV: &str = "VOXLINE_DESCRIPTORS_CHILD";
/// What the child prints when its checks passed.
const CHILD_PASSED: &str = "descriptors child: passed";

#[test]
fn running_out_of_descriptors_is_reported_as_that() {
    let exe = std::env::current_exe().expect("test binary");
    // The test's name in this binary: its module path without the crate's name.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let out = Command::new(exe)
        .args([
            "--exact",
            &format!("{module}::descriptors_child"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(CHILD_PASSED),
        "child failed: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// Not a test on its own: the child process body. Without `VOXLINE_DESCRIPTORS_CHILD` it
/// returns at once.
#[test]
fn descriptors_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
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
    println!("{CHILD_PASSED}");
}
