#!/usr/bin/env bash
# The .deb on this machine: builds it (cargo deb from already built binaries),
# installs it with dpkg, checks that every file landed with its mode, that
# systemd accepts the unit, that dbus-daemon takes the D-Bus policy, that
# tandemctl and the man pages work, then removes and purges it and checks
# that nothing is left and that what tandem displaced (drbd-utils'
# /etc/xen/scripts/block-drbd) is back. Run as root, by `make test` (on the
# debug build it just made) or `make package-test`.
#
#   scripts/package-test.sh [--profile dev|dist]   (default: dev)
#
# It refuses to run when a package named tandem is installed (it would
# replace it). Whatever happens, the package it installed is purged and the
# D-Bus daemon it started is stopped (trap on EXIT).
set -euo pipefail

PROFILE=dev
while (($#)); do
  case "$1" in
    --profile) PROFILE=${2:?--profile needs dev or dist}; shift 2 ;;
    *) echo "usage: $0 [--profile dev|dist]" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:$PATH"
CARGO=${CARGO:-cargo}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$PROFILE" in dev) PROFDIR=debug ;; *) PROFDIR=$PROFILE ;; esac

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "  ok   $*"; }
bad() { failed=$((failed + 1)); echo "  FAIL $*" >&2; }
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}

[ "$(id -u)" = 0 ] || { echo "package-test: needs root (dpkg -i)" >&2; exit 1; }
for tool in dpkg dpkg-deb dpkg-divert systemd-analyze dbus-daemon dbus-send setpriv man; do
  command -v "$tool" >/dev/null || { echo "package-test: $tool is missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
"$CARGO" deb --version >/dev/null 2>&1 || { echo "package-test: cargo-deb is missing (scripts/deps.sh installs it)" >&2; exit 1; }
if dpkg-query -W -f='${Status}' tandem 2>/dev/null | grep -qv "not-installed"; then
  echo "package-test: a package named tandem is installed here; remove it first (this test would replace it)" >&2
  exit 1
fi

WORK=$(mktemp -d /tmp/tandem-package-test.XXXXXX)
BUS_PID=
INSTALLED=0
cleanup() {
  local rc=$?
  if [ -n "$BUS_PID" ]; then kill "$BUS_PID" 2>/dev/null || true; wait "$BUS_PID" 2>/dev/null || true; fi
  if [ "$INSTALLED" = 1 ] && dpkg-query -W -f='${Status}' tandem 2>/dev/null | grep -qv "not-installed"; then
    echo "package-test: purging tandem after a failure" >&2
    dpkg --purge tandem >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# What installing and purging must leave as it was.
snapshot() {
  dpkg-divert --list | sort
  for d in /etc/libvirt/hooks /etc/xen/scripts /etc/tandem /var/lib/tandem /run/tandem; do
    if [ -e "$d" ]; then
      find "$d" -printf '%p %y %m %l\n' | sort
      find "$d" -type f -exec md5sum {} + 2>/dev/null | sort
    else
      echo "$d absent"
    fi
  done
  for d in /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked; do
    if [ -d "$d" ]; then find "$d" -name '*tandem*' | sort; fi
  done
}
snapshot >"$WORK/before"

echo "package-test: building the .deb from the $PROFILE build ($TARGET/$PROFDIR)"
for b in tandemd tandemctl xapi-fence tandem-libvirt-hook tandem-drbd-handler block-drbd; do
  [ -x "$TARGET/$PROFDIR/$b" ] || { echo "package-test: $TARGET/$PROFDIR/$b is missing: cargo build first" >&2; exit 1; }
done
start=$(date +%s%N)
# cargo-deb warns that a dev build is not meant for release: this package
# only tests the layout, scripts and unit (`make deb` builds the real one).
"$CARGO" deb --no-build --fast --profile "$PROFILE" -p tandem-packaging --output "$WORK/" >"$WORK/cargo-deb.log" 2>&1 ||
  { cat "$WORK/cargo-deb.log" >&2; exit 1; }
DEB=$(ls "$WORK"/tandem_*.deb)
echo "package-test: $(basename "$DEB"): $(stat -c %s "$DEB") bytes, built in $((($(date +%s%N) - start) / 1000000)) ms"

echo "package-test: dpkg -i"
INSTALLED=1
dpkg -i "$DEB" >"$WORK/dpkg-i.log" 2>&1 || { cat "$WORK/dpkg-i.log" >&2; exit 1; }
check "dpkg says tandem is installed" sh -c "dpkg-query -W -f='\${Status}' tandem | grep -qx 'install ok installed'"

# path mode (every file root:root)
EXPECTED="
/usr/sbin/tandemd 755
/usr/bin/tandemctl 755
/usr/sbin/xapi-fence 755
/usr/lib/tandem/tandem-libvirt-hook 755
/usr/lib/tandem/tandem-drbd-handler 755
/usr/lib/tandem/block-drbd 755
/usr/share/dbus-1/system.d/org.tandem.Tandem1.conf 644
/usr/lib/systemd/system/tandemd.service 644
/usr/lib/tmpfiles.d/tandemd.conf 644
/etc/default/tandemd 644
/usr/share/doc/tandem/examples/tandem.toml 644
/usr/share/doc/tandem/copyright 644
/usr/share/man/man8/tandemd.8.gz 644
/usr/share/man/man1/tandemctl.1.gz 644
/usr/share/man/man1/tandemctl-fence.1.gz 644
/usr/share/man/man1/tandemctl-config-check.1.gz 644
/usr/share/bash-completion/completions/tandemctl 644
/usr/share/zsh/vendor-completions/_tandemctl 644
/usr/share/fish/vendor_completions.d/tandemctl.fish 644
"
while read -r path mode; do
  [ -n "$path" ] || continue
  got=$(stat -c '%F %a %U:%G' "$path" 2>/dev/null || echo missing)
  if [ "$got" = "regular file $mode root:root" ]; then ok "$path $mode root:root"; else bad "$path: want regular file $mode root:root, got $got"; fi
done <<<"$EXPECTED"

# Nothing else in the package has an odd mode or owner.
dpkg -L tandem >"$WORK/files"
odd=0
while read -r f; do
  [ -f "$f" ] || continue
  m=$(stat -c '%a %U:%G' "$f")
  case "$m" in "644 root:root" | "755 root:root") ;; *) odd=1; echo "    $f: $m" >&2 ;; esac
done <"$WORK/files"
if [ "$odd" = 0 ]; then ok "every packaged file is 644 or 755, root:root ($(grep -c . "$WORK/files") paths)"; else bad "files with other modes or owners"; fi
check "the only conffile is /etc/default/tandemd" \
  sh -c "[ \"\$(dpkg-query -W -f='\${Conffiles}' tandem | awk '{print \$1}' | grep .)\" = /etc/default/tandemd ]"
check "no test stand-in is packaged" sh -c "! grep -Eq '/(drbdadm|drbdsetup|drbdmeta|tandem-[a-z]+-standin|tandem-sim|tandem-lab|tandem-inject|bench-[a-z-]+)$' '$WORK/files'"

# The hooks: links in the directories libvirt and Xen run hooks from.
link_is() { [ -L "$1" ] && [ "$(readlink "$1")" = "$2" ] && [ -x "$1" ]; }
if [ -d /etc/libvirt ]; then
  check "/etc/libvirt/hooks/qemu.d/tandem -> the libvirt hook" link_is /etc/libvirt/hooks/qemu.d/tandem /usr/lib/tandem/tandem-libvirt-hook
  check "/etc/libvirt/hooks/libxl.d/tandem -> the libvirt hook" link_is /etc/libvirt/hooks/libxl.d/tandem /usr/lib/tandem/tandem-libvirt-hook
  check "the hook runs through its link" /etc/libvirt/hooks/qemu.d/tandem --help
fi
check "drbd-utils' block-drbd is diverted by tandem" sh -c "dpkg-divert --listpackage /etc/xen/scripts/block-drbd | grep -qx tandem"
if [ -d /etc/xen/scripts ]; then
  check "/etc/xen/scripts/block-drbd -> tandem's block script" link_is /etc/xen/scripts/block-drbd /usr/lib/tandem/block-drbd
  if grep -q '^/etc/xen/scripts/block-drbd ' "$WORK/before"; then
    check "drbd-utils' script waits as block-drbd.drbd-utils" test -f /etc/xen/scripts/block-drbd.drbd-utils
  fi
fi
check "/etc/tandem exists (0755)" sh -c "[ \"\$(stat -c %a /etc/tandem)\" = 755 ]"
check "tandemd.service is enabled (multi-user.target.wants)" test -L /etc/systemd/system/multi-user.target.wants/tandemd.service

# systemd accepts the unit (it also runs `man` for its Documentation=).
if systemd-analyze verify /usr/lib/systemd/system/tandemd.service >"$WORK/verify.log" 2>&1 && ! [ -s "$WORK/verify.log" ]; then
  ok "systemd-analyze verify tandemd.service: no complaint"
else
  bad "systemd-analyze verify tandemd.service:"; sed 's/^/    /' "$WORK/verify.log" >&2
fi
check "systemd-tmpfiles makes /var/lib/tandem (0700) and /run/tandem from tandemd.conf" sh -c "
  systemd-tmpfiles --create --root='$WORK/tmpfiles-root' /usr/lib/tmpfiles.d/tandemd.conf &&
  [ \"\$(stat -c %a '$WORK/tmpfiles-root/var/lib/tandem')\" = 700 ] && test -d '$WORK/tmpfiles-root/run/tandem'"

# The D-Bus policy, on a bus of its own that reads the installed file.
cat >"$WORK/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$WORK/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"/>
  </policy>
  <include>/usr/share/dbus-1/system.d/org.tandem.Tandem1.conf</include>
</busconfig>
EOF
dbus-daemon --config-file="$WORK/bus.conf" --nofork --print-address=1 >"$WORK/bus.addr" 2>"$WORK/bus.err" &
BUS_PID=$!
for _ in $(seq 50); do [ -s "$WORK/bus.addr" ] && break; sleep 0.1; done
if [ -s "$WORK/bus.addr" ]; then
  ok "dbus-daemon parses the installed policy"
  ADDR=$(head -1 "$WORK/bus.addr")
  own() { dbus-send --bus="$ADDR" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
            org.freedesktop.DBus.RequestName string:org.tandem.Tandem1 uint32:4; }
  check "root may own org.tandem.Tandem1" own
  check "nobody may not own org.tandem.Tandem1" sh -c "! setpriv --reuid=65534 --regid=65534 --clear-groups \
    dbus-send --bus='$ADDR' --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.RequestName string:org.tandem.Tandem1 uint32:4"
  kill "$BUS_PID"; wait "$BUS_PID" 2>/dev/null || true; BUS_PID=
else
  bad "dbus-daemon refused the installed policy:"; sed 's/^/    /' "$WORK/bus.err" >&2
fi

# The programs and their documentation.
check "tandemctl --help lists its commands" sh -c "tandemctl --help | grep -q 'config' && tandemctl --help | grep -q 'fence'"
check "tandemctl --version" sh -c "tandemctl --version | grep -q '^tandemctl '"
check "tandemd --help" sh -c "/usr/sbin/tandemd --help | grep -q -- '--config'"
check "man -l tandemctl.1.gz renders" sh -c "man -l /usr/share/man/man1/tandemctl.1.gz 2>/dev/null | grep -q 'tandemctl-fence'"
check "man -l tandemctl-fence.1.gz renders" sh -c "man -l /usr/share/man/man1/tandemctl-fence.1.gz 2>/dev/null | grep -q -- '--direct'"
check "man -l tandemd.8.gz renders" sh -c "man -l /usr/share/man/man8/tandemd.8.gz 2>/dev/null | grep -q 'SIGHUP'"
check "man -w finds tandemctl(1) and tandemd(8)" sh -c "man -w 1 tandemctl && man -w 8 tandemd"
check "the bash completion loads" bash -c "source /usr/share/bash-completion/completions/tandemctl && complete -p tandemctl"

# Remove: every file goes but the conffile, which keeps a local edit.
echo "# local edit" >>/etc/default/tandemd
echo "package-test: dpkg -r"
dpkg -r tandem >"$WORK/dpkg-r.log" 2>&1 || { bad "dpkg -r tandem failed"; cat "$WORK/dpkg-r.log" >&2; }
check "dpkg says config-files only" sh -c "dpkg-query -W -f='\${Status}' tandem | grep -qx 'deinstall ok config-files'"
left=0
while read -r f; do
  [ "$f" = /etc/default/tandemd ] && continue
  if [ -f "$f" ] || [ -L "$f" ]; then left=1; echo "    left: $f" >&2; fi
done <"$WORK/files"
if [ "$left" = 0 ]; then ok "dpkg -r removed every file but the conffile"; else bad "dpkg -r left files"; fi
check "the conffile keeps its local edit" grep -qx '# local edit' /etc/default/tandemd
check "the hook links are gone" sh -c "! [ -e /etc/libvirt/hooks/qemu.d/tandem ] && ! [ -L /etc/libvirt/hooks/qemu.d/tandem ] && ! [ -L /etc/libvirt/hooks/libxl.d/tandem ]"
check "the diversion is gone" sh -c "! dpkg-divert --list | grep -q 'by tandem'"

echo "package-test: dpkg --purge"
dpkg --purge tandem >"$WORK/dpkg-purge.log" 2>&1 || { bad "dpkg --purge tandem failed"; cat "$WORK/dpkg-purge.log" >&2; }
INSTALLED=0
check "dpkg no longer knows tandem" sh -c "! dpkg-query -W -f='\${Status}' tandem 2>/dev/null | grep -q installed"
check "the conffile is gone" test ! -e /etc/default/tandemd
snapshot >"$WORK/after"
if diff -u "$WORK/before" "$WORK/after" >"$WORK/diff"; then
  ok "purge left the machine as it was (diversions, hooks, /etc/xen/scripts, /etc/tandem, state, systemd links)"
else
  bad "purge left differences:"; sed 's/^/    /' "$WORK/diff" >&2
fi

echo "package-test: $passed passed, $failed failed"
[ "$failed" = 0 ]
