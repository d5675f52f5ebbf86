/*
 * fs/layout.c - how the tree is laid out in the ring.
 *
 * Owns the key strings (meta:<path>, dir:<path>, data:<uuid-hex>:<n>), path
 * and name checks, chunk arithmetic, and the inode record: its plain-C form
 * (struct fs_inode), its encoding as a Chord__Inode, and compare-and-set
 * updates of it.
 *
 * Concurrency between mounts: every read-modify-write of an inode record
 * reads the record with its version and writes it back with that version
 * as the expected one (dht_put compare-and-set). A lost race (-ESTALE)
 * rereads and reapplies the edit, so concurrent chmod/utimens/size updates
 * from two mounts are never lost. Directory membership is a set (dht_add /
 * dht_remove), so concurrent creates in one directory both survive.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <time.h>

#include "fs/fs-int.h"
#include "proto/wire.h"

#define CAS_RETRIES 64

/* ---------------------------------------------------------------- keys */

static int key_fmt(char *buf, size_t size, const char *prefix, const char *path)
{
    int n = snprintf(buf, size, "%s%s", prefix, path);

    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    return 0;
}

int fs_key_meta(const char *path, char *buf, size_t size)
{
    return key_fmt(buf, size, "meta:", path);
}

int fs_key_dir(const char *path, char *buf, size_t size)
{
    return key_fmt(buf, size, "dir:", path);
}

void fs_uuid_hex(const uint8_t uuid[FS_UUID_LEN], char out[33])
{
    static const char hex[] = "0123456789abcdef";

    for (int i = 0; i < FS_UUID_LEN; i++) {
        out[2 * i] = hex[uuid[i] >> 4];
        out[2 * i + 1] = hex[uuid[i] & 15];
    }
    out[32] = 0;
}

int fs_key_data(const uint8_t uuid[FS_UUID_LEN], uint64_t n, char *buf,
                size_t size)
{
    char hex[33];
    int len;

    fs_uuid_hex(uuid, hex);
    len = snprintf(buf, size, "data:%s:%" PRIu64, hex, n);
    if (len < 0 || (size_t)len >= size)
        return -ENAMETOOLONG;
    return 0;
}

/* --------------------------------------------------------------- paths */

int fs_name_check(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || strchr(name, '/') || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0)
        return -EINVAL;
    if (len > FS_NAME_MAX)
        return -ENAMETOOLONG;
    return 0;
}

int fs_path_check(const char *path)
{
    const char *p = path;

    if (strlen(path) >= FS_PATH_MAX)
        return -ENAMETOOLONG;
    while (*p) {
        const char *e;

        while (*p == '/')
            p++;
        e = strchrnul(p, '/');
        if (e - p > FS_NAME_MAX)
            return -ENAMETOOLONG;
        p = e;
    }
    return 0;
}

int fs_path_split(const char *path, char *parent, size_t size,
                  const char **name_out)
{
    const char *slash = strrchr(path, '/');
    size_t plen;

    if (path[0] != '/' || !slash || slash[1] == 0)
        return -EINVAL;
    plen = (size_t)(slash - path);
    if (plen == 0)
        plen = 1; /* the parent is the root */
    if (plen >= size)
        return -ENAMETOOLONG;
    memcpy(parent, path, plen);
    parent[plen] = 0;
    *name_out = slash + 1;
    return 0;
}

int fs_path_join(const char *dir, const char *name, char *buf, size_t size)
{
    int n;

    if (strcmp(dir, "/") == 0)
        n = snprintf(buf, size, "/%s", name);
    else
        n = snprintf(buf, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    return 0;
}

bool fs_path_within(const char *path, const char *dir)
{
    size_t n = strlen(dir);

    if (strcmp(dir, "/") == 0)
        return true;
    return strncmp(path, dir, n) == 0 && (path[n] == 0 || path[n] == '/');
}

/* ---------------------------------------------------------------- chunks */

uint64_t fs_chunk_index(uint64_t off, uint32_t cs)
{
    return off / cs;
}

uint32_t fs_chunk_offset(uint64_t off, uint32_t cs)
{
    return (uint32_t)(off % cs);
}

uint64_t fs_chunk_count(uint64_t size, uint32_t cs)
{
    return size / cs + (size % cs != 0);
}

uint32_t fs_chunk_valid(uint64_t n, uint64_t size, uint32_t cs)
{
    uint64_t start = n * (uint64_t)cs;

    if (size <= start)
        return 0;
    if (size - start >= cs)
        return cs;
    return (uint32_t)(size - start);
}

/* ---------------------------------------------------------------- time */

int64_t fs_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

uint64_t fs_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* -------------------------------------------------------------- inodes */

int fs_inode_decode(const void *buf, size_t len, struct fs_inode *out)
{
    Chord__Inode *m;

    memset(out, 0, sizeof *out);
    if (wire_inode_unpack(buf, len, &m) < 0)
        return -EIO;
    switch (m->kind) {
    case CHORD__INODE_KIND__REG:
        out->kind = FS_REG;
        break;
    case CHORD__INODE_KIND__DIR:
        out->kind = FS_DIR;
        break;
    case CHORD__INODE_KIND__SYMLINK:
        out->kind = FS_SYMLINK;
        break;
    case _CHORD__INODE_KIND_IS_INT_SIZE:
        wire_inode_free(m);
        return -EIO;
    }
    out->mode = m->mode & 07777;
    out->uid = m->uid;
    out->gid = m->gid;
    out->size = m->size;
    out->atime_ns = m->atime_ns;
    out->mtime_ns = m->mtime_ns;
    out->ctime_ns = m->ctime_ns;
    if (out->kind == FS_SYMLINK)
        out->target = wire_xstrdup(m->target ? m->target : "");
    if (m->uuid.len == FS_UUID_LEN) {
        memcpy(out->uuid, m->uuid.data, FS_UUID_LEN);
        out->has_uuid = true;
    }
    out->chunk_size = m->chunk_size;
    if (out->kind == FS_REG &&
        (!out->has_uuid || out->chunk_size < FS_CHUNK_MIN ||
         out->chunk_size > FS_CHUNK_MAX)) {
        wire_inode_free(m);
        fs_inode_fini(out);
        return -EIO;
    }
    if (m->n_xattrs) {
        out->xattrs = wire_xcalloc(m->n_xattrs, sizeof *out->xattrs);
        for (size_t i = 0; i < m->n_xattrs; i++) {
            struct fs_xattr *x = &out->xattrs[i];

            x->name = wire_xstrdup(m->xattrs[i]->name);
            x->len = m->xattrs[i]->value.len;
            if (x->len) {
                x->value = wire_xmalloc(x->len);
                memcpy(x->value, m->xattrs[i]->value.data, x->len);
            }
        }
        out->n_xattrs = m->n_xattrs;
    }
    out->ino = m->ino;
    wire_inode_free(m);
    return 0;
}

int fs_inode_encode(const struct fs_inode *ino, uint8_t **buf_out,
                    size_t *len_out)
{
    Chord__Inode m = CHORD__INODE__INIT;
    Chord__Xattr *xs = NULL, **xp = NULL;
    int rc;

    switch (ino->kind) {
    case FS_REG:
        m.kind = CHORD__INODE_KIND__REG;
        break;
    case FS_DIR:
        m.kind = CHORD__INODE_KIND__DIR;
        break;
    case FS_SYMLINK:
        m.kind = CHORD__INODE_KIND__SYMLINK;
        break;
    }
    m.mode = ino->mode & 07777;
    m.uid = ino->uid;
    m.gid = ino->gid;
    m.size = ino->size;
    m.atime_ns = ino->atime_ns;
    m.mtime_ns = ino->mtime_ns;
    m.ctime_ns = ino->ctime_ns;
    if (ino->target)
        m.target = ino->target;
    if (ino->has_uuid) {
        m.uuid.data = (uint8_t *)ino->uuid;
        m.uuid.len = FS_UUID_LEN;
    }
    m.chunk_size = ino->chunk_size;
    if (ino->n_xattrs) {
        xs = wire_xcalloc(ino->n_xattrs, sizeof *xs);
        xp = wire_xcalloc(ino->n_xattrs, sizeof *xp);
        for (size_t i = 0; i < ino->n_xattrs; i++) {
            chord__xattr__init(&xs[i]);
            xs[i].name = ino->xattrs[i].name;
            xs[i].value.data = ino->xattrs[i].value;
            xs[i].value.len = ino->xattrs[i].len;
            xp[i] = &xs[i];
        }
        m.xattrs = xp;
        m.n_xattrs = ino->n_xattrs;
    }
    m.ino = ino->ino;
    rc = wire_inode_pack(&m, buf_out, len_out);
    free(xs);
    free(xp);
    return rc < 0 ? -EIO : 0;
}

void fs_inode_fini(struct fs_inode *ino)
{
    free(ino->target);
    for (size_t i = 0; i < ino->n_xattrs; i++) {
        free(ino->xattrs[i].name);
        free(ino->xattrs[i].value);
    }
    free(ino->xattrs);
    memset(ino, 0, sizeof *ino);
}

void fs_inode_copy(struct fs_inode *dst, const struct fs_inode *src)
{
    *dst = *src;
    dst->target = src->target ? wire_xstrdup(src->target) : NULL;
    dst->xattrs = NULL;
    if (src->n_xattrs) {
        dst->xattrs = wire_xcalloc(src->n_xattrs, sizeof *dst->xattrs);
        for (size_t i = 0; i < src->n_xattrs; i++) {
            dst->xattrs[i].name = wire_xstrdup(src->xattrs[i].name);
            dst->xattrs[i].len = src->xattrs[i].len;
            if (src->xattrs[i].len) {
                dst->xattrs[i].value = wire_xmalloc(src->xattrs[i].len);
                memcpy(dst->xattrs[i].value, src->xattrs[i].value,
                       src->xattrs[i].len);
            }
        }
    }
}

static void ns_to_ts(int64_t ns, struct timespec *ts)
{
    ts->tv_sec = (time_t)(ns / 1000000000);
    ts->tv_nsec = (long)(ns % 1000000000);
    if (ts->tv_nsec < 0) {
        ts->tv_nsec += 1000000000;
        ts->tv_sec--;
    }
}

void fs_inode_to_stat(const struct fs_inode *ino, struct stat *st)
{
    memset(st, 0, sizeof *st);
    switch (ino->kind) {
    case FS_REG:
        st->st_mode = S_IFREG;
        st->st_size = (off_t)ino->size;
        break;
    case FS_DIR:
        st->st_mode = S_IFDIR;
        st->st_size = 4096;
        break;
    case FS_SYMLINK:
        st->st_mode = S_IFLNK;
        st->st_size = ino->target ? (off_t)strlen(ino->target) : 0;
        break;
    }
    st->st_mode |= ino->mode & 07777;
    /* Directories report one link, like btrfs: the count of
     * subdirectories is unknown, which stops find(1) from trusting it. */
    st->st_nlink = 1;
    st->st_uid = ino->uid;
    st->st_gid = ino->gid;
    st->st_ino = ino->ino;
    st->st_blksize = 65536;
    st->st_blocks = (blkcnt_t)((st->st_size + 511) / 512);
    ns_to_ts(ino->atime_ns, &st->st_atim);
    ns_to_ts(ino->mtime_ns, &st->st_mtim);
    ns_to_ts(ino->ctime_ns, &st->st_ctim);
}

const struct fs_xattr *fs_inode_xattr_find(const struct fs_inode *ino,
                                           const char *name)
{
    for (size_t i = 0; i < ino->n_xattrs; i++)
        if (strcmp(ino->xattrs[i].name, name) == 0)
            return &ino->xattrs[i];
    return NULL;
}

int fs_inode_xattr_set(struct fs_inode *ino, const char *name,
                       const void *value, size_t len, int flags)
{
    struct fs_xattr *x = (struct fs_xattr *)fs_inode_xattr_find(ino, name);

    if (len > FS_XATTR_MAX)
        return -E2BIG;
    if (x && (flags & XATTR_CREATE))
        return -EEXIST;
    if (!x && (flags & XATTR_REPLACE))
        return -ENODATA;
    if (!x) {
        ino->xattrs = wire_xrealloc(ino->xattrs,
                                    (ino->n_xattrs + 1) * sizeof *ino->xattrs);
        x = &ino->xattrs[ino->n_xattrs++];
        x->name = wire_xstrdup(name);
    } else {
        free(x->value);
    }
    x->value = NULL;
    x->len = len;
    if (len) {
        x->value = wire_xmalloc(len);
        memcpy(x->value, value, len);
    }
    return 0;
}

int fs_inode_xattr_remove(struct fs_inode *ino, const char *name)
{
    for (size_t i = 0; i < ino->n_xattrs; i++) {
        if (strcmp(ino->xattrs[i].name, name) == 0) {
            free(ino->xattrs[i].name);
            free(ino->xattrs[i].value);
            ino->xattrs[i] = ino->xattrs[--ino->n_xattrs];
            return 0;
        }
    }
    return -ENODATA;
}

int fs_inode_get(struct fs *fs, const char *path, struct fs_inode *out,
                 uint64_t *version_out)
{
    char key[FS_KEY_MAX];
    void *val = NULL;
    size_t len = 0;
    int rc;

    rc = fs_key_meta(path, key, sizeof key);
    if (rc < 0)
        return rc;
    rc = dht_get(fs->peer, key, &val, &len, version_out);
    if (rc < 0)
        return fs_ring_errno(rc);
    rc = fs_inode_decode(val, len, out);
    free(val);
    if (rc < 0)
        log_error("fs", fs->node, "bad inode record at %s", key);
    return rc;
}

int fs_inode_put(struct fs *fs, const char *path, const struct fs_inode *ino,
                 uint64_t expected, uint64_t *version_out)
{
    char key[FS_KEY_MAX];
    uint8_t *buf;
    size_t len;
    int rc;

    rc = fs_key_meta(path, key, sizeof key);
    if (rc < 0)
        return rc;
    rc = fs_inode_encode(ino, &buf, &len);
    if (rc < 0)
        return rc;
    rc = dht_put(fs->peer, key, buf, len, expected, version_out);
    free(buf);
    return rc < 0 ? fs_ring_errno(rc) : 0;
}

int fs_inode_update(struct fs *fs, const char *path, fs_inode_edit_fn *edit,
                    void *arg)
{
    for (int attempt = 0; attempt < CAS_RETRIES; attempt++) {
        struct fs_inode ino;
        uint64_t version;
        int rc;

        rc = fs_inode_get(fs, path, &ino, &version);
        if (rc < 0)
            return rc;
        rc = edit(&ino, arg);
        if (rc == 0)
            rc = fs_inode_put(fs, path, &ino, version, NULL);
        fs_inode_fini(&ino);
        if (rc == 1)
            return 0;
        if (rc != -ESTALE)
            return rc;
        log_debug("fs", fs->node, "lost a race updating %s; retrying", path);
    }
    log_warn("fs", fs->node, "gave up updating %s after %d races", path,
             CAS_RETRIES);
    return -EIO;
}

/* -------------------------------------------------------------- dirents */

static int dirent_pack(const char *name, enum fs_kind kind, uint8_t **buf,
                       size_t *len)
{
    Chord__DirEntry de = CHORD__DIR_ENTRY__INIT;

    de.name = (char *)name;
    de.kind = kind == FS_DIR       ? CHORD__INODE_KIND__DIR
              : kind == FS_SYMLINK ? CHORD__INODE_KIND__SYMLINK
                                   : CHORD__INODE_KIND__REG;
    return wire_dirent_pack(&de, buf, len) < 0 ? -EIO : 0;
}

/* Add (add true) or remove the entry (name, kind) in dir's entry set. */
static int dirent_change(struct fs *fs, const char *dir, const char *name,
                         enum fs_kind kind, bool add)
{
    char key[FS_KEY_MAX];
    uint8_t *buf;
    size_t len;
    int rc;

    rc = fs_key_dir(dir, key, sizeof key);
    if (rc < 0)
        return rc;
    rc = dirent_pack(name, kind, &buf, &len);
    if (rc < 0)
        return rc;
    rc = add ? dht_add(fs->peer, key, buf, len)
             : dht_remove(fs->peer, key, buf, len);
    free(buf);
    if (add && rc == -EFBIG)
        return -ENOSPC; /* the directory's entry set is at its size limit */
    if (!add && rc == -ENOENT)
        rc = 0; /* already gone: removal is idempotent */
    return rc < 0 ? fs_ring_errno(rc) : 0;
}

int fs_dirent_add(struct fs *fs, const char *dir, const char *name,
                  enum fs_kind kind)
{
    return dirent_change(fs, dir, name, kind, true);
}

int fs_dirent_remove(struct fs *fs, const char *dir, const char *name,
                     enum fs_kind kind)
{
    return dirent_change(fs, dir, name, kind, false);
}

int fs_dir_list(struct fs *fs, const char *dir, struct fs_dirent **out,
                size_t *n_out)
{
    char key[FS_KEY_MAX];
    struct dht_blob *m = NULL;
    struct fs_dirent *d;
    size_t n = 0, k = 0;
    int rc;

    *out = NULL;
    *n_out = 0;
    rc = fs_key_dir(dir, key, sizeof key);
    if (rc < 0)
        return rc;
    rc = dht_members(fs->peer, key, &m, &n, NULL);
    if (rc == -ENOENT)
        return 0;
    if (rc < 0)
        return fs_ring_errno(rc);
    d = wire_xcalloc(n ? n : 1, sizeof *d);
    for (size_t i = 0; i < n; i++) {
        Chord__DirEntry *de;

        if (wire_dirent_unpack(m[i].data, m[i].len, &de) < 0) {
            log_error("fs", fs->node, "bad entry in %s skipped", key);
            continue;
        }
        if (fs_name_check(de->name) == 0) {
            d[k].name = wire_xstrdup(de->name);
            d[k].kind = de->kind == CHORD__INODE_KIND__DIR       ? FS_DIR
                        : de->kind == CHORD__INODE_KIND__SYMLINK ? FS_SYMLINK
                                                                 : FS_REG;
            k++;
        }
        wire_dirent_free(de);
    }
    dht_blobs_free(m, n);
    *out = d;
    *n_out = k;
    return 0;
}

void fs_dirents_free(struct fs_dirent *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(d[i].name);
    free(d);
}
