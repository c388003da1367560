#!/usr/bin/env bash
# Live migration bench: two real libvirtd with QEMU, two tandemd (release
# build) on their own buses, the DRBD stand-in (tests/src/virt_pair.rs).
# Measures tandem-libvirt-hook's prepare (migrate begin) and release (release
# end) wall time, and `virsh migrate --live` with and without tandem's hook.
#
#   scripts/bench-migrate.sh
#   BENCH_RUNS=100 BENCH_MIGRATIONS=10 scripts/bench-migrate.sh
#
# Merges hook_prepare_ms_p50/p99, hook_release_ms_p50/p99,
# migrate_ms_with_tandem, migrate_ms_without and their ratio into
# target/bench/results.json. Needs root and scripts/deps.sh's packages;
# scripts/run-rig-bench.sh does the rest.
exec "$(dirname "$0")/run-rig-bench.sh" bench-migrate
