//! Delivery accounting, latency figures, and the markdown table of the `report` command.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use starling::codec::QoS;

use crate::flow::new_histogram;

/// What one subscriber saw of one publisher: a bitmap of sequence numbers.
#[derive(Default, Clone)]
pub struct Track {
    seen: Vec<u64>,
    distinct: u64,
    duplicates: u64,
    reordered: u64,
    /// One past the highest sequence number seen.
    next: u64,
}

impl Track {
    /// Records `seq`; returns whether it moved `next` forward.
    pub fn record(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.seen.len() {
            self.seen.resize((word + 1).next_power_of_two(), 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return false;
        }
        self.seen[word] |= bit;
        self.distinct += 1;
        if seq < self.next {
            self.reordered += 1;
            false
        } else {
            self.next = seq + 1;
            true
        }
    }

    pub fn next(&self) -> u64 {
        self.next
    }

    /// How many distinct sequence numbers in `from..to` were seen.
    pub fn count_range(&self, from: u64, to: u64) -> u64 {
        (from..to).filter(|&seq| self.has(seq)).count() as u64
    }

    fn has(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// The first few runs of sequence numbers below `sent` never seen, as "a..b" (inclusive).
    pub fn missing(&self, sent: u64, max_runs: usize) -> Vec<String> {
        let has = |seq: u64| self.has(seq);
        let mut runs = Vec::new();
        let mut seq = 0;
        while seq < sent && runs.len() < max_runs {
            if has(seq) {
                seq += 1;
                continue;
            }
            let from = seq;
            while seq < sent && !has(seq) {
                seq += 1;
            }
            runs.push(format!("{from}..{}", seq - 1));
        }
        runs
    }
}

/// One publisher's own account.
#[derive(Default, Debug)]
pub struct PubReport {
    /// Messages written.
    pub sent: u64,
    /// QoS 1/2 messages still unacknowledged when the drain time ran out.
    pub unacked: u64,
    /// PUBACK/PUBREC with an error reason code.
    pub rejected: u64,
    /// Acknowledgements for identifiers not in flight.
    pub stray_acks: u64,
    /// Times the window was forgiven because nothing arrived (QoS 0 messages the broker dropped).
    pub window_stalls: u64,
    /// With `--burst`: the first sequence number sent in each phase (before, during, after the
    /// burst); `None` for a phase that had not begun when publishing stopped.
    pub phase_start: [Option<u64>; 3],
}

impl PubReport {
    /// The sequence numbers this publisher sent in burst phase `k`.
    pub fn phase_range(&self, k: usize) -> (u64, u64) {
        let start = |k: usize| {
            self.phase_start
                .get(k)
                .copied()
                .flatten()
                .unwrap_or(self.sent)
        };
        (start(k), start(k + 1))
    }
}

/// One subscriber's account.
pub struct SubReport {
    pub delivered: u64,
    pub malformed: u64,
    pub misrouted: u64,
    pub latency: Histogram<u64>,
    /// Per publisher, indexed like the plan's publishers.
    pub tracks: Vec<Track>,
    /// With `--burst`: latency per burst phase (before, during, after); empty otherwise.
    pub phase_latency: Vec<Histogram<u64>>,
}

impl SubReport {
    pub fn new() -> anyhow::Result<SubReport> {
        Ok(SubReport {
            delivered: 0,
            malformed: 0,
            misrouted: 0,
            latency: new_histogram()?,
            tracks: Vec::new(),
            phase_latency: Vec::new(),
        })
    }
}

/// The delivery account of a whole run, summed over every (publisher, subscriber) pair that
/// should see each other.
#[derive(Default, Debug)]
pub struct Account {
    qos: u8,
    expected: u64,
    received: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    misrouted: u64,
    malformed: u64,
    unacked: u64,
    rejected: u64,
    stray_acks: u64,
    window_stalls: u64,
}

impl Account {
    pub fn settle(
        qos: QoS,
        subs_of_pub: &[Vec<usize>],
        pubs: &[PubReport],
        subs: &[SubReport],
    ) -> Account {
        let mut a = Account {
            qos: qos.as_u8(),
            ..Account::default()
        };
        for (p, subscribers) in subs_of_pub.iter().enumerate() {
            let sent = pubs[p].sent;
            for &s in subscribers {
                let track = subs[s].tracks.get(p).cloned().unwrap_or_default();
                if track.distinct < sent {
                    eprintln!(
                        "loadgen: subscriber {s} missed from publisher {p} (sent {sent}): {}",
                        track.missing(sent, 5).join(", ")
                    );
                }
                a.expected += sent;
                a.received += track.distinct;
                a.lost += sent.saturating_sub(track.distinct);
                a.duplicated += track.duplicates;
                a.reordered += track.reordered;
            }
        }
        for s in subs {
            a.misrouted += s.misrouted;
            a.malformed += s.malformed;
        }
        for p in pubs {
            a.unacked += p.unacked;
            a.rejected += p.rejected;
            a.stray_acks += p.stray_acks;
            a.window_stalls += p.window_stalls;
        }
        a
    }

    /// "exact" when every message arrived once and in order; QoS 0 may lose messages, QoS 1
    /// may duplicate them; anything else is a failure.
    pub fn verdict(&self) -> String {
        let protocol_faults = self.misrouted
            + self.malformed
            + self.unacked
            + self.rejected
            + self.stray_acks
            + self.reordered;
        if protocol_faults == 0 && self.lost == 0 && self.duplicated == 0 {
            return "exact".to_owned();
        }
        let allowed = protocol_faults == 0
            && match self.qos {
                0 => self.duplicated == 0,
                1 => self.lost == 0,
                _ => false,
            };
        let mut parts = Vec::new();
        for (n, what) in [
            (self.lost, "lost"),
            (self.duplicated, "duplicated"),
            (self.reordered, "reordered"),
            (self.misrouted, "misrouted"),
            (self.malformed, "malformed"),
            (self.unacked, "unacked"),
            (self.rejected, "rejected"),
            (self.stray_acks, "stray acks"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        let detail = parts.join(", ");
        if allowed {
            format!(
                "{detail} of {} (allowed at QoS {})",
                self.expected, self.qos
            )
        } else {
            format!("FAIL: {detail} of {}", self.expected)
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "expected": self.expected,
            "received": self.received,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "misrouted": self.misrouted,
            "malformed": self.malformed,
            "unacked": self.unacked,
            "rejected": self.rejected,
            "stray_acks": self.stray_acks,
            "window_stalls": self.window_stalls,
            "verdict": self.verdict(),
        })
    }
}

/// Merges the subscribers' histograms into p50/p99/p99.9/max in microseconds.
pub fn merge_latency(subs: &[SubReport]) -> anyhow::Result<Value> {
    let mut all = new_histogram()?;
    for s in subs {
        all.add(&s.latency).context("merging latency histograms")?;
    }
    Ok(latency_json(&all))
}

/// p50/p99/p99.9/max/mean in microseconds of a histogram in nanoseconds (null when empty).
pub fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    json!({
        "p50": us(h.value_at_quantile(0.50)),
        "p99": us(h.value_at_quantile(0.99)),
        "p999": us(h.value_at_quantile(0.999)),
        "max": us(h.max()),
        "mean": h.mean() / 1000.0,
        "samples": h.len(),
    })
}

/// One row of the table: what was run, independent of the broker.
fn row_key(v: &Value) -> String {
    let scenario = v["scenario"].as_str().unwrap_or("?");
    let mqtt = v["mqtt"].as_str().unwrap_or("?");
    let suffix = if mqtt == "5" { ", MQTT 5" } else { "" };
    match scenario {
        "idle" => format!(
            "memory per idle connection ({} connections, one subscription each){suffix}, KiB",
            v["connections"]
        ),
        _ => {
            let (p, s) = (&v["publishers"], &v["subscribers"]);
            let shape = match scenario {
                "fan-in" => format!("fan-in, {p} publishers -> 1 wildcard subscriber"),
                "fan-out" => format!("fan-out, 1 publisher -> {s} subscribers"),
                "pairs" if p == 1 => "1 publisher/subscriber pair".to_owned(),
                "pairs" => format!("{p} publisher/subscriber pairs"),
                other => other.to_owned(),
            };
            match (v["rate"].as_f64(), v["burst"]["connections"].as_u64()) {
                (Some(rate), Some(burst)) => format!(
                    "latency at a fixed {} msg/s while {burst} new connections open, {shape}, QoS {}{suffix}, p50 / p99 / max ms during the burst (before it)",
                    si(rate),
                    v["qos"]
                ),
                (Some(rate), None) => format!(
                    "latency at a fixed {} msg/s, {shape}, QoS {}{suffix}, p50 / p99 ms",
                    si(rate),
                    v["qos"]
                ),
                (None, Some(burst)) => format!(
                    "{shape}, QoS {}{suffix}, while {burst} new connections open, deliveries/s",
                    v["qos"]
                ),
                (None, None) => format!("{shape}, QoS {}{suffix}, deliveries/s", v["qos"]),
            }
        }
    }
}

/// The figures of a row (throughput; latency p50 and p99; KiB per idle connection; with a
/// burst, p50, p99 and max during it and then before it). Lower is better for latency and
/// memory. `None` for a run without figures (skipped, failed).
fn figures(v: &Value) -> Option<Vec<f64>> {
    if v["skipped"].is_string() {
        return None;
    }
    if v["scenario"] == "idle" {
        return Some(vec![v["per_connection_bytes"].as_f64()? / 1024.0]);
    }
    let ms = |l: &Value, q: &str| l[q].as_f64().map(|us| us / 1000.0);
    if v["rate"].is_number() && v["burst"].is_object() {
        let phases = &v["burst"]["phases"];
        let (during, before) = (
            &phases["during"]["latency_us"],
            &phases["before"]["latency_us"],
        );
        return Some(vec![
            ms(during, "p50")?,
            ms(during, "p99")?,
            ms(during, "max")?,
            ms(before, "p50")?,
            ms(before, "p99")?,
            ms(before, "max")?,
        ]);
    }
    if v["rate"].is_number() {
        let l = &v["latency_us"];
        return Some(vec![ms(l, "p50")?, ms(l, "p99")?]);
    }
    Some(vec![v["deliveries_per_s"].as_f64()?])
}

/// How many of a row's figures are compared in the ratio column (the rest is context).
fn compared(figures: &[f64]) -> usize {
    if figures.len() == 6 { 3 } else { figures.len() }
}

/// How a row's figures are shown.
fn show_figures(v: &Value, xs: &[f64]) -> String {
    match xs {
        [p50, p99] => format!("{p50:.2} / {p99:.2}"),
        [p50, p99, max, b50, b99, bmax] => {
            format!("{p50:.2} / {p99:.2} / {max:.1} ({b50:.2} / {b99:.2} / {bmax:.1})")
        }
        [x] if v["scenario"] == "idle" => format!("{x:.2}"),
        [x] => si(*x),
        _ => "-".to_owned(),
    }
}

/// 1234567 as "1.23 M", 45678 as "45.7 k".
fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0} k", x / 1e3)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(xs[n / 2]),
        _ => Some((xs[n / 2 - 1] + xs[n / 2]) / 2.0),
    }
}

/// The verdicts of a row's runs, identical ones counted.
fn verdicts(runs: &[&Value]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for v in runs {
        let verdict = if v["scenario"] == "idle" {
            v["verdict"].as_str()
        } else {
            v["accounting"]["verdict"].as_str()
        };
        *counts
            .entry(verdict.unwrap_or("no result").to_owned())
            .or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(v, n)| if n == 1 { v } else { format!("{v} (x{n})") })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One label's side of a row: median figures, how they are shown, verdicts, broker CPU and
/// peak RSS.
struct Side {
    medians: Vec<f64>,
    shown: String,
    verdicts: String,
    cpu: Option<f64>,
    rss_kib: Option<f64>,
    skipped: bool,
}

impl Side {
    fn of(rs: &[&Value]) -> Side {
        let all: Vec<Vec<f64>> = rs.iter().filter_map(|v| figures(v)).collect();
        // The median of each figure on its own (p50 and p99 may come from different runs).
        let width = all.first().map_or(0, Vec::len);
        let medians: Option<Vec<f64>> = (0..width)
            .map(|i| median(all.iter().filter_map(|f| f.get(i).copied()).collect()))
            .collect();
        let skipped = !rs.is_empty() && rs.iter().all(|v| v["skipped"].is_string());
        let shown = match (&medians, rs.first()) {
            _ if skipped => "n/a".to_owned(),
            (Some(m), Some(v)) if !m.is_empty() => show_figures(v, m),
            _ if rs.is_empty() => "not run".to_owned(),
            _ => "no result".to_owned(),
        };
        let broker = |key: &str| {
            median(
                rs.iter()
                    .filter_map(|v| v["broker"][key].as_f64())
                    .collect(),
            )
        };
        Side {
            medians: medians.unwrap_or_default(),
            shown,
            verdicts: verdicts(rs),
            cpu: broker("cpu_percent"),
            rss_kib: broker("peak_rss_kib"),
            skipped,
        }
    }

    /// This side's compared figures over `other`'s, one ratio each.
    fn ratio(&self, other: &Side) -> String {
        if self.skipped || other.skipped {
            return "n/a".to_owned();
        }
        let n = compared(&self.medians);
        if n == 0 || self.medians.len() != other.medians.len() {
            return "-".to_owned();
        }
        self.medians[..n]
            .iter()
            .zip(&other.medians[..n])
            .map(|(x, y)| {
                if *y > 0.0 {
                    format!("{:.2}", x / y)
                } else {
                    "-".to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

/// Prints the markdown table: per row, the median figure of each label, the first label's ratio
/// to each of the others, the verdicts, and the broker's median CPU and peak RSS.
pub fn print_table(files: &[PathBuf], labels: &[String]) -> anyhow::Result<()> {
    let [first, others @ ..] = labels else {
        anyhow::bail!("--labels takes at least two labels");
    };
    if others.is_empty() {
        anyhow::bail!("--labels takes at least two labels");
    }
    let mut rows: Vec<String> = Vec::new();
    let mut runs: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if !v.is_object() {
                continue;
            }
            let key = row_key(&v);
            if !rows.contains(&key) {
                rows.push(key.clone());
            }
            let label = v["label"].as_str().unwrap_or("").to_owned();
            runs.entry((key, label)).or_default().push(v);
        }
    }
    let all = labels.join(" / ");
    let mut header = String::from("| scenario |");
    for label in labels {
        header.push_str(&format!(" {label} |"));
    }
    for other in others {
        header.push_str(&format!(" ratio {first}/{other} |"));
    }
    header.push_str(&format!(
        " verdicts {all} | broker CPU % {all} | broker peak RSS MiB {all} |"
    ));
    println!("{header}");
    let columns = 1 + labels.len() + others.len() + 3;
    println!("|{}", "---|".repeat(columns));
    let empty = Vec::new();
    let num = |x: Option<f64>, digits: usize| x.map_or("-".to_owned(), |x| format!("{x:.digits$}"));
    for row in rows {
        let sides: Vec<Side> = labels
            .iter()
            .map(|label| {
                let rs: Vec<&Value> = runs
                    .get(&(row.clone(), label.clone()))
                    .unwrap_or(&empty)
                    .iter()
                    .collect();
                Side::of(&rs)
            })
            .collect();
        let join =
            |f: &dyn Fn(&Side) -> String| sides.iter().map(f).collect::<Vec<_>>().join(" / ");
        let mut line = format!("| {row} |");
        for side in &sides {
            line.push_str(&format!(" {} |", side.shown));
        }
        for other in &sides[1..] {
            line.push_str(&format!(" {} |", sides[0].ratio(other)));
        }
        line.push_str(&format!(
            " {} | {} | {} |",
            join(&|s| s.verdicts.clone()),
            join(&|s| if s.skipped {
                "-".to_owned()
            } else {
                num(s.cpu, 0)
            }),
            join(&|s| if s.skipped {
                "-".to_owned()
            } else {
                num(s.rss_kib.map(|k| k / 1024.0), 1)
            }),
        ));
        println!("{line}");
    }
    Ok(())
}
