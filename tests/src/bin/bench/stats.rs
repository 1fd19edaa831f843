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

    pub fn of_durations_ms(d: &[Duration]) -> Self {
        Self::of(
            &d.iter()
                .map(|d| d.as_secs_f64() * 1000.0)
                .collect::<Vec<_>>(),
        )
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
