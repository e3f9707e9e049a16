/* Tensor-op backends: the hot operations a network needs, behind a table of
 * function pointers. Model code (separate/htdemucs*.c) calls only these and
 * never asks which backend it holds; a new backend is a new folder beside
 * cpu/ that fills the same table.
 *
 * Conventions shared by every op:
 * - float32, row-major (C order, last index fastest); pointers are host
 *   memory for the CPU backend.
 * - Destination first, then inputs, then sizes.
 * - Feature maps are (channels, rows, columns) with channel c starting at
 *   c * cstride; cstride >= rows * columns lets an op read or write a slice
 *   (a block of rows) of a larger map.
 * - Ops that need scratch take it from the caller (work, work_len floats);
 *   they tile their work to fit, so any work_len >= nn_min_work() is enough
 *   (a larger one is faster). Nothing allocates in an op.
 * - Results never depend on the thread count: each output element is summed
 *   in an order fixed by the sizes alone.
 *
 * Ownership: nn_backend_*_new returns a backend the caller frees with
 * nn_backend_free. Thread safety: one backend runs one op at a time (it owns
 * its worker threads); use one backend per concurrent model.
 */
#ifndef D2M_NN_BACKEND_H
#define D2M_NN_BACKEND_H

#include "base/base.h"

#include <stddef.h>
#include <stdint.h>

/* A 2-D convolution (1-D ones have in_rows = k_rows = 1), PyTorch's Conv2d
 * with zero padding: output (o_r, o_c) reads input
 * (o_r * stride_r - pad_r + i * dil_r, o_c * stride_c - pad_c + j * dil_c)
 * for kernel taps (i, j); positions outside the input read 0. out_rows and
 * out_cols are given, not derived, so a right pad (to a multiple of the
 * stride, as the Demucs time encoders do) is simply a longer output. */
typedef struct {
    int c_in, c_out;
    int in_rows, in_cols;
    int out_rows, out_cols;
    int k_rows, k_cols;
    int stride_rows, stride_cols;
    int pad_rows, pad_cols; /* zeros before the first row / column */
    int dil_rows, dil_cols;
    int64_t x_cstride, y_cstride;
} nn_conv;

/* A transposed convolution along one axis (PyTorch's ConvTranspose1d, or
 * ConvTranspose2d with a (k, 1) kernel): input (c_in, n_in, inner), full
 * output position o receives input position i through tap k = o - i*stride;
 * the op keeps outputs [crop, crop + n_out) of that full output. inner is a
 * contiguous axis carried along (time frames for the frequency branch, 1 for
 * waveforms). */
typedef struct {
    int c_in, c_out;
    int n_in, n_out, inner;
    int kernel, stride, crop;
    int64_t x_cstride, y_cstride;
} nn_conv_transpose;

typedef struct nn_backend nn_backend;

struct nn_backend {
    const char *name;
    int n_threads; /* worker threads the ops use, the caller's included */
    void *impl;    /* the backend's own state */

    void (*free)(nn_backend *be);

    /* C (m, n) = alpha * op(A) (m, k) * op(B) (k, n) + beta * C, row-major;
     * op(X) = X or X^T as trans_x says; lda/ldb/ldc are row strides of the
     * stored matrices. Column-major callers swap the operands:
     * C^T = op(B)^T op(A)^T. beta == 0 ignores C's contents (NaN included). */
    void (*gemm)(nn_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                 int64_t ldc);

    /* y (c_out, out positions [pos_begin, pos_end)) = conv(x) + bias, where
     * positions run over (out_rows, out_cols) flattened and y points at the
     * first computed position of channel 0. w (c_out, c_in, k_rows, k_cols);
     * bias (c_out) or NULL. */
    void (*conv)(nn_backend *be, float *y, const float *x, const float *w, const float *bias,
                 const nn_conv *p, int64_t pos_begin, int64_t pos_end, float *work,
                 size_t work_len);

    /* y (c_out, n_out, inner) = conv_transpose(x) + bias. w (c_in, c_out,
     * kernel); bias (c_out) or NULL. */
    void (*conv_transpose)(nn_backend *be, float *y, const float *x, const float *w,
                           const float *bias, const nn_conv_transpose *p, float *work,
                           size_t work_len);

    /* GroupNorm with one group, per item: x[item*item_stride + c*cstride +
     * t*tstride] for channels c < channels and positions t < len is
     * normalised over all its channels and positions (biased variance, eps),
     * then y = xn * w[c] + b[c]. In place allowed (y == x). */
    void (*group_norm)(nn_backend *be, float *y, const float *x, const float *w, const float *b,
                       int items, int channels, int64_t len, int64_t item_stride,
                       int64_t cstride, int64_t tstride, float eps);

    /* LayerNorm over the last axis of x (rows, dim): y = (x - mean) /
     * sqrt(var + eps) * w + b, biased variance. In place allowed. */
    void (*layer_norm)(nn_backend *be, float *y, const float *x, const float *w, const float *b,
                       int64_t rows, int dim, float eps);

    /* y = x * Phi(x), the exact (erf) GELU, over n values. In place allowed. */
    void (*gelu)(nn_backend *be, float *y, const float *x, int64_t n);

    /* GLU over channels: x (2 * channels, len) with channel stride
     * x_cstride; g = x[c] * sigmoid(x[channels + c]). Then y[c] = g, or with
     * scale != NULL y[c] += scale[c] * g (a LayerScale'd residual). y has
     * channel stride y_cstride. */
    void (*glu)(nn_backend *be, float *y, const float *x, const float *scale, int channels,
                int64_t len, int64_t x_cstride, int64_t y_cstride);

    /* In place softmax of each row of x (rows, n). */
    void (*softmax)(nn_backend *be, float *x, int64_t rows, int n);

    /* Multi-head scaled dot-product attention, no mask: for each head h (the
     * channels [h*head_dim, (h+1)*head_dim) of q, k, v and out),
     * out_h = softmax(q_h k_h^T / sqrt(head_dim)) v_h. q (nq, ldq), k (nk,
     * ldk), v (nk, ldv), out (nq, ldo). */
    void (*attention)(nn_backend *be, float *out, const float *q, const float *k, const float *v,
                      int nq, int nk, int heads, int head_dim, int64_t ldq, int64_t ldk,
                      int64_t ldv, int64_t ldo, float *work, size_t work_len);

    /* y = a + b over n values (y may alias a or b). */
    void (*add)(nn_backend *be, float *y, const float *a, const float *b, int64_t n);

    /* Per-channel scaled accumulate: y[c*cstride + t*tstride] +=
     * scale[c] * x[same] for c < channels, t < len (scale NULL: 1). */
    void (*add_scaled)(nn_backend *be, float *y, const float *x, const float *scale,
                       int channels, int64_t len, int64_t cstride, int64_t tstride);

    /* The model's own host-side loops (FFTs, layout changes) on the
     * backend's threads: fn(ctx, task, thread) once for every task in
     * [0, n_tasks), thread in [0, n_threads) naming per-thread scratch.
     * Tasks must write disjoint outputs. */
    void (*parallel)(nn_backend *be, void (*fn)(void *ctx, int task, int thread), void *ctx,
                     int n_tasks);
};

/* The gemm op for column-major callers (BLAS's convention): C (m, n) =
 * alpha op(A) op(B) + beta C with every matrix stored column-major, which
 * is the row-major product C^T = op(B)^T op(A)^T. */
static inline void nn_gemm_col_major(nn_backend *be, int trans_a, int trans_b, int m, int n, int k,
                                     float alpha, const float *a, int64_t lda, const float *b,
                                     int64_t ldb, float beta, float *c, int64_t ldc)
{
    be->gemm(be, trans_b, trans_a, n, m, k, alpha, b, ldb, a, lda, beta, c, ldc);
}

/* Which matrix-multiply kernel the CPU backend uses. */
typedef enum {
    NN_GEMM_AUTO = 0,      /* the fastest available on this machine */
    NN_GEMM_REFERENCE = 1, /* plain C loops (the oracle for the others) */
    NN_GEMM_BLAS = 2,      /* the linked BLAS's sgemm (nn/blas) */
    NN_GEMM_AVX512 = 3,    /* own AVX-512 kernel */
    NN_GEMM_AMX = 4        /* own AMX kernel, float32-accurate (three bfloat16 terms) */
} nn_gemm_kind;

/* The CPU backend with n_threads worker threads in all (the calling thread
 * is one of them; <= 0 means the online CPU count). Returns NULL and fills
 * err (D2M_ERR_NOMEM, D2M_ERR_INVALID) on failure. */
nn_backend *nn_backend_cpu_new(int n_threads, nn_gemm_kind gemm, d2m_error *err);

/* NULL-safe. */
void nn_backend_free(nn_backend *be);

/* Smallest work_len the conv, conv_transpose and attention ops accept for
 * these sizes on a backend with n_threads threads: each thread needs room
 * for its smallest tile (NN_MIN_TILE output positions, or query rows). The
 * ops tile to fit any larger buffer. */
#define NN_MIN_TILE 16
size_t nn_conv_min_work(const nn_conv *p, int n_threads);
size_t nn_conv_transpose_min_work(const nn_conv_transpose *p, int n_threads);
size_t nn_attention_min_work(int nk, int n_threads);

#endif
