#!/usr/bin/env bash
# Prints V: ed25519 verifications per second on one core, the best of three
# `openssl speed -seconds 2 ed25519` runs (the verify/s column). Every
# performance figure in docs/benchmarks.md is stated against V measured in
# the same sitting: machines differ by 2x, and one machine from day to day.
set -euo pipefail
best=0
for _ in 1 2 3; do
    v=$(openssl speed -seconds 2 ed25519 2>/dev/null | awk '/Ed25519/ {print int($NF)}')
    if [ "${v:-0}" -gt "$best" ]; then best=$v; fi
done
echo "$best"
