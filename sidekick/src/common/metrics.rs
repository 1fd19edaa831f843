//! Prometheus metrics (`--metrics-addr`), in the text exposition format.
//!
//! The library knows nothing of Prometheus; the binaries derive these
//! counters from the library's state channels and streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A metric's labels, as `(name, value)` pairs.
pub type Labels = Vec<(String, String)>;

/// Every metric either tool exports.
#[derive(Debug)]
pub struct Metrics {
    /// Every series below, registered once, for [`Metrics::render`].
    registry: Registry,
    /// Successful registrations (a value confirmed in etcd).
    pub registrations: Counter,
    /// Leases granted (or adopted).
    pub lease_grants: Counter,
    /// Leases lost (expired or revoked behind our back).
    pub lease_losses: Counter,
    /// Registration attempts that etcd did not confirm (keep-alive or write failures).
    pub keepalive_failures: Counter,
    /// Watch streams that broke and were resumed.
    pub watch_reconnects: Counter,
    /// Compaction resyncs.
    pub watch_resyncs: Counter,
    /// Watch events by action (set, update, delete).
    pub events: Family<Labels, Counter>,
    /// The three series of `events`, made once: counting is on every event's path.
    by_action: [Counter; 3],
    /// Child restarts and reload signals (discover --exec).
    pub child_restarts: Family<Labels, Counter>,
    /// 1 while registered (sidekick) or while every watch is live (discover).
    pub up: Gauge,
    /// `sidekick --all`: labelled containers by state (`registered`,
    /// `withdrawn`, `problem`: bad labels, a conflict or a refusal).
    pub containers: Family<Labels, Gauge>,
    /// Watches followed by [`Metrics::follow_watch`] that are not live.
    watches_down: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics at zero, named `sidekick_*`.
    pub fn new() -> Self {
        Self::with_prefix("sidekick")
    }

    /// All metrics at zero, named `{prefix}_*` (`sidekick` or `discover`).
    pub fn with_prefix(prefix: &str) -> Self {
        let mut registry = Registry::with_prefix(prefix);
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let registrations = counter(
            &mut registry,
            "registrations",
            "Values confirmed registered in etcd",
        );
        let lease_grants = counter(&mut registry, "lease_grants", "Leases granted or adopted");
        let lease_losses = counter(
            &mut registry,
            "lease_losses",
            "Leases lost (expired or revoked behind our back)",
        );
        let keepalive_failures = counter(
            &mut registry,
            "keepalive_failures",
            "Registration rounds etcd did not confirm (keep-alive or write failures)",
        );
        let watch_reconnects = counter(
            &mut registry,
            "watch_reconnects",
            "Watch streams resumed after a failure",
        );
        let watch_resyncs = counter(
            &mut registry,
            "watch_resyncs",
            "Re-lists after the history a watch needed was compacted, or went back (a restore)",
        );
        let events = Family::<Labels, Counter>::default();
        registry.register("events", "Watch events by action", events.clone());
        let by_action = ["set", "update", "delete"].map(|a| {
            events
                .get_or_create(&vec![("action".to_owned(), a.to_owned())])
                .clone()
        });
        let child_restarts = Family::<Labels, Counter>::default();
        registry.register(
            "child_restarts",
            "Child restarts and reload signals by kind",
            child_restarts.clone(),
        );
        let up = Gauge::default();
        registry.register(
            "up",
            "1 while registered (sidekick) or watching live (discover)",
            up.clone(),
        );
        let containers = Family::<Labels, Gauge>::default();
        registry.register(
            "containers",
            "sidekick --all: labelled containers by state (registered, withdrawn, problem)",
            containers.clone(),
        );
        Self {
            registry,
            containers,
            registrations,
            lease_grants,
            lease_losses,
            keepalive_failures,
            watch_reconnects,
            watch_resyncs,
            events,
            by_action,
            child_restarts,
            up,
            watches_down: AtomicI64::new(0),
        }
    }

    /// Register a counter family of one subcommand's own (such as
    /// `discover render`'s), before the metrics are shared.
    pub fn register_family(&mut self, name: &str, help: &str) -> Family<Labels, Counter> {
        let f = Family::<Labels, Counter>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    /// Register any metric of one subcommand's own (`discover serve`'s
    /// gauges and histogram), before the metrics are shared.
    pub fn register(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.register(name, help, metric);
    }

    /// Register a gauge family of one mode's own (such as sidekick's
    /// health checks'), before the metrics are shared.
    pub fn register_gauge_family(&mut self, name: &str, help: &str) -> Family<Labels, Gauge> {
        let f = Family::<Labels, Gauge>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    /// Count one watch event.
    pub fn event(&self, action: discovery::Action) {
        let i = match action {
            discovery::Action::Set => 0,
            discovery::Action::Update => 1,
            discovery::Action::Delete => 2,
            // An action this build does not know: not counted as another.
            _ => return,
        };
        self.by_action[i].inc();
    }

    /// Follow a watch's status: `up` is 1 while every followed watch is
    /// live, and each fall from live counts as a reconnect.
    pub fn follow_watch(
        self: &Arc<Self>,
        mut status: tokio::sync::watch::Receiver<discovery::WatchStatus>,
    ) {
        let m = self.clone();
        m.watch_went(false);
        tokio::spawn(async move {
            let mut live = false;
            loop {
                let now_live = matches!(
                    *status.borrow_and_update(),
                    discovery::WatchStatus::Live { .. }
                );
                if now_live != live {
                    if live {
                        m.watch_reconnects.inc();
                    }
                    live = now_live;
                    m.watch_went(live);
                }
                if status.changed().await.is_err() {
                    break;
                }
            }
            if live {
                m.watch_went(false);
            }
        });
    }

    /// One followed watch became live (`true`) or fell from live, or
    /// started or ended not live (`false`); `up` follows the count of
    /// watches down.
    fn watch_went(&self, live: bool) {
        let delta = if live { -1 } else { 1 };
        let down = self.watches_down.fetch_add(delta, Ordering::SeqCst) + delta;
        self.up.set(i64::from(down == 0));
    }

    /// Count one child restart (`restart`) or reload signal (`signal`).
    pub fn child_restart(&self, kind: &str) {
        self.child_restarts
            .get_or_create(&vec![("kind".to_owned(), kind.to_owned())])
            .inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The OpenMetrics content type prometheus-client writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Prometheus' classic text format, for scrapers that do not ask for
/// OpenMetrics: the same lines parse as it (`# EOF` is a comment there).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// More paths served beside `/metrics`, such as `discover serve`'s
/// `/prometheus`: `None` for a path it does not serve.
pub type Routes = Arc<dyn Fn(&Request<Incoming>) -> Option<Response<Full<Bytes>>> + Send + Sync>;

/// The answer to one request: `GET /metrics` (or `/`) in the format the
/// `Accept` header asks for, a route's answer, 404 for other paths, 405
/// for other methods.
fn respond(
    metrics: &Metrics,
    routes: Option<&Routes>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(r) = routes.and_then(|f| f(req)) {
        return r;
    }
    let plain = |status: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    };
    if !matches!(req.uri().path(), "/metrics" | "/") {
        return plain(StatusCode::NOT_FOUND, "try GET /metrics\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "try GET /metrics\n");
    }
    let wants_openmetrics = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let ctype = if wants_openmetrics {
        OPENMETRICS
    } else {
        PROMETHEUS_TEXT
    };
    let body = if req.method() == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(metrics.render())
    };
    let mut r = Response::new(Full::new(body));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// Bind `addr` now (so a bad address fails at startup) and serve
/// `GET /metrics` with hyper's HTTP/1 server until `stop` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving metrics at /metrics");
    Ok(serve_on(listener, metrics, None, stop))
}

/// Serve `/metrics` and `routes` on a bound listener until `stop`.
pub fn serve_on(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    routes: Option<Routes>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (sock, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of file descriptors, say: do not spin.
                        warn!(error = %e, "metrics accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let metrics = metrics.clone();
            let routes = routes.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let r = respond(&metrics, routes.as_ref(), &req);
                    debug!(%peer, path = req.uri().path(), status = r.status().as_u16(), "metrics request");
                    std::future::ready(Ok::<_, std::convert::Infallible>(r))
                });
                let conn = http1::Builder::new()
                    // A scraper that opens a connection and sends nothing
                    // is dropped rather than held forever.
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(5))
                    .serve_connection(TokioIo::new(sock), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            debug!(%peer, error = %e, "metrics connection ended");
                        }
                    }
                    _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
                }
            });
        }
    })
}
