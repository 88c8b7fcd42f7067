#!/usr/bin/env bash
# One hour of steady load with memory, open files, tracked sources and a normal client's p99
# sampled every minute; fails if anything grows beyond its cap. See docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."
MAILWARDEN_SOAK_SECONDS="${MAILWARDEN_SOAK_SECONDS:-3600}" cargo test --release --test soak -- --nocapture
