//! Extensions that describe one logical call as it crosses the layers.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The instant by which the whole call (every attempt and every wait) must be done.
///
/// The retry layer sets it on the request from its total time budget; the layers below read
/// it so that none of them starts a wait it could not finish in time. Times come from
/// `tokio::time`, so tests with a paused clock see consistent deadlines.
///
/// A caller sets one as a request extension. Inside the engine's stack the deadline travels
/// in the call's [`Target`](crate::Target) instead (one extension for the call, not two),
/// so read it with [`Deadline::of`], which looks in both.
///
/// ```
/// use std::time::Duration;
/// use blueprint_core::Deadline;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(Deadline::after(Duration::from_secs(30)));
/// let deadline = Deadline::of(&request).unwrap();
/// assert!(!deadline.is_expired());
/// assert!(deadline.remaining() <= Duration::from_secs(30));
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline at `instant`.
    pub fn at(instant: Instant) -> Self {
        Deadline(instant)
    }

    /// A deadline `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Deadline::after_from(Instant::now(), budget)
    }

    /// `budget` after `now`: [`Deadline::after`] with a clock reading the caller already
    /// made (a budget too large for the clock saturates the same way).
    pub fn after_from(now: Instant, budget: Duration) -> Self {
        Deadline(instant_after(now, budget))
    }

    /// The instant itself.
    pub fn instant(self) -> Instant {
        self.0
    }

    /// The time left, zero once passed.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether the deadline has passed.
    pub fn is_expired(self) -> bool {
        Instant::now() >= self.0
    }

    /// Whether something that ends at `instant` would finish in time.
    pub fn allows(self, instant: Instant) -> bool {
        instant <= self.0
    }

    /// The deadline a request carries, if any: its [`Target`](crate::Target)'s, else a
    /// `Deadline` extension.
    pub fn of<B>(request: &http::Request<B>) -> Option<Deadline> {
        Self::from_extensions(request.extensions())
    }

    /// [`Deadline::of`] for a request's extensions.
    pub fn from_extensions(extensions: &http::Extensions) -> Option<Deadline> {
        match extensions.get::<crate::Target>() {
            Some(target) => target
                .deadline()
                .or_else(|| Self::beside_target(extensions)),
            None => extensions.get::<Deadline>().copied(),
        }
    }

    // A `Deadline` extension in a map that holds a `Target`: looked up only when the map
    // holds something besides the target (a lookup hashes and probes the map; inside the
    // engine the target is usually the only extension).
    fn beside_target(extensions: &http::Extensions) -> Option<Deadline> {
        if extensions.len() > 1 {
            extensions.get::<Deadline>().copied()
        } else {
            None
        }
    }

    /// The earlier of this deadline and the one `extensions` already carry, stored there:
    /// in the call's [`Target`](crate::Target) when there is one (a caller's `Deadline`
    /// extension is left as it was), else as a `Deadline` extension. A layer that sets a
    /// deadline uses this so it never extends a caller's tighter one.
    pub fn tighten(self, extensions: &mut http::Extensions) -> Deadline {
        let tighter = |existing: Option<Deadline>| match existing {
            Some(existing) if existing < self => existing,
            _ => self,
        };
        // One lookup when the target is the map's only extension, as in the engine.
        let beside = Self::beside_target(extensions);
        match extensions.get_mut::<crate::Target>() {
            Some(target) => {
                let tightest = tighter(target.deadline().or(beside));
                target.set_deadline(tightest);
                tightest
            }
            None => {
                // Looked up already when the map holds more than one extension.
                let caller = if extensions.len() > 1 {
                    beside
                } else {
                    extensions.get::<Deadline>().copied()
                };
                let tightest = tighter(caller);
                extensions.insert(tightest);
                tightest
            }
        }
    }
}

/// `duration` after `instant`, or about a hundred years after it when that is past what the
/// clock can name: `Instant + Duration` without its panic, for durations that come from
/// settings (an attempt timeout, a time to live) and mean "practically never" when huge.
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let now = Instant::now();
/// assert_eq!(blueprint_core::instant_after(now, Duration::from_secs(5)), now + Duration::from_secs(5));
/// assert!(blueprint_core::instant_after(now, Duration::MAX) > now);
/// ```
pub fn instant_after(instant: Instant, duration: Duration) -> Instant {
    instant
        .checked_add(duration)
        .unwrap_or_else(|| far_future(instant))
}

/// About a hundred years from `now`: "no deadline" without overflow.
fn far_future(now: Instant) -> Instant {
    const YEAR: u64 = 365 * 24 * 3600;
    [100 * YEAR, YEAR, 24 * 3600]
        .into_iter()
        .find_map(|secs| now.checked_add(Duration::from_secs(secs)))
        .unwrap_or(now)
}

/// Which attempt of a call this is (1 for the first), and, on the final response, how many
/// attempts were made.
///
/// The retry layer sets it on every attempt's request and on the response it returns; the
/// logging layer records `http.request.resend_count` from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(NonZeroU32);

impl Attempt {
    /// The first attempt.
    pub const FIRST: Attempt = Attempt(NonZeroU32::MIN);

    /// Attempt number `n` (1-based); `None` for 0.
    pub fn new(n: u32) -> Option<Attempt> {
        NonZeroU32::new(n).map(Attempt)
    }

    /// The attempt number, from 1.
    pub fn number(self) -> u32 {
        self.0.get()
    }

    /// How many times the request was sent again: `number() - 1`.
    pub fn resends(self) -> u32 {
        self.0.get() - 1
    }

    /// The attempt after this one.
    #[must_use]
    pub fn next(self) -> Attempt {
        Attempt(self.0.saturating_add(1))
    }
}

impl Default for Attempt {
    fn default() -> Self {
        Attempt::FIRST
    }
}

/// How many attempts of a call went out to the network, readable by the caller when the
/// call fails: a response says it in its [`Attempt`], an error has no extensions.
///
/// Put one in the request; the attempt-timeout layer, the engine's last step before the
/// network, records in it each attempt that passes (the count is shared by the clones of
/// one `AttemptCount`, and the retry layer's copy of the request keeps it). An attempt that
/// stopped above (no token, the rate limit spent past the deadline) is not counted. The
/// proxy's access log reads it, so that a call that failed after three attempts says
/// `attempts=3`, and one that never left says `attempts=0`.
///
/// ```
/// use blueprint_core::{Attempt, AttemptCount};
///
/// let count = AttemptCount::new();
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(count.clone());
/// // What the attempt-timeout layer does as attempts go out:
/// if let Some(seen) = request.extensions().get::<AttemptCount>() {
///     seen.record(Attempt::FIRST);
///     seen.record(Attempt::FIRST.next());
/// }
/// assert_eq!(count.get(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct AttemptCount(std::sync::Arc<AtomicU32>);

impl AttemptCount {
    /// A count at 0: no attempt went out yet.
    pub fn new() -> Self {
        AttemptCount::default()
    }

    /// The attempts that went out so far.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// Records that `attempt` went out (the count never goes down).
    pub fn record(&self, attempt: Attempt) {
        self.0.fetch_max(attempt.number(), Ordering::Relaxed);
    }
}

/// A caller's word that this request may be sent again even though its method is not
/// idempotent (an upsert `POST`, a `PATCH` that sets absolute values).
///
/// Put it in the request's extensions; the retry layer then treats the request like a `PUT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetrySafe;

/// Marks a 401 response after which the token-refresh layer renewed the connection's
/// credentials: sending the request once more, now, may succeed.
///
/// The retry layer, which keeps the only copy of the request, sends it again at once (once
/// per call, whatever the method: a 401 proves the request was not processed), with
/// [`ReplayAfterRefresh`] on the new attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CredentialsRefreshed;

/// Marks the attempt that the retry layer sends again after [`CredentialsRefreshed`], so
/// that a second 401 ends the call (the fresh credentials were refused too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayAfterRefresh;

/// Marks a response (a 401) after which the connection's credentials cannot be refreshed:
/// a person has to authorize the connection again.
///
/// The token-refresh layer puts it in the response's extensions; the engine and the proxy
/// turn it into their own "needs re-authorization" errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsReauthorization {
    /// The connection whose credentials were refused.
    pub connection: crate::ConnectionId,
}

/// What a response said about the server's rate limit, parsed by the rate-limit layer and
/// put in the response's extensions.
///
/// Instants come from `tokio::time`; a reset given as wall-clock time has been turned into
/// one with the rate-limit layer's (injectable) clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window, if the server said.
    pub limit: Option<u64>,
    /// Requests left in the current window, if the server said.
    pub remaining: Option<u64>,
    /// When the window resets, if the server said (and it was not in the past).
    pub reset: Option<Instant>,
    /// When the server asked to be called again (`Retry-After`), if it did.
    pub retry_after: Option<Instant>,
    /// Whether the response was a 429 Too Many Requests.
    pub limited: bool,
}

impl RateLimit {
    /// When the server says a new request may succeed, if it says so: its `Retry-After`,
    /// else, when the response was a 429 or the budget is spent, the window's reset.
    /// `None` when the server named no instant (or the budget is not spent).
    pub fn retry_at(&self) -> Option<Instant> {
        if self.retry_after.is_some() {
            return self.retry_after;
        }
        if self.limited || self.remaining == Some(0) {
            return self.reset;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_paused_time() {
        let deadline = Deadline::after(Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(deadline.remaining(), Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(deadline.is_expired());
        assert_eq!(deadline.remaining(), Duration::ZERO);
        // Far budgets saturate instead of overflowing.
        assert!(!Deadline::after(Duration::MAX).is_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn tighten_keeps_the_earlier_deadline() {
        let mut ext = http::Extensions::new();
        let early = Deadline::after(Duration::from_secs(1));
        let late = Deadline::after(Duration::from_secs(9));
        assert_eq!(late.tighten(&mut ext), late);
        assert_eq!(early.tighten(&mut ext), early);
        assert_eq!(late.tighten(&mut ext), early);
        assert_eq!(ext.get::<Deadline>(), Some(&early));
    }

    /// With a `Target` on the request, the deadline goes into it (no second extension), a
    /// caller's tighter `Deadline` extension still wins, and `Deadline::of` sees both.
    #[tokio::test(start_paused = true)]
    async fn with_a_target_the_deadline_travels_in_it() {
        let origin =
            crate::Origin::parse("https://api.example.com").unwrap_or_else(|e| panic!("{e}"));
        let early = Deadline::after(Duration::from_secs(1));
        let late = Deadline::after(Duration::from_secs(9));

        let mut request = http::Request::new(());
        request
            .extensions_mut()
            .insert(crate::Target::new(origin.clone()));
        assert_eq!(Deadline::of(&request), None);
        assert_eq!(late.tighten(request.extensions_mut()), late);
        assert_eq!(
            request.extensions().len(),
            1,
            "no Deadline extension beside the Target"
        );
        assert_eq!(
            crate::Target::of(&request).and_then(crate::Target::deadline),
            Some(late)
        );
        assert_eq!(Deadline::of(&request), Some(late));
        assert_eq!(early.tighten(request.extensions_mut()), early);
        assert_eq!(late.tighten(request.extensions_mut()), early);
        assert_eq!(Deadline::of(&request), Some(early));
        // Equal targets name the same place, whatever their deadlines.
        assert!(crate::Target::of(&request) == Some(&crate::Target::new(origin.clone())));

        // A caller's tighter deadline, set as an extension, is kept and read.
        let mut request = http::Request::new(());
        request.extensions_mut().insert(early);
        request.extensions_mut().insert(crate::Target::new(origin));
        assert_eq!(late.tighten(request.extensions_mut()), early);
        assert_eq!(Deadline::of(&request), Some(early));
        assert_eq!(request.extensions().get::<Deadline>(), Some(&early));
    }

    #[test]
    fn attempts_count_from_one() {
        assert_eq!(Attempt::FIRST.number(), 1);
        assert_eq!(Attempt::FIRST.resends(), 0);
        assert_eq!(Attempt::FIRST.next().next().resends(), 2);
        assert_eq!(Attempt::new(0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_at_prefers_retry_after_then_reset_when_spent() {
        let now = Instant::now();
        let reset = now + Duration::from_secs(10);
        let after = now + Duration::from_secs(3);
        let open = RateLimit {
            remaining: Some(5),
            reset: Some(reset),
            ..RateLimit::default()
        };
        assert_eq!(open.retry_at(), None);
        let spent = RateLimit {
            remaining: Some(0),
            ..open
        };
        assert_eq!(spent.retry_at(), Some(reset));
        let limited = RateLimit {
            limited: true,
            retry_after: Some(after),
            ..open
        };
        assert_eq!(limited.retry_at(), Some(after));
    }
}
