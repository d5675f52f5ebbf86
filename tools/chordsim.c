/*
 * tools/chordsim.c - run a simulated ring and measure it.
 *
 *   chordsim --peers N --keys K --lookups L --replicas R --seed S
 *            [--crash F] [--leave F] [--churn EVENTS_PER_MIN --duration SEC]
 *            [--loss P] [--burst] [--join-rate PER_SEC] [--succ-len N]
 *            [--deadline SEC] [--json] [--deterministic] [-v LEVEL]
 *
 * Phases, all in virtual time on the deterministic simulator (dht/sim.c):
 *  1. add N peers, a batch per virtual second (--join-rate, default N/20
 *     but at least 5, ramping up from one so that a batch never outnumbers
 *     the ring; --burst: all at once), then run until the ring oracle holds
 *     (converge_ms counts from the last join started), bounded by
 *     --deadline (default 1800 virtual seconds);
 *  2. put K keys through random live peers and remember which were
 *     acknowledged, and at which version;
 *  3. --leave F: a fraction F of the live peers leaves gracefully, all at
 *     once; then the ring must re-converge and a few maintenance periods
 *     pass (so after 4 and 5);
 *  4. --crash F: a fraction F of the live peers crashes at once. A key is
 *     unrecoverable when all R of its ideal holders at crash time crashed;
 *  5. --churn: for --duration seconds, Poisson joins (half), crashes and
 *     leaves (a quarter each) at the given rate, while ten lookups and five
 *     overwrites of random keys a second run. A crash makes a key
 *     unrecoverable when no other live store holds its acknowledged version;
 *  6. L lookups from random live peers of random keys: a lookup fails if it
 *     errs or names a primary other than the true successor among the live
 *     peers;
 *  7. get every acknowledged key (a failed get is retried twice from other
 *     peers): it is lost if not retrievable or older than acknowledged.
 *     keys_lost_recoverable counts lost keys that were not unrecoverable,
 *     i.e. losses the ring is to blame for; keys_gone those lost keys that
 *     no live store holds at the acknowledged version (the rest were only
 *     unreadable, e.g. timeouts under heavy --loss).
 *
 * The same seed gives the same output byte for byte, except wall_ms and
 * rss_bytes, which --deterministic leaves out.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dht/dht.h"

struct args {
    int peers, keys, lookups, replicas, succ_len;
    uint64_t seed;
    double crash, leave, loss, churn;
    int duration_s, join_rate, deadline_s, verbose;
    bool json, deterministic, burst;
};

struct run {
    struct args a;
    struct dht_sim *sim;
    uint64_t rng;
    /* ops submitted and not yet done, per phase: an op on a peer that
     * crashes never calls back and must not count against a later phase */
    int pend_put, pend_churn, pend_lookup, pend_get;
    /* keys */
    uint64_t *acked; /* version acknowledged, 0 = not acknowledged */
    bool *unrecov;   /* unrecoverable after a crash */
    int nacked, nunrecov, nlost;
    int nlost_recoverable; /* lost although not unrecoverable: a bug */
    int ngone; /* lost and on no live store at its acknowledged version */
    /* lookups */
    int *hops;
    int nhops, caphops, failed_lookups;
    int churn_lookups, churn_failed;
    int churn_puts, churn_puts_acked;
    /* membership changes */
    int crashed, left, joined, churn_events;
    bool ring_converged, reconverged, fingers_converged;
    uint64_t fingers_ms; /* from the last join until every finger is right */
    int settles;         /* phases that had to re-converge */
    uint64_t converge_ms, reconverge_ms;
    uint64_t under_replicated;
};

/* One operation in flight. */
struct op_ctx {
    struct run *r;
    int key;
    bool churn;   /* issued during churn */
    int attempts; /* gets: tries so far */
    int *pending; /* the phase counter this op counts in */
};

static uint64_t rng_next(struct run *r)
{
    uint64_t z = (r->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(struct run *r)
{
    return (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static int rng_below(struct run *r, int n)
{
    return n > 0 ? (int)(rng_next(r) % (uint64_t)n) : 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chordsim --peers N --keys K --lookups L --replicas R "
            "--seed S\n"
            "                [--crash F] [--leave F] [--churn EVENTS_PER_MIN "
            "--duration SEC]\n"
            "                [--loss P] [--burst] [--join-rate PER_SEC] "
            "[--succ-len N]\n"
            "                [--deadline SEC] [--json] [--deterministic] "
            "[-v LEVEL]\n");
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno || *s == '\0' || *end != '\0' || !(v >= lo && v <= hi))
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct args *a)
{
    enum {
        O_PEERS = 256,
        O_KEYS,
        O_LOOKUPS,
        O_REPLICAS,
        O_SEED,
        O_CRASH,
        O_LEAVE,
        O_CHURN,
        O_DURATION,
        O_LOSS,
        O_JSON,
        O_DET,
        O_BURST,
        O_JOIN_RATE,
        O_SUCC_LEN,
        O_DEADLINE,
        O_HELP,
    };
    static const struct option longopts[] = {
        {"peers", required_argument, NULL, O_PEERS},
        {"keys", required_argument, NULL, O_KEYS},
        {"lookups", required_argument, NULL, O_LOOKUPS},
        {"replicas", required_argument, NULL, O_REPLICAS},
        {"seed", required_argument, NULL, O_SEED},
        {"crash", required_argument, NULL, O_CRASH},
        {"leave", required_argument, NULL, O_LEAVE},
        {"churn", required_argument, NULL, O_CHURN},
        {"duration", required_argument, NULL, O_DURATION},
        {"loss", required_argument, NULL, O_LOSS},
        {"json", no_argument, NULL, O_JSON},
        {"deterministic", no_argument, NULL, O_DET},
        {"burst", no_argument, NULL, O_BURST},
        {"join-rate", required_argument, NULL, O_JOIN_RATE},
        {"succ-len", required_argument, NULL, O_SUCC_LEN},
        {"deadline", required_argument, NULL, O_DEADLINE},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int c, rc = 0;
    char *end;

    memset(a, 0, sizeof *a);
    a->peers = 100;
    a->keys = 100;
    a->lookups = 1000;
    a->replicas = 3;
    a->succ_len = 8;
    a->seed = 1;
    a->deadline_s = 1800;
    a->verbose = 0; /* errors only: keep the output clean */
    while ((c = getopt_long(argc, argv, "v:h", longopts, NULL)) != -1) {
        switch (c) {
        case O_PEERS:
            rc = parse_int(optarg, 1, 65536, &a->peers);
            break;
        case O_KEYS:
            rc = parse_int(optarg, 0, 10000000, &a->keys);
            break;
        case O_LOOKUPS:
            rc = parse_int(optarg, 0, 100000000, &a->lookups);
            break;
        case O_REPLICAS:
            rc = parse_int(optarg, 1, 64, &a->replicas);
            break;
        case O_SEED:
            errno = 0;
            a->seed = strtoull(optarg, &end, 0);
            if (errno || *optarg == '\0' || *end != '\0')
                rc = -EINVAL;
            break;
        case O_CRASH:
            rc = parse_double(optarg, 0, 1, &a->crash);
            break;
        case O_LEAVE:
            rc = parse_double(optarg, 0, 1, &a->leave);
            break;
        case O_CHURN:
            rc = parse_double(optarg, 0, 1e6, &a->churn);
            break;
        case O_DURATION:
            rc = parse_int(optarg, 0, 1000000, &a->duration_s);
            break;
        case O_LOSS:
            rc = parse_double(optarg, 0, 1, &a->loss);
            break;
        case O_JSON:
            a->json = true;
            break;
        case O_DET:
            a->deterministic = true;
            break;
        case O_BURST:
            a->burst = true;
            break;
        case O_JOIN_RATE:
            rc = parse_int(optarg, 1, 1000000, &a->join_rate);
            break;
        case O_SUCC_LEN:
            rc = parse_int(optarg, 1, 256, &a->succ_len);
            break;
        case O_DEADLINE:
            rc = parse_int(optarg, 1, 100000000, &a->deadline_s);
            break;
        case 'v':
            rc = parse_int(optarg, 0, 3, &a->verbose);
            break;
        case 'h':
        case O_HELP:
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -EINVAL;
        }
        if (rc < 0) {
            fprintf(stderr, "chordsim: bad value '%s'\n", optarg);
            return rc;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "chordsim: unexpected argument %s\n", argv[optind]);
        usage(stderr);
        return -EINVAL;
    }
    if (a->churn > 0 && a->duration_s == 0) {
        fprintf(stderr, "chordsim: --churn needs --duration\n");
        return -EINVAL;
    }
    if (a->join_rate == 0)
        a->join_rate = a->peers / 20 > 5 ? a->peers / 20 : 5;
    return 0;
}

/* ------------------------------------------------------------- helpers */

static void key_name(int k, char *buf, size_t len)
{
    snprintf(buf, len, "key-%d", k);
}

/* A random live peer, or -1. */
static int random_live(struct run *r)
{
    int n = dht_sim_npeers(r->sim), count = 0, pick;

    for (int tries = 0; tries < 64; tries++) {
        int i = rng_below(r, n);
        if (dht_sim_alive(r->sim, i))
            return i;
    }
    for (int i = 0; i < n; i++)
        count += dht_sim_alive(r->sim, i);
    if (count == 0)
        return -1;
    pick = rng_below(r, count);
    for (int i = 0; i < n; i++)
        if (dht_sim_alive(r->sim, i) && pick-- == 0)
            return i;
    return -1;
}

static int live_count(struct run *r)
{
    int n = 0;

    for (int i = 0; i < dht_sim_npeers(r->sim); i++)
        n += dht_sim_alive(r->sim, i);
    return n;
}

/* The live peer that is the successor of id (linear scan), or -1. */
static int true_successor(struct run *r, const struct dht_id *id)
{
    struct dht_id best, d;
    int who = -1;

    for (int i = 0; i < dht_sim_npeers(r->sim); i++) {
        if (!dht_sim_alive(r->sim, i))
            continue;
        dht_id_sub(&dht_sim_node(r->sim, i)->id, id, &d);
        if (who < 0 || dht_id_cmp(&d, &best) < 0) {
            best = d;
            who = i;
        }
    }
    return who;
}

static int cmp_peer_id(const void *x, const void *y, void *arg)
{
    struct dht_sim *s = arg;
    return dht_id_cmp(&dht_sim_node(s, *(const int *)x)->id,
                      &dht_sim_node(s, *(const int *)y)->id);
}

/* Live peers sorted by id; *n_out of them. Caller free()s. */
static int *sorted_live(struct run *r, int *n_out)
{
    int n = 0, *v = malloc(((size_t)dht_sim_npeers(r->sim) + 1) * sizeof *v);

    if (!v)
        abort();
    for (int i = 0; i < dht_sim_npeers(r->sim); i++)
        if (dht_sim_alive(r->sim, i))
            v[n++] = i;
    qsort_r(v, (size_t)n, sizeof *v, cmp_peer_id, r->sim);
    *n_out = n;
    return v;
}

/* Position in sorted of the successor of id. */
static int succ_pos(struct run *r, const int *sorted, int n,
                    const struct dht_id *id)
{
    int lo = 0, hi = n;

    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (dht_id_cmp(&dht_sim_node(r->sim, sorted[mid])->id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == n ? 0 : lo;
}

static bool none_pending(struct dht_sim *s, void *arg)
{
    (void)s;
    return *(int *)arg == 0;
}

static bool ring_ok(struct dht_sim *s, void *arg)
{
    (void)arg;
    return dht_sim_ring_ok(s, NULL);
}

static uint64_t op_wait_ms(void)
{
    struct dht_sim_opts o;

    dht_sim_opts_default(&o);
    return (uint64_t)o.base.op_timeout_ms * 3 + 10000;
}

static bool fingers_ok(struct dht_sim *s, void *arg)
{
    (void)arg;
    return dht_sim_fingers_ok(s);
}

static void wait_ops(struct run *r, int *pending)
{
    dht_sim_run_while(r->sim, none_pending, pending, 100,
                      dht_sim_now(r->sim) + op_wait_ms());
}

/* Run until the ring oracle holds; *ms_out: virtual ms it took from t0. */
static bool converge(struct run *r, uint64_t t0, uint64_t *ms_out)
{
    const char *why = NULL;
    bool ok = dht_sim_run_while(r->sim, ring_ok, r, 100,
                                dht_sim_now(r->sim) +
                                    (uint64_t)r->a.deadline_s * 1000);

    *ms_out = dht_sim_now(r->sim) - t0;
    if (!ok && !dht_sim_ring_ok(r->sim, &why))
        fprintf(stderr, "chordsim: ring did not converge: %s\n", why);
    return ok;
}

/* A few maintenance periods for replication and hand-off to settle. */
static void maintain(struct run *r)
{
    struct dht_sim_opts o;

    dht_sim_opts_default(&o);
    dht_sim_run_until(
        r->sim, dht_sim_now(r->sim) +
                    3 * (uint64_t)(o.base.maintain_ms + o.base.jitter_ms));
}

/* ---------------------------------------------------------------- phases */

/*
 * Peers join in batches, one batch per virtual second: at most join_rate,
 * and at most as many as are already in the ring, so the ring doubles at
 * first. Dozens of peers joining a ring of one at once all start with that
 * one as successor and take long to sort themselves out (docs/core-bugs.md).
 * --burst adds them all at once anyway.
 */
static void add_peers(struct run *r)
{
    uint64_t t_last;
    int added = 0;

    while (added < r->a.peers) {
        int batch = r->a.burst ? r->a.peers : r->a.join_rate;
        if (!r->a.burst && batch > added)
            batch = added > 0 ? added : 1;
        for (int k = 0; k < batch && added < r->a.peers; k++, added++)
            dht_sim_add_peer(r->sim);
        if (added < r->a.peers)
            dht_sim_run_until(r->sim, dht_sim_now(r->sim) + 1000);
    }
    t_last = dht_sim_now(r->sim);
    r->ring_converged = converge(r, t_last, &r->converge_ms);
    /* Then every finger: finger i of each peer is the true successor of
     * id + 2^i (checked each virtual second, for at most 120 s: with
     * --loss a finger is always being forgotten somewhere). */
    r->fingers_converged = dht_sim_run_while(r->sim, fingers_ok, r, 1000,
                                             dht_sim_now(r->sim) + 120000);
    r->fingers_ms = dht_sim_now(r->sim) - t_last;
}

static void put_done(void *arg, const struct dht_result *res)
{
    struct op_ctx *c = arg;
    struct run *r = c->r;

    (*c->pending)--;
    if (res->err == 0) {
        uint64_t v = res->version ? res->version : 1;
        if (!r->acked[c->key])
            r->nacked++;
        if (v > r->acked[c->key])
            r->acked[c->key] = v;
        if (c->churn)
            r->churn_puts_acked++;
    }
    free(c);
}

/* Put key k (value naming the time) through a random live peer. */
static void start_put(struct run *r, int k, int *pending, bool churn)
{
    char key[64], val[128];
    struct op_ctx *c = calloc(1, sizeof *c);
    struct dht_op op = {.kind = DHT_OP_PUT, .expected = DHT_ANY_VERSION};
    int from = random_live(r);

    if (!c)
        abort();
    c->r = r;
    c->key = k;
    c->churn = churn;
    c->pending = pending;
    key_name(k, key, sizeof key);
    snprintf(val, sizeof val, "value of %s at %" PRIu64, key,
             dht_sim_now(r->sim));
    op.key = key;
    op.value = val;
    op.len = strlen(val);
    (*pending)++;
    if (churn)
        r->churn_puts++;
    if (from < 0 || dht_sim_op(r->sim, from, &op, put_done, c) < 0) {
        struct dht_result res = {.err = -EHOSTUNREACH};
        put_done(c, &res);
    }
}

static void put_keys(struct run *r)
{
    for (int k = 0; k < r->a.keys; k++)
        start_put(r, k, &r->pend_put, false);
    wait_ops(r, &r->pend_put);
    maintain(r);
}

static bool all_left(struct dht_sim *s, void *arg)
{
    const bool *leaving = arg;

    for (int i = 0; i < dht_sim_npeers(s); i++)
        if (leaving[i] && dht_sim_alive(s, i))
            return false;
    return true;
}

/* After leaves, crashes or churn: run until the ring oracle holds again,
 * then a few maintenance periods. reconverged is true only if every such
 * phase re-converged; reconverge_ms is the longest it took. */
static void settle(struct run *r)
{
    uint64_t t0 = dht_sim_now(r->sim), ms;
    bool ok = converge(r, t0, &ms);

    r->reconverged = r->settles++ == 0 ? ok : r->reconverged && ok;
    if (ms > r->reconverge_ms)
        r->reconverge_ms = ms;
    maintain(r);
}

static void leave_some(struct run *r)
{
    int n = live_count(r), want = (int)floor(r->a.leave * n);
    bool *leaving = calloc((size_t)dht_sim_npeers(r->sim), sizeof *leaving);

    if (!leaving)
        abort();
    if (want >= n)
        want = n - 1; /* someone must stay to hold the keys */
    for (int done = 0; done < want;) {
        int i = random_live(r);
        if (i < 0)
            break;
        if (leaving[i])
            continue;
        leaving[i] = true;
        dht_sim_leave(r->sim, i);
        r->left++;
        done++;
    }
    dht_sim_run_while(r->sim, all_left, leaving, 100,
                      dht_sim_now(r->sim) + op_wait_ms());
    free(leaving);
    settle(r);
}

static void crash_some(struct run *r)
{
    int n, *sorted = sorted_live(r, &n);
    int want = (int)floor(r->a.crash * n);
    int nd = dht_sim_npeers(r->sim);
    bool *down = calloc((size_t)nd, sizeof *down);
    int reps = r->a.replicas < n ? r->a.replicas : n;
    char key[64];

    if (!down)
        abort();
    if (want >= n)
        want = n - 1;
    for (int done = 0; done < want;) {
        int i = sorted[rng_below(r, n)];
        if (down[i])
            continue;
        down[i] = true;
        done++;
    }
    /* Unrecoverable: every ideal holder (at crash time) goes down. */
    for (int k = 0; k < r->a.keys; k++) {
        struct dht_id id;
        int first, all = 1;
        if (!r->acked[k] || r->unrecov[k])
            continue;
        key_name(k, key, sizeof key);
        dht_id_of(key, &id);
        first = succ_pos(r, sorted, n, &id);
        for (int j = 0; j < reps && all; j++)
            all = down[sorted[(first + j) % n]];
        if (all) {
            r->unrecov[k] = true;
            r->nunrecov++;
        }
    }
    for (int i = 0; i < nd; i++)
        if (down[i]) {
            dht_sim_crash(r->sim, i);
            r->crashed++;
        }
    free(down);
    free(sorted);
    settle(r);
}

static void lookup_done(void *arg, const struct dht_result *res)
{
    struct op_ctx *c = arg;
    struct run *r = c->r;
    bool ok = res->err == 0;

    (*c->pending)--;
    if (ok) {
        char key[64];
        struct dht_id id;
        int want;
        key_name(c->key, key, sizeof key);
        dht_id_of(key, &id);
        want = true_successor(r, &id);
        ok = want >= 0 &&
             dht_id_eq(&res->primary.id, &dht_sim_node(r->sim, want)->id);
    }
    if (c->churn) {
        r->churn_failed += !ok;
    } else if (!ok) {
        r->failed_lookups++;
    } else {
        if (r->nhops == r->caphops) {
            r->caphops = r->caphops ? 2 * r->caphops : 1024;
            r->hops = realloc(r->hops, (size_t)r->caphops * sizeof *r->hops);
            if (!r->hops)
                abort();
        }
        r->hops[r->nhops++] = res->hops;
    }
    free(c);
}

static void start_lookup(struct run *r, bool churn)
{
    char key[64];
    struct op_ctx *c = calloc(1, sizeof *c);
    struct dht_op op = {.kind = DHT_OP_LOOKUP};
    int from = random_live(r);

    if (!c)
        abort();
    c->r = r;
    c->churn = churn;
    c->key = rng_below(r, r->a.keys > 0 ? r->a.keys : 1000000);
    key_name(c->key, key, sizeof key);
    op.key = key;
    c->pending = churn ? &r->pend_churn : &r->pend_lookup;
    (*c->pending)++;
    if (churn)
        r->churn_lookups++;
    if (from < 0 || dht_sim_op(r->sim, from, &op, lookup_done, c) < 0) {
        struct dht_result res = {.err = -EHOSTUNREACH};
        lookup_done(c, &res);
    }
}

/* Keys whose only live copies at the acknowledged version (or newer) were
 * on peer i become unrecoverable when it crashes. */
static void crash_one(struct run *r, int i)
{
    char key[64];
    int n = dht_sim_npeers(r->sim);

    for (int k = 0; k < r->a.keys; k++) {
        bool other = false;
        if (!r->acked[k] || r->unrecov[k])
            continue;
        key_name(k, key, sizeof key);
        if (dht_sim_key_version(r->sim, i, key) < r->acked[k])
            continue;
        for (int j = 0; j < n && !other; j++)
            other = j != i && dht_sim_alive(r->sim, j) &&
                    dht_sim_key_version(r->sim, j, key) >= r->acked[k];
        if (!other) {
            r->unrecov[k] = true;
            r->nunrecov++;
        }
    }
    dht_sim_crash(r->sim, i);
    r->crashed++;
}

static void churn(struct run *r)
{
    uint64_t t = dht_sim_now(r->sim);
    uint64_t end = t + (uint64_t)r->a.duration_s * 1000;
    double mean_gap_ms = 60000.0 / r->a.churn;
    uint64_t next_ev = t + (uint64_t)(-log(1 - rng_unit(r)) * mean_gap_ms);
    uint64_t next_lookup = t;

    while (t < end) {
        uint64_t step = next_ev < next_lookup ? next_ev : next_lookup;
        if (step > end)
            step = end;
        dht_sim_run_until(r->sim, step);
        t = step;
        if (t >= end)
            break;
        if (t == next_lookup) {
            /* Ten lookups and five overwrites a virtual second. */
            start_lookup(r, true);
            if (r->a.keys > 0 && (next_lookup / 100) % 2 == 0)
                start_put(r, rng_below(r, r->a.keys), &r->pend_churn, true);
            next_lookup += 100;
        }
        if (t == next_ev) {
            double u = rng_unit(r);
            int live = live_count(r);
            r->churn_events++;
            if (u < 0.5 || live <= r->a.replicas + 1) {
                dht_sim_add_peer(r->sim);
                r->joined++;
            } else if (u < 0.75) {
                int i = random_live(r);
                if (i >= 0)
                    crash_one(r, i);
            } else {
                int i = random_live(r);
                if (i >= 0) {
                    dht_sim_leave(r->sim, i);
                    r->left++;
                }
            }
            next_ev = t + 1 + (uint64_t)(-log(1 - rng_unit(r)) * mean_gap_ms);
        }
    }
    wait_ops(r, &r->pend_churn);
    settle(r);
}

static void lookups(struct run *r)
{
    for (int i = 0; i < r->a.lookups; i++)
        start_lookup(r, false);
    wait_ops(r, &r->pend_lookup);
    /* Lookups that never came back failed. */
    r->failed_lookups += r->pend_lookup;
}

/* Whether a live store holds key k at its acknowledged version or newer:
 * a lost key that is still stored was unreadable (timeouts under loss),
 * one that is not is gone. */
static bool stored_anywhere(struct run *r, int k)
{
    char key[64];

    key_name(k, key, sizeof key);
    for (int j = 0; j < dht_sim_npeers(r->sim); j++)
        if (dht_sim_alive(r->sim, j) &&
            dht_sim_key_version(r->sim, j, key) >= r->acked[k])
            return true;
    return false;
}

#define GET_ATTEMPTS 3 /* a key is lost only if this many gets fail */

static void get_start(struct run *r, struct op_ctx *c);

/* A failed get is retried from another peer (a lost message or a timeout
 * is not a lost key); after GET_ATTEMPTS failures, or an old version, the
 * key counts as lost. */
static void get_done(void *arg, const struct dht_result *res)
{
    struct op_ctx *c = arg;
    struct run *r = c->r;

    r->pend_get--;
    if (res->err != 0 && c->attempts < GET_ATTEMPTS) {
        get_start(r, c);
        return;
    }
    if (res->err != 0 || res->version < r->acked[c->key]) {
        r->nlost++;
        r->nlost_recoverable += !r->unrecov[c->key];
        r->ngone += !stored_anywhere(r, c->key);
    }
    free(c);
}

static void get_start(struct run *r, struct op_ctx *c)
{
    char key[64];
    struct dht_op op = {.kind = DHT_OP_GET};
    int from = random_live(r);

    key_name(c->key, key, sizeof key);
    op.key = key;
    c->attempts++;
    r->pend_get++;
    if (from < 0 || dht_sim_op(r->sim, from, &op, get_done, c) < 0) {
        struct dht_result res = {.err = -EHOSTUNREACH};
        get_done(c, &res);
    }
}

static void get_keys(struct run *r)
{
    for (int k = 0; k < r->a.keys; k++) {
        struct op_ctx *c;
        if (!r->acked[k])
            continue;
        c = calloc(1, sizeof *c);
        if (!c)
            abort();
        c->r = r;
        c->key = k;
        get_start(r, c);
    }
    wait_ops(r, &r->pend_get);
    r->nlost += r->pend_get; /* never answered */
    r->nlost_recoverable += r->pend_get;
}

/* Keys per live peer, counting primaries: max over mean. */
static double load_ratio(struct run *r)
{
    int n, *sorted = sorted_live(r, &n), max = 0, total = 0;
    int *count = calloc((size_t)n + 1, sizeof *count);
    char key[64];

    if (!count)
        abort();
    for (int k = 0; k < r->a.keys && n > 0; k++) {
        struct dht_id id;
        if (!r->acked[k])
            continue;
        key_name(k, key, sizeof key);
        dht_id_of(key, &id);
        count[succ_pos(r, sorted, n, &id)]++;
        total++;
    }
    for (int i = 0; i < n; i++)
        if (count[i] > max)
            max = count[i];
    free(count);
    free(sorted);
    return total && n ? max / ((double)total / n) : 0;
}

static int cmp_int(const void *x, const void *y)
{
    int a = *(const int *)x, b = *(const int *)y;
    return (a > b) - (a < b);
}

static uint64_t rss_bytes(void)
{
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint64_t wall_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void report(struct run *r, uint64_t wall_ms)
{
    double mean = 0;
    int p50 = 0, p99 = 0;
    double load = load_ratio(r);
    int live = live_count(r);

    if (r->nhops) {
        long long sum = 0;
        qsort(r->hops, (size_t)r->nhops, sizeof *r->hops, cmp_int);
        for (int i = 0; i < r->nhops; i++)
            sum += r->hops[i];
        mean = (double)sum / r->nhops;
        p50 = r->hops[(r->nhops - 1) / 2];
        p99 = r->hops[(int)ceil(0.99 * r->nhops) - 1];
    }
    if (r->a.json) {
        printf("{\"peers\":%d,\"live_peers\":%d,\"replicas\":%d,"
               "\"seed\":%" PRIu64 ",",
               r->a.peers, live, r->a.replicas, r->a.seed);
        printf("\"lookups\":%d,\"hops_mean\":%.3f,\"hops_p50\":%d,"
               "\"hops_p99\":%d,\"failed_lookups\":%d,",
               r->a.lookups, mean, p50, p99, r->failed_lookups);
        printf("\"keys\":%d,\"keys_acked\":%d,\"keys_lost\":%d,"
               "\"keys_unrecoverable\":%d,\"keys_lost_recoverable\":%d,"
               "\"keys_gone\":%d,\"under_replicated\":%" PRIu64 ",",
               r->a.keys, r->nacked, r->nlost, r->nunrecov,
               r->nlost_recoverable, r->ngone, r->under_replicated);
        printf("\"ring_converged\":%s,\"converge_ms\":%" PRIu64 ",",
               r->ring_converged ? "true" : "false", r->converge_ms);
        printf("\"fingers_converged\":%s,\"fingers_ms\":%" PRIu64 ",",
               r->fingers_converged ? "true" : "false", r->fingers_ms);
        printf("\"reconverged\":%s,\"reconverge_ms\":%" PRIu64 ",",
               r->reconverged ? "true" : "false", r->reconverge_ms);
        printf("\"crashed\":%d,\"left\":%d,\"joined\":%d,"
               "\"churn_events\":%d,\"churn_lookups\":%d,"
               "\"churn_failed_lookups\":%d,\"churn_puts\":%d,"
               "\"churn_puts_acked\":%d,",
               r->crashed, r->left, r->joined, r->churn_events,
               r->churn_lookups, r->churn_failed, r->churn_puts,
               r->churn_puts_acked);
        printf("\"load_max_over_mean\":%.3f,\"messages\":%" PRIu64
               ",\"virtual_ms\":%" PRIu64,
               load, dht_sim_messages(r->sim), dht_sim_now(r->sim));
        if (!r->a.deterministic)
            printf(",\"rss_bytes\":%" PRIu64 ",\"wall_ms\":%" PRIu64,
                   rss_bytes(), wall_ms);
        printf("}\n");
        return;
    }
    printf("peers            %d (%d live at the end)\n", r->a.peers, live);
    printf("ring             %s after %" PRIu64
           " virtual ms; fingers %s after %" PRIu64 " ms\n",
           r->ring_converged ? "converged" : "NOT converged", r->converge_ms,
           r->fingers_converged ? "right" : "NOT right", r->fingers_ms);
    if (r->crashed || r->left || r->churn_events)
        printf("after failures   %s after %" PRIu64
               " ms (%d crashed, %d left, %d joined)\n",
               r->reconverged ? "re-converged" : "NOT re-converged",
               r->reconverge_ms, r->crashed, r->left, r->joined);
    if (r->churn_events)
        printf("churn            %d events, %d lookups (%d failed), %d "
               "overwrites (%d acknowledged)\n",
               r->churn_events, r->churn_lookups, r->churn_failed,
               r->churn_puts, r->churn_puts_acked);
    printf("lookups          %d: hops mean %.3f, p50 %d, p99 %d; %d failed\n",
           r->a.lookups, mean, p50, p99, r->failed_lookups);
    printf("keys             %d put, %d acknowledged, %d lost (%d of them "
           "recoverable, %d gone from every store), %d unrecoverable, "
           "%" PRIu64 " under-replicated\n",
           r->a.keys, r->nacked, r->nlost, r->nlost_recoverable, r->ngone,
           r->nunrecov, r->under_replicated);
    printf("load             max/mean primaries %.3f\n", load);
    printf("messages         %" PRIu64 " in %" PRIu64 " virtual ms\n",
           dht_sim_messages(r->sim), dht_sim_now(r->sim));
    if (!r->a.deterministic)
        printf("cost             %" PRIu64 " ms wall, %" PRIu64
               " bytes resident\n",
               wall_ms, rss_bytes());
}

int main(int argc, char **argv)
{
    struct run r;
    struct dht_sim_opts o;
    uint64_t t0 = wall_now_ms();

    memset(&r, 0, sizeof r);
    if (parse_args(argc, argv, &r.a) < 0)
        return 2;
    dht_log_set_level(r.a.verbose);
    r.rng = r.a.seed ^ 0x636f7264ull; /* a stream apart from the sim's */
    dht_sim_opts_default(&o);
    o.seed = r.a.seed;
    o.replicas = r.a.replicas;
    o.succ_len = r.a.succ_len;
    o.loss = r.a.loss;
    r.sim = dht_sim_new(&o);
    r.acked = calloc((size_t)r.a.keys + 1, sizeof *r.acked);
    r.unrecov = calloc((size_t)r.a.keys + 1, sizeof *r.unrecov);
    if (!r.sim || !r.acked || !r.unrecov)
        abort();

    add_peers(&r);
    put_keys(&r);
    if (r.a.leave > 0)
        leave_some(&r);
    if (r.a.crash > 0)
        crash_some(&r);
    if (r.a.churn > 0)
        churn(&r);
    lookups(&r);
    get_keys(&r);
    dht_sim_key_census(r.sim, NULL, &r.under_replicated);
    report(&r, wall_now_ms() - t0);

    dht_sim_free(r.sim);
    free(r.acked);
    free(r.unrecov);
    free(r.hops);
    return 0;
}
