#!/usr/bin/env bash
# Simulator throughput: 10000 random schedules in a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(./target/release/tandem-sim --seeds "${BENCH_SIM_SEEDS:-10000}")
echo "$out" | tail -3
rate=$(echo "$out" | sed -n 's/.* \([0-9.]*\) schedules\/s.*/\1/p')
echo "$out" | grep -q "violations: 0$"
python3 scripts/bench_results.py set sim_schedules_per_s "$rate"
