/*
 * fs/file.c - open regular files: write-back, read-ahead and chunk I/O.
 *
 * A file's bytes live in fixed-size chunks data:<uuid-hex>:<n>, each a
 * Chord__Chunk holding the bytes and their SHA-1. A chunk stores only its
 * bytes below the file's end; a missing chunk, and the part of a chunk past
 * what it stores, read as zeros (sparse files). The SHA-1 is checked on
 * every read: a mismatch is an EIO and an error line, never bad bytes.
 *
 * Open files of one mount share one struct fs_file per file uuid (so two
 * descriptors of one file see each other's writes at once). It caches
 * chunks: dirty ones (written, not yet in the ring) and clean ones (read or
 * already written). The cache of a file is bounded by max_chunks (a quarter
 * of --cache-size, at least 4 chunks), and all files' caches together by
 * --cache-size (fs->cache_used: past it, a file needing room gives up its
 * own chunks, down to 2), so the daemon's memory stays bounded for files
 * larger than memory and for many open files: when a quarter of a file's
 * bound is dirty it goes to the ring in parallel (write-behind) while the
 * next quarter fills, and clean chunks are evicted least recently used
 * first.
 *
 * Close-to-open: flush (close), fsync and release write every dirty chunk
 * and then the inode record's size and mtime (compare-and-set). Open
 * rereads the inode record and, unless this mount holds unwritten data of
 * the file, takes its size and drops cached chunks.
 *
 * Read-ahead: a read that starts where the previous one ended doubles the
 * window (up to 8 MiB or half the bound) and a cache miss fetches the whole
 * window of chunks in parallel.
 *
 * Locks: fs->lock guards the list of open files and their refs; each
 * file's mu guards its state and is held across that file's ring I/O, which
 * serialises I/O on one file within a mount (never across files). fs->lock
 * is never held across a ring call.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs-int.h"
#include "proto/wire.h"

#define RA_BYTES      (8u << 20) /* read-ahead window bound */
#define DELETE_WINDOW 64         /* parallel deletes */

struct chunk {
    uint64_t index;
    uint8_t *data; /* cs bytes; zero past len */
    uint32_t len;  /* bytes valid (stored) */
    bool dirty;    /* changed since it was last sent to the ring */
    bool inflight; /* a write of it is in flight (write-behind) */
    uint64_t used; /* LRU tick */
};

/* A batch of chunk reads or writes in flight. */
struct pending {
    struct fs_batch *b; /* NULL: none */
    uint64_t *idx;      /* chunk numbers, one per slot */
    uint32_t *len;      /* writes: bytes sent */
    size_t n;
};

struct fs_file {
    struct fs *fs;        /* the mount, for its cache accounting */
    struct fs_file *next; /* fs->files; protected by fs->lock */
    int refs;             /* protected by fs->lock */
    uint8_t uuid[FS_UUID_LEN];
    pthread_mutex_t mu; /* guards all below; held across ring I/O */
    uint32_t cs;
    uint64_t size;       /* this mount's view of the file size */
    uint64_t stored_end; /* chunks at or past this offset are not stored */
    int64_t mtime_ns;
    bool meta_dirty; /* size/mtime not yet in the inode record */
    struct chunk *chunks;
    size_t n, max_chunks, n_dirty;
    uint64_t tick;
    uint64_t ra_next;  /* offset just past the last read */
    uint32_t ra_win;   /* read-ahead window, chunks */
    struct pending wb; /* write-behind in flight */
    struct pending rb; /* read-ahead in flight */
    int wb_err;        /* first write-behind error, reported by flush */
};

static int wb_complete(struct fs *fs, struct fs_file *f);
static void rb_complete(struct fs *fs, struct fs_file *f, bool insert);

/* ------------------------------------------------------------ the table */

static struct fs_file *find_locked(struct fs *fs,
                                   const uint8_t uuid[FS_UUID_LEN])
{
    for (struct fs_file *f = fs->files; f; f = f->next)
        if (memcmp(f->uuid, uuid, FS_UUID_LEN) == 0)
            return f;
    return NULL;
}

struct fs_file *fs_file_find(struct fs *fs, const uint8_t uuid[FS_UUID_LEN])
{
    struct fs_file *f;

    pthread_mutex_lock(&fs->lock);
    f = find_locked(fs, uuid);
    if (f)
        f->refs++;
    pthread_mutex_unlock(&fs->lock);
    return f;
}

static void chunk_drop(struct fs_file *f, size_t i)
{
    if (f->chunks[i].dirty)
        f->n_dirty--;
    atomic_fetch_sub(&f->fs->cache_used, f->cs);
    free(f->chunks[i].data);
    f->chunks[i] = f->chunks[--f->n];
}

static void drop_clean(struct fs_file *f)
{
    for (size_t i = 0; i < f->n;) {
        if (!f->chunks[i].dirty && !f->chunks[i].inflight)
            chunk_drop(f, i);
        else
            i++;
    }
}

int fs_file_open(struct fs *fs, const struct fs_inode *ino,
                 struct fs_file **out)
{
    struct fs_file *f, *fresh = NULL;
    uint64_t bound;

    pthread_mutex_lock(&fs->lock);
    f = find_locked(fs, ino->uuid);
    if (!f) {
        fresh = f = wire_xcalloc(1, sizeof *f);
        f->fs = fs;
        memcpy(f->uuid, ino->uuid, FS_UUID_LEN);
        pthread_mutex_init(&f->mu, NULL);
        f->cs = ino->chunk_size;
        bound = fs->cfg.cache_bytes / 4 / f->cs;
        f->max_chunks = bound < 4 ? 4 : (size_t)bound;
        f->chunks = wire_xcalloc(f->max_chunks + 1, sizeof *f->chunks);
        f->size = ino->size;
        f->mtime_ns = ino->mtime_ns;
        f->ra_win = 1;
        f->next = fs->files;
        fs->files = f;
    }
    f->refs++;
    pthread_mutex_unlock(&fs->lock);

    pthread_mutex_lock(&f->mu);
    if (!fresh && f->n_dirty == 0 && !f->wb.b && !f->meta_dirty) {
        /* Close-to-open: take the record's view, forget cached bytes. */
        rb_complete(fs, f, false);
        f->size = ino->size;
        f->mtime_ns = ino->mtime_ns;
        drop_clean(f);
    }
    if (ino->size > f->stored_end)
        f->stored_end = ino->size;
    pthread_mutex_unlock(&f->mu);
    *out = f;
    return 0;
}

void fs_file_unref(struct fs *fs, struct fs_file *f)
{
    struct fs_file **pp;
    bool last;

    pthread_mutex_lock(&fs->lock);
    last = --f->refs == 0;
    if (last) {
        for (pp = &fs->files; *pp; pp = &(*pp)->next) {
            if (*pp == f) {
                *pp = f->next;
                break;
            }
        }
    }
    pthread_mutex_unlock(&fs->lock);
    if (!last)
        return;
    pthread_mutex_lock(&f->mu);
    rb_complete(fs, f, false);
    wb_complete(fs, f);
    pthread_mutex_unlock(&f->mu);
    if (f->n_dirty)
        log_error("fs", fs->node, "open file dropped with %zu dirty chunks",
                  f->n_dirty);
    while (f->n)
        chunk_drop(f, f->n - 1);
    free(f->chunks);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void fs_file_attrs(struct fs_file *f, uint64_t *size_out, int64_t *mtime_out)
{
    pthread_mutex_lock(&f->mu);
    *size_out = f->size;
    *mtime_out = f->mtime_ns;
    pthread_mutex_unlock(&f->mu);
}

uint64_t fs_file_stored_end(struct fs *fs, const uint8_t uuid[FS_UUID_LEN])
{
    struct fs_file *f = fs_file_find(fs, uuid);
    uint64_t end = 0;

    if (!f)
        return 0;
    pthread_mutex_lock(&f->mu);
    end = f->stored_end > f->size ? f->stored_end : f->size;
    pthread_mutex_unlock(&f->mu);
    fs_file_unref(fs, f);
    return end;
}

/* ----------------------------------------------------------- chunk I/O */

static struct chunk *cache_find(struct fs_file *f, uint64_t index)
{
    for (size_t i = 0; i < f->n; i++) {
        if (f->chunks[i].index == index) {
            f->chunks[i].used = ++f->tick;
            return &f->chunks[i];
        }
    }
    return NULL;
}

/* Pack data[0, len) as a Chunk with its SHA-1. */
static int chunk_pack(const uint8_t *data, uint32_t len, uint8_t **buf,
                      size_t *blen)
{
    Chord__Chunk c = CHORD__CHUNK__INIT;
    struct dht_id sum;

    dht_id_hash(data, len, &sum);
    c.data.data = (uint8_t *)data;
    c.data.len = len;
    c.sha1.data = sum.b;
    c.sha1.len = DHT_ID_LEN;
    return wire_chunk_pack(&c, buf, blen) < 0 ? -EIO : 0;
}

/* Unpack and check a stored chunk into dst[cs] (zero-filled past it). */
static int chunk_unpack(struct fs *fs, const char *key, const void *val,
                        size_t len, uint8_t *dst, uint32_t cs,
                        uint32_t *len_out)
{
    Chord__Chunk *c;
    struct dht_id sum;

    if (wire_chunk_unpack(val, len, &c) < 0) {
        log_error("fs", fs->node, "%s: undecodable chunk", key);
        return -EIO;
    }
    if (c->data.len > cs || c->sha1.len != DHT_ID_LEN) {
        log_error("fs", fs->node, "%s: malformed chunk (%zu bytes)", key,
                  c->data.len);
        wire_chunk_free(c);
        return -EIO;
    }
    dht_id_hash(c->data.data, c->data.len, &sum);
    if (memcmp(sum.b, c->sha1.data, DHT_ID_LEN) != 0) {
        log_error("fs", fs->node, "%s: SHA-1 mismatch, refusing its bytes",
                  key);
        wire_chunk_free(c);
        return -EIO;
    }
    if (c->data.len)
        memcpy(dst, c->data.data, c->data.len);
    memset(dst + c->data.len, 0, cs - c->data.len);
    *len_out = (uint32_t)c->data.len;
    wire_chunk_free(c);
    return 0;
}

static void pending_free(struct pending *p)
{
    fs_batch_free(p->b);
    free(p->idx);
    free(p->len);
    memset(p, 0, sizeof *p);
}

/* Wait for the write-behind batch in flight and settle its chunks: sent
 * ones become clean unless written again meanwhile, failed ones dirty. */
static int wb_complete(struct fs *fs, struct fs_file *f)
{
    int rc = 0;

    if (!f->wb.b)
        return 0;
    fs_batch_wait(f->wb.b);
    for (size_t k = 0; k < f->wb.n; k++) {
        int err = fs_batch_result(f->wb.b, k, NULL, NULL);
        struct chunk *c = NULL;
        uint64_t end;

        for (size_t i = 0; i < f->n && !c; i++)
            if (f->chunks[i].index == f->wb.idx[k] && f->chunks[i].inflight)
                c = &f->chunks[i];
        if (!c)
            continue;
        c->inflight = false;
        if (err < 0) {
            if (rc == 0)
                rc = fs_ring_errno(err);
            if (!c->dirty) {
                c->dirty = true;
                f->n_dirty++;
            }
            continue;
        }
        end = f->wb.idx[k] * f->cs + f->wb.len[k];
        if (end > f->stored_end)
            f->stored_end = end;
    }
    if (rc < 0) {
        log_warn("fs", fs->node, "write-back of %zu chunks failed: %s", f->wb.n,
                 strerror(-rc));
        if (f->wb_err == 0)
            f->wb_err = rc;
    }
    pending_free(&f->wb);
    return rc;
}

/* Send every dirty chunk to the ring in one parallel batch and return
 * without waiting (write-behind); a batch still in flight is settled
 * first, so writes of one chunk reach the ring in order. */
static int wb_submit(struct fs *fs, struct fs_file *f)
{
    size_t k = 0;
    int rc;

    rc = wb_complete(fs, f);
    if (f->n_dirty == 0)
        return rc;
    f->wb.b = fs_batch_new(fs, f->n_dirty);
    f->wb.idx = wire_xcalloc(f->n_dirty, sizeof *f->wb.idx);
    f->wb.len = wire_xcalloc(f->n_dirty, sizeof *f->wb.len);
    for (size_t i = 0; i < f->n && k < f->n_dirty; i++) {
        struct chunk *c = &f->chunks[i];
        char key[FS_KEY_MAX];
        uint8_t *buf;
        size_t blen;
        uint32_t len = c->len, valid;

        if (!c->dirty)
            continue;
        /* Never store bytes past the end of file. */
        valid = fs_chunk_valid(c->index, f->size, f->cs);
        if (valid < len)
            len = valid;
        fs_key_data(f->uuid, c->index, key, sizeof key);
        if (chunk_pack(c->data, len, &buf, &blen) < 0)
            continue; /* stays dirty */
        f->wb.idx[k] = c->index;
        f->wb.len[k] = len;
        fs_batch_put(f->wb.b, k, key, buf, blen);
        free(buf);
        k++;
    }
    f->wb.n = k;
    /* Mark only after the scan: k counted against n_dirty above. */
    for (size_t j = 0; j < k; j++) {
        struct chunk *c = cache_find(f, f->wb.idx[j]);

        c->dirty = false;
        c->inflight = true;
        f->n_dirty--;
    }
    return rc;
}

/* Write every dirty chunk to the ring and wait for it. Also reports a
 * write-behind failure since the last flush. */
static int flush_dirty_locked(struct fs *fs, struct fs_file *f)
{
    int rc = wb_submit(fs, f), rc2 = wb_complete(fs, f);

    if (rc == 0)
        rc = rc2;
    if (rc == 0 && f->n_dirty > 0)
        rc = -EIO;
    if (rc == 0 && f->wb_err) {
        /* The failed chunks were resent successfully just now. */
        f->wb_err = 0;
    }
    if (rc < 0)
        f->wb_err = 0; /* reported now */
    return rc;
}

/* Make room for one more chunk: evict the least recently used clean one,
 * settling or forcing write-back if that is all there is. */
static bool over_bound(struct fs *fs, struct fs_file *f)
{
    return f->n >= f->max_chunks ||
           (f->n >= 2 &&
            atomic_load(&fs->cache_used) + f->cs > fs->cfg.cache_bytes);
}

static int ensure_room(struct fs *fs, struct fs_file *f)
{
    while (over_bound(fs, f)) {
        size_t victim = SIZE_MAX;
        int rc;

        for (size_t i = 0; i < f->n; i++)
            if (!f->chunks[i].dirty && !f->chunks[i].inflight &&
                (victim == SIZE_MAX ||
                 f->chunks[i].used < f->chunks[victim].used))
                victim = i;
        if (victim != SIZE_MAX) {
            chunk_drop(f, victim);
            continue;
        }
        if (f->wb.b)
            rc = wb_complete(fs, f);
        else
            rc = flush_dirty_locked(fs, f);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static struct chunk *chunk_insert(struct fs_file *f, uint64_t index,
                                  uint8_t *data, uint32_t len)
{
    struct chunk *c = &f->chunks[f->n++];

    atomic_fetch_add(&f->fs->cache_used, f->cs);
    c->index = index;
    c->data = data;
    c->len = len;
    c->dirty = false;
    c->inflight = false;
    c->used = ++f->tick;
    return c;
}

/* Submit gets of the chunks in [first, first + count) that are neither
 * cached nor known absent (past stored_end), below the file size. */
static void reads_submit(struct fs *fs, struct fs_file *f, uint64_t first,
                         uint64_t count, struct pending *p)
{
    memset(p, 0, sizeof *p);
    p->b = fs_batch_new(fs, (size_t)count);
    p->idx = wire_xcalloc((size_t)count, sizeof *p->idx);
    for (uint64_t n = first; n < first + count; n++) {
        char key[FS_KEY_MAX];

        if (n * f->cs >= f->size && n != first)
            break;
        if (n * f->cs >= f->stored_end || cache_find(f, n))
            continue;
        fs_key_data(f->uuid, n, key, sizeof key);
        p->idx[p->n] = n;
        fs_batch_get(p->b, p->n, key);
        p->n++;
    }
}

/* Wait for reads and cache what they brought. Returns the error of chunk
 * `need` (UINT64_MAX: none needed); others' failures are ignored. */
static int reads_finish(struct fs *fs, struct fs_file *f, struct pending *p,
                        uint64_t need)
{
    int rc = 0;

    fs_batch_wait(p->b);
    for (size_t k = 0; k < p->n; k++) {
        const void *val;
        size_t len;
        int err = fs_batch_result(p->b, k, &val, &len);
        uint8_t *data;
        uint32_t clen = 0;
        char key[FS_KEY_MAX];

        if (err < 0 && err != -ENOENT) {
            if (p->idx[k] == need) {
                rc = fs_ring_errno(err);
                log_warn("fs", fs->node, "reading a chunk failed: %s",
                         strerror(-rc));
            }
            continue;
        }
        if (cache_find(f, p->idx[k]))
            continue;
        data = wire_xmalloc(f->cs);
        if (err == -ENOENT) {
            memset(data, 0, f->cs); /* a hole */
        } else {
            fs_key_data(f->uuid, p->idx[k], key, sizeof key);
            err = chunk_unpack(fs, key, val, len, data, f->cs, &clen);
            if (err < 0) {
                free(data);
                if (p->idx[k] == need)
                    rc = err;
                continue;
            }
        }
        if (ensure_room(fs, f) < 0) {
            free(data);
            if (p->idx[k] == need)
                rc = -EIO;
            continue;
        }
        chunk_insert(f, p->idx[k], data, clen);
    }
    pending_free(p);
    return rc;
}

/* Settle the read-ahead in flight: cache its chunks, or drop them when
 * the file changed locally meanwhile (they may be older than our bytes). */
static void rb_complete(struct fs *fs, struct fs_file *f, bool insert)
{
    if (!f->rb.b)
        return;
    if (insert) {
        reads_finish(fs, f, &f->rb, UINT64_MAX);
    } else {
        fs_batch_wait(f->rb.b);
        pending_free(&f->rb);
    }
}

/* Bring chunk n into the cache, with up to count - 1 chunks after it. */
static int fetch_locked(struct fs *fs, struct fs_file *f, uint64_t n,
                        uint64_t count)
{
    struct pending p;
    int rc;

    if (f->rb.b) {
        rb_complete(fs, f, true);
        if (cache_find(f, n))
            return 0;
    }
    if (count > f->max_chunks / 2)
        count = f->max_chunks / 2 ? f->max_chunks / 2 : 1;
    if (n * f->cs >= f->stored_end) {
        /* Known absent: a zero chunk without asking the ring. */
        rc = ensure_room(fs, f);
        if (rc < 0)
            return rc;
        chunk_insert(f, n, wire_xcalloc(1, f->cs), 0);
        return 0;
    }
    reads_submit(fs, f, n, count, &p);
    rc = reads_finish(fs, f, &p, n);
    if (rc == 0 && !cache_find(f, n)) {
        /* Evicted by its own read-ahead: fetch it alone. */
        reads_submit(fs, f, n, 1, &p);
        rc = reads_finish(fs, f, &p, n);
    }
    return rc;
}

/* Sequential reading: keep the next window of chunks in flight. */
static void prefetch(struct fs *fs, struct fs_file *f, uint64_t pos)
{
    uint64_t n = fs_chunk_index(pos, f->cs);
    uint64_t end = n + f->ra_win;

    if (f->rb.b || f->ra_win < 2)
        return;
    /* The mount's cache is nearly full: read-ahead would only evict. */
    if (atomic_load(&fs->cache_used) + (uint64_t)f->ra_win * f->cs >
        fs->cfg.cache_bytes)
        return;
    while (n < end && n * f->cs < f->size &&
           (n * f->cs >= f->stored_end || cache_find(f, n)))
        n++;
    if (n >= end || n * f->cs >= f->size || n * f->cs >= f->stored_end)
        return;
    reads_submit(fs, f, n, f->ra_win, &f->rb);
    if (f->rb.n == 0)
        pending_free(&f->rb);
}

int fs_file_read(struct fs *fs, struct fs_file *f, char *buf, size_t size,
                 uint64_t off)
{
    size_t done = 0;
    uint32_t max_win;
    int rc = 0;

    pthread_mutex_lock(&f->mu);
    if (off >= f->size)
        goto out;
    if (size > f->size - off)
        size = (size_t)(f->size - off);
    max_win = RA_BYTES / f->cs;
    if (max_win > f->max_chunks / 2)
        max_win = (uint32_t)(f->max_chunks / 2);
    if (max_win < 1)
        max_win = 1;
    if (off == f->ra_next)
        f->ra_win = f->ra_win * 2 > max_win ? max_win : f->ra_win * 2;
    else
        f->ra_win = 1;
    while (done < size) {
        uint64_t pos = off + done;
        uint64_t n = fs_chunk_index(pos, f->cs);
        uint32_t co = fs_chunk_offset(pos, f->cs);
        size_t piece = f->cs - co;
        struct chunk *c;

        if (piece > size - done)
            piece = size - done;
        c = cache_find(f, n);
        if (!c) {
            rc = fetch_locked(fs, f, n, f->ra_win);
            c = rc < 0 ? NULL : cache_find(f, n);
            if (!c) {
                if (rc == 0)
                    rc = -EIO;
                break;
            }
        }
        memcpy(buf + done, c->data + co, piece);
        done += piece;
    }
    f->ra_next = off + done;
    if (rc == 0)
        prefetch(fs, f, off + done);
out:
    pthread_mutex_unlock(&f->mu);
    return done > 0 ? (int)done : rc;
}

int fs_file_write(struct fs *fs, struct fs_file *f, const char *buf,
                  size_t size, uint64_t off)
{
    size_t done = 0;
    int rc = 0;

    pthread_mutex_lock(&f->mu);
    /* Read-ahead fetched before this write may hold older bytes. */
    rb_complete(fs, f, false);
    while (done < size) {
        uint64_t pos = off + done;
        uint64_t n = fs_chunk_index(pos, f->cs);
        uint32_t co = fs_chunk_offset(pos, f->cs);
        size_t piece = f->cs - co;
        struct chunk *c;

        if (piece > size - done)
            piece = size - done;
        c = cache_find(f, n);
        if (!c) {
            bool whole = co == 0 && piece == f->cs;

            if (!whole && n * f->cs < f->stored_end) {
                rc = fetch_locked(fs, f, n, 1);
                if (rc < 0)
                    break;
                c = cache_find(f, n);
            } else {
                rc = ensure_room(fs, f);
                if (rc < 0)
                    break;
                c = chunk_insert(f, n, wire_xcalloc(1, f->cs), 0);
            }
            if (!c) {
                rc = -EIO;
                break;
            }
        }
        memcpy(c->data + co, buf + done, piece);
        if (co + piece > c->len)
            c->len = (uint32_t)(co + piece);
        if (!c->dirty) {
            c->dirty = true;
            f->n_dirty++;
        }
        done += piece;
        if (off + done > f->size)
            f->size = off + done;
    }
    if (done > 0) {
        f->mtime_ns = fs_now_ns();
        f->meta_dirty = true;
    }
    /* Write-behind: a quarter of the bound dirty goes out while the next
     * quarter fills. */
    if (rc == 0 && f->n_dirty >= (f->max_chunks / 4 ? f->max_chunks / 4 : 1))
        wb_submit(fs, f);
    pthread_mutex_unlock(&f->mu);
    /* Bytes taken are buffered; a failed write-back surfaces at flush. */
    return done > 0 ? (int)done : rc;
}

struct size_edit {
    const uint8_t *uuid;
    uint64_t size;
    int64_t mtime_ns;
    bool set_ctime;
};

static int edit_size(struct fs_inode *ino, void *arg)
{
    struct size_edit *e = arg;

    if (ino->kind != FS_REG || memcmp(ino->uuid, e->uuid, FS_UUID_LEN) != 0)
        return 1; /* the path names another file now: leave it alone */
    ino->size = e->size;
    ino->mtime_ns = e->mtime_ns;
    if (e->set_ctime || e->mtime_ns > ino->ctime_ns)
        ino->ctime_ns = e->set_ctime ? fs_now_ns() : e->mtime_ns;
    return 0;
}

int fs_file_flush(struct fs *fs, struct fs_file *f, const char *path)
{
    int rc;

    pthread_mutex_lock(&f->mu);
    rc = flush_dirty_locked(fs, f);
    if (rc == 0 && f->meta_dirty && path) {
        struct size_edit e = {f->uuid, f->size, f->mtime_ns, false};

        rc = fs_inode_update(fs, path, edit_size, &e);
        if (rc == -ENOENT) {
            /* Removed or renamed through another mount meanwhile: the
             * bytes are stored, there is no record left to size. */
            log_warn("fs", fs->node, "%s vanished before its size was set",
                     path);
            rc = 0;
        }
        if (rc == 0)
            f->meta_dirty = false;
    }
    pthread_mutex_unlock(&f->mu);
    return rc;
}

/* ------------------------------------------------- truncate and delete */

int fs_data_delete(struct fs *fs, const uint8_t uuid[FS_UUID_LEN],
                   uint64_t first, uint64_t count)
{
    int rc = 0;

    for (uint64_t base = first; base < first + count; base += DELETE_WINDOW) {
        uint64_t n = first + count - base;
        struct fs_batch *b;

        if (n > DELETE_WINDOW)
            n = DELETE_WINDOW;
        b = fs_batch_new(fs, (size_t)n);
        for (uint64_t k = 0; k < n; k++) {
            char key[FS_KEY_MAX];

            fs_key_data(uuid, base + k, key, sizeof key);
            fs_batch_delete(b, (size_t)k, key);
        }
        fs_batch_wait(b);
        for (uint64_t k = 0; k < n; k++) {
            int err = fs_batch_result(b, (size_t)k, NULL, NULL);

            if (err < 0 && err != -ENOENT && rc == 0)
                rc = fs_ring_errno(err);
        }
        fs_batch_free(b);
        if (rc < 0) {
            char hex[33];

            fs_uuid_hex(uuid, hex);
            log_warn("fs", fs->node, "deleting chunks of %s failed: %s", hex,
                     strerror(-rc));
            return rc;
        }
    }
    return 0;
}

/* Rewrite chunk n of uuid keeping only its first keep bytes. */
static int trim_chunk(struct fs *fs, const uint8_t *uuid, uint32_t cs,
                      uint64_t n, uint32_t keep)
{
    char key[FS_KEY_MAX];
    void *val;
    size_t len;
    uint8_t *data, *buf;
    uint32_t clen;
    int rc;

    fs_key_data(uuid, n, key, sizeof key);
    rc = dht_get(fs->peer, key, &val, &len, NULL);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return fs_ring_errno(rc);
    data = wire_xmalloc(cs);
    rc = chunk_unpack(fs, key, val, len, data, cs, &clen);
    free(val);
    if (rc == 0 && clen > keep) {
        rc = chunk_pack(data, keep, &buf, &len);
        if (rc == 0) {
            rc = fs_ring_errno(
                dht_put(fs->peer, key, buf, len, DHT_ANY_VERSION, NULL));
            free(buf);
        }
    }
    free(data);
    return rc;
}

/* Local side of a truncate: forget bytes past size. f->mu held. */
static void truncate_local(struct fs_file *f, uint64_t size)
{
    for (size_t i = 0; i < f->n;) {
        struct chunk *c = &f->chunks[i];
        uint64_t start = c->index * f->cs;

        if (start >= size) {
            chunk_drop(f, i);
            continue;
        }
        if (start + c->len > size) {
            uint32_t keep = (uint32_t)(size - start);

            memset(c->data + keep, 0, c->len - keep);
            c->len = keep;
        }
        i++;
    }
    f->size = size;
    f->stored_end = size;
    f->mtime_ns = fs_now_ns();
}

int fs_file_truncate(struct fs *fs, const char *path, uint64_t size)
{
    struct fs_inode ino;
    struct fs_file *f;
    uint64_t old_end, n;
    uint32_t cs, co;
    int rc;

    rc = fs_inode_get(fs, path, &ino, NULL);
    if (rc < 0)
        return rc;
    if (ino.kind == FS_DIR) {
        fs_inode_fini(&ino);
        return -EISDIR;
    }
    if (ino.kind != FS_REG) {
        fs_inode_fini(&ino);
        return -EINVAL;
    }
    cs = ino.chunk_size;
    old_end = ino.size;
    f = fs_file_find(fs, ino.uuid);
    if (f) {
        pthread_mutex_lock(&f->mu);
        rb_complete(fs, f, false);
        rc = flush_dirty_locked(fs, f);
        if (rc < 0)
            goto out;
        if (f->stored_end > old_end)
            old_end = f->stored_end;
        if (f->size > old_end)
            old_end = f->size;
    }
    /* Ring side: the chunk holding the new end keeps only what lies below
     * it, and every chunk past it goes. */
    if (size < old_end) {
        n = fs_chunk_index(size, cs);
        co = fs_chunk_offset(size, cs);
        if (co > 0) {
            rc = trim_chunk(fs, ino.uuid, cs, n, co);
            if (rc < 0)
                goto out;
            n++;
        }
        if (fs_chunk_count(old_end, cs) > n) {
            rc = fs_data_delete(fs, ino.uuid, n,
                                fs_chunk_count(old_end, cs) - n);
            if (rc < 0)
                goto out;
        }
    }
    {
        struct size_edit e = {ino.uuid, size, fs_now_ns(), true};

        rc = fs_inode_update(fs, path, edit_size, &e);
        if (rc == 0 && f) {
            truncate_local(f, size);
            f->mtime_ns = e.mtime_ns;
            f->meta_dirty = false;
        }
    }
out:
    if (f) {
        pthread_mutex_unlock(&f->mu);
        fs_file_unref(fs, f);
    }
    fs_inode_fini(&ino);
    return rc;
}
