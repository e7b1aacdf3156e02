//! Resource ids in paths, and optimistic locking: every resource carries a version, shown as
//! its `ETag`; a replace with `If-Match` applies only to that version (412 otherwise), and one
//! that loses a race with another writer gets 409.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::error::ApiError;

pub fn etag(version: u64) -> HeaderValue {
    // Digits and quotes are always a valid header value.
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

pub fn if_match(headers: &HeaderMap, current: u64) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let value = value.to_str().unwrap_or_default();
    let matches = value.split(',').map(str::trim).any(|tag| {
        tag == "*" || tag.trim_start_matches("W/").trim_matches('"') == current.to_string()
    });
    if matches {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            format!("If-Match {value} does not match the current version \"{current}\""),
        ))
    }
}

/// Ids the API generates are lower-case ULIDs; anything else in a path cannot name a resource.
pub fn resource_id<'a>(id: &'a str, what: &str) -> Result<&'a str, ApiError> {
    if !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("{what} {id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_the_current_version_only() {
        let mut headers = HeaderMap::new();
        assert!(if_match(&headers, 3).is_ok(), "no header: no precondition");
        for (value, ok) in [
            ("\"3\"", true),
            ("W/\"3\"", true),
            ("\"2\", \"3\"", true),
            ("*", true),
            ("\"2\"", false),
        ] {
            headers.insert(header::IF_MATCH, HeaderValue::from_static(value));
            assert_eq!(if_match(&headers, 3).is_ok(), ok, "{value}");
        }
        assert_eq!(etag(7), "\"7\"");
    }

    #[test]
    fn path_ids_cannot_reach_other_keys() {
        assert!(resource_id("01jabc", "webhook").is_ok());
        assert!(resource_id("a#b", "webhook").is_err());
        assert!(resource_id("", "webhook").is_err());
    }
}
