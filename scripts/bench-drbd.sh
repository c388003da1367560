#!/bin/bash
# DRBD side of a live migration through the daemon's driver, against the DRBD
# stand-in (standins/drbd): "prepare incoming" (dual-primary allowed on both
# sides + promote on the destination) and "released" (demote the source + both
# leave dual-primary), p50/p99 over 50 runs, and the cost of spawning drbdadm.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q -p tandem-drbd-standin --bins --examples
out=$(./target/release/examples/bench_drbd --bin-dir target/release --runs "${RUNS:-50}")
echo "$out" | grep -v '^RESULT '
args=()
while read -r _ name value; do args+=("$name" "$value"); done < <(echo "$out" | grep '^RESULT ')
python3 scripts/bench_results.py set "${args[@]}"
