/*
 * fs/main.c - the chordfs daemon: command line, daemonizing, the peer's
 * lifetime and (unless --peer-only) the FUSE mount.
 *
 * Start-up order matters. Unless -f is given the process forks before any
 * thread exists (threads do not survive fork()); the child calls setsid(),
 * starts the peer, joins the ring, mounts, and only then writes "ready" into
 * a pipe on which the parent waits. On failure the child writes the reason
 * instead, which the parent prints and turns into its exit status, so
 * `chordfs ... && ls mnt` works and a refused join fails visibly.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include "dht/dht.h"
#include "fs/fs.h"

#define CHORDFS_VERSION "0.1.0"
#define DEFAULT_LISTEN  "0.0.0.0:7070"
#define MAX_FUSE_ARGS   64

struct options {
    bool peer_only;
    bool foreground;
    bool debug;
    bool sync;
    const char *listen;
    const char *advertise;
    const char *bootstrap;
    const char *data_dir;
    const char *network;
    const char *id_hex;
    const char *log_file;
    const char *mountpoint;
    int replicas;
    int succ_len;
    int timeout_ms;
    long long chunk_size;
    long long cache_size;
    int verbosity;
    int n_fuse_opts;
    const char *fuse_opts[MAX_FUSE_ARGS];
};

static const char *prog = "chordfs";
static int ready_fd = -1; /* write end of the start-up pipe, or -1 */
static volatile sig_atomic_t got_signal;
static atomic_bool serving_done; /* fs_serve() has returned */

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: %s [options] [MOUNTPOINT]\n"
        "Run one Chord peer and (unless --peer-only) mount the shared tree.\n"
        "\n"
        "  --peer-only            run the peer only, no mount\n"
        "  --listen ADDR:PORT     address to listen on (default " DEFAULT_LISTEN
        ";\n"
        "                         port 0 picks a free port)\n"
        "  --advertise ADDR:PORT  address other peers use to reach this one\n"
        "                         (default: the listen address; for 0.0.0.0 "
        "the\n"
        "                         first non-loopback IPv4 address of this "
        "host)\n"
        "  --bootstrap HOST:PORT  join the ring through this peer (default: "
        "start\n"
        "                         a new ring)\n"
        "  --data-dir DIR         where this peer keeps its keys (default\n"
        "                         $XDG_DATA_HOME/chordfs/PORT or\n"
        "                         ~/.local/share/chordfs/PORT; for root\n"
        "                         /var/lib/chordfs/PORT)\n"
        "  --replicas R           copies of each key (default 3)\n"
        "  --succ-len N           successor list length (default 8)\n"
        "  --network NAME         ring name; peers of other names are refused\n"
        "                         (default chordfs)\n"
        "  --id HEX               node id, 40 hex digits (default SHA-1 of "
        "the\n"
        "                         advertised address)\n"
        "  --timeout MS           bound on one ring operation (default 10000)\n"
        "  --chunk-size BYTES     file data chunk size (suffix K, M, G)\n"
        "  --cache-size BYTES     per-mount data cache (suffix K, M, G)\n"
        "  --sync                 fsync every store write\n"
        "  --log FILE             log to FILE instead of syslog when "
        "daemonized\n"
        "  -v LEVEL               log level: 0-3 or error, warn, info, debug\n"
        "  -f                     stay in the foreground, log to stderr\n"
        "  -d                     FUSE debug output (implies -f)\n"
        "  -o OPTIONS             FUSE mount options\n"
        "  -h, --help             this help\n"
        "  -V, --version          print the version\n",
        prog);
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

/*
 * Report a start-up failure: to the waiting parent when daemonized, else to
 * stderr. Always one line.
 */
static void report_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static void report_error(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ready_fd >= 0) {
        char line[1100];
        int n = snprintf(line, sizeof line, "%s: %s\n", prog, msg);
        if (n > (int)sizeof line - 1)
            n = (int)sizeof line - 1;
        if (write(ready_fd, line, (size_t)n) < 0) {
            /* The parent is gone; nobody to tell. */
        }
        close(ready_fd);
        ready_fd = -1;
        log_error("main", NULL, "%s", msg);
    } else {
        fprintf(stderr, "%s: %s\n", prog, msg);
    }
}

/* Start-up finished: release the parent. */
static void report_ready(void *arg)
{
    (void)arg;
    if (ready_fd >= 0) {
        if (write(ready_fd, "ready\n", 6) < 0) {
            /* The parent is gone; nothing to do. */
        }
        close(ready_fd);
        ready_fd = -1;
    }
}

static int parse_int(const char *s, const char *what, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || !*s || *end || v < min || v > max)
        usage_error("bad %s '%s' (want an integer in %ld..%ld)", what, s, min,
                    max);
    return (int)v;
}

/* "65536", "64K", "1M", "2G". */
static long long parse_size(const char *s, const char *what)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
        usage_error("bad %s '%s'", what, s);
    switch (*end) {
    case 0:
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    default:
        usage_error("bad %s '%s' (suffixes: K, M, G)", what, s);
    }
    if (*end && end[1] && !(end[1] == 'i' && end[2] == 'B' && !end[3]) &&
        !((end[1] == 'B') && !end[2]))
        usage_error("bad %s '%s'", what, s);
    if (v > (1ull << 40) >> shift)
        usage_error("%s '%s' is too large", what, s);
    return (long long)(v << shift);
}

static int parse_level(const char *s)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};

    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return parse_int(s, "log level", 0, 3);
}

static bool addr_ok(const char *a)
{
    const char *colon = strrchr(a, ':');

    if (!colon || colon == a || !colon[1] || strlen(a) >= DHT_ADDR_MAX)
        return false;
    for (const char *c = colon + 1; *c; c++)
        if (*c < '0' || *c > '9')
            return false;
    return atoi(colon + 1) <= 65535;
}

enum {
    OPT_PEER_ONLY = 256,
    OPT_LISTEN,
    OPT_ADVERTISE,
    OPT_BOOTSTRAP,
    OPT_DATA_DIR,
    OPT_REPLICAS,
    OPT_SUCC_LEN,
    OPT_NETWORK,
    OPT_ID,
    OPT_TIMEOUT,
    OPT_CHUNK,
    OPT_CACHE,
    OPT_SYNC,
    OPT_LOG,
};

static void parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longs[] = {
        {"peer-only", no_argument, NULL, OPT_PEER_ONLY},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"advertise", required_argument, NULL, OPT_ADVERTISE},
        {"bootstrap", required_argument, NULL, OPT_BOOTSTRAP},
        {"data-dir", required_argument, NULL, OPT_DATA_DIR},
        {"replicas", required_argument, NULL, OPT_REPLICAS},
        {"succ-len", required_argument, NULL, OPT_SUCC_LEN},
        {"network", required_argument, NULL, OPT_NETWORK},
        {"id", required_argument, NULL, OPT_ID},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"chunk-size", required_argument, NULL, OPT_CHUNK},
        {"cache-size", required_argument, NULL, OPT_CACHE},
        {"sync", no_argument, NULL, OPT_SYNC},
        {"log", required_argument, NULL, OPT_LOG},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;

    memset(o, 0, sizeof *o);
    o->listen = DEFAULT_LISTEN;
    o->network = "chordfs";
    o->replicas = DHT_REPLICAS;
    o->succ_len = DHT_SUCC_LEN;
    o->verbosity = -1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+:hVv:fdo:", longs, NULL)) != -1) {
        switch (c) {
        case OPT_PEER_ONLY:
            o->peer_only = true;
            break;
        case OPT_LISTEN:
            o->listen = optarg;
            break;
        case OPT_ADVERTISE:
            o->advertise = optarg;
            break;
        case OPT_BOOTSTRAP:
            o->bootstrap = optarg;
            break;
        case OPT_DATA_DIR:
            o->data_dir = optarg;
            break;
        case OPT_REPLICAS:
            o->replicas = parse_int(optarg, "--replicas", 1, 16);
            break;
        case OPT_SUCC_LEN:
            o->succ_len = parse_int(optarg, "--succ-len", 1, 64);
            break;
        case OPT_NETWORK:
            o->network = optarg;
            break;
        case OPT_ID:
            o->id_hex = optarg;
            break;
        case OPT_TIMEOUT:
            o->timeout_ms = parse_int(optarg, "--timeout", 1, 3600000);
            break;
        case OPT_CHUNK:
            o->chunk_size = parse_size(optarg, "--chunk-size");
            break;
        case OPT_CACHE:
            o->cache_size = parse_size(optarg, "--cache-size");
            break;
        case OPT_SYNC:
            o->sync = true;
            break;
        case OPT_LOG:
            o->log_file = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case 'V':
            printf("chordfs %s\n", CHORDFS_VERSION);
            exit(0);
        case 'v':
            o->verbosity = parse_level(optarg);
            break;
        case 'f':
            o->foreground = true;
            break;
        case 'd':
            o->debug = true;
            o->foreground = true;
            break;
        case 'o':
            if (o->n_fuse_opts + 2 > MAX_FUSE_ARGS)
                usage_error("too many -o options");
            o->fuse_opts[o->n_fuse_opts++] = "-o";
            o->fuse_opts[o->n_fuse_opts++] = optarg;
            break;
        case ':':
            usage_error("option '%s' needs an argument", argv[optind - 1]);
        default:
            usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        o->mountpoint = argv[optind++];
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
    if (!o->peer_only && !o->mountpoint)
        usage_error("a MOUNTPOINT is needed (or --peer-only)");
    if (o->peer_only && o->mountpoint)
        usage_error("--peer-only takes no MOUNTPOINT");
    if (o->peer_only && o->n_fuse_opts > 0)
        usage_error("-o makes no sense with --peer-only");
    if (!addr_ok(o->listen))
        usage_error("bad --listen address '%s' (want ADDR:PORT)", o->listen);
    if (o->advertise && !addr_ok(o->advertise))
        usage_error("bad --advertise address '%s' (want ADDR:PORT)",
                    o->advertise);
    if (o->advertise && strcmp(strrchr(o->advertise, ':'), ":0") == 0)
        usage_error("--advertise needs a real port, not 0");
    if (o->bootstrap && !addr_ok(o->bootstrap))
        usage_error("bad --bootstrap address '%s' (want HOST:PORT)",
                    o->bootstrap);
    if (!o->network[0] || strlen(o->network) >= DHT_NETWORK_MAX)
        usage_error("bad --network name '%s'", o->network);
    if (o->id_hex) {
        struct dht_id id;
        if (dht_id_from_hex(o->id_hex, &id) < 0)
            usage_error("bad --id '%s' (want 40 hex digits)", o->id_hex);
    }
}

/* mkdir -p; returns 0 or -errno. */
static int mkdirs(const char *path)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof buf)
        return -ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (char *s = buf + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(buf, 0700) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(buf, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* The default data directory for a peer listening on port. */
static int default_data_dir(const char *listen, char *out, size_t n)
{
    const char *port = strrchr(listen, ':') + 1;
    const char *xdg = getenv("XDG_DATA_HOME");
    const char *home = getenv("HOME");
    int len;

    if (geteuid() == 0)
        len = snprintf(out, n, "/var/lib/chordfs/%s", port);
    else if (xdg && xdg[0] == '/')
        len = snprintf(out, n, "%s/chordfs/%s", xdg, port);
    else if (home && home[0])
        len = snprintf(out, n, "%s/.local/share/chordfs/%s", home, port);
    else
        return -ENOENT;
    return len < 0 || (size_t)len >= n ? -ENAMETOOLONG : 0;
}

/* Make path absolute (the daemon changes directory to /). */
static char *absolute(const char *path)
{
    char cwd[PATH_MAX], *out;

    if (path[0] == '/')
        return strdup(path);
    if (!getcwd(cwd, sizeof cwd))
        return NULL;
    if (asprintf(&out, "%s/%s", cwd, path) < 0)
        return NULL;
    return out;
}

/*
 * With a mount, a `chordctl leave` stops the peer underneath it: end the
 * mount the way an operator would, with SIGTERM to ourselves (fs_serve()
 * handles it). This thread keeps SIGTERM blocked, so it lands on another.
 */
static void *leave_watcher(void *arg)
{
    struct dht_peer *p = arg;

    while (!atomic_load(&serving_done)) {
        if (dht_peer_wait(p, 200) == 0) {
            if (!atomic_load(&serving_done)) {
                log_info("main", NULL, "asked to leave: unmounting");
                kill(getpid(), SIGTERM);
            }
            break;
        }
    }
    return NULL;
}

static void on_signal(int sig)
{
    got_signal = sig;
}

/*
 * Fork; the parent waits for the child's "ready" or error line and exits
 * with it. Returns in the child only.
 */
static void daemonize(void)
{
    int fds[2], status;
    pid_t pid;
    char buf[2048];
    size_t len = 0;

    if (pipe(fds) < 0) {
        fprintf(stderr, "%s: pipe: %s\n", prog, strerror(errno));
        exit(1);
    }
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "%s: fork: %s\n", prog, strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        close(fds[1]);
        for (;;) {
            ssize_t n = read(fds[0], buf + len, sizeof buf - 1 - len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            len += (size_t)n;
            if (len == sizeof buf - 1)
                break;
        }
        buf[len] = 0;
        if (strcmp(buf, "ready\n") == 0)
            exit(0);
        if (len > 0) {
            fputs(buf, stderr);
            if (buf[len - 1] != '\n')
                fputc('\n', stderr);
        } else {
            /* The child died without a word. */
            if (waitpid(pid, &status, WNOHANG) == pid && WIFSIGNALED(status))
                fprintf(stderr,
                        "%s: the daemon died during start-up "
                        "(signal %d)\n",
                        prog, WTERMSIG(status));
            else
                fprintf(stderr, "%s: the daemon exited during start-up\n",
                        prog);
        }
        exit(1);
    }
    close(fds[0]);
    ready_fd = fds[1];
    /* Drop every other inherited descriptor (a test harness's or a shell's
     * pipes must not stay open for the daemon's lifetime). */
    if (ready_fd > 3)
        close_range(3, (unsigned)ready_fd - 1, 0);
    close_range((unsigned)ready_fd + 1, ~0u, 0);
    fcntl(ready_fd, F_SETFD, FD_CLOEXEC);
    if (setsid() < 0) {
        report_error("setsid: %s", strerror(errno));
        exit(1);
    }
}

/* Point stdio of the daemon at /dev/null (stderr at the log file). */
static int detach_stdio(const char *log_file)
{
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    int logfd = -1;

    if (null < 0)
        return -errno;
    if (log_file) {
        logfd = open(log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (logfd < 0) {
            int e = -errno;
            close(null);
            return e;
        }
    }
    dup2(null, 0);
    dup2(null, 1);
    dup2(logfd >= 0 ? logfd : null, 2);
    close(null);
    if (logfd >= 0)
        close(logfd);
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    struct dht_peer_opts po;
    struct dht_peer *peer = NULL;
    struct sigaction sa;
    sigset_t sigs, old;
    char data_dir[PATH_MAX], *abs_data = NULL, *abs_mnt = NULL;
    char *err_msg = NULL;
    int rc;

    parse_args(argc, argv, &o);
    if (o.verbosity >= 0)
        dht_log_set_level(o.verbosity);

    /* Paths are resolved before the daemon leaves the directory. */
    if (o.data_dir) {
        abs_data = absolute(o.data_dir);
    } else {
        if (default_data_dir(o.listen, data_dir, sizeof data_dir) < 0) {
            fprintf(stderr,
                    "%s: no default data directory (set HOME or "
                    "give --data-dir)\n",
                    prog);
            return 1;
        }
        abs_data = strdup(data_dir);
    }
    if (!abs_data) {
        fprintf(stderr, "%s: cannot resolve the data directory\n", prog);
        return 1;
    }
    rc = mkdirs(abs_data);
    if (rc < 0) {
        fprintf(stderr, "%s: cannot create data directory %s: %s\n", prog,
                abs_data, strerror(-rc));
        return 1;
    }
    if (o.mountpoint) {
        struct stat st;
        abs_mnt = absolute(o.mountpoint);
        if (!abs_mnt || stat(abs_mnt, &st) < 0) {
            int e = errno;
            fprintf(stderr, "%s: mountpoint %s: %s%s\n", prog, o.mountpoint,
                    strerror(e),
                    e == ENOTCONN ? " (a stale mount? fusermount3 -u it)" : "");
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            fprintf(stderr, "%s: mountpoint %s is not a directory\n", prog,
                    o.mountpoint);
            return 1;
        }
    }
    if (o.log_file) {
        char *l = absolute(o.log_file);
        if (!l) {
            fprintf(stderr, "%s: bad --log path\n", prog);
            return 1;
        }
        o.log_file = l; /* freed at exit */
    }

    /* No thread exists yet: this is the moment to fork. */
    if (!o.foreground) {
        daemonize();
        if (chdir("/") < 0) {
            /* Not fatal: every path is absolute by now. */
        }
        if (!o.log_file)
            dht_log_use_syslog(true);
        rc = detach_stdio(o.log_file);
        if (rc < 0) {
            report_error("cannot open log file %s: %s", o.log_file,
                         strerror(-rc));
            return 1;
        }
    } else if (o.log_file) {
        int fd =
            open(o.log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (fd < 0) {
            fprintf(stderr, "%s: cannot open log file %s: %s\n", prog,
                    o.log_file, strerror(errno));
            return 1;
        }
        dup2(fd, 2);
        close(fd);
    }

    /* The loop thread must not take our signals: block them before it is
     * created, unblock them on this thread afterwards. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, &old);

    memset(&po, 0, sizeof po);
    dht_config_default(&po.cfg);
    if (o.advertise)
        snprintf(po.cfg.addr, sizeof po.cfg.addr, "%s", o.advertise);
    if (o.id_hex) {
        dht_id_from_hex(o.id_hex, &po.cfg.id);
        po.cfg.has_id = true;
    }
    snprintf(po.cfg.network, sizeof po.cfg.network, "%s", o.network);
    po.cfg.replicas = o.replicas;
    po.cfg.succ_len = o.succ_len;
    if (o.timeout_ms > 0)
        po.cfg.op_timeout_ms = o.timeout_ms;
    snprintf(po.listen, sizeof po.listen, "%s", o.listen);
    if (o.bootstrap)
        snprintf(po.bootstrap, sizeof po.bootstrap, "%s", o.bootstrap);
    po.data_dir = abs_data;
    po.sync_each_write = o.sync;

    rc = dht_peer_start(&po, &peer, &err_msg);
    if (rc < 0) {
        report_error("%s", err_msg ? err_msg : strerror(-rc));
        free(err_msg);
        rc = 1;
        goto out;
    }
    log_info("main", NULL, "peer %s up (network %s, data in %s)",
             dht_peer_addr(peer), o.network, abs_data);

    if (o.peer_only) {
        /* Only here: libfuse installs its handlers only over SIG_DFL. */
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        report_ready(NULL);
        while (!got_signal && dht_peer_wait(peer, 200) == -ETIMEDOUT)
            ;
        if (got_signal)
            log_info("main", NULL, "signal %d: leaving the ring",
                     (int)got_signal);
        rc = 0;
    } else {
        struct fs_config fc;
        char *fargv[MAX_FUSE_ARGS + 2];
        int fargc = 0;

        fs_config_default(&fc);
        if (o.timeout_ms > 0)
            fc.timeout_ms = o.timeout_ms;
        if (o.chunk_size > 0)
            fc.chunk_size = (uint32_t)o.chunk_size;
        if (o.cache_size > 0)
            fc.cache_bytes = (uint64_t)o.cache_size;
        fc.debug = o.debug;
        fc.data_dir = abs_data;
        fargv[fargc++] = argv[0];
        for (int i = 0; i < o.n_fuse_opts; i++)
            fargv[fargc++] = (char *)o.fuse_opts[i];
        if (o.debug)
            fargv[fargc++] = (char *)"-d";
        fargv[fargc] = NULL;
        pthread_t watcher;
        bool watching =
            pthread_create(&watcher, NULL, leave_watcher, peer) == 0;
        /* libfuse installs its own handlers on this thread. */
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        rc = fs_serve(peer, &fc, abs_mnt, fargc, fargv, report_ready, NULL);
        atomic_store(&serving_done, true);
        if (watching)
            pthread_join(watcher, NULL);
        if (rc < 0) {
            report_error("cannot mount %s: %s", abs_mnt, strerror(-rc));
            rc = 1;
        } else {
            log_info("main", NULL, "%s unmounted", abs_mnt);
            rc = 0;
        }
    }
    dht_peer_stop(peer, true);

out:
    if (o.log_file)
        free((char *)o.log_file);
    free(abs_data);
    free(abs_mnt);
    return rc;
}
