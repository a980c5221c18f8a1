//! The table `etcd-bench` prints: one row per measure, each beside its floor.

use std::time::Duration;

/// One row of the table.
pub struct Row {
    pub measure: String,
    pub value: String,
    pub floor: String,
    pub ratio: String,
}

pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn row(measure: &str, value: Duration, floor: Option<Duration>) -> Row {
    Row {
        measure: measure.into(),
        value: secs(value),
        floor: floor.map(secs).unwrap_or_else(|| "-".into()),
        ratio: floor
            .map(|f| format!("{:.1}x", value.as_secs_f64() / f.as_secs_f64()))
            .unwrap_or_else(|| "-".into()),
    }
}

/// The row under an RSS row: how much of it is the process's own, and how much the pages
/// of binaries it shares.
pub fn split_row((anon, file): (u64, u64)) -> Row {
    Row {
        measure: "  of it: anonymous (its own) / file pages (binaries, shared)".into(),
        value: format!("{} / {}", mib(anon), mib(file)),
        floor: "-".into(),
        ratio: "-".into(),
    }
}

/// Prints each row as it is pushed.
pub struct Rows;

impl Rows {
    pub fn push(&mut self, r: Row) {
        println!(
            "| {} | {} | {} | {} |",
            r.measure, r.value, r.floor, r.ratio
        );
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
