#!/bin/sh
# Builds the Debian 13 (trixie) root that tests/e2e_dovecot24.rs runs Dovecot 2.4 in: a minimal
# debootstrap with dovecot-imapd and dovecot-pop3d from Debian's archive, plus one system
# account whose password has expired (Dovecot's PAM passdb then reports fail_type "expired").
#
#   scripts/dovecot24-root.sh [ROOT]
#
# ROOT defaults to $MAILWARDEN_DOVECOT24_ROOT, else /var/cache/mailwarden-tests/trixie-dovecot
# (outside the repository, so the root is built once per machine, not once per clone).
# $MAILWARDEN_DEBIAN_MIRROR replaces http://deb.debian.org/debian.
# A root is complete only when ROOT/.mailwarden-root holds this script's RECIPE line: it is
# written last, inside a temporary folder that is then renamed to ROOT, so an interrupted
# build is never taken for a good one. An existing complete root is kept; anything else at
# ROOT is replaced. Concurrent runs wait for each other (flock on ROOT.lock).
# The tests run this themselves when the root is missing; run it by hand to warm a machine.
# Needs root and debootstrap. Takes about a minute; progress goes to stderr.

set -eu
exec 1>&2

# Bump when the root's contents must change: every cached root is then rebuilt.
# tests/support/dovecot24.rs reads this line from here and rebuilds a root whose marker differs.
RECIPE="mailwarden dovecot24 root 2: trixie minbase, dovecot-imapd dovecot-pop3d, expired account"
MARKER=.mailwarden-root

ROOT=${1:-${MAILWARDEN_DOVECOT24_ROOT:-/var/cache/mailwarden-tests/trixie-dovecot}}
MIRROR=${MAILWARDEN_DEBIAN_MIRROR:-http://deb.debian.org/debian}

is_complete() {
    [ -f "$ROOT/$MARKER" ] && [ "$(head -n 1 "$ROOT/$MARKER")" = "$RECIPE" ]
}

if [ "$(id -u)" != 0 ]; then
    echo "dovecot24-root: must run as root (debootstrap and chroot need it)"
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
    echo "dovecot24-root: debootstrap is not installed (apt-get install debootstrap)"
    exit 1
fi
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

parent=$(dirname "$ROOT")
mkdir -p "$parent"
exec 9>"$ROOT.lock"
if ! flock -n 9; then
    echo "dovecot24-root: another build of $ROOT is running; waiting for it"
    flock 9
fi

if is_complete; then
    echo "dovecot24-root: $ROOT is complete ($(sed -n 2p "$ROOT/$MARKER"))"
    exit 0
fi

# Leftovers of interrupted builds. Nothing can be mounted in them: every build runs in its own
# mount namespace, whose mounts vanish with it.
for leftover in "$ROOT".building.* "$ROOT".old.*; do
    [ -e "$leftover" ] || continue
    echo "dovecot24-root: removing $leftover (an interrupted build)"
    rm -rf --one-file-system "$leftover"
done

building="$ROOT.building.$$"
started=$(date +%s)
echo "dovecot24-root: building $ROOT from $MIRROR (debootstrap trixie; about a minute)"
# A failed build leaves nothing behind (one killed outright is removed by the next run, above).
trap 'rm -rf --one-file-system "$building"' EXIT
# debootstrap mounts /proc and /sys inside the target while it installs. In a private mount
# namespace those mounts cannot outlive it, even if it is killed. Its own policy-rc.d keeps
# dovecot's postinst from starting a Dovecot on the host's ports.
unshare --mount --propagation private \
    debootstrap --variant=minbase --include=dovecot-imapd,dovecot-pop3d \
    trixie "$building" "$MIRROR"

for binary in /usr/sbin/dovecot /usr/bin/doveadm /usr/lib/dovecot/imap-login /usr/lib/dovecot/pop3-login; do
    if [ ! -x "$building$binary" ]; then
        echo "dovecot24-root: $binary is missing after debootstrap"
        exit 1
    fi
done
version=$(chroot "$building" /usr/sbin/dovecot --version)
# A system account whose password must be changed before it can log in: pam_unix answers
# PAM_NEW_AUTHTOK_REQD, which Dovecot reports as fail_type "expired" after a right password.
# tests/support/dovecot24.rs names it (EXPIRED_ACCOUNT).
chroot "$building" useradd --no-create-home --shell /usr/sbin/nologin mw-expired
echo 'mw-expired:expired-secret' | chroot "$building" chpasswd
chroot "$building" passwd --expire mw-expired >/dev/null
rm -f "$building/var/cache/apt/archives/"*.deb

printf '%s\ndovecot %s\nbuilt %s\n' "$RECIPE" "$version" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    >"$building/$MARKER"
sync -f "$building/$MARKER" 2>/dev/null || sync
if [ -e "$ROOT" ]; then
    mv "$ROOT" "$ROOT.old.$$"
fi
mv "$building" "$ROOT"
trap - EXIT
rm -rf --one-file-system "$ROOT.old.$$"
echo "dovecot24-root: $ROOT ready with Dovecot $version in $(($(date +%s) - started)) s"
