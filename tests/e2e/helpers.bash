# tests/e2e/helpers.bash - shared set-up for the end-to-end tests.
#
# Every test file sources this. Peers and mounts started through these
# functions are recorded and torn down by cleanup_all (call it from
# teardown), even when the test failed: processes are killed by PID, mounts
# are detached with fusermount3 -u -z. Nothing waits without a deadline.

BIN=${CHORDFS_BIN:-$BATS_TEST_DIRNAME/../../build}
: "${BATS_TEST_TMPDIR:=$(mktemp -d)}"
STATE=$BATS_TEST_TMPDIR/state
mkdir -p "$STATE"

if [ -d /usr/lib/bats/bats-support ]; then
    load /usr/lib/bats/bats-support/load
    load /usr/lib/bats/bats-assert/load
fi

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        if ! ss -Htan "sport = :$p or dport = :$p" | grep -q . &&
            ! grep -qx "$p" "$STATE/ports" 2>/dev/null; then
            echo "$p" >>"$STATE/ports"
            echo "$p"
            return 0
        fi
    done
    return 1
}

# wait_until SECONDS CMD...: poll CMD every 0.1 s until it succeeds.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    while ! "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge "$deadline" ]; then
            echo "timed out waiting for: $*" >&2
            return 1
        fi
        sleep 0.1
    done
}

# start_peer NAME [chordfs args...]: a --peer-only peer on a free port with
# data dir $STATE/NAME.data; sets PORT_<NAME>. Waits until it answers.
start_peer() {
    local name=$1
    shift
    local port
    port=$(free_port)
    mkdir -p "$STATE/$name.data"
    "$BIN/chordfs" --peer-only -f --listen "127.0.0.1:$port" \
        --data-dir "$STATE/$name.data" "$@" \
        >"$STATE/$name.log" 2>&1 &
    echo $! >"$STATE/$name.pid"
    echo $! >>"$STATE/pids"
    echo "$port" >"$STATE/$name.port"
    eval "PORT_$name=$port"
    wait_until 20 "$BIN/chordctl" --peer "127.0.0.1:$port" info id
}

# restart_peer NAME [args...]: start again on the same port and data dir.
restart_peer() {
    local name=$1
    shift
    local port
    port=$(cat "$STATE/$name.port")
    "$BIN/chordfs" --peer-only -f --listen "127.0.0.1:$port" \
        --data-dir "$STATE/$name.data" "$@" \
        >>"$STATE/$name.log" 2>&1 &
    echo $! >"$STATE/$name.pid"
    echo $! >>"$STATE/pids"
    wait_until 20 "$BIN/chordctl" --peer "127.0.0.1:$port" info id
}

peer_pid() { cat "$STATE/$1.pid"; }
peer_addr() { echo "127.0.0.1:$(cat "$STATE/$1.port")"; }
ctl() {
    local name=$1
    shift
    "$BIN/chordctl" --peer "$(peer_addr "$name")" "$@"
}

# start_mount NAME MOUNTPOINT [chordfs args...]: a peer with a FUSE mount
# (foreground process in the background); waits up to 20 s for the mount.
start_mount() {
    local name=$1 mnt=$2
    shift 2
    local port
    port=$(free_port)
    mkdir -p "$STATE/$name.data" "$mnt"
    echo "$mnt" >>"$STATE/mounts"
    "$BIN/chordfs" -f --listen "127.0.0.1:$port" \
        --data-dir "$STATE/$name.data" "$@" "$mnt" \
        >"$STATE/$name.log" 2>&1 &
    echo $! >"$STATE/$name.pid"
    echo $! >>"$STATE/pids"
    echo "$port" >"$STATE/$name.port"
    eval "PORT_$name=$port"
    wait_until 20 mountpoint -q "$mnt"
}

# Kill every process and detach every mount this test started.
cleanup_all() {
    local m p
    if [ -f "$STATE/mounts" ]; then
        while read -r m; do
            fusermount3 -u -z "$m" 2>/dev/null || true
        done <"$STATE/mounts"
    fi
    if [ -f "$STATE/pids" ]; then
        while read -r p; do
            kill -TERM "$p" 2>/dev/null || true
        done <"$STATE/pids"
        for _ in $(seq 1 30); do
            local alive=0
            while read -r p; do
                kill -0 "$p" 2>/dev/null && alive=1
            done <"$STATE/pids"
            [ $alive = 0 ] && break
            sleep 0.1
        done
        while read -r p; do
            kill -KILL "$p" 2>/dev/null || true
        done <"$STATE/pids"
    fi
    rm -f "$STATE/pids" "$STATE/mounts"
}

# fs_ring_is NAME N: NAME's mount lists exactly N peers in /.chord/ring.
fs_ring_is() {
    [ "$(grep -c . "$STATE/mnt_$1/.chord/ring" 2>/dev/null)" = "$2" ]
}

# start_fs_ring N [chordfs args...]: N peers fs1..fsN, each with its own
# FUSE mount $STATE/mnt_fsI (exported as MNT1..MNTN), all joined through
# fs1; waits (bounded) until every mount lists N peers in /.chord/ring.
start_fs_ring() {
    local n=$1 i
    shift
    start_mount fs1 "$STATE/mnt_fs1" "$@" || return 1
    MNT1=$STATE/mnt_fs1
    for ((i = 2; i <= n; i++)); do
        start_mount "fs$i" "$STATE/mnt_fs$i" --bootstrap "$(peer_addr fs1)" \
            "$@" || return 1
        eval "MNT$i=\$STATE/mnt_fs$i"
    done
    for ((i = 1; i <= n; i++)); do
        if ! wait_until 30 fs_ring_is "fs$i" "$n"; then
            for ((i = 1; i <= n; i++)); do
                echo "fs$i $(peer_addr "fs$i"): ring [$(tr '\n' ' ' \
                    <"$STATE/mnt_fs$i/.chord/ring")] succ [$(tr '\n' ' ' \
                    <"$STATE/mnt_fs$i/.chord/successors")]" >&2
            done
            return 1
        fi
    done
}
