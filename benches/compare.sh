#!/usr/bin/env bash
# Side-by-side benchmark of Starling and mosquitto on this host, loopback only.
#
# Builds Starling (release) and the load generator, then for every scenario of the matrix and
# every repetition starts a fresh Starling and a fresh mosquitto in turn (A B A B ...), each on
# its own port, drives it with the same load generator command, and collects one JSON line per
# run. The generator reads each broker's CPU time and RSS from /proc (it is given the PID).
# Prints a markdown table of medians with Starling/mosquitto ratios at the end.
#
# Usage: benches/compare.sh [--quick] [--reps N] [--only REGEX] [--persistence] [--keep DIR]
#   --quick        short runs, 1 repetition, 1,000 idle connections: a smoke run (~2 minutes)
#   --reps N       repetitions of each scenario per broker (default 3; the table shows medians)
#   --only REGEX   run only the scenarios whose name matches (names: see `matrix` below)
#   --persistence  turn mosquitto's persistence on (and give Starling a --data-dir)
#   --keep DIR     write results, logs and configs to DIR instead of a temporary directory
# Environment: STARLING_PORT (21883), MOSQUITTO_PORT (21884).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=0
reps=''
only=''
persistence=0
work=''
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1 ;;
        --reps) reps=$2; shift ;;
        --only) only=$2; shift ;;
        --persistence) persistence=1 ;;
        --keep) work=$2; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$reps" ]; then
    if [ "$quick" = 1 ]; then reps=1; else reps=3; fi
fi
sport=${STARLING_PORT:-21883}
mport=${MOSQUITTO_PORT:-21884}

if ! command -v mosquitto >/dev/null 2>&1 && [ -x /usr/sbin/mosquitto ]; then
    PATH="$PATH:/usr/sbin"
fi
if ! command -v mosquitto >/dev/null 2>&1; then
    echo "==> installing mosquitto" >&2
    if [ "$(id -u)" -eq 0 ]; then as_root=(); else as_root=(sudo -n); fi
    ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends mosquitto
    PATH="$PATH:/usr/sbin"
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
results="$work/results.jsonl"
: >"$results"

# mosquitto: a minimal configuration on its own loopback port. Everything else is mosquitto's
# default, whose limits Starling shares (max_inflight_messages 20, max_queued_messages 1000).
{
    echo "listener $mport 127.0.0.1"
    echo "allow_anonymous true"
    if [ "$persistence" = 1 ]; then
        mkdir -p "$work/mosquitto-data"
        echo "persistence true"
        echo "persistence_location $work/mosquitto-data/"
    else
        echo "persistence false"
    fi
    echo "log_dest stderr"
} >"$work/mosquitto.conf"
starling_args=(-l "127.0.0.1:$sport")
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
start_broker() {
    case "$1" in
        starling)
            "$starling" "${starling_args[@]}" >>"$work/starling.log" 2>&1 &
            broker_pid=$!
            wait_for_port "$sport"
            ;;
        mosquitto)
            mosquitto -c "$work/mosquitto.conf" >>"$work/mosquitto.log" 2>&1 &
            broker_pid=$!
            wait_for_port "$mport"
            ;;
    esac
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
    idle="idle --connections 1000 --hold 1 --settle 0.5"
else
    d="--duration 5 --warmup 1 --drain 3"
    idle="idle --connections 10000 --hold 3 --settle 2"
fi
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
total=$(( ${#selected[@]} * reps * 2 ))
echo "==> ${#selected[@]} scenarios x $reps repetitions x 2 brokers = $total runs; results in $work" >&2

n=0
failed=0
started=$SECONDS
for entry in "${selected[@]}"; do
    name=${entry%%|*}
    args=${entry#*|}
    for rep in $(seq "$reps"); do
        for broker in starling mosquitto; do
            n=$((n + 1))
            if [ "$broker" = starling ]; then port=$sport; else port=$mport; fi
            start_broker "$broker"
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

echo
echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr); generator and brokers on the same host, loopback."
echo "Brokers: Starling $(git describe --always --dirty 2>/dev/null || echo '?') (release build), $(mosquitto -h 2>/dev/null | head -n 1)."
echo "Runs: $reps per scenario and broker, interleaved; medians. Payload 64 B, clean sessions."
echo
"$loadgen" report "$results" --labels starling,mosquitto
if [ "$failed" -gt 0 ]; then
    echo
    echo "$failed run(s) failed; see $work/loadgen.log"
fi
echo "(results: $results; broker logs: $work/*.log; $((SECONDS - started)) s)" >&2
