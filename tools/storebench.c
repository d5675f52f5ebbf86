/*
 * tools/storebench.c - puts per second of the LMDB store (dht/store.c) with
 * an fsync per commit (sync_each=true, the durable mode) and without
 * (sync_each=false: commits reach the OS at once, one fsync at the end),
 * and the ratio between them. Run by bench/store.sh.
 *
 *   storebench [-n puts] [-s value-bytes] [-d dir]
 *
 * Each mode writes n distinct keys into a fresh directory under dir (default
 * a new one under $TMPDIR or /tmp), which is removed afterwards. The time
 * of the sync_each=false run includes its final dht_store_sync().
 */
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dht/dht-int.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int rm_one(const char *path, const struct stat *st, int flag,
                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Put n values of size bytes into a new store at dir; ops/s or -errno. */
static double run(const char *dir, bool sync_each, long n, size_t size)
{
    struct dht_store *s;
    char key[64];
    uint8_t *val = malloc(size ? size : 1);
    double t0, dt;
    int rc;

    if (!val)
        return -ENOMEM;
    for (size_t i = 0; i < size; i++)
        val[i] = (uint8_t)(i * 7);
    rc = dht_store_open(dir, sync_each, &s);
    if (rc < 0) {
        free(val);
        return rc;
    }
    t0 = now_s();
    for (long i = 0; i < n && rc == 0; i++) {
        struct dht_id id;

        snprintf(key, sizeof key, "data:storebench:%ld", i);
        dht_id_of(key, &id);
        memcpy(val, &i, size < sizeof i ? size : sizeof i);
        rc = dht_store_put(s, &id, key, val, size);
    }
    if (rc == 0)
        rc = dht_store_sync(s);
    dt = now_s() - t0;
    dht_store_free(s);
    free(val);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (rc < 0)
        return rc;
    return dt > 0 ? (double)n / dt : 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: storebench [-n puts] [-s value-bytes] [-d dir]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    long n = 10000;
    long size = 4096;
    const char *base = NULL;
    char root[256], dir[300];
    double rate[2];
    int c;

    while ((c = getopt(argc, argv, "n:s:d:h")) != -1) {
        switch (c) {
        case 'n':
            n = strtol(optarg, NULL, 10);
            break;
        case 's':
            size = strtol(optarg, NULL, 10);
            break;
        case 'd':
            base = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc || n <= 0 || size < 0 || size > (16l << 20))
        usage();
    if (!base) {
        base = getenv("TMPDIR");
        if (!base || !*base)
            base = "/tmp";
    }
    snprintf(root, sizeof root, "%s/storebench-XXXXXX", base);
    if (!mkdtemp(root)) {
        fprintf(stderr, "storebench: %s: %s\n", root, strerror(errno));
        return 1;
    }
    for (int mode = 0; mode < 2; mode++) {
        bool sync_each = mode == 0;

        snprintf(dir, sizeof dir, "%s/%s", root, sync_each ? "sync" : "nosync");
        rate[mode] = run(dir, sync_each, n, (size_t)size);
        if (rate[mode] < 0) {
            fprintf(stderr, "storebench: %s: %s\n", dir,
                    strerror((int)-rate[mode]));
            nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
            return 1;
        }
        printf("store put sync_each=%-5s %ld x %ld B: %10.0f ops/s\n",
               sync_each ? "true" : "false", n, size, rate[mode]);
    }
    printf("store put ratio nosync/sync: %.1f\n",
           rate[0] > 0 ? rate[1] / rate[0] : 0.0);
    nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
