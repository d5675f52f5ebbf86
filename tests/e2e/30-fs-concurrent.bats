#!/usr/bin/env bats
# Behaviour: two mounts (of a ring of three) working in one directory at the
# same time lose nothing: a directory's entries are a set in the ring, so
# 2 x 100 files created at once through different mounts all survive and
# every mount lists all 200; concurrent attribute updates of one file from
# two mounts (compare-and-set on the inode record) both land; and a file
# written and closed on one mount is seen whole on another at its next
# open (close-to-open).

load helpers

setup() {
    [ -x "$BIN/chordfs" ] || skip "no build"
    start_fs_ring 3
}

teardown() {
    cleanup_all
}

@test "two mounts create files in one directory at once: all survive" {
    mkdir "$MNT1/shared"
    (for i in $(seq 1 100); do echo "a$i" >"$MNT1/shared/a$i"; done) &
    p1=$!
    (for i in $(seq 1 100); do echo "b$i" >"$MNT2/shared/b$i"; done) &
    p2=$!
    wait $p1
    wait $p2
    for m in "$MNT1" "$MNT2" "$MNT3"; do
        run sh -c "ls '$m/shared' | wc -l"
        assert_output 200
    done
    run cat "$MNT3/shared/a57" "$MNT3/shared/b99"
    assert_output $'a57\nb99'
}

@test "concurrent xattr updates of one file from two mounts both land" {
    echo x >"$MNT1/f"
    (for i in $(seq 1 30); do setfattr -n "user.a$i" -v 1 "$MNT1/f"; done) &
    p1=$!
    (for i in $(seq 1 30); do setfattr -n "user.b$i" -v 2 "$MNT2/f"; done) &
    p2=$!
    wait $p1
    wait $p2
    run sh -c "getfattr --absolute-names -d '$MNT3/f' | grep -c '^user\\.[ab]'"
    assert_output 60
}

@test "close-to-open: a file closed on one mount is whole on the next open" {
    for i in 1 2 3 4 5; do
        head -c $((i * 300000)) /dev/urandom >"$BATS_TEST_TMPDIR/v$i"
        cp "$BATS_TEST_TMPDIR/v$i" "$MNT1/v"
        cmp "$MNT2/v" "$BATS_TEST_TMPDIR/v$i"
        cmp "$MNT3/v" "$BATS_TEST_TMPDIR/v$i"
    done
}
