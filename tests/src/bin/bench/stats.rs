//! Summaries of repeated measurements: min, median, p99, max.

use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let pick = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
        Self {
            n: v.len(),
            min: v[0],
            p50: pick(0.5),
            p99: pick(0.99),
            max: v[v.len() - 1],
        }
    }
}

/// `1234.5` as `1234.5`, `0.123` as `0.123`, with sensible precision.
pub fn num(x: f64) -> String {
    if x >= 1000.0 {
        format!("{x:.0}")
    } else if x >= 100.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Durations as milliseconds.
pub fn ms(d: &[Duration]) -> Vec<f64> {
    d.iter().map(|d| d.as_secs_f64() * 1000.0).collect()
}

/// The median of each copy's measurements: the least and the greatest.
/// How far apart identical processes measure on this machine.
pub fn copies_spread(copies: &[Vec<f64>]) -> (f64, f64) {
    let medians: Vec<f64> = copies
        .iter()
        .filter(|c| !c.is_empty())
        .map(|c| Summary::of(c).p50)
        .collect();
    let s = Summary::of(&medians);
    (s.min, s.max)
}

/// Every copy's measurements together.
pub fn flat(copies: &[Vec<f64>]) -> Vec<f64> {
    copies.iter().flatten().copied().collect()
}

/// `values` thinned to `m` evenly spaced order statistics (the least, the
/// greatest, and `m - 2` between): the same CDF and quantiles, without
/// keeping every one of 100,000 samples in `samples.json`.
pub fn quantiles(values: &[f64], m: usize) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.len() <= m || m < 2 {
        return v;
    }
    (0..m)
        .map(|i| v[((i as f64 / (m - 1) as f64) * (v.len() - 1) as f64).round() as usize])
        .collect()
}
