//! Which answers mean "rate limited": a 429 by default, and whatever an API says instead
//! (GitHub answers a spent primary limit with 403 and `X-RateLimit-Remaining: 0`).

use http::header::{HeaderName, InvalidHeaderName};
use http::{HeaderMap, StatusCode};

/// Where the wait of a rate-limited answer is read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WaitFrom {
    /// `Retry-After`.
    RetryAfter,
    /// The rate-limit reset header ([`HeaderConfig::reset_header`](crate::HeaderConfig::reset_header)).
    Reset,
    /// `Retry-After` when the answer has one, else the reset header.
    #[default]
    RetryAfterOrReset,
}

/// An answer that means "rate limited": a status, optionally header values that must be
/// present (GitHub answers a spent primary limit with 403 and `X-RateLimit-Remaining: 0`,
/// and other 403s are not about rate limits), and where the wait is read from.
///
/// ```
/// use blueprint_ratelimit::{RateLimitRule, WaitFrom};
/// use http::{HeaderMap, StatusCode};
///
/// let rule = RateLimitRule::new(StatusCode::FORBIDDEN, WaitFrom::Reset)
///     .when_header("x-ratelimit-remaining", "0")?;
/// let mut headers = HeaderMap::new();
/// assert!(!rule.matches(StatusCode::FORBIDDEN, &headers));
/// headers.insert("x-ratelimit-remaining", "0".parse()?);
/// assert!(rule.matches(StatusCode::FORBIDDEN, &headers));
/// assert!(!rule.matches(StatusCode::TOO_MANY_REQUESTS, &headers));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitRule {
    /// The status of the answer.
    pub status: StatusCode,
    /// Headers the answer must carry with these values (compared trimmed, ignoring ASCII
    /// case; `*` means any value); all of them.
    pub when: Vec<(HeaderName, String)>,
    /// Where the wait is read from.
    pub wait_from: WaitFrom,
}

impl RateLimitRule {
    /// Answers with `status`, whatever their headers.
    pub fn new(status: StatusCode, wait_from: WaitFrom) -> Self {
        RateLimitRule {
            status,
            when: Vec::new(),
            wait_from,
        }
    }

    /// Also requires the header `name` with `value`.
    ///
    /// # Errors
    ///
    /// [`InvalidHeaderName`] when `name` is not a header name.
    pub fn when_header(mut self, name: &str, value: &str) -> Result<Self, InvalidHeaderName> {
        let name = HeaderName::try_from(name)?;
        self.when.push((name, value.to_owned()));
        Ok(self)
    }

    /// A 429, whatever its headers, the wait read from `Retry-After` or the reset: what
    /// every API means by "rate limited", and the default.
    pub fn too_many_requests() -> Self {
        RateLimitRule::new(StatusCode::TOO_MANY_REQUESTS, WaitFrom::RetryAfterOrReset)
    }

    /// Whether an answer with this status and these headers is rate limited by this rule.
    pub fn matches(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        status == self.status
            && self.when.iter().all(|(name, want)| {
                headers.get_all(name).iter().any(|v| {
                    want == "*"
                        || v.to_str()
                            .is_ok_and(|v| v.trim().eq_ignore_ascii_case(want.trim()))
                })
            })
    }
}
