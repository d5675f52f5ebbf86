#!/usr/bin/env bash
# bench/hops.sh - lookup hops, convergence and memory of simulated rings.
#
# Runs chordsim for N = 100, 1000, 10000 (replicas 3, keys 1000, lookups
# 2000) and prints one row per N: mean hops against Chord's expected
# ½·log2(N), p99 hops, convergence time of the ring and of every finger
# (virtual ms after the last join), resident memory per peer (the whole
# process, so small N mostly shows the fixed cost) and wall time. Then one
# 1000-peer run where 20% of the peers crash at once, showing keys lost
# against keys that were unrecoverable (all R copies crashed). With gnuplot
# installed, also plots hops against N into bench/hops.png.
#
#   bench/hops.sh [SIZES...]     (B= names the build dir; SEED= the seed)
set -eu
cd "$(dirname "$0")/.."
B=${B:-build}
SEED=${SEED:-1}
SIM="$B/chordsim"
[ -x "$SIM" ] || { echo "bench/hops.sh: $SIM not built (make)" >&2; exit 1; }
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(100 1000 10000)

# Field of a flat JSON object, without needing jq.
field() { sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" <<<"$1"; }

data=$(mktemp)
trap 'rm -f "$data"' EXIT

printf '%7s %10s %10s %9s %12s %11s %10s %10s %7s %5s\n' N hops_mean \
    '½log2(N)' hops_p99 converge_ms fingers_ms rss/peer wall_ms failed conv
for n in "${sizes[@]}"; do
    out=$("$SIM" --peers "$n" --keys 1000 --lookups 2000 --replicas 3 \
        --seed "$SEED" --json)
    half=$(awk -v n="$n" 'BEGIN { printf "%.3f", log(n) / log(2) / 2 }')
    rss=$(field "$out" rss_bytes)
    printf '%7s %10s %10s %9s %12s %11s %10s %10s %7s %5s\n' "$n" \
        "$(field "$out" hops_mean)" "$half" "$(field "$out" hops_p99)" \
        "$(field "$out" converge_ms)" "$(field "$out" fingers_ms)" \
        "$((rss / n))" \
        "$(field "$out" wall_ms)" "$(field "$out" failed_lookups)" \
        "$(field "$out" ring_converged)"
    echo "$n $(field "$out" hops_mean) $half" >>"$data"
done

echo
out=$("$SIM" --peers 1000 --keys 1000 --lookups 2000 --replicas 3 \
    --seed "$SEED" --crash 0.2 --json)
printf 'crash 0.2 of 1000 peers: keys_lost %s, keys_unrecoverable %s ' \
    "$(field "$out" keys_lost)" "$(field "$out" keys_unrecoverable)"
printf '(lost though recoverable: %s), ' "$(field "$out" keys_lost_recoverable)"
printf 'reconverged %s after %s ms, failed_lookups %s, wall %s ms\n' \
    "$(field "$out" reconverged)" "$(field "$out" reconverge_ms)" \
    "$(field "$out" failed_lookups)" "$(field "$out" wall_ms)"

if command -v gnuplot >/dev/null 2>&1; then
    gnuplot <<EOF
set terminal png size 640,400
set output "bench/hops.png"
set logscale x
set xlabel "peers"
set ylabel "hops"
plot "$data" using 1:2 with linespoints title "mean hops", \
     "$data" using 1:3 with lines title "1/2 log2 N"
EOF
    echo "plot: bench/hops.png"
fi
