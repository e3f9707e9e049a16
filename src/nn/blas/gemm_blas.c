/* The CPU backend's matrix multiply through a CBLAS library. Only this
 * folder sees BLAS. The backend calls it from its own worker threads, one
 * block of C per thread, so the library must run single-threaded: link a
 * serial build (Debian: libblis-serial-dev, or libopenblas-serial-dev).
 * Built without D2M_HAVE_CBLAS, the backend simply has no BLAS kernel. */
#include "nn/cpu/cpu.h"

#ifdef D2M_HAVE_CBLAS
/* The standard CBLAS entry point, declared here rather than through a
 * vendor's cblas.h (BLIS's defines unused static functions that -Werror
 * rejects); the enum values are fixed by the CBLAS standard. */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
void cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

static void sgemm_cblas(int trans_a, int trans_b, int m, int n, int k, float alpha,
                        const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                        float *c, int64_t ldc, float *pack)
{
    (void)pack;
    cblas_sgemm(CBLAS_ROW_MAJOR, trans_a ? CBLAS_TRANS : CBLAS_NO_TRANS,
                trans_b ? CBLAS_TRANS : CBLAS_NO_TRANS, m, n, k, alpha, a, (int)lda, b, (int)ldb,
                beta, c, (int)ldc);
}

nn_sgemm_fn nn_sgemm_blas(void) { return sgemm_cblas; }
#else
nn_sgemm_fn nn_sgemm_blas(void) { return NULL; }
#endif
