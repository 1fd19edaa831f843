//! Key and prefix rules, shared by every tool so that they all refuse the
//! same things with the same words.

use crate::error::{Error, Result};

/// The longest key (in bytes) that [`validate_key`] accepts.
///
/// etcd itself only limits the request size; keys this long are always a
/// mistake in service discovery, and a short limit keeps logs and env readable.
pub const MAX_KEY_LEN: usize = 1024;

/// Check that `key` is a well-formed directory-style key, like `/services/memcached/1`.
///
/// The rules: it starts with `/`; it has no empty segment (`//`) and no
/// trailing `/`; it contains no whitespace and no control characters; it is
/// at most [`MAX_KEY_LEN`] bytes.
///
/// ```
/// assert!(discovery::validate_key("/services/memcached/1").is_ok());
/// assert!(discovery::validate_key("services/memcached/1").is_err());
/// ```
pub fn validate_key(key: &str) -> Result<()> {
    check_path(key, false).map_err(|reason| Error::InvalidKey {
        key: shorten(key),
        reason,
    })
}

/// A validated directory prefix, as in etcd v2: `/services/couchbase` covers
/// `/services/couchbase/1` but never `/services/couchbase-old/1`.
///
/// A trailing `/` is accepted and dropped, so `/services/couchbase/` and
/// `/services/couchbase` are the same prefix. `/` alone covers every key that
/// starts with `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    /// Normalised: no trailing `/` unless it is the root.
    path: String,
}

impl Prefix {
    /// Validate and normalise `prefix`.
    pub fn new(prefix: &str) -> Result<Self> {
        let trimmed = if prefix.len() > 1 {
            prefix.strip_suffix('/').unwrap_or(prefix)
        } else {
            prefix
        };
        let checked = if prefix.ends_with("//") {
            Err("it has an empty segment ('//')".to_owned())
        } else {
            check_path(trimmed, true)
        };
        checked.map_err(|reason| Error::InvalidPrefix {
            prefix: shorten(prefix),
            reason,
        })?;
        Ok(Self {
            path: trimmed.to_owned(),
        })
    }

    /// The normalised prefix, without a trailing `/` (unless it is `/`).
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The directory form, with exactly one trailing `/`.
    pub fn dir(&self) -> String {
        if self.path == "/" {
            "/".to_owned()
        } else {
            format!("{}/", self.path)
        }
    }

    /// Whether `key` lies under this directory.
    pub fn contains(&self, key: &[u8]) -> bool {
        let dir = self.dir();
        key.len() > dir.len() && key.starts_with(dir.as_bytes())
    }

    /// The `[start, end)` etcd range of the keys under this directory.
    pub(crate) fn dir_range(&self) -> (Vec<u8>, Vec<u8>) {
        let start = self.dir().into_bytes();
        (start.clone(), range_end(&start))
    }

    /// The `[start, end)` range of this key itself and the keys under it.
    ///
    /// The range also holds unrelated siblings such as `/config/web-old`
    /// (`-` sorts before `/`), so callers filter with [`Prefix::covers`].
    pub(crate) fn self_and_dir_range(&self) -> (Vec<u8>, Vec<u8>) {
        let start = self.path.clone().into_bytes();
        (start, range_end(self.dir().as_bytes()))
    }

    /// Whether `key` is this prefix itself or lies under it.
    pub(crate) fn covers(&self, key: &[u8]) -> bool {
        key == self.path.as_bytes() || self.contains(key)
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)
    }
}

impl std::str::FromStr for Prefix {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Prefix::new(s)
    }
}

/// The smallest key greater than every key starting with `start`, as etcd's
/// `clientv3.GetPrefixRangeEnd` computes it.
fn range_end(start: &[u8]) -> Vec<u8> {
    let mut end = start.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the keyspace.
    vec![0]
}

fn check_path(s: &str, allow_root: bool) -> std::result::Result<(), String> {
    if s.is_empty() {
        return Err("it is empty; give an absolute path such as /services/memcached/1".into());
    }
    if s.len() > MAX_KEY_LEN {
        return Err(format!(
            "it is {} bytes long; the limit is {MAX_KEY_LEN}",
            s.len()
        ));
    }
    if !s.starts_with('/') {
        return Err(format!("it must start with '/' (did you mean /{s}?)"));
    }
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!(
            "it contains the control character {:?}; keys must be printable",
            c
        ));
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace()) {
        return Err(format!("it contains whitespace ({c:?}); keys must not"));
    }
    if s == "/" {
        return if allow_root {
            Ok(())
        } else {
            Err("it is just '/'; name the key under it, such as /services/memcached/1".into())
        };
    }
    if s.ends_with('/') {
        return Err(format!(
            "it ends with '/'; drop it ({})",
            s.trim_end_matches('/')
        ));
    }
    if s.contains("//") {
        return Err("it has an empty segment ('//')".into());
    }
    Ok(())
}

/// Keep error messages readable when someone passes a megabyte of key.
fn shorten(s: &str) -> String {
    const KEEP: usize = 80;
    if s.len() <= KEEP {
        return s.to_owned();
    }
    let mut cut = KEEP;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &s[..cut], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in [
            "/a",
            "/services/memcached/1",
            "/services/été/1",
            "/a-b_c.d/e:f",
        ] {
            assert!(validate_key(good).is_ok(), "{good}");
        }
        let long = format!("/{}", "a".repeat(MAX_KEY_LEN));
        for (bad, why) in [
            ("", "empty"),
            ("/", "just '/'"),
            ("a/b", "start with '/'"),
            ("/a//b", "empty segment"),
            ("/a/", "ends with '/'"),
            ("/a b", "whitespace"),
            ("/a\tb", "control"),
            ("/a\u{7f}", "control"),
            ("/a\u{a0}b", "whitespace"),
            (long.as_str(), "limit"),
        ] {
            let e = validate_key(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn prefixes_are_directories() {
        let p = Prefix::new("/services/couchbase/").unwrap();
        assert_eq!(p.as_str(), "/services/couchbase");
        assert_eq!(p, Prefix::new("/services/couchbase").unwrap());
        assert!(p.contains(b"/services/couchbase/1"));
        assert!(!p.contains(b"/services/couchbase"));
        assert!(!p.contains(b"/services/couchbase/"));
        assert!(!p.contains(b"/services/couchbase-old/1"));
        let (start, end) = p.dir_range();
        assert_eq!(start, b"/services/couchbase/");
        assert_eq!(end, b"/services/couchbase0");
        assert!(p.covers(b"/services/couchbase"));
        assert!(!p.covers(b"/services/couchbase-old"));

        let root = Prefix::new("/").unwrap();
        assert_eq!(root.dir(), "/");
        assert!(root.contains(b"/x"));
        assert_eq!(root.dir_range(), (b"/".to_vec(), b"0".to_vec()));
        assert!(Prefix::new("//").is_err());
        assert!(Prefix::new("relative").is_err());
    }

    #[test]
    fn range_end_carries() {
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b"\xff\xff"), vec![0]);
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        /// Every byte string is either a key that round-trips unchanged (as
        /// a key and as a directory prefix) and obeys every rule, or is
        /// refused with a message; nothing panics. Bytes that are not UTF-8
        /// never become a key (the tools take keys as text).
        #[test]
        fn any_bytes_are_accepted_or_refused(bytes in proptest::prop_oneof![
            proptest::collection::vec(proptest::num::u8::ANY, 0..48),
            "\\PC{0,40}".prop_map(String::into_bytes),
            "(/[a-z0-9 \t.-]{0,6}){0,5}/?".prop_map(String::into_bytes),
        ]) {
            let Ok(s) = std::str::from_utf8(&bytes) else {
                return Ok(());
            };
            match validate_key(s) {
                Ok(()) => {
                    proptest::prop_assert!(s.starts_with('/') && !s.ends_with('/'), "{s:?}");
                    proptest::prop_assert!(!s.contains("//"), "{s:?}");
                    proptest::prop_assert!(!s.chars().any(|c| c.is_whitespace() || c.is_control()), "{s:?}");
                    proptest::prop_assert!(s.len() <= MAX_KEY_LEN);
                    let p = Prefix::new(s).unwrap();
                    proptest::prop_assert_eq!(p.as_str(), s);
                    proptest::prop_assert!(p.covers(s.as_bytes()));
                    let (child, sibling) = (format!("{s}/x"), format!("{s}-x/y"));
                    proptest::prop_assert!(p.contains(child.as_bytes()));
                    proptest::prop_assert!(!p.contains(sibling.as_bytes()));
                }
                Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
