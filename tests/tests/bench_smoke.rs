//! `make bench` cannot rot: its binary runs every figure at a tiny scale
//! (`--quick`) against a real etcd and Docker, and writes a report with a
//! row and a measured number for each of P1..P8, R (discover render), P10
//! and P11 (discover serve) and P13 (the simulated fleet), and its charts.
//! The figures themselves mean nothing at this scale and on a loaded
//! machine; only `make bench` produces the ones in BENCHMARKS.md. The
//! charts are checked as a reader and a renderer meet them: each parses as
//! SVG, holds one series (one colour of its own) per row of the table it is
//! shown under, names every row, and Debian's `rsvg-convert` renders it to
//! PNG. Then `bench --redraw` of the run's samples lays out the same
//! document and draws the same charts, measuring nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use harness::proc::bin_path;

#[test]
fn bench_quick_writes_every_figure_and_chart() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("BENCHMARKS.md");
    let run = Command::new(bin_path("bench"))
        .arg("--quick")
        .arg("--out")
        .arg(&out)
        .env_remove("DOCKER_HOST")
        .env_remove("ETCDCTL_ENDPOINTS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench --quick failed:\n{stderr}");
    let report = std::fs::read_to_string(&out).expect("the report was written");
    for id in [
        "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "R", "P10", "P11", "P13",
    ] {
        let row = report
            .lines()
            .find(|l| l.starts_with(&format!("| {id} |")))
            .unwrap_or_else(|| panic!("no summary row for {id}:\n{report}"));
        // "ours" is the third column: it must hold a measured number.
        let ours = row.split('|').nth(3).unwrap_or_default();
        assert!(
            ours.chars().any(|c| c.is_ascii_digit()) && !row.contains("NaN"),
            "{id} has no figure: {row}"
        );
    }
    assert!(report.contains("- Command:"), "the command is named");
    assert!(report.contains("- Kernel:"), "the machine is described");
    assert!(report.contains("etcd"), "the etcd version is named");

    let charts = check_charts(dir.path(), &report);
    for want in [
        "p1.svg",
        "p2.svg",
        "p3.svg",
        "p4-wakeups.svg",
        "p4-cpu.svg",
        "p5.svg",
        "p8-churn.svg",
        "r.svg",
        "p10-qps.svg",
        "p10-latency.svg",
        "p11.svg",
        "p13.svg",
    ] {
        assert!(
            charts.contains_key(want),
            "BENCHMARKS.md shows no {want}; it shows {:?}",
            charts.keys()
        );
    }

    // The samples hold everything: a redraw gives the same document and charts.
    let again = tempfile::tempdir().unwrap();
    let out2 = again.path().join("BENCHMARKS.md");
    let redraw = Command::new(bin_path("bench"))
        .arg("--redraw")
        .arg(dir.path().join("docs/bench/samples.json"))
        .arg("--out")
        .arg(&out2)
        .output()
        .unwrap();
    assert!(
        redraw.status.success(),
        "bench --redraw failed:\n{}",
        String::from_utf8_lossy(&redraw.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&out2).unwrap(),
        report,
        "a redraw from the samples lays out the same document"
    );
    for file in charts.keys() {
        let a = std::fs::read_to_string(dir.path().join("docs/bench").join(file)).unwrap();
        let b = std::fs::read_to_string(again.path().join("docs/bench").join(file)).unwrap();
        assert!(a == b, "{file} drawn again differs from the run's");
    }
}

#[test]
fn bench_refuses_what_it_does_not_know() {
    for args in [
        &["--only", "P9"][..],
        &["--fleet", "10,0,3"],
        &["--redraw"],
        &["--frobnicate"],
    ] {
        let run = Command::new(bin_path("bench")).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "bench {args:?}: {stderr}");
        assert!(stderr.contains("usage: bench"), "bench {args:?}: {stderr}");
    }
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("samples.json");
    std::fs::write(&bogus, "{\"p8\": 3}").unwrap();
    let run = Command::new(bin_path("bench"))
        .arg("--redraw")
        .arg(&bogus)
        .arg("--out")
        .arg(dir.path().join("B.md"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is not a samples file of this bench"),
        "{stderr}"
    );
}

/// Every chart BENCHMARKS.md (in `dir`) shows: the labels of the table
/// just above it. Each one checked; returned by file name.
fn check_charts(dir: &Path, report: &str) -> BTreeMap<String, Vec<String>> {
    let lines: Vec<&str> = report.lines().collect();
    let mut charts = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(file) = line
            .strip_prefix("![")
            .and_then(|l| l.split_once("](docs/bench/"))
            .and_then(|(_, f)| f.strip_suffix(')'))
        else {
            continue;
        };
        // The table above it: its rows after the head and the separator.
        let mut j = i;
        while j > 0 && lines[j - 1].trim().is_empty() {
            j -= 1;
        }
        let end = j;
        while j > 0 && lines[j - 1].starts_with('|') {
            j -= 1;
        }
        assert!(end - j >= 3, "{file} is not shown under a table");
        let rows: Vec<String> = lines[j + 2..end]
            .iter()
            .map(|r| {
                r.split('|')
                    .nth(1)
                    .unwrap_or_default()
                    .trim()
                    .replace('`', "")
            })
            .collect();
        check_chart(&dir.join("docs/bench").join(file), &rows);
        charts.insert(file.to_owned(), rows);
    }
    assert!(
        !charts.is_empty(),
        "BENCHMARKS.md shows no chart:\n{report}"
    );
    charts
}

/// `#RRGGBB` that is not a grey: a series' colour.
fn chromatic(c: &str) -> Option<String> {
    let h = c.strip_prefix('#').filter(|h| h.len() == 6)?;
    let v: Vec<u8> = (0..3)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
        .collect::<Option<_>>()?;
    (!(v[0] == v[1] && v[1] == v[2])).then(|| c.to_uppercase())
}

fn check_chart(path: &Path, rows: &[String]) {
    let name = path.display();
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{name} is not XML: {e}"));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg", "{name}");
    // Lines (a CDF and its legend) and bars, by colour.
    let mut lines: BTreeMap<String, usize> = BTreeMap::new();
    let mut bars: BTreeMap<String, usize> = BTreeMap::new();
    let mut texts = BTreeSet::new();
    for n in doc.descendants().filter(|n| n.is_element()) {
        match n.tag_name().name() {
            "polyline" => {
                let points = n
                    .attribute("points")
                    .unwrap_or_default()
                    .split_whitespace()
                    .count();
                if let Some(c) = n.attribute("stroke").and_then(chromatic) {
                    if points >= 2 {
                        *lines.entry(c).or_default() += 1;
                    }
                }
            }
            "rect" => {
                if let Some(c) = n.attribute("fill").and_then(chromatic) {
                    *bars.entry(c).or_default() += 1;
                }
            }
            "text" => {
                texts.insert(n.text().unwrap_or_default().trim().to_owned());
            }
            _ => {}
        }
    }
    let series: BTreeSet<&String> = lines.keys().chain(bars.keys()).collect();
    assert_eq!(
        series.len(),
        rows.len(),
        "{name} claims the rows {rows:?} but draws {} series (colours {series:?})",
        series.len()
    );
    for (c, n) in &lines {
        // A line and its legend's sample.
        assert!(
            *n >= 2,
            "{name}: the series in {c} has no line, only a legend"
        );
    }
    for r in rows {
        assert!(
            texts.contains(r),
            "{name} does not name the row {r:?}; its texts: {texts:?}"
        );
    }
    let png = path.with_extension("png");
    let render = Command::new("rsvg-convert")
        .arg("-o")
        .arg(&png)
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("rsvg-convert: {e} (Debian's librsvg2-bin; `make deps` installs it)")
        });
    assert!(
        render.status.success() && render.stderr.is_empty(),
        "rsvg-convert {name}: {}",
        String::from_utf8_lossy(&render.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 24,
        "{name}: rsvg-convert wrote no PNG"
    );
    let dim = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    let want = |a: &str| root.attribute(a).and_then(|v| v.parse::<u32>().ok());
    assert_eq!(
        (Some(dim(16)), Some(dim(20))),
        (want("width"), want("height")),
        "{name}: the PNG has the SVG's size"
    );
}
