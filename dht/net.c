/*
 * dht/net.c - the real driver: one event-loop thread that owns the protocol
 * core (struct dht), its store and every socket, plus the client API that
 * other threads use to talk to it (struct dht_peer).
 *
 * Threads and ownership
 * ---------------------
 * The loop thread alone touches the core, the store, the connections and
 * the epoll set. Other threads (FUSE workers, the daemon's main thread,
 * tests, benchmarks) build a struct net_req, append it to p->queue under
 * p->lock and wake the loop through an eventfd. A blocking caller then waits
 * on the request's condition variable with a deadline. Requests are
 * refcounted: the caller holds one reference and the loop holds one until
 * the core has completed the operation, so a caller that times out and
 * walks away never leaves the loop writing into freed memory. Whoever drops
 * the last reference frees the request and whatever results it carries.
 *
 * Connections
 * -----------
 * Every frame is a 4-byte big-endian length and one packed Envelope. The
 * first frame each way is a Hello. Outgoing connections send theirs at once
 * and hold back the core's frames until the other side's Hello arrives;
 * incoming ones wait for the remote Hello, check it with
 * dht_core_check_hello() and answer with our own Hello or with REFUSED and
 * a readable reason, then close. There is at most one connection per remote
 * address in the send map (p->conns with in_map set): an incoming
 * connection whose Hello advertised address X serves sends to X when we do
 * not already have one, so two peers normally share one TCP connection.
 * Requests and replies are multiplexed on it by req_id, which the core
 * matches; the driver only moves payloads.
 *
 * Closing is deferred: conn_close() shuts the socket and moves the
 * connection to p->dead, and the loop reports dht_core_peer_down() and frees
 * the structure only between events, never from inside a core callback
 * (the core may be in the middle of io->send when a write fails).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dht/dht-int.h"

#define NET_MAX_QUEUED  (64u << 20) /* bytes queued on one connection */
#define NET_MAX_CONNS   4096
#define NET_HELLO_MS    10000 /* an incoming peer must say hello by then */
#define NET_SYNC_MS     1000  /* store flush period */
#define NET_READ_CHUNK  65536
#define NET_GRACE_MS    500 /* a blocking call waits op timeout + this */
#define NET_REFUSED_MAX 256

/* ------------------------------------------------------------ structures */

/* A growable byte buffer consumed from the front. */
struct net_buf {
    uint8_t *data;
    size_t len; /* bytes in data, from 0 */
    size_t off; /* first unconsumed byte */
    size_t cap;
};

struct net_conn {
    struct net_conn *next;
    uint64_t id; /* handle given to the core (io->reply) */
    int fd;
    char addr[DHT_ADDR_MAX]; /* remote's advertised address; "" if unknown */
    char peer_desc[DHT_ADDR_MAX + 8]; /* for logs: addr or socket peer */
    bool outgoing;
    bool connecting; /* non-blocking connect still in progress */
    bool hello_done; /* both hellos exchanged: frames flow to the core */
    bool client;     /* a chordctl-like client, never in the map */
    bool in_map;     /* the connection used for sends to addr */
    bool closing;    /* flush outbuf, then close (after a refusal) */
    bool dead;
    bool want_out; /* EPOLLOUT registered */
    bool dirty;    /* on p->dirty: frames queued since the last flush */
    struct net_conn *dirty_next;
    uint64_t opened_ms;
    struct wire_reader rd;
    struct net_buf out;  /* frames ready for the socket */
    struct net_buf held; /* frames waiting for the handshake */
};

enum net_req_kind {
    REQ_OP,    /* a struct dht_op for the core */
    REQ_INFO,  /* dht_core_info */
    REQ_USAGE, /* store bytes/count */
    REQ_START, /* create the ring or join it */
    REQ_LEAVE, /* graceful leave */
};

struct net_req {
    struct net_req *next;              /* p->queue, protected by p->lock */
    struct net_req *fl_prev, *fl_next; /* in-flight list, loop thread only */
    struct dht_peer *p;
    int refs;     /* protected by p->lock */
    bool done;    /* protected by p->lock */
    bool waiting; /* a blocking caller holds a reference */
    pthread_cond_t cond;
    enum net_req_kind kind;

    /* Input, owned copies. */
    struct dht_op op;
    char *key;
    void *value;
    char *what;      /* REQ_INFO name, REQ_START bootstrap ("" = create) */
    dht_done_fn *cb; /* async: the user's callback */
    void *cb_arg;

    /* Output, owned, written by the loop before done is set. */
    int err;
    uint64_t version;
    void *val;
    size_t len;
    struct dht_blob *members;
    size_t n_members;
    struct dht_node primary;
    struct dht_node *replicas;
    int n_replicas;
    int hops;
    char *text; /* RING/INFO text, START/LEAVE message */
    uint64_t bytes, keys;
};

/* A remote address that refused our hello, and why. */
struct net_refusal {
    char addr[DHT_ADDR_MAX];
    char why[256];
};

struct dht_peer {
    /* Set before the thread starts, then read-only. */
    struct dht_config cfg;
    char addr[DHT_ADDR_MAX];
    char node_tag[16]; /* short id for log lines */
    bool sync_each;
    int epfd, listen_fd, evfd;
    pthread_t thread;
    bool thread_started;

    /* Loop thread only. */
    struct dht *core;
    struct net_conn *conns;
    struct net_conn *dead;
    struct net_conn *dirty; /* connections to flush before sleeping */
    uint64_t next_conn_id;
    int n_conns;
    uint64_t next_sync_ms;
    struct net_req *inflight;
    struct net_refusal refused[8];
    int n_refused;
    bool left;     /* leave done (by us or a client's LeaveRequest) */
    bool shutdown; /* being freed: the core may no longer send */

    /* Shared, protected by lock. */
    pthread_mutex_t lock;
    pthread_cond_t cond; /* stop_requested changes */
    struct net_req *queue, *queue_tail;
    bool accepting; /* the loop takes requests */
    int callers;    /* blocking callers inside the client API */
    bool stop_requested;
    atomic_bool quit; /* the loop exits */
};

/* Markers for epoll data of the two non-connection descriptors. */
static char net_listen_tag, net_event_tag;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ----------------------------------------------------------- byte buffers */

static void buf_append(struct net_buf *b, const void *data, size_t len)
{
    if (b->off > 0 && b->off == b->len) {
        b->off = 0;
        b->len = 0;
    }
    if (b->len + len > b->cap) {
        if (b->off > 0) {
            memmove(b->data, b->data + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        if (b->len + len > b->cap) {
            size_t cap = b->cap ? b->cap : 4096;
            while (cap < b->len + len)
                cap *= 2;
            b->data = xrealloc(b->data, cap);
            b->cap = cap;
        }
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static size_t buf_pending(const struct net_buf *b)
{
    return b->len - b->off;
}

static void buf_free(struct net_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------- addresses */

/*
 * Split "host:port" (host may be "[v6]"). Returns 0 or -EINVAL.
 */
static int split_addr(const char *addr, char *host, size_t hostlen, char *port,
                      size_t portlen)
{
    const char *colon = strrchr(addr, ':');
    const char *h = addr;
    size_t hl;

    if (!colon || colon == addr || colon[1] == 0)
        return -EINVAL;
    hl = (size_t)(colon - addr);
    if (addr[0] == '[' && colon[-1] == ']') {
        h = addr + 1;
        hl -= 2;
    }
    if (hl + 1 > hostlen || strlen(colon + 1) + 1 > portlen)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = 0;
    strcpy(port, colon + 1);
    for (const char *c = port; *c; c++)
        if (*c < '0' || *c > '9')
            return -EINVAL;
    if (atoi(port) > 65535)
        return -EINVAL;
    return 0;
}

static void sockaddr_desc(const struct sockaddr_storage *ss, char *out,
                          size_t n)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
        port = ntohs(s->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host);
        port = ntohs(s->sin6_port);
    }
    snprintf(out, n, "%s:%d", host, port);
}

/*
 * The address to advertise when bound to a wildcard address without
 * --advertise: the first IPv4 address of an interface that is up and not a
 * loopback (in getifaddrs() order). Returns 0 or -EADDRNOTAVAIL.
 */
static int pick_host_addr(char *out, size_t n)
{
    struct ifaddrs *ifa, *i;
    int rc = -EADDRNOTAVAIL;

    if (getifaddrs(&ifa) < 0)
        return -errno;
    for (i = ifa; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET)
            continue;
        if (!(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
            continue;
        const struct sockaddr_in *s = (const struct sockaddr_in *)i->ifa_addr;
        if (inet_ntop(AF_INET, &s->sin_addr, out, (socklen_t)n)) {
            rc = 0;
            break;
        }
    }
    freeifaddrs(ifa);
    return rc;
}

/* ------------------------------------------------------------ connections */

static struct net_conn *conn_by_id(struct dht_peer *p, uint64_t id)
{
    for (struct net_conn *c = p->conns; c; c = c->next)
        if (c->id == id && !c->dead)
            return c;
    return NULL;
}

static struct net_conn *conn_by_addr(struct dht_peer *p, const char *addr)
{
    for (struct net_conn *c = p->conns; c; c = c->next)
        if (c->in_map && !c->dead && strcmp(c->addr, addr) == 0)
            return c;
    return NULL;
}

static void conn_set_events(struct dht_peer *p, struct net_conn *c)
{
    bool want = c->connecting || buf_pending(&c->out) > 0;
    struct epoll_event ev = {0};

    if (want == c->want_out)
        return;
    ev.events = EPOLLIN | (want ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->want_out = want;
}

/* Close now; the peer_down report and the free happen in reap_dead(). */
static void conn_close(struct dht_peer *p, struct net_conn *c, const char *why)
{
    struct net_conn **pp;

    if (c->dead)
        return;
    if (why)
        log_info("net", p->node_tag, "closing connection %" PRIu64 " to %s: %s",
                 c->id, c->peer_desc, why);
    c->dead = true;
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    for (pp = &p->conns; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    p->n_conns--;
    c->next = p->dead;
    p->dead = c;
}

static void conn_free(struct net_conn *c)
{
    wire_reader_fini(&c->rd);
    buf_free(&c->out);
    buf_free(&c->held);
    free(c);
}

/* Write as much of c->out as the socket takes. */
static void conn_flush(struct dht_peer *p, struct net_conn *c)
{
    while (!c->dead && !c->connecting && buf_pending(&c->out) > 0) {
        ssize_t n = send(c->fd, c->out.data + c->out.off, buf_pending(&c->out),
                         MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_close(p, c, strerror(errno));
            return;
        }
        c->out.off += (size_t)n;
    }
    if (c->dead)
        return;
    if (buf_pending(&c->out) == 0) {
        c->out.off = c->out.len = 0;
        if (c->closing) {
            conn_close(p, c, NULL);
            return;
        }
    }
    conn_set_events(p, c);
}

/* Queue one frame (header + payload). held: before the handshake ends. */
static int conn_queue(struct dht_peer *p, struct net_conn *c,
                      const uint8_t *payload, size_t len, bool flush)
{
    uint8_t hdr[WIRE_HDR_LEN];
    struct net_buf *b;

    if (c->dead || c->closing)
        return -ENOTCONN;
    if (len > WIRE_MAX_FRAME)
        return -EMSGSIZE;
    if (buf_pending(&c->out) + buf_pending(&c->held) + len > NET_MAX_QUEUED) {
        log_warn("net", p->node_tag,
                 "more than %u MiB queued for %s: closing the connection",
                 NET_MAX_QUEUED >> 20, c->peer_desc);
        conn_close(p, c, NULL);
        return -ENOBUFS;
    }
    hdr[0] = (uint8_t)(len >> 24);
    hdr[1] = (uint8_t)(len >> 16);
    hdr[2] = (uint8_t)(len >> 8);
    hdr[3] = (uint8_t)len;
    b = c->hello_done || !c->outgoing ? &c->out : &c->held;
    buf_append(b, hdr, sizeof hdr);
    buf_append(b, payload, len);
    /* Frames the core emits in one pass go out in one write: the flush
     * happens in flush_dirty() before the loop sleeps or frees anything. */
    if (flush && b == &c->out && !c->dirty) {
        c->dirty = true;
        c->dirty_next = p->dirty;
        p->dirty = c;
    }
    return 0;
}

/* Encode env and queue it on c, ahead of any held frames. */
static int conn_queue_env(struct dht_peer *p, struct net_conn *c,
                          const Chord__Envelope *env)
{
    uint8_t *frame;
    size_t flen;
    int rc = wire_encode(env, &frame, &flen);

    if (rc < 0)
        return rc;
    if (buf_pending(&c->out) + flen > NET_MAX_QUEUED) {
        free(frame);
        conn_close(p, c, "write queue full");
        return -ENOBUFS;
    }
    buf_append(&c->out, frame, flen);
    free(frame);
    return 0;
}

static void fill_hello(struct dht_peer *p, Chord__Hello *h)
{
    const struct dht_node *self = dht_core_self(p->core);

    chord__hello__init(h);
    h->version = WIRE_PROTOCOL_VERSION;
    h->network = p->cfg.network;
    h->id.data = (uint8_t *)self->id.b;
    h->id.len = DHT_ID_LEN;
    h->addr = (char *)self->addr;
    h->client = false;
}

static int send_hello(struct dht_peer *p, struct net_conn *c, bool reply,
                      uint64_t req_id, Chord__Status st, const char *error)
{
    Chord__Envelope env;
    Chord__Hello h;

    chord__envelope__init(&env);
    fill_hello(p, &h);
    env.req_id = req_id;
    env.reply = reply;
    env.status = st;
    env.error = (char *)(error ? error : "");
    env.body_case = CHORD__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    return conn_queue_env(p, c, &env);
}

static struct net_conn *conn_new(struct dht_peer *p, int fd, bool outgoing)
{
    struct net_conn *c = xcalloc(1, sizeof *c);
    struct epoll_event ev = {0};
    int one = 1;

    c->fd = fd;
    c->id = ++p->next_conn_id;
    c->outgoing = outgoing;
    c->opened_ms = mono_ms();
    wire_reader_init(&c->rd);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ev.events = EPOLLIN;
    ev.data.ptr = c;
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        conn_free(c);
        return NULL;
    }
    c->next = p->conns;
    p->conns = c;
    p->n_conns++;
    return c;
}

/* Open an outgoing connection to addr and queue our hello. */
static struct net_conn *conn_connect(struct dht_peer *p, const char *addr,
                                     int *err_out)
{
    char host[DHT_ADDR_MAX], port[8];
    struct addrinfo hints = {0}, *ai = NULL;
    struct net_conn *c;
    int fd, rc, one = 1;

    *err_out = 0;
    if (split_addr(addr, host, sizeof host, port, sizeof port) < 0) {
        *err_out = -EINVAL;
        return NULL;
    }
    if (p->n_conns >= NET_MAX_CONNS) {
        *err_out = -EMFILE;
        return NULL;
    }
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0 || !ai) {
        log_warn("net", p->node_tag, "cannot resolve %s: %s", addr,
                 gai_strerror(rc));
        *err_out = -EHOSTUNREACH;
        return NULL;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err_out = -errno;
        freeaddrinfo(ai);
        return NULL;
    }
    /* Our ephemeral port may linger in TIME_WAIT after the connection;
     * with SO_REUSEADDR on both sides it does not stop a peer from binding
     * that port as its listening port later (tests start many peers). */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc < 0 && errno != EINPROGRESS) {
        *err_out = -errno;
        log_debug("net", p->node_tag, "connect to %s: %s", addr,
                  strerror(errno));
        close(fd);
        return NULL;
    }
    c = conn_new(p, fd, true);
    if (!c) {
        *err_out = -EIO;
        return NULL;
    }
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    snprintf(c->peer_desc, sizeof c->peer_desc, "%s", addr);
    c->in_map = true;
    c->connecting = rc < 0;
    if (send_hello(p, c, false, 0, CHORD__STATUS__OK, NULL) < 0) {
        conn_close(p, c, "cannot encode hello");
        *err_out = -EIO;
        return NULL;
    }
    conn_set_events(p, c);
    log_debug("net", p->node_tag, "connecting to %s (connection %" PRIu64 ")",
              addr, c->id);
    return c;
}

static void remember_refusal(struct dht_peer *p, const char *addr,
                             const char *why)
{
    int i;

    for (i = 0; i < p->n_refused; i++)
        if (strcmp(p->refused[i].addr, addr) == 0)
            break;
    if (i == p->n_refused) {
        if (p->n_refused < (int)(sizeof p->refused / sizeof p->refused[0]))
            p->n_refused++;
        else
            i = 0;
    }
    snprintf(p->refused[i].addr, sizeof p->refused[i].addr, "%s", addr);
    snprintf(p->refused[i].why, sizeof p->refused[i].why, "%s", why);
}

static const char *refusal_of(struct dht_peer *p, const char *addr)
{
    for (int i = 0; i < p->n_refused; i++)
        if (strcmp(p->refused[i].addr, addr) == 0)
            return p->refused[i].why;
    return NULL;
}

/* The remote's answer to our hello on an outgoing connection. */
static void handle_hello_reply(struct dht_peer *p, struct net_conn *c,
                               const Chord__Envelope *env)
{
    const char *why = NULL;

    if (env->status != CHORD__STATUS__OK) {
        const char *msg = env->error && env->error[0]
                              ? env->error
                              : wire_status_name(env->status);
        log_error("net", p->node_tag, "peer %s refused us: %s", c->addr, msg);
        remember_refusal(p, c->addr, msg);
        conn_close(p, c, NULL);
        return;
    }
    if (env->body_case != CHORD__ENVELOPE__BODY_HELLO) {
        log_warn("net", p->node_tag,
                 "peer %s answered our hello with something else", c->addr);
        conn_close(p, c, NULL);
        return;
    }
    if (dht_core_check_hello(p->core, env->hello, &why) < 0) {
        log_error("net", p->node_tag, "refusing peer %s: %s", c->addr, why);
        remember_refusal(p, c->addr, why);
        conn_close(p, c, NULL);
        return;
    }
    c->hello_done = true;
    log_debug("net", p->node_tag, "connected to %s (connection %" PRIu64 ")",
              c->addr, c->id);
    if (buf_pending(&c->held) > 0) {
        buf_append(&c->out, c->held.data + c->held.off, buf_pending(&c->held));
        buf_free(&c->held);
    }
    conn_flush(p, c);
}

/* The first frame of an incoming connection. */
static void handle_hello_request(struct dht_peer *p, struct net_conn *c,
                                 const Chord__Envelope *env)
{
    const Chord__Hello *h = env->hello;
    const char *why = NULL;
    char msg[256];
    int rc;

    if (env->reply || env->body_case != CHORD__ENVELOPE__BODY_HELLO) {
        log_warn("net", p->node_tag,
                 "%s sent a message before its hello: closing", c->peer_desc);
        conn_close(p, c, NULL);
        return;
    }
    if (h->client && h->version == WIRE_PROTOCOL_VERSION &&
        (!h->network || !h->network[0])) {
        rc = 0; /* a client that does not care about the network name */
    } else {
        rc = dht_core_check_hello(p->core, h, &why);
    }
    if (rc < 0) {
        snprintf(msg, sizeof msg, "%s", why ? why : "hello refused");
        log_warn("net", p->node_tag, "refusing %s %s: %s",
                 h->client ? "client" : "peer",
                 h->addr && h->addr[0] ? h->addr : c->peer_desc, msg);
        send_hello(p, c, true, env->req_id, CHORD__STATUS__REFUSED, msg);
        c->closing = true;
        conn_flush(p, c);
        return;
    }
    c->client = h->client;
    if (!h->client && h->addr && h->addr[0]) {
        snprintf(c->addr, sizeof c->addr, "%s", h->addr);
        snprintf(c->peer_desc, sizeof c->peer_desc, "%s", h->addr);
        if (!conn_by_addr(p, c->addr))
            c->in_map = true;
    }
    c->hello_done = true;
    log_debug("net", p->node_tag, "hello from %s %s (connection %" PRIu64 ")",
              h->client ? "client" : "peer", c->peer_desc, c->id);
    if (send_hello(p, c, true, env->req_id, CHORD__STATUS__OK, NULL) == 0)
        conn_flush(p, c);
}

static void conn_handle_frame(struct dht_peer *p, struct net_conn *c,
                              const uint8_t *payload, size_t len)
{
    Chord__Envelope *env = NULL;
    int rc;

    if (c->hello_done) {
        dht_core_recv(p->core, c->id, payload, len, mono_ms());
        return;
    }
    rc = wire_decode(payload, len, &env);
    if (rc < 0) {
        log_warn("net", p->node_tag,
                 "undecodable first frame (%zu bytes) from %s: closing", len,
                 c->peer_desc);
        conn_close(p, c, NULL);
        return;
    }
    if (c->outgoing)
        handle_hello_reply(p, c, env);
    else
        handle_hello_request(p, c, env);
    wire_msg_free(env);
}

static void conn_readable(struct dht_peer *p, struct net_conn *c)
{
    uint8_t buf[NET_READ_CHUNK];

    for (int rounds = 0; rounds < 16 && !c->dead && !c->closing; rounds++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_close(p, c, strerror(errno));
            return;
        }
        if (n == 0) {
            conn_close(p, c, "closed by the other side");
            return;
        }
        wire_reader_feed(&c->rd, buf, (size_t)n);
        for (;;) {
            const uint8_t *payload;
            size_t len;
            int rc = wire_reader_next(&c->rd, &payload, &len);
            if (rc == 0)
                break;
            if (rc < 0) {
                log_warn("net", p->node_tag,
                         "%s announced a frame over %u bytes: closing",
                         c->peer_desc, WIRE_MAX_FRAME);
                conn_close(p, c, NULL);
                return;
            }
            conn_handle_frame(p, c, payload, len);
            if (c->dead || c->closing)
                return;
        }
        if ((size_t)n < sizeof buf)
            return;
    }
}

static void conn_writable(struct dht_peer *p, struct net_conn *c)
{
    if (c->connecting) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            log_debug("net", p->node_tag, "connect to %s: %s", c->addr,
                      strerror(err));
            conn_close(p, c, NULL);
            return;
        }
        c->connecting = false;
    }
    conn_flush(p, c);
}

static void accept_all(struct dht_peer *p)
{
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(p->listen_fd, (struct sockaddr *)&ss, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct net_conn *c;

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                log_warn("net", p->node_tag, "accept: %s", strerror(errno));
            return;
        }
        if (p->n_conns >= NET_MAX_CONNS) {
            log_warn("net", p->node_tag, "too many connections: refusing one");
            close(fd);
            continue;
        }
        c = conn_new(p, fd, false);
        if (!c)
            continue;
        sockaddr_desc(&ss, c->peer_desc, sizeof c->peer_desc);
        log_debug("net", p->node_tag, "accepted %s (connection %" PRIu64 ")",
                  c->peer_desc, c->id);
    }
}

/* Write out every connection that got frames since the last call. Must run
 * before reap_dead() frees closed connections that may still be listed. */
static void flush_dirty(struct dht_peer *p)
{
    while (p->dirty) {
        struct net_conn *c = p->dirty;
        p->dirty = c->dirty_next;
        c->dirty = false;
        c->dirty_next = NULL;
        if (!c->dead)
            conn_flush(p, c);
    }
}

/* Report closed connections to the core and free them. Loop thread, never
 * from inside a core callback. */
static void reap_dead(struct dht_peer *p)
{
    /* Only what is dead now: a core that reacts to peer_down by sending to
     * the same dead address again gets its answer next round, after epoll,
     * instead of spinning here. */
    struct net_conn *list;

    flush_dirty(p);
    list = p->dead;
    p->dead = NULL;
    while (list) {
        struct net_conn *c = list;
        list = c->next;
        if (c->in_map && c->addr[0] && !conn_by_addr(p, c->addr)) {
            log_debug("net", p->node_tag, "peer %s down", c->addr);
            dht_core_peer_down(p->core, c->addr, mono_ms());
        }
        conn_free(c);
    }
    flush_dirty(p);
}

/* Close incoming connections that never said hello. */
static void expire_handshakes(struct dht_peer *p, uint64_t now)
{
    struct net_conn *c, *next;

    for (c = p->conns; c; c = next) {
        next = c->next;
        if (!c->hello_done && now > c->opened_ms + NET_HELLO_MS) {
            log_warn("net", p->node_tag,
                     "%s did not complete its hello in %d ms: closing",
                     c->peer_desc, NET_HELLO_MS);
            conn_close(p, c, NULL);
        }
    }
}

/* ------------------------------------------------------------ io for core */

static int io_send(void *arg, const char *addr, const uint8_t *payload,
                   size_t len)
{
    struct dht_peer *p = arg;
    struct net_conn *c;
    int err;

    if (p->shutdown)
        return -ESHUTDOWN;
    c = conn_by_addr(p, addr);
    if (!c) {
        c = conn_connect(p, addr, &err);
        if (!c) {
            /* Also report it, in case the core waits for peer_down. A fake
             * dead entry carries the address to reap_dead(). */
            struct net_conn *d = xcalloc(1, sizeof *d);
            wire_reader_init(&d->rd);
            snprintf(d->addr, sizeof d->addr, "%s", addr);
            d->in_map = true;
            d->dead = true;
            d->next = p->dead;
            p->dead = d;
            return err;
        }
    }
    return conn_queue(p, c, payload, len, true);
}

static int io_reply(void *arg, uint64_t conn, const uint8_t *payload,
                    size_t len)
{
    struct dht_peer *p = arg;
    struct net_conn *c;

    if (p->shutdown)
        return -ESHUTDOWN;
    c = conn_by_id(p, conn);
    if (!c)
        return -ENOTCONN;
    return conn_queue(p, c, payload, len, true);
}

static void io_stopped(void *arg)
{
    struct dht_peer *p = arg;

    log_info("net", p->node_tag, "asked to leave: stopping");
    p->left = true;
    pthread_mutex_lock(&p->lock);
    p->stop_requested = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* --------------------------------------------------------------- requests */

static struct net_req *req_new(struct dht_peer *p, enum net_req_kind kind,
                               bool waiting)
{
    struct net_req *r = xcalloc(1, sizeof *r);
    pthread_condattr_t ca;

    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cond, &ca);
    pthread_condattr_destroy(&ca);
    r->p = p;
    r->kind = kind;
    r->waiting = waiting;
    r->refs = waiting ? 2 : 1;
    return r;
}

static void req_free(struct net_req *r)
{
    pthread_cond_destroy(&r->cond);
    free(r->key);
    free(r->value);
    free(r->what);
    free(r->val);
    dht_blobs_free(r->members, r->n_members);
    free(r->replicas);
    free(r->text);
    free(r);
}

static void req_unref(struct net_req *r)
{
    struct dht_peer *p = r->p;
    bool last;

    pthread_mutex_lock(&p->lock);
    last = --r->refs == 0;
    pthread_mutex_unlock(&p->lock);
    if (last)
        req_free(r);
}

static void caller_leave_locked(struct dht_peer *p)
{
    if (--p->callers == 0)
        pthread_cond_broadcast(&p->cond);
}

/*
 * Caller side: drop the blocking caller's reference and leave the API. p is
 * not touched after the unlock: dht_peer_stop() may free it as soon as the
 * last caller has left.
 */
static void req_release(struct net_req *r)
{
    struct dht_peer *p = r->p;
    bool last;

    pthread_mutex_lock(&p->lock);
    last = --r->refs == 0;
    caller_leave_locked(p);
    pthread_mutex_unlock(&p->lock);
    if (last)
        req_free(r);
}

/* Loop side: the result fields are filled; wake the waiter, drop our ref. */
static void req_complete(struct net_req *r)
{
    struct dht_peer *p = r->p;

    if (r->fl_prev || r->fl_next || p->inflight == r) {
        if (r->fl_prev)
            r->fl_prev->fl_next = r->fl_next;
        else
            p->inflight = r->fl_next;
        if (r->fl_next)
            r->fl_next->fl_prev = r->fl_prev;
        r->fl_prev = r->fl_next = NULL;
    }
    pthread_mutex_lock(&p->lock);
    r->done = true;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&p->lock);
    req_unref(r);
}

static void req_track(struct net_req *r)
{
    struct dht_peer *p = r->p;

    r->fl_prev = NULL;
    r->fl_next = p->inflight;
    if (p->inflight)
        p->inflight->fl_prev = r;
    p->inflight = r;
}

/* Copy the result the core lends us into the request. */
static void op_done(void *arg, const struct dht_result *res)
{
    struct net_req *r = arg;

    r->err = res->err;
    r->version = res->version;
    r->hops = res->hops;
    r->primary = res->primary;
    if (res->value) {
        r->val = xmalloc(res->len + 1);
        memcpy(r->val, res->value, res->len);
        ((char *)r->val)[res->len] = 0;
        r->len = res->len;
    }
    if (res->members && res->n_members > 0) {
        r->members = xcalloc(res->n_members, sizeof *r->members);
        for (size_t i = 0; i < res->n_members; i++) {
            r->members[i].data = xmalloc(res->members[i].len + 1);
            memcpy(r->members[i].data, res->members[i].data,
                   res->members[i].len);
            ((char *)r->members[i].data)[res->members[i].len] = 0;
            r->members[i].len = res->members[i].len;
        }
        r->n_members = res->n_members;
    }
    if (res->replicas && res->n_replicas > 0) {
        r->replicas = xcalloc((size_t)res->n_replicas, sizeof *r->replicas);
        memcpy(r->replicas, res->replicas,
               (size_t)res->n_replicas * sizeof *r->replicas);
        r->n_replicas = res->n_replicas;
    }
    if (res->text)
        r->text = xstrdup(res->text);
    req_complete(r);
}

static void join_done(void *arg, int err, const char *msg)
{
    struct net_req *r = arg;
    struct dht_peer *p = r->p;
    const char *why = NULL;
    char buf[512];

    if (err != 0 && r->what && r->what[0]) {
        why = refusal_of(p, r->what);
        /* The core may have spelled the bootstrap address differently:
         * during a join the bootstrap is the only peer we talked to. */
        if (!why && p->n_refused > 0)
            why = p->refused[p->n_refused - 1].why;
    }
    if (why) {
        r->err = -ECONNREFUSED;
        snprintf(buf, sizeof buf, "bootstrap %s refused us: %s", r->what, why);
        r->text = xstrdup(buf);
    } else {
        r->err = err;
        if (err != 0) {
            /* The core's message names the bootstrap already. */
            if (msg && msg[0])
                snprintf(buf, sizeof buf, "%s", msg);
            else
                snprintf(buf, sizeof buf, "cannot join through %s: %s", r->what,
                         strerror(-err));
            r->text = xstrdup(buf);
        }
    }
    req_complete(r);
}

static void leave_done(void *arg, int err, const char *msg)
{
    struct net_req *r = arg;

    r->err = err;
    if (err != 0 && msg)
        r->text = xstrdup(msg);
    if (err == 0)
        r->p->left = true;
    req_complete(r);
}

static void run_request(struct dht_peer *p, struct net_req *r)
{
    uint64_t now = mono_ms();
    int rc;

    switch (r->kind) {
    case REQ_OP:
        if (r->cb) {
            rc = dht_core_op(p->core, &r->op, now, r->cb, r->cb_arg);
            if (rc < 0) {
                struct dht_result res = {.err = rc};
                r->cb(r->cb_arg, &res);
            }
            req_unref(r);
            return;
        }
        req_track(r);
        rc = dht_core_op(p->core, &r->op, now, op_done, r);
        if (rc < 0) {
            r->err = rc;
            req_complete(r);
        }
        return;
    case REQ_INFO:
        r->err = dht_core_info(p->core, r->what, now, &r->text);
        req_complete(r);
        return;
    case REQ_USAGE: {
        struct dht_store *s = dht_core_store(p->core);
        r->bytes = dht_store_bytes(s);
        r->keys = dht_store_count(s);
        r->err = 0;
        req_complete(r);
        return;
    }
    case REQ_START:
        if (!r->what[0]) {
            dht_core_create(p->core, now);
            r->err = 0;
            req_complete(r);
            return;
        }
        req_track(r);
        rc = dht_core_join(p->core, r->what, now, join_done, r);
        if (rc < 0) {
            join_done(r, rc, NULL);
        }
        return;
    case REQ_LEAVE:
        if (p->left || !dht_core_joined(p->core)) {
            r->err = 0;
            req_complete(r);
            return;
        }
        req_track(r);
        rc = dht_core_leave(p->core, now, leave_done, r);
        if (rc < 0) {
            r->err = rc;
            req_complete(r);
        }
        return;
    }
}

static void run_queue(struct dht_peer *p)
{
    struct net_req *list;
    uint64_t v;

    while (read(p->evfd, &v, sizeof v) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&p->lock);
    list = p->queue;
    p->queue = p->queue_tail = NULL;
    pthread_mutex_unlock(&p->lock);
    while (list) {
        struct net_req *r = list;
        list = r->next;
        r->next = NULL;
        run_request(p, r);
    }
}

/* Fail whatever never completed (the core is gone). */
static void fail_pending(struct dht_peer *p)
{
    struct net_req *list;

    while (p->inflight) {
        struct net_req *r = p->inflight;
        r->err = -ECANCELED;
        req_complete(r);
    }
    pthread_mutex_lock(&p->lock);
    list = p->queue;
    p->queue = p->queue_tail = NULL;
    pthread_mutex_unlock(&p->lock);
    while (list) {
        struct net_req *r = list;
        list = r->next;
        if (r->cb) {
            struct dht_result res = {.err = -ECANCELED};
            r->cb(r->cb_arg, &res);
            req_unref(r);
        } else {
            r->err = -ECANCELED;
            req_complete(r);
        }
    }
}

/* ------------------------------------------------------------------ loop */

static void *loop_main(void *arg)
{
    struct dht_peer *p = arg;
    struct epoll_event evs[64];
    uint64_t last_expire = 0;

    while (!atomic_load(&p->quit)) {
        uint64_t now = mono_ms();
        int timeout = dht_core_tick(p->core, now);
        int n;

        reap_dead(p);
        if (!p->sync_each && now >= p->next_sync_ms) {
            dht_store_sync(dht_core_store(p->core));
            p->next_sync_ms = now + NET_SYNC_MS;
        }
        if (now >= last_expire + 1000) {
            expire_handshakes(p, now);
            last_expire = now;
        }
        if (p->dead)
            timeout = 0;
        if (timeout < 0 || timeout > NET_SYNC_MS)
            timeout = NET_SYNC_MS;
        n = epoll_wait(p->epfd, evs, 64, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("net", p->node_tag, "epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            void *tag = evs[i].data.ptr;
            if (tag == &net_listen_tag) {
                accept_all(p);
            } else if (tag == &net_event_tag) {
                run_queue(p);
            } else {
                struct net_conn *c = tag;
                if (c->dead)
                    continue;
                if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
                    conn_writable(p, c);
                if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLHUP)))
                    conn_readable(p, c);
            }
        }
        reap_dead(p);
    }
    return NULL;
}

static void wake(struct dht_peer *p)
{
    uint64_t one = 1;

    while (write(p->evfd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

/* Queue r for the loop. Returns 0 or -ESHUTDOWN (r untouched). */
static int submit(struct dht_peer *p, struct net_req *r)
{
    pthread_mutex_lock(&p->lock);
    if (!p->accepting) {
        pthread_mutex_unlock(&p->lock);
        return -ESHUTDOWN;
    }
    r->next = NULL;
    if (p->queue_tail)
        p->queue_tail->next = r;
    else
        p->queue = r;
    p->queue_tail = r;
    pthread_mutex_unlock(&p->lock);
    wake(p);
    return 0;
}

/*
 * Submit a blocking request and wait up to timeout_ms for it. Returns 0
 * when the loop completed it (the result is in r->err; the caller reads it
 * and then drops its reference with req_unref()), or -ETIMEDOUT,
 * -ESHUTDOWN, -EDEADLK, in which case the caller's reference is already
 * dropped and r must not be touched again.
 */
static int submit_wait(struct dht_peer *p, struct net_req *r, int timeout_ms)
{
    struct timespec ts;
    int rc;

    if (pthread_equal(pthread_self(), p->thread) && p->thread_started) {
        /* Blocking on the loop thread would deadlock. */
        req_free(r);
        return -EDEADLK;
    }
    pthread_mutex_lock(&p->lock);
    p->callers++;
    pthread_mutex_unlock(&p->lock);
    rc = submit(p, r);
    if (rc < 0) {
        pthread_mutex_lock(&p->lock);
        caller_leave_locked(p);
        pthread_mutex_unlock(&p->lock);
        req_free(r);
        return rc;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&p->lock);
    rc = 0;
    while (!r->done && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&r->cond, &p->lock, &ts);
    rc = r->done ? 0 : -ETIMEDOUT;
    pthread_mutex_unlock(&p->lock);
    if (rc < 0)
        req_release(r);
    return rc;
}

/* --------------------------------------------------------- peer lifetime */

static int open_listener(struct dht_peer *p, const char *listen_addr,
                         char *bound_host, size_t hostlen, int *port_out)
{
    char host[DHT_ADDR_MAX], port[8];
    struct addrinfo hints = {0}, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd, rc, one = 1;

    if (split_addr(listen_addr, host, sizeof host, port, sizeof port) < 0) {
        log_error("net", NULL, "bad listen address '%s' (want HOST:PORT)",
                  listen_addr);
        return -EINVAL;
    }
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
    rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (rc != 0 || !ai) {
        log_error("net", NULL, "cannot resolve listen address %s: %s",
                  listen_addr, gai_strerror(rc));
        return -EADDRNOTAVAIL;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        freeaddrinfo(ai);
        return rc;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
        rc = -errno;
        log_error("net", NULL, "cannot listen on %s: %s", listen_addr,
                  strerror(errno));
        freeaddrinfo(ai);
        close(fd);
        return rc;
    }
    freeaddrinfo(ai);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    if (ss.ss_family == AF_INET6)
        *port_out = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    else
        *port_out = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    snprintf(bound_host, hostlen, "%s", host);
    p->listen_fd = fd;
    return 0;
}

static bool is_wildcard(const char *host)
{
    return !host[0] || strcmp(host, "0.0.0.0") == 0 ||
           strcmp(host, "::") == 0 || strcmp(host, "*") == 0;
}

static void peer_free(struct dht_peer *p)
{
    /* The loop thread is gone; whatever dht_core_free() does, it must not
     * reach sockets or the freed core through io->send. */
    p->shutdown = true;
    p->dirty = NULL;
    while (p->conns)
        conn_close(p, p->conns, NULL);
    while (p->dead) {
        struct net_conn *c = p->dead;
        p->dead = c->next;
        conn_free(c);
    }
    if (p->core)
        dht_core_free(p->core);
    p->core = NULL;
    fail_pending(p);
    /* Callers woken by fail_pending() still hold p->lock briefly: let them
     * leave before the lock goes away (bounded, in case one is stuck). */
    {
        struct timespec ts;
        int rc = 0;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 5;
        pthread_mutex_lock(&p->lock);
        while (p->callers > 0 && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&p->cond, &p->lock, &ts);
        pthread_mutex_unlock(&p->lock);
    }
    if (p->listen_fd >= 0)
        close(p->listen_fd);
    if (p->evfd >= 0)
        close(p->evfd);
    if (p->epfd >= 0)
        close(p->epfd);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static void stop_thread(struct dht_peer *p)
{
    pthread_mutex_lock(&p->lock);
    p->accepting = false;
    p->stop_requested = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    if (p->thread_started) {
        atomic_store(&p->quit, true);
        wake(p);
        pthread_join(p->thread, NULL);
        p->thread_started = false;
    }
}

int dht_peer_start(const struct dht_peer_opts *opts, struct dht_peer **out,
                   char **err_msg_out)
{
    struct dht_peer *p;
    struct dht_store *store = NULL;
    struct dht_io io;
    struct net_req *r;
    struct epoll_event ev = {0};
    pthread_condattr_t ca;
    char host[DHT_ADDR_MAX], msg[512];
    int port = 0, rc;

    *out = NULL;
    if (err_msg_out)
        *err_msg_out = NULL;
    msg[0] = 0;

    p = xcalloc(1, sizeof *p);
    p->listen_fd = p->evfd = p->epfd = -1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    p->cfg = opts->cfg;
    p->sync_each = opts->sync_each_write;
    if (!p->cfg.network[0])
        snprintf(p->cfg.network, sizeof p->cfg.network, "chordfs");
    if (p->cfg.op_timeout_ms <= 0)
        p->cfg.op_timeout_ms = 10000;

    if (opts->data_dir) {
        rc = dht_store_open(opts->data_dir, opts->sync_each_write, &store);
        if (rc < 0) {
            snprintf(msg, sizeof msg, "cannot open store in %s: %s",
                     opts->data_dir, strerror(-rc));
            goto err;
        }
    } else {
        store = dht_store_new_mem();
    }

    rc = open_listener(p, opts->listen[0] ? opts->listen : "0.0.0.0:0", host,
                       sizeof host, &port);
    if (rc < 0) {
        snprintf(msg, sizeof msg, "cannot listen on %s: %s", opts->listen,
                 strerror(-rc));
        goto err;
    }
    if (!p->cfg.addr[0]) {
        /* Advertise what we bound; for a wildcard, this host's first
         * non-loopback IPv4 address (documented in README.md). */
        if (is_wildcard(host)) {
            rc = pick_host_addr(host, sizeof host);
            if (rc < 0) {
                snprintf(msg, sizeof msg,
                         "listening on %s but this host has no non-loopback "
                         "IPv4 address to advertise: give --advertise "
                         "HOST:PORT",
                         opts->listen);
                goto err;
            }
        }
        char full[2 * DHT_ADDR_MAX];
        snprintf(full, sizeof full, strchr(host, ':') ? "[%s]:%d" : "%s:%d",
                 host, port);
        if (strlen(full) >= sizeof p->cfg.addr) {
            rc = -ENAMETOOLONG;
            snprintf(msg, sizeof msg, "advertised address too long");
            goto err;
        }
        memcpy(p->cfg.addr, full, strlen(full) + 1);
    }
    snprintf(p->addr, sizeof p->addr, "%s", p->cfg.addr);

    io.arg = p;
    io.send = io_send;
    io.reply = io_reply;
    io.stopped = io_stopped;
    p->core = dht_core_new(&p->cfg, &io, store);
    store = NULL;
    if (!p->core) {
        rc = -ENOMEM;
        snprintf(msg, sizeof msg, "cannot create the protocol core");
        goto err;
    }
    {
        char hex[2 * DHT_ID_LEN + 1];
        dht_id_hex(&dht_core_self(p->core)->id, hex);
        snprintf(p->node_tag, sizeof p->node_tag, "%.6s", hex);
    }

    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    p->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->epfd < 0 || p->evfd < 0) {
        rc = -errno;
        snprintf(msg, sizeof msg, "epoll/eventfd: %s", strerror(-rc));
        goto err;
    }
    ev.events = EPOLLIN;
    ev.data.ptr = &net_listen_tag;
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->listen_fd, &ev);
    ev.data.ptr = &net_event_tag;
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->evfd, &ev);

    p->accepting = true;
    rc = pthread_create(&p->thread, NULL, loop_main, p);
    if (rc != 0) {
        rc = -rc;
        snprintf(msg, sizeof msg, "cannot start the loop thread");
        goto err;
    }
    p->thread_started = true;
    log_info("net", p->node_tag, "listening on %s (port %d), advertising %s",
             opts->listen[0] ? opts->listen : "0.0.0.0:0", port, p->addr);

    r = req_new(p, REQ_START, true);
    r->what = xstrdup(opts->bootstrap);
    rc = submit_wait(p, r, p->cfg.op_timeout_ms + NET_GRACE_MS);
    if (rc < 0) {
        snprintf(msg, sizeof msg, "joining through %s timed out after %d ms",
                 opts->bootstrap, p->cfg.op_timeout_ms);
        goto err;
    }
    rc = r->err;
    if (rc < 0) {
        snprintf(msg, sizeof msg, "%s",
                 r->text ? r->text : "cannot join the ring");
        req_release(r);
        goto err;
    }
    req_release(r);
    if (opts->bootstrap[0])
        log_debug("net", p->node_tag, "joined the ring through %s as %s",
                  opts->bootstrap, p->addr);
    else
        log_debug("net", p->node_tag, "created a new ring as %s", p->addr);
    *out = p;
    return 0;

err:
    log_error("net", p->node_tag[0] ? p->node_tag : NULL, "%s", msg);
    if (err_msg_out)
        *err_msg_out = xstrdup(msg);
    if (store)
        dht_store_free(store);
    stop_thread(p);
    peer_free(p);
    return rc < 0 ? rc : -EIO;
}

void dht_peer_stop(struct dht_peer *p, bool leave)
{
    if (!p)
        return;
    if (leave) {
        struct net_req *r = req_new(p, REQ_LEAVE, true);
        int rc = submit_wait(p, r, p->cfg.op_timeout_ms + NET_GRACE_MS);
        if (rc < 0) {
            log_warn("net", p->node_tag, "leave did not finish: %s",
                     strerror(-rc));
        } else {
            if (r->err < 0)
                log_warn("net", p->node_tag, "leave failed: %s",
                         strerror(-r->err));
            else
                log_info("net", p->node_tag, "left the ring");
            req_release(r);
        }
    }
    stop_thread(p);
    peer_free(p);
}

int dht_peer_wait(struct dht_peer *p, int timeout_ms)
{
    struct timespec ts;
    int rc = 0;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (timeout_ms >= 0) {
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
    }
    pthread_mutex_lock(&p->lock);
    while (!p->stop_requested && rc != ETIMEDOUT) {
        if (timeout_ms >= 0)
            rc = pthread_cond_timedwait(&p->cond, &p->lock, &ts);
        else
            pthread_cond_wait(&p->cond, &p->lock);
    }
    rc = p->stop_requested ? 0 : -ETIMEDOUT;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

bool dht_peer_stopping(struct dht_peer *p)
{
    bool s;

    pthread_mutex_lock(&p->lock);
    s = p->stop_requested;
    pthread_mutex_unlock(&p->lock);
    return s;
}

const char *dht_peer_addr(const struct dht_peer *p)
{
    return p->addr;
}

int dht_peer_op_timeout(const struct dht_peer *p)
{
    return p->cfg.op_timeout_ms;
}

/* ------------------------------------------------------------ client API */

static struct net_req *op_req(struct dht_peer *p, const struct dht_op *op,
                              bool waiting)
{
    struct net_req *r = req_new(p, REQ_OP, waiting);

    r->op = *op;
    if (op->key) {
        r->key = xstrdup(op->key);
        r->op.key = r->key;
    }
    if (op->value && op->len > 0) {
        r->value = xmalloc(op->len);
        memcpy(r->value, op->value, op->len);
        r->op.value = r->value;
    } else {
        r->op.value = NULL;
        r->op.len = 0;
    }
    return r;
}

/* Run op and wait. On 0 the caller owns r (req_unref it) and r->err holds
 * the operation's result; otherwise r is gone. */
static int run_op(struct dht_peer *p, const struct dht_op *op,
                  struct net_req **r_out)
{
    struct net_req *r;
    int timeout = op->timeout_ms > 0 ? op->timeout_ms : p->cfg.op_timeout_ms;
    int rc;

    if (!op->key || strlen(op->key) >= WIRE_KEY_MAX)
        return -EINVAL;
    if (op->len > WIRE_MAX_FRAME)
        return -EFBIG;
    r = op_req(p, op, true);
    rc = submit_wait(p, r, timeout + NET_GRACE_MS);
    if (rc < 0)
        return rc;
    *r_out = r;
    return 0;
}

int dht_get(struct dht_peer *p, const char *key, void **val_out,
            size_t *len_out, uint64_t *version_out)
{
    struct dht_op op = {.kind = DHT_OP_GET, .key = key};
    struct net_req *r;
    int rc = run_op(p, &op, &r);

    if (rc < 0)
        return rc;
    rc = r->err;
    if (rc == 0) {
        if (!r->val) {
            r->val = xmalloc(1);
            ((char *)r->val)[0] = 0;
            r->len = 0;
        }
        *val_out = r->val;
        *len_out = r->len;
        r->val = NULL;
        if (version_out)
            *version_out = r->version;
    }
    req_release(r);
    return rc;
}

/* Run a write whose only results are an error and a version. */
static int write_op(struct dht_peer *p, const struct dht_op *op,
                    uint64_t *version_out)
{
    struct net_req *r;
    int rc = run_op(p, op, &r);

    if (rc < 0)
        return rc;
    rc = r->err;
    if (version_out)
        *version_out = r->version;
    req_release(r);
    return rc;
}

int dht_put(struct dht_peer *p, const char *key, const void *val, size_t len,
            uint64_t expected, uint64_t *version_out)
{
    struct dht_op op = {.kind = DHT_OP_PUT,
                        .key = key,
                        .value = val,
                        .len = len,
                        .expected = expected};

    return write_op(p, &op, version_out);
}

int dht_delete(struct dht_peer *p, const char *key, uint64_t expected)
{
    struct dht_op op = {
        .kind = DHT_OP_DELETE, .key = key, .expected = expected};

    return write_op(p, &op, NULL);
}

static int set_op(struct dht_peer *p, enum dht_op_kind kind, const char *key,
                  const void *val, size_t len)
{
    struct dht_op op = {.kind = kind,
                        .key = key,
                        .value = val,
                        .len = len,
                        .expected = DHT_ANY_VERSION};

    return write_op(p, &op, NULL);
}

int dht_add(struct dht_peer *p, const char *key, const void *val, size_t len)
{
    return set_op(p, DHT_OP_ADD, key, val, len);
}

int dht_remove(struct dht_peer *p, const char *key, const void *val, size_t len)
{
    return set_op(p, DHT_OP_REMOVE, key, val, len);
}

int dht_members(struct dht_peer *p, const char *key,
                struct dht_blob **members_out, size_t *n_out,
                uint64_t *version_out)
{
    struct dht_op op = {.kind = DHT_OP_MEMBERS, .key = key};
    struct net_req *r;
    int rc = run_op(p, &op, &r);

    if (rc < 0)
        return rc;
    rc = r->err;
    if (rc == 0) {
        *members_out = r->members;
        *n_out = r->n_members;
        r->members = NULL;
        r->n_members = 0;
        if (version_out)
            *version_out = r->version;
    }
    req_release(r);
    return rc;
}

void dht_blobs_free(struct dht_blob *b, size_t n)
{
    if (!b)
        return;
    for (size_t i = 0; i < n; i++)
        free(b[i].data);
    free(b);
}

int dht_lookup(struct dht_peer *p, const char *key, struct dht_node *primary,
               struct dht_node *replicas, int max, int *n_replicas_out)
{
    struct dht_op op = {.kind = DHT_OP_LOOKUP, .key = key};
    struct net_req *r;
    int rc = run_op(p, &op, &r);

    if (rc < 0)
        return rc;
    rc = r->err;
    if (rc == 0) {
        int n = r->n_replicas < max ? r->n_replicas : max;
        if (n < 0)
            n = 0;
        if (primary)
            *primary = r->primary;
        if (replicas && n > 0)
            memcpy(replicas, r->replicas, (size_t)n * sizeof *replicas);
        if (n_replicas_out)
            *n_replicas_out = n;
    }
    req_release(r);
    return rc;
}

int dht_info(struct dht_peer *p, const char *what, char **text_out)
{
    struct net_req *r;
    int rc;

    *text_out = NULL;
    if (strcmp(what, "ring") == 0) {
        struct dht_op op = {.kind = DHT_OP_RING, .key = ""};
        r = op_req(p, &op, true);
        rc = submit_wait(p, r, p->cfg.op_timeout_ms + NET_GRACE_MS);
    } else {
        r = req_new(p, REQ_INFO, true);
        r->what = xstrdup(what);
        rc = submit_wait(p, r, p->cfg.op_timeout_ms + NET_GRACE_MS);
    }
    if (rc < 0)
        return rc;
    rc = r->err;
    if (rc == 0) {
        *text_out = r->text ? r->text : xstrdup("");
        r->text = NULL;
    }
    req_release(r);
    return rc;
}

int dht_usage(struct dht_peer *p, uint64_t *bytes_out, uint64_t *keys_out)
{
    struct net_req *r = req_new(p, REQ_USAGE, true);
    int rc = submit_wait(p, r, p->cfg.op_timeout_ms + NET_GRACE_MS);

    if (rc < 0)
        return rc;
    rc = r->err;
    if (bytes_out)
        *bytes_out = r->bytes;
    if (keys_out)
        *keys_out = r->keys;
    req_release(r);
    return rc;
}

int dht_op_async(struct dht_peer *p, const struct dht_op *op, dht_done_fn *done,
                 void *arg)
{
    struct net_req *r;
    int rc;

    if (!done || !op->key || strlen(op->key) >= WIRE_KEY_MAX)
        return -EINVAL;
    if (op->len > WIRE_MAX_FRAME)
        return -EFBIG;
    r = op_req(p, op, false);
    r->cb = done;
    r->cb_arg = arg;
    rc = submit(p, r);
    if (rc < 0)
        req_free(r);
    return rc;
}
