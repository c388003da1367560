# tandem's %preun ($1: 0 erase, 1 upgrade): on erase, stop tandemd and take
# the hook links away while the files they point to still exist.
if [ "$1" -eq 0 ]; then
	if [ -d /run/systemd/system ]; then
		systemctl --no-reload disable --now tandemd.service >/dev/null 2>&1 || :
	fi
	for d in qemu.d libxl.d; do
		l="/etc/libvirt/hooks/$d/tandem"
		if [ -L "$l" ]; then rm -f "$l"; fi
		if [ -d "/etc/libvirt/hooks/$d" ]; then rmdir --ignore-fail-on-non-empty "/etc/libvirt/hooks/$d"; fi
	done
	if [ -L /etc/xen/scripts/block-drbd ]; then
		rm -f /etc/xen/scripts/block-drbd
		if [ -e /etc/xen/scripts/block-drbd.tandem-orig ]; then
			mv -f /etc/xen/scripts/block-drbd.tandem-orig /etc/xen/scripts/block-drbd
		fi
	fi
fi
exit 0
