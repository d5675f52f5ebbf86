/*
 * tests/unit/test_store.c - the local store (dht/store.c), both backends:
 * put/get/replace/delete, ring-order range scans with wrap-around, counters,
 * persistence, crash safety under kill -9, large and binary records,
 * corrupt records and unusable directories.
 */
#include <errno.h>
#include <ftw.h>
#include <lmdb.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dht/dht-int.h"
#include "tests/unit/testhelp.h"

/* ------------------------------------------------------------ helpers */

static char tmp_root[64];

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory path under tmp_root (not created). */
static void new_dir(char *buf, size_t n, const char *name)
{
    static int seq;

    snprintf(buf, n, "%s/%s-%d", tmp_root, name, seq++);
}

enum backend {
    MEM,
    LMDB,
};

/* Open a store of the backend; LMDB in a new directory named into dir. */
static struct dht_store *open_store(enum backend b, char *dir, size_t n)
{
    struct dht_store *s = NULL;

    if (b == MEM)
        return dht_store_new_mem();
    new_dir(dir, n, "db");
    if (dht_store_open(dir, false, &s) != 0)
        return NULL;
    return s;
}

/* An id whose first byte is b and the rest x (crafted ring positions). */
static struct dht_id mkid(uint8_t b, uint8_t x)
{
    struct dht_id id;

    memset(id.b, x, sizeof id.b);
    id.b[0] = b;
    return id;
}

static int put_str(struct dht_store *s, const char *key, const char *val)
{
    struct dht_id id;

    dht_id_of(key, &id);
    return dht_store_put(s, &id, key, val, strlen(val));
}

/* Get key (id = SHA-1(key)) and compare with want; true if equal. */
static bool get_is(struct dht_store *s, const char *key, const void *want,
                   size_t wlen)
{
    struct dht_id id;
    void *v = NULL;
    size_t len = 0;
    bool ok;

    dht_id_of(key, &id);
    if (dht_store_get(s, &id, key, &v, &len) != 0)
        return false;
    ok = len == wlen && memcmp(v, want, wlen) == 0 && ((char *)v)[len] == 0;
    free(v);
    return ok;
}

static int get_rc(struct dht_store *s, const struct dht_id *id, const char *key)
{
    void *v = NULL;
    size_t len;
    int rc = dht_store_get(s, id, key, &v, &len);

    free(v);
    return rc;
}

/* Range collector: the ids seen, in order; stops after stop_after. */
struct seen {
    struct dht_id ids[4096];
    int n;
    int stop_after; /* 0: never */
    uint64_t bytes;
};

static int collect(void *arg, const struct dht_id *id, const char *key,
                   const void *val, size_t len)
{
    struct seen *sn = arg;

    (void)val;
    if (sn->n < (int)(sizeof sn->ids / sizeof sn->ids[0]))
        sn->ids[sn->n] = *id;
    sn->n++;
    sn->bytes += strlen(key) + len;
    if (sn->stop_after && sn->n == sn->stop_after)
        return 42;
    return 0;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------- the tests */

static void check_put_get_replace_del(enum backend b)
{
    char dir[128];
    struct dht_store *s = open_store(b, dir, sizeof dir);
    struct dht_id id;

    CHECK(s != NULL);
    if (!s)
        return;
    dht_id_of("meta:/a", &id);
    CHECK_EQ(get_rc(s, &id, "meta:/a"), -ENOENT);
    CHECK_EQ(dht_store_del(s, &id, "meta:/a"), -ENOENT);
    CHECK_EQ(put_str(s, "meta:/a", "one"), 0);
    CHECK(get_is(s, "meta:/a", "one", 3));
    CHECK_EQ(put_str(s, "meta:/a", "second value"), 0);
    CHECK(get_is(s, "meta:/a", "second value", 12));
    CHECK_EQ(dht_store_count(s), 1);
    CHECK_EQ(put_str(s, "meta:/b", "bee"), 0);
    CHECK_EQ(dht_store_count(s), 2);
    CHECK_EQ(dht_store_del(s, &id, "meta:/a"), 0);
    CHECK_EQ(get_rc(s, &id, "meta:/a"), -ENOENT);
    CHECK_EQ(dht_store_del(s, &id, "meta:/a"), -ENOENT);
    CHECK(get_is(s, "meta:/b", "bee", 3));
    CHECK_EQ(dht_store_count(s), 1);
    /* An empty value is a value. */
    CHECK_EQ(put_str(s, "meta:/empty", ""), 0);
    CHECK(get_is(s, "meta:/empty", "", 0));
    CHECK_EQ(dht_store_sync(s), 0);
    dht_store_free(s);
}

static void test_store_put_get_replace_del_mem(void)
{
    check_put_get_replace_del(MEM);
}

static void test_store_put_get_replace_del_lmdb(void)
{
    check_put_get_replace_del(LMDB);
}

/* The id names the key: a record under the same id but another key (an
 * SHA-1 collision, or a bug) is not handed out nor deleted. */
static void check_key_mismatch(enum backend b)
{
    char dir[128];
    struct dht_store *s = open_store(b, dir, sizeof dir);
    struct dht_id id = mkid(0x42, 0x42);

    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_EQ(dht_store_put(s, &id, "key-a", "A", 1), 0);
    CHECK_EQ(get_rc(s, &id, "key-b"), -ENOENT);
    CHECK_EQ(dht_store_del(s, &id, "key-b"), -ENOENT);
    CHECK_EQ(dht_store_count(s), 1);
    CHECK_EQ(get_rc(s, &id, "key-a"), 0);
    dht_store_free(s);
}

static void test_store_key_mismatch_mem(void)
{
    check_key_mismatch(MEM);
}

static void test_store_key_mismatch_lmdb(void)
{
    check_key_mismatch(LMDB);
}

/* Ids at first bytes 0x10, 0x20, ..., 0xf0: range scans give exactly the
 * expected ring-order sequences. */
static bool seq_is(const struct seen *sn, const uint8_t *firsts, int n)
{
    if (sn->n != n)
        return false;
    for (int i = 0; i < n; i++)
        if (sn->ids[i].b[0] != firsts[i])
            return false;
    return true;
}

static void check_range_cases(enum backend b)
{
    char dir[128];
    struct dht_store *s = open_store(b, dir, sizeof dir);
    struct seen sn;
    struct dht_id lo, hi;
    char key[16];

    CHECK(s != NULL);
    if (!s)
        return;
    /* Empty store: nothing, for every shape of interval. */
    lo = mkid(0x30, 0);
    memset(&sn, 0, sizeof sn);
    CHECK_EQ(dht_store_range(s, &lo, &lo, collect, &sn), 0);
    CHECK_EQ(sn.n, 0);

    /* Insert in a scrambled order. */
    for (int i = 0; i < 15; i++) {
        int k = (i * 7) % 15 + 1; /* 1..15, each once */
        struct dht_id id = mkid((uint8_t)(k << 4), 0);

        snprintf(key, sizeof key, "k%02x", k << 4);
        CHECK_EQ(dht_store_put(s, &id, key, "v", 1), 0);
    }
    CHECK_EQ(dht_store_count(s), 15);

    /* lo < hi: (0x30, 0x70] -> 40 50 60 70 (lo excluded, hi included). */
    lo = mkid(0x30, 0);
    hi = mkid(0x70, 0);
    memset(&sn, 0, sizeof sn);
    CHECK_EQ(dht_store_range(s, &lo, &hi, collect, &sn), 0);
    CHECK(seq_is(&sn, (const uint8_t[]){0x40, 0x50, 0x60, 0x70}, 4));

    /* lo < hi, bounds between entries: (0x35.., 0x6f..] -> 40 50 60. */
    lo = mkid(0x35, 0xff);
    hi = mkid(0x6f, 0xff);
    memset(&sn, 0, sizeof sn);
    CHECK_EQ(dht_store_range(s, &lo, &hi, collect, &sn), 0);
    CHECK(seq_is(&sn, (const uint8_t[]){0x40, 0x50, 0x60}, 3));

    /* lo > hi wraps: (0xd0, 0x20] -> e0 f0 10 20. */
    lo = mkid(0xd0, 0);
    hi = mkid(0x20, 0);
    memset(&sn, 0, sizeof sn);
    CHECK_EQ(dht_store_range(s, &lo, &hi, collect, &sn), 0);
    CHECK(seq_is(&sn, (const uint8_t[]){0xe0, 0xf0, 0x10, 0x20}, 4));

    /* lo > hi with lo past every entry: (0xf8, 0x10] -> 10. */
    lo = mkid(0xf8, 0);
    hi = mkid(0x10, 0);
    memset(&sn, 0, sizeof sn);
    CHECK_EQ(dht_store_range(s, &lo, &hi, collect, &sn), 0);
    CHECK(seq_is(&sn, (const uint8_t[]){0x10}, 1));

    /* lo == hi at an entry: everything, starting after lo, lo last. */
    lo = mkid(0xc0, 0);
    memset(&sn, 0, sizeof sn);
    CHECK_EQ(dht_store_range(s, &lo, &lo, collect, &sn), 0);
    CHECK(
        seq_is(&sn,
               (const uint8_t[]){0xd0, 0xe0, 0xf0, 0x10, 0x20, 0x30, 0x40, 0x50,
                                 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0},
               15));
    CHECK_EQ(sn.bytes, dht_store_bytes(s));

    /* lo == hi between entries: everything once. */
    lo = mkid(0x00, 0);
    memset(&sn, 0, sizeof sn);
    CHECK_EQ(dht_store_range(s, &lo, &lo, collect, &sn), 0);
    CHECK_EQ(sn.n, 15);
    CHECK_EQ(sn.ids[0].b[0], 0x10);
    CHECK_EQ(sn.ids[14].b[0], 0xf0);

    /* Stopping early: the callback's value comes back. */
    lo = mkid(0xc0, 0);
    memset(&sn, 0, sizeof sn);
    sn.stop_after = 5;
    CHECK_EQ(dht_store_range(s, &lo, &lo, collect, &sn), 42);
    CHECK(seq_is(&sn, (const uint8_t[]){0xd0, 0xe0, 0xf0, 0x10, 0x20}, 5));
    /* ... also in the non-wrapping case. */
    lo = mkid(0x10, 0);
    hi = mkid(0x90, 0);
    memset(&sn, 0, sizeof sn);
    sn.stop_after = 2;
    CHECK_EQ(dht_store_range(s, &lo, &hi, collect, &sn), 42);
    CHECK(seq_is(&sn, (const uint8_t[]){0x20, 0x30}, 2));

    /* An empty interval between two entries. */
    lo = mkid(0x50, 1);
    hi = mkid(0x5f, 0);
    memset(&sn, 0, sizeof sn);
    CHECK_EQ(dht_store_range(s, &lo, &hi, collect, &sn), 0);
    CHECK_EQ(sn.n, 0);
    dht_store_free(s);
}

static void test_store_range_cases_mem(void)
{
    check_range_cases(MEM);
}

static void test_store_range_cases_lmdb(void)
{
    check_range_cases(LMDB);
}

/* Random operations against a model: contents, counters and ring-order
 * scans agree with brute force over dht_id_in_oc. */
#define MODEL_N 300
struct model {
    bool live[MODEL_N];
    size_t len[MODEL_N];
    struct dht_id id[MODEL_N];
    char key[MODEL_N][24];
};

struct order_check {
    const struct dht_id *lo;
    struct dht_id last;
    int n;
    bool ordered;
    bool saw_lo;
};

static int check_order(void *arg, const struct dht_id *id, const char *key,
                       const void *val, size_t len)
{
    struct order_check *oc = arg;
    struct dht_id d_prev, d_cur;

    (void)key;
    (void)val;
    (void)len;
    /* Clockwise distance from lo strictly increases along the scan; lo
     * itself (lo == hi) is at distance 2^160 and so must come last. */
    if (oc->saw_lo)
        oc->ordered = false;
    if (dht_id_eq(id, oc->lo))
        oc->saw_lo = true;
    dht_id_sub(id, oc->lo, &d_cur);
    if (oc->n > 0 && !oc->saw_lo) {
        dht_id_sub(&oc->last, oc->lo, &d_prev);
        if (dht_id_cmp(&d_cur, &d_prev) <= 0)
            oc->ordered = false;
    }
    oc->last = *id;
    oc->n++;
    return 0;
}

static void check_against_model(enum backend b)
{
    char dir[128];
    struct dht_store *s = open_store(b, dir, sizeof dir);
    static struct model m;
    uint64_t want_bytes = 0, want_count = 0;
    char val[600];

    CHECK(s != NULL);
    if (!s)
        return;
    memset(&m, 0, sizeof m);
    srandom(7);
    for (int i = 0; i < MODEL_N; i++) {
        snprintf(m.key[i], sizeof m.key[i], "data:%d", i);
        dht_id_of(m.key[i], &m.id[i]);
    }
    for (size_t i = 0; i < sizeof val; i++)
        val[i] = (char)(i * 31);
    for (int op = 0; op < 3000; op++) {
        int k = (int)(random() % MODEL_N);

        if (random() % 3) {
            size_t len = (size_t)(random() % sizeof val);

            CHECK_EQ(dht_store_put(s, &m.id[k], m.key[k], val, len), 0);
            if (m.live[k])
                want_bytes -= strlen(m.key[k]) + m.len[k];
            else
                want_count++;
            m.live[k] = true;
            m.len[k] = len;
            want_bytes += strlen(m.key[k]) + len;
        } else {
            CHECK_EQ(dht_store_del(s, &m.id[k], m.key[k]),
                     m.live[k] ? 0 : -ENOENT);
            if (m.live[k]) {
                want_count--;
                want_bytes -= strlen(m.key[k]) + m.len[k];
            }
            m.live[k] = false;
        }
    }
    CHECK_EQ(dht_store_count(s), want_count);
    CHECK_EQ(dht_store_bytes(s), want_bytes);
    for (int k = 0; k < MODEL_N; k++) {
        if (m.live[k])
            CHECK(get_is(s, m.key[k], val, m.len[k]));
        else
            CHECK_EQ(get_rc(s, &m.id[k], m.key[k]), -ENOENT);
    }
    /* Intervals between random ids and between stored ids. */
    for (int t = 0; t < 60; t++) {
        struct dht_id lo = m.id[random() % MODEL_N];
        struct dht_id hi = m.id[random() % MODEL_N];
        struct order_check oc = {.lo = &lo, .ordered = true};
        int want = 0;

        if (t % 3 == 0)
            dht_id_hash(&t, sizeof t, &lo);
        if (t % 5 == 0)
            hi = lo;
        for (int k = 0; k < MODEL_N; k++)
            if (m.live[k] && dht_id_in_oc(&m.id[k], &lo, &hi))
                want++;
        CHECK_EQ(dht_store_range(s, &lo, &hi, check_order, &oc), 0);
        CHECK_EQ(oc.n, want);
        CHECK(oc.ordered);
    }
    dht_store_free(s);
}

static void test_store_model_mem(void)
{
    check_against_model(MEM);
}

static void test_store_model_lmdb(void)
{
    check_against_model(LMDB);
}

static void check_count_bytes(enum backend b)
{
    char dir[128];
    struct dht_store *s = open_store(b, dir, sizeof dir);
    struct dht_id id;

    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_EQ(dht_store_count(s), 0);
    CHECK_EQ(dht_store_bytes(s), 0);
    CHECK_EQ(put_str(s, "abc", "12345"), 0);
    CHECK_EQ(put_str(s, "de", "1"), 0);
    CHECK_EQ(dht_store_count(s), 2);
    CHECK_EQ(dht_store_bytes(s), 3 + 5 + 2 + 1);
    CHECK_EQ(put_str(s, "abc", "1234567890"), 0); /* replace */
    CHECK_EQ(dht_store_count(s), 2);
    CHECK_EQ(dht_store_bytes(s), 3 + 10 + 2 + 1);
    dht_id_of("de", &id);
    CHECK_EQ(dht_store_del(s, &id, "de"), 0);
    CHECK_EQ(dht_store_count(s), 1);
    CHECK_EQ(dht_store_bytes(s), 3 + 10);
    dht_store_free(s);
}

static void test_store_count_bytes_mem(void)
{
    check_count_bytes(MEM);
}

static void test_store_count_bytes_lmdb(void)
{
    check_count_bytes(LMDB);
}

/* Keys of 4000 bytes sharing a 3999-byte prefix; values with NUL bytes. */
static void check_long_keys_binary(enum backend b)
{
    char dir[128];
    struct dht_store *s = open_store(b, dir, sizeof dir);
    char *k1 = malloc(4001), *k2 = malloc(4001);
    uint8_t bin[256];
    struct dht_id id1, id2;
    struct seen sn;

    CHECK(s != NULL);
    if (!s)
        goto out;
    memset(k1, 'p', 4000);
    k1[4000] = 0;
    memcpy(k2, k1, 4001);
    k2[3999] = 'q';
    for (int i = 0; i < 256; i++)
        bin[i] = (uint8_t)(i % 3 == 0 ? 0 : i);
    dht_id_of(k1, &id1);
    dht_id_of(k2, &id2);
    CHECK_EQ(dht_store_put(s, &id1, k1, bin, sizeof bin), 0);
    CHECK_EQ(dht_store_put(s, &id2, k2, "\0\0\0", 3), 0);
    CHECK(get_is(s, k1, bin, sizeof bin));
    CHECK(get_is(s, k2, "\0\0\0", 3));
    CHECK_EQ(get_rc(s, &id1, k2), -ENOENT);
    CHECK_EQ(dht_store_bytes(s), 4000 + 256 + 4000 + 3);
    memset(&sn, 0, sizeof sn);
    CHECK_EQ(dht_store_range(s, &id1, &id1, collect, &sn), 0);
    CHECK_EQ(sn.n, 2);
    CHECK_EQ(sn.bytes, 4000 + 256 + 4000 + 3);
    CHECK_EQ(dht_store_del(s, &id2, k2), 0);
    CHECK(get_is(s, k1, bin, sizeof bin));
    dht_store_free(s);
out:
    free(k1);
    free(k2);
}

static void test_store_long_keys_binary_mem(void)
{
    check_long_keys_binary(MEM);
}

static void test_store_long_keys_binary_lmdb(void)
{
    check_long_keys_binary(LMDB);
}

static void check_big_value(enum backend b)
{
    char dir[128];
    struct dht_store *s = open_store(b, dir, sizeof dir);
    size_t n = 16u << 20;
    uint8_t *big = malloc(n);

    CHECK(s != NULL);
    if (!s)
        goto out;
    for (size_t i = 0; i < n; i++)
        big[i] = (uint8_t)(i * 2654435761u >> 13);
    CHECK_EQ(put_str(s, "small", "x"), 0);
    {
        struct dht_id id;

        dht_id_of("data:big:0", &id);
        CHECK_EQ(dht_store_put(s, &id, "data:big:0", big, n), 0);
    }
    CHECK(get_is(s, "data:big:0", big, n));
    CHECK_EQ(dht_store_bytes(s), 5 + 1 + 10 + n);
    CHECK(get_is(s, "small", "x", 1));
    if (b == LMDB) {
        /* The counters are rebuilt from disk on reopen. */
        dht_store_free(s);
        s = NULL;
        CHECK_EQ(dht_store_open(dir, true, &s), 0);
        if (!s)
            goto out;
        CHECK_EQ(dht_store_bytes(s), 5 + 1 + 10 + n);
        CHECK(get_is(s, "data:big:0", big, n));
    }
    dht_store_free(s);
out:
    free(big);
}

static void test_store_big_value_mem(void)
{
    check_big_value(MEM);
}

static void test_store_big_value_lmdb(void)
{
    check_big_value(LMDB);
}

/* Writing from inside a range callback is refused, not undefined. */
struct writer {
    struct dht_store *s;
    int rc;
};

static int write_inside(void *arg, const struct dht_id *id, const char *key,
                        const void *val, size_t len)
{
    struct writer *w = arg;

    w->rc = dht_store_put(w->s, id, key, val, len);
    return 1;
}

static void check_no_write_in_range(enum backend b)
{
    char dir[128];
    struct dht_store *s = open_store(b, dir, sizeof dir);
    struct writer w = {.s = s};
    struct dht_id lo = mkid(0, 0);

    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_EQ(put_str(s, "a", "1"), 0);
    CHECK_EQ(dht_store_range(s, &lo, &lo, write_inside, &w), 1);
    CHECK_EQ(w.rc, -EBUSY);
    CHECK_EQ(put_str(s, "b", "2"), 0); /* allowed again after the scan */
    dht_store_free(s);
}

static void test_store_no_write_in_range_mem(void)
{
    check_no_write_in_range(MEM);
}

static void test_store_no_write_in_range_lmdb(void)
{
    check_no_write_in_range(LMDB);
}

static void test_store_persists_across_reopen(void)
{
    char dir[128];
    struct dht_store *s = NULL;
    struct dht_id lo = mkid(0, 0);
    struct seen sn;

    new_dir(dir, sizeof dir, "persist");
    for (int mode = 0; mode < 2; mode++) {
        CHECK_EQ(dht_store_open(dir, mode == 0, &s), 0);
        if (!s)
            return;
        CHECK_EQ(put_str(s, mode ? "second" : "first", "v"), 0);
        if (mode == 0)
            CHECK_EQ(put_str(s, "gone", "soon"), 0);
        else
            CHECK_EQ(dht_store_del(s, &(struct dht_id){{0}}, "x"), -ENOENT);
        dht_store_free(s);
        s = NULL;
    }
    CHECK_EQ(dht_store_open(dir, false, &s), 0);
    if (!s)
        return;
    CHECK(get_is(s, "first", "v", 1));
    CHECK(get_is(s, "second", "v", 1));
    CHECK(get_is(s, "gone", "soon", 4));
    CHECK_EQ(dht_store_count(s), 3);
    CHECK_EQ(dht_store_bytes(s), 5 + 1 + 6 + 1 + 4 + 4);
    {
        struct dht_id id;

        dht_id_of("gone", &id);
        CHECK_EQ(dht_store_del(s, &id, "gone"), 0);
    }
    dht_store_free(s);
    s = NULL;
    CHECK_EQ(dht_store_open(dir, true, &s), 0);
    if (!s)
        return;
    memset(&sn, 0, sizeof sn);
    CHECK_EQ(dht_store_range(s, &lo, &lo, collect, &sn), 0);
    CHECK_EQ(sn.n, 2);
    CHECK_EQ(dht_store_count(s), 2);
    CHECK_EQ(dht_store_bytes(s), 5 + 1 + 6 + 1);
    dht_store_free(s);
}

/* A child writes 1000 records with sync_each=false, tells the parent
 * through a pipe, and is killed with SIGKILL: nothing is lost. */
static void test_store_survives_kill9(void)
{
    char dir[128];
    int fds[2];
    pid_t pid;
    char c = 0;
    int status = 0, found = 0;
    struct dht_store *s = NULL;

    new_dir(dir, sizeof dir, "crash");
    CHECK_EQ(pipe(fds), 0);
    fflush(stdout);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char key[32], val[64];

        close(fds[0]);
        if (dht_store_open(dir, false, &s) != 0)
            _exit(1);
        for (int i = 0; i < 1000; i++) {
            snprintf(key, sizeof key, "crash:%d", i);
            snprintf(val, sizeof val, "value of record %d", i);
            if (put_str(s, key, val) != 0)
                _exit(1);
        }
        if (write(fds[1], "x", 1) != 1)
            _exit(1);
        for (;;)
            pause(); /* killed here, store still open */
    }
    close(fds[1]);
    CHECK_EQ(read(fds[0], &c, 1), 1);
    close(fds[0]);
    kill(pid, SIGKILL);
    CHECK_EQ(waitpid(pid, &status, 0), pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    CHECK_EQ(dht_store_open(dir, false, &s), 0);
    if (!s)
        return;
    for (int i = 0; i < 1000; i++) {
        char key[32], val[64];

        snprintf(key, sizeof key, "crash:%d", i);
        snprintf(val, sizeof val, "value of record %d", i);
        if (get_is(s, key, val, strlen(val)))
            found++;
    }
    CHECK_EQ(found, 1000);
    CHECK_EQ(dht_store_count(s), 1000);
    dht_store_free(s);
}

/* Write raw bytes under an id, straight through LMDB, as corruption would
 * leave them. Returns 0 or an LMDB error. */
static int lmdb_raw_put(const char *dir, const void *kbytes, size_t klen,
                        const void *vbytes, size_t vlen)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {klen, (void *)kbytes}, v = {vlen, (void *)vbytes};
    int rc;

    rc = mdb_env_create(&env);
    if (rc)
        return rc;
    mdb_env_set_maxdbs(env, 4);
    mdb_env_set_mapsize(env, 1u << 30);
    rc = mdb_env_open(env, dir, 0, 0600);
    if (!rc)
        rc = mdb_txn_begin(env, NULL, 0, &txn);
    if (!rc) {
        rc = mdb_dbi_open(txn, "records", 0, &dbi);
        if (!rc)
            rc = mdb_put(txn, dbi, &k, &v, 0);
        if (!rc)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return rc;
}

static void test_store_corrupt_record_is_eio(void)
{
    char dir[128];
    struct dht_store *s = NULL;
    struct dht_id bad = mkid(0x80, 1), bad2 = mkid(0x90, 1),
                  bad3 = mkid(0xa0, 1), lo = mkid(0, 0);
    /* A header claiming a key longer than the record. */
    const uint8_t lying[] = {'C', 'F', 'R', '1', 0, 0, 0x10, 0, 'k', 0};
    /* Well-formed but for the magic. */
    const uint8_t magic[] = {'X', 'F', 'R', '1', 0, 0, 0, 1, 'k', 0, 'v'};
    struct dht_id bad4 = mkid(0xb0, 1);
    /* A key without its NUL terminator. */
    const uint8_t no_nul[] = {'C', 'F', 'R', '1', 0, 0, 0, 1, 'k', 'x'};
    struct seen sn;

    new_dir(dir, sizeof dir, "corrupt");
    CHECK_EQ(dht_store_open(dir, true, &s), 0);
    if (!s)
        return;
    CHECK_EQ(put_str(s, "good", "fine"), 0);
    dht_store_free(s);
    s = NULL;
    CHECK_EQ(lmdb_raw_put(dir, bad.b, DHT_ID_LEN, "garbage!", 8), 0);
    CHECK_EQ(lmdb_raw_put(dir, bad2.b, DHT_ID_LEN, lying, sizeof lying), 0);
    CHECK_EQ(lmdb_raw_put(dir, bad3.b, DHT_ID_LEN, no_nul, sizeof no_nul), 0);
    CHECK_EQ(lmdb_raw_put(dir, bad4.b, DHT_ID_LEN, magic, sizeof magic), 0);
    CHECK_EQ(lmdb_raw_put(dir, "short", 5, "CFR1", 4), 0);

    CHECK_EQ(dht_store_open(dir, true, &s), 0);
    if (!s)
        return;
    CHECK_EQ(dht_store_count(s), 6);
    CHECK_EQ(dht_store_bytes(s), 4 + 4); /* only "good" is readable */
    CHECK_EQ(get_rc(s, &bad, "k"), -EIO);
    CHECK_EQ(get_rc(s, &bad2, "k"), -EIO);
    CHECK_EQ(get_rc(s, &bad3, "k"), -EIO);
    CHECK_EQ(get_rc(s, &bad4, "k"), -EIO);
    CHECK_EQ(dht_store_del(s, &bad, "k"), -EIO);
    CHECK(get_is(s, "good", "fine", 4));
    /* A scan skips the bad records, visits the good one, reports -EIO. */
    memset(&sn, 0, sizeof sn);
    CHECK_EQ(dht_store_range(s, &lo, &lo, collect, &sn), -EIO);
    CHECK_EQ(sn.n, 1);
    /* A put replaces a corrupt record. */
    CHECK_EQ(dht_store_put(s, &bad, "k", "new", 3), 0);
    CHECK_EQ(dht_store_count(s), 6);
    CHECK_EQ(dht_store_bytes(s), 4 + 4 + 1 + 3);
    CHECK_EQ(get_rc(s, &bad, "k"), 0);
    CHECK_EQ(dht_store_del(s, &bad, "k"), 0);
    CHECK_EQ(dht_store_count(s), 5);
    dht_store_free(s);
}

static void test_store_bad_dir(void)
{
    char dir[128], file[192], sub[256], notdb[192], dbfile[256];
    struct dht_store *s = NULL;
    struct stat st;
    FILE *f;

    /* mkdir -p with 0700 for what it creates. */
    new_dir(dir, sizeof dir, "deep");
    snprintf(sub, sizeof sub, "%s/a/b/c", dir);
    CHECK_EQ(dht_store_open(sub, false, &s), 0);
    dht_store_free(s);
    s = NULL;
    CHECK_EQ(stat(sub, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0700);
    snprintf(sub, sizeof sub, "%s/a", dir);
    CHECK_EQ(stat(sub, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0700);

    /* A directory under a regular file cannot be created. */
    snprintf(file, sizeof file, "%s/plain-file", dir);
    f = fopen(file, "w");
    CHECK(f != NULL);
    if (f)
        fclose(f);
    snprintf(sub, sizeof sub, "%s/sub", file);
    CHECK_EQ(dht_store_open(sub, false, &s), -ENOTDIR);
    CHECK(s == NULL);
    /* The path is a file itself. */
    CHECK_EQ(dht_store_open(file, false, &s), -ENOTDIR);
    CHECK_EQ(dht_store_open("", false, &s), -ENOENT);
    /* A directory holding something that is not LMDB. */
    snprintf(notdb, sizeof notdb, "%s/notdb", dir);
    CHECK_EQ(mkdir(notdb, 0700), 0);
    snprintf(dbfile, sizeof dbfile, "%s/data.mdb", notdb);
    f = fopen(dbfile, "w");
    if (f) {
        for (int i = 0; i < 4096; i++)
            fputs("not an lmdb file ", f);
        fclose(f);
    }
    CHECK_EQ(dht_store_open(notdb, false, &s), -EIO);
    CHECK(s == NULL);
}

/* One process-side owner per directory: a second open is refused. */
static void test_store_second_open_busy(void)
{
    char dir[128];
    struct dht_store *a = NULL, *b = NULL;

    new_dir(dir, sizeof dir, "busy");
    CHECK_EQ(dht_store_open(dir, false, &a), 0);
    CHECK_EQ(dht_store_open(dir, false, &b), -EBUSY);
    CHECK(b == NULL);
    dht_store_free(a);
    CHECK_EQ(dht_store_open(dir, false, &b), 0);
    dht_store_free(b);
}

/* Not an assertion: puts per second of 4 KiB values in both modes. */
static void test_store_put_rate(void)
{
    int n = getenv("STORE_RATE_N") ? atoi(getenv("STORE_RATE_N")) : 500;
    double rate[2] = {0, 0};
    char val[4096];

    memset(val, 'v', sizeof val);
    for (int mode = 0; mode < 2; mode++) {
        char dir[128], key[32];
        struct dht_store *s = NULL;
        double t0;

        new_dir(dir, sizeof dir, "rate");
        CHECK_EQ(dht_store_open(dir, mode == 0, &s), 0);
        if (!s)
            return;
        t0 = now_s();
        for (int i = 0; i < n; i++) {
            struct dht_id id;

            snprintf(key, sizeof key, "data:rate:%d", i);
            dht_id_of(key, &id);
            CHECK_EQ(dht_store_put(s, &id, key, val, sizeof val), 0);
        }
        CHECK_EQ(dht_store_sync(s), 0);
        rate[mode] = n / (now_s() - t0);
        dht_store_free(s);
    }
    printf("# %d puts of 4 KiB: sync_each=true %.0f/s, sync_each=false "
           "%.0f/s (x%.1f)\n",
           n, rate[0], rate[1], rate[0] > 0 ? rate[1] / rate[0] : 0.0);
}

int main(void)
{
    const char *t = getenv("TMPDIR");

    snprintf(tmp_root, sizeof tmp_root, "%s/test_store-XXXXXX",
             t && *t ? t : "/tmp");
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(test_store_put_get_replace_del_mem);
    RUN(test_store_put_get_replace_del_lmdb);
    RUN(test_store_key_mismatch_mem);
    RUN(test_store_key_mismatch_lmdb);
    RUN(test_store_range_cases_mem);
    RUN(test_store_range_cases_lmdb);
    RUN(test_store_model_mem);
    RUN(test_store_model_lmdb);
    RUN(test_store_count_bytes_mem);
    RUN(test_store_count_bytes_lmdb);
    RUN(test_store_long_keys_binary_mem);
    RUN(test_store_long_keys_binary_lmdb);
    RUN(test_store_big_value_mem);
    RUN(test_store_big_value_lmdb);
    RUN(test_store_no_write_in_range_mem);
    RUN(test_store_no_write_in_range_lmdb);
    RUN(test_store_persists_across_reopen);
    RUN(test_store_survives_kill9);
    RUN(test_store_corrupt_record_is_eio);
    RUN(test_store_bad_dir);
    RUN(test_store_second_open_busy);
    RUN(test_store_put_rate);
    rm_rf(tmp_root);
    return DONE();
}
