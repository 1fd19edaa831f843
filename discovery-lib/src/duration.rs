//! Durations as people write them in unit files: `8`, `8s`, `500ms`, `2m`.

use std::time::Duration;

/// Parse plain seconds (`8`, `1.5`) or a humantime duration (`500ms`, `2m`, `1h 30m`).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(discovery::parse_duration("8").unwrap(), Duration::from_secs(8));
/// assert_eq!(discovery::parse_duration("500ms").unwrap(), Duration::from_millis(500));
/// assert!(discovery::parse_duration("-1").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration; write seconds (8) or a unit (8s, 500ms, 2m)".into());
    }
    if s.starts_with('-') {
        return Err(format!("{s:?} is negative; durations must be positive"));
    }
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = s
            .parse()
            .map_err(|_| format!("{s:?} is not a number of seconds"))?;
        return Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is out of range"));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("{s:?} is not a duration ({e}); write seconds (8) or a unit (8s, 500ms, 2m)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_duration("8").unwrap(), Duration::from_secs(8));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("8s").unwrap(), Duration::from_secs(8));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "-3", "abc", "8 parsecs", "1e400", "1..2"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
