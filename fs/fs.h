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

#endif
