#!/usr/bin/env bash
# The main job. Until the node binary lands (issue 3) this generates the local
# network a devnet runs on, and says so; then it will start the nodes.
set -euo pipefail
dir=${1:-devnet} engine=${2:-raft} validators=${3:-3}
bin="${CARGO_TARGET_DIR:-target}/debug"

if [ -f "$dir/genesis.json" ]; then
  echo "Reusing the network in $dir/ (delete it for a fresh one)."
else
  "$bin/cairn-genesis" new --engine "$engine" --validators "$validators" --out "$dir"
fi
echo
"$bin/cairn-genesis" show "$dir/genesis.json"
if [ -x "$bin/cairn-node" ]; then
  exec "$bin/cairn-node" devnet --dir "$dir"
fi
echo
echo "The node (cairn-node) is not built yet: this devnet stops at its genesis."
