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
# target/bench/results.json. Needs root and scripts/deps.sh's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench-migrate: needs root (namespaces, loop device, libvirtd)" >&2
    exit 1
fi
for tool in ip iptables libvirtd virsh qemu-system-x86_64 losetup dbus-daemon python3; do
    command -v "$tool" >/dev/null || { echo "bench-migrate: $tool is missing; run scripts/deps.sh" >&2; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --workspace --bins
export TANDEMD_BIN="${TANDEMD_BIN:-$(realpath "$target/release/tandemd")}"
figures=$("$target/release/bench-migrate")
# shellcheck disable=SC2086 # NAME VALUE pairs, one per line
python3 scripts/bench_results.py set $figures
echo "$figures"
echo "merged into target/bench/results.json"
