#!/bin/bash
# The real-Xen tier's figures (docs/real-xen.md): one run of tests/tests/xen_tier.rs,
# which measures, on the same two dom0s in the same run,
#   xen_migrate_ms_with_tandem  plain `xl migrate` nodea -> nodeb, tandem's block-drbd, tandemd running
#   xen_migrate_ms_without      the same with the old way: no tandemd, drbd-utils' block-drbd,
#                               allow-two-primaries set by hand
#   xen_migrate_ratio           with / without (the goal: <= 1.05)
#   xen_migrate_ms_tandemctl    `tandemctl migrate` nodeb -> nodea, until the command returns
#   xen_failover_ms             nodea powered off through its BMC -> g1 booted on nodeb
#   xen_definition_sync_ms      g1.cfg written on nodea -> the same file in nodeb's /etc/xen
# and merges them into target/bench/results.json. Needs root; QEMU TCG, about 6 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "bench-xen: needs root (network namespaces)" >&2
    exit 1
fi
target="${CARGO_TARGET_DIR:-target}"
cargo build --workspace --bins
rm -f "$target/xen-tier/figures.json"
TANDEMD_BIN="$PWD/$target/debug/tandemd" cargo test -p tandem-tests --test xen_tier -- --nocapture --test-threads=1
[ -s "$target/xen-tier/figures.json" ] || { echo "bench-xen: the tier wrote no figures" >&2; exit 1; }
python3 - "$target/xen-tier/figures.json" <<'PY'
import json, subprocess, sys
figures = json.load(open(sys.argv[1]))
args = []
for k in ("xen_migrate_ms_with_tandem", "xen_migrate_ms_without", "xen_migrate_ratio",
          "xen_migrate_ms_tandemctl", "xen_failover_ms", "xen_definition_sync_ms", "xen_tier_s"):
    if k in figures:
        args += [k, str(figures[k])]
subprocess.run([sys.executable, "scripts/bench_results.py", "set", *args], check=True)
PY
