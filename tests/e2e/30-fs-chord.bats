#!/usr/bin/env bats
# Behaviour: /.chord on every mount of a ring of three is a read-only view
# of that mount's peer, generated when a file is opened: `cat` reads whole
# files (id, address, network, predecessor, successor, successors, fingers,
# keys, stats, ring, config); the files of different mounts agree with each
# other (each peer's successor is the next peer of `ring`, its predecessor
# the previous one, every mount's ring lists the same peers); writing,
# creating or removing anything there fails (EACCES); nothing of it is
# stored in the ring.

load helpers

setup() {
    [ -x "$BIN/chordfs" ] || skip "no build"
    start_fs_ring 3
}

teardown() {
    cleanup_all
}

@test "every /.chord file reads with cat" {
    run ls "$MNT1/.chord"
    assert_success
    for f in id address network predecessor successor successors fingers \
        keys stats ring config; do
        run cat "$MNT2/.chord/$f"
        assert_success
        [ -n "$output" ]
    done
    run cat "$MNT1/.chord/address"
    assert_output --partial "$(peer_addr fs1)"
    run cat "$MNT3/.chord/network"
    assert_output --partial chordfs
}

@test "the /.chord files of the mounts agree with each other" {
    # ids and addresses in ring order, as mount 1 sees them
    mapfile -t ring <"$MNT1/.chord/ring"
    [ "${#ring[@]}" -eq 3 ]
    for i in 1 2 3; do
        m=$STATE/mnt_fs$i
        id=$(head -c 40 "$m/.chord/id")
        addr=$(peer_addr "fs$i")
        # the same peers in every mount's ring, in the same cyclic order
        [ "$(sort "$m/.chord/ring")" = "$(printf '%s\n' "${ring[@]}" | sort)" ]
        # find this peer in mount 1's ring; its successor is the next one
        for k in 0 1 2; do
            if [[ "${ring[$k]}" == "$id"* ]]; then
                next=${ring[$(((k + 1) % 3))]}
                prev=${ring[$(((k + 2) % 3))]}
            fi
        done
        [ -n "$next" ]
        run cat "$m/.chord/successor"
        assert_output --partial "${next%% *}"
        run cat "$m/.chord/predecessor"
        assert_output --partial "${prev%% *}"
        run cat "$m/.chord/address"
        assert_output --partial "$addr"
        next=
    done
}

@test "writing into /.chord fails" {
    run sh -c "echo x >'$MNT1/.chord/id'"
    assert_failure
    run sh -c "echo x >'$MNT1/.chord/new'"
    assert_failure
    run mkdir "$MNT1/.chord/d"
    assert_failure
    run rm -f "$MNT1/.chord/id"
    assert_failure
    run truncate -s 0 "$MNT1/.chord/stats"
    assert_failure
    run mv "$MNT1/.chord/id" "$MNT1/id"
    assert_failure
    run cat "$MNT1/.chord/id"
    assert_success
    [ -n "$output" ]
    # nothing under /.chord is a key of the ring
    run cat "$MNT2/.chord/keys"
    refute_output --partial ".chord"
}
