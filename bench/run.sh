#!/usr/bin/env bash
# bench/run.sh - run every benchmark script in bench/ and print its table.
#
# Runs bench/*.sh (all but this file) one after another, in name order, each
# with the environment it was given (B=, BENCH_SCALE=small, ...), each
# under a header. Exits 1 if any of them failed, after running them all.
#   bench/run.sh            (make bench)
#   BENCH_SCALE=small bench/run.sh
set -u
cd "$(dirname "$0")/.."
rc=0
failed=()
for s in bench/*.sh; do
    [ "$s" = bench/run.sh ] && continue
    echo "=================== $s ($(date -u +%H:%M:%S) UTC)"
    start=$SECONDS
    if bash "$s"; then
        echo "=================== $s: done in $((SECONDS - start)) s"
    else
        echo "=================== $s: FAILED (status $?) after $((SECONDS - start)) s"
        failed+=("$s")
        rc=1
    fi
    echo
done
if [ $rc = 0 ]; then
    echo "bench/run.sh: every benchmark ran"
else
    echo "bench/run.sh: failed: ${failed[*]}"
fi
exit $rc
