#!/usr/bin/env bash
# `make test`'s cargo part: every test binary built once, then the bounded fault-harness runs
# (crates/gozon/tests/chaos.rs, minutes of private servers and a dozen processes) beside the rest
# of the suite rather than after it. Both must pass; the harness's output follows the suite's.
set -uo pipefail
cd "$(dirname "$0")/.."
cargo=${CARGO:-cargo}
# The targets of `make test` (the Makefile's TEST_TARGETS).
read -r -a targets <<< "${TEST_TARGETS:?set by make test}"
"$cargo" test "${targets[@]}" --no-run || exit 1

mkdir -p test-output
harness_log=test-output/chaos-harness-runs.log
"$cargo" test --locked -p gozon --test chaos -- chaos_harness_runs:: > "$harness_log" 2>&1 &
harness=$!
trap 'kill "$harness" 2>/dev/null' EXIT

"$cargo" test "${targets[@]}" -- --skip chaos_harness_runs::
suite=$?

wait "$harness"
runs=$?
trap - EXIT
echo "---- the fault harness's bounded runs (crates/gozon/tests/chaos.rs), run beside the suite:"
cat "$harness_log"
[ "$suite" -eq 0 ] && [ "$runs" -eq 0 ]
