//! Docker's event stream as both loops follow it (`--container` and
//! `--all`): subscribed from the last event seen, so a resubscription
//! misses nothing; given up, with Docker's connection remade, when it
//! fails, ends (a daemon restart) or a request finds Docker unreachable;
//! subscribed again with backoff.

use std::pin::Pin;

use bollard::errors::Error as BollardError;
use bollard::models::EventMessage;
use discovery::Backoff;
use futures::{Stream, StreamExt};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::decide::{EventMeaning, meaning};
use super::docker::{DockerConn, DockerError, DockerEvent};
use super::{SINCE_MARGIN, now_nanos};

type Events = Pin<Box<dyn Stream<Item = Result<EventMessage, BollardError>> + Send>>;

/// The event subscription of one loop.
pub(crate) struct EventFeed {
    /// The subscription, while there is one.
    stream: Option<Events>,
    /// When to subscribe again while there is no stream.
    resubscribe_at: Instant,
    /// Delays between subscriptions that fail; reset once a look at
    /// Docker after a subscription worked.
    backoff: Backoff,
    /// `timeNano` of the last event, to resubscribe from.
    since: Option<i64>,
    /// Events at or before this time (ns) are already reflected by the
    /// look (inspect or resync) that followed the last subscription: when
    /// Docker replays them they only ask for another look, so an old `die`
    /// cannot withdraw a container that runs again.
    fresh_after: i64,
}

impl EventFeed {
    /// No subscription yet; the first is due at once.
    pub(crate) fn new() -> Self {
        Self {
            stream: None,
            resubscribe_at: Instant::now(),
            backoff: Backoff::for_watch(),
            since: None,
            fresh_after: 0,
        }
    }

    /// Whether events are flowing.
    pub(crate) fn is_live(&self) -> bool {
        self.stream.is_some()
    }

    /// When the next subscription is due, while there is none.
    pub(crate) fn resubscribe_at(&self) -> Option<Instant> {
        self.stream.is_none().then_some(self.resubscribe_at)
    }

    /// Subscribe if there is no stream and it is time: `Ok(true)` for a new
    /// subscription, after which the caller looks at Docker and, if that
    /// worked, calls [`EventFeed::settled`]. An error schedules the next try.
    ///
    /// bollard sends the request only when the stream is first polled,
    /// after the caller's look; `since` (the last event seen, or a moment
    /// before now) makes Docker replay whatever happened in between.
    pub(crate) async fn subscribe(&mut self, docker: &mut DockerConn) -> Result<bool, DockerError> {
        if self.stream.is_some() || Instant::now() < self.resubscribe_at {
            return Ok(false);
        }
        let since = self
            .since
            .unwrap_or_else(|| now_nanos().saturating_sub(SINCE_MARGIN.as_nanos() as i64));
        match docker.events(Some(since)).await {
            Ok(s) => {
                debug!(since, "following Docker events");
                // Covered from here on: a later subscription starts here,
                // or at the last event if later.
                self.since = Some(since);
                self.stream = Some(Box::pin(s));
                Ok(true)
            }
            Err(e) => {
                self.resubscribe_at = Instant::now() + self.backoff.next_delay();
                Err(e)
            }
        }
    }

    /// The look after a subscription worked: events up to now are known.
    pub(crate) fn settled(&mut self) {
        self.backoff.reset();
        self.fresh_after = now_nanos();
    }

    /// Give the stream up and remake Docker's connection; subscribe again
    /// after a backoff.
    pub(crate) fn lost(&mut self, docker: &mut DockerConn) {
        self.stream = None;
        docker.reset();
        self.resubscribe_at = Instant::now() + self.backoff.next_delay();
    }

    /// The next event; `None` when the stream failed or ended (logged),
    /// and then the caller gives it up with [`EventFeed::lost`]. Never,
    /// without a stream.
    pub(crate) async fn next(&mut self) -> Option<DockerEvent> {
        let Some(s) = self.stream.as_mut() else {
            return std::future::pending().await;
        };
        match s.next().await {
            Some(Ok(msg)) => {
                let e = DockerEvent::from_message(&msg);
                if e.time_nano > 0 {
                    self.since = Some(e.time_nano);
                }
                Some(e)
            }
            Some(Err(e)) => {
                warn!(error = %discovery::error_chain(&e), "Docker event stream failed; resubscribing");
                None
            }
            None => {
                warn!(
                    "Docker event stream ended (daemon restarted?); resubscribing and looking again"
                );
                None
            }
        }
    }

    /// What `e` means here: a replay of what the last look already saw
    /// only asks for another look.
    pub(crate) fn meaning(&self, e: &DockerEvent) -> EventMeaning {
        let what = meaning(&e.kind, &e.action, e.signal.as_deref());
        if e.time_nano > 0 && e.time_nano <= self.fresh_after && what != EventMeaning::Ignore {
            EventMeaning::Recheck
        } else {
            what
        }
    }
}
