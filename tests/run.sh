#!/usr/bin/env bash
# Run the test suites through prove and end with "N passed, N failed".
#   tests/run.sh [unit|e2e|all]   (B= names the build dir, default build)
set -u
cd "$(dirname "$0")/.."
B=${B:-build}
what=${1:-all}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0

if [ "$what" = unit ] || [ "$what" = all ]; then
    # Unit and simulation tests are TAP-printing binaries.
    prove -v -e '' "$B"/tests/test_* 2>&1 | tee -a "$log" || rc=1
fi
if [ "$what" = e2e ] || [ "$what" = all ]; then
    export CHORDFS_BIN="$PWD/$B"
    prove -v -e 'bats --tap' tests/e2e/*.bats 2>&1 | tee -a "$log" || rc=1
fi
if [ "$what" = all ] && command -v clang >/dev/null 2>&1 && [ -f tests/fuzz/fuzz_wire.c ]; then
    # A short libFuzzer run of the decoder counts as one test.
    if FUZZ_SECONDS=${FUZZ_SECONDS:-15} make --no-print-directory fuzz-smoke >"$log.fuzz" 2>&1; then
        echo "ok - fuzz_wire smoke" | tee -a "$log"
    else
        tail -30 "$log.fuzz"; echo "not ok - fuzz_wire smoke" | tee -a "$log"; rc=1
    fi
    rm -f "$log.fuzz"
fi

passed=$(grep -cE '^[[:space:]]*ok ' "$log")
failed=$(grep -cE '^[[:space:]]*not ok ' "$log")
[ "$failed" -gt 0 ] && rc=1
echo "$passed passed, $failed failed"
exit $rc
