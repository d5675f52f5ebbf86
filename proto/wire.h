/*
 * proto/wire.h - the chordfs wire format: framing, encoding, validation.
 *
 * This is the only header through which code outside proto/ sees the
 * generated protobuf-c types (chord.pb-c.h). Everything here is pure: no
 * sockets, no threads, no global state, so every function may be called from
 * any thread.
 *
 * A frame is a 4-byte big-endian payload length followed by that many bytes
 * of a packed Chord__Envelope. Payloads larger than WIRE_MAX_FRAME are refused
 * before anything is allocated for them.
 */
#ifndef CHORDFS_WIRE_H
#define CHORDFS_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

#include "chord.pb-c.h"

#define WIRE_PROTOCOL_VERSION 1
#define WIRE_MAX_FRAME        (16u << 20) /* bytes of payload */
#define WIRE_HDR_LEN          4
#define WIRE_ID_LEN           20   /* SHA-1 */
#define WIRE_ADDR_MAX         64   /* "host:port" incl. NUL */
#define WIRE_NETWORK_MAX      64   /* network name incl. NUL */
#define WIRE_KEY_MAX          4352 /* key string bytes (PATH_MAX + prefix) */
#define WIRE_LIST_MAX         256  /* successor/predecessor lists */
#define WIRE_BATCH_MAX        4096 /* records, digest entries, wants */
#define WIRE_MEMBERS_MAX      1000000
#define WIRE_TEXT_MAX         (WIRE_MAX_FRAME - 1024)

/*
 * Pack env into a newly malloc'd frame: 4-byte length header + payload.
 * Returns 0, or -EMSGSIZE if the payload would exceed WIRE_MAX_FRAME.
 * On success the caller free()s *frame_out.
 */
int wire_encode(const Chord__Envelope *env, uint8_t **frame_out,
                size_t *len_out);

/*
 * Unpack and validate one payload (without its length header). Every field
 * is checked: ids exactly WIRE_ID_LEN bytes, addresses, keys and lists within
 * their bounds, the body present and matching req/reply use. Returns 0 with
 * *env_out set (free it with wire_msg_free()), -EMSGSIZE if len exceeds
 * WIRE_MAX_FRAME, or -EBADMSG for anything malformed (*env_out untouched).
 */
int wire_decode(const uint8_t *payload, size_t len, Chord__Envelope **env_out);

/* Free an envelope returned by wire_decode(). NULL is allowed. */
void wire_msg_free(Chord__Envelope *env);

/*
 * The validation wire_decode() applies, for envelopes built locally (tests,
 * and asserting what we are about to send). Returns 0 or -EBADMSG. The
 * rules, in full, are in the comment at the top of proto/wire.c; in short:
 * required sub-messages are FindSuccReply.node, Notify.node, Leave.node,
 * StateReply.self and ClientOp.req; StateReply.pred, Leave.pred,
 * KvReply.record, ClientOpReply.record and ClientOpReply.primary may be
 * absent; Hello and only Hello travels in both directions; a reply with a
 * status other than OK may have no body.
 */
int wire_msg_check(const Chord__Envelope *env);

/*
 * Incremental frame reader for a byte stream (one per connection).
 * Usage: wire_reader_feed() what read() returned, then call
 * wire_reader_next() until it returns 0.
 */
struct wire_reader {
    uint8_t *buf; /* buffered bytes, owned */
    size_t len;   /* bytes buffered */
    size_t off;   /* start of the first unconsumed frame */
    size_t cap;
};

void wire_reader_init(struct wire_reader *r);
void wire_reader_fini(struct wire_reader *r);
/* Append bytes; returns 0 (xmalloc aborts on OOM). */
int wire_reader_feed(struct wire_reader *r, const void *data, size_t len);
/*
 * Returns 1 with *payload_out and *len_out naming the next whole payload (valid
 * until the next feed or next call), 0 if more bytes are needed, or
 * -EMSGSIZE if the header announces more than WIRE_MAX_FRAME: the caller must
 * log and close the connection. The oversized payload is never buffered
 * beyond what was already fed.
 */
int wire_reader_next(struct wire_reader *r, const uint8_t **payload_out,
                     size_t *len_out);

/* Remote status -> 0 or -errno (the one table; STYLE.md section 4). */
int wire_status_to_errno(Chord__Status st);
/* -errno (or 0) -> status, for replies. */
Chord__Status wire_errno_to_status(int neg_errno);
/* Short stable name of a status, e.g. "NOT_FOUND". */
const char *wire_status_name(Chord__Status st);

/*
 * Records (the DHT's stored values), packed for the local store.
 * wire_record_pack: malloc'd *buf_out, caller free()s; returns 0.
 * wire_record_unpack: validates like wire_decode; *rec_out freed with
 * wire_record_free(). Returns 0 or -EBADMSG.
 */
int wire_record_pack(const Chord__Record *rec, uint8_t **buf_out,
                     size_t *len_out);
int wire_record_unpack(const uint8_t *buf, size_t len, Chord__Record **rec_out);
void wire_record_free(Chord__Record *rec);
/* Validation used by decode, exposed for records built locally. 0/-EBADMSG */
int wire_record_check(const Chord__Record *rec);

/*
 * File-system values (fs/ stores them in the ring; the ring never looks
 * inside). Same conventions as records: pack -> malloc'd buffer the caller
 * free()s; unpack -> validated message freed with the matching _free().
 */
int wire_inode_pack(const Chord__Inode *ino, uint8_t **buf_out,
                    size_t *len_out);
int wire_inode_unpack(const uint8_t *buf, size_t len, Chord__Inode **out);
void wire_inode_free(Chord__Inode *ino);

int wire_dirent_pack(const Chord__DirEntry *de, uint8_t **buf_out,
                     size_t *len_out);
int wire_dirent_unpack(const uint8_t *buf, size_t len, Chord__DirEntry **out);
void wire_dirent_free(Chord__DirEntry *de);

int wire_chunk_pack(const Chord__Chunk *c, uint8_t **buf_out, size_t *len_out);
int wire_chunk_unpack(const uint8_t *buf, size_t len, Chord__Chunk **out);
void wire_chunk_free(Chord__Chunk *c);

/* Helpers shared by all layers. xmalloc/xcalloc/xrealloc/xstrdup abort on
 * OOM (tmux, sshfs). */
void *wire_xmalloc(size_t n);
void *wire_xcalloc(size_t n, size_t size);
void *wire_xrealloc(void *p, size_t n);
char *wire_xstrdup(const char *s);

#endif
