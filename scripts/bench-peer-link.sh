#!/usr/bin/env bash
# Peer link bench: detection latency over 20 cuts of every link, false losses in
# a soak with 30% loss on one link and busy CPUs, idle RSS and CPU of a pair.
# Runs two release-built tandemd in network namespaces; needs root, ip, iptables.
#
#   scripts/bench-peer-link.sh            # 600 s soak (about 12 minutes in all)
#   BENCH_SOAK_S=60 scripts/bench-peer-link.sh
#
# Prints a table and merges detect_ms_p50, detect_ms_max, false_losses,
# idle_rss_kb, idle_cpu_pct and soak_s into target/bench/results.json.
# Other knobs: BENCH_CUTS (20), BENCH_RESULTS (the JSON file), TANDEMD_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench-peer-link: needs root (network namespaces, veth, iptables)" >&2
    exit 1
fi
for tool in ip iptables iptables-restore yes getconf; do
    command -v "$tool" >/dev/null || { echo "bench-peer-link: $tool is missing (apt-get install iproute2 iptables)" >&2; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
cargo build --release -p tandemd --bin tandemd -p tandem-tests --bin bench-peer-link
export TANDEMD_BIN="${TANDEMD_BIN:-$(realpath "$target/release/tandemd")}"
exec "$target/release/bench-peer-link" "$@"
