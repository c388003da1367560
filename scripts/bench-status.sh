#!/usr/bin/env bash
# Status bench (release builds): `tandemctl status --json` with 100 domains
# and 100 DRBD resources on the two-host rig, against `virsh list --all` on the
# same libvirtd, and tandemd's RSS at that size.
#
#   scripts/bench-status.sh
#   BENCH_RUNS=50 scripts/bench-status.sh
#
# Merges status_json_ms_100, status_json_ms_100_p99, virsh_list_ms_100,
# status_vs_virsh_list, rss_kb_100, rss_anon_kb_100 and pss_kb_100 into target/bench/results.json. Needs
# root and scripts/deps.sh's packages; scripts/run-rig-bench.sh does the rest.
exec "$(dirname "$0")/run-rig-bench.sh" bench-status
