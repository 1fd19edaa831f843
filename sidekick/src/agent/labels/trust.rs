//! The trust boundary between containers and etcd: a container's labels
//! name keys, and the agent writes only keys that are well-formed and under
//! the prefixes its operator allows (`--allow-prefix`, default `--prefix`).
//! Keys are checked after `%`-expansion, so a name cannot climb out.

use discovery::Prefix;

/// The longest label value sidekick reads. A key is at most
/// [`discovery::MAX_KEY_LEN`] bytes; no other label value reaches etcd,
/// and none needs to be longer than this (a check's command, a path).
pub const MAX_LABEL_VALUE: usize = 4096;

/// Check that `key` (expanded) may be written: a well-formed key, with no
/// `.` or `..` segment, under one of `allow`. The message says what is
/// wrong and what to do.
pub fn check_key(key: &str, allow: &[Prefix]) -> Result<(), String> {
    discovery::validate_key(key).map_err(|e| e.to_string())?;
    if key.split('/').any(|s| s == "." || s == "..") {
        return Err(format!(
            "key {key:?} has a '.' or '..' segment; keys are written as they are, never resolved, so name the key itself"
        ));
    }
    if allow.iter().any(|p| p.contains(key.as_bytes())) {
        return Ok(());
    }
    let allowed: Vec<&str> = allow.iter().map(Prefix::as_str).collect();
    Err(format!(
        "key {key} is outside the prefixes this agent may write ({}); use a key under them, or have the agent started with --allow-prefix for it",
        allowed.join(", ")
    ))
}

/// Check the size of a label (or `SERVICE_*` variable) sidekick reads.
pub fn check_size(name: &str, value: &str) -> Result<(), String> {
    if value.len() <= MAX_LABEL_VALUE {
        return Ok(());
    }
    Err(format!(
        "{name} is {} bytes long; sidekick reads values up to {MAX_LABEL_VALUE} bytes (and an etcd key is at most {} bytes)",
        value.len(),
        discovery::MAX_KEY_LEN
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_normalised_keys_under_the_allowed_prefixes() {
        let allow = vec![
            Prefix::new("/services").unwrap(),
            Prefix::new("/config/web").unwrap(),
        ];
        for good in ["/services/web/1", "/config/web/listen", "/services/a..b/c"] {
            assert_eq!(check_key(good, &allow), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("/config/web-lb/listen", "outside the prefixes"),
            ("/services-evil/1", "outside the prefixes"),
            ("/services", "outside the prefixes"),
            ("/services/../config/x", "'..' segment"),
            ("/services/./x", "'..' segment"),
            ("/services//x", "empty segment"),
            ("/services/x\u{7}", "control character"),
            ("/services/x/", "ends with '/'"),
        ] {
            let e = check_key(bad, &allow).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(check_size("discovery.check", "tcp").is_ok());
        let e = check_size("discovery.key", &"x".repeat(MAX_LABEL_VALUE + 1)).unwrap_err();
        assert!(e.contains("4097 bytes long"), "{e}");
    }
}
