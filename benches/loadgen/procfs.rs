//! What /proc says about a process: CPU time and resident memory. Used for the broker (by PID)
//! and for the generator itself, so every result says what each side cost.

use std::time::Instant;

/// Clock ticks per second of /proc/<pid>/stat's utime and stime: USER_HZ, 100 on every Linux
/// architecture this runs on.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')' come field 3 (state) onwards; utime and stime are fields 14 and 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// A `VmRSS`/`VmHWM`-style line of /proc/<pid>/status, in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// CPU time of the broker and of the generator at one instant.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at: Instant,
    pub broker_cpu: Option<f64>,
    pub own_cpu: Option<f64>,
}

impl Sample {
    pub fn take(broker: Option<u32>) -> Sample {
        Sample {
            at: Instant::now(),
            broker_cpu: broker.and_then(|pid| cpu_seconds(Some(pid))),
            own_cpu: cpu_seconds(None),
        }
    }
}

/// CPU use between two samples, in percent of one core (200 = both cores of a 2-core host).
pub fn cpu_percent(
    from: Option<f64>,
    to: Option<f64>,
    from_at: Instant,
    to_at: Instant,
) -> Option<f64> {
    let wall = to_at.duration_since(from_at).as_secs_f64();
    match (from, to) {
        (Some(a), Some(b)) if wall > 0.0 => Some((b - a) / wall * 100.0),
        _ => None,
    }
}

/// The broker's CPU and memory over a measured interval, as a JSON object (null without a PID).
pub fn broker_json(pid: Option<u32>, from: &Sample, to: &Sample) -> serde_json::Value {
    let Some(pid) = pid else {
        return serde_json::Value::Null;
    };
    serde_json::json!({
        "pid": pid,
        "cpu_seconds": match (from.broker_cpu, to.broker_cpu) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        },
        "cpu_percent": cpu_percent(from.broker_cpu, to.broker_cpu, from.at, to.at),
        "rss_kib": status_kib(pid, "VmRSS"),
        "peak_rss_kib": status_kib(pid, "VmHWM"),
    })
}
