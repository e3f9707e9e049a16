/* Inside the CPU backend: the single-threaded matrix-multiply kernels the
 * threaded ops are built from, and the vectorised elementwise kernels. */
#ifndef D2M_NN_CPU_H
#define D2M_NN_CPU_H

#include "nn/backend.h"

#include <stddef.h>
#include <stdint.h>

/* Per-thread packing scratch every sgemm kernel may use (floats). */
#define NN_GEMM_PACK_FLOATS (512 * 1024)

/* C (m, n) = alpha * op(A) op(B) + beta * C, row-major, one thread. pack is
 * NN_GEMM_PACK_FLOATS floats of scratch, 64-byte aligned. */
typedef void (*nn_sgemm_fn)(int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                            float *c, int64_t ldc, float *pack);

void nn_sgemm_reference(int trans_a, int trans_b, int m, int n, int k, float alpha,
                        const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                        float *c, int64_t ldc, float *pack);

/* y (c_out, n) = w (c_out, c_in*k_rows*k_cols) times the im2col columns
 * of x for output positions [q0, q0 + n), + bias (c_out, or NULL); the
 * columns are read from x while packing (no im2col buffer); pointwise:
 * the conv is 1x1 with stride 1, columns are x's own. y's rows are ldy
 * apart. One thread; pack as above. */
typedef void (*nn_conv_gemm_fn)(float *y, int64_t ldy, const float *w, const float *bias,
                                const float *x, const nn_conv *p, int64_t q0, int n,
                                int pointwise, float *pack);

/* NULL when the machine or the build lacks it. */
nn_sgemm_fn nn_sgemm_avx512(void);
nn_conv_gemm_fn nn_conv_gemm_avx512(void);
nn_sgemm_fn nn_sgemm_blas(void);
/* Also NULL when the OS does not grant the tile state. */
nn_sgemm_fn nn_sgemm_amx(void);
nn_conv_gemm_fn nn_conv_gemm_amx(void);

/* Elementwise kernels over n contiguous values; the reference versions are
 * plain C, the fast ones (when the CPU has AVX-512) are checked against
 * them in the tests. In place allowed. */
typedef struct {
    void (*gelu)(float *y, const float *x, int64_t n);
    /* y = a * sigmoid(g), or y += s * a * sigmoid(g) when accumulate. */
    void (*glu)(float *y, const float *a, const float *g, float s, int accumulate, int64_t n);
    /* In place softmax of one row. */
    void (*softmax)(float *x, int64_t n);
    /* Sum and sum of squares, accumulated in double. */
    void (*moments)(const float *x, int64_t n, double *sum, double *sum_squares);
    /* y = x * a + b. */
    void (*affine)(float *y, const float *x, float a, float b, int64_t n);
    /* y = x * a[i] + b[i], elementwise. */
    void (*affine_vec)(float *y, const float *x, const float *a, const float *b, int64_t n);
    /* y += s * x. */
    void (*axpy)(float *y, const float *x, float s, int64_t n);
    /* y += s[i] * x[i], elementwise. */
    void (*axpy_vec)(float *y, const float *x, const float *s, int64_t n);
    /* y = a + b. */
    void (*add)(float *y, const float *a, const float *b, int64_t n);
} nn_vec_kernels;

extern const nn_vec_kernels nn_vec_reference;
/* NULL when the CPU lacks AVX-512. */
const nn_vec_kernels *nn_vec_avx512(void);

#endif
