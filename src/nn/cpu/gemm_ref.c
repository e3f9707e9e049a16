/* The reference single-precision matrix multiply: plain C, row-major, one
 * thread. Every element of C is alpha times its dot product summed with p
 * ascending, plus beta * C, so results are reproducible; the fast kernels
 * are tested against it. Blocks of B are packed row-major (kc, nc) so the
 * inner loop runs along contiguous columns and the compiler can vectorise
 * it whatever the transposes. */
#include "cpu.h"

#include <string.h>

enum { KC = 256, NC = 128, MR = 4 };
_Static_assert(KC * NC + MR * NC <= NN_GEMM_PACK_FLOATS, "packs exceed the scratch");

void nn_sgemm_reference(int trans_a, int trans_b, int m, int n, int k, float alpha,
                        const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                        float *c, int64_t ldc, float *pack)
{
    /* C = beta * C first; the products are then accumulated onto it in
     * chunks of KC, each chunk's dot product summed in registers. */
    for (int i = 0; i < m; i++) {
        float *ci = c + (int64_t)i * ldc;
        if (beta == 0.0f)
            memset(ci, 0, (size_t)n * sizeof *ci);
        else if (beta != 1.0f)
            for (int j = 0; j < n; j++) ci[j] *= beta;
    }
    if (k == 0 || alpha == 0.0f) return;
    float *bp = pack;                  /* (KC, NC) */
    float *acc = pack + KC * NC;       /* (MR, NC) */
    for (int j0 = 0; j0 < n; j0 += NC) {
        int nc = n - j0 < NC ? n - j0 : NC;
        for (int p0 = 0; p0 < k; p0 += KC) {
            int kc = k - p0 < KC ? k - p0 : KC;
            for (int p = 0; p < kc; p++)
                for (int j = 0; j < nc; j++)
                    bp[p * NC + j] = trans_b ? b[(int64_t)(j0 + j) * ldb + p0 + p]
                                             : b[(int64_t)(p0 + p) * ldb + j0 + j];
            for (int i0 = 0; i0 < m; i0 += MR) {
                int mr = m - i0 < MR ? m - i0 : MR;
                memset(acc, 0, sizeof(float) * MR * NC);
                for (int p = 0; p < kc; p++) {
                    const float *brow = bp + p * NC;
                    for (int r = 0; r < mr; r++) {
                        float av = trans_a ? a[(int64_t)(p0 + p) * lda + i0 + r]
                                           : a[(int64_t)(i0 + r) * lda + p0 + p];
                        float *ar = acc + r * NC;
                        for (int j = 0; j < nc; j++) ar[j] += av * brow[j];
                    }
                }
                for (int r = 0; r < mr; r++) {
                    float *ci = c + (int64_t)(i0 + r) * ldc + j0;
                    const float *ar = acc + r * NC;
                    for (int j = 0; j < nc; j++) ci[j] += alpha * ar[j];
                }
            }
        }
    }
}
