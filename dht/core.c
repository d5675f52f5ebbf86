/*
 * dht/core.c - the sans-I/O Chord protocol core.
 *
 * This file owns one peer's ring state (successor list, predecessor and
 * predecessor list, fingers), its pending RPCs, the client operations it is
 * running, and the replication protocol over its local store. It never
 * touches a socket, a clock or a thread: a driver (net.c or sim.c) hands it
 * received payloads and the current time, calls dht_core_tick() when asked,
 * and carries the payloads it emits through struct dht_io.
 *
 * Ring maintenance follows Zave's corrected Chord ("Reasoning about identifier
 * spaces: how to make Chord correct"):
 *  - every peer keeps a successor list of succ_len entries; stabilize asks the
 *    first successor for its predecessor and list, adopts a closer
 *    predecessor only after it answered (so a dead node is never adopted),
 *    and drops a successor that does not answer;
 *  - notify rectifies: the receiver takes the notifier as predecessor when it
 *    has none or the notifier is closer; check_predecessor forgets a dead
 *    predecessor;
 *  - a joining peer only learns its successor; stabilization does the rest.
 * With these rules the ring converges after any failures that leave each
 * peer a live successor in its list.
 *
 * Storage: every key lives on its primary (the successor of SHA-1(key)) and
 * the primary's next replicas-1 successors. The primary orders the writes of
 * a key: it reads its copy, checks compare-and-set, stamps version+1, writes
 * the record to its store, pushes it to the replicas and answers only when
 * each replica acknowledged or was found dead. Copies are reconciled by
 * "newer version wins" (ties broken by comparing the packed bytes, so every
 * peer picks the same copy). Deletes leave tombstones so that an older copy
 * never resurrects a key.
 *
 * Three mechanisms move data when the ring changes:
 *  - hand-off: a peer whose predecessor changes to a closer peer pushes the
 *    keys that peer now owns to it; a leaving peer pushes its keys to its
 *    successor first;
 *  - fetch-through: for a while after joining (or after its range changed) a
 *    primary first asks its successor (the previous owner) for its copy of a
 *    key before answering, so no read or write sees a gap while hand-off and
 *    anti-entropy catch up;
 *  - anti-entropy (maintain): every maintain_ms the primary sends its
 *    replicas a digest (key, version) of its range, page by page; a replica
 *    answers with what it lacks and what it holds newer or extra; both sides
 *    merge. Keys a peer holds outside (R-th predecessor, self] are offered to
 *    their primary and dropped once it acknowledged.
 *
 * Lookups are iterative: the asking peer queries one peer per hop
 * (FindSucc), each answering with the key's successor or a closer peer;
 * peers that time out are put on an avoid list that travels with the query.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht/dht-int.h"

#define MAX_SUCC         32
#define MAX_PREDS        16
#define MAX_AVOID        16
#define LOOKUP_MAX_STEPS 64
#define SYNC_PAGE        256        /* digest entries per page */
#define BATCH_BYTES      (4u << 20) /* records per Replicate message */
#define STRAY_PER_PASS   128
#define RPC_BUCKETS      64
#define SET_MAX_BYTES    (WIRE_MAX_FRAME - (64u << 10))
#define RING_MAX_STEPS   100000
#define MAX_LOST         16
#define LOST_FORGET_MS   (30u * 60 * 1000) /* stop probing a lost peer */
#define FAILS_TO_DROP    2 /* silent rounds before a neighbour is dropped */

enum state { ST_NEW, ST_JOINING, ST_JOINED, ST_LEAVING, ST_LEFT };

/* Called with the reply (err 0), an error reply (err from its status, rep
 * set), or no reply (rep NULL: -ETIMEDOUT, or -ECONNREFUSED when the driver
 * reported the peer down). */
typedef void rpc_fn(struct dht *d, void *ctx, const Chord__Envelope *rep,
                    int err);

struct rpc {
    struct rpc *next; /* hash chain */
    uint64_t id;
    uint64_t deadline; /* ms, driver clock */
    char addr[DHT_ADDR_MAX];
    rpc_fn *fn;
    void *ctx;
};

typedef void lookup_fn(struct dht *d, void *ctx, int err,
                       const struct dht_node *succ, int hops);

struct lookup {
    struct dht_id target;
    lookup_fn *fn;
    void *ctx;
    int hops;     /* FindSucc RPCs answered */
    int steps;    /* RPCs sent */
    bool joining; /* first hop is `via`; do not use our table */
    char via[DHT_ADDR_MAX];
    int navoid;
    char avoid[MAX_AVOID][DHT_ADDR_MAX];
    struct dht_node asking;
    uint64_t deadline;
};

/* A client operation (struct dht_op) in progress. Refcounted: the op list
 * holds one reference, every RPC, lookup or local job working for it holds
 * one. Once finished, late callbacks only drop their reference. */
struct op {
    struct op *next, *prev;
    int refs;
    bool finished;
    enum dht_op_kind kind;
    char *key;
    struct dht_id kid;
    void *value;
    size_t len;
    uint64_t expected;
    uint64_t op_id; /* same on every attempt: writes are idempotent */
    uint64_t deadline;
    uint64_t retry_at; /* 0: not waiting to retry */
    int attempts;
    int last_err;
    dht_done_fn *done;
    void *arg;
    int hops;
    struct dht_node primary;
    struct dht_node replicas[MAX_SUCC];
    int nrep;
    /* DHT_OP_RING */
    char *text;
    size_t tlen, tcap;
    int ring_steps;
    struct dht_node ring_cands[MAX_SUCC];
    int ring_ncands, ring_ci;
};

/* A storage request being served by this peer as primary. */
struct kvjob {
    Chord__OpKind opk;
    char *key;
    struct dht_id kid;
    void *value;
    size_t len;
    bool has_expected;
    uint64_t expected;
    uint64_t op_id; /* the client operation's id (0: none) */
    bool remote;    /* reply on conn/req_id; else complete op */
    uint64_t conn, req_id;
    struct op *op;
    int acks; /* replica acknowledgements outstanding */
    bool fetched;
    int err;
    Chord__Record *res; /* owned result */
};

struct dht {
    struct dht_config cfg;
    struct dht_io io;
    struct dht_store *store;
    struct dht_node self;
    char tag[9]; /* short hex id for log lines */
    enum state state;
    uint64_t now; /* time of the current call, ms */
    uint64_t rng;

    struct dht_node succ[MAX_SUCC];
    int nsucc;
    struct dht_node pred;
    bool has_pred;
    struct dht_node preds[MAX_PREDS]; /* preds[0] == pred */
    int npreds;
    struct dht_node finger[DHT_ID_BITS];
    bool has_finger[DHT_ID_BITS];
    int next_finger;

    bool stabilizing, fixing, checking; /* one round in flight each */
    int succ_fails;    /* consecutive silent stabilize rounds */
    int pred_fails;    /* consecutive silent predecessor checks */
    struct lost_node { /* peers we lost: probed to merge partitions */
        struct dht_node n;
        uint64_t when; /* ms it was lost */
    } lost[MAX_LOST];
    int nlost, lost_next;
    int maintaining; /* sync/stray RPCs in flight */
    uint64_t t_stabilize, t_fix, t_check, t_maintain, t_join;
    uint64_t fresh_until; /* fetch-through window end */

    struct rpc *rpcs[RPC_BUCKETS];
    size_t nrpcs;
    uint64_t next_rpc_id;
    struct op *ops;
    struct dht_stats stats;

    char bootstrap[DHT_ADDR_MAX];
    dht_join_fn *join_done;
    void *join_arg;
    uint64_t join_deadline;

    dht_join_fn *leave_done;
    void *leave_arg;
    int leave_pending; /* hand-off messages unanswered */
    int leave_target;  /* index in succ[] being handed our keys */
    bool leave_failed; /* one of them was refused or timed out */
    uint64_t leave_deadline;

    bool closing; /* dht_core_free: fail RPCs at once, send nothing */
    char why[256];
};

/* ------------------------------------------------------------- utilities */

static uint64_t rng_next(struct dht *d)
{
    /* splitmix64: deterministic per seed, so the simulator replays. */
    uint64_t z = (d->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t jitter(struct dht *d, int period)
{
    uint64_t j =
        d->cfg.jitter_ms > 0 ? rng_next(d) % (uint64_t)d->cfg.jitter_ms : 0;
    return (uint64_t)period + j;
}

static bool node_is(const struct dht_node *a, const struct dht_node *b)
{
    return strcmp(a->addr, b->addr) == 0 && dht_id_eq(&a->id, &b->id);
}

static bool is_self(const struct dht *d, const struct dht_node *n)
{
    return strcmp(n->addr, d->self.addr) == 0;
}

static void node_from_pb(const Chord__Node *pb, struct dht_node *out)
{
    memset(out, 0, sizeof *out);
    if (pb->id.len == DHT_ID_LEN)
        memcpy(out->id.b, pb->id.data, DHT_ID_LEN);
    snprintf(out->addr, sizeof out->addr, "%s", pb->addr ? pb->addr : "");
}

static void node_to_pb(const struct dht_node *n, Chord__Node *out)
{
    chord__node__init(out);
    out->id.data = (uint8_t *)n->id.b;
    out->id.len = DHT_ID_LEN;
    out->addr = (char *)n->addr;
}

static void short_hex(const struct dht_id *id, char out[9])
{
    char hex[2 * DHT_ID_LEN + 1];

    dht_id_hex(id, hex);
    memcpy(out, hex, 8);
    out[8] = '\0';
}

/* Growable text buffer for /.chord files. */
struct sbuf {
    char *s;
    size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->s ? b->s + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (size_t)n + 64;
        b->s = xrealloc(b->s, b->cap);
    }
}

static char *sb_take(struct sbuf *b)
{
    if (!b->s) {
        b->s = xmalloc(1);
        b->s[0] = '\0';
    }
    return b->s;
}

/* ------------------------------------------------------------ the config */

void dht_config_default(struct dht_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->network, sizeof c->network, "chordfs");
    c->replicas = DHT_REPLICAS;
    c->succ_len = DHT_SUCC_LEN;
    c->stabilize_ms = 500;
    c->fix_fingers_ms = 500;
    c->check_pred_ms = 1000;
    c->maintain_ms = 5000;
    c->jitter_ms = 100;
    c->rpc_timeout_ms = 2000;
    c->op_timeout_ms = 10000;
}

/* ------------------------------------------------------------------- RPC */

static int send_env(struct dht *d, const char *addr, Chord__Envelope *env)
{
    uint8_t *frame;
    size_t len;
    int rc = wire_encode(env, &frame, &len);

    if (rc < 0) {
        log_error("core", d->tag, "cannot encode message for %s: %s", addr,
                  strerror(-rc));
        return rc;
    }
    d->stats.bytes_sent += len;
    rc = d->io.send(d->io.arg, addr, frame + WIRE_HDR_LEN, len - WIRE_HDR_LEN);
    free(frame);
    return rc;
}

static void reply_env(struct dht *d, uint64_t conn, uint64_t req_id,
                      Chord__Envelope *env)
{
    uint8_t *frame;
    size_t len;

    env->req_id = req_id;
    env->reply = 1;
    if (wire_encode(env, &frame, &len) < 0) {
        /* Too big: answer with the error instead. */
        Chord__Envelope err = CHORD__ENVELOPE__INIT;
        err.req_id = req_id;
        err.reply = 1;
        err.status = CHORD__STATUS__TOO_BIG;
        err.error = (char *)"reply too large";
        if (wire_encode(&err, &frame, &len) < 0)
            return;
    }
    d->stats.bytes_sent += len;
    d->io.reply(d->io.arg, conn, frame + WIRE_HDR_LEN, len - WIRE_HDR_LEN);
    free(frame);
}

static void reply_status(struct dht *d, uint64_t conn, uint64_t req_id,
                         Chord__Status st, const char *msg)
{
    Chord__Envelope env = CHORD__ENVELOPE__INIT;

    env.status = st;
    env.error = (char *)(msg ? msg : "");
    reply_env(d, conn, req_id, &env);
}

static void rpc_call(struct dht *d, const char *addr, Chord__Envelope *env,
                     rpc_fn *fn, void *ctx)
{
    struct rpc *r;
    int rc;

    if (d->closing) {
        fn(d, ctx, NULL, -ECANCELED);
        return;
    }
    r = xcalloc(1, sizeof *r);
    r->id = ++d->next_rpc_id;
    r->deadline = d->now + (uint64_t)d->cfg.rpc_timeout_ms;
    snprintf(r->addr, sizeof r->addr, "%s", addr);
    r->fn = fn;
    r->ctx = ctx;
    r->next = d->rpcs[r->id % RPC_BUCKETS];
    d->rpcs[r->id % RPC_BUCKETS] = r;
    d->nrpcs++;
    d->stats.rpcs_sent++;
    env->req_id = r->id;
    env->reply = 0;
    rc = send_env(d, addr, env);
    if (rc < 0)
        r->deadline = d->now; /* fail it at the next tick, not re-entrantly */
}

static struct rpc *rpc_take(struct dht *d, uint64_t id)
{
    struct rpc **pp = &d->rpcs[id % RPC_BUCKETS];

    for (; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            struct rpc *r = *pp;
            *pp = r->next;
            d->nrpcs--;
            return r;
        }
    }
    return NULL;
}

static void forget_node(struct dht *d, const char *addr);

/* Fail every RPC matching (all, or addr) whose deadline passed (or now). */
static void rpc_expire(struct dht *d, const char *addr, int err)
{
    struct rpc *due = NULL;

    for (int b = 0; b < RPC_BUCKETS; b++) {
        struct rpc **pp = &d->rpcs[b];
        while (*pp) {
            struct rpc *r = *pp;
            bool hit =
                addr ? strcmp(r->addr, addr) == 0 : r->deadline <= d->now;
            if (hit) {
                *pp = r->next;
                d->nrpcs--;
                r->next = due;
                due = r;
            } else {
                pp = &r->next;
            }
        }
    }
    /* Callbacks run after the table is consistent: they may send more. */
    while (due) {
        struct rpc *r = due;
        due = r->next;
        if (err == -ETIMEDOUT)
            d->stats.rpc_timeouts++;
        else
            d->stats.rpc_errors++;
        log_debug("core", d->tag, "rpc %" PRIu64 " to %s failed: %s", r->id,
                  r->addr, strerror(-err));
        r->fn(d, r->ctx, NULL, err);
        free(r);
    }
}

static uint64_t rpc_next_deadline(const struct dht *d)
{
    uint64_t t = UINT64_MAX;

    for (int b = 0; b < RPC_BUCKETS; b++)
        for (const struct rpc *r = d->rpcs[b]; r; r = r->next)
            if (r->deadline < t)
                t = r->deadline;
    return t;
}

/* ------------------------------------------------------------ ring table */

static const struct dht_node *first_succ(const struct dht *d)
{
    return &d->succ[0];
}

static bool alone(const struct dht *d)
{
    return d->nsucc == 0 || is_self(d, &d->succ[0]);
}

static bool avoided(char (*avoid)[DHT_ADDR_MAX], int navoid, const char *addr)
{
    for (int i = 0; i < navoid; i++)
        if (strcmp(avoid[i], addr) == 0)
            return true;
    return false;
}

/* The known peer closest before target (fingers and successors), skipping
 * avoided addresses; NULL if none is strictly between self and target. */
static const struct dht_node *closest_preceding(const struct dht *d,
                                                const struct dht_id *target,
                                                char (*avoid)[DHT_ADDR_MAX],
                                                int navoid)
{
    const struct dht_node *best = NULL;

    for (int i = DHT_ID_BITS - 1; i >= 0; i--) {
        const struct dht_node *f = &d->finger[i];
        if (!d->has_finger[i] || is_self(d, f) ||
            !dht_id_in_oo(&f->id, &d->self.id, target) ||
            avoided(avoid, navoid, f->addr))
            continue;
        if (!best || dht_id_in_oo(&f->id, &best->id, target))
            best = f;
        break; /* fingers are ordered: the highest match is the closest */
    }
    for (int i = 0; i < d->nsucc; i++) {
        const struct dht_node *s = &d->succ[i];
        if (is_self(d, s) || !dht_id_in_oo(&s->id, &d->self.id, target) ||
            avoided(avoid, navoid, s->addr))
            continue;
        if (!best || dht_id_in_oo(&s->id, &best->id, target))
            best = s;
    }
    return best;
}

/* The owner of target if it lies within our successor list: the first
 * successor s with target in (previous, s]. Avoided (dead) entries are
 * skipped, so their range falls to the next live one. NULL when target is
 * beyond the list. Answering from the whole list, not only the first
 * successor, saves the last hop whenever the owner is one we know. */
static const struct dht_node *succ_list_owner(const struct dht *d,
                                              const struct dht_id *target,
                                              char (*avoid)[DHT_ADDR_MAX],
                                              int navoid)
{
    const struct dht_id *prev = &d->self.id;

    for (int i = 0; i < d->nsucc; i++) {
        const struct dht_node *s = &d->succ[i];
        if (is_self(d, s))
            break;
        if (avoided(avoid, navoid, s->addr))
            continue;
        if (dht_id_in_oc(target, prev, &s->id))
            return s;
        prev = &s->id;
    }
    return NULL;
}

/* Successor list := head, then list (stopping at self, skipping dups). */
static void set_succs(struct dht *d, const struct dht_node *head,
                      Chord__Node **list, size_t n)
{
    struct dht_node out[MAX_SUCC];
    int k = 0;
    int max = d->cfg.succ_len;

    out[k++] = *head;
    for (size_t i = 0; i < n && k < max; i++) {
        struct dht_node x;
        bool dup = false;
        node_from_pb(list[i], &x);
        if (is_self(d, &x))
            break;
        for (int j = 0; j < k; j++)
            if (strcmp(out[j].addr, x.addr) == 0)
                dup = true;
        if (!dup)
            out[k++] = x;
    }
    if (strcmp(d->succ[0].addr, out[0].addr) != 0)
        log_info("core", d->tag, "successor is now %s", out[0].addr);
    memcpy(d->succ, out, sizeof(out[0]) * (size_t)k);
    d->nsucc = k;
}

static void remember_lost(struct dht *d, const struct dht_node *n)
{
    int slot = -1;

    if (is_self(d, n) || !n->addr[0])
        return;
    for (int i = 0; i < d->nlost; i++)
        if (strcmp(d->lost[i].n.addr, n->addr) == 0)
            slot = i;
    if (slot < 0 && d->nlost < MAX_LOST)
        slot = d->nlost++;
    if (slot < 0) {
        slot = 0; /* replace the oldest */
        for (int i = 1; i < d->nlost; i++)
            if (d->lost[i].when < d->lost[slot].when)
                slot = i;
    }
    d->lost[slot].n = *n;
    d->lost[slot].when = d->now;
}

static void forget_lost(struct dht *d, const char *addr)
{
    for (int i = 0; i < d->nlost; i++)
        if (strcmp(d->lost[i].n.addr, addr) == 0) {
            d->lost[i] = d->lost[--d->nlost];
            return;
        }
}

static void remove_succ(struct dht *d, const char *addr)
{
    int k = 0;

    for (int i = 0; i < d->nsucc; i++) {
        if (strcmp(d->succ[i].addr, addr) != 0)
            d->succ[k++] = d->succ[i];
        else
            remember_lost(d, &d->succ[i]);
    }
    if (k == d->nsucc)
        return;
    d->nsucc = k;
    if (k == 0) {
        /* Every successor is gone: fall back on the predecessor or a
         * finger, else we are alone. Stabilization repairs the rest. */
        const struct dht_node *fb = &d->self;
        if (d->has_pred && strcmp(d->pred.addr, addr) != 0)
            fb = &d->pred;
        else
            for (int i = 0; i < DHT_ID_BITS; i++)
                if (d->has_finger[i] && strcmp(d->finger[i].addr, addr) &&
                    !is_self(d, &d->finger[i])) {
                    fb = &d->finger[i];
                    break;
                }
        d->succ[0] = *fb;
        d->nsucc = 1;
        if (fb == &d->self && d->bootstrap[0]) {
            /* (sim engineer) A peer that joined and lost its only
             * successor before stabilize filled its list (it crashed or
             * left) was a ring of one forever. Probe the bootstrap like a
             * lost peer so probe_lost() merges us back (docs/core-bugs.md
             * #4). */
            struct dht_node b;
            memset(&b, 0, sizeof b);
            snprintf(b.addr, sizeof b.addr, "%s", d->bootstrap);
            remember_lost(d, &b);
        }
    }
    log_info("core", d->tag, "dropped successor %s; successor is now %s", addr,
             d->succ[0].addr);
}

/* A peer did not answer: stop routing through it. The successor list is
 * left to stabilize, which drops a successor only after FAILS_TO_DROP
 * silent rounds (one lost message must not reshape the ring). */
static void forget_node(struct dht *d, const char *addr)
{
    for (int i = 0; i < DHT_ID_BITS; i++)
        if (d->has_finger[i] && strcmp(d->finger[i].addr, addr) == 0)
            d->has_finger[i] = false;
}

/* -------------------------------------------------------------- records */

/* Version and kind of a packed record without unpacking it: protobuf-c
 * writes fields in number order, key (1), version (2), kind (3), ... */
static int rec_peek(const uint8_t *p, size_t len, uint64_t *version, int *kind)
{
    size_t i = 0;

    *version = 0;
    *kind = CHORD__RECORD_KIND__VALUE;
    while (i < len) {
        uint64_t tag = 0, v = 0;
        int shift = 0;
        while (i < len && shift < 64) {
            tag |= (uint64_t)(p[i] & 0x7f) << shift;
            shift += 7;
            if (!(p[i++] & 0x80))
                break;
        }
        unsigned field = (unsigned)(tag >> 3), wt = tag & 7;
        if (field > 3)
            return 0;
        if (wt == 0) {
            shift = 0;
            while (i < len && shift < 64) {
                v |= (uint64_t)(p[i] & 0x7f) << shift;
                shift += 7;
                if (!(p[i++] & 0x80))
                    break;
            }
            if (field == 2)
                *version = v;
            else if (field == 3)
                *kind = (int)v;
        } else if (wt == 2) {
            uint64_t l = 0;
            shift = 0;
            while (i < len && shift < 64) {
                l |= (uint64_t)(p[i] & 0x7f) << shift;
                shift += 7;
                if (!(p[i++] & 0x80))
                    break;
            }
            if (l > len - i)
                return -EBADMSG;
            i += l;
        } else {
            return -EBADMSG;
        }
    }
    return 0;
}

static int rec_load(struct dht *d, const struct dht_id *id, const char *key,
                    Chord__Record **out)
{
    void *buf;
    size_t len;
    int rc = dht_store_get(d->store, id, key, &buf, &len);

    if (rc < 0)
        return rc;
    rc = wire_record_unpack(buf, len, out);
    free(buf);
    if (rc < 0)
        log_error("core", d->tag, "stored record for %s is corrupt", key);
    return rc;
}

static int rec_save(struct dht *d, const Chord__Record *rec)
{
    struct dht_id id;
    uint8_t *buf;
    size_t len;
    int rc;

    dht_id_of(rec->key, &id);
    rc = wire_record_pack(rec, &buf, &len);
    if (rc < 0)
        return rc;
    rc = dht_store_put(d->store, &id, rec->key, buf, len);
    free(buf);
    if (rc < 0)
        log_error("core", d->tag, "store write of %s failed: %s", rec->key,
                  strerror(-rc));
    return rc;
}

/* Total order on copies of one key: version, then packed bytes. */
static int rec_cmp(const Chord__Record *a, const Chord__Record *b)
{
    uint8_t *pa, *pb;
    size_t la, lb;
    int c;

    if (a->version != b->version)
        return a->version < b->version ? -1 : 1;
    if (wire_record_pack(a, &pa, &la) < 0)
        return 0;
    if (wire_record_pack(b, &pb, &lb) < 0) {
        free(pa);
        return 0;
    }
    c = memcmp(pa, pb, la < lb ? la : lb);
    if (c == 0)
        c = la < lb ? -1 : la > lb;
    free(pa);
    free(pb);
    return c;
}

/* Store rec if it is newer than our copy. Returns 1 if stored, 0 if ours was
 * as new, -errno on store failure. */
static int rec_merge(struct dht *d, const Chord__Record *rec)
{
    struct dht_id id;
    Chord__Record *cur = NULL;
    int rc;

    if (wire_record_check(rec) < 0)
        return -EBADMSG;
    dht_id_of(rec->key, &id);
    if (rec_load(d, &id, rec->key, &cur) == 0) {
        int c = rec_cmp(cur, rec);
        wire_record_free(cur);
        if (c >= 0)
            return 0;
    }
    rc = rec_save(d, rec);
    return rc < 0 ? rc : 1;
}

/* An owned copy of rec's identity (key, version, kind, last op) without its
 * value or members: what a writer is answered with. Freed with
 * wire_record_free() (every field is malloc'd or default). */
static Chord__Record *rec_slim(const Chord__Record *rec)
{
    Chord__Record *out = xmalloc(sizeof *out);

    chord__record__init(out);
    out->key = xstrdup(rec->key);
    out->version = rec->version;
    out->kind = rec->kind;
    out->last_op = rec->last_op;
    return out;
}

/* Collect the keys (and packed sizes) of store entries in a range. */
struct keylist {
    char **keys;
    uint64_t *versions;
    size_t n, cap, max;
};

static int collect_keys(void *arg, const struct dht_id *id, const char *key,
                        const void *val, size_t len)
{
    struct keylist *kl = arg;
    uint64_t v;
    int kind;

    (void)id;
    if (kl->max && kl->n >= kl->max)
        return 1;
    if (rec_peek(val, len, &v, &kind) < 0)
        v = 0;
    if (kl->n == kl->cap) {
        kl->cap = kl->cap ? 2 * kl->cap : 64;
        kl->keys = xrealloc(kl->keys, kl->cap * sizeof *kl->keys);
        kl->versions = xrealloc(kl->versions, kl->cap * sizeof *kl->versions);
    }
    kl->keys[kl->n] = xstrdup(key);
    kl->versions[kl->n] = v;
    kl->n++;
    return 0;
}

static void keylist_free(struct keylist *kl)
{
    for (size_t i = 0; i < kl->n; i++)
        free(kl->keys[i]);
    free(kl->keys);
    free(kl->versions);
    memset(kl, 0, sizeof *kl);
}

/* -------------------------------------------------------------- batches */

/* Push the records named by keys to addr in Replicate messages of at most
 * BATCH_BYTES; fn(ctx) is called once per message sent (ctx refcounting
 * is the caller's). Returns the number of messages sent. */
static int push_records(struct dht *d, const char *addr, char **keys, size_t n,
                        bool handoff, rpc_fn *fn, void *(*ctx_ref)(void *),
                        void *ctx)
{
    Chord__Record **recs = NULL;
    size_t nrec = 0, bytes = 0;
    int sent = 0;

    for (size_t i = 0; i <= n; i++) {
        Chord__Record *r = NULL;
        if (i < n) {
            struct dht_id id;
            dht_id_of(keys[i], &id);
            if (rec_load(d, &id, keys[i], &r) < 0)
                continue;
        }
        size_t rlen = r ? chord__record__get_packed_size(r) : 0;
        if (nrec &&
            (!r || bytes + rlen > BATCH_BYTES || nrec >= WIRE_BATCH_MAX)) {
            Chord__Envelope env = CHORD__ENVELOPE__INIT;
            Chord__Replicate rep = CHORD__REPLICATE__INIT;
            rep.records = recs;
            rep.n_records = nrec;
            rep.handoff = handoff;
            env.body_case = CHORD__ENVELOPE__BODY_REPLICATE;
            env.replicate = &rep;
            rpc_call(d, addr, &env, fn, ctx_ref ? ctx_ref(ctx) : ctx);
            d->stats.replicated += nrec;
            if (handoff)
                d->stats.handed_off += nrec;
            sent++;
            for (size_t j = 0; j < nrec; j++)
                wire_record_free(recs[j]);
            nrec = 0;
            bytes = 0;
        }
        if (!r)
            continue;
        recs = xrealloc(recs, (nrec + 1) * sizeof *recs);
        recs[nrec++] = r;
        bytes += rlen;
    }
    free(recs);
    return sent;
}

/* ---------------------------------------------------------------- lookup */

static void lookup_next(struct dht *d, struct lookup *lk,
                        const struct dht_node *hint);

static void lookup_finish(struct dht *d, struct lookup *lk, int err,
                          const struct dht_node *succ)
{
    d->stats.lookups++;
    d->stats.lookup_hops += (uint64_t)lk->hops;
    if (err)
        d->stats.lookup_failures++;
    lk->fn(d, lk->ctx, err, succ, lk->hops);
    free(lk);
}

static void lookup_reply(struct dht *d, void *ctx, const Chord__Envelope *rep,
                         int err)
{
    struct lookup *lk = ctx;

    if (err || !rep ||
        rep->body_case != CHORD__ENVELOPE__BODY_FIND_SUCC_REPLY) {
        if (lk->joining && lk->steps <= 1) {
            lookup_finish(d, lk, err ? err : -EPROTO, NULL);
            return;
        }
        if (lk->navoid < MAX_AVOID)
            snprintf(lk->avoid[lk->navoid++], DHT_ADDR_MAX, "%s",
                     lk->asking.addr);
        if (!lk->joining)
            forget_node(d, lk->asking.addr);
        if (lk->navoid >= MAX_AVOID) {
            lookup_finish(d, lk, -EHOSTUNREACH, NULL);
            return;
        }
        lookup_next(d, lk, NULL);
        return;
    }
    lk->hops++;
    const Chord__FindSuccReply *r = rep->find_succ_reply;
    struct dht_node n;
    node_from_pb(r->node, &n);
    if (r->done) {
        lookup_finish(d, lk, 0, &n);
        return;
    }
    if (is_self(d, &n) || strcmp(n.addr, lk->asking.addr) == 0)
        lookup_next(d, lk, NULL);
    else
        lookup_next(d, lk, &n);
}

static void lookup_next(struct dht *d, struct lookup *lk,
                        const struct dht_node *hint)
{
    struct dht_node h;

    if (d->now >= lk->deadline) {
        lookup_finish(d, lk, -ETIMEDOUT, NULL);
        return;
    }
    if (lk->steps >= LOOKUP_MAX_STEPS) {
        lookup_finish(d, lk, -EHOSTUNREACH, NULL);
        return;
    }
    if (!hint) {
        if (lk->joining) {
            /* Without a table of our own we can only go back to the
             * bootstrap, with the avoid list. */
            memset(&h, 0, sizeof h);
            snprintf(h.addr, sizeof h.addr, "%s", lk->via);
            hint = &h;
        } else {
            const struct dht_node *s = NULL;
            for (int i = 0; i < d->nsucc; i++)
                if (!avoided(lk->avoid, lk->navoid, d->succ[i].addr)) {
                    s = &d->succ[i];
                    break;
                }
            if (!s || is_self(d, s)) {
                /* Alone (or every successor avoided): we own everything. */
                if (!s && d->nsucc && !is_self(d, &d->succ[0])) {
                    lookup_finish(d, lk, -EHOSTUNREACH, NULL);
                    return;
                }
                lookup_finish(d, lk, 0, &d->self);
                return;
            }
            if (d->has_pred &&
                dht_id_in_oc(&lk->target, &d->pred.id, &d->self.id)) {
                lookup_finish(d, lk, 0, &d->self);
                return;
            }
            const struct dht_node *own =
                succ_list_owner(d, &lk->target, lk->avoid, lk->navoid);
            if (own) {
                lookup_finish(d, lk, 0, own);
                return;
            }
            hint = closest_preceding(d, &lk->target, lk->avoid, lk->navoid);
            if (!hint)
                hint = s;
        }
    }
    lk->asking = *hint;
    lk->steps++;

    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__FindSucc fs = CHORD__FIND_SUCC__INIT;
    char *avoid[MAX_AVOID];
    fs.id.data = lk->target.b;
    fs.id.len = DHT_ID_LEN;
    for (int i = 0; i < lk->navoid; i++)
        avoid[i] = lk->avoid[i];
    fs.avoid = avoid;
    fs.n_avoid = (size_t)lk->navoid;
    env.body_case = CHORD__ENVELOPE__BODY_FIND_SUCC;
    env.find_succ = &fs;
    rpc_call(d, hint->addr, &env, lookup_reply, lk);
}

/* Resolve target. via NULL: from our own table; else through the peer at
 * via only (joining, or probing a peer of another partition), with our own
 * address avoided so a stale entry of ours is routed around. */
static void lookup_start(struct dht *d, const struct dht_id *target,
                         uint64_t deadline, const char *via, lookup_fn *fn,
                         void *ctx)
{
    struct lookup *lk = xcalloc(1, sizeof *lk);

    lk->target = *target;
    lk->fn = fn;
    lk->ctx = ctx;
    lk->deadline = deadline;
    lk->joining = via != NULL;
    if (via) {
        snprintf(lk->via, sizeof lk->via, "%s", via);
        /* Route around our own stale entry if we are rejoining. */
        snprintf(lk->avoid[lk->navoid++], DHT_ADDR_MAX, "%s", d->self.addr);
    }
    lookup_next(d, lk, NULL);
}

/* A FindSucc from another peer: answer with the successor if target falls
 * between us and it, else the closest preceding peer we know. */
static void handle_find_succ(struct dht *d, uint64_t conn, uint64_t req_id,
                             const Chord__FindSucc *fs)
{
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__FindSuccReply r = CHORD__FIND_SUCC_REPLY__INIT;
    Chord__Node pb;
    struct dht_id target;
    char avoid[MAX_AVOID][DHT_ADDR_MAX];
    int navoid = 0;
    const struct dht_node *ans = NULL;

    if (d->state != ST_JOINED && d->state != ST_LEAVING) {
        reply_status(d, conn, req_id, CHORD__STATUS__UNAVAILABLE, "not joined");
        return;
    }
    memcpy(target.b, fs->id.data, DHT_ID_LEN);
    for (size_t i = 0; i < fs->n_avoid && navoid < MAX_AVOID; i++)
        snprintf(avoid[navoid++], DHT_ADDR_MAX, "%s", fs->avoid[i]);

    if (alone(d) && !avoided(avoid, navoid, d->self.addr)) {
        ans = &d->self;
        r.done = 1;
    } else {
        ans = succ_list_owner(d, &target, avoid, navoid);
        if (ans)
            r.done = 1;
        if (!ans) {
            ans = closest_preceding(d, &target, avoid, navoid);
            if (!ans) {
                /* Nothing closer than us: the successor itself. */
                for (int i = 0; i < d->nsucc && !ans; i++)
                    if (!avoided(avoid, navoid, d->succ[i].addr))
                        ans = &d->succ[i];
                r.done = 1;
            }
        }
    }
    if (!ans) {
        reply_status(d, conn, req_id, CHORD__STATUS__UNAVAILABLE,
                     "no live successor");
        return;
    }
    node_to_pb(ans, &pb);
    r.node = &pb;
    env.body_case = CHORD__ENVELOPE__BODY_FIND_SUCC_REPLY;
    env.find_succ_reply = &r;
    reply_env(d, conn, req_id, &env);
}

/* ---------------------------------------------------------- maintenance */

static void state_reply_fill(struct dht *d, Chord__StateReply *st,
                             Chord__Node *pbs, Chord__Node **ptrs)
{
    int k = 0;

    chord__state_reply__init(st);
    node_to_pb(&d->self, &pbs[k]);
    st->self = &pbs[k++];
    if (d->has_pred) {
        node_to_pb(&d->pred, &pbs[k]);
        st->pred = &pbs[k++];
    }
    st->succs = ptrs;
    for (int i = 0; i < d->nsucc; i++) {
        node_to_pb(&d->succ[i], &pbs[k]);
        ptrs[st->n_succs++] = &pbs[k++];
    }
    st->preds = ptrs + st->n_succs;
    for (int i = 0; i < d->npreds; i++) {
        node_to_pb(&d->preds[i], &pbs[k]);
        st->preds[st->n_preds++] = &pbs[k++];
    }
}

static void handle_get_state(struct dht *d, uint64_t conn, uint64_t req_id)
{
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__StateReply st;
    Chord__Node pbs[2 + MAX_SUCC + MAX_PREDS];
    Chord__Node *ptrs[MAX_SUCC + MAX_PREDS];

    state_reply_fill(d, &st, pbs, ptrs);
    env.body_case = CHORD__ENVELOPE__BODY_STATE_REPLY;
    env.state_reply = &st;
    reply_env(d, conn, req_id, &env);
}

static void send_notify(struct dht *d, const struct dht_node *to);

static void notify_reply(struct dht *d, void *ctx, const Chord__Envelope *rep,
                         int err)
{
    (void)d;
    (void)ctx;
    (void)rep;
    (void)err;
}

static void send_notify(struct dht *d, const struct dht_node *to)
{
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__Notify n = CHORD__NOTIFY__INIT;
    Chord__Node pb;

    if (is_self(d, to))
        return;
    node_to_pb(&d->self, &pb);
    n.node = &pb;
    env.body_case = CHORD__ENVELOPE__BODY_NOTIFY;
    env.notify = &n;
    rpc_call(d, to->addr, &env, notify_reply, NULL);
}

struct stab_ctx {
    struct dht_node asked; /* the successor we asked */
    struct dht_node probe; /* its closer predecessor, being probed */
    Chord__StateReply *st; /* the successor's reply (owned copy) */
    uint8_t *st_buf;
    int walked; /* closer peers adopted this round (sim eng.) */
};

static void stab_done(struct dht *d, struct stab_ctx *sc)
{
    d->stabilizing = false;
    if (sc->st)
        chord__state_reply__free_unpacked(sc->st, NULL);
    free(sc->st_buf);
    free(sc);
}

static void stab_probe_reply(struct dht *d, void *ctx,
                             const Chord__Envelope *rep, int err)
{
    struct stab_ctx *sc = ctx;

    if (d->state != ST_JOINED && d->state != ST_LEAVING) {
        stab_done(d, sc);
        return;
    }
    if (!err && rep && rep->body_case == CHORD__ENVELOPE__BODY_STATE_REPLY) {
        const Chord__StateReply *pr = rep->state_reply;
        struct dht_node q;
        /* The closer peer is alive: it becomes our successor. */
        set_succs(d, &sc->probe, pr->succs, pr->n_succs);
        /* (sim engineer) If it knows a predecessor closer still, probe that
         * one in the same round (bounded). One step per round let a peer
         * whose successor was far (it joined a small ring, or many joined
         * behind it) lag minutes behind a 1000-peer ring that kept joining
         * (docs/core-bugs.md, "slow walk"). */
        if (pr->pred && sc->walked < 32) {
            node_from_pb(pr->pred, &q);
            if (!is_self(d, &q) &&
                dht_id_in_oo(&q.id, &d->self.id, &sc->probe.id)) {
                Chord__Envelope env = CHORD__ENVELOPE__INIT;
                Chord__GetState gs = CHORD__GET_STATE__INIT;
                sc->walked++;
                sc->probe = q;
                env.body_case = CHORD__ENVELOPE__BODY_GET_STATE;
                env.get_state = &gs;
                rpc_call(d, q.addr, &env, stab_probe_reply, sc);
                return;
            }
        }
    } else if (!sc->walked) {
        set_succs(d, &sc->asked, sc->st->succs, sc->st->n_succs);
    }
    send_notify(d, &d->succ[0]);
    stab_done(d, sc);
}

static void stab_reply(struct dht *d, void *ctx, const Chord__Envelope *rep,
                       int err)
{
    struct stab_ctx *sc = ctx;

    if (d->state != ST_JOINED && d->state != ST_LEAVING) {
        stab_done(d, sc);
        return;
    }
    if (err || !rep || rep->body_case != CHORD__ENVELOPE__BODY_STATE_REPLY) {
        if (err != -ECONNREFUSED && ++d->succ_fails < FAILS_TO_DROP) {
            d->t_stabilize = d->now; /* ask again at once */
            stab_done(d, sc);
            return;
        }
        d->succ_fails = 0;
        log_info("core", d->tag, "successor %s not answering (%s)",
                 sc->asked.addr, strerror(err ? -err : EPROTO));
        remove_succ(d, sc->asked.addr);
        for (int i = 0; i < DHT_ID_BITS; i++)
            if (d->has_finger[i] &&
                strcmp(d->finger[i].addr, sc->asked.addr) == 0)
                d->has_finger[i] = false;
        d->t_stabilize = d->now; /* try the next one at once */
        stab_done(d, sc);
        return;
    }
    const Chord__StateReply *st = rep->state_reply;
    d->succ_fails = 0;
    if (st->pred) {
        struct dht_node p;
        node_from_pb(st->pred, &p);
        if (!is_self(d, &p) &&
            dht_id_in_oo(&p.id, &d->self.id, &sc->asked.id)) {
            /* Keep the reply, probe p before adopting it (Zave). */
            size_t n = chord__state_reply__get_packed_size(st);
            sc->st_buf = xmalloc(n);
            chord__state_reply__pack(st, sc->st_buf);
            sc->st = chord__state_reply__unpack(NULL, n, sc->st_buf);
            if (!sc->st) {
                stab_done(d, sc);
                return;
            }
            sc->probe = p;
            Chord__Envelope env = CHORD__ENVELOPE__INIT;
            Chord__GetState gs = CHORD__GET_STATE__INIT;
            env.body_case = CHORD__ENVELOPE__BODY_GET_STATE;
            env.get_state = &gs;
            rpc_call(d, p.addr, &env, stab_probe_reply, sc);
            return;
        }
    }
    set_succs(d, &sc->asked, st->succs, st->n_succs);
    send_notify(d, &d->succ[0]);
    stab_done(d, sc);
}

static void stabilize(struct dht *d)
{
    if (alone(d)) {
        /* A ring of one learns of a second peer through notify. */
        if (d->has_pred && !is_self(d, &d->pred)) {
            set_succs(d, &d->pred, NULL, 0);
            send_notify(d, &d->succ[0]);
        }
        return;
    }
    struct stab_ctx *sc = xcalloc(1, sizeof *sc);
    sc->asked = d->succ[0];
    d->stabilizing = true;
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__GetState gs = CHORD__GET_STATE__INIT;
    env.body_case = CHORD__ENVELOPE__BODY_GET_STATE;
    env.get_state = &gs;
    rpc_call(d, sc->asked.addr, &env, stab_reply, sc);
}

/* Hand the records in (lo, hi] to node (a closer predecessor took them). */
static void handoff_reply(struct dht *d, void *ctx, const Chord__Envelope *rep,
                          int err)
{
    (void)ctx;
    (void)rep;
    if (err)
        log_warn("core", d->tag, "hand-off not acknowledged: %s",
                 strerror(-err));
}

static void handoff_range(struct dht *d, const struct dht_node *to,
                          const struct dht_id *lo, const struct dht_id *hi)
{
    struct keylist kl = {0};

    dht_store_range(d->store, lo, hi, collect_keys, &kl);
    if (kl.n) {
        log_info("core", d->tag, "handing %zu keys to %s", kl.n, to->addr);
        push_records(d, to->addr, kl.keys, kl.n, true, handoff_reply, NULL,
                     NULL);
    }
    keylist_free(&kl);
}

static void handle_notify(struct dht *d, uint64_t conn, uint64_t req_id,
                          const Chord__Notify *nt)
{
    struct dht_node n;
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__Ack ack = CHORD__ACK__INIT;

    node_from_pb(nt->node, &n);
    env.body_case = CHORD__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    reply_env(d, conn, req_id, &env);
    if (is_self(d, &n) || (d->state != ST_JOINED))
        return;
    if (d->has_pred && node_is(&d->pred, &n))
        return;
    if (!d->has_pred || dht_id_in_oo(&n.id, &d->pred.id, &d->self.id)) {
        struct dht_node old = d->pred;
        bool had = d->has_pred;
        d->pred = n;
        d->has_pred = true;
        d->preds[0] = n;
        d->npreds = 1;
        log_info("core", d->tag, "predecessor is now %s", n.addr);
        if (alone(d)) {
            set_succs(d, &n, NULL, 0);
            send_notify(d, &n);
        }
        /* The new predecessor owns (old pred, n]: push it over. */
        if (had && !is_self(d, &old))
            handoff_range(d, &n, &old.id, &n.id);
    }
}

static void check_pred_reply(struct dht *d, void *ctx,
                             const Chord__Envelope *rep, int err)
{
    struct dht_node *asked = ctx;

    d->checking = false;
    if (!d->has_pred || strcmp(d->pred.addr, asked->addr) != 0) {
        free(asked);
        return;
    }
    if (err || !rep || rep->body_case != CHORD__ENVELOPE__BODY_PONG) {
        if (err != -ECONNREFUSED && ++d->pred_fails < FAILS_TO_DROP) {
            d->t_check = d->now; /* ask again at once */
            free(asked);
            return;
        }
        d->pred_fails = 0;
        log_info("core", d->tag, "predecessor %s not answering; forgetting it",
                 asked->addr);
        /* preds[] is kept: until a new predecessor notifies us we own
         * (preds[1], self], the dead one's range, whose replicas we hold. */
        d->has_pred = false;
        d->fresh_until = d->now + 3 * (uint64_t)d->cfg.maintain_ms;
        remember_lost(d, asked);
        forget_node(d, asked->addr);
        free(asked);
        return;
    }
    const Chord__Pong *p = rep->pong;
    d->pred_fails = 0;
    int k = 1;
    d->preds[0] = d->pred;
    for (size_t i = 0;
         i < p->n_preds && k < MAX_PREDS && k < d->cfg.replicas + 1; i++) {
        struct dht_node x;
        node_from_pb(p->preds[i], &x);
        if (is_self(d, &x))
            break;
        d->preds[k++] = x;
    }
    d->npreds = k;
    free(asked);
}

static void check_pred(struct dht *d)
{
    if (!d->has_pred || is_self(d, &d->pred))
        return;
    struct dht_node *asked = xmalloc(sizeof *asked);
    *asked = d->pred;
    d->checking = true;
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__Ping ping = CHORD__PING__INIT;
    env.body_case = CHORD__ENVELOPE__BODY_PING;
    env.ping = &ping;
    rpc_call(d, asked->addr, &env, check_pred_reply, asked);
}

static void handle_ping(struct dht *d, uint64_t conn, uint64_t req_id)
{
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__Pong pong = CHORD__PONG__INIT;
    Chord__Node pbs[MAX_PREDS];
    Chord__Node *ptrs[MAX_PREDS];

    for (int i = 0; i < d->npreds; i++) {
        node_to_pb(&d->preds[i], &pbs[i]);
        ptrs[i] = &pbs[i];
    }
    pong.preds = ptrs;
    pong.n_preds = (size_t)d->npreds;
    env.body_case = CHORD__ENVELOPE__BODY_PONG;
    env.pong = &pong;
    reply_env(d, conn, req_id, &env);
}

static void fix_done(struct dht *d, void *ctx, int err,
                     const struct dht_node *s, int hops)
{
    int i = (int)(intptr_t)ctx;
    struct dht_id start;

    (void)hops;
    d->fixing = false;
    if (d->state != ST_JOINED)
        return;
    if (err) {
        d->next_finger = (i + 1) % DHT_ID_BITS;
        return;
    }
    /* One answer fixes every finger whose start falls in (self, s]. */
    int j = i;
    for (; j < DHT_ID_BITS; j++) {
        dht_id_add_pow2(&d->self.id, j, &start);
        if (j > i && !dht_id_in_oc(&start, &d->self.id, &s->id))
            break;
        d->finger[j] = *s;
        d->has_finger[j] = !is_self(d, s);
    }
    d->next_finger = j % DHT_ID_BITS;
}

static void fix_fingers(struct dht *d)
{
    struct dht_id start;
    int i = d->next_finger;

    dht_id_add_pow2(&d->self.id, i, &start);
    d->fixing = true;
    lookup_start(d, &start, d->now + (uint64_t)d->cfg.op_timeout_ms, NULL,
                 fix_done, (void *)(intptr_t)i);
}

/* ----------------------------------------------------------- client ops */

static void op_unref(struct op *op)
{
    if (--op->refs > 0)
        return;
    free(op->key);
    free(op->value);
    free(op->text);
    free(op);
}

static void *op_ref(void *p)
{
    ((struct op *)p)->refs++;
    return p;
}

static void op_finish(struct dht *d, struct op *op, int err,
                      const Chord__Record *rec)
{
    struct dht_result res;
    struct dht_blob *blobs = NULL;

    if (op->finished)
        return;
    op->finished = true;
    memset(&res, 0, sizeof res);
    res.err = err;
    res.primary = op->primary;
    res.hops = op->hops;
    res.replicas = op->replicas;
    res.n_replicas = op->nrep;
    if (rec) {
        res.version = rec->version;
        if (!err && op->kind == DHT_OP_GET) {
            res.value = rec->value.data;
            res.len = rec->value.len;
        }
        if (!err && op->kind == DHT_OP_MEMBERS && rec->n_members) {
            blobs = xcalloc(rec->n_members, sizeof *blobs);
            for (size_t i = 0; i < rec->n_members; i++) {
                blobs[i].data = rec->members[i].data;
                blobs[i].len = rec->members[i].len;
            }
            res.members = blobs;
            res.n_members = rec->n_members;
        }
    }
    if (op->kind == DHT_OP_RING)
        res.text = op->text ? op->text : "";
    d->stats.ops++;
    if (err)
        d->stats.op_errors++;
    /* Unlink before calling out: the callback may start new ops. */
    if (op->prev)
        op->prev->next = op->next;
    else
        d->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->done(op->arg, &res);
    free(blobs);
    op_unref(op);
}

static bool retryable(int err)
{
    return err == -ETIMEDOUT || err == -ECONNREFUSED || err == -EAGAIN ||
           err == -EHOSTUNREACH || err == -ECONNRESET;
}

static void op_retry(struct dht *d, struct op *op, int err)
{
    uint64_t backoff = 50u << (op->attempts < 5 ? op->attempts : 5);

    op->last_err = err;
    op->attempts++;
    if (d->now + backoff >= op->deadline) {
        op_finish(d, op, err == -EAGAIN ? -EHOSTUNREACH : err, NULL);
        return;
    }
    op->retry_at = d->now + backoff;
}

static void kv_start(struct dht *d, struct kvjob *job);

static void op_kv_reply(struct dht *d, void *ctx, const Chord__Envelope *rep,
                        int err)
{
    struct op *op = ctx;

    if (!op->finished) {
        if (retryable(err)) {
            if (err != -EAGAIN)
                forget_node(d, op->primary.addr);
            op_retry(d, op, err);
        } else {
            const Chord__Record *rec = NULL;
            if (rep && rep->body_case == CHORD__ENVELOPE__BODY_KV_REPLY)
                rec = rep->kv_reply->record;
            op_finish(d, op, err, rec);
        }
    }
    op_unref(op);
}

static void op_state_reply(struct dht *d, void *ctx, const Chord__Envelope *rep,
                           int err)
{
    struct op *op = ctx;

    if (!op->finished) {
        if (err || !rep ||
            rep->body_case != CHORD__ENVELOPE__BODY_STATE_REPLY) {
            op_retry(d, op, err ? err : -EPROTO);
        } else {
            const Chord__StateReply *st = rep->state_reply;
            op->nrep = 0;
            for (size_t i = 0; i < st->n_succs && op->nrep < MAX_SUCC &&
                               op->nrep < d->cfg.replicas - 1;
                 i++) {
                node_from_pb(st->succs[i], &op->replicas[op->nrep]);
                if (strcmp(op->replicas[op->nrep].addr, op->primary.addr) == 0)
                    break;
                op->nrep++;
            }
            op_finish(d, op, 0, NULL);
        }
    }
    op_unref(op);
}

static Chord__OpKind op_kind_pb(enum dht_op_kind k)
{
    switch (k) {
    case DHT_OP_GET:
        return CHORD__OP_KIND__GET;
    case DHT_OP_PUT:
        return CHORD__OP_KIND__PUT;
    case DHT_OP_DELETE:
        return CHORD__OP_KIND__DELETE;
    case DHT_OP_ADD:
        return CHORD__OP_KIND__ADD;
    case DHT_OP_REMOVE:
        return CHORD__OP_KIND__REMOVE;
    case DHT_OP_MEMBERS:
        return CHORD__OP_KIND__MEMBERS;
    case DHT_OP_LOOKUP:
    case DHT_OP_RING:
        break;
    }
    return CHORD__OP_KIND__LOOKUP;
}

static void op_lookup_done(struct dht *d, void *ctx, int err,
                           const struct dht_node *s, int hops)
{
    struct op *op = ctx;

    op->hops += hops;
    if (op->finished) {
        op_unref(op);
        return;
    }
    if (err) {
        op_retry(d, op, err);
        op_unref(op);
        return;
    }
    op->primary = *s;
    if (op->kind == DHT_OP_LOOKUP) {
        if (is_self(d, s)) {
            op->nrep = 0;
            for (int i = 0; i < d->nsucc && op->nrep < d->cfg.replicas - 1;
                 i++) {
                if (is_self(d, &d->succ[i]))
                    break;
                op->replicas[op->nrep++] = d->succ[i];
            }
            op_finish(d, op, 0, NULL);
        } else {
            Chord__Envelope env = CHORD__ENVELOPE__INIT;
            Chord__GetState gs = CHORD__GET_STATE__INIT;
            env.body_case = CHORD__ENVELOPE__BODY_GET_STATE;
            env.get_state = &gs;
            rpc_call(d, s->addr, &env, op_state_reply, op_ref(op));
        }
        op_unref(op);
        return;
    }
    if (is_self(d, s)) {
        struct kvjob *job = xcalloc(1, sizeof *job);
        job->opk = op_kind_pb(op->kind);
        job->key = xstrdup(op->key);
        job->kid = op->kid;
        if (op->len) {
            job->value = xmalloc(op->len);
            memcpy(job->value, op->value, op->len);
        }
        job->len = op->len;
        job->has_expected = op->expected != DHT_ANY_VERSION;
        job->expected = op->expected;
        job->op_id = op->op_id;
        job->op = op_ref(op);
        kv_start(d, job);
    } else {
        Chord__Envelope env = CHORD__ENVELOPE__INIT;
        Chord__KvRequest kr = CHORD__KV_REQUEST__INIT;
        kr.op = op_kind_pb(op->kind);
        kr.key = op->key;
        kr.value.data = op->value;
        kr.value.len = op->len;
        kr.has_expected = op->expected != DHT_ANY_VERSION;
        kr.expected_version = kr.has_expected ? op->expected : 0;
        kr.op_id = op->op_id;
        env.body_case = CHORD__ENVELOPE__BODY_KV_REQUEST;
        env.kv_request = &kr;
        rpc_call(d, s->addr, &env, op_kv_reply, op_ref(op));
    }
    op_unref(op);
}

static void ring_step(struct dht *d, struct op *op);

static void ring_reply(struct dht *d, void *ctx, const Chord__Envelope *rep,
                       int err)
{
    struct op *op = ctx;

    if (op->finished) {
        op_unref(op);
        return;
    }
    if (err || !rep || rep->body_case != CHORD__ENVELOPE__BODY_STATE_REPLY) {
        /* Skip the silent peer: try the next of the previous list. */
        op->ring_ci++;
        ring_step(d, op);
        op_unref(op);
        return;
    }
    const Chord__StateReply *st = rep->state_reply;
    struct dht_node me;
    char hex[2 * DHT_ID_LEN + 1];
    node_from_pb(st->self, &me);
    dht_id_hex(&me.id, hex);
    struct sbuf b = {op->text, op->tlen, op->tcap};
    sb_printf(&b, "%s %s\n", hex, me.addr);
    op->text = b.s;
    op->tlen = b.len;
    op->tcap = b.cap;
    op->ring_ncands = 0;
    op->ring_ci = 0;
    for (size_t i = 0; i < st->n_succs && op->ring_ncands < MAX_SUCC; i++)
        node_from_pb(st->succs[i], &op->ring_cands[op->ring_ncands++]);
    ring_step(d, op);
    op_unref(op);
}

static void ring_step(struct dht *d, struct op *op)
{
    if (op->ring_ci >= op->ring_ncands) {
        op_finish(d, op, op->tlen ? 0 : -EHOSTUNREACH, NULL);
        return;
    }
    const struct dht_node *next = &op->ring_cands[op->ring_ci];
    if (is_self(d, next) || ++op->ring_steps > RING_MAX_STEPS) {
        op_finish(d, op, 0, NULL);
        return;
    }
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__GetState gs = CHORD__GET_STATE__INIT;
    env.body_case = CHORD__ENVELOPE__BODY_GET_STATE;
    env.get_state = &gs;
    rpc_call(d, next->addr, &env, ring_reply, op_ref(op));
}

static void op_attempt(struct dht *d, struct op *op)
{
    op->retry_at = 0;
    if (op->kind == DHT_OP_RING) {
        char hex[2 * DHT_ID_LEN + 1];
        struct sbuf b = {0};
        dht_id_hex(&d->self.id, hex);
        sb_printf(&b, "%s %s\n", hex, d->self.addr);
        free(op->text);
        op->text = b.s;
        op->tlen = b.len;
        op->tcap = b.cap;
        op->ring_ncands = 0;
        op->ring_ci = 0;
        for (int i = 0; i < d->nsucc; i++)
            op->ring_cands[op->ring_ncands++] = d->succ[i];
        ring_step(d, op);
        return;
    }
    if (d->state != ST_JOINED) {
        op_retry(d, op, -EAGAIN);
        return;
    }
    lookup_start(d, &op->kid, op->deadline, NULL, op_lookup_done, op_ref(op));
}

int dht_core_op(struct dht *d, const struct dht_op *o, uint64_t now_ms,
                dht_done_fn *done, void *arg)
{
    struct op *op;

    d->now = now_ms;
    if (o->kind != DHT_OP_RING) {
        if (!o->key || !o->key[0] || strlen(o->key) >= WIRE_KEY_MAX)
            return -EINVAL;
        if (o->len > WIRE_MAX_FRAME - (64u << 10))
            return -EFBIG;
    }
    if (d->state == ST_LEFT)
        return -ESHUTDOWN;
    op = xcalloc(1, sizeof *op);
    op->refs = 1;
    op->kind = o->kind;
    if (o->key) {
        op->key = xstrdup(o->key);
        dht_id_of(op->key, &op->kid);
    }
    if (o->len) {
        op->value = xmalloc(o->len);
        memcpy(op->value, o->value, o->len);
    }
    op->len = o->len;
    op->expected = o->expected;
    op->op_id = rng_next(d) | 1;
    op->done = done;
    op->arg = arg;
    op->deadline =
        now_ms +
        (uint64_t)(o->timeout_ms > 0 ? o->timeout_ms : d->cfg.op_timeout_ms);
    op->next = d->ops;
    if (d->ops)
        d->ops->prev = op;
    d->ops = op;
    op_ref(op);
    op_attempt(d, op);
    op_unref(op);
    return 0;
}

/* -------------------------------------------------------- primary side */

static void kvjob_free(struct kvjob *job)
{
    free(job->key);
    free(job->value);
    if (job->res)
        wire_record_free(job->res);
    free(job);
}

static void kv_finish(struct dht *d, struct kvjob *job, int err)
{
    if (job->remote) {
        Chord__Envelope env = CHORD__ENVELOPE__INIT;
        Chord__KvReply kr = CHORD__KV_REPLY__INIT;
        Chord__Record slim;
        env.status = wire_errno_to_status(err);
        if (job->res) {
            /* Writers only need the version back. */
            if (job->opk != CHORD__OP_KIND__GET &&
                job->opk != CHORD__OP_KIND__MEMBERS) {
                slim = *job->res;
                slim.value.len = 0;
                slim.value.data = NULL;
                slim.n_members = 0;
                slim.members = NULL;
                kr.record = &slim;
            } else {
                kr.record = job->res;
            }
            env.body_case = CHORD__ENVELOPE__BODY_KV_REPLY;
            env.kv_reply = &kr;
        }
        if (err && err != -ENOENT && err != -ESTALE && err != -EEXIST &&
            err != -EAGAIN)
            env.error = (char *)strerror(-err);
        reply_env(d, job->conn, job->req_id, &env);
    } else if (job->op) {
        struct op *op = job->op;
        if (!op->finished) {
            if (err == -EAGAIN)
                op_retry(d, op, err);
            else
                op_finish(d, op, err, job->res);
        }
        op_unref(op);
    }
    kvjob_free(job);
}

static void kv_ack(struct dht *d, void *ctx, const Chord__Envelope *rep,
                   int err)
{
    struct kvjob *job = ctx;

    (void)rep;
    if (err)
        log_debug("core", d->tag, "replica did not acknowledge %s: %s",
                  job->key, strerror(-err));
    if (--job->acks == 0)
        kv_finish(d, job, job->err);
}

/* Our replica set: the first replicas-1 successors, never self. */
static int replica_targets(const struct dht *d, const struct dht_node **out)
{
    int n = 0;

    for (int i = 0; i < d->nsucc && n < d->cfg.replicas - 1; i++) {
        if (is_self(d, &d->succ[i]))
            break;
        out[n++] = &d->succ[i];
    }
    return n;
}

static bool has_member(const Chord__Record *r, const void *v, size_t len)
{
    for (size_t i = 0; i < r->n_members; i++)
        if (r->members[i].len == len &&
            (len == 0 || memcmp(r->members[i].data, v, len) == 0))
            return true;
    return false;
}

static void kv_apply(struct dht *d, struct kvjob *job)
{
    Chord__Record *cur = NULL;
    Chord__Record nr = CHORD__RECORD__INIT;
    ProtobufCBinaryData *members = NULL;
    bool live, write = false;
    uint64_t curver;
    int err = 0;

    if (rec_load(d, &job->kid, job->key, &cur) < 0)
        cur = NULL;
    live = cur && cur->kind != CHORD__RECORD_KIND__TOMBSTONE;
    curver = cur ? cur->version : 0;
    nr.key = job->key;
    nr.version = curver + 1;
    nr.last_op = job->op_id;

    /* A retry of a write that already landed (its answer was lost, or the
     * primary crashed after replicating it): answer as the first time. */
    if (job->op_id && cur && cur->last_op == job->op_id &&
        job->opk != CHORD__OP_KIND__GET &&
        job->opk != CHORD__OP_KIND__MEMBERS) {
        job->res = cur;
        kv_finish(d, job, 0);
        return;
    }

    switch (job->opk) {
    case CHORD__OP_KIND__GET:
        if (!live)
            err = -ENOENT;
        else if (cur->kind != CHORD__RECORD_KIND__VALUE)
            err = -EINVAL;
        break;
    case CHORD__OP_KIND__MEMBERS:
        if (live && cur->kind != CHORD__RECORD_KIND__SET)
            err = -EINVAL;
        break;
    case CHORD__OP_KIND__PUT:
        if (job->has_expected && job->expected == 0 && live)
            err = -EEXIST;
        else if (job->has_expected && job->expected != 0 && !live)
            err = -ENOENT;
        else if (job->has_expected && job->expected != 0 &&
                 curver != job->expected)
            err = -ESTALE;
        nr.kind = CHORD__RECORD_KIND__VALUE;
        nr.value.data = job->value;
        nr.value.len = job->len;
        write = true;
        break;
    case CHORD__OP_KIND__DELETE:
        if (!live)
            err = -ENOENT;
        else if (job->has_expected && curver != job->expected)
            err = -ESTALE;
        nr.kind = CHORD__RECORD_KIND__TOMBSTONE;
        write = true;
        break;
    case CHORD__OP_KIND__ADD:
    case CHORD__OP_KIND__REMOVE: {
        bool add = job->opk == CHORD__OP_KIND__ADD;
        if (live && cur->kind != CHORD__RECORD_KIND__SET) {
            err = -EINVAL;
            break;
        }
        bool present = live && has_member(cur, job->value, job->len);
        if (add == present)
            break; /* nothing changes: answer with the current record */
        size_t n = live ? cur->n_members : 0, k = 0, bytes = 0;
        members = xcalloc(n + 1, sizeof *members);
        for (size_t i = 0; i < n; i++) {
            ProtobufCBinaryData *m = &cur->members[i];
            if (!add && m->len == job->len &&
                (m->len == 0 || memcmp(m->data, job->value, m->len) == 0))
                continue;
            members[k++] = *m;
            bytes += m->len + 8;
        }
        if (add) {
            members[k].data = job->value;
            members[k++].len = job->len;
            bytes += job->len + 8;
        }
        if (bytes > SET_MAX_BYTES || k > WIRE_MEMBERS_MAX) {
            err = -EFBIG;
            break;
        }
        nr.kind = CHORD__RECORD_KIND__SET;
        nr.members = members;
        nr.n_members = k;
        write = true;
        break;
    }
    case CHORD__OP_KIND__LOOKUP:
    case _CHORD__OP_KIND_IS_INT_SIZE:
        err = -EINVAL;
        break;
    }

    /* fs engineer: a read or no-op set change of a key that does not
     * exist has no record to send back; a remote OK reply without one is
     * refused as malformed by wire_decode (MEMBERS of a missing set timed
     * out), so answer -ENOENT, as a local caller sees it. */
    if (!err && !write && !live)
        err = -ENOENT; /* also a deleted (tombstoned) set */
    if (err || !write) {
        /* Reads, failed checks and no-op set changes. For mismatches the
         * current version travels back in the record. */
        job->res = cur;
        free(members);
        kv_finish(d, job, err);
        return;
    }
    /* fs engineer: cur is freed only after nr (whose set members point
     * into cur's) has been saved and copied; freeing it first corrupted
     * every set member but the newest. */
    err = rec_save(d, &nr);
    if (err < 0) {
        wire_record_free(cur);
        free(members);
        kv_finish(d, job, -EIO);
        return;
    }
    /* Writers are answered with the version only; the replicas get nr
     * itself, encoded straight from the caller's buffers (no copy of the
     * value beyond the store's and the frame's). */
    job->res = rec_slim(&nr);

    const struct dht_node *targets[MAX_SUCC];
    int n = replica_targets(d, targets);
    if (n == 0) {
        wire_record_free(cur);
        free(members);
        kv_finish(d, job, 0);
        return;
    }
    job->acks = n;
    for (int i = 0; i < n; i++) {
        Chord__Envelope env = CHORD__ENVELOPE__INIT;
        Chord__Replicate rep = CHORD__REPLICATE__INIT;
        Chord__Record *one = &nr;
        rep.records = &one;
        rep.n_records = 1;
        env.body_case = CHORD__ENVELOPE__BODY_REPLICATE;
        env.replicate = &rep;
        rpc_call(d, targets[i]->addr, &env, kv_ack, job);
        d->stats.replicated++;
    }
    wire_record_free(cur);
    free(members);
}

static void kv_fetched(struct dht *d, void *ctx, const Chord__Envelope *rep,
                       int err)
{
    struct kvjob *job = ctx;

    if (!err && rep && rep->body_case == CHORD__ENVELOPE__BODY_KV_REPLY &&
        rep->kv_reply->record &&
        strcmp(rep->kv_reply->record->key, job->key) == 0) {
        if (rec_merge(d, rep->kv_reply->record) > 0)
            d->stats.repaired++;
    }
    job->fetched = true;
    kv_start(d, job);
}

static bool owns(const struct dht *d, const struct dht_id *kid)
{
    if (!d->has_pred) {
        /* Predecessor lost: we inherit its range, not the whole ring. */
        if (d->npreds >= 2 && !is_self(d, &d->preds[1]))
            return dht_id_in_oc(kid, &d->preds[1].id, &d->self.id);
        return true;
    }
    if (is_self(d, &d->pred))
        return true;
    return dht_id_in_oc(kid, &d->pred.id, &d->self.id);
}

static void kv_start(struct dht *d, struct kvjob *job)
{
    if (d->state != ST_JOINED || !owns(d, &job->kid)) {
        kv_finish(d, job, -EAGAIN);
        return;
    }
    if (!job->fetched && d->now < d->fresh_until && !alone(d)) {
        /* Recently joined or took over a range: the previous owner may
         * hold a newer copy that has not reached us yet. */
        Chord__Envelope env = CHORD__ENVELOPE__INIT;
        Chord__FetchRecord fr = CHORD__FETCH_RECORD__INIT;
        fr.key = job->key;
        env.body_case = CHORD__ENVELOPE__BODY_FETCH_RECORD;
        env.fetch_record = &fr;
        rpc_call(d, first_succ(d)->addr, &env, kv_fetched, job);
        return;
    }
    kv_apply(d, job);
}

static void handle_kv_request(struct dht *d, uint64_t conn, uint64_t req_id,
                              const Chord__KvRequest *kr)
{
    struct kvjob *job = xcalloc(1, sizeof *job);

    job->opk = kr->op;
    job->key = xstrdup(kr->key);
    dht_id_of(job->key, &job->kid);
    if (kr->value.len) {
        job->value = xmalloc(kr->value.len);
        memcpy(job->value, kr->value.data, kr->value.len);
    }
    job->len = kr->value.len;
    job->has_expected = kr->has_expected;
    job->expected = kr->expected_version;
    job->op_id = kr->op_id;
    job->remote = true;
    job->conn = conn;
    job->req_id = req_id;
    kv_start(d, job);
}

static void handle_fetch(struct dht *d, uint64_t conn, uint64_t req_id,
                         const Chord__FetchRecord *fr)
{
    struct dht_id id;
    Chord__Record *rec = NULL;

    dht_id_of(fr->key, &id);
    if (rec_load(d, &id, fr->key, &rec) < 0) {
        reply_status(d, conn, req_id, CHORD__STATUS__NOT_FOUND, NULL);
        return;
    }
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__KvReply kr = CHORD__KV_REPLY__INIT;
    kr.record = rec;
    env.body_case = CHORD__ENVELOPE__BODY_KV_REPLY;
    env.kv_reply = &kr;
    reply_env(d, conn, req_id, &env);
    wire_record_free(rec);
}

static void handle_replicate(struct dht *d, uint64_t conn, uint64_t req_id,
                             const Chord__Replicate *rp)
{
    int failed = 0;

    if (d->state == ST_LEAVING) {
        /* We are going: the sender must pick the next peer. */
        reply_status(d, conn, req_id, CHORD__STATUS__UNAVAILABLE, "leaving");
        return;
    }

    for (size_t i = 0; i < rp->n_records; i++) {
        int rc = rec_merge(d, rp->records[i]);
        if (rc < 0)
            failed++;
    }
    if (failed) {
        reply_status(d, conn, req_id, CHORD__STATUS__INTERNAL,
                     "store write failed");
        return;
    }
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__Ack ack = CHORD__ACK__INIT;
    env.body_case = CHORD__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    reply_env(d, conn, req_id, &env);
}

/* ---------------------------------------------------------- anti-entropy */

struct sync_ctx {
    int refs;
    struct dht_node peer;
};

static void *sync_ref(void *p)
{
    ((struct sync_ctx *)p)->refs++;
    return p;
}

static void sync_unref(struct dht *d, struct sync_ctx *sc)
{
    (void)d;
    if (--sc->refs == 0)
        free(sc);
}

static void sync_push_reply(struct dht *d, void *ctx,
                            const Chord__Envelope *rep, int err)
{
    (void)rep;
    (void)err;
    d->maintaining--;
    sync_unref(d, ctx);
}

static void sync_reply(struct dht *d, void *ctx, const Chord__Envelope *rep,
                       int err)
{
    struct sync_ctx *sc = ctx;

    d->maintaining--;
    if (!err && rep && rep->body_case == CHORD__ENVELOPE__BODY_SYNC_REPLY &&
        d->state == ST_JOINED) {
        const Chord__SyncReply *sr = rep->sync_reply;
        for (size_t i = 0; i < sr->n_records; i++)
            if (rec_merge(d, sr->records[i]) > 0)
                d->stats.repaired++;
        if (sr->n_want) {
            int n = push_records(d, sc->peer.addr, sr->want, sr->n_want, false,
                                 sync_push_reply, sync_ref, sc);
            d->maintaining += n;
        }
    }
    sync_unref(d, sc);
}

static void send_digest(struct dht *d, struct sync_ctx *sc,
                        const struct dht_id *rlo, const struct dht_id *rhi,
                        const struct dht_id *plo, const struct dht_id *phi,
                        struct keylist *kl, size_t from, size_t to)
{
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__SyncDigest sd = CHORD__SYNC_DIGEST__INIT;
    size_t n = to - from;
    Chord__DigestEntry *ents = xcalloc(n ? n : 1, sizeof *ents);
    Chord__DigestEntry **ptrs = xcalloc(n ? n : 1, sizeof *ptrs);

    for (size_t i = 0; i < n; i++) {
        chord__digest_entry__init(&ents[i]);
        ents[i].key = kl->keys[from + i];
        ents[i].version = kl->versions[from + i];
        ptrs[i] = &ents[i];
    }
    sd.range_lo.data = (uint8_t *)rlo->b;
    sd.range_lo.len = DHT_ID_LEN;
    sd.range_hi.data = (uint8_t *)rhi->b;
    sd.range_hi.len = DHT_ID_LEN;
    sd.page_lo.data = (uint8_t *)plo->b;
    sd.page_lo.len = DHT_ID_LEN;
    sd.page_hi.data = (uint8_t *)phi->b;
    sd.page_hi.len = DHT_ID_LEN;
    sd.entries = ptrs;
    sd.n_entries = n;
    env.body_case = CHORD__ENVELOPE__BODY_SYNC_DIGEST;
    env.sync_digest = &sd;
    d->maintaining++;
    rpc_call(d, sc->peer.addr, &env, sync_reply, sync_ref(sc));
    free(ents);
    free(ptrs);
}

/* Send the digest of our primary range to one replica, page by page. */
static void sync_with(struct dht *d, const struct dht_node *peer,
                      struct keylist *kl)
{
    struct sync_ctx *sc = xcalloc(1, sizeof *sc);
    const struct dht_id *lo = &d->pred.id, *hi = &d->self.id;
    struct dht_id plo = *lo;

    sc->refs = 1;
    sc->peer = *peer;
    for (size_t from = 0;;) {
        size_t to = from + SYNC_PAGE < kl->n ? from + SYNC_PAGE : kl->n;
        struct dht_id phi = *hi;
        if (to < kl->n)
            dht_id_of(kl->keys[to - 1], &phi);
        send_digest(d, sc, lo, hi, &plo, &phi, kl, from, to);
        if (to >= kl->n)
            break;
        plo = phi;
        from = to;
    }
    sync_unref(d, sc);
}

static void handle_sync_digest(struct dht *d, uint64_t conn, uint64_t req_id,
                               const Chord__SyncDigest *sd)
{
    struct dht_id plo, phi;
    struct keylist mine = {0};
    Chord__SyncReply sr = CHORD__SYNC_REPLY__INIT;
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    char **want = NULL;
    Chord__Record **recs = NULL;
    size_t nwant = 0, nrecs = 0, bytes = 0;

    memcpy(plo.b, sd->page_lo.data, DHT_ID_LEN);
    memcpy(phi.b, sd->page_hi.data, DHT_ID_LEN);
    dht_store_range(d->store, &plo, &phi, collect_keys, &mine);

    /* Digest keys we lack or hold older. */
    want = xcalloc(sd->n_entries ? sd->n_entries : 1, sizeof *want);
    for (size_t i = 0; i < sd->n_entries; i++) {
        const Chord__DigestEntry *e = sd->entries[i];
        bool found = false;
        for (size_t j = 0; j < mine.n; j++) {
            if (strcmp(mine.keys[j], e->key) == 0) {
                found = true;
                if (mine.versions[j] < e->version)
                    want[nwant++] = e->key;
                break;
            }
        }
        if (!found)
            want[nwant++] = e->key;
    }
    /* Keys we hold newer, or that the primary lacks. */
    for (size_t j = 0; j < mine.n && nrecs < WIRE_BATCH_MAX; j++) {
        bool send = true;
        for (size_t i = 0; i < sd->n_entries; i++) {
            const Chord__DigestEntry *e = sd->entries[i];
            if (strcmp(mine.keys[j], e->key) == 0) {
                send = mine.versions[j] > e->version;
                break;
            }
        }
        if (!send)
            continue;
        struct dht_id id;
        Chord__Record *r;
        dht_id_of(mine.keys[j], &id);
        if (rec_load(d, &id, mine.keys[j], &r) < 0)
            continue;
        size_t rl = chord__record__get_packed_size(r);
        if (bytes + rl > BATCH_BYTES && nrecs) {
            wire_record_free(r);
            break;
        }
        recs = xrealloc(recs, (nrecs + 1) * sizeof *recs);
        recs[nrecs++] = r;
        bytes += rl;
    }
    sr.want = want;
    sr.n_want = nwant;
    sr.records = recs;
    sr.n_records = nrecs;
    env.body_case = CHORD__ENVELOPE__BODY_SYNC_REPLY;
    env.sync_reply = &sr;
    reply_env(d, conn, req_id, &env);
    for (size_t i = 0; i < nrecs; i++)
        wire_record_free(recs[i]);
    free(recs);
    free(want);
    keylist_free(&mine);
}

/* Keys outside (R-th predecessor, self] are offered to their primary and
 * dropped once it acknowledged. */
struct stray {
    char *key;
    struct dht_id kid;
};

static bool responsible(const struct dht *d, const struct dht_id *kid)
{
    int r = d->cfg.replicas;

    if (!d->has_pred || d->npreds < r)
        return true; /* ring too small (or list not learned): keep all */
    return dht_id_in_oc(kid, &d->preds[r - 1].id, &d->self.id);
}

static void stray_acked(struct dht *d, void *ctx, const Chord__Envelope *rep,
                        int err)
{
    struct stray *st = ctx;

    (void)rep;
    d->maintaining--;
    if (!err && !responsible(d, &st->kid)) {
        if (dht_store_del(d->store, &st->kid, st->key) == 0)
            d->stats.dropped++;
    }
    free(st->key);
    free(st);
}

static void stray_found(struct dht *d, void *ctx, int err,
                        const struct dht_node *p, int hops)
{
    struct stray *st = ctx;
    Chord__Record *rec = NULL;

    (void)hops;
    d->maintaining--;
    if (err || is_self(d, p) || d->state != ST_JOINED ||
        rec_load(d, &st->kid, st->key, &rec) < 0) {
        free(st->key);
        free(st);
        return;
    }
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__Replicate rp = CHORD__REPLICATE__INIT;
    rp.records = &rec;
    rp.n_records = 1;
    rp.handoff = 1;
    env.body_case = CHORD__ENVELOPE__BODY_REPLICATE;
    env.replicate = &rp;
    d->maintaining++;
    rpc_call(d, p->addr, &env, stray_acked, st);
    wire_record_free(rec);
}

/* Partition healing. A peer we lost may be alive again in a ring of its
 * own (the other side of a partition). We look ourselves up through it: if
 * its ring has a peer between us and our successor, we adopt that peer as
 * a joining peer would, and stabilization carries the merge around both
 * rings (each adoption inserts peers into (self, successor), never loops). */
static void merge_adopted(struct dht *d, void *ctx, const Chord__Envelope *rep,
                          int err)
{
    struct dht_node *s = ctx;

    if (!err && rep && rep->body_case == CHORD__ENVELOPE__BODY_STATE_REPLY &&
        d->state == ST_JOINED &&
        (alone(d) || dht_id_in_oo(&s->id, &d->self.id, &d->succ[0].id))) {
        log_info("core", d->tag, "merging with the ring of %s", s->addr);
        set_succs(d, s, rep->state_reply->succs, rep->state_reply->n_succs);
        send_notify(d, s);
    }
    free(s);
}

static void merge_found(struct dht *d, void *ctx, int err,
                        const struct dht_node *s, int hops)
{
    char *via = ctx;

    (void)hops;
    if (!err)
        forget_lost(d, via); /* it answered: alive, stop probing */
    if (!err && d->state == ST_JOINED && !is_self(d, s) &&
        (alone(d) || dht_id_in_oo(&s->id, &d->self.id, &d->succ[0].id))) {
        struct dht_node *c = xmalloc(sizeof *c);
        *c = *s;
        Chord__Envelope env = CHORD__ENVELOPE__INIT;
        Chord__GetState gs = CHORD__GET_STATE__INIT;
        env.body_case = CHORD__ENVELOPE__BODY_GET_STATE;
        env.get_state = &gs;
        rpc_call(d, c->addr, &env, merge_adopted, c);
    }
    free(via);
}

static void probe_lost(struct dht *d)
{
    while (d->nlost) {
        int i = d->lost_next++ % d->nlost;
        if (d->now - d->lost[i].when > LOST_FORGET_MS) {
            d->lost[i] = d->lost[--d->nlost];
            continue;
        }
        bool known = false; /* back in our successor list: nothing to do */
        for (int k = 0; k < d->nsucc; k++)
            if (strcmp(d->succ[k].addr, d->lost[i].n.addr) == 0)
                known = true;
        if (known) {
            d->lost[i] = d->lost[--d->nlost];
            continue;
        }
        lookup_start(d, &d->self.id, d->now + (uint64_t)d->cfg.op_timeout_ms,
                     d->lost[i].n.addr, merge_found,
                     xstrdup(d->lost[i].n.addr));
        return;
    }
}

/* Interleaved chains. Many peers joining through one peer at once can
 * leave two chains whose successor pointers skip each other while every
 * link looks consistent to stabilize (the loopy states of Zave's paper).
 * Looking ourselves up through a random peer we know, as probe_lost does
 * for partitions, reveals a closer peer if one exists; it is adopted only
 * after it answered. */
static void self_check(struct dht *d)
{
    const struct dht_node *cand[DHT_ID_BITS + MAX_SUCC];
    int n = 0;

    for (int i = 0; i < DHT_ID_BITS; i++)
        if (d->has_finger[i] && !is_self(d, &d->finger[i]) &&
            (n == 0 || !node_is(cand[n - 1], &d->finger[i])))
            cand[n++] = &d->finger[i];
    for (int i = 1; i < d->nsucc; i++)
        if (!is_self(d, &d->succ[i]))
            cand[n++] = &d->succ[i];
    if (n == 0)
        return;
    const struct dht_node *via = cand[rng_next(d) % (uint64_t)n];
    lookup_start(d, &d->self.id, d->now + (uint64_t)d->cfg.op_timeout_ms,
                 via->addr, merge_found, xstrdup(via->addr));
}

static void maintain(struct dht *d)
{
    if (d->maintaining > 0)
        return;
    if (alone(d)) {
        probe_lost(d);
        return;
    }
    if (d->has_pred && !is_self(d, &d->pred)) {
        const struct dht_node *targets[MAX_SUCC];
        int n = replica_targets(d, targets);
        struct keylist kl = {0};
        dht_store_range(d->store, &d->pred.id, &d->self.id, collect_keys, &kl);
        for (int i = 0; i < n; i++)
            sync_with(d, targets[i], &kl);
        keylist_free(&kl);
    }
    probe_lost(d);
    self_check(d);
    if (d->has_pred && d->npreds >= d->cfg.replicas) {
        struct keylist kl = {.max = STRAY_PER_PASS};
        /* (self, R-th pred] is everything we are not responsible for. */
        dht_store_range(d->store, &d->self.id,
                        &d->preds[d->cfg.replicas - 1].id, collect_keys, &kl);
        for (size_t i = 0; i < kl.n; i++) {
            struct stray *st = xcalloc(1, sizeof *st);
            st->key = xstrdup(kl.keys[i]);
            dht_id_of(st->key, &st->kid);
            if (responsible(d, &st->kid)) {
                free(st->key);
                free(st);
                continue;
            }
            d->maintaining++;
            lookup_start(d, &st->kid, d->now + (uint64_t)d->cfg.op_timeout_ms,
                         NULL, stray_found, st);
        }
        keylist_free(&kl);
    }
}

/* ---------------------------------------------------------- join / leave */

static void join_probed(struct dht *d, void *ctx, const Chord__Envelope *rep,
                        int err);

static void join_found(struct dht *d, void *ctx, int err,
                       const struct dht_node *s, int hops)
{
    (void)ctx;
    (void)hops;
    if (d->state != ST_JOINING)
        return;
    if (err) {
        if (d->now + 500 < d->join_deadline && err != -ECONNREFUSED) {
            d->t_join = d->now + 500;
            return;
        }
        snprintf(d->why, sizeof d->why, "cannot join through %s: %s",
                 d->bootstrap, strerror(-err));
        log_error("core", d->tag, "%s", d->why);
        d->state = ST_NEW;
        d->t_join = 0;
        if (d->join_done)
            d->join_done(d->join_arg, err, d->why);
        return;
    }
    /* (sim engineer) The lookup's answer may name a successor that died
     * before the bootstrap noticed; adopting it stranded the new peer as a
     * ring of one (docs/core-bugs.md #5). Probe it first: join_probed()
     * adopts it with its list, or retries the join. */
    struct dht_node *probe = xmalloc(sizeof *probe);
    *probe = *s;
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__GetState gs = CHORD__GET_STATE__INIT;
    env.body_case = CHORD__ENVELOPE__BODY_GET_STATE;
    env.get_state = &gs;
    rpc_call(d, probe->addr, &env, join_probed, probe);
}

static void join_probed(struct dht *d, void *ctx, const Chord__Envelope *rep,
                        int err)
{
    struct dht_node *s = ctx;

    if (d->state != ST_JOINING) {
        free(s);
        return;
    }
    if (err || !rep || rep->body_case != CHORD__ENVELOPE__BODY_STATE_REPLY) {
        free(s);
        join_found(d, NULL, err ? err : -EPROTO, NULL, 0);
        return;
    }
    set_succs(d, s, rep->state_reply->succs, rep->state_reply->n_succs);
    d->state = ST_JOINED;
    d->t_join = 0;
    d->fresh_until = d->now + 3 * (uint64_t)d->cfg.maintain_ms;
    d->t_stabilize = d->now;
    d->t_fix = d->now + 1;
    d->t_check = d->now + (uint64_t)d->cfg.check_pred_ms;
    d->t_maintain = d->now + (uint64_t)d->cfg.maintain_ms;
    log_info("core", d->tag, "joined through %s; successor %s", d->bootstrap,
             s->addr);
    free(s);
    if (d->join_done)
        d->join_done(d->join_arg, 0, NULL);
}

static void join_try(struct dht *d)
{
    d->t_join = 0;
    lookup_start(d, &d->self.id, d->join_deadline, d->bootstrap, join_found,
                 NULL);
}

int dht_core_join(struct dht *d, const char *bootstrap, uint64_t now_ms,
                  dht_join_fn *done, void *arg)
{
    d->now = now_ms;
    if (d->state == ST_JOINED || d->state == ST_JOINING)
        return -EALREADY;
    if (!bootstrap || !bootstrap[0] || strlen(bootstrap) >= DHT_ADDR_MAX)
        return -EINVAL;
    snprintf(d->bootstrap, sizeof d->bootstrap, "%s", bootstrap);
    d->join_done = done;
    d->join_arg = arg;
    d->join_deadline = now_ms + (uint64_t)d->cfg.op_timeout_ms;
    d->state = ST_JOINING;
    join_try(d);
    return 0;
}

void dht_core_create(struct dht *d, uint64_t now_ms)
{
    d->now = now_ms;
    d->succ[0] = d->self;
    d->nsucc = 1;
    d->has_pred = false;
    d->state = ST_JOINED;
    d->t_stabilize = now_ms + (uint64_t)d->cfg.stabilize_ms;
    d->t_fix = now_ms + (uint64_t)d->cfg.fix_fingers_ms;
    d->t_check = now_ms + (uint64_t)d->cfg.check_pred_ms;
    d->t_maintain = now_ms + (uint64_t)d->cfg.maintain_ms;
    log_info("core", d->tag, "created a new ring as %s", d->self.addr);
}

static void leave_finish(struct dht *d, int err)
{
    if (d->state != ST_LEAVING)
        return;
    d->state = ST_LEFT;
    log_info("core", d->tag, "left the ring%s",
             err ? " (not acknowledged)" : "");
    if (d->leave_done)
        d->leave_done(d->leave_arg, err, err ? "leave timed out" : NULL);
}

/* Build the Leave message (who we are, our predecessor and successors). */
static void send_leave(struct dht *d, const char *to, rpc_fn *fn)
{
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__Leave lv = CHORD__LEAVE__INIT;
    Chord__Node me, pp, sl[MAX_SUCC];
    Chord__Node *sp[MAX_SUCC];

    node_to_pb(&d->self, &me);
    lv.node = &me;
    if (d->has_pred) {
        node_to_pb(&d->pred, &pp);
        lv.pred = &pp;
    }
    for (int i = 0; i < d->nsucc; i++) {
        node_to_pb(&d->succ[i], &sl[i]);
        sp[i] = &sl[i];
    }
    lv.succs = sp;
    lv.n_succs = (size_t)d->nsucc;
    env.body_case = CHORD__ENVELOPE__BODY_LEAVE;
    env.leave = &lv;
    rpc_call(d, to, &env, fn, NULL);
}

static void leave_try(struct dht *d);

static void leave_acked(struct dht *d, void *ctx, const Chord__Envelope *rep,
                        int err)
{
    (void)ctx;
    (void)rep;
    if (d->state != ST_LEAVING)
        return;
    if (err) {
        log_warn("core", d->tag, "hand-off to %s not acknowledged: %s",
                 d->succ[d->leave_target].addr, strerror(-err));
        d->leave_failed = true;
    }
    if (--d->leave_pending > 0)
        return;
    if (!d->leave_failed) {
        leave_finish(d, 0);
        return;
    }
    /* That successor is gone or leaving too: hand everything to the next
     * one, so R adjacent peers leaving at once lose nothing. */
    d->leave_target++;
    leave_try(d);
}

/* Push every key we hold (replica copies too: when the R holders of a key
 * leave together each must pass it on) and the Leave message to the
 * successor leave_target; maintenance there drops what it need not keep. */
static void leave_try(struct dht *d)
{
    struct keylist kl = {0};

    while (d->leave_target < d->nsucc && is_self(d, &d->succ[d->leave_target]))
        d->leave_target++;
    if (d->leave_target >= d->nsucc) {
        log_error("core", d->tag,
                  "no successor acknowledged our hand-off; keys not "
                  "replicated elsewhere may be lost");
        leave_finish(d, -EHOSTUNREACH);
        return;
    }
    const struct dht_node *s = &d->succ[d->leave_target];
    dht_store_range(d->store, &d->self.id, &d->self.id, collect_keys, &kl);
    log_info("core", d->tag, "leaving: handing %zu keys to %s", kl.n, s->addr);
    d->leave_failed = false;
    d->leave_pending = 1; /* released below, after everything is sent */
    d->leave_pending +=
        push_records(d, s->addr, kl.keys, kl.n, true, leave_acked, NULL, NULL);
    keylist_free(&kl);
    send_leave(d, s->addr, leave_acked);
    d->leave_pending++;
    leave_acked(d, NULL, NULL, 0);
}

int dht_core_leave(struct dht *d, uint64_t now_ms, dht_join_fn *done, void *arg)
{
    d->now = now_ms;
    if (d->state != ST_JOINED) {
        d->state = ST_LEFT;
        if (done)
            done(arg, 0, NULL);
        return 0;
    }
    d->state = ST_LEAVING;
    d->leave_done = done;
    d->leave_arg = arg;
    d->leave_deadline = now_ms + (uint64_t)d->cfg.op_timeout_ms;
    if (alone(d)) {
        leave_finish(d, 0);
        return 0;
    }
    /* The predecessor learns whom to link to; it does not gate leaving. */
    if (d->has_pred && !is_self(d, &d->pred) &&
        strcmp(d->pred.addr, d->succ[0].addr) != 0)
        send_leave(d, d->pred.addr, notify_reply);
    d->leave_target = 0;
    leave_try(d);
    return 0;
}

static void handle_leave(struct dht *d, uint64_t conn, uint64_t req_id,
                         const Chord__Leave *lv)
{
    struct dht_node who;
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__Ack ack = CHORD__ACK__INIT;

    node_from_pb(lv->node, &who);
    if (d->state == ST_LEAVING) {
        reply_status(d, conn, req_id, CHORD__STATUS__UNAVAILABLE, "leaving");
        return;
    }
    log_info("core", d->tag, "%s is leaving", who.addr);
    if (d->state == ST_JOINED) {
        if (d->has_pred && strcmp(d->pred.addr, who.addr) == 0) {
            /* We inherit its range; it handed us its keys. */
            d->has_pred = false;
            d->npreds = 0;
            if (lv->pred) {
                struct dht_node p;
                node_from_pb(lv->pred, &p);
                if (!is_self(d, &p)) {
                    d->pred = p;
                    d->has_pred = true;
                    d->preds[0] = p;
                    d->npreds = 1;
                }
            }
            d->fresh_until = d->now + 3 * (uint64_t)d->cfg.maintain_ms;
        }
        if (d->nsucc && strcmp(d->succ[0].addr, who.addr) == 0) {
            struct dht_node head = d->self;
            size_t skip = 0;
            /* Splice the leaver's successors in after us. */
            while (skip < lv->n_succs) {
                node_from_pb(lv->succs[skip], &head);
                if (strcmp(head.addr, who.addr) != 0)
                    break;
                skip++;
            }
            if (skip < lv->n_succs && !is_self(d, &head))
                set_succs(d, &head, lv->succs + skip + 1,
                          lv->n_succs - skip - 1);
            else
                set_succs(d, &d->self, NULL, 0);
        } else {
            remove_succ(d, who.addr);
        }
        forget_node(d, who.addr);
    }
    env.body_case = CHORD__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    reply_env(d, conn, req_id, &env);
}

/* ---------------------------------------------------------- client peers */

struct client_ctx {
    struct dht *d;
    uint64_t conn, req_id;
    bool info;
    char *key; /* net engineer: the op's key, for the reply's Record */
};

static void client_done(void *arg, const struct dht_result *res)
{
    struct client_ctx *cc = arg;
    struct dht *d = cc->d;
    Chord__Envelope env = CHORD__ENVELOPE__INIT;

    env.status = wire_errno_to_status(res->err);
    if (res->err)
        env.error = (char *)strerror(-res->err);
    if (cc->info) {
        Chord__InfoReply ir = CHORD__INFO_REPLY__INIT;
        ir.text = (char *)(res->text ? res->text : "");
        env.body_case = CHORD__ENVELOPE__BODY_INFO_REPLY;
        env.info_reply = &ir;
        reply_env(d, cc->conn, cc->req_id, &env);
        free(cc);
        return;
    }
    Chord__ClientOpReply cr = CHORD__CLIENT_OP_REPLY__INIT;
    Chord__Record rec = CHORD__RECORD__INIT;
    Chord__Node prim, reps[MAX_SUCC];
    Chord__Node *rptr[MAX_SUCC];
    ProtobufCBinaryData *mem = NULL;

    rec.version = res->version;
    /* net engineer: wire_decode refuses a Record with an empty key, so
     * chordctl saw every ClientOpReply as malformed; echo the op's key. */
    rec.key = cc->key && cc->key[0] ? cc->key : (char *)"?";
    if (res->value) {
        rec.value.data = (uint8_t *)res->value;
        rec.value.len = res->len;
    }
    if (res->n_members) {
        mem = xcalloc(res->n_members, sizeof *mem);
        for (size_t i = 0; i < res->n_members; i++) {
            mem[i].data = res->members[i].data;
            mem[i].len = res->members[i].len;
        }
        rec.members = mem;
        rec.n_members = res->n_members;
        rec.kind = CHORD__RECORD_KIND__SET;
    }
    cr.record = &rec;
    cr.hops = (uint32_t)res->hops;
    if (res->primary.addr[0]) {
        node_to_pb(&res->primary, &prim);
        cr.primary = &prim;
    }
    for (int i = 0; i < res->n_replicas && i < MAX_SUCC; i++) {
        node_to_pb(&res->replicas[i], &reps[i]);
        rptr[i] = &reps[i];
    }
    cr.replicas = rptr;
    cr.n_replicas =
        (size_t)(res->n_replicas < MAX_SUCC ? res->n_replicas : MAX_SUCC);
    env.body_case = CHORD__ENVELOPE__BODY_CLIENT_OP_REPLY;
    env.client_op_reply = &cr;
    reply_env(d, cc->conn, cc->req_id, &env);
    free(mem);
    free(cc->key);
    free(cc);
}

static enum dht_op_kind op_kind_from_pb(Chord__OpKind k)
{
    switch (k) {
    case CHORD__OP_KIND__GET:
        return DHT_OP_GET;
    case CHORD__OP_KIND__PUT:
        return DHT_OP_PUT;
    case CHORD__OP_KIND__DELETE:
        return DHT_OP_DELETE;
    case CHORD__OP_KIND__ADD:
        return DHT_OP_ADD;
    case CHORD__OP_KIND__REMOVE:
        return DHT_OP_REMOVE;
    case CHORD__OP_KIND__MEMBERS:
        return DHT_OP_MEMBERS;
    case CHORD__OP_KIND__LOOKUP:
    case _CHORD__OP_KIND_IS_INT_SIZE:
        break;
    }
    return DHT_OP_LOOKUP;
}

static void handle_client_op(struct dht *d, uint64_t conn, uint64_t req_id,
                             const Chord__ClientOp *co)
{
    const Chord__KvRequest *kr = co->req;
    struct dht_op o = {0};
    struct client_ctx *cc;
    int rc;

    if (!kr) {
        reply_status(d, conn, req_id, CHORD__STATUS__BAD_REQUEST,
                     "client op without request");
        return;
    }
    o.kind = op_kind_from_pb(kr->op);
    o.key = kr->key;
    o.value = kr->value.data;
    o.len = kr->value.len;
    o.expected = kr->has_expected ? kr->expected_version : DHT_ANY_VERSION;
    cc = xcalloc(1, sizeof *cc);
    cc->d = d;
    cc->conn = conn;
    cc->req_id = req_id;
    cc->key = xstrdup(kr->key ? kr->key : "");
    rc = dht_core_op(d, &o, d->now, client_done, cc);
    if (rc < 0) {
        free(cc->key);
        free(cc);
        reply_status(d, conn, req_id, wire_errno_to_status(rc), strerror(-rc));
    }
}

static void handle_info(struct dht *d, uint64_t conn, uint64_t req_id,
                        const Chord__InfoRequest *ir)
{
    char *text = NULL;

    if (strcmp(ir->what, "ring") == 0) {
        struct dht_op o = {.kind = DHT_OP_RING};
        struct client_ctx *cc = xcalloc(1, sizeof *cc);
        cc->d = d;
        cc->conn = conn;
        cc->req_id = req_id;
        cc->info = true;
        if (dht_core_op(d, &o, d->now, client_done, cc) < 0) {
            free(cc);
            reply_status(d, conn, req_id, CHORD__STATUS__UNAVAILABLE,
                         "peer has left");
        }
        return;
    }
    if (dht_core_info(d, ir->what, d->now, &text) < 0) {
        reply_status(d, conn, req_id, CHORD__STATUS__NOT_FOUND,
                     "unknown info name");
        return;
    }
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__InfoReply rep = CHORD__INFO_REPLY__INIT;
    rep.text = text;
    env.body_case = CHORD__ENVELOPE__BODY_INFO_REPLY;
    env.info_reply = &rep;
    reply_env(d, conn, req_id, &env);
    free(text);
}

static void client_leave_done(void *arg, int err, const char *msg)
{
    struct dht *d = arg;

    (void)err;
    (void)msg;
    if (d->io.stopped)
        d->io.stopped(d->io.arg);
}

static void handle_leave_request(struct dht *d, uint64_t conn, uint64_t req_id)
{
    Chord__Envelope env = CHORD__ENVELOPE__INIT;
    Chord__Ack ack = CHORD__ACK__INIT;

    env.body_case = CHORD__ENVELOPE__BODY_ACK;
    env.ack = &ack;
    reply_env(d, conn, req_id, &env);
    log_info("core", d->tag, "a client asked us to leave");
    dht_core_leave(d, d->now, client_leave_done, d);
}

/* ------------------------------------------------------------- dispatch */

void dht_core_recv(struct dht *d, uint64_t conn, const uint8_t *payload,
                   size_t len, uint64_t now_ms)
{
    Chord__Envelope *env = NULL;
    int rc;

    d->now = now_ms;
    d->stats.bytes_recv += len + WIRE_HDR_LEN;
    rc = wire_decode(payload, len, &env);
    if (rc < 0) {
        d->stats.bad_messages++;
        log_warn("core", d->tag, "dropped a malformed message (%zu bytes): %s",
                 len, strerror(-rc));
        return;
    }
    d->stats.rpcs_recv++;
    if (env->reply) {
        struct rpc *r = rpc_take(d, env->req_id);
        if (r) {
            int err = wire_status_to_errno(env->status);
            if (err)
                log_debug("core", d->tag, "rpc %" PRIu64 " to %s: %s%s%s",
                          r->id, r->addr, wire_status_name(env->status),
                          env->error[0] ? ": " : "", env->error);
            r->fn(d, r->ctx, env, err);
            free(r);
        }
        wire_msg_free(env);
        return;
    }
    if (d->state == ST_LEFT || d->state == ST_NEW) {
        reply_status(d, conn, env->req_id, CHORD__STATUS__UNAVAILABLE,
                     "peer is not in a ring");
        wire_msg_free(env);
        return;
    }
    switch (env->body_case) {
    case CHORD__ENVELOPE__BODY_FIND_SUCC:
        handle_find_succ(d, conn, env->req_id, env->find_succ);
        break;
    case CHORD__ENVELOPE__BODY_GET_STATE:
        handle_get_state(d, conn, env->req_id);
        break;
    case CHORD__ENVELOPE__BODY_NOTIFY:
        handle_notify(d, conn, env->req_id, env->notify);
        break;
    case CHORD__ENVELOPE__BODY_PING:
        handle_ping(d, conn, env->req_id);
        break;
    case CHORD__ENVELOPE__BODY_LEAVE:
        handle_leave(d, conn, env->req_id, env->leave);
        break;
    case CHORD__ENVELOPE__BODY_KV_REQUEST:
        handle_kv_request(d, conn, env->req_id, env->kv_request);
        break;
    case CHORD__ENVELOPE__BODY_REPLICATE:
        handle_replicate(d, conn, env->req_id, env->replicate);
        break;
    case CHORD__ENVELOPE__BODY_SYNC_DIGEST:
        handle_sync_digest(d, conn, env->req_id, env->sync_digest);
        break;
    case CHORD__ENVELOPE__BODY_FETCH_RECORD:
        handle_fetch(d, conn, env->req_id, env->fetch_record);
        break;
    case CHORD__ENVELOPE__BODY_CLIENT_OP:
        handle_client_op(d, conn, env->req_id, env->client_op);
        break;
    case CHORD__ENVELOPE__BODY_INFO_REQUEST:
        handle_info(d, conn, env->req_id, env->info_request);
        break;
    case CHORD__ENVELOPE__BODY_LEAVE_REQUEST:
        handle_leave_request(d, conn, env->req_id);
        break;
    case CHORD__ENVELOPE__BODY_HELLO:
        /* Handshakes belong to the driver; a late one is harmless. */
        break;
    case CHORD__ENVELOPE__BODY_FIND_SUCC_REPLY:
    case CHORD__ENVELOPE__BODY_STATE_REPLY:
    case CHORD__ENVELOPE__BODY_PONG:
    case CHORD__ENVELOPE__BODY_KV_REPLY:
    case CHORD__ENVELOPE__BODY_ACK:
    case CHORD__ENVELOPE__BODY_SYNC_REPLY:
    case CHORD__ENVELOPE__BODY_CLIENT_OP_REPLY:
    case CHORD__ENVELOPE__BODY_INFO_REPLY:
    case CHORD__ENVELOPE__BODY__NOT_SET:
    case _CHORD__ENVELOPE__BODY__CASE_IS_INT_SIZE:
        d->stats.bad_messages++;
        reply_status(d, conn, env->req_id, CHORD__STATUS__BAD_REQUEST,
                     "not a request");
        break;
    }
    wire_msg_free(env);
}

void dht_core_peer_down(struct dht *d, const char *addr, uint64_t now_ms)
{
    d->now = now_ms;
    rpc_expire(d, addr, -ECONNREFUSED);
}

int dht_core_tick(struct dht *d, uint64_t now_ms)
{
    uint64_t next;

    d->now = now_ms;
    rpc_expire(d, NULL, -ETIMEDOUT);

    /* Client operations: retries and deadlines. Collect first: callbacks
     * may start or finish other operations. */
    struct op **due = NULL;
    size_t ndue = 0;
    for (struct op *op = d->ops; op; op = op->next) {
        if (op->finished ||
            (now_ms < op->deadline && (!op->retry_at || now_ms < op->retry_at)))
            continue;
        due = xrealloc(due, (ndue + 1) * sizeof *due);
        due[ndue++] = op_ref(op);
    }
    for (size_t i = 0; i < ndue; i++) {
        struct op *op = due[i];
        if (!op->finished) {
            if (now_ms >= op->deadline)
                op_finish(d, op,
                          op->last_err && op->last_err != -EAGAIN ? op->last_err
                                                                  : -ETIMEDOUT,
                          NULL);
            else
                op_attempt(d, op);
        }
        op_unref(op);
    }
    free(due);

    switch (d->state) {
    case ST_NEW:
    case ST_LEFT:
        return 1000;
    case ST_JOINING:
        if (d->t_join && now_ms >= d->t_join)
            join_try(d);
        break;
    case ST_LEAVING:
        if (now_ms >= d->leave_deadline)
            leave_finish(d, -ETIMEDOUT);
        break;
    case ST_JOINED:
        if (now_ms >= d->t_stabilize && !d->stabilizing) {
            d->t_stabilize = now_ms + jitter(d, d->cfg.stabilize_ms);
            stabilize(d);
        }
        if (now_ms >= d->t_check && !d->checking) {
            d->t_check = now_ms + jitter(d, d->cfg.check_pred_ms);
            check_pred(d);
        }
        if (now_ms >= d->t_fix && !d->fixing) {
            d->t_fix = now_ms + jitter(d, d->cfg.fix_fingers_ms);
            fix_fingers(d);
        }
        if (now_ms >= d->t_maintain) {
            d->t_maintain = now_ms + jitter(d, d->cfg.maintain_ms);
            maintain(d);
        }
        break;
    }

    next = now_ms + 1000;
    if (d->state == ST_JOINED) {
        if (d->t_stabilize < next)
            next = d->t_stabilize;
        if (d->t_check < next)
            next = d->t_check;
        if (d->t_fix < next)
            next = d->t_fix;
        if (d->t_maintain < next)
            next = d->t_maintain;
    }
    if (d->state == ST_JOINING && d->t_join && d->t_join < next)
        next = d->t_join;
    if (d->state == ST_LEAVING && d->leave_deadline < next)
        next = d->leave_deadline;
    uint64_t r = rpc_next_deadline(d);
    if (r < next)
        next = r;
    for (struct op *op = d->ops; op; op = op->next) {
        if (op->retry_at && op->retry_at < next)
            next = op->retry_at;
        if (op->deadline < next)
            next = op->deadline;
    }
    return next <= now_ms ? 1 : (int)(next - now_ms);
}

/* ------------------------------------------------------------- lifecycle */

struct dht *dht_core_new(const struct dht_config *cfg, const struct dht_io *io,
                         struct dht_store *store)
{
    struct dht *d = xcalloc(1, sizeof *d);

    d->cfg = *cfg;
    if (d->cfg.replicas < 1)
        d->cfg.replicas = 1;
    if (d->cfg.succ_len < 1)
        d->cfg.succ_len = 1;
    if (d->cfg.succ_len > MAX_SUCC)
        d->cfg.succ_len = MAX_SUCC;
    if (d->cfg.replicas > d->cfg.succ_len + 1)
        d->cfg.replicas = d->cfg.succ_len + 1;
    if (d->cfg.replicas > MAX_PREDS - 1)
        d->cfg.replicas = MAX_PREDS - 1;
    if (d->cfg.rpc_timeout_ms <= 0)
        d->cfg.rpc_timeout_ms = 2000;
    if (d->cfg.op_timeout_ms <= 0)
        d->cfg.op_timeout_ms = 10000;
    d->io = *io;
    d->store = store;
    snprintf(d->self.addr, sizeof d->self.addr, "%s", cfg->addr);
    if (cfg->has_id)
        d->self.id = cfg->id;
    else
        dht_id_of(cfg->addr, &d->self.id);
    short_hex(&d->self.id, d->tag);
    d->tag[6] = '\0';
    d->rng =
        cfg->seed ^
        ((uint64_t)d->self.id.b[0] << 56 | (uint64_t)d->self.id.b[1] << 48 |
         (uint64_t)d->self.id.b[2] << 40 | (uint64_t)d->self.id.b[3] << 32 |
         (uint64_t)d->self.id.b[4] << 24 | (uint64_t)d->self.id.b[5] << 16 |
         (uint64_t)d->self.id.b[6] << 8 | d->self.id.b[7]);
    d->succ[0] = d->self;
    d->nsucc = 1;
    d->state = ST_NEW;
    return d;
}

void dht_core_free(struct dht *d)
{
    if (!d)
        return;
    /* Pending RPCs hold contexts: fail them so they are released. */
    d->closing = true;
    d->state = ST_LEFT;
    for (int b = 0; b < RPC_BUCKETS; b++) {
        while (d->rpcs[b]) {
            struct rpc *r = d->rpcs[b];
            d->rpcs[b] = r->next;
            d->nrpcs--;
            r->fn(d, r->ctx, NULL, -ECANCELED);
            free(r);
        }
    }
    while (d->ops) {
        struct op *op = d->ops;
        op_ref(op);
        op_finish(d, op, -ECANCELED, NULL);
        op_unref(op);
    }
    dht_store_free(d->store);
    free(d);
}

/* ---------------------------------------------------------- introspection */

const struct dht_config *dht_core_config(const struct dht *d)
{
    return &d->cfg;
}

const struct dht_node *dht_core_self(const struct dht *d)
{
    return &d->self;
}

const struct dht_node *dht_core_pred(const struct dht *d)
{
    return d->has_pred ? &d->pred : NULL;
}

int dht_core_succs(const struct dht *d, const struct dht_node **list_out)
{
    *list_out = d->succ;
    return d->nsucc;
}

const struct dht_node *dht_core_finger(const struct dht *d, int i)
{
    if (i < 0 || i >= DHT_ID_BITS || !d->has_finger[i])
        return NULL;
    return &d->finger[i];
}

struct dht_store *dht_core_store(struct dht *d)
{
    return d->store;
}

bool dht_core_joined(const struct dht *d)
{
    return d->state == ST_JOINED;
}

const struct dht_stats *dht_core_stats(const struct dht *d)
{
    return &d->stats;
}

int dht_core_check_hello(const struct dht *d, const Chord__Hello *h,
                         const char **why_out)
{
    static _Thread_local char why[256];

    if (h->version != WIRE_PROTOCOL_VERSION) {
        snprintf(why, sizeof why, "protocol version %u is not ours (%u)",
                 h->version, WIRE_PROTOCOL_VERSION);
        *why_out = why;
        return -EPROTO;
    }
    if (h->client && !h->network[0])
        return 0;
    if (strcmp(h->network, d->cfg.network) != 0) {
        snprintf(why, sizeof why, "network '%s' is not '%s'", h->network,
                 d->cfg.network);
        *why_out = why;
        return -EACCES;
    }
    return 0;
}

/* ------------------------------------------------------------ /.chord text */

static void node_line(struct sbuf *b, const struct dht_node *n)
{
    char hex[2 * DHT_ID_LEN + 1];

    dht_id_hex(&n->id, hex);
    sb_printf(b, "%s %s\n", hex, n->addr);
}

struct keys_ctx {
    struct dht *d;
    struct sbuf *b;
};

static int keys_line(void *arg, const struct dht_id *id, const char *key,
                     const void *val, size_t len)
{
    struct keys_ctx *kc = arg;
    char hex[2 * DHT_ID_LEN + 1];
    uint64_t v;
    int kind;
    static const char *const kinds[] = {"value", "set", "tombstone"};

    if (rec_peek(val, len, &v, &kind) < 0 || kind < 0 || kind > 2) {
        v = 0;
        kind = 0;
    }
    dht_id_hex(id, hex);
    sb_printf(kc->b, "%s %s %" PRIu64 " %s %zu %s\n", hex,
              owns(kc->d, id) ? "primary" : "replica", v, kinds[kind], len,
              key);
    return 0;
}

static const char *state_name(enum state s)
{
    switch (s) {
    case ST_NEW:
        return "new";
    case ST_JOINING:
        return "joining";
    case ST_JOINED:
        return "joined";
    case ST_LEAVING:
        return "leaving";
    case ST_LEFT:
        return "left";
    }
    return "?";
}

int dht_core_info(struct dht *d, const char *what, uint64_t now_ms,
                  char **text_out)
{
    struct sbuf b = {0};
    char hex[2 * DHT_ID_LEN + 1];

    d->now = now_ms;
    if (strcmp(what, "id") == 0) {
        dht_id_hex(&d->self.id, hex);
        sb_printf(&b, "%s\n", hex);
    } else if (strcmp(what, "address") == 0) {
        sb_printf(&b, "%s\n", d->self.addr);
    } else if (strcmp(what, "network") == 0) {
        sb_printf(&b, "%s\n", d->cfg.network);
    } else if (strcmp(what, "predecessor") == 0) {
        if (d->has_pred)
            node_line(&b, &d->pred);
        else
            sb_printf(&b, "none\n");
    } else if (strcmp(what, "successor") == 0) {
        node_line(&b, &d->succ[0]);
    } else if (strcmp(what, "successors") == 0) {
        for (int i = 0; i < d->nsucc; i++)
            node_line(&b, &d->succ[i]);
    } else if (strcmp(what, "predecessors") == 0) {
        for (int i = 0; i < d->npreds; i++)
            node_line(&b, &d->preds[i]);
    } else if (strcmp(what, "fingers") == 0) {
        for (int i = 0; i < DHT_ID_BITS; i++) {
            struct dht_id start;
            char shex[2 * DHT_ID_LEN + 1];
            dht_id_add_pow2(&d->self.id, i, &start);
            dht_id_hex(&start, shex);
            const struct dht_node *f =
                d->has_finger[i] ? &d->finger[i] : &d->succ[0];
            if (!d->has_finger[i] && i > 0)
                continue;
            dht_id_hex(&f->id, hex);
            sb_printf(&b, "%d %s %s %s\n", i, shex, hex, f->addr);
        }
    } else if (strcmp(what, "keys") == 0) {
        struct keys_ctx kc = {d, &b};
        sb_printf(&b, "count %" PRIu64 "\n", dht_store_count(d->store));
        sb_printf(&b, "bytes %" PRIu64 "\n", dht_store_bytes(d->store));
        dht_store_range(d->store, &d->self.id, &d->self.id, keys_line, &kc);
    } else if (strcmp(what, "stats") == 0) {
        const struct dht_stats *s = &d->stats;
        sb_printf(&b, "state %s\n", state_name(d->state));
        sb_printf(&b, "lookups %" PRIu64 "\n", s->lookups);
        sb_printf(&b, "lookup_hops %" PRIu64 "\n", s->lookup_hops);
        sb_printf(&b, "hops_mean %.3f\n",
                  s->lookups ? (double)s->lookup_hops / (double)s->lookups
                             : 0.0);
        sb_printf(&b, "lookup_failures %" PRIu64 "\n", s->lookup_failures);
        sb_printf(&b, "rpcs_sent %" PRIu64 "\n", s->rpcs_sent);
        sb_printf(&b, "rpcs_recv %" PRIu64 "\n", s->rpcs_recv);
        sb_printf(&b, "rpc_timeouts %" PRIu64 "\n", s->rpc_timeouts);
        sb_printf(&b, "rpc_errors %" PRIu64 "\n", s->rpc_errors);
        sb_printf(&b, "rpcs_pending %zu\n", d->nrpcs);
        sb_printf(&b, "bytes_sent %" PRIu64 "\n", s->bytes_sent);
        sb_printf(&b, "bytes_recv %" PRIu64 "\n", s->bytes_recv);
        sb_printf(&b, "ops %" PRIu64 "\n", s->ops);
        sb_printf(&b, "op_errors %" PRIu64 "\n", s->op_errors);
        sb_printf(&b, "replicated %" PRIu64 "\n", s->replicated);
        sb_printf(&b, "handed_off %" PRIu64 "\n", s->handed_off);
        sb_printf(&b, "repaired %" PRIu64 "\n", s->repaired);
        sb_printf(&b, "dropped %" PRIu64 "\n", s->dropped);
        sb_printf(&b, "bad_messages %" PRIu64 "\n", s->bad_messages);
    } else if (strcmp(what, "config") == 0) {
        const struct dht_config *c = &d->cfg;
        dht_id_hex(&d->self.id, hex);
        sb_printf(&b, "id %s\n", hex);
        sb_printf(&b, "address %s\n", d->self.addr);
        sb_printf(&b, "network %s\n", c->network);
        sb_printf(&b, "replicas %d\n", c->replicas);
        sb_printf(&b, "succ_len %d\n", c->succ_len);
        sb_printf(&b, "stabilize_ms %d\n", c->stabilize_ms);
        sb_printf(&b, "fix_fingers_ms %d\n", c->fix_fingers_ms);
        sb_printf(&b, "check_pred_ms %d\n", c->check_pred_ms);
        sb_printf(&b, "maintain_ms %d\n", c->maintain_ms);
        sb_printf(&b, "jitter_ms %d\n", c->jitter_ms);
        sb_printf(&b, "rpc_timeout_ms %d\n", c->rpc_timeout_ms);
        sb_printf(&b, "op_timeout_ms %d\n", c->op_timeout_ms);
        sb_printf(&b, "protocol %d\n", WIRE_PROTOCOL_VERSION);
    } else {
        return -ENOENT;
    }
    *text_out = sb_take(&b);
    return 0;
}
