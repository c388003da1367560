#!/usr/bin/env bash
# The real-DRBD tier as a bench (docs/real-drbd.md): runs the tier's two test
# binaries once (conformance of the stand-in with DRBD 8.4, and tandemd on DRBD
# 8.4 in two QEMU guests) and times it; then BENCH_RUNS-1 more runs of the
# tandem half (default BENCH_RUNS=3) for the failover figures.
#
#   scripts/bench-realdrbd.sh
#   BENCH_RUNS=5 scripts/bench-realdrbd.sh
#
# Writes target/bench/realdrbd.json (every figure of every run) and merges
# realdrbd_tier_s (wall time of the tier: both binaries, image build and boots
# included), realdrbd_failover_ms (fence confirmed -> r0 Primary on the
# survivor, median), realdrbd_cut_to_promote_ms (both links cut -> Primary,
# median), realdrbd_outdate_handler_ms (replication link cut -> the kernel got
# exit 4 from tandem-drbd-handler, median), realdrbd_boot_ms and
# realdrbd_conformance_s into target/bench/results.json. A failing check does
# not stop the bench as long as the tests wrote their figures (they write them
# before their last assertions); realdrbd.json names the failed runs. Needs
# root, network access for the kernel package on the first run, and
# scripts/deps.sh's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "bench-realdrbd: needs root (network namespaces, iptables)" >&2
    exit 1
fi
for tool in qemu-system-x86_64 busybox cpio modinfo xz mke2fs strip drbdadm ipmi_sim iptables python3; do
    command -v "$tool" >/dev/null || { echo "bench-realdrbd: $tool is missing; run scripts/deps.sh" >&2; exit 1; }
done

runs="${BENCH_RUNS:-3}"
target="${CARGO_TARGET_DIR:-target}"
out="$target/real-drbd"
mkdir -p target/bench
# The tier runs the debug builds, as `make test` does.
cargo build --workspace --bins
cargo test -p tandem-tests --no-run --test real_drbd --test real_drbd_tandem

runs_file=$(mktemp)
trap 'rm -f "$runs_file"' EXIT
failed=""
need() { [ -s "$1" ] || { echo "bench-realdrbd: the tier wrote no $1" >&2; exit 1; }; }

rm -f "$out/conformance/differences.json" "$out/tandem/figures.json"
start=$(date +%s%N)
cargo test -p tandem-tests --test real_drbd --test real_drbd_tandem --no-fail-fast -- --test-threads=1 ||
    failed="$failed tier"
end=$(date +%s%N)
need "$out/conformance/differences.json"
need "$out/tandem/figures.json"
cp "$out/conformance/differences.json" "$runs_file.conformance"
trap 'rm -f "$runs_file" "$runs_file.conformance"' EXIT
tr -d '\n' <"$out/tandem/figures.json" >>"$runs_file"
echo >>"$runs_file"
for ((i = 2; i <= runs; i++)); do
    rm -f "$out/tandem/figures.json"
    cargo test -p tandem-tests --test real_drbd_tandem -- --test-threads=1 || failed="$failed tandem-run-$i"
    need "$out/tandem/figures.json"
    tr -d '\n' <"$out/tandem/figures.json" >>"$runs_file"
    echo >>"$runs_file"
done

python3 - "$start" "$end" "$runs_file.conformance" "$runs_file" "$failed" <<'PY'
import json, os, statistics, subprocess, sys
start, end, conf_path, runs_path, failed = sys.argv[1:6]
tier_s = round((int(end) - int(start)) / 1e9, 1)
conformance = json.load(open(conf_path))
runs = [json.loads(l) for l in open(runs_path) if l.strip()]
med = lambda k: statistics.median(r[k] for r in runs)
report = {
    "tier_s": tier_s,
    "conformance": {k: conformance[k] for k in ("kernel", "image_build_ms", "boot_ms", "real_ms", "standin_ms", "total_ms")},
    "known_differences": sorted({d["known"] for d in conformance["differences"] if d["known"]}),
    "unexplained_differences": [d for d in conformance["differences"] if not d["known"]],
    "tandem_runs": runs,
    "failover_ms_p50": med("fence_to_promote_ms"),
    "cut_to_promote_ms_p50": med("cut_to_promote_ms"),
    "outdate_handler_ms_p50": med("outdate_handler_ms"),
    "failed_runs": failed.split(),
}
path = os.path.join("target", "bench", "realdrbd.json")
with open(path, "w") as f:
    json.dump(report, f, indent=2, sort_keys=True)
    f.write("\n")
figures = {
    "realdrbd_tier_s": tier_s,
    "realdrbd_conformance_s": round(conformance["total_ms"] / 1000, 1),
    "realdrbd_boot_ms": conformance["boot_ms"],
    "realdrbd_failover_ms": med("fence_to_promote_ms"),
    "realdrbd_cut_to_promote_ms": med("cut_to_promote_ms"),
    "realdrbd_outdate_handler_ms": med("outdate_handler_ms"),
}
args = [a for k, v in figures.items() for a in (k, str(v))]
subprocess.run([sys.executable, "scripts/bench_results.py", "set", *args], check=True)
for k, v in figures.items():
    print(k, v)
print("wrote", path, "and merged into target/bench/results.json")
if report["failed_runs"]:
    print("bench-realdrbd: checks failed in:", " ".join(report["failed_runs"]), "(see the test output above)", file=sys.stderr)
PY
