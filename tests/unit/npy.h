/* A strict .npy reader for the tests' reference data: NumPy format
 * version 1.0, '<f4', C order, nothing after the data. */
#ifndef D2M_TEST_NPY_H
#define D2M_TEST_NPY_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int ndim;
    int64_t shape[8];
    int64_t n;
    float *data;
} npy;

static inline void npy_free(npy *a)
{
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* 0, or -1 when the file is missing or not strict .npy. */
static inline int npy_load(npy *a, const char *path)
{
    memset(a, 0, sizeof *a);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    unsigned char head[10];
    char text[1024];
    int ok = fread(head, 1, 10, f) == 10 && memcmp(head, "\x93NUMPY\x01\x00", 8) == 0;
    size_t hlen = ok ? (size_t)head[8] | (size_t)head[9] << 8 : 0;
    ok = ok && hlen < sizeof text && fread(text, 1, hlen, f) == hlen;
    if (ok) {
        text[hlen] = 0;
        const char *prefix = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
        ok = strncmp(text, prefix, strlen(prefix)) == 0 && text[hlen - 1] == '\n';
        const char *s = text + strlen(prefix);
        a->n = 1;
        while (ok && *s != ')') {
            char *end;
            long long v = strtoll(s, &end, 10);
            ok = end != s && v >= 0 && a->ndim < 8;
            if (!ok) break;
            a->shape[a->ndim++] = v;
            a->n *= v;
            s = end;
            if (*s == ',') s++;
            if (*s == ' ') s++;
        }
        ok = ok && strncmp(s, "), }", 4) == 0;
    }
    if (ok) {
        a->data = malloc((size_t)a->n * sizeof(float) + 1);
        ok = a->data && fread(a->data, sizeof(float), (size_t)a->n, f) == (size_t)a->n &&
             fgetc(f) == EOF;
    }
    fclose(f);
    if (!ok) npy_free(a);
    return ok ? 0 : -1;
}

#endif
