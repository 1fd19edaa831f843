//! What a failed or cancelled watch stream means, and what the engine does
//! about it: the one policy for every watch of this crate, the
//! registration's watch on its own key included (a stale token, a
//! permission refusal, a compaction, an unavailable member).

use tracing::debug;

use super::engine::{Engine, Flow};
use crate::error::{Class, Error, Result};

impl Engine {
    /// What a failed or cancelled stream means, and what to do about it:
    /// the one policy for every watch of this crate (the registration's
    /// watch on its own key is one too). `member` is the pool's index of
    /// the member that served the stream, if one did.
    pub(super) async fn failed(
        &mut self,
        class: Class,
        why: String,
        member: Option<usize>,
    ) -> Result<Flow> {
        match class {
            // etcd forgot our token (a restart, or its TTL): a fresh one,
            // then the same member again, as often as it takes (the
            // reconnect is backed off).
            Class::StaleToken => {
                self.refresh_token(member).await;
                Ok(Flow::Reconnect(format!("{why}; authenticated again")))
            }
            // etcd 3.4 refuses a watch made with a forgotten token as it
            // refuses one the user may not make: once more with a fresh
            // token; a second refusal with no working stream between is real.
            Class::PermissionDenied if !self.reauthenticated => {
                self.refresh_token(member).await;
                Ok(Flow::Reconnect(format!("{why}; authenticated again")))
            }
            Class::PermissionDenied => Err(Error::PermissionDenied {
                op: "watch",
                key: self.prefix.to_string(),
                reason: why,
            }),
            Class::Unauthenticated | Class::Fatal | Class::FutureRevision => {
                Err(Error::request("watch", etcd_client::Error::WatchError(why)))
            }
            // etcd may refuse the start revision this way rather than with
            // a compact_revision in a response: the same resync applies.
            Class::Compacted => Ok(Flow::Compacted(0)),
            Class::Unavailable | Class::Transient | Class::LeaseNotFound => {
                Ok(Flow::Reconnect(why))
            }
        }
    }

    async fn refresh_token(&mut self, member: Option<usize>) {
        self.reauthenticated = true;
        if let Some(i) = member {
            let refresh = self.client.pool().refresh_token(i);
            if tokio::time::timeout(self.client.request_timeout(), refresh)
                .await
                .is_err()
            {
                debug!(prefix = %self.prefix, "no answer to the token refresh in time");
            }
        }
    }
}
