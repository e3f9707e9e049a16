/* Reference elementwise kernels: libm's erf and exp, one value at a time.
 * The vectorised kernels are tested against these. */
#include "cpu.h"

#include <math.h>

static void gelu_ref(float *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
    }
}

static void glu_ref(float *y, const float *a, const float *g, float s, int accumulate, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float v = a[i] * (1.0f / (1.0f + expf(-g[i])));
        y[i] = accumulate ? y[i] + s * v : v;
    }
}

static void softmax_ref(float *x, int64_t n)
{
    float max = -INFINITY;
    for (int64_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

static void moments_ref(const float *x, int64_t n, double *sum, double *sum_squares)
{
    double s = 0.0, s2 = 0.0;
    for (int64_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
    }
    *sum = s;
    *sum_squares = s2;
}

static void affine_ref(float *y, const float *x, float a, float b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * a + b;
}

static void affine_vec_ref(float *y, const float *x, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * a[i] + b[i];
}

static void axpy_ref(float *y, const float *x, float s, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] += s * x[i];
}

static void axpy_vec_ref(float *y, const float *x, const float *s, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] += s[i] * x[i];
}

static void add_ref(float *y, const float *a, const float *b, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

const nn_vec_kernels nn_vec_reference = {gelu_ref,       glu_ref,  softmax_ref,  moments_ref, affine_ref,
                                         affine_vec_ref, axpy_ref, axpy_vec_ref, add_ref};
