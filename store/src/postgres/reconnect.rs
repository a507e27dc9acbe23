//! Which PostgreSQL errors mean the connection is gone, and how long a
//! statement keeps trying on fresh connections.
//!
//! A lost connection — the server restarting or failing over, a network cut,
//! a connection the pool held that died while idle — is not the statement's
//! fault, and whether the statement took effect is unknown. The pool drops a
//! closed connection and opens a new one on demand; the statement runs again
//! on it at once, then after a backoff (50 ms doubling to 1 s, jittered) so
//! that a restarting server is not hammered and work resumes within about a
//! second of its return. Each statement kind says how long it may keep
//! trying ([`Persistence`]); every retry is safe because of what the
//! statement is (docs/DESIGN.md, "Reconnecting").

use std::time::Duration;

use tokio::time::Instant;

/// How long a statement keeps trying while the database is out of reach.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Persistence {
    /// Once more on a fresh connection: reads, which report an outage
    /// rather than wait it out, and changes whose caller tries again anyway.
    Once,
    /// Until it lands or the time is up: the changes under a lease, which
    /// would otherwise be left to the lease's expiry.
    For(Duration),
}

/// Error codes meaning the server closed or refused the session, not the
/// statement: class 08 (connection exception), `admin_shutdown`,
/// `crash_shutdown`, `cannot_connect_now`.
fn lost_code(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// Whether `error` means the connection is gone (or never came), rather
/// than that the statement was refused.
pub(crate) fn connection_lost(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    if let Some(code) = error.code() {
        return lost_code(code.code());
    }
    // No SQLSTATE: an I/O error, a TLS or protocol failure on the socket.
    error.as_db_error().is_none()
}

/// Whether a pool's error means no connection could be had.
pub(crate) fn pool_unavailable(error: &deadpool_postgres::PoolError) -> bool {
    use deadpool_postgres::PoolError;
    match error {
        PoolError::Backend(e) => connection_lost(e),
        PoolError::Timeout(_) | PoolError::Closed | PoolError::NoRuntimeSpecified => true,
        PoolError::PostCreateHook(_) => false,
    }
}

/// The waits between tries of one statement.
pub(crate) struct Backoff {
    next: Duration,
    deadline: Option<Instant>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new(persistence: Persistence) -> Self {
        Self {
            next: Duration::ZERO,
            deadline: match persistence {
                Persistence::Once => None,
                Persistence::For(limit) => Some(Instant::now() + limit),
            },
        }
    }

    /// Waits before the next try; `false` once tries are used up.
    pub(crate) async fn wait(&mut self) -> bool {
        let wait = self.next;
        let Some(deadline) = self.deadline else {
            // Once: the single retry goes at once; none after it.
            if self.next == Duration::MAX {
                return false;
            }
            self.next = Duration::MAX;
            return true;
        };
        if Instant::now() + wait > deadline {
            return false;
        }
        tokio::time::sleep(wait).await;
        self.next = if wait.is_zero() {
            Self::FIRST
        } else {
            (wait * 2)
                .min(Self::MAX)
                .mul_f64(0.75 + fastrand::f64() / 4.0)
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ending_codes_are_lost_connections() {
        for code in ["08006", "08001", "57P01", "57P02", "57P03"] {
            assert!(lost_code(code), "{code}");
        }
        for code in ["23505", "40001", "42P01", "57014"] {
            assert!(!lost_code(code), "{code}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn once_retries_at_once_a_single_time() {
        let mut backoff = Backoff::new(Persistence::Once);
        let start = Instant::now();
        assert!(backoff.wait().await);
        assert!(!backoff.wait().await);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn persistent_retries_back_off_to_a_second_until_the_deadline() {
        let mut backoff = Backoff::new(Persistence::For(Duration::from_secs(10)));
        let start = Instant::now();
        let mut tries = 0;
        let mut last = start;
        let mut longest = Duration::ZERO;
        while backoff.wait().await {
            tries += 1;
            longest = longest.max(last.elapsed());
            last = Instant::now();
        }
        assert!(start.elapsed() <= Duration::from_secs(10));
        assert!(longest <= Backoff::MAX, "{longest:?}");
        assert!(tries > 10, "{tries}");
    }
}
