/*
 * tests/unit/test_id.c - 160-bit identifiers (dht/id.c): SHA-1, ring
 * intervals with wrap-around, power-of-two addition, distance, fraction of
 * the ring, and hex conversion.
 */
#include <errno.h>
#include <string.h>

#include "dht/dht.h"
#include "tests/unit/testhelp.h"

/* An id that is zero except for its last byte. */
static struct dht_id small(uint8_t v)
{
    struct dht_id id;

    memset(&id, 0, sizeof(id));
    id.b[DHT_ID_LEN - 1] = v;
    return id;
}

static struct dht_id fill(uint8_t v)
{
    struct dht_id id;

    memset(&id, v, sizeof(id));
    return id;
}

static struct dht_id hex(const char *s)
{
    struct dht_id id;

    memset(&id, 0xee, sizeof(id));
    CHECK_EQ(dht_id_from_hex(s, &id), 0);
    return id;
}

static void test_id_sha1_abc(void)
{
    struct dht_id id, want = hex("a9993e364706816aba3e25717850c26c9cd0d89d");
    char out[2 * DHT_ID_LEN + 1];

    dht_id_hash("abc", 3, &id);
    CHECK(dht_id_eq(&id, &want));
    dht_id_of("abc", &id);
    CHECK(dht_id_eq(&id, &want));
    dht_id_hex(&id, out);
    CHECK(strcmp(out, "a9993e364706816aba3e25717850c26c9cd0d89d") == 0);
    dht_id_of("", &id);
    want = hex("da39a3ee5e6b4b0d3255bfef95601890afd80709");
    CHECK(dht_id_eq(&id, &want));
}

static void test_id_cmp_orders_as_numbers(void)
{
    struct dht_id a = small(0xff), b = fill(0);

    b.b[0] = 1; /* 2^152 > 255 */
    CHECK(dht_id_cmp(&a, &b) < 0);
    CHECK(dht_id_cmp(&b, &a) > 0);
    CHECK_EQ(dht_id_cmp(&a, &a), 0);
    CHECK(dht_id_eq(&a, &a));
    CHECK(!dht_id_eq(&a, &b));
}

/* (a, b) with a < b: strictly between, ends excluded. */
static void test_id_in_oo_plain(void)
{
    struct dht_id a = small(10), b = small(20);

    for (int x = 0; x < 256; x++) {
        struct dht_id id = small((uint8_t)x);
        CHECK_EQ(dht_id_in_oo(&id, &a, &b), x > 10 && x < 20);
    }
}

/* (a, b) with a > b wraps through zero. */
static void test_id_in_oo_wrap(void)
{
    struct dht_id a = small(200), b = small(20), top = fill(0xff);

    for (int x = 0; x < 256; x++) {
        struct dht_id id = small((uint8_t)x);
        CHECK_EQ(dht_id_in_oo(&id, &a, &b), x > 200 || x < 20);
    }
    /* Far above a, just below 2^160. */
    CHECK(dht_id_in_oo(&top, &a, &b));
}

/* (a, a) is the whole ring except a. */
static void test_id_in_oo_equal_ends(void)
{
    struct dht_id a = small(77), top = fill(0xff), zero = fill(0);

    for (int x = 0; x < 256; x++) {
        struct dht_id id = small((uint8_t)x);
        CHECK_EQ(dht_id_in_oo(&id, &a, &a), x != 77);
    }
    CHECK(dht_id_in_oo(&top, &a, &a));
    CHECK(!dht_id_in_oo(&zero, &zero, &zero));
    CHECK(dht_id_in_oo(&top, &zero, &zero));
    CHECK(!dht_id_in_oo(&top, &top, &top));
}

/* (a, b] includes b and excludes a. */
static void test_id_in_oc_plain_and_wrap(void)
{
    struct dht_id a = small(10), b = small(20);

    for (int x = 0; x < 256; x++) {
        struct dht_id id = small((uint8_t)x);
        CHECK_EQ(dht_id_in_oc(&id, &a, &b), x > 10 && x <= 20);
        /* Swapped: the wrapping complement, ends swapped too. */
        CHECK_EQ(dht_id_in_oc(&id, &b, &a), x > 20 || x <= 10);
    }
}

/* (a, a] is the whole ring, a included: a lone node owns every key. */
static void test_id_in_oc_equal_ends(void)
{
    struct dht_id a = small(77), top = fill(0xff), zero = fill(0);

    for (int x = 0; x < 256; x++) {
        struct dht_id id = small((uint8_t)x);
        CHECK(dht_id_in_oc(&id, &a, &a));
    }
    CHECK(dht_id_in_oc(&top, &a, &a));
    CHECK(dht_id_in_oc(&zero, &zero, &zero));
}

/* (a, b] vs (a, b): they differ exactly at b. */
static void test_id_oc_vs_oo(void)
{
    struct dht_id a = hex("f000000000000000000000000000000000000000");
    struct dht_id b = hex("0000000000000000000000000000000000000010");
    struct dht_id zero = fill(0), top = fill(0xff);

    CHECK(dht_id_in_oc(&b, &a, &b));
    CHECK(!dht_id_in_oo(&b, &a, &b));
    CHECK(!dht_id_in_oc(&a, &a, &b));
    CHECK(!dht_id_in_oo(&a, &a, &b));
    CHECK(dht_id_in_oc(&zero, &a, &b));
    CHECK(dht_id_in_oo(&zero, &a, &b));
    CHECK(dht_id_in_oc(&top, &a, &b));
    CHECK(dht_id_in_oo(&top, &a, &b));
}

static void test_id_add_pow2(void)
{
    struct dht_id zero = fill(0), out, want;

    dht_id_add_pow2(&zero, 0, &out);
    want = small(1);
    CHECK(dht_id_eq(&out, &want));
    dht_id_add_pow2(&zero, 7, &out);
    want = small(0x80);
    CHECK(dht_id_eq(&out, &want));
    dht_id_add_pow2(&zero, 8, &out);
    want = hex("0000000000000000000000000000000000000100");
    CHECK(dht_id_eq(&out, &want));
    dht_id_add_pow2(&zero, 159, &out);
    want = hex("8000000000000000000000000000000000000000");
    CHECK(dht_id_eq(&out, &want));
    dht_id_add_pow2(&zero, 100, &out);
    want = hex("0000000000000010000000000000000000000000");
    CHECK(dht_id_eq(&out, &want));
}

static void test_id_add_pow2_carries(void)
{
    struct dht_id a, out, want;

    /* 0x..00ff + 1 carries into the next byte. */
    a = small(0xff);
    dht_id_add_pow2(&a, 0, &out);
    want = hex("0000000000000000000000000000000000000100");
    CHECK(dht_id_eq(&out, &want));
    /* A carry that ripples across several bytes. */
    a = hex("00000000000000000000000000000000ffffff80");
    dht_id_add_pow2(&a, 7, &out);
    want = hex("0000000000000000000000000000000100000000");
    CHECK(dht_id_eq(&out, &want));
    /* Adding a bit in a middle byte leaves the bytes below alone. */
    a = hex("000000000000000000000000000000ff00ff1234");
    dht_id_add_pow2(&a, 24, &out);
    want = hex("000000000000000000000000000000ff01ff1234");
    CHECK(dht_id_eq(&out, &want));
    dht_id_add_pow2(&a, 32, &out);
    want = hex("0000000000000000000000000000010000ff1234");
    CHECK(dht_id_eq(&out, &want));
    /* The input is not modified. */
    want = hex("000000000000000000000000000000ff00ff1234");
    CHECK(dht_id_eq(&a, &want));
}

static void test_id_add_pow2_wraps(void)
{
    struct dht_id a = fill(0xff), out, zero = fill(0), want;

    /* (2^160 - 1) + 1 = 0 mod 2^160. */
    dht_id_add_pow2(&a, 0, &out);
    CHECK(dht_id_eq(&out, &zero));
    /* 2^159 + 2^159 = 0. */
    a = hex("8000000000000000000000000000000000000000");
    dht_id_add_pow2(&a, 159, &out);
    CHECK(dht_id_eq(&out, &zero));
    /* (2^160 - 2^8) + 2^9 = 2^8. */
    a = hex("ffffffffffffffffffffffffffffffffffffff00");
    dht_id_add_pow2(&a, 9, &out);
    want = hex("0000000000000000000000000000000000000100");
    CHECK(dht_id_eq(&out, &want));
    /* In place. */
    a = fill(0xff);
    dht_id_add_pow2(&a, 0, &a);
    CHECK(dht_id_eq(&a, &zero));
}

static void test_id_sub(void)
{
    struct dht_id a = small(1), b = fill(0), out, top = fill(0xff), want;

    dht_id_sub(&b, &a, &out); /* 0 - 1 */
    CHECK(dht_id_eq(&out, &top));
    dht_id_sub(&a, &a, &out);
    CHECK(dht_id_eq(&out, &b));
    a = hex("0000000000000000000000000000000000000100");
    b = hex("0000000000000000000000000000000000010001");
    dht_id_sub(&b, &a, &out); /* borrows across bytes */
    want = hex("000000000000000000000000000000000000ff01");
    CHECK(dht_id_eq(&out, &want));
    dht_id_sub(&a, &b, &out); /* the other way round: wraps */
    want = hex("ffffffffffffffffffffffffffffffffffff00ff");
    CHECK(dht_id_eq(&out, &want));
    /* (a + 2^i) - a == 2^i for every i, from an awkward a. */
    a = hex("fedcba9876543210fedcba9876543210fedcba98");
    for (int i = 0; i < DHT_ID_BITS; i++) {
        struct dht_id s, pow, zero = fill(0);
        dht_id_add_pow2(&a, i, &s);
        dht_id_sub(&s, &a, &out);
        dht_id_add_pow2(&zero, i, &pow);
        CHECK(dht_id_eq(&out, &pow));
    }
}

static void test_id_frac(void)
{
    struct dht_id a = fill(0), top = fill(0xff);
    double f;

    CHECK(dht_id_frac(&a) == 0.0);
    a.b[0] = 0x80;
    CHECK(dht_id_frac(&a) == 0.5);
    a.b[0] = 0x40;
    CHECK(dht_id_frac(&a) == 0.25);
    a.b[0] = 0xc0;
    CHECK(dht_id_frac(&a) == 0.75);
    a = small(1);
    f = dht_id_frac(&a);
    CHECK(f > 0.0 && f < 1e-47);
    /* The very last id is still short of a full turn. */
    f = dht_id_frac(&top);
    CHECK(f < 1.0);
    CHECK(f > 0.999999);
}

static void test_id_hex_roundtrip(void)
{
    struct dht_id a, b;
    char out[2 * DHT_ID_LEN + 1];

    for (int i = 0; i < DHT_ID_LEN; i++)
        a.b[i] = (uint8_t)(i * 37 + 5);
    dht_id_hex(&a, out);
    CHECK_EQ(strlen(out), 2 * DHT_ID_LEN);
    CHECK_EQ(dht_id_from_hex(out, &b), 0);
    CHECK(dht_id_eq(&a, &b));
    /* Upper case is accepted; output is lower case. */
    CHECK_EQ(dht_id_from_hex("A9993E364706816ABA3E25717850C26C9CD0D89D", &b),
             0);
    dht_id_hex(&b, out);
    CHECK(strcmp(out, "a9993e364706816aba3e25717850c26c9cd0d89d") == 0);
}

static void test_id_hex_bad(void)
{
    struct dht_id a = fill(0x5a), keep = fill(0x5a);

    /* 39 and 41 digits, empty, a non-hex digit, a space, a sign. */
    CHECK_EQ(dht_id_from_hex("a9993e364706816aba3e25717850c26c9cd0d89", &a),
             -EINVAL);
    CHECK_EQ(dht_id_from_hex("a9993e364706816aba3e25717850c26c9cd0d89d0", &a),
             -EINVAL);
    CHECK_EQ(dht_id_from_hex("", &a), -EINVAL);
    CHECK_EQ(dht_id_from_hex("g9993e364706816aba3e25717850c26c9cd0d89d", &a),
             -EINVAL);
    CHECK_EQ(dht_id_from_hex("a9993e364706816aba3e25717850c26c9cd0d89 ", &a),
             -EINVAL);
    CHECK_EQ(dht_id_from_hex("-9993e364706816aba3e25717850c26c9cd0d89d", &a),
             -EINVAL);
    CHECK_EQ(dht_id_from_hex("0x993e364706816aba3e25717850c26c9cd0d89d", &a),
             -EINVAL);
    /* A failed parse leaves the output alone. */
    CHECK(dht_id_eq(&a, &keep));
}

int main(void)
{
    RUN(test_id_sha1_abc);
    RUN(test_id_cmp_orders_as_numbers);
    RUN(test_id_in_oo_plain);
    RUN(test_id_in_oo_wrap);
    RUN(test_id_in_oo_equal_ends);
    RUN(test_id_in_oc_plain_and_wrap);
    RUN(test_id_in_oc_equal_ends);
    RUN(test_id_oc_vs_oo);
    RUN(test_id_add_pow2);
    RUN(test_id_add_pow2_carries);
    RUN(test_id_add_pow2_wraps);
    RUN(test_id_sub);
    RUN(test_id_frac);
    RUN(test_id_hex_roundtrip);
    RUN(test_id_hex_bad);
    return DONE();
}
