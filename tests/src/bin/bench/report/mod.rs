//! BENCHMARKS.md and its charts, laid out from what each part measured.
//!
//! Every part of the bench hands over a [`Section`]: its rows of the summary
//! table, its text and tables, and the charts drawn from the same rows as
//! the table above each one ([`Section::latencies`] and [`Section::chart`]).
//! This module only lays the sections out, in order, and writes:
//!
//! - `BENCHMARKS.md` (or `--out`);
//! - next to it, `docs/bench/*.svg`, one per chart;
//! - and `docs/bench/samples.json`: every raw sample of the run ([`All`]),
//!   so that `bench --redraw docs/bench/samples.json` lays the document and
//!   the charts out again without measuring anything.
//!
//! To add a part: a module that measures and returns a serialisable struct,
//! a field for it in [`All`] (an `Option`, so a run of other parts and an
//! older samples file still load), and a `section()` for it in this
//! directory, added to [`render`]'s list.

mod p10_p11;
mod p12;
mod p13;
mod p1_p3;
mod p4;
mod p5_p7;
mod p8;
mod render_r;

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agents::Agents;
use crate::chart::Chart;
use crate::cost::Cost;
use crate::dns::Dns;
use crate::fleet::Fleet;
use crate::get::{Gets, ManyRegistrations};
use crate::host::P8;
use crate::p12::P12;
use crate::render::Render;
use crate::stats::{Summary, num};
use crate::stream::{Latency, Throughput};

/// Everything one run measured, raw: what `samples.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct All {
    pub command: String,
    pub machine: Vec<(String, String)>,
    pub took: Duration,
    pub agents: Option<Agents>,
    pub cost: Option<Cost>,
    pub throughput: Option<Throughput>,
    pub latency: Option<Latency>,
    pub gets: Option<Gets>,
    pub many: Option<ManyRegistrations>,
    pub p8: Option<P8>,
    pub render: Option<Render>,
    /// P10 and P11 (`discover serve`).
    pub dns: Option<Dns>,
    /// P12 (active health checks).
    pub p12: Option<P12>,
    pub fleet: Option<Fleet>,
}

/// One part's share of the document.
#[derive(Default)]
pub struct Section {
    /// Its rows of the summary table.
    rows: Vec<[String; 7]>,
    /// Its section: heading, text, tables, charts.
    body: String,
    charts: Vec<Chart>,
}

/// The head of the summary table, and of a section's copy of its rows.
const SUMMARY_HEAD: &str = "| id | measure | ours (median) | peer (median) | ratio | goal | met |\n|---|---|---|---|---|---|---|\n";
const SECTION_HEAD: &str =
    "| measure | ours (median) | peer (median) | ratio | goal | met |\n|---|---|---|---|---|---|\n";

pub fn met(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

/// "+1.39 ms median", "−0.46 ms median".
pub fn signed_ms(d: f64) -> String {
    format!(
        "{}{} ms median",
        if d >= 0.0 { "+" } else { "−" },
        num(d.abs())
    )
}

/// `peer / ours`, infinite when ours is nothing.
pub fn ratio(peer: f64, ours: f64) -> f64 {
    if ours > 0.0 {
        peer / ours
    } else {
        f64::INFINITY
    }
}

impl Section {
    /// A row of the summary table: `id`, what is measured, ours, the peer,
    /// their ratio, the goal and whether it is met.
    pub fn row(&mut self, cells: [&str; 7]) {
        self.rows.push(cells.map(str::to_owned));
    }

    /// This section's rows of the summary table, without the id column,
    /// to repeat them at the head of the section.
    pub fn rows_here(&mut self) {
        self.body.push_str(SECTION_HEAD);
        for r in &self.rows {
            let _ = writeln!(self.body, "| {} |", r[1..].join(" | "));
        }
        self.body.push('\n');
    }

    /// The section's markdown so far, to write into.
    pub fn body_mut(&mut self) -> &mut String {
        &mut self.body
    }

    /// Markdown, as it is.
    pub fn text(&mut self, s: &str) {
        self.body.push_str(s);
    }

    /// A table of repeated measurements: n, min, median, p99, max.
    pub fn stats(&mut self, rows: &[(&str, &[f64])], unit: &str) {
        self.body
            .push_str("| | n | min | median | p99 | max |\n|---|---|---|---|---|---|\n");
        for (label, v) in rows {
            let s = Summary::of(v);
            let _ = writeln!(
                self.body,
                "| {label} | {} | {} {unit} | {} {unit} | {} {unit} | {} {unit} |",
                s.n,
                num(s.min),
                num(s.p50),
                num(s.p99),
                num(s.max)
            );
        }
        self.body.push('\n');
    }

    /// [`Section::stats`] of latencies in ms, and their CDF under it.
    pub fn latencies(&mut self, file: &str, title: &str, log: bool, rows: &[(&str, &[f64])]) {
        self.stats(rows, "ms");
        self.chart(Chart::cdf(file, title, "ms", log, rows));
    }

    /// A chart, shown here.
    pub fn chart(&mut self, chart: Chart) {
        self.body.push_str(&chart.markdown());
        self.charts.push(chart);
    }
}

/// The document and its charts.
pub fn render(all: &All) -> (String, Vec<Chart>) {
    let sections: Vec<Section> = [
        all.agents.as_ref().map(p1_p3::section),
        all.cost.as_ref().map(p4::section),
        p5_p7::section(all),
        all.p8.as_ref().map(p8::section),
        all.render.as_ref().map(render_r::section),
        all.dns.as_ref().map(p10_p11::section),
        all.p12.as_ref().map(p12::section),
        all.fleet.as_ref().map(p13::section),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut o = String::new();
    o.push_str("# Benchmarks\n\n");
    o.push_str(
        "Written by `make bench`; never by hand. Every figure is measured side by side with its peer in the same run, on the same \
         machine, against the same etcd and Docker engine: the chapter's bash sidekick (listing 6.4, `sleep 5; docker inspect | jq; \
         etcdctl update --ttl 8 || etcdctl set --ttl 8` against etcd's v2 API), `etcdctl`, or a bare etcd-client watch \
         (`tests/src/bin/bare-watch.rs`, no snapshot, no classification, no JSON: the physical limit of the stack). This machine is \
         noisy, so compare medians and ratios, not lone absolute times; where a figure depends on the machine more than on the code \
         (CPU time), the section leads with one that does not (wake-ups) and gives the CPU figure with its spread across copies. \
         Release builds. The charts are drawn by the same run (`docs/bench/*.svg`, from the raw samples in \
         `docs/bench/samples.json`; `bench --redraw docs/bench/samples.json` draws them again).\n\n",
    );
    let _ = writeln!(o, "- Command: `{}`", all.command);
    for (k, v) in &all.machine {
        let _ = writeln!(o, "- {k}: {v}");
    }
    let _ = writeln!(o, "- The whole run took {:.0} s.\n", all.took.as_secs_f64());
    o.push_str("## Summary\n\n");
    o.push_str(SUMMARY_HEAD);
    for s in &sections {
        for r in &s.rows {
            let _ = writeln!(o, "| {} |", r.join(" | "));
        }
    }
    o.push('\n');
    let mut charts = Vec::new();
    for s in sections {
        o.push_str(&s.body);
        charts.extend(s.charts);
    }
    (o, charts)
}

/// Write the document to `out`, its charts and samples to `docs/bench/`
/// beside it.
pub fn write(all: &All, out: &Path) -> Result<String, String> {
    let (text, charts) = render(all);
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("docs/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    for c in &charts {
        let path = dir.join(&c.file);
        std::fs::write(&path, c.svg()?).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    let samples = dir.join("samples.json");
    let json = serde_json::to_string(all).map_err(|e| format!("samples: {e}"))?;
    std::fs::write(&samples, json + "\n")
        .map_err(|e| format!("write {}: {e}", samples.display()))?;
    std::fs::write(out, &text).map_err(|e| format!("write {}: {e}", out.display()))?;
    Ok(text)
}

/// Read what an earlier run measured.
pub fn read(samples: &Path) -> Result<All, String> {
    let text =
        std::fs::read_to_string(samples).map_err(|e| format!("read {}: {e}", samples.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        format!(
            "{} is not a samples file of this bench ({e}); `make bench` writes one",
            samples.display()
        )
    })
}
