/* The official Demucs checkpoint (.th) reader: a torch.save zip archive whose
 * <root>/data.pkl pickles a dict {klass, args, kwargs, state, training_args,
 * metrics}; each state tensor is _rebuild_tensor_v2 of a storage whose bytes
 * are the record <root>/data/<key> (little-endian float16, or float32).
 *
 * The file is read once into memory (the one extra copy); each record is
 * checked (CRC-32, size = storage numel x element size, contiguous strides,
 * offset + numel inside the storage) and converted straight from the archive
 * bytes into the tensor's float32 buffer, exactly (IEEE half -> float).
 * The tensor data all tensors take together may not exceed the file's size,
 * so storages shared between tensors cannot multiply the memory a hostile
 * file costs.
 *
 * Reference: upstream demucs/states.py (serialize_model), tools/export.py;
 * torch/serialization.py (_save, _load). Format notes:
 * ../shared/demucs/README.md "tiny.th: official checkpoint format".
 * Threading: reentrant; no global state.
 */
#include "pickle.h"
#include "weights_internal.h"
#include "zip.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ROOT_MAX = 128, RECORD_NAME_MAX = ROOT_MAX + 80 };

/* A Demucs data.pkl is tens of kilobytes (the real htdemucs's about 70 kB);
 * the cap bounds what a hostile pickle can make the unpickler allocate. */
#define PICKLE_MAX_BYTES ((size_t)4 << 20)

typedef struct {
    zip_archive zip;
    char root[ROOT_MAX]; /* the archive's root folder: "archive", or the saved file's stem */
    size_t data_left;    /* bytes of tensor data still allowed */
    d2m_error *err;
} th_reader;

/* ---- archive layout ---- */

/* torch puts every record under one root folder; find it from data.pkl. */
static int find_root(th_reader *r)
{
    static const char suffix[] = "/data.pkl";
    const size_t suffix_len = sizeof suffix - 1;
    int found = 0;
    for (int i = 0; i < r->zip.count; i++) {
        const zip_record *rec = &r->zip.records[i];
        if (rec->name_len <= suffix_len || rec->name_len - suffix_len >= ROOT_MAX) continue;
        size_t root_len = rec->name_len - suffix_len;
        if (memcmp(rec->name + root_len, suffix, suffix_len) != 0) continue;
        if (memchr(rec->name, '/', root_len) || memchr(rec->name, '\0', root_len)) continue;
        if (found++) return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: the archive holds two data.pkl records");
        memcpy(r->root, rec->name, root_len);
        r->root[root_len] = '\0';
    }
    if (!found)
        return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: no <root>/data.pkl record (not a torch.save archive)");
    return 0;
}

static zip_record *find_record(th_reader *r, const char *rel)
{
    char name[RECORD_NAME_MAX];
    snprintf(name, sizeof name, "%s/%s", r->root, rel);
    return zip_find(&r->zip, name);
}

static int record_equals(const zip_record *rec, const char *text)
{
    size_t len = strlen(text);
    return rec->size == len && memcmp(rec->data, text, len) == 0;
}

/* The serialization format version (torch writes 3 since 1.6) and, from torch
 * 2.1 on, the byte order; a missing byteorder record means little-endian. */
static int check_version(th_reader *r)
{
    zip_record *version = find_record(r, "version");
    if (!version) return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: no %s/version record", r->root);
    int rc = zip_verify(&r->zip, version, r->err);
    if (rc) return rc;
    if (!record_equals(version, "1\n") && !record_equals(version, "2\n") && !record_equals(version, "3\n") &&
        !record_equals(version, "1") && !record_equals(version, "2") && !record_equals(version, "3"))
        return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: unsupported torch archive version (expected 1-3)");
    zip_record *order = find_record(r, "byteorder");
    if (order) {
        if ((rc = zip_verify(&r->zip, order, r->err))) return rc;
        if (!record_equals(order, "little"))
            return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: tensors are not stored little-endian");
    }
    return 0;
}

/* ---- tensors ---- */

static void convert_float16(float *dst, const unsigned char *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) dst[i] = weights_half_to_float((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
}

static void convert_float32(float *dst, const unsigned char *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p = src + 4 * i;
        uint32_t bits = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        memcpy(&dst[i], &bits, sizeof bits);
    }
}

static int load_tensor(th_reader *r, d2m_weights *w, const char *name, const pickle_tensor *t)
{
    const pickle_storage *s = &t->storage->storage;
    const size_t element = s->dtype == PICKLE_FLOAT16 ? 2 : 4;
    const char *dtype = s->dtype == PICKLE_FLOAT16 ? "float16" : "float32";
    if (t->ndim > D2M_MAX_DIMS)
        return d2m_fail(r->err, D2M_ERR_FORMAT, "tensor %.200s: %d dimensions (at most %d)", name, t->ndim,
                        D2M_MAX_DIMS);

    char rel[80];
    snprintf(rel, sizeof rel, "data/%s", s->key);
    zip_record *rec = find_record(r, rel);
    if (!rec)
        return d2m_fail(r->err, D2M_ERR_FORMAT, "tensor %.200s: record %s/%s is missing", name, r->root, rel);
    if ((uint64_t)s->numel > rec->size / element || (size_t)s->numel * element != rec->size)
        return d2m_fail(r->err, D2M_ERR_FORMAT,
                        "tensor %.200s: record %s/%s holds %zu bytes, but its storage declares %lld %s values",
                        name, r->root, rel, rec->size, (long long)s->numel, dtype);

    /* Element count, bounded by the storage (so no overflow), and torch's
     * contiguity rule: strides of size-1 dimensions do not matter. */
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] == 0) numel = 0;
    for (int d = 0; d < t->ndim && numel; d++) {
        if (t->shape[d] > s->numel / numel)
            return d2m_fail(r->err, D2M_ERR_FORMAT, "tensor %.200s: shape larger than its storage (%lld values)",
                            name, (long long)s->numel);
        numel *= t->shape[d];
    }
    if (numel) {
        int64_t expected = 1;
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (t->shape[d] != 1 && t->stride[d] != expected)
                return d2m_fail(r->err, D2M_ERR_FORMAT,
                                "tensor %.200s: not contiguous (dimension %d has stride %lld, expected %lld)", name,
                                d, (long long)t->stride[d], (long long)expected);
            expected *= t->shape[d];
        }
    }
    if (t->offset > s->numel || numel > s->numel - t->offset)
        return d2m_fail(r->err, D2M_ERR_FORMAT,
                        "tensor %.200s: %lld values at offset %lld run past its %lld-value storage", name,
                        (long long)numel, (long long)t->offset, (long long)s->numel);
    size_t bytes = (size_t)numel * element;
    if (bytes > r->data_left)
        return d2m_fail(r->err, D2M_ERR_FORMAT,
                        "tensor %.200s: the tensors use more data than the file holds (shared storages?)", name);
    r->data_left -= bytes;

    int rc = zip_verify(&r->zip, rec, r->err);
    if (rc) return rc;
    float *data = malloc(numel ? (size_t)numel * sizeof *data : sizeof *data);
    if (!data)
        return d2m_fail(r->err, D2M_ERR_NOMEM, "tensor %.200s: out of memory for %lld values", name,
                        (long long)numel);
    const unsigned char *src = rec->data + (size_t)t->offset * element;
    if (s->dtype == PICKLE_FLOAT16)
        convert_float16(data, src, numel);
    else
        convert_float32(data, src, numel);
    return weights_add(w, name, t->ndim, t->shape, data, r->err);
}

static int load_state(th_reader *r, d2m_weights *w, const pickle_value *state)
{
    if (!state || state->kind != PICKLE_DICT)
        return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: no 'state' dict of tensors");
    for (int k = 0; k < state->n; k++) {
        const pickle_value *key = state->items[2 * k], *value = state->items[2 * k + 1];
        if (key->kind != PICKLE_STR)
            return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: state key %d is a %s, not a name", k,
                            pickle_kind_name(key->kind));
        if (value->kind != PICKLE_TENSOR)
            return d2m_fail(r->err, D2M_ERR_FORMAT,
                            "checkpoint: state entry %.200s is a %s, not a tensor (quantized checkpoints are "
                            "not supported)", key->str, pickle_kind_name(value->kind));
        int rc = load_tensor(r, w, key->str, value->tensor);
        if (rc) return rc;
    }
    return 0;
}

/* ---- model arguments ---- */

typedef enum { ARG_INT, ARG_BOOL, ARG_DOUBLE } arg_type;

static const struct {
    const char *key;
    arg_type type;
    size_t offset;
} arg_fields[] = {
    {"audio_channels", ARG_INT, offsetof(d2m_model_args, audio_channels)},
    {"samplerate", ARG_INT, offsetof(d2m_model_args, samplerate)},
    {"channels", ARG_INT, offsetof(d2m_model_args, channels)},
    {"growth", ARG_INT, offsetof(d2m_model_args, growth)},
    {"nfft", ARG_INT, offsetof(d2m_model_args, nfft)},
    {"depth", ARG_INT, offsetof(d2m_model_args, depth)},
    {"bottom_channels", ARG_INT, offsetof(d2m_model_args, bottom_channels)},
    {"t_layers", ARG_INT, offsetof(d2m_model_args, t_layers)},
    {"t_heads", ARG_INT, offsetof(d2m_model_args, t_heads)},
    {"t_hidden_scale", ARG_DOUBLE, offsetof(d2m_model_args, t_hidden_scale)},
    {"freq_emb", ARG_DOUBLE, offsetof(d2m_model_args, freq_emb)},
    {"emb_scale", ARG_DOUBLE, offsetof(d2m_model_args, emb_scale)},
    {"cac", ARG_BOOL, offsetof(d2m_model_args, cac)},
    {"rewrite", ARG_BOOL, offsetof(d2m_model_args, rewrite)},
    {"dconv_depth", ARG_INT, offsetof(d2m_model_args, dconv_depth)},
    {"dconv_comp", ARG_INT, offsetof(d2m_model_args, dconv_comp)},
    {"kernel_size", ARG_INT, offsetof(d2m_model_args, kernel_size)},
    {"stride", ARG_INT, offsetof(d2m_model_args, stride)},
    {"context", ARG_INT, offsetof(d2m_model_args, context)},
    {"norm_starts", ARG_INT, offsetof(d2m_model_args, norm_starts)},
    {"t_cross_first", ARG_BOOL, offsetof(d2m_model_args, t_cross_first)},
};

static int load_sources(th_reader *r, d2m_model_args *args, const pickle_value *v)
{
    int max = (int)(sizeof args->sources / sizeof args->sources[0]);
    if (v->kind != PICKLE_LIST && v->kind != PICKLE_TUPLE)
        return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: kwargs 'sources' is a %s, not a list",
                        pickle_kind_name(v->kind));
    if (v->n < 1 || v->n > max)
        return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: %d sources (1 to %d supported)", v->n, max);
    for (int i = 0; i < v->n; i++) {
        const pickle_value *s = v->items[i];
        if (s->kind != PICKLE_STR || s->len == 0 || s->len >= sizeof args->sources[0])
            return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: source %d is not a short name", i);
        memcpy(args->sources[i], s->str, s->len + 1);
    }
    args->n_sources = v->n;
    return 0;
}

static int load_segment(th_reader *r, d2m_model_args *args, const pickle_value *v)
{
    switch (v->kind) {
    case PICKLE_NONE: return 0;
    case PICKLE_INT: args->segment_s = (double)v->i; break;
    case PICKLE_FLOAT: args->segment_s = v->f; break;
    case PICKLE_FRACTION: args->segment_s = (double)v->fraction.numerator / (double)v->fraction.denominator; break;
    default:
        return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: kwargs 'segment' is a %s, not a number",
                        pickle_kind_name(v->kind));
    }
    if (!(args->segment_s > 0 && args->segment_s < 3600))
        return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: segment of %g s is out of range", args->segment_s);
    return 0;
}

static int load_args(th_reader *r, d2m_model_args *args, const pickle_value *top)
{
    const pickle_value *klass = pickle_dict_get(top, "klass");
    if (!klass || klass->kind != PICKLE_GLOBAL || klass->global_id != PICKLE_GLOBAL_MODEL_CLASS)
        return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: 'klass' does not name a Demucs model class");
    snprintf(args->klass, sizeof args->klass, "%s", klass->str);
    snprintf(args->format, sizeof args->format, "th");

    const pickle_value *positional = pickle_dict_get(top, "args");
    if (positional && !((positional->kind == PICKLE_TUPLE || positional->kind == PICKLE_LIST) && positional->n == 0))
        return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: positional model arguments are not supported");

    const pickle_value *kwargs = pickle_dict_get(top, "kwargs");
    if (!kwargs || kwargs->kind != PICKLE_DICT)
        return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: no 'kwargs' dict of model arguments");
    const pickle_value *v = pickle_dict_get(kwargs, "sources");
    int rc = v ? load_sources(r, args, v) : 0;
    if (rc) return rc;
    v = pickle_dict_get(kwargs, "segment");
    if (v && (rc = load_segment(r, args, v))) return rc;

    for (size_t f = 0; f < sizeof arg_fields / sizeof arg_fields[0]; f++) {
        v = pickle_dict_get(kwargs, arg_fields[f].key);
        if (!v || v->kind == PICKLE_NONE) continue;
        char *field = (char *)args + arg_fields[f].offset;
        if (arg_fields[f].type == ARG_DOUBLE) {
            double x;
            if (v->kind == PICKLE_FLOAT) x = v->f;
            else if (v->kind == PICKLE_INT) x = (double)v->i;
            else goto wrong_type;
            memcpy(field, &x, sizeof x);
        } else {
            if (v->kind != PICKLE_INT && v->kind != PICKLE_BOOL) goto wrong_type;
            if (v->i < (arg_fields[f].type == ARG_BOOL ? 0 : -1000000) ||
                v->i > (arg_fields[f].type == ARG_BOOL ? 1 : 1000000))
                return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: kwargs '%s' = %lld is out of range",
                                arg_fields[f].key, (long long)v->i);
            int x = (int)v->i;
            memcpy(field, &x, sizeof x);
        }
        continue;
    wrong_type:
        return d2m_fail(r->err, D2M_ERR_FORMAT, "checkpoint: kwargs '%s' is a %s", arg_fields[f].key,
                        pickle_kind_name(v->kind));
    }
    return 0;
}

/* ---- entry points ---- */

int weights_parse_th(d2m_weights **out, const unsigned char *bytes, size_t n, d2m_error *err)
{
    *out = NULL;
    d2m_error local = {0};
    th_reader r = {.data_left = n, .err = &local};
    pickle_doc *doc = NULL;
    d2m_weights *w = weights_new();
    if (!w) return d2m_fail(err, D2M_ERR_NOMEM, "checkpoint: out of memory");
    int rc = zip_open(&r.zip, bytes, n, &local);
    if (rc) goto fail;
    if ((rc = find_root(&r)) || (rc = check_version(&r))) goto fail;

    zip_record *pkl = find_record(&r, "data.pkl");
    if (pkl->size > PICKLE_MAX_BYTES) {
        rc = d2m_fail(&local, D2M_ERR_FORMAT, "%s/data.pkl: %zu bytes is too large for a Demucs checkpoint",
                      r.root, pkl->size);
        goto fail;
    }
    if ((rc = zip_verify(&r.zip, pkl, &local))) goto fail;
    rc = pickle_load(&doc, pkl->data, pkl->size, &local);
    if (rc) {
        d2m_error inner = local;
        d2m_fail(&local, rc, "%s/data.pkl: %s", r.root, inner.message);
        goto fail;
    }
    const pickle_value *top = pickle_root(doc);
    if (top->kind != PICKLE_DICT) {
        rc = d2m_fail(&local, D2M_ERR_FORMAT, "checkpoint: the pickle holds a %s, not a Demucs package dict",
                      pickle_kind_name(top->kind));
        goto fail;
    }
    if ((rc = load_args(&r, &w->args, top))) goto fail;
    if ((rc = load_state(&r, w, pickle_dict_get(top, "state")))) goto fail;
    if (w->n == 0) {
        rc = d2m_fail(&local, D2M_ERR_FORMAT, "checkpoint: the state holds no tensors");
        goto fail;
    }
    pickle_free(doc);
    zip_close(&r.zip);
    *out = w;
    return 0;
fail:
    pickle_free(doc);
    zip_close(&r.zip);
    weights_free(w);
    return d2m_fail(err, rc, "%s", local.message);
}

int weights_load_th(d2m_weights **out, const char *path, d2m_error *err)
{
    *out = NULL;
    const long long max_bytes = 1ll << 31; /* the largest official checkpoint is under 200 MB */
    unsigned char *bytes = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return d2m_fail(err, D2M_ERR_IO, "%s: cannot open the checkpoint", path);
    int rc = 0;
    long long size = -1;
    if (fseeko(f, 0, SEEK_END) == 0) size = (long long)ftello(f);
    if (size < 0 || fseeko(f, 0, SEEK_SET) != 0) {
        rc = d2m_fail(err, D2M_ERR_IO, "%s: cannot read the checkpoint", path);
        goto done;
    }
    if (size > max_bytes) {
        rc = d2m_fail(err, D2M_ERR_FORMAT, "%s: %lld bytes is too large for a Demucs checkpoint", path, size);
        goto done;
    }
    bytes = malloc(size ? (size_t)size : 1);
    if (!bytes) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "%s: out of memory for %lld bytes", path, size);
        goto done;
    }
    if (fread(bytes, 1, (size_t)size, f) != (size_t)size) {
        rc = d2m_fail(err, D2M_ERR_IO, "%s: cannot read the checkpoint", path);
        goto done;
    }
    d2m_error local = {0};
    rc = weights_parse_th(out, bytes, (size_t)size, &local);
    if (rc) d2m_fail(err, rc, "%s: %s", path, local.message);
done:
    free(bytes);
    fclose(f);
    return rc;
}
