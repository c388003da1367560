#!/usr/bin/env bash
# Failover bench on the two-node lab (release builds): BENCH_RUNS (10) times,
# a domain on beta, beta powered off through its BMC, time until the domain
# runs on alpha, with its breakdown (detection, fence delay, fence, promote and
# start); and both tandemd's RSS and CPU while idle with two domains.
#
#   scripts/bench-failover.sh
#   BENCH_RUNS=20 scripts/bench-failover.sh
#
# Merges failover_ms_p50, failover_ms_max, the breakdown's medians,
# lab_idle_rss_kb and lab_idle_cpu_pct into target/bench/results.json. Needs
# root and scripts/deps.sh's packages; scripts/run-rig-bench.sh does the rest.
exec "$(dirname "$0")/run-rig-bench.sh" bench-failover ipmi_sim ipmitool
