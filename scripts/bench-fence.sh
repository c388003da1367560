#!/usr/bin/env bash
# Fencing speed against one ipmi_sim BMC: tandem's IPMI device (the daemon's own
# code, through daemon/examples/fence_bench.rs, one session kept open as the
# daemon keeps it) versus fence_ipmilan, for "off, confirmed off" and "status".
# Median of BENCH_FENCE_RUNS (default 10) each; the node is powered back on,
# untimed, before every off. Figures are printed and merged into
# target/bench/results.json; nothing is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${BENCH_FENCE_RUNS:-10}
password=bench-Secret-1

for tool in ipmi_sim ipmitool fence_ipmilan python3; do
  command -v "$tool" >/dev/null || { echo "bench-fence: $tool missing; run scripts/deps.sh" >&2; exit 1; }
done
cargo build --release -q -p tandemd --example fence_bench
bench=target/release/examples/fence_bench

work=$(mktemp -d)
sim_pid=
cleanup() {
  [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  # ipmi_sim leaves its node running: end that process group too.
  if [ -s "$work/node/pid" ]; then kill -s KILL -- "-$(cat "$work/node/pid")" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/node" "$work/state"
echo 0 >"$work/node/power"
chassis="$PWD/daemon/tests/fixtures/chassis-control.sh"
cat >"$work/lan.conf" <<EOF
name "bmc-bench"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 $port
    priv_limit admin
    allowed_auths_admin none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "$chassis $work/node"
  user 2 true "admin" "$password" admin 10 none md2 md5 straight
EOF
printf 'mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n' >"$work/node.emu"
(umask 077 && echo "$password" >"$work/password")

ipmi_sim -c "$work/lan.conf" -f "$work/node.emu" -s "$work/state" -n -p </dev/null >/dev/null 2>&1 &
sim_pid=$!
ipmi=(ipmitool -I lanplus -C 3 -H 127.0.0.1 -p "$port" -U admin -P "$password")
for _ in $(seq 100); do "${ipmi[@]}" chassis power status >/dev/null 2>&1 && break; sleep 0.05; done
"$chassis" "$work/node" set power 1

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
now_ns() { date +%s%N; }

# tandem
tandem_off=$("$bench" --port "$port" --password-file "$work/password" --action off --runs "$runs" | sed -n 's/^median_ms //p')
tandem_status=$("$bench" --port "$port" --password-file "$work/password" --action status --runs "$runs" | sed -n 's/^median_ms //p')

# fence_ipmilan, exactly as an operator would run it
export PYTHONWARNINGS=ignore::DeprecationWarning  # fence-agents 4.12 on Python 3.11 warns about pipes
agent=(fence_ipmilan --ip=127.0.0.1 --ipport="$port" --username=admin --password="$password" --lanplus --cipher=3)
off_times=() status_times=()
for _ in $(seq "$runs"); do
  "${ipmi[@]}" chassis power on >/dev/null
  start=$(now_ns)
  "${agent[@]}" -o off >/dev/null
  off_times+=("$(( ($(now_ns) - start) / 1000 ))")
done
for _ in $(seq "$runs"); do
  start=$(now_ns)
  rc=0
  "${agent[@]}" -o status >/dev/null || rc=$?
  [ "$rc" = 0 ] || [ "$rc" = 2 ] || { echo "bench-fence: fence_ipmilan status failed ($rc)" >&2; exit 1; }
  status_times+=("$(( ($(now_ns) - start) / 1000 ))")
done
us_to_ms() { awk '{ printf "%.2f\n", $1 / 1000 }'; }
agent_off=$(printf '%s\n' "${off_times[@]}" | median | us_to_ms)
agent_status=$(printf '%s\n' "${status_times[@]}" | median | us_to_ms)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f\n", a / b; else print "n/a" }'; }
printf '\nfence, median of %s runs against ipmi_sim on 127.0.0.1:%s\n' "$runs" "$port"
printf '%-22s %14s %16s %22s\n' action "tandem (ms)" "fence_ipmilan (ms)" "fence_ipmilan / tandem"
printf '%-22s %14s %16s %22s\n' "off, confirmed off" "$tandem_off" "$agent_off" "$(ratio "$agent_off" "$tandem_off")x"
printf '%-22s %14s %16s %22s\n' "status" "$tandem_status" "$agent_status" "$(ratio "$agent_status" "$tandem_status")x"
echo "(tandem keeps one RMCP+ session open, as the daemon does; fence_ipmilan starts python and ipmitool, opens"
echo " a session per call, and waits power_wait = 2 s after off)"

python3 scripts/bench_results.py set \
  fence_off_ms_tandem "$tandem_off" fence_off_ms_fence_ipmilan "$agent_off" \
  fence_status_ms_tandem "$tandem_status" fence_status_ms_fence_ipmilan "$agent_status" \
  fence_off_ratio_fence_ipmilan_over_tandem "$(ratio "$agent_off" "$tandem_off")" \
  fence_status_ratio_fence_ipmilan_over_tandem "$(ratio "$agent_status" "$tandem_status")"
