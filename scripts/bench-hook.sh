#!/usr/bin/env bash
# Wall time of tandem-libvirt-hook, process start to exit, as libvirt runs it
# (domain XML on stdin, output discarded): p50/p99 over BENCH_HOOK_RUNS (default
# 200) runs each, measured by hooks/examples/hook_bench.rs (spawn to wait, no
# shell in between). The goal is <= 5 ms for a domain without DRBD disks.
#
#   hook_nodrbd_ms_p50/p99     prepare begin, a domain without DRBD disks (2 disks)
#   hook_nodrbd_big_ms_p50     prepare begin, libvirt's 105-disk test domain
#   hook_ignored_op_ms_p50     started begin (decided from the arguments; stdin unread)
#   hook_spawn_floor_ms_p50    /bin/true spawned the same way: the cost of any process
#
# Figures are printed and merged into target/bench/results.json; nothing is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_HOOK_RUNS:-200}
corpus=${TANDEM_LIBVIRT_CORPUS:-/work/shared/corpus/libvirt-xml}
small="$corpus/qemuxml2argvdata_disk-aio.xml"
big="$corpus/qemuxml2argvdata_pci-bridge-many-disks.xml"
for f in "$small" "$big"; do
  [ -r "$f" ] || { echo "bench-hook: $f missing (set TANDEM_LIBVIRT_CORPUS)" >&2; exit 1; }
done

cargo build --release -q -p tandem-hooks --bin tandem-libvirt-hook --example hook_bench
hook=$PWD/target/release/tandem-libvirt-hook
bench=$PWD/target/release/examples/hook_bench

# No DRBD disk, so drbdadm is never run; pin it anyway so the host's config cannot matter.
export TANDEM_DRBDADM=/nonexistent/drbdadm
# Nor is D-Bus touched: with no bus at this address a run that tried would exit 1
# and count as a failure below.
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent/tandem-bench-bus

# Check the no-DRBD case really is one (exit 0, nothing on stdout).
out=$("$hook" QEMUGuest1 prepare begin - <"$small")
[ -z "$out" ] || { echo "bench-hook: the hook printed on stdout: $out" >&2; exit 1; }
[ "$("$hook" --explain <"$small")" = "[]" ] || { echo "bench-hook: $small has a DRBD disk?" >&2; exit 1; }

measure() { # name stdin program args...
  local name=$1 stdin=$2
  shift 2
  local result
  result=$("$bench" "$runs" "$stdin" "$@")
  local failures
  failures=$(sed -n 's/^failures //p' <<<"$result")
  [ "$failures" = 0 ] || { echo "bench-hook: $name: $failures runs failed" >&2; exit 1; }
  p50=$(sed -n 's/^p50_ms //p' <<<"$result")
  p99=$(sed -n 's/^p99_ms //p' <<<"$result")
  max=$(sed -n 's/^max_ms //p' <<<"$result")
  printf '%-34s p50 %7s ms   p99 %7s ms   max %7s ms   (%s runs)\n' "$name" "$p50" "$p99" "$max" "$runs"
}

measure "prepare begin, no DRBD disk" "$small" "$hook" QEMUGuest1 prepare begin -
nodrbd_p50=$p50 nodrbd_p99=$p99
measure "prepare begin, 105 disks, no DRBD" "$big" "$hook" QEMUGuest1 prepare begin -
big_p50=$p50
measure "started begin (stdin unread)" "$small" "$hook" QEMUGuest1 started begin -
ignored_p50=$p50
measure "/bin/true (spawn floor)" "$small" /bin/true
floor_p50=$p50

python3 scripts/bench_results.py set \
  hook_nodrbd_ms_p50 "$nodrbd_p50" hook_nodrbd_ms_p99 "$nodrbd_p99" \
  hook_nodrbd_big_ms_p50 "$big_p50" hook_ignored_op_ms_p50 "$ignored_p50" \
  hook_spawn_floor_ms_p50 "$floor_p50"
echo "goal: hook_nodrbd_ms_p50 <= 5 ms"
