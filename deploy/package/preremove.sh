#!/bin/sh
# konstruct preremove (deb: remove|upgrade|…; rpm: 0 erase, 1 upgrade): on
# removal only, stop and disable the service whose binary is going away.
# An upgrade leaves it running; `systemctl restart konstruct` picks the new
# binary up after `konstruct migrate`.
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl stop konstruct.service >/dev/null 2>&1 || true
	fi
	systemctl disable konstruct.service >/dev/null 2>&1 || true
	;;
esac
exit 0
