use std::fmt;
use std::time::Duration;

use blueprint_core::{ConnectionId, Origin};
use tokio::time::Instant;

/// A request was not sent: its connection's rate-limit budget is spent and frees up only
/// after the request's [`Deadline`](blueprint_core::Deadline).
///
/// Nothing reached the server. [`retry_at`](Self::retry_at) says when to come back.
#[derive(Debug, Clone)]
pub struct RateLimitedError {
    pub(crate) connection: ConnectionId,
    pub(crate) origin: Option<Origin>,
    pub(crate) retry_at: Instant,
    pub(crate) retry_after: Duration,
    pub(crate) deadline_in: Duration,
}

impl RateLimitedError {
    pub(crate) fn new(
        connection: ConnectionId,
        origin: Option<Origin>,
        retry_at: Instant,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Self {
        RateLimitedError {
            connection,
            origin,
            retry_at,
            retry_after: retry_at.saturating_duration_since(now),
            deadline_in: deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(now)),
        }
    }

    /// The connection whose budget is spent.
    pub fn connection(&self) -> &ConnectionId {
        &self.connection
    }

    /// The origin whose budget is spent; `None` when the request's URI was relative and the
    /// layer was given no origin.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// When the budget frees up (tokio time): send again then.
    pub fn retry_at(&self) -> Instant {
        self.retry_at
    }

    /// How long after the refusal the budget frees up.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for RateLimitedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the rate limit of connection `{}`", self.connection)?;
        if let Some(origin) = &self.origin {
            write!(f, " at {origin}")?;
        }
        write!(
            f,
            " is spent and frees up in {:.1?}, after the request's deadline ({:.1?} away), \
             so the request was not sent; try again in {:.1?}",
            self.retry_after, self.deadline_in, self.retry_after
        )
    }
}

impl std::error::Error for RateLimitedError {}
