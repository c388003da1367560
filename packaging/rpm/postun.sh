# tandem's %postun ($1: 0 erase, 1 upgrade). A running tandemd is not
# restarted after an upgrade: restart it on each host when no migration runs
# (docs/packaging.md). /var/lib/tandem stays after an erase, as RPM keeps data.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || :
fi
if [ "$1" -eq 0 ]; then
	rm -rf /run/tandem
	if [ -d /etc/tandem ]; then rmdir --ignore-fail-on-non-empty /etc/tandem; fi
fi
exit 0
