#!/bin/sh
# konstruct preinstall (deb: install|upgrade; rpm: 1|2): create the konstruct
# system user before the files it owns (/var/lib/konstruct, /etc/konstruct)
# are unpacked. The same line as /usr/lib/sysusers.d/konstruct.conf.
set -e
SYSUSERS='u konstruct - "Konstruct AI employee for Slack" /var/lib/konstruct /usr/sbin/nologin'
if getent passwd konstruct >/dev/null 2>&1; then
	exit 0
fi
if command -v systemd-sysusers >/dev/null 2>&1 &&
	printf '%s\n' "$SYSUSERS" | systemd-sysusers --replace=/usr/lib/sysusers.d/konstruct.conf - >/dev/null 2>&1; then
	exit 0
fi
# Older systemd (no --replace), or none: the shadow tools.
if command -v useradd >/dev/null 2>&1; then
	getent group konstruct >/dev/null 2>&1 || groupadd --system konstruct
	useradd --system --gid konstruct --home-dir /var/lib/konstruct --no-create-home \
		--shell /usr/sbin/nologin --comment "Konstruct AI employee for Slack" konstruct
else
	adduser --system --group --home /var/lib/konstruct --no-create-home --shell /usr/sbin/nologin konstruct
fi
