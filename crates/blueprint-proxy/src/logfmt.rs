//! The text log format, with the access line written without the `fmt` machinery.
//!
//! tracing-subscriber's `Full` format writes every field through `core::fmt` (`{:?}` of each
//! value, padding, a formatted timestamp): about 9,000 instructions per access line under
//! callgrind, close to a tenth of a proxied call. [`TextFormat`] writes the access lines
//! (target `blueprint_proxy::access`, outside any span) itself, byte for byte as `Full`
//! does — the timestamp's date and time of day are formatted once per second, numbers with
//! `itoa`, plain strings copied, the whole line put together in a buffer of the thread's and
//! written at once — and hands every other event to `Full`. A test holds the two to the same
//! bytes.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, time};
use tracing_subscriber::registry::LookupSpan;

/// The access log's target.
pub(crate) const ACCESS_TARGET: &str = "blueprint_proxy::access";

/// `Full`, with a fast path for access lines; see the module docs.
pub(crate) struct TextFormat {
    full: format::Format<format::Full, time::SystemTime>,
}

impl TextFormat {
    pub(crate) fn new() -> Self {
        TextFormat {
            full: format::Format::default(),
        }
    }
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if meta.target() != ACCESS_TARGET
            || writer.has_ansi_escapes()
            || ctx.lookup_current().is_some()
        {
            return self.full.format_event(ctx, writer, event);
        }
        // The line is put together in a buffer of this thread's with `String`'s own
        // pushes, then written to `writer` at once: each write to `writer` goes through a
        // `dyn fmt::Write`, and a line is some thirty pieces.
        let fast = LINE.try_with(|line| {
            // Only a field's `Debug` that logs could find the buffer taken: `Full` writes
            // that line.
            let mut line = line.try_borrow_mut().ok()?;
            line.clear();
            write_timestamp(&mut line, SystemTime::now());
            line.push_str(level_text(*meta.level()));
            line.push_str(ACCESS_TARGET);
            line.push_str(": ");
            event.record(&mut Fields {
                line: &mut line,
                first: true,
            });
            line.push('\n');
            let written = writer.write_str(&line);
            // A line with a long error message must not keep its size for every later line.
            if line.capacity() > MAX_KEPT_LINE {
                *line = String::with_capacity(MAX_KEPT_LINE);
            }
            Some(written)
        });
        match fast {
            Ok(Some(written)) => written,
            // The buffer is gone (the thread is ending) or taken.
            Ok(None) | Err(_) => self.full.format_event(ctx, writer, event),
        }
    }
}

/// The capacity of a thread's line buffer kept between lines.
const MAX_KEPT_LINE: usize = 4096;

thread_local! {
    /// The access line being written on this thread.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// The level as `Full` writes it: right-aligned in five columns, then a space.
fn level_text(level: Level) -> &'static str {
    match level {
        Level::TRACE => "TRACE ",
        Level::DEBUG => "DEBUG ",
        Level::INFO => " INFO ",
        Level::WARN => " WARN ",
        Level::ERROR => "ERROR ",
    }
}

thread_local! {
    /// The second last formatted on this thread, and its text (`2026-12-01T12:00:00`).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `2026-12-01T12:00:00.123456Z ` as `Full` writes it (UTC, microseconds), the date and
/// time of day formatted once per second per thread.
fn write_timestamp(line: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    // Writing to a `String` cannot fail.
    let format = |text: &mut String| {
        let at = chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap_or(0), 0)
            .unwrap_or_default();
        let _ = write!(text, "{}", at.format("%Y-%m-%dT%H:%M:%S"));
    };
    let cached = SECOND.try_with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            let (_, text) = &mut *second;
            text.clear();
            format(text);
            second.0 = secs;
        }
        line.push_str(&second.1);
    });
    if cached.is_err() {
        // The thread is ending: formatted for this line only.
        format(line);
    }
    let micros = since.subsec_micros();
    line.push('.');
    for unit in [100_000, 10_000, 1_000, 100, 10, 1] {
        line.push(char::from(b'0' + ((micros / unit) % 10) as u8));
    }
    line.push_str("Z ");
}

/// Writes fields as `Full`'s default field formatter does: the message as is, every other
/// field `name=value` with strings quoted as `{:?}` quotes them, separated by spaces.
struct Fields<'a> {
    line: &'a mut String,
    first: bool,
}

impl Fields<'_> {
    /// A space before every field but the first; the field's name and `=`.
    fn begin(&mut self, field: &Field) {
        if !std::mem::take(&mut self.first) {
            self.line.push(' ');
        }
        if field.name() != "message" {
            let name = field.name();
            self.line.push_str(name.strip_prefix("r#").unwrap_or(name));
            self.line.push('=');
        }
    }
}

/// Whether `{:?}` of `text` is `text` in quotes: no character it would escape.
fn quotes_plainly(text: &str) -> bool {
    text.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\' && b != b'\'')
}

// Writing to a `String` cannot fail: the results of `write!` below are ignored.
impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.begin(field);
        if field.name() == "message" {
            self.line.push_str(value);
        } else if quotes_plainly(value) {
            self.line.push('"');
            self.line.push_str(value);
            self.line.push('"');
        } else {
            let _ = write!(self.line, "{value:?}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.begin(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.begin(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.begin(field);
        let _ = write!(self.line, "{value:?}");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    /// Log lines, written by the subscriber under test (other modules' tests use it too).
    #[derive(Clone, Default)]
    pub(crate) struct Lines(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    fn events() {
        let method = http::Method::PATCH;
        tracing::info!(
            target: "blueprint_proxy::access",
            integration = "intercom",
            connection = "ac \"me\"\\ é\n",
            method = %method,
            path = "/contacts/1",
            status = 200u16,
            attempts = 1u32,
            duration_ms = 12u64,
            delta = -3i64,
            "proxied"
        );
        tracing::warn!(
            target: "blueprint_proxy::access",
            status = 502u16,
            error.code = "upstream_unreachable",
            error.message = "the provider could not be reached: connection refused",
            "proxied"
        );
        tracing::error!(target: "blueprint_proxy::access", r#type = "x", "it's {}", 1 + 1);
        tracing::info!(target: "blueprint_proxy::other", answer = 42, "not an access line");
    }

    /// What `events` writes through `format`, with each line's timestamp cut off.
    fn written(fast: bool) -> Vec<String> {
        let lines = Lines::default();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(lines.clone())
            .with_ansi(false);
        if fast {
            let subscriber =
                tracing_subscriber::registry().with(layer.event_format(TextFormat::new()));
            tracing::subscriber::with_default(subscriber, events);
        } else {
            tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), events);
        }
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let (time, rest) = line.split_once(' ').unwrap();
                // 2026-12-01T12:00:00.123456Z
                assert_eq!(time.len(), 27, "{line}");
                assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{line}");
                rest.to_owned()
            })
            .collect()
    }

    #[test]
    fn access_lines_are_written_as_the_full_format_writes_them() {
        let fast = written(true);
        let full = written(false);
        assert_eq!(fast.len(), 4, "{fast:#?}");
        assert_eq!(fast, full);
    }

    #[test]
    fn timestamps_are_rfc3339_in_utc_to_the_microsecond() {
        let mut text = String::new();
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_764_590_400_000_042);
        write_timestamp(&mut text, at);
        write_timestamp(&mut text, at + std::time::Duration::from_secs(61));
        assert_eq!(
            text,
            "2025-12-01T12:00:00.000042Z 2025-12-01T12:01:01.000042Z "
        );
    }
}
