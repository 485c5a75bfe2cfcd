//! Serving with a graceful shutdown: stop accepting, let calls in flight finish within a
//! grace period.

use std::future::{Future, IntoFuture};
use std::io;
use std::time::Duration;

use std::net::SocketAddr;

use axum::Router;
use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting
/// connections, closes idle ones, and waits up to `grace` for the calls in flight (their
/// response bodies included) to finish. Calls still running after that are cut off.
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
    let addr = listener.local_addr()?;
    let (stop, stopping) = watch::channel(false);
    let (closed, listener_closed) = oneshot::channel::<()>();
    let (began, shutting_down) = oneshot::channel::<()>();
    let listener = Closing {
        inner: Some(listener),
        addr,
        stop: stopping,
        closed: Some(closed),
    };
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Close the listening socket first, then let axum wind the connections down.
            let _ = stop.send(true);
            let _ = listener_closed.await;
            let _ = began.send(());
        })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        Ok(()) = shutting_down => {}
    }
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: stopped accepting connections; waiting for calls in flight"
    );
    if let Ok(result) = tokio::time::timeout(grace, server).await {
        tracing::info!("all calls finished");
        result
    } else {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "grace period over: cutting off the calls still in flight"
        );
        Ok(())
    }
}

/// A listener that closes its socket as soon as shutdown begins, so that new connections
/// are refused while the calls in flight finish.
struct Closing {
    inner: Option<TcpListener>,
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
    closed: Option<oneshot::Sender<()>>,
}

impl Listener for Closing {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        if let Some(listener) = self.inner.as_mut() {
            tokio::select! {
                // axum's accept retries (and logs) accept errors.
                accepted = Listener::accept(listener) => return accepted,
                _ = self.stop.wait_for(|stop| *stop) => {}
            }
            self.inner = None;
            if let Some(closed) = self.closed.take() {
                let _ = closed.send(());
            }
        }
        std::future::pending().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
