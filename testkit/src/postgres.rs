//! A throw-away PostgreSQL cluster of one test's own, for tests that restart
//! the server or change its settings (TLS, `pg_hba.conf`) and so must not
//! touch the cluster other tests share. It is made from the binaries
//! `scripts/test.sh` names (`CALLGUARD_TEST_POSTGRES_BIN`), run as the
//! `postgres` user when the tests run as root, as the script runs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::free_addr;

/// The environment variable naming the directory of PostgreSQL's binaries.
pub const POSTGRES_BIN_VAR: &str = "CALLGUARD_TEST_POSTGRES_BIN";

/// A private cluster: trust authentication on 127.0.0.1, stopped and
/// removed when dropped.
pub struct PostgresCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl PostgresCluster {
    /// Makes a cluster in a fresh directory named after `name` and starts
    /// it; `conf` is appended to `postgresql.conf`, and `hba`, if given,
    /// replaces `pg_hba.conf` (files the test writes, such as a server
    /// certificate, go in [`dir`](Self::dir) first through `prepare`).
    pub fn start(name: &str, conf: &str, hba: Option<&str>, prepare: impl FnOnce(&Path)) -> Self {
        let bin = PathBuf::from(std::env::var(POSTGRES_BIN_VAR).unwrap_or_else(|_| {
            panic!(
                "{POSTGRES_BIN_VAR} is not set: run the tests with scripts/test.sh, which \
                 installs PostgreSQL and names its binaries"
            )
        }));
        let dir = crate::temp_dir("postgres", name);
        let cluster = Self {
            bin,
            dir,
            port: free_addr().port(),
        };
        cluster.own(&cluster.dir);
        cluster.run("initdb", &["-D", "data", "-A", "trust", "-U", "postgres"]);
        let data = cluster.data();
        let port = cluster.port;
        let mut settings = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 100\n{conf}\n",
            cluster.dir.display()
        );
        settings.insert_str(
            0,
            &std::fs::read_to_string(data.join("postgresql.conf")).unwrap(),
        );
        std::fs::write(data.join("postgresql.conf"), settings).unwrap();
        if let Some(hba) = hba {
            std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        }
        prepare(&data);
        cluster.own(&data);
        cluster.pg_ctl("start");
        cluster
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The cluster's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` with `params` (`a=b&c=d`).
    pub fn url(&self, params: &str) -> String {
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{params}")
        };
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres{query}",
            self.port
        )
    }

    /// `pg_ctl restart -m fast`: every connection is cut, and the call
    /// returns once the server accepts connections again.
    pub fn restart(&self) {
        self.pg_ctl("restart");
    }

    /// `pg_ctl stop -m fast`: the server is gone until [`start_again`](Self::start_again).
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    /// Starts the stopped server again, returning once it accepts connections.
    pub fn start_again(&self) {
        self.pg_ctl("start");
    }

    fn pg_ctl(&self, action: &str) {
        let log = self.dir.join("server.log");
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-m",
                "fast",
                "-w",
                action,
            ],
        );
    }

    /// Runs PostgreSQL's `tool` in the cluster's directory, as `postgres`
    /// when root; panics with its output if it fails.
    fn run(&self, tool: &str, args: &[&str]) {
        let output = self
            .command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// PostgreSQL's `tool`, to run in the cluster's directory.
    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(&self.dir);
        command
    }

    /// Hands `path` (recursively) to `postgres` when root.
    fn own(&self, path: &Path) {
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .status()
                .expect("chown runs");
            assert!(status.success(), "chown {} failed", path.display());
        }
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                &data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}
