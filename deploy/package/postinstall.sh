#!/bin/sh
# konstruct postinstall (deb: configure [old-version]; rpm: 1 install, 2 upgrade).
# Nothing here enables, starts or restarts the service, or touches the
# database: `konstruct doctor` guides the rest, and an upgrade takes effect
# after `konstruct migrate` and `systemctl restart konstruct`.
set -e
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers /usr/lib/sysusers.d/konstruct.conf >/dev/null 2>&1 || true
fi
first=no
case "$1" in
configure) [ -z "$2" ] && first=yes ;;
1) first=yes ;;
esac
if [ "$first" = yes ]; then
	# In case the user did not exist yet when the files were unpacked.
	chown root:konstruct /etc/konstruct /etc/konstruct/konstruct.yaml 2>/dev/null || true
	chown konstruct:konstruct /var/lib/konstruct 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$first" = yes ]; then
	cat <<'MSG'
konstruct is installed; the service is neither enabled nor started.
Next: put the database URLs and the secret key in /etc/konstruct/konstruct.env
(instructions inside), the LLM in /etc/konstruct/konstruct.yaml, then run
  konstruct doctor --env-file /etc/konstruct/konstruct.env
and follow its fixes (`konstruct migrate`, `systemctl enable --now konstruct`).
MSG
fi
exit 0
