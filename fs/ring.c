/*
 * fs/ring.c - how fs/ talks to the ring: error mapping and batches of
 * asynchronous operations.
 *
 * A batch submits many client operations at once (dht_op_async) and waits
 * for all of them: that is how chunk writes on flush, read-ahead and the
 * deletion of a file's chunks run in parallel instead of one round trip at
 * a time. Each operation carries the configured timeout, so every slot
 * completes; the waiter still bounds its own wait. Callbacks run on the
 * ring's loop thread and only copy the result and signal, never block.
 *
 * Lifetime: the batch is shared by the waiter and its pending callbacks
 * and is freed by whichever lets go last (refs), so a waiter that gave up
 * never leaves a callback writing into freed memory.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/fs-int.h"
#include "proto/wire.h"

struct slot {
    struct fs_batch *b;
    bool submitted;
    bool done;
    int err;
    void *val; /* malloc'd copy of a GET value */
    size_t len;
};

struct fs_batch {
    struct fs *fs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;       /* protected by mu: waiter + pending callbacks */
    size_t pending; /* protected by mu */
    size_t n;
    struct slot *slots;
};

int fs_ring_errno(int err)
{
    switch (err) {
    case 0:
    case -ENOENT:
    case -EEXIST:
    case -ESTALE:
    case -ENOTEMPTY:
    case -ENAMETOOLONG:
    case -EFBIG:
        return err;
    case -ETIMEDOUT:
        return -ETIMEDOUT;
    default:
        return err < 0 ? -EIO : 0;
    }
}

struct fs_batch *fs_batch_new(struct fs *fs, size_t n)
{
    struct fs_batch *b = wire_xcalloc(1, sizeof *b);
    pthread_condattr_t ca;

    b->fs = fs;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    b->refs = 1;
    b->n = n;
    b->slots = wire_xcalloc(n ? n : 1, sizeof *b->slots);
    for (size_t i = 0; i < n; i++)
        b->slots[i].b = b;
    return b;
}

static void batch_destroy(struct fs_batch *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->slots[i].val);
    free(b->slots);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    free(b);
}

/* Drop one reference (mu held); frees the batch when it was the last. */
static void batch_unref_locked(struct fs_batch *b)
{
    bool last = --b->refs == 0;

    pthread_mutex_unlock(&b->mu);
    if (last)
        batch_destroy(b);
}

/* Runs on the loop thread: copy the result, signal, never block long. */
static void slot_done(void *arg, const struct dht_result *res)
{
    struct slot *s = arg;
    struct fs_batch *b = s->b;
    void *copy = NULL;

    if (res->err == 0 && res->value && res->len) {
        copy = wire_xmalloc(res->len);
        memcpy(copy, res->value, res->len);
    }
    pthread_mutex_lock(&b->mu);
    s->err = res->err;
    s->val = copy;
    s->len = copy ? res->len : 0;
    s->done = true;
    b->pending--;
    pthread_cond_broadcast(&b->cv);
    batch_unref_locked(b);
}

static int submit(struct fs_batch *b, size_t i, enum dht_op_kind kind,
                  const char *key, const void *val, size_t len)
{
    struct dht_op op = {0};
    struct slot *s = &b->slots[i];
    int rc;

    op.kind = kind;
    op.key = key;
    op.value = val;
    op.len = len;
    op.expected = DHT_ANY_VERSION;
    op.timeout_ms = b->fs->cfg.timeout_ms;
    pthread_mutex_lock(&b->mu);
    b->refs++;
    b->pending++;
    s->submitted = true;
    pthread_mutex_unlock(&b->mu);
    rc = dht_op_async(b->fs->peer, &op, slot_done, s);
    if (rc < 0) {
        /* Not submitted: the callback will never run. */
        pthread_mutex_lock(&b->mu);
        s->err = rc;
        s->done = true;
        b->pending--;
        b->refs--;
        pthread_mutex_unlock(&b->mu);
    }
    return rc;
}

int fs_batch_get(struct fs_batch *b, size_t i, const char *key)
{
    return submit(b, i, DHT_OP_GET, key, NULL, 0);
}

int fs_batch_put(struct fs_batch *b, size_t i, const char *key, const void *val,
                 size_t len)
{
    return submit(b, i, DHT_OP_PUT, key, val, len);
}

int fs_batch_delete(struct fs_batch *b, size_t i, const char *key)
{
    return submit(b, i, DHT_OP_DELETE, key, NULL, 0);
}

int fs_batch_wait(struct fs_batch *b)
{
    struct timespec until;
    int rc = 0;
    /* The ops carry the timeout themselves; this is only a backstop. */
    uint64_t ms = 2 * (uint64_t)b->fs->cfg.timeout_ms + 2000;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&b->mu);
    while (b->pending > 0) {
        if (pthread_cond_timedwait(&b->cv, &b->mu, &until) == ETIMEDOUT) {
            rc = -ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&b->mu);
    if (rc < 0)
        log_warn("fs", b->fs->node, "ring operations did not complete");
    return rc;
}

int fs_batch_result(struct fs_batch *b, size_t i, const void **val_out,
                    size_t *len_out)
{
    struct slot *s = &b->slots[i];
    int err;

    pthread_mutex_lock(&b->mu);
    if (!s->submitted)
        err = -EINVAL;
    else if (!s->done)
        err = -ETIMEDOUT;
    else
        err = s->err;
    if (val_out)
        *val_out = s->done ? s->val : NULL;
    if (len_out)
        *len_out = s->done ? s->len : 0;
    pthread_mutex_unlock(&b->mu);
    return err;
}

void fs_batch_free(struct fs_batch *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    batch_unref_locked(b);
}
