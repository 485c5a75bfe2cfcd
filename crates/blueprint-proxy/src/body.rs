//! The caller's request body, watched: an idle timeout between its frames, a cap on its
//! size for `/proxy` calls if one is set, and its errors marked as the caller's, so that a
//! slow-drip upload is answered 408, a malformed chunked body 400 and one past the cap 413,
//! never 502 as if the provider had failed.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::StatusCode;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;

/// The default [`CallerBody`] idle timeout: 30 seconds between two frames.
pub(crate) const DEFAULT_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why reading the caller's body failed: the caller's doing, not the provider's.
#[derive(Debug)]
pub(crate) enum CallerBodyError {
    /// No frame came for this long while one was awaited.
    Idle(Duration),
    /// The body could not be read: malformed chunked encoding, a connection closed
    /// mid-body, a length that does not match.
    Read(axum::BoxError),
    /// The body passed this many bytes, the most the proxy takes
    /// ([`ProxyBuilder::max_request_body`](crate::ProxyBuilder::max_request_body)).
    TooLarge(u64),
}

impl fmt::Display for CallerBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallerBodyError::Idle(after) => write!(
                f,
                "the request body stalled: nothing arrived for {} s",
                after.as_secs_f64()
            ),
            CallerBodyError::Read(e) => write!(f, "the request body could not be read: {e}"),
            CallerBodyError::TooLarge(max) => {
                write!(
                    f,
                    "the request body passed {max} bytes, the most it may have"
                )
            }
        }
    }
}

impl StdError for CallerBodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            CallerBodyError::Idle(_) | CallerBodyError::TooLarge(_) => None,
            CallerBodyError::Read(e) => Some(&**e),
        }
    }
}

impl CallerBodyError {
    /// The proxy's answer: 408 `request_timeout`, 400 `invalid_body` or 413
    /// `body_too_large`.
    pub(crate) fn to_api(&self) -> ApiError {
        match self {
            CallerBodyError::Idle(after) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body stalled: nothing arrived for {} s; send the body without \
                     pauses (the limit is --request-body-timeout)",
                    after.as_secs_f64()
                ),
            ),
            CallerBodyError::Read(e) => ApiError::bad_request(
                "invalid_body",
                format!(
                    "the request body could not be read ({}); nothing more was sent",
                    crate::error::printable(&e.to_string())
                ),
            ),
            CallerBodyError::TooLarge(max) => too_large(
                *max,
                "the call to the provider was cut off when it passed that",
            ),
        }
    }
}

/// 413 `body_too_large` for a `/proxy` call whose body is larger than `max` bytes; `then`
/// says what became of the call.
pub(crate) fn too_large(max: u64, then: &str) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!(
            "the body is larger than this route takes ({max} bytes, --max-request-body); {then}"
        ),
    )
}

/// The caller's fault in an error's source chain, if it is one.
pub(crate) fn caller_fault(error: &(dyn StdError + 'static)) -> Option<ApiError> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<CallerBodyError>() {
            return Some(found.to_api());
        }
        current = error.source();
    }
    None
}

pin_project_lite::pin_project! {
    /// A request body that fails with [`CallerBodyError`]: when a frame is awaited for
    /// longer than `idle` (time spent while nobody asks for the next frame, such as a
    /// provider applying backpressure, does not count), when the body cannot be read, or
    /// when a frame would take it past `max` bytes (that frame is not passed on). It only
    /// counts: nothing is kept.
    pub(crate) struct CallerBody<B> {
        #[pin]
        inner: B,
        idle: Duration,
        #[pin]
        timer: Sleep,
        armed: bool,
        failed: bool,
        // The most bytes the body may have (`u64::MAX`: no cap), and those passed on.
        max: u64,
        read: u64,
    }
}

impl<B> CallerBody<B> {
    pub(crate) fn new(inner: B, idle: Duration) -> Self {
        CallerBody {
            inner,
            idle,
            timer: tokio::time::sleep_until(far_future()),
            armed: false,
            failed: false,
            max: u64::MAX,
            read: 0,
        }
    }

    /// Fails the body once it would pass `max` bytes.
    pub(crate) fn max(mut self, max: u64) -> Self {
        self.max = max;
        self
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

impl<B> HttpBody for CallerBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = CallerBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CallerBodyError>>> {
        let mut this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        if !*this.armed {
            // A timeout too long to add to the clock (`Duration::MAX`) means "never".
            let deadline = blueprint_core::instant_after(Instant::now(), *this.idle);
            this.timer.as_mut().reset(deadline);
            *this.armed = true;
        }
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.armed = false;
                if let Some(data) = frame.data_ref() {
                    let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    *this.read = this.read.saturating_add(len);
                    if *this.read > *this.max {
                        *this.failed = true;
                        return Poll::Ready(Some(Err(CallerBodyError::TooLarge(*this.max))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                *this.armed = false;
                *this.failed = true;
                Poll::Ready(Some(Err(CallerBodyError::Read(e.into()))))
            }
            Poll::Ready(None) => {
                *this.armed = false;
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.timer.poll(cx));
                *this.failed = true;
                Poll::Ready(Some(Err(CallerBodyError::Idle(*this.idle))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The proxy's answer when a body could not be buffered by an extractor: the caller's
/// stall or read error, or 413 `body_too_large`.
pub(crate) fn rejection(rejection: &axum::extract::rejection::BytesRejection) -> ApiError {
    if let Some(api) = caller_fault(rejection) {
        return api;
    }
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than this route takes ({MAX_JSON_BODY} bytes)"),
        );
    }
    ApiError::bad_request(
        "invalid_body",
        format!(
            "the request body could not be read: {}",
            rejection.body_text()
        ),
    )
}

/// The largest body the JSON routes (`/connections`, `/connect/sessions`) take: 64 KiB.
pub(crate) const MAX_JSON_BODY: usize = 64 * 1024;

/// Wraps a request's body in a [`CallerBody`], capped at `max` bytes if given.
pub(crate) fn watch(
    request: axum::extract::Request,
    idle: Duration,
    max: Option<u64>,
) -> axum::extract::Request {
    // A body already at its end (a `GET`, a `Content-Length: 0`) can neither stall nor fail
    // to read: it is left as it is, without a timer and a box per call.
    if request.body().is_end_stream() {
        return request;
    }
    request.map(|body| {
        let body = CallerBody::new(body, idle);
        Body::new(match max {
            Some(max) => body.max(max),
            None => body,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    /// A body that sends one frame, then waits forever.
    struct Stalls(bool);

    impl HttpBody for Stalls {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if self.0 {
                Poll::Pending
            } else {
                self.0 = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first")))))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_idle_timeout_and_not_before() {
        let mut body = std::pin::pin!(CallerBody::new(Stalls(false), Duration::from_secs(5)));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        // Time while nobody polls does not count.
        tokio::time::advance(Duration::from_secs(60)).await;
        let started = Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(matches!(error, CallerBodyError::Idle(_)), "{error}");
        assert_eq!(error.to_api().status(), 408);
        assert!(body.frame().await.is_none(), "a failed body ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_too_long_for_the_clock_never_fails_the_body() {
        let mut body = std::pin::pin!(CallerBody::new(Stalls(false), Duration::MAX));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        // Polled again, it arms its timer: `Duration::MAX` from now, which must not panic.
        let waited = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
        assert!(
            waited.is_err(),
            "the body failed within an hour: {waited:?}"
        );
    }

    /// A body of `frames` frames of `size` bytes each (`a`s, then `b`s, …), ready at once.
    struct Frames(std::collections::VecDeque<Bytes>);

    fn frames(frames: u8, size: usize) -> Frames {
        Frames(
            (0..frames)
                .map(|i| Bytes::from(vec![b'a' + i; size]))
                .collect(),
        )
    }

    impl HttpBody for Frames {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
        }
    }

    #[tokio::test]
    async fn a_body_is_cut_at_the_frame_that_passes_the_cap() {
        let idle = Duration::from_secs(5);
        // 3 frames of 4 bytes under a cap of 10: two pass, the third fails the body.
        let mut body = std::pin::pin!(CallerBody::new(frames(3, 4), idle).max(10));
        for expected in ["aaaa", "bbbb"] {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), expected);
        }
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(error, CallerBodyError::TooLarge(10)), "{error}");
        let api = caller_fault(&error).unwrap();
        assert_eq!((api.status().as_u16(), api.code()), (413, "body_too_large"));
        assert!(api.message().contains("10 bytes"), "{}", api.message());
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none(), "a failed body ends");

        // Exactly at the cap, the whole body passes.
        let body = CallerBody::new(frames(3, 4), idle).max(12);
        let whole = body.collect().await.unwrap().to_bytes();
        assert_eq!(whole, "aaaabbbbcccc");
        // Without a cap, any size passes.
        let body = CallerBody::new(frames(64, 1024), idle);
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 64 * 1024);
    }

    #[tokio::test]
    async fn a_read_error_is_the_callers() {
        struct Fails;
        impl HttpBody for Fails {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
                Poll::Ready(Some(Err(std::io::Error::other("bad chunk size"))))
            }
        }
        let failing = Fails;
        let mut body = std::pin::pin!(CallerBody::new(failing, Duration::from_secs(5)));
        let error = body.frame().await.unwrap().unwrap_err();
        let wrapped: axum::BoxError = Box::new(error);
        let api = caller_fault(&*wrapped).unwrap();
        assert_eq!((api.status().as_u16(), api.code()), (400, "invalid_body"));
        assert!(caller_fault(&std::io::Error::other("upstream")).is_none());
    }
}
