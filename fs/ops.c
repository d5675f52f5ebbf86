/*
 * fs/ops.c - the FUSE operations (high-level libfuse API) and fs_serve().
 *
 * Every operation works on paths: it reads and writes the records that
 * layout.c names (meta:<path>, dir:<path>) and hands file bytes to file.c.
 * The ring is reached only through the client API; a ring error surfaces
 * as -ETIMEDOUT or -EIO, and since every client call is bounded by the
 * peer's operation timeout (--timeout) and an operation stops at its first
 * ring error, no operation hangs when the ring is unreachable.
 *
 * Kernel cache defaults: entry and attribute timeouts of 1 s
 * (fs_config.attr_timeout_s; -o attr_timeout=/entry_timeout= given by the
 * user win), no negative caching (a name created by another mount is seen
 * at once), keep_cache off (the page cache of a file is dropped on open,
 * which with flush on close gives close-to-open consistency), no writeback
 * cache in the kernel (write-back is ours, file.c). So another mount sees
 * a removal or an attribute change within 1 s, and new names at once.
 *
 * Chunk size (--chunk-size, default 128 KiB), chosen by measuring a 100 MiB
 * cp (write) and sha1sum (read, on the writing mount and another one) on
 * loopback, 2 CPUs shared with other work (load 2.5-4); ranges over 3-12
 * runs, MiB/s:
 *               1 peer                 3 peers (replicas 3)
 *             write    read          write    read
 *     64 KiB  375-472  225-315        85-275  139-347
 *    128 KiB  386-419  314-350       164-288  192-328
 *    256 KiB  257-332  259-350       131-285  162-367
 *      1 MiB  142-232  247-325        62-94   204-333
 * 1 MiB loses writes by half or more once every chunk is replicated as a
 * megabyte frame; 64 KiB is as fast at best but the least steady, and
 * makes twice the keys, records and ring operations per byte of 128 KiB.
 * 128 KiB is best or near it everywhere with the least spread, equals the
 * I/O size of cp, cat and friends (coreutils use 128 KiB buffers, each a
 * FUSE write of its own without a kernel writeback cache), so each write
 * of a sequential copy fills exactly one chunk with no read-modify-write,
 * and bounds the rewrite caused by a small update to 128 KiB per replica.
 *
 * What is not supported fails clearly: hard links (EPERM, as link(2)
 * documents for file systems without them), RENAME_EXCHANGE and other
 * rename flags but RENAME_NOREPLACE (EINVAL), xattrs outside user.*
 * (ENOTSUP to set, ENODATA to get), setting user.chord.* (EPERM), any
 * change under /.chord (EACCES). Names over 255 bytes: ENAMETOOLONG.
 * Access times are not updated (as noatime). A directory's mtime and ctime
 * move when entries are added, removed or renamed through it. POSIX and BSD
 * locks are not part of the ring: without lock operations the kernel keeps them
 * per mount, so they exclude processes of one mount only. fallocate, special
 * files (mknod of fifos, sockets, devices: EPERM) are not supported.
 */
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "fs/fs-int.h"
#include "proto/wire.h"

#define XATTR_KEY      "user.chord.key"
#define XATTR_PRIMARY  "user.chord.primary"
#define XATTR_REPLICAS "user.chord.replicas"
#define XATTR_VIRT_PFX "user.chord."
#define MAX_REPLICAS   16

/* What fi->fh points to. */
struct handle {
    struct fs_file *file; /* regular file, or NULL */
    char *text;           /* /.chord file content, malloc'd */
    size_t len;
};

static struct fs *get_fs(void)
{
    return fuse_get_context()->private_data;
}

static void fill_random(void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);

        if (n <= 0)
            continue;
        p += n;
        len -= (size_t)n;
    }
}

/* A fresh inode owned by the caller, honouring a setgid parent. */
static void inode_new(struct fs *fs, struct fs_inode *ino, enum fs_kind kind,
                      mode_t mode, const struct fs_inode *parent)
{
    struct fuse_context *ctx = fuse_get_context();
    int64_t now = fs_now_ns();

    memset(ino, 0, sizeof *ino);
    ino->kind = kind;
    ino->mode = mode & 07777;
    ino->uid = ctx->uid;
    ino->gid = ctx->gid;
    if (parent && (parent->mode & S_ISGID)) {
        ino->gid = parent->gid;
        if (kind == FS_DIR)
            ino->mode |= S_ISGID;
    }
    ino->atime_ns = ino->mtime_ns = ino->ctime_ns = now;
    do {
        fill_random(&ino->ino, sizeof ino->ino);
        ino->ino &= 0x7fffffffffffffffull;
    } while (ino->ino <= FS_ROOT_INO);
    if (kind == FS_REG) {
        fill_random(ino->uuid, FS_UUID_LEN);
        ino->has_uuid = true;
        ino->chunk_size = fs->cfg.chunk_size;
    }
}

/* Create the root's record if missing; create-only, so racing mounts
 * agree on one. */
static int ensure_root(struct fs *fs)
{
    struct fs_inode root;
    int rc;

    rc = fs_inode_get(fs, "/", &root, NULL);
    if (rc == 0) {
        fs_inode_fini(&root);
        return 0;
    }
    if (rc != -ENOENT)
        return rc;
    memset(&root, 0, sizeof root);
    root.kind = FS_DIR;
    root.mode = 0755;
    root.uid = getuid();
    root.gid = getgid();
    root.atime_ns = root.mtime_ns = root.ctime_ns = fs_now_ns();
    root.ino = FS_ROOT_INO;
    rc = fs_inode_put(fs, "/", &root, 0, NULL);
    if (rc == 0)
        log_info("fs", fs->node, "created the root directory");
    return rc == -EEXIST ? 0 : rc;
}

/* Inode of path; "/" is created on demand. */
static int get_inode(struct fs *fs, const char *path, struct fs_inode *ino,
                     uint64_t *version)
{
    int rc = fs_inode_get(fs, path, ino, version);

    if (rc == -ENOENT && strcmp(path, "/") == 0) {
        rc = ensure_root(fs);
        if (rc == 0)
            rc = fs_inode_get(fs, path, ino, version);
    }
    return rc;
}

/* Overlay what this mount knows of an open file (unflushed size/mtime). */
static void overlay_open(struct fs *fs, const struct fs_inode *ino,
                         struct stat *st)
{
    struct fs_file *f;
    uint64_t size;
    int64_t mtime;

    if (ino->kind != FS_REG)
        return;
    f = fs_file_find(fs, ino->uuid);
    if (!f)
        return;
    fs_file_attrs(f, &size, &mtime);
    fs_file_unref(fs, f);
    st->st_size = (off_t)size;
    st->st_blocks = (blkcnt_t)((size + 511) / 512);
    st->st_mtim.tv_sec = (time_t)(mtime / 1000000000);
    st->st_mtim.tv_nsec = (long)(mtime % 1000000000);
}

/* Parent of path must exist and be a directory; fills *parent. */
static int get_parent(struct fs *fs, const char *path, char *pbuf, size_t psize,
                      const char **name, struct fs_inode *parent,
                      uint64_t *version)
{
    int rc = fs_path_split(path, pbuf, psize, name);

    if (rc < 0)
        return rc;
    rc = fs_name_check(*name);
    if (rc < 0)
        return rc;
    rc = get_inode(fs, pbuf, parent, version);
    if (rc < 0)
        return rc;
    if (parent->kind != FS_DIR) {
        fs_inode_fini(parent);
        return -ENOTDIR;
    }
    return 0;
}

static int edit_dir_times(struct fs_inode *ino, void *arg)
{
    (void)arg;
    if (ino->kind != FS_DIR)
        return 1;
    ino->mtime_ns = ino->ctime_ns = fs_now_ns();
    return 0;
}

/* A directory's entries changed: its mtime and ctime move (compare-and-set,
 * so concurrent changes from two mounts never lose an update). The entry
 * change itself has happened; a failure here is only logged. */
static void touch_dir(struct fs *fs, const char *dir)
{
    int rc = fs_inode_update(fs, dir, edit_dir_times, NULL);

    if (rc < 0 && rc != -ENOENT)
        log_warn("fs", fs->node, "times of %s not updated: %s", dir,
                 strerror(-rc));
}

/* touch_dir() for a directory we have just read at version: one ring call
 * (compare-and-set against what we read) instead of a read and a write; a
 * lost race falls back to the read-modify-write loop. */
static void touch_dir_known(struct fs *fs, const char *dir,
                            struct fs_inode *ino, uint64_t version)
{
    int rc;

    edit_dir_times(ino, NULL);
    rc = fs_inode_put(fs, dir, ino, version, NULL);
    if (rc == -ESTALE)
        touch_dir(fs, dir);
    else if (rc < 0 && rc != -ENOENT)
        log_warn("fs", fs->node, "times of %s not updated: %s", dir,
                 strerror(-rc));
}

/* ----------------------------------------------------------- attributes */

/*
 * Attributes handed from readdir to getattr. libfuse's high-level
 * readdirplus calls getattr on every entry it fills, one after another;
 * readdir has just fetched all of them in parallel batches, so getattr
 * takes its entry from here instead of reading the ring again. An entry is
 * taken at most once and only within PLUS_HANDOFF_MS of the listing, so
 * what getattr returns is exactly what the listing saw.
 */
#define PLUS_SLOTS      512
#define PLUS_HANDOFF_MS 200

static struct plus_slot {
    char *path; /* malloc'd; NULL: empty */
    struct stat st;
    uint64_t when_ms;
} plus_slots[PLUS_SLOTS]; /* protected by plus_lock */
static pthread_mutex_t plus_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned plus_hash(const char *path)
{
    unsigned h = 2166136261u;

    for (; *path; path++)
        h = (h ^ (unsigned char)*path) * 16777619u;
    return h % PLUS_SLOTS;
}

static void plus_stash(const char *path, const struct stat *st)
{
    struct plus_slot *sl = &plus_slots[plus_hash(path)];

    pthread_mutex_lock(&plus_lock);
    free(sl->path);
    sl->path = wire_xstrdup(path);
    sl->st = *st;
    sl->when_ms = fs_mono_ms();
    pthread_mutex_unlock(&plus_lock);
}

static bool plus_take(const char *path, struct stat *st)
{
    struct plus_slot *sl = &plus_slots[plus_hash(path)];
    bool hit = false;

    pthread_mutex_lock(&plus_lock);
    if (sl->path && strcmp(sl->path, path) == 0) {
        hit = fs_mono_ms() - sl->when_ms <= PLUS_HANDOFF_MS;
        if (hit)
            *st = sl->st;
        free(sl->path);
        sl->path = NULL;
    }
    pthread_mutex_unlock(&plus_lock);
    return hit;
}

static int op_getattr(const char *path, struct stat *st,
                      struct fuse_file_info *fi)
{
    struct fs *fs = get_fs();
    struct fs_inode ino;
    int rc;

    (void)fi;
    if (fs_chord_is(path))
        return fs_chord_getattr(fs, path, st);
    rc = fs_path_check(path);
    if (rc < 0)
        return rc;
    if (plus_take(path, st))
        return 0;
    rc = get_inode(fs, path, &ino, NULL);
    if (rc < 0)
        return rc;
    fs_inode_to_stat(&ino, st);
    overlay_open(fs, &ino, st);
    fs_inode_fini(&ino);
    return 0;
}

static int op_access(const char *path, int mask)
{
    struct fs *fs = get_fs();
    struct fuse_context *ctx = fuse_get_context();
    struct fs_inode ino;
    unsigned bits;
    int rc;

    if (fs_chord_is(path))
        return (mask & W_OK) ? -EACCES : 0;
    rc = get_inode(fs, path, &ino, NULL);
    if (rc < 0)
        return rc;
    if (mask == F_OK)
        goto out;
    if (ctx->uid == 0) {
        /* root may do anything but execute what no one may execute */
        if ((mask & X_OK) && ino.kind != FS_DIR && !(ino.mode & 0111))
            rc = -EACCES;
        goto out;
    }
    if (ctx->uid == ino.uid)
        bits = (ino.mode >> 6) & 7;
    else if (ctx->gid == ino.gid)
        bits = (ino.mode >> 3) & 7;
    else
        bits = ino.mode & 7;
    if (((mask & R_OK) && !(bits & 4)) || ((mask & W_OK) && !(bits & 2)) ||
        ((mask & X_OK) && !(bits & 1)))
        rc = -EACCES;
out:
    fs_inode_fini(&ino);
    return rc;
}

static int edit_chmod(struct fs_inode *ino, void *arg)
{
    ino->mode = *(mode_t *)arg & 07777;
    ino->ctime_ns = fs_now_ns();
    return 0;
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    (void)fi;
    if (fs_chord_is(path))
        return -EACCES;
    return fs_inode_update(get_fs(), path, edit_chmod, &mode);
}

struct owner {
    uid_t uid;
    gid_t gid;
};

static int edit_chown(struct fs_inode *ino, void *arg)
{
    struct owner *o = arg;

    if (o->uid != (uid_t)-1)
        ino->uid = o->uid;
    if (o->gid != (gid_t)-1)
        ino->gid = o->gid;
    /* chown clears set-user/group-id bits of non-directories */
    if (ino->kind == FS_REG)
        ino->mode &= ~(mode_t)(S_ISUID | S_ISGID);
    ino->ctime_ns = fs_now_ns();
    return 0;
}

static int op_chown(const char *path, uid_t uid, gid_t gid,
                    struct fuse_file_info *fi)
{
    struct owner o = {uid, gid};

    (void)fi;
    if (fs_chord_is(path))
        return -EACCES;
    return fs_inode_update(get_fs(), path, edit_chown, &o);
}

static int edit_utimens(struct fs_inode *ino, void *arg)
{
    const struct timespec *tv = arg;
    int64_t now = fs_now_ns();

    for (int i = 0; i < 2; i++) {
        int64_t t;

        if (tv[i].tv_nsec == UTIME_OMIT)
            continue;
        if (tv[i].tv_nsec == UTIME_NOW)
            t = now;
        else
            t = (int64_t)tv[i].tv_sec * 1000000000 + tv[i].tv_nsec;
        if (i == 0)
            ino->atime_ns = t;
        else
            ino->mtime_ns = t;
    }
    ino->ctime_ns = now;
    return 0;
}

static int op_utimens(const char *path, const struct timespec tv[2],
                      struct fuse_file_info *fi)
{
    struct fs *fs = get_fs();
    struct timespec t[2];
    struct fs_inode ino;
    struct fs_file *f = NULL;
    int rc;

    (void)fi;
    if (fs_chord_is(path))
        return -EACCES;
    t[0] = tv[0];
    t[1] = tv[1];
    /* Flush an open file first, so its pending mtime does not override
     * the one set here. */
    if (fs_inode_get(fs, path, &ino, NULL) == 0) {
        if (ino.kind == FS_REG)
            f = fs_file_find(fs, ino.uuid);
        fs_inode_fini(&ino);
    }
    if (f) {
        rc = fs_file_flush(fs, f, path);
        fs_file_unref(fs, f);
        if (rc < 0)
            return rc;
    }
    rc = fs_inode_update(fs, path, edit_utimens, t);
    if (rc == 0 && t[1].tv_nsec != UTIME_OMIT &&
        fs_inode_get(fs, path, &ino, NULL) == 0) {
        /* Keep an open file's view of mtime in step: revalidating it
         * (it has nothing unwritten now) takes the record's times. */
        f = ino.kind == FS_REG ? fs_file_find(fs, ino.uuid) : NULL;
        if (f) {
            struct fs_file *again;

            fs_file_open(fs, &ino, &again);
            fs_file_unref(fs, again);
            fs_file_unref(fs, f);
        }
        fs_inode_fini(&ino);
    }
    return rc;
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    (void)fi;
    if (fs_chord_is(path))
        return -EACCES;
    if (size < 0)
        return -EINVAL;
    return fs_file_truncate(get_fs(), path, (uint64_t)size);
}

/* ---------------------------------------------------------- directories */

struct fill_ctx {
    void *buf;
    fuse_fill_dir_t filler;
};

static int chord_fill(void *arg, const char *name, bool is_dir)
{
    struct fill_ctx *c = arg;
    char path[FS_PATH_MAX];
    struct stat st;

    (void)is_dir;
    snprintf(path, sizeof path, "%s/%s", FS_CHORD_DIR, name);
    fs_chord_getattr(get_fs(), path, &st);
    return c->filler(c->buf, name, &st, 0, 0);
}

/* A stand-in d_ino for an entry listed without its record: readdir(3)
 * skips entries whose d_ino is 0, so it must not be. */
static ino_t name_ino(const char *dir, const char *name)
{
    uint64_t h = 1469598103934665603ull;

    for (const char *p = dir; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    h = (h ^ '/') * 1099511628211ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return (ino_t)((h & 0x7fffffffffffffffull) | 2);
}

static int op_opendir(const char *path, struct fuse_file_info *fi)
{
    struct fs *fs = get_fs();
    struct fs_inode ino;
    int rc;

    (void)fi;
    if (fs_chord_is(path))
        return strcmp(path, FS_CHORD_DIR) == 0 ? 0 : -ENOTDIR;
    rc = get_inode(fs, path, &ino, NULL);
    if (rc < 0)
        return rc;
    if (ino.kind != FS_DIR)
        rc = -ENOTDIR;
    fs_inode_fini(&ino);
    return rc;
}

/* readdirplus: fetch the entries' records in parallel windows and hand the
 * kernel full attributes, so ls -l costs a few rounds of parallel gets
 * instead of a getattr per name. An entry whose record cannot be had is
 * listed with its kind only; after a ring error the rest are too, so a
 * dead ring costs one timeout, not one per window. */
#define PLUS_WINDOW 256

static void fill_plus(struct fs *fs, const char *path, struct fs_dirent *d,
                      size_t n, void *buf, fuse_fill_dir_t filler)
{
    bool ring_ok = true;

    for (size_t base = 0; base < n; base += PLUS_WINDOW) {
        size_t w = n - base < PLUS_WINDOW ? n - base : PLUS_WINDOW;
        struct fs_batch *b = fs_batch_new(fs, w);
        bool ok[PLUS_WINDOW] = {false};

        for (size_t i = 0; ring_ok && i < w; i++) {
            char child[FS_PATH_MAX], key[FS_KEY_MAX];

            if (fs_path_join(path, d[base + i].name, child, sizeof child) ==
                    0 &&
                fs_key_meta(child, key, sizeof key) == 0)
                ok[i] = fs_batch_get(b, i, key) == 0;
        }
        fs_batch_wait(b);
        for (size_t i = 0; i < w; i++) {
            const struct fs_dirent *e = &d[base + i];
            struct stat st;
            struct fs_inode ino;
            const void *val = NULL;
            size_t len = 0;
            bool full = false;
            int err = ok[i] ? fs_batch_result(b, i, &val, &len) : -EIO;

            memset(&st, 0, sizeof st);
            if (ok[i] && err != 0 && err != -ENOENT)
                ring_ok = false;
            if (err == 0 && fs_inode_decode(val, len, &ino) == 0) {
                fs_inode_to_stat(&ino, &st);
                overlay_open(fs, &ino, &st);
                fs_inode_fini(&ino);
                full = true;
            } else {
                st.st_mode = e->kind == FS_DIR       ? S_IFDIR
                             : e->kind == FS_SYMLINK ? S_IFLNK
                                                     : S_IFREG;
                st.st_ino = name_ino(path, e->name);
            }
            if (full) {
                char child[FS_PATH_MAX];
                if (fs_path_join(path, e->name, child, sizeof child) == 0)
                    plus_stash(child, &st);
            }
            if (filler(buf, e->name, &st, 0, full ? FUSE_FILL_DIR_PLUS : 0)) {
                fs_batch_free(b);
                return;
            }
        }
        fs_batch_free(b);
    }
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler,
                      off_t off, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags)
{
    struct fs *fs = get_fs();
    struct fs_dirent *d;
    size_t n;
    int rc;

    (void)off;
    (void)fi;
    if (fs_chord_is(path)) {
        struct fill_ctx c = {buf, filler};

        filler(buf, ".", NULL, 0, 0);
        filler(buf, "..", NULL, 0, 0);
        return fs_chord_readdir(path, chord_fill, &c);
    }
    rc = fs_dir_list(fs, path, &d, &n);
    if (rc < 0)
        return rc;
    filler(buf, ".", NULL, 0, 0);
    filler(buf, "..", NULL, 0, 0);
    if (strcmp(path, "/") == 0) {
        struct stat st;

        fs_chord_getattr(fs, FS_CHORD_DIR, &st);
        filler(buf, FS_CHORD_DIR + 1, &st, 0, 0);
    }
    if (flags & FUSE_READDIR_PLUS) {
        fill_plus(fs, path, d, n, buf, filler);
    } else {
        /* Entries carry their kind: d_type without a getattr each. */
        for (size_t i = 0; i < n; i++) {
            struct stat st;

            memset(&st, 0, sizeof st);
            st.st_mode = d[i].kind == FS_DIR       ? S_IFDIR
                         : d[i].kind == FS_SYMLINK ? S_IFLNK
                                                   : S_IFREG;
            st.st_ino = name_ino(path, d[i].name);
            if (filler(buf, d[i].name, &st, 0, 0))
                break;
        }
    }
    fs_dirents_free(d, n);
    return 0;
}

/* Create the record at path and its entry in the parent. */
static int make_node(struct fs *fs, const char *path, enum fs_kind kind,
                     mode_t mode, const char *target, struct fs_inode *out)
{
    char parent_path[FS_PATH_MAX];
    const char *name;
    struct fs_inode parent, ino;
    uint64_t pver = 0;
    int rc;

    if (fs_chord_is(path))
        return -EACCES;
    rc = get_parent(fs, path, parent_path, sizeof parent_path, &name, &parent,
                    &pver);
    if (rc < 0)
        return rc;
    inode_new(fs, &ino, kind, mode, &parent);
    if (target)
        ino.target = wire_xstrdup(target);
    rc = fs_inode_put(fs, path, &ino, 0, NULL);
    if (rc == 0) {
        rc = fs_dirent_add(fs, parent_path, name, kind);
        if (rc == 0)
            touch_dir_known(fs, parent_path, &parent, pver);
        if (rc < 0) {
            char key[FS_KEY_MAX];

            /* Undo, so no record exists without its entry. */
            if (fs_key_meta(path, key, sizeof key) == 0)
                dht_delete(fs->peer, key, DHT_ANY_VERSION);
        }
    }
    fs_inode_fini(&parent);
    if (rc == 0 && out)
        *out = ino;
    else
        fs_inode_fini(&ino);
    return rc;
}

static int op_mkdir(const char *path, mode_t mode)
{
    return make_node(get_fs(), path, FS_DIR, mode, NULL, NULL);
}

static int op_symlink(const char *target, const char *path)
{
    if (strlen(target) >= FS_PATH_MAX)
        return -ENAMETOOLONG;
    return make_node(get_fs(), path, FS_SYMLINK, 0777, target, NULL);
}

static int op_readlink(const char *path, char *buf, size_t size)
{
    struct fs_inode ino;
    int rc;

    if (fs_chord_is(path))
        return -EINVAL;
    rc = get_inode(get_fs(), path, &ino, NULL);
    if (rc < 0)
        return rc;
    if (ino.kind != FS_SYMLINK) {
        rc = -EINVAL;
    } else if (size > 0) {
        strncpy(buf, ino.target, size - 1);
        buf[size - 1] = 0;
    }
    fs_inode_fini(&ino);
    return rc;
}

static int op_mknod(const char *path, mode_t mode, dev_t rdev)
{
    (void)rdev;
    /* Only regular files: devices, fifos and sockets are not kept. */
    if (!S_ISREG(mode))
        return -EPERM;
    return make_node(get_fs(), path, FS_REG, mode, NULL, NULL);
}

static int op_link(const char *from, const char *to)
{
    (void)from;
    (void)to;
    return -EPERM; /* no hard links (link(2): EPERM) */
}

/* Delete the records (and for files the chunks) of one non-directory. */
/* How many chunks a file may have stored (an open file may have written
 * past the recorded size). */
static uint64_t stored_chunks(struct fs *fs, const struct fs_inode *ino)
{
    uint64_t end = ino->size, open_end;

    if (ino->kind != FS_REG)
        return 0;
    open_end = fs_file_stored_end(fs, ino->uuid);
    if (open_end > end)
        end = open_end;
    return fs_chunk_count(end, ino->chunk_size);
}

static void drop_file_data(struct fs *fs, const struct fs_inode *ino)
{
    uint64_t n = stored_chunks(fs, ino);

    if (n)
        fs_data_delete(fs, ino->uuid, 0, n);
}

/* Chunks deleted in unlink's own batch; a larger file's go in windows. */
#define UNLINK_BATCH 64

static int op_unlink(const char *path)
{
    struct fs *fs = get_fs();
    char parent[FS_PATH_MAX], key[FS_KEY_MAX];
    const char *name;
    struct fs_inode ino;
    int rc;

    if (fs_chord_is(path))
        return -EACCES;
    rc = fs_path_split(path, parent, sizeof parent, &name);
    if (rc < 0)
        return rc;
    rc = get_inode(fs, path, &ino, NULL);
    if (rc < 0)
        return rc;
    if (ino.kind == FS_DIR) {
        rc = -EISDIR;
        goto out;
    }
    rc = fs_dirent_remove(fs, parent, name, ino.kind);
    if (rc < 0)
        goto out;
    rc = fs_key_meta(path, key, sizeof key);
    if (rc < 0)
        goto out;
    /* The entry is gone, so the record, the chunks and the parent's times
     * no longer depend on each other: the deletes run as one parallel batch
     * while the parent is touched (three ring round trips, not five). */
    uint64_t nchunks = stored_chunks(fs, &ino);
    size_t inbatch = nchunks <= UNLINK_BATCH ? (size_t)nchunks : 0;
    struct fs_batch *b = fs_batch_new(fs, 1 + inbatch);
    fs_batch_delete(b, 0, key);
    for (size_t k = 0; k < inbatch; k++) {
        char ck[FS_KEY_MAX];
        if (fs_key_data(ino.uuid, k, ck, sizeof ck) == 0)
            fs_batch_delete(b, 1 + k, ck);
    }
    touch_dir(fs, parent);
    fs_batch_wait(b);
    rc = fs_batch_result(b, 0, NULL, NULL);
    rc = rc == -ENOENT ? 0 : fs_ring_errno(rc);
    for (size_t k = 0; k < inbatch; k++) {
        int err = fs_batch_result(b, 1 + k, NULL, NULL);
        if (err < 0 && err != -ENOENT)
            log_warn("fs", fs->node, "chunk %zu of %s not deleted: %s", k, path,
                     strerror(-err));
    }
    fs_batch_free(b);
    if (rc == 0 && nchunks && !inbatch)
        fs_data_delete(fs, ino.uuid, 0, nchunks);
out:
    fs_inode_fini(&ino);
    return rc;
}

static int op_rmdir(const char *path)
{
    struct fs *fs = get_fs();
    char parent[FS_PATH_MAX], key[FS_KEY_MAX];
    const char *name;
    struct fs_inode ino;
    struct fs_dirent *d;
    size_t n;
    int rc;

    if (fs_chord_is(path))
        return -EACCES;
    if (strcmp(path, "/") == 0)
        return -EBUSY;
    rc = fs_path_split(path, parent, sizeof parent, &name);
    if (rc < 0)
        return rc;
    rc = get_inode(fs, path, &ino, NULL);
    if (rc < 0)
        return rc;
    if (ino.kind != FS_DIR) {
        fs_inode_fini(&ino);
        return -ENOTDIR;
    }
    fs_inode_fini(&ino);
    rc = fs_dir_list(fs, path, &d, &n);
    if (rc < 0)
        return rc;
    fs_dirents_free(d, n);
    if (n > 0)
        return -ENOTEMPTY;
    rc = fs_dirent_remove(fs, parent, name, FS_DIR);
    if (rc < 0)
        return rc;
    touch_dir(fs, parent);
    fs_key_meta(path, key, sizeof key);
    rc = fs_ring_errno(dht_delete(fs->peer, key, DHT_ANY_VERSION));
    if (rc < 0 && rc != -ENOENT)
        return rc;
    fs_key_dir(path, key, sizeof key);
    rc = fs_ring_errno(dht_delete(fs->peer, key, DHT_ANY_VERSION));
    return rc == -ENOENT ? 0 : rc;
}

/* ---------------------------------------------------------------- rename */

/*
 * Move the records of the subtree at from to to: the inode record, and for
 * a directory every record below it and its entry set. Data chunks are
 * keyed by uuid and never move. New records are written before old ones are
 * deleted, so an interrupted rename leaves copies, never losses.
 */
static int move_tree(struct fs *fs, const char *from, const char *to)
{
    char key[FS_KEY_MAX];
    struct fs_inode ino;
    struct fs_dirent *d = NULL;
    size_t n = 0;
    int rc;

    rc = fs_inode_get(fs, from, &ino, NULL);
    if (rc < 0)
        return rc;
    ino.ctime_ns = fs_now_ns();
    rc = fs_inode_put(fs, to, &ino, DHT_ANY_VERSION, NULL);
    if (rc < 0)
        goto out;
    if (ino.kind == FS_DIR) {
        rc = fs_dir_list(fs, from, &d, &n);
        if (rc < 0)
            goto out;
        for (size_t i = 0; i < n; i++) {
            char cf[FS_PATH_MAX], ct[FS_PATH_MAX];

            rc = fs_path_join(from, d[i].name, cf, sizeof cf);
            if (rc == 0)
                rc = fs_path_join(to, d[i].name, ct, sizeof ct);
            if (rc == 0)
                rc = move_tree(fs, cf, ct);
            if (rc == -ENOENT)
                rc = 0; /* removed meanwhile */
            if (rc == 0)
                rc = fs_dirent_add(fs, to, d[i].name, d[i].kind);
            if (rc < 0)
                goto out;
        }
        fs_key_dir(from, key, sizeof key);
        rc = fs_ring_errno(dht_delete(fs->peer, key, DHT_ANY_VERSION));
        if (rc < 0 && rc != -ENOENT)
            goto out;
    }
    fs_key_meta(from, key, sizeof key);
    rc = fs_ring_errno(dht_delete(fs->peer, key, DHT_ANY_VERSION));
    if (rc == -ENOENT)
        rc = 0;
out:
    fs_dirents_free(d, n);
    fs_inode_fini(&ino);
    return rc;
}

static int op_rename(const char *from, const char *to, unsigned int flags)
{
    struct fs *fs = get_fs();
    char fparent[FS_PATH_MAX], tparent[FS_PATH_MAX], key[FS_KEY_MAX];
    const char *fname, *tname;
    struct fs_inode src, dst;
    bool have_dst = false;
    int rc;

    if (flags & RENAME_EXCHANGE)
        return -EINVAL; /* not supported: no atomic swap of two records */
    if (flags & ~(unsigned int)RENAME_NOREPLACE)
        return -EINVAL;
    if (fs_chord_is(from) || fs_chord_is(to))
        return -EACCES;
    rc = fs_path_split(from, fparent, sizeof fparent, &fname);
    if (rc == 0)
        rc = fs_path_split(to, tparent, sizeof tparent, &tname);
    if (rc == 0)
        rc = fs_name_check(tname);
    if (rc < 0)
        return rc;
    if (strcmp(from, to) == 0)
        return 0;
    if (fs_path_within(to, from))
        return -EINVAL; /* into its own subtree */
    rc = fs_inode_get(fs, from, &src, NULL);
    if (rc < 0)
        return rc;
    rc = fs_inode_get(fs, to, &dst, NULL);
    if (rc == 0) {
        have_dst = true;
    } else if (rc != -ENOENT) {
        goto out;
    }
    rc = 0;
    if (have_dst) {
        struct fs_dirent *d;
        size_t n;

        if (flags & RENAME_NOREPLACE) {
            rc = -EEXIST;
            goto out;
        }
        if (src.kind == FS_DIR && dst.kind != FS_DIR) {
            rc = -ENOTDIR;
            goto out;
        }
        if (src.kind != FS_DIR && dst.kind == FS_DIR) {
            rc = -EISDIR;
            goto out;
        }
        if (dst.kind == FS_DIR) {
            rc = fs_dir_list(fs, to, &d, &n);
            if (rc < 0)
                goto out;
            fs_dirents_free(d, n);
            if (n > 0) {
                rc = -ENOTEMPTY;
                goto out;
            }
            fs_key_dir(to, key, sizeof key);
            dht_delete(fs->peer, key, DHT_ANY_VERSION);
        }
        if (dst.kind != src.kind) {
            rc = fs_dirent_remove(fs, tparent, tname, dst.kind);
            if (rc < 0)
                goto out;
        }
    }
    rc = move_tree(fs, from, to);
    if (rc < 0)
        goto out;
    rc = fs_dirent_add(fs, tparent, tname, src.kind);
    if (rc < 0)
        goto out;
    rc = fs_dirent_remove(fs, fparent, fname, src.kind);
    if (rc < 0)
        goto out;
    touch_dir(fs, fparent);
    if (strcmp(fparent, tparent) != 0)
        touch_dir(fs, tparent);
    if (have_dst && dst.kind == FS_REG &&
        memcmp(dst.uuid, src.uuid, FS_UUID_LEN) != 0)
        drop_file_data(fs, &dst);
out:
    fs_inode_fini(&src);
    if (have_dst)
        fs_inode_fini(&dst);
    return rc;
}

/* ----------------------------------------------------------------- files */

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    struct fs *fs = get_fs();
    struct fs_inode ino;
    struct handle *h;
    int rc;

    rc = make_node(fs, path, FS_REG, mode, NULL, &ino);
    if (rc < 0)
        return rc;
    h = wire_xcalloc(1, sizeof *h);
    fs_file_open(fs, &ino, &h->file);
    fs_inode_fini(&ino);
    fi->fh = (uintptr_t)h;
    fi->keep_cache = 0;
    return 0;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    struct fs *fs = get_fs();
    struct fs_inode ino;
    struct handle *h;
    int rc;

    if (fs_chord_is(path)) {
        char *text;
        size_t len;

        if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
            return -EACCES;
        rc = fs_chord_generate(fs, path, &text, &len);
        if (rc < 0)
            return rc;
        h = wire_xcalloc(1, sizeof *h);
        h->text = text;
        h->len = len;
        fi->fh = (uintptr_t)h;
        fi->direct_io = 1;
        return 0;
    }
    /* libfuse asks for FUSE_CAP_ATOMIC_O_TRUNC: the truncate of an
     * O_TRUNC open comes here, not as a separate setattr. */
    if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) {
        rc = fs_file_truncate(fs, path, 0);
        if (rc < 0)
            return rc;
    }
    /* Revalidate: reread the record (close-to-open). */
    rc = get_inode(fs, path, &ino, NULL);
    if (rc < 0)
        return rc;
    if (ino.kind == FS_DIR) {
        fs_inode_fini(&ino);
        return -EISDIR;
    }
    if (ino.kind != FS_REG) {
        fs_inode_fini(&ino);
        return -ELOOP;
    }
    h = wire_xcalloc(1, sizeof *h);
    fs_file_open(fs, &ino, &h->file);
    fs_inode_fini(&ino);
    fi->fh = (uintptr_t)h;
    fi->keep_cache = 0;
    return 0;
}

static int op_read(const char *path, char *buf, size_t size, off_t off,
                   struct fuse_file_info *fi)
{
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;

    (void)path;
    if (off < 0)
        return -EINVAL;
    if (h->text) {
        if ((size_t)off >= h->len)
            return 0;
        if (size > h->len - (size_t)off)
            size = h->len - (size_t)off;
        memcpy(buf, h->text + off, size);
        return (int)size;
    }
    if (!h->file)
        return 0; /* an empty /.chord file */
    return fs_file_read(get_fs(), h->file, buf, size, (uint64_t)off);
}

static int op_write(const char *path, const char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;

    (void)path;
    if (!h->file)
        return -EACCES;
    if (off < 0)
        return -EINVAL;
    return fs_file_write(get_fs(), h->file, buf, size, (uint64_t)off);
}

static int op_flush(const char *path, struct fuse_file_info *fi)
{
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;

    if (!h->file)
        return 0;
    return fs_file_flush(get_fs(), h->file, path);
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    return op_flush(path, fi);
}

/* Directory changes reach the ring before each operation returns, so
 * there is nothing left to sync. */
static int op_fsyncdir(const char *path, int datasync,
                       struct fuse_file_info *fi)
{
    (void)path;
    (void)datasync;
    (void)fi;
    return 0;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
    struct fs *fs = get_fs();
    struct handle *h = (struct handle *)(uintptr_t)fi->fh;

    if (h->file) {
        int rc = fs_file_flush(fs, h->file, path);

        if (rc < 0)
            log_error("fs", fs->node, "%s: data not written on close: %s",
                      path ? path : "?", strerror(-rc));
        fs_file_unref(fs, h->file);
    }
    free(h->text);
    free(h);
    return 0;
}

/* ---------------------------------------------------------------- statfs */

static int op_statfs(const char *path, struct statvfs *st)
{
    struct fs *fs = get_fs();
    struct statvfs local;
    uint64_t bytes = 0, keys = 0, avail;
    const char *dir = fs->cfg.data_dir ? fs->cfg.data_dir : "/";

    (void)path;
    /*
     * What this peer's store holds and can hold: "used" is the bytes of
     * records this peer stores (its share of the ring plus replicas), and
     * "available" is the free space of the local file system of its data
     * directory. Both are local: statfs never waits on the ring.
     */
    dht_usage(fs->peer, &bytes, &keys);
    memset(st, 0, sizeof *st);
    if (statvfs(dir, &local) < 0)
        memset(&local, 0, sizeof local);
    avail = (uint64_t)local.f_bavail * local.f_frsize;
    st->f_bsize = 4096;
    st->f_frsize = 4096;
    st->f_blocks = (fsblkcnt_t)((bytes + avail) / 4096);
    st->f_bfree = (fsblkcnt_t)(avail / 4096);
    st->f_bavail = st->f_bfree;
    st->f_files = (fsfilcnt_t)(keys + local.f_favail);
    st->f_ffree = local.f_favail;
    st->f_favail = local.f_favail;
    st->f_namemax = FS_NAME_MAX;
    return 0;
}

/* ---------------------------------------------------------------- xattrs */

static bool is_virtual_xattr(const char *name)
{
    return strncmp(name, XATTR_VIRT_PFX, strlen(XATTR_VIRT_PFX)) == 0;
}

static int reply_xattr(const void *val, size_t len, char *buf, size_t size)
{
    if (size == 0)
        return (int)len;
    if (len > size)
        return -ERANGE;
    if (len) /* an empty value may have no buffer at all */
        memcpy(buf, val, len);
    return (int)len;
}

static int virtual_xattr(struct fs *fs, const char *path, const char *name,
                         char *buf, size_t size)
{
    char key[FS_KEY_MAX], text[(DHT_ADDR_MAX + 1) * (MAX_REPLICAS + 1)];
    struct dht_node primary, reps[MAX_REPLICAS];
    int n = 0, rc;

    rc = fs_key_meta(path, key, sizeof key);
    if (rc < 0)
        return rc;
    if (strcmp(name, XATTR_KEY) == 0)
        return reply_xattr(key, strlen(key), buf, size);
    if (strcmp(name, XATTR_PRIMARY) != 0 && strcmp(name, XATTR_REPLICAS) != 0)
        return -ENODATA;
    rc = dht_lookup(fs->peer, key, &primary, reps, MAX_REPLICAS, &n);
    if (rc < 0)
        return fs_ring_errno(rc);
    if (strcmp(name, XATTR_PRIMARY) == 0)
        return reply_xattr(primary.addr, strlen(primary.addr), buf, size);
    /* The peers holding copies: the primary and its successors. */
    snprintf(text, sizeof text, "%s", primary.addr);
    for (int i = 0; i < n && i < MAX_REPLICAS; i++) {
        size_t l = strlen(text);

        if (strcmp(reps[i].addr, primary.addr) == 0 || !reps[i].addr[0])
            continue;
        snprintf(text + l, sizeof text - l, ",%s", reps[i].addr);
    }
    return reply_xattr(text, strlen(text), buf, size);
}

static int op_getxattr(const char *path, const char *name, char *buf,
                       size_t size)
{
    struct fs *fs = get_fs();
    const struct fs_xattr *x;
    struct fs_inode ino;
    int rc;

    if (fs_chord_is(path) || strncmp(name, "user.", 5) != 0)
        return -ENODATA;
    rc = get_inode(fs, path, &ino, NULL);
    if (rc < 0)
        return rc;
    if (is_virtual_xattr(name)) {
        fs_inode_fini(&ino);
        return virtual_xattr(fs, path, name, buf, size);
    }
    x = fs_inode_xattr_find(&ino, name);
    rc = x ? reply_xattr(x->value, x->len, buf, size) : -ENODATA;
    fs_inode_fini(&ino);
    return rc;
}

static int op_listxattr(const char *path, char *buf, size_t size)
{
    static const char virt[] = XATTR_KEY "\0" XATTR_PRIMARY "\0" XATTR_REPLICAS;
    struct fs *fs = get_fs();
    struct fs_inode ino;
    size_t need = sizeof virt, off = 0;
    int rc;

    if (fs_chord_is(path))
        return 0;
    rc = get_inode(fs, path, &ino, NULL);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < ino.n_xattrs; i++)
        need += strlen(ino.xattrs[i].name) + 1;
    if (size == 0) {
        rc = (int)need;
        goto out;
    }
    if (size < need) {
        rc = -ERANGE;
        goto out;
    }
    for (size_t i = 0; i < ino.n_xattrs; i++) {
        size_t l = strlen(ino.xattrs[i].name) + 1;

        memcpy(buf + off, ino.xattrs[i].name, l);
        off += l;
    }
    memcpy(buf + off, virt, sizeof virt);
    rc = (int)need;
out:
    fs_inode_fini(&ino);
    return rc;
}

struct xattr_edit {
    const char *name;
    const char *value; /* NULL: remove */
    size_t len;
    int flags;
};

static int edit_xattr(struct fs_inode *ino, void *arg)
{
    struct xattr_edit *e = arg;
    int rc;

    if (e->value)
        rc = fs_inode_xattr_set(ino, e->name, e->value, e->len, e->flags);
    else
        rc = fs_inode_xattr_remove(ino, e->name);
    if (rc == 0)
        ino->ctime_ns = fs_now_ns();
    return rc;
}

static int op_setxattr(const char *path, const char *name, const char *value,
                       size_t size, int flags)
{
    struct xattr_edit e = {name, value ? value : "", size, flags};

    if (fs_chord_is(path))
        return -EACCES;
    if (strncmp(name, "user.", 5) != 0)
        return -ENOTSUP;
    if (is_virtual_xattr(name))
        return -EPERM; /* read-only: where the file lives */
    if (strlen(name) > 255)
        return -ERANGE;
    return fs_inode_update(get_fs(), path, edit_xattr, &e);
}

static int op_removexattr(const char *path, const char *name)
{
    struct xattr_edit e = {name, NULL, 0, 0};

    if (fs_chord_is(path))
        return -EACCES;
    if (strncmp(name, "user.", 5) != 0)
        return -ENOTSUP;
    if (is_virtual_xattr(name))
        return -EPERM;
    return fs_inode_update(get_fs(), path, edit_xattr, &e);
}

/* --------------------------------------------------------- life cycle */

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    struct fs *fs = get_fs();

    (void)conn;
    cfg->use_ino = 1;
    cfg->readdir_ino = 0;
    if (!fs->user_timeouts) {
        /* -o attr_timeout=/entry_timeout= given by the user win. */
        cfg->entry_timeout = fs->cfg.attr_timeout_s;
        cfg->attr_timeout = fs->cfg.attr_timeout_s;
    }
    cfg->negative_timeout = 0;
    cfg->kernel_cache = 0;
    cfg->auto_cache = 0;
    cfg->direct_io = 0;
    cfg->hard_remove = 0;
    cfg->nullpath_ok = 0;
    log_info("fs", fs->node, "mounted");
    return fs;
}

static const struct fuse_operations chordfs_ops = {
    .init = op_init,
    .getattr = op_getattr,
    .access = op_access,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .symlink = op_symlink,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .rename = op_rename,
    .link = op_link,
    .chmod = op_chmod,
    .chown = op_chown,
    .truncate = op_truncate,
    .utimens = op_utimens,
    .open = op_open,
    .create = op_create,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .fsync = op_fsync,
    .release = op_release,
    .fsyncdir = op_fsyncdir,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
};

void fs_config_default(struct fs_config *c)
{
    memset(c, 0, sizeof *c);
    c->timeout_ms = FS_TIMEOUT_DEFAULT;
    c->chunk_size = FS_CHUNK_DEFAULT;
    c->cache_bytes = FS_CACHE_DEFAULT;
    c->attr_timeout_s = 1.0;
    c->debug = false;
    c->data_dir = NULL;
}

/*
 * Copy argv into args, dropping the option "no_default_permissions" from
 * any -o list (our own switch: default_permissions is on unless it is
 * given). Returns whether it was seen, and whether fsname/subtype were.
 */
static bool build_args(struct fuse_args *args, int argc, char **argv,
                       bool *has_fsname, bool *has_subtype, bool *has_timeouts)
{
    bool no_dp = false;

    fuse_opt_add_arg(args, argc > 0 && argv[0] ? argv[0] : "chordfs");
    for (int i = 1; i < argc; i++) {
        const char *opts = NULL;
        char *copy, *tok, *save = NULL, *out;
        size_t olen = 0;

        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc)
            opts = argv[++i];
        else if (strncmp(argv[i], "-o", 2) == 0)
            opts = argv[i] + 2;
        if (!opts) {
            fuse_opt_add_arg(args, argv[i]);
            continue;
        }
        copy = wire_xstrdup(opts);
        out = wire_xcalloc(1, strlen(opts) + 1);
        for (tok = strtok_r(copy, ",", &save); tok;
             tok = strtok_r(NULL, ",", &save)) {
            if (strcmp(tok, "no_default_permissions") == 0) {
                no_dp = true;
                continue;
            }
            if (strncmp(tok, "fsname=", 7) == 0)
                *has_fsname = true;
            if (strncmp(tok, "subtype=", 8) == 0)
                *has_subtype = true;
            if (strncmp(tok, "attr_timeout=", 13) == 0 ||
                strncmp(tok, "entry_timeout=", 14) == 0)
                *has_timeouts = true;
            olen += (size_t)sprintf(out + olen, "%s%s", olen ? "," : "", tok);
        }
        if (olen) {
            fuse_opt_add_arg(args, "-o");
            fuse_opt_add_arg(args, out);
        }
        free(out);
        free(copy);
    }
    return no_dp;
}

static bool has_debug(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-d") == 0)
            return true;
    return false;
}

int fs_serve(struct dht_peer *p, const struct fs_config *cfg,
             const char *mountpoint, int argc, char **argv,
             void (*ready)(void *arg), void *ready_arg)
{
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    struct fs *fs;
    struct fuse *f;
    struct fuse_session *se;
    bool has_fsname = false, has_subtype = false;
    char opt[128];
    int rc;

    fs = wire_xcalloc(1, sizeof *fs);
    fs->peer = p;
    fs->cfg = *cfg;
    if (fs->cfg.timeout_ms <= 0)
        fs->cfg.timeout_ms = FS_TIMEOUT_DEFAULT;
    if (fs->cfg.chunk_size < FS_CHUNK_MIN || fs->cfg.chunk_size > FS_CHUNK_MAX)
        fs->cfg.chunk_size = FS_CHUNK_DEFAULT;
    if (fs->cfg.cache_bytes == 0)
        fs->cfg.cache_bytes = FS_CACHE_DEFAULT;
    if (fs->cfg.attr_timeout_s < 0)
        fs->cfg.attr_timeout_s = 1.0;
    snprintf(fs->node, sizeof fs->node, "%s", dht_peer_addr(p));
    pthread_mutex_init(&fs->lock, NULL);

    rc = ensure_root(fs);
    if (rc < 0)
        log_warn("fs", fs->node,
                 "could not check the root directory (%s); mounting anyway",
                 strerror(-rc));

    if (!build_args(&args, argc, argv, &has_fsname, &has_subtype,
                    &fs->user_timeouts)) {
        fuse_opt_add_arg(&args, "-o");
        fuse_opt_add_arg(&args, "default_permissions");
    }
    if (!has_fsname) {
        snprintf(opt, sizeof opt, "fsname=chordfs@%s", fs->node);
        fuse_opt_add_arg(&args, "-o");
        fuse_opt_add_arg(&args, opt);
    }
    if (!has_subtype) {
        fuse_opt_add_arg(&args, "-o");
        fuse_opt_add_arg(&args, "subtype=chordfs");
    }
    if (fs->cfg.debug && !has_debug(argc, argv))
        fuse_opt_add_arg(&args, "-d");

    f = fuse_new(&args, &chordfs_ops, sizeof chordfs_ops, fs);
    if (!f) {
        log_error("fs", fs->node, "bad FUSE options");
        rc = -EINVAL;
        goto err_args;
    }
    if (fuse_mount(f, mountpoint) != 0) {
        log_error("fs", fs->node, "cannot mount at %s", mountpoint);
        rc = -EIO;
        goto err_new;
    }
    se = fuse_get_session(f);
    if (fuse_set_signal_handlers(se) != 0) {
        rc = -EIO;
        goto err_mount;
    }
    log_info("fs", fs->node, "serving %s", mountpoint);
    if (ready)
        ready(ready_arg);
    rc = fuse_loop_mt(f, 0);
    if (rc != 0)
        log_info("fs", fs->node, "FUSE loop ended with %d", rc);
    rc = 0;
    fuse_remove_signal_handlers(se);
err_mount:
    fuse_unmount(f);
err_new:
    fuse_destroy(f);
err_args:
    fuse_opt_free_args(&args);
    log_info("fs", fs->node, "unmounted %s", mountpoint);
    /* Files still open at unmount have been released by fuse_destroy. */
    while (fs->files)
        fs_file_unref(fs, fs->files);
    pthread_mutex_destroy(&fs->lock);
    free(fs);
    return rc;
}
