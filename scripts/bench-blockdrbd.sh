#!/usr/bin/env bash
# Wall time of the Xen block script, block-drbd, spawn to exit, as libxl runs it:
# `add` (frontend name, drbdadm dump-xml, PrepareStart over D-Bus, promote,
# xenstore writes) and `remove` (Release, demote), p50/p99 over
# BENCH_BLOCKDRBD_RUNS (default 100) domains with one disk each, measured by
# block-drbd/examples/bench_blockdrbd.rs.
#
# The parts: the xenstore stand-in (first on PATH as xenstore-*), the DRBD
# stand-in (resource r0), a private system-style dbus-daemon with tandem's
# policy, and a real tandemd (peer never comes; an operator fence, confirmed by
# an agent that always says "off", lifts wait-for-all, so it agrees to starts).
# Needs root (tandem's bus policy) and dbus-daemon; skipped otherwise.
#
#   blockdrbd_add_ms_p50/p99      block-drbd add, tandemd agreeing and promoting
#   blockdrbd_remove_ms_p50/p99   block-drbd remove, tandemd releasing and demoting
#
# Figures are printed and merged into target/bench/results.json; nothing is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_BLOCKDRBD_RUNS:-100}
if [ "$(id -u)" != 0 ] || ! command -v dbus-daemon >/dev/null; then
  echo "bench-blockdrbd: skipped (needs root and dbus-daemon)" >&2
  exit 0
fi

cargo build --release -q -p block-drbd --bin block-drbd --example bench_blockdrbd
cargo build --release -q -p tandem-xenstore-standin -p tandem-drbd-standin -p tandemd --bins
rel=$PWD/target/release

tmp=$(mktemp -d /tmp/tandem-bench-blockdrbd.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

mkdir "$tmp/bin"
for m in read write exists rm list; do ln -s "$rel/tandem-xenstore-standin" "$tmp/bin/xenstore-$m"; done
export PATH="$tmp/bin:$PATH" TANDEM_XENSTORE_FILE="$tmp/xenstore.json"
export TANDEM_DRBD_STATE="$tmp/drbd" TANDEM_DRBD_NODE=0 TANDEM_DRBDADM="$rel/drbdadm"
export TANDEM_BLOCK_DRBD_LOCK="$tmp/hotplug.lock"
"$rel/tandem-drbd-standin" init --resource r0 --minor 0

# The bus: tandem's policy on Debian's system-bus defaults (daemon/tests' fixture).
sed -e "s|@LISTEN@|unix:path=$tmp/bus|" -e "s|@POLICY@|$PWD/packaging/dbus/org.tandem.Tandem1.conf|" \
  daemon/tests/fixtures/dbus-system-bus.conf.in >"$tmp/bus.conf"
dbus-daemon --config-file="$tmp/bus.conf" --nofork --print-address=1 >"$tmp/bus.address" 2>"$tmp/bus.stderr" &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/bus.address" ] && break; sleep 0.05; done
DBUS_SYSTEM_BUS_ADDRESS=$(head -n1 "$tmp/bus.address")
export DBUS_SYSTEM_BUS_ADDRESS

# tandemd: alpha here, beta never comes and is fenced by an agent that says "off".
head -c 32 /dev/urandom >"$tmp/authkey" && chmod 600 "$tmp/authkey"
printf '#!/bin/sh\ncase $(sed -n "s/^action=//p") in status|monitor) exit 2;; *) exit 0;; esac\n' >"$tmp/fence_off"
chmod 755 "$tmp/fence_off"
net=$((100 + $$ % 100))
cat >"$tmp/tandem.toml" <<EOF
[cluster]
name = "bench-blockdrbd"
authkey = "$tmp/authkey"
preferred = "alpha"
heartbeat_port = 47405
control_port = 47406

[node.alpha]
addresses = ["127.$net.201.1"]
fence = []

[node.beta]
addresses = ["127.$net.201.2"]

[[node.beta.fence]]
[[node.beta.fence.device]]
kind = "agent"
agent = "$tmp/fence_off"
timeout_ms = 2000

[drbd]
drbdadm = "$rel/drbdadm"
drbdsetup = "$rel/drbdsetup"
resources = ["r0"]

[hypervisor]
kind = "none"
EOF
TANDEM_LOG=warn "$rel/tandemd" --config "$tmp/tandem.toml" --node alpha --state-dir "$tmp/state" \
  --status-file "$tmp/status.json" </dev/null >/dev/null 2>"$tmp/tandemd.stderr" &
pids+=($!)
send() { dbus-send --system --print-reply --dest=org.tandem.Tandem1 /org/tandem/Tandem1 "$@"; }
for i in $(seq 300); do
  send org.freedesktop.DBus.Properties.Get string:org.tandem.Tandem1.Cluster string:PeerState >/dev/null 2>&1 && break
  [ "$i" = 300 ] && { echo "bench-blockdrbd: tandemd did not come up:" >&2; cat "$tmp/tandemd.stderr" >&2; exit 1; }
  sleep 0.05
done
send org.tandem.Tandem1.Cluster.Fence >/dev/null
for i in $(seq 300); do
  send org.freedesktop.DBus.Properties.Get string:org.tandem.Tandem1.Cluster string:PeerState | grep -q '"fenced"' && break
  [ "$i" = 300 ] && { echo "bench-blockdrbd: the peer was not fenced:" >&2; cat "$tmp/tandemd.stderr" >&2; exit 1; }
  sleep 0.05
done

result=$("$rel/examples/bench_blockdrbd" "$runs" "$rel/block-drbd")
failures=$(sed -n 's/^failures //p' <<<"$result")
[ "$failures" = 0 ] || { echo "bench-blockdrbd: $failures runs failed" >&2; exit 1; }
get() { sed -n "s/^$1 //p" <<<"$result"; }
printf '%-28s p50 %8s ms   p99 %8s ms   (%s runs)\n' "block-drbd add" "$(get add_p50_ms)" "$(get add_p99_ms)" "$runs"
printf '%-28s p50 %8s ms   p99 %8s ms   (%s runs)\n' "block-drbd remove" "$(get remove_p50_ms)" "$(get remove_p99_ms)" "$runs"
python3 scripts/bench_results.py set \
  blockdrbd_add_ms_p50 "$(get add_p50_ms)" blockdrbd_add_ms_p99 "$(get add_p99_ms)" \
  blockdrbd_remove_ms_p50 "$(get remove_p50_ms)" blockdrbd_remove_ms_p99 "$(get remove_p99_ms)"
