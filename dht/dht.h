/*
 * dht/dht.h - the Chord peer: public API.
 *
 * Three faces:
 *  - identifiers (SHA-1 ids and ring interval arithmetic) and logging;
 *  - a running peer (struct dht_peer: the protocol core driven by the net
 *    driver's event-loop thread) and its client API, blocking with a timeout
 *    (Open Chord's Chord) or asynchronous with a callback (AsynChord). fs/ and
 *    tools use only this;
 *  - the deterministic simulator (struct dht_sim): many cores in one
 *    process on virtual time, with oracles, used by chordsim and the tests.
 *
 * Errors are 0 (or a count) on success and -errno on failure.
 */
#ifndef CHORDFS_DHT_H
#define CHORDFS_DHT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DHT_ID_LEN      20
#define DHT_ADDR_MAX    64
#define DHT_NETWORK_MAX 64
#define DHT_ID_BITS     160
#define DHT_SUCC_LEN    8          /* default successor list length */
#define DHT_REPLICAS    3          /* default replication factor */
#define DHT_ANY_VERSION UINT64_MAX /* put/delete without compare-and-set */

/* ------------------------------------------------------------------ ids */

struct dht_id {
    uint8_t b[DHT_ID_LEN]; /* big-endian 160-bit number */
};

/* A peer: its id and advertised "host:port". addr[0] == 0 means none. */
struct dht_node {
    struct dht_id id;
    char addr[DHT_ADDR_MAX];
};

/* SHA-1 of data (OpenSSL EVP). */
void dht_id_hash(const void *data, size_t len, struct dht_id *out);
/* SHA-1 of a NUL-terminated string, e.g. a key or "host:port". */
void dht_id_of(const char *s, struct dht_id *out);
int dht_id_cmp(const struct dht_id *a, const struct dht_id *b);
bool dht_id_eq(const struct dht_id *a, const struct dht_id *b);
/* x in (a, b) on the ring; a == b means every id except a. */
bool dht_id_in_oo(const struct dht_id *x, const struct dht_id *a,
                  const struct dht_id *b);
/* x in (a, b] on the ring; a == b means the whole ring. */
bool dht_id_in_oc(const struct dht_id *x, const struct dht_id *a,
                  const struct dht_id *b);
/* out = a + 2^i mod 2^160, 0 <= i < 160. */
void dht_id_add_pow2(const struct dht_id *a, int i, struct dht_id *out);
/* out = b - a mod 2^160 (clockwise distance from a to b). */
void dht_id_sub(const struct dht_id *b, const struct dht_id *a,
                struct dht_id *out);
/* Fraction of the ring, in [0, 1), that the id stands at. */
double dht_id_frac(const struct dht_id *a);
/* 40 lowercase hex digits + NUL. */
void dht_id_hex(const struct dht_id *a, char out[2 * DHT_ID_LEN + 1]);
/* Parse 40 hex digits; returns 0 or -EINVAL. */
int dht_id_from_hex(const char *s, struct dht_id *out);

/* -------------------------------------------------------------- logging */

enum dht_log_level {
    DHT_LOG_ERROR = 0,
    DHT_LOG_WARN = 1,
    DHT_LOG_INFO = 2,
    DHT_LOG_DEBUG = 3,
};

/* Process-wide; default DHT_LOG_WARN. Thread-safe. */
void dht_log_set_level(int level);
int dht_log_get_level(void);
/* Log to stderr, or to syslog once dht_log_use_syslog(true). */
void dht_log_use_syslog(bool on);
/* In the simulator, prefix lines with virtual time instead of wall time. */
void dht_log_set_clock(uint64_t (*now_ms)(void));
/* One line: "<time> <level> <module> [<node>] message". node may be NULL. */
void dht_log(int level, const char *module, const char *node, const char *fmt,
             ...) __attribute__((format(printf, 4, 5)));

/* The level is checked before any argument is formatted. */
#define dht_log_at(lvl, mod, node, ...)                                        \
    do {                                                                       \
        if ((lvl) <= dht_log_get_level())                                      \
            dht_log((lvl), (mod), (node), __VA_ARGS__);                        \
    } while (0)
#define log_error(mod, node, ...)                                              \
    dht_log_at(DHT_LOG_ERROR, mod, node, __VA_ARGS__)
#define log_warn(mod, node, ...)                                               \
    dht_log_at(DHT_LOG_WARN, mod, node, __VA_ARGS__)
#define log_info(mod, node, ...)                                               \
    dht_log_at(DHT_LOG_INFO, mod, node, __VA_ARGS__)
#define log_debug(mod, node, ...)                                              \
    dht_log_at(DHT_LOG_DEBUG, mod, node, __VA_ARGS__)

/* ----------------------------------------------------------- configuration */

struct dht_config {
    char addr[DHT_ADDR_MAX];       /* advertised "host:port" */
    struct dht_id id;              /* used when has_id */
    bool has_id;                   /* else id = SHA-1(addr) */
    char network[DHT_NETWORK_MAX]; /* ring name, default "chordfs" */
    int replicas;                  /* copies of each key, default 3 */
    int succ_len;                  /* successor list length, default 8 */
    int stabilize_ms;              /* periods, each jittered by jitter_ms */
    int fix_fingers_ms;
    int check_pred_ms;
    int maintain_ms; /* re-replication / drop pass */
    int jitter_ms;
    int rpc_timeout_ms; /* one RPC; failure detection */
    int op_timeout_ms;  /* one client operation, end to end */
    uint64_t seed;      /* core's PRNG (jitter); sim: per peer */
};

/* Fill c with the defaults above (addr and id empty). */
void dht_config_default(struct dht_config *c);

/* ------------------------------------------------------- operation results */

struct dht_blob {
    void *data;
    size_t len;
};

enum dht_op_kind {
    DHT_OP_GET, /* single record: value + version */
    DHT_OP_PUT, /* compare-and-set when expected != DHT_ANY_VERSION */
    DHT_OP_DELETE,
    DHT_OP_ADD,     /* set member add (Open Chord insert) */
    DHT_OP_REMOVE,  /* set member remove */
    DHT_OP_MEMBERS, /* whole set */
    DHT_OP_LOOKUP,  /* primary and replicas of a key, no storage access */
    DHT_OP_RING,    /* walk the ring through successors: text listing */
};

/* A request. Everything is borrowed for the duration of the submitting call. */
struct dht_op {
    enum dht_op_kind kind;
    const char *key;   /* NUL-terminated, < 4352 bytes */
    const void *value; /* PUT value, ADD/REMOVE member */
    size_t len;
    uint64_t expected; /* PUT/DELETE: DHT_ANY_VERSION, 0 = create */
    int timeout_ms;    /* 0: config op_timeout_ms */
};

/*
 * A result, borrowed by the callback for the duration of the call only:
 * copy what you keep.
 *   err: 0, -ENOENT (no such key), -EEXIST (create over a live record),
 *        -ESTALE (version mismatch; version holds the current one),
 *        -ETIMEDOUT, -EHOSTUNREACH (ring unreachable), -EINVAL, -EFBIG, -EIO.
 */
struct dht_result {
    int err;
    uint64_t version;  /* record version (after a write) */
    const void *value; /* GET */
    size_t len;
    const struct dht_blob *members; /* MEMBERS */
    size_t n_members;
    struct dht_node primary;         /* who served it (or LOOKUP answer) */
    const struct dht_node *replicas; /* LOOKUP: primary's successors */
    int n_replicas;
    int hops;         /* lookup RPCs it took */
    const char *text; /* RING: one peer a line */
};

typedef void dht_done_fn(void *arg, const struct dht_result *res);

/* --------------------------------------------------------- a running peer */

struct dht_peer;

struct dht_peer_opts {
    struct dht_config cfg;        /* cfg.addr: advertised address */
    char listen[DHT_ADDR_MAX];    /* "host:port" to bind; port 0 = any */
    char bootstrap[DHT_ADDR_MAX]; /* empty: create a new ring */
    const char *data_dir;         /* NULL: in-memory store (tests only) */
    bool sync_each_write;         /* fsync every store commit */
};

/*
 * Start a peer: open the store, bind, start the loop thread, then create a
 * ring or join through bootstrap (waiting up to cfg.op_timeout_ms for the
 * join). Returns 0 with *out set, or -errno; on a refused join *err_msg_out
 * (if not NULL) receives a malloc'd explanation the caller free()s.
 */
int dht_peer_start(const struct dht_peer_opts *opts, struct dht_peer **out,
                   char **err_msg_out);
/*
 * Stop the peer. leave: hand keys on and tell the neighbours first (bounded
 * by op_timeout_ms). Joins the loop thread and frees everything.
 */
void dht_peer_stop(struct dht_peer *p, bool leave);
/* Blocks until the peer has been asked to leave by a client (chordctl
 * leave) or dht_peer_stop(); returns 0. Used by the daemon's main thread. */
int dht_peer_wait(struct dht_peer *p, int timeout_ms);
bool dht_peer_stopping(struct dht_peer *p);
/* Actual bound/advertised address (after port 0 was resolved). */
const char *dht_peer_addr(const struct dht_peer *p);
int dht_peer_op_timeout(const struct dht_peer *p);

/*
 * Client API. Every call may be made from any thread except the loop thread
 * (where only dht_op_async is allowed). Blocking calls wait at most
 * timeout (op_timeout_ms) and return -ETIMEDOUT past it.
 */
/* *val_out malloc'd (NUL-terminated for convenience, not counted in len);
 * caller free()s. version_out may be NULL. */
int dht_get(struct dht_peer *p, const char *key, void **val_out,
            size_t *len_out, uint64_t *version_out);
/* expected: DHT_ANY_VERSION, 0 (create only), or the version read. */
int dht_put(struct dht_peer *p, const char *key, const void *val, size_t len,
            uint64_t expected, uint64_t *version_out);
int dht_delete(struct dht_peer *p, const char *key, uint64_t expected);
int dht_add(struct dht_peer *p, const char *key, const void *val, size_t len);
int dht_remove(struct dht_peer *p, const char *key, const void *val,
               size_t len);
/* *members_out: array of n blobs; free with dht_blobs_free(). A key that
 * holds no set (never added to, or deleted) is -ENOENT; so is removing a
 * member from such a key. Removing a non-member of a live set is 0. */
int dht_members(struct dht_peer *p, const char *key,
                struct dht_blob **members_out, size_t *n_out,
                uint64_t *version_out);
void dht_blobs_free(struct dht_blob *b, size_t n);
/* Primary and up to max replicas (successors of the primary). */
int dht_lookup(struct dht_peer *p, const char *key, struct dht_node *primary,
               struct dht_node *replicas, int max, int *n_replicas_out);
/*
 * Text about this peer, generated on the loop thread: what is one of "id",
 * "address", "network", "predecessor", "successor", "successors", "fingers",
 * "keys", "stats", "config", "ring" (walks the ring; may take time). Formats
 * are documented in README.md. *text_out malloc'd; caller free()s.
 */
int dht_info(struct dht_peer *p, const char *what, char **text_out);
/* Space used by this peer's store (bytes, keys). */
int dht_usage(struct dht_peer *p, uint64_t *bytes_out, uint64_t *keys_out);
/* Asynchronous form of any operation: done runs on the loop thread. */
int dht_op_async(struct dht_peer *p, const struct dht_op *op, dht_done_fn *done,
                 void *arg);

/* ------------------------------------------------------------ simulator */

struct dht_sim;

struct dht_sim_opts {
    uint64_t seed;
    int latency_min_ms; /* one-way, uniform in [min, max] */
    int latency_max_ms;
    double loss; /* probability a message is dropped */
    int replicas;
    int succ_len;
    struct dht_config base; /* periods and timeouts for every peer */
};

void dht_sim_opts_default(struct dht_sim_opts *o);
struct dht_sim *dht_sim_new(const struct dht_sim_opts *o);
void dht_sim_free(struct dht_sim *s);

/* Virtual time. */
uint64_t dht_sim_now(const struct dht_sim *s);
/* Run events until virtual time t (ms). Returns events processed. */
uint64_t dht_sim_run_until(struct dht_sim *s, uint64_t t);
/* Run until idle or until fn(arg) returns true, checking every step_ms;
 * returns true if fn became true before deadline (virtual ms). */
bool dht_sim_run_while(struct dht_sim *s,
                       bool (*done)(struct dht_sim *, void *), void *arg,
                       uint64_t step_ms, uint64_t deadline_ms);

/* Peers are numbered from 0 in the order added. The first creates the
 * ring; later ones join through a random live peer. Returns the index. */
int dht_sim_add_peer(struct dht_sim *s);
/* Added by the simulator's author (additive): like dht_sim_add_peer(), but
 * the peer's node id is id instead of SHA-1 of its address, so a test can
 * place peers (for example many in one gap of the ring). */
int dht_sim_add_peer_id(struct dht_sim *s, const struct dht_id *id);
int dht_sim_npeers(const struct dht_sim *s);
bool dht_sim_alive(const struct dht_sim *s, int i);
/* Crash (silent: messages to it vanish), restart with its store kept
 * (rejoins), and graceful leave. */
void dht_sim_crash(struct dht_sim *s, int i);
void dht_sim_restart(struct dht_sim *s, int i);
void dht_sim_leave(struct dht_sim *s, int i);
/* Partition: peers in group a cannot reach peers not in a (and back).
 * groups: array of npeers flags; NULL heals. */
void dht_sim_partition(struct dht_sim *s, const bool *in_a);
const struct dht_node *dht_sim_node(const struct dht_sim *s, int i);

/* Submit an operation from peer i; done runs in virtual time. */
int dht_sim_op(struct dht_sim *s, int i, const struct dht_op *op,
               dht_done_fn *done, void *arg);

/* Oracles. */
/* True when every live peer's successor list and predecessor are the ideal
 * ones for the current set of live peers. why_out (may be NULL) gets a
 * static description of the first violation. */
bool dht_sim_ring_ok(struct dht_sim *s, const char **why_out);
/* True when every live peer's finger i is the true successor of id+2^i. */
bool dht_sim_fingers_ok(struct dht_sim *s);
/* Keys: how many distinct keys exist in any live store (latest version),
 * how many are on fewer than min(R, live) of their ideal successors. */
void dht_sim_key_census(struct dht_sim *s, uint64_t *keys_out,
                        uint64_t *under_replicated_out);
/* Whether peer i's store holds key (any non-tombstone version). */
bool dht_sim_holds(struct dht_sim *s, int i, const char *key);
/* Added by the simulator's author (additive): the version of key in peer
 * i's store (tombstones included), or 0 if it holds none. */
uint64_t dht_sim_key_version(struct dht_sim *s, int i, const char *key);
/* Store keys held by peer i. */
uint64_t dht_sim_store_count(struct dht_sim *s, int i);
/* Messages delivered so far. */
uint64_t dht_sim_messages(const struct dht_sim *s);

#endif
