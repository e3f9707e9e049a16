/* The CPU backend: every op of nn/backend.h on host memory, split into
 * tasks that the worker pool runs in parallel.
 *
 * Data layout as backend.h states. Convolutions are one matrix multiply
 * per tile of output positions: the AVX-512 kernel packs the im2col
 * columns straight from the input, the others go through an im2col buffer
 * in the caller's work. Transposed convolutions are one matrix multiply per
 * tile of input positions followed by an overlap-add. Elementwise work
 * goes through nn_vec_kernels (reference C, or AVX-512 when the CPU has
 * it), all with denormals flushed to zero (see run()).
 *
 * Threading: each op splits its output into tasks whose boundaries depend
 * only on the sizes and the work buffer; every output element is computed
 * by one task, in an order fixed by the sizes (a matrix-multiply element by
 * one kernel call over the whole inner dimension, an overlap-add element by
 * ascending input position), so results do not depend on the thread count.
 * Reference: PyTorch's Conv*, GroupNorm, LayerNorm, GELU, GLU, softmax and
 * MultiheadAttention (torch 1.13), which the Demucs goldens were made with.
 */
#include "nn/backend.h"

#include "cpu.h"
#include "pool.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

typedef struct {
    nn_pool *pool;
    nn_sgemm_fn sgemm;
    nn_conv_gemm_fn conv_gemm; /* NULL: convolutions go through an im2col buffer */
    int row_align;             /* rows per kernel block, for splitting C by rows */
    int packs_both;            /* the kernel packs A and B on every call (AMX) */
    const nn_vec_kernels *vec;
    float **pack; /* (threads) (NN_GEMM_PACK_FLOATS) packing scratch per thread */
} cpu_state;

static cpu_state *state_of(nn_backend *be) { return be->impl; }

/* Ops run with denormals flushed to zero (x86 MXCSR FTZ and DAZ): softmax
 * tails and GELU/sigmoid of large negatives reach 1e-38 and below, where
 * every arithmetic operation would otherwise take a microcode assist of a
 * hundred cycles or more. What changes is below 1.2e-38, far under float32
 * noise. Workers set it once; the calling thread only while it runs tasks. */
static void flush_denormals(void)
{
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
}

static void run(nn_pool *pool, nn_task_fn fn, void *ctx, int n_tasks)
{
#if defined(__x86_64__) || defined(__i386__)
    unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);
    pool_run(pool, fn, ctx, n_tasks);
    _mm_setcsr(csr);
#else
    pool_run(pool, fn, ctx, n_tasks);
#endif
}

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
/* floor(a / b) for b > 0 and any sign of a. */
static int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Contiguous chunks of [0, n): chunk i is [i*n/parts, (i+1)*n/parts) rounded
 * to multiples of align. */
static int64_t chunk_start(int64_t n, int parts, int i, int64_t align)
{
    if (i >= parts) return n;
    int64_t s = n * i / parts;
    s = s / align * align;
    return s;
}

/* ---- gemm ---------------------------------------------------------------- */

typedef struct {
    cpu_state *st;
    int ta, tb, m, n, k;
    float alpha, beta;
    const float *a, *b;
    float *c;
    int64_t lda, ldb, ldc;
    int split_rows, parts;
} gemm_job;

static void gemm_task(void *ctx, int task, int thread)
{
    gemm_job *g = ctx;
    if (g->split_rows) {
        int al = g->st->row_align;
        int64_t i0 = chunk_start(g->m, g->parts, task, al), i1 = chunk_start(g->m, g->parts, task + 1, al);
        if (i1 <= i0) return;
        const float *a = g->ta ? g->a + i0 : g->a + i0 * g->lda;
        g->st->sgemm(g->ta, g->tb, (int)(i1 - i0), g->n, g->k, g->alpha, a, g->lda, g->b, g->ldb,
                     g->beta, g->c + i0 * g->ldc, g->ldc, g->st->pack[thread]);
    } else {
        int64_t j0 = chunk_start(g->n, g->parts, task, 64), j1 = chunk_start(g->n, g->parts, task + 1, 64);
        if (j1 <= j0) return;
        const float *b = g->tb ? g->b + j0 * g->ldb : g->b + j0;
        g->st->sgemm(g->ta, g->tb, g->m, (int)(j1 - j0), g->k, g->alpha, g->a, g->lda, b, g->ldb,
                     g->beta, g->c + j0, g->ldc, g->st->pack[thread]);
    }
}

static void cpu_gemm(nn_backend *be, int ta, int tb, int m, int n, int k, float alpha,
                     const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                     int64_t ldc)
{
    cpu_state *st = state_of(be);
    if (m <= 0 || n <= 0) return;
    gemm_job g = {st, ta, tb, m, n, k, alpha, beta, a, b, c, lda, ldb, ldc, 0, 1};
    double flops = 2.0 * m * n * k;
    int threads = be->n_threads;
    if (threads == 1 || flops < 2e6) {
        g.parts = 1;
        run(st->pool, gemm_task, &g, 1);
        return;
    }
    if (st->packs_both) {
        /* The AMX kernel packs both operands on every call, and its product
         * is fast enough for the packing to matter: one call per thread,
         * split along the longer side (each call packs its part of that
         * operand and all of the other). */
        g.split_rows = m >= n;
        int64_t extent = g.split_rows ? m : n, align = g.split_rows ? 32 : 64;
        g.parts = (int)min64(threads, max64(1, extent / align));
        run(st->pool, gemm_task, &g, g.parts);
        return;
    }
    /* Columns when there are enough: each thread then packs only its part
     * of B (the kernels read a row-major A in place). */
    g.split_rows = n < 128 * threads;
    int64_t extent = g.split_rows ? m : n, align = g.split_rows ? st->row_align : 64;
    /* A few parts per thread, so that a thread the OS holds back is made up
     * for by the others; splitting columns costs nothing extra. */
    int per_thread = g.split_rows ? 1 : 4;
    g.parts = (int)min64((int64_t)threads * per_thread, max64(1, extent / (align * 2)));
    run(st->pool, gemm_task, &g, g.parts);
}

/* ---- convolution ----------------------------------------------------------- */

static int conv_is_pointwise(const nn_conv *p)
{
    return p->k_rows == 1 && p->k_cols == 1 && p->stride_rows == 1 && p->stride_cols == 1 &&
           p->pad_rows == 0 && p->pad_cols == 0 && p->out_rows == p->in_rows &&
           p->out_cols == p->in_cols;
}

size_t nn_conv_min_work(const nn_conv *p, int n_threads)
{
    if (conv_is_pointwise(p)) return 0;
    return (size_t)n_threads * (size_t)p->c_in * p->k_rows * p->k_cols * NN_MIN_TILE;
}

/* col (kdim, ncols) for output positions [q0, q0 + ncols). */
static void im2col(float *col, const float *x, const nn_conv *p, int64_t q0, int64_t ncols)
{
    int64_t row = 0;
    for (int ci = 0; ci < p->c_in; ci++) {
        const float *xc = x + ci * p->x_cstride;
        for (int i = 0; i < p->k_rows; i++) {
            for (int j = 0; j < p->k_cols; j++, row++) {
                float *dst = col + row * ncols;
                int64_t q = q0, end = q0 + ncols;
                while (q < end) {
                    int64_t orow = q / p->out_cols, ocol = q % p->out_cols;
                    int64_t seg = min64(end - q, p->out_cols - ocol); /* rest of this output row */
                    int64_t irow = orow * p->stride_rows - p->pad_rows + (int64_t)i * p->dil_rows;
                    if (irow < 0 || irow >= p->in_rows) {
                        memset(dst, 0, (size_t)seg * sizeof *dst);
                    } else {
                        const float *xr = xc + irow * p->in_cols;
                        int64_t c0 = ocol * p->stride_cols - p->pad_cols + (int64_t)j * p->dil_cols;
                        if (p->stride_cols == 1) {
                            /* [c0, c0 + seg) clipped to the row, zeros outside */
                            int64_t lo = c0 < 0 ? -c0 : 0;
                            int64_t hi = c0 + seg > p->in_cols ? p->in_cols - c0 : seg;
                            if (hi < lo) hi = lo;
                            if (lo > seg) lo = seg;
                            if (hi > seg) hi = seg;
                            memset(dst, 0, (size_t)lo * sizeof *dst);
                            memcpy(dst + lo, xr + c0 + lo, (size_t)(hi - lo) * sizeof *dst);
                            memset(dst + hi, 0, (size_t)(seg - hi) * sizeof *dst);
                        } else {
                            for (int64_t s = 0; s < seg; s++) {
                                int64_t ic = c0 + s * p->stride_cols;
                                dst[s] = ic >= 0 && ic < p->in_cols ? xr[ic] : 0.0f;
                            }
                        }
                    }
                    dst += seg;
                    q += seg;
                }
            }
        }
    }
}

typedef struct {
    cpu_state *st;
    const nn_conv *p;
    float *y;
    const float *x, *w, *bias;
    int64_t pos_begin, pos_end, tile;
    float *work;
    size_t work_per_thread;
} conv_job;

static void fill_bias(float *y, const float *bias, int channels, int64_t cstride, int64_t n)
{
    for (int c = 0; c < channels; c++) {
        float *yc = y + c * cstride, v = bias ? bias[c] : 0.0f;
        for (int64_t i = 0; i < n; i++) yc[i] = v;
    }
}

static void conv_task(void *ctx, int task, int thread)
{
    conv_job *j = ctx;
    const nn_conv *p = j->p;
    int64_t q0 = j->pos_begin + (int64_t)task * j->tile;
    int64_t n = min64(j->tile, j->pos_end - q0);
    int kdim = p->c_in * p->k_rows * p->k_cols;
    float *y = j->y + (q0 - j->pos_begin);
    if (j->st->conv_gemm) {
        j->st->conv_gemm(y, p->y_cstride, j->w, j->bias, j->x, p, q0, (int)n,
                         conv_is_pointwise(p), j->st->pack[thread]);
        return;
    }
    fill_bias(y, j->bias, p->c_out, p->y_cstride, n);
    if (conv_is_pointwise(p)) {
        j->st->sgemm(0, 0, p->c_out, (int)n, p->c_in, 1.0f, j->w, kdim, j->x + q0, p->x_cstride,
                     1.0f, y, p->y_cstride, j->st->pack[thread]);
        return;
    }
    float *col = j->work + (size_t)thread * j->work_per_thread;
    im2col(col, j->x, p, q0, n);
    j->st->sgemm(0, 0, p->c_out, (int)n, kdim, 1.0f, j->w, kdim, col, n, 1.0f, y, p->y_cstride,
                 j->st->pack[thread]);
}

static void cpu_conv(nn_backend *be, float *y, const float *x, const float *w, const float *bias,
                     const nn_conv *p, int64_t pos_begin, int64_t pos_end, float *work,
                     size_t work_len)
{
    cpu_state *st = state_of(be);
    int64_t total = pos_end - pos_begin;
    if (total <= 0) return;
    int threads = be->n_threads;
    int64_t kdim = (int64_t)p->c_in * p->k_rows * p->k_cols;
    /* Tiles: at least one per thread, no larger than a thread's work share,
     * and not so small that the matrix multiply starves. */
    /* Tiles: a few per thread (balance when a thread is held back), but not
     * so small that the matrix multiply starves. */
    int64_t tile = max64(ceil_div(total, 4 * (int64_t)threads), 512);
    if (tile > total) tile = total;
    if (tile > 64) tile = (tile + 15) / 16 * 16;
    size_t per_thread = work_len / (size_t)threads;
    if (!conv_is_pointwise(p) && !st->conv_gemm) {
        int64_t fit = (int64_t)(per_thread / (size_t)kdim);
        assert(fit >= NN_MIN_TILE); /* the caller sized work with nn_conv_min_work */
        if (fit > 64) fit = fit / 16 * 16;
        tile = min64(tile, fit);
    }
    conv_job j = {st, p, y, x, w, bias, pos_begin, pos_end, tile, work, per_thread};
    run(st->pool, conv_task, &j, (int)ceil_div(total, tile));
}

/* ---- transposed convolution ---------------------------------------------- */

size_t nn_conv_transpose_min_work(const nn_conv_transpose *p, int n_threads)
{
    return (size_t)n_threads * (size_t)p->c_out * p->kernel * p->inner * NN_MIN_TILE;
}

typedef struct {
    cpu_state *st;
    const nn_conv_transpose *p;
    float *y;
    const float *x, *w, *bias;
    int parts;
    int64_t in_tile; /* input positions per matrix multiply */
    float *work;
    size_t work_per_thread;
} convtr_job;

static void conv_transpose_task(void *ctx, int task, int thread)
{
    convtr_job *j = ctx;
    const nn_conv_transpose *p = j->p;
    int64_t o0 = chunk_start(p->n_out, j->parts, task, 1), o1 = chunk_start(p->n_out, j->parts, task + 1, 1);
    if (o1 <= o0) return;
    int64_t inner = p->inner, K = p->kernel;
    for (int co = 0; co < p->c_out; co++) {
        float *yc = j->y + co * p->y_cstride + o0 * inner, v = j->bias ? j->bias[co] : 0.0f;
        for (int64_t i = 0; i < (o1 - o0) * inner; i++) yc[i] = v;
    }
    /* Input positions touching outputs [o0, o1): full index o + crop = i*stride + k. */
    int64_t lo = o0 + p->crop - (K - 1), hi = o1 - 1 + p->crop;
    int64_t i_lo = lo <= 0 ? 0 : ceil_div(lo, p->stride), i_hi = min64(p->n_in - 1, hi / p->stride);
    float *yt = j->work + (size_t)thread * j->work_per_thread;
    int rows = p->c_out * p->kernel;
    for (int64_t i0 = i_lo; i0 <= i_hi; i0 += j->in_tile) {
        int64_t ni = min64(j->in_tile, i_hi + 1 - i0), ncols = ni * inner;
        /* yt (c_out*kernel, ncols) = w^T (c_out*kernel, c_in) x (c_in, ncols) */
        j->st->sgemm(1, 0, rows, (int)ncols, p->c_in, 1.0f, j->w, rows, j->x + i0 * inner,
                     p->x_cstride, 0.0f, yt, ncols, j->st->pack[thread]);
        /* Taps in descending order, so each output gets its inputs in
         * ascending order: o = i * stride + k - crop. */
        for (int co = 0; co < p->c_out; co++) {
            float *yc = j->y + co * p->y_cstride;
            for (int k = K - 1; k >= 0; k--) {
                const float *src = yt + (int64_t)(co * K + k) * ncols - i0 * inner;
                int64_t shift = p->crop - k; /* i * stride = o + shift */
                int64_t ia = max64(i0, floor_div(o0 + shift + p->stride - 1, p->stride));
                int64_t ib = min64(i0 + ni, floor_div(o1 - 1 + shift, p->stride) + 1);
                if (inner == 1) {
                    for (int64_t i = ia; i < ib; i++) yc[i * p->stride - shift] += src[i];
                } else {
                    for (int64_t i = ia; i < ib; i++)
                        j->st->vec->axpy(yc + (i * p->stride - shift) * inner, src + i * inner,
                                         1.0f, inner);
                }
            }
        }
    }
}

static void cpu_conv_transpose(nn_backend *be, float *y, const float *x, const float *w,
                               const float *bias, const nn_conv_transpose *p, float *work,
                               size_t work_len)
{
    cpu_state *st = state_of(be);
    int threads = be->n_threads;
    size_t per_thread = work_len / (size_t)threads;
    int64_t fit = (int64_t)(per_thread / ((size_t)p->c_out * p->kernel * p->inner));
    if (fit < 1) fit = 1;
    int parts = (int)min64(threads, p->n_out);
    /* Tasks of about equal output ranges; more than one per thread keeps
     * both busy when the ranges' costs differ at the edges. */
    if (p->n_out >= 8 * threads) parts = 2 * threads;
    convtr_job j = {st, p, y, x, w, bias, parts, fit, work, per_thread};
    run(st->pool, conv_transpose_task, &j, parts);
}

/* ---- normalisations ----------------------------------------------------------- */

/* GroupNorm(1) in two layouts. Channel-major (tstride 1): one task per
 * channel, over every item of the chunk, for the statistics and for the
 * affine pass. Channels-last tokens (cstride 1, tstride = channels): an
 * item is contiguous, so its statistics come from fixed blocks of it, and
 * the affine pass runs over blocks of positions. Partial sums are added in
 * a fixed order either way. */
enum { GN_BLOCKS = 32 };

typedef struct {
    float *y;
    const float *x, *w, *b;
    int items, channels;
    int64_t len, item_stride, cstride, tstride;
    double *sums;         /* (items, channels or GN_BLOCKS, 2) */
    float *scale, *shift; /* (items) rstd and mean */
    float *ab;            /* tokens: (2, channels) per-channel a then b, of item 0 */
    const nn_vec_kernels *vec;
} gn_job;

static int gn_tokens(const gn_job *g) { return g->tstride != 1; }

static void gn_stats_task(void *ctx, int task, int thread)
{
    gn_job *g = ctx;
    if (gn_tokens(g)) {
        int item = task / GN_BLOCKS, blk = task % GN_BLOCKS;
        int64_t n = g->len * g->channels, i0 = n * blk / GN_BLOCKS, i1 = n * (blk + 1) / GN_BLOCKS;
        g->vec->moments(g->x + item * g->item_stride + i0, i1 - i0, &g->sums[2 * (size_t)task],
                        &g->sums[2 * (size_t)task + 1]);
        return;
    }
    int c = task;
    for (int item = 0; item < g->items; item++) {
        size_t k = 2 * ((size_t)item * g->channels + c);
        g->vec->moments(g->x + item * g->item_stride + c * g->cstride, g->len, &g->sums[k],
                        &g->sums[k + 1]);
    }
}

static void gn_apply_task(void *ctx, int task, int thread)
{
    gn_job *g = ctx;
    if (gn_tokens(g)) {
        /* one item; positions [t0, t1), y = x * a[c] + b[c] */
        int64_t t0 = g->len * task / GN_BLOCKS, t1 = g->len * (task + 1) / GN_BLOCKS;
        for (int64_t t = t0; t < t1; t++)
            g->vec->affine_vec(g->y + t * g->tstride, g->x + t * g->tstride, g->ab,
                               g->ab + g->channels, g->channels);
        return;
    }
    int c = task;
    for (int item = 0; item < g->items; item++) {
        /* y = x * a + b with a = rstd * w, b = bias - mean * a */
        float a = g->scale[item] * g->w[c], b = g->b[c] - g->shift[item] * a;
        int64_t off = item * g->item_stride + c * g->cstride;
        g->vec->affine(g->y + off, g->x + off, a, b, g->len);
    }
}

static void cpu_group_norm(nn_backend *be, float *y, const float *x, const float *w,
                           const float *b, int items, int channels, int64_t len,
                           int64_t item_stride, int64_t cstride, int64_t tstride, float eps)
{
    cpu_state *st = state_of(be);
    enum { CHUNK = 64, MAX_CHANNELS = 4096 };
    /* tokens: one item, channels contiguous; otherwise positions contiguous */
    assert(channels >= 1 && channels <= MAX_CHANNELS);
    assert(tstride == 1 || (items == 1 && cstride == 1 && tstride == channels));
    double sums[2 * MAX_CHANNELS];
    float scale[CHUNK], shift[CHUNK], ab[2 * MAX_CHANNELS];
    int per = tstride == 1 ? MAX_CHANNELS / channels : 1;
    if (per > CHUNK) per = CHUNK;
    if (per < 1) per = 1;
    for (int i0 = 0; i0 < items; i0 += per) {
        int n = items - i0 < per ? items - i0 : per;
        gn_job g = {y + i0 * item_stride, x + i0 * item_stride, w, b, n, channels, len,
                    item_stride, cstride, tstride, sums, scale, shift, ab, st->vec};
        /* tasks: blocks of the one item, or channels (each over the n items) */
        int parts = gn_tokens(&g) ? GN_BLOCKS : channels;
        run(st->pool, gn_stats_task, &g, parts);
        for (int it = 0; it < n; it++) {
            double s = 0, s2 = 0;
            for (int k = 0; k < parts; k++) {
                s += sums[2 * (it * parts + k)];
                s2 += sums[2 * (it * parts + k) + 1];
            }
            double count = (double)channels * len, mean = s / count;
            double var = s2 / count - mean * mean;
            shift[it] = (float)mean;
            scale[it] = (float)(1.0 / sqrt((var > 0 ? var : 0) + eps));
        }
        if (gn_tokens(&g))
            for (int c = 0; c < channels; c++) {
                ab[c] = scale[0] * w[c];
                ab[channels + c] = b[c] - shift[0] * ab[c];
            }
        run(st->pool, gn_apply_task, &g, parts);
    }
}

typedef struct {
    float *y;
    const float *x, *w, *b;
    int64_t rows;
    int dim, parts;
    float eps;
    const nn_vec_kernels *vec;
} ln_job;

static void ln_task(void *ctx, int task, int thread)
{
    ln_job *l = ctx;
    int64_t r0 = chunk_start(l->rows, l->parts, task, 1), r1 = chunk_start(l->rows, l->parts, task + 1, 1);
    float a[4096], b[4096];
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = l->x + r * l->dim;
        double s, s2;
        l->vec->moments(xr, l->dim, &s, &s2);
        double mean = s / l->dim, var = s2 / l->dim - mean * mean;
        float m = (float)mean, rstd = (float)(1.0 / sqrt((var > 0 ? var : 0) + l->eps));
        /* (x - mean) * rstd * w + b as x * a + b' */
        for (int i = 0; i < l->dim; i++) {
            a[i] = rstd * l->w[i];
            b[i] = l->b[i] - m * a[i];
        }
        l->vec->affine_vec(l->y + r * l->dim, xr, a, b, l->dim);
    }
}

static void cpu_layer_norm(nn_backend *be, float *y, const float *x, const float *w,
                           const float *b, int64_t rows, int dim, float eps)
{
    assert(dim >= 1 && dim <= 4096);
    int parts = (int)min64(be->n_threads * 4, rows);
    ln_job l = {y, x, w, b, rows, dim, parts, eps, state_of(be)->vec};
    run(state_of(be)->pool, ln_task, &l, parts);
}

/* ---- elementwise ------------------------------------------------------------- */

enum { ELEM_CHUNK = 32768 };

typedef struct {
    cpu_state *st;
    float *y;
    const float *x, *x2, *scale;
    int64_t n, len, x_cstride, y_cstride;
    int channels;
} elem_job;

static void gelu_task(void *ctx, int task, int thread)
{
    elem_job *e = ctx;
    int64_t i0 = (int64_t)task * ELEM_CHUNK, n = min64(ELEM_CHUNK, e->n - i0);
    e->st->vec->gelu(e->y + i0, e->x + i0, n);
}

static void cpu_gelu(nn_backend *be, float *y, const float *x, int64_t n)
{
    elem_job e = {.st = state_of(be), .y = y, .x = x, .n = n};
    run(e.st->pool, gelu_task, &e, (int)ceil_div(n, ELEM_CHUNK));
}

static void add_task(void *ctx, int task, int thread)
{
    elem_job *e = ctx;
    int64_t i0 = (int64_t)task * ELEM_CHUNK, n = min64(ELEM_CHUNK, e->n - i0);
    e->st->vec->add(e->y + i0, e->x + i0, e->x2 + i0, n);
}

static void cpu_add(nn_backend *be, float *y, const float *a, const float *b, int64_t n)
{
    elem_job e = {.st = state_of(be), .y = y, .x = a, .x2 = b, .n = n};
    run(e.st->pool, add_task, &e, (int)ceil_div(n, ELEM_CHUNK));
}

/* GLU and scaled adds: task = (channel, chunk of positions). */
static int64_t chunks_per_channel(int64_t len) { return ceil_div(len, ELEM_CHUNK); }

static void glu_task(void *ctx, int task, int thread)
{
    elem_job *e = ctx;
    int64_t per = chunks_per_channel(e->len);
    int c = (int)(task / per);
    int64_t t0 = (task % per) * ELEM_CHUNK, n = min64(ELEM_CHUNK, e->len - t0);
    const float *a = e->x + c * e->x_cstride + t0, *g = e->x + (c + e->channels) * e->x_cstride + t0;
    float *y = e->y + c * e->y_cstride + t0;
    if (e->scale)
        e->st->vec->glu(y, a, g, e->scale[c], 1, n);
    else
        e->st->vec->glu(y, a, g, 1.0f, 0, n);
}

static void cpu_glu(nn_backend *be, float *y, const float *x, const float *scale, int channels,
                    int64_t len, int64_t x_cstride, int64_t y_cstride)
{
    elem_job e = {.st = state_of(be), .y = y, .x = x, .scale = scale, .len = len,
                  .x_cstride = x_cstride, .y_cstride = y_cstride, .channels = channels};
    run(e.st->pool, glu_task, &e, (int)(channels * chunks_per_channel(len)));
}

typedef struct {
    float *y;
    const float *x, *scale;
    int channels, parts;
    int64_t len, cstride, tstride;
    const nn_vec_kernels *vec;
} scaled_job;

static void add_scaled_task(void *ctx, int task, int thread)
{
    scaled_job *s = ctx;
    if (s->tstride == 1) {
        /* task = a channel */
        s->vec->axpy(s->y + task * s->cstride, s->x + task * s->cstride,
                     s->scale ? s->scale[task] : 1.0f, s->len);
    } else if (s->cstride == 1 && s->tstride == s->channels && s->scale) {
        /* tokens: task = a range of positions, each a row of channels */
        int64_t t0 = chunk_start(s->len, s->parts, task, 1), t1 = chunk_start(s->len, s->parts, task + 1, 1);
        for (int64_t t = t0; t < t1; t++)
            s->vec->axpy_vec(s->y + t * s->tstride, s->x + t * s->tstride, s->scale, s->channels);
    } else {
        int64_t t0 = chunk_start(s->len, s->parts, task, 1), t1 = chunk_start(s->len, s->parts, task + 1, 1);
        for (int64_t t = t0; t < t1; t++)
            for (int c = 0; c < s->channels; c++) {
                int64_t o = c * s->cstride + t * s->tstride;
                s->y[o] += (s->scale ? s->scale[c] : 1.0f) * s->x[o];
            }
    }
}

static void cpu_add_scaled(nn_backend *be, float *y, const float *x, const float *scale,
                           int channels, int64_t len, int64_t cstride, int64_t tstride)
{
    scaled_job s = {y, x, scale, channels, 1, len, cstride, tstride, state_of(be)->vec};
    int tasks = channels;
    if (tstride != 1) {
        s.parts = (int)min64(be->n_threads * 4, len);
        tasks = s.parts;
    }
    run(state_of(be)->pool, add_scaled_task, &s, tasks);
}

typedef struct {
    cpu_state *st;
    float *x;
    int64_t rows;
    int n, parts;
} softmax_job;

static void softmax_rows(const nn_vec_kernels *vec, float *x, int64_t rows, int n)
{
    for (int64_t r = 0; r < rows; r++) vec->softmax(x + r * n, n);
}

static void softmax_task(void *ctx, int task, int thread)
{
    softmax_job *s = ctx;
    int64_t r0 = chunk_start(s->rows, s->parts, task, 1), r1 = chunk_start(s->rows, s->parts, task + 1, 1);
    softmax_rows(s->st->vec, s->x + r0 * s->n, r1 - r0, s->n);
}

static void cpu_softmax(nn_backend *be, float *x, int64_t rows, int n)
{
    softmax_job s = {state_of(be), x, rows, n, (int)min64(be->n_threads * 4, rows)};
    run(s.st->pool, softmax_task, &s, s.parts);
}

/* ---- attention ---------------------------------------------------------------- */

size_t nn_attention_min_work(int nk, int n_threads)
{
    return (size_t)n_threads * NN_MIN_TILE * (size_t)nk;
}

typedef struct {
    cpu_state *st;
    float *out;
    const float *q, *k, *v;
    int nq, nk, heads, head_dim, q_tile, q_tiles;
    int64_t ldq, ldk, ldv, ldo;
    float *work;
    size_t work_per_thread;
} attn_job;

static void attention_task(void *ctx, int task, int thread)
{
    attn_job *a = ctx;
    int h = task / a->q_tiles, i0 = (task % a->q_tiles) * a->q_tile;
    int nq = a->nq - i0 < a->q_tile ? a->nq - i0 : a->q_tile;
    float *s = a->work + (size_t)thread * a->work_per_thread; /* (nq, nk) scores */
    const float *q = a->q + (int64_t)i0 * a->ldq + h * a->head_dim;
    const float *k = a->k + h * a->head_dim, *v = a->v + h * a->head_dim;
    float *pack = a->st->pack[thread];
    a->st->sgemm(0, 1, nq, a->nk, a->head_dim, 1.0f / sqrtf((float)a->head_dim), q, a->ldq, k,
                 a->ldk, 0.0f, s, a->nk, pack);
    softmax_rows(a->st->vec, s, nq, a->nk);
    a->st->sgemm(0, 0, nq, a->head_dim, a->nk, 1.0f, s, a->nk, v, a->ldv, 0.0f,
                 a->out + (int64_t)i0 * a->ldo + h * a->head_dim, a->ldo, pack);
}

static void cpu_attention(nn_backend *be, float *out, const float *q, const float *k,
                          const float *v, int nq, int nk, int heads, int head_dim, int64_t ldq,
                          int64_t ldk, int64_t ldv, int64_t ldo, float *work, size_t work_len)
{
    cpu_state *st = state_of(be);
    size_t per_thread = work_len / (size_t)be->n_threads;
    int64_t fit = (int64_t)(per_thread / (size_t)nk);
    if (fit < NN_MIN_TILE) fit = NN_MIN_TILE;
    int q_tile = (int)min64(min64(fit, 256), nq);
    attn_job a = {st, out, q, k, v, nq, nk, heads, head_dim, q_tile, (int)ceil_div(nq, q_tile),
                  ldq, ldk, ldv, ldo, work, per_thread};
    run(st->pool, attention_task, &a, heads * a.q_tiles);
}

static void cpu_parallel(nn_backend *be, void (*fn)(void *ctx, int task, int thread), void *ctx,
                         int n_tasks)
{
    run(state_of(be)->pool, fn, ctx, n_tasks);
}

/* ---- construction ------------------------------------------------------------- */

static void cpu_free(nn_backend *be)
{
    cpu_state *st = be->impl;
    if (st) {
        if (st->pack)
            for (int t = 0; t < be->n_threads; t++) free(st->pack[t]);
        free(st->pack);
        pool_free(st->pool);
        free(st);
    }
    free(be);
}

nn_backend *nn_backend_cpu_new(int n_threads, nn_gemm_kind gemm, d2m_error *err)
{
    if (n_threads <= 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = online > 0 ? (int)online : 1;
    }
    if (n_threads > 256) {
        d2m_fail(err, D2M_ERR_INVALID, "%d threads: at most 256", n_threads);
        return NULL;
    }
    nn_sgemm_fn kernel = NULL;
    nn_conv_gemm_fn conv_gemm = NULL;
    const char *name = NULL;
    switch (gemm) {
    case NN_GEMM_AUTO:
        if ((kernel = nn_sgemm_amx())) conv_gemm = nn_conv_gemm_amx(), name = "cpu-amx";
        else if ((kernel = nn_sgemm_avx512())) conv_gemm = nn_conv_gemm_avx512(), name = "cpu-avx512";
        else if ((kernel = nn_sgemm_blas())) name = "cpu-blas";
        else kernel = nn_sgemm_reference, name = "cpu-reference";
        break;
    case NN_GEMM_REFERENCE: kernel = nn_sgemm_reference, name = "cpu-reference"; break;
    case NN_GEMM_BLAS: kernel = nn_sgemm_blas(), name = "cpu-blas"; break;
    case NN_GEMM_AVX512:
        kernel = nn_sgemm_avx512(), conv_gemm = nn_conv_gemm_avx512(), name = "cpu-avx512";
        break;
    case NN_GEMM_AMX: kernel = nn_sgemm_amx(), conv_gemm = nn_conv_gemm_amx(), name = "cpu-amx"; break;
    }
    if (!kernel) {
        d2m_fail(err, D2M_ERR_INVALID, "this build, CPU or OS has no %s matrix multiply",
                 gemm == NN_GEMM_BLAS ? "BLAS" : gemm == NN_GEMM_AMX ? "AMX" : "AVX-512");
        return NULL;
    }
    nn_backend *be = calloc(1, sizeof *be);
    cpu_state *st = calloc(1, sizeof *st);
    if (!be || !st) {
        free(be);
        free(st);
        d2m_fail(err, D2M_ERR_NOMEM, "out of memory for the CPU backend");
        return NULL;
    }
    be->name = name;
    be->n_threads = n_threads;
    be->impl = st;
    be->free = cpu_free;
    be->gemm = cpu_gemm;
    be->conv = cpu_conv;
    be->conv_transpose = cpu_conv_transpose;
    be->group_norm = cpu_group_norm;
    be->layer_norm = cpu_layer_norm;
    be->gelu = cpu_gelu;
    be->glu = cpu_glu;
    be->softmax = cpu_softmax;
    be->attention = cpu_attention;
    be->add = cpu_add;
    be->add_scaled = cpu_add_scaled;
    be->parallel = cpu_parallel;
    st->sgemm = kernel;
    st->conv_gemm = conv_gemm;
    st->packs_both = kernel == nn_sgemm_amx();
    st->row_align = st->packs_both ? 32 : 24;
    st->vec = &nn_vec_reference;
    if (gemm != NN_GEMM_REFERENCE && nn_vec_avx512()) st->vec = nn_vec_avx512();
    st->pack = calloc((size_t)n_threads, sizeof *st->pack);
    st->pool = pool_new(n_threads, flush_denormals);
    if (!st->pack || !st->pool) goto fail;
    for (int t = 0; t < n_threads; t++) {
        if (posix_memalign((void **)&st->pack[t], 64, NN_GEMM_PACK_FLOATS * sizeof(float)) != 0) {
            st->pack[t] = NULL;
            goto fail;
        }
    }
    return be;
fail:
    cpu_free(be);
    d2m_fail(err, D2M_ERR_NOMEM, "out of memory (or no threads) for the CPU backend");
    return NULL;
}
