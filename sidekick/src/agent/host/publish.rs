//! What the host agent does with what it learnt: turn a container's view
//! into a registration or a problem (`apply`), write the group's desired
//! keys (`publish`), and say where it stands in logs, metrics and
//! `STATUS=` (`log_problems`, `report`).

use super::*;

impl HostAgent {
    /// Record what an inspect of `id` says the container wants.
    pub(super) fn apply(&mut self, id: &str, view: Option<ContainerView>) {
        let Some(view) = view else {
            self.forget(id);
            return;
        };
        let w = wanted(
            &view,
            &self.cfg.address,
            &self.cfg.prefix,
            &self.cfg.hostname,
        );
        let selected = match &self.cfg.only {
            None => true,
            Some((k, v)) => view
                .labels
                .get(k)
                .is_some_and(|have| v.as_ref().is_none_or(|v| v == have)),
        };
        if !selected || !w.opted_in() {
            self.forget(id);
            self.ignored.insert(id.to_owned(), String::new());
            return;
        }
        let t = self.tracked.entry(id.to_owned()).or_default();
        t.name = view.name.clone();
        t.started_at = view.started_at.clone();
        if let Some((run, since)) = &t.draining {
            if (!run.is_empty() && *run != view.started_at) || since.elapsed() > DRAIN_LIMIT {
                t.draining = None;
            }
        }
        t.problems = w.problems;
        t.wants.clear();
        for spec in w.specs {
            let format = ValueFormat {
                kind: spec.value,
                host: self.cfg.hostname.clone(),
            };
            let preferred = t.networks.get(&spec.key).map(String::as_str);
            match decide(&view, &spec.rules, t.draining.is_some(), preferred) {
                Decision::Register { ip, port, network } => {
                    t.networks.insert(spec.key.clone(), network);
                    t.wants
                        .insert(spec.key, format.render(&ip, port, Some(&view.name)));
                }
                Decision::Withdraw(reason) => {
                    debug!(container = %view.name, key = %spec.key, %reason, "not registering");
                }
                Decision::Misconfigured(m) => t.problems.push(m),
            }
        }
        if !t.problems.is_empty() {
            t.wants.clear();
        }
    }

    /// Decide who holds each key and hand the result to the lease group.
    /// A key stays with the container that holds it; a second container
    /// claiming it is a conflict, reported with the holder's name.
    pub(super) fn publish(&mut self) {
        let mut owners = BTreeMap::new();
        let mut desired: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut conflicts: HashMap<String, Vec<(String, String)>> = HashMap::new();
        // Current holders first, then the others by name: deterministic.
        let mut order: Vec<(&String, &Tracked)> = self.tracked.iter().collect();
        order.sort_by_key(|(id, t)| (!self.owners.values().any(|o| o == *id), t.name.clone()));
        for (id, t) in order {
            for (key, value) in &t.wants {
                match owners.get(key) {
                    Some(h) => {
                        let name = self
                            .tracked
                            .get(h)
                            .map(|o| o.name.clone())
                            .unwrap_or_default();
                        conflicts
                            .entry(id.clone())
                            .or_default()
                            .push((key.clone(), name));
                    }
                    None => {
                        owners.insert(key.clone(), id.clone());
                        desired.insert(key.clone(), value.clone().into_bytes());
                    }
                }
            }
        }
        self.owners = owners;
        self.conflicts = conflicts;
        if let Some(group) = &self.group {
            for k in self.desired.keys() {
                if !desired.contains_key(k) {
                    group.remove(k);
                }
            }
            for (k, v) in &desired {
                if self.desired.get(k) != Some(v) {
                    if let Err(e) = group.set(k, v.clone()) {
                        warn!(key = %k, error = %e, "cannot register this key");
                    }
                }
            }
        }
        self.desired = desired;
        self.log_problems();
    }

    /// Each container's problems, logged when they change.
    pub(super) fn log_problems(&mut self) {
        let mut counts = [0i64; 3];
        for (id, t) in &self.tracked {
            let mut problems = t.problems.clone();
            for (key, holder) in self.conflicts.get(id).into_iter().flatten() {
                problems.push(format!(
                    "key {key} is already registered by container {holder:?}; give each container its own key (use %n in discovery.key)"
                ));
            }
            let state = if !problems.is_empty() {
                2
            } else if t.wants.is_empty() {
                1
            } else {
                0
            };
            counts[state] += 1;
            if self.logged.get(id) != Some(&problems) {
                for p in &problems {
                    warn!(container = %t.name, problem = %p, "not registering this container");
                }
                self.logged.insert(id.clone(), problems);
            }
        }
        for (state, n) in ["registered", "withdrawn", "problem"].iter().zip(counts) {
            self.metrics
                .containers
                .get_or_create(&vec![("state".to_owned(), (*state).to_owned())])
                .set(n);
        }
    }

    /// STATUS=, READY=1 and `up`.
    pub(super) fn report(
        &mut self,
        notifier: &mut Notifier,
        group: Option<&watch::Receiver<GroupState>>,
    ) {
        let problems: Vec<String> = {
            let mut v: Vec<(&String, &Vec<String>)> =
                self.logged.iter().filter(|(_, p)| !p.is_empty()).collect();
            v.sort();
            v.into_iter()
                .filter_map(|(id, p)| {
                    let name = &self.tracked.get(id)?.name;
                    Some(format!("{name}: {}", p.join("; ")))
                })
                .collect()
        };
        let status = match group.map(|g| g.borrow().clone()) {
            None => "waiting for Docker to list the containers".to_owned(),
            Some(g) => {
                let mut s = match (&g.retrying, g.lease) {
                    (Some(e), _) => format!(
                        "etcd unreachable ({e}); retrying, {} of {} keys held",
                        g.held,
                        self.desired.len()
                    ),
                    (None, Some(lease)) => format!(
                        "registered {} of {} keys (lease {lease}, {} containers)",
                        g.held,
                        self.desired.len(),
                        self.tracked.len()
                    ),
                    (None, None) => "registering".to_owned(),
                };
                for (k, l) in &g.conflicts {
                    s.push_str(&format!("; {k} is held by another writer (lease {l})"));
                }
                for (k, r) in &g.refused {
                    s.push_str(&format!("; etcd refuses {k}: {r}"));
                }
                if g.synced && g.retrying.is_none() && !notifier.is_ready() {
                    info!(keys = g.held, "ready");
                    notifier.ready();
                }
                self.metrics
                    .up
                    .set(i64::from(g.lease.is_some() && g.retrying.is_none()));
                s
            }
        };
        let status = if problems.is_empty() {
            status
        } else {
            // STATUS= is one line of modest length.
            let mut all = problems.join(" | ");
            if all.len() > 400 {
                let mut cut = 400;
                while !all.is_char_boundary(cut) {
                    cut -= 1;
                }
                all.truncate(cut);
                all.push('…');
            }
            format!("{status}; {} with problems: {all}", problems.len())
        };
        if status != self.status {
            notifier.status(&status);
            self.status = status;
        }
    }
}
