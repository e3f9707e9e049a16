/* What the AVX-512 matrix-multiply kernel shares with the AMX one
 * (kernels_amx.c): where op(B) comes from, its packer into (kc, 32)
 * single-precision panels, a 16 x 16 register transpose, the store of a
 * C row and the product with nothing to sum. Only for code that already
 * checked the CPU has AVX-512. */
#ifndef D2M_NN_PACK_AVX512_H
#define D2M_NN_PACK_AVX512_H

#include "nn/backend.h"

#include <stdint.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define NN_AVX512_TARGET __attribute__((target("avx512f,avx512dq,fma")))

/* Width of one packed panel of op(B), in columns. */
enum { NN_PANEL_COLS = 32 };

/* Where op(B)'s chunks come from: a stored matrix, or a convolution's
 * input read through the im2col index map. */
typedef struct {
    const float *b;
    int64_t ldb;
    int trans;
    const nn_conv *conv; /* non-NULL: B = im2col(x = b) columns from position q0 */
    int64_t q0;
} nn_b_source;

/* op(B) of a convolution's matrix multiply for output positions from q0:
 * x itself (channels as rows) when the conv is pointwise, else its im2col
 * columns. */
static inline nn_b_source nn_conv_b_source(const float *x, const nn_conv *p, int64_t q0,
                                           int pointwise)
{
    if (pointwise) return (nn_b_source){x + q0, p->x_cstride, 0, NULL, 0};
    return (nn_b_source){x, 0, 0, p, q0};
}

/* dst (NN_PANEL_COLS-column) panels panel_len floats apart, each holding
 * rows [p0, p0 + kc) of its columns of op(B), columns [j0, j0 + nc) in all,
 * nc <= 768; columns past nc in the last panel are zeros, and so are the
 * rows from kc to panel_len / NN_PANEL_COLS. */
void nn_pack_b_avx512(float *dst, const nn_b_source *src, int p0, int kc, int j0, int nc,
                      int64_t panel_len);

/* Transpose the 16 x 16 block in r (row i in r[i]) in registers. */
NN_AVX512_TARGET static inline void nn_transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        int base = i < 2 ? 0 : 8, k = i % 2 ? 0xdd : 0x88;
        for (int j = 0; j < 4; j++)
            t[4 * i + j] = k == 0x88 ? _mm512_shuffle_f32x4(r[base + j], r[base + 4 + j], 0x88)
                                     : _mm512_shuffle_f32x4(r[base + j], r[base + 4 + j], 0xdd);
    }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
    }
}

/* One row of a C tile from its products (lo: columns 0-15, hi: 16-31),
 * nr <= 32 columns stored: the first inner chunk C = alpha*AB + beta*C
 * (beta == 0: C not read) + *bias when bias is given, later chunks
 * C += alpha*AB. */
NN_AVX512_TARGET static inline void nn_store_c_row(float *cr, __m512 lo, __m512 hi, int nr,
                                                   int first, float alpha, float beta,
                                                   const float *bias)
{
    __mmask16 m0 = nr >= 16 ? 0xffff : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xffff : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1) : 0;
    __m512 va = _mm512_set1_ps(alpha);
    lo = _mm512_mul_ps(va, lo);
    hi = _mm512_mul_ps(va, hi);
    if (!first) {
        lo = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), lo);
        hi = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), hi);
    } else {
        if (beta != 0.0f) {
            __m512 vb = _mm512_set1_ps(beta);
            lo = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), lo);
            hi = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16), hi);
        }
        if (bias) {
            lo = _mm512_add_ps(lo, _mm512_set1_ps(*bias));
            hi = _mm512_add_ps(hi, _mm512_set1_ps(*bias));
        }
    }
    _mm512_mask_storeu_ps(cr, m0, lo);
    _mm512_mask_storeu_ps(cr + 16, m1, hi);
}

#endif

/* C (m, n) = beta * C (beta == 0: C not read) + bias[row]: a product with
 * no inner dimension or alpha == 0. */
static inline void nn_gemm_no_products(int m, int n, float beta, const float *bias, float *c,
                                       int64_t ldc)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            c[i * ldc + j] =
                (beta == 0.0f ? 0.0f : beta * c[i * ldc + j]) + (bias ? bias[i] : 0.0f);
}
#endif
