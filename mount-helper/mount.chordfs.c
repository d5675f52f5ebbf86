/*
 * mount-helper/mount.chordfs.c - the mount(8) helper for chordfs.
 *
 *   mount -t chordfs SOURCE DIR -o listen=HOST:PORT,data_dir=DIR,...
 *   /etc/fstab: 10.0.0.1:4000 /mnt/chord chordfs _netdev,nofail,listen=... 0 0
 *
 * mount(8) runs /sbin/mount.chordfs SOURCE DIR [-sfnv] [-N NS] [-o OPTS].
 * We map that to chordfs's command line (opts.c) and exec chordfs, which
 * daemonizes and exits only once the mount is live or has failed, so
 * mount(8) returns with the file system mounted. Unmounting (umount DIR,
 * fusermount3 -u DIR) ends the daemon. chordfs is looked for in $CHORDFS,
 * next to this helper, on $PATH, then in the usual bin directories.
 *
 * --dry-run (or MOUNT_CHORDFS_DRY_RUN=1 in the environment) prints the
 * command that would run, shell-quoted on one line, and exits 0.
 *
 * Exit status (mount(8) conventions): 0 mounted, 1 bad invocation, 2 system
 * error (chordfs not found, exec failed), else chordfs's own status.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mount-helper/mh.h"

#define MH_VERSION "0.1"

static void usage(FILE *f)
{
    fputs("usage: mount.chordfs SOURCE MOUNTPOINT [-sfnv] [-N NS] "
          "[-o OPTIONS] [--dry-run]\n"
          "  SOURCE   bootstrap HOST:PORT of a ring peer, or new/none for a "
          "new ring\n"
          "  OPTIONS  listen=, advertise=, data_dir=, replicas=, network=, "
          "timeout=,\n"
          "           id=, verbose= (v=), chunk_size=, cache_size=, "
          "succ_len=, log=\n"
          "           map to chordfs flags; auto, noauto, user, users, "
          "nouser, owner,\n"
          "           group, _netdev, nofail, defaults, comment=, x-* are "
          "dropped;\n"
          "           the rest go to chordfs -o.\n"
          "  chordfs is looked for in $CHORDFS, next to this helper, on "
          "$PATH, then in\n"
          "  /usr/local/bin, /usr/bin, /bin, /usr/local/sbin, /usr/sbin, "
          "/sbin.\n",
          f);
}

/* Enter the mount namespace of -N (a pid or a path to a namespace file). */
static int enter_namespace(const char *ns)
{
    char path[PATH_MAX];
    int fd, rc = 0;

    if (strspn(ns, "0123456789") == strlen(ns))
        snprintf(path, sizeof(path), "/proc/%s/ns/mnt", ns);
    else
        snprintf(path, sizeof(path), "%s", ns);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (setns(fd, CLONE_NEWNS) < 0)
        rc = -errno;
    close(fd);
    return rc;
}

int main(int argc, char *argv[])
{
    struct mh_cmdline cl;
    struct mh_argv cmd = {0};
    char err[MH_ERR_MAX] = "";
    char self[PATH_MAX], cwd[PATH_MAX], mnt[PATH_MAX];
    const char *mountpoint, *env;
    char *prog = NULL, *line = NULL;
    ssize_t n;
    int rc, status = 1;

    if (mh_parse_cmdline(argc, argv, &cl, err) < 0) {
        fprintf(stderr, "mount.chordfs: %s\n", err);
        usage(stderr);
        return 1;
    }
    if (cl.help) {
        usage(stdout);
        status = 0;
        goto out;
    }
    if (cl.version) {
        printf("mount.chordfs %s\n", MH_VERSION);
        status = 0;
        goto out;
    }
    env = getenv("MOUNT_CHORDFS_DRY_RUN");
    if (env && env[0] && strcmp(env, "0") != 0)
        cl.dry_run = true;

    /* chordfs changes directory when it daemonizes: pass absolute paths. */
    if (!getcwd(cwd, sizeof(cwd)))
        cwd[0] = '\0';
    mountpoint = cl.mountpoint;
    if (realpath(cl.mountpoint, mnt))
        mountpoint = mnt;
    else if (!cl.dry_run && !cl.fake) {
        fprintf(stderr, "mount.chordfs: mountpoint %s: %s\n", cl.mountpoint,
                strerror(errno));
        status = 32;
        goto out;
    }

    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    self[n > 0 ? n : 0] = '\0';
    prog = mh_find_chordfs(getenv("CHORDFS"), n > 0 ? self : argv[0],
                           getenv("PATH"), err);
    if (!prog) {
        if (!cl.dry_run) {
            fprintf(stderr, "mount.chordfs: %s\n", err);
            status = 2;
            goto out;
        }
        prog = strdup("chordfs");
        if (!prog)
            abort();
    }

    rc = mh_map(prog, cl.source, mountpoint, cl.options, cwd, cl.sloppy, &cmd,
                err);
    if (rc < 0) {
        fprintf(stderr, "mount.chordfs: %s\n", err);
        status = 1;
        goto out;
    }
    line = mh_argv_join(&cmd);
    if (!line)
        abort();
    if (cl.dry_run) {
        printf("%s\n", line);
        status = 0;
        goto out;
    }
    if (cl.verbose)
        fprintf(stderr, "mount.chordfs: running %s\n", line);
    if (cl.fake) {
        status = 0;
        goto out;
    }
    if (cl.namespace_ && (rc = enter_namespace(cl.namespace_)) < 0) {
        fprintf(stderr, "mount.chordfs: namespace %s: %s\n", cl.namespace_,
                strerror(-rc));
        status = 2;
        goto out;
    }
    fflush(NULL);
    execv(cmd.argv[0], cmd.argv);
    fprintf(stderr, "mount.chordfs: exec %s: %s\n", cmd.argv[0],
            strerror(errno));
    status = 2;
out:
    free(line);
    free(prog);
    mh_argv_free(&cmd);
    mh_cmdline_fini(&cl);
    return status;
}
