#!/usr/bin/env bats
# mount(8) and fstab drive chordfs through /sbin/mount.chordfs:
#  - `mount -t chordfs new DIR -o listen=...,data_dir=...` returns with DIR
#    mounted (the daemon's parent exits only once the mount is live); files
#    written there read back; `umount DIR` unmounts and the daemon exits;
#  - a second `mount -t chordfs HOST:PORT DIR2` joins through the first and
#    sees its files, and the other way round;
#  - fstab lines (a temporary file given with `mount -T FILE`, so the real
#    /etc/fstab is never read or touched) with _netdev,noauto,nofail work
#    with `mount DIR`, and `mount -a -T FILE` mounts the auto line, skips the
#    noauto one and leaves an already mounted line alone;
#  - bad options fail the mount with a clear message and mount nothing.
#
# util-linux 2.38 (Debian 12) runs helpers only from /sbin, /sbin/fs.d and
# /sbin/fs; there is no option or variable to point it elsewhere (`mount -i`
# merely skips helpers). So each test links /sbin/mount.chordfs to the build
# under test and removes it in teardown, restoring any mount.chordfs that was
# there before. Needs root and /dev/fuse; skipped with the reason otherwise.

load helpers

SBIN_HELPER=/sbin/mount.chordfs

setup() {
    [ -c /dev/fuse ] || skip "/dev/fuse is missing: no FUSE in this machine"
    [ "$(id -u)" = 0 ] || skip "needs root to install $SBIN_HELPER"
    [ -x "$BIN/mount.chordfs" ] || skip "$BIN/mount.chordfs not built"
    T=$BATS_TEST_TMPDIR
}

teardown() {
    # A daemon whose pid was never recorded (the test failed between mount
    # and track) is still found by the port it was given.
    local port pid
    if [ -f "$STATE/ports" ]; then
        while read -r port; do
            pid=$(pid_on_port "$port")
            [ -n "$pid" ] &&
                [ "$(readlink "/proc/$pid/exe")" = "$(readlink -f "$BIN/chordfs")" ] &&
                echo "$pid" >>"$STATE/pids"
        done <"$STATE/ports"
    fi
    cleanup_all
    if [ -f "$STATE/helper-installed" ]; then
        rm -f "$SBIN_HELPER"
        if [ -e "$STATE/helper.orig" ] || [ -L "$STATE/helper.orig" ]; then
            mv "$STATE/helper.orig" "$SBIN_HELPER"
        fi
        rm -f "$STATE/helper-installed"
    fi
}

# install_helper link|copy: put the helper where mount(8) looks for it.
install_helper() {
    if [ -e "$SBIN_HELPER" ] || [ -L "$SBIN_HELPER" ]; then
        mv "$SBIN_HELPER" "$STATE/helper.orig"
    fi
    touch "$STATE/helper-installed"
    if [ "$1" = link ]; then
        ln -s "$BIN/mount.chordfs" "$SBIN_HELPER"
    else
        install -m 755 "$BIN/mount.chordfs" "$SBIN_HELPER"
    fi
}

# pid_on_port PORT: the pid of the process listening on 127.0.0.1:PORT.
pid_on_port() {
    ss -Htlnp "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2
}

# track MOUNTPOINT PORT: have teardown detach the mount and kill the daemon.
track() {
    echo "$1" >>"$STATE/mounts"
    local pid
    pid=$(pid_on_port "$2")
    [ -n "$pid" ] || return 1
    echo "$pid" >>"$STATE/pids"
    echo "$pid"
}

# mount_quiet ARGS...: mount(8) with its output in $STATE/mount.out. The
# daemon must not hold bats' descriptors (3 is bats' own).
mount_quiet() {
    mount "$@" >"$STATE/mount.out" 2>&1 3>&- </dev/null
}

not_alive() { ! kill -0 "$1" 2>/dev/null; }
not_mounted() { ! mountpoint -q "$1"; }

@test "mount -t chordfs new DIR mounts; umount DIR unmounts and ends the daemon" {
    install_helper link
    local port
    port=$(free_port)
    mkdir -p "$T/m1" "$T/d1"
    echo "$T/m1" >>"$STATE/mounts"
    run mount_quiet -t chordfs new "$T/m1" \
        -o "listen=127.0.0.1:$port,data_dir=$T/d1,_netdev,log=$T/m1.log"
    cat "$STATE/mount.out"
    assert_success
    # No polling: mount(8) returned, so the mount is live now.
    mountpoint -q "$T/m1"
    pid=$(track "$T/m1" "$port")
    run grep " $T/m1 " /proc/self/mounts
    assert_output --partial "new $T/m1 fuse.chordfs"

    echo "hello through mount(8)" >"$T/m1/hello.txt"
    mkdir "$T/m1/sub"
    seq 1 5000 >"$T/m1/sub/numbers"
    run cat "$T/m1/hello.txt"
    assert_output "hello through mount(8)"
    [ "$(md5sum <"$T/m1/sub/numbers")" = "$(seq 1 5000 | md5sum)" ]

    run umount "$T/m1"
    assert_success
    not_mounted "$T/m1"
    wait_until 15 not_alive "$pid"
}

@test "a second mount(8) joins through the first's address and shares files" {
    install_helper link
    local p1 p2
    p1=$(free_port)
    p2=$(free_port)
    mkdir -p "$T/m1" "$T/m2" "$T/d1" "$T/d2"
    echo "$T/m1" >>"$STATE/mounts"
    echo "$T/m2" >>"$STATE/mounts"
    mount_quiet -t chordfs new "$T/m1" \
        -o "listen=127.0.0.1:$p1,data_dir=$T/d1,replicas=2" ||
        { cat "$STATE/mount.out"; false; }
    pid1=$(track "$T/m1" "$p1")
    echo "from the first" >"$T/m1/first.txt"

    mount_quiet -t chordfs "127.0.0.1:$p1" "$T/m2" \
        -o "listen=127.0.0.1:$p2,data_dir=$T/d2,replicas=2" ||
        { cat "$STATE/mount.out"; false; }
    pid2=$(track "$T/m2" "$p2")
    run cat "$T/m2/first.txt"
    assert_success
    assert_output "from the first"

    echo "from the second" >"$T/m2/second.txt"
    run cat "$T/m1/second.txt"
    assert_success
    assert_output "from the second"

    umount "$T/m2"
    umount "$T/m1"
    wait_until 15 not_alive "$pid2"
    wait_until 15 not_alive "$pid1"
}

@test "fstab lines with _netdev,noauto,nofail: mount DIR and mount -a -T FILE" {
    install_helper link
    local p1 p2 p3
    p1=$(free_port)
    p2=$(free_port)
    p3=$(free_port)
    mkdir -p "$T/a" "$T/b" "$T/c" "$T/da" "$T/db" "$T/dc"
    for m in a b c; do echo "$T/$m" >>"$STATE/mounts"; done
    cat >"$T/fstab" <<EOF
# chordfs test fstab (never the real /etc/fstab)
new $T/a chordfs _netdev,noauto,nofail,listen=127.0.0.1:$p1,data_dir=$T/da 0 0
127.0.0.1:$p1 $T/b chordfs _netdev,nofail,listen=127.0.0.1:$p2,data_dir=$T/db 0 0
127.0.0.1:$p1 $T/c chordfs _netdev,noauto,listen=127.0.0.1:$p3,data_dir=$T/dc 0 0
EOF
    # mount DIR takes everything else from the (temporary) fstab.
    mount_quiet -T "$T/fstab" "$T/a" || { cat "$STATE/mount.out"; false; }
    mountpoint -q "$T/a"
    pid_a=$(track "$T/a" "$p1")
    echo "written on a" >"$T/a/fstab.txt"

    # mount -a: the auto line is mounted, noauto lines are skipped, and the
    # already mounted line a is recognised (its fsname is its source).
    run mount_quiet -a -T "$T/fstab" -t chordfs
    cat "$STATE/mount.out"
    assert_success
    mountpoint -q "$T/b"
    pid_b=$(track "$T/b" "$p2")
    not_mounted "$T/c"
    [ -z "$(pid_on_port "$p3")" ]
    [ "$(grep -c " $T/a " /proc/self/mounts)" = 1 ]
    run cat "$T/b/fstab.txt"
    assert_output "written on a"

    # A second mount -a changes nothing.
    run mount_quiet -a -T "$T/fstab" -t chordfs
    assert_success
    [ "$(grep -c " $T/b " /proc/self/mounts)" = 1 ]

    umount "$T/b"
    umount "$T/a"
    wait_until 15 not_alive "$pid_b"
    wait_until 15 not_alive "$pid_a"
}

@test "an installed copy finds chordfs through \$CHORDFS; bad options mount nothing" {
    install_helper copy
    local port
    port=$(free_port)
    mkdir -p "$T/m" "$T/d"
    echo "$T/m" >>"$STATE/mounts"

    # /sbin holds no chordfs: without $CHORDFS (and none on PATH) it fails.
    if ! PATH=/usr/sbin:/sbin command -v chordfs >/dev/null &&
        [ ! -x /usr/local/bin/chordfs ] && [ ! -x /usr/bin/chordfs ]; then
        run env -u CHORDFS PATH=/usr/sbin:/sbin:/usr/bin:/bin \
            mount -t chordfs new "$T/m" -o "listen=127.0.0.1:$port" 3>&-
        assert_failure
        assert_output --partial "chordfs not found"
        not_mounted "$T/m"
    fi

    run env CHORDFS="$BIN/chordfs" mount -t chordfs new "$T/m" \
        -o "listen=127.0.0.1:$port,replicas=zero" 3>&-
    assert_failure
    assert_output --partial "bad value for option 'replicas'"
    not_mounted "$T/m"

    export CHORDFS="$BIN/chordfs"
    mount_quiet -t chordfs new "$T/m" \
        -o "listen=127.0.0.1:$port,data_dir=$T/d" ||
        { cat "$STATE/mount.out"; false; }
    unset CHORDFS
    mountpoint -q "$T/m"
    pid=$(track "$T/m" "$port")
    [ "$(readlink "/proc/$pid/exe")" = "$(readlink -f "$BIN/chordfs")" ]
    umount "$T/m"
    wait_until 15 not_alive "$pid"
}
