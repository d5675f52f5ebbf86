#!/usr/bin/env bash
# bench/fs.sh - file-system workloads on chordfs against baselines.
#
# Targets (each a mount under one temporary work directory):
#   tmpfs          a private tmpfs (memory; the upper bound)
#   passthrough_ll libfuse's example, built from libfuse3-dev's examples into
#                  $B/bench/, over a directory on disk (FUSE cost alone)
#   sshfs          sshfs over loopback to a private sshd (throwaway keys, a
#                  free port on 127.0.0.1), exporting a directory on disk
#   chordfs-1      chordfs, one peer (the mount's own), data dir on disk
#   chordfs-3      chordfs, three peers (two --peer-only + the mount),
#                  --replicas 3
# Workloads:
#   seq-write   dd bs=1M conv=fsync of BENCH_MB MiB
#   cold-read   the same file read back after a remount and drop_caches
#   create      BENCH_FILES files of 4 KiB in BENCH_DIRS directories
#   ls-lR       ls -lR of that tree (caches dropped first)
#   read-all    cat of every file (caches dropped first)
#   rm-rf       rm -rf of the tree
#   tar-x       tar extract of a source tree (/usr/include; only
#               /usr/include/linux at BENCH_SCALE=small)
# Output: one row per workload and target with seconds, MiB/s and the time
# ratio against sshfs and passthrough_ll (2.00x = twice as long), also kept
# as TSV in bench/out/. A step over BENCH_STEP_TIMEOUT seconds is cut by
# timeout(1) and shown as TIMEOUT, a failed one as FAIL; a step whose
# result is wrong (a short read, a missing file) is noted BAD.
#
#   bench/fs.sh                       full: 1 GiB, 10000 files in 100 dirs
#   BENCH_SCALE=small bench/fs.sh     quick: 64 MiB, 1000 files in 10 dirs
#   BENCH_TARGETS="tmpfs chordfs-1"   a subset; BENCH_MB, BENCH_FILES,
#   BENCH_DIRS, BENCH_TAR (a tarball), BENCH_STEP_TIMEOUT override sizes.
# Needs root for tmpfs, drop_caches and sshd (else those parts are skipped
# or reads stay warm, and the table says so). Every mount made here is
# unmounted and every process started here killed on exit.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${B:-build}
BIN=$ROOT/$B

SCALE=${BENCH_SCALE:-full}
if [ "$SCALE" = small ]; then
    MB=${BENCH_MB:-64}
    FILES=${BENCH_FILES:-1000}
    DIRS=${BENCH_DIRS:-10}
    STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-180}
else
    MB=${BENCH_MB:-1024}
    FILES=${BENCH_FILES:-10000}
    DIRS=${BENCH_DIRS:-100}
    STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-900}
fi
TARGETS=${BENCH_TARGETS:-tmpfs passthrough_ll sshfs chordfs-1 chordfs-3}
WORKLOADS="seq-write cold-read create ls-lR read-all rm-rf tar-x"

W=$(mktemp -d /tmp/chordfs-bench.XXXXXX)
MOUNTS=()  # every mountpoint we mounted, for cleanup
PIDS=()    # every process we started, for cleanup
IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1
FAILED=0

log() { echo "bench/fs.sh: $*" >&2; }

cleanup() {
    local m p
    for m in "${MOUNTS[@]}"; do
        if mountpoint -q "$m" 2>/dev/null; then
            fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        fi
    done
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for _ in $(seq 1 50); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    [ -d "/dev/shm/$(basename "$W")" ] && rm -rf "/dev/shm/$(basename "$W")"
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECONDS CMD...: poll until CMD succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge "$deadline" ] && return 1
        sleep 0.1
    done
}

free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! ss -Htln "sport = :$p" | grep -q .; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

drop_caches() {
    sync
    [ $IS_ROOT = 1 ] && echo 3 >/proc/sys/vm/drop_caches
    return 0
}

# Stop a process we started and wait (bounded) for it to go.
stop_pid() {
    kill -TERM "$1" 2>/dev/null
    wait_for 20 bash -c "! kill -0 $1 2>/dev/null" || kill -KILL "$1" 2>/dev/null
}

# ----------------------------------------------------------------- targets
# target_up NAME MNT mounts (status 0 or 1), target_down NAME MNT unmounts.

declare -A TPID # target -> pid of its FUSE process

build_passthrough() {
    local src=/usr/share/doc/libfuse3-dev/examples
    local out=$BIN/bench/passthrough_ll
    [ -x "$out" ] && [ "$out" -nt "$src/passthrough_ll.c" ] && return 0
    mkdir -p "$BIN/bench"
    # The example is libfuse's code, not ours: built with its own headers
    # and no -Werror.
    gcc -O2 -w -I"$src" -o "$out" "$src/passthrough_ll.c" \
        $(pkg-config --cflags --libs fuse3) -lpthread
}

sshd_up() {
    local d=$W/ssh
    [ -x /usr/sbin/sshd ] || { log "no /usr/sbin/sshd (openssh-server)"; return 1; }
    command -v sshfs >/dev/null || { log "no sshfs"; return 1; }
    mkdir -p "$d" && chmod 700 "$d"
    ssh-keygen -q -t ed25519 -N '' -f "$d/host_key" || return 1
    ssh-keygen -q -t ed25519 -N '' -f "$d/id" || return 1
    cp "$d/id.pub" "$d/authorized_keys"
    SSH_PORT=$(free_port)
    cat >"$d/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
EOF
    # sshd refuses to start without its privilege separation directory.
    [ $IS_ROOT = 1 ] && mkdir -p /run/sshd
    /usr/sbin/sshd -D -e -f "$d/sshd_config" 2>"$d/sshd.log" &
    SSHD_PID=$!
    PIDS+=("$SSHD_PID")
    wait_for 10 ss -Htln "sport = :$SSH_PORT" && return 0
    log "sshd did not start: $(tail -3 "$d/sshd.log")"
    return 1
}

# chord_peer NAME [args...]: a --peer-only peer; sets PEER_PORT. Not to be
# run in a subshell: PIDS must see the pid.
chord_peer() {
    local name=$1
    shift
    PEER_PORT=$(free_port)
    mkdir -p "$W/$name.data"
    "$BIN/chordfs" --peer-only -f --listen "127.0.0.1:$PEER_PORT" \
        --data-dir "$W/$name.data" "$@" >"$W/$name.log" 2>&1 &
    PIDS+=("$!")
    wait_for 20 "$BIN/chordctl" --peer "127.0.0.1:$PEER_PORT" info id
}

ring_size() {
    "$BIN/chordctl" --peer "127.0.0.1:$1" ring | grep -c '127.0.0.1:'
}
ring_is() { [ "$(ring_size "$1")" = "$2" ]; }

target_up() {
    local t=$1 m=$2 back=$W/back-$1
    mkdir -p "$m" "$back"
    MOUNTS+=("$m")
    case $t in
    tmpfs)
        if [ $IS_ROOT = 1 ]; then
            mount -t tmpfs -o size=$((MB * 2 + 2048))m "bench-tmpfs" "$m"
        else
            log "tmpfs: not root, using a directory under /dev/shm"
            rmdir "$m" && mkdir -p /dev/shm/"$(basename "$W")" &&
                ln -s /dev/shm/"$(basename "$W")" "$m"
        fi
        ;;
    passthrough_ll)
        build_passthrough || { log "cannot build passthrough_ll"; return 1; }
        "$BIN/bench/passthrough_ll" -f -o source="$back" "$m" \
            >"$W/$t.log" 2>&1 &
        TPID[$t]=$!
        PIDS+=("$!")
        wait_for 10 mountpoint -q "$m"
        ;;
    sshfs)
        [ -n "${SSHD_PID:-}" ] || sshd_up || return 1
        # A freshly started sshd sometimes drops the first session: retry.
        local try
        for try in 1 2 3; do
            sshfs -f -p "$SSH_PORT" -o IdentityFile="$W/ssh/id" \
                -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                -o LogLevel=ERROR "$(id -un)@127.0.0.1:$back" "$m" \
                >"$W/$t.log" 2>&1 </dev/null &
            TPID[$t]=$!
            PIDS+=("$!")
            wait_for 20 mountpoint -q "$m" && return 0
            log "sshfs mount attempt $try failed: $(tail -2 "$W/$t.log")"
            kill "${TPID[$t]}" 2>/dev/null
            fusermount3 -u -z "$m" 2>/dev/null
            sleep 1
        done
        return 1
        ;;
    chordfs-1)
        [ -x "$BIN/chordfs" ] || { log "$BIN/chordfs not built"; return 1; }
        CH1_PORT=${CH1_PORT:-$(free_port)}
        mkdir -p "$back"
        "$BIN/chordfs" -f --listen "127.0.0.1:$CH1_PORT" --data-dir "$back" \
            --replicas 1 "$m" >>"$W/$t.log" 2>&1 &
        TPID[$t]=$!
        PIDS+=("$!")
        wait_for 30 mountpoint -q "$m"
        ;;
    chordfs-3)
        [ -x "$BIN/chordfs" ] || { log "$BIN/chordfs not built"; return 1; }
        if [ -z "${CH3_P1:-}" ]; then
            chord_peer ch3-p1 --replicas 3 || return 1
            CH3_P1=$PEER_PORT
            chord_peer ch3-p2 --replicas 3 \
                --bootstrap "127.0.0.1:$CH3_P1" || return 1
            CH3_PORT=$(free_port)
        fi
        "$BIN/chordfs" -f --listen "127.0.0.1:$CH3_PORT" --data-dir "$back" \
            --replicas 3 --bootstrap "127.0.0.1:$CH3_P1" "$m" \
            >>"$W/$t.log" 2>&1 &
        TPID[$t]=$!
        PIDS+=("$!")
        wait_for 30 mountpoint -q "$m" && wait_for 30 ring_is "$CH3_P1" 3
        ;;
    esac
}

# Unmount; FUSE processes end when unmounted (bounded wait, then killed).
target_down() {
    local t=$1 m=$2
    case $t in
    tmpfs)
        [ -L "$m" ] && return 0
        umount "$m"
        ;;
    *)
        fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m"
        if [ -n "${TPID[$t]:-}" ]; then
            wait_for 30 bash -c "! kill -0 ${TPID[$t]} 2>/dev/null" ||
                kill -KILL "${TPID[$t]}" 2>/dev/null
            TPID[$t]=
        fi
        ;;
    esac
}

# Remount so that no cache of the target's process survives (tmpfs has no
# such cache: its pages are the data).
remount() {
    [ "$1" = tmpfs ] && return 0
    target_down "$1" "$2" && target_up "$1" "$2"
}

# -------------------------------------------------------------- workloads
declare -A SECS   # "workload target" -> seconds, or FAIL / TIMEOUT / skip
declare -A NOTE   # "workload target" -> BAD when the result was wrong
declare -A BYTES  # workload -> bytes moved (for MiB/s)

# timed KEY CMD...: run CMD under timeout; record its seconds in SECS[KEY].
timed() {
    local key=$1 t0 t1 rc
    shift
    t0=$(date +%s.%N)
    echo "== $key: $*" >>"$W/steps.log"
    timeout --kill-after=10 "$STEP_TIMEOUT" "$@" >/dev/null 2>>"$W/steps.log"
    rc=$?
    t1=$(date +%s.%N)
    if [ $rc = 0 ]; then
        SECS[$key]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    elif [ $rc = 124 ] || [ $rc = 137 ]; then
        SECS[$key]=TIMEOUT
        FAILED=1
    else
        SECS[$key]=FAIL
        FAILED=1
    fi
    [ $rc = 0 ]
}

# check KEY CMD...: after a timed step, CMD must hold, else the step is BAD.
check() {
    local key=$1
    shift
    case ${SECS[$key]:-} in FAIL | TIMEOUT) return 0 ;; esac
    if ! timeout 300 "$@" 2>/dev/null; then
        log "$key: result wrong ($*)"
        NOTE[$key]=BAD
        FAILED=1
    fi
}

# Shell functions run by timed through "bash -c": exported.
create_tree() {
    local m=$1 files=$2 dirs=$3 blk i d
    blk=$(head -c 4096 /dev/zero | tr '\0' x)
    for d in $(seq 0 $((dirs - 1))); do mkdir -p "$m/tree/d$d" || return 1; done
    # printf with a redirection is a builtin: no fork per file.
    for ((i = 0; i < files; i++)); do
        printf '%s' "$blk" >"$m/tree/d$((i % dirs))/f$i" || return 1
    done
}
export -f create_tree

run_target() {
    local t=$1 m=$W/mnt-$1
    if ! target_up "$t" "$m"; then
        log "$t: could not be mounted; skipped"
        for w in $WORKLOADS; do SECS["$w $t"]=skip; done
        [ "${t%%-*}" = chordfs ] && FAILED=1
        return 0
    fi
    log "$t: mounted at $m"

    timed "seq-write $t" dd if=/dev/zero of="$m/big" bs=1M count="$MB" \
        conv=fsync status=none
    check "seq-write $t" test "$(stat -c %s "$m/big")" = $((MB * 1048576))
    if remount "$t" "$m" && drop_caches; then
        # dd's own count proves every byte came back.
        timed "cold-read $t" bash -c 'dd if="$1" of=/dev/null bs=1M 2>&1 |
            grep -q "^$2 bytes"' _ "$m/big" $((MB * 1048576))
    else
        SECS["cold-read $t"]=FAIL
        FAILED=1
    fi
    rm -f "$m/big"

    timed "create $t" bash -c 'create_tree "$@"' _ "$m" "$FILES" "$DIRS"
    check "create $t" test "$(find "$m/tree" -type f | wc -l)" = "$FILES"
    drop_caches
    timed "ls-lR $t" ls -lR "$m/tree"
    drop_caches
    timed "read-all $t" bash -c 'cd "$1" && find . -type f -exec cat {} + |
        wc -c | grep -qx "$2"' _ "$m/tree" $((FILES * 4096))
    timed "rm-rf $t" rm -rf "$m/tree"
    check "rm-rf $t" test ! -e "$m/tree"

    mkdir -p "$m/src"
    # No chown and no utime: sshfs cannot set them on symlinks (SFTP has
    # no lsetstat), and the comparison must be the same work everywhere.
    timed "tar-x $t" tar -C "$m/src" --no-same-owner -m -xf "$TARBALL"
    check "tar-x $t" test "$(find "$m/src" ! -type d | wc -l)" = "$TAR_FILES"
    timeout 300 rm -rf "$m/src"

    target_down "$t" "$m"
}

# ------------------------------------------------------------------- main
TARBALL=${BENCH_TAR:-}
if [ -z "$TARBALL" ]; then
    TARBALL=$W/src.tar
    if [ "$SCALE" = small ]; then
        tar -C /usr/include -cf "$TARBALL" linux
    else
        tar -C /usr -cf "$TARBALL" include
    fi
fi
TAR_BYTES=$(stat -c %s "$TARBALL")
TAR_FILES=$(tar -tf "$TARBALL" | grep -vc '/$')

BYTES[seq-write]=$((MB * 1048576))
BYTES[cold-read]=$((MB * 1048576))
BYTES[create]=$((FILES * 4096))
BYTES[read-all]=$((FILES * 4096))
BYTES[tar-x]=$TAR_BYTES

for t in $TARGETS; do
    run_target "$t"
done

# ------------------------------------------------------------------ table
mkdir -p "$ROOT/bench/out"
TSV=$ROOT/bench/out/fs-$(date -u +%Y%m%dT%H%M%SZ).tsv
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a + 0 > 0 && b + 0 > 0 && a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/)
            printf "%.2fx", a / b; else printf "-" }'
}
mibs() {
    awk -v s="$1" -v n="$2" 'BEGIN {
        if (n > 0 && s ~ /^[0-9.]+$/ && s > 0) printf "%.1f", n / 1048576 / s;
        else printf "-" }'
}

echo
echo "bench/fs.sh: scale=$SCALE: seq $MB MiB; $FILES files of 4 KiB in $DIRS dirs;" \
    "tar $((TAR_BYTES / 1048576)) MiB, $TAR_FILES files ($(basename "$TARBALL"))"
[ $IS_ROOT = 1 ] || echo "(not root: no tmpfs mount, caches not dropped: reads are warm)"
echo "ratios are seconds / seconds of the baseline: 2.00x takes twice as long"
printf '%-10s %-15s %10s %10s %10s %12s %s\n' workload target seconds MiB/s \
    vs_sshfs vs_passthru note
printf 'workload\ttarget\tseconds\tmib_s\tvs_sshfs\tvs_passthrough_ll\tnote\n' \
    >"$TSV"
for w in $WORKLOADS; do
    for t in $TARGETS; do
        s=${SECS["$w $t"]:-skip}
        n=${NOTE["$w $t"]:-}
        r1=$(ratio "$s" "${SECS["$w sshfs"]:-}")
        r2=$(ratio "$s" "${SECS["$w passthrough_ll"]:-}")
        mb=$(mibs "$s" "${BYTES[$w]:-0}")
        printf '%-10s %-15s %10s %10s %10s %12s %s\n' "$w" "$t" "$s" "$mb" \
            "$r1" "$r2" "$n"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$t" "$s" "$mb" "$r1" \
            "$r2" "$n" >>"$TSV"
    done
done
echo "(table kept in ${TSV#"$ROOT"/})"
if [ $FAILED = 1 ]; then
    echo "bench/fs.sh: some steps failed or timed out; logs:" >&2
    for f in "$W"/*.log; do
        [ -s "$f" ] && { echo "== $f" >&2; tail -8 "$f" >&2; }
    done
fi
exit $FAILED
