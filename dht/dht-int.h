/*
 * dht/dht-int.h - interfaces between the modules of dht/ (and the unit
 * tests). Not for fs/ or tools.
 *
 *   core.c   the sans-I/O Chord protocol core (struct dht)
 *   store.c  the local store: LMDB or in-memory (struct dht_store)
 *   net.c    the real driver: epoll loop thread, TCP, timers (struct dht_peer)
 *   client.c blocking/async client API over net.c
 *   sim.c    the deterministic simulator driver (struct dht_sim)
 *   id.c     identifiers; log.c logging
 */
#ifndef CHORDFS_DHT_INT_H
#define CHORDFS_DHT_INT_H

#include "dht/dht.h"
#include "proto/wire.h"

/* ------------------------------------------------------------------ store */

/*
 * The local store maps (id, key) -> packed Chord__Record. Entries iterate in
 * ring order of id (then key), so a range of the ring is a contiguous scan.
 * Not thread-safe: owned by the loop thread (or the simulator).
 */
struct dht_store;

/* LMDB under dir (created if missing). sync_each: fsync every commit;
 * otherwise commits reach the OS at once (surviving kill -9 of the process)
 * and are fsynced by dht_store_sync(). Returns 0 or -errno. */
int dht_store_open(const char *dir, bool sync_each, struct dht_store **out);
/* In-memory store (tests, simulator). */
struct dht_store *dht_store_new_mem(void);
void dht_store_free(struct dht_store *s);

/* *val_out malloc'd, caller free()s. Returns 0 or -ENOENT / -EIO. */
int dht_store_get(struct dht_store *s, const struct dht_id *id, const char *key,
                  void **val_out, size_t *len_out);
/* Insert or replace; durable per the open mode before returning. 0/-errno */
int dht_store_put(struct dht_store *s, const struct dht_id *id, const char *key,
                  const void *val, size_t len);
/* 0 or -ENOENT. */
int dht_store_del(struct dht_store *s, const struct dht_id *id,
                  const char *key);

/* Called per entry; return non-zero to stop (that value is returned by the
 * iteration). Arguments are borrowed for the call. The callback must not
 * modify the store. */
typedef int dht_store_iter_fn(void *arg, const struct dht_id *id,
                              const char *key, const void *val, size_t len);
/* Every entry with id in the ring interval (lo, hi] (lo == hi: all), in
 * ring order starting after lo. */
int dht_store_range(struct dht_store *s, const struct dht_id *lo,
                    const struct dht_id *hi, dht_store_iter_fn *fn, void *arg);
uint64_t dht_store_count(struct dht_store *s);
uint64_t dht_store_bytes(struct dht_store *s); /* keys + values */
/* fsync outstanding commits (no-op for memory / sync_each). */
int dht_store_sync(struct dht_store *s);

/* ------------------------------------------------------------------ core */

/*
 * The protocol core is sans-I/O: it is given received payloads and the
 * current time, and emits payloads through struct dht_io. It has no sockets,
 * clocks or threads; every call is made from one thread (the driver's).
 */
struct dht;

struct dht_io {
    void *arg;
    /* Send a payload (an encoded Envelope, without the length header) to
     * the peer at addr, over that peer's connection. 0 or -errno. A failure
     * may also be reported later through dht_core_peer_down(). */
    int (*send)(void *arg, const char *addr, const uint8_t *payload,
                size_t len);
    /* Send a reply payload back on the connection a request came in on. */
    int (*reply)(void *arg, uint64_t conn, const uint8_t *payload, size_t len);
    /* The core asks its driver to stop (a client's LeaveRequest done). */
    void (*stopped)(void *arg);
};

/* Takes ownership of store. cfg is copied. */
struct dht *dht_core_new(const struct dht_config *cfg, const struct dht_io *io,
                         struct dht_store *store);
void dht_core_free(struct dht *d);

/* Start a new ring of one. */
void dht_core_create(struct dht *d, uint64_t now_ms);
/* Join through the peer at bootstrap; done(arg, err, msg) runs once
 * joined (err 0) or on failure (msg: why, borrowed). */
typedef void dht_join_fn(void *arg, int err, const char *msg);
int dht_core_join(struct dht *d, const char *bootstrap, uint64_t now_ms,
                  dht_join_fn *done, void *arg);
/* Graceful leave: hand keys to the successor, tell neighbours. done runs
 * when finished (err 0) or gave up; the core is then inert. */
int dht_core_leave(struct dht *d, uint64_t now_ms, dht_join_fn *done,
                   void *arg);

/* A received payload (without length header) that arrived on connection
 * conn (driver's handle, echoed in io->reply). Bad input is logged and
 * dropped or answered BAD_REQUEST; never fatal. */
void dht_core_recv(struct dht *d, uint64_t conn, const uint8_t *payload,
                   size_t len, uint64_t now_ms);
/* Run due timers and expire RPCs. Returns ms until it wants the next tick
 * (>= 1). */
int dht_core_tick(struct dht *d, uint64_t now_ms);
/* The driver lost (or could not open) the connection to addr: fail the
 * pending RPCs to it now rather than at their timeout. */
void dht_core_peer_down(struct dht *d, const char *addr, uint64_t now_ms);

/* Start an operation (struct dht_op, borrowed). done runs exactly once,
 * from a later dht_core_* call or before this returns. 0 or -errno (then
 * done is not called). */
int dht_core_op(struct dht *d, const struct dht_op *op, uint64_t now_ms,
                dht_done_fn *done, void *arg);
/* Text for /.chord/<what> (see dht_info); "ring" is an op instead.
 * *text_out malloc'd. 0 or -ENOENT for an unknown name. */
int dht_core_info(struct dht *d, const char *what, uint64_t now_ms,
                  char **text_out);

/* Introspection (drivers, simulator oracles, tests). */
const struct dht_config *dht_core_config(const struct dht *d);
const struct dht_node *dht_core_self(const struct dht *d);
/* Predecessor or NULL. */
const struct dht_node *dht_core_pred(const struct dht *d);
/* Successor list: returns its length, *list_out borrowed. */
int dht_core_succs(const struct dht *d, const struct dht_node **list_out);
/* Finger i (0..159) or NULL if unset. */
const struct dht_node *dht_core_finger(const struct dht *d, int i);
struct dht_store *dht_core_store(struct dht *d);
bool dht_core_joined(const struct dht *d);
/* Check a peer's Hello: 0, or -EPROTO / -EACCES with *why_out for another
 * protocol version / network (a per-thread buffer, valid until this thread
 * calls again). */
int dht_core_check_hello(const struct dht *d, const Chord__Hello *h,
                         const char **why_out);

/* Counters shown in /.chord/stats. */
struct dht_stats {
    uint64_t lookups, lookup_hops, lookup_failures;
    uint64_t rpcs_sent, rpcs_recv, rpc_timeouts, rpc_errors;
    uint64_t bytes_sent, bytes_recv;
    uint64_t ops, op_errors;
    uint64_t replicated, handed_off, dropped, repaired;
    uint64_t bad_messages;
};
const struct dht_stats *dht_core_stats(const struct dht *d);

/* Simulator (additive): peer i's current core, for tests to inspect; NULL
 * for an unknown index. Borrowed; replaced by dht_sim_restart(). */
struct dht *dht_sim_core(struct dht_sim *s, int i);

/* Tiny helpers shared inside dht/. */
#define xmalloc  wire_xmalloc
#define xcalloc  wire_xcalloc
#define xrealloc wire_xrealloc
#define xstrdup  wire_xstrdup

#endif
