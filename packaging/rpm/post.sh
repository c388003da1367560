# tandem's %post ($1: 1 install, 2 upgrade). The hooks are links, not files
# of the package, so that an erased tandem leaves no hook behind; see
# docs/packaging.md.
LIB=/usr/lib/tandem
if [ -d /etc/libvirt ]; then
	for d in qemu.d libxl.d; do
		mkdir -p "/etc/libvirt/hooks/$d"
		ln -sfn "$LIB/tandem-libvirt-hook" "/etc/libvirt/hooks/$d/tandem"
	done
fi
if [ -d /etc/xen/scripts ]; then
	# drbd-utils' (drbd-xen's) shell block-drbd waits beside it while tandem is installed.
	if [ -e /etc/xen/scripts/block-drbd ] && [ ! -L /etc/xen/scripts/block-drbd ]; then
		mv -f /etc/xen/scripts/block-drbd /etc/xen/scripts/block-drbd.tandem-orig
	fi
	ln -sfn "$LIB/block-drbd" /etc/xen/scripts/block-drbd
fi
mkdir -p /etc/tandem
chmod 0755 /etc/tandem
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create /usr/lib/tmpfiles.d/tandemd.conf || :
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || :
	if [ "$1" -eq 1 ]; then
		systemctl preset tandemd.service >/dev/null 2>&1 || :
	fi
fi
exit 0
