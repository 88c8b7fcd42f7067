#!/usr/bin/env bash
# Refreshes the README's console screenshots: runs the browser tests (which write every
# screen to target/screenshots/) and copies the console's into docs/console/.
set -euo pipefail
cd "$(dirname "$0")/.."
CI=true cargo test --test console --test console_overview --test console_bans --test console_firewall
mkdir -p docs/console
cp target/screenshots/console-*.png docs/console/
ls docs/console
