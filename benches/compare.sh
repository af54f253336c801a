#!/usr/bin/env bash
# Side-by-side benchmark of Starling and its peers (mosquitto; optionally rumqttd and
# nats-server) on this host, loopback only.
#
# Builds Starling (release) and the load generator, then for every scenario of the matrix and
# every repetition starts a fresh Starling and a fresh instance of each peer in turn
# (A B C D A B C D ...), each on its own loopback port, drives it with the same load generator
# command, and collects one JSON line per run. The generator reads each broker's CPU time and
# RSS from /proc (it is given the broker's own PID, checked against /proc/PID/exe). Prints a
# markdown table of medians with a Starling/peer ratio per peer at the end. A scenario a peer
# cannot run (nats-server: QoS 2, MQTT 5) shows as "n/a".
#
# Usage: benches/compare.sh [--quick] [--reps N] [--only REGEX] [--peers LIST] [--idle N]
#                           [--per-source N] [--inflight N] [--persistence] [--keep DIR]
#   --quick        short runs, 1 repetition, 1,000 idle connections: a smoke run (~2 minutes)
#   --reps N       repetitions of each scenario per broker (default 3; the table shows medians)
#   --only REGEX   run only the scenarios whose name matches (names: see `matrix` below)
#   --peers LIST   comma-separated peers among mosquitto, rumqttd, nats (default: mosquitto)
#   --idle N       connections of the idle scenarios (default 10,000; 1,000 with --quick)
#   --per-source N idle connections per 127.0.0.x source address (default: the generator's)
#   --inflight N   QoS 1/2 messages in flight per client for Starling, mosquitto and nats (default
#                  20, the brokers' default; rumqttd's is fixed at 100, so --inflight 100 compares
#                  all four with the same window)
#   --persistence  turn mosquitto's persistence on (and give Starling a --data-dir)
#   --keep DIR     write results, logs and configs to DIR instead of a temporary directory
# Environment: STARLING_PORT (21883), MOSQUITTO_PORT (21884), RUMQTTD_PORT (21885, MQTT 3.1.1)
# and RUMQTTD_V5_PORT (21887), NATS_PORT (21886, MQTT) and NATS_CLIENT_PORT (21888, NATS
# protocol, unused); PEER_TOOLS (where `cargo install` puts rumqttd when it is not on PATH,
# default ~/.cache/starling-peers).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=0
reps=''
only=''
peers_arg=mosquitto
idle_n=''
per_source=''
persistence=0
inflight=20
work=''
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --reps) reps=$2; shift ;;
        --only) only=$2; shift ;;
        --peers) peers_arg=$2; shift ;;
        --idle) idle_n=$2; shift ;;
        --per-source) per_source=$2; shift ;;
        --inflight) inflight=$2; shift ;;
        --persistence) persistence=1 ;;
        --keep) work=$2; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$reps" ]; then
    if [ "$quick" = 1 ]; then reps=1; else reps=3; fi
fi
if [ -z "$idle_n" ]; then
    if [ "$quick" = 1 ]; then idle_n=1000; else idle_n=10000; fi
fi
IFS=, read -r -a peers <<<"$peers_arg"
for peer in "${peers[@]}"; do
    case "$peer" in
        mosquitto|rumqttd|nats) ;;
        *) echo "unknown peer: $peer (mosquitto, rumqttd, nats)" >&2; exit 2 ;;
    esac
done
brokers=(starling "${peers[@]}")
has_peer() {
    local peer
    for peer in "${peers[@]}"; do [ "$peer" = "$1" ] && return 0; done
    return 1
}
sport=${STARLING_PORT:-21883}
mport=${MOSQUITTO_PORT:-21884}
rport=${RUMQTTD_PORT:-21885}
rport5=${RUMQTTD_V5_PORT:-21887}
nport=${NATS_PORT:-21886}
nclient=${NATS_CLIENT_PORT:-21888}
peer_tools=${PEER_TOOLS:-$HOME/.cache/starling-peers}

if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo -n); fi
apt_install() {
    ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"
}
PATH="$PATH:/usr/sbin:$peer_tools/bin"
if has_peer mosquitto && ! command -v mosquitto >/dev/null 2>&1; then
    echo "==> installing mosquitto" >&2
    apt_install mosquitto
fi
if has_peer nats && ! command -v nats-server >/dev/null 2>&1; then
    echo "==> installing nats-server" >&2
    apt_install nats-server || {
        echo "cannot install nats-server with apt-get: put a nats-server binary (>= 2.9, from" >&2
        echo "https://github.com/nats-io/nats-server/releases) on PATH" >&2
        exit 1
    }
fi
if has_peer rumqttd && ! command -v rumqttd >/dev/null 2>&1; then
    echo "==> installing rumqttd 0.20.0 into $peer_tools (cargo install; this compiles it)" >&2
    # Not --locked: its lock file pins metrics 0.22.1, which current rustc refuses (E0521).
    cargo install rumqttd --version 0.20.0 --root "$peer_tools" >&2
fi

echo "==> building Starling (release) and the load generator" >&2
cargo build --release --locked --bin starling >&2
loadgen=$(cargo bench --locked --bench loadgen --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | grep '/loadgen-' | tail -n 1)
starling=target/release/starling
[ -x "$loadgen" ] || { echo "cannot find the loadgen binary" >&2; exit 1; }

if [ -z "$work" ]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/starling-compare.XXXXXX")
fi
mkdir -p "$work"
work=$(cd "$work" && pwd)
results="$work/results.jsonl"
: >"$results"

# The peers' configurations: each on its own loopback port, no authentication, and the limits
# Starling has by default (20 messages in flight per client, 1,000 queued, no packet size limit
# below the protocol's) wherever the peer has such a setting.
#
# mosquitto: a minimal configuration. Everything else is mosquitto's default, whose limits
# Starling shares (max_inflight_messages 20, max_queued_messages 1000, message_size_limit 0).
{
    echo "listener $mport 127.0.0.1"
    echo "allow_anonymous true"
    echo "max_inflight_messages $inflight"
    if [ "$persistence" = 1 ]; then
        mkdir -p "$work/mosquitto-data"
        echo "persistence true"
        echo "persistence_location $work/mosquitto-data/"
    else
        echo "persistence false"
    fi
    echo "log_dest stderr"
} >"$work/mosquitto.conf"
# rumqttd 0.20: one listener per protocol version. Its in-flight limit towards subscribers is
# fixed at 100 in its code and it has no per-client queue limit (messages stay in the router's
# commit log of 10 segments of 100 MB, its sample configuration's figures), so neither can be
# set to 20 / 1,000. max_inflight_count is how many packets it reads from a connection per
# batch (its sample's 100 kept); max_payload_size is the largest packet it accepts (set to the
# protocol's maximum, like mosquitto's default); next_connection_delay_ms 0, as mosquitto and
# Starling do not pause between accepts (the sample pauses 1 ms). No console, metrics or
# websocket listeners.
rumqttd_listener() {
    cat <<EOF
[$1.1]
name = "$1-1"
listen = "127.0.0.1:$2"
next_connection_delay_ms = 0
    [$1.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 268435455
    max_inflight_count = 100
    dynamic_filters = true

EOF
}
{
    echo "id = 0"
    echo
    echo "[router]"
    echo "max_connections = 25000"
    echo "max_outgoing_packet_count = 200"
    echo "max_segment_size = 104857600"
    echo "max_segment_count = 10"
    echo
    rumqttd_listener v4 "$rport"
    rumqttd_listener v5 "$rport5"
} >"$work/rumqttd.toml"
# nats-server: MQTT needs JetStream (for sessions and QoS 1), which needs a store directory and
# a server name; the store is wiped before every run. max_ack_pending is its in-flight limit
# per subscription (20, as the others). It has no queue limit per client (JetStream keeps the
# messages) and no QoS 2 or MQTT 5 (those cells show n/a). Its NATS client port cannot be
# switched off: it listens on loopback too. max_payload is NATS's largest.
cat >"$work/nats.conf" <<EOF
server_name: starling_bench
listen: 127.0.0.1:$nclient
max_payload: 64MB
jetstream {
    store_dir: "$work/nats-js"
}
mqtt {
    listen: 127.0.0.1:$nport
    max_ack_pending: $inflight
}
EOF
starling_args=(-l "127.0.0.1:$sport")
if [ "$inflight" != 20 ]; then
    printf '[limits]\nmax_inflight_messages = %s\n' "$inflight" >"$work/starling.toml"
    starling_args+=(-c "$work/starling.toml")
fi
if [ "$persistence" = 1 ]; then
    starling_args+=(--data-dir "$work/starling-data")
fi

# Open files: the idle scenario holds 10,000 connections in the generator and in the broker.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

broker_pid=''
wait_for_port() {
    local port=$1 i
    for i in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $port" >&2
    return 1
}
# The broker's MQTT port for a run (rumqttd has a listener per protocol version).
port_of() {
    case "$1" in
        starling) echo "$sport" ;;
        mosquitto) echo "$mport" ;;
        rumqttd) if [[ " $2 " == *" --mqtt 5 "* ]]; then echo "$rport5"; else echo "$rport"; fi ;;
        nats) echo "$nport" ;;
    esac
}
# Why a broker cannot run a scenario (empty when it can).
unsupported() {
    case "$1" in
        nats)
            if [[ " $2 " == *" --qos 2 "* ]]; then echo "nats-server has no QoS 2"
            elif [[ " $2 " == *" --mqtt 5 "* ]]; then echo "nats-server speaks MQTT 3.1.1 only"
            fi ;;
    esac
}
start_broker() {
    local exe
    case "$1" in
        starling)
            "$starling" "${starling_args[@]}" >>"$work/starling.log" 2>&1 &
            broker_pid=$!; exe=starling
            ;;
        mosquitto)
            mosquitto -c "$work/mosquitto.conf" >>"$work/mosquitto.log" 2>&1 &
            broker_pid=$!; exe=mosquitto
            ;;
        rumqttd)
            rumqttd -q -c "$work/rumqttd.toml" >>"$work/rumqttd.log" 2>&1 &
            broker_pid=$!; exe=rumqttd
            ;;
        nats)
            rm -rf "$work/nats-js"
            nats-server -c "$work/nats.conf" >>"$work/nats.log" 2>&1 &
            broker_pid=$!; exe=nats-server
            ;;
    esac
    wait_for_port "$(port_of "$1" '')"
    if [ "$1" = rumqttd ]; then wait_for_port "$rport5"; fi
    # The PID given to the generator must be the broker itself, not a wrapper.
    local actual
    actual=$(basename "$(readlink "/proc/$broker_pid/exe" 2>/dev/null)" 2>/dev/null || true)
    if [ "$actual" != "$exe" ]; then
        echo "PID $broker_pid is '$actual', not $exe" >&2
        return 1
    fi
}
stop_broker() {
    [ -n "$broker_pid" ] || return 0
    kill -TERM "$broker_pid" 2>/dev/null || true
    local i
    for i in $(seq 100); do
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=''
}
trap stop_broker EXIT

# The matrix: name and load generator arguments.
if [ "$quick" = 1 ]; then
    d="--duration 1 --warmup 0.3 --drain 2"
    idle="idle --connections $idle_n --hold 1 --settle 0.5"
    burst="--burst 1000 --duration 3 --burst-at 1 --warmup 0.3 --drain 2"
else
    d="--duration 5 --warmup 1 --drain 3"
    idle="idle --connections $idle_n --hold 3 --settle 2"
    burst="--burst 10000 --duration 8 --burst-at 2 --warmup 1 --drain 3"
fi
if [ -n "$per_source" ]; then idle="$idle --per-source $per_source"; fi
# Publishers keep as many in flight as the brokers allow subscribers.
if [ "$inflight" != 20 ]; then d="$d --inflight $inflight"; fi
matrix=(
    "fan-in-q0|fan-in --qos 0 $d"
    "fan-in-q1|fan-in --qos 1 $d"
    "fan-out-q0|fan-out --qos 0 $d"
    "fan-out-q1|fan-out --qos 1 $d"
    "pairs-q0|pairs --qos 0 $d"
    "pairs-q1|pairs --qos 1 $d"
    "pairs-q2|pairs --qos 2 $d"
    "latency-q1|pairs --clients 1 --qos 1 --rate 10000 $d"
    "idle|$idle"
    "burst-q1|pairs --clients 1 --qos 1 --rate 10000 $burst"
    "v5-fan-in-q1|fan-in --qos 1 --mqtt 5 $d"
    "v5-fan-out-q1|fan-out --qos 1 --mqtt 5 $d"
    "v5-pairs-q0|pairs --qos 0 --mqtt 5 $d"
    "v5-pairs-q2|pairs --qos 2 --mqtt 5 $d"
    "v5-latency-q1|pairs --clients 1 --qos 1 --rate 10000 --mqtt 5 $d"
    "v5-idle|$idle --mqtt 5"
)

selected=()
for entry in "${matrix[@]}"; do
    name=${entry%%|*}
    if [ -z "$only" ] || [[ "$name" =~ $only ]]; then selected+=("$entry"); fi
done
total=$(( ${#selected[@]} * reps * ${#brokers[@]} ))
echo "==> ${#selected[@]} scenarios x $reps repetitions x ${#brokers[@]} brokers (${brokers[*]}) = $total runs; results in $work" >&2

n=0
failed=0
started=$SECONDS
for entry in "${selected[@]}"; do
    name=${entry%%|*}
    args=${entry#*|}
    for rep in $(seq "$reps"); do
        for broker in "${brokers[@]}"; do
            n=$((n + 1))
            reason=$(unsupported "$broker" "$args")
            if [ -n "$reason" ]; then
                # shellcheck disable=SC2086 # $args is a list of words
                "$loadgen" $args --skip "$reason" --label "$broker" >>"$results"
                echo "[$n/$total] $name #$rep $broker: n/a ($reason)" >&2
                continue
            fi
            port=$(port_of "$broker" "$args")
            if ! start_broker "$broker"; then
                failed=$((failed + 1))
                echo "[$n/$total] $name #$rep $broker: the broker did not start (see $work/$broker.log)" >&2
                stop_broker
                continue
            fi
            # shellcheck disable=SC2086 # $args is a list of words
            if line=$(timeout 180 "$loadgen" $args --port "$port" --broker-pid "$broker_pid" \
                    --label "$broker" 2>>"$work/loadgen.log"); then
                echo "$line" >>"$results"
                summary=$(echo "$line" | grep -o '"verdict":"[^"]*"' | head -n 1 | cut -d'"' -f4)
                echo "[$n/$total] $name #$rep $broker: $summary ($((SECONDS - started)) s)" >&2
            else
                failed=$((failed + 1))
                echo "[$n/$total] $name #$rep $broker: the load generator failed (see $work/loadgen.log)" >&2
            fi
            stop_broker
        done
    done
done

versions="Starling $(git describe --always --dirty 2>/dev/null || echo '?') (release build)"
for peer in "${peers[@]}"; do
    case "$peer" in
        mosquitto) versions="$versions, $(mosquitto -h 2>/dev/null | head -n 1 || true)" ;;
        rumqttd) versions="$versions, $(rumqttd --version 2>/dev/null | head -n 1 || true)" ;;
        nats) versions="$versions, $(nats-server --version 2>/dev/null | head -n 1 || true) (MQTT)" ;;
    esac
done
echo
echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr); generator and brokers on the same host, loopback."
echo "Brokers: $versions."
echo "Runs: $reps per scenario and broker, interleaved; medians. Payload 64 B, clean sessions."
echo
labels=$(IFS=,; echo "${brokers[*]}")
"$loadgen" report "$results" --labels "$labels"
if [ "$failed" -gt 0 ]; then
    echo
    echo "$failed run(s) failed; see $work/loadgen.log"
fi
echo "(results: $results; broker logs: $work/*.log; $((SECONDS - started)) s)" >&2
