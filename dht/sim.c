/*
 * dht/sim.c - the deterministic simulator driver (struct dht_sim).
 *
 * Many protocol cores (dht/core.c) run in one process on virtual time. The
 * simulator owns:
 *  - the clock: virtual milliseconds, advanced only by popping events;
 *  - the event queue: a binary heap ordered by (time, sequence number), so
 *    events due at the same millisecond run in the order they were queued
 *    and a run is a pure function of the seed;
 *  - the network: every payload a core sends becomes a delivery event with
 *    a latency drawn from the simulator's own PRNG (never rand()), dropped
 *    with probability opts.loss, when either end is crashed or has left, or
 *    when a partition separates the two ends;
 *  - the peers: one core, one in-memory store and one advertised address
 *    "10.0.X.Y:7000" (X.Y = the index, base 256) each. The address doubles as
 *    the routing table: parsing it gives the receiver's index, so no map from
 *    addresses to peers is kept and per-peer driver state stays ~200 bytes;
 *  - the oracles, which look at the cores and stores from outside.
 *
 * Connections and incarnations. A restarted peer gets a fresh core on its
 * kept store, like a process restarted on its data directory. TCP would
 * break every connection of the old process, so each peer carries an
 * incarnation number, bumped by restart. A delivery remembers the
 * incarnation of its receiver when it was sent and is dropped if that has
 * changed; the connection handle given to dht_core_recv() (and echoed in
 * io->reply) is the sender's index in the low 32 bits and the sender's
 * incarnation in the high 32 bits, so a reply meant for an earlier life is
 * dropped too.
 *
 * Re-entrancy. A core calls back into the simulator (send, reply, done
 * callbacks). A done callback may ask the simulator for more work: ops,
 * joins, leaves and restarts requested while a core call is running are
 * queued as events at the current time instead of being run inside it, so a
 * core is never entered twice.
 *
 * Ticks. Each live peer has at most one pending tick that counts: after
 * every call into a core the driver calls dht_core_tick() and schedules the
 * next tick at the time it asks for if that is earlier than the pending one
 * (a generation number voids the later one). Ticking early is harmless: the
 * core runs only what is due and says when to come back.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht/dht-int.h"

#define SIM_PORT          7000
#define SIM_JOIN_RETRY_MS 1000  /* wait before retrying a failed join */
#define SIM_MAX_PEERS     65536 /* 10.0.X.Y: X, Y < 256 */

enum peer_state {
    P_JOINING, /* alive, joining the ring */
    P_UP,      /* alive, in the ring (created it or joined) */
    P_LEAVING, /* alive, handing keys on */
    P_CRASHED, /* silent; core and store kept for restart */
    P_LEFT,    /* left gracefully; core and store kept */
};

struct sim_peer {
    struct dht_sim *sim;
    struct dht *core;     /* owns the store */
    struct dht_io io;     /* io.arg points back here */
    struct dht_node node; /* id and address, fixed for the index */
    int idx;
    uint32_t inc;      /* incarnation, bumped by restart */
    uint32_t tick_gen; /* generation of the tick event that counts */
    uint64_t tick_at;  /* virtual ms of that tick, if tick_pending */
    bool tick_pending;
    bool in_a;     /* partition side */
    bool fixed_id; /* node.id chosen by dht_sim_add_peer_id() */
    enum peer_state state;
};

enum ev_kind {
    EV_MSG,     /* deliver payload to peer `to` */
    EV_TICK,    /* tick peer `to` if gen matches */
    EV_OP,      /* deferred dht_sim_op (payload: struct sim_op) */
    EV_JOIN,    /* (re)try the join of peer `to` */
    EV_LEAVE,   /* deferred dht_sim_leave */
    EV_RESTART, /* deferred dht_sim_restart */
};

struct ev {
    uint64_t t;   /* virtual ms */
    uint64_t seq; /* tie-break: order of queueing */
    void *payload;
    uint32_t len;
    uint16_t kind;
    int32_t to;
    int32_t from;
    uint32_t to_inc;   /* EV_MSG: receiver incarnation; EV_TICK: gen */
    uint32_t from_inc; /* EV_MSG: sender incarnation */
};

/* A deferred operation: the op with its key and value copied. */
struct sim_op {
    struct dht_op op;
    char *key;
    void *value;
    dht_done_fn *done;
    void *arg;
};

struct dht_sim {
    struct dht_sim_opts opts;
    uint64_t now;       /* virtual ms */
    uint64_t rng;       /* xorshift64* state of the network */
    uint64_t seq;       /* next event sequence number */
    uint64_t delivered; /* messages delivered */
    struct ev *heap;
    size_t nheap, capheap;
    struct sim_peer **peers;
    int npeers, cappeers;
    int in_core;      /* depth of calls into cores */
    bool partitioned; /* a partition is in force */
    /* Cache of the live peers sorted by id, rebuilt when live_gen moves. */
    uint64_t live_gen, sorted_gen;
    int *sorted;
    int nsorted;
    char why[256]; /* last oracle violation */
};

/* The simulator whose clock log lines show (the most recent one). */
static struct dht_sim *clock_sim;

static uint64_t sim_log_clock(void)
{
    return clock_sim ? clock_sim->now : 0;
}

/* ------------------------------------------------------------------ PRNG */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rng_next(struct dht_sim *s)
{
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

/* Uniform in [0, n). */
static uint64_t rng_below(struct dht_sim *s, uint64_t n)
{
    return n ? rng_next(s) % n : 0;
}

/* Uniform in [0, 1). */
static double rng_unit(struct dht_sim *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* ------------------------------------------------------------ event heap */

static bool ev_before(const struct ev *a, const struct ev *b)
{
    return a->t < b->t || (a->t == b->t && a->seq < b->seq);
}

static void heap_push(struct dht_sim *s, struct ev *e)
{
    size_t i;

    if (s->nheap == s->capheap) {
        s->capheap = s->capheap ? 2 * s->capheap : 1024;
        s->heap = xrealloc(s->heap, s->capheap * sizeof *s->heap);
    }
    e->seq = s->seq++;
    i = s->nheap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!ev_before(e, &s->heap[parent]))
            break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = *e;
}

static void heap_pop(struct dht_sim *s, struct ev *out)
{
    struct ev last;
    size_t i = 0, n;

    *out = s->heap[0];
    n = --s->nheap;
    if (n == 0)
        return;
    last = s->heap[n];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && ev_before(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!ev_before(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    s->heap[i] = last;
}

static void ev_free(struct ev *e)
{
    if (e->kind == EV_OP) {
        struct sim_op *o = e->payload;
        free(o->key);
        free(o->value);
        free(o);
    } else {
        free(e->payload);
    }
}

static void push_simple(struct dht_sim *s, enum ev_kind kind, int to,
                        uint64_t at)
{
    struct ev e = {.t = at, .kind = (uint16_t)kind, .to = to, .from = -1};
    heap_push(s, &e);
}

/* ----------------------------------------------------------------- peers */

static bool state_alive(enum peer_state st)
{
    return st == P_JOINING || st == P_UP || st == P_LEAVING;
}

static struct sim_peer *peer_at(const struct dht_sim *s, int i)
{
    return i >= 0 && i < s->npeers ? s->peers[i] : NULL;
}

static void set_state(struct sim_peer *p, enum peer_state st)
{
    if (state_alive(p->state) != state_alive(st))
        p->sim->live_gen++;
    p->state = st;
}

/* Parse a decimal number of 1-5 digits at *p, advancing it; -1 if none. */
static long parse_num(const char **p)
{
    long v = 0;
    int n = 0;

    while (**p >= '0' && **p <= '9' && n < 6) {
        v = v * 10 + (**p - '0');
        (*p)++;
        n++;
    }
    return n == 0 || n > 5 ? -1 : v;
}

/* "10.0.X.Y:7000" -> index, or -1. Hand-parsed: this runs for every
 * message, and sscanf showed up in profiles. */
static int addr_index(const struct dht_sim *s, const char *addr)
{
    const char *p = addr;
    long x, y, port;

    if (strncmp(p, "10.0.", 5) != 0)
        return -1;
    p += 5;
    if ((x = parse_num(&p)) < 0 || *p++ != '.' || (y = parse_num(&p)) < 0 ||
        *p++ != ':' || (port = parse_num(&p)) < 0 || *p != '\0')
        return -1;
    if (x > 255 || y > 255 || port != SIM_PORT || x * 256 + y >= s->npeers)
        return -1;
    return (int)(x * 256 + y);
}

static bool can_talk(const struct dht_sim *s, const struct sim_peer *a,
                     const struct sim_peer *b)
{
    return !s->partitioned || a->in_a == b->in_a;
}

/* Ask the core when it next wants a tick; keep the earliest one queued. */
static void kick(struct sim_peer *p)
{
    struct dht_sim *s = p->sim;
    uint64_t at;
    int ms;

    if (!state_alive(p->state) || !p->core)
        return;
    s->in_core++;
    ms = dht_core_tick(p->core, s->now);
    s->in_core--;
    if (!state_alive(p->state))
        return; /* it left during the tick */
    at = s->now + (uint64_t)(ms < 1 ? 1 : ms);
    if (p->tick_pending && p->tick_at <= at)
        return;
    struct ev e = {.t = at,
                   .kind = EV_TICK,
                   .to = p->idx,
                   .from = -1,
                   .to_inc = ++p->tick_gen};
    p->tick_pending = true;
    p->tick_at = at;
    heap_push(s, &e);
}

/* Queue a payload from peer `from` to peer index `to`, incarnation to_inc. */
static void transmit(struct sim_peer *from, int to, uint32_t to_inc,
                     const uint8_t *payload, size_t len)
{
    struct dht_sim *s = from->sim;
    struct sim_peer *dst = peer_at(s, to);
    uint64_t lat;

    if (!dst || !state_alive(from->state) || !state_alive(dst->state) ||
        dst->inc != to_inc || !can_talk(s, from, dst))
        return;
    if (s->opts.loss > 0 && rng_unit(s) < s->opts.loss)
        return;
    lat = (uint64_t)s->opts.latency_min_ms;
    if (s->opts.latency_max_ms > s->opts.latency_min_ms)
        lat += rng_below(
            s, (uint64_t)(s->opts.latency_max_ms - s->opts.latency_min_ms + 1));
    struct ev e = {.t = s->now + lat,
                   .kind = EV_MSG,
                   .to = to,
                   .from = from->idx,
                   .to_inc = to_inc,
                   .from_inc = from->inc,
                   .len = (uint32_t)len};
    e.payload = xmalloc(len ? len : 1);
    memcpy(e.payload, payload, len);
    heap_push(s, &e);
}

static int io_send(void *arg, const char *addr, const uint8_t *payload,
                   size_t len)
{
    struct sim_peer *p = arg;
    int to = addr_index(p->sim, addr);

    /* A message to an unknown address vanishes, like one to a dead host. */
    if (to >= 0)
        transmit(p, to, p->sim->peers[to]->inc, payload, len);
    return 0;
}

static int io_reply(void *arg, uint64_t conn, const uint8_t *payload,
                    size_t len)
{
    struct sim_peer *p = arg;

    transmit(p, (int)(conn & 0xffffffffu), (uint32_t)(conn >> 32), payload,
             len);
    return 0;
}

static void io_stopped(void *arg)
{
    struct sim_peer *p = arg;

    if (state_alive(p->state))
        set_state(p, P_LEFT);
}

static struct dht *make_core(struct sim_peer *p, struct dht_store *store)
{
    struct dht_sim *s = p->sim;
    struct dht_config cfg = s->opts.base;
    uint64_t x = s->opts.seed ^ ((uint64_t)p->idx << 20) ^ p->inc;

    snprintf(cfg.addr, sizeof cfg.addr, "%s", p->node.addr);
    cfg.has_id = p->fixed_id;
    cfg.id = p->node.id;
    if (s->opts.replicas > 0)
        cfg.replicas = s->opts.replicas;
    if (s->opts.succ_len > 0)
        cfg.succ_len = s->opts.succ_len;
    splitmix64(&x);
    cfg.seed = splitmix64(&x);
    return dht_core_new(&cfg, &p->io, store);
}

/* A random peer in state P_UP other than `except`, or -1. */
static int random_up(struct dht_sim *s, int except)
{
    int n = s->npeers;

    for (int tries = 0; tries < 64; tries++) {
        int i = (int)rng_below(s, (uint64_t)n);
        if (i != except && s->peers[i]->state == P_UP)
            return i;
    }
    /* Few are up: pick uniformly among them with a second scan. */
    int count = 0, pick;
    for (int i = 0; i < n; i++)
        count += i != except && s->peers[i]->state == P_UP;
    if (count == 0)
        return -1;
    pick = (int)rng_below(s, (uint64_t)count);
    for (int i = 0; i < n; i++)
        if (i != except && s->peers[i]->state == P_UP && pick-- == 0)
            return i;
    return -1;
}

static void join_done(void *arg, int err, const char *msg)
{
    struct sim_peer *p = arg;
    struct dht_sim *s = p->sim;

    if (p->state != P_JOINING)
        return;
    if (err == 0) {
        set_state(p, P_UP);
        return;
    }
    log_info("sim", p->node.addr, "join failed (%d: %s); retrying", err,
             msg ? msg : "");
    push_simple(s, EV_JOIN, p->idx,
                s->now + SIM_JOIN_RETRY_MS + rng_below(s, SIM_JOIN_RETRY_MS));
}

/* Create the ring (nobody else alive) or join through a random UP peer. */
static void start_join(struct sim_peer *p)
{
    struct dht_sim *s = p->sim;
    bool others_alive = false;
    int boot, rc;

    if (p->state != P_JOINING)
        return;
    boot = random_up(s, p->idx);
    if (boot < 0) {
        for (int i = 0; i < s->npeers && !others_alive; i++)
            others_alive = i != p->idx && state_alive(s->peers[i]->state);
        if (others_alive) {
            /* Only joiners around: wait for one of them to get in. */
            push_simple(s, EV_JOIN, p->idx, s->now + SIM_JOIN_RETRY_MS);
            return;
        }
        s->in_core++;
        dht_core_create(p->core, s->now);
        s->in_core--;
        set_state(p, P_UP);
        kick(p);
        return;
    }
    s->in_core++;
    rc =
        dht_core_join(p->core, s->peers[boot]->node.addr, s->now, join_done, p);
    s->in_core--;
    if (rc < 0 && p->state == P_JOINING)
        push_simple(s, EV_JOIN, p->idx, s->now + SIM_JOIN_RETRY_MS);
    kick(p);
}

static void leave_done(void *arg, int err, const char *msg)
{
    struct sim_peer *p = arg;

    if (err)
        log_info("sim", p->node.addr, "leave gave up (%d: %s)", err,
                 msg ? msg : "");
    if (state_alive(p->state))
        set_state(p, P_LEFT);
}

static int store_copy_cb(void *arg, const struct dht_id *id, const char *key,
                         const void *val, size_t len)
{
    return dht_store_put(arg, id, key, val, len);
}

static void do_restart(struct sim_peer *p)
{
    struct dht_store *store;

    if (state_alive(p->state))
        return;
    store = dht_store_new_mem();
    /* The old core owns the old store: copy what survived into a new store
     * (the process's data directory) and let the old core go with it. */
    if (p->core) {
        struct dht_store *old = dht_core_store(p->core);
        struct dht_id zero = {{0}};
        if (old)
            dht_store_range(old, &zero, &zero, store_copy_cb, store);
        dht_core_free(p->core);
    }
    p->inc++;
    p->tick_gen++;
    p->tick_pending = false;
    p->core = make_core(p, store);
    set_state(p, P_JOINING);
    start_join(p);
}

static void do_leave(struct sim_peer *p)
{
    struct dht_sim *s = p->sim;
    int rc;

    if (!state_alive(p->state) || p->state == P_LEAVING)
        return;
    if (p->state == P_JOINING) {
        /* Not in the ring yet: nothing to hand on. */
        set_state(p, P_LEFT);
        return;
    }
    p->state = P_LEAVING;
    s->in_core++;
    rc = dht_core_leave(p->core, s->now, leave_done, p);
    s->in_core--;
    if (rc < 0 && state_alive(p->state))
        set_state(p, P_LEFT);
    kick(p);
}

static void do_op(struct sim_peer *p, struct sim_op *o)
{
    struct dht_sim *s = p->sim;
    struct dht_result res;
    int rc;

    if (!state_alive(p->state)) {
        memset(&res, 0, sizeof res);
        res.err = -EHOSTUNREACH;
        o->done(o->arg, &res);
        return;
    }
    s->in_core++;
    rc = dht_core_op(p->core, &o->op, s->now, o->done, o->arg);
    s->in_core--;
    if (rc < 0) {
        memset(&res, 0, sizeof res);
        res.err = rc;
        o->done(o->arg, &res);
    }
    kick(p);
}

/* ------------------------------------------------------------ public API */

void dht_sim_opts_default(struct dht_sim_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->latency_min_ms = 5;
    o->latency_max_ms = 25;
    o->loss = 0;
    o->replicas = DHT_REPLICAS;
    o->succ_len = DHT_SUCC_LEN;
    dht_config_default(&o->base);
}

struct dht_sim *dht_sim_new(const struct dht_sim_opts *o)
{
    struct dht_sim *s = xcalloc(1, sizeof *s);
    uint64_t x;

    s->opts = *o;
    if (s->opts.latency_min_ms < 0)
        s->opts.latency_min_ms = 0;
    if (s->opts.latency_max_ms < s->opts.latency_min_ms)
        s->opts.latency_max_ms = s->opts.latency_min_ms;
    x = o->seed;
    s->rng = splitmix64(&x) | 1; /* xorshift state must not be 0 */
    s->live_gen = 1;
    clock_sim = s;
    dht_log_set_clock(sim_log_clock);
    return s;
}

void dht_sim_free(struct dht_sim *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nheap; i++)
        ev_free(&s->heap[i]);
    free(s->heap);
    for (int i = 0; i < s->npeers; i++) {
        if (s->peers[i]->core)
            dht_core_free(s->peers[i]->core);
        free(s->peers[i]);
    }
    free(s->peers);
    free(s->sorted);
    if (clock_sim == s) {
        clock_sim = NULL;
        dht_log_set_clock(NULL);
    }
    free(s);
}

uint64_t dht_sim_now(const struct dht_sim *s)
{
    return s->now;
}

static void dispatch(struct dht_sim *s, struct ev *e)
{
    struct sim_peer *p = peer_at(s, e->to);

    switch ((enum ev_kind)e->kind) {
    case EV_MSG: {
        struct sim_peer *from = peer_at(s, e->from);
        if (!p || !from || !state_alive(p->state) || p->inc != e->to_inc ||
            !can_talk(s, from, p))
            break;
        s->delivered++;
        s->in_core++;
        dht_core_recv(p->core, (uint64_t)e->from | (uint64_t)e->from_inc << 32,
                      e->payload, e->len, s->now);
        s->in_core--;
        kick(p);
        break;
    }
    case EV_TICK:
        if (!p || e->to_inc != p->tick_gen || !p->tick_pending)
            break;
        p->tick_pending = false;
        kick(p);
        break;
    case EV_OP:
        do_op(p, e->payload);
        break;
    case EV_JOIN:
        start_join(p);
        break;
    case EV_LEAVE:
        do_leave(p);
        break;
    case EV_RESTART:
        do_restart(p);
        break;
    }
    ev_free(e);
}

uint64_t dht_sim_run_until(struct dht_sim *s, uint64_t t)
{
    uint64_t n = 0;
    struct ev e;

    while (s->nheap > 0 && s->heap[0].t <= t) {
        heap_pop(s, &e);
        if (e.t > s->now)
            s->now = e.t;
        dispatch(s, &e);
        n++;
    }
    if (t > s->now)
        s->now = t;
    return n;
}

/*
 * deadline_ms is an absolute virtual time. done is checked first, then after
 * every step_ms of virtual time; the run stops early when no event is left.
 */
bool dht_sim_run_while(struct dht_sim *s,
                       bool (*done)(struct dht_sim *, void *), void *arg,
                       uint64_t step_ms, uint64_t deadline_ms)
{
    if (step_ms == 0)
        step_ms = 1;
    for (;;) {
        if (done(s, arg))
            return true;
        if (s->now >= deadline_ms || s->nheap == 0)
            return false;
        uint64_t t = s->now + step_ms;
        dht_sim_run_until(s, t < deadline_ms ? t : deadline_ms);
    }
}

static int add_peer(struct dht_sim *s, const struct dht_id *id)
{
    struct sim_peer *p;
    int i = s->npeers;

    if (i >= SIM_MAX_PEERS)
        return -ENOSPC;
    if (s->npeers == s->cappeers) {
        s->cappeers = s->cappeers ? 2 * s->cappeers : 64;
        s->peers = xrealloc(s->peers, (size_t)s->cappeers * sizeof *s->peers);
    }
    p = xcalloc(1, sizeof *p);
    p->sim = s;
    p->idx = i;
    p->io.arg = p;
    p->io.send = io_send;
    p->io.reply = io_reply;
    p->io.stopped = io_stopped;
    snprintf(p->node.addr, sizeof p->node.addr, "10.0.%d.%d:%d", i / 256,
             i % 256, SIM_PORT);
    if (id) {
        p->node.id = *id;
        p->fixed_id = true;
    } else {
        dht_id_of(p->node.addr, &p->node.id);
    }
    p->state = P_CRASHED; /* not alive until its core exists */
    s->peers[s->npeers++] = p;
    p->core = make_core(p, dht_store_new_mem());
    set_state(p, P_JOINING);
    if (s->in_core)
        push_simple(s, EV_JOIN, i, s->now);
    else
        start_join(p);
    return i;
}

int dht_sim_add_peer(struct dht_sim *s)
{
    return add_peer(s, NULL);
}

int dht_sim_add_peer_id(struct dht_sim *s, const struct dht_id *id)
{
    return add_peer(s, id);
}

struct dht *dht_sim_core(struct dht_sim *s, int i)
{
    struct sim_peer *p = peer_at(s, i);
    return p ? p->core : NULL;
}

int dht_sim_npeers(const struct dht_sim *s)
{
    return s->npeers;
}

bool dht_sim_alive(const struct dht_sim *s, int i)
{
    struct sim_peer *p = peer_at(s, i);
    return p && state_alive(p->state);
}

void dht_sim_crash(struct dht_sim *s, int i)
{
    struct sim_peer *p = peer_at(s, i);

    if (!p || !state_alive(p->state))
        return;
    log_info("sim", p->node.addr, "crash");
    set_state(p, P_CRASHED);
    p->tick_pending = false;
    p->tick_gen++;
}

void dht_sim_restart(struct dht_sim *s, int i)
{
    struct sim_peer *p = peer_at(s, i);

    if (!p || state_alive(p->state))
        return;
    log_info("sim", p->node.addr, "restart");
    if (s->in_core)
        push_simple(s, EV_RESTART, i, s->now);
    else
        do_restart(p);
}

void dht_sim_leave(struct dht_sim *s, int i)
{
    struct sim_peer *p = peer_at(s, i);

    if (!p || !state_alive(p->state))
        return;
    log_info("sim", p->node.addr, "leave");
    if (s->in_core)
        push_simple(s, EV_LEAVE, i, s->now);
    else
        do_leave(p);
}

void dht_sim_partition(struct dht_sim *s, const bool *in_a)
{
    s->partitioned = in_a != NULL;
    for (int i = 0; i < s->npeers; i++)
        s->peers[i]->in_a = in_a ? in_a[i] : false;
}

const struct dht_node *dht_sim_node(const struct dht_sim *s, int i)
{
    struct sim_peer *p = peer_at(s, i);
    return p ? &p->node : NULL;
}

int dht_sim_op(struct dht_sim *s, int i, const struct dht_op *op,
               dht_done_fn *done, void *arg)
{
    struct sim_peer *p = peer_at(s, i);
    struct sim_op o = {.op = *op, .done = done, .arg = arg};

    if (!p || !state_alive(p->state))
        return -EHOSTUNREACH;
    if (!s->in_core) {
        o.key = (char *)op->key;
        o.value = (void *)op->value;
        do_op(p, &o);
        return 0;
    }
    /* Inside a core call (a done callback): queue it for now. */
    struct sim_op *copy = xmalloc(sizeof *copy);
    *copy = o;
    copy->key = op->key ? xstrdup(op->key) : NULL;
    copy->value = NULL;
    if (op->value && op->len) {
        copy->value = xmalloc(op->len);
        memcpy(copy->value, op->value, op->len);
    }
    copy->op.key = copy->key;
    copy->op.value = copy->value;
    struct ev e = {
        .t = s->now, .kind = EV_OP, .to = i, .from = -1, .payload = copy};
    heap_push(s, &e);
    return 0;
}

uint64_t dht_sim_messages(const struct dht_sim *s)
{
    return s->delivered;
}

/* --------------------------------------------------------------- oracles */

static int cmp_by_id(const void *a, const void *b, void *arg)
{
    const struct dht_sim *s = arg;
    const struct sim_peer *pa = s->peers[*(const int *)a];
    const struct sim_peer *pb = s->peers[*(const int *)b];
    return dht_id_cmp(&pa->node.id, &pb->node.id);
}

/* Live peers sorted by id, cached until the live set changes. */
static void live_refresh(struct dht_sim *s)
{
    int n = 0;

    if (s->sorted_gen == s->live_gen && s->sorted)
        return;
    free(s->sorted);
    s->sorted = xmalloc(((size_t)s->npeers + 1) * sizeof *s->sorted);
    for (int i = 0; i < s->npeers; i++)
        if (state_alive(s->peers[i]->state))
            s->sorted[n++] = i;
    qsort_r(s->sorted, (size_t)n, sizeof *s->sorted, cmp_by_id, s);
    s->nsorted = n;
    s->sorted_gen = s->live_gen;
}

/* Position in s->sorted of the live successor of id: the first live peer
 * whose id is >= id, wrapping. s->nsorted must be > 0. */
static int succ_pos(const struct dht_sim *s, const struct dht_id *id)
{
    int lo = 0, hi = s->nsorted;

    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (dht_id_cmp(&s->peers[s->sorted[mid]]->node.id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == s->nsorted ? 0 : lo;
}

static const struct dht_id *sorted_id(const struct dht_sim *s, int pos)
{
    return &s->peers[s->sorted[pos]]->node.id;
}

static bool ring_fail(struct dht_sim *s, const char **why_out,
                      const struct sim_peer *p, const char *what)
{
    snprintf(s->why, sizeof s->why, "%s (peer %d %s)", what, p->idx,
             p->node.addr);
    if (why_out)
        *why_out = s->why;
    return false;
}

bool dht_sim_ring_ok(struct dht_sim *s, const char **why_out)
{
    int n;

    live_refresh(s);
    n = s->nsorted;
    if (why_out)
        *why_out = "ok";
    for (int pos = 0; pos < n; pos++) {
        const struct sim_peer *p = s->peers[s->sorted[pos]];
        const struct dht_node *list, *pred;
        int len = dht_core_succs(p->core, &list);
        int want_len = dht_core_config(p->core)->succ_len;

        if (p->state == P_JOINING)
            return ring_fail(s, why_out, p, "peer has not joined");
        pred = dht_core_pred(p->core);
        if (n == 1) {
            if (len < 1 || !dht_id_eq(&list[0].id, &p->node.id))
                return ring_fail(s, why_out, p, "lone peer not its own succ");
            if (pred && !dht_id_eq(&pred->id, &p->node.id))
                return ring_fail(s, why_out, p, "lone peer has a pred");
            continue;
        }
        if (want_len > n - 1)
            want_len = n - 1;
        if (len != want_len) {
            snprintf(s->why, sizeof s->why,
                     "successor list has %d entries, want %d (peer %d)", len,
                     want_len, p->idx);
            if (why_out)
                *why_out = s->why;
            return false;
        }
        for (int j = 0; j < len; j++) {
            if (!dht_id_eq(&list[j].id, sorted_id(s, (pos + 1 + j) % n))) {
                snprintf(s->why, sizeof s->why,
                         "successor %d is %s, want peer %d (peer %d)", j,
                         list[j].addr, s->sorted[(pos + 1 + j) % n], p->idx);
                if (why_out)
                    *why_out = s->why;
                return false;
            }
        }
        if (!pred)
            return ring_fail(s, why_out, p, "no predecessor");
        if (!dht_id_eq(&pred->id, sorted_id(s, (pos + n - 1) % n)))
            return ring_fail(s, why_out, p, "wrong predecessor");
    }
    return true;
}

bool dht_sim_fingers_ok(struct dht_sim *s)
{
    live_refresh(s);
    for (int pos = 0; pos < s->nsorted; pos++) {
        const struct sim_peer *p = s->peers[s->sorted[pos]];
        for (int i = 0; i < DHT_ID_BITS; i++) {
            const struct dht_node *f = dht_core_finger(p->core, i);
            struct dht_id target;
            dht_id_add_pow2(&p->node.id, i, &target);
            const struct dht_id *want = sorted_id(s, succ_pos(s, &target));
            /* A core may leave unset a finger that would name itself. */
            if (!f && dht_id_eq(want, &p->node.id))
                continue;
            if (!f || !dht_id_eq(&f->id, want))
                return false;
        }
    }
    return true;
}

/* One copy of one key in one live store. */
struct copy {
    struct dht_id id;
    char *key;
    uint64_t version;
    int peer;
    bool tomb;
};

struct census {
    struct copy *v;
    size_t n, cap;
    int peer;
};

static int census_cb(void *arg, const struct dht_id *id, const char *key,
                     const void *val, size_t len)
{
    struct census *c = arg;
    Chord__Record *rec;

    if (wire_record_unpack(val, len, &rec) < 0)
        return 0; /* not a record: not a key */
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 1024;
        c->v = xrealloc(c->v, c->cap * sizeof *c->v);
    }
    c->v[c->n].id = *id;
    c->v[c->n].key = xstrdup(key);
    c->v[c->n].version = rec->version;
    c->v[c->n].tomb = rec->kind == CHORD__RECORD_KIND__TOMBSTONE;
    c->v[c->n].peer = c->peer;
    c->n++;
    wire_record_free(rec);
    return 0;
}

/* By key id, key, then newest version first. */
static int cmp_copy(const void *a, const void *b)
{
    const struct copy *x = a, *y = b;
    int r = dht_id_cmp(&x->id, &y->id);

    if (r == 0)
        r = strcmp(x->key, y->key);
    if (r == 0)
        r = x->version > y->version ? -1 : x->version < y->version;
    return r;
}

void dht_sim_key_census(struct dht_sim *s, uint64_t *keys_out,
                        uint64_t *under_replicated_out)
{
    struct census c = {0};
    struct dht_id zero = {{0}};
    uint64_t keys = 0, under = 0;
    int r = s->opts.replicas > 0 ? s->opts.replicas : DHT_REPLICAS;

    live_refresh(s);
    for (int pos = 0; pos < s->nsorted; pos++) {
        struct sim_peer *p = s->peers[s->sorted[pos]];
        struct dht_store *st = dht_core_store(p->core);
        c.peer = p->idx;
        if (st)
            dht_store_range(st, &zero, &zero, census_cb, &c);
    }
    if (c.n > 1)
        qsort(c.v, c.n, sizeof *c.v, cmp_copy);
    if (r > s->nsorted)
        r = s->nsorted;
    for (size_t i = 0; i < c.n;) {
        size_t j = i;
        while (j < c.n && dht_id_eq(&c.v[j].id, &c.v[i].id) &&
               strcmp(c.v[j].key, c.v[i].key) == 0)
            j++;
        /* c.v[i] is the newest copy of this key. */
        if (!c.v[i].tomb) {
            int first = succ_pos(s, &c.v[i].id), good = 0;
            keys++;
            for (int k = 0; k < r; k++) {
                int holder = s->sorted[(first + k) % s->nsorted];
                for (size_t m = i; m < j; m++)
                    if (c.v[m].peer == holder &&
                        c.v[m].version == c.v[i].version) {
                        good++;
                        break;
                    }
            }
            if (good < r)
                under++;
        }
        i = j;
    }
    for (size_t i = 0; i < c.n; i++)
        free(c.v[i].key);
    free(c.v);
    if (keys_out)
        *keys_out = keys;
    if (under_replicated_out)
        *under_replicated_out = under;
}

bool dht_sim_holds(struct dht_sim *s, int i, const char *key)
{
    struct sim_peer *p = peer_at(s, i);
    struct dht_store *st;
    struct dht_id id;
    Chord__Record *rec;
    void *val;
    size_t len;
    bool live;

    if (!p || !p->core || !(st = dht_core_store(p->core)))
        return false;
    dht_id_of(key, &id);
    if (dht_store_get(st, &id, key, &val, &len) < 0)
        return false;
    live = wire_record_unpack(val, len, &rec) == 0;
    if (live) {
        live = rec->kind != CHORD__RECORD_KIND__TOMBSTONE;
        wire_record_free(rec);
    }
    free(val);
    return live;
}

uint64_t dht_sim_key_version(struct dht_sim *s, int i, const char *key)
{
    struct sim_peer *p = peer_at(s, i);
    struct dht_store *st;
    struct dht_id id;
    Chord__Record *rec;
    uint64_t version = 0;
    void *val;
    size_t len;

    if (!p || !p->core || !(st = dht_core_store(p->core)))
        return 0;
    dht_id_of(key, &id);
    if (dht_store_get(st, &id, key, &val, &len) < 0)
        return 0;
    if (wire_record_unpack(val, len, &rec) == 0) {
        version = rec->version;
        wire_record_free(rec);
    }
    free(val);
    return version;
}

uint64_t dht_sim_store_count(struct dht_sim *s, int i)
{
    struct sim_peer *p = peer_at(s, i);
    struct dht_store *st;

    if (!p || !p->core || !(st = dht_core_store(p->core)))
        return 0;
    return dht_store_count(st);
}
