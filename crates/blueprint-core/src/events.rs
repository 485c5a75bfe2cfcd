//! Typed events: what a layer did that someone may want to count.
//!
//! Log lines are for people and are never parsed. What a program may want to count — an
//! attempt sent again and why, a wait for the rate-limit budget, a token refresh and its
//! outcome — each layer also reports as an [`Event`] to the [`EventSink`] it was given.
//! Metrics (the proxy's, or your own registry) subscribe by implementing [`Events`]; a
//! closure does.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use blueprint_core::{ConnectionId, Event, EventSink, RetryReason};
//!
//! let retries = Arc::new(AtomicU64::new(0));
//! let counted = Arc::clone(&retries);
//! let sink = EventSink::new(move |event: &Event<'_>| {
//!     if let Event::Retry { .. } = event {
//!         counted.fetch_add(1, Ordering::Relaxed);
//!     }
//! });
//! // What the retry layer does when it sends a request again:
//! sink.emit(&Event::Retry {
//!     connection: &ConnectionId::default(),
//!     attempt: 2,
//!     reason: RetryReason::Status(http::StatusCode::SERVICE_UNAVAILABLE),
//!     wait: std::time::Duration::from_millis(100),
//!     server_directed: false,
//! });
//! assert_eq!(retries.load(Ordering::Relaxed), 1);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::{ConnectionId, Origin};

/// Why an attempt is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryReason {
    /// The server answered with a retryable status (408, 429, 5xx…).
    Status(StatusCode),
    /// The connection could not be made, so the request was never sent.
    ConnectFailed,
    /// Another transport error (reset, broken pipe, protocol error).
    Transport,
    /// The attempt took longer than the attempt timeout.
    AttemptTimeout,
    /// A reason of the policy's own.
    Other(&'static str),
}

impl RetryReason {
    /// A short label for metrics: `status_503`-like labels would have one series per status,
    /// so statuses are grouped: `rate_limited` (429), `server_error` (5xx), `status` (other).
    pub fn label(&self) -> &'static str {
        match self {
            RetryReason::Status(StatusCode::TOO_MANY_REQUESTS) => "rate_limited",
            RetryReason::Status(status) if status.is_server_error() => "server_error",
            RetryReason::Status(_) => "status",
            RetryReason::ConnectFailed => "connect_failed",
            RetryReason::Transport => "transport",
            RetryReason::AttemptTimeout => "attempt_timeout",
            RetryReason::Other(_) => "other",
        }
    }
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryReason::Status(status) => write!(f, "status {}", status.as_u16()),
            RetryReason::ConnectFailed => f.write_str("connection failed"),
            RetryReason::Transport => f.write_str("transport error"),
            RetryReason::AttemptTimeout => f.write_str("attempt timed out"),
            RetryReason::Other(reason) => f.write_str(reason),
        }
    }
}

/// Why the retry layer did not send a retryable request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryStop {
    /// The server asked to wait longer than the longest wait allowed.
    ServerWaitTooLong,
    /// The wait would pass the call's deadline.
    Deadline,
    /// The retry budget is spent (too many retries lately).
    Budget,
}

impl RetryStop {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RetryStop::ServerWaitTooLong => "server_wait_too_long",
            RetryStop::Deadline => "deadline",
            RetryStop::Budget => "budget",
        }
    }
}

/// Why the rate-limit layer holds a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HoldReason {
    /// The budget is spent until the reset (or the server asked to wait).
    Spent,
    /// More requests are in flight than the budget has left: their answers will tell.
    Answers,
    /// Requests are spaced so that what is left lasts until the reset.
    Smoothing,
}

impl HoldReason {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HoldReason::Spent => "spent",
            HoldReason::Answers => "answers",
            HoldReason::Smoothing => "smoothing",
        }
    }
}

/// How a token refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshOutcome {
    /// The token endpoint gave new credentials.
    Refreshed,
    /// The token endpoint refused the refresh token (`invalid_grant`): a person must
    /// authorize the connection again.
    Refused,
    /// The token endpoint could not be reached or failed; a later refresh may work.
    Failed,
    /// Another process refreshed meanwhile; its credentials were taken from the store.
    FromStore,
}

impl RefreshOutcome {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RefreshOutcome::Refreshed => "refreshed",
            RefreshOutcome::Refused => "refused",
            RefreshOutcome::Failed => "failed",
            RefreshOutcome::FromStore => "from_store",
        }
    }
}

/// Something a layer did that someone may want to count. Borrowed, so reporting it
/// allocates nothing; new variants may be added.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// The retry layer is about to send a request again, after `wait`.
    Retry {
        /// Whose request.
        connection: &'a ConnectionId,
        /// The number of the attempt about to be made (2 for the first retry).
        attempt: u32,
        /// Why.
        reason: RetryReason,
        /// How long it waits first.
        wait: Duration,
        /// Whether the wait is the server's (`Retry-After`, a rate-limit reset).
        server_directed: bool,
    },
    /// The retry layer did not send a retryable request again.
    RetryStopped {
        /// Whose request.
        connection: &'a ConnectionId,
        /// Attempts made.
        attempts: u32,
        /// Why it was retryable.
        reason: RetryReason,
        /// Why it was not retried.
        stop: RetryStop,
    },
    /// The retry layer is sending a request again at once, with credentials the
    /// token-refresh layer renewed after a 401.
    ReplayAfterRefresh {
        /// Whose request.
        connection: &'a ConnectionId,
    },
    /// The rate-limit layer holds a request before sending it.
    RateLimitHold {
        /// Whose budget.
        connection: &'a ConnectionId,
        /// The budget's origin, when known.
        origin: Option<&'a Origin>,
        /// Why.
        reason: HoldReason,
    },
    /// A connection's budget ran out: the rate-limit layer began holding its requests.
    RateLimitPaused {
        /// Whose budget.
        connection: &'a ConnectionId,
        /// The budget's origin, when known.
        origin: Option<&'a Origin>,
        /// Until the budget frees up, when known.
        wait: Option<Duration>,
    },
    /// The rate-limit layer did not send a request: the budget frees up only after the
    /// call's deadline.
    RateLimitRefused {
        /// Whose budget.
        connection: &'a ConnectionId,
        /// The budget's origin, when known.
        origin: Option<&'a Origin>,
        /// When the budget frees up.
        retry_after: Duration,
    },
    /// A token source finished refreshing a connection's access token.
    TokenRefresh {
        /// Whose token.
        connection: &'a ConnectionId,
        /// How it ended.
        outcome: RefreshOutcome,
        /// How long it took.
        duration: Duration,
    },
    /// A component lost (`active: true`) or regained (`active: false`) a shared backend and
    /// works on its own meanwhile (the rate-limit layer's Redis budgets, say).
    Fallback {
        /// What falls back (`"rate_limit_redis"`).
        component: &'static str,
        /// Whether the fallback is now in use.
        active: bool,
    },
}

/// Receives [`Event`]s. Implemented for closures.
///
/// Called on the request path, so keep it cheap: count, don't format. It must not panic.
pub trait Events: Send + Sync + 'static {
    /// One event.
    fn event(&self, event: &Event<'_>);
}

impl<F> Events for F
where
    F: Fn(&Event<'_>) + Send + Sync + 'static,
{
    fn event(&self, event: &Event<'_>) {
        self(event);
    }
}

/// Where a layer reports its [`Event`]s: nowhere by default, or to one or more [`Events`]
/// subscribers. Cheap to clone.
#[derive(Clone, Default)]
pub struct EventSink(Option<Arc<dyn Events>>);

impl EventSink {
    /// A sink that reports to `events`.
    pub fn new(events: impl Events) -> Self {
        EventSink(Some(Arc::new(events)))
    }

    /// A sink that reports to a shared subscriber.
    pub fn shared(events: Arc<dyn Events>) -> Self {
        EventSink(Some(events))
    }

    /// A sink that reports nothing.
    pub fn none() -> Self {
        EventSink(None)
    }

    /// Whether anything receives the events.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Reports `event`.
    #[inline]
    pub fn emit(&self, event: &Event<'_>) {
        if let Some(events) = &self.0 {
            events.event(event);
        }
    }

    /// A sink that reports to this one's subscriber and then to `other`'s.
    #[must_use]
    pub fn and(self, other: EventSink) -> EventSink {
        match (self.0, other.0) {
            (None, other) => EventSink(other),
            (this, None) => EventSink(this),
            (Some(a), Some(b)) => EventSink::new(move |event: &Event<'_>| {
                a.event(event);
                b.event(event);
            }),
        }
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EventSink")
            .field(&if self.is_on() { "on" } else { "off" })
            .finish()
    }
}
