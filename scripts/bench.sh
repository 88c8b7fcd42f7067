#!/usr/bin/env bash
# The benchmark of issue 8 in one command (docs/BENCHMARKS.md): builds mailwarden and the
# benchmark in release mode, then runs every part and prints the figures. Arguments go to the
# benchmark, for example:
#   scripts/bench.sh                          # everything, the documented numbers (~10 min)
#   scripts/bench.sh --parts mix,latency      # only the throughput and latency runs
#   scripts/bench.sh --parts redis            # the mix, embedded store against redis mode (issue 9)
#   scripts/bench.sh --parts tls              # the mix, plain against a TLS policy listener (issue 20)
#   scripts/bench.sh --perf                   # also profile mailwarden's throughput run
#   scripts/bench.sh --help                   # every knob
# The Dovecot part needs root and Debian's dovecot-core and dovecot-imapd; the redis part starts
# a private redis-server (Debian's redis-server; skipped with a note when missing); --perf needs
# perf (Debian's linux-perf). The report is also written to target/bench/report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --release --bin mailwarden --example bench
out=target/bench
mkdir -p target
# The report goes to stdout and the file; progress lines to stderr.
target/release/examples/bench --mailwarden target/release/mailwarden --out "$out" "$@" \
  | tee target/bench-report.txt
mv target/bench-report.txt "$out/report.txt" 2>/dev/null || true
