/*
 * tests/unit/test_sim.c - ring scenarios on the deterministic simulator.
 *
 * Each test builds a ring of simulated peers (dht/sim.c driving dht/core.c),
 * does something to it (joins, crashes, leaves, churn, a partition) and
 * checks the oracles, after Zave's correctness properties: the live peers
 * form one ordered ring whose successor lists and predecessors are the ideal
 * ones, every acknowledged key is still readable at its acknowledged
 * version, and after maintenance every key sits on its R successors. A run
 * is a pure function of its seed, so a failure here replays exactly.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dht/dht-int.h"
#include "tests/unit/testhelp.h"

#define CONVERGE_MS 600000 /* virtual bound for any convergence */

static uint64_t trng = 88172645463325252ull; /* the tests' own xorshift */

static uint64_t trand(void)
{
    trng ^= trng << 13;
    trng ^= trng >> 7;
    trng ^= trng << 17;
    return trng;
}

static struct dht_sim *new_sim(uint64_t seed)
{
    struct dht_sim_opts o;

    dht_sim_opts_default(&o);
    o.seed = seed;
    trng = seed * 2654435761u + 88172645463325252ull;
    return dht_sim_new(&o);
}

static bool ring_ok_cb(struct dht_sim *s, void *arg)
{
    (void)arg;
    return dht_sim_ring_ok(s, NULL);
}

/* Run until the ring oracle holds, within max_ms of virtual time; say why
 * not if it never does. */
static bool converge_within(struct dht_sim *s, uint64_t max_ms)
{
    const char *why;

    if (dht_sim_run_while(s, ring_ok_cb, NULL, 100, dht_sim_now(s) + max_ms))
        return true;
    dht_sim_ring_ok(s, &why);
    printf("# ring did not converge by t=%llu ms: %s\n",
           (unsigned long long)dht_sim_now(s), why);
    return false;
}

static bool converge(struct dht_sim *s)
{
    return converge_within(s, CONVERGE_MS);
}

/* A few maintenance periods of virtual time. */
static void maintain(struct dht_sim *s)
{
    struct dht_sim_opts o;

    dht_sim_opts_default(&o);
    dht_sim_run_until(s, dht_sim_now(s) + 3 * (uint64_t)(o.base.maintain_ms +
                                                         o.base.jitter_ms));
}

/* Add n peers, up to batch a virtual second, never more at once than are
 * already there (the ring doubles at first; docs/core-bugs.md #2). */
static void add_peers(struct dht_sim *s, int n, int batch)
{
    int added = 0, have = dht_sim_npeers(s);

    while (added < n) {
        int b = batch < have + added ? batch : have + added;
        if (b < 1)
            b = 1;
        for (int k = 0; k < b && added < n; k++, added++)
            dht_sim_add_peer(s);
        if (added < n)
            dht_sim_run_until(s, dht_sim_now(s) + 1000);
    }
}

static int random_live(struct dht_sim *s)
{
    int n = dht_sim_npeers(s);

    for (int tries = 0; tries < 100000; tries++) {
        int i = (int)(trand() % (uint64_t)n);
        if (dht_sim_alive(s, i))
            return i;
    }
    return -1;
}

static int live_count(struct dht_sim *s)
{
    int n = 0;

    for (int i = 0; i < dht_sim_npeers(s); i++)
        n += dht_sim_alive(s, i);
    return n;
}

/* ------------------------------------------------------ operation batches */

struct batch;

struct opres {
    struct batch *b;
    bool done;
    int err;
    uint64_t version;
    struct dht_id primary;
    int hops;
};

struct batch {
    int outstanding;
};

static void op_cb(void *arg, const struct dht_result *res)
{
    struct opres *r = arg;

    r->done = true;
    r->err = res->err;
    r->version = res->version;
    r->primary = res->primary.id;
    r->hops = res->hops;
    r->b->outstanding--;
}

static bool batch_done(struct dht_sim *s, void *arg)
{
    (void)s;
    return ((struct batch *)arg)->outstanding == 0;
}

static void key_name(int k, char *buf, size_t len)
{
    snprintf(buf, len, "key-%d", k);
}

/* Submit op on key k from a random live peer into batch b. */
static void submit(struct dht_sim *s, struct batch *b, struct opres *r,
                   enum dht_op_kind kind, int k)
{
    char key[32], val[64];
    struct dht_op op = {.kind = kind, .expected = DHT_ANY_VERSION};

    key_name(k, key, sizeof key);
    snprintf(val, sizeof val, "value %d", k);
    op.key = key;
    if (kind == DHT_OP_PUT) {
        op.value = val;
        op.len = strlen(val);
    }
    memset(r, 0, sizeof *r);
    r->b = b;
    b->outstanding++;
    if (dht_sim_op(s, random_live(s), &op, op_cb, r) < 0) {
        r->done = true;
        r->err = -EHOSTUNREACH;
        b->outstanding--;
    }
}

static void wait_batch(struct dht_sim *s, struct batch *b)
{
    dht_sim_run_while(s, batch_done, b, 50, dht_sim_now(s) + 120000);
}

/* Put keys 0..n-1; versions[k] = acknowledged version or 0. Returns acked. */
static int put_keys(struct dht_sim *s, int n, uint64_t *versions)
{
    struct batch b = {0};
    struct opres *r = calloc((size_t)n, sizeof *r);
    int acked = 0;

    for (int k = 0; k < n; k++)
        submit(s, &b, &r[k], DHT_OP_PUT, k);
    wait_batch(s, &b);
    for (int k = 0; k < n; k++) {
        versions[k] = r[k].done && r[k].err == 0 ? r[k].version : 0;
        acked += versions[k] != 0;
    }
    free(r);
    return acked;
}

/* Keys acknowledged (versions[k] != 0) that cannot be read back at their
 * version or newer, skipping those flagged in skip (may be NULL). */
static int lost_keys(struct dht_sim *s, int n, const uint64_t *versions,
                     const bool *skip)
{
    struct batch b = {0};
    struct opres *r = calloc((size_t)n, sizeof *r);
    int lost = 0;

    for (int k = 0; k < n; k++)
        if (versions[k])
            submit(s, &b, &r[k], DHT_OP_GET, k);
    wait_batch(s, &b);
    for (int k = 0; k < n; k++) {
        if (!versions[k] || (skip && skip[k]))
            continue;
        if (!r[k].done || r[k].err != 0 || r[k].version < versions[k]) {
            if (lost < 5)
                printf("# key-%d lost: done %d err %d version %llu < %llu\n", k,
                       r[k].done, r[k].err, (unsigned long long)r[k].version,
                       (unsigned long long)versions[k]);
            lost++;
        }
    }
    free(r);
    return lost;
}

/* The live peer that is the successor of key k, by linear scan. */
static int true_successor(struct dht_sim *s, int k)
{
    char key[32];
    struct dht_id id, best, d;
    int who = -1;

    key_name(k, key, sizeof key);
    dht_id_of(key, &id);
    for (int i = 0; i < dht_sim_npeers(s); i++) {
        if (!dht_sim_alive(s, i))
            continue;
        dht_id_sub(&dht_sim_node(s, i)->id, &id, &d);
        if (who < 0 || dht_id_cmp(&d, &best) < 0) {
            best = d;
            who = i;
        }
    }
    return who;
}

/* n lookups of random keys among nkeys; returns how many failed (error or
 * a primary other than the true successor). */
static int bad_lookups(struct dht_sim *s, int n, int nkeys, double *hops_mean)
{
    struct batch b = {0};
    struct opres *r = calloc((size_t)n, sizeof *r);
    int *keys = calloc((size_t)n, sizeof *keys), bad = 0;
    long hops = 0;

    for (int i = 0; i < n; i++) {
        keys[i] = (int)(trand() % (uint64_t)nkeys);
        submit(s, &b, &r[i], DHT_OP_LOOKUP, keys[i]);
    }
    wait_batch(s, &b);
    for (int i = 0; i < n; i++) {
        int want = true_successor(s, keys[i]);
        if (!r[i].done || r[i].err != 0 ||
            !dht_id_eq(&r[i].primary, &dht_sim_node(s, want)->id))
            bad++;
        hops += r[i].hops;
    }
    if (hops_mean)
        *hops_mean = n ? (double)hops / n : 0;
    free(r);
    free(keys);
    return bad;
}

/* Live peers sorted by id (caller frees). */
static int *sorted_live(struct dht_sim *s, int *n_out)
{
    int n = 0, *v = calloc((size_t)dht_sim_npeers(s) + 1, sizeof *v);

    for (int i = 0; i < dht_sim_npeers(s); i++)
        if (dht_sim_alive(s, i))
            v[n++] = i;
    /* Insertion sort: these rings are small. */
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && dht_id_cmp(&dht_sim_node(s, v[j - 1])->id,
                                            &dht_sim_node(s, v[j])->id) > 0;
             j--) {
            int t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    *n_out = n;
    return v;
}

/* ------------------------------------------------------------------ tests */

/* The oracle itself: a converged ring stops being ok the moment a peer
 * crashes (its neighbours still name it), and is ok again after repair. */
static void test_sim_oracle_sees_crash(void)
{
    struct dht_sim *s = new_sim(11);

    add_peers(s, 12, 12);
    CHECK(converge(s));
    dht_sim_crash(s, 5);
    CHECK(!dht_sim_alive(s, 5));
    CHECK(!dht_sim_ring_ok(s, NULL));
    CHECK(converge(s));
    dht_sim_free(s);
}

/* A lone peer is its own successor. */
static void test_sim_single_peer(void)
{
    struct dht_sim *s = new_sim(2);
    uint64_t v[10];

    add_peers(s, 1, 1);
    CHECK(converge(s));
    CHECK_EQ(put_keys(s, 10, v), 10);
    CHECK_EQ(lost_keys(s, 10, v, NULL), 0);
    CHECK_EQ(bad_lookups(s, 20, 10, NULL), 0);
    dht_sim_free(s);
}

/* 1000 peers joining (50 a virtual second) converge to one ordered ring
 * with ideal successor lists within 30 virtual seconds of the last join
 * (docs/core-bugs.md #1: it took 48 s when stabilize walked one peer a
 * round); lookups then take about half log2 N hops. */
static void test_sim_join_1000(void)
{
    struct dht_sim *s = new_sim(1000);
    double hops;

    add_peers(s, 1000, 50);
    CHECK(converge_within(s, 30000));
    CHECK_EQ(live_count(s), 1000);
    CHECK_EQ(bad_lookups(s, 300, 100000, &hops), 0);
    printf("# 1000 peers: converged at t=%llu ms, %llu messages, "
           "hops mean %.2f\n",
           (unsigned long long)dht_sim_now(s),
           (unsigned long long)dht_sim_messages(s), hops);
    CHECK(hops > 1.0 && hops < 10.0);
    dht_sim_free(s);
}

/* 1000 peers all joining a ring of one at the same instant (every joiner
 * starts with the same successor) still sort themselves into one ring
 * within a minute (docs/core-bugs.md #2: interleaved chains). */
static void test_sim_burst_join(void)
{
    struct dht_sim *s = new_sim(2222);

    for (int i = 0; i < 1000; i++)
        dht_sim_add_peer(s);
    CHECK(converge_within(s, 60000));
    CHECK_EQ(live_count(s), 1000);
    CHECK_EQ(bad_lookups(s, 200, 100000, NULL), 0);
    dht_sim_free(s);
}

/* Fingers converge too, on a small ring given time. */
static void test_sim_fingers(void)
{
    struct dht_sim *s = new_sim(33);

    add_peers(s, 30, 10);
    CHECK(converge(s));
    dht_sim_run_until(s, dht_sim_now(s) + 300000);
    CHECK(dht_sim_ring_ok(s, NULL));
    CHECK(dht_sim_fingers_ok(s));
    dht_sim_free(s);
}

/* 50 peers joining the same gap at the same virtual moment. */
static void test_sim_concurrent_joins(void)
{
    struct dht_sim *s = new_sim(50);
    int n, *v, gap = 0;
    struct dht_id best = {{0}}, d, id;

    add_peers(s, 10, 10);
    CHECK(converge(s));
    v = sorted_live(s, &n);
    for (int i = 0; i < n; i++) {
        dht_id_sub(&dht_sim_node(s, v[(i + 1) % n])->id,
                   &dht_sim_node(s, v[i])->id, &d);
        if (dht_id_cmp(&d, &best) > 0) {
            best = d;
            gap = i;
        }
    }
    /* ids a + j * 2^100, j = 1..50: all inside (a, b). */
    id = dht_sim_node(s, v[gap])->id;
    for (int j = 0; j < 50; j++) {
        dht_id_add_pow2(&id, 100, &id);
        dht_sim_add_peer_id(s, &id);
    }
    free(v);
    CHECK(!dht_sim_ring_ok(s, NULL));
    CHECK(converge(s));
    CHECK_EQ(live_count(s), 60);
    CHECK_EQ(bad_lookups(s, 100, 1000, NULL), 0);
    dht_sim_free(s);
}

/* R-1 adjacent peers crash at once: no key is lost, the ring converges and
 * maintenance restores R copies of every key. */
static void crash_adjacent(uint64_t seed, int at)
{
    enum { N = 30, K = 200 };
    struct dht_sim *s = new_sim(seed);
    uint64_t v[K], keys, under;
    int n, *sorted;

    add_peers(s, N, 10);
    CHECK(converge(s));
    CHECK_EQ(put_keys(s, K, v), K);
    maintain(s);
    dht_sim_key_census(s, &keys, &under);
    CHECK_EQ(keys, K);
    CHECK_EQ(under, 0);
    sorted = sorted_live(s, &n);
    for (int j = 0; j < DHT_REPLICAS - 1; j++)
        dht_sim_crash(s, sorted[(at + j) % n]);
    free(sorted);
    CHECK(converge(s));
    maintain(s);
    CHECK_EQ(lost_keys(s, K, v, NULL), 0);
    dht_sim_key_census(s, &keys, &under);
    CHECK_EQ(keys, K);
    CHECK_EQ(under, 0);
    dht_sim_free(s);
}

static void test_sim_crash_adjacent(void)
{
    for (int i = 0; i < 5; i++)
        crash_adjacent(77 + (uint64_t)i, 7 * i);
}

/* Crashes one at a time, each given time to heal: nothing is lost. */
static void test_sim_crash_one_by_one(void)
{
    enum { N = 30, K = 150 };
    struct dht_sim *s = new_sim(5);
    uint64_t v[K], keys, under;

    add_peers(s, N, 10);
    CHECK(converge(s));
    CHECK_EQ(put_keys(s, K, v), K);
    maintain(s);
    for (int round = 0; round < 6; round++) {
        dht_sim_crash(s, random_live(s));
        CHECK(converge(s));
        maintain(s);
    }
    CHECK_EQ(live_count(s), N - 6);
    CHECK_EQ(lost_keys(s, K, v, NULL), 0);
    dht_sim_key_census(s, &keys, &under);
    CHECK_EQ(keys, K);
    CHECK_EQ(under, 0);
    CHECK_EQ(bad_lookups(s, 200, K, NULL), 0);
    dht_sim_free(s);
}

/* Churn (joins, crashes, leaves) while lookups run; once the ring settles
 * lookups all succeed, and only keys whose every copy crashed may be lost. */
static void test_sim_churn_lookups(void)
{
    enum { N = 40, K = 150 };
    struct dht_sim *s = new_sim(4242);
    uint64_t v[K];
    bool unrecov[K] = {false};
    int bad_during = 0, during = 0;
    char key[32];

    add_peers(s, N, 10);
    CHECK(converge(s));
    CHECK_EQ(put_keys(s, K, v), K);
    maintain(s);
    for (int ev = 0; ev < 12; ev++) {
        int i = random_live(s);
        switch (ev % 3) {
        case 0:
            dht_sim_add_peer(s);
            break;
        case 1:
            /* A key is unrecoverable if no other live store holds it. */
            for (int k = 0; k < K; k++) {
                bool other = false;
                key_name(k, key, sizeof key);
                if (!dht_sim_holds(s, i, key))
                    continue;
                for (int j = 0; j < dht_sim_npeers(s) && !other; j++)
                    other = j != i && dht_sim_alive(s, j) &&
                            dht_sim_holds(s, j, key);
                unrecov[k] |= !other;
            }
            dht_sim_crash(s, i);
            break;
        case 2:
            dht_sim_leave(s, i);
            break;
        }
        /* Lookups in the turbulence; counted, not required to succeed. */
        bad_during += bad_lookups(s, 10, K, NULL);
        during += 10;
        dht_sim_run_until(s, dht_sim_now(s) + 4000);
    }
    printf("# during churn: %d of %d lookups failed\n", bad_during, during);
    CHECK(converge(s));
    maintain(s);
    CHECK_EQ(bad_lookups(s, 300, K, NULL), 0);
    CHECK_EQ(lost_keys(s, K, v, unrecov), 0);
    dht_sim_free(s);
}

/* Holders of key k among live peers other than i. */
static bool held_elsewhere(struct dht_sim *s, int i, const char *key)
{
    for (int j = 0; j < dht_sim_npeers(s); j++)
        if (j != i && dht_sim_alive(s, j) && dht_sim_holds(s, j, key))
            return true;
    return false;
}

/* Heavy churn: five joins, crashes or leaves a virtual second for 40 s on
 * 120 peers (about every peer replaced or disturbed). Afterwards the ring
 * converges, lookups succeed, and only keys whose every live copy was on a
 * crashing peer are lost (docs/core-bugs.md #5: new peers were stranded as
 * rings of one). Three seeds. */
static void test_sim_heavy_churn(void)
{
    enum { N = 120, K = 300 };

    for (uint64_t seed = 61; seed <= 63; seed++) {
        struct dht_sim *s = new_sim(seed);
        uint64_t v[K], keys, under;
        bool unrecov[K] = {false};
        char key[32];

        add_peers(s, N, 30);
        CHECK(converge(s));
        CHECK_EQ(put_keys(s, K, v), K);
        maintain(s);
        for (int ev = 0; ev < 200; ev++) {
            uint64_t u = trand() % 4;
            int i = random_live(s);
            if (u < 2 || live_count(s) < N / 2) {
                dht_sim_add_peer(s);
            } else if (u == 2) {
                for (int k = 0; k < K; k++) {
                    key_name(k, key, sizeof key);
                    if (dht_sim_holds(s, i, key) && !held_elsewhere(s, i, key))
                        unrecov[k] = true;
                }
                dht_sim_crash(s, i);
            } else {
                dht_sim_leave(s, i);
            }
            dht_sim_run_until(s, dht_sim_now(s) + 1 + trand() % 400);
        }
        CHECK(converge_within(s, 120000));
        maintain(s);
        CHECK_EQ(bad_lookups(s, 200, K, NULL), 0);
        CHECK_EQ(lost_keys(s, K, v, unrecov), 0);
        dht_sim_key_census(s, &keys, &under);
        CHECK_EQ(under, 0);
        dht_sim_free(s);
    }
}

/* Graceful leaves hand keys on: nothing lost, and after maintenance every
 * key is on its R successors. */
static void test_sim_leaves(void)
{
    enum { N = 30, K = 200 };
    struct dht_sim *s = new_sim(99);
    uint64_t v[K], keys, under;

    add_peers(s, N, 10);
    CHECK(converge(s));
    CHECK_EQ(put_keys(s, K, v), K);
    maintain(s);
    for (int round = 0; round < 10; round++) {
        int i = random_live(s);
        dht_sim_leave(s, i);
        dht_sim_run_until(s, dht_sim_now(s) + 30000);
        CHECK(!dht_sim_alive(s, i));
        CHECK_EQ(lost_keys(s, K, v, NULL), 0);
    }
    CHECK(converge(s));
    maintain(s);
    CHECK_EQ(live_count(s), N - 10);
    CHECK_EQ(lost_keys(s, K, v, NULL), 0);
    dht_sim_key_census(s, &keys, &under);
    CHECK_EQ(keys, K);
    CHECK_EQ(under, 0);
    dht_sim_free(s);
}

/* A joining peer's successor crashes while the join is under way, so the
 * bootstrap (not having noticed yet) names a dead successor: the peer must
 * still end up in the ring rather than a ring of one (docs/core-bugs.md
 * #4 and #5). */
static void test_sim_joiner_loses_successor(void)
{
    struct dht_sim *s = new_sim(404);
    struct dht_id best, d;
    int x, succ = -1;

    add_peers(s, 10, 10);
    CHECK(converge(s));
    x = dht_sim_add_peer(s);
    for (int i = 0; i < dht_sim_npeers(s); i++) {
        if (i == x || !dht_sim_alive(s, i))
            continue;
        dht_id_sub(&dht_sim_node(s, i)->id, &dht_sim_node(s, x)->id, &d);
        if (succ < 0 || dht_id_cmp(&d, &best) < 0) {
            best = d;
            succ = i;
        }
    }
    CHECK(succ >= 0);
    dht_sim_crash(s, succ);
    CHECK(converge_within(s, 120000));
    CHECK(dht_sim_alive(s, x));
    CHECK(dht_core_joined(dht_sim_core(s, x)));
    CHECK_EQ(bad_lookups(s, 100, 1000, NULL), 0);
    dht_sim_free(s);
}

/* R adjacent peers leave at the same moment: their keys, replicas
 * included, are handed on and nothing is lost (docs/core-bugs.md #3). */
static void test_sim_adjacent_leaves(void)
{
    enum { N = 20, K = 200 };
    struct dht_sim *s = new_sim(303);
    uint64_t v[K], keys, under;
    int n, *sorted;

    add_peers(s, N, 10);
    CHECK(converge(s));
    CHECK_EQ(put_keys(s, K, v), K);
    maintain(s);
    sorted = sorted_live(s, &n);
    for (int j = 0; j < DHT_REPLICAS; j++)
        dht_sim_leave(s, sorted[(4 + j) % n]);
    free(sorted);
    dht_sim_run_until(s, dht_sim_now(s) + 30000);
    CHECK_EQ(live_count(s), N - DHT_REPLICAS);
    CHECK(converge(s));
    maintain(s);
    CHECK_EQ(lost_keys(s, K, v, NULL), 0);
    dht_sim_key_census(s, &keys, &under);
    CHECK_EQ(keys, K);
    CHECK_EQ(under, 0);
    dht_sim_free(s);
}

/* A third of the ring leaves at the same moment (runs of R and more
 * adjacent leavers among them): every key is handed on (docs/core-bugs.md
 * #3). */
static void test_sim_mass_leave(void)
{
    enum { N = 60, K = 300 };
    struct dht_sim *s = new_sim(3131);
    uint64_t v[K], keys, under;
    int n, *sorted;

    add_peers(s, N, 20);
    CHECK(converge(s));
    CHECK_EQ(put_keys(s, K, v), K);
    maintain(s);
    sorted = sorted_live(s, &n);
    /* Two runs of 4 adjacent peers, then every third peer. */
    for (int j = 0; j < 4; j++) {
        dht_sim_leave(s, sorted[j]);
        dht_sim_leave(s, sorted[30 + j]);
    }
    for (int j = 6; j < 28; j += 3)
        dht_sim_leave(s, sorted[j]);
    for (int j = 36; j < n; j += 3)
        dht_sim_leave(s, sorted[j]);
    free(sorted);
    dht_sim_run_until(s, dht_sim_now(s) + 60000);
    CHECK(live_count(s) < N * 3 / 4);
    CHECK(converge(s));
    maintain(s);
    CHECK_EQ(lost_keys(s, K, v, NULL), 0);
    dht_sim_key_census(s, &keys, &under);
    CHECK_EQ(keys, K);
    CHECK_EQ(under, 0);
    dht_sim_free(s);
}

/* Crashed peers come back on their kept stores while the keys they hold
 * were overwritten: the ring converges and the newer versions win. */
static void test_sim_restart(void)
{
    enum { N = 20, K = 100 };
    struct dht_sim *s = new_sim(808);
    uint64_t v1[K], v2[K], keys, under;
    int down[3];

    add_peers(s, N, 10);
    CHECK(converge(s));
    CHECK_EQ(put_keys(s, K, v1), K);
    maintain(s);
    for (int j = 0; j < 3; j++) {
        down[j] = random_live(s);
        dht_sim_crash(s, down[j]);
        CHECK(converge(s));
    }
    maintain(s);
    CHECK_EQ(put_keys(s, K, v2), K);
    for (int k = 0; k < K; k++)
        CHECK(v2[k] > v1[k]);
    for (int j = 0; j < 3; j++) {
        uint64_t held = dht_sim_store_count(s, down[j]);
        CHECK(held > 0);
        dht_sim_restart(s, down[j]);
        /* The store survived the restart. */
        CHECK_EQ(dht_sim_store_count(s, down[j]), held);
    }
    CHECK_EQ(live_count(s), N);
    CHECK(converge(s));
    maintain(s);
    CHECK_EQ(lost_keys(s, K, v2, NULL), 0);
    dht_sim_key_census(s, &keys, &under);
    CHECK_EQ(keys, K);
    CHECK_EQ(under, 0);
    dht_sim_free(s);
}

/* Deleted keys stay deleted: a peer that crashed holding live copies and
 * comes back after the deletes must not resurrect them (tombstones win). */
static void test_sim_no_resurrection(void)
{
    enum { N = 15, K = 60 };
    struct dht_sim *s = new_sim(515);
    uint64_t v[K], keys, under;
    struct batch b = {0};
    struct opres r[K];
    int down[2];

    add_peers(s, N, 5);
    CHECK(converge(s));
    CHECK_EQ(put_keys(s, K, v), K);
    maintain(s);
    for (int j = 0; j < 2; j++) {
        down[j] = random_live(s);
        CHECK(dht_sim_store_count(s, down[j]) > 0);
        dht_sim_crash(s, down[j]);
    }
    CHECK(converge(s));
    maintain(s);
    for (int k = 0; k < K; k++)
        submit(s, &b, &r[k], DHT_OP_DELETE, k);
    wait_batch(s, &b);
    for (int k = 0; k < K; k++)
        CHECK(r[k].done && r[k].err == 0);
    maintain(s);
    for (int j = 0; j < 2; j++)
        dht_sim_restart(s, down[j]);
    CHECK(converge(s));
    maintain(s);
    maintain(s);
    for (int k = 0; k < K; k++)
        submit(s, &b, &r[k], DHT_OP_GET, k);
    wait_batch(s, &b);
    for (int k = 0; k < K; k++)
        if (r[k].err != -ENOENT) {
            printf("# key-%d came back: err %d version %llu\n", k, r[k].err,
                   (unsigned long long)r[k].version);
            CHECK(r[k].err == -ENOENT);
            break;
        }
    dht_sim_key_census(s, &keys, &under);
    CHECK_EQ(keys, 0);
    dht_sim_free(s);
}

static void add_cb(void *arg, const struct dht_result *res)
{
    int *pending = arg;

    CHECK_EQ(res->err, 0);
    (*pending)--;
}

static bool zero_cb(struct dht_sim *s, void *arg)
{
    (void)s;
    return *(int *)arg == 0;
}

struct members_ctx {
    int n, dup, bad; /* members seen, seen twice, not ours */
    bool *seen;      /* by member number */
    int *pending;
};

static void members_cb(void *arg, const struct dht_result *res)
{
    struct members_ctx *mc = arg;

    CHECK_EQ(res->err, 0);
    for (size_t i = 0; i < res->n_members; i++) {
        char buf[32];
        int m = -1;
        size_t len = res->members[i].len < 31 ? res->members[i].len : 31;
        memcpy(buf, res->members[i].data, len);
        buf[len] = '\0';
        if (sscanf(buf, "file-%d", &m) != 1 || m < 0 || m >= 150) {
            mc->bad++;
            continue;
        }
        mc->dup += mc->seen[m];
        mc->seen[m] = true;
        mc->n++;
    }
    (*mc->pending)--;
}

/* A directory-like set: 150 members added at once from random peers (the
 * set's primary crashes half way, after the first 75 were acknowledged)
 * all survive, none twice. */
static void test_sim_set_adds(void)
{
    enum { N = 20, M = 150 };
    struct dht_sim *s = new_sim(616);
    char member[32];
    int pending = 0, primary;
    struct members_ctx mc;
    struct dht_op op = {.kind = DHT_OP_ADD, .key = "dir:/x"};
    struct dht_id id;
    bool seen[M] = {false};

    add_peers(s, N, 5);
    CHECK(converge(s));
    for (int round = 0; round < 2; round++) {
        for (int m = round * M / 2; m < (round + 1) * M / 2; m++) {
            snprintf(member, sizeof member, "file-%d", m);
            op.value = member;
            op.len = strlen(member);
            pending++;
            CHECK_EQ(dht_sim_op(s, random_live(s), &op, add_cb, &pending), 0);
        }
        dht_sim_run_while(s, zero_cb, &pending, 50, dht_sim_now(s) + 60000);
        CHECK_EQ(pending, 0);
        if (round == 0) {
            dht_id_of("dir:/x", &id);
            struct dht_id best;
            primary = -1;
            for (int i = 0; i < N; i++) {
                struct dht_id d;
                dht_id_sub(&dht_sim_node(s, i)->id, &id, &d);
                if (dht_sim_alive(s, i) &&
                    (primary < 0 || dht_id_cmp(&d, &best) < 0)) {
                    best = d;
                    primary = i;
                }
            }
            dht_sim_crash(s, primary);
        }
    }
    CHECK(converge(s));
    maintain(s);
    /* MEMBERS: every member once. */
    op.kind = DHT_OP_MEMBERS;
    op.value = NULL;
    op.len = 0;
    mc = (struct members_ctx){.seen = seen, .pending = &pending};
    pending = 1;
    CHECK_EQ(dht_sim_op(s, random_live(s), &op, members_cb, &mc), 0);
    dht_sim_run_while(s, zero_cb, &pending, 50, dht_sim_now(s) + 60000);
    CHECK_EQ(pending, 0);
    CHECK_EQ(mc.bad, 0);
    CHECK_EQ(mc.dup, 0);
    CHECK_EQ(mc.n, M);
    dht_sim_free(s);
}

static void counter_cb(void *arg, const struct dht_result *res)
{
    char *buf = arg;
    size_t len = res->len < 30 ? res->len : 30;

    if (res->err == 0) {
        memcpy(buf, res->value, len);
        buf[len] = '\0';
    } else {
        snprintf(buf, 32, "err %d", res->err);
    }
    if (!buf[0])
        snprintf(buf, 32, "?");
}

static bool counter_read(struct dht_sim *s, void *arg)
{
    (void)s;
    return ((char *)arg)[0] != '\0';
}

/* Compare-and-set counter: clients read the counter and write value+1
 * with expected = the version read, retrying on -ESTALE. The primary
 * orders the writes, so no increment is lost, even when the primary
 * crashes half way. Clients chain their next operation from inside done
 * callbacks, which the simulator defers. */
struct cas_client {
    struct dht_sim *s;
    int left;    /* increments still to make */
    int pending; /* 1 while an op is in flight */
    int *succeeded;
    int errors;
    char val[32];
};

static void cas_get_cb(void *arg, const struct dht_result *res);

static void cas_start(struct cas_client *c)
{
    struct dht_op op = {.kind = DHT_OP_GET, .key = "counter"};

    c->pending = 1;
    if (dht_sim_op(c->s, random_live(c->s), &op, cas_get_cb, c) < 0)
        c->pending = 0;
}

static void cas_put_cb(void *arg, const struct dht_result *res)
{
    struct cas_client *c = arg;

    c->pending = 0;
    if (res->err == 0) {
        (*c->succeeded)++;
        c->left--;
    } else if (res->err != -ESTALE && res->err != -EEXIST) {
        c->errors++; /* e.g. a timeout across the crash: try again */
    }
    if (c->left > 0)
        cas_start(c);
}

static void cas_get_cb(void *arg, const struct dht_result *res)
{
    struct cas_client *c = arg;
    struct dht_op op = {.kind = DHT_OP_PUT, .key = "counter"};
    long n = 0;

    if (res->err == 0) {
        char buf[32];
        size_t len = res->len < 31 ? res->len : 31;
        memcpy(buf, res->value, len);
        buf[len] = '\0';
        n = strtol(buf, NULL, 10);
        op.expected = res->version;
    } else if (res->err == -ENOENT) {
        op.expected = 0; /* create */
    } else {
        c->errors++;
        cas_start(c);
        return;
    }
    snprintf(c->val, sizeof c->val, "%ld", n + 1);
    op.value = c->val;
    op.len = strlen(c->val);
    if (dht_sim_op(c->s, random_live(c->s), &op, cas_put_cb, c) < 0)
        c->pending = 0;
}

static bool cas_idle(struct dht_sim *s, void *arg)
{
    struct cas_client *c = arg;

    (void)s;
    for (int i = 0; i < 20; i++)
        if (c[i].left > 0 && c[i].pending)
            return false;
    return true;
}

static void cas_counter(bool crash)
{
    enum { N = 20, C = 20, EACH = 5 };
    struct dht_sim *s = new_sim(717);
    struct cas_client c[C];
    int succeeded = 0, errors = 0, primary = -1;
    struct batch b = {0};
    struct opres r;
    struct dht_id id, best, d;

    add_peers(s, N, 5);
    CHECK(converge(s));
    for (int i = 0; i < C; i++) {
        c[i] =
            (struct cas_client){.s = s, .left = EACH, .succeeded = &succeeded};
        cas_start(&c[i]);
    }
    /* Let about half the increments through, then crash the primary. */
    for (int t = 0; t < 100000 && succeeded < C * EACH / 2; t += 10)
        dht_sim_run_until(s, dht_sim_now(s) + 10);
    dht_id_of("counter", &id);
    for (int i = 0; i < N; i++) {
        dht_id_sub(&dht_sim_node(s, i)->id, &id, &d);
        if (dht_sim_alive(s, i) && (primary < 0 || dht_id_cmp(&d, &best) < 0)) {
            best = d;
            primary = i;
        }
    }
    if (crash)
        dht_sim_crash(s, primary);
    dht_sim_run_while(s, cas_idle, c, 100, dht_sim_now(s) + 300000);
    for (int i = 0; i < C; i++)
        errors += c[i].errors;
    printf("# %d increments, %d errors retried\n", succeeded, errors);
    CHECK_EQ(succeeded, C * EACH);
    /* The counter holds exactly the number of acknowledged increments. */
    memset(&r, 0, sizeof r);
    r.b = &b;
    b.outstanding = 1;
    {
        struct dht_op op = {.kind = DHT_OP_GET, .key = "counter"};
        char buf[32] = "";
        long n;
        CHECK_EQ(dht_sim_op(s, random_live(s), &op, counter_cb, buf), 0);
        dht_sim_run_while(s, counter_read, buf, 50, dht_sim_now(s) + 60000);
        n = strtol(buf, NULL, 10);
        /* Exactly: a write applied by a primary that crashed before
         * answering is retried with the same op id, and the new primary
         * (holding the replicated record) answers it as done instead of
         * applying it again or refusing it as stale (core-bugs #7). */
        (void)crash;
        CHECK_EQ(n, C * EACH);
    }
    dht_sim_free(s);
}

static void test_sim_cas_counter(void)
{
    cas_counter(false);
}

static void test_sim_cas_counter_crash(void)
{
    cas_counter(true);
}

/* Split the ring in two for ms of virtual time, heal, and expect one ring. */
static void partition_heal(uint64_t seed, uint64_t ms)
{
    enum { N = 30 };
    struct dht_sim *s = new_sim(seed);
    bool in_a[N];

    add_peers(s, N, 10);
    CHECK(converge(s));
    for (int i = 0; i < N; i++)
        in_a[i] = i % 2;
    dht_sim_partition(s, in_a);
    dht_sim_run_until(s, dht_sim_now(s) + ms);
    dht_sim_partition(s, NULL);
    CHECK(converge(s));
    CHECK_EQ(bad_lookups(s, 100, 1000, NULL), 0);
    dht_sim_free(s);
}

/* A blip shorter than failure detection. */
static void test_sim_partition_short(void)
{
    partition_heal(21, 1000);
    partition_heal(23, 2500);
}

/* Long enough for each side to drop the other from its lists. */
static void test_sim_partition_long(void)
{
    for (uint64_t seed = 22; seed < 26; seed++)
        partition_heal(seed, 20000 + 40000 * (seed - 22));
}

/* A lossy network still converges and serves keys. */
static void test_sim_lossy(void)
{
    struct dht_sim_opts o;
    struct dht_sim *s;
    uint64_t v[50];

    dht_sim_opts_default(&o);
    o.seed = 3;
    o.loss = 0.02;
    s = dht_sim_new(&o);
    add_peers(s, 20, 10);
    CHECK(converge(s));
    CHECK(put_keys(s, 50, v) >= 45);
    maintain(s);
    CHECK_EQ(lost_keys(s, 50, v, NULL), 0);
    dht_sim_free(s);
}

/* A fingerprint of a run: time, traffic, and every peer's state. */
static uint64_t run_fingerprint(uint64_t seed)
{
    struct dht_sim *s = new_sim(seed);
    uint64_t h = 1469598103934665603ull, v[40];

    add_peers(s, 25, 5);
    converge(s);
    put_keys(s, 40, v);
    dht_sim_crash(s, 3);
    dht_sim_crash(s, 17);
    dht_sim_run_until(s, dht_sim_now(s) + 20000);
    for (int k = 0; k < 40; k++)
        h = (h ^ v[k]) * 1099511628211ull;
    h = (h ^ dht_sim_now(s)) * 1099511628211ull;
    h = (h ^ dht_sim_messages(s)) * 1099511628211ull;
    for (int i = 0; i < dht_sim_npeers(s); i++) {
        const struct dht_node *list;
        int len =
            dht_sim_alive(s, i) ? dht_core_succs(dht_sim_core(s, i), &list) : 0;
        h = (h ^ dht_sim_store_count(s, i)) * 1099511628211ull;
        for (int j = 0; j < len; j++)
            h = (h ^ list[j].id.b[0] ^ (uint64_t)list[j].id.b[1] << 8) *
                1099511628211ull;
    }
    dht_sim_free(s);
    return h;
}

static void test_sim_deterministic(void)
{
    uint64_t a = run_fingerprint(7), b = run_fingerprint(7);
    uint64_t c = run_fingerprint(8);

    CHECK(a == b);
    CHECK(a != c);
}

/* Run the chordsim next to this test binary (build/chordsim) with args;
 * its stdout into buf. Returns its exit status, or -1 if it is not there. */
static int run_chordsim(const char *args, char *buf, size_t len)
{
    char exe[4096], cmd[8192];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    char *slash;
    FILE *f;
    size_t got;

    if (n <= 0)
        return -1;
    exe[n] = '\0';
    /* build/tests/test_sim -> build/chordsim */
    if (!(slash = strrchr(exe, '/')))
        return -1;
    *slash = '\0';
    if (!(slash = strrchr(exe, '/')))
        return -1;
    *slash = '\0';
    snprintf(cmd, sizeof cmd, "%s/chordsim", exe);
    if (access(cmd, X_OK) != 0)
        return -1;
    snprintf(cmd, sizeof cmd, "%s/chordsim %s 2>/dev/null", exe, args);
    if (!(f = popen(cmd, "r")))
        return -1;
    got = fread(buf, 1, len - 1, f);
    buf[got] = '\0';
    return pclose(f);
}

/* chordsim: the same seed gives byte-identical --deterministic output,
 * which leaves out wall_ms and rss_bytes; another seed differs. */
static void test_sim_chordsim_deterministic(void)
{
    static char a[8192], b[8192], c[8192], d[8192];
    const char *base = "--peers 60 --keys 200 --lookups 300 --replicas 3 "
                       "--crash 0.1 --churn 60 --duration 20 --json";
    char args[512];

    snprintf(args, sizeof args, "%s --seed 5 --deterministic", base);
    if (run_chordsim(args, a, sizeof a) == -1) {
        printf("# chordsim not built: skipped\n");
        return;
    }
    CHECK_EQ(run_chordsim(args, b, sizeof b), 0);
    CHECK(strlen(a) > 100);
    CHECK(strcmp(a, b) == 0);
    CHECK(strstr(a, "\"hops_mean\"") && strstr(a, "\"keys_lost\""));
    CHECK(!strstr(a, "wall_ms") && !strstr(a, "rss_bytes"));
    snprintf(args, sizeof args, "%s --seed 6 --deterministic", base);
    CHECK_EQ(run_chordsim(args, c, sizeof c), 0);
    CHECK(strcmp(a, c) != 0);
    snprintf(args, sizeof args, "%s --seed 5", base);
    CHECK_EQ(run_chordsim(args, d, sizeof d), 0);
    CHECK(strstr(d, "\"wall_ms\"") && strstr(d, "\"rss_bytes\""));
    /* Bad options are refused with status 2. */
    CHECK(run_chordsim("--peers nope", d, sizeof d) != 0);
}

int main(int argc, char **argv)
{
    /* Optional argument: run only tests whose name contains it. */
    const char *only = argc > 1 ? argv[1] : NULL;

#define T(fn)                                                                  \
    do {                                                                       \
        if (!only || strstr(#fn, only))                                        \
            RUN(fn);                                                           \
    } while (0)
    dht_log_set_level(DHT_LOG_ERROR);
    T(test_sim_oracle_sees_crash);
    T(test_sim_single_peer);
    T(test_sim_deterministic);
    T(test_sim_chordsim_deterministic);
    T(test_sim_concurrent_joins);
    T(test_sim_crash_adjacent);
    T(test_sim_crash_one_by_one);
    T(test_sim_leaves);
    T(test_sim_adjacent_leaves);
    T(test_sim_mass_leave);
    T(test_sim_restart);
    T(test_sim_no_resurrection);
    T(test_sim_set_adds);
    T(test_sim_cas_counter);
    T(test_sim_cas_counter_crash);
    T(test_sim_joiner_loses_successor);
    T(test_sim_churn_lookups);
    T(test_sim_heavy_churn);
    T(test_sim_partition_short);
    T(test_sim_partition_long);
    T(test_sim_lossy);
    T(test_sim_fingers);
    T(test_sim_burst_join);
    T(test_sim_join_1000);
    return DONE();
}
