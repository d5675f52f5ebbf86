#!/usr/bin/env bats
# Behaviour: whole trees and metadata on a ring of three peers with a mount
# each:
#  - a tar round trip of a tree (files of many sizes, empty files, deep
#    directories, symlinks, modes and mtimes) gives equal listings and
#    checksums when extracted into one mount and read from another, and
#    when tarred back out and extracted locally;
#  - find walks the tree with the same result on every mount;
#  - setfattr/getfattr keep user.* attributes in the inode record, seen on
#    every mount; user.chord.key/primary/replicas tell where a file lives
#    (primary and replicas are peers of the ring) and cannot be set or
#    removed; other namespaces are not supported.

load helpers

setup() {
    [ -x "$BIN/chordfs" ] || skip "no build"
    start_fs_ring 3
}

teardown() {
    cleanup_all
}

# make_tree DIR: a small tree with a bit of everything.
make_tree() {
    local d=$1 i
    mkdir -p "$d/a/b/c" "$d/empty" "$d/x y"
    for i in $(seq 1 20); do
        head -c $((i * 7919)) /dev/urandom >"$d/a/f$i"
    done
    head -c 1500000 /dev/urandom >"$d/a/b/big"
    : >"$d/a/b/c/zero"
    echo "spaces" >"$d/x y/file name"
    ln -s ../a/f1 "$d/empty/../x y/link"
    chmod 700 "$d/a/b"
    chmod 604 "$d/a/f2"
    touch -d "2019-05-06 07:08:09" "$d/a/f3"
}

# listing DIR: path, type, mode, size, mtime (not for dirs) and checksum.
listing() {
    (cd "$1" && find . -path ./.chord -prune -o -print | LC_ALL=C sort |
        while read -r p; do
            if [ -L "$p" ]; then
                echo "$p L $(readlink "$p")"
            elif [ -d "$p" ]; then
                echo "$p D $(stat -c %a "$p")"
            else
                echo "$p F $(stat -c '%a %s %Y' "$p") $(sha1sum <"$p")"
            fi
        done)
}

@test "tar round trip: equal listings and checksums" {
    src=$BATS_TEST_TMPDIR/src
    make_tree "$src"
    tar -C "$src" -cf "$BATS_TEST_TMPDIR/t.tar" .
    mkdir "$MNT1/t"
    tar -C "$MNT1/t" -xpf "$BATS_TEST_TMPDIR/t.tar"
    want=$(listing "$src")
    [ "$(listing "$MNT2/t")" = "$want" ]
    # and back out through a third mount
    mkdir "$BATS_TEST_TMPDIR/back"
    tar -C "$MNT3/t" -cf - . | tar -C "$BATS_TEST_TMPDIR/back" -xpf -
    [ "$(listing "$BATS_TEST_TMPDIR/back")" = "$want" ]
}

@test "find gives the same tree on every mount" {
    make_tree "$MNT1/tree"
    want=$(cd "$MNT1" && find tree | LC_ALL=C sort)
    [ "$(echo "$want" | wc -l)" -eq 30 ]
    for m in "$MNT2" "$MNT3"; do
        [ "$(cd "$m" && find tree | LC_ALL=C sort)" = "$want" ]
    done
    run sh -c "cd '$MNT3' && find tree -type l"
    assert_output "tree/x y/link"
    run sh -c "cd '$MNT2' && find tree -type f -size +1000k"
    assert_output "tree/a/b/big"
}

# three_replicas FILE: user.chord.replicas of FILE names three peers.
three_replicas() {
    [ "$(getfattr --absolute-names --only-values -n user.chord.replicas \
        "$1" | tr ',' '\n' | grep -c .)" -eq 3 ]
}

@test "setfattr/getfattr: user attributes and where a file lives" {
    echo data >"$MNT1/f"
    setfattr -n user.color -v blue "$MNT1/f"
    setfattr -n user.empty "$MNT1/f"
    run getfattr --absolute-names --only-values -n user.color "$MNT2/f"
    assert_output blue
    run getfattr --absolute-names -d "$MNT3/f"
    assert_output --partial 'user.color="blue"'
    assert_output --partial 'user.chord.key="meta:/f"'
    setfattr -x user.color "$MNT2/f"
    run getfattr --absolute-names -n user.color "$MNT3/f"
    assert_failure
    # placement: the primary and the replicas are peers of the ring
    ring=$(cat "$MNT1/.chord/ring")
    primary=$(getfattr --absolute-names --only-values \
        -n user.chord.primary "$MNT2/f")
    [[ "$ring" == *"$primary"* ]]
    # primary + 2 successors once the successor lists are complete
    wait_until 10 three_replicas "$MNT3/f"
    replicas=$(getfattr --absolute-names --only-values \
        -n user.chord.replicas "$MNT3/f")
    for r in ${replicas//,/ }; do
        [[ "$ring" == *"$r"* ]]
    done
    # read-only placement attributes, unsupported namespaces
    run setfattr -n user.chord.primary -v x "$MNT1/f"
    assert_failure
    assert_output --partial "Operation not permitted"
    run setfattr -x user.chord.key "$MNT1/f"
    assert_failure
    run setfattr -n trusted.x -v y "$MNT1/f"
    assert_failure
    # an attribute on a directory
    mkdir "$MNT1/d"
    setfattr -n user.k -v v "$MNT1/d"
    run getfattr --absolute-names --only-values -n user.k "$MNT3/d"
    assert_output v
}
