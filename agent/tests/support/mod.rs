//! Helpers shared by the agent's integration tests: temporary directories,
//! the `callguard` binary and other commands (the OTLP receiver standing in
//! for a trace collector is testkit's).

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use callguard_mocks::{MockServer, Service};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::Duration;

/// The agent's services by their config names, each with its mock.
pub(crate) const SERVICES: [(&str, Service); 3] = [
    ("llm", Service::Llm),
    ("elevenlabs", Service::Elevenlabs),
    ("crm", Service::Crm),
];

/// A `[services.NAME]` section for each of [`SERVICES`], at its mock: what a
/// health server needs to probe them.
pub(crate) fn services_at(mocks: &MockServer) -> String {
    SERVICES
        .iter()
        .map(|(name, service)| {
            format!(
                "[services.{name}]\nbase_url = \"{}\"\n",
                mocks.base_url(*service)
            )
        })
        .collect()
}

/// A fresh, empty directory for one test, named after the test binary.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    callguard_testkit::temp_dir(env!("CARGO_CRATE_NAME"), name)
}

/// The `callguard` binary, run in `dir`, without the test's own `RUST_LOG` or
/// `CALLGUARD_*` variables (its config comes from the test alone), serving
/// `/metrics` on a free port so that agents of tests running at once do not
/// collide on the default one.
pub(crate) fn callguard(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_callguard"));
    command.current_dir(dir).env_remove("RUST_LOG");
    for (var, _) in std::env::vars() {
        if var.starts_with("CALLGUARD_") && !var.starts_with("CALLGUARD_TEST_") {
            command.env_remove(var);
        }
    }
    command.env("CALLGUARD_METRICS__LISTEN", "127.0.0.1:0");
    command
}

/// Runs `command` to its end off the async runtime.
pub(crate) async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("the command runs")
}

/// A child process killed when the test ends, pass or fail.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The exit status of `child` once it exits on its own, or `None` if it is
/// still running after `limit`.
pub(crate) async fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a command printed, stdout then stderr.
pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
