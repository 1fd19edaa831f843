//! What Docker's answers become: a container's view (inspect), a summary
//! of a running one (`docker ps`), and an event.

use std::collections::BTreeMap;

use bollard::models::{EventMessage, HealthStatusEnum};

use crate::agent::decide::{ContainerView, NetAddrs};

pub(super) fn view(c: bollard::models::ContainerInspectResponse) -> ContainerView {
    let state = c.state.unwrap_or_default();
    let health = state.health.and_then(|h| h.status).and_then(|s| match s {
        HealthStatusEnum::HEALTHY => Some("healthy".to_owned()),
        HealthStatusEnum::UNHEALTHY => Some("unhealthy".to_owned()),
        HealthStatusEnum::STARTING => Some("starting".to_owned()),
        HealthStatusEnum::NONE | HealthStatusEnum::EMPTY => None,
    });
    let settings = c.network_settings.unwrap_or_default();
    let networks = settings
        .networks
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| {
            let addrs = NetAddrs {
                v4: ep.ip_address.as_deref().and_then(|a| a.parse().ok()),
                v6: ep
                    .global_ipv6_address
                    .as_deref()
                    .and_then(|a| a.parse().ok()),
            };
            (name, addrs)
        })
        .collect();
    let mut published: BTreeMap<u16, Vec<u16>> = BTreeMap::new();
    for (spec, bindings) in settings.ports.unwrap_or_default() {
        let Some(port) = spec
            .strip_suffix("/tcp")
            .and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        let mut hosts: Vec<u16> = bindings
            .unwrap_or_default()
            .iter()
            .filter_map(|b| b.host_port.as_deref()?.parse().ok())
            .collect();
        hosts.sort_unstable();
        hosts.dedup();
        if !hosts.is_empty() {
            published.insert(port, hosts);
        }
    }
    let config = c.config.unwrap_or_default();
    let mut exposed: Vec<u16> = config
        .exposed_ports
        .clone()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.strip_suffix("/tcp")?.parse().ok())
        .chain(published.keys().copied())
        .collect();
    exposed.sort_unstable();
    exposed.dedup();
    ContainerView {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        running: state.running.unwrap_or(false),
        paused: state.paused.unwrap_or(false),
        restarting: state.restarting.unwrap_or(false),
        started_at: state.started_at.unwrap_or_default(),
        networks,
        health,
        published,
        exposed,
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        env: config.env.unwrap_or_default(),
    }
}

/// What `docker ps` says of a running container: enough to tell, at a
/// resync, whether it changed since it was last inspected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The full id.
    pub id: String,
    /// The name, without the leading `/`.
    pub name: String,
    /// What must not have changed since the last inspect: networks and
    /// their addresses (IPv4 and IPv6), published ports, health, labels.
    pub fingerprint: String,
}

pub(super) fn summarize(c: bollard::models::ContainerSummary) -> Summary {
    let networks: BTreeMap<String, (String, String)> = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| {
            let addrs = (
                ep.ip_address.unwrap_or_default(),
                ep.global_ipv6_address.unwrap_or_default(),
            );
            (name, addrs)
        })
        .collect();
    let mut ports: Vec<(u16, u16)> = c
        .ports
        .unwrap_or_default()
        .iter()
        .filter_map(|p| Some((p.private_port, p.public_port?)))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let status = c.status.unwrap_or_default();
    let health = ["(healthy)", "(unhealthy)", "(health: starting)"]
        .into_iter()
        .find(|h| status.contains(h))
        .unwrap_or("");
    let labels: BTreeMap<String, String> = c.labels.unwrap_or_default().into_iter().collect();
    Summary {
        id: c.id.unwrap_or_default(),
        name: c
            .names
            .unwrap_or_default()
            .first()
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default(),
        fingerprint: format!("{networks:?} {ports:?} {health} {labels:?}"),
    }
}

/// What an event says, reduced to what the sidekick needs.
#[derive(Debug, Clone)]
pub struct DockerEvent {
    /// `container` or `network`.
    pub kind: String,
    /// `start`, `die`, `health_status: healthy`, `connect`, ...
    pub action: String,
    /// The container's id (the actor for container events, the
    /// `container` attribute for network events).
    pub container_id: String,
    /// The container's name, when the event carries it.
    pub container_name: Option<String>,
    /// Whether the event's attributes carry a `discovery.key` label or a
    /// registrator `SERVICE_*` label (container events carry every label).
    pub labelled: bool,
    /// For `kill`: the signal sent.
    pub signal: Option<String>,
    /// The event's time in nanoseconds, for resubscribing.
    pub time_nano: i64,
}

impl DockerEvent {
    /// Reduce a bollard event.
    pub fn from_message(m: &EventMessage) -> Self {
        let kind = m.typ.map(|t| t.to_string()).unwrap_or_default();
        let actor = m.actor.clone().unwrap_or_default();
        let attrs = actor.attributes.unwrap_or_default();
        let (container_id, container_name) = if kind == "network" {
            (attrs.get("container").cloned().unwrap_or_default(), None)
        } else {
            (actor.id.unwrap_or_default(), attrs.get("name").cloned())
        };
        Self {
            kind,
            action: m.action.clone().unwrap_or_default(),
            container_id,
            container_name,
            labelled: attrs
                .keys()
                .any(|k| k.starts_with("discovery.") || k.starts_with("SERVICE_")),
            signal: attrs.get("signal").cloned(),
            time_nano: m
                .time_nano
                .or(m.time.map(|t| t * 1_000_000_000))
                .unwrap_or(0),
        }
    }

    /// Whether this event concerns the container called `name` (or with
    /// id `id`, once known).
    pub fn concerns(&self, name: &str, id: Option<&str>) -> bool {
        self.container_name.as_deref() == Some(name)
            || id.is_some_and(|id| !id.is_empty() && self.container_id == id)
            || (!self.container_id.is_empty()
                && self.container_id.starts_with(name)
                && name.len() >= 12)
    }
}
