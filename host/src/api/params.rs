//! Query parameters shared by the listings, checked into clear 400s.

use super::ApiError;

/// `limit`: 1 to 1000, 100 when absent.
pub fn limit(text: Option<&str>) -> Result<i64, ApiError> {
    match text {
        None => Ok(100),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit must be a number from 1 to 1000")),
    }
}

/// A seq cursor (`after`, `roleAfter`): 0 or more, 0 when absent.
pub fn seq(name: &str, text: Option<&str>) -> Result<i64, ApiError> {
    match text {
        None => Ok(0),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be a seq, 0 or more"))),
    }
}
