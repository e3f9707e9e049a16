/* The weight table shared by the checkpoint and ONNX loaders: tensors kept
 * in load order, looked up by name with a linear scan (a few hundred
 * tensors, looked up once when a model is built). Read-only after loading;
 * not thread-safe while loading. */
#include "weights_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

d2m_weights *weights_new(void) { return calloc(1, sizeof(d2m_weights)); }

void weights_free(d2m_weights *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->names[i]);
        free(w->buffers[i]);
    }
    free(w->tensors);
    free(w->names);
    free(w->buffers);
    free(w);
}

int weights_add(d2m_weights *w, const char *name, int ndim, const int64_t *shape, float *data,
                d2m_error *err)
{
    if (ndim < 0 || ndim > D2M_MAX_DIMS) {
        free(data);
        return d2m_fail(err, D2M_ERR_FORMAT, "tensor %s: %d dimensions (at most %d)", name, ndim,
                        D2M_MAX_DIMS);
    }
    if (weights_get(w, name)) {
        free(data);
        return d2m_fail(err, D2M_ERR_FORMAT, "tensor %s appears twice", name);
    }
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 256;
        d2m_tensor *t = realloc(w->tensors, (size_t)cap * sizeof *t);
        if (t) w->tensors = t;
        char **nm = realloc(w->names, (size_t)cap * sizeof *nm);
        if (nm) w->names = nm;
        float **b = realloc(w->buffers, (size_t)cap * sizeof *b);
        if (b) w->buffers = b;
        if (!t || !nm || !b) {
            free(data);
            return d2m_fail(err, D2M_ERR_NOMEM, "out of memory for the weight table");
        }
        w->cap = cap;
        /* Names and data moved with their arrays: re-point the views. */
        for (int i = 0; i < w->n; i++) {
            w->tensors[i].name = w->names[i];
            w->tensors[i].data = w->buffers[i];
        }
    }
    char *copy = malloc(strlen(name) + 1);
    if (!copy) {
        free(data);
        return d2m_fail(err, D2M_ERR_NOMEM, "out of memory for the weight table");
    }
    strcpy(copy, name);
    d2m_tensor *t = &w->tensors[w->n];
    memset(t, 0, sizeof *t);
    t->name = copy;
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->numel *= shape[d];
    }
    t->data = data;
    w->names[w->n] = copy;
    w->buffers[w->n] = data;
    w->n++;
    return 0;
}

int weights_count(const d2m_weights *w) { return w ? w->n : 0; }

const d2m_tensor *weights_at(const d2m_weights *w, int i)
{
    return w && i >= 0 && i < w->n ? &w->tensors[i] : NULL;
}

const d2m_tensor *weights_get(const d2m_weights *w, const char *name)
{
    if (!w) return NULL;
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->tensors[i].name, name) == 0) return &w->tensors[i];
    return NULL;
}

const d2m_model_args *weights_args(const d2m_weights *w) { return w ? &w->args : NULL; }

float weights_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {
            /* Subnormal: normalise. */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400));
            bits = sign | (uint32_t)(127 - 15 - e) << 23 | (mant & 0x3ff) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | mant << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

int weights_load(d2m_weights **out, const char *path, d2m_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return d2m_fail(err, D2M_ERR_IO, "%s: cannot open the model file", path);
    unsigned char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got == 4 && magic[0] == 'P' && magic[1] == 'K') return weights_load_th(out, path, err);
    return weights_load_onnx(out, path, err);
}
