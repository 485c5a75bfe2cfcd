//! Request bodies that can be sent more than once.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};

use crate::BoxError;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// The body size up to which a [`ReplayBody`] keeps a copy by default: 64 KiB.
pub const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

/// A request body that records what it sends, so that the request can be sent again.
///
/// [`ReplayBody::new`] wraps a body: as the first attempt streams it, its frames are kept
/// (reference-counted, not copied) up to a cap (default [`DEFAULT_REPLAY_CAP`]). Once the
/// whole body has been sent within the cap, [`ReplayBody::replay`] (or the
/// [`Replay`] handle from [`ReplayBody::replayer`]) gives as many byte-identical copies as
/// needed, trailers included. A body that passes the cap, or that was not sent to its end,
/// cannot be replayed: the request is sent once and not retried. Nothing is read ahead: a
/// streamed upload starts at once, as it would without this wrapper.
///
/// Costs: an empty body (a `GET`) and a body already in memory (`Full<Bytes>`, a
/// `String`) allocate nothing and are held as their bytes, so that a `ReplayBody` is 32
/// bytes whatever it wraps; a streamed body allocates its state and one small shared
/// record.
///
/// The retry layer wraps a body once; a layer below it that needs to send the request
/// again uses the retry layer's copy (the token-refresh layer asks the retry layer to
/// replay), so a request body is never kept twice.
///
/// ```
/// use blueprint_core::ReplayBody;
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), blueprint_core::BoxError> {
/// let body = ReplayBody::new(Full::new(Bytes::from("{\"a\":1}")), 1024);
/// let keeper = body.replayer().expect("small bodies are kept");
/// assert_eq!(body.collect().await?.to_bytes(), "{\"a\":1}");
/// let again: ReplayBody<Full<Bytes>> = keeper.replay().expect("sent to its end");
/// assert_eq!(again.collect().await?.to_bytes(), "{\"a\":1}");
/// # Ok(())
/// # }
/// ```
pub struct ReplayBody<B> {
    repr: Repr<B>,
}

/// A body in memory with no trailers is the common case (every `GET`, every JSON body):
/// it is held as its bytes, so that a `ReplayBody` is as small as a `Bytes` (32 bytes)
/// whatever `B` is, and a request moved through the stack and the client is no larger than
/// one with a `Full<Bytes>` body. Everything else is boxed.
enum Repr<B> {
    /// What is left to send (empty: all of it was sent, or there was nothing).
    Data(Bytes),
    Other(Pin<Box<State<B>>>),
}

pin_project! {
    #[project = StateProj]
    enum State<B> {
        // In memory from the start, or a replay: can be copied at any time.
        // Trailers are rare: boxed, so that the body (moved with every request) stays small.
        Kept { data: Option<Bytes>, trailers: Option<Box<HeaderMap>> },
        // The first send of a streamed body, recording as it goes.
        Recording {
            #[pin]
            body: B,
            tape: Recorder,
            // A frame read ahead by `new` (to find out whether the body is in memory) and
            // not yet sent.
            first: Option<Bytes>,
        },
        // Sent once, not kept.
        Once { #[pin] body: B },
        // `new` read an error ahead; it is given on the first poll.
        Failed { error: Option<BoxError> },
    }
}

/// What a recording body has kept so far.
#[derive(Debug)]
struct Tape {
    state: Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    // The body's first chunk, kept by reference; once a second one comes, the body so far
    // is copied into `joined` and the rest follows it there. A streamed body's chunks are
    // often slices of a larger buffer (hyper's read buffer, several KiB): kept by
    // reference, each chunk would hold its whole buffer, and a body sent a byte at a time
    // would hold thousands of them within a cap that counts bytes. Copied, the tape holds
    // at most its first chunk's buffer and the bytes it counts.
    first: Bytes,
    joined: BytesMut,
    len: usize,
    trailers: Option<HeaderMap>,
    cap: usize,
    progress: Progress,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Progress {
    #[default]
    Sending,
    Complete,
    // Passed the cap, failed, or was dropped before its end: not replayable.
    Lost,
}

/// The recording body's hold on its tape: a recording dropped before its end cannot be
/// replayed (what was not sent is gone with it).
#[derive(Debug)]
struct Recorder(Arc<Tape>);

impl Drop for Recorder {
    fn drop(&mut self) {
        let mut recorded = self.0.lock();
        if recorded.progress == Progress::Sending {
            recorded.lose();
        }
    }
}

impl std::ops::Deref for Recorder {
    type Target = Tape;
    fn deref(&self) -> &Tape {
        &self.0
    }
}

impl Tape {
    fn new(cap: usize) -> Arc<Self> {
        Arc::new(Tape {
            state: Mutex::new(Recorded {
                cap,
                ..Recorded::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Recorded {
    fn push(&mut self, data: &Bytes) {
        if self.progress != Progress::Sending {
            return;
        }
        match self.len.checked_add(data.len()) {
            Some(len) if len <= self.cap => {
                self.len = len;
                self.keep(data);
            }
            _ => self.lose(),
        }
    }

    fn keep(&mut self, data: &Bytes) {
        if data.is_empty() {
            return;
        }
        if self.first.is_empty() && self.joined.is_empty() {
            self.first = data.clone();
            return;
        }
        if self.joined.is_empty() {
            let first = std::mem::take(&mut self.first);
            self.joined.reserve(self.len);
            self.joined.extend_from_slice(&first);
        }
        self.joined.extend_from_slice(data);
    }

    /// The body was sent to its end: replayable, unless it was lost on the way.
    fn complete(&mut self) {
        if self.progress != Progress::Sending {
            return;
        }
        self.progress = Progress::Complete;
        if !self.joined.is_empty() {
            self.first = std::mem::take(&mut self.joined).freeze();
        }
    }

    fn lose(&mut self) {
        self.progress = Progress::Lost;
        self.first = Bytes::new();
        self.joined = BytesMut::new();
        self.trailers = None;
    }
}

impl<B> ReplayBody<B> {
    /// A body kept in memory, which can be replayed at any time.
    pub fn from_bytes(data: Bytes) -> Self {
        Self::kept(data, None)
    }

    fn kept(data: Bytes, trailers: Option<Box<HeaderMap>>) -> Self {
        match trailers {
            None => ReplayBody {
                repr: Repr::Data(data),
            },
            Some(trailers) => Self::other(State::Kept {
                data: (!data.is_empty()).then_some(data),
                trailers: Some(trailers),
            }),
        }
    }

    fn other(state: State<B>) -> Self {
        ReplayBody {
            repr: Repr::Other(Box::pin(state)),
        }
    }

    /// A body that is sent once and never kept.
    pub fn once(body: B) -> Self {
        Self::other(State::Once { body })
    }

    /// A handle that makes copies of this body once it has been sent to its end (at once,
    /// for a body in memory); `None` when the body will not be kept (sent once).
    pub fn replayer(&self) -> Option<Replay> {
        let state = match &self.repr {
            Repr::Data(data) => {
                return Some(Replay(Source::Kept {
                    data: (!data.is_empty()).then(|| data.clone()),
                    trailers: None,
                }));
            }
            Repr::Other(state) => state,
        };
        match &**state {
            State::Kept { data, trailers } => Some(Replay(Source::Kept {
                data: data.clone(),
                trailers: trailers.clone(),
            })),
            State::Recording { tape, .. } => Some(Replay(Source::Tape(Arc::clone(&tape.0)))),
            State::Once { .. } | State::Failed { .. } => None,
        }
    }

    /// A copy that sends the same bytes, or `None` when this body is not kept or has not
    /// been sent to its end yet. Cloning the copy of a body already partly sent still gives
    /// the whole body.
    pub fn replay(&self) -> Option<Self> {
        self.replayer()?.replay()
    }

    /// Whether the body is kept (or being recorded) so that it may be replayed.
    pub fn is_replayable(&self) -> bool {
        let Repr::Other(state) = &self.repr else {
            return true;
        };
        match &**state {
            State::Kept { .. } => true,
            State::Recording { tape, .. } => tape.lock().progress != Progress::Lost,
            State::Once { .. } | State::Failed { .. } => false,
        }
    }
}

impl<B> ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    /// Wraps `body`, keeping up to `cap` bytes of it as it is sent.
    ///
    /// A body that is empty or already in memory (one frame, ready at once) is kept as it
    /// is, with no allocation; a body whose size hint says it is larger than `cap` is sent
    /// once; anything else is recorded while the first attempt streams it.
    pub fn new(mut body: B, cap: usize) -> Self {
        if body.is_end_stream() {
            return Self::kept(Bytes::new(), None);
        }
        let hint = body.size_hint();
        if hint.lower() > cap as u64 {
            return Self::once(body);
        }
        // A body in memory answers at once: read it now and keep it without a record. A
        // streamed one is left for the first attempt (the waker used here is never woken;
        // the next poll, from the sender, registers the real one).
        let mut first = None;
        if hint.upper().is_some_and(|upper| upper <= cap as u64) {
            let mut cx = Context::from_waker(Waker::noop());
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(None) => return Self::kept(Bytes::new(), None),
                Poll::Ready(Some(Err(error))) => {
                    return Self::other(State::Failed {
                        error: Some(error.into()),
                    });
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        let data = data.copy_to_bytes(data.remaining());
                        if body.is_end_stream() {
                            return Self::kept(data, None);
                        }
                        first = Some(data);
                    }
                    Err(frame) => {
                        // Trailers and nothing else: kept as they are.
                        if let Ok(trailers) = frame.into_trailers() {
                            return Self::kept(Bytes::new(), Some(Box::new(trailers)));
                        }
                    }
                },
                Poll::Pending => {}
            }
        }
        let tape = Tape::new(cap);
        if let Some(first) = &first {
            tape.lock().push(first);
        }
        Self::other(State::Recording {
            body,
            tape: Recorder(tape),
            first,
        })
    }
}

/// Makes copies of a [`ReplayBody`] once it has been sent to its end; from
/// [`ReplayBody::replayer`]. Cheap to clone.
#[derive(Clone)]
pub struct Replay(Source);

#[derive(Clone)]
enum Source {
    Kept {
        data: Option<Bytes>,
        trailers: Option<Box<HeaderMap>>,
    },
    Tape(Arc<Tape>),
}

impl Replay {
    /// A copy of the body, or `None` when it was not sent to its end within the cap (or is
    /// still being sent).
    pub fn replay<B>(&self) -> Option<ReplayBody<B>> {
        match &self.0 {
            Source::Kept { data, trailers } => Some(ReplayBody::kept(
                data.clone().unwrap_or_default(),
                trailers.clone(),
            )),
            Source::Tape(tape) => {
                let recorded = tape.lock();
                if recorded.progress != Progress::Complete {
                    return None;
                }
                Some(ReplayBody::kept(
                    recorded.first.clone(),
                    recorded.trailers.clone().map(Box::new),
                ))
            }
        }
    }

    /// Whether a copy can be had now.
    pub fn is_ready(&self) -> bool {
        match &self.0 {
            Source::Kept { .. } => true,
            Source::Tape(tape) => tape.lock().progress == Progress::Complete,
        }
    }
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::Kept { data, .. } => f
                .debug_struct("Replay")
                .field("kept_bytes", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Source::Tape(tape) => {
                let recorded = tape.lock();
                f.debug_struct("Replay")
                    .field("recorded_bytes", &recorded.len)
                    .field("progress", &recorded.progress)
                    .finish()
            }
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ReplayBody");
        let state = match &self.repr {
            Repr::Data(data) => return s.field("kept_bytes", &data.len()).finish(),
            Repr::Other(state) => state,
        };
        match &**state {
            State::Kept { data, .. } => {
                s.field("kept_bytes", &data.as_ref().map_or(0, Bytes::len));
            }
            State::Recording { tape, .. } => {
                s.field("recorded_bytes", &tape.lock().len);
            }
            State::Once { .. } => {
                s.field("once", &true);
            }
            State::Failed { .. } => {
                s.field("failed", &true);
            }
        }
        s.finish()
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match &mut self.get_mut().repr {
            Repr::Data(data) if data.is_empty() => Poll::Ready(None),
            Repr::Data(data) => Poll::Ready(Some(Ok(Frame::data(std::mem::take(data))))),
            Repr::Other(state) => state.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.repr {
            Repr::Data(data) => data.is_empty(),
            Repr::Other(state) => state.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.repr {
            Repr::Data(data) => SizeHint::with_exact(data.len() as u64),
            Repr::Other(state) => state.size_hint(),
        }
    }
}

impl<B> State<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            StateProj::Kept { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(*t))))
            }
            StateProj::Recording {
                mut body,
                tape,
                first,
            } => {
                if let Some(first) = first.take() {
                    if body.is_end_stream() {
                        tape.lock().complete();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(first))));
                }
                let frame = ready!(body.as_mut().poll_frame(cx));
                let mut recorded = tape.lock();
                let frame = match frame {
                    None => {
                        recorded.complete();
                        return Poll::Ready(None);
                    }
                    Some(Err(error)) => {
                        recorded.lose();
                        return Poll::Ready(Some(Err(error.into())));
                    }
                    Some(Ok(frame)) => frame,
                };
                let frame = match frame.into_data() {
                    Ok(mut data) => {
                        let data = data.copy_to_bytes(data.remaining());
                        recorded.push(&data);
                        Frame::data(data)
                    }
                    Err(frame) => {
                        if let Some(trailers) = frame.trailers_ref() {
                            if recorded.progress == Progress::Sending {
                                match &mut recorded.trailers {
                                    Some(kept) => kept.extend(trailers.clone()),
                                    None => recorded.trailers = Some(trailers.clone()),
                                }
                            }
                        }
                        frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
                    }
                };
                if body.is_end_stream() {
                    recorded.complete();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            StateProj::Once { body } => {
                let frame = ready!(body.poll_frame(cx));
                Poll::Ready(frame.map(|f| {
                    f.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                        .map_err(Into::into)
                }))
            }
            StateProj::Failed { error } => Poll::Ready(error.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            State::Kept { data, trailers } => data.is_none() && trailers.is_none(),
            State::Recording { body, first, .. } => first.is_none() && body.is_end_stream(),
            State::Once { body } => body.is_end_stream(),
            State::Failed { error } => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            State::Kept { data, trailers: _ } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            State::Recording { body, first, .. } => {
                let ahead = first.as_ref().map_or(0, |f| f.len() as u64);
                let inner = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(ahead));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(ahead));
                }
                hint
            }
            State::Once { body } => body.size_hint(),
            State::Failed { .. } => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    /// A streamed body of several chunks whose size is not known in advance; `Pending`
    /// before each chunk, like a socket.
    struct Chunks {
        parts: Vec<Bytes>,
        trailers: Option<HeaderMap>,
        ready: bool,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if !std::mem::replace(&mut self.ready, false) {
                self.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.parts.is_empty() {
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let next = self.parts.remove(0);
            Poll::Ready(Some(Ok(Frame::data(next))))
        }
    }

    fn chunks(parts: &[&'static str]) -> Chunks {
        Chunks {
            parts: parts
                .iter()
                .map(|p| Bytes::from_static(p.as_bytes()))
                .collect(),
            trailers: None,
            ready: false,
        }
    }

    #[test]
    fn a_replay_body_is_as_small_as_bytes_whatever_it_wraps() {
        assert_eq!(std::mem::size_of::<ReplayBody<Full<Bytes>>>(), 32);
        assert_eq!(std::mem::size_of::<ReplayBody<Chunks>>(), 32);
        assert_eq!(
            std::mem::size_of::<http::Request<ReplayBody<Full<Bytes>>>>(),
            std::mem::size_of::<http::Request<Full<Bytes>>>()
        );
    }

    #[tokio::test]
    async fn bodies_in_memory_are_kept_at_once_and_copy_identically() {
        let body = ReplayBody::new(Full::new(Bytes::from_static(b"hello")), 16);
        // Held as its bytes: no box, no record.
        assert!(matches!(body.repr, Repr::Data(_)), "{body:?}");
        let keeper = body.replayer().unwrap();
        let copies: Vec<ReplayBody<Full<Bytes>>> =
            (0..3).map(|_| keeper.replay().unwrap()).collect();
        for copy in copies {
            assert_eq!(copy.size_hint().exact(), Some(5));
            assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello");
        }
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    }

    #[tokio::test]
    async fn a_streamed_body_is_recorded_as_it_is_sent_then_replays_byte_identical() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
        let body = ReplayBody::new(
            Chunks {
                trailers: Some(trailers),
                ..chunks(&["ab", "cd", "ef"])
            },
            16,
        );
        let keeper = body.replayer().unwrap();
        assert!(!keeper.is_ready(), "nothing sent yet");
        assert!(keeper.replay::<Chunks>().is_none());
        let sent = body.collect().await.unwrap();
        assert_eq!(
            sent.trailers().map(|t| t["x-checksum"].clone()),
            Some(http::HeaderValue::from_static("abc"))
        );
        assert_eq!(sent.to_bytes(), "abcdef");
        for _ in 0..2 {
            let again = keeper.replay::<Chunks>().unwrap();
            let again = again.collect().await.unwrap();
            assert_eq!(
                again.trailers().map(|t| t["x-checksum"].clone()),
                Some(http::HeaderValue::from_static("abc"))
            );
            assert_eq!(again.to_bytes(), "abcdef");
        }
    }

    #[tokio::test]
    async fn a_recorded_body_holds_its_bytes_not_the_buffers_its_chunks_were_cut_from() {
        // 1,000 chunks of one byte, each a slice of its own 8 KiB buffer: kept by reference,
        // the tape would hold 8 MiB for a 1,000-byte body.
        let buffers: Vec<Bytes> = (0..1000u32)
            .map(|i| Bytes::from(vec![u8::try_from(i % 251).unwrap(); 8192]))
            .collect();
        // Sent as hyper hands out slices of its read buffer.
        let body = ReplayBody::new(
            Chunks {
                parts: buffers.iter().map(|b| b.slice(0..1)).collect(),
                trailers: None,
                ready: false,
            },
            64 * 1024,
        );
        let keeper = body.replayer().unwrap();
        let sent = body.collect().await.unwrap().to_bytes();
        assert_eq!(sent.len(), 1000);
        // Only the first chunk is kept by reference; every other buffer is free again.
        let held: Vec<usize> = (0..buffers.len())
            .filter(|&i| !buffers[i].is_unique())
            .collect();
        assert!(
            held.len() <= 1,
            "the tape holds {} buffers (the first: {:?})",
            held.len(),
            &held[..held.len().min(5)]
        );
        let again = keeper.replay::<Chunks>().unwrap();
        assert_eq!(again.collect().await.unwrap().to_bytes(), sent);
    }

    #[tokio::test]
    async fn a_body_past_the_cap_is_sent_whole_and_not_kept() {
        // Known too large: never recorded.
        let big = ReplayBody::new(Full::new(Bytes::from(vec![0u8; 17])), 16);
        assert!(big.replayer().is_none() && !big.is_replayable());
        assert_eq!(big.collect().await.unwrap().to_bytes().len(), 17);

        // A stream that passes the cap as it goes: every byte sent, no copy.
        let stream = ReplayBody::new(chunks(&["0123456789", "0123456789"]), 16);
        let keeper = stream.replayer().unwrap();
        assert_eq!(stream.collect().await.unwrap().to_bytes().len(), 20);
        assert!(keeper.replay::<Chunks>().is_none());
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_cannot_be_replayed() {
        let mut body = ReplayBody::new(chunks(&["ab", "cd"]), 16);
        let keeper = body.replayer().unwrap();
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert!(first.is_some());
        drop(body);
        assert!(keeper.replay::<Chunks>().is_none());
    }

    #[tokio::test]
    async fn empty_bodies_cost_nothing_and_replay() {
        let empty = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 0);
        assert!(empty.is_end_stream());
        assert!(empty.replay().is_some_and(|c| c.is_end_stream()));
    }

    /// A body in memory whose one frame is an error.
    struct Broken(bool);

    impl Body for Broken {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if std::mem::replace(&mut self.0, true) {
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err("boom".into())))
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(4)
        }
    }

    #[tokio::test]
    async fn an_error_read_ahead_is_given_to_the_sender() {
        let body = ReplayBody::new(Broken(false), 16);
        assert!(body.replay().is_none());
        let err = body.collect().await.err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("boom"));
    }
}
