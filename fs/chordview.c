/*
 * fs/chordview.c - the read-only virtual directory /.chord.
 *
 * Each file's content is dht_info(peer, name), generated when the file is
 * opened and served from that buffer (the files use direct_io, so the size
 * 0 that getattr reports does not cut reads short). Nothing here is stored
 * in the ring, and nothing here needs the ring to answer except "ring",
 * which walks it: /.chord keeps answering when the ring is unreachable.
 * Writes, creates and removals under /.chord fail with EACCES or EROFS.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/fs-int.h"

static const char *const chord_files[] = {
    "id",      "address", "network", "predecessor", "successor", "successors",
    "fingers", "keys",    "stats",   "ring",        "config",
};
#define N_CHORD_FILES (sizeof chord_files / sizeof chord_files[0])

/* Fixed inode numbers: the top of the 64-bit space, far from random ones. */
#define CHORD_INO_BASE 0xffffffffffff0000ull

int fs_chord_is(const char *path)
{
    size_t n = strlen(FS_CHORD_DIR);

    return strncmp(path, FS_CHORD_DIR, n) == 0 &&
           (path[n] == 0 || path[n] == '/');
}

/* Index of the file named by path, or -1 for the directory, -ENOENT. */
static int chord_index(const char *path)
{
    const char *name = path + strlen(FS_CHORD_DIR);

    if (*name == 0)
        return -1;
    name++;
    for (size_t i = 0; i < N_CHORD_FILES; i++)
        if (strcmp(name, chord_files[i]) == 0)
            return (int)i;
    return -ENOENT;
}

int fs_chord_getattr(struct fs *fs, const char *path, struct stat *st)
{
    int i = chord_index(path);
    struct timespec now;

    (void)fs;
    if (i == -ENOENT)
        return -ENOENT;
    memset(st, 0, sizeof *st);
    clock_gettime(CLOCK_REALTIME, &now);
    st->st_atim = st->st_mtim = st->st_ctim = now;
    st->st_uid = 0;
    st->st_gid = 0;
    st->st_nlink = 1;
    if (i < 0) {
        st->st_mode = S_IFDIR | 0555;
        st->st_ino = CHORD_INO_BASE;
        st->st_size = 4096;
    } else {
        /* Size 0: the content is generated on open (direct_io). */
        st->st_mode = S_IFREG | 0444;
        st->st_ino = CHORD_INO_BASE + 1 + (uint64_t)i;
    }
    return 0;
}

int fs_chord_readdir(const char *path, fs_chord_fill_fn *fill, void *arg)
{
    int i = chord_index(path);

    if (i == -ENOENT)
        return -ENOENT;
    if (i >= 0)
        return -ENOTDIR;
    for (size_t k = 0; k < N_CHORD_FILES; k++)
        if (fill(arg, chord_files[k], false))
            break;
    return 0;
}

int fs_chord_generate(struct fs *fs, const char *path, char **text_out,
                      size_t *len_out)
{
    int i = chord_index(path);
    char *text = NULL;
    int rc;

    if (i == -ENOENT)
        return -ENOENT;
    if (i < 0)
        return -EISDIR;
    rc = dht_info(fs->peer, chord_files[i], &text);
    if (rc < 0) {
        log_warn("fs", fs->node, "/.chord/%s: %s", chord_files[i],
                 strerror(-rc));
        return fs_ring_errno(rc);
    }
    *text_out = text;
    *len_out = strlen(text);
    return 0;
}
