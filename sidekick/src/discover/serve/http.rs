//! Prometheus HTTP service discovery (`http_sd_configs`) from the same
//! zone the DNS answers come from: `GET /prometheus` lists every instance,
//! `GET /prometheus/SERVICE` one service's (by its registered name or its
//! DNS label). Served beside `/metrics` by the shared metrics server.
//!
//! One target group per address, so that each target carries its own
//! `__meta_discovery_service`, `__meta_discovery_instance`,
//! `__meta_discovery_key`, `__meta_discovery_prefix` and
//! `__meta_discovery_name` (its DNS name). An address without a port is
//! given as the bare IP (Prometheus adds the scheme's port; relabel
//! `__address__` to choose another).

use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use discovery::Prefix;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::health::Health;
use super::zone::{Service, Zone};
use crate::common::metrics::Routes;

/// The `/prometheus` routes.
pub fn routes(zone: Arc<ArcSwap<Zone>>, health: Arc<Health>, prefixes: Arc<Vec<Prefix>>) -> Routes {
    Arc::new(move |req: &Request<Incoming>| {
        let path = req.uri().path();
        let service = match path.strip_prefix("/prometheus") {
            Some("" | "/") => None,
            Some(rest) => match rest.strip_prefix('/') {
                Some(s) => Some(percent_decode(s)),
                None => return None,
            },
            None => return None,
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Some(text(
                StatusCode::METHOD_NOT_ALLOWED,
                "try GET /prometheus or /prometheus/SERVICE\n",
            ));
        }
        if !health.answerable() {
            // Prometheus keeps the targets it has when a refresh fails.
            let why = if health.is_ready() {
                "the state is older than --max-stale (etcd unreachable)\n"
            } else {
                "no snapshot of etcd yet\n"
            };
            return Some(text(StatusCode::SERVICE_UNAVAILABLE, why));
        }
        let z = zone.load();
        let mut groups = Vec::new();
        let mut services: Vec<&Arc<Service>> = z
            .services
            .values()
            .filter(|s| match &service {
                None => true,
                Some(want) => s.name == *want || s.label == *want,
            })
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        for s in services {
            groups.extend(target_groups(s, &z, &prefixes));
        }
        let body = if req.method() == Method::HEAD {
            Bytes::new()
        } else {
            Bytes::from(Value::Array(groups).to_string())
        };
        let mut r = Response::new(Full::new(body));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Some(r)
    })
}

/// One service's Prometheus target groups: one per instance, with its labels.
fn target_groups<'a>(
    s: &'a Service,
    z: &'a Zone,
    prefixes: &'a [Prefix],
) -> impl Iterator<Item = Value> + 'a {
    s.members.iter().flat_map(move |m| {
        let name = format!("{}.{}.{}", m.label, s.label, z.origin);
        let prefix = prefixes
            .get(m.prefix)
            .map(Prefix::as_str)
            .unwrap_or_default();
        m.addrs.iter().map(move |a| {
            let target = match (a.ip, a.port) {
                (std::net::IpAddr::V6(ip), Some(p)) => format!("[{ip}]:{p}"),
                (std::net::IpAddr::V6(ip), None) => format!("[{ip}]"),
                (ip, Some(p)) => format!("{ip}:{p}"),
                (ip, None) => ip.to_string(),
            };
            json!({
                "targets": [target],
                "labels": {
                    "__meta_discovery_service": s.name,
                    "__meta_discovery_instance": m.instance,
                    "__meta_discovery_key": m.key,
                    "__meta_discovery_prefix": prefix,
                    "__meta_discovery_name": name.trim_end_matches('.'),
                }
            })
        })
    })
}

/// A plain-text response with `status`.
fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// `%XX` escapes in a path segment (a service name with a space or `:`).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_decode() {
        assert_eq!(percent_decode("web%20blue"), "web blue");
        assert_eq!(percent_decode("a%3Ab"), "a:b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
