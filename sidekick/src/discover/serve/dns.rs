//! The DNS side: hickory-server's UDP and TCP loops (decoding, hostile
//! input, truncation, TCP framing and idle timeouts are theirs), and our
//! request handler, which answers from the current [`Zone`] only.
//!
//! Protocol behaviour:
//! * authoritative (AA) for `--domain`; REFUSED for any other name (it is
//!   not a recursor), and for classes other than IN;
//! * NXDOMAIN with the zone's SOA for a name that does not exist; NODATA
//!   (NOERROR, no answer, the SOA) for a name without the asked type;
//! * EDNS0: answered with EDNS when asked, a UDP payload of at most
//!   1232 bytes (the DNS Flag Day 2020 size, which avoids IP
//!   fragmentation), BADVERS for a version above 0;
//! * an answer too large for UDP is cut with the TC bit set (hickory's
//!   encoder), and given whole over TCP;
//! * SERVFAIL before the first snapshot and past `--max-stale`;
//! * NOTIMP for opcodes other than QUERY, FORMERR for a message without
//!   exactly one question; hickory answers FORMERR to what it cannot
//!   decode and drops what is shorter than a header.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::LowerQuery;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::{DNSClass, LowerName, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;
use tracing::debug;

use super::health::Health;
use super::metrics::ServeMetrics;
use super::zone::{Found, Zone};

/// The largest UDP answer we send (and advertise): DNS Flag Day 2020.
const UDP_PAYLOAD: u16 = 1232;
/// A TCP client that sends no complete query for this long is dropped
/// (RFC 7766 asks servers to time idle connections out; seconds).
pub const TCP_IDLE: Duration = Duration::from_secs(5);
/// Answers a TCP connection may have queued while its client does not
/// read them; then that connection (only) waits.
const TCP_BUFFER: usize = 32;

/// Answers queries from the zone the watch task last published.
#[derive(Debug)]
pub struct Answerer {
    /// The current zone; replaced whole by the watch task.
    pub zone: Arc<ArcSwap<Zone>>,
    /// Readiness and staleness.
    pub health: Arc<Health>,
    /// Query counters.
    pub metrics: Arc<ServeMetrics>,
}

/// What one query gets.
struct Answer<'z> {
    /// The response code.
    rcode: ResponseCode,
    /// Authoritative (every in-zone answer).
    aa: bool,
    /// The answer section, as slices of the zone's record sets (no copy).
    answers: [&'z [Record]; 8],
    /// The SOA, for NXDOMAIN and NODATA.
    soa: Option<&'z Record>,
    /// The additional section (SRV targets' addresses).
    additionals: [&'z [Record]; 2],
}

impl<'z> Answer<'z> {
    /// An answer with only a response code (REFUSED, SERVFAIL, FORMERR).
    fn error(rcode: ResponseCode) -> Self {
        Self {
            rcode,
            aa: false,
            answers: [&[]; 8],
            soa: None,
            additionals: [&[]; 2],
        }
    }
}

/// The answer to `name`/`qtype` from `zone`.
fn answer<'z>(zone: &'z Zone, health: &Health, q: &LowerQuery) -> Answer<'z> {
    if q.query_class() != DNSClass::IN {
        return Answer::error(ResponseCode::Refused);
    }
    let found = zone.find(q.name());
    if matches!(found, Found::Outside) {
        return Answer::error(ResponseCode::Refused);
    }
    if !health.answerable() {
        return Answer::error(ResponseCode::ServFail);
    }
    let mut a = Answer {
        rcode: ResponseCode::NoError,
        aa: true,
        answers: [&[]; 8],
        soa: None,
        additionals: [&[]; 2],
    };
    let Found::Name {
        apex,
        services,
        sky,
    } = found
    else {
        a.rcode = ResponseCode::NXDomain;
        a.soa = Some(&zone.soa);
        return a;
    };
    let qtype = q.query_type();
    if apex && matches!(qtype, RecordType::SOA | RecordType::ANY) {
        a.answers[0] = std::slice::from_ref(&zone.soa);
    }
    let mut n = 1;
    for e in [services, sky].into_iter().flatten() {
        for s in e.answers(qtype) {
            if !s.is_empty() && n < a.answers.len() {
                a.answers[n] = s;
                n += 1;
            }
        }
    }
    let mut extra = 0;
    if matches!(qtype, RecordType::SRV | RecordType::ANY) {
        for e in [services, sky].into_iter().flatten() {
            if !e.srv.is_empty() {
                a.additionals[extra] = &e.extra;
                extra += 1;
            }
        }
    }
    // A name of the SkyDNS layout whose hosts are names: its CNAME, and
    // the target's addresses when the target is ours.
    if n == 1
        && matches!(qtype, RecordType::A | RecordType::AAAA)
        && let Some(c) = sky.and_then(|s| s.cname.as_deref())
    {
        a.answers[1] = std::slice::from_ref(c);
        n = 2;
        if let RData::CNAME(t) = &c.data
            && let Found::Name { services, sky, .. } = zone.find(&LowerName::new(&t.0))
        {
            for e in [services, sky].into_iter().flatten() {
                let [s, ..] = e.answers(qtype);
                if !s.is_empty() && n < a.answers.len() {
                    a.answers[n] = s;
                    n += 1;
                }
            }
        }
    }
    if a.answers.iter().all(|s| s.is_empty()) {
        a.soa = Some(&zone.soa);
    }
    a
}

#[async_trait::async_trait]
impl RequestHandler for Answerer {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let start = Instant::now();
        let mut edns_out = None;
        let mut rcode = None;
        if let Some(req) = &request.edns {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().clamp(512, UDP_PAYLOAD));
            e.set_version(0);
            if req.version() > 0 {
                rcode = Some(ResponseCode::BADVERS);
            }
            edns_out = Some(e);
        }
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(e) = &edns_out {
            builder.edns(e);
        }
        if rcode.is_none() && request.metadata.op_code != OpCode::Query {
            rcode = Some(ResponseCode::NotImp);
        }
        let info = request.request_info();
        let qtype = info
            .as_ref()
            .map(|i| i.query.query_type())
            .unwrap_or(RecordType::Unknown(0));
        if rcode.is_none() && info.is_err() {
            rcode = Some(ResponseCode::FormErr);
        }
        // A clone of the Arc, not a guard: the answer borrows the zone
        // across the send's await, which a guard may not span.
        let zone = self.zone.load_full();
        let a = match (rcode, &info) {
            (Some(r), _) => Answer::error(r),
            (None, Ok(i)) => answer(&zone, &self.health, i.query),
            (None, Err(_)) => Answer::error(ResponseCode::FormErr),
        };
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = a.rcode;
        metadata.authoritative = a.aa;
        let response = builder.build(
            metadata,
            a.answers.into_iter().flatten(),
            std::iter::empty(),
            a.soa,
            a.additionals.into_iter().flatten(),
        );
        let sent = response_handle.send_response(response).await;
        self.metrics
            .query(qtype, a.rcode, start.elapsed().as_secs_f64());
        match sent {
            Ok(info) => info,
            Err(e) => {
                debug!(error = %e, src = %request.src(), "cannot send the answer");
                let mut m = Metadata::response_from_request(&request.metadata);
                m.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: m,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// Sockets bound for `--dns`: one UDP socket per worker thread on the same
/// port (SO_REUSEPORT, so the kernel spreads clients over them and the
/// receive loops run in parallel), and a TCP listener on it too.
#[derive(Debug)]
pub struct Sockets {
    /// The UDP sockets.
    pub udp: Vec<UdpSocket>,
    /// The TCP listener.
    pub tcp: TcpListener,
    /// Where they are bound (the port the kernel chose for port 0).
    pub addr: SocketAddr,
}

/// Bind UDP and TCP on `addr`. Port 0 picks a port free for both.
pub fn bind(addr: SocketAddr, udp_sockets: usize) -> std::io::Result<Sockets> {
    let mut last = None;
    // With port 0 the UDP port the kernel picks may be taken for TCP; try
    // a few (a fixed port fails at once).
    for _ in 0..if addr.port() == 0 { 16 } else { 1 } {
        match bind_once(addr, udp_sockets.max(1)) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no socket")))
}

/// Bind `n` UDP sockets (SO_REUSEPORT) and one TCP listener on the same address, once.
fn bind_once(addr: SocketAddr, n: usize) -> std::io::Result<Sockets> {
    let first = udp(addr)?;
    let addr = first.local_addr()?;
    let mut udp_all = vec![first];
    for _ in 1..n {
        udp_all.push(udp(addr)?);
    }
    let tcp = std::net::TcpListener::bind(addr)?;
    tcp.set_nonblocking(true)?;
    let udp = udp_all
        .into_iter()
        .map(UdpSocket::from_std)
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(Sockets {
        udp,
        tcp: TcpListener::from_std(tcp)?,
        addr,
    })
}

/// One non-blocking UDP socket on `addr`, with SO_REUSEPORT so the workers share the port.
fn udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Start hickory's server on `sockets` with `answerer`.
pub fn start(sockets: Sockets, answerer: Answerer) -> Server<Answerer> {
    let mut server = Server::new(answerer);
    for s in sockets.udp {
        server.register_socket(s);
    }
    server.register_listener(sockets.tcp, TCP_IDLE, TCP_BUFFER);
    server
}
