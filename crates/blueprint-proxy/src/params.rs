//! Query strings (`application/x-www-form-urlencoded`), decoded with `form_urlencoded` and
//! read strictly: a parameter that is not UTF-8 once decoded is refused, not ignored.

use crate::error::ApiError;

/// The decoded `name=value` pairs of a query string. Bytes that are not UTF-8 come out as
/// U+FFFD (`form_urlencoded` decodes lossily); [`param`] refuses those.
pub(crate) fn pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
}

/// The value of the parameter `name` (the first one, if repeated).
///
/// # Errors
///
/// 400 `invalid_request` when its value (or any name) is not UTF-8 once decoded, so that a
/// filter that cannot be read is never silently dropped.
pub(crate) fn param(query: Option<&str>, name: &str) -> Result<Option<String>, ApiError> {
    let Some(query) = query else {
        return Ok(None);
    };
    let mut found = None;
    for (key, value) in pairs(query) {
        if key.contains(char::REPLACEMENT_CHARACTER) || value.contains(char::REPLACEMENT_CHARACTER)
        {
            return Err(ApiError::bad_request(
                "invalid_request",
                "a query parameter is not UTF-8 once percent-decoded",
            ));
        }
        if key == name && found.is_none() {
            found = Some(value);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_pairs() {
        let pairs: Vec<_> = pairs("connection_id=acme%20co&x=a+b&flag").collect();
        assert_eq!(
            pairs,
            [
                ("connection_id".to_owned(), "acme co".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn a_parameter_that_is_not_utf8_is_refused_not_ignored() {
        assert_eq!(
            param(Some("integration=intercom"), "integration")
                .unwrap()
                .as_deref(),
            Some("intercom")
        );
        assert_eq!(
            param(Some("x=1&integration=a&integration=b"), "integration")
                .unwrap()
                .as_deref(),
            Some("a")
        );
        assert_eq!(param(None, "integration").unwrap(), None);
        assert_eq!(param(Some("other=1"), "integration").unwrap(), None);
        for bad in [
            "integration=%FF",
            "integration=a%C3",
            "x=%80&integration=intercom",
            "%FF=1",
        ] {
            let error = param(Some(bad), "integration").unwrap_err();
            assert_eq!(error.code(), "invalid_request", "{bad}");
        }
    }
}
