#!/usr/bin/env bash
# How long a network goes without a block across each kind of consensus
# switch: a fresh devnet (release build) on a schedule that passes through
# every ordered pair of engines, under a steady load from `cairn-wallet
# bench`; prints, per switch at height H, the time between node 0 applying
# blocks H-1 and H, and the median block interval before the switch.
#
#   scripts/switch-pauses.sh [RATE] [EVERY]     (defaults: 50 transfers/s, a switch every 30 blocks)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE="${1:-50}"
EVERY="${2:-30}"
BASE_PORT="${BASE_PORT:-27700}"
BIN="${CARGO_TARGET_DIR:-target}/release"
DIR="$(mktemp -d /tmp/cairn-switch-pauses.XXXXXX)"
ENGINES=(raft pbft raft pow pbft pow raft)
SCHEDULE="${ENGINES[0]}"
for i in $(seq 1 $((${#ENGINES[@]} - 1))); do
    SCHEDULE="$SCHEDULE,${ENGINES[$i]}@$((i * EVERY))"
done
LAST=$(((${#ENGINES[@]} - 1) * EVERY))

cargo build --release --bin cairn-node --bin cairn-wallet --bin cairn-genesis >&2
"$BIN/cairn-node" devnet --dir "$DIR/net" --base-port "$BASE_PORT" --bench-accounts 2000 \
    --schedule "$SCHEDULE" >"$DIR/devnet.log" 2>&1 &
DEVNET=$!
trap 'kill $DEVNET 2>/dev/null; wait $DEVNET 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$DIR"' EXIT

API="http://127.0.0.1:$((BASE_PORT + 1))"
NODES=$(for i in 0 1 2 3; do printf 'http://127.0.0.1:%d,' $((BASE_PORT + 2 * i + 1)); done)
NODES="${NODES%,}"
for _ in $(seq 1 60); do curl -sf "$API/status" >/dev/null && break; sleep 1; done
height() { curl -sf "$API/status" | jq -r .height; }

echo "schedule $SCHEDULE, $RATE transfers/s offered" >&2
while [ "$(height)" -le $((LAST + 5)) ]; do
    "$BIN/cairn-wallet" bench --node "$API" --nodes "$NODES" --accounts 2000 \
        --rate "$RATE" --duration 20 --drain 2 >/dev/null 2>&1 || true
    echo "  height $(height)" >&2
done

# When node 0 applied each block (its log; a mined block's header carries
# its template's time, not when it was found): the last application of
# H-1 before the first of H.
LOG="$DIR/net/node0/node.log"
applied() {
    sed 's/\x1b\[[0-9;]*m//g' "$LOG" | grep 'committed block' |
        sed -E 's/^([^ ]+) .*height=([0-9]+).*/\2 \1/'
}
at_ms() { date -d "$1" +%s%3N; }
first_at() { applied | awk -v h="$1" '$1 == h && !done { print $2; done = 1 }'; }
last_before() { applied | awk -v h="$1" -v t="$2" '$1 == h && $2 < t { last = $2 } END { print last }'; }
printf '%-14s %8s %22s\n' "switch" "pause_ms" "median_interval_ms"
for i in $(seq 1 $((${#ENGINES[@]} - 1))); do
    h=$((i * EVERY))
    t1=$(first_at "$h")
    t0=$(last_before $((h - 1)) "$t1")
    pause=$(($(at_ms "$t1") - $(at_ms "$t0")))
    gaps=()
    for k in $(seq $((h - 10)) $((h - 2))); do
        b=$(first_at $((k + 1)))
        a=$(last_before "$k" "$b")
        gaps+=($(($(at_ms "$b") - $(at_ms "$a"))))
    done
    median=$(printf '%s\n' "${gaps[@]}" | sort -n | sed -n 5p)
    printf '%-14s %8d %22d\n' "${ENGINES[$((i - 1))]}->${ENGINES[$i]}" "$pause" "$median"
done
