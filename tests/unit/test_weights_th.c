/* Checkpoint reader tests: the tiny official-format checkpoint loads with
 * every tensor of tiny/tensors.tsv, bit-exact against an independent read of
 * the archive's float16 records, and its kwargs; hand-built archives and
 * pickles exercise every refusal (unknown globals, calls, wrong sizes, deep
 * nesting, damaged zips) and must fail with a message, never crash.
 * The tiny.th parts skip with a message when ../shared is absent. */
#include "nn/pickle.h"
#include "nn/weights.h"
#include "nn/zip.h"
#include "test.h"

#include <stdint.h>
#include <string.h>

/* ---- a growable byte buffer ---- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buffer;

static void put(buffer *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) abort();
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put_byte(buffer *b, unsigned v)
{
    unsigned char c = (unsigned char)v;
    put(b, &c, 1);
}

static void put16(buffer *b, unsigned v)
{
    put_byte(b, v & 0xff);
    put_byte(b, (v >> 8) & 0xff);
}

static void put32(buffer *b, uint32_t v)
{
    put16(b, v & 0xffff);
    put16(b, v >> 16);
}

static void put_text(buffer *b, const char *s) { put(b, s, strlen(s)); }

static uint32_t get16le(const unsigned char *p) { return (uint32_t)(p[0] | p[1] << 8); }
static uint32_t get32le(const unsigned char *p) { return get16le(p) | get16le(p + 2) << 16; }

/* ---- an independent zip writer and reader (not the code under test) ---- */

static uint32_t crc32_bitwise(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return ~c;
}

typedef struct {
    const char *name;
    const unsigned char *data;
    size_t size;
} entry;

/* A stored archive; zip64 saturates every size and offset field and puts the
 * values in zip64 extra fields and a zip64 end record, as large archives do. */
static buffer make_zip_ex(const entry *e, int count, int zip64)
{
    buffer z = {0};
    uint32_t offsets[64];
    for (int i = 0; i < count; i++) {
        offsets[i] = (uint32_t)z.n;
        put32(&z, 0x04034b50);
        put16(&z, 0);
        put16(&z, 0);
        put16(&z, 0);
        put16(&z, 0);
        put16(&z, 0);
        put32(&z, crc32_bitwise(e[i].data, e[i].size));
        put32(&z, (uint32_t)e[i].size);
        put32(&z, (uint32_t)e[i].size);
        put16(&z, (unsigned)strlen(e[i].name));
        put16(&z, 0);
        put_text(&z, e[i].name);
        put(&z, e[i].data, e[i].size);
    }
    size_t cd = z.n;
    for (int i = 0; i < count; i++) {
        put32(&z, 0x02014b50);
        for (int k = 0; k < 6; k++) put16(&z, 0);
        put32(&z, crc32_bitwise(e[i].data, e[i].size));
        put32(&z, zip64 ? 0xffffffffu : (uint32_t)e[i].size);
        put32(&z, zip64 ? 0xffffffffu : (uint32_t)e[i].size);
        put16(&z, (unsigned)strlen(e[i].name));
        put16(&z, zip64 ? 28 : 0);
        for (int k = 0; k < 3; k++) put16(&z, 0);
        put32(&z, 0);
        put32(&z, zip64 ? 0xffffffffu : offsets[i]);
        put_text(&z, e[i].name);
        if (zip64) {
            put16(&z, 1);
            put16(&z, 24);
            put32(&z, (uint32_t)e[i].size);
            put32(&z, 0);
            put32(&z, (uint32_t)e[i].size);
            put32(&z, 0);
            put32(&z, offsets[i]);
            put32(&z, 0);
        }
    }
    size_t cd_size = z.n - cd;
    if (zip64) {
        size_t end64 = z.n;
        put32(&z, 0x06064b50);
        put32(&z, 44); /* size of the rest, low and high words */
        put32(&z, 0);
        put16(&z, 45);
        put16(&z, 45);
        put32(&z, 0);
        put32(&z, 0);
        uint32_t words[6] = {(uint32_t)count, 0, (uint32_t)count, 0, (uint32_t)cd_size, 0};
        for (int k = 0; k < 6; k++) put32(&z, words[k]);
        put32(&z, (uint32_t)cd);
        put32(&z, 0);
        put32(&z, 0x07064b50);
        put32(&z, 0);
        put32(&z, (uint32_t)end64);
        put32(&z, 0);
        put32(&z, 1);
    }
    put32(&z, 0x06054b50);
    put16(&z, 0);
    put16(&z, 0);
    put16(&z, zip64 ? 0xffff : (unsigned)count);
    put16(&z, zip64 ? 0xffff : (unsigned)count);
    put32(&z, zip64 ? 0xffffffffu : (uint32_t)cd_size);
    put32(&z, zip64 ? 0xffffffffu : (uint32_t)cd);
    put16(&z, 0);
    return z;
}

static buffer make_zip(const entry *e, int count) { return make_zip_ex(e, count, 0); }

/* Central directory entry of the named record (classic end record only). */
static const unsigned char *central_entry(const unsigned char *b, size_t n, const char *name)
{
    size_t end = n - 22;
    while (end > 0 && get32le(b + end) != 0x06054b50) end--;
    size_t count = get16le(b + end + 10), pos = get32le(b + end + 16);
    for (size_t i = 0; i < count; i++) {
        size_t nl = get16le(b + pos + 28);
        if (nl == strlen(name) && memcmp(b + pos + 46, name, nl) == 0) return b + pos;
        pos += 46 + nl + get16le(b + pos + 30) + get16le(b + pos + 32);
    }
    return NULL;
}

/* The data of the named record, found through the central directory and the
 * local header. */
static const unsigned char *record_data(const unsigned char *b, size_t n, const char *name, size_t *size)
{
    const unsigned char *c = central_entry(b, n, name);
    if (!c) return NULL;
    const unsigned char *local = b + get32le(c + 42);
    *size = get32le(c + 24);
    return local + 30 + get16le(local + 26) + get16le(local + 28);
}

/* IEEE half decoded arithmetically, independently of weights_half_to_float. */
static double half_value(unsigned h)
{
    int sign = h >> 15, exp = (h >> 10) & 31, mant = h & 1023;
    double v = exp == 0 ? ldexp(mant, -24) : ldexp(1024 + mant, exp - 25);
    if (exp == 31) v = mant ? NAN : INFINITY;
    return sign ? -v : v;
}

static unsigned char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)size);
    if (b && fread(b, 1, (size_t)size, f) != (size_t)size) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *n = (size_t)size;
    return b;
}

/* ---- a pickle writer for hand-made checkpoints ---- */

static void pk_str(buffer *b, const char *s)
{
    put_byte(b, 'X');
    put32(b, (uint32_t)strlen(s));
    put_text(b, s);
}

static void pk_int(buffer *b, unsigned v) /* BININT1 or BININT2 */
{
    if (v < 256) {
        put_byte(b, 'K');
        put_byte(b, v);
    } else {
        put_byte(b, 'M');
        put16(b, v);
    }
}

static void pk_global(buffer *b, const char *module, const char *name)
{
    put_byte(b, 'c');
    put_text(b, module);
    put_byte(b, '\n');
    put_text(b, name);
    put_byte(b, '\n');
}

static void pk_ints(buffer *b, const unsigned *v, int n) /* a tuple of ints */
{
    put_byte(b, '(');
    for (int i = 0; i < n; i++) pk_int(b, v[i]);
    put_byte(b, 't');
}

typedef struct {
    const char *name, *key, *storage_type;
    unsigned storage_numel, offset;
    int ndim;
    unsigned shape[4], stride[4];
} tensor_spec;

static void pk_tensor(buffer *b, const tensor_spec *t)
{
    pk_str(b, t->name);
    pk_global(b, "torch._utils", "_rebuild_tensor_v2");
    put_byte(b, '(');
    put_byte(b, '(');
    pk_str(b, "storage");
    pk_global(b, "torch", t->storage_type ? t->storage_type : "HalfStorage");
    pk_str(b, t->key);
    pk_str(b, "cpu");
    pk_int(b, t->storage_numel);
    put_byte(b, 't');
    put_byte(b, 'Q');
    pk_int(b, t->offset);
    pk_ints(b, t->shape, t->ndim);
    pk_ints(b, t->stride, t->ndim);
    put_byte(b, 0x89);
    pk_global(b, "collections", "OrderedDict");
    put_byte(b, ')');
    put_byte(b, 'R');
    put_byte(b, 't');
    put_byte(b, 'R');
}

/* A Demucs package pickle: {klass, args, kwargs (with extra items), state}. */
static buffer pk_package(const tensor_spec *tensors, int n, const char *extra_kwargs_ops, size_t extra_len)
{
    buffer b = {0};
    put_text(&b, "\x80\x02}(");
    pk_str(&b, "klass");
    pk_global(&b, "demucs.htdemucs", "HTDemucs");
    pk_str(&b, "args");
    put_byte(&b, ')');
    pk_str(&b, "kwargs");
    put_text(&b, "}(");
    pk_str(&b, "sources");
    put_text(&b, "](");
    pk_str(&b, "drums");
    pk_str(&b, "bass");
    put_byte(&b, 'e');
    pk_str(&b, "segment");
    pk_global(&b, "fractions", "Fraction");
    pk_str(&b, "39/5");
    put_byte(&b, 0x85);
    put_byte(&b, 'R');
    pk_str(&b, "channels");
    pk_int(&b, 48);
    pk_str(&b, "cac");
    put_byte(&b, 0x88);
    pk_str(&b, "t_hidden_scale");
    put_byte(&b, 'G');
    put(&b, "\x40\x10\x00\x00\x00\x00\x00\x00", 8); /* 4.0 big-endian */
    pk_str(&b, "emb_scale");
    pk_int(&b, 10);
    pk_str(&b, "seed");
    put(&b, "\x8a\x05\x00\x00\x00\x00\x80", 7); /* LONG1: -2^39 */
    pk_str(&b, "negative");
    put(&b, "J\xfe\xff\xff\xff", 5); /* BININT -2 */
    if (extra_kwargs_ops) put(&b, extra_kwargs_ops, extra_len);
    put_byte(&b, 'u');
    pk_str(&b, "state");
    put_text(&b, "}(");
    for (int i = 0; i < n; i++) pk_tensor(&b, &tensors[i]);
    put_byte(&b, 'u');
    put_byte(&b, 'u');
    put_byte(&b, '.');
    return b;
}

/* Halves with known values: 1, -2, the smallest subnormal, the largest
 * finite, -0 and 1/3 rounded. */
static const unsigned char halves[12] = {0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0xff, 0x7b, 0x00, 0x80, 0x55, 0x35};

static const tensor_spec weight_2x3 = {"a.weight", "0", NULL, 6, 0, 2, {2, 3}, {3, 1}};

/* An archive with data.pkl = pkl, version 3, and the records data/0 (the
 * halves above, first record_size bytes) and data/1 (two float32). */
static buffer make_checkpoint(const buffer *pkl, size_t record_size)
{
    static const unsigned char floats[8] = {0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x80, 0xff}; /* 1.5, -inf */
    entry e[4] = {
        {"mini/data.pkl", pkl->p, pkl->n},
        {"mini/data/0", halves, record_size},
        {"mini/data/1", floats, sizeof floats},
        {"mini/version", (const unsigned char *)"3\n", 2},
    };
    return make_zip(e, 4);
}

/* Parse a checkpoint that must fail with a message containing want. */
static void expect_refusal(const buffer *file, const char *want, const char *what)
{
    d2m_weights *w = (d2m_weights *)1;
    d2m_error err = {0};
    int rc = weights_parse_th(&w, file->p, file->n, &err);
    CHECK(rc == D2M_ERR_FORMAT, "%s: expected D2M_ERR_FORMAT, got %d", what, rc);
    CHECK(w == NULL, "%s: no weights on failure", what);
    CHECK(strstr(err.message, want) != NULL, "%s: message \"%s\" should mention \"%s\"", what, err.message, want);
    weights_free(rc ? NULL : w);
}

static void expect_pickle_refusal(const char *bytes, size_t n, const char *want, const char *what)
{
    pickle_doc *doc = (pickle_doc *)1;
    d2m_error err = {0};
    int rc = pickle_load(&doc, (const unsigned char *)bytes, n, &err);
    CHECK(rc == D2M_ERR_FORMAT, "%s: expected D2M_ERR_FORMAT, got %d", what, rc);
    CHECK(doc == NULL, "%s: no document on failure", what);
    CHECK(strstr(err.message, want) != NULL, "%s: message \"%s\" should mention \"%s\"", what, err.message, want);
}

/* ---- tests on hand-made files ---- */

static void test_mini_checkpoint_loads_exact_values_and_kwargs(void)
{
    tensor_spec t[2] = {weight_2x3, {"b.bias", "1", "FloatStorage", 2, 0, 1, {2}, {1}}};
    buffer pkl = pk_package(t, 2, NULL, 0);
    buffer file = make_checkpoint(&pkl, sizeof halves);
    d2m_weights *w = NULL;
    d2m_error err = {0};
    int rc = weights_parse_th(&w, file.p, file.n, &err);
    CHECK(rc == 0, "mini checkpoint: %s", err.message);
    if (rc == 0) {
        CHECK(weights_count(w) == 2, "2 tensors, got %d", weights_count(w));
        const d2m_tensor *a = weights_get(w, "a.weight");
        CHECK(a && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 3 && a->numel == 6, "a.weight shape (2, 3)");
        if (a) {
            const float want[6] = {1.0f, -2.0f, 0x1p-24f, 65504.0f, -0.0f, 0.333251953125f};
            for (int i = 0; i < 6; i++) CHECK(a->data[i] == want[i], "a.weight[%d] = %.9g, want %.9g", i, a->data[i], want[i]);
            CHECK(signbit(a->data[4]), "-0 keeps its sign");
        }
        const d2m_tensor *b = weights_get(w, "b.bias");
        CHECK(b && b->ndim == 1 && b->numel == 2 && b->data[0] == 1.5f && isinf(b->data[1]) && b->data[1] < 0,
              "float32 storage read as is");
        const d2m_model_args *args = weights_args(w);
        CHECK(args->n_sources == 2 && strcmp(args->sources[1], "bass") == 0, "sources drums, bass");
        CHECK_NEAR(args->segment_s, 7.8, 1e-12);
        CHECK(args->channels == 48 && args->cac == 1, "channels %d cac %d", args->channels, args->cac);
        CHECK(args->t_hidden_scale == 4.0 && args->emb_scale == 10.0, "doubles from float and int");
        CHECK(strcmp(args->klass, "demucs.htdemucs HTDemucs") == 0, "klass %s", args->klass);
        CHECK(strcmp(args->format, "th") == 0, "format %s", args->format);
        CHECK(args->nfft == 0, "unstated kwargs stay 0");
    }
    weights_free(w);
    free(pkl.p);
    free(file.p);
}

static void test_zip64_archive_loads(void)
{
    buffer pkl = pk_package(&weight_2x3, 1, NULL, 0);
    entry e[3] = {{"z/data.pkl", pkl.p, pkl.n}, {"z/data/0", halves, 12}, {"z/version", (const unsigned char *)"3\n", 2}};
    buffer file = make_zip_ex(e, 3, 1);
    d2m_weights *w = NULL;
    d2m_error err = {0};
    CHECK(weights_parse_th(&w, file.p, file.n, &err) == 0, "zip64 archive: %s", err.message);
    const d2m_tensor *t = weights_get(w, "a.weight");
    CHECK(t && t->numel == 6 && t->data[3] == 65504.0f, "zip64 record read");
    weights_free(w);
    /* Break the locator: the saturated end record then has nowhere to go. */
    file.p[file.n - 22 - 20] = 'X';
    expect_refusal(&file, "zip64 locator", "zip64 without its locator");
    free(pkl.p);
    free(file.p);
}

static void test_fraction_forms(void)
{
    struct {
        const char *ops;
        size_t len;
        double seconds;
    } cases[] = {
#define OPS(s) s, sizeof(s) - 1
        {OPS("X\x07\x00\x00\x00segmentcfractions\nFraction\nX\x03\x00\x00\x00" "7.8\x85R"), 7.8},
        {OPS("X\x07\x00\x00\x00segmentcfractions\nFraction\nX\x01\x00\x00\x00" "1\x85R"), 1.0},
        {OPS("X\x07\x00\x00\x00segmentcfractions\nFraction\nK\x27K\x05\x86R"), 7.8},
        {OPS("X\x07\x00\x00\x00segmentcfractions\nFraction\nJ\xd9\xff\xff\xffJ\xfb\xff\xff\xff\x86R"), 7.8},
        {OPS("X\x07\x00\x00\x00segmentG\x40\x1f\x33\x33\x33\x33\x33\x33"), 7.8},
        {OPS("X\x07\x00\x00\x00segmentN"), 0.0},
#undef OPS
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buffer pkl = pk_package(&weight_2x3, 1, cases[i].ops, cases[i].len);
        buffer file = make_checkpoint(&pkl, 12);
        d2m_weights *w = NULL;
        d2m_error err = {0};
        CHECK(weights_parse_th(&w, file.p, file.n, &err) == 0, "segment form %zu: %s", i, err.message);
        CHECK(w && weights_args(w)->segment_s == cases[i].seconds, "segment form %zu: %g s, want %g", i,
              w ? weights_args(w)->segment_s : -1.0, cases[i].seconds);
        weights_free(w);
        free(pkl.p);
        free(file.p);
    }
    static const char negative[] = "X\x07\x00\x00\x00segmentcfractions\nFraction\nX\x04\x00\x00\x00" "-1/2\x85R";
    buffer pkl = pk_package(&weight_2x3, 1, negative, sizeof negative - 1);
    buffer file = make_checkpoint(&pkl, 12);
    expect_refusal(&file, "out of range", "negative segment");
    free(pkl.p);
    free(file.p);
}

static void test_tensor_checks_name_the_tensor(void)
{
    struct {
        tensor_spec t;
        size_t record;
        const char *want, *what;
    } cases[] = {
        {weight_2x3, 10, "a.weight", "record shorter than the storage"},
        {{"a.weight", "0", NULL, 5, 0, 2, {2, 3}, {3, 1}}, 12, "a.weight", "storage smaller than the record"},
        {{"a.weight", "0", NULL, 6, 0, 2, {2, 3}, {1, 2}}, 12, "not contiguous", "transposed strides"},
        {{"a.weight", "0", NULL, 6, 1, 2, {2, 3}, {3, 1}}, 12, "run past", "offset past the storage"},
        {{"a.weight", "0", NULL, 6, 0, 2, {7, 3}, {3, 1}}, 12, "larger than its storage", "shape too large"},
        {{"a.weight", "9", NULL, 6, 0, 2, {2, 3}, {3, 1}}, 12, "data/9 is missing", "missing record"},
        {{"a.weight", "0", "LongStorage", 6, 0, 2, {2, 3}, {3, 1}}, 12, "torch LongStorage", "int64 storage"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buffer pkl = pk_package(&cases[i].t, 1, NULL, 0);
        buffer file = make_checkpoint(&pkl, cases[i].record);
        expect_refusal(&file, cases[i].want, cases[i].what);
        free(pkl.p);
        free(file.p);
    }
    /* A tensor with a smaller view of the storage at an offset is fine. */
    tensor_spec view = {"v", "0", NULL, 6, 2, 2, {2, 2}, {2, 1}};
    buffer pkl = pk_package(&view, 1, NULL, 0);
    buffer file = make_checkpoint(&pkl, 12);
    d2m_weights *w = NULL;
    d2m_error err = {0};
    CHECK(weights_parse_th(&w, file.p, file.n, &err) == 0, "view at offset 2: %s", err.message);
    const d2m_tensor *v = weights_get(w, "v");
    CHECK(v && v->data[0] == 0x1p-24f && v->data[3] == 0.333251953125f, "view reads elements 2..5");
    weights_free(w);
    free(pkl.p);
    free(file.p);
}

static void test_duplicate_and_shared_storage_refused(void)
{
    tensor_spec twice[2] = {weight_2x3, weight_2x3};
    buffer pkl = pk_package(twice, 2, NULL, 0);
    buffer file = make_checkpoint(&pkl, 12);
    expect_refusal(&file, "appears twice", "duplicate tensor name");
    free(pkl.p);
    free(file.p);

    /* 400 tensors viewing one 12-byte storage would cost far more than the
     * file: refused instead of multiplying memory. */
    static tensor_spec many[400];
    static char names[400][16];
    for (int i = 0; i < 400; i++) {
        snprintf(names[i], sizeof names[i], "t%d", i);
        many[i] = weight_2x3;
        many[i].name = names[i];
    }
    pkl = pk_package(many, 400, NULL, 0);
    file = make_checkpoint(&pkl, 12);
    /* The file is ~60 kB and the views want 400 x 12 = 4.8 kB: allowed. */
    d2m_weights *w = NULL;
    d2m_error err = {0};
    CHECK(weights_parse_th(&w, file.p, file.n, &err) == 0, "views within the file size: %s", err.message);
    weights_free(w);
    free(pkl.p);
    free(file.p);

    tensor_spec huge[3];
    for (int i = 0; i < 3; i++) {
        huge[i] = (tensor_spec){names[i], "big", NULL, 40000, 0, 1, {40000}, {1}};
    }
    pkl = pk_package(huge, 3, NULL, 0);
    unsigned char *zeros = calloc(80000, 1);
    entry e[3] = {{"mini/data.pkl", pkl.p, pkl.n}, {"mini/data/big", zeros, 80000}, {"mini/version", (const unsigned char *)"3", 1}};
    file = make_zip(e, 3);
    expect_refusal(&file, "more data than the file holds", "one storage viewed 3 times");
    free(zeros);
    free(pkl.p);
    free(file.p);
}

static void test_unknown_global_and_calls_refused(void)
{
    tensor_spec t = weight_2x3;
    struct {
        const char *ops;
        size_t len;
        const char *want, *what;
    } cases[] = {
#define OPS(s) s, sizeof(s) - 1
        {OPS("X\x04\x00\x00\x00" "evilcos\nsystem\n"), "'os system' is not an allowed global", "os.system"},
        {OPS("X\x04\x00\x00\x00" "evilcbuiltins\neval\n"), "builtins eval", "eval"},
        {OPS("X\x04\x00\x00\x00" "evilcdemucs.htdemucs\nHTDemucs\n)R"), "calling 'demucs.htdemucs HTDemucs'", "call the class"},
        {OPS("X\x04\x00\x00\x00" "evilctorch\nHalfStorage\n)R"), "calling 'torch HalfStorage'", "call a storage type"},
        {OPS("X\x04\x00\x00\x00" "evilK\x01)R"), "callable is of type int", "call an int"},
        {OPS("X\x04\x00\x00\x00" "evilccollections\nOrderedDict\nK\x01\x85R"), "OrderedDict with arguments", "OrderedDict(x)"},
        {OPS("X\x04\x00\x00\x00" "evilK\x01K\x02\x81"), "NEWOBJ", "NEWOBJ"},
        {OPS("X\x04\x00\x00\x00" "evilK\x01" "b"), "BUILD", "BUILD"},
        {OPS("X\x04\x00\x00\x00" "evil\x95"), "FRAME", "FRAME"},
        {OPS("X\x04\x00\x00\x00" "evil\x8c\x01x"), "SHORT_BINUNICODE", "protocol 4 string"},
        {OPS("X\x04\x00\x00\x00" "evilcfractions\nFraction\nX\x03\x00\x00\x00" "1/0\x85R"), "zero denominator", "Fraction 1/0"},
        {OPS("X\x04\x00\x00\x00" "evilcfractions\nFraction\nX\x03\x00\x00\x00" "1e3\x85R"), "Fraction('1e3')", "Fraction exponent"},
        {OPS("X\x07\x00\x00\x00segmentX\x02\x00\x00\x00" "ab"), "'segment' is a str", "segment as a string"},
        {OPS("X\x08\x00\x00\x00" "channelsG\x40\x10\x00\x00\x00\x00\x00\x00"), "'channels' is a float", "channels as a float"},
        {OPS("X\x08\x00\x00\x00" "channelsJ\x00\x00\x00\x7f"), "out of range", "channels huge"},
        {OPS("X\x03\x00\x00\x00" "bad\xff\xfe\xfd\xfc"), "opcode 0xff", "unknown opcode"},
        {OPS("X\x02\x00\x00\x00\xc0\x80K\x01"), "UTF-8", "overlong UTF-8"},
        {OPS("h\x63"), "memo entry 99 was never stored", "BINGET of nothing"},
        {OPS("K\x01r\xff\xff\xff\x7f"), "memo index", "huge LONG_BINPUT"},
#undef OPS
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* The ops go inside kwargs' SETITEMS, so they must leave key/value pairs. */
        buffer pkl = pk_package(&t, 1, cases[i].ops, cases[i].len);
        buffer file = make_checkpoint(&pkl, 12);
        expect_refusal(&file, cases[i].want, cases[i].what);
        free(pkl.p);
        free(file.p);
    }
}

static void test_pickle_structure_refusals(void)
{
    char deep[4096];
    size_t n = 0;
    deep[n++] = (char)0x80;
    deep[n++] = 2;
    for (int i = 0; i < 1000; i++) deep[n++] = '(';
    deep[n++] = '.';
    expect_pickle_refusal(deep, n, "MARK nests deeper", "1000 MARKs");

    n = 2;
    deep[n++] = 'K';
    deep[n++] = 1;
    for (int i = 0; i < 1000; i++) deep[n++] = (char)0x85; /* TUPLE1 of TUPLE1 of ... */
    deep[n++] = '.';
    expect_pickle_refusal(deep, n, "deeper than 64 levels", "1000 nested tuples");

    n = 2;
    for (int i = 0; i < 1000; i++) deep[n++] = ']';
    for (int i = 0; i < 999; i++) deep[n++] = 'a'; /* append each list into the one below */
    deep[n++] = '.';
    expect_pickle_refusal(deep, n, "deeper than 64 levels", "1000 nested lists");

    expect_pickle_refusal("\x80\x02K\x01", 4, "without STOP", "no STOP");
    expect_pickle_refusal("\x80\x02K\x01.x", 6, "stray bytes", "bytes after STOP");
    expect_pickle_refusal("\x80\x02K\x01K\x02.", 7, "leaves 2 values", "two values at STOP");
    expect_pickle_refusal("\x80\x03K\x01.", 5, "only protocol 2", "protocol 3");
    expect_pickle_refusal("\x80\x02(K\x01.", 6, "MARKs", "open MARK at STOP");
    expect_pickle_refusal("\x80\x02K\x01(\x85.", 7, "needs 1 values", "TUPLE1 across a MARK");
    expect_pickle_refusal("\x80\x02]K\x01K\x02s.", 9, "on a list, not a dict", "SETITEM on a list");
    expect_pickle_refusal("\x80\x02}]K\x01s.", 8, "unhashable list key", "list as a key");
    expect_pickle_refusal("\x80\x02)K\x01" "a.", 7, "on a tuple, not a list", "APPEND to a tuple");
    expect_pickle_refusal("\x80\x02}(K\x01u.", 8, "odd number", "SETITEMS with a lone key");
    expect_pickle_refusal("\x80\x02X\xff\xff\xff\x7f", 7, "truncated", "string longer than the input");
    expect_pickle_refusal("\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09.", 14, "64 bits", "LONG1 too wide");
    expect_pickle_refusal("\x80\x02X\x01\x00\x00\x00\x00.", 9, "NUL", "NUL in a string");
    expect_pickle_refusal("\x80\x02" "cos\nsys", 9, "truncated", "GLOBAL cut short");
    expect_pickle_refusal("\x80\x02(Xstorage", 10, "truncated", "string length cut short");
    expect_pickle_refusal("\x80\x02K\x01Q.", 6, "('storage'", "BINPERSID of an int");

    /* A plain value tree, shared through the memo. */
    static const char ok[] = "\x80\x02}q\x00(X\x01\x00\x00\x00" "a]q\x01(K\x01M\x00\x01J\xff\xff\xff\xff"
                             "\x8a\x00NG?\xf0\x00\x00\x00\x00\x00\x00\x88" "e"
                             "X\x01\x00\x00\x00" "bh\x01u.";
    pickle_doc *doc = NULL;
    d2m_error err = {0};
    int rc = pickle_load(&doc, (const unsigned char *)ok, sizeof ok - 1, &err);
    CHECK(rc == 0, "plain pickle: %s", err.message);
    if (rc == 0) {
        const pickle_value *root = pickle_root(doc), *a = pickle_dict_get(root, "a");
        CHECK(root->kind == PICKLE_DICT && root->n == 2, "dict of 2");
        CHECK(a && a->kind == PICKLE_LIST && a->n == 7, "list of 7");
        if (a && a->n == 7) {
            CHECK(a->items[0]->i == 1 && a->items[1]->i == 256 && a->items[2]->i == -1 && a->items[3]->i == 0,
                  "ints 1, 256, -1, 0");
            CHECK(a->items[4]->kind == PICKLE_NONE && a->items[5]->kind == PICKLE_FLOAT && a->items[5]->f == 1.0 &&
                      a->items[6]->kind == PICKLE_BOOL && a->items[6]->i == 1,
                  "None, 1.0, True");
        }
        CHECK(pickle_dict_get(root, "b") == a, "memo shares the list");
        CHECK(pickle_dict_get(root, "c") == NULL, "missing key");
    }
    pickle_free(doc);
}

static void test_damaged_archives_refused(void)
{
    tensor_spec t = weight_2x3;
    buffer pkl = pk_package(&t, 1, NULL, 0);
    buffer file = make_checkpoint(&pkl, 12);

    /* Every truncation fails with a message. */
    for (size_t cut = 0; cut < file.n; cut += 7) {
        buffer part = {file.p, cut, cut};
        d2m_weights *w = NULL;
        d2m_error err = {0};
        int rc = weights_parse_th(&w, part.p, part.n, &err);
        if (rc != D2M_ERR_FORMAT || err.message[0] == '\0') {
            CHECK(0, "cut at %zu: rc %d, message \"%s\"", cut, rc, err.message);
            weights_free(w);
            break;
        }
    }

    const unsigned char *c = central_entry(file.p, file.n, "mini/data/0");
    size_t at = (size_t)(c - file.p);
    buffer bad = {0};

    put(&bad, file.p, file.n);
    bad.p[at + 22] = bad.p[at + 26] = 0x10; /* both sizes, 1 MB: past the end */
    expect_refusal(&bad, "runs past the end", "record size past the end");

    memcpy(bad.p, file.p, file.n);
    bad.p[at + 44] = 0x10; /* local header offset, 1 MB: past the end */
    expect_refusal(&bad, "no local header", "record offset past the end");

    memcpy(bad.p, file.p, file.n);
    bad.p[at + 10] = 8; /* deflate */
    expect_refusal(&bad, "compression method 8", "deflated record");

    memcpy(bad.p, file.p, file.n);
    bad.p[at + 8] = 1; /* encrypted */
    expect_refusal(&bad, "encrypted", "encrypted record");

    memcpy(bad.p, file.p, file.n);
    size_t size;
    unsigned char *data = (unsigned char *)record_data(bad.p, bad.n, "mini/data/0", &size);
    data[3] ^= 0x40;
    expect_refusal(&bad, "CRC-32", "flipped data bit");

    memcpy(bad.p, file.p, file.n);
    bad.p[bad.n - 12] = 2; /* end record says 2 entries */
    bad.p[bad.n - 14] = 2;
    expect_refusal(&bad, "central directory", "entry count off");

    free(bad.p);
    free(file.p);

    /* Two data.pkl roots, no version, non-stored layouts. */
    entry no_version[2] = {{"mini/data.pkl", pkl.p, pkl.n}, {"mini/data/0", halves, 12}};
    file = make_zip(no_version, 2);
    expect_refusal(&file, "version", "no version record");
    free(file.p);
    entry big_endian[4] = {{"mini/data.pkl", pkl.p, pkl.n}, {"mini/data/0", halves, 12},
                           {"mini/version", (const unsigned char *)"3\n", 2},
                           {"mini/byteorder", (const unsigned char *)"big", 3}};
    file = make_zip(big_endian, 4);
    expect_refusal(&file, "little-endian", "big-endian archive");
    free(file.p);
    entry two_roots[4] = {{"mini/data.pkl", pkl.p, pkl.n}, {"other/data.pkl", pkl.p, pkl.n},
                          {"mini/data/0", halves, 12}, {"mini/version", (const unsigned char *)"3", 1}};
    file = make_zip(two_roots, 4);
    expect_refusal(&file, "two data.pkl", "two roots");
    free(file.p);
    entry twice[3] = {{"mini/data.pkl", pkl.p, pkl.n}, {"mini/data.pkl", pkl.p, pkl.n}, {"mini/version", (const unsigned char *)"3", 1}};
    file = make_zip(twice, 3);
    expect_refusal(&file, "appears twice", "duplicate record");
    free(file.p);
    free(pkl.p);

    /* A 5 MB pickle of Nones: refused by size before the unpickler runs. */
    size_t big = (size_t)5 << 20;
    unsigned char *nones = malloc(big);
    memset(nones, 'N', big);
    nones[0] = 0x80;
    nones[1] = 2;
    entry huge_pickle[2] = {{"mini/data.pkl", nones, big}, {"mini/version", (const unsigned char *)"3", 1}};
    file = make_zip(huge_pickle, 2);
    expect_refusal(&file, "too large", "5 MB data.pkl");
    free(file.p);
    free(nones);

    buffer junk = {(unsigned char *)"not a zip at all, just some text", 32, 32};
    expect_refusal(&junk, "end-of-central-directory", "not a zip");
}

/* ---- the tiny official checkpoint ---- */

typedef struct {
    char name[128], shape[64], record[64];
} tsv_row;

static int read_tsv(const char *path, tsv_row *rows, int max)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    int n = 0;
    if (!fgets(line, sizeof line, f)) n = -1;
    while (n >= 0 && n < max && fgets(line, sizeof line, f)) {
        char dtype[32];
        if (sscanf(line, "%127[^\t]\t%63[^\t]\t%31[^\t]\t%63[^\t\n]", rows[n].name, rows[n].shape, dtype,
                   rows[n].record) == 4)
            n++;
    }
    fclose(f);
    return n;
}

static void test_tiny_checkpoint(const char *dir)
{
    char path[1100], tsv[1100];
    snprintf(path, sizeof path, "%s/tiny.th", dir);
    snprintf(tsv, sizeof tsv, "%s/tensors.tsv", dir);
    static tsv_row rows[600];
    int n_rows = read_tsv(tsv, rows, 600);
    CHECK(n_rows == 433, "tensors.tsv has 433 rows, got %d", n_rows);
    size_t n;
    unsigned char *file = read_file(path, &n);
    CHECK(file != NULL, "read %s", path);
    if (!file || n_rows <= 0) {
        free(file);
        return;
    }

    d2m_weights *w = NULL;
    d2m_error err = {0};
    double t0 = d2m_now();
    int rc = weights_load_th(&w, path, &err);
    double seconds = d2m_now() - t0;
    CHECK(rc == 0, "load tiny.th: %s", err.message);
    if (rc) {
        free(file);
        return;
    }
    printf("tiny.th: %d tensors in %.1f ms\n", weights_count(w), 1e3 * seconds);
    CHECK(weights_count(w) == n_rows, "tensor count %d, want %d", weights_count(w), n_rows);

    long long values = 0, mismatches = 0;
    for (int i = 0; i < n_rows; i++) {
        const d2m_tensor *t = weights_get(w, rows[i].name);
        CHECK(t != NULL, "tensor %s present", rows[i].name);
        if (!t) continue;
        CHECK(weights_at(w, i) == t, "tensor %s in state-dict order", rows[i].name);
        char shape[64] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), d ? ",%lld" : "%lld", (long long)t->shape[d]);
        CHECK(strcmp(shape, rows[i].shape) == 0, "%s shape %s, want %s", rows[i].name, shape, rows[i].shape);
        size_t size = 0;
        const unsigned char *raw = record_data(file, n, rows[i].record, &size);
        CHECK(raw && size == 2 * (size_t)t->numel, "%s: record %s has %zu bytes for %lld values", rows[i].name,
              rows[i].record, size, (long long)t->numel);
        if (!raw || size != 2 * (size_t)t->numel) continue;
        for (int64_t k = 0; k < t->numel; k++) {
            double want = half_value(get16le(raw + 2 * k));
            values++;
            if (!((double)t->data[k] == want || (isnan(want) && isnan(t->data[k])))) mismatches++;
        }
    }
    CHECK(values == 339936, "339936 parameters, got %lld", values);
    CHECK(mismatches == 0, "%lld of %lld values differ from the raw float16 records", mismatches, values);

    /* Spot values, printed by numpy from the float16 records. */
    struct {
        const char *name;
        int index;
        double value;
    } spots[] = {
        {"encoder.0.conv.weight", 0, -0.0013170242309570312},
        {"encoder.0.conv.weight", 255, -0.0650634765625},
        {"freq_emb.embedding.weight", 2048, -0.1258544921875},
        {"crosstransformer.layers.1.cross_attn.in_proj_weight", 3071, -0.1173095703125},
        {"tdecoder.3.conv_tr.bias", 7, 0.01503753662109375},
    };
    for (size_t i = 0; i < sizeof spots / sizeof spots[0]; i++) {
        const d2m_tensor *t = weights_get(w, spots[i].name);
        CHECK(t && t->numel > spots[i].index && t->data[spots[i].index] == spots[i].value, "%s[%d] = %.17g",
              spots[i].name, spots[i].index, spots[i].value);
    }

    const d2m_model_args *a = weights_args(w);
    CHECK(a->channels == 8 && a->t_layers == 2 && a->t_heads == 2 && a->bottom_channels == 32,
          "channels %d t_layers %d t_heads %d bottom_channels %d", a->channels, a->t_layers, a->t_heads,
          a->bottom_channels);
    CHECK(a->segment_s == 1.0, "segment %g s", a->segment_s);
    CHECK(a->n_sources == 4 && !strcmp(a->sources[0], "drums") && !strcmp(a->sources[1], "bass") &&
              !strcmp(a->sources[2], "other") && !strcmp(a->sources[3], "vocals"),
          "sources drums bass other vocals");
    CHECK(a->nfft == 4096 && a->depth == 4 && a->audio_channels == 2 && a->samplerate == 44100, "nfft %d depth %d",
          a->nfft, a->depth);
    CHECK(a->growth == 2 && a->cac == 1 && a->rewrite == 1 && a->dconv_depth == 2 && a->dconv_comp == 8,
          "growth, cac, rewrite, dconv");
    CHECK(a->kernel_size == 8 && a->stride == 4 && a->context == 1 && a->norm_starts == 4 && a->t_cross_first == 0,
          "kernel, stride, context, norm_starts, t_cross_first");
    CHECK(a->t_hidden_scale == 4.0 && a->freq_emb == 0.2 && a->emb_scale == 10.0, "t_hidden_scale %g freq_emb %g",
          a->t_hidden_scale, a->freq_emb);
    CHECK(strcmp(a->klass, "demucs.htdemucs HTDemucs") == 0 && strcmp(a->format, "th") == 0, "klass %s",
          a->klass);
    weights_free(w);

    /* The sniffing loader takes the .th path too. */
    w = NULL;
    CHECK(weights_load(&w, path, &err) == 0 && weights_count(w) == n_rows, "weights_load sniffs a zip");
    weights_free(w);

    /* Truncated every 997 bytes: always a format error with a message. */
    int bad = 0;
    for (size_t cut = 0; cut < n; cut += 997) {
        d2m_error e = {0};
        w = NULL;
        rc = weights_parse_th(&w, file, cut, &e);
        if (rc != D2M_ERR_FORMAT || !e.message[0] || w) {
            if (!bad++) CHECK(0, "cut at %zu: rc %d, message \"%s\"", cut, rc, e.message);
            weights_free(w);
        }
    }
    CHECK(bad == 0, "%d truncations not refused cleanly", bad);

    /* One damaged tensor record: its CRC check names it. */
    unsigned char *copy = malloc(n);
    memcpy(copy, file, n);
    size_t size;
    unsigned char *raw = (unsigned char *)record_data(copy, n, "archive/data/17", &size);
    raw[0] ^= 1;
    buffer damaged = {copy, n, n};
    expect_refusal(&damaged, "archive/data/17 is damaged", "tiny.th with a flipped bit");
    free(copy);

    CHECK(weights_load_th(&w, "/nonexistent/x.th", &err) == D2M_ERR_IO && w == NULL, "missing file: IO error");
    free(file);
}

int main(void)
{
    test_mini_checkpoint_loads_exact_values_and_kwargs();
    test_zip64_archive_loads();
    test_fraction_forms();
    test_tensor_checks_name_the_tensor();
    test_duplicate_and_shared_storage_refused();
    test_unknown_global_and_calls_refused();
    test_pickle_structure_refusals();
    test_damaged_archives_refused();

    char dir[1024];
    test_source_path(dir, sizeof dir, "../shared/demucs/tiny");
    char probe[1100];
    snprintf(probe, sizeof probe, "%s/tiny.th", dir);
    FILE *f = fopen(probe, "rb");
    if (f) {
        fclose(f);
        test_tiny_checkpoint(dir);
    } else {
        printf("test_weights_th: %s not found, skipping the tiny.th checks\n", probe);
    }
    return test_summary("test_weights_th");
}
