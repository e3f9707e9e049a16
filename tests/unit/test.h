/* A minimal test harness: CHECK records a failure with expected and actual
 * values and carries on; the test's main returns test_summary(). Ends with the
 * line "N passed, N failed". */
#ifndef D2M_TEST_H
#define D2M_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int test_passed, test_failed;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (cond) {                                                                        \
            test_passed++;                                                                 \
        } else {                                                                           \
            test_failed++;                                                                 \
            fprintf(stderr, "%s:%d: FAILED %s: ", __FILE__, __LINE__, #cond);              \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

#define CHECK_NEAR(actual, expected, tol)                                                  \
    CHECK(fabs((double)(actual) - (double)(expected)) <= (tol),                            \
          "expected %g, got %g (tolerance %g)", (double)(expected), (double)(actual),       \
          (double)(tol))

static inline int test_summary(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, test_passed, test_failed);
    return test_failed ? 1 : 0;
}

/* Path of a file under the source tree. */
static inline const char *test_source_path(char *buf, size_t n, const char *rel)
{
    const char *root = getenv("D2M_SOURCE_DIR");
    snprintf(buf, n, "%s/%s", root ? root : ".", rel);
    return buf;
}

#endif
