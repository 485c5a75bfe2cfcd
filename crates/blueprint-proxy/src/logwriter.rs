//! Log lines written to stderr in batches, by a thread of their own.
//!
//! A call formats its line and appends it to a shared buffer (one uncontended lock, one
//! copy); a writer thread wakes every [`FLUSH_EVERY`], or as soon as [`EARLY_FLUSH`] bytes
//! are waiting, and writes all of them with one `write`. `tracing-appender`'s non-blocking
//! writer, used before, sends each line through a channel whose reader spins and yields
//! before it sleeps, and writes each line on its own: under `benches/proxy.sh`, `strace -c`
//! counted one `write` and 0.4 `sched_yield` per proxied call, against one `write` per
//! batch here. Lines are never written from a call, so a slow terminal or pipe never
//! slows calls down; past [`MAX_PENDING`] bytes waiting, lines are dropped (and counted in
//! a line that says so) rather than memory grown.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait for its batch.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Waiting bytes that make the writer write at once.
pub(crate) const EARLY_FLUSH: usize = 64 * 1024;
/// Waiting bytes past which new lines are dropped.
pub(crate) const MAX_PENDING: usize = 16 * 1024 * 1024;

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock cannot leave the buffer inconsistent: it is only
        // appended to and swapped.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The [`MakeWriter`] of the log layer: appends each line to the batch.
#[derive(Clone)]
pub(crate) struct BatchWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it has written every waiting line.
pub(crate) struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer of batches to `out` on a thread of its own, and the guard that flushes it.
pub(crate) fn batched<W: Write + Send + 'static>(out: W) -> io::Result<(BatchWriter, FlushGuard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
    });
    let worker = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("blueprint-log".into())
        .spawn(move || write_batches(&worker, out))?;
    Ok((
        BatchWriter {
            shared: Arc::clone(&shared),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_batches<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let closed = {
            let mut pending = shared.lock();
            if pending.bytes.len() < EARLY_FLUSH && !pending.closed {
                pending = shared
                    .wake
                    .wait_timeout(pending, FLUSH_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut pending.bytes, &mut batch);
            pending.closed
        };
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                batch,
                "WARN blueprint_proxy: {dropped} log lines were dropped: the log's reader fell \
                 more than {} MiB behind",
                MAX_PENDING / (1024 * 1024)
            );
        }
        if !batch.is_empty() {
            // Nowhere to report a failing stderr; the lines are lost, calls go on.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            // A burst may have grown the buffer: give back what one batch rarely needs.
            batch.shrink_to(EARLY_FLUSH * 2);
        }
        if closed {
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One line's writer (tracing writes each formatted line with one `write_all`).
pub(crate) struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut pending = self.shared.lock();
        if pending.closed || pending.bytes.len() + line.len() > MAX_PENDING {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        pending.bytes.extend_from_slice(line);
        let early = pending.bytes.len() >= EARLY_FLUSH;
        drop(pending);
        if early {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` that keeps what it is given, and counts the writes.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Kept {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut kept = self.0.lock().unwrap();
            kept.0.extend_from_slice(buf);
            kept.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_in_batches_and_flushed_on_drop() {
        let kept = Kept::default();
        let (writer, guard) = batched(kept.clone()).unwrap();
        let mut expected = Vec::new();
        for i in 0..1000 {
            let line = format!("line {i}\n");
            writer.make_writer().write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        drop(guard);
        let kept = kept.0.lock().unwrap();
        assert_eq!(kept.0, expected);
        assert!(kept.1 < 100, "{} writes for 1000 lines", kept.1);
    }

    #[test]
    fn past_the_cap_lines_are_dropped_and_counted() {
        let shared = Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
        };
        shared.lock().bytes.resize(MAX_PENDING - 10, b'.');
        let mut line = LineWriter { shared: &shared };
        line.write_all(b"fits\n").unwrap();
        line.write_all(b"xxxxxxxxxxxxxxxxxxxx\n").unwrap();
        assert_eq!(shared.dropped.load(Ordering::Relaxed), 1);
        shared.lock().closed = true;
        let kept = Kept::default();
        write_batches(&shared, kept.clone());
        let kept = kept.0.lock().unwrap();
        let text = String::from_utf8_lossy(&kept.0);
        assert!(text.contains("fits\n"));
        assert!(!text.contains("xxxx"), "the line past the cap was written");
        assert!(
            text.ends_with(
                "1 log lines were dropped: the log's reader fell more than 16 MiB behind\n"
            ),
            "{}",
            &text[text.len() - 200..]
        );
        assert!(shared.lock().bytes.is_empty());
    }
}
