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
# root and scripts/deps.sh's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench-failover: needs root (namespaces, loop device, libvirtd)" >&2
    exit 1
fi
for tool in ip iptables libvirtd virsh qemu-system-x86_64 losetup dbus-daemon ipmi_sim ipmitool python3; do
    command -v "$tool" >/dev/null || { echo "bench-failover: $tool is missing; run scripts/deps.sh" >&2; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --workspace --bins
export TANDEMD_BIN="${TANDEMD_BIN:-$(realpath "$target/release/tandemd")}"
figures=$("$target/release/bench-failover")
# shellcheck disable=SC2086 # NAME VALUE pairs, one per line
python3 scripts/bench_results.py set $figures
echo "$figures"
echo "merged into target/bench/results.json"
