//! What the layer knows about each key's budget, shared by every clone of the service.
//!
//! Keys live in sixteen shards, each a read-mostly map from the key's hash to its state,
//! and only keys the server has said something about are in them. A request looks its key
//! up under one shard's read lock (no lock at all while no key is tracked), and takes the
//! key's own small mutex only when the key is tracked. Nothing is locked across an await.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::task::Waker;
use std::time::Duration;

use blueprint_core::{ConnectionId, Event, EventSink, Origin};
use http::Uri;
use tokio::time::Instant;

use crate::parse::{Observation, Reset};

const SHARDS: usize = 16;
/// How many distinct absolute origins are remembered so that resolving a request's origin
/// allocates nothing.
const KNOWN_ORIGINS: usize = 16;

/// A key: the origin (`None` for relative URIs with no default origin configured) and the
/// connection, with its hash.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    hash: u64,
    pub(crate) origin: Option<Origin>,
    pub(crate) connection: ConnectionId,
}

/// Every key's state, bounded in size.
pub(crate) struct Keys {
    shards: Box<[RwLock<Shard>]>,
    per_shard: usize,
    /// Seeded per process, so that callers who choose connection ids cannot aim at one
    /// shard or slot; foldhash rather than `SipHash` because a key is hashed on every call
    /// (about 40 instructions against 340 for an origin and a connection id).
    hasher: foldhash::fast::RandomState,
    /// Origins seen, filled in order and never emptied: read without a lock.
    origins: Box<[OnceLock<Origin>]>,
    /// Keys tracked in all shards (changed under a shard's write lock): while zero, a
    /// request looks nothing up. Read without ordering: a request racing the first answer
    /// of its key may miss it, as it would had it come a moment earlier.
    tracked: AtomicUsize,
}

type Shard = HashMap<u64, Arc<KeyState>, BuildHasherDefault<IdHasher>>;

/// The map's keys are already hashes.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl Key {
    pub(crate) fn new(hash: u64, origin: Option<Origin>, connection: ConnectionId) -> Self {
        Key {
            hash,
            origin,
            connection,
        }
    }

    /// The key as the shared budgets name it.
    pub(crate) fn budget_key(&self) -> crate::shared::BudgetKey<'_> {
        crate::shared::BudgetKey::new(self.origin.as_ref(), &self.connection)
    }
}

impl Keys {
    /// Room for about `max_keys` keys (rounded up to a multiple of the shard count).
    pub(crate) fn new(max_keys: usize) -> Self {
        Keys {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: foldhash::fast::RandomState::default(),
            origins: (0..KNOWN_ORIGINS).map(|_| OnceLock::new()).collect(),
            tracked: AtomicUsize::new(0),
        }
    }

    /// The key of a request for `uri` on `connection`.
    #[cfg(test)]
    pub(crate) fn key(&self, uri: &Uri, default: Option<&Origin>, connection: ConnectionId) -> Key {
        let origin = self.origin(uri, default);
        Key::new(self.hash(origin.as_ref(), &connection), origin, connection)
    }

    /// The hash of the key of `connection` at `origin`.
    pub(crate) fn hash(&self, origin: Option<&Origin>, connection: &ConnectionId) -> u64 {
        self.hasher.hash_one((origin, connection))
    }

    /// The origin of a request: `default` for a relative URI, else the URI's, taken from a
    /// short list of origins already seen so that the hot path does not allocate.
    pub(crate) fn origin(&self, uri: &Uri, default: Option<&Origin>) -> Option<Origin> {
        if uri.scheme().is_none() && uri.authority().is_none() {
            return default.cloned();
        }
        if let Some(default) = default.filter(|d| d.matches(uri)) {
            return Some(default.clone());
        }
        let known = self.origins.iter().map_while(OnceLock::get);
        if let Some(known) = known.clone().find(|o| o.matches(uri)) {
            return Some(known.clone());
        }
        let origin = Origin::from_uri(uri)?;
        if known.count() < KNOWN_ORIGINS {
            // Two callers may race for a slot: the loser's origin goes in the next one, or
            // is simply not remembered. Either way, nothing is lost but an allocation.
            if let Some(slot) = self.origins.iter().find(|slot| slot.get().is_none()) {
                let _ = slot.set(origin.clone());
            }
        }
        Some(origin)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        // Bits the map itself does not use to place entries.
        let index = usize::try_from(hash.rotate_left(32) % SHARDS as u64).unwrap_or(0);
        &self.shards[index]
    }

    /// The key's state, if the key has had information.
    pub(crate) fn get(&self, key: &Key) -> Option<Arc<KeyState>> {
        self.get_by(key.hash, key.origin.as_ref(), &key.connection)
    }

    /// [`Keys::get`] of the key of `hash` ([`Keys::hash`]), `origin` and `connection`,
    /// without owning them.
    pub(crate) fn get_by(
        &self,
        hash: u64,
        origin: Option<&Origin>,
        connection: &ConnectionId,
    ) -> Option<Arc<KeyState>> {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let shard = read(self.shard(hash));
        shard
            .get(&hash)
            .filter(|state| state.is(origin, connection))
            .map(Arc::clone)
    }

    /// The key's state, made if missing; the shard's stalest key makes room when it is full.
    /// `None` only when another key has the same 64-bit hash (that key keeps the slot).
    pub(crate) fn get_or_insert(&self, key: &Key, now: Instant) -> Option<Arc<KeyState>> {
        let mut shard = write(self.shard(key.hash));
        if let Some(state) = shard.get(&key.hash) {
            return state
                .is(key.origin.as_ref(), &key.connection)
                .then(|| Arc::clone(state));
        }
        if shard.len() >= self.per_shard {
            let before = shard.len();
            shard.retain(|_, state| !state.is_idle(now));
            self.tracked
                .fetch_sub(before - shard.len(), Ordering::Relaxed);
        }
        if shard.len() >= self.per_shard {
            let stalest = shard
                .iter()
                .min_by_key(|(_, state)| state.last_seen())
                .map(|(hash, _)| *hash);
            if stalest.and_then(|hash| shard.remove(&hash)).is_some() {
                self.tracked.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let state = Arc::new(KeyState::new(key, now));
        shard.insert(key.hash, Arc::clone(&state));
        self.tracked.fetch_add(1, Ordering::Relaxed);
        Some(state)
    }

    /// How many keys are tracked.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| read(s).len()).sum()
    }

    /// The most keys tracked at once.
    pub(crate) fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("tracked", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// One key's budget.
pub(crate) struct KeyState {
    origin: Option<Origin>,
    connection: ConnectionId,
    budget: Mutex<Budget>,
}

#[derive(Debug)]
struct Budget {
    limit: Option<u64>,
    window: Window,
    /// The most remaining seen in the current window: the limit when the server names none.
    peak: u64,
    /// The longest window seen, to judge whether what is left is small for the time left.
    window_len: Duration,
    /// Set by a 429: nothing is sent before.
    blocked_until: Option<Instant>,
    /// Requests sent and not answered yet.
    in_flight: u64,
    /// With smoothing: when the next request may go.
    next_send: Option<Instant>,
    last_seen: Instant,
    /// Since when requests are held because the budget is spent.
    paused_since: Option<Instant>,
    /// How much later than the reset it writes the server really starts a new window,
    /// learned from 429s that came right after a reset (a reset truncated to the second,
    /// or a server clock behind ours).
    lag: Duration,
    /// A 429 came after the current window's reset, from the window before.
    stale: bool,
    /// Requests waiting for an answer to come back.
    waiters: Vec<Waker>,
    // Whether a wait longer than the cap was logged for this key already.
    warned_cap: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    /// The server named no window: never hold.
    Unknown,
    /// The server said `remaining` requests are left until `reset`.
    Open {
        reset: Instant,
        remaining: u64,
        precision: Duration,
    },
    /// A window ended (`after`); until an answer speaks of the new one, `remaining` is the
    /// limit (`u64::MAX` when the server named none).
    Refilled {
        remaining: u64,
        after: Instant,
        precision: Duration,
    },
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send it; it now counts as in flight.
    Go,
    /// Hold it until `until` (or an answer, for [`Hold::Answers`]), then ask again.
    Hold { until: Option<Instant>, why: Hold },
    /// The budget frees up at `retry_at`, after the request's deadline.
    Refuse { retry_at: Instant },
}

/// Why a request is held: the reason reported in events.
pub(crate) use blueprint_core::HoldReason as Hold;

impl KeyState {
    fn new(key: &Key, now: Instant) -> Self {
        KeyState {
            origin: key.origin.clone(),
            connection: key.connection.clone(),
            budget: Mutex::new(Budget {
                limit: None,
                window: Window::Unknown,
                peak: 0,
                window_len: Duration::ZERO,
                blocked_until: None,
                in_flight: 0,
                next_send: None,
                last_seen: now,
                paused_since: None,
                lag: Duration::ZERO,
                stale: false,
                waiters: Vec::new(),
                warned_cap: false,
            }),
        }
    }

    fn is(&self, origin: Option<&Origin>, connection: &ConnectionId) -> bool {
        self.connection == *connection && self.origin.as_ref() == origin
    }

    /// The key of this state, whose hash is `hash`.
    pub(crate) fn key(&self, hash: u64) -> Key {
        Key::new(hash, self.origin.clone(), self.connection.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn last_seen(&self) -> Instant {
        self.lock().last_seen
    }

    fn is_idle(&self, now: Instant) -> bool {
        let budget = self.lock();
        budget.in_flight == 0
            && budget.blocked_until.is_none_or(|b| b <= now)
            && !matches!(budget.window, Window::Open { reset, .. } if reset > now)
    }

    /// The key's origin (`None`: relative URIs, no default origin).
    pub(crate) fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// Decides about one request. When it is held for answers and `waker` is given, the
    /// waker is called when one comes.
    pub(crate) fn admit(
        &self,
        now: Instant,
        deadline: Option<Instant>,
        smoothing: bool,
        waker: Option<&Waker>,
        events: &EventSink,
    ) -> Admission {
        let (admission, paused) = {
            let mut budget = self.lock();
            let admission = budget.admit(now, deadline, smoothing);
            if let (
                Admission::Hold {
                    why: Hold::Answers, ..
                },
                Some(waker),
            ) = (admission, waker)
            {
                if !budget.waiters.iter().any(|w| w.will_wake(waker)) {
                    budget.waiters.push(waker.clone());
                }
            }
            let paused = match admission {
                Admission::Hold {
                    why: Hold::Spent, ..
                } if budget.paused_since.is_none() => {
                    budget.paused_since = Some(now);
                    Pause::Started
                }
                Admission::Go => match budget.paused_since.take() {
                    Some(since) => Pause::Ended(now.saturating_duration_since(since)),
                    None => Pause::None,
                },
                _ => Pause::None,
            };
            (admission, paused)
        };
        let origin = OriginField(self.origin.as_ref());
        if events.is_on() {
            let connection = &self.connection;
            let origin = self.origin.as_ref();
            if let Admission::Hold { why, until } = admission {
                if paused == Pause::Started {
                    events.emit(&Event::RateLimitPaused {
                        connection,
                        origin,
                        wait: until.map(|u| u.saturating_duration_since(now)),
                    });
                }
                events.emit(&Event::RateLimitHold {
                    connection,
                    origin,
                    reason: why,
                });
            }
            if let Admission::Refuse { retry_at } = admission {
                events.emit(&Event::RateLimitRefused {
                    connection,
                    origin,
                    retry_after: retry_at.saturating_duration_since(now),
                });
            }
        }
        match (admission, paused) {
            (
                Admission::Hold {
                    until: Some(until), ..
                },
                Pause::Started,
            ) => tracing::info!(
                connection = %self.connection,
                origin = %origin,
                wait_ms = millis(until.saturating_duration_since(now)),
                "rate limit reached: holding requests until the budget frees up"
            ),
            (Admission::Go, Pause::Ended(paused)) => tracing::info!(
                connection = %self.connection,
                origin = %origin,
                paused_ms = millis(paused),
                "rate limit budget free again: resuming requests"
            ),
            (Admission::Refuse { retry_at }, _) => tracing::debug!(
                connection = %self.connection,
                origin = %origin,
                retry_after_ms = millis(retry_at.saturating_duration_since(now)),
                "rate limit spent past the request's deadline: not sending it"
            ),
            _ => {}
        }
        admission
    }

    /// Records an answer (or the end of a request without one): takes it out of flight if
    /// it was `counted`, learns from `seen`, and wakes requests waiting for answers.
    pub(crate) fn settle(&self, counted: bool, seen: Option<(&Observation, bool)>, now: Instant) {
        let waiters = {
            let mut budget = self.lock();
            if counted {
                budget.in_flight = budget.in_flight.saturating_sub(1);
            }
            if let Some((seen, limited)) = seen {
                budget.observe(seen, limited, now);
            }
            if budget.waiters.is_empty() {
                return;
            }
            std::mem::take(&mut budget.waiters)
        };
        for waiter in waiters {
            waiter.wake();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    None,
    Started,
    Ended(Duration),
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An origin for logs: `relative` when requests were relative and no origin was configured.
pub(crate) struct OriginField<'a>(pub(crate) Option<&'a Origin>);

impl fmt::Display for OriginField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(origin) => fmt::Display::fmt(origin, f),
            None => f.write_str("relative"),
        }
    }
}

impl fmt::Debug for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyState")
            .field("origin", &self.origin)
            .field("connection", &self.connection)
            .field("budget", &*self.lock())
            .finish()
    }
}

impl Budget {
    /// Moves past a window whose reset has come.
    fn roll(&mut self, now: Instant) {
        if let Window::Open {
            reset, precision, ..
        } = self.window
        {
            if reset <= now {
                self.next_send = None;
                self.stale = false;
                self.window = Window::Refilled {
                    remaining: self.limit.unwrap_or(u64::MAX),
                    after: reset,
                    precision,
                };
            }
        }
    }

    fn admit(&mut self, now: Instant, deadline: Option<Instant>, smoothing: bool) -> Admission {
        self.roll(now);
        if let Some(until) = self.blocked_until {
            if until > now {
                return spent(until, deadline);
            }
            self.blocked_until = None;
        }
        match self.window {
            Window::Unknown => self.go(),
            Window::Refilled { remaining, .. } => {
                // After a 429 from the window that should be over, one request at a time
                // probes for the new one.
                let room = if self.stale { 1 } else { remaining };
                if room > self.in_flight || self.in_flight == 0 {
                    return self.go();
                }
                // More requests are in flight than the limit: their answers tell.
                match deadline {
                    Some(d) if d <= now => Admission::Refuse { retry_at: now },
                    _ => Admission::Hold {
                        until: deadline,
                        why: Hold::Answers,
                    },
                }
            }
            Window::Open {
                reset, remaining, ..
            } => {
                let available = remaining.saturating_sub(self.in_flight);
                if available == 0 {
                    if remaining == 0 || self.in_flight == 0 {
                        return spent(reset, deadline);
                    }
                    return match deadline {
                        Some(d) if d <= now => Admission::Refuse { retry_at: reset },
                        Some(d) if d < reset => Admission::Hold {
                            until: Some(d),
                            why: Hold::Answers,
                        },
                        _ => Admission::Hold {
                            until: Some(reset),
                            why: Hold::Answers,
                        },
                    };
                }
                let left = reset.saturating_duration_since(now);
                if smoothing && self.is_small(available, left) {
                    let next = self.next_send.filter(|next| *next > now);
                    if let Some(next) = next {
                        if deadline.is_none_or(|d| next <= d) {
                            return Admission::Hold {
                                until: Some(next),
                                why: Hold::Smoothing,
                            };
                        }
                    }
                    // Space what is left evenly until the reset. A request whose deadline
                    // cannot wait for its turn goes now, and the next turn moves on.
                    let spacing = left / u32::try_from(available).unwrap_or(u32::MAX);
                    let from = next.unwrap_or(now);
                    self.next_send = from.checked_add(spacing);
                } else {
                    self.next_send = None;
                }
                self.go()
            }
        }
    }

    fn go(&mut self) -> Admission {
        self.in_flight = self.in_flight.saturating_add(1);
        Admission::Go
    }

    /// Whether `available` requests are less than half the share of the limit that the
    /// time `left` in the window deserves.
    fn is_small(&self, available: u64, left: Duration) -> bool {
        let cap = self.limit.unwrap_or(self.peak);
        let window = self.window_len.as_nanos().max(1);
        let have = u128::from(available)
            .saturating_mul(window)
            .saturating_mul(2);
        have < u128::from(cap).saturating_mul(left.as_nanos())
    }

    fn open(&mut self, reset: Instant, remaining: u64, precision: Duration, now: Instant) {
        self.window = Window::Open {
            reset,
            remaining,
            precision,
        };
        self.peak = remaining;
        self.window_len = self.window_len.max(reset.saturating_duration_since(now));
        self.next_send = None;
    }

    fn observe(&mut self, seen: &Observation, limited: bool, now: Instant) {
        self.last_seen = now;
        self.roll(now);
        if seen.limit.is_some() {
            self.limit = seen.limit;
        }
        // Resets are kept as the server's plus what it has been seen to lag behind it: a
        // reset written in the past may still be ahead.
        let reset = match seen.reset {
            Reset::At { instant, precision }
            | Reset::Past {
                instant: Some(instant),
                precision,
            } => {
                let instant = later(instant, self.lag);
                if instant > now {
                    Reset::At { instant, precision }
                } else {
                    Reset::Past {
                        instant: Some(instant),
                        precision,
                    }
                }
            }
            other => other,
        };
        let spent_429 = limited && seen.remaining == Some(0);
        match (reset, seen.remaining) {
            (Reset::At { instant, precision }, Some(r)) => match self.window {
                Window::Unknown => self.open(instant, r, precision, now),
                Window::Refilled {
                    after,
                    precision: p,
                    ..
                } => {
                    if instant > later(after, p.max(precision)) {
                        let mut instant = instant;
                        if self.stale {
                            // The first answer of the new window, after 429s that said the
                            // old one was still on: the server's windows start this much
                            // after the reset it writes. Wait that much from now on.
                            let lag = self.lag + now.saturating_duration_since(after);
                            let lag = lag.min(MAX_LAG);
                            if let Reset::At { instant: raw, .. }
                            | Reset::Past {
                                instant: Some(raw), ..
                            } = seen.reset
                            {
                                instant = later(raw, lag);
                            }
                            self.lag = lag;
                        }
                        self.open(instant, r, precision, now);
                    } else if spent_429 {
                        self.stale_429(now);
                    }
                    // Else: a late answer from the window that is over.
                }
                Window::Open {
                    reset,
                    remaining,
                    precision: p,
                } => {
                    let tolerance = p.max(precision);
                    if instant > later(reset, tolerance) {
                        self.open(instant, r, precision, now);
                    } else if later(instant, tolerance) >= reset {
                        // The same window: what is left only goes down (answers may arrive
                        // out of order), and the later reset is the safer one.
                        self.window = Window::Open {
                            reset: reset.max(instant),
                            remaining: remaining.min(r),
                            precision: tolerance,
                        };
                        self.peak = self.peak.max(r);
                    }
                }
            },
            (Reset::Past { .. }, _)
                if spent_429 && matches!(self.window, Window::Refilled { .. }) =>
            {
                self.stale_429(now);
            }
            (Reset::Absent, Some(r)) => {
                if let Window::Open { remaining, .. } = &mut self.window {
                    *remaining = (*remaining).min(r);
                }
            }
            _ => {}
        }
        if let Some(asked) = seen.capped.filter(|_| !self.warned_cap) {
            self.warned_cap = true;
            tracing::warn!(
                asked_secs = asked.as_secs(),
                "the server asked to wait longer than the longest wait allowed \
                 (max_server_wait): waiting that long instead (said once per connection)"
            );
        }
        if limited {
            let until = match (seen.retry_after, seen.remaining, reset) {
                (Some(after), _, _) => Some(after),
                // The rule reads the wait from `Retry-After` only: no reset holds calls.
                (None, _, _) if seen.wait_from == crate::WaitFrom::RetryAfter => None,
                // A 429 with budget left is another limit than the window's (Intercom's cap
                // on pending jobs): the reset does not clear it, so do not wait for it.
                (None, Some(r), _) if r > 0 => None,
                (None, _, Reset::At { instant, .. }) => Some(instant),
                _ => None,
            };
            if let Some(until) = until.filter(|u| *u > now) {
                self.block(until);
            }
        }
    }

    /// A 429 saying the budget is spent, from a window whose reset has passed: the server
    /// has not turned to the next window yet. Hold everything a moment, then probe again
    /// with one request at a time.
    fn stale_429(&mut self, now: Instant) {
        self.stale = true;
        self.block(later(now, STALE_STEP));
    }

    fn block(&mut self, until: Instant) {
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
    }
}

/// How long to hold a key after a 429 that came from a window whose reset has passed.
const STALE_STEP: Duration = Duration::from_millis(100);
/// The most a server's windows are believed to lag behind the resets it writes.
const MAX_LAG: Duration = Duration::from_secs(5);

/// `instant + by`, or `instant` where that would overflow.
fn later(instant: Instant, by: Duration) -> Instant {
    instant.checked_add(by).unwrap_or(instant)
}

fn spent(until: Instant, deadline: Option<Instant>) -> Admission {
    if deadline.is_some_and(|d| d < until) {
        Admission::Refuse { retry_at: until }
    } else {
        Admission::Hold {
            until: Some(until),
            why: Hold::Spent,
        }
    }
}

#[cfg(test)]
mod tests;
