/*
 * fs/fs-int.h - interfaces between the files of fs/ (and its unit tests).
 * Not for dht/ or tools.
 *
 *   layout.c     path -> key strings, name checks, chunk arithmetic, inode
 *                records (struct fs_inode <-> Chord__Inode) and their
 *                compare-and-set updates
 *   ring.c       blocking ring calls with errno mapping, and batches of
 *                asynchronous calls (parallel chunk I/O)
 *   file.c       open regular files: write-back buffers, read-ahead, chunk
 *                I/O with SHA-1 check, truncate and delete of chunk ranges
 *   chordview.c  the read-only virtual /.chord directory
 *   ops.c        FUSE operations, fs_serve(), fs_config_default()
 */
#ifndef CHORDFS_FS_INT_H
#define CHORDFS_FS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "dht/dht.h"
#include "fs/fs.h"

#define FS_NAME_MAX        255  /* bytes of one path component */
#define FS_KEY_MAX         4352 /* key string incl. NUL (WIRE_KEY_MAX) */
#define FS_PATH_MAX        4096 /* bytes of a path incl. NUL */
#define FS_UUID_LEN        16
#define FS_CHUNK_MIN       4096
#define FS_CHUNK_MAX       (8u << 20)
#define FS_CHUNK_DEFAULT   (128u << 10) /* chosen by measurement: ops.c */
#define FS_CACHE_DEFAULT   (64ull << 20)
#define FS_TIMEOUT_DEFAULT 10000
#define FS_ROOT_INO        1
#define FS_CHORD_DIR       "/.chord"
#define FS_XATTR_MAX       65536 /* bytes of one user xattr value */

/* The mounted file system. One per fs_serve(). */
struct fs {
    struct dht_peer *peer;
    struct fs_config cfg;
    char node[DHT_ADDR_MAX]; /* log prefix: the peer's address */
    bool user_timeouts;      /* -o attr_timeout/entry_timeout given */
    pthread_mutex_t lock;
    struct fs_file *files;       /* open regular files; protected by lock */
    _Atomic uint64_t cache_used; /* bytes of cached chunks, all files */
};

/* ------------------------------------------------------------ layout.c */

enum fs_kind {
    FS_REG = 0,
    FS_DIR = 1,
    FS_SYMLINK = 2,
};

struct fs_xattr {
    char *name;     /* malloc'd */
    uint8_t *value; /* malloc'd, may be NULL when len == 0 */
    size_t len;
};

/* An inode record in plain C (owned copies of everything). */
struct fs_inode {
    enum fs_kind kind;
    uint32_t mode; /* permission bits incl. setgid/sticky, no type bits */
    uint32_t uid, gid;
    uint64_t size;
    int64_t atime_ns, mtime_ns, ctime_ns;
    char *target; /* SYMLINK: malloc'd; else NULL */
    uint8_t uuid[FS_UUID_LEN];
    bool has_uuid;
    uint32_t chunk_size;
    struct fs_xattr *xattrs; /* malloc'd array */
    size_t n_xattrs;
    uint64_t ino;
};

/* Keys. Each writes a NUL-terminated key into buf[size] and returns 0, or
 * -ENAMETOOLONG if it does not fit. path is absolute ("/", "/a/b"). */
int fs_key_meta(const char *path, char *buf, size_t size);
int fs_key_dir(const char *path, char *buf, size_t size);
int fs_key_data(const uint8_t uuid[FS_UUID_LEN], uint64_t n, char *buf,
                size_t size);
/* 32 lowercase hex digits + NUL. */
void fs_uuid_hex(const uint8_t uuid[FS_UUID_LEN], char out[33]);

/* 0, -EINVAL (empty, ".", "..", contains '/'), -ENAMETOOLONG (> 255). */
int fs_name_check(const char *name);
/* Split an absolute path into its parent directory (written to
 * parent[size]) and a pointer to the last component inside path. "/" has no
 * parent: -EINVAL. Returns 0, -EINVAL or -ENAMETOOLONG. */
int fs_path_split(const char *path, char *parent, size_t size,
                  const char **name_out);
/* dir + "/" + name into buf[size]; 0 or -ENAMETOOLONG. */
int fs_path_join(const char *dir, const char *name, char *buf, size_t size);
/* True if path is dir itself or lies below it. */
bool fs_path_within(const char *path, const char *dir);
/* Every component of path is at most FS_NAME_MAX bytes: 0/-ENAMETOOLONG. */
int fs_path_check(const char *path);

/* Chunk arithmetic (cs > 0). */
uint64_t fs_chunk_index(uint64_t off, uint32_t cs);
uint32_t fs_chunk_offset(uint64_t off, uint32_t cs);
/* Number of chunks that bytes [0, size) touch. */
uint64_t fs_chunk_count(uint64_t size, uint32_t cs);
/* Bytes of chunk n that lie below size (0..cs). */
uint32_t fs_chunk_valid(uint64_t n, uint64_t size, uint32_t cs);

/* Inode records. decode: 0 or -EIO (bad record, logged by caller).
 * encode: malloc'd *buf_out, caller free()s. fini frees the owned parts. */
int fs_inode_decode(const void *buf, size_t len, struct fs_inode *out);
int fs_inode_encode(const struct fs_inode *ino, uint8_t **buf_out,
                    size_t *len_out);
void fs_inode_fini(struct fs_inode *ino);
/* Deep copy; dst is overwritten (not freed first). */
void fs_inode_copy(struct fs_inode *dst, const struct fs_inode *src);
void fs_inode_to_stat(const struct fs_inode *ino, struct stat *st);
/* Set or replace (flags as setxattr: XATTR_CREATE/REPLACE); 0/-errno. */
int fs_inode_xattr_set(struct fs_inode *ino, const char *name,
                       const void *value, size_t len, int flags);
int fs_inode_xattr_remove(struct fs_inode *ino, const char *name);
const struct fs_xattr *fs_inode_xattr_find(const struct fs_inode *ino,
                                           const char *name);

/* Ring records. get: 0 with *out filled (fs_inode_fini it), -ENOENT, or a
 * ring error. put: expected as dht_put. */
int fs_inode_get(struct fs *fs, const char *path, struct fs_inode *out,
                 uint64_t *version_out);
int fs_inode_put(struct fs *fs, const char *path, const struct fs_inode *ino,
                 uint64_t expected, uint64_t *version_out);
/* Read-modify-write with compare-and-set, retried on a lost race. edit
 * returns 0 to write, 1 to leave the record as it is, or -errno. */
typedef int fs_inode_edit_fn(struct fs_inode *ino, void *arg);
int fs_inode_update(struct fs *fs, const char *path, fs_inode_edit_fn *edit,
                    void *arg);

/* Directory entries (packed DirEntry set members). */
int fs_dirent_add(struct fs *fs, const char *dir, const char *name,
                  enum fs_kind kind);
int fs_dirent_remove(struct fs *fs, const char *dir, const char *name,
                     enum fs_kind kind);
/* A directory listing: names and kinds, malloc'd; fs_dirents_free(). A
 * missing set is an empty directory. */
struct fs_dirent {
    char *name;
    enum fs_kind kind;
};
int fs_dir_list(struct fs *fs, const char *dir, struct fs_dirent **out,
                size_t *n_out);
void fs_dirents_free(struct fs_dirent *d, size_t n);

int64_t fs_now_ns(void);
uint64_t fs_mono_ms(void);

/* -------------------------------------------------------------- ring.c */

/* Map a ring error to what the kernel should see: -ENOENT, -EEXIST and
 * -ESTALE pass; timeouts are -ETIMEDOUT; anything else -EIO. */
int fs_ring_errno(int err);

/* A batch of asynchronous operations waited for together. */
struct fs_batch;
/* n slots. Free with fs_batch_free() (safe while ops are still pending). */
struct fs_batch *fs_batch_new(struct fs *fs, size_t n);
/* Submit slot i. Returns 0 or -errno (then the slot is already done). */
int fs_batch_get(struct fs_batch *b, size_t i, const char *key);
int fs_batch_put(struct fs_batch *b, size_t i, const char *key, const void *val,
                 size_t len);
int fs_batch_delete(struct fs_batch *b, size_t i, const char *key);
/* Wait until every submitted slot is done (bounded). 0 or -ETIMEDOUT. */
int fs_batch_wait(struct fs_batch *b);
/* Slot i's result: err as the client API; value borrowed from b. */
int fs_batch_result(struct fs_batch *b, size_t i, const void **val_out,
                    size_t *len_out);
void fs_batch_free(struct fs_batch *b);

/* -------------------------------------------------------------- file.c */

struct fs_file;

/* Find or create the open-file state for a regular file (by uuid), take a
 * reference and revalidate it against ino (close-to-open). */
int fs_file_open(struct fs *fs, const struct fs_inode *ino,
                 struct fs_file **out);
/* Find with a reference, or NULL. */
struct fs_file *fs_file_find(struct fs *fs, const uint8_t uuid[FS_UUID_LEN]);
void fs_file_unref(struct fs *fs, struct fs_file *f);
int fs_file_read(struct fs *fs, struct fs_file *f, char *buf, size_t size,
                 uint64_t off);
int fs_file_write(struct fs *fs, struct fs_file *f, const char *buf,
                  size_t size, uint64_t off);
/* Write dirty chunks and, if size/mtime changed, the inode record at path. */
int fs_file_flush(struct fs *fs, struct fs_file *f, const char *path);
/* Size and mtime as this mount sees them (for getattr of an open file). */
void fs_file_attrs(struct fs_file *f, uint64_t *size_out, int64_t *mtime_out);
/* truncate(2) of the regular file at path: flushes this mount's dirty data
 * of it, trims the chunk holding the new end, deletes the chunks past it,
 * and updates the inode record (size, mtime, ctime). */
int fs_file_truncate(struct fs *fs, const char *path, uint64_t size);
/* Delete chunks [first, first + count) of a file. Errors are logged;
 * returns the first. */
int fs_data_delete(struct fs *fs, const uint8_t uuid[FS_UUID_LEN],
                   uint64_t first, uint64_t count);
/* Highest end of data this mount may have stored for uuid (0 if not open). */
uint64_t fs_file_stored_end(struct fs *fs, const uint8_t uuid[FS_UUID_LEN]);

/* --------------------------------------------------------- chordview.c */

/* 1 if path is /.chord or below it, else 0. */
int fs_chord_is(const char *path);
int fs_chord_getattr(struct fs *fs, const char *path, struct stat *st);
/* Fill names of /.chord (filler-style callback). */
typedef int fs_chord_fill_fn(void *arg, const char *name, bool is_dir);
int fs_chord_readdir(const char *path, fs_chord_fill_fn *fill, void *arg);
/* Generate a file's content: *text_out malloc'd, caller free()s. */
int fs_chord_generate(struct fs *fs, const char *path, char **text_out,
                      size_t *len_out);

#endif
