#!/usr/bin/env bash
# What the HTTP listener costs the publish path while nobody scrapes it: the same workload against
# the same release binary with and without `--http`, runs interleaved (off, on, on, off, ...) so
# drift on a shared machine hits both alike. Workload: one mosquitto_pub -l sends N messages as
# fast as it can to one mosquitto_sub; a run's time is from the publisher's start to the
# subscriber having received all N. Everything stays on 127.0.0.1; every run is bounded by a
# timeout. Needs mosquitto-clients and `cargo build --release`.
#
# Usage: scripts/http-overhead.sh [N messages, default 200000] [runs per mode, default 6] [qos]
#        scripts/http-overhead.sh --loadgen [runs per mode, default 4] [loadgen scenario args...]
#   --loadgen drives the broker with the project's load generator instead (default scenario:
#   16 publisher/subscriber pairs, QoS 0, 5 s) and prints deliveries/s and broker CPU per
#   delivery for each mode. Needs `cargo bench --bench loadgen --no-run` first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" = --loadgen ]; then
    shift
    runs=${1:-4}
    shift || true
    scenario=("$@")
    [ ${#scenario[@]} -gt 0 ] || scenario=(pairs --qos 0 --duration 5 --warmup 1)
    bin=${BIN:-target/release/starling}
    loadgen=$(ls -t target/release/deps/loadgen-* 2>/dev/null | grep -v '\.d$' | head -n 1)
    [ -x "$bin" ] && [ -x "$loadgen" ] || {
        echo "build first: cargo build --release && cargo bench --bench loadgen --no-run" >&2
        exit 1
    }
    declare -A rate=([off]=0 [on]=0) us=([off]=0 [on]=0)
    for i in $(seq "$runs"); do
        if [ $((i % 2)) -eq 1 ]; then order=(off on); else order=(on off); fi
        for mode in "${order[@]}"; do
            port=$((20000 + RANDOM % 20000))
            http=()
            if [ "$mode" = on ]; then http=(--http "127.0.0.1:$((port + 1))"); fi
            "$bin" -l "127.0.0.1:$port" --log-level warn "${http[@]}" >/dev/null 2>&1 &
            pid=$!
            sleep 0.5
            line=$(timeout 60 "$loadgen" "${scenario[@]}" --port "$port" --broker-pid "$pid" 2>/dev/null)
            kill "$pid"
            wait "$pid" 2>/dev/null || true
            read -r r u < <(echo "$line" | python3 -c 'import json,sys; d=json.load(sys.stdin)
r = d["deliveries_per_s"]
print(r, d["broker"]["cpu_percent"] / 100 * 1e6 / r)')
            printf 'run %d http=%-3s %9.0f deliveries/s  broker %.3f us/delivery\n' "$i" "$mode" "$r" "$u"
            rate[$mode]=$(echo "${rate[$mode]} + $r" | bc -l)
            us[$mode]=$(echo "${us[$mode]} + $u" | bc -l)
        done
    done
    for mode in off on; do
        printf 'http=%-3s mean %9.0f deliveries/s  broker %.3f us/delivery\n' "$mode" \
            "$(echo "${rate[$mode]} / $runs" | bc -l)" "$(echo "${us[$mode]} / $runs" | bc -l)"
    done
    exit 0
fi

bin=${BIN:-target/release/starling}
n=${1:-200000}
runs=${2:-6}
qos=${3:-0}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
work=$(mktemp -d)
broker_pid=
cleanup() {
    if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# Unlimited queues, so a subscriber that falls behind loses nothing and every run moves N messages.
printf '[limits]\nmax_queued_messages = 0\nmax_inflight_messages = 0\n[log]\nlevel = "warn"\n' >"$work/starling.toml"
yes 'sensor reading: 21.5 degrees C.' | head -n "$n" >"$work/payloads" || true

# One timed run; prints "seconds broker-cpu-seconds".
run() {
    local mode=$1 port http=() tries=0
    while :; do
        port=$((20000 + RANDOM % 20000))
        http=()
        if [ "$mode" = on ]; then http=(--http "127.0.0.1:$((port + 1))"); fi
        "$bin" -c "$work/starling.toml" -l "127.0.0.1:$port" "${http[@]}" >"$work/broker.out" 2>&1 &
        broker_pid=$!
        for _ in $(seq 100); do grep -q "listening on" "$work/broker.out" && break; sleep 0.05; done
        grep -q "listening on" "$work/broker.out" && break
        wait "$broker_pid" 2>/dev/null || true
        broker_pid=
        tries=$((tries + 1))
        [ "$tries" -lt 5 ] || { cat "$work/broker.out" >&2; exit 1; }
    done
    timeout 120 mosquitto_sub -p "$port" -t bench -q "$qos" -C "$n" >/dev/null &
    local sub=$!
    sleep 0.3
    local t0 t1 ticks
    t0=$(date +%s.%N)
    timeout 120 mosquitto_pub -p "$port" -t bench -q "$qos" -l <"$work/payloads"
    wait "$sub"
    t1=$(date +%s.%N)
    # utime + stime of the broker, in clock ticks (fields 14 and 15 of /proc/PID/stat).
    ticks=$(awk '{print $14 + $15}' "/proc/$broker_pid/stat")
    kill "$broker_pid"
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=
    echo "$(echo "$t1 - $t0" | bc -l) $(echo "$ticks / $(getconf CLK_TCK)" | bc -l)"
}

declare -A total=([off]=0 [on]=0) cpu=([off]=0 [on]=0)
echo "messages=$n qos=$qos runs=$runs per mode"
for i in $(seq "$runs"); do
    if [ $((i % 2)) -eq 1 ]; then order=(off on); else order=(on off); fi
    for mode in "${order[@]}"; do
        read -r secs cpus < <(run "$mode")
        printf 'run %2d http=%-3s %6.3f s %8.0f msg/s  broker cpu %5.2f s\n' "$i" "$mode" "$secs" \
            "$(echo "$n / $secs" | bc -l)" "$cpus"
        total[$mode]=$(echo "${total[$mode]} + $secs" | bc -l)
        cpu[$mode]=$(echo "${cpu[$mode]} + $cpus" | bc -l)
    done
done
for mode in off on; do
    printf 'http=%-3s mean %6.3f s %8.0f msg/s  broker cpu %5.2f s = %5.2f us/msg\n' "$mode" \
        "$(echo "${total[$mode]} / $runs" | bc -l)" "$(echo "$n * $runs / ${total[$mode]}" | bc -l)" \
        "$(echo "${cpu[$mode]} / $runs" | bc -l)" "$(echo "${cpu[$mode]} * 1000000 / ($n * $runs)" | bc -l)"
done
