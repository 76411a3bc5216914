//! A throwaway PostgreSQL server for the tests: Debian's binaries (`postgresql` package,
//! installed by .ci/run), a cluster made by `initdb` in a temporary directory, listening on
//! a free 127.0.0.1 port with trust authentication, stopped and deleted on drop. As root
//! (CI), the server runs as the `postgres` user, since PostgreSQL refuses to run as root.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running PostgreSQL server.
pub struct PostgresServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// The directory of Debian's PostgreSQL binaries (the newest version installed), or `None`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file() && p.join("postgres").is_file())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}

/// Whether this process is root (then the server runs as `postgres`).
fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// `program` with `args`, run as the `postgres` user when this process is root.
fn command(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ]);
        c.arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

impl PostgresServer {
    /// Makes a cluster and starts the server; panics (naming the step) if PostgreSQL is not
    /// installed or does not come up within 30 s.
    pub fn start() -> PostgresServer {
        let bin = bin_dir().expect(
            "PostgreSQL is not installed (/usr/lib/postgresql/*/bin): apt-get install postgresql",
        );
        let dir = tempfile::Builder::new()
            .prefix("voxline-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "chown: {out:?}");
        }
        let data = dir.path().join("data");
        let data_s = data.to_str().unwrap();
        let out = command(
            &bin.join("initdb"),
            &[
                "-D",
                data_s,
                "-U",
                "voxline",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        )
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = super::free_tcp_port();
        let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
        let port_s = port.to_string();
        let sock = dir.path().to_str().unwrap().to_owned();
        let mut cmd = command(
            &bin.join("postgres"),
            &[
                "-D",
                data_s,
                "-p",
                &port_s,
                "-k",
                &sock,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                "-c",
                "shared_buffers=32MB",
            ],
        );
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().unwrap();
        let mut server = PostgresServer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("postgres exited with {status}:\n{}", server.log());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok()
                && postgres::Client::connect(&server.url("postgres"), postgres::NoTls).is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not come up in 30 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// The URL of database `db` on this server (user `voxline`, no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://voxline@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates an empty database and returns its URL.
    pub fn create_db(&self, name: &str) -> String {
        let mut c = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap();
        self.url(name)
    }

    /// A client of database `db`.
    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(db), postgres::NoTls).unwrap()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown (rolls back, closes connections, exits).
        let pid = self.child.id() as i32;
        let _ = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", &format!("-{pid}")])
            .status();
        let _ = self.child.wait();
    }
}
