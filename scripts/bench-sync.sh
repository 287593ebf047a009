#!/usr/bin/env bash
# How fast a fresh node catches up a long chain, per engine: a 4-validator
# devnet is loaded with TRANSFERS transfers (cairn-wallet bench at RATE/s),
# then a new follower (`cairn-node init` + `run`, bootstrapped from node 0)
# syncs from genesis while the devnet idles; the time from its start to the
# devnet's head gives transfers and blocks per second. Writes one JSON line
# per engine to $OUT (default: stdout only).
#
#   ENGINES="raft pbft" TRANSFERS=1000000 RATE=8000 scripts/bench-sync.sh
#
# SYNC_BINS="DIR ..." syncs one follower with each build's binaries in turn
# on the same chain (two commits compared in one sitting).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${BIN:-${CARGO_TARGET_DIR:-target}/release}"
engines=${ENGINES:-"raft pbft pow"}
transfers=${TRANSFERS:-1000000}
rate=${RATE:-8000}
accounts=${ACCOUNTS:-20000}
base_port=${BASE_PORT:-27700}
v=${V:-$(scripts/yardstick.sh)}
work=$(mktemp -d)
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi' EXIT
height() { curl -sf "$1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["height"])' 2>/dev/null || echo 0; }

echo "V = $v ed25519 verifications/s on one core"
nodes=""
for i in 0 1 2 3; do nodes="$nodes${nodes:+,}http://127.0.0.1:$((base_port + 2 * i + 1))"; done
for engine in $engines; do
    dir="$work/$engine"
    "$bin/cairn-node" devnet --engine "$engine" --validators 4 --dir "$dir" --fresh \
        --base-port "$base_port" --bench-accounts "$accounts" >"$work/$engine.log" 2>&1 &
    pids+=($!)
    node0="http://127.0.0.1:$((base_port + 1))"
    for _ in $(seq 1 100); do curl -sf "$node0/status" >/dev/null && break; sleep 0.2; done
    sleep 5
    r=$rate
    if [ "$engine" = pow ]; then r=$((rate < 3000 ? rate : 3000)); fi
    duration=$(( (transfers + r - 1) / r ))
    echo "== $engine: $transfers transfers at $r/s ($duration s)"
    "$bin/cairn-wallet" bench --nodes "$nodes" --accounts "$accounts" --rate "$r" \
        --duration "$duration" --warmup 0 --out "$work/$engine-load.json" | tail -3
    # Every transfer committed (the devnet then idles; proof-of-work keeps
    # mining empty blocks).
    for _ in $(seq 1 300); do
        pending=$(curl -sf "$node0/metrics" | awk '/^cairn_mempool_transactions / {print $2}')
        [ "${pending:-1}" = 0 ] && break
        sleep 1
    done
    head=$(height "$node0")
    p2p=$(python3 -c "import json; print(json.load(open('$dir/genesis.json'))['validators'][0]['p2p_address'])")
    fport=$((base_port + 50))
    k=0
    for sync_bin in ${SYNC_BINS:-$bin}; do
        k=$((k + 1))
        home="$work/$engine-follower-$k"
        "$sync_bin/cairn-node" init --home "$home" --genesis "$dir/genesis.json" --bootstrap "$p2p" \
            --p2p-listen "/ip4/127.0.0.1/tcp/$fport" --rpc-listen "127.0.0.1:$((fport + 1))" \
            --name "follower-$k" >/dev/null
        start=$(date +%s.%N)
        "$sync_bin/cairn-node" run --home "$home" >"$work/$engine-follower-$k.log" 2>&1 &
        follower_pid=$!
        follower="http://127.0.0.1:$((fport + 1))"
        # At most 10 minutes.
        for _ in $(seq 1 3000); do
            [ "$(height "$follower")" -ge "$head" ] && break
            sleep 0.2
        done
        end=$(date +%s.%N)
        kill -TERM "$follower_pid" 2>/dev/null || true
        wait "$follower_pid" 2>/dev/null || true
        rm -rf "$home"
        python3 - "$work/$engine-load.json" "$engine" "$head" "$start" "$end" "$v" "$sync_bin" <<'EOF' | tee -a "${OUT:-/dev/null}"
import json, sys
load = json.load(open(sys.argv[1]))
engine, head = sys.argv[2], int(sys.argv[3])
secs = float(sys.argv[5]) - float(sys.argv[4])
n = load["committed"]
print(json.dumps({"engine": engine, "blocks": head, "transfers": n, "seconds": round(secs, 2),
                  "transfers_per_s": round(n / secs), "blocks_per_s": round(head / secs, 1),
                  "v": int(sys.argv[6]), "bin": sys.argv[7]}))
EOF
    done
    stop_all
done
