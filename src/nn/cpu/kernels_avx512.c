/* AVX-512 kernels for the CPU backend: a packed single-precision matrix
 * multiply (also fed straight from a convolution's input), and the
 * elementwise functions (exp, erf-GELU, sigmoid-GLU, softmax, moments,
 * affine maps). Compiled for AVX-512 through function attributes and
 * chosen at run time, so the build needs no -march flag and other CPUs fall
 * back to the reference kernels; tests/unit/test_nn_backend.c checks each
 * against the reference.
 *
 * Matrix multiply (after Goto & van de Geijn, "Anatomy of high-performance
 * matrix multiplication", 2008, and the BLIS loop order): C is tiled in
 * blocks of MC x NC, the inner dimension in chunks of KC; op(B)'s chunk is
 * packed into KC x NR panels (from a stored matrix, either orientation, or
 * as im2col columns read from a convolution's input: no im2col buffer);
 * a row-major A is read in place, a transposed one packed into MR x KC
 * panels; a 12 x 32 register tile (24 accumulators, two B vectors,
 * broadcast A) runs over them. Edges are zero-padded in the packs and
 * masked at the stores. Every C element is summed over the inner dimension
 * in KC chunks, in order, whatever block it falls in, so the result does
 * not depend on how the backend splits C across threads. About 150 GFLOP/s
 * per core on a 2.6 GHz Sapphire Rapids (BLIS 0.9: 105-110).
 *
 * Threading: none inside; the backend runs one call per block of C.
 */
#include "cpu.h"
#include "pack_avx512.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#define TARGET NN_AVX512_TARGET

enum { MR = 12, NR = NN_PANEL_COLS, KC = 256, MC = 192, NC = 768 };
_Static_assert(KC * NC + MC * KC <= NN_GEMM_PACK_FLOATS, "packs exceed the scratch");

/* ---- packing -------------------------------------------------------------- */

/* dst (kc, NR) panels for columns [j0, j0 + nc) of op(B), rows [p0, p0 + kc). */
TARGET static void pack_b(float *dst, const float *b, int64_t ldb, int trans, int p0, int kc,
                          int j0, int nc, int64_t panel_len)
{
    for (int jp = 0; jp < nc; jp += NR) {
        int w = nc - jp < NR ? nc - jp : NR;
        float *panel = dst + jp / NR * panel_len;
        if (!trans) {
            __mmask16 m0 = w >= 16 ? 0xffff : (__mmask16)((1u << w) - 1);
            __mmask16 m1 = w >= 32 ? 0xffff : w > 16 ? (__mmask16)((1u << (w - 16)) - 1) : 0;
            for (int p = 0; p < kc; p++) {
                const float *src = b + (int64_t)(p0 + p) * ldb + j0 + jp;
                _mm512_storeu_ps(panel + p * NR, _mm512_maskz_loadu_ps(m0, src));
                _mm512_storeu_ps(panel + p * NR + 16, _mm512_maskz_loadu_ps(m1, src + 16));
            }
            continue;
        }
        /* B^T stored: column j of op(B) is row j of b. Blocks of 16 x 16. */
        for (int half = 0; half < 2; half++) {
            int c0 = half * 16, cols = w - c0;
            if (cols > 16) cols = 16;
            for (int q = 0; q < kc; q += 16) {
                int rows = kc - q < 16 ? kc - q : 16;
                __mmask16 mk = (__mmask16)(rows >= 16 ? 0xffff : (1u << rows) - 1);
                __m512 r[16];
                for (int i = 0; i < 16; i++)
                    r[i] = i < cols ? _mm512_maskz_loadu_ps(
                                          mk, b + (int64_t)(j0 + jp + c0 + i) * ldb + p0 + q)
                                    : _mm512_setzero_ps();
                nn_transpose16(r);
                for (int i = 0; i < rows; i++) _mm512_storeu_ps(panel + (q + i) * NR + c0, r[i]);
            }
        }
    }
}

/* dst (kc, MR) panels for rows [i0, i0 + mc) of op(A) = A^T, columns [p0, p0 + kc). */
TARGET static void pack_a_transposed(float *dst, const float *a, int64_t lda, int i0, int mc,
                                     int p0, int kc)
{
    for (int ip = 0; ip < mc; ip += MR) {
        int h = mc - ip < MR ? mc - ip : MR;
        __mmask16 mh = (__mmask16)((1u << h) - 1), all = (__mmask16)((1u << MR) - 1);
        float *panel = dst + (int64_t)ip * kc;
        for (int p = 0; p < kc; p++)
            _mm512_mask_storeu_ps(panel + p * MR, all,
                                  _mm512_maskz_loadu_ps(mh, a + (int64_t)(p0 + p) * lda + i0 + ip));
    }
}

/* ---- the register tile ----------------------------------------------------- */

/* Stores a 12 x 32 accumulator block into the C tile (mr <= MR rows, nr <=
 * NR columns): first chunk C = alpha*AB + beta*C (beta == 0: C not read)
 * + bias[row] when bias is given, later chunks C += alpha*AB. */
TARGET static inline void store_tile(__m512 acc[MR][2], float *c, int64_t ldc, int mr, int nr,
                                     int first, float alpha, float beta, const float *bias)
{
    for (int r = 0; r < mr; r++)
        nn_store_c_row(c + r * ldc, acc[r][0], acc[r][1], nr, first, alpha, beta,
                       bias ? bias + r : NULL);
}

/* The 12 x 32 product over kc steps; AROW(r) is row r's value at step p. */
#define TILE_BODY(AROW, ADVANCE)                                                              \
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;  \
    __m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;                  \
    __m512 c60 = c00, c61 = c00, c70 = c00, c71 = c00, c80 = c00, c81 = c00;                  \
    __m512 c90 = c00, c91 = c00, ca0 = c00, ca1 = c00, cb0 = c00, cb1 = c00;                  \
    for (int p = 0; p < kc; p++) {                                                            \
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), x;                      \
        ROW(0, c00, c01);                                                                     \
        ROW(1, c10, c11);                                                                     \
        ROW(2, c20, c21);                                                                     \
        ROW(3, c30, c31);                                                                     \
        ROW(4, c40, c41);                                                                     \
        ROW(5, c50, c51);                                                                     \
        ROW(6, c60, c61);                                                                     \
        ROW(7, c70, c71);                                                                     \
        ROW(8, c80, c81);                                                                     \
        ROW(9, c90, c91);                                                                     \
        ROW(10, ca0, ca1);                                                                    \
        ROW(11, cb0, cb1);                                                                    \
        ADVANCE;                                                                              \
        b += NR;                                                                              \
    }                                                                                         \
    __m512 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41},         \
                         {c50, c51}, {c60, c61}, {c70, c71}, {c80, c81}, {c90, c91},         \
                         {ca0, ca1}, {cb0, cb1}};                                             \
    store_tile(acc, c, ldc, mr, nr, first, alpha, beta, bias)

#define ROW(r, lo, hi)                                                                        \
    x = _mm512_set1_ps(AROW(r));                                                              \
    lo = _mm512_fmadd_ps(x, b0, lo);                                                          \
    hi = _mm512_fmadd_ps(x, b1, hi)

/* A packed: (kc, MR), row r of step p at a[p*MR + r]. */
TARGET static void tile_packed(int kc, const float *a, const float *b, float *c, int64_t ldc,
                               int mr, int nr, int first, float alpha, float beta,
                               const float *bias)
{
#define AROW(r) a[r]
    TILE_BODY(AROW, a += MR);
#undef AROW
}

/* A read in place, row-major: row r of step p at rows[r][p]. Rows past mr
 * repeat row 0 (their results are not stored). */
TARGET static void tile_rows(int kc, const float *a, int64_t lda, const float *b, float *c,
                             int64_t ldc, int mr, int nr, int first, float alpha, float beta,
                             const float *bias)
{
    const float *r0 = a, *r1 = mr > 1 ? a + lda : a, *r2 = mr > 2 ? a + 2 * lda : a;
    const float *r3 = mr > 3 ? a + 3 * lda : a, *r4 = mr > 4 ? a + 4 * lda : a;
    const float *r5 = mr > 5 ? a + 5 * lda : a, *r6 = mr > 6 ? a + 6 * lda : a;
    const float *r7 = mr > 7 ? a + 7 * lda : a, *r8 = mr > 8 ? a + 8 * lda : a;
    const float *r9 = mr > 9 ? a + 9 * lda : a, *r10 = mr > 10 ? a + 10 * lda : a;
    const float *r11 = mr > 11 ? a + 11 * lda : a;
    int64_t q = 0;
#define AROW(i) r##i[q]
    TILE_BODY(AROW, q++);
#undef AROW
}
#undef ROW
#undef TILE_BODY

/* A run of consecutive output positions within one output row and one
 * packed panel. */
typedef struct {
    int64_t orow, ocol;
    int panel, offset, len;
} conv_piece;

/* Bits [lo, hi) of a 16-bit mask, clipped to [0, 16). */
static inline __mmask16 bit_range(int64_t lo, int64_t hi)
{
    if (lo < 0) lo = 0;
    if (hi > 16) hi = 16;
    if (hi <= lo) return 0;
    uint32_t upto = hi >= 16 ? 0xffffu : (1u << hi) - 1, below = (1u << lo) - 1;
    return (__mmask16)(upto & ~below);
}

/* im2col rows [p0, p0 + kc) for output positions q0 + [j0, j0 + nc), written
 * straight into (kc, NR) panels. */
TARGET static void pack_conv(float *dst, const nn_b_source *src, int p0, int kc, int j0, int nc,
                             int64_t panel_len)
{
    const nn_conv *p = src->conv;
    conv_piece pieces[NC + NC / NR]; /* at worst one per position plus one per panel */
    int np = 0;
    for (int jp = 0; jp < nc; jp += NR) {
        int w = nc - jp < NR ? nc - jp : NR;
        int64_t q = src->q0 + j0 + jp;
        for (int filled = 0; filled < w;) {
            int64_t orow = (q + filled) / p->out_cols, ocol = (q + filled) % p->out_cols;
            int len = (int)(p->out_cols - ocol < w - filled ? p->out_cols - ocol : w - filled);
            pieces[np++] = (conv_piece){orow, ocol, jp / NR, filled, len};
            filled += len;
        }
    }
    int taps = p->k_rows * p->k_cols, last_w = nc - (nc - 1) / NR * NR;
    for (int r = 0; r < kc; r++) {
        int row = p0 + r, ci = row / taps, ki = (row % taps) / p->k_cols, kj = row % p->k_cols;
        const float *xc = src->b + ci * p->x_cstride;
        for (int k = 0; k < np; k++) {
            const conv_piece *pc = &pieces[k];
            float *d = dst + pc->panel * panel_len + r * NR + pc->offset;
            int64_t irow = pc->orow * p->stride_rows - p->pad_rows + (int64_t)ki * p->dil_rows;
            int64_t c0 = pc->ocol * p->stride_cols - p->pad_cols + (int64_t)kj * p->dil_cols;
            if (irow < 0 || irow >= p->in_rows) {
                for (int s0 = 0; s0 < pc->len; s0 += 16)
                    _mm512_mask_storeu_ps(d + s0, bit_range(0, pc->len - s0), _mm512_setzero_ps());
            } else if (p->stride_cols == 1) {
                /* valid s: 0 <= c0 + s < in_cols; masked loads never touch the rest */
                const float *xs = xc + irow * p->in_cols + c0;
                int64_t lo = -c0, hi = p->in_cols - c0;
                for (int s0 = 0; s0 < pc->len; s0 += 16)
                    _mm512_mask_storeu_ps(d + s0, bit_range(0, pc->len - s0),
                                          _mm512_maskz_loadu_ps(bit_range(lo - s0, hi - s0), xs + s0));
            } else {
                const float *xr = xc + irow * p->in_cols;
                for (int s = 0; s < pc->len; s++) {
                    int64_t ic = c0 + (int64_t)s * p->stride_cols;
                    d[s] = ic >= 0 && ic < p->in_cols ? xr[ic] : 0.0f;
                }
            }
        }
        if (last_w < NR) {
            float *d = dst + (nc - 1) / NR * panel_len + r * NR;
            for (int s = last_w; s < NR; s++) d[s] = 0.0f;
        }
    }
}

TARGET void nn_pack_b_avx512(float *dst, const nn_b_source *src, int p0, int kc, int j0, int nc,
                             int64_t panel_len)
{
    if (src->conv)
        pack_conv(dst, src, p0, kc, j0, nc, panel_len);
    else
        pack_b(dst, src->b, src->ldb, src->trans, p0, kc, j0, nc, panel_len);
    if (panel_len > (int64_t)kc * NR)
        for (int jp = 0; jp < nc; jp += NR)
            memset(dst + jp / NR * panel_len + (int64_t)kc * NR, 0,
                   (size_t)(panel_len - (int64_t)kc * NR) * sizeof *dst);
}

TARGET static void gemm_core(int trans_a, int m, int n, int k, float alpha, const float *a,
                             int64_t lda, const nn_b_source *bs, float beta, const float *bias,
                             float *c, int64_t ldc, float *pack)
{
    if (m <= 0 || n <= 0) return;
    if (k <= 0 || alpha == 0.0f) {
        nn_gemm_no_products(m, n, beta, bias, c, ldc);
        return;
    }
    /* A row-major is read in place: packing it would cost as much as the
     * product when n is small, as in attention's scores x values. */
    float *bp = pack;                  /* (KC, NC) */
    float *ap = pack + KC * NC;        /* (MC, KC) */
    for (int j0 = 0; j0 < n; j0 += NC) {
        int nc = n - j0 < NC ? n - j0 : NC;
        for (int p0 = 0; p0 < k; p0 += KC) {
            int kc = k - p0 < KC ? k - p0 : KC;
            nn_pack_b_avx512(bp, bs, p0, kc, j0, nc, (int64_t)kc * NR);
            for (int i0 = 0; i0 < m; i0 += MC) {
                int mc = m - i0 < MC ? m - i0 : MC;
                if (trans_a) pack_a_transposed(ap, a, lda, i0, mc, p0, kc);
                for (int jp = 0; jp < nc; jp += NR) {
                    int nr = nc - jp < NR ? nc - jp : NR;
                    for (int ip = 0; ip < mc; ip += MR) {
                        int mr = mc - ip < MR ? mc - ip : MR;
                        float *ct = c + (int64_t)(i0 + ip) * ldc + j0 + jp;
                        const float *bt = bias ? bias + i0 + ip : NULL;
                        if (trans_a)
                            tile_packed(kc, ap + (int64_t)ip * kc, bp + (int64_t)jp * kc, ct, ldc,
                                        mr, nr, p0 == 0, alpha, beta, bt);
                        else
                            tile_rows(kc, a + (int64_t)(i0 + ip) * lda + p0, lda,
                                      bp + (int64_t)jp * kc, ct, ldc, mr, nr, p0 == 0, alpha,
                                      beta, bt);
                    }
                }
            }
        }
    }
}

TARGET static void sgemm_avx512(int trans_a, int trans_b, int m, int n, int k, float alpha,
                                const float *a, int64_t lda, const float *b, int64_t ldb,
                                float beta, float *c, int64_t ldc, float *pack)
{
    nn_b_source bs = {b, ldb, trans_b, NULL, 0};
    gemm_core(trans_a, m, n, k, alpha, a, lda, &bs, beta, NULL, c, ldc, pack);
}

/* y (c_out, n) = w (c_out, kdim) im2col(x)[:, q0 .. q0 + n) + bias, the
 * columns packed straight from x (no im2col buffer). */
TARGET static void conv_gemm_avx512(float *y, int64_t ldy, const float *w, const float *bias,
                                    const float *x, const nn_conv *p, int64_t q0, int n,
                                    int pointwise, float *pack)
{
    int kdim = p->c_in * p->k_rows * p->k_cols;
    nn_b_source bs = nn_conv_b_source(x, p, q0, pointwise);
    gemm_core(0, p->c_out, n, kdim, 1.0f, w, kdim, &bs, 0.0f, bias, y, ldy, pack);
}

/* ---- elementwise ------------------------------------------------------------- */

/* exp on 16 lanes, Cephes' expf polynomial after reduction by ln 2; about
 * 1 ulp on [-87, 88], clamped outside. */
TARGET static inline __m512 exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* GELU(x) = x/2 * erfc(-x/sqrt 2), erfc from Numerical Recipes' Chebyshev
 * fit (relative error < 1.2e-7 for z >= 0) and erfc(-z) = 2 - erfc(z), so
 * both tails keep their relative accuracy. */
TARGET static inline __m512 gelu16(__m512 x)
{
    __m512 z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(0.70710678118654752f));
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                             _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(0.17087277f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
    p = _mm512_fnmadd_ps(z, z, p);
    __m512 erfc = _mm512_mul_ps(t, exp16(p));
    __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ);
    erfc = _mm512_mask_sub_ps(erfc, pos, _mm512_set1_ps(2.0f), erfc);
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), erfc);
}

TARGET static void gelu_avx512(float *y, const float *x, int64_t n)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, gelu16(_mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, gelu16(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

TARGET static inline __m512 glu16(__m512 a, __m512 g)
{
    __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
    return _mm512_div_ps(a, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

TARGET static void glu_avx512(float *y, const float *a, const float *g, float s, int accumulate,
                              int64_t n)
{
    __m512 vs = _mm512_set1_ps(s);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = glu16(_mm512_loadu_ps(a + i), _mm512_loadu_ps(g + i));
        if (accumulate) v = _mm512_fmadd_ps(vs, v, _mm512_loadu_ps(y + i));
        _mm512_storeu_ps(y + i, v);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 v = glu16(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, g + i));
        if (accumulate) v = _mm512_fmadd_ps(vs, v, _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

TARGET static void softmax_avx512(float *x, int64_t n)
{
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    __mmask16 tail = (__mmask16)((1u << (n - i)) - 1);
    if (i < n) vmax = _mm512_mask_max_ps(vmax, tail, vmax, _mm512_maskz_loadu_ps(tail, x + i));
    __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(vmax)), sum = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
        _mm512_storeu_ps(x + i, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (i < n) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + i), vm));
        _mm512_mask_storeu_ps(x + i, tail, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(tail, e));
    }
    __m512 inv = _mm512_set1_ps((float)(1.0 / (double)_mm512_reduce_add_ps(sum)));
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    if (i < n) _mm512_mask_storeu_ps(x + i, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + i), inv));
}

TARGET static void moments_avx512(const float *x, int64_t n, double *sum, double *sum_squares)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = s0, q0 = s0, q1 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        s0 = _mm512_add_pd(s0, lo);
        s1 = _mm512_add_pd(s1, hi);
        q0 = _mm512_fmadd_pd(lo, lo, q0);
        q1 = _mm512_fmadd_pd(hi, hi, q1);
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    double q = _mm512_reduce_add_pd(_mm512_add_pd(q0, q1));
    for (; i < n; i++) {
        s += x[i];
        q += (double)x[i] * x[i];
    }
    *sum = s;
    *sum_squares = q;
}

TARGET static void affine_avx512(float *y, const float *x, float a, float b, int64_t n)
{
    __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(_mm512_loadu_ps(x + i), va, vb));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), va, vb));
    }
}

/* The elementwise loops below share one shape: 16 at a time, a masked tail. */
#define ELEMENTWISE(expr)                                                                     \
    int64_t i = 0;                                                                            \
    __mmask16 m = 0xffff;                                                                     \
    for (; i + 16 <= n; i += 16) {                                                            \
        expr;                                                                                 \
    }                                                                                         \
    if (i < n) {                                                                              \
        m = (__mmask16)((1u << (n - i)) - 1);                                                 \
        expr;                                                                                 \
    }

#define LD(p) _mm512_maskz_loadu_ps(m, (p) + i)
#define ST(p, v) _mm512_mask_storeu_ps((p) + i, m, (v))

TARGET static void affine_vec_avx512(float *y, const float *x, const float *a, const float *b,
                                     int64_t n)
{
    ELEMENTWISE(ST(y, _mm512_fmadd_ps(LD(x), LD(a), LD(b))))
}

TARGET static void axpy_avx512(float *y, const float *x, float s, int64_t n)
{
    __m512 vs = _mm512_set1_ps(s);
    ELEMENTWISE(ST(y, _mm512_fmadd_ps(vs, LD(x), LD(y))))
}

TARGET static void axpy_vec_avx512(float *y, const float *x, const float *s, int64_t n)
{
    ELEMENTWISE(ST(y, _mm512_fmadd_ps(LD(s), LD(x), LD(y))))
}

TARGET static void add_avx512(float *y, const float *a, const float *b, int64_t n)
{
    ELEMENTWISE(ST(y, _mm512_add_ps(LD(a), LD(b))))
}

#undef LD
#undef ST
#undef ELEMENTWISE

static const nn_vec_kernels vec_avx512 = {gelu_avx512,       glu_avx512,  softmax_avx512,
                                          moments_avx512,    affine_avx512, affine_vec_avx512,
                                          axpy_avx512,       axpy_vec_avx512, add_avx512};
static int have_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("fma");
}

nn_sgemm_fn nn_sgemm_avx512(void) { return have_avx512() ? sgemm_avx512 : NULL; }
nn_conv_gemm_fn nn_conv_gemm_avx512(void) { return have_avx512() ? conv_gemm_avx512 : NULL; }
const nn_vec_kernels *nn_vec_avx512(void) { return have_avx512() ? &vec_avx512 : NULL; }

#else
nn_sgemm_fn nn_sgemm_avx512(void) { return NULL; }
nn_conv_gemm_fn nn_conv_gemm_avx512(void) { return NULL; }
const nn_vec_kernels *nn_vec_avx512(void) { return NULL; }
#endif
