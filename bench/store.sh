#!/usr/bin/env bash
# Local store benchmark: puts per second of 4 KiB values into the LMDB store
# with an fsync per commit (sync_each=true) and without (sync_each=false,
# one fsync at the end), and the ratio between the two.
#   bench/store.sh [storebench options: -n puts -s value-bytes -d dir]
# Defaults: 10000 puts of 4096 bytes in a fresh directory under $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
make --no-print-directory -s build/storebench >/dev/null
echo "# store: $(uname -srm), $(nproc) cpus, tmp on $(df -P "${TMPDIR:-/tmp}" | awk 'NR==2 {print $1}')"
exec build/storebench "$@"
