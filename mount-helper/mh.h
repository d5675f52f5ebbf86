/*
 * mount-helper/mh.h - mount.chordfs: mount(8)/fstab syntax -> chordfs argv.
 *
 * mount(8) runs "/sbin/mount.chordfs SOURCE DIR [-sfnv] [-N ns] [-o OPTS]
 * [-t type]". mh_parse_cmdline() reads that; mh_map() turns SOURCE and the
 * option string into the daemon's command line. Plain libc: the helper links
 * none of the project's modules (STYLE.md section 1).
 *
 * Errors are -errno (-EINVAL for a bad invocation) with a one-line message
 * written into the caller's err buffer.
 */
#ifndef CHORDFS_MH_H
#define CHORDFS_MH_H

#include <stdbool.h>
#include <stddef.h>

#define MH_ERR_MAX 256

/* The helper's own command line. Strings point into argv (borrowed). */
struct mh_cmdline {
    const char *source; /* "host:port", "new", "none" or "" */
    const char *mountpoint;
    char *options;          /* every -o joined with ','; malloc'd or NULL */
    const char *namespace_; /* -N: pid or path of a mount namespace */
    const char *type;       /* -t type[.subtype], informational */
    bool fake;              /* -f: do everything but mount */
    bool nomtab;            /* -n: no mtab to write (ours never does) */
    bool sloppy;            /* -s: tolerate bad options */
    bool verbose;           /* -v: say what is run */
    bool dry_run;           /* --dry-run: print the argv and exit */
    bool help;              /* -h/--help */
    bool version;           /* -V/--version */
};

/* A NULL-terminated argument vector; free with mh_argv_free(). */
struct mh_argv {
    int argc;
    char **argv; /* argv[argc] == NULL; each string malloc'd */
};

/*
 * Parse the helper's argv (argv[0] is the program name). On success fills
 * *out (free out->options with mh_cmdline_fini) and returns 0; -EINVAL with
 * err set on a bad invocation.
 */
int mh_parse_cmdline(int argc, char *const argv[], struct mh_cmdline *out,
                     char err[MH_ERR_MAX]);
void mh_cmdline_fini(struct mh_cmdline *c);

/*
 * Map a mount to chordfs's argv:
 *   prog [--bootstrap SOURCE] [--listen A] [--advertise A] [--data-dir D]
 *        [--replicas R] [--network N] [--timeout MS] [--id HEX] [-v L]
 *        [--chunk-size B] [--cache-size B] [--succ-len N] [--log FILE]
 *        [-o PASSTHROUGH] MOUNTPOINT
 * from listen=, advertise=, data_dir= (or data-dir=), replicas=, network=,
 * timeout=, id=, verbose= (or v=; 0-3 or error/warn/info/debug),
 * chunk_size=, cache_size=, succ_len= and log=.
 * SOURCE "new", "none" or "" (or NULL) starts a new ring. options is the
 * comma-separated -o string (double quotes protect commas in a value).
 * fstab-only options (auto, noauto, user, users, nouser, owner, group,
 * _netdev, nofail, defaults, comment=..., x-...) are dropped; every other
 * option goes to chordfs in one "-o" list, after fsname=SOURCE and
 * subtype=chordfs unless the options name their own. A relative data_dir
 * or log is made absolute against cwd (chordfs changes directory when it
 * daemonizes). sloppy: ignore malformed known options instead of failing.
 * Returns 0 with *out filled (mh_argv_free it) or -EINVAL/-ENOMEM with err.
 */
int mh_map(const char *prog, const char *source, const char *mountpoint,
           const char *options, const char *cwd, bool sloppy,
           struct mh_argv *out, char err[MH_ERR_MAX]);
void mh_argv_free(struct mh_argv *a);

/* Whether source names a new ring rather than a bootstrap peer. */
bool mh_source_is_new(const char *source);

/*
 * Render argv as one shell-quoted line (for --dry-run and -v).
 * Returns a malloc'd string the caller free()s, or NULL on OOM.
 */
char *mh_argv_join(const struct mh_argv *a);

/*
 * Find the chordfs binary. Search order: $CHORDFS (taken as is; an error if
 * it is set but not executable), the directory of the helper itself (the
 * resolved self_path, e.g. /proc/self/exe), then each directory of $PATH,
 * then /usr/local/bin, /usr/bin, /bin, /usr/local/sbin, /usr/sbin, /sbin
 * (mount(8) and systemd may run helpers with a short PATH). self_path and
 * path_env may be NULL. Returns a malloc'd path, or NULL with err set.
 */
char *mh_find_chordfs(const char *env_chordfs, const char *self_path,
                      const char *path_env, char err[MH_ERR_MAX]);

#endif
