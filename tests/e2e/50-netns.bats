#!/usr/bin/env bats
# Three hosts in network namespaces, one `chordfs --peer-only` each, joined
# through the first over a private bridge (10.213.N.0/24, N random). Data put
# through one host is read through the other two; after one host's link is
# cut (ip link set down), the two left still serve every key (replicas 3).
#
# Topology, all inside namespaces this file creates (the root namespace gets
# no interface and no route):
#   cfs-sw-<sfx>: bridge br0 with ports p1 p2 p3
#   cfs-h<i>-<sfx>: eth0 = 10.213.N.<i>/24, veth peer of p<i>
# Needs root (ip netns add); skipped with the reason when that is refused.

load helpers

NHOSTS=3
CPORT=4000

setup() {
    SFX="$$$RANDOM"
    NET="10.213.$((1 + RANDOM % 254))"
    SW="cfs-sw-$SFX"
    echo "$SW" >>"$STATE/netns"
    if ! out=$(ip netns add "$SW" 2>&1); then
        skip "ip netns add not permitted here: $out"
    fi
    ip -n "$SW" link set lo up
    ip -n "$SW" link add br0 type bridge
    ip -n "$SW" link set br0 up
    for i in $(seq 1 $NHOSTS); do
        local h="cfs-h$i-$SFX"
        echo "$h" >>"$STATE/netns"
        ip netns add "$h"
        ip -n "$h" link set lo up
        # Create the pair inside the host namespace, then move one end to
        # the switch: nothing ever lives in the root namespace.
        ip -n "$h" link add eth0 type veth peer name "p$i"
        ip -n "$h" link set "p$i" netns "$SW"
        ip -n "$SW" link set "p$i" master br0
        ip -n "$SW" link set "p$i" up
        ip -n "$h" addr add "$NET.$i/24" dev eth0
        ip -n "$h" link set eth0 up
    done
}

teardown() {
    cleanup_all
    local ns
    if [ -f "$STATE/netns" ]; then
        while read -r ns; do
            ip netns del "$ns" 2>/dev/null || true
        done <"$STATE/netns"
        rm -f "$STATE/netns"
    fi
}

host() { echo "cfs-h$1-$SFX"; }
haddr() { echo "$NET.$1:$CPORT"; }

# hctl I ARGS...: chordctl run inside host I's namespace against its peer.
hctl() {
    local i=$1
    shift
    ip netns exec "$(host "$i")" "$BIN/chordctl" --peer "$(haddr "$i")" "$@"
}

# start_host I [args]: chordfs --peer-only in host I's namespace.
start_host() {
    local i=$1
    shift
    mkdir -p "$STATE/h$i.data"
    # ip netns exec execs the command, so $! is chordfs itself.
    ip netns exec "$(host "$i")" "$BIN/chordfs" --peer-only -f \
        --listen "$(haddr "$i")" --data-dir "$STATE/h$i.data" \
        --replicas 3 --timeout 3000 "$@" >"$STATE/h$i.log" 2>&1 &
    echo $! >>"$STATE/pids"
    echo $! >"$STATE/h$i.pid"
    wait_until 20 hctl "$i" info id
}

# ring_has I N: host I's ring walk lists N peers, each host's address once.
ring_has() {
    local out
    out=$(hctl "$1" ring) || return 1
    for j in $(seq 1 "$2"); do
        grep -q "$(haddr "$j")" <<<"$out" || return 1
    done
}

start_ring() {
    start_host 1
    for i in $(seq 2 $NHOSTS); do
        start_host "$i" --bootstrap "$(haddr 1)"
    done
    for i in $(seq 1 $NHOSTS); do
        wait_until 30 ring_has "$i" $NHOSTS
    done
}

# all_keys_via I N: every key k0..k(N-1) reads back right through host I.
all_keys_via() {
    local i=$1 n=$2 v
    for k in $(seq 0 $((n - 1))); do
        v=$(hctl "$i" get "netns-key-$k") || return 1
        [ "$v" = "value-$k-$SFX" ] || return 1
    done
}

@test "hosts in separate namespaces reach each other only through the bridge" {
    # The namespaces are real: host 1 cannot see host 2's address locally,
    # yet reaches it over eth0.
    run ip -n "$(host 1)" -br addr show
    refute_output --partial "$NET.2/"
    run ip -n "$(host 1)" route get "$NET.2"
    assert_output --partial "dev eth0"
    # A TCP connect to a closed port of host 2 is refused by host 2's
    # kernel: the packet went over the bridge and back (no ping needed).
    run ip netns exec "$(host 1)" timeout 5 bash -c "exec 3<>/dev/tcp/$NET.2/9"
    assert_failure
    assert_output --partial "Connection refused"
    # Once host 2's link is down, the same connect gets no answer.
    ip -n "$(host 2)" link set eth0 down
    run ip netns exec "$(host 1)" timeout 5 bash -c "exec 3<>/dev/tcp/$NET.2/9"
    assert_failure
    refute_output --partial "Connection refused"
}

@test "a key put through one host is read through the others" {
    start_ring
    for k in $(seq 0 19); do
        hctl 1 put "netns-key-$k" "value-$k-$SFX"
    done
    all_keys_via 2 20
    all_keys_via 3 20
    # And the other way round: written on host 3, read on host 1.
    hctl 3 put netns-late "late-$SFX"
    run hctl 1 get netns-late
    assert_success
    assert_output "late-$SFX"
}

@test "with one host's link cut the others still serve every key" {
    start_ring
    for k in $(seq 0 29); do
        hctl 2 put "netns-key-$k" "value-$k-$SFX"
    done
    all_keys_via 1 30

    # Cut host 3 off: its eth0 goes down, the process stays alive.
    ip -n "$(host 3)" link set eth0 down
    kill -0 "$(cat "$STATE/h3.pid")"

    # Hosts 1 and 2 notice (bounded) and serve every key from replicas.
    wait_until 60 all_keys_via 1 30
    wait_until 60 all_keys_via 2 30
    # The ring they walk now is the two of them.
    wait_until 60 bash -c "! ip netns exec $(host 1) $BIN/chordctl \
        --peer $(haddr 1) ring | grep -q $(haddr 3)"
    # Writes still work on the surviving pair.
    hctl 1 put netns-after "after-$SFX"
    run hctl 2 get netns-after
    assert_success
    assert_output "after-$SFX"
}
