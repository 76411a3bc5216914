//! A bad configuration file stops `voxline run` before it listens: the process exits non-zero
//! and its message names the file, the key and the reason.

use std::process::Command;

#[test]
fn bad_config_exits_nonzero_naming_file_key_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[media]\nptime_ms = 25\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_voxline"))
        .args(["run", "--config"])
        .arg(&path)
        .args([
            "--sip-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .expect("run voxline");
    assert!(!out.status.success(), "must exit non-zero");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml"), "names the file: {err}");
    assert!(err.contains("media.ptime_ms"), "names the key: {err}");
    assert!(err.contains("10, 20 or 30"), "says why: {err}");
}

#[test]
fn unknown_key_is_an_error_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "[sip]\nt1ms = 500\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_voxline"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run voxline");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typo.toml") && err.contains("t1ms"), "{err}");
}
