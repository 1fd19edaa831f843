//! The one rule that turns service and instance names into DNS labels, and
//! what happens when two names end up on the same label.
//!
//! A name that already is a DNS label in lower case (letters, digits and
//! `-` inside, at most 63 bytes: RFC 1123's host name rule) is used as it
//! is. Any other name is mapped: ASCII letters lower-cased, each run of
//! other characters (`:`, `.`, `_`, `/`, spaces, non-ASCII) turned into one
//! `-`, a `-` at either end dropped, cut at 63 bytes. So registrator's
//! `node1:web-1:8080` is `node1-web-1-8080` and `Web.Blue` is `web-blue`.
//!
//! When two names end up on one label (`web.1` and `web-1`, or the same
//! instance name under two watched prefixes), neither gets it: each gets
//! the label followed by `-` and eight hex digits of a hash of what it
//! stands for (the etcd key of an instance, the name of a service), the
//! plain label answers NXDOMAIN, and the collision is reported. Nothing is
//! silently merged, and every instance stays reachable. A name that maps
//! to nothing at all (`___`) gets the hash alone, and is reported too.

use std::collections::BTreeMap;

/// The longest DNS label (RFC 1035 2.3.4).
pub const MAX_LABEL: usize = 63;

/// Whether `s` is already a lower-case host name label.
pub fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The label a name maps to before collisions are considered; empty when
/// nothing of it is left.
pub fn map(name: &str) -> String {
    if is_label(name) {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len().min(MAX_LABEL));
    let mut dash = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
            if out.len() >= MAX_LABEL {
                break;
            }
        } else {
            dash = true;
        }
    }
    out.truncate(MAX_LABEL);
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// FNV-1a, 32 bits: a hash that stays the same across builds and
/// platforms (std's hasher promises neither), so a disambiguated label
/// does not move when serve is upgraded.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `label-xxxxxxxx`, cut so that the whole stays a label.
fn hashed(label: &str, identity: &[u8]) -> String {
    let suffix = format!("{:08x}", fnv1a(identity));
    if label.is_empty() {
        return suffix;
    }
    let keep = label.len().min(MAX_LABEL - 1 - suffix.len());
    let head = label[..keep].trim_end_matches('-');
    format!("{head}-{suffix}")
}

/// Why a name did not get its plain label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clash {
    /// Other names map to the same label (their identities).
    With(Vec<String>),
    /// The name maps to no label at all.
    Empty,
}

/// The labels of a set of names, each name known by its identity (what
/// the hash is taken over: an etcd key, or a service name).
#[derive(Debug)]
pub struct Assigned<K> {
    /// Identity to label.
    pub labels: BTreeMap<K, String>,
    /// Identities that did not get their plain label, and why.
    pub clashes: BTreeMap<K, (String, Clash)>,
}

/// Give each `(identity, name)` its label by the rule above.
pub fn assign<K, I>(names: I) -> Assigned<K>
where
    K: Ord + Clone + AsRef<[u8]> + std::fmt::Display,
    I: IntoIterator<Item = (K, String)>,
{
    let mut by_label: BTreeMap<String, Vec<K>> = BTreeMap::new();
    for (id, name) in names {
        by_label.entry(map(&name)).or_default().push(id);
    }
    let mut labels = BTreeMap::new();
    let mut clashes = BTreeMap::new();
    for (label, ids) in by_label {
        if ids.len() == 1 && !label.is_empty() {
            labels.insert(ids[0].clone(), label);
            continue;
        }
        for id in &ids {
            let why = if label.is_empty() {
                Clash::Empty
            } else {
                Clash::With(
                    ids.iter()
                        .filter(|o| *o != id)
                        .map(ToString::to_string)
                        .collect(),
                )
            };
            let l = hashed(&label, id.as_ref());
            clashes.insert(id.clone(), (label.clone(), why));
            labels.insert(id.clone(), l);
        }
    }
    Assigned { labels, clashes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_pass_and_others_map_by_one_rule() {
        assert_eq!(map("web-1"), "web-1");
        assert_eq!(map("node1:web-1:8080"), "node1-web-1-8080");
        assert_eq!(map("Web.Blue"), "web-blue");
        assert_eq!(map("__a__b__"), "a-b");
        assert_eq!(map("-x-"), "x");
        assert_eq!(map("a/b"), "a-b");
        assert_eq!(map("café"), "caf");
        assert_eq!(map("___"), "");
        let long = "A".repeat(100);
        assert_eq!(map(&long), "a".repeat(63));
        let edge = format!("{}.x", "a".repeat(62));
        assert_eq!(map(&edge), "a".repeat(62), "no trailing dash at the cut");
        for s in ["web-1", "node1-web-1-8080", "a-b", "x", "0"] {
            assert!(is_label(&map(s)), "{s}");
        }
    }

    #[test]
    fn a_collision_gives_every_party_a_hashed_label_and_is_reported() {
        let a = assign(vec![
            ("/s/web/web.1".to_owned(), "web.1".to_owned()),
            ("/s/web/web-1".to_owned(), "web-1".to_owned()),
            ("/s/web/2".to_owned(), "2".to_owned()),
            ("/s/web/___".to_owned(), "___".to_owned()),
        ]);
        assert_eq!(a.labels["/s/web/2"], "2");
        let l1 = &a.labels["/s/web/web.1"];
        let l2 = &a.labels["/s/web/web-1"];
        assert!(l1.starts_with("web-1-") && l2.starts_with("web-1-") && l1 != l2);
        assert!(is_label(l1) && is_label(l2));
        assert_eq!(
            a.clashes["/s/web/web.1"],
            (
                "web-1".to_owned(),
                Clash::With(vec!["/s/web/web-1".to_owned()])
            )
        );
        let e = &a.labels["/s/web/___"];
        assert_eq!(e.len(), 8);
        assert_eq!(a.clashes["/s/web/___"].1, Clash::Empty);
        assert_eq!(a.clashes.len(), 3);
        // Stable: the same input gives the same labels.
        let again = assign(vec![("/s/web/web.1".to_owned(), "web.1".to_owned())]);
        assert_eq!(again.labels["/s/web/web.1"], "web-1");
        assert_eq!(hashed("web-1", b"/s/web/web.1"), *l1);
    }

    #[test]
    fn hashed_labels_stay_labels_at_any_length() {
        let long = "b".repeat(63);
        let h = hashed(&long, b"k");
        assert_eq!(h.len(), 63);
        assert!(is_label(&h));
    }
}
