# A host of one's own for a test (or the bench), run by `unshare --mount sh -c`: inside this
# private mount namespace, /etc/oauth2-sendmail (on an overlay of /etc), /var/lib,
# /var/spool and /var/log are throwaway folders with the test's in $T bound over
# /etc/oauth2-sendmail and /var/{lib,spool,log}/oauth2-sendmail; the machine's own are never
# touched. The binary $NS_EXE is bound to /var/lib/oauth2-sendmail-under-test, where any user
# may run it whatever the modes above the build folder (a clone under /root). Then "$@" runs,
# as uid $NS_USER when that is set (its supplementary groups cleared).
set -e
ov=$(mktemp -d "$T/ov.XXXXXX"); mkdir "$ov/u" "$ov/w"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$ov/u,workdir=$ov/w" /etc
mkdir -p /etc/oauth2-sendmail
mount --bind "$T/etc" /etc/oauth2-sendmail
for v in lib spool log; do
  mount -t tmpfs -o mode=755 tmpfs "/var/$v"
  mkdir "/var/$v/oauth2-sendmail"
  mount --bind "$T/$v" "/var/$v/oauth2-sendmail"
done
touch /var/lib/oauth2-sendmail-under-test
mount --bind "$NS_EXE" /var/lib/oauth2-sendmail-under-test
if [ -n "${NS_USER:-}" ]; then
  exec setpriv --reuid="$NS_USER" --regid="$NS_USER" --clear-groups -- "$@"
fi
exec "$@"
