//! What the source holds in memory per connection: the cached token, a failure that makes
//! calls fail fast for a while, and the refresh in flight. Bounded: a caller naming
//! connections that do not exist cannot make it grow without end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use blueprint_core::{AccessToken, ConnectionId, TokenError};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::flight::Flight;

/// One connection's state.
pub(super) struct Conn {
    /// This connection's share of the refresh jitter, drawn once.
    pub(super) jitter: Duration,
    /// When the connection was last asked for (a tick of [`Connections`]), for eviction.
    last_used: AtomicU64,
    state: Mutex<ConnState>,
    /// Woken when the store's change feed reports a change of this connection's record (or
    /// a resync): a flight waiting for another process's refresh reads the store at once
    /// instead of at its next poll.
    store_changed: Notify,
}

#[derive(Default)]
pub(super) struct ConnState {
    pub(super) cached: Option<Cached>,
    pub(super) failure: Option<Failure>,
    pub(super) flight: Option<Flight>,
    /// Counts the changes the store reported for this connection: a flight that started
    /// before a change checks, before it caches what it read, that the store still holds
    /// it (it may be what another process just deleted).
    pub(super) generation: u64,
    /// The access token of the record as this process last read or wrote it (`None`: no
    /// record): what tells this process's own writes (a lease, a status) from another's
    /// when the store reports a change.
    pub(super) seen: Option<AccessToken>,
    /// Another flight's lease, and when this process first saw it (its own clock): what
    /// lets a lease lapse only once it has been held a whole lease here, whatever the
    /// holder's wall clock wrote.
    pub(super) lease_seen: Option<SeenLease>,
}

/// A lease of another flight, as first seen.
pub(super) struct SeenLease {
    pub(super) holder: String,
    pub(super) until: SystemTime,
    pub(super) at: tokio::time::Instant,
}

impl ConnState {
    /// The store reported a change to this connection (another process deleted, imported
    /// or refreshed it): forget the cached token and any failure, so that the next call
    /// reads the store. A token the server refused stays marked, so that it is never sent
    /// again.
    pub(super) fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.seen = None;
        self.failure = None;
        if self.cached.as_ref().is_some_and(|c| !c.stale) {
            self.cached = None;
        }
    }
}

pub(super) struct Cached {
    pub(super) token: AccessToken,
    pub(super) expires_at: Option<SystemTime>,
    pub(super) refresh_at: Option<SystemTime>,
    pub(super) can_refresh: bool,
    /// Refused by the server (a 401): never handed out again.
    pub(super) stale: bool,
}

pub(super) struct Failure {
    pub(super) error: TokenError,
    pub(super) until: Instant,
}

impl Conn {
    pub(super) fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the flights waiting for a change of the record (see [`Conn::store_change`]).
    pub(super) fn wake_on_change(&self) {
        self.store_changed.notify_waiters();
    }

    /// A wait for the next reported change of the record. Enable it (`Notified::enable`)
    /// before reading the store, so that a change reported between the read and the wait
    /// still ends the wait.
    pub(super) fn store_change(&self) -> tokio::sync::futures::Notified<'_> {
        self.store_changed.notified()
    }
}

/// The connections a source has met, at most `max` of them. When full, the least recently
/// used eighth is dropped (never one whose refresh is in flight), those that hold no token
/// first: forgetting a connection only costs a read of the store when it is next used.
pub(super) struct Connections {
    map: RwLock<ConnMap>,
    max: usize,
    clock: AtomicU64,
}

/// Looked up on every call: foldhash, seeded per map (as hashbrown's own default), costs
/// about a tenth of `SipHash` on a connection id; the map is bounded, so a flood of ids
/// cannot grow it, and the seed keeps callers from aiming at one bucket.
type ConnMap = HashMap<ConnectionId, Arc<Conn>, foldhash::fast::RandomState>;

impl Connections {
    pub(super) fn new(max: usize) -> Self {
        Connections {
            map: RwLock::default(),
            max: max.max(1),
            clock: AtomicU64::new(0),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The connection's state, if held; marks it used.
    pub(super) fn get(&self, connection: &ConnectionId) -> Option<Arc<Conn>> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        let conn = map.get(connection)?;
        conn.last_used.store(self.tick(), Ordering::Relaxed);
        Some(Arc::clone(conn))
    }

    /// The connection's state, made (with `jitter`) if not held yet.
    pub(super) fn get_or_insert(
        &self,
        connection: &ConnectionId,
        jitter: impl FnOnce() -> Duration,
    ) -> Arc<Conn> {
        if let Some(conn) = self.get(connection) {
            return conn;
        }
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = map.get(connection) {
            return Arc::clone(conn);
        }
        if map.len() >= self.max {
            evict(&mut map, self.max);
        }
        let conn = Arc::new(Conn {
            jitter: jitter(),
            last_used: AtomicU64::new(self.tick()),
            state: Mutex::default(),
            store_changed: Notify::new(),
        });
        map.insert(connection.clone(), Arc::clone(&conn));
        conn
    }

    /// Forgets the connection.
    pub(super) fn remove(&self, connection: &ConnectionId) {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(connection);
    }

    /// The connection's state, if held, without marking it used.
    pub(super) fn peek(&self, connection: &ConnectionId) -> Option<Arc<Conn>> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.get(connection).map(Arc::clone)
    }

    /// The store may have changed anything (its feed lost track): every connection reads
    /// the store again on its next call.
    pub(super) fn changed_all(&self) {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        for conn in map.values() {
            conn.lock().changed();
            conn.wake_on_change();
        }
    }

    /// Forgets every connection (those being refreshed finish first).
    pub(super) fn clear(&self) {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, conn| conn.lock().flight.is_some());
    }

    /// How many connections are held.
    pub(super) fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

fn evict(map: &mut ConnMap, max: usize) {
    let goal = max - max / 8 - 1;
    // (holds a token, last used, id): those without a token go first, then the oldest.
    let mut candidates: Vec<(bool, u64, ConnectionId)> = map
        .iter()
        .filter_map(|(id, conn)| {
            // A connection being refreshed (or locked right now) stays.
            let state = conn.state.try_lock().ok()?;
            if state.flight.is_some() {
                return None;
            }
            let holds_token = state.cached.as_ref().is_some_and(|c| !c.stale);
            Some((
                holds_token,
                conn.last_used.load(Ordering::Relaxed),
                id.clone(),
            ))
        })
        .collect();
    let excess = map.len().saturating_sub(goal);
    if excess == 0 {
        return;
    }
    if excess < candidates.len() {
        candidates.select_nth_unstable_by(excess, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    }
    for (_, _, id) in candidates.into_iter().take(excess) {
        map.remove(&id);
    }
}
