/* Error codes and their messages. The detailed message lives in the caller's
 * d2m_error; d2m_strerror gives the short static text of a code. */
#include "base.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

const char *d2m_strerror(int code)
{
    switch (code) {
    case D2M_OK: return "success";
    case D2M_ERR_INVALID: return "invalid parameter";
    case D2M_ERR_NOMEM: return "out of memory";
    case D2M_ERR_IO: return "file could not be read or written";
    case D2M_ERR_FORMAT: return "not a supported audio file";
    case D2M_ERR_SILENT: return "the audio is silent";
    case D2M_ERR_NO_RHYTHM: return "no steady beat found";
    case D2M_ERR_TOO_SHORT: return "the song is shorter than the loop";
    case D2M_ERR_TOO_LONG: return "the song is longer than the limit";
    case D2M_ERR_CANCELLED: return "cancelled";
    case D2M_ERR_INTERNAL: return "internal error";
    default: return "unknown error";
    }
}

int d2m_fail(d2m_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

double d2m_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int d2m_dvec_push(d2m_dvec *a, double x)
{
    if (a->n == a->cap) {
        int cap = a->cap ? 2 * a->cap : 64;
        double *v = realloc(a->v, (size_t)cap * sizeof *v);
        if (!v) return D2M_ERR_NOMEM;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

void d2m_dvec_free(d2m_dvec *a)
{
    if (!a) return;
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}
