#!/usr/bin/env bash
# The whole test suite, runnable on a fresh Debian machine: installs the system packages the
# tests drive (a real Dovecot with IMAP, POP3 and submission, Prometheus, Chromium, nftables,
# schemathesis, cargo-fuzz), then runs a short fuzzing run and the unit, HTTP, end-to-end and
# reliability tests.
# With CI=true a missing component fails the run instead of skipping tests.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(dovecot-core dovecot-imapd dovecot-pop3d dovecot-submissiond systemd prometheus debootstrap chromium chromium-driver redis-server redis-tools iproute2 nftables dovecot-lmtpd postfix)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Installing test dependencies: ${missing[*]}"
  $sudo apt-get update -q
  # Postfix asks how to configure the system's own mail service: not at all (the tests run
  # their own instance on a loopback port).
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  # Debian starts the system Dovecot (and Redis) on install where it can; the tests run their
  # own instances on free loopback ports and do not need or touch them.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# schemathesis (PyPI) fuzzes the admin API from its OpenAPI document.
if ! command -v schemathesis >/dev/null 2>&1; then
  echo "Installing schemathesis"
  python3 -m pip install --quiet --disable-pip-version-check schemathesis \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages schemathesis
fi

# A short coverage-guided fuzzing run of each target (cargo-fuzz; scripts/fuzz.sh full runs
# the long campaign). Before cargo test so that its summary stays the last thing printed.
scripts/fuzz.sh smoke

cargo build --locked --all-targets
cargo test --locked --all-targets
