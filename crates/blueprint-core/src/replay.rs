//! Request bodies that can be sent more than once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

/// The body size up to which [`ReplayBody::buffer`] keeps a copy by default: 64 KiB.
pub const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

pin_project! {
    /// A request body that can be sent again when it was small enough to keep.
    ///
    /// [`ReplayBody::buffer`] reads a body whose size is known to be at most a cap (default
    /// [`DEFAULT_REPLAY_CAP`]) into memory; [`ReplayBody::try_clone`] then gives as many
    /// copies as needed, each a reference-counted view of the same bytes. A body that is
    /// larger, or whose size is not known in advance (a stream), is passed through as it
    /// is and cannot be cloned: the request is sent once and not retried. An empty body
    /// (a `GET`) costs nothing.
    ///
    /// Layers that resend requests (retry, token refresh) wrap the body once; a layer below
    /// that receives a `ReplayBody` calls `try_clone` instead of buffering again.
    ///
    /// ```
    /// use blueprint_core::ReplayBody;
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), blueprint_core::BoxError> {
    /// let body = ReplayBody::buffer(Full::new(Bytes::from("{\"a\":1}")), 1024).await?;
    /// let again = body.try_clone().expect("small bodies are kept");
    /// assert_eq!(body.collect().await?.to_bytes(), "{\"a\":1}");
    /// assert_eq!(again.collect().await?.to_bytes(), "{\"a\":1}");
    /// # Ok(())
    /// # }
    /// ```
    pub struct ReplayBody<B> {
        #[pin]
        state: State<B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B> {
        Buffered { data: Option<Bytes>, trailers: Option<HeaderMap> },
        Once { #[pin] body: B },
    }
}

impl<B> ReplayBody<B> {
    /// A body kept in memory, which can be cloned.
    pub fn from_bytes(data: Bytes) -> Self {
        Self::buffered(data, None)
    }

    fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        let data = (!data.is_empty()).then_some(data);
        ReplayBody {
            state: State::Buffered { data, trailers },
        }
    }

    /// A body that is sent once and cannot be cloned.
    pub fn once(body: B) -> Self {
        ReplayBody {
            state: State::Once { body },
        }
    }

    /// A copy that sends the same bytes, or `None` when the body was not kept.
    /// Cloning the copy of a body already partly sent still gives the whole body.
    pub fn try_clone(&self) -> Option<Self> {
        match &self.state {
            State::Buffered { data, trailers } => Some(ReplayBody {
                state: State::Buffered {
                    data: data.clone(),
                    trailers: trailers.clone(),
                },
            }),
            State::Once { .. } => None,
        }
    }

    /// Whether [`ReplayBody::try_clone`] gives a copy.
    pub fn is_replayable(&self) -> bool {
        matches!(self.state, State::Buffered { .. })
    }
}

impl<B: Body> ReplayBody<B> {
    /// Keeps `body` in memory when its size hint says it holds at most `cap` bytes (read
    /// fully before this completes), otherwise wraps it to be sent once.
    pub fn buffer(body: B, cap: usize) -> Buffer<B> {
        let hint = body.size_hint();
        let fits = body.is_end_stream() || hint.upper().is_some_and(|upper| upper <= cap as u64);
        Buffer {
            body: Some(body),
            fits,
            cap,
            first: None,
            rest: BytesMut::new(),
            trailers: None,
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            State::Buffered { data, .. } => f
                .debug_struct("ReplayBody")
                .field("buffered_bytes", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            State::Once { .. } => f.debug_struct("ReplayBody").field("once", &true).finish(),
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().state.project() {
            StateProj::Buffered { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            StateProj::Once { body } => {
                let frame = ready!(body.poll_frame(cx));
                Poll::Ready(
                    frame.map(|f| f.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))),
                )
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
            State::Once { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            State::Once { body } => body.size_hint(),
        }
    }
}

/// The future of [`ReplayBody::buffer`].
pub struct Buffer<B> {
    body: Option<B>,
    fits: bool,
    cap: usize,
    // The first chunk is kept as it is, so a body of one chunk is never copied.
    first: Option<Bytes>,
    rest: BytesMut,
    trailers: Option<HeaderMap>,
}

impl<B> fmt::Debug for Buffer<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("fits", &self.fits)
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl<B: Body + Unpin> Unpin for Buffer<B> {}

impl<B> Future for Buffer<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<ReplayBody<B>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(Err("ReplayBody::buffer polled after completion".into()));
        };
        if !this.fits {
            let body = this.body.take().map(ReplayBody::once);
            return Poll::Ready(body.ok_or_else(|| "unreachable".into()));
        }
        loop {
            let Some(frame) = ready!(Pin::new(&mut *body).poll_frame(cx)) else {
                break;
            };
            let frame = frame.map_err(Into::into)?;
            match frame.into_data() {
                Ok(mut data) => {
                    let chunk = data.copy_to_bytes(data.remaining());
                    let kept = this.first.as_ref().map_or(0, Bytes::len) + this.rest.len();
                    if kept + chunk.len() > this.cap {
                        return Poll::Ready(Err(BodyLargerThanHint { cap: this.cap }.into()));
                    }
                    match this.first.take() {
                        None if this.rest.is_empty() => this.first = Some(chunk),
                        first => {
                            if let Some(first) = first {
                                this.rest.extend_from_slice(&first);
                            }
                            this.rest.extend_from_slice(&chunk);
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        match &mut this.trailers {
                            Some(existing) => existing.extend(trailers),
                            None => this.trailers = Some(trailers),
                        }
                    }
                }
            }
        }
        this.body = None;
        let data = match this.first.take() {
            Some(first) => first,
            None => std::mem::take(&mut this.rest).freeze(),
        };
        Poll::Ready(Ok(ReplayBody::buffered(data, this.trailers.take())))
    }
}

/// A body sent more bytes than its size hint allowed, so it could not be kept for replay
/// (and, being partly read, could not be sent either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLargerThanHint {
    cap: usize,
}

impl fmt::Display for BodyLargerThanHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the request body sent more bytes than its size hint promised (kept up to {} bytes); \
             nothing was sent",
            self.cap
        )
    }
}

impl std::error::Error for BodyLargerThanHint {}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    /// A streamed body of several chunks whose size is not known in advance.
    struct Chunks(Vec<&'static str>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.0.is_empty() {
                return Poll::Ready(None);
            }
            let next = self.0.remove(0);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(next.as_bytes())))))
        }
    }

    fn chunks(parts: &[&'static str]) -> Chunks {
        Chunks(parts.to_vec())
    }

    #[tokio::test]
    async fn small_known_bodies_are_kept_and_clone_identically() {
        let body = ReplayBody::buffer(Full::new(Bytes::from_static(b"hello")), 16)
            .await
            .unwrap();
        assert!(body.is_replayable());
        let copies: Vec<_> = (0..3).map(|_| body.try_clone().unwrap()).collect();
        for copy in copies {
            assert_eq!(copy.size_hint().exact(), Some(5));
            assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello");
        }
    }

    #[tokio::test]
    async fn large_or_unknown_bodies_are_sent_once() {
        let big = ReplayBody::buffer(Full::new(Bytes::from(vec![0u8; 17])), 16)
            .await
            .unwrap();
        assert!(!big.is_replayable() && big.try_clone().is_none());
        assert_eq!(big.collect().await.unwrap().to_bytes().len(), 17);

        // A stream has no upper bound: sent once, all its bytes intact.
        let stream = ReplayBody::buffer(chunks(&["a", "b", "c"]), 1 << 20)
            .await
            .unwrap();
        assert!(stream.try_clone().is_none());
        assert_eq!(stream.collect().await.unwrap().to_bytes(), "abc");
    }

    #[tokio::test]
    async fn empty_bodies_cost_nothing_and_replay() {
        let empty = ReplayBody::buffer(http_body_util::Empty::<Bytes>::new(), 0)
            .await
            .unwrap();
        assert!(empty.is_end_stream());
        assert!(empty.try_clone().is_some_and(|c| c.is_end_stream()));
    }
}
