/*
 * tests/unit/testhelp.h - a tiny TAP harness (after redis testhelp.h).
 *
 *   static void test_id_wraps(void) { CHECK(x == y); CHECK_EQ(a, b); }
 *   int main(void) { RUN(test_id_wraps); return DONE(); }
 *
 * Each RUN() prints one TAP line, "ok N - name" or "not ok N - name", with
 * the failing checks as "# " diagnostics; DONE() prints the plan and returns
 * the exit status for prove.
 */
#ifndef CHORDFS_TESTHELP_H
#define CHORDFS_TESTHELP_H

#include <stdio.h>
#include <inttypes.h>

static int th_run, th_failed, th_cur_failed;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            printf("# %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);  \
            th_cur_failed++;                                                   \
        }                                                                      \
    } while (0)

#define CHECK_EQ(a, b)                                                         \
    do {                                                                       \
        long long th_a = (long long)(a), th_b = (long long)(b);                \
        if (th_a != th_b) {                                                    \
            printf("# %s:%d: %s == %s failed: %lld != %lld\n", __FILE__,       \
                   __LINE__, #a, #b, th_a, th_b);                              \
            th_cur_failed++;                                                   \
        }                                                                      \
    } while (0)

#define RUN(fn)                                                                \
    do {                                                                       \
        th_cur_failed = 0;                                                     \
        fflush(stdout);                                                        \
        fn();                                                                  \
        th_run++;                                                              \
        if (th_cur_failed)                                                     \
            th_failed++;                                                       \
        printf("%s %d - %s\n", th_cur_failed ? "not ok" : "ok", th_run, #fn);  \
        fflush(stdout);                                                        \
    } while (0)

#define DONE() (printf("1..%d\n", th_run), th_failed ? 1 : 0)

#endif
