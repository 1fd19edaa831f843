//! How a stream ended, and what the engine remembers about failures
//! between streams, as plain data with no connection in it: what a failed
//! or cancelled stream means (the one policy for every watch of this
//! crate, the registration's watch on its own key included), and the
//! record of an outage (since when, how many attempts, how long to wait
//! next). The engine acts on the verdicts.

use std::time::{Duration, SystemTime};

use crate::error::{Class, Error};
use crate::retry::Backoff;

/// How a stream ended.
pub(super) enum Flow {
    /// Resume from `rev + 1` after backing off.
    Reconnect(String),
    /// etcd compacted history past `rev`: re-list and diff.
    Compacted(i64),
    /// The member answered a progress request with a revision below `rev`:
    /// it does not have what this watch already applied (it lags, or its
    /// history differs), and a stream on it would wait, silent, for
    /// revisions it may never reach. Leave it; if every member says so,
    /// etcd's history went back (a restore from a snapshot): re-list.
    Behind(i64),
    /// Cancelled or the consumer went away.
    Stop,
}

/// What to do about a failed or cancelled stream.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Authenticate again on the member that refused, then resume there.
    Reauthenticate(String),
    /// Back off and resume from `rev + 1`, on another member.
    Reconnect(String),
    /// The history after `rev` is gone: re-list and send the difference.
    Compacted,
    /// Nothing will make this watch work: stop with this error.
    Fatal(Error),
}

/// How the last streams failed: what turns a refusal or a lagging member
/// from a retry into something else.
#[derive(Debug, Default)]
pub(super) struct Trouble {
    /// The token was refreshed after a refusal and no stream has worked
    /// since: a second permission refusal is real.
    reauthenticated: bool,
    /// Streams in a row whose member was behind `rev`: once every member
    /// has been, etcd's history itself went back.
    behind: usize,
}

impl Trouble {
    /// What a failure of `class` (described by `why`) means for a watch on
    /// `prefix`.
    pub(super) fn judge(&mut self, class: Class, why: String, prefix: &str) -> Verdict {
        match class {
            // etcd forgot our token (a restart, or its TTL): a fresh one,
            // then the same member again, as often as it takes (the
            // reconnect is backed off).
            Class::StaleToken => {
                self.reauthenticated = true;
                Verdict::Reauthenticate(format!("{why}; authenticated again"))
            }
            // etcd 3.4 refuses a watch made with a forgotten token as it
            // refuses one the user may not make: once more with a fresh
            // token; a second refusal with no working stream between is real.
            Class::PermissionDenied if !self.reauthenticated => {
                self.reauthenticated = true;
                Verdict::Reauthenticate(format!("{why}; authenticated again"))
            }
            Class::PermissionDenied => Verdict::Fatal(Error::PermissionDenied {
                op: "watch",
                key: prefix.to_owned(),
                reason: why,
            }),
            Class::Unauthenticated | Class::Fatal | Class::FutureRevision => {
                Verdict::Fatal(Error::request("watch", etcd_client::Error::WatchError(why)))
            }
            // etcd may refuse the start revision this way rather than with
            // a compact_revision in a response: the same resync applies.
            Class::Compacted => Verdict::Compacted,
            Class::Unavailable | Class::Transient | Class::LeaseNotFound => Verdict::Reconnect(why),
        }
    }

    /// A stream answered with something other than a cancel: the token
    /// works.
    pub(super) fn answered(&mut self) {
        self.reauthenticated = false;
    }

    /// True while a fresh token has not yet been shown to work (so the
    /// member that refused is not to be avoided).
    pub(super) fn reauthenticating(&self) -> bool {
        self.reauthenticated
    }

    /// A member delivered events, or answered a progress request at or
    /// past `rev`: the history is where the watch left it.
    pub(super) fn caught_up(&mut self) {
        self.behind = 0;
    }

    /// A member answered behind `rev`. True when each of the `members` has
    /// in a row: the history went back for all of them (a restore), and a
    /// re-listing is the only way on (the count starts over).
    pub(super) fn behind(&mut self, members: usize) -> bool {
        self.behind += 1;
        if self.behind >= members {
            self.behind = 0;
            return true;
        }
        false
    }
}

/// The record of one outage: from the first broken stream to the next live
/// one.
#[derive(Debug)]
pub(super) struct Outage {
    /// Delays between reconnects, reset when a stream is live again.
    backoff: Backoff,
    /// When the stream first broke, for the status and the "resumed" log.
    since: Option<SystemTime>,
    /// Reconnects since the last live stream.
    attempt: u32,
}

/// One more failed attempt: when the outage began, which attempt this was,
/// and how long to wait before the next.
#[derive(Debug)]
pub(super) struct Attempt {
    /// When the outage began.
    pub(super) since: SystemTime,
    /// 1 for the first failure after a live stream.
    pub(super) number: u32,
    /// The backoff delay to sleep now.
    pub(super) delay: Duration,
}

impl Outage {
    /// No outage yet, with `backoff` for the delays of the next one.
    pub(super) fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            since: None,
            attempt: 0,
        }
    }

    /// A stream failed, or could not be opened.
    pub(super) fn failed(&mut self) -> Attempt {
        self.attempt += 1;
        Attempt {
            since: *self.since.get_or_insert_with(SystemTime::now),
            number: self.attempt,
            delay: self.backoff.next_delay(),
        }
    }

    /// A stream is live again: the attempts it took if there was an outage.
    pub(super) fn ended(&mut self) -> Option<u32> {
        let attempts = self.since.take().map(|_| self.attempt);
        self.attempt = 0;
        self.backoff.reset();
        attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_retried_once_with_a_fresh_token_then_final() {
        let mut t = Trouble::default();
        let first = t.judge(Class::PermissionDenied, "denied".into(), "/p");
        assert!(matches!(first, Verdict::Reauthenticate(ref w) if w.contains("denied")));
        assert!(t.reauthenticating());
        let second = t.judge(Class::PermissionDenied, "denied".into(), "/p");
        assert!(
            matches!(second, Verdict::Fatal(Error::PermissionDenied { ref key, .. }) if key == "/p"),
            "{second:?}"
        );
    }

    #[test]
    fn a_working_stream_between_two_refusals_makes_the_second_a_retry_too() {
        let mut t = Trouble::default();
        t.judge(Class::PermissionDenied, "denied".into(), "/p");
        t.answered();
        assert!(!t.reauthenticating());
        let again = t.judge(Class::PermissionDenied, "denied".into(), "/p");
        assert!(matches!(again, Verdict::Reauthenticate(_)), "{again:?}");
    }

    #[test]
    fn a_stale_token_is_retried_as_often_as_it_happens() {
        let mut t = Trouble::default();
        for _ in 0..5 {
            let v = t.judge(Class::StaleToken, "token".into(), "/p");
            assert!(matches!(v, Verdict::Reauthenticate(_)), "{v:?}");
        }
    }

    #[test]
    fn each_class_has_its_verdict() {
        let mut t = Trouble::default();
        let mut judge = |c| t.judge(c, "why".into(), "/p");
        assert!(matches!(judge(Class::Compacted), Verdict::Compacted));
        for c in [Class::Unavailable, Class::Transient, Class::LeaseNotFound] {
            assert!(matches!(judge(c), Verdict::Reconnect(ref w) if w == "why"));
        }
        for c in [Class::Unauthenticated, Class::Fatal, Class::FutureRevision] {
            assert!(matches!(judge(c), Verdict::Fatal(_)));
        }
    }

    #[test]
    fn only_every_member_behind_in_a_row_means_the_history_went_back() {
        let mut t = Trouble::default();
        assert!(!t.behind(3));
        assert!(!t.behind(3));
        t.caught_up();
        assert!(!t.behind(3));
        assert!(!t.behind(3));
        assert!(t.behind(3));
        // The count starts over after a re-listing.
        assert!(!t.behind(3));
        // A single member is the whole cluster.
        assert!(Trouble::default().behind(1));
    }

    #[test]
    fn an_outage_counts_its_attempts_from_its_first_failure() {
        let mut o = Outage::new(Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(400),
        ));
        assert_eq!(o.ended(), None, "no outage, nothing to report");
        let a = o.failed();
        let b = o.failed();
        assert_eq!((a.number, b.number), (1, 2));
        assert_eq!(a.since, b.since, "one outage, one start");
        assert!(a.delay >= Duration::from_millis(100) && a.delay <= Duration::from_millis(200));
        assert!(b.delay >= Duration::from_millis(200), "{:?}", b.delay);
        assert_eq!(o.ended(), Some(2));
        let c = o.failed();
        assert_eq!(c.number, 1, "a new outage counts from one");
        assert!(
            c.delay <= Duration::from_millis(200),
            "the backoff starts over: {:?}",
            c.delay
        );
    }
}
