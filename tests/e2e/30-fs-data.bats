#!/usr/bin/env bats
# Behaviour: file contents on a ring of three peers, each with its own mount:
#  - `cp` of a 100 MiB random file through one mount reads back with the
#    same sha1sum through every mount (chunks are spread over the ring and
#    checked against their SHA-1 on every read);
#  - `truncate` shrinks and grows files (the bytes past a shrink read back
#    as zeros after a regrow, never as the old ones) and `dd seek=` writes
#    sparse files whose holes read as zeros;
#  - a file rewritten in the middle keeps the bytes around the rewrite;
#  - 400 random overlapping writes and some ftruncates through two
#    descriptors of one file give, on every mount, exactly the bytes of an
#    in-memory model (chunk edges, holes, write-behind and caches);
#  - a chunk whose bytes do not match its SHA-1 (replaced in the ring with
#    chordctl) makes reads fail with EIO and an error line in the log,
#    never return the bad bytes;
#  - `du` and `df` work on the mount (df reports the peer's store and the
#    free space of its data dir's file system).

load helpers

setup() {
    [ -x "$BIN/chordfs" ] || skip "no build"
    start_fs_ring 3
}

teardown() {
    cleanup_all
}

@test "cp of a 100 MiB file: equal sha1sum from every mount" {
    head -c 100M /dev/urandom >"$BATS_TEST_TMPDIR/big"
    want=$(sha1sum <"$BATS_TEST_TMPDIR/big")
    timeout 120 cp "$BATS_TEST_TMPDIR/big" "$MNT1/big"
    rm -f "$BATS_TEST_TMPDIR/big"
    for m in "$MNT1" "$MNT2" "$MNT3"; do
        run stat -c %s "$m/big"
        assert_output 104857600
        got=$(timeout 120 sha1sum <"$m/big")
        [ "$got" = "$want" ]
    done
}

@test "truncate and dd seek= make sparse files that read as zeros" {
    printf 'abcdefghij' >"$MNT1/t"
    truncate -s 4 "$MNT2/t"
    run cat "$MNT3/t"
    assert_output abcd
    truncate -s 8 "$MNT3/t"
    run od -An -c "$MNT1/t"
    assert_output --regexp '^ +a +b +c +d +\\0 +\\0 +\\0 +\\0$'
    # a hole of ~5 MiB before 1 KiB of data
    dd if=/dev/urandom of="$MNT1/sparse" bs=1k count=1 seek=5000 status=none
    run stat -c %s "$MNT2/sparse"
    assert_output $((5001 * 1024))
    run cmp -n $((5000 * 1024)) "$MNT3/sparse" /dev/zero
    assert_success
    # growing with truncate far past the end, then reading the tail
    truncate -s 3G "$MNT2/huge"
    run stat -c %s "$MNT1/huge"
    assert_output $((3 * 1024 * 1024 * 1024))
    run sh -c "tail -c 4096 '$MNT3/huge' | cmp - /dev/zero -n 4096"
    assert_success
    # shrinking a multi-chunk file drops what lies past the end
    head -c 3M /dev/urandom >"$MNT1/m"
    truncate -s 1000 "$MNT1/m"
    truncate -s 3M "$MNT2/m"
    run cmp -i 1000:0 -n $((3 * 1024 * 1024 - 1000)) "$MNT3/m" /dev/zero
    assert_success
}

@test "rewriting the middle of a file keeps the rest" {
    head -c 3M /dev/urandom >"$BATS_TEST_TMPDIR/orig"
    cp "$BATS_TEST_TMPDIR/orig" "$MNT1/f"
    printf 'XYZ' | dd of="$MNT2/f" bs=1 seek=1048570 conv=notrunc status=none
    printf 'XYZ' | dd of="$BATS_TEST_TMPDIR/orig" bs=1 seek=1048570 \
        conv=notrunc status=none
    run cmp "$MNT3/f" "$BATS_TEST_TMPDIR/orig"
    assert_success
}

@test "random writes and truncates through two descriptors match a model" {
    python3 - "$MNT1/rnd" "$MNT1" "$MNT2" "$MNT3" <<'PY'
import os, random, sys
path, mounts = sys.argv[1], sys.argv[2:]
model = bytearray()
fa = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
fb = os.open(path, os.O_RDWR)
random.seed(7)
for i in range(400):
    fd = fa if i % 2 else fb
    off = random.randrange(0, 3000000)
    data = os.urandom(random.randrange(1, 300000))
    os.pwrite(fd, data, off)
    if len(model) < off + len(data):
        model.extend(bytes(off + len(data) - len(model)))
    model[off:off + len(data)] = data
    if i % 37 == 0:
        t = random.randrange(0, 3000000)
        os.ftruncate(fd, t)
        del model[t:]
        model.extend(bytes(t - len(model)))
os.close(fa)
os.close(fb)
for m in mounts:
    with open(os.path.join(m, "rnd"), "rb") as f:
        got = f.read()
    if got != bytes(model):
        sys.exit("%s: %d bytes differ from the model's %d" %
                 (m, len(got), len(model)))
PY
}

# uuid_of MOUNT PATH: the file's uuid (hex), read from its inode record.
uuid_of() {
    ctl fs1 get "meta:$2" | python3 -c '
import sys
b = sys.stdin.buffer.read()
i = 0
def varint():
    global i
    r = s = 0
    while True:
        c = b[i]; i += 1; r |= (c & 0x7f) << s; s += 7
        if c < 0x80:
            return r
while i < len(b):
    k = varint()
    if k & 7 == 0:
        varint()
    elif k & 7 == 2:
        n = varint(); v = b[i:i + n]; i += n
        if k >> 3 == 10:
            print(v.hex())
    elif k & 7 == 1:
        i += 8
    else:
        i += 4
'
}

@test "a chunk that fails its SHA-1 check reads as EIO, never bad bytes" {
    head -c 100000 /dev/urandom >"$MNT1/victim"
    uuid=$(uuid_of "$MNT1" /victim)
    [ ${#uuid} -eq 32 ]
    # chunk 0 replaced by bytes whose stored SHA-1 is of other bytes
    python3 -c '
import hashlib, sys
data = b"evil bytes"
sha = hashlib.sha1(b"good bytes").digest()
sys.stdout.buffer.write(b"\x0a" + bytes([len(data)]) + data +
                        b"\x12\x14" + sha)' | ctl fs1 put "data:$uuid:0" -
    run cat "$MNT2/victim"
    assert_failure
    assert_output --partial "Input/output error"
    refute_output --partial "evil"
    grep -q "SHA-1 mismatch" "$STATE/fs2.log"
}

@test "du and df on the mount" {
    head -c 2M /dev/urandom >"$MNT1/two"
    run du -k "$MNT2/two"
    assert_success
    [ "${output%%[[:space:]]*}" -ge 2048 ]
    run df -k "$MNT3"
    assert_success
    assert_output --partial chordfs
    # the store holds at least one copy of the 2 MiB
    used=$(df -k --output=used "$MNT1" | tail -1)
    [ "$used" -ge 2048 ]
    run stat -f -c %l "$MNT1"
    assert_output 255
}
