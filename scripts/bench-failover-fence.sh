#!/usr/bin/env bash
# Failover fencing bench: BENCH_RUNS (10) times, two release-built tandemd in
# network namespaces, each host with an ipmi_sim BMC whose power off kills that
# host's tandemd; every link is cut both ways and the survivor (alpha, the
# preferred node) fences beta through beta's BMC. Measured on alpha: PeerLost ->
# FenceConfirmed (its status events) and cut -> FenceConfirmed. Each run also
# checks beta was killed by its BMC and alpha was not.
#
#   scripts/bench-failover-fence.sh
#   BENCH_RUNS=30 scripts/bench-failover-fence.sh
#
# Prints p50/max and merges fence_confirm_ms_p50, fence_confirm_ms_max,
# failover_cut_to_fence_ms_p50 and failover_cut_to_fence_ms_max into
# target/bench/results.json (scripts/bench_results.py). Needs root, ip,
# iptables and ipmi_sim (scripts/deps.sh). TANDEMD_BIN overrides the daemon.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench-failover-fence: needs root (network namespaces, veth, iptables)" >&2
    exit 1
fi
for tool in ip iptables iptables-restore ipmi_sim python3; do
    command -v "$tool" >/dev/null || { echo "bench-failover-fence: $tool is missing; run scripts/deps.sh" >&2; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p tandemd -p tandem-tests --bin tandemd --bin bench-failover-fence
export TANDEMD_BIN="${TANDEMD_BIN:-$(realpath "$target/release/tandemd")}"
figures=$("$target/release/bench-failover-fence")
# shellcheck disable=SC2086 # NAME VALUE pairs, one per line
python3 scripts/bench_results.py set $figures
echo "$figures"
echo "merged into target/bench/results.json"
