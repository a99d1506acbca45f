# oauth2-sendmail-mta: where systemd does not run, send the host's maildrop and due queue
# every 5 minutes and keep the system account's refresh token alive. Where systemd runs,
# its path unit and timer do this, and this line does nothing.
*/5 * * * * root [ -d /run/systemd/system ] || [ ! -e /etc/oauth2-sendmail/config.toml ] || /usr/bin/oauth2-sendmail --system -q
