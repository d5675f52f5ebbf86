#!/usr/bin/env bats
# Behaviour: when the other peers of the ring die (kill -9), operations on
# the surviving mount never hang: with --timeout 3000 each one either
# succeeds (the survivor holds replicas and repairs the ring) or fails with
# EIO or ETIMEDOUT within a few timeouts, never reaching the 30 s guard of
# `timeout 30`; /.chord keeps answering throughout; and the mount still
# unmounts cleanly afterwards.

load helpers

setup() {
    [ -x "$BIN/chordfs" ] || skip "no build"
    start_fs_ring 3 --timeout 3000
}

teardown() {
    cleanup_all
}

# bounded NAME CMD...: run CMD under `timeout 30`; it must end within 15 s
# (not killed by the guard) and, if it failed, say EIO or ETIMEDOUT.
bounded() {
    local t0=$SECONDS
    run timeout 30 "$@"
    echo "# $* -> status $status after $((SECONDS - t0)) s: ${output%%$'\n'*}" >&3
    [ "$status" -ne 124 ]
    [ $((SECONDS - t0)) -le 15 ]
    if [ "$status" -ne 0 ]; then
        [[ "$output" == *"Input/output error"* ||
            "$output" == *"timed out"* ]]
    fi
}

@test "with the other peers killed, operations end within the timeout" {
    mkdir "$MNT1/d"
    for i in $(seq 1 20); do echo "file $i" >"$MNT1/d/f$i"; done
    kill -9 "$(peer_pid fs2)" "$(peer_pid fs3)"
    bounded ls -l "$MNT1/d"
    bounded cat "$MNT1/d/f7"
    bounded sh -c "echo new >'$MNT1/d/new'"
    bounded mkdir "$MNT1/d2"
    bounded stat "$MNT1/d/f3"
    bounded rm -f "$MNT1/d/f4"
    # /.chord answers at once
    t0=$SECONDS
    run timeout 10 cat "$MNT1/.chord/id"
    assert_success
    run timeout 10 cat "$MNT1/.chord/successors"
    assert_success
    [ $((SECONDS - t0)) -le 3 ]
    # and the mount goes away cleanly
    fusermount3 -u "$MNT1"
    wait_until 10 sh -c "! kill -0 $(peer_pid fs1) 2>/dev/null"
}
