#!/usr/bin/env bash
# XenAPI fencing speed against the XenAPI stand-in (standins/xapi, on
# 127.0.0.1): the xapi-fence agent versus Debian's fence_xenapi, both run as a
# fence daemon runs them (a new process per action), for "status" and for
# "off, confirmed off". Median of BENCH_XAPI_RUNS (default 10) each; the VM is
# started again, untimed, before every off. Figures are printed and merged into
# target/bench/results.json; nothing is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_XAPI_RUNS:-10}
password=bench-Xapi-1

for tool in python3 /usr/sbin/fence_xenapi; do
  command -v "$tool" >/dev/null || { echo "bench-xapi: $tool missing; run scripts/deps.sh" >&2; exit 1; }
done
cargo build --release -q -p xapi-fence -p tandem-xapi-standin
agent=target/release/xapi-fence
standin=target/release/tandem-xapi-standin

work=$(mktemp -d)
standin_pid=
cleanup() {
  [ -n "$standin_pid" ] && kill "$standin_pid" 2>/dev/null && wait "$standin_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

"$standin" --user "root:$password" --vm node-bench=Running >"$work/standin.out" 2>"$work/standin.err" &
standin_pid=$!
for _ in $(seq 100); do grep -q '^port ' "$work/standin.out" 2>/dev/null && break; sleep 0.05; done
port=$(sed -n 's/^port //p' "$work/standin.out")
[ -n "$port" ] || { echo "bench-xapi: the stand-in did not start: $(cat "$work/standin.err")" >&2; exit 1; }
url="http://127.0.0.1:$port"

export PYTHONWARNINGS=ignore::DeprecationWarning  # fence-agents 4.12 on Python 3.11 warns about pipes
ours=("$agent" -s "$url" -l root -p "$password" -n node-bench -q)
theirs=(/usr/sbin/fence_xenapi -s "$url" -l root -p "$password" -n node-bench)

now_ns() { date +%s%N; }
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
us_to_ms() { awk '{ printf "%.2f\n", $1 / 1000 }'; }

# time_action NAME ACTION WANT_RC CMD...: microseconds per run, one a line.
time_runs() {
  local action=$1 want=$2; shift 2
  for _ in $(seq "$runs"); do
    [ "$action" = off ] && "${ours[@]}" -o on >/dev/null
    local start rc=0
    start=$(now_ns)
    "$@" -o "$action" >/dev/null 2>&1 || rc=$?
    local took=$(( ($(now_ns) - start) / 1000 ))
    [ "$rc" = "$want" ] || { echo "bench-xapi: $1 -o $action exited $rc, not $want" >&2; exit 1; }
    echo "$took"
  done
}

ours_status=$(time_runs status 0 "${ours[@]}" | median | us_to_ms)
theirs_status=$(time_runs status 0 "${theirs[@]}" | median | us_to_ms)
ours_off=$(time_runs off 0 "${ours[@]}" | median | us_to_ms)
theirs_off=$(time_runs off 0 "${theirs[@]}" | median | us_to_ms)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f\n", a / b; else print "n/a" }'; }
printf '\nXenAPI fencing, median of %s runs against the XenAPI stand-in on 127.0.0.1:%s\n' "$runs" "$port"
printf '%-22s %16s %18s %24s\n' action "xapi-fence (ms)" "fence_xenapi (ms)" "fence_xenapi / xapi-fence"
printf '%-22s %16s %18s %24s\n' "status" "$ours_status" "$theirs_status" "$(ratio "$theirs_status" "$ours_status")x"
printf '%-22s %16s %18s %24s\n' "off, confirmed off" "$ours_off" "$theirs_off" "$(ratio "$theirs_off" "$ours_off")x"
echo "(each run is a new process: login, find the VM, act, read the state back; xapi-fence also logs out,"
echo " fence_xenapi does not)"

python3 scripts/bench_results.py set \
  xapi_status_ms "$ours_status" xapi_status_ms_fence_xenapi "$theirs_status" \
  xapi_off_ms "$ours_off" xapi_off_ms_fence_xenapi "$theirs_off" \
  xapi_status_ratio_fence_xenapi_over_xapi_fence "$(ratio "$theirs_status" "$ours_status")" \
  xapi_off_ratio_fence_xenapi_over_xapi_fence "$(ratio "$theirs_off" "$ours_off")"
