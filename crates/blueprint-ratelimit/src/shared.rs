//! Budgets shared by several processes: the contract a store of budgets fulfils
//! ([`SharedBudgets`]) and what goes across it.
//!
//! One process paces alone with the budgets it keeps in memory. Several replicas in front
//! of one API would each spend the whole budget: two replicas, twice the budget, and 429s.
//! Given a [`SharedBudgets`] ([`RateLimitLayer::shared`](crate::RateLimitLayer::shared)),
//! the layer asks it before each request instead, so that every replica admits against one
//! budget per key, and tells it what answers said, so that what one replica learns (what
//! is left, the reset, a 429's hold) holds for all.
//!
//! The in-process budgets stay: they learn from every answer this process gets, they pace
//! when no store is set, and they take over whenever the store is not available or does not
//! answer, so that no call fails because the store is away.
//!
//! Times cross the trait as durations from now, never as instants or wall-clock times:
//! processes need not agree on a clock, only the store keeps one.
//!
//! The Redis implementation is `RedisBudgets` (cargo feature `redis`). Retry budgets and
//! what the other layers keep stay per process.
//!
//! # Example
//!
//! A store of your own is a [`SharedBudgets`]; this one admits everything and only counts
//! (a store rolled out dark, first):
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use blueprint_core::BoxError;
//! use blueprint_ratelimit::RateLimitLayer;
//! use blueprint_ratelimit::shared::{
//!     AdmitFuture, Answer, Ask, BudgetKey, Decision, Seen, SharedBudgets,
//! };
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! #[derive(Default)]
//! struct Dark(AtomicU64);
//!
//! impl SharedBudgets for Dark {
//!     fn component(&self) -> &'static str {
//!         "rate_limit_dark"
//!     }
//!     fn is_available(&self) -> bool {
//!         true
//!     }
//!     fn admit(&self, _key: BudgetKey<'_>, _ask: Ask) -> AdmitFuture {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!         Box::pin(async { Ok(Answer::new(Decision::Go)) })
//!     }
//!     fn observe(&self, _key: BudgetKey<'_>, _seen: &Seen) {}
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let dark = Arc::new(Dark::default());
//! let api = service_fn(|_req: Request<()>| async { Ok::<_, BoxError>(Response::new(())) });
//! let service = ServiceBuilder::new()
//!     .layer(RateLimitLayer::intercom().shared(Arc::clone(&dark)))
//!     .service(api);
//! service.oneshot(Request::get("https://api.intercom.io/me").body(())?).await?;
//! assert_eq!(dark.0.load(Ordering::Relaxed), 1);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use blueprint_core::{ConnectionId, Event, EventSink, HoldReason, Origin};
use tokio::time::Instant;

use crate::parse::{Observation, Reset};
use crate::state::Key;

pub(crate) mod asking;

/// A store of rate-limit budgets shared by every process that uses it.
///
/// The contract:
///
/// - [`admit`](Self::admit) decides for one request of a key, atomically across every
///   process: a budget of 50 admits 50 requests in its window, whoever asks. An admitted
///   request spends its share at once (there is no separate count of requests in flight to
///   give back: a request that gets no answer has spent it all the same).
/// - [`observe`](Self::observe) records what an answer said; it never waits, and a store
///   may drop an observation when it is busy or away (budgets only get safer for it: the
///   count of admissions goes on).
/// - Neither may panic or block, whatever the store answers; a store that cannot decide
///   answers [`Unavailable`], quickly (a short timeout), and says so in
///   [`is_available`](Self::is_available) until it answers again. The layer then paces
///   in-process.
///
/// Retry budgets and everything else the other layers keep stay per process.
pub trait SharedBudgets: Send + Sync + 'static {
    /// What falls back when the store is away, in [`Event::Fallback`]
    /// (`"rate_limit_redis"`).
    fn component(&self) -> &'static str;

    /// Whether the store is expected to answer now. While `false`, the layer does not ask
    /// and paces in-process; the store finds out by itself when it is back.
    fn is_available(&self) -> bool;

    /// Decides whether one request of `key` may go.
    fn admit(&self, key: BudgetKey<'_>, ask: Ask) -> AdmitFuture;

    /// Records what an answer for `key` said. Must not wait.
    fn observe(&self, key: BudgetKey<'_>, seen: &Seen);
}

impl<T: SharedBudgets + ?Sized> SharedBudgets for Arc<T> {
    fn component(&self) -> &'static str {
        (**self).component()
    }

    fn is_available(&self) -> bool {
        (**self).is_available()
    }

    fn admit(&self, key: BudgetKey<'_>, ask: Ask) -> AdmitFuture {
        (**self).admit(key, ask)
    }

    fn observe(&self, key: BudgetKey<'_>, seen: &Seen) {
        (**self).observe(key, seen);
    }
}

/// What [`SharedBudgets::admit`] returns.
pub type AdmitFuture = Pin<Box<dyn Future<Output = Result<Answer, Unavailable>> + Send + 'static>>;

/// Which budget: an origin (`None` for relative URIs with no origin configured) and a
/// connection.
#[derive(Debug, Clone, Copy)]
pub struct BudgetKey<'a> {
    origin: Option<&'a Origin>,
    connection: &'a ConnectionId,
}

impl<'a> BudgetKey<'a> {
    /// The budget of `connection` at `origin`.
    pub fn new(origin: Option<&'a Origin>, connection: &'a ConnectionId) -> Self {
        BudgetKey { origin, connection }
    }

    /// The origin.
    pub fn origin(&self) -> Option<&'a Origin> {
        self.origin
    }

    /// The connection.
    pub fn connection(&self) -> &'a ConnectionId {
        self.connection
    }
}

/// What a request asks of [`SharedBudgets::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// How long until the request's deadline, if it has one: a request that would wait
    /// past it is refused.
    pub deadline: Option<Duration>,
    /// Whether to space requests when what is left is small for the time left
    /// ([`RateLimitLayer::smoothing`](crate::RateLimitLayer::smoothing)).
    pub smoothing: bool,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Send it now.
    Go,
    /// Send it after this long, without asking again: a turn kept for it (smoothing).
    GoAfter(Duration),
    /// Ask again after this long.
    Hold {
        /// How long.
        wait: Duration,
        /// Why.
        reason: HoldReason,
    },
    /// The budget frees up after the request's deadline: do not send it.
    Refuse {
        /// When the budget frees up, from now.
        retry_after: Duration,
    },
}

/// The answer of [`SharedBudgets::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    decision: Decision,
    known: Option<Known>,
    paused: bool,
    resumed: Option<Duration>,
}

impl Answer {
    /// An answer that says `decision` and nothing else.
    pub fn new(decision: Decision) -> Self {
        Answer {
            decision,
            known: None,
            paused: false,
            resumed: None,
        }
    }

    /// What the store knew of the window once it had decided: the layer then tells
    /// [`observe`](SharedBudgets::observe) only what the answer adds to it.
    #[must_use]
    pub fn known(mut self, known: Known) -> Self {
        self.known = Some(known);
        self
    }

    /// This request is the first to find the budget spent (for the
    /// [`Event::RateLimitPaused`] event and the log).
    #[must_use]
    pub fn paused(mut self) -> Self {
        self.paused = true;
        self
    }

    /// This request is the first to go after the budget was spent for `paused`.
    #[must_use]
    pub fn resumed(mut self, paused: Duration) -> Self {
        self.resumed = Some(paused);
        self
    }

    /// The decision.
    pub fn decision(&self) -> Decision {
        self.decision
    }

    /// What the store knew of the window.
    pub fn known_window(&self) -> Option<&Known> {
        self.known.as_ref()
    }

    /// Whether this request is the first to find the budget spent.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// How long the budget had been spent, when this request is the first to go again.
    pub fn resumed_after(&self) -> Option<Duration> {
        self.resumed
    }
}

/// A window as a store knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// The limit per window, if the server named one.
    pub limit: Option<u64>,
    /// What is left to admit in the window.
    pub remaining: u64,
    /// When the window resets, from now; `None` when no answer has spoken of the current
    /// window yet.
    pub reset: Option<Duration>,
}

/// What one answer said about its budget, as [`SharedBudgets::observe`] receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The limit per window.
    pub limit: Option<u64>,
    /// What is left in the window.
    pub remaining: Option<u64>,
    /// When the window resets.
    pub reset: Option<SeenReset>,
    /// How far two answers of one window may disagree about its reset.
    pub precision: Duration,
    /// `Retry-After`, from now.
    pub retry_after: Option<Duration>,
    /// The answer was a 429.
    pub limited: bool,
}

/// When the window an answer speaks of resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenReset {
    /// This long from now.
    In(Duration),
    /// This long ago: a late answer from a window that is over, or a server whose windows
    /// turn later than the resets it writes.
    Ago(Duration),
}

/// The store did not answer (down, slow, or an answer that made no sense); the layer paces
/// in-process meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unavailable;

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the shared rate-limit budgets did not answer")
    }
}

impl std::error::Error for Unavailable {}

/// A layer's shared budgets, and whether this layer paces in-process meanwhile.
#[derive(Clone)]
pub(crate) struct SharedStore {
    budgets: Arc<dyn SharedBudgets>,
    /// Set while the store is away, so that each switch is reported once.
    fallback: Arc<AtomicBool>,
}

impl SharedStore {
    pub(crate) fn new(budgets: Arc<dyn SharedBudgets>) -> Self {
        SharedStore {
            budgets,
            fallback: Arc::new(AtomicBool::new(false)),
        }
    }

    pub(crate) fn component(&self) -> &'static str {
        self.budgets.component()
    }

    pub(crate) fn is_available(&self) -> bool {
        self.budgets.is_available()
    }

    pub(crate) fn admit(
        &self,
        key: &Key,
        deadline: Option<Instant>,
        smoothing: bool,
        now: Instant,
    ) -> AdmitFuture {
        let ask = Ask {
            deadline: deadline.map(|d| d.saturating_duration_since(now)),
            smoothing,
        };
        self.budgets.admit(key.budget_key(), ask)
    }

    /// The store did not answer: this layer paces in-process.
    pub(crate) fn fell_back(&self, events: &EventSink) {
        if !self.fallback.load(Ordering::Relaxed) && !self.fallback.swap(true, Ordering::AcqRel) {
            events.emit(&Event::Fallback {
                component: self.component(),
                active: true,
            });
        }
    }

    /// The store answered: this layer shares its budgets again.
    pub(crate) fn answered(&self, events: &EventSink) {
        if self.fallback.load(Ordering::Relaxed) && self.fallback.swap(false, Ordering::AcqRel) {
            events.emit(&Event::Fallback {
                component: self.component(),
                active: false,
            });
        }
    }

    /// Tells the store what an answer said, when it is news to it.
    pub(crate) fn learn(
        &self,
        key: &Key,
        seen: &Observation,
        limited: bool,
        known: Option<&KnownAt>,
        now: Instant,
    ) {
        if let Some(seen) = Seen::of(seen, limited, now) {
            if seen.is_news(known, now) && self.budgets.is_available() {
                self.budgets.observe(key.budget_key(), &seen);
            }
        }
    }
}

/// What the store knew when it admitted a request, in this process's time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KnownAt {
    limit: Option<u64>,
    remaining: u64,
    reset: Option<Instant>,
}

impl KnownAt {
    pub(crate) fn new(known: &Known, now: Instant) -> Self {
        KnownAt {
            limit: known.limit,
            remaining: known.remaining,
            reset: known.reset.and_then(|d| now.checked_add(d)),
        }
    }
}

/// How far apart a reset the store knows and one an answer names may be and still be one
/// window: the answer's own precision, plus the rounding to milliseconds on both sides.
const SAME_RESET: Duration = Duration::from_millis(5);

impl Seen {
    /// What `seen` says, from `now`, when it says anything the store can use.
    pub(crate) fn of(seen: &Observation, limited: bool, now: Instant) -> Option<Seen> {
        if !limited && !seen.has_info() {
            return None;
        }
        let (reset, precision) = match seen.reset {
            Reset::Absent => (None, Duration::ZERO),
            Reset::At { instant, precision } => (
                Some(SeenReset::In(instant.saturating_duration_since(now))),
                precision,
            ),
            Reset::Past { instant, precision } => (
                Some(SeenReset::Ago(
                    instant.map_or(Duration::MAX, |i| now.saturating_duration_since(i)),
                )),
                precision,
            ),
        };
        Some(Seen {
            limit: seen.limit,
            remaining: seen.remaining,
            reset,
            precision,
            retry_after: seen.retry_after.map(|r| r.saturating_duration_since(now)),
            limited,
        })
    }

    /// Whether this says anything the store did not know when it admitted the request:
    /// a 429, a wait, a new window, less left than it counted, another limit.
    pub(crate) fn is_news(&self, known: Option<&KnownAt>, now: Instant) -> bool {
        if self.limited || self.retry_after.is_some() {
            return true;
        }
        let Some(known) = known else {
            return true;
        };
        if self.limit.is_some() && self.limit != known.limit {
            return true;
        }
        if self.remaining.is_some_and(|r| r < known.remaining) {
            return true;
        }
        match (self.reset, known.reset) {
            (Some(SeenReset::In(d)), Some(reset)) => {
                let seen = now.checked_add(d).unwrap_or(reset);
                let apart = if seen > reset {
                    seen - reset
                } else {
                    reset - seen
                };
                apart > self.precision + SAME_RESET
            }
            // The store has no window: this opens one.
            (Some(SeenReset::In(_)), None) => true,
            (Some(SeenReset::Ago(_)) | None, _) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(remaining: u64, reset_in_ms: u64) -> Seen {
        Seen {
            limit: Some(50),
            remaining: Some(remaining),
            reset: Some(SeenReset::In(Duration::from_millis(reset_in_ms))),
            precision: Duration::from_millis(50),
            retry_after: None,
            limited: false,
        }
    }

    #[test]
    fn an_answer_that_adds_nothing_to_what_the_store_counted_is_not_sent() {
        let now = Instant::now();
        let known = KnownAt::new(
            &Known {
                limit: Some(50),
                remaining: 40,
                reset: Some(Duration::from_millis(1000)),
            },
            now,
        );
        // The server counted fewer than the store admitted: nothing new.
        assert!(!seen(45, 1000).is_news(Some(&known), now));
        assert!(!seen(40, 1030).is_news(Some(&known), now));
        // Less left than counted (someone else spends it), a new window, another limit,
        // a 429, a wait, or a store that knew nothing: news.
        assert!(seen(39, 1000).is_news(Some(&known), now));
        assert!(seen(45, 3000).is_news(Some(&known), now));
        assert!(
            Seen {
                limit: Some(60),
                ..seen(45, 1000)
            }
            .is_news(Some(&known), now)
        );
        assert!(
            Seen {
                limited: true,
                ..seen(45, 1000)
            }
            .is_news(Some(&known), now)
        );
        assert!(
            Seen {
                retry_after: Some(Duration::from_secs(1)),
                ..seen(45, 1000)
            }
            .is_news(Some(&known), now)
        );
        assert!(seen(45, 1000).is_news(None, now));
    }
}
