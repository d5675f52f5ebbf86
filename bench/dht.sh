#!/usr/bin/env bash
# DHT benchmark through the real network driver: 3 peers in one process on
# loopback TCP (LMDB stores in temporary directories, replicas 3), 8 client
# threads doing put then get of 1 KiB values for a fixed count; ops/s and
# latency p50/p99 for put and get, then the same against a 1-peer ring (the
# baseline, run first in the same job) and the ratio of the two.
#   bench/dht.sh [chordbench options: -n ops -t threads -s bytes -p peers -r replicas]
# B= names the build directory (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${B:-build}
make --no-print-directory -s B="$B" "$B/chordbench" >/dev/null
echo "# dht: $(uname -srm), $(nproc) cpus"
exec "$B/chordbench" "$@"
