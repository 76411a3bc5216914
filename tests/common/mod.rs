//! Shared harness for the real-peer tests (tests/sipp_*.rs, tests/sip/malformed.rs).
//!
//! * [`VoxlineProcess`]: a `voxline run` on free loopback ports, with its own config
//!   file and log files in a temporary directory; killed on drop, its log printed when
//!   the test fails.
//! * [`Sipp`] / [`sipp`]: one SIPp run on its own free loopback ports with a hard
//!   timeout; [`SippResult::assert_success`] fails the test with SIPp's logs.
//! * [`voxline_call`]: one `voxline call`, with a hard timeout.
//! * Raw SIP helpers for the tests that speak SIP themselves, and a digest checker.
//!
//! Every socket is on 127.0.0.1. Every port comes from the kernel (bind to port 0) and
//! is remembered, so tests running in parallel in one test binary never get the same
//! port twice.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod postgres;

use std::collections::HashSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The only address the tests use.
pub const LOOPBACK: &str = "127.0.0.1";

/// How long `voxline run` may take to answer `GET /health` with 200.
pub const VOXLINE_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Extra time, past SIPp's own `-timeout`, before the harness kills SIPp.
const SIPP_KILL_GRACE: Duration = Duration::from_secs(5);

/// The message printed when SIPp is missing: the tests never skip silently.
pub const SIPP_MISSING: &str = "sipp not found: install it with `apt-get install sip-tester`";

/// Absolute path of a scenario in sipp-scenarios/.
pub fn scenario(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp-scenarios")
        .join(name);
    assert!(path.is_file(), "no such scenario: {}", path.display());
    path.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------
// Free ports
// ---------------------------------------------------------------------------------------

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A loopback port P the kernel picked for UDP, with P..P+span free for UDP (and P for
/// TCP too if `tcp`), none of them handed out before in this process.
fn pick_port(what: &str, span: u16, tcp: bool) -> u16 {
    for _ in 0..1000 {
        let sock = UdpSocket::bind((LOOPBACK, 0)).expect("bind 127.0.0.1:0 (UDP)");
        let port = sock.local_addr().expect("local_addr").port();
        if port > u16::MAX - span {
            continue;
        }
        let mut ports = handed_out().lock().unwrap_or_else(|e| e.into_inner());
        if (0..span).any(|i| ports.contains(&(port + i)))
            || !(1..span).all(|i| udp_free(port + i))
            || (tcp && !tcp_free(port))
        {
            continue;
        }
        for i in 0..span {
            ports.insert(port + i);
        }
        return port;
    }
    panic!("found no free {what} port on 127.0.0.1");
}

fn udp_free(port: u16) -> bool {
    UdpSocket::bind((LOOPBACK, port)).is_ok()
}

fn tcp_free(port: u16) -> bool {
    TcpListener::bind((LOOPBACK, port)).is_ok()
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    pick_port("UDP", 1, false)
}

/// A free TCP port on 127.0.0.1 (free for UDP too).
pub fn free_tcp_port() -> u16 {
    pick_port("TCP", 1, true)
}

/// A port free for both UDP and TCP (for `--sip-listen`, which binds both).
pub fn free_sip_port() -> u16 {
    pick_port("UDP+TCP", 1, true)
}

/// A port P free for UDP and TCP whose P+1 is free for TCP too, both kept from other
/// handouts: baresip (libre) takes SIP on P and TLS on P+1.
pub fn free_sip_port_with_tls() -> u16 {
    for _ in 0..100 {
        let port = pick_port("UDP+TCP with TLS next to it", 2, true);
        if tcp_free(port + 1) {
            return port;
        }
    }
    panic!("found no SIP port with a free TLS port after it on 127.0.0.1");
}

/// A port P with P..=P+3 free for UDP: SIPp's `-mp P` binds P (audio) and P+2 (video).
fn free_media_port() -> u16 {
    pick_port("media", 4, false)
}

// ---------------------------------------------------------------------------------------
// voxline run
// ---------------------------------------------------------------------------------------

/// A running `voxline run`, on free loopback ports, killed on drop.
pub struct VoxlineProcess {
    child: Child,
    exited: Option<ExitStatus>,
    sip: SocketAddr,
    http: SocketAddr,
    config_path: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl VoxlineProcess {
    /// Write `config_toml` to a temporary file, start `voxline run --config FILE
    /// --sip-listen 127.0.0.1:P --http-listen 127.0.0.1:H` and wait (up to
    /// [`VOXLINE_READY_TIMEOUT`]) until `GET /health` answers 200.
    pub fn spawn(config_toml: &str) -> VoxlineProcess {
        VoxlineProcess::spawn_with_env(config_toml, &[])
    }

    /// [`VoxlineProcess::spawn`] with extra environment variables for the process (API keys).
    pub fn spawn_with_env(config_toml: &str, env: &[(&str, &str)]) -> VoxlineProcess {
        VoxlineProcess::spawn_inner(config_toml, env, LOOPBACK, &[])
    }

    /// [`VoxlineProcess::spawn`] with more arguments for `voxline run` (`--drain`).
    pub fn spawn_with_args(config_toml: &str, args: &[&str]) -> VoxlineProcess {
        VoxlineProcess::spawn_inner(config_toml, &[], LOOPBACK, args)
    }

    /// [`VoxlineProcess::spawn`] with SIP and HTTP on `ip` instead of 127.0.0.1 (a test
    /// network's address, see [`TestNetns`]).
    pub fn spawn_at(ip: std::net::IpAddr, config_toml: &str) -> VoxlineProcess {
        VoxlineProcess::spawn_inner(config_toml, &[], &ip.to_string(), &[])
    }

    fn spawn_inner(
        config_toml: &str,
        env: &[(&str, &str)],
        ip: &str,
        args: &[&str],
    ) -> VoxlineProcess {
        let dir = tempfile::Builder::new()
            .prefix("voxline-test-")
            .tempdir()
            .expect("tempdir");
        let config_path = dir.path().join("voxline.toml");
        fs::write(&config_path, config_toml).expect("write config");
        let sip: SocketAddr = format!("{ip}:{}", free_sip_port()).parse().expect("addr");
        let http: SocketAddr = format!("{ip}:{}", free_tcp_port()).parse().expect("addr");
        let stdout_path = dir.path().join("voxline.stdout.log");
        let stderr_path = dir.path().join("voxline.stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_voxline"))
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--sip-listen")
            .arg(sip.to_string())
            .arg("--http-listen")
            .arg(http.to_string())
            .args(args)
            .current_dir(dir.path())
            .env("VOXLINE_LOG", log_filter())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).expect("stdout file"))
            .stderr(fs::File::create(&stderr_path).expect("stderr file"))
            .spawn()
            .expect("spawn voxline");
        let mut vox = VoxlineProcess {
            child,
            exited: None,
            sip,
            http,
            config_path,
            stdout_path,
            stderr_path,
            _dir: dir,
        };
        vox.wait_ready();
        vox
    }

    /// The process's working directory (its `./data` is the default data directory).
    pub fn work_dir(&self) -> &Path {
        self._dir.path()
    }

    /// voxline's SIP address (UDP and TCP).
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip
    }

    /// voxline's HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file voxline was started with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// What voxline wrote so far (stdout, then stderr).
    pub fn output(&self) -> String {
        format!(
            "---- voxline stdout ----\n{}\n---- voxline stderr ----\n{}",
            fs::read_to_string(&self.stdout_path).unwrap_or_default(),
            fs::read_to_string(&self.stderr_path).unwrap_or_default()
        )
    }

    /// Panic (with voxline's output) unless voxline is still running.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_exited() {
            panic!("voxline exited unexpectedly ({status})\n{}", self.output());
        }
    }

    /// Send SIGTERM and wait up to `timeout` for voxline to exit; its exit status.
    /// Panics (with voxline's output) if it is still running after `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.try_exited() {
            panic!(
                "voxline exited before SIGTERM ({status})\n{}",
                self.output()
            );
        }
        let kill = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(kill.success(), "kill -TERM {} failed", self.pid());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exited() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "voxline did not exit within {timeout:?} of SIGTERM\n{}",
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for voxline to exit by itself; its exit status. Panics (with
    /// voxline's output) if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "voxline did not exit within {timeout:?}\n{}",
                self.output()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait voxline");
        }
        self.exited
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + VOXLINE_READY_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            if let Some(status) = self.try_exited() {
                panic!(
                    "voxline exited before it was ready ({status})\n{}",
                    self.output()
                );
            }
            match http_get(self.http, "/health", Duration::from_millis(500)) {
                Ok((200, _)) => return,
                Ok((code, body)) => last = format!("GET /health -> {code} {body}"),
                Err(e) => last = format!("GET /health: {e}"),
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "voxline was not ready within {VOXLINE_READY_TIMEOUT:?} ({last})\n{}",
            self.output()
        );
    }
}

impl Drop for VoxlineProcess {
    fn drop(&mut self) {
        if self.try_exited().is_none() {
            // SIGKILL to this child's pid only.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "==== voxline (sip {}, http {}) ====\n{}",
                self.sip,
                self.http,
                self.output()
            );
        }
    }
}

/// The `VOXLINE_LOG` filter for processes the tests start: the caller's, or `debug`.
fn log_filter() -> String {
    std::env::var("VOXLINE_LOG").unwrap_or_else(|_| "debug".to_string())
}

/// A plain HTTP/1.1 GET on loopback: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, None, timeout)
}

/// A plain HTTP/1.1 request on loopback with an optional JSON body: (status code, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    http_request_headers(addr, method, path, &[], json, timeout).map(|(code, _, body)| (code, body))
}

/// An HTTP/1.1 request on loopback with extra header lines (`Authorization`, `Cookie`...)
/// and an optional JSON body: (status code, head, body).
pub fn http_request_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    json: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    match json {
        Some(body) => text.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )),
        None => text.push_str("\r\n"),
    }
    stream.write_all(text.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let code = text
        .lines()
        .next()
        .and_then(|status| status.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                ErrorKind::InvalidData,
                format!("bad HTTP response: {text:?}"),
            )
        })?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((code, head.to_owned(), body.to_owned()))
}

/// An HTTP request with an optional JSON body whose answer must be JSON: (status, value).
/// Panics on a connection error or a body that is not JSON.
pub fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> (u16, serde_json::Value) {
    let (code, text) = http_request(addr, method, path, body, timeout)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    (code, json)
}

/// [`http_json`] with `Authorization: Bearer token`.
pub fn http_json_auth(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: &str,
    timeout: Duration,
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let (code, _, text) = http_request_headers(
        addr,
        method,
        path,
        &[("Authorization", &auth)],
        body,
        timeout,
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
    (code, json)
}

// ---------------------------------------------------------------------------------------
// voxline call
// ---------------------------------------------------------------------------------------

/// How a `voxline call` ended.
#[must_use]
pub struct VoxlineCall {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr (its log).
    pub stderr: String,
    /// The local SIP address it used.
    pub sip_addr: SocketAddr,
}

impl VoxlineCall {
    /// Both outputs, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "---- voxline call stdout ----\n{}\n---- voxline call stderr ----\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Run `voxline call URI --config FILE --sip-listen 127.0.0.1:P EXTRA...` with
/// `config_toml` as the config file; kill it and panic if it runs past `timeout`.
pub fn voxline_call(
    uri: &str,
    config_toml: &str,
    extra: &[&str],
    timeout: Duration,
) -> VoxlineCall {
    let dir = tempfile::Builder::new()
        .prefix("voxline-call-")
        .tempdir()
        .expect("tempdir");
    let config_path = dir.path().join("voxline.toml");
    fs::write(&config_path, config_toml).expect("write config");
    let sip_addr: SocketAddr = format!("{LOOPBACK}:{}", free_sip_port())
        .parse()
        .expect("addr");
    let stdout_path = dir.path().join("call.stdout.log");
    let stderr_path = dir.path().join("call.stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_voxline"))
        .arg("call")
        .arg(uri)
        .arg("--config")
        .arg(&config_path)
        .arg("--sip-listen")
        .arg(sip_addr.to_string())
        .args(extra)
        .current_dir(dir.path())
        .env("VOXLINE_LOG", log_filter())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn voxline call");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait voxline call") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
    match status {
        Some(status) => VoxlineCall {
            status,
            stdout,
            stderr,
            sip_addr,
        },
        None => panic!(
            "`voxline call {uri}` still running after {timeout:?}: killed\n---- stdout ----\n{stdout}\n---- stderr ----\n{stderr}"
        ),
    }
}

// ---------------------------------------------------------------------------------------
// SIPp
// ---------------------------------------------------------------------------------------

/// A SIPp process started by [`Sipp::spawn`]; killed on drop if still running.
pub struct Sipp {
    child: Option<Child>,
    command: String,
    port: u16,
    timeout: Duration,
    started: Instant,
    dir: tempfile::TempDir,
}

impl Sipp {
    /// Start SIPp with `args` (scenario, service, `-m`, remote address, `-set`...) plus
    /// what the harness adds: `-nostdin`, `-timeout`/`-timeout_error` (from `timeout`),
    /// `-i`/`-mi`/`-ci` 127.0.0.1 with free `-p`/`-mp`/`-cp` ports, and trace files in a
    /// temporary directory (errors, messages, logs, final screen).
    /// Over UDP (the default), this returns once SIPp's port is bound, so a UAS
    /// scenario is ready for voxline's requests.
    /// Fails the test if `sipp` is not installed.
    pub fn spawn(args: &[&str], timeout: Duration) -> Sipp {
        let dir = tempfile::Builder::new()
            .prefix("sipp-test-")
            .tempdir()
            .expect("tempdir");
        let port = free_sip_port(); // free for UDP and TCP: `-t t1` runs use TCP
        let media_port = free_media_port();
        let control_port = free_udp_port();
        let d = dir.path();
        let file = |name: &str| d.join(name).to_string_lossy().into_owned();
        let secs = timeout.as_secs().max(1).to_string();
        let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        full.extend(
            [
                "-nostdin",
                "-timeout",
                &format!("{secs}s"),
                "-timeout_error",
                "-i",
                LOOPBACK,
                "-p",
                &port.to_string(),
                "-mi",
                LOOPBACK,
                "-mp",
                &media_port.to_string(),
                "-ci",
                LOOPBACK,
                "-cp",
                &control_port.to_string(),
                "-trace_err",
                "-error_file",
                &file("errors.log"),
                "-trace_msg",
                "-message_file",
                &file("messages.log"),
                "-trace_logs",
                "-log_file",
                &file("log.log"),
                "-trace_screen",
                "-screen_file",
                &file("screen.log"),
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let command = format!("sipp {}", full.join(" "));
        let spawned = Command::new("sipp")
            .args(&full)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(fs::File::create(d.join("stdout.log")).expect("stdout file"))
            .stderr(fs::File::create(d.join("stderr.log")).expect("stderr file"))
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!("{SIPP_MISSING}"),
            Err(e) => panic!("cannot start sipp: {e}"),
        };
        let mut sipp = Sipp {
            child: Some(child),
            command,
            port,
            timeout,
            started: Instant::now(),
            dir,
        };
        let over_tcp = args
            .windows(2)
            .any(|w| w[0] == "-t" && w[1].starts_with('t'));
        if !over_tcp {
            sipp.wait_listening();
        }
        sipp
    }

    /// SIPp's own SIP port (`-p`) on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIPp's own SIP address.
    pub fn addr(&self) -> SocketAddr {
        format!("{LOOPBACK}:{}", self.port).parse().expect("addr")
    }

    /// The directory holding SIPp's trace files (for `-set marker DIR/...` files too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every SIP message SIPp has sent and received so far (`-trace_msg`: SIPp writes each
    /// one out at once, so a UAS that runs on can be read).
    pub fn messages(&self) -> String {
        fs::read_to_string(self.dir.path().join("messages.log")).unwrap_or_default()
    }

    /// Wait for SIPp to exit (killing it past its timeout plus a grace period).
    pub fn wait(mut self) -> SippResult {
        let mut child = self.child.take().expect("sipp child");
        let deadline = self.started + self.timeout + SIPP_KILL_GRACE;
        let (code, killed) = loop {
            if let Some(status) = child.try_wait().expect("try_wait sipp") {
                break (status.code(), false);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break (None, true);
            }
            thread::sleep(Duration::from_millis(20));
        };
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        SippResult {
            command: self.command.clone(),
            code,
            killed,
            stdout: read("stdout.log"),
            stderr: read("stderr.log"),
            errors: read("errors.log"),
            log: read("log.log"),
            messages: read("messages.log"),
            screen: read("screen.log"),
        }
    }

    /// SIPp listens (over UDP) once we can no longer bind its port.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !udp_free(self.port) {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return; // exited already: wait() reports why
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Run SIPp to completion: [`Sipp::spawn`] then [`Sipp::wait`].
pub fn sipp(args: &[&str], timeout: Duration) -> SippResult {
    Sipp::spawn(args, timeout).wait()
}

/// How a SIPp run ended, with everything it wrote.
#[must_use]
pub struct SippResult {
    /// The full command line.
    pub command: String,
    /// Exit code: 0 all calls succeeded, 1 some failed, 99 no call, 255 fatal or timeout.
    pub code: Option<i32>,
    /// The harness killed SIPp (it outlived its own `-timeout`).
    pub killed: bool,
    /// SIPp's stdout.
    pub stdout: String,
    /// SIPp's stderr.
    pub stderr: String,
    /// `-trace_err`: unexpected messages, failed regexps, timeouts.
    pub errors: String,
    /// `-trace_logs`: the scenarios' `<log>` actions.
    pub log: String,
    /// `-trace_msg`: every SIP message sent and received.
    pub messages: String,
    /// `-trace_screen`: the final statistics screen.
    pub screen: String,
}

impl SippResult {
    /// Whether SIPp exited 0 (every call succeeded).
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.killed
    }

    /// Fail the test, with SIPp's output, unless SIPp exited 0.
    pub fn assert_success(&self, what: &str) {
        assert!(self.success(), "{what}: SIPp failed\n{}", self.report());
    }

    /// The "Successful call" total of the final screen.
    pub fn successful_calls(&self) -> Option<u64> {
        screen_total(&self.screen, "Successful call")
    }

    /// The "Failed call" total of the final screen.
    pub fn failed_calls(&self) -> Option<u64> {
        screen_total(&self.screen, "Failed call")
    }

    /// Values of every header line `name` (case-insensitive) in the traced messages.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.messages
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
            .map(|l| l[prefix.len()..].trim().to_string())
            .collect()
    }

    /// Everything useful for a failure message.
    pub fn report(&self) -> String {
        let exit = match (self.code, self.killed) {
            (_, true) => "killed by the harness (outlived its -timeout)".to_string(),
            (Some(c), false) => format!("exit code {c} ({})", sipp_exit_meaning(c)),
            (None, false) => "killed by a signal".to_string(),
        };
        format!(
            "command: {}\n{exit}\n---- sipp errors (-trace_err) ----\n{}\n---- sipp log (-trace_logs) ----\n{}\n\
             ---- sipp stderr ----\n{}\n---- sipp final screen ----\n{}\n---- sipp messages (last 20000 bytes) ----\n{}",
            self.command,
            self.errors,
            self.log,
            self.stderr,
            self.screen,
            tail(&self.messages, 20_000)
        )
    }
}

fn sipp_exit_meaning(code: i32) -> &'static str {
    match code {
        0 => "all calls succeeded",
        1 => "at least one call failed",
        97 => "exit on internal command",
        99 => "normal exit without calls processed",
        255 => "fatal error, or the -timeout was reached",
        254 => "fatal error binding a socket",
        _ => "unknown",
    }
}

fn screen_total(screen: &str, row: &str) -> Option<u64> {
    let line = screen
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(row))?;
    line.split('|').next_back()?.trim().parse().ok()
}

fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Wait up to `timeout` for `path` to exist.
pub fn wait_for_file(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    path.exists()
}

// ---------------------------------------------------------------------------------------
// Raw SIP
// ---------------------------------------------------------------------------------------

/// A UDP socket on 127.0.0.1 for speaking SIP to voxline by hand.
pub struct RawUdp {
    /// The socket.
    pub sock: UdpSocket,
    /// Its address (the Via sent-by of the requests built for it).
    pub local: SocketAddr,
}

impl RawUdp {
    /// Bind a fresh socket on 127.0.0.1.
    pub fn bind() -> RawUdp {
        let sock = UdpSocket::bind((LOOPBACK, 0)).expect("bind UDP");
        let local = sock.local_addr().expect("local_addr");
        RawUdp { sock, local }
    }

    /// Send one datagram to `to`.
    pub fn send(&self, to: SocketAddr, datagram: &[u8]) {
        self.sock.send_to(datagram, to).expect("send_to");
    }

    /// The next datagram from `from` within `timeout`, as text; None if none came.
    pub fn recv_from(&self, from: SocketAddr, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 70_000];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            if left.is_zero() {
                return None;
            }
            self.sock
                .set_read_timeout(Some(left))
                .expect("set_read_timeout");
            match self.sock.recv_from(&mut buf) {
                Ok((n, src)) if src == from => {
                    return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                Ok(_) => continue,
                // A signal to this test process (another test's child exiting): a socket
                // with a receive timeout is not restarted (signal(7)).
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(e) => panic!("recv_from: {e}"),
            }
        }
    }

    /// The next response from `from` within `timeout` that is not a 1xx.
    pub fn final_response(&self, from: SocketAddr, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let msg = self.recv_from(from, left)?;
            if status_code(&msg).is_some_and(|c| c >= 200) {
                return Some(msg);
            }
        }
    }
}

/// A fresh branch, Call-ID or tag: unique within this process.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// An out-of-dialog OPTIONS from `from` (transport "UDP" or "TCP") to `to`.
pub fn options_request(transport: &str, from: SocketAddr, to: SocketAddr, call_id: &str) -> String {
    format!(
        "OPTIONS sip:voxline@{to} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {from};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:tester@{from}>;tag={tag}\r\n\
         To: <sip:voxline@{to}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Contact: <sip:tester@{from}>\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n",
        branch = unique("z9hG4bK-opt"),
        tag = unique("t"),
    )
}

/// An SDP offer of PCMU and telephone-event 101 on `media_port`.
pub fn sdp_offer(media_port: u16) -> String {
    format!(
        "v=0\r\n\
         o=tester 1 1 IN IP4 {LOOPBACK}\r\n\
         s=-\r\n\
         c=IN IP4 {LOOPBACK}\r\n\
         t=0 0\r\n\
         m=audio {media_port} RTP/AVP 0 101\r\n\
         a=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\n\
         a=sendrecv\r\n"
    )
}

/// The status code of a response, None for a request or garbage.
pub fn status_code(msg: &str) -> Option<u16> {
    let line = msg.lines().next()?;
    let rest = line.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// The reason phrase of a response's status line.
pub fn reason_phrase(msg: &str) -> Option<&str> {
    let line = msg.lines().next()?;
    let rest = line.strip_prefix("SIP/2.0 ")?;
    Some(rest.get(3..)?.trim())
}

/// The value of the first header `name` (or its compact form `compact`), case-insensitive.
pub fn header<'a>(msg: &'a str, name: &str, compact: Option<&str>) -> Option<&'a str> {
    let head = msg.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c)))
            .then_some(v.trim())
    })
}

/// The URI inside a Contact (or To/From) value: between `<` and `>`, else up to `;`.
pub fn uri_of(value: &str) -> &str {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.split(';').next().unwrap_or(value).trim(),
    }
}

/// Read from a TCP stream until `count` complete SIP messages arrived (framed by
/// Content-Length, RFC 3261 18.3) or `timeout` passed; the messages read.
pub fn read_tcp_messages(stream: &mut TcpStream, count: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    while out.len() < count {
        // Take every complete message out of the buffer.
        while let Some(len) = complete_message_len(&buf) {
            out.push(String::from_utf8_lossy(&buf[..len]).into_owned());
            buf.drain(..len);
        }
        if out.len() >= count {
            break;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        if left.is_zero() {
            break;
        }
        stream
            .set_read_timeout(Some(left))
            .expect("set_read_timeout");
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("TCP read: {e}"),
        }
    }
    out
}

/// Length of the first complete SIP message in `buf` (skipping keepalive CRLFs is the
/// caller's business: leading CRLFs count as part of the message here).
fn complete_message_len(buf: &[u8]) -> Option<usize> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let head_end = buf[start..].windows(4).position(|w| w == b"\r\n\r\n")? + start + 4;
    let head = String::from_utf8_lossy(&buf[start..head_end]);
    let body_len = header(&format!("{head}\r\n"), "Content-Length", Some("l"))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head_end + body_len).then_some(head_end + body_len)
}

// ---------------------------------------------------------------------------------------
// Digest (RFC 7616 / RFC 2617), to check what SIPp 3.6's <verifyauth> cannot
// ---------------------------------------------------------------------------------------

/// Check an `Authorization`/`Proxy-Authorization` value: that it is a Digest for
/// `username`, and that its response is the one `password` gives for `method` and the
/// header's own realm, nonce, uri, qop, nc and cnonce. MD5, SHA-256 and their -sess
/// variants; qop absent or "auth".
pub fn check_digest(
    value: &str,
    method: &str,
    username: &str,
    password: &str,
) -> Result<(), String> {
    let rest = value
        .trim()
        .strip_prefix("Digest")
        .or_else(|| value.trim().strip_prefix("digest"))
        .ok_or_else(|| format!("not a Digest: {value}"))?;
    let params = digest_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    };
    let need = |k: &str| get(k).ok_or_else(|| format!("no {k} in {value}"));
    let user = need("username")?;
    if user != username {
        return Err(format!("username {user:?}, expected {username:?}"));
    }
    let realm = need("realm")?;
    let nonce = need("nonce")?;
    let uri = need("uri")?;
    let response = need("response")?;
    let algorithm = get("algorithm").unwrap_or("MD5");
    let (sha256, sess) = match algorithm.to_ascii_uppercase().as_str() {
        "MD5" => (false, false),
        "MD5-SESS" => (false, true),
        "SHA-256" => (true, false),
        "SHA-256-SESS" => (true, true),
        other => return Err(format!("unsupported algorithm {other}")),
    };
    let h = |s: &str| if sha256 { sha256_hex(s) } else { md5_hex(s) };
    let mut ha1 = h(&format!("{username}:{realm}:{password}"));
    let ha2 = h(&format!("{method}:{uri}"));
    let expected = match get("qop") {
        None => {
            if sess {
                return Err("-sess algorithm without qop".into());
            }
            h(&format!("{ha1}:{nonce}:{ha2}"))
        }
        Some(q) if q.eq_ignore_ascii_case("auth") => {
            let nc = need("nc")?;
            let cnonce = need("cnonce")?;
            if sess {
                ha1 = h(&format!("{ha1}:{nonce}:{cnonce}"));
            }
            h(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{q}:{ha2}"))
        }
        Some(q) => return Err(format!("unsupported qop {q}")),
    };
    if expected.eq_ignore_ascii_case(response) {
        Ok(())
    } else {
        Err(format!(
            "response {response} but {expected} expected for {username}/{password}: {value}"
        ))
    }
}

/// `name=value` pairs of a digest header (values unquoted), split at commas outside quotes.
fn digest_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        if name.trim().is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(e) = chars.next() {
                                value.push(e);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((name.trim().to_string(), value.trim().to_string()));
    }
    out
}

fn md5_hex(s: &str) -> String {
    use md5::Digest as _;
    hex(&md5::Md5::digest(s.as_bytes()))
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(s.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `pcm` (mono, `rate` Hz) as a 16-bit WAV file.
pub fn write_wav(path: &Path, pcm: &[i16], rate: u32) {
    use voxline::dsp::wav::{Pcm16Spec, canonical_header};
    let mut wav = canonical_header(
        Pcm16Spec::new(1, rate).expect("spec"),
        (pcm.len() * 2) as u32,
    )
    .to_vec();
    for s in pcm {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    fs::write(path, wav).expect("write wav");
}

/// What the browser phone page reported (tests/browser/phone.mjs): `window.voxlinePhone`
/// after the call, and the script's output for failure messages.
pub struct PhonePage {
    /// The page's state: `state`, `maxRemoteLevel`, `callId`, `lines`, `status`, `error`.
    pub result: serde_json::Value,
    /// The script's stdout and stderr (the page's console).
    pub log: String,
}

/// A network namespace made for one test, joined to this one by a veth pair: `host_ip` on
/// this side, `ns_ip` inside. For peers that will not use loopback (Firefox gathers no
/// 127.0.0.1 ICE candidates, whatever its preferences say). Needs root (`ip netns`, from
/// iproute2); deleted, with its veth pair, on drop.
pub struct TestNetns {
    /// The namespace's name (`ip netns exec NAME ...`).
    pub name: String,
    /// This side's address.
    pub host_ip: std::net::IpAddr,
    /// The namespace's address.
    pub ns_ip: std::net::IpAddr,
}

/// `ip` (iproute2) with root's rights: itself when the tests run as root, else through
/// `sudo -n` (the CI machines that are not root have passwordless sudo).
fn ip_command() -> Command {
    let euid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .unwrap_or_default();
    if euid == "0" {
        Command::new("ip")
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", "ip"]);
        c
    }
}

impl TestNetns {
    /// A namespace with a /30 link to this one; `tag` (a few letters) names it.
    pub fn new(tag: &str) -> TestNetns {
        let pid = std::process::id();
        let name = format!("vx{tag}{pid}");
        // Interface names have at most 15 characters.
        let (host_if, ns_if) = (
            format!("vx{tag}a{}", pid % 100_000),
            format!("vx{tag}b{}", pid % 100_000),
        );
        let subnet = 1 + pid % 250;
        let host_ip: std::net::IpAddr = format!("10.251.{subnet}.1").parse().expect("ip");
        let ns_ip: std::net::IpAddr = format!("10.251.{subnet}.2").parse().expect("ip");
        let ip = |args: &[&str]| {
            let out = ip_command()
                .args(args)
                .output()
                .expect("ip (apt-get install iproute2)");
            assert!(
                out.status.success(),
                "ip {}: {} (a test network namespace needs root, or passwordless sudo)",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // A namespace left by a killed run of this process id would be in the way.
        let _ = ip_command().args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = TestNetns {
            name: name.clone(),
            host_ip,
            ns_ip,
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ]);
        ip(&["-n", &name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth end in it, and so the pair.
        let _ = ip_command().args(["netns", "del", &self.name]).output();
    }
}

/// Opens `url` in headless Firefox (Debian's `firefox-esr`, driven by puppeteer-core over
/// WebDriver BiDi) inside `ns`, with Firefox's fake microphone (a tone), stays in the call
/// `seconds`, hangs up. Needs `firefox-esr` and `npm ci` in tests/browser (`.ci/run` does
/// both); panics with the install command if not.
pub fn phone_page_firefox(ns: &TestNetns, url: &str, seconds: u32) -> PhonePage {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new("/usr/bin/firefox-esr").exists(),
        "firefox-esr missing: apt-get install firefox-esr"
    );
    assert!(
        root.join("tests/browser/node_modules/puppeteer-core")
            .is_dir(),
        "puppeteer-core missing: (cd tests/browser && npm ci)"
    );
    let out = ip_command()
        .args(["netns", "exec", &ns.name, "node"])
        .arg(root.join("tests/browser/phone.mjs"))
        .arg(url)
        .arg("-")
        .arg(seconds.to_string())
        .arg("firefox")
        .output()
        .expect("ip netns exec node (apt-get install iproute2 nodejs)");
    page_result(&out)
}

fn page_result(out: &std::process::Output) -> PhonePage {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let log = format!("page stdout:\n{stdout}\npage stderr:\n{stderr}");
    let result = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result from the page\n{log}"));
    PhonePage { result, log }
}

/// The repository's root, once Debian's `chromium` and playwright-core (`npm ci` in
/// tests/browser; `.ci/run` does both) are known to be there; panics with the install
/// command if not.
pub fn require_chromium() -> &'static Path {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium missing: apt-get install chromium"
    );
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core missing: (cd tests/browser && npm ci)"
    );
    root
}

/// Opens `url` (voxline's `/phone?...`) in headless Chromium with a fake microphone playing
/// `wav` (looped), stays in the call `seconds`, hangs up. Needs Debian's `chromium` and
/// `npm ci` in tests/browser (`.ci/run` does both); panics with the install command if not.
pub fn phone_page(url: &str, wav: &Path, seconds: u32) -> PhonePage {
    let root = require_chromium();
    let out = Command::new("node")
        .arg(root.join("tests/browser/phone.mjs"))
        .arg(url)
        .arg(wav)
        .arg(seconds.to_string())
        .output()
        .expect("node (apt-get install nodejs npm)");
    page_result(&out)
}

// ---------------------------------------------------------------------------------------
// Kamailio
// ---------------------------------------------------------------------------------------

/// Debian's Kamailio module directory.
pub const KAMAILIO_MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";

/// A Kamailio run by a test (`apt-get install kamailio`), in the foreground with its log in
/// `DIR/kamailio.log`; its whole process group is killed (by PID) on drop.
pub struct KamailioProcess {
    child: Child,
    log: PathBuf,
}

impl KamailioProcess {
    /// Runs `kamailio -f CFG ARGS -DD -E -Y DIR` and waits up to 10 s for `ready` (its port
    /// taken, or accepting); panics with its log if it does not get there.
    pub fn spawn(cfg: &Path, args: &[&str], dir: &Path, ready: impl Fn() -> bool) -> Self {
        use std::os::unix::process::CommandExt as _;
        let log = dir.join("kamailio.log");
        // Its own process group, killed whole at the end (see Drop): Kamailio's processes
        // signal their group when one of them ends.
        let child = Command::new("kamailio")
            .process_group(0)
            .arg("-f")
            .arg(cfg)
            .args(args)
            .args(["-DD", "-E", "-Y"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log"))
            .spawn()
            .expect("kamailio (apt-get install kamailio kamailio-tls-modules)");
        let k = KamailioProcess { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready() {
            assert!(
                Instant::now() < deadline,
                "kamailio did not start\n{}",
                k.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        k
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for KamailioProcess {
    fn drop(&mut self) {
        // SIGKILL to its whole process group (its own, made at spawn): Kamailio's SIGTERM
        // shutdown, and its children's reaction to a dead main process, signal far more than
        // Kamailio (the test runner's group, here everything), so none of it may run.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}
