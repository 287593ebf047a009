#!/usr/bin/env bash
# Throughput and latency of a fresh 4-validator (VALIDATORS=) devnet per engine on this
# machine: steps the offered rate up until the network saturates (commits
# fall below 90 % of the offered rate, or p99 latency passes 10 s — 30 s for
# proof-of-work, whose blocks come at random with a 2 s mean), and writes
# the table between the markers in docs/benchmarks.md (or $DOC).
#
#   ENGINES="raft pbft pow" RATES="1000 2000 4000 8000" DURATION=60 scripts/bench-network.sh
#   VRATES="0.5 1.0 1.6 2.0" scripts/bench-network.sh     # rates as multiples of V
#
# V is this machine's yardstick, measured first (scripts/yardstick.sh:
# ed25519 verifications per second on one core); every table states it.
# RATES_raft, RATES_pbft and RATES_pow (or VRATES_raft, ...), when set,
# replace RATES (VRATES) for one engine; BENCH_ARGS is passed on to
# `cairn-wallet bench` (e.g. "--series-every 1"); BIN names another build's
# binaries (to compare two commits in one sitting); REPORTS=dir keeps every
# step's JSON report there (scripts/plots.py reads them).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${BIN:-${CARGO_TARGET_DIR:-target}/release}"
engines=${ENGINES:-"raft pbft pow"}
rates=${RATES:-"1000 2000 4000 8000 12000 16000 24000 32000"}
duration=${DURATION:-60}
# Seconds of load at each step's rate before its measured $duration s, not
# counted (caches, allocators and connections of nodes that went idle
# between steps warm up; see docs/benchmarks.md).
warmup=${WARMUP:-10}
accounts=${ACCOUNTS:-20000}
# Validators per devnet (each a process on this machine).
validators=${VALIDATORS:-4}
base_port=${BASE_PORT:-27600}
doc=${DOC:-docs/benchmarks.md}
work=$(mktemp -d)
rows="$work/rows.md"
idle="$work/idle.md"
: >"$rows"
: >"$idle"
devnet_pid=

stop_devnet() {
    if [ -n "$devnet_pid" ]; then
        kill -TERM "$devnet_pid" 2>/dev/null || true
        wait "$devnet_pid" 2>/dev/null || true
        devnet_pid=
    fi
}
# KEEP=1 keeps the devnets' directories and logs (the path is printed).
trap 'stop_devnet; if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi' EXIT

# Each node's resident memory in MB, "a / b / c / d".
node_rss() {
    local out="" bytes
    for i in $(seq 0 $((validators - 1))); do
        bytes=$(curl -sf "http://127.0.0.1:$((base_port + 2 * i + 1))/metrics" |
            awk '/^process_resident_memory_bytes/ {print $2}')
        out="$out${out:+ / }$((${bytes:-0} / 1000000))"
    done
    echo "$out"
}

v=${V:-$(scripts/yardstick.sh)}
echo "V = $v ed25519 verifications/s on one core (best of three openssl runs)"
if [ -n "${REPORTS:-}" ]; then mkdir -p "$REPORTS"; fi

nodes=""
for i in $(seq 0 $((validators - 1))); do
    nodes="$nodes${nodes:+,}http://127.0.0.1:$((base_port + 2 * i + 1))"
done

for engine in $engines; do
    dir="$work/$engine"
    "$bin/cairn-node" devnet --engine "$engine" --validators "$validators" --dir "$dir" --fresh \
        --base-port "$base_port" --bench-accounts "$accounts" >"$work/$engine.log" 2>&1 &
    devnet_pid=$!
    for _ in $(seq 1 100); do
        if curl -sf "http://127.0.0.1:$((base_port + 1))/status" >/dev/null; then break; fi
        sleep 0.2
    done
    sleep 5 # peers connect, a leader or primary settles, miners start
    rss_before=$(node_rss)
    engine_rates_var="RATES_$engine"
    engine_vrates_var="VRATES_$engine"
    engine_rates=${!engine_rates_var:-$rates}
    vrates=${!engine_vrates_var:-${VRATES:-}}
    if [ -n "$vrates" ]; then
        engine_rates=$(for m in $vrates; do python3 -c "print(round($m * $v / 100) * 100)"; done)
    fi
    for rate in $engine_rates; do
        report="$work/$engine-$rate.json"
        echo "== $engine at $rate transfers/s for $duration s"
        "$bin/cairn-wallet" bench --nodes "$nodes" --accounts "$accounts" --rate "$rate" \
            --duration "$duration" --warmup "$warmup" --out "$report" ${BENCH_ARGS:-} |
            tee -a "$work/summary.txt"
        if [ -n "${REPORTS:-}" ]; then cp "$report" "$REPORTS/"; fi
        python3 - "$report" "$rows" "$v" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
v = float(sys.argv[3])
n = r["per_node"]
cpu = " / ".join(f'{x.get("cpu_percent", 0):.0f}' for x in n)
mem = " / ".join(f'{x.get("peak_rss_mb", 0):.0f}' for x in n)
rej = ", ".join(f"{k} {v}" for k, v in r["rejections"].items()) or "none"
l = r["latency_ms"]
pb = r.get("pow_blocks") or {}
stale = f'{pb["stale_rate"] * 100:.1f} % of {pb["blocks"]}' if "stale_rate" in pb else "–"
share = 100 * r["committed"] / max(r["offered"], 1)
kept = 100 * r["committed_per_s"] / max(r["offered_rate"], 1)
cpu_s = sum(x.get("cpu_seconds", 0) for x in n)
us = 1e6 * cpu_s / max(r["committed"], 1) / max(len(n), 1)
with open(sys.argv[2], "a") as f:
    f.write(f'| {r["engine"]} | {r["offered_rate"]:,} | {r["offered_rate"] / v:.2f} | '
            f'{r["committed_per_s"]:,.0f} | {kept:.0f} | {share:.1f} | '
            f'{l["p50"]:,.0f} | {l["p99"]:,.0f} | {us:,.0f} | {cpu} | {mem} | {stale} | {rej} |\n')
EOF
        limit_ms=10000
        if [ "$engine" = pow ]; then limit_ms=30000; fi
        saturated=$(python3 -c "
import json; r = json.load(open('$report'))
print(int(r['committed_per_s'] < 0.9 * r['offered_rate'] or r['latency_ms']['p99'] > $limit_ms))")
        if [ "$saturated" = 1 ]; then break; fi
    done
    # Memory after the load: once no mempool holds a transaction a block
    # could take (the backlog of a saturated step committed, at most 3
    # minutes; transactions behind a nonce gap — a refused earlier nonce —
    # stay), nodes give memory back after 10 s without a committed
    # transaction.
    for _ in $(seq 1 180); do
        pending=0
        for i in $(seq 0 $((validators - 1))); do
            n=$(curl -sf "http://127.0.0.1:$((base_port + 2 * i + 1))/metrics" |
                awk '/^cairn_mempool_transactions / {all = $2}
                     /^cairn_mempool_waiting_transactions / {waiting = $2}
                     END {print all - waiting}')
            pending=$((pending + ${n:-0}))
        done
        if [ "$pending" = 0 ]; then break; fi
        sleep 1
    done
    sleep 20
    echo "- $engine: $rss_before MB per node before the load, $(node_rss) MB 20 s after the mempools emptied" >>"$idle"
    stop_devnet
done

cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
cores=$(nproc)
table="$work/table.md"
{
    echo "Measured $(date -u +%Y-%m-%d) at commit \`$(git rev-parse --short HEAD)\` on $cpu_model, $cores cores,"
    echo "with all $validators validators and the load generator on this machine; **V = $v** ed25519"
    echo "verifications/s on one core (best of three \`openssl speed -seconds 2 ed25519\`, same sitting);"
    echo "$duration s per step measured after $warmup s of warm-up at the same rate; $accounts benchmark accounts."
    echo "\"kept up\" is the committed rate over the offered rate (the network keeps up at 100 %);"
    echo "\"committed\" is the share of the transfers offered in the measured window that committed"
    echo "in the end (the generator waits for the backlog);"
    echo "CPU µs per transfer is the nodes' CPU time over the step per committed transfer, per node;"
    echo "CPU % is per node (100 % = one core); memory is each node's peak resident size."
    echo
    echo "| engine | offered /s | × V | committed /s | kept up % | committed % | p50 ms | p99 ms | CPU µs per transfer per node | CPU % per node | peak MB per node | stale blocks | rejections |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    cat "$rows"
    echo
    echo "Resident memory before and after the load:"
    echo
    cat "$idle"
} >"$table"
python3 - "$doc" "$table" <<'EOF'
import sys
path, table = sys.argv[1], open(sys.argv[2]).read()
text = open(path).read()
start, end = "<!-- bench-network:start -->", "<!-- bench-network:end -->"
if start in text and end in text:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    text = head + start + "\n" + table + end + tail
else:
    text += "\n## Network throughput and latency\n\n" + start + "\n" + table + end + "\n"
open(path, "w").write(text)
EOF
echo "table written to $doc"
