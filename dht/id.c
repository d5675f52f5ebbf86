/*
 * dht/id.c - 160-bit identifiers: SHA-1 hashing and ring arithmetic.
 *
 * Ids are big-endian byte arrays, so memcmp() orders them as numbers.
 * Intervals are taken clockwise on the ring modulo 2^160 and wrap around.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "dht/dht-int.h"

void dht_id_hash(const void *data, size_t len, struct dht_id *out)
{
    unsigned int n = 0;

    /* EVP_Digest cannot fail for SHA-1 short of memory exhaustion. */
    if (!EVP_Digest(data, len, out->b, &n, EVP_sha1(), NULL) || n != DHT_ID_LEN)
        abort();
}

void dht_id_of(const char *s, struct dht_id *out)
{
    dht_id_hash(s, strlen(s), out);
}

int dht_id_cmp(const struct dht_id *a, const struct dht_id *b)
{
    return memcmp(a->b, b->b, DHT_ID_LEN);
}

bool dht_id_eq(const struct dht_id *a, const struct dht_id *b)
{
    return memcmp(a->b, b->b, DHT_ID_LEN) == 0;
}

bool dht_id_in_oo(const struct dht_id *x, const struct dht_id *a,
                  const struct dht_id *b)
{
    int ab = dht_id_cmp(a, b);

    if (ab < 0)
        return dht_id_cmp(a, x) < 0 && dht_id_cmp(x, b) < 0;
    /* Wrapping interval, or a == b (the whole ring except a). */
    return dht_id_cmp(x, a) > 0 || dht_id_cmp(x, b) < 0 ||
           (ab == 0 && !dht_id_eq(x, a));
}

bool dht_id_in_oc(const struct dht_id *x, const struct dht_id *a,
                  const struct dht_id *b)
{
    int ab = dht_id_cmp(a, b);

    if (ab == 0)
        return true;
    if (ab < 0)
        return dht_id_cmp(a, x) < 0 && dht_id_cmp(x, b) <= 0;
    return dht_id_cmp(x, a) > 0 || dht_id_cmp(x, b) <= 0;
}

void dht_id_add_pow2(const struct dht_id *a, int i, struct dht_id *out)
{
    int byte = DHT_ID_LEN - 1 - i / 8;
    unsigned carry = 1u << (i % 8);

    *out = *a;
    for (; byte >= 0 && carry; byte--) {
        unsigned v = out->b[byte] + carry;
        out->b[byte] = (uint8_t)v;
        carry = v >> 8;
    }
}

void dht_id_sub(const struct dht_id *b, const struct dht_id *a,
                struct dht_id *out)
{
    int borrow = 0;

    for (int i = DHT_ID_LEN - 1; i >= 0; i--) {
        int v = (int)b->b[i] - (int)a->b[i] - borrow;
        borrow = v < 0;
        out->b[i] = (uint8_t)(v + (borrow ? 256 : 0));
    }
}

double dht_id_frac(const struct dht_id *a)
{
    double f = 0;

    for (int i = DHT_ID_LEN - 1; i >= 0; i--)
        f = (f + a->b[i]) / 256.0;
    /* A double has 53 bits: ids within about 2^106 of 2^160 round to 1.0,
     * which is a full turn, not a fraction of one. */
    if (f >= 1.0)
        f = 0x1.fffffffffffffp-1;
    return f;
}

void dht_id_hex(const struct dht_id *a, char out[2 * DHT_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";

    for (int i = 0; i < DHT_ID_LEN; i++) {
        out[2 * i] = hex[a->b[i] >> 4];
        out[2 * i + 1] = hex[a->b[i] & 15];
    }
    out[2 * DHT_ID_LEN] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int dht_id_from_hex(const char *s, struct dht_id *out)
{
    struct dht_id id;

    if (strlen(s) != 2 * DHT_ID_LEN)
        return -EINVAL;
    for (int i = 0; i < DHT_ID_LEN; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        id.b[i] = (uint8_t)(hi << 4 | lo);
    }
    *out = id;
    return 0;
}
