#!/usr/bin/env bats
# Behaviour: chordfs --peer-only processes on 127.0.0.1 form one ring that
# chordctl can use through any peer. Data written through one peer is read
# through every other; kill -9 of two of five peers loses nothing (replicas
# 3); a killed peer restarted with its data dir rejoins the ring and serves
# its keys again (replicas 1, so they can only come from its own store); a
# graceful `chordctl leave` hands its keys on (replicas 1, so without the
# hand-off they would be gone); a daemonized chordfs returns only once it is
# ready (with a mount: once the mount is live), and a mounted peer asked to
# leave unmounts and exits; a peer or client of another network name is
# refused with a clear
# message and a non-zero exit; wrong chordctl usage exits non-zero.

load helpers

setup() {
    [ -x "$BIN/chordfs" ] && [ -x "$BIN/chordctl" ]
}

teardown() {
    cleanup_all
}

# ring_is NAME N: NAME's ring listing names exactly N peers.
ring_is() {
    [ "$(ctl "$1" ring 2>/dev/null | grep -c .)" -eq "$2" ]
}

# lookup_replicas NAME KEY N: NAME's lookup of KEY names N replicas.
lookup_replicas() {
    [ "$(ctl "$1" lookup "$2" 2>/dev/null | grep -c '^replica ')" -eq "$3" ]
}

# start_ring N [chordfs args...]: peers p0..p(N-1), all joined through p0;
# waits until every peer sees all N in its ring listing.
start_ring() {
    local n=$1 i
    shift
    start_peer p0 "$@"
    for ((i = 1; i < n; i++)); do
        start_peer "p$i" --bootstrap "$(peer_addr p0)" "$@"
    done
    for ((i = 0; i < n; i++)); do
        wait_until 60 ring_is "p$i" "$n"
    done
}

# put_keys NAME COUNT: keys k0..k(COUNT-1) with values v0-...
put_keys() {
    local i
    for ((i = 0; i < $2; i++)); do
        ctl "$1" put "k$i" "v$i-$RANDOM$RANDOM" || return 1
        ctl "$1" get "k$i" >"$STATE/want.k$i" || return 1
    done
}

# all_keys_readable NAME COUNT: every key reads back its value through NAME.
all_keys_readable() {
    local i
    for ((i = 0; i < $2; i++)); do
        [ "$(ctl "$1" get "k$i")" = "$(cat "$STATE/want.k$i")" ] || return 1
    done
}

# The PID of the process listening on PORT (for daemons we did not fork).
pid_on_port() {
    ss -Htlnp "sport = :$1" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1
}

@test "data written through one peer is read through every other" {
    start_ring 5
    ctl p0 put greeting "hello ring"
    for i in 1 2 3 4; do
        run ctl "p$i" get greeting
        assert_success
        assert_output "hello ring"
    done
    ctl p3 add set:a one
    ctl p4 add set:a two
    run ctl p1 members set:a
    assert_success
    assert_line one
    assert_line two
    ctl p2 delete greeting
    run ctl p4 get greeting
    assert_failure
    assert_output --partial "not found"
    # The ring listing is the same everywhere.
    run ctl p0 ring
    for i in 0 1 2 3 4; do
        assert_output --partial "$(peer_addr "p$i")"
    done
}

@test "chordctl lookup names the primary and the replicas of a key" {
    start_ring 3
    ctl p0 put somekey somevalue
    # The ring walk follows first successors; the primary's full successor
    # list (its replicas) may take a stabilize round more.
    wait_until 20 lookup_replicas p2 somekey 2
    run ctl p2 lookup somekey
    assert_success
    assert_line --regexp '^primary 127\.0\.0\.1:[0-9]+ [0-9a-f]{40}$'
    [ "$(echo "$output" | grep -c '^replica ')" -eq 2 ]
    # The primary holds the key in its store.
    primary=$(echo "$output" | awk '$1 == "primary" {print $2}')
    run "$BIN/chordctl" --peer "$primary" entries
    assert_output --partial somekey
}

@test "kill -9 of two of five peers loses nothing" {
    start_ring 5
    put_keys p0 50
    sleep 2 # let maintenance settle replication
    kill -KILL "$(peer_pid p1)" "$(peer_pid p3)"
    for p in p0 p2 p4; do
        wait_until 60 ring_is "$p" 3
    done
    for p in p0 p2 p4; do
        wait_until 60 all_keys_readable "$p" 50
    done
}

@test "a killed peer restarted with its data dir rejoins with its keys" {
    start_ring 5 --replicas 1
    put_keys p0 50
    run ctl p2 entries
    assert_success
    [ "$(echo "$output" | grep -c .)" -gt 0 ] # p2 holds some keys
    kill -KILL "$(peer_pid p2)"
    wait_until 60 ring_is p0 4
    restart_peer p2 --bootstrap "$(peer_addr p0)" --replicas 1
    for p in p0 p1 p2 p3 p4; do
        wait_until 60 ring_is "$p" 5
    done
    run ctl p0 ring
    assert_output --partial "$(peer_addr p2)"
    # With one copy per key, p2's keys can only come from its own store.
    wait_until 60 all_keys_readable p2 50
    wait_until 60 all_keys_readable p4 50
}

@test "a graceful leave hands its keys on" {
    start_ring 4 --replicas 1
    put_keys p0 40
    run ctl p1 entries
    assert_success
    [ "$(echo "$output" | grep -c .)" -gt 0 ] # p1 holds some keys
    pid=$(peer_pid p1)
    run ctl p1 leave
    assert_success
    wait_until 30 bash -c "! kill -0 $pid"
    for p in p0 p2 p3; do
        wait_until 60 ring_is "$p" 3
    done
    all_keys_readable p0 40
    all_keys_readable p3 40
}

@test "a daemonized peer returns when ready and exits on chordctl leave" {
    start_peer p0
    port=$(free_port)
    mkdir -p "$STATE/d.data"
    run "$BIN/chordfs" --peer-only --listen "127.0.0.1:$port" \
        --data-dir "$STATE/d.data" --bootstrap "$(peer_addr p0)" \
        --log "$STATE/d.log"
    pid=$(pid_on_port "$port")
    [ -n "$pid" ] && echo "$pid" >>"$STATE/pids"
    assert_success
    [ -n "$pid" ]
    # Ready means joined: it answers at once, no waiting.
    "$BIN/chordctl" --peer "127.0.0.1:$port" info id
    wait_until 60 ring_is p0 2
    "$BIN/chordctl" --peer "127.0.0.1:$port" leave
    wait_until 30 bash -c "! kill -0 $pid"
}

@test "a daemonized mount is live on return; chordctl leave unmounts it" {
    start_peer p0
    port=$(free_port)
    mnt=$STATE/mnt
    mkdir -p "$STATE/m.data" "$mnt"
    echo "$mnt" >>"$STATE/mounts"
    run "$BIN/chordfs" --listen "127.0.0.1:$port" --data-dir "$STATE/m.data" \
        --bootstrap "$(peer_addr p0)" --log "$STATE/m.log" "$mnt"
    pid=$(pid_on_port "$port")
    [ -n "$pid" ] && echo "$pid" >>"$STATE/pids"
    assert_success
    # No waiting: the mount is there when chordfs returns.
    mountpoint -q "$mnt"
    echo "through the mount" >"$mnt/file"
    [ "$(cat "$mnt/file")" = "through the mount" ]
    "$BIN/chordctl" --peer "127.0.0.1:$port" leave
    wait_until 30 bash -c "! kill -0 $pid"
    run mountpoint -q "$mnt"
    assert_failure
}

@test "a peer of another network is refused with a clear message" {
    start_peer p0 --network blue
    port=$(free_port)
    mkdir -p "$STATE/x.data"
    # Daemonized: the parent must report the refusal and fail.
    run timeout 60 "$BIN/chordfs" --peer-only --listen "127.0.0.1:$port" \
        --data-dir "$STATE/x.data" --network green \
        --bootstrap "$(peer_addr p0)" --log "$STATE/x.log"
    pid=$(pid_on_port "$port")
    [ -z "$pid" ] || echo "$pid" >>"$STATE/pids"
    assert_failure
    assert_output --partial "refused"
    assert_output --partial "green"
    assert_output --partial "blue"
    [ -z "$pid" ]
    # In the foreground, too.
    run timeout 60 "$BIN/chordfs" -f --peer-only --listen "127.0.0.1:$port" \
        --data-dir "$STATE/x.data" --network green \
        --bootstrap "$(peer_addr p0)"
    assert_failure
    assert_output --partial "refused us"
    # A client that names another network is refused as well.
    run ctl p0 --network green info id
    assert_failure
    assert_output --partial "refused"
    run ctl p0 --network blue info id
    assert_success
}

@test "wrong chordctl usage and failures exit non-zero with a message" {
    start_peer p0
    run "$BIN/chordctl" info id
    [ "$status" -eq 2 ]
    assert_output --partial "--peer"
    run ctl p0 frobnicate
    [ "$status" -eq 2 ]
    assert_output --partial "unknown command"
    run ctl p0 get
    [ "$status" -eq 2 ]
    run ctl p0 put onlykey
    [ "$status" -eq 2 ]
    run ctl p0 put k v --expect notanumber
    [ "$status" -eq 2 ]
    run ctl p0 get no-such-key
    [ "$status" -eq 1 ]
    assert_output --partial "not found"
    run ctl p0 info no-such-info
    [ "$status" -ne 0 ]
    ctl p0 put cas 1
    v=$(ctl p0 get cas --version)
    run ctl p0 put cas 2 --expect $((v + 100))
    [ "$status" -eq 1 ]
    assert_output --partial "version mismatch"
    run ctl p0 put cas 2 --expect "$v"
    assert_success
    port=$(free_port)
    run "$BIN/chordctl" --peer "127.0.0.1:$port" --timeout 2000 info id
    [ "$status" -eq 1 ]
    assert_output --partial "cannot reach"
    run "$BIN/chordfs" --peer-only --listen nonsense
    [ "$status" -ne 0 ]
    assert_output --partial "listen"
    run "$BIN/chordfs" --listen 127.0.0.1:1
    [ "$status" -ne 0 ]
    assert_output --partial "MOUNTPOINT"
}
