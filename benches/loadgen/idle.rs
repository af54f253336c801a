//! The idle scenario: N connections, one subscription each, held open while the broker's
//! resident memory is read, so the result is the broker's memory per idle connection.
//!
//! Memory per connection is (VmRSS with every connection held - VmRSS before the first) / N,
//! the same measure for every broker. Past `--per-source` connections the clients bind to
//! further 127.0.0.x source addresses, so one address's ephemeral ports are never the limit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use starling::codec::{Packet, ProtocolVersion, QoS};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::mqtt::{self, Conn, KEEP_ALIVE_SECS};
use crate::procfs::{self, Sample, status_kib};
use crate::{IdleArgs, loopback_target, run_tag, source_for};

/// A connect phase gives up after this many failed connections.
const MAX_FAILURES: usize = 100;

pub async fn run(args: IdleArgs) -> anyhow::Result<String> {
    let common = &args.common;
    if let Some(reason) = &common.skip {
        return Ok(skipped_line(&args, reason));
    }
    let target = loopback_target(common).await?;
    let version = common.mqtt.protocol();
    let limit = Duration::from_secs_f64(common.connect_timeout);
    let pid = common.broker_pid;
    let tag = run_tag();
    let n = args.connections;

    let rss_before = pid.and_then(|p| status_kib(p, "VmRSS"));
    let start = Sample::take(pid);
    let Opened {
        mut conns,
        failures,
        first_error,
    } = open_many(
        &Many {
            target,
            n,
            per_source: args.per_source,
            concurrency: args.concurrency,
            version,
            limit,
            tag: &tag,
            what: "idle",
        },
        None,
    )
    .await;
    let connect_s = start.at.elapsed().as_secs_f64();
    eprintln!(
        "idle: {} of {n} connected and subscribed in {connect_s:.1} s, {failures} failed",
        conns.len()
    );
    if conns.is_empty() {
        bail!(
            "no connection succeeded: {}",
            first_error.unwrap_or_default()
        );
    }

    // Hold: settle, read the broker's memory, hold the rest of the time pinging within the keep
    // alive, then check that every connection still answers.
    let held_at = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_held = pid.and_then(|p| status_kib(p, "VmRSS"));
    let hold_until = held_at + Duration::from_secs_f64(args.hold.max(args.settle));
    let ping_every = Duration::from_secs(u64::from(KEEP_ALIVE_SECS) / 2);
    let mut pings = 0u32;
    let mut last_ping = held_at;
    while Instant::now() < hold_until {
        let step = (hold_until - Instant::now()).min(Duration::from_secs(1));
        tokio::time::sleep(step).await;
        if last_ping.elapsed() >= ping_every {
            ping_all(&mut conns).await;
            pings += 1;
            last_ping = Instant::now();
        }
    }
    let end = Sample::take(pid);
    ping_all(&mut conns).await;
    pings += 1;
    let established = conns.len();
    let alive = check_alive(conns, pings).await;

    let per_connection_bytes = match (rss_before, rss_held) {
        (Some(before), Some(held)) => {
            Some((held as f64 - before as f64) * 1024.0 / established as f64)
        }
        _ => None,
    };
    let verdict = if alive == n {
        "exact".to_owned()
    } else {
        format!("FAIL: {alive} of {n} connections alive at the end ({failures} failed to connect)")
    };
    let line = serde_json::json!({
        "scenario": "idle",
        "label": common.label,
        "mqtt": common.mqtt.name(),
        "connections": n,
        "established": established,
        "failed": failures,
        "first_error": first_error,
        "alive": alive,
        "connect_s": connect_s,
        "hold_s": args.hold,
        "rss_before_kib": rss_before,
        "rss_held_kib": rss_held,
        "per_connection_bytes": per_connection_bytes,
        "verdict": verdict,
        "broker": procfs::broker_json(pid, &start, &end),
    });
    Ok(line.to_string())
}

/// The result line of a run that was not made: same keys as a real one, so the report puts it in
/// its row, with the reason instead of figures.
fn skipped_line(args: &IdleArgs, reason: &str) -> String {
    serde_json::json!({
        "scenario": "idle",
        "label": args.common.label,
        "mqtt": args.common.mqtt.name(),
        "connections": args.connections,
        "skipped": reason,
        "verdict": "n/a",
    })
    .to_string()
}

/// What to open: `n` connections with one subscription each, `concurrency` handshakes at once,
/// changing source address every `per_source` connections.
pub struct Many<'a> {
    pub target: SocketAddr,
    pub n: usize,
    pub per_source: usize,
    pub concurrency: usize,
    pub version: ProtocolVersion,
    pub limit: Duration,
    /// Keeps client ids and filters apart from other runs and other groups of the same run.
    pub tag: &'a str,
    /// Prefix of the progress lines.
    pub what: &'a str,
}

/// The connections that were opened and subscribed, and what failed.
pub struct Opened {
    pub conns: Vec<Conn>,
    pub failures: usize,
    pub first_error: Option<String>,
}

/// Opens and subscribes `many.n` connections as fast as `many.concurrency` allows, with a
/// progress line each second; gives up after `MAX_FAILURES` failures, or when `stop` is
/// cancelled (then what is open so far is returned).
pub async fn open_many(many: &Many<'_>, stop: Option<&CancellationToken>) -> Opened {
    let n = many.n;
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    let mut failures = 0usize;
    let mut first_error: Option<String> = None;
    let mut set = JoinSet::new();
    let mut next = 0usize;
    let mut last_line = Instant::now();
    let never = CancellationToken::new();
    let stop = stop.unwrap_or(&never);
    while next < n || !set.is_empty() {
        while next < n && set.len() < many.concurrency.max(1) && failures < MAX_FAILURES {
            let i = next;
            let source = source_for(many.target, i, many.per_source);
            let tag = many.tag;
            let (filter, id) = (format!("lg/{tag}/idle/{i}"), format!("lg-{tag}-i{i}"));
            let (target, version, limit) = (many.target, many.version, many.limit);
            set.spawn(async move {
                let mut conn = Conn::open(target, source, &id, version, false, limit).await?;
                conn.subscribe(&filter, QoS::AtLeastOnce)
                    .await
                    .with_context(|| format!("{id}: subscribe"))?;
                anyhow::Ok(conn)
            });
            next += 1;
        }
        let joined = tokio::select! {
            joined = set.join_next() => joined,
            () = stop.cancelled() => {
                first_error.get_or_insert_with(|| "stopped before all were open".to_owned());
                break;
            }
        };
        let Some(joined) = joined else {
            break;
        };
        match joined {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(e)) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert_with(|| format!("connect task: {e}"));
            }
        }
        if last_line.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "{}: {} of {n} connected, {failures} failed",
                many.what,
                conns.len()
            );
            last_line = Instant::now();
        }
    }
    Opened {
        conns,
        failures,
        first_error,
    }
}

/// Sends PINGREQ on every connection (errors show up in the final liveness check).
async fn ping_all(conns: &mut [Conn]) {
    let mut out = BytesMut::new();
    for conn in conns {
        out.clear();
        if mqtt::put_pingreq(&mut out, conn.ctx.version).is_ok() {
            let _ = conn.stream.write_all(&out).await;
        }
    }
}

/// Counts the connections that answered all `pings` PINGREQs, then closes them all.
async fn check_alive(conns: Vec<Conn>, pings: u32) -> usize {
    let mut set = JoinSet::new();
    for mut conn in conns {
        set.spawn(async move {
            let answered = tokio::time::timeout(Duration::from_secs(10), async {
                let mut seen = 0;
                while seen < pings {
                    match conn.next_packet().await {
                        Ok(Packet::PingResp) => seen += 1,
                        Ok(_) => {}
                        Err(_) => return false,
                    }
                }
                true
            })
            .await
            .unwrap_or(false);
            conn.close().await;
            answered
        });
    }
    let mut alive = 0;
    while let Some(joined) = set.join_next().await {
        if matches!(joined, Ok(true)) {
            alive += 1;
        }
    }
    alive
}
