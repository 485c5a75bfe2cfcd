//! Serving, hardened against slow and numerous clients, with a graceful shutdown: serve on
//! for a drain delay if one is set, then stop accepting and let calls in flight finish
//! within a grace period. The binary also stops at once on a second SIGINT or SIGTERM
//! during the delay or that period ([`stop_signals`]).
//!
//! Each connection is served by hyper's HTTP/1 connection with a header-read timeout;
//! the proxy adds a keep-alive idle timeout and a cap on concurrent connections. The
//! caller's request body has its own idle timeout
//! ([`ProxyBuilder::request_body_timeout`](crate::ProxyBuilder::request_body_timeout)).
//! When the process runs out of file descriptors, the accept loop closes the connections
//! waiting to be accepted, keeps serving the open ones, backs off briefly and logs once per
//! burst.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::{Service, ServiceExt as _};

/// The default header-read timeout: 10 seconds.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default keep-alive idle timeout: 5 seconds.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// The default cap on concurrent connections: 512, well under the common limit of 1,024
/// file descriptors, since each proxied call also holds one towards the provider.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// The longest header-read timeout [`Limits::header_read_timeout`] takes: one day. hyper
/// adds the timeout to the clock unchecked, so a longer one (`Duration::MAX`) would panic.
const MAX_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The longest drain delay [`Limits::drain_delay`] takes: one day.
const MAX_DRAIN_DELAY: Duration = Duration::from_secs(86_400);

/// How long the accept loop waits after running out of file descriptors (or another
/// error that is not one connection's), before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a server accepts from its clients.
///
/// ```
/// use std::time::Duration;
/// use blueprint_proxy::Limits;
///
/// let limits = Limits::default()
///     .header_read_timeout(Duration::from_secs(5))
///     .max_connections(256)
///     .drain_delay(Duration::from_secs(12));
/// assert_eq!(limits.get_max_connections(), 256);
/// assert_eq!(limits.get_drain_delay(), Duration::from_secs(12));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    header_read: Duration,
    keep_alive: Duration,
    max_connections: usize,
    drain_delay: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive: DEFAULT_KEEP_ALIVE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            drain_delay: Duration::ZERO,
        }
    }
}

impl Limits {
    /// How long a client has to send a whole request head, counted from when the
    /// connection opens or the previous answer ends; then the connection is closed.
    /// (hyper counts the wait for the next request on a kept-alive connection here too, so
    /// an idle connection lives at most the smaller of this and the keep-alive timeout.)
    /// At most one day: a longer timeout is taken as one day.
    #[must_use]
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read = timeout.min(MAX_HEADER_READ_TIMEOUT);
        self
    }

    /// How long a connection may stay open with no call in flight; then it is closed. One
    /// too long to add to the clock (`Duration::MAX`) means never.
    #[must_use]
    pub fn keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.keep_alive = timeout;
        self
    }

    /// The most connections served at once (at least 1); beyond it, new connections are
    /// closed at once, unanswered.
    #[must_use]
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        self
    }

    /// The cap on concurrent connections.
    pub fn get_max_connections(&self) -> usize {
        self.max_connections
    }

    /// How long the server goes on accepting connections and serving calls once its
    /// `shutdown` future has completed, before it stops accepting and the grace period
    /// starts (default 0: it stops accepting at once). A program that calls
    /// [`Proxy::begin_shutdown`](crate::Proxy::begin_shutdown) in that future has
    /// `GET /readyz` answer 503 for this long while everything else is served as usual, so
    /// that a load balancer probing it stops sending calls before the listening socket
    /// closes. At most one day: a longer delay is taken as one day.
    #[must_use]
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay.min(MAX_DRAIN_DELAY);
        self
    }

    /// The drain delay.
    pub fn get_drain_delay(&self) -> Duration {
        self.drain_delay
    }
}

/// Serves `router` on `listener` with the default [`Limits`] until `shutdown` completes;
/// see [`serve_with`].
///
/// # Errors
///
/// The listener's I/O error.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    serve_with(listener, router, shutdown, grace, Limits::default()).await
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes, and then for
/// the drain delay ([`Limits::drain_delay`], none by default); then closes the listening
/// socket (new connections are refused), closes idle connections, and waits up to `grace`
/// for the calls in flight (their response bodies included) to finish. Calls still running
/// after that are cut off.
///
/// # Errors
///
/// The listener's address cannot be read. Accept errors are logged and waited out, never
/// returned: running out of file descriptors must not stop the server.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    limits: Limits,
) -> io::Result<()> {
    let never = std::future::pending();
    serve_service(listener, router, shutdown, never, grace, limits).await?;
    Ok(())
}

/// How the calls in flight at shutdown ended: what [`serve_service`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Every one finished within the grace period.
    Finished,
    /// The grace period ran out: those still running are cut off.
    GraceOver,
    /// `stop_now` completed first (a second signal), during the drain delay or the grace
    /// period: the `cut_off` calls still running are cut off (0: none was).
    StoppedAtOnce {
        /// Calls in flight when it stopped.
        cut_off: usize,
    },
}

/// [`serve_with`] for any service that answers as a router does: the binary serves the
/// proxy's [`Front`](crate::edge::Front). When `stop_now` completes during the drain delay
/// or the grace period (the binary's second signal), it stops at once; it says how the
/// calls in flight ended.
pub(crate) async fn serve_service<S>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
    stop_now: impl Future<Output = ()> + Send,
    grace: Duration,
    limits: Limits,
) -> io::Result<Drained>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    listener.local_addr()?;
    let max = limits.max_connections;
    let permits = Arc::new(Semaphore::new(max));
    let calls = Arc::new(AtomicUsize::new(0));
    let (stop, stopping) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .keep_alive(true);
    let mut accept = AcceptLoop::new(max);
    tokio::pin!(shutdown);
    tokio::pin!(stop_now);
    // Armed when `shutdown` completes, if there is a drain delay: until it fires, the
    // server accepts and serves as before.
    let drain = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(drain);
    let mut draining = false;
    let mut stopped_at_once = false;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown, if !draining => {
                if limits.drain_delay.is_zero() {
                    break;
                }
                tracing::info!(
                    drain_delay_secs = limits.drain_delay.as_secs(),
                    "draining: still accepting connections and serving calls for the drain \
                     delay (--drain-delay), then stopping"
                );
                drain.as_mut().reset(Instant::now() + limits.drain_delay);
                draining = true;
                continue;
            }
            () = &mut drain, if draining => break,
            () = &mut stop_now, if draining => {
                tracing::warn!("signalled again during the drain delay");
                stopped_at_once = true;
                break;
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    accept.refuse_over_capacity();
                    drop(stream);
                    continue;
                };
                accept.accepted();
                tokio::spawn(connection(
                    stream,
                    service.clone(),
                    http.clone(),
                    Served {
                        keep_alive: limits.keep_alive,
                        stopping: stopping.clone(),
                        calls: Arc::clone(&calls),
                    },
                    permit,
                ));
            }
            Err(error) if is_connection_error(&error) => {}
            Err(error) if is_out_of_descriptors(&error) => {
                accept.out_of_descriptors(&listener, &error).await;
            }
            Err(error) => {
                tracing::error!(%error, "accepting a connection failed; trying again shortly");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    // Close the listening socket first, then wind the connections down.
    drop(listener);
    let _ = stop.send(true);
    let stop_at_once = || {
        let cut_off = calls.load(Ordering::Acquire);
        let open_connections = max.saturating_sub(permits.available_permits());
        if cut_off > 0 {
            tracing::warn!(
                calls_in_flight = cut_off,
                open_connections,
                "signalled again: stopping at once, cutting off the calls still in flight"
            );
        } else {
            tracing::info!(
                open_connections,
                "signalled again: stopping at once; no call was in flight"
            );
        }
        Drained::StoppedAtOnce { cut_off }
    };
    if stopped_at_once {
        return Ok(stop_at_once());
    }
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: stopped accepting connections; waiting for calls in flight"
    );
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let drained = tokio::select! {
        biased;
        finished = tokio::time::timeout(grace, permits.acquire_many(all)) => {
            if finished.is_ok() {
                tracing::info!("all calls finished");
                Drained::Finished
            } else {
                tracing::warn!(
                    grace_secs = grace.as_secs(),
                    "grace period over: cutting off the calls still in flight"
                );
                Drained::GraceOver
            }
        }
        () = &mut stop_now => stop_at_once(),
    };
    Ok(drained)
}

/// Errors of one connection that came and went before it was accepted.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// `EMFILE` (this process) or `ENFILE` (the system): out of file descriptors.
fn is_out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(23 | 24))
}

/// The accept loop's state: a spare file descriptor to refuse connections with when none
/// is left, and the bursts of refusals, logged once each.
struct AcceptLoop {
    max: usize,
    /// Held open so that, out of descriptors, one can be freed to accept and close the
    /// connections waiting, rather than leave them hanging in the backlog.
    spare: Option<std::fs::File>,
    /// Connections refused in the current burst of "full", and of "out of descriptors".
    over_capacity: u64,
    no_descriptors: u64,
}

fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open(if cfg!(windows) { "NUL" } else { "/dev/null" }).ok()
}

impl AcceptLoop {
    fn new(max: usize) -> Self {
        AcceptLoop {
            max,
            spare: open_spare(),
            over_capacity: 0,
            no_descriptors: 0,
        }
    }

    fn refuse_over_capacity(&mut self) {
        if self.over_capacity == 0 {
            tracing::warn!(
                max_connections = self.max,
                "at the connection limit (--max-connections): closing new connections at once"
            );
        }
        self.over_capacity += 1;
    }

    /// A connection was accepted and will be served: any burst of refusals is over.
    fn accepted(&mut self) {
        if self.over_capacity > 0 {
            tracing::info!(
                refused = self.over_capacity,
                "below the connection limit again: serving new connections"
            );
            self.over_capacity = 0;
        }
        self.end_descriptor_burst();
    }

    fn end_descriptor_burst(&mut self) {
        if self.no_descriptors > 0 {
            tracing::info!(
                refused = self.no_descriptors,
                "file descriptors available again: serving new connections"
            );
            self.no_descriptors = 0;
        }
        if self.spare.is_none() {
            self.spare = open_spare();
        }
    }

    /// Out of file descriptors: refuse the connection waiting (with the spare descriptor),
    /// and wait a little before accepting again. Connections already open are served on.
    async fn out_of_descriptors(&mut self, listener: &TcpListener, error: &io::Error) {
        if self.no_descriptors == 0 {
            tracing::warn!(
                %error,
                "out of file descriptors: closing new connections at once while the open ones \
                 are served; raise the limit (ulimit -n) or lower --max-connections"
            );
        }
        self.no_descriptors += 1;
        // Free the spare descriptor to accept the connection waiting and close it: each
        // turn of the loop then refuses one waiting connection, and never spins.
        if let Some(spare) = self.spare.take() {
            drop(spare);
            let accepted = tokio::time::timeout(Duration::from_millis(10), listener.accept()).await;
            let refused = if let Ok(Ok((stream, _))) = accepted {
                refuse(stream);
                true
            } else {
                false
            };
            self.spare = open_spare();
            if refused && self.spare.is_some() {
                return;
            }
        }
        // No spare to refuse with: wait for descriptors to come free.
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

/// Closes an accepted connection at once, unanswered.
fn refuse(stream: TcpStream) {
    drop(stream);
}

/// What each connection shares with the server.
struct Served {
    /// How long the connection may stay open with no call in flight.
    keep_alive: Duration,
    /// Becomes `true` when the server stops accepting.
    stopping: watch::Receiver<bool>,
    /// Calls in flight on all the server's connections.
    calls: Arc<AtomicUsize>,
}

/// Serves one connection until it closes, is idle for `keep_alive`, or the server stops.
async fn connection<S>(
    stream: TcpStream,
    router: S,
    http: hyper::server::conn::http1::Builder,
    served: Served,
    permit: OwnedSemaphorePermit,
) where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let _permit = permit;
    let Served {
        keep_alive,
        mut stopping,
        calls: server_calls,
    } = served;
    let activity = Arc::new(Activity::new(server_calls));
    let calls = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
        let call = Call::begin(&calls);
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(Body::new)).await;
            Ok::<_, Infallible>(match response {
                // Served as it is: boxing it into another `Body` would cost an allocation
                // and an indirection per frame.
                Ok(response) => response.map(|body| Tracked { body, _call: call }),
                Err(never) => match never {},
            })
        }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection closed with an error");
                }
                return;
            }
            _ = stopping.wait_for(|stop| *stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = idle_for(&activity, keep_alive), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Calls in flight on a connection, and since when it has had none: two atomics, so that a
/// call costs two additions and a clock read, and wakes nothing. The idle timer reads them
/// when it fires, and sleeps again while the connection is busy or was used since. Each
/// call is also counted in the server's `calls`, which a stop at once reads.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// When the last call ended, in nanoseconds since `base`.
    last: AtomicU64,
    base: Instant,
    /// Calls in flight on all the server's connections.
    server: Arc<AtomicUsize>,
}

impl Activity {
    fn new(server: Arc<AtomicUsize>) -> Self {
        Activity {
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            base: Instant::now(),
            server,
        }
    }

    /// When the last call ended (or the connection opened).
    fn since(&self) -> Instant {
        let nanos = self.last.load(Ordering::Acquire);
        let since = self.base.checked_add(Duration::from_nanos(nanos));
        since.unwrap_or(self.base)
    }
}

/// Completes once the connection has had no call in flight for `timeout`; never, for a
/// timeout too long to add to the clock.
async fn idle_for(activity: &Activity, timeout: Duration) {
    let Some(mut wake) = activity.since().checked_add(timeout) else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep_until(wake).await;
        let now = Instant::now();
        if activity.in_flight.load(Ordering::Acquire) > 0 {
            // Busy: look again a whole timeout later (a call ending meanwhile only moves
            // the idle deadline later than that).
            wake = now.checked_add(timeout).unwrap_or(wake);
            continue;
        }
        match activity.since().checked_add(timeout) {
            Some(deadline) if deadline > now => wake = deadline,
            Some(_) => return,
            None => return std::future::pending().await,
        }
    }
}

/// One call in flight, from its request head to the end of its answer's body.
struct Call(Arc<Activity>);

impl Call {
    fn begin(activity: &Arc<Activity>) -> Call {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.server.fetch_add(1, Ordering::AcqRel);
        Call(Arc::clone(activity))
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        let activity = &self.0;
        let ended = Instant::now().saturating_duration_since(activity.base);
        let nanos = u64::try_from(ended.as_nanos()).unwrap_or(u64::MAX);
        // Written before the count drops, so that a timer that sees no call in flight sees
        // when the last one ended.
        activity.last.fetch_max(nanos, Ordering::AcqRel);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        activity.server.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// An answer's body that keeps its call counted as in flight until it is sent or dropped.
    struct Tracked {
        #[pin]
        body: Body,
        _call: Call,
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// SIGINT and SIGTERM (Ctrl-C where there are no signals), counted from when
/// [`stop_signals`] was called: the binary's first signal starts a graceful shutdown, the
/// second stops it at once.
pub(crate) struct StopSignals {
    received: watch::Receiver<u32>,
}

impl StopSignals {
    /// Completes on the first signal.
    pub(crate) fn first(&self) -> impl Future<Output = ()> + Send + 'static {
        self.nth(1)
    }

    /// Completes on the second signal.
    pub(crate) fn second(&self) -> impl Future<Output = ()> + Send + 'static {
        self.nth(2)
    }

    fn nth(&self, n: u32) -> impl Future<Output = ()> + Send + 'static {
        let mut received = self.received.clone();
        async move {
            if received.wait_for(|count| *count >= n).await.is_err() {
                // No signal can come any more (none could be listened for): never.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Listens for SIGINT and SIGTERM from now on (so that a signal right after is not met by
/// the default action), logging each one; must be called inside a tokio runtime.
pub(crate) fn stop_signals() -> StopSignals {
    let (count, received) = watch::channel(0u32);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::error!(%error, "cannot listen for {name}");
                None
            }
        };
        /// The next `slot` receives; never, without one.
        async fn next(slot: &mut Option<Signal>) {
            if let Some(signal) = slot {
                if signal.recv().await.is_some() {
                    return;
                }
                // The runtime is shutting down: nothing more can come.
                *slot = None;
            }
            std::future::pending::<()>().await;
        }
        let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
        let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    () = next(&mut interrupt) => "SIGINT",
                    () = next(&mut terminate) => "SIGTERM",
                };
                tracing::info!("{name} received");
                count.send_modify(|n| *n += 1);
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        loop {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                return;
            }
            tracing::info!("Ctrl-C received");
            count.send_modify(|n| *n += 1);
        }
    });
    StopSignals { received }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM. (The binary listens with more: a second
/// signal during the drain delay or the grace period stops it at once.)
///
/// Called inside a tokio runtime, it starts listening for the signals at once, before the
/// future is first polled: a signal that comes as soon as the server says it listens (a
/// supervisor stopping it right away) shuts it down gracefully instead of killing it with
/// the default action. Called outside a runtime, it starts listening when first polled.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let in_runtime = tokio::runtime::Handle::try_current().is_ok();
        let listen = |kind: SignalKind| in_runtime.then(|| signal(kind));
        let (terminate, interrupt) = (
            listen(SignalKind::terminate()),
            listen(SignalKind::interrupt()),
        );
        async move {
            let terminate = terminate.unwrap_or_else(|| signal(SignalKind::terminate()));
            let interrupt = interrupt.unwrap_or_else(|| signal(SignalKind::interrupt()));
            let wait = |signal: std::io::Result<tokio::signal::unix::Signal>,
                        name: &'static str| async move {
                match signal {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot listen for {name}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = wait(interrupt, "SIGINT") => tracing::info!("SIGINT received"),
                () = wait(terminate, "SIGTERM") => tracing::info!("SIGTERM received"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            tracing::info!("Ctrl-C received");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_a_timeout_after_its_last_call_ends() {
        let timeout = Duration::from_secs(5);
        let activity = Arc::new(Activity::new(Arc::default()));
        let opened = Instant::now();
        // Nothing ever sent: idle a timeout after opening.
        idle_for(&activity, timeout).await;
        assert_eq!(opened.elapsed(), timeout);

        // A call in flight for 12 s keeps it open; it is idle 5 s after the call ends.
        let call = Call::begin(&activity);
        let idle = tokio::spawn({
            let activity = Arc::clone(&activity);
            async move { idle_for(&activity, timeout).await }
        });
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert!(!idle.is_finished(), "idle with a call in flight");
        let ended = Instant::now();
        drop(call);
        idle.await.unwrap();
        assert_eq!(ended.elapsed(), timeout);
    }

    /// hyper adds the header-read timeout to the clock unchecked: without the bound, the
    /// connection's task panics and the client gets no answer.
    #[tokio::test]
    async fn a_header_read_timeout_too_long_for_the_clock_is_taken_as_a_day() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let limits = Limits::default().header_read_timeout(Duration::MAX);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "served" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let server = tokio::spawn(serve_with(
            listener,
            router,
            shutdown,
            Duration::from_secs(5),
            limits,
        ));
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("served"),
            "{answer:?}"
        );
        assert_eq!(limits.header_read, MAX_HEADER_READ_TIMEOUT);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_too_long_for_the_clock_never_ends_the_connection() {
        let activity = Arc::new(Activity::new(Arc::default()));
        let idle = idle_for(&activity, Duration::MAX);
        let waited = tokio::time::timeout(Duration::from_secs(3600), idle).await;
        assert!(waited.is_err(), "still open after an hour");
    }
}
