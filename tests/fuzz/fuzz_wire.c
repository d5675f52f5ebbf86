/*
 * tests/fuzz/fuzz_wire.c - libFuzzer target for everything in proto/ that
 * reads bytes from outside (after tmux fuzz/input-fuzzer.c).
 *
 * The input is treated as a byte stream from a peer: it is fed to a
 * wire_reader in chunks whose sizes are derived from the input itself, and
 * every frame the reader yields goes through wire_decode(). The input is
 * also handed whole (with and without what would be its frame header) to
 * wire_decode() and to the record, inode, dirent and chunk unpackers.
 * Anything accepted must pass its own validation again and survive a
 * re-encode and re-decode; a violation aborts, so libFuzzer reports it.
 *
 *   make fuzz && build-fuzz/fuzz_wire build-fuzz/corpus tests/fuzz/corpus
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REQUIRE(cond)                                                          \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_wire: %s:%d: %s\n", __FILE__, __LINE__,      \
                    #cond);                                                    \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* A decoded envelope re-encodes into a frame that decodes again. */
static void check_envelope(const Chord__Envelope *env)
{
    Chord__Envelope *again = NULL;
    uint8_t *frame = NULL;
    size_t len = 0;

    REQUIRE(wire_msg_check(env) == 0);
    if (wire_encode(env, &frame, &len) < 0)
        return; /* cannot be: it came from a frame no bigger */
    REQUIRE(wire_decode(frame + WIRE_HDR_LEN, len - WIRE_HDR_LEN, &again) == 0);
    REQUIRE(again->body_case == env->body_case);
    REQUIRE(again->req_id == env->req_id);
    wire_msg_free(again);
    free(frame);
}

static void decode_one(const uint8_t *p, size_t n)
{
    Chord__Envelope *env = NULL;
    int rc = wire_decode(p, n, &env);

    REQUIRE(rc == 0 || rc == -EBADMSG ||
            (rc == -EMSGSIZE && n > WIRE_MAX_FRAME));
    if (rc == 0) {
        check_envelope(env);
        wire_msg_free(env);
    }
}

static void unpack_values(const uint8_t *p, size_t n)
{
    Chord__Record *rec = NULL;
    Chord__Inode *ino = NULL;
    Chord__DirEntry *de = NULL;
    Chord__Chunk *c = NULL;
    uint8_t *buf;
    size_t len;

    if (wire_record_unpack(p, n, &rec) == 0) {
        REQUIRE(wire_record_check(rec) == 0);
        REQUIRE(wire_record_pack(rec, &buf, &len) == 0);
        wire_record_free(rec);
        rec = NULL;
        REQUIRE(wire_record_unpack(buf, len, &rec) == 0);
        wire_record_free(rec);
        free(buf);
    }
    if (wire_inode_unpack(p, n, &ino) == 0) {
        REQUIRE(wire_inode_pack(ino, &buf, &len) == 0);
        wire_inode_free(ino);
        ino = NULL;
        REQUIRE(wire_inode_unpack(buf, len, &ino) == 0);
        wire_inode_free(ino);
        free(buf);
    }
    if (wire_dirent_unpack(p, n, &de) == 0) {
        REQUIRE(de->name[0] != '\0' && strchr(de->name, '/') == NULL);
        wire_dirent_free(de);
    }
    if (wire_chunk_unpack(p, n, &c) == 0) {
        REQUIRE(c->sha1.len == 0 || c->sha1.len == 20);
        wire_chunk_free(c);
    }
}

/* Chunk sizes for the reader come from a PRNG seeded by the input, so each
 * input always splits the same way. */
static uint64_t seed_of(const uint8_t *data, size_t size)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 0x100000001b3ull;
    return h | 1;
}

static size_t next_chunk(uint64_t *s, size_t left)
{
    size_t n;

    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    n = (size_t)((*s * 0x2545F4914F6CDD1Dull) >> 33);
    n = n % 8 == 0 ? left : 1 + n % 37;
    return n < left ? n : left;
}

static void stream(const uint8_t *data, size_t size)
{
    struct wire_reader r;
    uint64_t s = seed_of(data, size);
    size_t off = 0;
    int rc = 0;

    wire_reader_init(&r);
    while (off < size && rc >= 0) {
        const uint8_t *p;
        size_t n = next_chunk(&s, size - off), plen;

        REQUIRE(wire_reader_feed(&r, data + off, n) == 0);
        off += n;
        while ((rc = wire_reader_next(&r, &p, &plen)) == 1) {
            REQUIRE(plen <= WIRE_MAX_FRAME);
            decode_one(p, plen);
        }
        REQUIRE(rc == 0 || rc == -EMSGSIZE);
        /* Nothing beyond what was fed, and never an oversized payload. */
        REQUIRE(r.len - r.off <= off);
    }
    wire_reader_fini(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    stream(data, size);
    decode_one(data, size);
    unpack_values(data, size);
    if (size >= WIRE_HDR_LEN) {
        decode_one(data + WIRE_HDR_LEN, size - WIRE_HDR_LEN);
        unpack_values(data + WIRE_HDR_LEN, size - WIRE_HDR_LEN);
    }
    return 0;
}
