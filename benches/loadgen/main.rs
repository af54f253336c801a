//! Starling's load generator: a lean MQTT client on tokio that drives a broker (Starling,
//! mosquitto, any other) with one scenario and prints one JSON line with the result.
//!
//! It speaks MQTT through Starling's own codec, writes with TCP_NODELAY in batches, and keeps
//! per-publisher sequence numbers and send timestamps in every payload, so each run reports
//! end-to-end latency and an exact delivery account (lost, duplicated, reordered, misrouted).
//! Traffic goes to loopback addresses only and every phase of a run is bounded in time.
//!
//! ```text
//! cargo bench --bench loadgen -- fan-in --qos 1 --duration 10
//! cargo bench --bench loadgen -- idle --connections 10000 --hold 10 --broker-pid $(pidof mosquitto)
//! ```
//!
//! See benches/README.md for the scenarios, the options and the JSON fields.

mod burst;
mod flow;
mod idle;
mod mqtt;
mod procfs;
mod report;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use starling::codec::{ProtocolVersion, QoS};

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Load generator for MQTT brokers on loopback (fan-in, fan-out, pairs, idle)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true, global = true)]
    bench: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// N publishers, each on its own topic, into 1 subscriber on a wildcard filter.
    FanIn(FlowArgs),
    /// 1 publisher into N subscribers of the same topic.
    FanOut(FlowArgs),
    /// N publisher/subscriber pairs, each pair on its own topic.
    Pairs(FlowArgs),
    /// N idle connections with one subscription each, held for a while (memory per connection).
    Idle(IdleArgs),
    /// Reads result lines (JSON, one per run, with --label) and prints a markdown table of
    /// medians per scenario and label.
    Report(ReportArgs),
}

/// Options every scenario shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Broker host: a loopback name or address (anything else is refused).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// MQTT version spoken by every client.
    #[arg(long, value_enum, default_value = "3.1.1")]
    mqtt: MqttVersion,
    /// Worker threads of the generator's tokio runtime.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// PID of the broker: its CPU time (utime+stime) over the measured interval and its RSS
    /// (VmRSS, VmHWM) are read from /proc and reported.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Free text copied into the result line (the compare script puts the broker's name here).
    #[arg(long, default_value = "")]
    label: String,
    /// Seconds allowed for each TCP connect and MQTT handshake.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout: f64,
    /// Persistent sessions (3.1.1 clean session 0; 5.0 session expiry 300 s), so a broker with
    /// persistence stores every QoS 1/2 delivery: for durability benchmarks. Default: clean.
    #[arg(long)]
    persistent: bool,
    /// Do not run: print a result line for this scenario marked as skipped, with this reason
    /// (the compare script's way to show "n/a" for a feature a broker lacks, such as QoS 2).
    #[arg(long, value_name = "REASON")]
    skip: Option<String>,
}

/// MQTT protocol version on the wire.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttVersion {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "5")]
    V5,
}

impl MqttVersion {
    fn protocol(self) -> ProtocolVersion {
        match self {
            MqttVersion::V311 => ProtocolVersion::V311,
            MqttVersion::V5 => ProtocolVersion::V5,
        }
    }

    fn name(self) -> &'static str {
        match self {
            MqttVersion::V311 => "3.1.1",
            MqttVersion::V5 => "5",
        }
    }
}

/// Options of the message-flow scenarios (fan-in, fan-out, pairs).
#[derive(Args, Debug, Clone)]
pub struct FlowArgs {
    #[command(flatten)]
    common: Common,
    /// Publishers (fan-in), subscribers (fan-out) or pairs; default 8, 16 and 16.
    #[arg(long)]
    clients: Option<usize>,
    /// QoS of every publish and subscription.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload bytes (at least 20: publisher, sequence number and timestamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Seconds measured (after the warm-up); publishers stop after warm-up + duration.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of traffic before measuring starts (counted in the delivery account, not in
    /// the rate or latency).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Messages per publisher instead of a duration: the run ends when all are delivered.
    #[arg(long)]
    count: Option<u64>,
    /// End-to-end window: a publisher pauses while more than this many of its messages are
    /// unread by its subscriber(s). Default: 512 divided by the publishers per subscriber
    /// (at least 16), so a subscriber never has more than ~512 messages coming.
    #[arg(long)]
    window: Option<u64>,
    /// Unacknowledged QoS 1/2 publishes per publisher, at most (and never more than the
    /// broker's Receive Maximum under MQTT 5). 20 is mosquitto's and Starling's
    /// max_inflight_messages: mosquitto drops incoming QoS 2 messages of 3.1.1 clients beyond it.
    #[arg(long, default_value_t = 20)]
    inflight: usize,
    /// Fixed rate in messages/s over all publishers (latency below saturation). Paced in
    /// ticks of the tokio timer (1 ms); each message carries its actual send time.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds to wait after publishing stops for the last messages and acknowledgements.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Upper bound on the whole run in --count mode, in seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Open this many more connections (one subscription each) as fast as possible while the
    /// flow runs, from a thread of their own; the result then splits the flow's latency and
    /// losses into before, during and after the burst: does accepting connections stall the
    /// clients already connected? Use with --rate, so the flow's load stays the same.
    #[arg(long, value_name = "N")]
    burst: Option<usize>,
    /// Seconds into the measured interval at which the burst starts (default: a third of
    /// --duration).
    #[arg(long)]
    burst_at: Option<f64>,
    /// Handshakes of the burst in progress at once.
    #[arg(long, default_value_t = 256)]
    burst_concurrency: usize,
    /// Burst connections per source address (127.0.0.1, then 127.0.0.2, ...; see idle).
    #[arg(long, default_value_t = 20_000)]
    burst_per_source: usize,
}

/// Options of the idle scenario.
#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open, each with one subscription.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Seconds to hold the connections once all are subscribed.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,
    /// Seconds to wait after the last SUBACK before reading the broker's RSS.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Connections per source address: past this many, connections bind to 127.0.0.2, then
    /// 127.0.0.3, ... so the ~28 k ephemeral ports of one address are never the limit.
    #[arg(long, default_value_t = 20_000)]
    per_source: usize,
    /// Handshakes in progress at once (mosquitto listens with a backlog of 100).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

#[derive(Args, Debug, Clone)]
struct ReportArgs {
    /// Files of result lines; lines that are not JSON objects are skipped.
    files: Vec<std::path::PathBuf>,
    /// Labels to compare, in column order; the ratios are the first over each of the others.
    #[arg(long, value_delimiter = ',', default_value = "starling,mosquitto")]
    labels: Vec<String>,
}

/// The three message-flow scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    FanIn,
    FanOut,
    Pairs,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::FanIn => "fan-in",
            Shape::FanOut => "fan-out",
            Shape::Pairs => "pairs",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Some(command) = cli.command else {
        // `cargo test --benches` runs bench binaries without arguments: nothing to measure.
        eprintln!("loadgen: no scenario given (see --help); nothing to do");
        return Ok(());
    };
    if let Command::Report(args) = &command {
        return report::print_table(&args.files, &args.labels);
    }
    let threads = match &command {
        Command::FanIn(a) | Command::FanOut(a) | Command::Pairs(a) => a.common.threads,
        Command::Idle(a) => a.common.threads,
        Command::Report(_) => 1,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .thread_name("loadgen")
        .build()
        .context("cannot start the tokio runtime")?;
    let result = runtime.block_on(async move {
        match command {
            Command::FanIn(args) => flow::run(Shape::FanIn, args).await,
            Command::FanOut(args) => flow::run(Shape::FanOut, args).await,
            Command::Pairs(args) => flow::run(Shape::Pairs, args).await,
            Command::Idle(args) => idle::run(args).await,
            Command::Report(_) => bail!("report runs without a runtime"),
        }
    })?;
    println!("{result}");
    // Connections still closing are not waited for: the result is out.
    runtime.shutdown_timeout(Duration::from_millis(500));
    Ok(())
}

/// Resolves `host:port` and refuses anything that is not a loopback address.
pub async fn loopback_target(common: &Common) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((common.host.as_str(), common.port))
        .await
        .with_context(|| format!("cannot resolve {}", common.host))?
        .collect();
    let Some(addr) = addrs.first().copied() else {
        bail!("{} resolves to no address", common.host);
    };
    if let Some(other) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "{} resolves to {}, which is not a loopback address: the load generator only drives brokers on this host",
            common.host,
            other.ip()
        );
    }
    Ok(addr)
}

/// The source address of connection number `index`: the default one for the first
/// `per_source` connections, then 127.0.0.2, 127.0.0.3, ... (IPv4 targets only).
pub fn source_for(target: SocketAddr, index: usize, per_source: usize) -> Option<IpAddr> {
    let group = index / per_source.max(1);
    if group == 0 || !target.is_ipv4() {
        return None;
    }
    let last = u8::try_from(1 + group % 254).unwrap_or(1);
    Some(IpAddr::from([127, 0, 0, last]))
}

/// The QoS number as the codec's type.
pub fn qos_of(n: u8) -> QoS {
    QoS::from_u8(n).unwrap_or(QoS::AtMostOnce)
}

/// A short tag that keeps topics and client ids of concurrent or successive runs apart.
pub fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}", std::process::id(), nanos)
}
