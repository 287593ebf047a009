#!/usr/bin/env bash
# The main job: a local devnet. `cairn-node devnet` generates the network in
# DIR (or reuses it), starts every node, and stops them all on Ctrl-C.
set -euo pipefail
dir=${1:-devnet} engine=${2:-} validators=${3:-} fresh=${4:-}
bin="${CARGO_TARGET_DIR:-target}/release"
exec "$bin/cairn-node" devnet --dir "$dir" ${engine:+--engine "$engine"} \
    ${validators:+--validators "$validators"} ${fresh:+--fresh}
