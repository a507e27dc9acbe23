//! Waiting for a state a test can only see by looking again: one loop, on
//! tokio's clock (so it follows a paused one), that fails with the last
//! answer once its patience has run out.

use std::fmt::Display;
use std::time::Duration;

/// How long a test keeps looking, and how often.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    /// The longest wait: reached only when the test fails.
    pub patience: Duration,
    /// The pause between two looks.
    pub every: Duration,
}

impl Polling {
    /// Calls `look` until it answers `Ok`, and returns that value; fails
    /// with `what` and the last `Err` once `patience` has passed. `look` may
    /// fail at once itself (a child process that exited, say).
    pub async fn until<T, E: Display>(
        self,
        what: impl Display,
        mut look: impl AsyncFnMut() -> Result<T, E>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            let last = match look().await {
                Ok(value) => return value,
                Err(last) => last,
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "never {what} within {:?}; last: {last}",
                self.patience
            );
            tokio::time::sleep(self.every).await;
        }
    }
}
