/*
 * fs/fs.h - the chordfs file system: FUSE operations over the DHT client API.
 *
 * fs/ sees the ring only through dht/dht.h's client API (struct dht_peer and
 * dht_get/dht_put/...), never ring internals. Key layout:
 *   meta:<path>          Inode record (Chord__Inode)
 *   dir:<path>           set of DirEntry (name, kind)
 *   data:<uuid-hex>:<n>  one chunk (Chord__Chunk, SHA-1 checked on read)
 */
#ifndef CHORDFS_FS_H
#define CHORDFS_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dht/dht.h"

/* File-system options, set by the daemon CLI (fs/main.c). */
struct fs_config {
    int timeout_ms;        /* --timeout: bound on one ring operation */
    uint32_t chunk_size;   /* --chunk-size: bytes per data chunk */
    uint64_t cache_bytes;  /* --cache-size: per-mount data cache bound */
    double attr_timeout_s; /* kernel attribute/entry cache (-o attr_timeout) */
    bool debug;            /* -d: FUSE debug output */
    /* Added by the fs engineer (additive): the peer's --data-dir, whose
     * local file system statfs reports as the space left; NULL: "/". */
    const char *data_dir;
};

/* Fill c with the defaults documented in README.md. */
void fs_config_default(struct fs_config *c);

/*
 * Mount the ring of peer p at mountpoint and serve it until it is unmounted
 * (fusermount3 -u, umount) or the process gets SIGTERM, SIGINT or SIGHUP.
 * argc/argv: libfuse options (argv[0] is the program name; "-o opts" pairs;
 * no mountpoint). ready(ready_arg) is called once the mount is live, before
 * serving requests (the daemon uses it to release its waiting parent).
 * Returns 0 after a clean unmount, or -errno if the mount failed.
 * Thread: the caller's; FUSE worker threads are created inside.
 */
int fs_serve(struct dht_peer *p, const struct fs_config *cfg,
             const char *mountpoint, int argc, char **argv,
             void (*ready)(void *arg), void *ready_arg);

#endif
