/*
 * dht/store.c - the peer's local store: LMDB on disk, or a sorted array in
 * memory (tests and the simulator).
 *
 * Both backends map a 20-byte id to one (key string, value) pair and iterate
 * in id order, which is ring order, so a ring interval is a contiguous scan.
 *
 * On-disk layout. LMDB keys are limited to 511 bytes but chordfs keys can be
 * 4 KiB paths, so the LMDB key is the id alone: id = SHA-1(key) names the key
 * uniquely. The LMDB value carries the key string so that a get or delete can
 * check it was given the key it names (a mismatch means an SHA-1 collision or
 * corruption, and is logged):
 *
 *     offset 0   4 bytes  magic "CFR1" (format version 1)
 *     offset 4   4 bytes  key length k, big-endian
 *     offset 8   k bytes  key (no NUL inside)
 *     offset 8+k 1 byte   NUL, so the key can be handed out from the map
 *     offset 9+k          value bytes, to the end
 *
 * Records live in the named database "records" of the environment, so other
 * named databases can be added later without disturbing ring-order scans.
 * One process at a time may own a data directory: an flock on
 * "chordfs.lock" refuses a second open with -EBUSY (LMDB itself forbids
 * opening one environment twice in a process).
 *
 * Durability. sync_each: every commit is fsynced by LMDB (the default).
 * Otherwise the environment runs with MDB_NOSYNC: each commit is written to
 * the file with write(2) before put/del returns, so it survives kill -9 of
 * the process (not a power loss), and dht_store_sync() fsyncs.
 *
 * Counters. dht_store_count() and dht_store_bytes() are O(1): counters kept
 * per write, set at open by one scan of the record headers (overflow pages
 * of large values are not read). A record whose header is unreadable counts
 * as an entry of 0 bytes.
 *
 * Not thread-safe: one thread at a time (MDB_NOTLS lets that thread change).
 */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dht/dht-int.h"

#define STORE_MOD       "store"
#define REC_MAGIC       "CFR1"
#define REC_HDR         8 /* magic + key length */
#define STORE_DB_NAME   "records"
#define STORE_MAXDBS    4
#define STORE_MAP_SIZE  (1ull << 40) /* 1 TiB of address space; sparse */
#define STORE_MAP_MIN   (1ull << 30) /* smallest map tried under ulimit -v */
#define STORE_LOCK_NAME "chordfs.lock"

enum store_kind {
    STORE_MEM,
    STORE_LMDB,
};

/* One in-memory entry: buf holds key, NUL, value (one allocation). */
struct mem_entry {
    struct dht_id id;
    uint32_t klen; /* bytes of key, without its NUL */
    size_t vlen;   /* bytes of value */
    uint8_t *buf;  /* owned */
};

struct dht_store {
    enum store_kind kind;
    int iterating;  /* dht_store_range() depth: writes refused */
    uint64_t count; /* entries */
    uint64_t bytes; /* sum of key + value lengths */
    /* STORE_MEM: sorted by id, no duplicate ids. */
    struct mem_entry *ent;
    size_t n, cap;
    /* STORE_LMDB */
    MDB_env *env;
    MDB_dbi dbi;
    bool sync_each;
    int lock_fd;
    char *dir; /* owned, for log lines */
};

/* ------------------------------------------------------------ helpers */

/* LMDB return code -> 0 / -errno. */
static int mdb_to_errno(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:
        return 0;
    case MDB_NOTFOUND:
        return -ENOENT;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
    case MDB_PAGE_FULL:
        return -ENOSPC;
    case MDB_READERS_FULL:
    case MDB_TLS_FULL:
        return -EAGAIN;
    case MDB_BAD_VALSIZE:
        return -EINVAL;
    case MDB_VERSION_MISMATCH:
    case MDB_INVALID:
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_PANIC:
        return -EIO;
    default:
        return rc > 0 ? -rc : -EIO;
    }
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

/* A decoded on-disk record; pointers borrow the LMDB map. */
struct rec_view {
    const char *key; /* NUL-terminated */
    size_t klen;
    const uint8_t *val;
    size_t vlen;
};

/* Parse an LMDB value. 0, or -EIO if it is not a well-formed record. */
static int rec_parse(const MDB_val *v, struct rec_view *out)
{
    const uint8_t *p = v->mv_data;
    uint32_t klen;

    if (v->mv_size < REC_HDR + 1 || memcmp(p, REC_MAGIC, 4) != 0)
        return -EIO;
    klen = get_be32(p + 4);
    if (klen > v->mv_size - REC_HDR - 1 || p[REC_HDR + klen] != 0 ||
        memchr(p + REC_HDR, 0, klen) != NULL)
        return -EIO;
    out->key = (const char *)(p + REC_HDR);
    out->klen = klen;
    out->val = p + REC_HDR + klen + 1;
    out->vlen = v->mv_size - REC_HDR - klen - 1;
    return 0;
}

/* Bytes a record counts for in dht_store_bytes(); 0 if unreadable. */
static uint64_t rec_weight(const MDB_val *v)
{
    struct rec_view r;

    if (rec_parse(v, &r) < 0)
        return 0;
    return (uint64_t)r.klen + r.vlen;
}

/* Copy len bytes into a malloc'd buffer with a NUL after them. */
static void *dup_value(const void *val, size_t len)
{
    uint8_t *b = xmalloc(len + 1);

    if (len)
        memcpy(b, val, len);
    b[len] = 0;
    return b;
}

static void log_bad_record(struct dht_store *s, const struct dht_id *id,
                           const char *what)
{
    char hex[2 * DHT_ID_LEN + 1];

    dht_id_hex(id, hex);
    log_error(STORE_MOD, NULL, "%s: record %s %s", s->dir ? s->dir : "mem", hex,
              what);
}

/* -------------------------------------------------------- memory backend */

struct dht_store *dht_store_new_mem(void)
{
    struct dht_store *s = xcalloc(1, sizeof *s);

    s->kind = STORE_MEM;
    s->lock_fd = -1;
    return s;
}

/* Index of the first entry with id >= x (exact: set *found). */
static size_t mem_lower_bound(const struct dht_store *s, const struct dht_id *x,
                              bool *found)
{
    size_t lo = 0, hi = s->n;

    *found = false;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = dht_id_cmp(&s->ent[mid].id, x);

        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
            if (c == 0)
                *found = true;
        }
    }
    return lo;
}

static const char *mem_key(const struct mem_entry *e)
{
    return (const char *)e->buf;
}

static int mem_get(struct dht_store *s, const struct dht_id *id,
                   const char *key, void **val_out, size_t *len_out)
{
    bool found;
    size_t i = mem_lower_bound(s, id, &found);
    const struct mem_entry *e;

    if (!found)
        return -ENOENT;
    e = &s->ent[i];
    if (strcmp(mem_key(e), key) != 0) {
        log_bad_record(s, id, "holds another key (SHA-1 collision?)");
        return -ENOENT;
    }
    *val_out = dup_value(e->buf + e->klen + 1, e->vlen);
    *len_out = e->vlen;
    return 0;
}

static int mem_put(struct dht_store *s, const struct dht_id *id,
                   const char *key, const void *val, size_t len)
{
    size_t klen = strlen(key);
    bool found;
    size_t i = mem_lower_bound(s, id, &found);
    uint8_t *buf;
    struct mem_entry *e;

    if (klen > UINT32_MAX || len > SIZE_MAX - klen - 1)
        return -EINVAL;
    buf = xmalloc(klen + 1 + len);
    memcpy(buf, key, klen + 1);
    if (len)
        memcpy(buf + klen + 1, val, len);
    if (found) {
        e = &s->ent[i];
        s->bytes -= e->klen + e->vlen;
        free(e->buf);
    } else {
        if (s->n == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 4;
            s->ent = xrealloc(s->ent, s->cap * sizeof *s->ent);
        }
        memmove(&s->ent[i + 1], &s->ent[i], (s->n - i) * sizeof *s->ent);
        s->n++;
        s->count++;
        e = &s->ent[i];
        e->id = *id;
    }
    e->klen = (uint32_t)klen;
    e->vlen = len;
    e->buf = buf;
    s->bytes += klen + len;
    return 0;
}

static int mem_del(struct dht_store *s, const struct dht_id *id,
                   const char *key)
{
    bool found;
    size_t i = mem_lower_bound(s, id, &found);
    struct mem_entry *e;

    if (!found)
        return -ENOENT;
    e = &s->ent[i];
    if (strcmp(mem_key(e), key) != 0) {
        log_bad_record(s, id, "holds another key (SHA-1 collision?)");
        return -ENOENT;
    }
    s->bytes -= e->klen + e->vlen;
    s->count--;
    free(e->buf);
    memmove(&s->ent[i], &s->ent[i + 1], (s->n - i - 1) * sizeof *s->ent);
    s->n--;
    /* Give memory back when a store empties (hand-off after a join). */
    if (s->cap > 16 && s->n < s->cap / 4) {
        s->cap /= 2;
        s->ent = xrealloc(s->ent, s->cap * sizeof *s->ent);
    }
    return 0;
}

/* Visit entries [from, to) of the array; returns the callback's stop value. */
static int mem_visit(struct dht_store *s, size_t from, size_t to,
                     dht_store_iter_fn *fn, void *arg)
{
    for (size_t i = from; i < to; i++) {
        const struct mem_entry *e = &s->ent[i];
        int rc = fn(arg, &e->id, mem_key(e), e->buf + e->klen + 1, e->vlen);

        if (rc)
            return rc;
    }
    return 0;
}

static int mem_range(struct dht_store *s, const struct dht_id *lo,
                     const struct dht_id *hi, dht_store_iter_fn *fn, void *arg)
{
    bool found;
    size_t start = mem_lower_bound(s, lo, &found);
    size_t end;
    int rc;

    if (found)
        start++; /* (lo, ...: lo itself is excluded */
    if (dht_id_cmp(lo, hi) < 0) {
        end = mem_lower_bound(s, hi, &found);
        if (found)
            end++;
        return mem_visit(s, start, end, fn, arg);
    }
    /* Wraps: after lo to the top of the ring, then from 0 up to hi. */
    rc = mem_visit(s, start, s->n, fn, arg);
    if (rc)
        return rc;
    end = mem_lower_bound(s, hi, &found);
    if (found)
        end++;
    if (end > start)
        end = start; /* lo == hi: stop where we began */
    return mem_visit(s, 0, end, fn, arg);
}

static void mem_free(struct dht_store *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->ent[i].buf);
    free(s->ent);
}

/* ---------------------------------------------------------- LMDB backend */

/* mkdir -p with mode 0700 for the directories it creates. */
static int mkdir_p(const char *dir)
{
    char *p = xstrdup(dir);
    int rc = 0;
    struct stat st;

    if (*dir == 0) {
        free(p);
        return -ENOENT;
    }
    for (char *c = p + 1;; c++) {
        if (*c != '/' && *c != 0)
            continue;
        char save = *c;
        *c = 0;
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            rc = -errno;
            break;
        }
        *c = save;
        if (save == 0)
            break;
    }
    if (rc == 0 && stat(dir, &st) < 0)
        rc = -errno;
    else if (rc == 0 && !S_ISDIR(st.st_mode))
        rc = -ENOTDIR;
    free(p);
    return rc;
}

/* Take the data directory's lock file. 0 or -errno (-EBUSY: in use). */
static int lock_dir(struct dht_store *s)
{
    size_t n = strlen(s->dir) + sizeof "/" STORE_LOCK_NAME;
    char *path = xmalloc(n);
    int rc = 0;

    snprintf(path, n, "%s/%s", s->dir, STORE_LOCK_NAME);
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        rc = -errno;
        log_error(STORE_MOD, NULL, "%s: %s", path, strerror(-rc));
    } else if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        log_error(STORE_MOD, NULL, "%s: data directory in use (%s)", s->dir,
                  strerror(-rc));
    }
    free(path);
    return rc;
}

/* Open the environment, shrinking the map if address space is limited. */
static int env_open(struct dht_store *s)
{
    unsigned flags = MDB_NOTLS | (s->sync_each ? 0 : MDB_NOSYNC);
    size_t map = STORE_MAP_SIZE;
    int rc;

    for (;;) {
        rc = mdb_env_create(&s->env);
        if (rc)
            return mdb_to_errno(rc);
        rc = mdb_env_set_maxdbs(s->env, STORE_MAXDBS);
        if (!rc)
            rc = mdb_env_set_mapsize(s->env, map);
        if (!rc)
            rc = mdb_env_open(s->env, s->dir, flags, 0600);
        /* mmap refuses a map larger than the address space allows: ENOMEM
         * under ulimit -v, EINVAL under valgrind. Halve and retry. */
        if ((rc == ENOMEM || rc == EINVAL) && map / 2 >= STORE_MAP_MIN) {
            mdb_env_close(s->env);
            s->env = NULL;
            map /= 2;
            continue;
        }
        if (rc) {
            log_error(STORE_MOD, NULL, "%s: cannot open LMDB: %s", s->dir,
                      mdb_strerror(rc));
            return mdb_to_errno(rc);
        }
        /* Free reader slots left by a process killed mid-read: they would
         * keep old pages from being reused. */
        mdb_reader_check(s->env, NULL);
        if (map != STORE_MAP_SIZE)
            log_warn(STORE_MOD, NULL, "%s: map size cut to %zu MiB", s->dir,
                     map >> 20);
        return 0;
    }
}

/* Open the records database and count what it holds. */
static int db_open_and_count(struct dht_store *s)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc;

    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        goto fail;
    rc = mdb_dbi_open(txn, STORE_DB_NAME, MDB_CREATE, &s->dbi);
    if (rc)
        goto fail_txn;
    rc = mdb_cursor_open(txn, s->dbi, &cur);
    if (rc)
        goto fail_txn;
    s->count = s->bytes = 0;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        s->count++;
        s->bytes += rec_weight(&v);
    }
    mdb_cursor_close(cur);
    if (rc != MDB_NOTFOUND)
        goto fail_txn;
    rc = mdb_txn_commit(txn); /* keeps the dbi handle */
    if (rc)
        goto fail;
    return 0;
fail_txn:
    mdb_txn_abort(txn);
fail:
    log_error(STORE_MOD, NULL, "%s: cannot read records: %s", s->dir,
              mdb_strerror(rc));
    return mdb_to_errno(rc);
}

int dht_store_open(const char *dir, bool sync_each, struct dht_store **out)
{
    struct dht_store *s;
    int rc;

    if (!dir)
        return -EINVAL;
    rc = mkdir_p(dir);
    if (rc < 0) {
        log_error(STORE_MOD, NULL, "cannot create data directory %s: %s", dir,
                  strerror(-rc));
        return rc;
    }
    s = xcalloc(1, sizeof *s);
    s->kind = STORE_LMDB;
    s->sync_each = sync_each;
    s->lock_fd = -1;
    s->dir = xstrdup(dir);
    rc = lock_dir(s);
    if (rc < 0)
        goto err;
    rc = env_open(s);
    if (rc < 0)
        goto err;
    rc = db_open_and_count(s);
    if (rc < 0)
        goto err;
    *out = s;
    return 0;
err:
    dht_store_free(s);
    return rc;
}

static int lmdb_get(struct dht_store *s, const struct dht_id *id,
                    const char *key, void **val_out, size_t *len_out)
{
    MDB_txn *txn;
    MDB_val k = {DHT_ID_LEN, (void *)id->b}, v;
    struct rec_view r;
    int rc;

    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return mdb_to_errno(rc);
    rc = mdb_get(txn, s->dbi, &k, &v);
    if (rc) {
        rc = mdb_to_errno(rc);
        goto out;
    }
    if (rec_parse(&v, &r) < 0) {
        log_bad_record(s, id, "is corrupt");
        rc = -EIO;
    } else if (strcmp(r.key, key) != 0) {
        log_bad_record(s, id, "holds another key (SHA-1 collision?)");
        rc = -ENOENT;
    } else {
        *val_out = dup_value(r.val, r.vlen);
        *len_out = r.vlen;
    }
out:
    mdb_txn_abort(txn);
    return rc;
}

/* Commit a write transaction; log and map a failure. */
static int lmdb_commit(struct dht_store *s, MDB_txn *txn)
{
    int rc = mdb_txn_commit(txn);

    if (rc)
        log_error(STORE_MOD, NULL, "%s: commit failed: %s", s->dir,
                  mdb_strerror(rc));
    return mdb_to_errno(rc);
}

static int lmdb_put(struct dht_store *s, const struct dht_id *id,
                    const char *key, const void *val, size_t len)
{
    size_t klen = strlen(key);
    MDB_txn *txn;
    MDB_val k = {DHT_ID_LEN, (void *)id->b}, v;
    uint64_t old_weight = 0;
    bool existed = false;
    uint8_t *p;
    int rc;

    if (klen > UINT32_MAX || len > SIZE_MAX - REC_HDR - klen - 1)
        return -EINVAL;
    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return mdb_to_errno(rc);
    rc = mdb_get(txn, s->dbi, &k, &v);
    if (rc == 0) {
        existed = true;
        old_weight = rec_weight(&v);
    } else if (rc != MDB_NOTFOUND) {
        goto fail;
    }
    /* Reserve the record in the map and build it there: no extra copy of
     * a large value. */
    v.mv_size = REC_HDR + klen + 1 + len;
    v.mv_data = NULL;
    rc = mdb_put(txn, s->dbi, &k, &v, MDB_RESERVE);
    if (rc)
        goto fail;
    p = v.mv_data;
    memcpy(p, REC_MAGIC, 4);
    put_be32(p + 4, (uint32_t)klen);
    memcpy(p + REC_HDR, key, klen + 1);
    if (len)
        memcpy(p + REC_HDR + klen + 1, val, len);
    rc = lmdb_commit(s, txn);
    if (rc < 0)
        return rc;
    if (!existed)
        s->count++;
    s->bytes = s->bytes - old_weight + klen + len;
    return 0;
fail:
    mdb_txn_abort(txn);
    log_error(STORE_MOD, NULL, "%s: put failed: %s", s->dir, mdb_strerror(rc));
    return mdb_to_errno(rc);
}

static int lmdb_del(struct dht_store *s, const struct dht_id *id,
                    const char *key)
{
    MDB_txn *txn;
    MDB_val k = {DHT_ID_LEN, (void *)id->b}, v;
    struct rec_view r;
    uint64_t weight;
    int rc;

    rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return mdb_to_errno(rc);
    rc = mdb_get(txn, s->dbi, &k, &v);
    if (rc) {
        mdb_txn_abort(txn);
        return mdb_to_errno(rc);
    }
    if (rec_parse(&v, &r) < 0) {
        /* Unverifiable: keep it for inspection; a put replaces it. */
        log_bad_record(s, id, "is corrupt; not deleted");
        mdb_txn_abort(txn);
        return -EIO;
    }
    if (strcmp(r.key, key) != 0) {
        log_bad_record(s, id, "holds another key (SHA-1 collision?)");
        mdb_txn_abort(txn);
        return -ENOENT;
    }
    weight = r.klen + r.vlen;
    rc = mdb_del(txn, s->dbi, &k, NULL);
    if (rc) {
        mdb_txn_abort(txn);
        log_error(STORE_MOD, NULL, "%s: delete failed: %s", s->dir,
                  mdb_strerror(rc));
        return mdb_to_errno(rc);
    }
    rc = lmdb_commit(s, txn);
    if (rc < 0)
        return rc;
    s->count--;
    s->bytes -= weight;
    return 0;
}

/* Compare an LMDB key with an id as LMDB orders keys (bytes, then length). */
static int key_cmp(const MDB_val *k, const uint8_t *id)
{
    size_t n = k->mv_size < DHT_ID_LEN ? k->mv_size : DHT_ID_LEN;
    int c = memcmp(k->mv_data, id, n);

    if (c)
        return c;
    return k->mv_size < DHT_ID_LEN ? -1 : k->mv_size > DHT_ID_LEN;
}

/*
 * Visit records from the cursor's current one while their id is <= stop
 * (stop NULL: to the end). *rc_io is set to -EIO if a corrupt record was
 * skipped. Returns the callback's stop value, 0, or a negative LMDB error.
 */
static int lmdb_visit(struct dht_store *s, MDB_cursor *cur, MDB_val *k,
                      MDB_val *v, int get_rc, const uint8_t *stop,
                      dht_store_iter_fn *fn, void *arg, int *rc_io)
{
    int rc = get_rc;

    for (; rc == 0; rc = mdb_cursor_get(cur, k, v, MDB_NEXT)) {
        struct dht_id id;
        struct rec_view r;

        if (stop && key_cmp(k, stop) > 0)
            return 0;
        if (k->mv_size != DHT_ID_LEN) {
            log_error(STORE_MOD, NULL, "%s: key of %zu bytes skipped", s->dir,
                      k->mv_size);
            *rc_io = -EIO;
            continue;
        }
        memcpy(id.b, k->mv_data, DHT_ID_LEN);
        if (rec_parse(v, &r) < 0) {
            log_bad_record(s, &id, "is corrupt; skipped");
            *rc_io = -EIO;
            continue;
        }
        rc = fn(arg, &id, r.key, r.val, r.vlen);
        if (rc)
            return rc;
    }
    return rc == MDB_NOTFOUND ? 0 : mdb_to_errno(rc);
}

/*
 * A corrupt record in the range is skipped with a log line, the scan goes
 * on, and -EIO is returned at the end (unless the callback stopped it), so
 * one bad record does not block a hand-off of the others.
 */
static int lmdb_range(struct dht_store *s, const struct dht_id *lo,
                      const struct dht_id *hi, dht_store_iter_fn *fn, void *arg)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k = {DHT_ID_LEN, (void *)lo->b}, v;
    int rc, grc, rc_io = 0;
    bool wraps = dht_id_cmp(lo, hi) >= 0;

    rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return mdb_to_errno(rc);
    rc = mdb_cursor_open(txn, s->dbi, &cur);
    if (rc) {
        mdb_txn_abort(txn);
        return mdb_to_errno(rc);
    }
    /* First record with id > lo. */
    grc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (grc == 0 && key_cmp(&k, lo->b) == 0)
        grc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    rc = lmdb_visit(s, cur, &k, &v, grc, wraps ? NULL : hi->b, fn, arg, &rc_io);
    if (rc == 0 && wraps) {
        /* From the bottom of the ring up to hi; for lo == hi that ends at
         * lo, where the first pass began. */
        grc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
        rc = lmdb_visit(s, cur, &k, &v, grc, hi->b, fn, arg, &rc_io);
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc ? rc : rc_io;
}

/* ------------------------------------------------------------ dispatch */

void dht_store_free(struct dht_store *s)
{
    if (!s)
        return;
    if (s->kind == STORE_MEM) {
        mem_free(s);
    } else {
        if (s->env) {
            /* With MDB_NOSYNC, leave nothing unsynced on a clean close. */
            if (!s->sync_each)
                mdb_env_sync(s->env, 1);
            mdb_env_close(s->env);
        }
        if (s->lock_fd >= 0)
            close(s->lock_fd);
    }
    free(s->dir);
    free(s);
}

int dht_store_get(struct dht_store *s, const struct dht_id *id, const char *key,
                  void **val_out, size_t *len_out)
{
    if (s->kind == STORE_MEM)
        return mem_get(s, id, key, val_out, len_out);
    return lmdb_get(s, id, key, val_out, len_out);
}

int dht_store_put(struct dht_store *s, const struct dht_id *id, const char *key,
                  const void *val, size_t len)
{
    if (s->iterating) {
        log_error(STORE_MOD, NULL, "put during a range scan refused");
        return -EBUSY;
    }
    if (s->kind == STORE_MEM)
        return mem_put(s, id, key, val, len);
    return lmdb_put(s, id, key, val, len);
}

int dht_store_del(struct dht_store *s, const struct dht_id *id, const char *key)
{
    if (s->iterating) {
        log_error(STORE_MOD, NULL, "delete during a range scan refused");
        return -EBUSY;
    }
    if (s->kind == STORE_MEM)
        return mem_del(s, id, key);
    return lmdb_del(s, id, key);
}

int dht_store_range(struct dht_store *s, const struct dht_id *lo,
                    const struct dht_id *hi, dht_store_iter_fn *fn, void *arg)
{
    int rc;

    s->iterating++;
    if (s->kind == STORE_MEM)
        rc = mem_range(s, lo, hi, fn, arg);
    else
        rc = lmdb_range(s, lo, hi, fn, arg);
    s->iterating--;
    return rc;
}

uint64_t dht_store_count(struct dht_store *s)
{
    return s->count;
}

uint64_t dht_store_bytes(struct dht_store *s)
{
    return s->bytes;
}

int dht_store_sync(struct dht_store *s)
{
    int rc;

    if (s->kind == STORE_MEM || s->sync_each)
        return 0;
    rc = mdb_env_sync(s->env, 1);
    if (rc)
        log_error(STORE_MOD, NULL, "%s: sync failed: %s", s->dir,
                  mdb_strerror(rc));
    return mdb_to_errno(rc);
}
