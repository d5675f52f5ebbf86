/*
 * proto/wire.c - framing, encoding and validation of chordfs messages.
 *
 * This file owns everything between a byte stream and a trusted message:
 * the 4-byte big-endian length framing (wire_encode, struct wire_reader),
 * unpacking with protobuf-c (wire_decode and the record/inode/dirent/chunk
 * unpackers), the validation of every field, the one status <-> errno table,
 * and the aborting allocation helpers shared by all layers.
 *
 * Validation.  protobuf-c guarantees only that a message parses: a proto3
 * bytes field may have any length, an enum any int32 (proto3 enums are
 * open), a repeated field any count, and any member of a oneof may be
 * present.  Everything the rest of the program relies on is therefore
 * checked here, once, so that dht/ and fs/ can use a decoded message
 * without re-checking it:
 *  - a Node has an id of exactly WIRE_ID_LEN bytes and an addr of printable
 *    non-space characters, non-empty, shorter than WIRE_ADDR_MAX, holding
 *    a ':' (addresses are printed in /.chord listings, one per line); so
 *    has every FindSucc.avoid entry;
 *  - OpKind LOOKUP only in a ClientOp, never in a bare KvRequest;
 *  - required sub-messages are present: FindSuccReply.node, Notify.node,
 *    Leave.node, StateReply.self, ClientOp.req; optional ones may be absent
 *    (StateReply.pred, Leave.pred, KvReply.record, ClientOpReply.record and
 *    .primary);
 *  - keys are non-empty and shorter than WIRE_KEY_MAX; any byte but NUL is
 *    allowed because keys carry paths (protobuf-c strings cannot carry NUL);
 *  - lists and batches are bounded (WIRE_LIST_MAX, WIRE_BATCH_MAX,
 *    WIRE_MEMBERS_MAX), and so is the sum of all of them in one message
 *    (WIRE_ELEMS_MAX), counted before anything is allocated (see scan());
 *  - every enum is one of its defined values, and field number 0 (which
 *    protobuf-c lets through) is refused (see scan());
 *  - a Hello's id is empty only from a client, else WIRE_ID_LEN bytes; its
 *    addr, when not empty, is an address as above;
 *  - the Envelope's body matches its direction: request-only bodies never
 *    come with reply set, reply-only bodies always do, Hello goes both ways,
 *    and only a reply with a non-OK status may come without a body;
 *  - stored values: an Inode's target is shorter than 4096 bytes, its uuid
 *    empty or 16 bytes, its xattrs at most 1024 with names of 1..255 bytes
 *    and values of at most 64 KiB; a DirEntry's name is 1..255 bytes
 *    without '/'; a Chunk's sha1 is empty or 20 bytes, its data at most
 *    WIRE_MAX_FRAME.
 *
 * Nothing here keeps state between calls, so every function is safe to call
 * from any thread.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"

#define WIRE_ERROR_MAX      1024  /* Envelope.error bytes, exclusive */
#define WIRE_WHAT_MAX       64    /* InfoRequest.what bytes, exclusive */
#define WIRE_TARGET_MAX     4096  /* Inode.target bytes, exclusive */
#define WIRE_UUID_LEN       16    /* Inode.uuid */
#define WIRE_XATTRS_MAX     1024  /* xattrs per inode */
#define WIRE_XATTR_NAME_MAX 255   /* bytes, inclusive (XATTR_NAME_MAX) */
#define WIRE_XATTR_VAL_MAX  65536 /* bytes, inclusive (XATTR_SIZE_MAX) */
#define WIRE_NAME_MAX       255   /* DirEntry.name bytes, inclusive */
#define WIRE_SHA1_LEN       20    /* Chunk.sha1 */
/* Elements of all repeated fields of one message together (see scan()). */
#define WIRE_ELEMS_MAX (4 * WIRE_MEMBERS_MAX)
/* A reader whose buffer grew past this frees it once it drains, so one big
 * frame does not pin 16 MiB per connection for the connection's life. */
#define WIRE_READER_KEEP (64u << 10)
#define WIRE_READER_MIN  4096

/* ------------------------------------------------------------- allocation */

static void oom(size_t n)
{
    fprintf(stderr, "chordfs: out of memory allocating %zu bytes\n", n);
    abort();
}

void *wire_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p)
        oom(n);
    return p;
}

void *wire_xcalloc(size_t n, size_t size)
{
    void *p;

    if (n == 0 || size == 0)
        n = size = 1;
    p = calloc(n, size);
    if (!p)
        oom(size > 0 && n > SIZE_MAX / size ? SIZE_MAX : n * size);
    return p;
}

void *wire_xrealloc(void *p, size_t n)
{
    /* realloc(p, 0) may free p and return NULL: never ask for 0 bytes. */
    void *q = realloc(p, n ? n : 1);

    if (!q)
        oom(n);
    return q;
}

char *wire_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = wire_xmalloc(n);

    memcpy(d, s, n);
    return d;
}

/* ----------------------------------------------------------- status table */

static const struct {
    Chord__Status st;
    int neg_errno;
    const char *name;
} status_table[] = {
    {CHORD__STATUS__OK, 0, "OK"},
    {CHORD__STATUS__NOT_FOUND, -ENOENT, "NOT_FOUND"},
    {CHORD__STATUS__VERSION_MISMATCH, -ESTALE, "VERSION_MISMATCH"},
    {CHORD__STATUS__EXISTS, -EEXIST, "EXISTS"},
    {CHORD__STATUS__NOT_OWNER, -EAGAIN, "NOT_OWNER"},
    {CHORD__STATUS__TIMEOUT, -ETIMEDOUT, "TIMEOUT"},
    {CHORD__STATUS__BAD_REQUEST, -EINVAL, "BAD_REQUEST"},
    {CHORD__STATUS__REFUSED, -ECONNREFUSED, "REFUSED"},
    {CHORD__STATUS__INTERNAL, -EIO, "INTERNAL"},
    {CHORD__STATUS__UNAVAILABLE, -EHOSTUNREACH, "UNAVAILABLE"},
    {CHORD__STATUS__TOO_BIG, -EFBIG, "TOO_BIG"},
};

#define N_STATUS (sizeof(status_table) / sizeof(status_table[0]))

int wire_status_to_errno(Chord__Status st)
{
    for (size_t i = 0; i < N_STATUS; i++)
        if (status_table[i].st == st)
            return status_table[i].neg_errno;
    return -EIO;
}

Chord__Status wire_errno_to_status(int neg_errno)
{
    for (size_t i = 0; i < N_STATUS; i++)
        if (status_table[i].neg_errno == neg_errno)
            return status_table[i].st;
    return CHORD__STATUS__INTERNAL;
}

const char *wire_status_name(Chord__Status st)
{
    for (size_t i = 0; i < N_STATUS; i++)
        if (status_table[i].st == st)
            return status_table[i].name;
    return "UNKNOWN";
}

/* ------------------------------------------------------------- validation */

/* Each check returns true when the value is acceptable. */

static bool status_ok(Chord__Status st)
{
    return (int)st >= CHORD__STATUS__OK && (int)st <= CHORD__STATUS__TOO_BIG;
}

static bool record_kind_ok(Chord__RecordKind k)
{
    return (int)k >= CHORD__RECORD_KIND__VALUE &&
           (int)k <= CHORD__RECORD_KIND__TOMBSTONE;
}

/* LOOKUP asks a peer where a key lives: only a client may ask it (in a
 * ClientOp); a KvRequest to a primary is always a storage operation. */
static bool op_kind_ok(Chord__OpKind k, bool client)
{
    if (k == CHORD__OP_KIND__LOOKUP)
        return client;
    return (int)k >= CHORD__OP_KIND__GET && (int)k <= CHORD__OP_KIND__MEMBERS;
}

static bool inode_kind_ok(Chord__InodeKind k)
{
    return (int)k >= CHORD__INODE_KIND__REG &&
           (int)k <= CHORD__INODE_KIND__SYMLINK;
}

/* A string field shorter than max bytes (NULL only from local callers). */
static bool str_short(const char *s, size_t max)
{
    return s && strnlen(s, max) < max;
}

static bool id_ok(const ProtobufCBinaryData *b)
{
    return b->len == WIRE_ID_LEN && b->data;
}

/* "host:port": printable, no spaces, non-empty, < WIRE_ADDR_MAX, a ':'. */
static bool addr_ok(const char *s)
{
    bool colon = false;
    size_t n;

    if (!str_short(s, WIRE_ADDR_MAX) || !s[0])
        return false;
    for (n = 0; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (c <= 0x20 || c >= 0x7f)
            return false;
        if (c == ':')
            colon = true;
    }
    return colon;
}

static bool node_ok(const Chord__Node *n)
{
    return n && id_ok(&n->id) && addr_ok(n->addr);
}

static bool opt_node_ok(const Chord__Node *n)
{
    return !n || node_ok(n);
}

static bool nodes_ok(Chord__Node *const *v, size_t n)
{
    if (n > WIRE_LIST_MAX || (n && !v))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!node_ok(v[i]))
            return false;
    return true;
}

static bool key_ok(const char *k)
{
    return str_short(k, WIRE_KEY_MAX) && k[0];
}

static bool record_ok(const Chord__Record *r)
{
    if (!r || !key_ok(r->key) || !record_kind_ok(r->kind))
        return false;
    if (r->n_members > WIRE_MEMBERS_MAX || (r->n_members && !r->members))
        return false;
    return true;
}

static bool opt_record_ok(const Chord__Record *r)
{
    return !r || record_ok(r);
}

static bool records_ok(Chord__Record *const *v, size_t n)
{
    if (n > WIRE_BATCH_MAX || (n && !v))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!record_ok(v[i]))
            return false;
    return true;
}

static bool hello_ok(const Chord__Hello *h)
{
    if (!str_short(h->network, WIRE_NETWORK_MAX))
        return false;
    if (!(h->id.len == 0 && h->client) && !id_ok(&h->id))
        return false;
    if (!str_short(h->addr, WIRE_ADDR_MAX))
        return false;
    /* An advertised address, when there is one, must be usable as such. */
    return h->addr[0] == '\0' || addr_ok(h->addr);
}

static bool kv_request_ok(const Chord__KvRequest *q, bool client)
{
    return q && op_kind_ok(q->op, client) && key_ok(q->key);
}

/* FindSucc: an id, and at most WIRE_LIST_MAX addresses to route around. */
static bool find_succ_ok(const Chord__FindSucc *f)
{
    if (!id_ok(&f->id) || f->n_avoid > WIRE_LIST_MAX ||
        (f->n_avoid && !f->avoid))
        return false;
    for (size_t i = 0; i < f->n_avoid; i++)
        if (!addr_ok(f->avoid[i]))
            return false;
    return true;
}

static bool sync_digest_ok(const Chord__SyncDigest *s)
{
    if (!id_ok(&s->range_lo) || !id_ok(&s->range_hi) || !id_ok(&s->page_lo) ||
        !id_ok(&s->page_hi))
        return false;
    if (s->n_entries > WIRE_BATCH_MAX || (s->n_entries && !s->entries))
        return false;
    for (size_t i = 0; i < s->n_entries; i++)
        if (!s->entries[i] || !key_ok(s->entries[i]->key))
            return false;
    return true;
}

static bool sync_reply_ok(const Chord__SyncReply *s)
{
    if (s->n_want > WIRE_BATCH_MAX || (s->n_want && !s->want))
        return false;
    for (size_t i = 0; i < s->n_want; i++)
        if (!key_ok(s->want[i]))
            return false;
    return records_ok(s->records, s->n_records);
}

static bool client_op_reply_ok(const Chord__ClientOpReply *c)
{
    return opt_record_ok(c->record) && opt_node_ok(c->primary) &&
           nodes_ok(c->replicas, c->n_replicas);
}

enum body_dir { DIR_REQUEST, DIR_REPLY, DIR_BOTH };

/* Checks the body of env, and reports which direction it may travel in. */
static bool body_ok(const Chord__Envelope *e, enum body_dir *dir)
{
    *dir = DIR_REQUEST;
    switch (e->body_case) {
    case CHORD__ENVELOPE__BODY__NOT_SET:
        return false;
    case CHORD__ENVELOPE__BODY_HELLO:
        *dir = DIR_BOTH;
        return e->hello && hello_ok(e->hello);
    case CHORD__ENVELOPE__BODY_FIND_SUCC:
        return e->find_succ && find_succ_ok(e->find_succ);
    case CHORD__ENVELOPE__BODY_FIND_SUCC_REPLY:
        *dir = DIR_REPLY;
        return e->find_succ_reply && node_ok(e->find_succ_reply->node);
    case CHORD__ENVELOPE__BODY_GET_STATE:
        return e->get_state != NULL;
    case CHORD__ENVELOPE__BODY_STATE_REPLY:
        *dir = DIR_REPLY;
        return e->state_reply && opt_node_ok(e->state_reply->pred) &&
               nodes_ok(e->state_reply->succs, e->state_reply->n_succs) &&
               nodes_ok(e->state_reply->preds, e->state_reply->n_preds) &&
               node_ok(e->state_reply->self);
    case CHORD__ENVELOPE__BODY_NOTIFY:
        return e->notify && node_ok(e->notify->node);
    case CHORD__ENVELOPE__BODY_PING:
        return e->ping != NULL;
    case CHORD__ENVELOPE__BODY_PONG:
        *dir = DIR_REPLY;
        return e->pong && nodes_ok(e->pong->preds, e->pong->n_preds);
    case CHORD__ENVELOPE__BODY_LEAVE:
        return e->leave && node_ok(e->leave->node) &&
               opt_node_ok(e->leave->pred) &&
               nodes_ok(e->leave->succs, e->leave->n_succs);
    case CHORD__ENVELOPE__BODY_KV_REQUEST:
        return kv_request_ok(e->kv_request, false);
    case CHORD__ENVELOPE__BODY_KV_REPLY:
        *dir = DIR_REPLY;
        return e->kv_reply && opt_record_ok(e->kv_reply->record);
    case CHORD__ENVELOPE__BODY_REPLICATE:
        return e->replicate &&
               records_ok(e->replicate->records, e->replicate->n_records);
    case CHORD__ENVELOPE__BODY_ACK:
        *dir = DIR_REPLY;
        return e->ack != NULL;
    case CHORD__ENVELOPE__BODY_SYNC_DIGEST:
        return e->sync_digest && sync_digest_ok(e->sync_digest);
    case CHORD__ENVELOPE__BODY_SYNC_REPLY:
        *dir = DIR_REPLY;
        return e->sync_reply && sync_reply_ok(e->sync_reply);
    case CHORD__ENVELOPE__BODY_FETCH_RECORD:
        return e->fetch_record && key_ok(e->fetch_record->key);
    case CHORD__ENVELOPE__BODY_CLIENT_OP:
        return e->client_op && kv_request_ok(e->client_op->req, true);
    case CHORD__ENVELOPE__BODY_CLIENT_OP_REPLY:
        *dir = DIR_REPLY;
        return e->client_op_reply && client_op_reply_ok(e->client_op_reply);
    case CHORD__ENVELOPE__BODY_INFO_REQUEST:
        return e->info_request &&
               str_short(e->info_request->what, WIRE_WHAT_MAX);
    case CHORD__ENVELOPE__BODY_INFO_REPLY:
        *dir = DIR_REPLY;
        return e->info_reply && str_short(e->info_reply->text, WIRE_TEXT_MAX);
    case CHORD__ENVELOPE__BODY_LEAVE_REQUEST:
        return e->leave_request != NULL;
    case _CHORD__ENVELOPE__BODY__CASE_IS_INT_SIZE:
        break;
    }
    /* An unknown oneof case: protobuf-c never produces one. */
    return false;
}

/* Records and their members, as scan() counts them. */
static size_t records_elems(Chord__Record *const *v, size_t n)
{
    size_t t = n;

    for (size_t i = 0; i < n; i++)
        t += v[i]->n_members;
    return t;
}

/* Elements of every repeated field of a valid body, as scan() counts them,
 * so that envelopes built locally meet the same WIRE_ELEMS_MAX. */
static size_t body_elems(const Chord__Envelope *e)
{
    switch (e->body_case) {
    case CHORD__ENVELOPE__BODY_STATE_REPLY:
        return e->state_reply->n_succs + e->state_reply->n_preds;
    case CHORD__ENVELOPE__BODY_PONG:
        return e->pong->n_preds;
    case CHORD__ENVELOPE__BODY_LEAVE:
        return e->leave->n_succs;
    case CHORD__ENVELOPE__BODY_KV_REPLY:
        return e->kv_reply->record ? e->kv_reply->record->n_members : 0;
    case CHORD__ENVELOPE__BODY_REPLICATE:
        return records_elems(e->replicate->records, e->replicate->n_records);
    case CHORD__ENVELOPE__BODY_FIND_SUCC:
        return e->find_succ->n_avoid;
    case CHORD__ENVELOPE__BODY_SYNC_DIGEST:
        return e->sync_digest->n_entries;
    case CHORD__ENVELOPE__BODY_SYNC_REPLY:
        return e->sync_reply->n_want +
               records_elems(e->sync_reply->records, e->sync_reply->n_records);
    case CHORD__ENVELOPE__BODY_CLIENT_OP_REPLY:
        return e->client_op_reply->n_replicas +
               (e->client_op_reply->record
                    ? e->client_op_reply->record->n_members
                    : 0);
    default:
        return 0;
    }
}

int wire_msg_check(const Chord__Envelope *env)
{
    enum body_dir dir;

    if (!env || !status_ok(env->status) ||
        !str_short(env->error, WIRE_ERROR_MAX))
        return -EBADMSG;
    if (env->body_case == CHORD__ENVELOPE__BODY__NOT_SET)
        /* Only a failed request may be answered without a body. */
        return env->reply && env->status != CHORD__STATUS__OK ? 0 : -EBADMSG;
    if (!body_ok(env, &dir))
        return -EBADMSG;
    if ((dir == DIR_REQUEST && env->reply) || (dir == DIR_REPLY && !env->reply))
        return -EBADMSG;
    if (body_elems(env) > WIRE_ELEMS_MAX)
        return -EBADMSG;
    return 0;
}

int wire_record_check(const Chord__Record *rec)
{
    return record_ok(rec) ? 0 : -EBADMSG;
}

static int inode_check(const Chord__Inode *ino)
{
    if (!inode_kind_ok(ino->kind) || !str_short(ino->target, WIRE_TARGET_MAX))
        return -EBADMSG;
    if (ino->uuid.len != 0 && ino->uuid.len != WIRE_UUID_LEN)
        return -EBADMSG;
    if (ino->n_xattrs > WIRE_XATTRS_MAX || (ino->n_xattrs && !ino->xattrs))
        return -EBADMSG;
    for (size_t i = 0; i < ino->n_xattrs; i++) {
        const Chord__Xattr *x = ino->xattrs[i];
        if (!x || !str_short(x->name, WIRE_XATTR_NAME_MAX + 1) || !x->name[0] ||
            x->value.len > WIRE_XATTR_VAL_MAX)
            return -EBADMSG;
    }
    return 0;
}

static int dirent_check(const Chord__DirEntry *de)
{
    if (!str_short(de->name, WIRE_NAME_MAX + 1) || !de->name[0] ||
        strchr(de->name, '/') || !inode_kind_ok(de->kind))
        return -EBADMSG;
    return 0;
}

static int chunk_check(const Chord__Chunk *c)
{
    if (c->sha1.len != 0 && c->sha1.len != WIRE_SHA1_LEN)
        return -EBADMSG;
    if (c->data.len > WIRE_MAX_FRAME)
        return -EBADMSG;
    return 0;
}

/* ------------------------------------------------------ encode and decode */

int wire_encode(const Chord__Envelope *env, uint8_t **frame_out,
                size_t *len_out)
{
    size_t n = protobuf_c_message_get_packed_size(&env->base);
    uint8_t *buf;

    if (n > WIRE_MAX_FRAME)
        return -EMSGSIZE;
    buf = wire_xmalloc(WIRE_HDR_LEN + n);
    buf[0] = (uint8_t)(n >> 24);
    buf[1] = (uint8_t)(n >> 16);
    buf[2] = (uint8_t)(n >> 8);
    buf[3] = (uint8_t)n;
    if (protobuf_c_message_pack(&env->base, buf + WIRE_HDR_LEN) != n)
        abort(); /* protobuf-c disagrees with itself: cannot happen */
    *frame_out = buf;
    *len_out = WIRE_HDR_LEN + n;
    return 0;
}

/*
 * Counting before unpacking.  protobuf-c allocates as it parses: a 16 MiB
 * frame of two-byte empty sub-messages would become eight million structs
 * (about 45 bytes of heap per byte of input) before any validation could
 * refuse the list as too long.  So the bytes are first walked with the
 * message descriptors, allocating nothing, and refused when any repeated
 * field of any message in the tree holds more elements than it may
 * (Record.members WIRE_MEMBERS_MAX, any other list WIRE_BATCH_MAX; the exact
 * bounds are checked after unpacking), or the whole tree more than
 * WIRE_ELEMS_MAX.  That bounds the heap a decode can take to about
 * WIRE_ELEMS_MAX * 50 bytes.
 *
 * The walk also refuses field number 0 anywhere protobuf-c would parse.
 * protobuf-c accepts it when the tag is spelled as a multi-byte varint
 * (0x80 0x00), keeps it as an unknown field, packs it back as the single
 * byte 0x00, and then refuses what it packed: a message that does not
 * survive its own round trip (found by fuzz_wire).  Unknown fields with
 * valid numbers are kept: a newer peer may send them.
 */
#define WIRE_SCAN_FIELDS 32 /* most fields in any message (Envelope: 25) */
#define WIRE_SCAN_DEPTH  8  /* our schema nests 3 deep */

/* Read a varint at *p (at most 10 bytes, not past end); false if bad. */
static bool scan_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

static size_t scan_limit(const ProtobufCFieldDescriptor *f)
{
    return f->type == PROTOBUF_C_TYPE_BYTES ? WIRE_MEMBERS_MAX : WIRE_BATCH_MAX;
}

static bool scan(const ProtobufCMessageDescriptor *d, const uint8_t *p,
                 size_t len, int depth, size_t *total)
{
    const uint8_t *end = p + len;
    size_t counts[WIRE_SCAN_FIELDS] = {0};

    if (depth > WIRE_SCAN_DEPTH || d->n_fields > WIRE_SCAN_FIELDS)
        return false;
    while (p < end) {
        const ProtobufCFieldDescriptor *f;
        uint64_t tag, v;
        const uint8_t *sub = NULL;

        if (!scan_varint(&p, end, &tag) || (tag >> 3) == 0 ||
            (tag >> 3) > 0x1fffffff)
            return false;
        switch (tag & 7) {
        case PROTOBUF_C_WIRE_TYPE_VARINT:
            if (!scan_varint(&p, end, &v))
                return false;
            break;
        case PROTOBUF_C_WIRE_TYPE_64BIT:
            if ((size_t)(end - p) < 8)
                return false;
            p += 8;
            break;
        case PROTOBUF_C_WIRE_TYPE_32BIT:
            if ((size_t)(end - p) < 4)
                return false;
            p += 4;
            break;
        case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED:
            if (!scan_varint(&p, end, &v) || v > (uint64_t)(end - p))
                return false;
            sub = p;
            p += v;
            break;
        default: /* groups (not proto3) and invalid wire types */
            return false;
        }
        f = protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3));
        if (!f)
            continue; /* unknown: kept as raw bytes, never parsed */
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t i = (size_t)(f - d->fields);
            if (++counts[i] > scan_limit(f) || ++*total > WIRE_ELEMS_MAX)
                return false;
        }
        if (f->type == PROTOBUF_C_TYPE_MESSAGE && sub &&
            !scan(f->descriptor, sub, (size_t)(p - sub), depth + 1, total))
            return false;
    }
    return true;
}

/* Unpack len bytes as a message of descriptor d; NULL if they do not parse.
 * The result is freed with protobuf_c_message_free_unpacked(). */
static ProtobufCMessage *unpack(const ProtobufCMessageDescriptor *d,
                                const uint8_t *buf, size_t len)
{
    static const uint8_t empty[1];
    size_t total = 0;

    if (!buf && len)
        return NULL;
    if (!scan(d, buf ? buf : empty, len, 0, &total))
        return NULL;
    return protobuf_c_message_unpack(d, NULL, len, buf ? buf : empty);
}

int wire_decode(const uint8_t *payload, size_t len, Chord__Envelope **env_out)
{
    Chord__Envelope *env;

    if (len > WIRE_MAX_FRAME)
        return -EMSGSIZE;
    env = (Chord__Envelope *)unpack(&chord__envelope__descriptor, payload, len);
    if (!env)
        return -EBADMSG;
    if (wire_msg_check(env) < 0) {
        chord__envelope__free_unpacked(env, NULL);
        return -EBADMSG;
    }
    *env_out = env;
    return 0;
}

void wire_msg_free(Chord__Envelope *env)
{
    if (env)
        chord__envelope__free_unpacked(env, NULL);
}

/* ------------------------------------------------------------------ reader */

void wire_reader_init(struct wire_reader *r)
{
    r->buf = NULL;
    r->len = r->off = r->cap = 0;
}

void wire_reader_fini(struct wire_reader *r)
{
    free(r->buf);
    wire_reader_init(r);
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

/* True when the buffered data begins with a header announcing too much. */
static bool reader_poisoned(const struct wire_reader *r)
{
    return r->len - r->off >= WIRE_HDR_LEN &&
           get_be32(r->buf + r->off) > WIRE_MAX_FRAME;
}

int wire_reader_feed(struct wire_reader *r, const void *data, size_t len)
{
    size_t need;

    /* Drop consumed frames; payloads handed out before are now invalid. */
    if (r->off > 0) {
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
    }
    if (r->len == 0 && r->cap > WIRE_READER_KEEP)
        wire_reader_fini(r);
    /* After an oversized header the stream is dead: keep nothing more, so
     * a caller that goes on feeding cannot make us buffer the payload. */
    if (len == 0 || reader_poisoned(r))
        return 0;
    if (len > SIZE_MAX - r->len)
        abort();
    need = r->len + len;
    if (need > r->cap) {
        size_t cap = r->cap ? r->cap : WIRE_READER_MIN;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        r->buf = wire_xrealloc(r->buf, cap);
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, len);
    r->len = need;
    return 0;
}

int wire_reader_next(struct wire_reader *r, const uint8_t **payload_out,
                     size_t *len_out)
{
    size_t avail = r->len - r->off;
    uint32_t n;

    if (avail < WIRE_HDR_LEN)
        return 0;
    n = get_be32(r->buf + r->off);
    if (n > WIRE_MAX_FRAME)
        return -EMSGSIZE;
    if (avail - WIRE_HDR_LEN < n)
        return 0;
    *payload_out = r->buf + r->off + WIRE_HDR_LEN;
    *len_out = n;
    r->off += WIRE_HDR_LEN + n;
    return 1;
}

/* ------------------------------------------------ stored values (records) */

/* Pack any message into a malloc'd buffer (never NULL, even when empty). */
static void pack(const ProtobufCMessage *m, uint8_t **buf_out, size_t *len_out)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = wire_xmalloc(n);

    if (protobuf_c_message_pack(m, buf) != n)
        abort();
    *buf_out = buf;
    *len_out = n;
}

int wire_record_pack(const Chord__Record *rec, uint8_t **buf_out,
                     size_t *len_out)
{
    pack(&rec->base, buf_out, len_out);
    return 0;
}

int wire_record_unpack(const uint8_t *buf, size_t len, Chord__Record **rec_out)
{
    Chord__Record *rec =
        (Chord__Record *)unpack(&chord__record__descriptor, buf, len);

    if (!rec)
        return -EBADMSG;
    if (wire_record_check(rec) < 0) {
        chord__record__free_unpacked(rec, NULL);
        return -EBADMSG;
    }
    *rec_out = rec;
    return 0;
}

void wire_record_free(Chord__Record *rec)
{
    if (rec)
        chord__record__free_unpacked(rec, NULL);
}

int wire_inode_pack(const Chord__Inode *ino, uint8_t **buf_out, size_t *len_out)
{
    pack(&ino->base, buf_out, len_out);
    return 0;
}

int wire_inode_unpack(const uint8_t *buf, size_t len, Chord__Inode **out)
{
    Chord__Inode *ino;

    /* An inode travels inside a record inside a frame. */
    if (len > WIRE_MAX_FRAME)
        return -EBADMSG;
    ino = (Chord__Inode *)unpack(&chord__inode__descriptor, buf, len);
    if (!ino)
        return -EBADMSG;
    if (inode_check(ino) < 0) {
        chord__inode__free_unpacked(ino, NULL);
        return -EBADMSG;
    }
    *out = ino;
    return 0;
}

void wire_inode_free(Chord__Inode *ino)
{
    if (ino)
        chord__inode__free_unpacked(ino, NULL);
}

int wire_dirent_pack(const Chord__DirEntry *de, uint8_t **buf_out,
                     size_t *len_out)
{
    pack(&de->base, buf_out, len_out);
    return 0;
}

int wire_dirent_unpack(const uint8_t *buf, size_t len, Chord__DirEntry **out)
{
    Chord__DirEntry *de;

    if (len > WIRE_MAX_FRAME)
        return -EBADMSG;
    de = (Chord__DirEntry *)unpack(&chord__dir_entry__descriptor, buf, len);
    if (!de)
        return -EBADMSG;
    if (dirent_check(de) < 0) {
        chord__dir_entry__free_unpacked(de, NULL);
        return -EBADMSG;
    }
    *out = de;
    return 0;
}

void wire_dirent_free(Chord__DirEntry *de)
{
    if (de)
        chord__dir_entry__free_unpacked(de, NULL);
}

int wire_chunk_pack(const Chord__Chunk *c, uint8_t **buf_out, size_t *len_out)
{
    pack(&c->base, buf_out, len_out);
    return 0;
}

int wire_chunk_unpack(const uint8_t *buf, size_t len, Chord__Chunk **out)
{
    Chord__Chunk *c;

    /* Checked before unpacking so a huge buffer is never copied. */
    if (len > WIRE_MAX_FRAME + 64)
        return -EBADMSG;
    c = (Chord__Chunk *)unpack(&chord__chunk__descriptor, buf, len);
    if (!c)
        return -EBADMSG;
    if (chunk_check(c) < 0) {
        chord__chunk__free_unpacked(c, NULL);
        return -EBADMSG;
    }
    *out = c;
    return 0;
}

void wire_chunk_free(Chord__Chunk *c)
{
    if (c)
        chord__chunk__free_unpacked(c, NULL);
}
