#!/usr/bin/env bash
# Kills mailwarden with SIGKILL 100 times at random moments under a steady stream of bans,
# block-list entries and firewall rules, checking after each restart that every acknowledged
# change is there and the database passes SQLite's integrity check. See docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MAILWARDEN_CRASH_ROUNDS="${MAILWARDEN_CRASH_ROUNDS:-100}" cargo test --release --test crash_safety -- --nocapture
