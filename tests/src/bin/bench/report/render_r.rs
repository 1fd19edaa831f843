//! R: `discover render`, a change in etcd until nginx serves it, beside
//! its floor.

use super::{Section, signed_ms};
use crate::stats::{Summary, ms, num};

pub fn section(r: &crate::render::Render) -> Section {
    let mut s = Section::default();
    let (ours, floor) = (ms(&r.ours), ms(&r.floor));
    let (o, f) = (Summary::of(&ours), Summary::of(&floor));
    s.row([
        "R",
        "put in etcd → nginx serves the new upstream (`discover render --wait 0`)",
        &format!("{} ms (p99 {} ms)", num(o.p50), num(o.p99)),
        &format!(
            "floor: config written by hand + `nginx -s reload`: {} ms (p99 {} ms)",
            num(f.p50),
            num(f.p99)
        ),
        &signed_ms(o.p50 - f.p50),
        "— (recorded)",
        "—",
    ]);
    s.text(
        "## R: discover render, a change in etcd → nginx serving the new upstream\n\n\
         `discover render --wait 0` with `examples/nginx-upstream/upstream.conf.j2`, `--check-cmd \"nginx -t -q … -c {{src}}\"` and \
         `--reload-cmd \"nginx -s reload …\"` moves `web/1`, each round, to a real HTTP backend on a port no earlier round used (each \
         answers with its own port; a stale nginx worker can then never pass for the new config), and the bench polls Debian's nginx \
         on fresh connections to its unix socket until it answers from the new one. The floor, in the same run against the same \
         nginx: the bench writes the next config itself (renamed into place) and runs `nginx -s reload`, with no etcd, no template \
         and no check.\n\n",
    );
    s.rows_here();
    s.latencies(
        "r.svg",
        "R: a change in etcd → nginx serves it, beside writing the config by hand (CDF)",
        false,
        &[
            ("put in etcd → nginx serves it", &ours),
            ("floor: write + nginx -s reload → served", &floor),
        ],
    );
    s.text(&format!(
        "Both curves are nginx's reload for the most part: render's own share (etcd's event, the template, `nginx -t`) is the \
         distance between them, {} at the median.\n\n",
        signed_ms(o.p50 - f.p50).trim_end_matches(" median")
    ));
    s
}
