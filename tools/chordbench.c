/*
 * tools/chordbench.c - end-to-end DHT benchmark through the real driver:
 * peers in one process on 127.0.0.1 (dht_peer_start, LMDB stores in
 * temporary directories), several client threads doing put then get of
 * fixed-size values through the blocking client API. Reports ops/s and
 * latency p50/p99 for a ring of N peers (default 3) and for a ring of one
 * peer (the baseline), and the ratio between the two.
 *
 *   chordbench [-n OPS] [-t THREADS] [-s BYTES] [-p PEERS] [-r REPLICAS]
 */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dht/dht.h"

#define MAX_PEERS 16

struct bench_cfg {
    int ops; /* per phase, over all threads */
    int threads;
    size_t size;
    int npeers;
    int replicas;
};

struct phase_result {
    double ops_per_s;
    double p50_us, p99_us;
    int errors;
};

struct worker {
    pthread_t th;
    int idx;
    int n;                     /* ops of this worker */
    struct dht_peer *put_peer; /* puts go through this peer */
    struct dht_peer *get_peer; /* gets through another one */
    const struct bench_cfg *cfg;
    bool do_get;
    double *lat_us; /* n latencies */
    int errors;
};

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char key[64];
    char *val = malloc(w->cfg->size);

    memset(val, 'a' + w->idx % 26, w->cfg->size);
    for (int i = 0; i < w->n; i++) {
        uint64_t t0 = now_us();
        int rc;
        snprintf(key, sizeof key, "bench:%d:%d", w->idx, i);
        if (w->do_get) {
            void *got = NULL;
            size_t len = 0;
            rc = dht_get(w->get_peer, key, &got, &len, NULL);
            if (rc == 0 && len != w->cfg->size)
                rc = -EIO;
            free(got);
        } else {
            rc = dht_put(w->put_peer, key, val, w->cfg->size, DHT_ANY_VERSION,
                         NULL);
        }
        if (rc != 0)
            w->errors++;
        w->lat_us[i] = (double)(now_us() - t0);
    }
    free(val);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static void run_phase(struct dht_peer **peers, int npeers,
                      const struct bench_cfg *cfg, bool do_get,
                      struct phase_result *out)
{
    struct worker *w = calloc((size_t)cfg->threads, sizeof *w);
    double *all = malloc((size_t)cfg->ops * sizeof *all);
    int per = cfg->ops / cfg->threads, total = 0;
    uint64_t t0, t1;

    for (int i = 0; i < cfg->threads; i++) {
        w[i].idx = i;
        w[i].n = per + (i < cfg->ops % cfg->threads ? 1 : 0);
        w[i].put_peer = peers[i % npeers];
        w[i].get_peer = peers[(i + 1) % npeers];
        w[i].cfg = cfg;
        w[i].do_get = do_get;
        w[i].lat_us = all + total;
        total += w[i].n;
    }
    t0 = now_us();
    for (int i = 0; i < cfg->threads; i++)
        pthread_create(&w[i].th, NULL, worker_main, &w[i]);
    out->errors = 0;
    for (int i = 0; i < cfg->threads; i++) {
        pthread_join(w[i].th, NULL);
        out->errors += w[i].errors;
    }
    t1 = now_us();
    qsort(all, (size_t)total, sizeof *all, cmp_double);
    out->ops_per_s = (double)total * 1e6 / (double)(t1 - t0);
    out->p50_us = all[total / 2];
    out->p99_us = all[(size_t)total * 99 / 100];
    free(all);
    free(w);
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int ring_lines(struct dht_peer *p)
{
    char *text = NULL;
    int n = 0;

    if (dht_info(p, "ring", &text) < 0)
        return -1;
    for (const char *s = text; *s; s++)
        n += *s == '\n';
    free(text);
    return n;
}

/* Start npeers peers, run both phases, stop them. 0 or -1. */
static int run_ring(int npeers, const struct bench_cfg *cfg,
                    struct phase_result *put, struct phase_result *get)
{
    struct dht_peer *peers[MAX_PEERS] = {0};
    char dirs[MAX_PEERS][64];
    int rc = -1, started = 0;

    for (int i = 0; i < npeers; i++) {
        struct dht_peer_opts o;
        char *msg = NULL;

        snprintf(dirs[i], sizeof dirs[i], "%s/chordbench.XXXXXX",
                 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(dirs[i])) {
            perror("mkdtemp");
            goto out;
        }
        memset(&o, 0, sizeof o);
        dht_config_default(&o.cfg);
        snprintf(o.cfg.network, sizeof o.cfg.network, "bench");
        o.cfg.replicas = cfg->replicas;
        o.cfg.stabilize_ms = 200;
        o.cfg.fix_fingers_ms = 200;
        snprintf(o.listen, sizeof o.listen, "127.0.0.1:0");
        if (i > 0)
            snprintf(o.bootstrap, sizeof o.bootstrap, "%s",
                     dht_peer_addr(peers[0]));
        o.data_dir = dirs[i];
        started = i + 1;
        if (dht_peer_start(&o, &peers[i], &msg) < 0) {
            fprintf(stderr, "chordbench: peer %d: %s\n", i,
                    msg ? msg : "start failed");
            free(msg);
            goto out;
        }
    }
    /* Measure a settled ring: every peer sees all of them. */
    for (int tries = 0; tries < 300; tries++) {
        bool ok = true;
        for (int i = 0; i < npeers; i++)
            if (ring_lines(peers[i]) != npeers)
                ok = false;
        if (ok)
            break;
        usleep(100000);
    }
    usleep(500000);
    run_phase(peers, npeers, cfg, false, put);
    run_phase(peers, npeers, cfg, true, get);
    rc = 0;
out:
    for (int i = started - 1; i >= 0; i--) {
        if (peers[i])
            dht_peer_stop(peers[i], false);
        nftw(dirs[i], rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    return rc;
}

static void print_row(int npeers, const char *op, const struct phase_result *r)
{
    printf("%-6d %-4s %10.0f %10.0f %10.0f %7d\n", npeers, op, r->ops_per_s,
           r->p50_us, r->p99_us, r->errors);
}

static void usage(void)
{
    fprintf(stderr, "usage: chordbench [-n OPS] [-t THREADS] [-s BYTES] "
                    "[-p PEERS] [-r REPLICAS]\n");
}

int main(int argc, char **argv)
{
    struct bench_cfg cfg = {
        .ops = 20000, .threads = 8, .size = 1024, .npeers = 3, .replicas = 3};
    struct phase_result base_put, base_get, ring_put, ring_get;
    int c;

    while ((c = getopt(argc, argv, "n:t:s:p:r:h")) != -1) {
        switch (c) {
        case 'n':
            cfg.ops = atoi(optarg);
            break;
        case 't':
            cfg.threads = atoi(optarg);
            break;
        case 's':
            cfg.size = (size_t)atol(optarg);
            break;
        case 'p':
            cfg.npeers = atoi(optarg);
            break;
        case 'r':
            cfg.replicas = atoi(optarg);
            break;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (cfg.ops < 1 || cfg.threads < 1 || cfg.threads > 256 || cfg.size < 1 ||
        cfg.size > (8u << 20) || cfg.npeers < 1 || cfg.npeers > MAX_PEERS ||
        cfg.replicas < 1) {
        usage();
        return 2;
    }
    if (cfg.ops < cfg.threads)
        cfg.threads = cfg.ops;
    dht_log_set_level(DHT_LOG_ERROR);

    printf("# chordbench: %d puts then %d gets of %zu-byte values, %d client "
           "threads, replicas %d, loopback TCP, LMDB stores\n",
           cfg.ops, cfg.ops, cfg.size, cfg.threads, cfg.replicas);
    printf("%-6s %-4s %10s %10s %10s %7s\n", "peers", "op", "ops/s", "p50_us",
           "p99_us", "errors");
    if (run_ring(1, &cfg, &base_put, &base_get) < 0)
        return 1;
    print_row(1, "put", &base_put);
    print_row(1, "get", &base_get);
    fflush(stdout);
    if (run_ring(cfg.npeers, &cfg, &ring_put, &ring_get) < 0)
        return 1;
    print_row(cfg.npeers, "put", &ring_put);
    print_row(cfg.npeers, "get", &ring_get);
    printf("ratio %d-peer/1-peer: put ops/s %.2f, get ops/s %.2f, "
           "put p50 %.2f, get p50 %.2f\n",
           cfg.npeers, ring_put.ops_per_s / base_put.ops_per_s,
           ring_get.ops_per_s / base_get.ops_per_s,
           ring_put.p50_us / base_put.p50_us,
           ring_get.p50_us / base_get.p50_us);
    return base_put.errors + base_get.errors + ring_put.errors +
                       ring_get.errors >
                   0
               ? 1
               : 0;
}
