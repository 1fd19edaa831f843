//! Environment variable names and values for `--exec` children.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use discovery::Prefix;

/// `/services/couchbase` becomes `SERVICES_COUCHBASE`: the leading `/`
/// dropped, letters upper-cased, anything else that cannot be in a
/// variable name (`/`, `-`, `.`) turned into `_`.
pub fn env_name(prefix: &Prefix) -> String {
    let mut out: String = prefix
        .as_str()
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        out.push_str("ROOT");
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Check a `--env-name` name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid environment variable name (letters, digits and '_', not starting with a digit)"
        ))
    }
}

/// Refuse a name the child must not get from discover: it would replace a
/// variable the system or discover itself sets (a prefix `/path` would
/// otherwise become `PATH`).
pub fn check_not_reserved(name: &str) -> Result<(), String> {
    const EXACT: [&str; 12] = [
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "PWD",
        "IFS",
        "TMPDIR",
        "LANG",
        "TZ",
        "NODE_OPTIONS",
        "NOTIFY_SOCKET",
    ];
    const PREFIXES: [&str; 3] = ["LD_", "ETCDCTL_", "DISCOVER_"];
    if EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(format!(
            "{name} would replace a variable the child relies on (PATH, HOME, LD_*, ETCDCTL_*, DISCOVER_* and the like are never set by discover)"
        ));
    }
    Ok(())
}

/// The values in key order, comma-joined, bytes kept as they are.
pub fn env_value<'a>(values: impl Iterator<Item = &'a [u8]>) -> OsString {
    let mut out = Vec::new();
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(v);
    }
    OsString::from_vec(out)
}

/// A config key path relative to its prefix, as a variable name:
/// `port` becomes `PORT`, `db/host` becomes `DB_HOST`.
pub fn config_env_name(path: &[&str]) -> String {
    let joined = path.join("_");
    let mut out: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let p = |s| Prefix::new(s).unwrap();
        assert_eq!(env_name(&p("/services/couchbase")), "SERVICES_COUCHBASE");
        assert_eq!(env_name(&p("/services/couchbase/")), "SERVICES_COUCHBASE");
        assert_eq!(
            env_name(&p("/services/my-cache.v2")),
            "SERVICES_MY_CACHE_V2"
        );
        assert_eq!(env_name(&p("/1st")), "_1ST");
        assert_eq!(env_name(&p("/")), "ROOT");
        assert!(check_env_name("COUCHBASE").is_ok());
        assert!(check_env_name("_X1").is_ok());
        for bad in ["", "1X", "A-B", "A B", "É"] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
        assert!(check_not_reserved("SERVICES_COUCHBASE").is_ok());
        for bad in [
            "PATH",
            "LD_PRELOAD",
            "ETCDCTL_PASSWORD",
            "DISCOVER_REVISION",
        ] {
            assert!(check_not_reserved(bad).is_err(), "{bad}");
        }
        assert_eq!(config_env_name(&["db", "host"]), "DB_HOST");
        assert_eq!(config_env_name(&["port"]), "PORT");
    }

    #[test]
    fn values() {
        let v: Vec<&[u8]> = vec![b"10.1.0.2", b"10.1.0.3"];
        assert_eq!(
            env_value(v.into_iter()),
            OsString::from("10.1.0.2,10.1.0.3")
        );
        assert_eq!(env_value(std::iter::empty()), OsString::new());
    }
}
