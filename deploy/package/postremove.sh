#!/bin/sh
# konstruct postremove: forget the unit. The konstruct user, the state
# directory's contents (the disk spool) and the database are left alone.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
