//! Medians, ranges and the markdown table.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::spec::{Flavour, Imp, Metrics, Workload};

/// Results by (workload, implementation, flavour); socat and direct have no flavour.
pub type Results = BTreeMap<(Workload, Imp, Option<Flavour>), Vec<Metrics>>;
/// Failed runs by the same key.
pub type Failures = BTreeMap<(Workload, Imp, Option<Flavour>), usize>;

#[derive(Debug, Clone, Copy)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn stat(runs: &[Metrics], key: &str) -> Option<Stat> {
    let mut v: Vec<f64> = runs
        .iter()
        .filter_map(|m| m.iter().find(|(k, _)| k == key).map(|(_, v)| *v))
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Stat {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// Three significant figures at most, thousands separated.
pub fn num(v: f64) -> String {
    if v >= 1000.0 {
        let digits = v.log10().floor() as i32 + 1;
        let keep = 10f64.powi((digits - 3).max(0));
        let r = ((v / keep).round() * keep) as u64;
        let s = r.to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cell(s: Option<Stat>, failed: usize) -> String {
    let stat = match s {
        Some(s) => format!("{} ({}–{})", num(s.median), num(s.min), num(s.max)),
        None => "—".into(),
    };
    if failed > 0 {
        format!("{stat}, **{failed} run(s) failed**")
    } else {
        stat
    }
}

/// What a row compares and the target it is held to.
#[derive(Clone, Copy)]
enum Target {
    /// pipes/raw ≥ this.
    AtLeast(f64),
    /// pipes/raw ≤ this.
    AtMost(f64),
    None,
}

/// A row's target in one flavour.
type TargetFor = fn(Flavour) -> Target;

/// Issue 13's targets: every rate at least this share of raw's (median).
const RATE_TARGET: f64 = 0.95;

/// The table. Returns it and the list of missed targets.
pub fn table(
    results: &Results,
    failures: &Failures,
    flavours: &[Flavour],
    workloads: &[Workload],
) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut missed = Vec::new();
    out.push_str("| workload | flavour | raw: median (min–max) | pipes: median (min–max) | pipes/raw | target |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for &w in workloads {
        let rows: Vec<(&str, &str, TargetFor, bool)> = match w {
            Workload::Many => vec![
                (
                    "6 10k connections: total time (s)",
                    "time",
                    |_| Target::None,
                    false,
                ),
                (
                    "6 10k connections: server RSS per connection (KiB)",
                    "rss_per_conn_kib",
                    // Issue 13: at most 1.5× raw tokio's and 2× raw smol's.
                    |fl| Target::AtMost(if fl.is_tokio() { 1.5 } else { 2.0 }),
                    false,
                ),
            ],
            Workload::UdpStream => {
                vec![(w.title(), "rate", |_| Target::AtLeast(RATE_TARGET), true)]
            }
            // No target set for TLS yet: the ratio is reported, not judged.
            Workload::Relay | Workload::TlsPingPong | Workload::TlsBulk => {
                vec![(w.title(), "rate", |_| Target::None, false)]
            }
            _ => vec![(w.title(), "rate", |_| Target::AtLeast(RATE_TARGET), false)],
        };
        for (title, key, target, loss) in rows {
            for &fl in flavours.iter().filter(|&&fl| w.runs_on(fl)) {
                let raw = results.get(&(w, Imp::Raw, Some(fl)));
                let pipes = results.get(&(w, Imp::Pipes, Some(fl)));
                let (r, p) = (
                    raw.and_then(|v| stat(v, key)),
                    pipes.and_then(|v| stat(v, key)),
                );
                let failed = |imp: Imp| failures.get(&(w, imp, Some(fl))).copied().unwrap_or(0);
                let (mut rc, mut pc) = (cell(r, failed(Imp::Raw)), cell(p, failed(Imp::Pipes)));
                if loss {
                    let worst = |v: Option<&Vec<Metrics>>| {
                        v.and_then(|v| stat(v, "loss"))
                            .map_or("—".into(), |s| format!("{:.2}%", s.max))
                    };
                    rc = format!("{rc}, loss ≤ {}", worst(raw));
                    pc = format!("{pc}, loss ≤ {}", worst(pipes));
                }
                let ratio = match (r, p) {
                    (Some(r), Some(p)) if r.median > 0.0 => Some(p.median / r.median),
                    _ => None,
                };
                let ratio_s = ratio.map_or("—".into(), |x| format!("{x:.2}×"));
                let verdict = match (target(fl), ratio) {
                    (Target::AtLeast(t), Some(x)) if x >= t => format!("≥ {t}× met"),
                    (Target::AtLeast(t), Some(_)) => {
                        missed.push(format!(
                            "{} {}: {ratio_s} (target ≥ {t}×)",
                            title,
                            fl.name()
                        ));
                        format!("≥ {t}× **missed**")
                    }
                    (Target::AtMost(t), Some(x)) if x <= t => format!("≤ {t}× met"),
                    (Target::AtMost(t), Some(_)) => {
                        missed.push(format!(
                            "{} {}: {ratio_s} (target ≤ {t}×)",
                            title,
                            fl.name()
                        ));
                        format!("≤ {t}× **missed**")
                    }
                    (Target::None, _) => "".into(),
                    (_, None) => {
                        missed.push(format!(
                            "{} {}: no completed run on one side",
                            title,
                            fl.name()
                        ));
                        "**no data**".into()
                    }
                };
                let _ = writeln!(
                    out,
                    "| {title} | {} | {rc} | {pc} | {ratio_s} | {verdict} |",
                    fl.name()
                );
            }
        }
        if w == Workload::Relay {
            relay_rows(results, failures, flavours, &mut out, &mut missed);
        }
    }
    (out, missed)
}

/// The relay's extra rows: socat and no relay (on one pinned core, and on two), the pipes
/// relay on its copying path (`Conf::zero_copy` off), and every pipes relay (zero copy, the
/// default) against socat and against no relay in the same setting (issue 13's targets:
/// ≥ 1.5× socat, ≥ 0.8× direct).
fn relay_rows(
    results: &Results,
    failures: &Failures,
    flavours: &[Flavour],
    out: &mut String,
    missed: &mut Vec<String>,
) {
    let w = Workload::Relay;
    let get = |imp: Imp, fl: Flavour| {
        results
            .get(&(w, imp, Some(fl)))
            .and_then(|v| stat(v, "rate"))
    };
    let failed = |imp: Imp, fl: Flavour| failures.get(&(w, imp, Some(fl))).copied().unwrap_or(0);
    for fl in [Flavour::TokioCt, Flavour::TokioMt] {
        let _ = writeln!(
            out,
            "| 7 relay: socat -b65536 | {} | {} | | | |",
            fl.cores(),
            cell(get(Imp::Socat, fl), failed(Imp::Socat, fl))
        );
        let _ = writeln!(
            out,
            "| 7 relay: none (client → echo server) | {} | {} | | | |",
            fl.cores(),
            cell(get(Imp::Direct, fl), failed(Imp::Direct, fl))
        );
    }
    for &fl in flavours {
        let setting = if fl.pinned() {
            Flavour::TokioCt
        } else {
            Flavour::TokioMt
        };
        let (p, copy) = (get(Imp::Pipes, fl), get(Imp::PipesCopy, fl));
        let (socat, direct) = (get(Imp::Socat, setting), get(Imp::Direct, setting));
        let copy_ratio = match (p, copy) {
            (Some(p), Some(c)) if c.median > 0.0 => {
                format!("{:.2}× (zero copy/copying)", p.median / c.median)
            }
            _ => "—".into(),
        };
        let _ = writeln!(
            out,
            "| 7 relay: pipes copying (zero_copy off) | {} | | {} | {copy_ratio} | |",
            fl.name(),
            cell(copy, failed(Imp::PipesCopy, fl))
        );
        for (versus, base, target) in [("socat", socat, 1.5), ("none (direct)", direct, 0.8)] {
            let (ratio, verdict) = match (p, base) {
                (Some(p), Some(b)) if b.median > 0.0 => {
                    let x = p.median / b.median;
                    if x >= target {
                        (format!("{x:.2}×"), format!("≥ {target}× met"))
                    } else {
                        missed.push(format!(
                            "7 relay {} vs {versus}: {x:.2}× (target ≥ {target}×)",
                            fl.name()
                        ));
                        (format!("{x:.2}×"), format!("≥ {target}× **missed**"))
                    }
                }
                (None, _) => {
                    missed.push(format!(
                        "7 relay {}: the pipes relay did not complete a run",
                        fl.name()
                    ));
                    ("—".into(), "**missed** (no completed run)".into())
                }
                _ => ("—".into(), "no data".into()),
            };
            let _ = writeln!(
                out,
                "| 7 relay: pipes (zero copy) vs {versus} | {} | {versus} {} | {} | {ratio} (pipes/{versus}) | {verdict} |",
                fl.name(),
                cell(base, 0),
                cell(p, failed(Imp::Pipes, fl))
            );
        }
    }
}
