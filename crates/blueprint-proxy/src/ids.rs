//! The one rule for connection ids, applied at every door: the `Connection-Id` header,
//! `PUT`/`DELETE /connections/{integration}/{id}`, the `connection_id` filter of
//! `GET /connections` and `POST /connect/sessions`.

use blueprint_core::ConnectionId;

use crate::error::ApiError;

/// The longest connection id accepted.
pub(crate) const MAX_CONNECTION_ID: usize = 256;

/// The rule, as the error message and the docs state it.
pub(crate) const CONNECTION_ID_RULE: &str = "a connection id is 1 to 256 characters, each an ASCII \
     letter, digit or one of `.` `_` `:` `@` `-` (no spaces, no other characters)";

/// Whether `id` follows the rule: `[A-Za-z0-9._:@-]{1,256}`.
pub(crate) fn is_valid_connection_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CONNECTION_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

/// `id` as a connection id, or 400 `invalid_connection_id` naming the rule. `id` is never
/// trimmed: what is stored is what the caller sent.
pub(crate) fn connection_id(id: &str) -> Result<ConnectionId, ApiError> {
    if is_valid_connection_id(id) {
        Ok(ConnectionId::new(id))
    } else {
        Err(invalid())
    }
}

/// 400 `invalid_connection_id`.
pub(crate) fn invalid() -> ApiError {
    ApiError::bad_request(
        "invalid_connection_id",
        format!("the connection id is refused: {CONNECTION_ID_RULE}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_admits_only_its_characters() {
        for ok in [
            "acme",
            "a",
            "user@example.com",
            "org:42.team_a-b",
            &"x".repeat(256),
        ] {
            assert!(is_valid_connection_id(ok), "{ok}");
        }
        for bad in [
            "",
            " acme",
            "acme ",
            "café",
            "a/b",
            "a%20b",
            "a\tb",
            "a\u{0}",
            "a+b",
            &"x".repeat(257),
        ] {
            assert!(!is_valid_connection_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_error_names_the_rule() {
        let error = connection_id("café").unwrap_err();
        assert_eq!(error.code(), "invalid_connection_id");
        assert_eq!(error.status(), 400);
        assert!(error.message().contains("[A-Za-z0-9") || error.message().contains("ASCII letter"));
    }
}
