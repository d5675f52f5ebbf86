/*
 * tools/chordctl.c - command-line client of a running chordfs peer, in the
 * spirit of Open Chord's console: it connects to one peer, says hello as a
 * client, sends one request (ClientOp, InfoRequest or LeaveRequest) and
 * prints the answer. It speaks only the wire protocol (proto/wire.h); it
 * never joins the ring.
 *
 * Exit status: 0 on success, 1 for any failure (with one line on stderr),
 * 2 for wrong usage.
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proto/wire.h"

#define CTL_DEFAULT_TIMEOUT_MS 15000

static const char *prog = "chordctl";
static const char *peer_addr;
static int timeout_ms = CTL_DEFAULT_TIMEOUT_MS;
static uint64_t deadline_ms;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s --peer HOST:PORT [--timeout MS] [--network NAME] "
            "COMMAND ...\n"
            "commands:\n"
            "  put KEY VALUE [--expect VERSION] [--version]   (VALUE - reads "
            "stdin)\n"
            "  get KEY [--version]       value to stdout (--version: its "
            "version)\n"
            "  delete KEY [--expect VERSION]\n"
            "  add KEY VALUE             add a member to the set at KEY\n"
            "  remove KEY VALUE          remove a member from the set at KEY\n"
            "  members KEY               the set's members, one per line\n"
            "  lookup KEY                primary and replicas of KEY\n"
            "  refs                      fingers, successors, predecessor\n"
            "  entries                   keys this peer holds\n"
            "  ring                      every peer in ring order\n"
            "  info WHAT                 any /.chord name (id, stats, ...)\n"
            "  leave                     ask the peer to leave the ring\n",
            prog);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)))
__attribute__((noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2))) __attribute__((noreturn));
static void usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (try %s --help)\n", prog);
    exit(2);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int remaining_ms(void)
{
    uint64_t now = mono_ms();

    return now >= deadline_ms ? 0 : (int)(deadline_ms - now);
}

/* Wait for events on fd until the deadline; dies on timeout. */
static void wait_fd(int fd, short events, const char *doing)
{
    struct pollfd pfd = {.fd = fd, .events = events};

    for (;;) {
        int rc = poll(&pfd, 1, remaining_ms());
        if (rc > 0)
            return;
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            die("%s: poll: %s", peer_addr, strerror(errno));
        die("%s: timed out after %d ms %s", peer_addr, timeout_ms, doing);
    }
}

static int connect_peer(const char *addr)
{
    char host[WIRE_ADDR_MAX], port[8];
    const char *colon = strrchr(addr, ':');
    struct addrinfo hints = {0}, *ai, *a;
    int fd = -1, rc, err = 0, one = 1;
    size_t hl;

    if (!colon || colon == addr || !colon[1] || strlen(colon + 1) >= 6)
        usage_error("bad peer address '%s' (want HOST:PORT)", addr);
    hl = (size_t)(colon - addr);
    if (addr[0] == '[' && colon[-1] == ']') {
        addr++;
        hl -= 2;
    }
    if (hl >= sizeof host)
        usage_error("bad peer address '%s'", addr);
    memcpy(host, addr, hl);
    host[hl] = 0;
    strcpy(port, colon + 1);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0)
        die("cannot resolve %s: %s", peer_addr, gai_strerror(rc));
    for (a = ai; a; a = a->ai_next) {
        fd =
            socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        /* Our port lingers in TIME_WAIT after we close; SO_REUSEADDR keeps
         * it from blocking a peer that later binds it (both sides set it). */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc < 0 && errno == EINPROGRESS) {
            socklen_t el = sizeof err;
            wait_fd(fd, POLLOUT, "connecting");
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
            rc = err ? -1 : 0;
        } else if (rc < 0) {
            err = errno;
        }
        if (rc == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0)
        die("cannot reach peer %s: %s", peer_addr, strerror(err));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_env(int fd, const Chord__Envelope *env)
{
    uint8_t *frame;
    size_t len, off = 0;
    int rc = wire_encode(env, &frame, &len);

    if (rc < 0)
        die("request too large (over %u bytes)", WIRE_MAX_FRAME);
    while (off < len) {
        ssize_t n = send(fd, frame + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_fd(fd, POLLOUT, "sending");
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("%s: send: %s", peer_addr, strerror(errno));
        off += (size_t)n;
    }
    free(frame);
}

/*
 * Read frames until the reply to req_id arrives. Returns the decoded
 * envelope, or NULL if the peer closed the connection (eof_ok) - otherwise
 * that dies.
 */
static Chord__Envelope *recv_reply(int fd, struct wire_reader *rd,
                                   uint64_t req_id, bool eof_ok)
{
    uint8_t buf[65536];

    for (;;) {
        const uint8_t *payload;
        size_t len;
        int rc;

        while ((rc = wire_reader_next(rd, &payload, &len)) == 1) {
            Chord__Envelope *env;
            if (wire_decode(payload, len, &env) < 0)
                die("%s sent a malformed message", peer_addr);
            if (env->reply && env->req_id == req_id)
                return env;
            wire_msg_free(env);
        }
        if (rc < 0)
            die("%s sent an oversized frame", peer_addr);
        wait_fd(fd, POLLIN, "waiting for the answer");
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n < 0)
            die("%s: %s", peer_addr, strerror(errno));
        if (n == 0) {
            if (eof_ok)
                return NULL;
            die("%s closed the connection without answering", peer_addr);
        }
        wire_reader_feed(rd, buf, (size_t)n);
    }
}

static int hello(int fd, struct wire_reader *rd, const char *network)
{
    Chord__Envelope env, *rep;
    Chord__Hello h;

    chord__envelope__init(&env);
    chord__hello__init(&h);
    h.version = WIRE_PROTOCOL_VERSION;
    h.network = (char *)network;
    h.client = true;
    env.req_id = 1;
    env.body_case = CHORD__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    send_env(fd, &env);
    rep = recv_reply(fd, rd, 1, false);
    if (rep->status != CHORD__STATUS__OK)
        die("peer %s refused us: %s", peer_addr,
            rep->error && rep->error[0] ? rep->error
                                        : wire_status_name(rep->status));
    wire_msg_free(rep);
    return 0;
}

/* Exit with a message for a non-OK reply. */
static void check_status(const Chord__Envelope *rep, const char *key)
{
    const char *detail;

    if (rep->status == CHORD__STATUS__OK)
        return;
    detail = rep->error && rep->error[0] ? rep->error : NULL;
    switch (rep->status) {
    case CHORD__STATUS__NOT_FOUND:
        die("%s: not found", key ? key : "request");
    case CHORD__STATUS__VERSION_MISMATCH: {
        const Chord__Record *r = NULL;
        if (rep->body_case == CHORD__ENVELOPE__BODY_CLIENT_OP_REPLY)
            r = rep->client_op_reply->record;
        else if (rep->body_case == CHORD__ENVELOPE__BODY_KV_REPLY)
            r = rep->kv_reply->record;
        if (r)
            die("%s: version mismatch (current version %" PRIu64 ")", key,
                r->version);
        die("%s: version mismatch%s%s", key, detail ? ": " : "",
            detail ? detail : "");
    }
    case CHORD__STATUS__EXISTS:
        die("%s: already exists", key ? key : "request");
    case CHORD__STATUS__TIMEOUT:
        die("%s: the ring timed out%s%s", peer_addr, detail ? ": " : "",
            detail ? detail : "");
    case CHORD__STATUS__REFUSED:
        die("peer %s refused us: %s", peer_addr, detail ? detail : "refused");
    default:
        die("%s: %s%s%s", key ? key : peer_addr, wire_status_name(rep->status),
            detail ? ": " : "", detail ? detail : "");
    }
}

static uint8_t *read_stdin(size_t *len_out)
{
    size_t cap = 65536, len = 0;
    uint8_t *b = wire_xmalloc(cap);

    for (;;) {
        if (len == cap) {
            if (cap >= WIRE_MAX_FRAME)
                die("value on stdin is larger than %u bytes", WIRE_MAX_FRAME);
            cap *= 2;
            b = wire_xrealloc(b, cap);
        }
        ssize_t n = read(0, b + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("reading stdin: %s", strerror(errno));
        if (n == 0)
            break;
        len += (size_t)n;
    }
    *len_out = len;
    return b;
}

static Chord__Envelope *client_op(int fd, struct wire_reader *rd,
                                  Chord__OpKind kind, const char *key,
                                  const void *val, size_t len, bool has_exp,
                                  uint64_t expected)
{
    Chord__Envelope env, *rep;
    Chord__ClientOp op;
    Chord__KvRequest kv;

    chord__envelope__init(&env);
    chord__client_op__init(&op);
    chord__kv_request__init(&kv);
    kv.op = kind;
    kv.key = (char *)key;
    kv.value.data = (uint8_t *)val;
    kv.value.len = len;
    kv.has_expected = has_exp;
    kv.expected_version = expected;
    op.req = &kv;
    env.req_id = 2;
    env.body_case = CHORD__ENVELOPE__BODY_CLIENT_OP;
    env.client_op = &op;
    send_env(fd, &env);
    rep = recv_reply(fd, rd, 2, false);
    check_status(rep, key);
    if (rep->body_case != CHORD__ENVELOPE__BODY_CLIENT_OP_REPLY)
        die("%s answered with an unexpected message", peer_addr);
    return rep;
}

static char *info(int fd, struct wire_reader *rd, const char *what,
                  uint64_t req_id)
{
    Chord__Envelope env, *rep;
    Chord__InfoRequest ir;
    char *text;

    chord__envelope__init(&env);
    chord__info_request__init(&ir);
    ir.what = (char *)what;
    env.req_id = req_id;
    env.body_case = CHORD__ENVELOPE__BODY_INFO_REQUEST;
    env.info_request = &ir;
    send_env(fd, &env);
    rep = recv_reply(fd, rd, req_id, false);
    if (rep->status == CHORD__STATUS__NOT_FOUND ||
        rep->status == CHORD__STATUS__BAD_REQUEST)
        die("no such information: '%s'%s%s", what,
            rep->error && rep->error[0] ? ": " : "",
            rep->error ? rep->error : "");
    check_status(rep, what);
    if (rep->body_case != CHORD__ENVELOPE__BODY_INFO_REPLY)
        die("%s answered with an unexpected message", peer_addr);
    text = wire_xstrdup(rep->info_reply->text ? rep->info_reply->text : "");
    wire_msg_free(rep);
    return text;
}

static void print_text(const char *text)
{
    size_t n = strlen(text);

    fputs(text, stdout);
    if (n > 0 && text[n - 1] != '\n')
        fputc('\n', stdout);
}

static void print_node(const char *role, const Chord__Node *n)
{
    static const char hex[] = "0123456789abcdef";
    char id[2 * WIRE_ID_LEN + 1];
    size_t i;

    for (i = 0; i < n->id.len && i < WIRE_ID_LEN; i++) {
        id[2 * i] = hex[n->id.data[i] >> 4];
        id[2 * i + 1] = hex[n->id.data[i] & 15];
    }
    id[2 * i] = 0;
    printf("%s %s %s\n", role, n->addr, id);
}

static uint64_t parse_u64(const char *s, const char *what)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || !*s || *end || *s == '-')
        usage_error("bad %s '%s'", what, s);
    return v;
}

int main(int argc, char **argv)
{
    const char *network = "";
    const char *cmd;
    char *args[4];
    int nargs = 0, fd, i;
    bool has_expect = false, want_version = false;
    uint64_t expect = 0;
    struct wire_reader rd;
    Chord__Envelope *rep;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--peer") == 0 && i + 1 < argc) {
            peer_addr = argv[++i];
        } else if (strncmp(a, "--peer=", 7) == 0) {
            peer_addr = a + 7;
        } else if (strcmp(a, "--timeout") == 0 && i + 1 < argc) {
            timeout_ms = (int)parse_u64(argv[++i], "timeout");
        } else if (strcmp(a, "--network") == 0 && i + 1 < argc) {
            network = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            usage_error("unknown or incomplete option '%s'", a);
        } else {
            break;
        }
    }
    if (!peer_addr)
        usage_error("--peer HOST:PORT is required");
    if (i >= argc)
        usage_error("no command given");
    if (timeout_ms <= 0)
        usage_error("--timeout must be positive");
    if (strlen(network) >= WIRE_NETWORK_MAX)
        usage_error("network name too long");
    cmd = argv[i++];
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--expect") == 0 && i + 1 < argc) {
            has_expect = true;
            expect = parse_u64(argv[++i], "version");
        } else if (strcmp(argv[i], "--version") == 0) {
            want_version = true;
        } else if (strcmp(argv[i], "--") == 0) {
            for (i++; i < argc; i++) {
                if (nargs == 4)
                    usage_error("too many arguments for '%s'", cmd);
                args[nargs++] = argv[i];
            }
        } else {
            if (nargs == 4)
                usage_error("too many arguments for '%s'", cmd);
            args[nargs++] = argv[i];
        }
    }

    struct {
        const char *name;
        int nargs;
    } const cmds[] = {{"put", 2},    {"get", 1},    {"delete", 1},
                      {"add", 2},    {"remove", 2}, {"members", 1},
                      {"lookup", 1}, {"refs", 0},   {"entries", 0},
                      {"ring", 0},   {"info", 1},   {"leave", 0}};
    size_t c;
    for (c = 0; c < sizeof cmds / sizeof cmds[0]; c++)
        if (strcmp(cmd, cmds[c].name) == 0)
            break;
    if (c == sizeof cmds / sizeof cmds[0])
        usage_error("unknown command '%s'", cmd);
    if (nargs != cmds[c].nargs)
        usage_error("'%s' takes %d argument%s, got %d", cmd, cmds[c].nargs,
                    cmds[c].nargs == 1 ? "" : "s", nargs);
    if (nargs > 0 && (!args[0][0] || strlen(args[0]) >= WIRE_KEY_MAX))
        usage_error("bad key");

    deadline_ms = mono_ms() + (uint64_t)timeout_ms;
    fd = connect_peer(peer_addr);
    wire_reader_init(&rd);
    hello(fd, &rd, network);

    if (strcmp(cmd, "put") == 0) {
        uint8_t *val = NULL;
        size_t len;
        if (strcmp(args[1], "-") == 0)
            val = read_stdin(&len);
        rep = client_op(fd, &rd, CHORD__OP_KIND__PUT, args[0],
                        val ? (const void *)val : args[1],
                        val ? len : strlen(args[1]), has_expect, expect);
        if (want_version && rep->client_op_reply->record)
            printf("%" PRIu64 "\n", rep->client_op_reply->record->version);
        free(val);
    } else if (strcmp(cmd, "get") == 0) {
        const Chord__Record *r;
        rep =
            client_op(fd, &rd, CHORD__OP_KIND__GET, args[0], NULL, 0, false, 0);
        r = rep->client_op_reply->record;
        if (!r || r->kind == CHORD__RECORD_KIND__TOMBSTONE)
            die("%s: not found", args[0]);
        if (want_version)
            printf("%" PRIu64 "\n", r->version);
        else if (r->kind == CHORD__RECORD_KIND__SET)
            for (size_t m = 0; m < r->n_members; m++)
                printf("%.*s\n", (int)r->members[m].len,
                       (const char *)r->members[m].data);
        else
            fwrite(r->value.data, 1, r->value.len, stdout);
    } else if (strcmp(cmd, "delete") == 0) {
        rep = client_op(fd, &rd, CHORD__OP_KIND__DELETE, args[0], NULL, 0,
                        has_expect, expect);
    } else if (strcmp(cmd, "add") == 0 || strcmp(cmd, "remove") == 0) {
        rep = client_op(fd, &rd,
                        cmd[0] == 'a' ? CHORD__OP_KIND__ADD
                                      : CHORD__OP_KIND__REMOVE,
                        args[0], args[1], strlen(args[1]), false, 0);
    } else if (strcmp(cmd, "members") == 0) {
        const Chord__Record *r;
        rep = client_op(fd, &rd, CHORD__OP_KIND__MEMBERS, args[0], NULL, 0,
                        false, 0);
        r = rep->client_op_reply->record;
        if (want_version && r)
            printf("%" PRIu64 "\n", r->version);
        else if (r)
            for (size_t m = 0; m < r->n_members; m++)
                printf("%.*s\n", (int)r->members[m].len,
                       (const char *)r->members[m].data);
    } else if (strcmp(cmd, "lookup") == 0) {
        const Chord__ClientOpReply *cr;
        rep = client_op(fd, &rd, CHORD__OP_KIND__LOOKUP, args[0], NULL, 0,
                        false, 0);
        cr = rep->client_op_reply;
        if (cr->primary)
            print_node("primary", cr->primary);
        for (size_t n = 0; n < cr->n_replicas; n++)
            print_node("replica", cr->replicas[n]);
    } else if (strcmp(cmd, "refs") == 0) {
        static const char *const parts[] = {"fingers", "successors",
                                            "predecessor"};
        for (size_t k = 0; k < 3; k++) {
            char *text = info(fd, &rd, parts[k], 2 + k);
            printf("%s:\n", parts[k]);
            print_text(text);
            free(text);
        }
        rep = NULL;
    } else if (strcmp(cmd, "entries") == 0 || strcmp(cmd, "ring") == 0 ||
               strcmp(cmd, "info") == 0) {
        const char *what = cmd[0] == 'e'   ? "keys"
                           : cmd[0] == 'r' ? "ring"
                                           : args[0];
        char *text = info(fd, &rd, what, 2);
        print_text(text);
        free(text);
        rep = NULL;
    } else { /* leave */
        Chord__Envelope env;
        Chord__LeaveRequest lr;
        chord__envelope__init(&env);
        chord__leave_request__init(&lr);
        env.req_id = 2;
        env.body_case = CHORD__ENVELOPE__BODY_LEAVE_REQUEST;
        env.leave_request = &lr;
        send_env(fd, &env);
        /* The peer answers once its keys are handed on; it may also close
         * the connection as it goes away, which is a success too. */
        rep = recv_reply(fd, &rd, 2, true);
        if (rep)
            check_status(rep, "leave");
    }
    wire_msg_free(rep);
    wire_reader_fini(&rd);
    close(fd);
    if (fflush(stdout) != 0 || ferror(stdout))
        die("writing output: %s", strerror(errno));
    return 0;
}
