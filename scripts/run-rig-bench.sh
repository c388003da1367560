#!/usr/bin/env bash
# What the benches on the two-host rig (tests/src/virt_pair.rs) share: the
# root and tool checks, a release build, running the bench binary NAME, and
# merging the `NAME VALUE` lines it prints into target/bench/results.json.
#
#   scripts/run-rig-bench.sh NAME [TOOL ...]     (TOOLs: needed besides the rig's)
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
shift

if [ "$(id -u)" != 0 ]; then
    echo "$name: needs root (namespaces, loop device, libvirtd)" >&2
    exit 1
fi
for tool in ip iptables libvirtd virsh qemu-system-x86_64 losetup dbus-daemon python3 "$@"; do
    command -v "$tool" >/dev/null || { echo "$name: $tool is missing; run scripts/deps.sh" >&2; exit 1; }
done

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --workspace --bins
export TANDEMD_BIN="${TANDEMD_BIN:-$(realpath "$target/release/tandemd")}"
figures=$("$target/release/$name")
# shellcheck disable=SC2086 # NAME VALUE pairs, one per line
python3 scripts/bench_results.py set $figures
echo "$figures"
echo "merged into target/bench/results.json"
