#!/usr/bin/env bash
# Installs what `make lab`, `make test` and `make bench` need on Debian 12, when it
# is missing. Idempotent: a second run installs nothing. Run as root.
set -euo pipefail

# Debian packages the tests use (see ../shared/REAL-PARTS.md for why each).
PACKAGES=(
  iproute2 iptables procps python3   # network namespaces, veth, link faults
  openipmi ipmitool fence-agents     # ipmi_sim as the BMC; ipmitool/fence_ipmilan as reference clients
  dbus-daemon dbus-bin               # private system-style buses and dbus-send for daemon/tests/dbus.rs
  util-linux passwd                  # setpriv and groupadd for the D-Bus policy test
  libvirt-dev pkg-config libvirt0    # crate virt links libvirt; libvirt0 holds the test:/// driver daemon/tests/hypervisor.rs uses
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-system libvirt-clients qemu-system-x86
                                     # two real libvirtd with QEMU per test rig (tests/src/libvirt.rs), virsh
  mount drbd-utils                   # losetup for the rig's shared disk; the real drbdadm checks our command lines
  busybox-static cpio kmod xz-utils e2fsprogs binutils  # the real-DRBD tier's guest image (tests/src/real_drbd/image.rs)
  socat                              # the real-Xen tier: xl migrate over TCP in the dom0s (tests/src/xen_tier.rs)
  python3-pip                        # pip, for the PyPI XenAPI package (the XenAPI stand-in's reference client)
  dpkg-dev systemd man-db            # the packages: dpkg-shlibdeps for cargo-deb, systemd-analyze verify, man -l (scripts/package-test.sh)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: missing Debian packages ${missing[*]}; run as root (or: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  extra=()
  if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]]; then
    # Debian 12 with backports may hold a newer qemu-utils that blocks
    # qemu-system-x86 7.2: take the matching one in the same command.
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] && extra=(--allow-downgrades "qemu-utils=$v")
  fi
  apt-get install -y -qq --no-install-recommends "${extra[@]}" "${missing[@]}" >/dev/null
fi

# The official Python XenAPI client, which standins/xapi's tests drive against
# the XenAPI stand-in (fence_xenapi brings its own copy).
if ! python3 -c 'import XenAPI' 2>/dev/null; then
  echo "deps: installing the Python XenAPI package from PyPI"
  python3 -m pip install --quiet --break-system-packages XenAPI >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "deps: no Rust toolchain found; installing Debian's (tandem needs Rust 1.80 or newer)"
    apt-get install -y -qq --no-install-recommends cargo rustc >/dev/null
  fi
fi
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
      rustup component add "$comp"
    else
      apt-get install -y -qq --no-install-recommends "rust-$comp" >/dev/null 2>&1 ||
        apt-get install -y -qq --no-install-recommends "$comp" >/dev/null
    fi
  fi
done

# The packaging tools (docs/packaging.md), built once into ~/.cargo/bin:
# cargo-deb for `make deb` and the package test in `make test` (~1.5 min to
# build), cargo-generate-rpm only for `make rpm` (`scripts/deps.sh rpm`, ~6 min).
cargo_tool() { # cargo_tool SUBCOMMAND CRATE VERSION
  if ! cargo "$1" --version >/dev/null 2>&1; then
    echo "deps: installing $2 $3 (cargo install, once)"
    cargo install --quiet --locked "$2" --version "$3"
  fi
}
cargo_tool deb cargo-deb 3.8.0
if [ "${1:-}" = rpm ]; then
  cargo_tool generate-rpm cargo-generate-rpm 0.21.1
fi
