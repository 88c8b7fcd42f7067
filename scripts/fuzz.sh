#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the policy request path, the policy.toml
# loader and the admin API's input types, each for a fixed number of executions, starting from
# the seeds in fuzz/seeds (real Dovecot 2.3 and 2.4 request bodies, the shipped policy.toml,
# rule sets). `scripts/fuzz.sh` runs the full campaign (10 million for the policy path);
# `scripts/fuzz.sh smoke` a short one, as CI does. A crash stops the run with its input in
# fuzz/artifacts/<target>/; turn it into a regression test. See docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-full}"
case "$mode" in
  smoke) policy_runs=20000; other_runs=5000 ;;
  full) policy_runs="${POLICY_RUNS:-10000000}"; other_runs="${OTHER_RUNS:-1000000}" ;;
  *) echo "usage: $0 [full|smoke]" >&2; exit 2 ;;
esac

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# cargo-fuzz builds with sanitizer flags that stable Rust accepts only like this.
export RUSTC_BOOTSTRAP=1

for target in policy_request policy_toml admin_inputs; do
  runs="$other_runs"
  [ "$target" = policy_request ] && runs="$policy_runs"
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  # The shipped policy.toml as it is now, rather than a copy that falls behind it.
  [ "$target" = policy_toml ] && cp policy.toml "$corpus/shipped-policy.toml"
  echo "== fuzzing $target for $runs executions"
  log="fuzz/corpus/$target.log"
  if ! cargo fuzz run "$target" "$corpus" "fuzz/seeds/$target" -- \
    -runs="$runs" -max_len=8192 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 > "$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzzing $target found a crash: see fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)" "$log" || tail -n 5 "$log"
done
echo "fuzzing: no crash"
