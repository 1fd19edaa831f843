//! Bad input never crashes `discover serve` nor stalls other queries:
//! garbage datagrams, truncated headers, compression-pointer loops,
//! oversized TCP frames and TCP clients that send nothing. Each case ends
//! with the server answering a good query at once. The hostile bytes are
//! written by hand here (that is the point); answers are read from the
//! header only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod serve_support;

use std::time::Duration;

use harness::{Etcd, unique_prefix};
use serve_support::{Serve, put};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout};

/// How long a good answer may take while the server is under attack; a
/// stalled server would take the attacker's whole idle time (5 s).
const PROMPT: Duration = Duration::from_secs(2);

/// A query for `name` (type A, class IN) as the wire has it.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.trim_end_matches('.').split('.') {
        q.push(u8::try_from(l.len()).unwrap());
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The response code of an answer to `id`, checking that it is one.
fn rcode(id: u16, answer: &[u8]) -> u8 {
    assert!(answer.len() >= 12, "short answer {answer:?}");
    assert_eq!(u16::from_be_bytes([answer[0], answer[1]]), id);
    assert!(answer[2] & 0x80 != 0, "QR set");
    answer[3] & 0x0f
}

async fn started(test: &str) -> (Etcd, Serve, String) {
    let etcd = Etcd::single().await;
    let p = unique_prefix(test);
    put(&etcd, &format!("{p}/web/1"), "10.7.0.1:80").await;
    let s = Serve::start(&etcd, &[&p], false).await;
    (etcd, s, "web.discovery.internal.".to_owned())
}

/// A good query over UDP is answered NOERROR within [`PROMPT`].
async fn still_answers_udp(s: &Serve, name: &str) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", s.dns)).await.unwrap();
    let id = fastrand::u16(..);
    sock.send(&query(id, name)).await.unwrap();
    let mut buf = [0u8; 1500];
    let n = timeout(PROMPT, sock.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer over UDP within {PROMPT:?}\n{}", s.proc.dump()))
        .unwrap();
    assert_eq!(rcode(id, &buf[..n]), 0, "NOERROR");
}

/// A good query over a new TCP connection is answered NOERROR within [`PROMPT`].
async fn still_answers_tcp(s: &Serve, name: &str) {
    let t = Instant::now();
    let mut c = timeout(PROMPT, TcpStream::connect(("127.0.0.1", s.dns)))
        .await
        .expect("TCP connect in time")
        .unwrap();
    let id = fastrand::u16(..);
    let q = query(id, name);
    c.write_all(&u16::try_from(q.len()).unwrap().to_be_bytes())
        .await
        .unwrap();
    c.write_all(&q).await.unwrap();
    let answer = timeout(PROMPT, read_frame(&mut c))
        .await
        .unwrap_or_else(|_| panic!("no answer over TCP within {PROMPT:?}\n{}", s.proc.dump()))
        .expect("a framed answer");
    assert_eq!(rcode(id, &answer), 0, "NOERROR");
    assert!(t.elapsed() < PROMPT);
}

async fn read_frame(c: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    c.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    c.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

fn alive(s: &mut Serve) {
    assert!(
        s.proc.try_exit().is_none(),
        "the server exited\n{}",
        s.proc.dump()
    );
    assert!(!s.proc.stderr().contains("panicked"), "{}", s.proc.dump());
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_datagrams_get_formerr_or_nothing() {
    let (_etcd, mut s, name) = started("serve-garbage").await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", s.dns)).await.unwrap();
    let mut rng = fastrand::Rng::with_seed(20);
    for _ in 0..200 {
        let len = rng.usize(12..600);
        let mut g: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        // Half of them look like queries (QR clear) so they get decoded.
        if rng.bool() {
            g[2] &= 0x7f;
        }
        sock.send(&g).await.unwrap();
    }
    // Whatever came back is an answer: FORMERR, or a well-formed error.
    let mut buf = [0u8; 1500];
    while let Ok(Ok(n)) = timeout(Duration::from_millis(300), sock.recv(&mut buf)).await {
        assert!(n >= 12, "a short reply {:?}", &buf[..n]);
        assert!(buf[2] & 0x80 != 0, "a reply has QR set");
    }
    still_answers_udp(&s, &name).await;
    still_answers_tcp(&s, &name).await;
    alive(&mut s);
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_headers_are_dropped() {
    let (_etcd, mut s, name) = started("serve-short").await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", s.dns)).await.unwrap();
    let full = query(7, &name);
    for len in [0, 1, 5, 11] {
        sock.send(&full[..len]).await.unwrap();
    }
    // A header cut inside the question: FORMERR, not silence.
    sock.send(&full[..14]).await.unwrap();
    let mut buf = [0u8; 1500];
    let n = timeout(PROMPT, sock.recv(&mut buf))
        .await
        .expect("FORMERR for a question cut short")
        .unwrap();
    assert_eq!(rcode(7, &buf[..n]), 1, "FORMERR");
    // Nothing for the ones shorter than a header.
    let more = timeout(Duration::from_millis(300), sock.recv(&mut buf)).await;
    assert!(more.is_err(), "no answer to less than a header: {more:?}");
    still_answers_udp(&s, &name).await;
    alive(&mut s);
}

#[tokio::test(flavor = "multi_thread")]
async fn compression_pointer_loops_get_formerr() {
    let (_etcd, mut s, name) = started("serve-loop").await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", s.dns)).await.unwrap();
    let header = |id: u16| {
        let mut h = id.to_be_bytes().to_vec();
        h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        h
    };
    // A name that points at itself (offset 12); two that point at each
    // other; a label, then a pointer back to before it.
    let mut selfloop = header(1);
    selfloop.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let mut pair = header(2);
    pair.extend_from_slice(&[0xc0, 14, 0xc0, 12, 0, 1, 0, 1]);
    let mut back = header(3);
    back.extend_from_slice(&[3, b'w', b'e', b'b', 0xc0, 12, 0, 1, 0, 1]);
    // A pointer past the end.
    let mut past = header(4);
    past.extend_from_slice(&[0xc0, 200, 0, 1, 0, 1]);
    for (id, msg) in [(1, selfloop), (2, pair), (3, back), (4, past)] {
        sock.send(&msg).await.unwrap();
        let mut buf = [0u8; 1500];
        let n = timeout(PROMPT, sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no FORMERR for loop {id}\n{}", s.proc.dump()))
            .unwrap();
        assert_eq!(rcode(id, &buf[..n]), 1, "FORMERR for {id}");
    }
    still_answers_udp(&s, &name).await;
    alive(&mut s);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_frames_and_datagrams_do_not_stall_anyone() {
    let (_etcd, mut s, name) = started("serve-big").await;
    // A whole 65535-byte frame: a question, then 65 kB of junk. The
    // question is answered (or refused as FORMERR), or the connection
    // closed: never a hang.
    let mut c = TcpStream::connect(("127.0.0.1", s.dns)).await.unwrap();
    let mut frame = query(9, &name);
    frame.resize(65535, 0xab);
    c.write_all(&[0xff, 0xff]).await.unwrap();
    c.write_all(&frame).await.unwrap();
    match timeout(PROMPT, read_frame(&mut c)).await {
        Ok(Some(a)) => assert!(matches!(rcode(9, &a), 0 | 1), "NOERROR or FORMERR"),
        Ok(None) => {}
        Err(_) => panic!("neither an answer nor a close within {PROMPT:?}"),
    }
    // A 65535-byte frame of junk alone, then a good question on the same
    // connection: the junk gets FORMERR, the question after it its answer.
    c.write_all(&[0xff, 0xff]).await.unwrap();
    c.write_all(&[0xab; 65535]).await.unwrap();
    let q = query(10, &name);
    c.write_all(&u16::try_from(q.len()).unwrap().to_be_bytes())
        .await
        .unwrap();
    c.write_all(&q).await.unwrap();
    let a = timeout(PROMPT, async {
        loop {
            let a = read_frame(&mut c).await.expect("a framed answer");
            if a[..2] == [0xab, 0xab] {
                assert_eq!(a[3] & 0x0f, 1, "the junk's answer is FORMERR");
                continue;
            }
            break a;
        }
    })
    .await
    .expect("the question after the junk answered in time");
    assert_eq!(rcode(10, &a), 0, "NOERROR");
    // A frame that announces 65535 bytes and sends 100: the server waits
    // for the rest on that connection only.
    let mut slow = TcpStream::connect(("127.0.0.1", s.dns)).await.unwrap();
    slow.write_all(&[0xff, 0xff]).await.unwrap();
    slow.write_all(&[0u8; 100]).await.unwrap();
    still_answers_udp(&s, &name).await;
    still_answers_tcp(&s, &name).await;
    // A datagram larger than any DNS message over UDP.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(("127.0.0.1", s.dns)).await.unwrap();
    let mut big = query(11, &name);
    big.resize(9000, 0);
    sock.send(&big).await.unwrap();
    still_answers_udp(&s, &name).await;
    // And the stalled frame's connection is closed at the idle limit.
    let mut buf = [0u8; 16];
    let r = timeout(Duration::from_secs(20), slow.read(&mut buf)).await;
    assert!(
        matches!(r, Ok(Ok(0) | Err(_))),
        "the half-sent frame's connection is closed: {r:?}"
    );
    alive(&mut s);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_tcp_clients_are_closed_and_stall_nobody() {
    let (_etcd, mut s, name) = started("serve-idle").await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(("127.0.0.1", s.dns)).await.unwrap());
    }
    let t = Instant::now();
    for _ in 0..5 {
        still_answers_udp(&s, &name).await;
        still_answers_tcp(&s, &name).await;
    }
    println!(
        "serve: 10 queries beside 100 idle TCP clients in {:?}",
        t.elapsed()
    );
    // Every idle client is closed by the server (5 s without a query).
    let opened = Instant::now();
    for c in &mut idle {
        let mut buf = [0u8; 1];
        let r = timeout(Duration::from_secs(20), c.read(&mut buf)).await;
        assert!(
            matches!(r, Ok(Ok(0) | Err(_))),
            "an idle client was closed: {r:?}"
        );
    }
    println!(
        "serve: 100 idle TCP clients closed within {:?}",
        opened.elapsed()
    );
    alive(&mut s);
}
