/*
 * mount-helper/opts.c - the helper's command line, the mount-option to
 * chordfs-flag mapping, and the search for the chordfs binary.
 *
 * Everything here is pure (no exec, no global state) so that
 * tests/unit/test_mount_helper.c can drive it directly. Ownership follows
 * mh.h: returned strings and vectors are malloc'd and owned by the caller.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mount-helper/mh.h"

/* What a chordfs option value must look like. */
enum mh_val {
    MH_VAL_STRING, /* any non-empty string */
    MH_VAL_UINT,   /* decimal digits */
    MH_VAL_PATH,   /* a path; made absolute against cwd */
    MH_VAL_SIZE,   /* digits with an optional K/M/G suffix */
    MH_VAL_LEVEL,  /* a log level: 0-3 or error, warn, info, debug */
};

/* A mount option that becomes a chordfs flag with a value. */
struct mh_flag_opt {
    const char *name; /* as written in -o / fstab */
    const char *flag; /* chordfs's flag */
    enum mh_val val;
};

/* Aliases share a flag; the last one given wins (mount(8) semantics). */
static const struct mh_flag_opt flag_opts[] = {
    {"listen", "--listen", MH_VAL_STRING},
    {"advertise", "--advertise", MH_VAL_STRING},
    {"data_dir", "--data-dir", MH_VAL_PATH},
    {"data-dir", "--data-dir", MH_VAL_PATH},
    {"replicas", "--replicas", MH_VAL_UINT},
    {"network", "--network", MH_VAL_STRING},
    {"timeout", "--timeout", MH_VAL_UINT},
    {"id", "--id", MH_VAL_STRING},
    {"verbose", "-v", MH_VAL_LEVEL},
    {"v", "-v", MH_VAL_LEVEL},
    {"chunk_size", "--chunk-size", MH_VAL_SIZE},
    {"cache_size", "--cache-size", MH_VAL_SIZE},
    {"succ_len", "--succ-len", MH_VAL_UINT},
    {"log", "--log", MH_VAL_PATH},
};
#define N_FLAG_OPTS (sizeof(flag_opts) / sizeof(flag_opts[0]))

/* Distinct flags, in the order they are emitted. */
static const char *const flag_order[] = {
    "--listen",     "--advertise",  "--data-dir", "--replicas",
    "--network",    "--timeout",    "--id",       "-v",
    "--chunk-size", "--cache-size", "--succ-len", "--log",
};
#define N_FLAGS (sizeof(flag_order) / sizeof(flag_order[0]))

/*
 * fstab-only options: they steer mount(8), systemd or the boot, not the file
 * system (libfuse's mount.fuse.c drops the same). mount(8) already strips
 * some of them before calling a helper, but not all, and a helper run by hand
 * sees them all.
 */
static const char *const fstab_only[] = {
    "auto",  "noauto", "user",    "users",  "nouser",
    "owner", "group",  "_netdev", "nofail", "defaults",
};
static const char *const fstab_only_prefix[] = {"comment=", "x-", "user="};

static void set_err(char err[MH_ERR_MAX], const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_err(char err[MH_ERR_MAX], const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(err, MH_ERR_MAX, fmt, ap);
    va_end(ap);
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);

    if (!p)
        abort();
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);

    if (!q)
        abort();
    return q;
}

/* Append one string (copied) to a vector, keeping it NULL-terminated. */
static void argv_push(struct mh_argv *a, const char *s)
{
    a->argv = xrealloc(a->argv, sizeof(char *) * ((size_t)a->argc + 2));
    a->argv[a->argc++] = xstrdup(s);
    a->argv[a->argc] = NULL;
}

void mh_argv_free(struct mh_argv *a)
{
    if (!a)
        return;
    for (int i = 0; i < a->argc; i++)
        free(a->argv[i]);
    free(a->argv);
    a->argv = NULL;
    a->argc = 0;
}

void mh_cmdline_fini(struct mh_cmdline *c)
{
    free(c->options);
    c->options = NULL;
}

bool mh_source_is_new(const char *source)
{
    return !source || !source[0] || strcmp(source, "new") == 0 ||
           strcmp(source, "none") == 0;
}

/* Append ",more" (or "more") to a malloc'd option list. */
static char *opts_append(char *list, const char *more, size_t more_len)
{
    size_t old = list ? strlen(list) : 0;
    char *p = xrealloc(list, old + more_len + 2);

    if (old)
        p[old++] = ',';
    memcpy(p + old, more, more_len);
    p[old + more_len] = '\0';
    return p;
}

int mh_parse_cmdline(int argc, char *const argv[], struct mh_cmdline *out,
                     char err[MH_ERR_MAX])
{
    int npos = 0;
    bool only_pos = false;

    memset(out, 0, sizeof(*out));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (only_pos || a[0] != '-' || a[1] == '\0') {
            if (npos == 0)
                out->source = a;
            else if (npos == 1)
                out->mountpoint = a;
            else {
                set_err(err, "unexpected argument '%s'", a);
                goto err;
            }
            npos++;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(a, "--dry-run") == 0) {
            out->dry_run = true;
            continue;
        }
        if (strcmp(a, "--help") == 0) {
            out->help = true;
            continue;
        }
        if (strcmp(a, "--version") == 0) {
            out->version = true;
            continue;
        }
        if (a[1] == '-') {
            set_err(err, "unknown option '%s'", a);
            goto err;
        }
        /* Clustered short flags: -sfnv, -o OPTS, -oOPTS. */
        for (const char *f = a + 1; *f; f++) {
            const char *val;

            switch (*f) {
            case 'f':
                out->fake = true;
                continue;
            case 'n':
                out->nomtab = true;
                continue;
            case 's':
                out->sloppy = true;
                continue;
            case 'v':
                out->verbose = true;
                continue;
            case 'h':
                out->help = true;
                continue;
            case 'V':
                out->version = true;
                continue;
            case 'o':
            case 't':
            case 'N':
                break;
            default:
                set_err(err, "unknown option '-%c'", *f);
                goto err;
            }
            if (f[1])
                val = f + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else {
                set_err(err, "option '-%c' needs a value", *f);
                goto err;
            }
            if (*f == 'o') {
                if (val[0])
                    out->options = opts_append(out->options, val, strlen(val));
            } else if (*f == 't')
                out->type = val;
            else
                out->namespace_ = val;
            break;
        }
    }
    if (!out->help && !out->version && npos < 2) {
        set_err(err, "usage: mount.chordfs SOURCE MOUNTPOINT [-o OPTIONS]");
        goto err;
    }
    return 0;
err:
    mh_cmdline_fini(out);
    return -EINVAL;
}

/* Whether s (length n) is decimal digits, optionally with one suffix. */
static bool valid_number(const char *s, bool suffix_ok)
{
    size_t n = strlen(s), digits = strspn(s, "0123456789");

    if (digits == 0 || n > 19)
        return false;
    if (digits == n)
        return true;
    return suffix_ok && digits + 1 == n && strchr("kKmMgG", s[digits]);
}

/* Strip one pair of surrounding double quotes (libmount's quoting). */
static char *unquote(const char *v, size_t n)
{
    char *s;

    if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
        v++;
        n -= 2;
    }
    s = xrealloc(NULL, n + 1);
    memcpy(s, v, n);
    s[n] = '\0';
    return s;
}

static bool is_fstab_only(const char *o, size_t n)
{
    for (size_t i = 0; i < sizeof(fstab_only) / sizeof(fstab_only[0]); i++)
        if (strlen(fstab_only[i]) == n && memcmp(o, fstab_only[i], n) == 0)
            return true;
    for (size_t i = 0;
         i < sizeof(fstab_only_prefix) / sizeof(fstab_only_prefix[0]); i++) {
        size_t pl = strlen(fstab_only_prefix[i]);

        if (n >= pl && memcmp(o, fstab_only_prefix[i], pl) == 0)
            return true;
    }
    return false;
}

static bool has_opt_prefix(const char *list, const char *prefix)
{
    size_t pl = strlen(prefix);

    for (const char *p = list; p && *p;) {
        if (strncmp(p, prefix, pl) == 0)
            return true;
        p = strchr(p, ',');
        if (p)
            p++;
    }
    return false;
}

/* An absolute form of path against cwd; malloc'd. */
static char *absolute(const char *path, const char *cwd)
{
    size_t lc;
    char *s;

    if (path[0] == '/' || !cwd || !cwd[0])
        return xstrdup(path);
    lc = strlen(cwd);
    s = xrealloc(NULL, lc + strlen(path) + 2);
    memcpy(s, cwd, lc);
    if (lc && cwd[lc - 1] != '/')
        s[lc++] = '/';
    strcpy(s + lc, path);
    return s;
}

int mh_map(const char *prog, const char *source, const char *mountpoint,
           const char *options, const char *cwd, bool sloppy,
           struct mh_argv *out, char err[MH_ERR_MAX])
{
    char *vals[N_FLAGS] = {0};
    char *pass = NULL; /* pass-through -o list */
    char *extra = NULL;
    const char *p = options ? options : "";
    int rc = -EINVAL;

    memset(out, 0, sizeof(*out));
    if (!mountpoint || !mountpoint[0]) {
        set_err(err, "no mountpoint given");
        return -EINVAL;
    }
    while (*p) {
        const char *start = p, *eq;
        bool quoted = false;
        size_t n, name_len;

        /* One option runs to the next comma outside double quotes. */
        while (*p && (quoted || *p != ',')) {
            if (*p == '"')
                quoted = !quoted;
            p++;
        }
        n = (size_t)(p - start);
        if (*p == ',')
            p++;
        if (n == 0)
            continue;
        if (is_fstab_only(start, n))
            continue;
        eq = memchr(start, '=', n);
        name_len = eq ? (size_t)(eq - start) : n;

        size_t k;
        for (k = 0; k < N_FLAG_OPTS; k++)
            if (strlen(flag_opts[k].name) == name_len &&
                memcmp(start, flag_opts[k].name, name_len) == 0)
                break;
        if (k == N_FLAG_OPTS) {
            pass = opts_append(pass, start, n);
            continue;
        }

        const struct mh_flag_opt *fo = &flag_opts[k];
        char *v = eq ? unquote(eq + 1, n - name_len - 1) : xstrdup("");
        bool ok = v[0] != '\0';

        if (ok && fo->val == MH_VAL_UINT)
            ok = valid_number(v, false);
        if (ok && fo->val == MH_VAL_SIZE)
            ok = valid_number(v, true);
        if (ok && fo->val == MH_VAL_LEVEL)
            ok = (strlen(v) == 1 && v[0] >= '0' && v[0] <= '3') ||
                 strcmp(v, "error") == 0 || strcmp(v, "warn") == 0 ||
                 strcmp(v, "info") == 0 || strcmp(v, "debug") == 0;
        if (!ok) {
            free(v);
            if (sloppy)
                continue;
            set_err(err, "bad value for option '%.*s'", (int)name_len, start);
            goto out;
        }
        if (fo->val == MH_VAL_PATH) {
            char *abs = absolute(v, cwd);

            free(v);
            v = abs;
        }
        for (size_t j = 0; j < N_FLAGS; j++)
            if (strcmp(flag_order[j], fo->flag) == 0) {
                free(vals[j]);
                vals[j] = v;
                v = NULL;
            }
        free(v);
    }

    argv_push(out, prog ? prog : "chordfs");
    if (!mh_source_is_new(source)) {
        argv_push(out, "--bootstrap");
        argv_push(out, source);
    }
    for (size_t j = 0; j < N_FLAGS; j++)
        if (vals[j]) {
            argv_push(out, flag_order[j]);
            argv_push(out, vals[j]);
        }

    /* Name the mount after its source in /proc/mounts (as sshfs does), so
     * that "mount -a" sees an fstab line as already mounted. */
    if (!has_opt_prefix(pass, "fsname=")) {
        const char *name = source && source[0] ? source : "chordfs";

        if (!strpbrk(name, ",\\\"")) {
            extra = opts_append(NULL, "fsname=", 7);
            extra = xrealloc(extra, strlen(extra) + strlen(name) + 1);
            strcat(extra, name);
        }
    }
    if (!has_opt_prefix(pass, "subtype="))
        extra = opts_append(extra, "subtype=chordfs", 15);
    if (pass)
        extra = opts_append(extra, pass, strlen(pass));
    argv_push(out, "-o");
    argv_push(out, extra);
    argv_push(out, mountpoint);
    rc = 0;
out:
    for (size_t j = 0; j < N_FLAGS; j++)
        free(vals[j]);
    free(pass);
    free(extra);
    if (rc < 0)
        mh_argv_free(out);
    return rc;
}

/* Whether a word needs no quoting in a POSIX shell. */
static bool shell_safe(const char *s)
{
    return s[0] && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvw"
                             "xyz0123456789_@%+=:,./-") == strlen(s);
}

char *mh_argv_join(const struct mh_argv *a)
{
    size_t cap = 1, len = 0;
    char *s;

    for (int i = 0; i < a->argc; i++)
        cap += 4 * strlen(a->argv[i]) + 3;
    s = malloc(cap);
    if (!s)
        return NULL;
    for (int i = 0; i < a->argc; i++) {
        const char *w = a->argv[i];

        if (i)
            s[len++] = ' ';
        if (shell_safe(w)) {
            memcpy(s + len, w, strlen(w));
            len += strlen(w);
            continue;
        }
        s[len++] = '\'';
        for (; *w; w++) {
            if (*w == '\'') {
                memcpy(s + len, "'\\''", 4);
                len += 4;
            } else
                s[len++] = *w;
        }
        s[len++] = '\'';
    }
    s[len] = '\0';
    return s;
}

static bool is_executable(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
           access(path, X_OK) == 0;
}

/* dir + "/chordfs" if that is executable; malloc'd, else NULL. */
static char *try_dir(const char *dir, size_t n)
{
    char *c;

    if (n == 0)
        return NULL;
    c = xrealloc(NULL, n + sizeof("/chordfs"));
    memcpy(c, dir, n);
    strcpy(c + n, "/chordfs");
    if (is_executable(c))
        return c;
    free(c);
    return NULL;
}

char *mh_find_chordfs(const char *env_chordfs, const char *self_path,
                      const char *path_env, char err[MH_ERR_MAX])
{
    static const char *const fallback[] = {
        "/usr/local/bin",  "/usr/bin",  "/bin",
        "/usr/local/sbin", "/usr/sbin", "/sbin",
    };
    const char *slash;
    char *c;

    if (env_chordfs && env_chordfs[0]) {
        if (is_executable(env_chordfs))
            return xstrdup(env_chordfs);
        set_err(err, "$CHORDFS=%s is not an executable file", env_chordfs);
        return NULL;
    }
    if (self_path && (slash = strrchr(self_path, '/')) &&
        (c = try_dir(self_path, (size_t)(slash - self_path))))
        return c;
    for (const char *p = path_env; p && *p;) {
        const char *end = strchrnul(p, ':');

        if ((c = try_dir(p, (size_t)(end - p))))
            return c;
        p = *end ? end + 1 : end;
    }
    for (size_t i = 0; i < sizeof(fallback) / sizeof(fallback[0]); i++)
        if ((c = try_dir(fallback[i], strlen(fallback[i]))))
            return c;
    set_err(err, "chordfs not found (looked in $CHORDFS, next to "
                 "mount.chordfs, $PATH and /usr/local/bin:/usr/bin:/bin)");
    return NULL;
}
