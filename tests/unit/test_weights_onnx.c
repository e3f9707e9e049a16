/* Tests of the protobuf reader and the ONNX weight loader.
 *
 * 1. The wire format on hand-built bytes: varints up to 10 bytes, overlong
 *    and truncated fields, lengths past the end of the enclosing message,
 *    bad wire types and field numbers, the nesting limit.
 * 2. A tiny hand-built ModelProto that uses every naming rule and transform
 *    (copy, transpose, cross-attention halves, flatten, LayerScale, the
 *    frequency embedding; raw_data, packed, split and unpacked float_data), its
 *    every truncation, and files that each break one rule.
 * 3. The real htdemucs.onnx when present (DRUM2MIDI_MODEL, else the cache
 *    folder scripts/fetch-model installs to; skipped otherwise): all 533
 *    names and shapes of ../shared/demucs/real/tensors.tsv, every value
 *    against the raw initializers read independently and transformed as the
 *    table's transform column says, the hyperparameters, load time and peak
 *    resident size.
 *
 * `test_weights_onnx --write-seeds DIR` writes the fuzz seeds instead.
 */
#include "nn/protobuf.h"
#include "nn/weights_internal.h"
#include "test.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- Building protobuf bytes -------------------------------------------- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) abort();
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put_byte(buf *b, unsigned char c) { put(b, &c, 1); }

static void put_varint(buf *b, uint64_t v)
{
    while (v >= 0x80) {
        put_byte(b, (unsigned char)(v | 0x80));
        v >>= 7;
    }
    put_byte(b, (unsigned char)v);
}

static void put_tag(buf *b, unsigned field, int wire)
{
    put_varint(b, (uint64_t)field << 3 | (unsigned)wire);
}

static void put_len(buf *b, unsigned field, const void *data, size_t n)
{
    put_tag(b, field, PROTOBUF_LEN);
    put_varint(b, n);
    put(b, data, n);
}

static void put_str(buf *b, unsigned field, const char *s) { put_len(b, field, s, strlen(s)); }

/* Append m as an embedded message and free it. */
static void put_msg(buf *b, unsigned field, buf *m)
{
    put_len(b, field, m->p, m->n);
    free(m->p);
    memset(m, 0, sizeof *m);
}

static void put_f32(buf *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    unsigned char le[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                           (unsigned char)(u >> 24)};
    put(b, le, 4);
}

/* ---- 1. The wire format ------------------------------------------------- */

static int next_of(const unsigned char *bytes, size_t n, protobuf_field *f)
{
    protobuf_reader r;
    protobuf_init(&r, bytes, n);
    return protobuf_next(&r, f);
}

static void test_protobuf_reads_varints_up_to_ten_bytes(void)
{
    protobuf_field f;
    const unsigned char v150[] = {0x08, 0x96, 0x01};
    CHECK(next_of(v150, sizeof v150, &f) == 1 && f.number == 1 && f.wire_type == PROTOBUF_VARINT &&
              f.value == 150,
          "field 1 = 150: got field %u value %llu", (unsigned)f.number,
          (unsigned long long)f.value);

    /* -1 as an int32/int64: ten bytes, the last holding bit 63. */
    const unsigned char minus1[] = {0x10, 0xff, 0xff, 0xff, 0xff, 0xff,
                                    0xff, 0xff, 0xff, 0xff, 0x01};
    CHECK(next_of(minus1, sizeof minus1, &f) == 1 && f.number == 2 && f.value == UINT64_MAX,
          "ten-byte varint: got %llx", (unsigned long long)f.value);

    /* A non-minimal but valid encoding of 1. */
    const unsigned char padded[] = {0x08, 0x81, 0x80, 0x00};
    CHECK(next_of(padded, sizeof padded, &f) == 1 && f.value == 1, "padded varint: got %llu",
          (unsigned long long)f.value);

    const unsigned char wide[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    int rc = next_of(wide, sizeof wide, &f);
    CHECK(rc == PROTOBUF_ERR_VARINT, "a 65-bit varint: expected %d, got %d", PROTOBUF_ERR_VARINT,
          rc);

    const unsigned char eleven[] = {0x08, 0x80, 0x80, 0x80, 0x80, 0x80,
                                    0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    rc = next_of(eleven, sizeof eleven, &f);
    CHECK(rc == PROTOBUF_ERR_VARINT, "an 11-byte varint: expected %d, got %d", PROTOBUF_ERR_VARINT,
          rc);

    const unsigned char *p;
    uint64_t v;
    const unsigned char packed[] = {0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05};
    p = packed;
    int ok = protobuf_read_varint(&p, packed + 6, &v) == 0 && v == 3;
    ok = ok && protobuf_read_varint(&p, packed + 6, &v) == 0 && v == 270;
    ok = ok && protobuf_read_varint(&p, packed + 6, &v) == 0 && v == 86942 && p == packed + 6;
    CHECK(ok, "packed varints 3, 270, 86942: last %llu", (unsigned long long)v);
}

static void test_protobuf_rejects_truncated_fields(void)
{
    protobuf_field f;
    const struct {
        const char *what;
        unsigned char bytes[8];
        size_t n;
    } cases[] = {
        {"a tag cut inside", {0x80}, 1},
        {"a varint value cut inside", {0x08, 0x96}, 2},
        {"a varint value missing", {0x08}, 1},
        {"a fixed64 with 7 bytes", {0x09, 1, 2, 3, 4, 5, 6, 7}, 8},
        {"a fixed32 with 3 bytes", {0x0d, 1, 2, 3}, 4},
        {"a length past the end", {0x12, 0x05, 'a', 'b'}, 4},
        {"a length cut inside", {0x12, 0x80}, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = next_of(cases[i].bytes, cases[i].n, &f);
        CHECK(rc == PROTOBUF_ERR_TRUNCATED, "%s: expected %d, got %d", cases[i].what,
              PROTOBUF_ERR_TRUNCATED, rc);
    }
    /* A length of 2^64 - 1 must not wrap the end pointer. */
    const unsigned char huge[] = {0x12, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0x01, 'x'};
    int rc = next_of(huge, sizeof huge, &f);
    CHECK(rc == PROTOBUF_ERR_TRUNCATED, "length 2^64-1: expected %d, got %d",
          PROTOBUF_ERR_TRUNCATED, rc);

    const unsigned char fixed[] = {0x09, 1, 2, 3, 4, 5, 6, 7, 8, 0x15, 0x00, 0x00, 0x80, 0x3f};
    protobuf_reader r;
    protobuf_init(&r, fixed, sizeof fixed);
    int ok = protobuf_next(&r, &f) == 1 && f.wire_type == PROTOBUF_FIXED64 &&
             f.value == 0x0807060504030201ull;
    ok = ok && protobuf_next(&r, &f) == 1 && f.number == 2 && f.value == 0x3f800000u;
    ok = ok && protobuf_next(&r, &f) == 0;
    CHECK(ok, "fixed64 then fixed32 little-endian, then the end");
}

static void test_protobuf_rejects_nested_lengths_past_the_parent(void)
{
    /* Field 1 holds 4 bytes: a field 2 claiming 5 bytes. The whole buffer
     * has bytes to spare, but the child may not read past its parent. */
    const unsigned char bytes[] = {0x0a, 0x04, 0x12, 0x05, 'a', 'b', 'c', 'd', 'e', 'f'};
    protobuf_reader r, child;
    protobuf_field f, g;
    int rc = next_of(bytes, sizeof bytes, &f);
    CHECK(rc == 1 && f.size == 4, "outer field: rc %d size %zu", rc, f.size);
    protobuf_init(&r, bytes, sizeof bytes);
    protobuf_next(&r, &f);
    CHECK(protobuf_enter(&child, &r, &f) == 0 && child.depth == 1, "enter the payload");
    rc = protobuf_next(&child, &g);
    CHECK(rc == PROTOBUF_ERR_TRUNCATED, "nested length past the parent: expected %d, got %d",
          PROTOBUF_ERR_TRUNCATED, rc);
    CHECK(protobuf_offset(&child) == 2, "the error leaves the reader at the bad field: offset %zu",
          protobuf_offset(&child));

    const unsigned char varint[] = {0x08, 0x01};
    protobuf_init(&r, varint, sizeof varint);
    protobuf_next(&r, &f);
    rc = protobuf_enter(&child, &r, &f);
    CHECK(rc == PROTOBUF_ERR_WIRE_TYPE, "entering a varint: expected %d, got %d",
          PROTOBUF_ERR_WIRE_TYPE, rc);
}

static void test_protobuf_rejects_unknown_wire_types_and_field_numbers(void)
{
    protobuf_field f;
    for (int wire = 3; wire <= 7; wire++) {
        if (wire == PROTOBUF_FIXED32) continue;
        const unsigned char bytes[] = {(unsigned char)(1 << 3 | wire), 0, 0, 0, 0, 0, 0, 0, 0};
        int rc = next_of(bytes, sizeof bytes, &f);
        CHECK(rc == PROTOBUF_ERR_WIRE_TYPE, "wire type %d: expected %d, got %d", wire,
              PROTOBUF_ERR_WIRE_TYPE, rc);
    }
    const unsigned char zero[] = {0x00, 0x00};
    int rc = next_of(zero, sizeof zero, &f);
    CHECK(rc == PROTOBUF_ERR_FIELD_NUMBER, "field 0: expected %d, got %d",
          PROTOBUF_ERR_FIELD_NUMBER, rc);

    buf b = {0};
    put_tag(&b, (1u << 29) - 1, PROTOBUF_VARINT);
    put_varint(&b, 7);
    rc = next_of(b.p, b.n, &f);
    CHECK(rc == 1 && f.number == (1u << 29) - 1 && f.value == 7, "largest field number: rc %d", rc);
    b.n = 0;
    put_varint(&b, (uint64_t)1 << 32); /* field 2^29, wire 0 */
    put_varint(&b, 7);
    rc = next_of(b.p, b.n, &f);
    CHECK(rc == PROTOBUF_ERR_FIELD_NUMBER, "field 2^29: expected %d, got %d",
          PROTOBUF_ERR_FIELD_NUMBER, rc);
    free(b.p);
}

static void test_protobuf_bounds_the_nesting_depth(void)
{
    /* 40 messages, each the field 1 of the one outside it. */
    buf b = {0};
    put_tag(&b, 2, PROTOBUF_VARINT);
    put_varint(&b, 42);
    for (int i = 0; i < 40; i++) {
        buf outer = {0};
        put_msg(&outer, 1, &b);
        b = outer;
    }
    protobuf_reader r[PROTOBUF_MAX_DEPTH + 2];
    protobuf_field f;
    protobuf_init(&r[0], b.p, b.n);
    int depth = 0, rc = 0;
    for (;;) {
        if (protobuf_next(&r[depth], &f) != 1) break;
        rc = protobuf_enter(&r[depth + 1], &r[depth], &f);
        if (rc) break;
        depth++;
    }
    CHECK(rc == PROTOBUF_ERR_TOO_DEEP && depth == PROTOBUF_MAX_DEPTH,
          "expected the limit at depth %d, got rc %d at depth %d", PROTOBUF_MAX_DEPTH, rc, depth);
    free(b.p);
}

/* ---- 2. A tiny hand-built ONNX model ------------------------------------- */

enum { RAW, PACKED, UNPACKED, SPLIT }; /* SPLIT: two packed float_data runs */

/* A FLOAT TensorProto with values base + i (i in ONNX order). */
static void put_tensor(buf *graph, const char *name, int ndim, const int64_t *dims, float base,
                       int storage)
{
    buf t = {0}, data = {0};
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        put_tag(&t, 1, PROTOBUF_VARINT);
        put_varint(&t, (uint64_t)dims[d]);
        n *= dims[d];
    }
    put_tag(&t, 2, PROTOBUF_VARINT);
    put_varint(&t, 1);
    put_str(&t, 8, name);
    for (int64_t i = 0; i < n; i++) put_f32(&data, base + (float)i);
    if (storage == RAW) {
        put_len(&t, 9, data.p, data.n);
    } else if (storage == PACKED) {
        put_len(&t, 4, data.p, data.n);
    } else if (storage == SPLIT) {
        size_t half = data.n / 8 * 4;
        put_len(&t, 4, data.p, half);
        put_len(&t, 4, data.p + half, data.n - half);
    } else {
        for (size_t i = 0; i < data.n; i += 4) {
            put_tag(&t, 4, PROTOBUF_FIXED32);
            put(&t, data.p + i, 4);
        }
    }
    free(data.p);
    put_msg(graph, 5, &t);
}

/* A NodeProto with up to three inputs. */
static void put_node(buf *graph, const char *name, const char *op, const char *in0, const char *in1,
                     const char *in2)
{
    buf node = {0};
    const char *inputs[] = {in0, in1, in2};
    for (int i = 0; i < 3; i++)
        if (inputs[i]) put_str(&node, 1, inputs[i]);
    put_str(&node, 2, "out");
    put_str(&node, 3, name);
    put_str(&node, 4, op);
    put_msg(graph, 1, &node);
}

/* A graph input with static dims. */
static void put_input(buf *graph, const char *name, int ndim, const int64_t *dims)
{
    buf info = {0}, type = {0}, tensor = {0}, shape = {0};
    for (int d = 0; d < ndim; d++) {
        buf dim = {0};
        put_tag(&dim, 1, PROTOBUF_VARINT);
        put_varint(&dim, (uint64_t)dims[d]);
        put_msg(&shape, 1, &dim);
    }
    put_tag(&tensor, 1, PROTOBUF_VARINT);
    put_varint(&tensor, 1);
    put_msg(&tensor, 2, &shape);
    put_msg(&type, 1, &tensor);
    put_str(&info, 1, name);
    put_msg(&info, 2, &type);
    put_msg(graph, 11, &info);
}

static void wrap_model(buf *model, buf *graph)
{
    put_tag(model, 1, PROTOBUF_VARINT); /* ir_version */
    put_varint(model, 8);
    put_str(model, 2, "pytorch");
    put_msg(model, 7, graph);
}

static const int64_t D_ENC[] = {2, 4, 8, 1}, D_W[] = {2, 3}, D_L1[] = {2, 4}, D_Q[] = {2, 2},
                     D_KV[] = {2, 4}, D_QB[] = {2}, D_KVB[] = {4}, D_C1[] = {3, 1},
                     D_EMB[] = {1, 2, 3, 1}, D_WAVE[] = {1, 2, 88200}, D_SPEC[] = {1, 4, 2048, 84};

/* The nodes and graph inputs of the tiny model. */
static void put_tiny_nodes(buf *g)
{
    put_input(g, "input", 3, D_WAVE);
    put_input(g, "onnx::ReduceMean_1", 4, D_SPEC);
    put_node(g, "/encoder.0/conv/Conv", "Conv", "x", "encoder.0.conv.weight", NULL);
    put_node(g, "/Expand", "Expand", "onnx::Expand_10", "shape", NULL);
    put_node(g, "/encoder.0/dconv/layers.1/layers.1.4/Mul", "Mul", "y", "onnx::Mul_8", NULL);
    put_node(g, "/encoder.0/dconv/layers.1/layers.1.4/Add", "Add", "y", "onnx::Add_9", NULL);
    put_node(g, "/encoder.0/dconv/layers.1/layers.1.6/Mul", "Mul", "onnx::Mul_7", "y", NULL);
    put_node(g, "/crosstransformer/layers.0/self_attn/MatMul", "MatMul", "t", "onnx::MatMul_1",
             NULL);
    put_node(g, "/crosstransformer/layers.0/linear1/MatMul", "MatMul", "t", "onnx::MatMul_2", NULL);
    /* A later reader of the same weight does not change its owner. */
    put_node(g, "/crosstransformer/layers.9/linear2/MatMul", "MatMul", "t", "onnx::MatMul_2", NULL);
    put_node(g, "/crosstransformer/layers.1/cross_attn/MatMul", "MatMul", "t", "onnx::MatMul_3",
             NULL);
    put_node(g, "/crosstransformer/layers.1/cross_attn/Add", "Add", "onnx::Add_5", "u", NULL);
    put_node(g, "/crosstransformer/layers.1/cross_attn/MatMul_1", "MatMul", "t", "onnx::MatMul_4",
             NULL);
    put_node(g, "/crosstransformer/layers.1/cross_attn/Add_1", "Add", "onnx::Add_6", "u", NULL);
}

/* Initializers in an order that splits the cross-attention pairs. */
static void put_tiny_initializers(buf *g)
{
    put_tensor(g, "encoder.0.conv.weight", 4, D_ENC, 0, RAW);
    put_tensor(g, "onnx::MatMul_3", 2, D_Q, 300, RAW);
    put_tensor(g, "onnx::MatMul_1", 2, D_W, 100, RAW);
    put_tensor(g, "onnx::MatMul_2", 2, D_L1, 200, PACKED);
    put_tensor(g, "onnx::Add_6", 1, D_KVB, 600, UNPACKED);
    put_tensor(g, "onnx::MatMul_4", 2, D_KV, 400, RAW);
    put_tensor(g, "onnx::Add_5", 1, D_QB, 500, RAW);
    put_tensor(g, "onnx::Mul_7", 2, D_C1, 700, RAW);
    put_tensor(g, "onnx::Mul_8", 2, D_C1, 800, SPLIT);
    put_tensor(g, "onnx::Add_9", 2, D_C1, 900, RAW);
    put_tensor(g, "onnx::Expand_10", 4, D_EMB, 1000, RAW);
}

static void build_tiny_model(buf *model)
{
    buf g = {0};
    put_str(&g, 2, "main_graph");
    put_tiny_nodes(&g);
    put_tiny_initializers(&g);
    wrap_model(model, &g);
}

static const d2m_tensor *expect_tensor(const d2m_weights *w, const char *name, int ndim, int64_t d0,
                                       int64_t d1)
{
    const d2m_tensor *t = weights_get(w, name);
    CHECK(t != NULL, "tensor %s is missing", name);
    if (!t) return NULL;
    int ok = t->ndim == ndim && t->shape[0] == d0 && (ndim < 2 || t->shape[1] == d1);
    CHECK(ok, "%s: expected %d dims (%lld, %lld), got %d dims (%lld, %lld)", name, ndim,
          (long long)d0, (long long)d1, t->ndim, (long long)t->shape[0],
          (long long)(t->ndim > 1 ? t->shape[1] : 0));
    return ok ? t : NULL;
}

/* t (rows, cols) must equal the transpose of the ONNX values base + i, an
 * (cols, rows) matrix, starting at row row0 of t. */
static void expect_transposed(const d2m_tensor *t, int64_t row0, int64_t rows, int64_t cols,
                              float base)
{
    int bad = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            float want = base + (float)(c * rows + r), got = t->data[(row0 + r) * cols + c];
            if (got != want && bad++ == 0)
                CHECK(0, "%s[%lld][%lld]: expected %g, got %g", t->name, (long long)(row0 + r),
                      (long long)c, want, got);
        }
    if (!bad) test_passed++;
}

static void expect_values(const d2m_tensor *t, int64_t at, int64_t n, float base)
{
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (t->data[at + i] != base + (float)i && bad++ == 0)
            CHECK(0, "%s[%lld]: expected %g, got %g", t->name, (long long)(at + i), base + (float)i,
                  t->data[at + i]);
    if (!bad) test_passed++;
}

static void check_tiny_weights(const d2m_weights *w)
{
    CHECK(weights_count(w) == 9, "11 initializers make 9 tensors: got %d", weights_count(w));
    const d2m_tensor *t;
    if ((t = weights_get(w, "encoder.0.conv.weight"))) {
        CHECK(t->ndim == 4 && t->shape[0] == 2 && t->shape[1] == 4 && t->shape[2] == 8 &&
                  t->shape[3] == 1,
              "copy keeps the shape");
        expect_values(t, 0, 64, 0);
    } else {
        CHECK(0, "encoder.0.conv.weight is missing");
    }
    if ((t = expect_tensor(w, "crosstransformer.layers.0.self_attn.in_proj_weight", 2, 3, 2)))
        expect_transposed(t, 0, 3, 2, 100);
    if ((t = expect_tensor(w, "crosstransformer.layers.0.linear1.weight", 2, 4, 2)))
        expect_transposed(t, 0, 4, 2, 200);
    if ((t = expect_tensor(w, "crosstransformer.layers.1.cross_attn.in_proj_weight", 2, 6, 2))) {
        expect_transposed(t, 0, 2, 2, 300); /* q */
        expect_transposed(t, 2, 4, 2, 400); /* k, v */
    }
    if ((t = expect_tensor(w, "crosstransformer.layers.1.cross_attn.in_proj_bias", 1, 6, 0))) {
        expect_values(t, 0, 2, 500);
        expect_values(t, 2, 4, 600);
    }
    if ((t = expect_tensor(w, "encoder.0.dconv.layers.1.6.scale", 1, 3, 0)))
        expect_values(t, 0, 3, 700);
    if ((t = expect_tensor(w, "encoder.0.dconv.layers.1.4.weight", 1, 3, 0)))
        expect_values(t, 0, 3, 800);
    if ((t = expect_tensor(w, "encoder.0.dconv.layers.1.4.bias", 1, 3, 0)))
        expect_values(t, 0, 3, 900);
    if ((t = expect_tensor(w, "freq_emb.embedding.weight", 2, 3, 2))) {
        /* A (1, C=2, F=3, 1) = 1000 + c*3 + f; W[f][c] = A / 10. */
        int bad = 0;
        for (int f = 0; f < 3; f++)
            for (int c = 0; c < 2; c++)
                if (t->data[f * 2 + c] != (float)((1000.0f + (float)(c * 3 + f)) / 10.0)) bad++;
        CHECK(!bad, "freq_emb = transpose(A[0,:,:,0]) / 10: %d wrong values", bad);
    }
    const d2m_model_args *a = weights_args(w);
    CHECK(strcmp(a->format, "onnx") == 0, "format: got %s", a->format);
    CHECK_NEAR(a->segment_s, 2.0, 0); /* 88200 samples at 44100 Hz, from the graph input */
    CHECK(a->nfft == 4096, "nfft from the spectrogram input: got %d", a->nfft);
    CHECK(a->stride == 4, "3 embedding rows do not divide 2048 bins: stride stays 4, got %d",
          a->stride);
    CHECK(a->channels == 2 && a->kernel_size == 8 && a->cac == 1,
          "channels, kernel and cac from encoder.0.conv.weight: got %d %d %d", a->channels,
          a->kernel_size, a->cac);
}

static void test_onnx_tiny_model_maps_every_rule(void)
{
    buf m = {0};
    build_tiny_model(&m);
    d2m_weights *w = NULL;
    d2m_error err = {0};
    int rc = weights_parse_onnx(&w, m.p, m.n, &err);
    CHECK(rc == 0, "tiny model: rc %d: %s", rc, err.message);
    if (w) check_tiny_weights(w);
    weights_free(w);

    /* The same bytes from a file, through the mapping loader and the sniffer. */
    char path[] = "/tmp/d2m_test_onnx_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd >= 0) {
        CHECK(write(fd, m.p, m.n) == (ssize_t)m.n, "write the tiny model");
        close(fd);
        rc = weights_load_onnx(&w, path, &err);
        CHECK(rc == 0 && w, "weights_load_onnx: rc %d: %s", rc, err.message);
        if (w) check_tiny_weights(w);
        weights_free(w);
        rc = weights_load(&w, path, &err);
        CHECK(rc == 0 && weights_count(w) == 9, "weights_load sniffs ONNX: rc %d: %s", rc,
              err.message);
        weights_free(w);
        unlink(path);
    }
    rc = weights_load_onnx(&w, "/nonexistent/htdemucs.onnx", &err);
    CHECK(rc == D2M_ERR_IO && w == NULL, "a missing file: expected %d, got %d", D2M_ERR_IO, rc);
    free(m.p);
}

static void test_onnx_every_truncation_fails_cleanly(void)
{
    buf m = {0};
    build_tiny_model(&m);
    int unexpected = 0, ok_prefixes = 0;
    for (size_t n = 0; n < m.n; n++) {
        d2m_weights *w = NULL;
        d2m_error err = {0};
        int rc = weights_parse_onnx(&w, m.p, n, &err);
        if (rc == 0) ok_prefixes++;
        if ((rc != 0 && rc != D2M_ERR_FORMAT) || (rc != 0) != (w == NULL) ||
            (rc && !err.message[0]))
            unexpected++;
        weights_free(w);
    }
    CHECK(unexpected == 0, "%d of %zu prefixes failed without D2M_ERR_FORMAT and a message",
          unexpected, m.n);
    CHECK(ok_prefixes == 0, "no proper prefix holds a whole graph: %d parsed", ok_prefixes);
    free(m.p);
}

static void test_onnx_huge_graph_input_dims_keep_the_defaults(void)
{
    buf m = {0}, g = {0};
    const int64_t wave[] = {1, INT64_MAX, INT64_MAX}, spec[] = {1, 4, INT64_MAX, 1};
    put_input(&g, "input", 3, wave);
    put_input(&g, "spec", 4, spec);
    put_tensor(&g, "encoder.0.conv.bias", 1, D_QB, 1, RAW);
    wrap_model(&m, &g);
    d2m_weights *w = NULL;
    d2m_error err = {0};
    int rc = weights_parse_onnx(&w, m.p, m.n, &err);
    CHECK(rc == 0 && w, "rc %d: %s", rc, err.message);
    if (w) {
        const d2m_model_args *a = weights_args(w);
        CHECK(a->nfft == 4096 && a->audio_channels == 2 && a->segment_s == 7.8,
              "nfft %d audio_channels %d segment %g", a->nfft, a->audio_channels, a->segment_s);
    }
    weights_free(w);
    free(m.p);
}

typedef enum {
    BREAK_ORPHAN,        /* an onnx:: initializer nobody reads */
    BREAK_UNKNOWN_OP,    /* read first by a Conv: no rule */
    BREAK_DUPLICATE,     /* two initializers with one name */
    BREAK_INT64,         /* data_type INT64 */
    BREAK_RAW_SIZE,      /* raw_data one float short */
    BREAK_HALF_PAIR,     /* a cross-attention query half alone */
    BREAK_EXTERNAL,      /* data_location EXTERNAL */
    BREAK_NO_GRAPH,      /* a ModelProto without field 7 */
    BREAK_TWO_GRAPHS,    /* field 7 twice */
    BREAK_FLATTEN_SHAPE, /* a GroupNorm weight (3, 2) */
    BREAK_NAME_CLASH,    /* a named initializer equal to a mapped name */
    BREAK_NO_SCOPE,      /* consumer node name without a module */
    BREAK_COUNT
} breakage;

static void build_broken_model(buf *model, breakage what)
{
    buf g = {0};
    if (what == BREAK_NO_GRAPH) {
        put_tag(model, 1, PROTOBUF_VARINT);
        put_varint(model, 8);
        return;
    }
    put_tiny_nodes(&g);
    put_tiny_initializers(&g);
    switch (what) {
    case BREAK_ORPHAN: put_tensor(&g, "onnx::Mul_99", 2, D_C1, 0, RAW); break;
    case BREAK_UNKNOWN_OP:
        put_node(&g, "/encoder.1/conv/Conv", "Conv", "x", "onnx::Conv_98", NULL);
        put_tensor(&g, "onnx::Conv_98", 2, D_C1, 0, RAW);
        break;
    case BREAK_DUPLICATE: put_tensor(&g, "onnx::Mul_7", 2, D_C1, 0, RAW); break;
    case BREAK_INT64: {
        buf t = {0};
        put_tag(&t, 1, PROTOBUF_VARINT);
        put_varint(&t, 1);
        put_tag(&t, 2, PROTOBUF_VARINT);
        put_varint(&t, 7);
        put_str(&t, 8, "shape_const");
        put_len(&t, 9, "\1\0\0\0\0\0\0\0", 8);
        put_msg(&g, 5, &t);
        break;
    }
    case BREAK_RAW_SIZE: {
        buf t = {0};
        put_tag(&t, 1, PROTOBUF_VARINT);
        put_varint(&t, 3);
        put_tag(&t, 2, PROTOBUF_VARINT);
        put_varint(&t, 1);
        put_str(&t, 8, "decoder.0.conv_tr.bias");
        put_len(&t, 9, "\0\0\0\0\0\0\0\0", 8);
        put_msg(&g, 5, &t);
        break;
    }
    case BREAK_HALF_PAIR:
        put_node(&g, "/crosstransformer/layers.3/cross_attn/MatMul", "MatMul", "t",
                 "onnx::MatMul_97", NULL);
        put_tensor(&g, "onnx::MatMul_97", 2, D_Q, 0, RAW);
        break;
    case BREAK_EXTERNAL: {
        buf t = {0};
        put_tag(&t, 2, PROTOBUF_VARINT);
        put_varint(&t, 1);
        put_str(&t, 8, "decoder.0.conv_tr.bias");
        put_tag(&t, 14, PROTOBUF_VARINT);
        put_varint(&t, 1);
        put_msg(&g, 5, &t);
        break;
    }
    case BREAK_TWO_GRAPHS: {
        buf g2 = {0};
        put_tensor(&g2, "x", 1, D_QB, 0, RAW);
        put_msg(model, 7, &g2);
        break;
    }
    case BREAK_FLATTEN_SHAPE:
        put_node(&g, "/tencoder.0/dconv/layers.0/layers.0.1/Mul", "Mul", "y", "onnx::Mul_96", NULL);
        put_tensor(&g, "onnx::Mul_96", 2, D_W, 0, RAW);
        break;
    case BREAK_NAME_CLASH:
        put_tensor(&g, "encoder.0.dconv.layers.1.4.bias", 1, D_QB, 0, RAW);
        break;
    case BREAK_NO_SCOPE:
        put_node(&g, "Mul_95", "Mul", "y", "onnx::Mul_95", NULL);
        put_tensor(&g, "onnx::Mul_95", 2, D_C1, 0, RAW);
        break;
    default: break;
    }
    wrap_model(model, &g);
}

static void test_onnx_rejects_files_that_break_a_rule(void)
{
    static const char *const names[] = {
        "orphan initializer", "unknown consumer op", "duplicate name",    "INT64 initializer",
        "raw_data size",      "half a q/kv pair",    "external data",     "no graph",
        "two graphs",         "flatten of a (3, 2)", "mapped name clash", "node without scope"};
    for (int what = 0; what < BREAK_COUNT; what++) {
        buf m = {0};
        build_broken_model(&m, (breakage)what);
        d2m_weights *w = NULL;
        d2m_error err = {0};
        int rc = weights_parse_onnx(&w, m.p, m.n, &err);
        CHECK(rc == D2M_ERR_FORMAT && w == NULL && err.message[0],
              "%s: expected D2M_ERR_FORMAT with a message, got %d (%s)", names[what], rc,
              err.message);
        weights_free(w);
        free(m.p);
    }
}

/* ---- 3. The real htdemucs.onnx ------------------------------------------ */

typedef struct {
    const unsigned char *name, *raw;
    size_t name_n, raw_n;
    int ndim;
    int64_t dims[D2M_MAX_DIMS];
} raw_init;

/* The initializers of an ONNX file, walked here with the bare wire reader
 * so that the loader's mapping is checked against something independent. */
static int read_raw_initializers(const unsigned char *bytes, size_t n, raw_init **out)
{
    protobuf_reader model, graph, tensor;
    protobuf_field f, g, h;
    raw_init *list = NULL;
    int count = 0;
    protobuf_init(&model, bytes, n);
    while (protobuf_next(&model, &f) == 1) {
        if (f.number != 7 || protobuf_enter(&graph, &model, &f)) continue;
        while (protobuf_next(&graph, &g) == 1) {
            if (g.number != 5 || protobuf_enter(&tensor, &graph, &g)) continue;
            raw_init *grown = realloc(list, (size_t)(count + 1) * sizeof *list);
            if (!grown) abort();
            list = grown;
            raw_init *t = &list[count++];
            memset(t, 0, sizeof *t);
            while (protobuf_next(&tensor, &h) == 1) {
                if (h.number == 1 && t->ndim < D2M_MAX_DIMS) t->dims[t->ndim++] = (int64_t)h.value;
                if (h.number == 8) t->name = h.data, t->name_n = h.size;
                if (h.number == 9) t->raw = h.data, t->raw_n = h.size;
            }
        }
    }
    *out = list;
    return count;
}

static const raw_init *find_raw(const raw_init *list, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (list[i].name_n == strlen(name) && memcmp(list[i].name, name, list[i].name_n) == 0)
            return &list[i];
    return NULL;
}

static float raw_at(const raw_init *t, int64_t i)
{
    const unsigned char *p = t->raw + 4 * i;
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Compare loaded tensor t, rows [row0, row0 + rows) or elements [at, ...),
 * with raw initializer r under one transform; returns the mismatch count. */
static int64_t compare_copy(const d2m_tensor *t, int64_t at, const raw_init *r)
{
    int64_t bad = 0, n = (int64_t)(r->raw_n / 4);
    for (int64_t i = 0; i < n; i++) bad += t->data[at + i] != raw_at(r, i);
    return bad;
}

static int64_t compare_transposed(const d2m_tensor *t, int64_t row0, const raw_init *r,
                                  double divisor)
{
    /* r is (rows_r, cols_r); t[row0 + c][k] = r[k][c] / divisor. */
    int64_t bad = 0, rows_r = r->dims[0], cols_r = r->dims[1], width = t->shape[1];
    if (rows_r != width || (row0 + cols_r) * width > t->numel) return -1;
    for (int64_t k = 0; k < rows_r; k++)
        for (int64_t c = 0; c < cols_r; c++) {
            float v = raw_at(r, k * cols_r + c), want = divisor == 1.0 ? v : (float)(v / divisor);
            bad += t->data[(row0 + c) * width + k] != want;
        }
    return bad;
}

static int is_half_exact(float f)
{
    /* Float16 has 11 significant bits; its normal range ends at 65504. */
    if (f == 0) return 1;
    double a = fabs((double)f);
    if (a > 65504 || a < 5.9604644775390625e-08) return 0;
    int e;
    frexp(a, &e);
    int bits = e >= -13 ? 11 : 11 - (-13 - e); /* fewer below the normal range */
    double scaled = ldexp(a, bits - e);
    return scaled == floor(scaled);
}

static const char *model_path(char *buf_, size_t n)
{
    const char *env = getenv("DRUM2MIDI_MODEL");
    if (env && env[0]) return env;
    const char *dir = getenv("DRUM2MIDI_MODEL_DIR");
    const char *cache = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (dir && dir[0])
        snprintf(buf_, n, "%s/htdemucs.onnx", dir);
    else if (cache && cache[0])
        snprintf(buf_, n, "%s/drum2midi/htdemucs.onnx", cache);
    else
        snprintf(buf_, n, "%s/.cache/drum2midi/htdemucs.onnx", home ? home : ".");
    return buf_;
}

static int parse_shape(const char *s, int64_t *dims)
{
    int n = 0;
    while (*s && n < D2M_MAX_DIMS) {
        char *end;
        dims[n++] = strtoll(s, &end, 10);
        if (*end != ',') break;
        s = end + 1;
    }
    return n;
}

/* Check every row of tensors.tsv: name, shape, and the values against the
 * raw initializers under the transform the table names. */
static void check_against_table(const d2m_weights *w, const raw_init *raws, int n_raw, FILE *tsv)
{
    char line[4096];
    int rows = 0, shape_bad = 0, value_bad = 0, unknown = 0;
    if (!fgets(line, sizeof line, tsv)) return; /* header */
    while (fgets(line, sizeof line, tsv)) {
        char *col[8];
        int nc = 0;
        line[strcspn(line, "\n")] = 0;
        for (char *p = line; nc < 8;) {
            col[nc++] = p;
            char *tab = strchr(p, '\t');
            if (!tab) break;
            *tab = 0;
            p = tab + 1;
        }
        if (nc < 8) continue;
        rows++;
        const char *name = col[0], *onnx = col[3], *transform = col[7];
        const d2m_tensor *t = weights_get(w, name);
        int64_t dims[D2M_MAX_DIMS];
        int nd = parse_shape(col[1], dims);
        int ok = t && t->ndim == nd;
        for (int d = 0; ok && d < nd; d++) ok = t->shape[d] == dims[d];
        if (!ok) {
            if (shape_bad++ < 5) CHECK(0, "%s: missing or not of shape (%s)", name, col[1]);
            continue;
        }
        /* The one or two ONNX initializers, "a" or "a + b". */
        char first[256] = {0}, second[256] = {0};
        const char *plus = strstr(onnx, " + ");
        if (plus) {
            snprintf(first, sizeof first, "%.*s", (int)(plus - onnx), onnx);
            snprintf(second, sizeof second, "%s", plus + 3);
        } else {
            snprintf(first, sizeof first, "%s", onnx);
        }
        const raw_init *a = find_raw(raws, n_raw, first),
                       *b = second[0] ? find_raw(raws, n_raw, second) : NULL;
        int64_t bad;
        if (!a || (second[0] && !b)) {
            bad = -1;
        } else if (!strcmp(transform, "copy") || !strcmp(transform, "reshape(-1)")) {
            bad = (int64_t)a->raw_n / 4 == t->numel ? compare_copy(t, 0, a) : -1;
        } else if (!strcmp(transform, "transpose")) {
            bad = compare_transposed(t, 0, a, 1.0);
        } else if (!strcmp(transform, "concat_rows(transpose(query), transpose(key_value))")) {
            int64_t q = compare_transposed(t, 0, a, 1.0),
                    kv = compare_transposed(t, a->dims[1], b, 1.0);
            bad = q < 0 || kv < 0 ? -1 : q + kv;
        } else if (!strcmp(transform, "concat(query, key_value)")) {
            bad = (int64_t)(a->raw_n + b->raw_n) / 4 != t->numel
                      ? -1
                      : compare_copy(t, 0, a) + compare_copy(t, (int64_t)a->raw_n / 4, b);
        } else if (!strcmp(transform, "transpose(A[0,:,:,0]) / 10")) {
            /* A (1, C, F, 1) viewed as (C, F). */
            raw_init view2 = *a;
            view2.dims[0] = a->dims[1];
            view2.dims[1] = a->dims[2];
            bad = compare_transposed(t, 0, &view2, 10.0);
        } else {
            unknown++;
            continue;
        }
        if (bad != 0 && value_bad++ < 5)
            CHECK(0, "%s: %lld values differ from %s under %s", name, (long long)bad, onnx,
                  transform);
    }
    CHECK(rows == 533, "tensors.tsv has 533 rows: got %d", rows);
    CHECK(shape_bad == 0, "all names and shapes match: %d do not", shape_bad);
    CHECK(value_bad == 0, "all values match their transform: %d tensors do not", value_bad);
    CHECK(unknown == 0, "every transform in the table is known to this test: %d are not", unknown);
}

/* Without ../shared: a few tensors, one per transform, from the pinned file. */
static void spot_check(const d2m_weights *w, const raw_init *raws, int n_raw)
{
    const raw_init *r;
    const d2m_tensor *t;
    if ((t = weights_get(w, "crosstransformer.layers.0.self_attn.in_proj_weight")) &&
        (r = find_raw(raws, n_raw, "onnx::MatMul_5291")))
        CHECK(compare_transposed(t, 0, r, 1.0) == 0, "self_attn in_proj_weight = MatMul_5291^T");
    else
        CHECK(0, "self_attn in_proj_weight or onnx::MatMul_5291 missing");
    if ((t = weights_get(w, "crosstransformer.layers_t.4.linear2.weight")) &&
        (r = find_raw(raws, n_raw, "onnx::MatMul_5587")))
        CHECK(compare_transposed(t, 0, r, 1.0) == 0, "layers_t.4 linear2 = MatMul_5587^T");
    else
        CHECK(0, "layers_t.4.linear2.weight or onnx::MatMul_5587 missing");
    const raw_init *q = find_raw(raws, n_raw, "onnx::MatMul_5480"),
                   *kv = find_raw(raws, n_raw, "onnx::MatMul_5481");
    if ((t = weights_get(w, "crosstransformer.layers.3.cross_attn.in_proj_weight")) && q && kv)
        CHECK(compare_transposed(t, 0, q, 1.0) == 0 && compare_transposed(t, 512, kv, 1.0) == 0,
              "layers.3 cross_attn in_proj_weight = [MatMul_5480^T; MatMul_5481^T]");
    else
        CHECK(0, "layers.3 cross_attn in_proj_weight or its halves missing");
    if ((t = weights_get(w, "encoder.0.dconv.layers.0.1.weight")) &&
        (r = find_raw(raws, n_raw, "onnx::Mul_5088")))
        CHECK(t->numel == 6 && r->raw_n == 24 && compare_copy(t, 0, r) == 0,
              "GroupNorm weight = Mul_5088 flattened");
    else
        CHECK(0, "encoder.0.dconv.layers.0.1.weight or onnx::Mul_5088 missing");
}

static long peak_rss_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void test_real_model_matches_the_pytorch_names_shapes_and_values(void)
{
    char buf_[1024];
    const char *path = model_path(buf_, sizeof buf_);
    if (access(path, R_OK) != 0) {
        printf("SKIP real htdemucs.onnx tests: %s not found (run scripts/fetch-model)\n", path);
        return;
    }
    long rss_before = peak_rss_kib();
    double t0 = d2m_now();
    d2m_weights *w = NULL;
    d2m_error err = {0};
    int rc = weights_load_onnx(&w, path, &err);
    double seconds = d2m_now() - t0;
    long rss_after = peak_rss_kib();
    CHECK(rc == 0 && w, "load %s: rc %d: %s", path, rc, err.message);
    if (!w) return;
    printf("real htdemucs.onnx: %d tensors in %.2f s, peak RSS %.0f MiB (%.0f MiB before)\n",
           weights_count(w), seconds, (double)rss_after / 1024, (double)rss_before / 1024);
    CHECK(weights_count(w) == 533, "533 tensors: got %d", weights_count(w));

    int64_t params = 0, not_half = 0;
    for (int i = 0; i < weights_count(w); i++) {
        const d2m_tensor *t = weights_at(w, i);
        params += t->numel;
        for (int64_t k = 0; k < t->numel; k++) not_half += !is_half_exact(t->data[k]);
    }
    CHECK(params == 41984456, "41,984,456 parameters: got %lld", (long long)params);
    CHECK(not_half == 0,
          "every value is exactly a float16 (a lossless fp16 checkpoint): %lld are not",
          (long long)not_half);

    const d2m_model_args *a = weights_args(w);
    static const char *const sources[] = {"drums", "bass", "other", "vocals"};
    CHECK(a->n_sources == 4, "n_sources: got %d", a->n_sources);
    for (int i = 0; i < 4; i++)
        CHECK(!strcmp(a->sources[i], sources[i]), "source %d: got %s", i, a->sources[i]);
    CHECK(a->audio_channels == 2 && a->samplerate == 44100, "audio: %d ch %d Hz", a->audio_channels,
          a->samplerate);
    CHECK(a->channels == 48 && a->growth == 2 && a->nfft == 4096 && a->depth == 4,
          "channels %d growth %d nfft %d depth %d", a->channels, a->growth, a->nfft, a->depth);
    CHECK(a->bottom_channels == 512 && a->t_layers == 5 && a->t_heads == 8,
          "bottom %d t_layers %d t_heads %d", a->bottom_channels, a->t_layers, a->t_heads);
    CHECK(a->segment_s == 7.8 && a->t_hidden_scale == 4.0 && a->freq_emb == 0.2 &&
              a->emb_scale == 10.0,
          "segment %g hidden %g freq_emb %g emb_scale %g", a->segment_s, a->t_hidden_scale,
          a->freq_emb, a->emb_scale);
    CHECK(a->cac == 1 && a->rewrite == 1 && a->dconv_depth == 2 && a->dconv_comp == 8,
          "cac %d rewrite %d dconv %d/%d", a->cac, a->rewrite, a->dconv_depth, a->dconv_comp);
    CHECK(a->kernel_size == 8 && a->stride == 4 && a->context == 1 && a->norm_starts == 4 &&
              a->t_cross_first == 0,
          "kernel %d stride %d context %d norm_starts %d cross_first %d", a->kernel_size, a->stride,
          a->context, a->norm_starts, a->t_cross_first);
    CHECK(!strcmp(a->format, "onnx") && !strcmp(a->klass, "demucs.htdemucs HTDemucs"),
          "format %s klass %s", a->format, a->klass);

    /* The values, against the file walked independently. */
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map != MAP_FAILED) {
            raw_init *raws = NULL;
            int n_raw = read_raw_initializers(map, (size_t)st.st_size, &raws);
            CHECK(n_raw == 537, "537 initializers in the file: got %d", n_raw);
            spot_check(w, raws, n_raw);
            char tsv_path[1024];
            FILE *tsv = fopen(
                test_source_path(tsv_path, sizeof tsv_path, "../shared/demucs/real/tensors.tsv"),
                "r");
            if (tsv) {
                check_against_table(w, raws, n_raw, tsv);
                fclose(tsv);
            } else {
                printf("SKIP the tensors.tsv comparison: %s not found\n", tsv_path);
            }
            free(raws);
            munmap(map, (size_t)st.st_size);
        }
    }
    if (fd >= 0) close(fd);
    weights_free(w);
}

/* ---- Fuzz seeds --------------------------------------------------------- */

static int write_file(const char *dir, const char *name, const buf *b)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b->p, 1, b->n, f) != b->n) {
        if (f) fclose(f);
        fprintf(stderr, "cannot write %s\n", path);
        return 1;
    }
    return fclose(f) != 0;
}

static int write_seeds(const char *dir)
{
    int bad = 0;
    buf m = {0}, g = {0};
    build_tiny_model(&m);
    bad |= write_file(dir, "tiny_all_rules.pb", &m);
    free(m.p);
    memset(&m, 0, sizeof m);

    put_tensor(&g, "encoder.0.conv.bias", 1, D_QB, 1, RAW);
    wrap_model(&m, &g);
    bad |= write_file(dir, "one_named.pb", &m);
    free(m.p);
    memset(&m, 0, sizeof m);

    put_node(&g, "/crosstransformer/layers.1/cross_attn/MatMul", "MatMul", "t", "onnx::MatMul_3",
             NULL);
    put_node(&g, "/crosstransformer/layers.1/cross_attn/MatMul_1", "MatMul", "t", "onnx::MatMul_4",
             NULL);
    put_tensor(&g, "onnx::MatMul_3", 2, D_Q, 3, UNPACKED);
    put_tensor(&g, "onnx::MatMul_4", 2, D_KV, 4, PACKED);
    wrap_model(&m, &g);
    bad |= write_file(dir, "cross_pair_float_data.pb", &m);
    free(m.p);
    memset(&m, 0, sizeof m);

    put_input(&g, "input", 3, D_WAVE);
    put_node(&g, "/Expand", "Expand", "onnx::Expand_10", "shape", NULL);
    put_tensor(&g, "onnx::Expand_10", 4, D_EMB, 10, RAW);
    wrap_model(&m, &g);
    bad |= write_file(dir, "freq_emb_and_input.pb", &m);
    free(m.p);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--write-seeds")) return write_seeds(argv[2]);
    test_protobuf_reads_varints_up_to_ten_bytes();
    test_protobuf_rejects_truncated_fields();
    test_protobuf_rejects_nested_lengths_past_the_parent();
    test_protobuf_rejects_unknown_wire_types_and_field_numbers();
    test_protobuf_bounds_the_nesting_depth();
    test_onnx_tiny_model_maps_every_rule();
    test_onnx_every_truncation_fails_cleanly();
    test_onnx_huge_graph_input_dims_keep_the_defaults();
    test_onnx_rejects_files_that_break_a_rule();
    test_real_model_matches_the_pytorch_names_shapes_and_values();
    return test_summary("test_weights_onnx");
}
