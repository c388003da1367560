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
# root and scripts/deps.sh's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench-status: needs root (namespaces, loop device, libvirtd)" >&2
    exit 1
fi
for tool in ip iptables libvirtd virsh qemu-system-x86_64 losetup dbus-daemon python3; do
    command -v "$tool" >/dev/null || { echo "bench-status: $tool is missing; run scripts/deps.sh" >&2; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --workspace --bins
export TANDEMD_BIN="${TANDEMD_BIN:-$(realpath "$target/release/tandemd")}"
figures=$("$target/release/bench-status")
# shellcheck disable=SC2086 # NAME VALUE pairs, one per line
python3 scripts/bench_results.py set $figures
echo "$figures"
echo "merged into target/bench/results.json"
