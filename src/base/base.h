/* Base layer: error messages, timing, small helpers every layer uses. */
#ifndef D2M_BASE_H
#define D2M_BASE_H

#include "drum2midi.h"

#include <stddef.h>

/* Strict C11 hides M_PI; this is glibc's exact spelling, so no clash. */
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#if defined(__GNUC__)
#define D2M_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define D2M_PRINTF(a, b)
#endif

/* Record code and a printf-style message in err (err may be NULL); returns code
 * so callers can write `return d2m_fail(err, D2M_ERR_IO, "...")`. */
int d2m_fail(d2m_error *err, int code, const char *fmt, ...) D2M_PRINTF(3, 4);

/* The process-wide lock around library calls that are not thread-safe
 * (FFTW's planner). */
void d2m_library_lock(void);
void d2m_library_unlock(void);

/* Monotonic seconds. */
double d2m_now(void);

/* A growable array of doubles, for beat lists and similar. */
typedef struct {
    double *v; /* (n) */
    int n, cap;
} d2m_dvec;
int d2m_dvec_push(d2m_dvec *a, double x);
void d2m_dvec_free(d2m_dvec *a);

#endif
