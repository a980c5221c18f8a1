//! What a chaos run reports: one [`ScenarioResult`] per scenario run, the invariants it
//! held or broke, and the tables (`render`, `per_scenario`).

use std::time::Duration;

use super::scenario::{Scenario, scenarios};
use crate::{checker::Verdict, history::Overlap};

fn is_network(name: &str) -> bool {
    Scenario::from_name(name).is_some_and(Scenario::is_network)
}

/// One scenario's line.
#[derive(Clone, Debug)]
pub struct ScenarioResult {
    /// The fault.
    pub fault: String,
    /// The operation it struck during.
    pub operation: String,
    /// Operations recorded.
    pub operations: usize,
    /// Acknowledged writes lost.
    pub lost: usize,
    /// The checker's verdict; `None` when the scenario ended before the checker ran.
    pub verdict: Option<Verdict>,
    /// Most membership changes in flight at once.
    pub max_in_flight: usize,
    /// Consecutive member lists that differed by more than one change (each one a
    /// violation of one change at a time).
    pub step_violations: Vec<String>,
    /// Removals that left fewer healthy voters than quorum.
    pub quorum_broken: usize,
    /// From the fault (a network fault: from when it healed) to the cluster converged and
    /// the operation done.
    pub converge: Duration,
    /// Members whose HashKV disagreed.
    pub hash_mismatches: usize,
    /// What failed, when something did.
    pub error: Option<String>,
    /// The fault destroys data on purpose: lost writes are counted, not failed.
    pub loss_expected: bool,
    /// Members of the cluster before a network fault that were gone (or had a new id)
    /// once it converged: removed for a partition alone.
    pub partition_removals: usize,
    /// What the checker was given to judge.
    pub evidence: Evidence,
    /// What the availability probe saw through the fault (when the run judges budgets).
    pub availability: Option<crate::availability::Availability>,
    /// How the scenario broke its availability budget (empty when it held).
    pub budget_breaches: Vec<String>,
}

/// What the checker was given to judge in one scenario: how much the operations contended,
/// and how many watch events, lease renewals and serializable reads it checked.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Evidence {
    /// Operations on a key overlapping another on the same key, over the whole run.
    pub overlap: Overlap,
    /// The same, over the operations called in the fault window (contention on).
    pub fault_overlap: Overlap,
    /// Watch events checked.
    pub watch_events: usize,
    /// Watch sessions that met a compaction (each reported as such).
    pub compacted_watches: usize,
    /// Lease renewals checked (each a bound on when the lease may expire).
    pub lease_renewals: usize,
    /// Reads checked at their revision only (serializable, and the members' own reads).
    pub serializable_reads: usize,
}

impl Evidence {
    /// The evidence of every run together.
    fn sum<'a>(all: impl Iterator<Item = &'a Evidence>) -> Evidence {
        all.fold(Evidence::default(), |a, e| Evidence {
            overlap: Overlap {
                operations: a.overlap.operations + e.overlap.operations,
                overlapping: a.overlap.overlapping + e.overlap.overlapping,
            },
            fault_overlap: Overlap {
                operations: a.fault_overlap.operations + e.fault_overlap.operations,
                overlapping: a.fault_overlap.overlapping + e.fault_overlap.overlapping,
            },
            watch_events: a.watch_events + e.watch_events,
            compacted_watches: a.compacted_watches + e.compacted_watches,
            lease_renewals: a.lease_renewals + e.lease_renewals,
            serializable_reads: a.serializable_reads + e.serializable_reads,
        })
    }
}

impl ScenarioResult {
    /// True when every invariant held.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.broken_invariants().is_empty()
    }

    /// The invariants that did not hold (beside an error, which ends a scenario).
    pub fn broken_invariants(&self) -> Vec<String> {
        let mut broken = Vec::new();
        if !self.loss_expected {
            if self.lost > 0 {
                broken.push(format!("{} acknowledged writes lost", self.lost));
            }
            if self.verdict != Some(Verdict::Pass) {
                broken.push(format!(
                    "checker verdict {}",
                    self.verdict.map_or("none", Verdict::as_str)
                ));
            }
        }
        if self.max_in_flight > 1 {
            broken.push(format!("{} changes in flight at once", self.max_in_flight));
        }
        if !self.step_violations.is_empty() {
            broken.push(format!(
                "member lists changed by more than one step between samples: {:?}",
                self.step_violations
            ));
        }
        if self.quorum_broken > 0 {
            broken.push(format!("{} removals broke quorum", self.quorum_broken));
        }
        if self.hash_mismatches > 0 {
            broken.push(format!(
                "{} members' HashKV disagreed",
                self.hash_mismatches
            ));
        }
        if self.partition_removals > 0 {
            broken.push(format!(
                "{} members removed for a network fault alone",
                self.partition_removals
            ));
        }
        if !self.budget_breaches.is_empty() {
            broken.push(format!(
                "availability budget broken: {}",
                self.budget_breaches.join("; ")
            ));
        }
        broken
    }
}

/// Every scenario's line, and the summary.
#[derive(Clone, Debug, Default)]
pub struct ChaosReport {
    /// One per scenario run.
    pub results: Vec<ScenarioResult>,
}

impl ChaosReport {
    /// Scenarios that failed.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed()).count()
    }

    /// Acknowledged writes lost, over all scenarios that must lose none.
    pub fn lost(&self) -> usize {
        self.results
            .iter()
            .filter(|r| !r.loss_expected)
            .map(|r| r.lost)
            .sum()
    }

    /// Scenarios that must lose nothing whose histories were not linearizable.
    pub fn violations(&self) -> usize {
        self.results
            .iter()
            .filter(|r| !r.loss_expected && r.verdict == Some(Verdict::Fail))
            .count()
    }

    /// The table and the summary lines.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "| fault | operation | ops | lost | linearizable | in flight max | quorum broken | removed for a partition | converge | result | overlap (fault window) | watch events | lease renewals |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.results {
            let e = &r.evidence;
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} | {:.0}% ({:.0}%) | {} | {} |\n",
                r.fault,
                r.operation,
                r.operations,
                r.lost,
                r.verdict.map_or("-", Verdict::as_str),
                r.max_in_flight,
                r.quorum_broken,
                if is_network(&r.fault) {
                    r.partition_removals.to_string()
                } else {
                    "-".to_string()
                },
                r.converge.as_secs_f64(),
                match &r.error {
                    None if r.passed() && r.loss_expected => {
                        format!("ok (data destroyed on purpose: {} writes lost)", r.lost)
                    }
                    None if r.passed() => "ok".to_string(),
                    None => format!("FAILED: {}", r.broken_invariants().join("; ")),
                    Some(e) => format!("FAILED: {e}"),
                },
                e.overlap.percent(),
                e.fault_overlap.percent(),
                e.watch_events,
                e.lease_renewals,
            ));
        }
        out.push_str(&format!(
            "summary: scenarios {}, failed {}, acknowledged writes lost {}, linearizability violations {}\n",
            self.results.len(),
            self.failed(),
            self.lost(),
            self.violations()
        ));
        out.push_str(&self.evidence_line());
        out
    }

    /// What the checker judged over every run: the second summary line.
    pub fn evidence_line(&self) -> String {
        let e = self.evidence();
        format!(
            "checked: {} operations on keys, {:.0}% overlapping another on the same key ({:.0}% in fault windows), {} watch events ({} sessions met a compaction), {} lease renewals, {} serializable reads\n",
            e.overlap.operations,
            e.overlap.percent(),
            e.fault_overlap.percent(),
            e.watch_events,
            e.compacted_watches,
            e.lease_renewals,
            e.serializable_reads
        )
    }

    /// The evidence of every run together.
    pub fn evidence(&self) -> Evidence {
        Evidence::sum(self.results.iter().map(|r| &r.evidence))
    }
}

impl ChaosReport {
    /// One row per scenario over all its runs, for a soak: runs, operations, lost writes,
    /// runs linearizable, most changes in flight, removals for a partition (network
    /// scenarios), converge time (median, the lower of the middle two for an even count, and
    /// slowest) over the runs that converged, and failed runs.
    pub fn per_scenario(&self) -> String {
        let mut out = String::from(
            "| scenario | runs | ops | lost | linearizable | in flight max | removed for a partition | converge median | converge max | failed | overlap (fault window) | watch events | lease renewals |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let mut names: Vec<&str> = Vec::new();
        for r in &self.results {
            if !names.contains(&r.fault.as_str()) {
                names.push(&r.fault);
            }
        }
        names.sort_by_key(|n| scenarios().position(|s| s == *n).unwrap_or(usize::MAX));
        for name in names {
            let runs: Vec<&ScenarioResult> =
                self.results.iter().filter(|r| r.fault == name).collect();
            let mut converge: Vec<Duration> = runs
                .iter()
                .filter(|r| r.error.is_none())
                .map(|r| r.converge)
                .collect();
            converge.sort();
            let secs = |d: Option<&Duration>| {
                d.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
            };
            let lost: usize = runs.iter().map(|r| r.lost).sum();
            let e = Evidence::sum(runs.iter().map(|r| &r.evidence));
            out.push_str(&format!(
                "| {name} | {} | {} | {} | {}/{} | {} | {} | {} | {} | {} | {:.0}% ({:.0}%) | {} | {} |\n",
                runs.len(),
                runs.iter().map(|r| r.operations).sum::<usize>(),
                if runs.iter().any(|r| r.loss_expected) {
                    format!("{lost} (on purpose)")
                } else {
                    lost.to_string()
                },
                runs.iter()
                    .filter(|r| r.verdict == Some(Verdict::Pass))
                    .count(),
                runs.len(),
                runs.iter().map(|r| r.max_in_flight).max().unwrap_or(0),
                if is_network(name) {
                    runs.iter()
                        .map(|r| r.partition_removals)
                        .sum::<usize>()
                        .to_string()
                } else {
                    "-".to_string()
                },
                secs(converge.get(converge.len().saturating_sub(1) / 2)),
                secs(converge.last()),
                runs.iter().filter(|r| !r.passed()).count(),
                e.overlap.percent(),
                e.fault_overlap.percent(),
                e.watch_events,
                e.lease_renewals,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> ScenarioResult {
        ScenarioResult {
            fault: "kill-etcd".into(),
            operation: "steady writes".into(),
            operations: 500,
            lost: 0,
            verdict: Some(Verdict::Pass),
            max_in_flight: 1,
            step_violations: Vec::new(),
            quorum_broken: 0,
            converge: Duration::from_secs(3),
            hash_mismatches: 0,
            error: None,
            loss_expected: false,
            partition_removals: 0,
            evidence: Evidence::default(),
            availability: None,
            budget_breaches: Vec::new(),
        }
    }

    #[test]
    fn every_broken_invariant_fails_the_scenario() {
        assert!(clean().passed(), "{:?}", clean().broken_invariants());
        let broken = [
            ScenarioResult {
                step_violations: vec!["{1, 2, 3} -> {1} (2 changes)".into()],
                ..clean()
            },
            ScenarioResult {
                verdict: Some(Verdict::Undecided),
                ..clean()
            },
            ScenarioResult {
                verdict: Some(Verdict::Fail),
                ..clean()
            },
            ScenarioResult {
                verdict: None,
                ..clean()
            },
            ScenarioResult { lost: 1, ..clean() },
            ScenarioResult {
                max_in_flight: 2,
                ..clean()
            },
            ScenarioResult {
                quorum_broken: 1,
                ..clean()
            },
            ScenarioResult {
                hash_mismatches: 1,
                ..clean()
            },
            ScenarioResult {
                fault: "partition-leader".into(),
                partition_removals: 1,
                ..clean()
            },
            ScenarioResult {
                budget_breaches: vec!["the lease with a 5 s TTL expired".into()],
                ..clean()
            },
        ];
        for r in &broken {
            assert!(!r.passed(), "{r:?}");
            assert_eq!(r.broken_invariants().len(), 1, "{r:?}");
            let report = ChaosReport {
                results: vec![r.clone()],
            };
            assert_eq!(report.failed(), 1);
            assert!(report.render().contains("FAILED: "), "{}", report.render());
        }
        // Data destroyed on purpose: lost writes and the verdict are reported, not failed;
        // the membership invariants still hold or fail.
        let lossy = ScenarioResult {
            loss_expected: true,
            lost: 4,
            verdict: Some(Verdict::Fail),
            ..clean()
        };
        assert!(lossy.passed());
        let lossy_steps = ScenarioResult {
            step_violations: vec!["two at once".into()],
            ..lossy
        };
        assert!(!lossy_steps.passed());
        let report = ChaosReport {
            results: vec![clean(), lossy_steps],
        };
        assert_eq!(report.violations(), 0);
        assert_eq!(report.failed(), 1);
    }

    #[test]
    fn a_soak_has_one_row_per_scenario_over_its_runs() {
        let slow = ScenarioResult {
            converge: Duration::from_secs(9),
            ..clean()
        };
        let partitioned = ScenarioResult {
            fault: "partition-leader".into(),
            operations: 100,
            partition_removals: 1,
            ..clean()
        };
        let report = ChaosReport {
            results: vec![clean(), slow, clean(), partitioned],
        };
        let text = report.per_scenario();
        assert!(
            text.contains("| kill-etcd | 3 | 1500 | 0 | 3/3 | 1 | - | 3.0 s | 9.0 s | 0 |"),
            "{text}"
        );
        assert!(
            text.contains("| partition-leader | 1 | 100 | 0 | 1/1 | 1 | 1 | 3.0 s | 3.0 s | 1 |"),
            "{text}"
        );
    }

    #[test]
    fn network_scenarios_are_listed_and_show_their_removals() {
        use super::super::scenario::{NETWORK, PROCESS};
        for n in NETWORK {
            assert!(scenarios().any(|s| s == n.name()), "{n:?}");
            assert!(!PROCESS.contains(n), "{n:?}");
            assert_eq!(Scenario::from_name(n.name()), Some(*n));
            assert!(n.is_network());
        }
        for p in PROCESS {
            assert_eq!(Scenario::from_name(p.name()), Some(*p));
            assert!(!p.is_network());
        }
        let report = ChaosReport {
            results: vec![
                ScenarioResult {
                    fault: "split-2-3".into(),
                    ..clean()
                },
                clean(),
            ],
        };
        let text = report.render();
        assert!(
            text.contains("| split-2-3 | steady writes | 500 | 0 | pass | 1 | 0 | 0 |"),
            "{text}"
        );
        assert!(
            text.contains("| kill-etcd | steady writes | 500 | 0 | pass | 1 | 0 | - |"),
            "{text}"
        );
    }
}
