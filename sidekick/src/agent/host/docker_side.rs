//! What Docker tells the host agent: an event that names a container
//! (`on_event`), the safety resync that lists the running containers and
//! inspects only those that changed (`resync`), and the inspects in flight
//! (`inspect_soon`, `inspect`).

use super::*;

impl HostAgent {
    pub(super) async fn on_event(&mut self, e: &DockerEvent) -> anyhow::Result<()> {
        let id = &e.container_id;
        if id.is_empty() {
            return Ok(());
        }
        let what = self.feed.meaning(e);
        let tracked = self.tracked.contains_key(id);
        match what {
            EventMeaning::Ignore => {}
            EventMeaning::Down if tracked => {
                if e.action == "destroy" {
                    self.forget(id);
                } else if let Some(t) = self.tracked.get_mut(id) {
                    t.draining = Some((t.started_at.clone(), Instant::now()));
                    if !t.wants.is_empty() {
                        info!(container = %t.name, event = %e.action, signal = ?e.signal, "container going down; keys withdrawn");
                    }
                    t.wants.clear();
                }
                self.publish();
            }
            // Not tracked, but an inspect is in flight (it started a moment
            // ago): that inspect may predate the stop, so look again.
            EventMeaning::Down if self.inspect_seq.contains_key(id) => {
                self.inspect_soon(id).await?;
            }
            EventMeaning::Down => {}
            // An untracked container matters on start (it may have just
            // been created with labels, or with SERVICE_* in its
            // environment), or when its event shows our labels.
            EventMeaning::Up | EventMeaning::Recheck
                if tracked || e.labelled || e.action == "start" =>
            {
                if let Some(t) = self.tracked.get_mut(id) {
                    if what == EventMeaning::Up {
                        t.draining = None;
                    }
                    t.fingerprint.clear();
                }
                self.ignored.remove(id);
                self.inspect_soon(id).await?;
            }
            EventMeaning::Up | EventMeaning::Recheck => {}
        }
        Ok(())
    }

    /// List the running containers; inspect the ones that are new or
    /// changed, and the tracked ones that are gone. Returns whether Docker
    /// answered.
    pub(super) async fn resync(&mut self) -> anyhow::Result<bool> {
        let list = match self.docker.list_running().await {
            Ok(l) => l,
            Err(DockerError::Refused(m)) => return Err(usage(m)),
            Err(e) => {
                self.docker_down(&e);
                return Ok(false);
            }
        };
        let mut running: HashMap<String, String> = HashMap::new();
        let mut to_inspect = Vec::new();
        for s in list {
            let known = self
                .tracked
                .get(&s.id)
                .map(|t| &t.fingerprint)
                .or_else(|| self.ignored.get(&s.id));
            if known != Some(&s.fingerprint) {
                to_inspect.push(s.id.clone());
            }
            running.insert(s.id, s.fingerprint);
        }
        // Gone since: stopped or removed while we were not looking.
        to_inspect.extend(
            self.tracked
                .keys()
                .filter(|id| !running.contains_key(*id))
                .cloned(),
        );
        self.ignored.retain(|id, _| running.contains_key(id));
        let n = to_inspect.len();
        for id in to_inspect {
            if self.group.is_some() {
                // Running: never block the event loop on a resync (a
                // hundred inspects on a busy engine take seconds, and a
                // stop meanwhile must still be a delete within
                // milliseconds). The fingerprint is noted when it applies.
                let fp = running.get(&id).cloned().unwrap_or_default();
                self.resync_fp.insert(id.clone(), fp);
                self.inspect_soon(&id).await?;
                continue;
            }
            if !self.inspect(&id).await? {
                return Ok(false);
            }
            if let Some(fp) = running.get(&id) {
                if let Some(t) = self.tracked.get_mut(&id) {
                    t.fingerprint = fp.clone();
                } else {
                    self.ignored.insert(id, fp.clone());
                }
            }
        }
        debug!(
            running = running.len(),
            inspected = n,
            "resynced with docker ps"
        );
        self.publish();
        Ok(true)
    }

    /// Start an inspect of `id` without waiting for it: its result is
    /// applied when it comes, unless a newer one was asked for meanwhile.
    pub(super) async fn inspect_soon(&mut self, id: &str) -> anyhow::Result<()> {
        match self.docker.inspect_later(id).await {
            Ok(fut) => {
                let seq = self.inspect_seq.entry(id.to_owned()).or_default();
                *seq += 1;
                let (id, seq) = (id.to_owned(), *seq);
                self.inflight
                    .push(Box::pin(async move { (id, seq, fut.await) }));
                Ok(())
            }
            Err(DockerError::Refused(m)) => Err(usage(m)),
            Err(e) => {
                self.docker_down(&e);
                Ok(())
            }
        }
    }

    /// Inspect one container now and record what it wants. Returns
    /// whether Docker answered.
    pub(super) async fn inspect(&mut self, id: &str) -> anyhow::Result<bool> {
        // Supersedes any inspect in flight for it.
        self.inspect_seq.remove(id);
        let view = match self.docker.inspect(id).await {
            Ok(v) => v,
            Err(DockerError::Refused(m)) => return Err(usage(m)),
            Err(e) => {
                self.docker_down(&e);
                return Ok(false);
            }
        };
        self.apply(id, view);
        Ok(true)
    }

    pub(super) fn forget(&mut self, id: &str) {
        if let Some(t) = self.tracked.remove(id) {
            debug!(container = %t.name, "no longer tracked");
        }
        self.logged.remove(id);
        self.conflicts.remove(id);
    }
}
