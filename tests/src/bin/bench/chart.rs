//! The charts of BENCHMARKS.md, drawn with plotters' SVG backend: two
//! kinds, so that a part of the bench only hands over its data.
//!
//! - [`Chart::cdf`]: latency distributions, one line per row, the share of
//!   samples at or below each time, on a log time axis when asked;
//! - [`Chart::bars`]: one horizontal bar per row (its median), with a
//!   whisker over the row's spread, and optional reference lines (a floor,
//!   a physical minimum).
//!
//! Every row gets a colour of its own and everything else (axes, grid,
//! whiskers, reference lines) is drawn in greys, so a reader, or the chart
//! test, can count the series: one colour per row.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

/// Tableau's ten colours: distinct in print and for most colour-blind
/// readers, and none of them grey.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
    (127, 127, 255),
];

fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

const GRID: RGBColor = RGBColor(215, 215, 215);
const FAINT: RGBColor = RGBColor(240, 240, 240);
const INK: RGBColor = RGBColor(40, 40, 40);
const FONT: &str = "sans-serif";

/// One row of a chart: the row's label in its table, and its values.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub label: String,
    /// CDF: every sample. Bars: the value the bar shows (one number).
    pub values: Vec<f64>,
    /// Bars: the whisker, from low to high (the spread across copies).
    pub spread: Option<(f64, f64)>,
}

/// A bar: its row's label, its value, and its whisker (low, high).
pub type Bar<'a> = (&'a str, f64, Option<(f64, f64)>);

/// A vertical line across a bar chart, with its label.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mark {
    pub at: f64,
    pub label: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Kind {
    Cdf,
    Bars { marks: Vec<Mark> },
}

/// A chart, drawn to `docs/bench/{file}` and shown under its table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Chart {
    /// The file name, such as `p1.svg`.
    pub file: String,
    pub title: String,
    /// What the value axis measures, with its unit: "time (ms)".
    pub axis: String,
    /// The unit ticks are labelled with ("ms" becomes "s" past 1000).
    pub unit: String,
    pub log: bool,
    pub kind: Kind,
    pub rows: Vec<Row>,
}

impl Chart {
    /// A latency CDF: one line per row, each row's samples.
    pub fn cdf(file: &str, title: &str, unit: &str, log: bool, rows: &[(&str, &[f64])]) -> Self {
        Self {
            file: file.to_owned(),
            title: title.to_owned(),
            axis: format!(
                "{} ({unit}{})",
                if unit == "ms" { "time" } else { "value" },
                if log { ", log scale" } else { "" }
            ),
            unit: unit.to_owned(),
            log,
            kind: Kind::Cdf,
            rows: rows
                .iter()
                .map(|(l, v)| Row {
                    label: plain(l),
                    values: v.to_vec(),
                    spread: None,
                })
                .collect(),
        }
    }

    /// Bars: one per row, at `value`, with a whisker over `spread`.
    pub fn bars(file: &str, title: &str, axis: &str, unit: &str, log: bool, rows: &[Bar]) -> Self {
        Self {
            file: file.to_owned(),
            title: title.to_owned(),
            axis: axis.to_owned(),
            unit: unit.to_owned(),
            log,
            kind: Kind::Bars { marks: Vec::new() },
            rows: rows
                .iter()
                .map(|(l, v, s)| Row {
                    label: plain(l),
                    values: vec![*v],
                    spread: *s,
                })
                .collect(),
        }
    }

    /// A vertical reference line across a bar chart.
    pub fn with_mark(mut self, at: f64, label: &str) -> Self {
        if let Kind::Bars { marks } = &mut self.kind {
            marks.push(Mark {
                at,
                label: label.to_owned(),
            });
        }
        self
    }

    /// The markdown that shows it, from a document next to `docs/`.
    pub fn markdown(&self) -> String {
        format!("![{}](docs/bench/{})\n\n", self.title, self.file)
    }

    /// The chart as an SVG document.
    pub fn svg(&self) -> Result<String, String> {
        let mut out = String::new();
        match &self.kind {
            Kind::Cdf => self.draw_cdf(&mut out),
            Kind::Bars { marks } => self.draw_bars(&mut out, marks),
        }
        .map_err(|e| format!("chart {}: {e}", self.file))?;
        Ok(out)
    }

    /// `1234` ms as "1.2 s", `0.5` as "0.5 ms"; other units as they are.
    fn tick(&self, v: f64) -> String {
        let n = |x: f64| {
            if x >= 100.0 || x == x.round() {
                format!("{x:.0}")
            } else if x >= 1.0 {
                format!("{x:.1}")
            } else {
                format!("{}", (x * 1000.0).round() / 1000.0)
            }
        };
        match self.unit.as_str() {
            "ms" if v >= 1000.0 => format!("{} s", n(v / 1000.0)),
            "" => n(v),
            u => format!("{} {u}", n(v)),
        }
    }

    /// The value axis: from a little below the least value to a little
    /// above the greatest; on a log axis, whole powers of ten (values at
    /// or below zero are drawn at its start).
    fn range(&self, with_zero: bool) -> (f64, f64) {
        let mut all: Vec<f64> = self
            .rows
            .iter()
            .flat_map(|r| {
                r.values
                    .iter()
                    .copied()
                    .chain(r.spread.into_iter().flat_map(|(a, b)| [a, b]))
            })
            .filter(|v| v.is_finite())
            .collect();
        if let Kind::Bars { marks } = &self.kind {
            all.extend(marks.iter().map(|m| m.at));
        }
        let max = all.iter().copied().fold(f64::MIN, f64::max);
        if self.log {
            let min = all
                .iter()
                .copied()
                .filter(|v| *v > 0.0)
                .fold(f64::MAX, f64::min);
            let (min, max) = if min > max { (1.0, 10.0) } else { (min, max) };
            let lo = 10f64.powf(min.log10().floor());
            let hi = 10f64.powf((max * 1.05).log10().ceil());
            (lo, hi.max(lo * 10.0))
        } else {
            let min = all.iter().copied().fold(f64::MAX, f64::min);
            let lo = if with_zero || min > max {
                0.0
            } else {
                min * 0.95
            };
            (lo, if max > lo { max * 1.08 } else { lo + 1.0 })
        }
    }

    fn draw_cdf(&self, out: &mut String) -> Result<(), String> {
        let (w, h) = (860u32, 460u32);
        let root = SVGBackend::with_string(out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (lo, hi) = self.range(false);
        let area = root
            .titled(&self.title, (FONT, 20).into_font().color(&INK))
            .map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&area)
            .margin(14)
            .margin_right(40)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(Axis::new(lo, hi, self.log), 0.0..100.0f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .light_line_style(FAINT)
            .bold_line_style(GRID)
            .y_max_light_lines(2)
            .x_max_light_lines(if self.log { 10 } else { 2 })
            .axis_style(INK)
            .label_style((FONT, 13).into_font().color(&INK))
            .x_desc(self.axis.as_str())
            .y_desc("samples at or below (%)")
            .axis_desc_style((FONT, 14).into_font().color(&INK))
            .x_label_formatter(&|v: &f64| self.tick(*v))
            .y_label_formatter(&|v: &f64| format!("{v:.0}"))
            .x_labels(if self.log { 8 } else { 10 })
            .y_labels(6)
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, row) in self.rows.iter().enumerate() {
            let mut v: Vec<f64> = row
                .values
                .iter()
                .map(|x| x.max(lo))
                .filter(|x| x.is_finite())
                .collect();
            v.sort_by(f64::total_cmp);
            let n = v.len().max(1) as f64;
            // A step at each sample: the share below it, then at or below it.
            let mut steps = Vec::with_capacity(2 * v.len());
            for (k, x) in v.iter().enumerate() {
                steps.push((*x, k as f64 * 100.0 / n));
                steps.push((*x, (k + 1) as f64 * 100.0 / n));
            }
            let c = colour(i);
            chart
                .draw_series(LineSeries::new(steps, c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(&row.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .margin(12)
            .label_font((FONT, 14).into_font().color(&INK))
            .background_style(WHITE.mix(0.9))
            .border_style(INK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    }

    fn draw_bars(&self, out: &mut String, marks: &[Mark]) -> Result<(), String> {
        let n = self.rows.len();
        // Long labels: their own column, sized to the longest one.
        let longest = self
            .rows
            .iter()
            .map(|r| r.label.chars().count())
            .max()
            .unwrap_or(10);
        let label_w = (longest as u32 * 7 + 24).clamp(120, 430);
        let (w, h) = (
            label_w + 620,
            110 + 44 * n as u32 + if marks.is_empty() { 0 } else { 24 },
        );
        let root = SVGBackend::with_string(out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (lo, hi) = self.range(true);
        let labels: Vec<String> = self.rows.iter().map(|r| r.label.clone()).collect();
        let area = root
            .titled(&self.title, (FONT, 20).into_font().color(&INK))
            .map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&area)
            .margin(14)
            // Room for the reference lines' labels above the plot.
            .margin_top(if marks.is_empty() { 14 } else { 34 })
            .margin_right(70)
            .x_label_area_size(48)
            .y_label_area_size(label_w)
            // 0..=top: one segment per row (plotters' discrete ranges hold their end).
            .build_cartesian_2d(
                Axis::new(lo, hi, self.log),
                (0..n.max(2) - 1).into_segmented(),
            )
            .map_err(|e| e.to_string())?;
        // Row 0 at the top.
        let at = |i: usize| n - 1 - i;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(FAINT)
            .bold_line_style(GRID)
            .x_max_light_lines(if self.log { 10 } else { 2 })
            .axis_style(INK)
            .label_style((FONT, 13).into_font().color(&INK))
            .x_desc(self.axis.as_str())
            .axis_desc_style((FONT, 14).into_font().color(&INK))
            .x_label_formatter(&|v: &f64| self.tick(*v))
            .x_labels(if self.log { 8 } else { 10 })
            .y_labels(n)
            .y_label_formatter(&|v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(k) if *k < n => labels[n - 1 - k].clone(),
                _ => String::new(),
            })
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, row) in self.rows.iter().enumerate() {
            let v = row.values.first().copied().unwrap_or(0.0).max(lo);
            let c = colour(i);
            let mut bar = Rectangle::new(
                [
                    (lo, SegmentValue::Exact(at(i))),
                    (v, SegmentValue::Exact(at(i) + 1)),
                ],
                c.filled(),
            );
            bar.set_margin(9, 9, 0, 0);
            chart
                .draw_series(std::iter::once(bar))
                .map_err(|e| e.to_string())?;
            let mid = SegmentValue::CenterOf(at(i));
            let right = match row.spread {
                Some((a, b)) => {
                    let (a, b) = (a.max(lo), b.max(lo));
                    let cap = |x: f64| {
                        EmptyElement::at((x, mid.clone()))
                            + PathElement::new(vec![(0, -7), (0, 7)], INK.stroke_width(2))
                    };
                    chart
                        .draw_series([PathElement::new(
                            vec![(a, mid.clone()), (b, mid.clone())],
                            INK.stroke_width(2),
                        )])
                        .map_err(|e| e.to_string())?;
                    chart
                        .draw_series([cap(a), cap(b)])
                        .map_err(|e| e.to_string())?;
                    b.max(v)
                }
                None => v,
            };
            let text = self.tick(row.values.first().copied().unwrap_or(0.0));
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((right, mid))
                        + Text::new(
                            text,
                            (6, 0),
                            (FONT, 13)
                                .into_font()
                                .color(&INK)
                                .pos(Pos::new(HPos::Left, VPos::Center)),
                        ),
                ))
                .map_err(|e| e.to_string())?;
        }
        for m in marks {
            let grey = RGBColor(110, 110, 110);
            chart
                .draw_series([PathElement::new(
                    vec![
                        (m.at, SegmentValue::Exact(0)),
                        (m.at, SegmentValue::Exact(n)),
                    ],
                    grey.stroke_width(2),
                )])
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((m.at, SegmentValue::Exact(n)))
                        + Text::new(
                            m.label.clone(),
                            (4, -4),
                            (FONT, 13)
                                .into_font()
                                .color(&grey)
                                .pos(Pos::new(HPos::Left, VPos::Bottom)),
                        ),
                ))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    }
}

/// A table label as the chart shows it: without markdown's backticks.
pub fn plain(label: &str) -> String {
    label.replace('`', "")
}

/// The value axis: linear, or logarithmic (plotters' two range types
/// behind one, so each chart kind is written once).
enum Axis {
    Linear(plotters::coord::types::RangedCoordf64),
    Log(plotters::coord::combinators::LogCoord<f64>),
}

impl Axis {
    fn new(lo: f64, hi: f64, log: bool) -> Self {
        if log {
            Self::Log((lo..hi).log_scale().into())
        } else {
            Self::Linear((lo..hi).into())
        }
    }
}

impl plotters::coord::ranged1d::Ranged for Axis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        match self {
            Self::Linear(a) => a.map(value, limit),
            Self::Log(a) => a.map(value, limit),
        }
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match self {
            Self::Linear(a) => a.key_points(hint),
            // Labels and the bold grid at the powers of ten only; the light
            // grid also at 2..9 times them.
            Self::Log(a) => {
                let bold = matches!(
                    hint.weight(),
                    plotters::coord::ranged1d::KeyPointWeight::Bold
                );
                let r = a.range();
                let mut points = Vec::new();
                let mut decade = 10f64.powf(r.start.log10().floor());
                while decade <= r.end {
                    for m in if bold { 1..=1 } else { 1..=9 } {
                        let v = decade * m as f64;
                        if v >= r.start && v <= r.end {
                            points.push(v);
                        }
                    }
                    decade *= 10.0;
                }
                points
            }
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        match self {
            Self::Linear(a) => a.range(),
            Self::Log(a) => a.range(),
        }
    }
}
