#!/usr/bin/env bats
# Behaviour: on a ring of three peers, each with its own FUSE mount, the
# shared tree behaves like a POSIX file system through ordinary tools:
#  - a file written with echo on one mount reads back with cat on every
#    mount (close-to-open), and appends are seen too;
#  - mkdir -p builds deep trees; rmdir of a non-empty directory fails
#    (ENOTEMPTY); rm -rf removes whole trees;
#  - mv renames files and directories across directories and over existing
#    targets (the target's old content is gone, the tree under a moved
#    directory moves with it); mv -n never replaces;
#  - renameat2: RENAME_NOREPLACE gives EEXIST, RENAME_EXCHANGE EINVAL;
#  - ln -s / readlink; hard links and fifos are refused (EPERM);
#  - chmod, touch -d and stat agree on every mount; a directory's mtime
#    moves when an entry is added;
#  - a 256-byte name gives ENAMETOOLONG, a 255-byte one works.
# Other mounts may see a removed name for up to the entry timeout (1 s by
# default), so checks for absence on another mount wait up to 3 s.

load helpers

setup() {
    [ -x "$BIN/chordfs" ] || skip "no build"
    start_fs_ring 3
}

teardown() {
    cleanup_all
}

@test "echo/cat through every mount, appends, overwrite" {
    echo "hello chord" >"$MNT1/hello.txt"
    for m in "$MNT1" "$MNT2" "$MNT3"; do
        run cat "$m/hello.txt"
        assert_success
        assert_output "hello chord"
    done
    echo "second line" >>"$MNT2/hello.txt"
    run cat "$MNT3/hello.txt"
    assert_output $'hello chord\nsecond line'
    echo "new" >"$MNT3/hello.txt"
    run cat "$MNT1/hello.txt"
    assert_output "new"
    run stat -c %s "$MNT2/hello.txt"
    assert_output 4
}

@test "mkdir -p of a deep tree, rmdir ENOTEMPTY, rm -rf" {
    deep=a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p
    mkdir -p "$MNT1/$deep"
    echo leaf >"$MNT1/$deep/leaf"
    [ -d "$MNT2/$deep" ]
    run cat "$MNT3/$deep/leaf"
    assert_output leaf
    run rmdir "$MNT2/a/b/c"
    assert_failure
    assert_output --partial "Directory not empty"
    mkdir -p "$MNT2/a/x/y" "$MNT2/a/x/z"
    touch "$MNT2/a/x/y/f1" "$MNT2/a/x/z/f2"
    rm -rf "$MNT3/a"
    # other mounts may keep a name for the entry timeout (1 s) at most
    wait_until 3 test ! -e "$MNT1/a"
    run ls -A "$MNT2"
    assert_output ".chord"
}

@test "mv of files and directories across directories and over targets" {
    mkdir -p "$MNT1/src/sub" "$MNT1/dst"
    echo one >"$MNT1/src/f"
    echo two >"$MNT1/src/sub/g"
    echo old >"$MNT1/dst/f"
    # a file over an existing target in another directory
    mv "$MNT2/src/f" "$MNT2/dst/f"
    run cat "$MNT3/dst/f"
    assert_output one
    wait_until 3 test ! -e "$MNT1/src/f"
    # a directory with content into another directory
    mv "$MNT2/src/sub" "$MNT2/dst/moved"
    run cat "$MNT3/dst/moved/g"
    assert_output two
    wait_until 3 test ! -e "$MNT1/src/sub"
    # a directory over an empty directory
    mkdir "$MNT1/empty"
    mv -T "$MNT3/dst/moved" "$MNT3/empty"
    run cat "$MNT1/empty/g"
    assert_output two
    # not over a non-empty one
    mkdir -p "$MNT1/full/x"
    run mv -T "$MNT1/empty" "$MNT1/full"
    assert_failure
    # mv -n never replaces (RENAME_NOREPLACE or a check before)
    echo keep >"$MNT1/k1"
    echo other >"$MNT1/k2"
    mv -n "$MNT1/k2" "$MNT1/k1" || true
    run cat "$MNT2/k1"
    assert_output keep
    # listings agree everywhere
    for m in "$MNT1" "$MNT2" "$MNT3"; do
        run ls "$m/dst"
        assert_output f
        run ls "$m/src"
        assert_output ""
    done
}

# renameat2 FROM TO FLAGS: prints the errno name of renameat2(2), or OK.
renameat2() {
    python3 -c '
import ctypes, errno, sys
libc = ctypes.CDLL(None, use_errno=True)
r = libc.renameat2(-100, sys.argv[1].encode(), -100, sys.argv[2].encode(),
                   int(sys.argv[3]))
print("OK" if r == 0 else errno.errorcode[ctypes.get_errno()])
' "$@"
}

@test "renameat2: RENAME_NOREPLACE honoured, RENAME_EXCHANGE refused" {
    echo a >"$MNT1/a"
    echo b >"$MNT1/b"
    run renameat2 "$MNT1/a" "$MNT1/b" 1
    assert_output EEXIST
    run renameat2 "$MNT1/a" "$MNT1/b" 2
    assert_output EINVAL
    run cat "$MNT2/a" "$MNT2/b"
    assert_output $'a\nb'
    run renameat2 "$MNT1/a" "$MNT1/c" 1
    assert_output OK
    run cat "$MNT3/c"
    assert_output a
}

@test "ln -s, readlink; hard links are refused" {
    echo target >"$MNT1/t"
    ln -s t "$MNT1/l"
    run readlink "$MNT2/l"
    assert_output t
    run cat "$MNT3/l"
    assert_output target
    ln -s /no/such/place "$MNT1/dangling"
    run readlink "$MNT3/dangling"
    assert_output /no/such/place
    run stat -c %F "$MNT2/l"
    assert_output "symbolic link"
    run ln "$MNT1/t" "$MNT1/hard"
    assert_failure
    assert_output --partial "Operation not permitted"
    # no special files either
    run mkfifo "$MNT1/fifo"
    assert_failure
    assert_output --partial "Operation not permitted"
}

@test "chmod, touch -d and stat agree on every mount" {
    echo x >"$MNT1/f"
    chmod 640 "$MNT1/f"
    touch -d "2021-03-04 05:06:07" "$MNT1/f"
    mkdir "$MNT1/d"
    chmod 2750 "$MNT1/d"
    for m in "$MNT1" "$MNT2" "$MNT3"; do
        run stat -c '%a %s %Y' "$m/f"
        assert_output "640 2 $(date -d '2021-03-04 05:06:07' +%s)"
        run stat -c '%a %F' "$m/d"
        assert_output "2750 directory"
    done
    # a new entry in a setgid directory gets the directory's group
    chown 0:12 "$MNT1/d"
    touch "$MNT2/d/new"
    run stat -c %g "$MNT3/d/new"
    assert_output 12
    # a directory's mtime moves when an entry is added or removed
    touch -d "2001-02-03 04:05:06" "$MNT1/d"
    touch "$MNT2/d/another"
    [ "$(stat -c %Y "$MNT2/d")" -gt "$(date -d 2002-01-01 +%s)" ]
    # inode numbers are stable across mounts
    [ "$(stat -c %i "$MNT1/f")" = "$(stat -c %i "$MNT3/f")" ]
}

@test "names: 256 bytes is ENAMETOOLONG, 255 works" {
    n255=$(printf 'n%.0s' $(seq 1 255))
    n256=${n255}x
    run touch "$MNT1/$n256"
    assert_failure
    assert_output --partial "File name too long"
    run mkdir "$MNT1/$n256"
    assert_failure
    assert_output --partial "File name too long"
    touch "$MNT1/$n255"
    [ -e "$MNT2/$n255" ]
}
