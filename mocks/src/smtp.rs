//! A real SMTP server for tests: aiosmtpd (Python), started as a child
//! process on a free loopback port. It requires AUTH with the login it is
//! given, saves each message it accepts, and can flap — refuse some messages
//! with `451` — so a sender's retries and breaker meet a real protocol peer.
//!
//! Needs Python 3 with aiosmtpd (`python3 -m pip install aiosmtpd`);
//! [`SmtpSink::start`] says so when it is missing.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::MockError;

/// The server's script, run with `python3 -c`.
const SCRIPT: &str = include_str!("smtp_sink.py");

/// Of every `accepted + refused` messages, the first `accepted` are accepted
/// and the rest answered `451 4.3.0 Try again later`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmtpFlap {
    /// Messages accepted in each cycle.
    pub accepted: u32,
    /// Messages refused after them.
    pub refused: u32,
}

/// A running SMTP server; killed (and its saved messages removed) when
/// dropped.
#[derive(Debug)]
pub struct SmtpSink {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    /// Starts a server that accepts every message sent with `user` and
    /// `password`, and returns once it listens.
    pub async fn start(user: &str, password: &str) -> Result<Self, MockError> {
        Self::start_with(user, password, None).await
    }

    /// Starts a server that accepts and refuses messages by `flap`.
    pub async fn start_flapping(
        user: &str,
        password: &str,
        flap: SmtpFlap,
    ) -> Result<Self, MockError> {
        Self::start_with(user, password, Some(flap)).await
    }

    async fn start_with(
        user: &str,
        password: &str,
        flap: Option<SmtpFlap>,
    ) -> Result<Self, MockError> {
        let io =
            |what: &'static str| move |e: std::io::Error| MockError::Smtp(format!("{what}: {e}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(io("cannot find a free port"))?
            .port();
        let dir =
            std::env::temp_dir().join(format!("callguard-smtp-sink-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(io("cannot create its directory"))?;
        let mut command = Command::new("python3");
        command
            .args(["-c", SCRIPT, &port.to_string()])
            .arg(&dir)
            .args([user, password]);
        if let Some(flap) = flap {
            command.args([flap.accepted.to_string(), flap.refused.to_string()]);
        }
        // Its log goes to a file: a pipe nobody reads could fill and stall it.
        let log = dir.join("stderr.log");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).map_err(io("cannot create its log"))?)
            .kill_on_drop(true)
            .spawn()
            .map_err(io("cannot run python3"))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let first = stdout
            .next_line()
            .await
            .map_err(io("cannot read its output"))?;
        if first.as_deref() != Some("ready") {
            let _ = child.wait().await;
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_dir_all(&dir);
            let hint = if stderr.contains("No module named 'aiosmtpd'") {
                " (python3 -m pip install aiosmtpd)"
            } else {
                ""
            };
            return Err(MockError::Smtp(format!(
                "aiosmtpd did not start{hint}: {}",
                stderr.trim()
            )));
        }
        Ok(Self { child, port, dir })
    }

    /// The port it listens on, at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The messages accepted so far, in order: `{"mail_from", "rcpt_tos",
    /// "data", "login"}` each.
    pub fn messages(&self) -> Vec<Value> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|entry| Some(entry.ok()?.path()))
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .filter_map(|path| serde_json::from_slice(&std::fs::read(path).ok()?).ok())
            .collect()
    }

    /// Stops the server and removes what it saved.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
