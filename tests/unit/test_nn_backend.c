/* The CPU backend's ops against plain double-precision loops written here
 * (matrix multiply with every transpose and odd sizes, convolutions of
 * every kind the model uses, transposed convolution, norms, activations,
 * softmax, attention), for every kernel this machine has (reference,
 * AVX-512, AMX, BLAS), and the same bits for 1 and 3 threads. */
#include "nn/backend.h"
#include "test.h"

#include <string.h>

static uint32_t rng = 12345;

static float frand(void)
{
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) / 16777216.0 * 2.0 - 1.0);
}

static float *random_array(int64_t n)
{
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = frand();
    return x;
}

/* ||got - want|| / ||want|| */
static double rel_error(const float *got, const double *want, int64_t n)
{
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += (got[i] - want[i]) * (got[i] - want[i]);
        s += want[i] * want[i];
    }
    return sqrt(e / (s > 0 ? s : 1e-300));
}

typedef struct {
    nn_gemm_kind kind;
    const char *name;
} kernel;

static const kernel kernels[] = {
    {NN_GEMM_REFERENCE, "reference"}, {NN_GEMM_AVX512, "avx512"}, {NN_GEMM_AMX, "amx"},
    {NN_GEMM_BLAS, "blas"}};

/* ---- gemm ------------------------------------------------------------------- */

static void test_gemm(nn_backend *be, const char *name)
{
    const int sizes[][3] = {{1, 1, 1},   {5, 7, 3},    {12, 32, 16},  {13, 33, 257},
                            {37, 65, 300}, {100, 1, 64}, {1, 100, 513}, {50, 800, 40}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int m = sizes[s][0], n = sizes[s][1], k = sizes[s][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int64_t lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
                float *a = random_array((ta ? k : m) * lda), *b = random_array((tb ? n : k) * ldb);
                float *c = random_array(m * ldc);
                double *want = calloc((size_t)m * n, sizeof *want);
                float alpha = 0.75f, beta = s % 2 ? 0.5f : 0.0f;
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        double acc = 0;
                        for (int p = 0; p < k; p++)
                            acc += (double)(ta ? a[p * lda + i] : a[i * lda + p]) *
                                   (tb ? b[j * ldb + p] : b[p * ldb + j]);
                        want[i * n + j] = alpha * acc + (beta != 0 ? beta * c[i * ldc + j] : 0);
                    }
                if (beta == 0)
                    for (int64_t i = 0; i < m * ldc; i++) c[i] = NAN; /* must be ignored */
                be->gemm(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
                float *packed = malloc((size_t)m * n * sizeof *packed);
                for (int i = 0; i < m; i++) memcpy(packed + i * n, c + i * ldc, (size_t)n * sizeof *c);
                double e = rel_error(packed, want, (int64_t)m * n);
                CHECK(e < 1e-5, "%s gemm %dx%dx%d ta%d tb%d: relative error %g", name, m, n, k, ta,
                      tb, e);
                free(a);
                free(b);
                free(c);
                free(want);
                free(packed);
            }
    }
}

/* ---- convolutions --------------------------------------------------------------- */

static void naive_conv(double *y, const float *x, const float *w, const float *bias,
                       const nn_conv *p)
{
    for (int co = 0; co < p->c_out; co++)
        for (int r = 0; r < p->out_rows; r++)
            for (int c = 0; c < p->out_cols; c++) {
                double acc = bias ? bias[co] : 0;
                for (int ci = 0; ci < p->c_in; ci++)
                    for (int i = 0; i < p->k_rows; i++)
                        for (int j = 0; j < p->k_cols; j++) {
                            int ir = r * p->stride_rows - p->pad_rows + i * p->dil_rows;
                            int ic = c * p->stride_cols - p->pad_cols + j * p->dil_cols;
                            if (ir < 0 || ir >= p->in_rows || ic < 0 || ic >= p->in_cols) continue;
                            acc += (double)w[((co * p->c_in + ci) * p->k_rows + i) * p->k_cols + j] *
                                   x[ci * p->x_cstride + (int64_t)ir * p->in_cols + ic];
                        }
                y[(int64_t)co * p->out_rows * p->out_cols + (int64_t)r * p->out_cols + c] = acc;
            }
}

static void test_conv(nn_backend *be, const char *name)
{
    /* c_in, c_out, in_rows, in_cols, out_rows, out_cols, k_rows, k_cols,
     * stride_rows, stride_cols, pad_rows, pad_cols, dil_rows, dil_cols */
    const int cases[][14] = {
        {2, 8, 1, 1001, 1, 251, 1, 8, 1, 4, 0, 2, 1, 1},   /* time encoder, right-padded */
        {4, 8, 64, 44, 16, 44, 8, 1, 4, 1, 2, 0, 1, 1},    /* frequency encoder */
        {8, 16, 9, 37, 9, 37, 3, 3, 1, 1, 1, 1, 1, 1},     /* decoder rewrite 3x3 */
        {8, 1, 5, 44, 5, 44, 1, 3, 1, 1, 0, 2, 1, 2},      /* DConv, dilation 2 */
        {6, 13, 3, 50, 3, 50, 1, 1, 1, 1, 0, 0, 1, 1},     /* pointwise */
        {16, 24, 1, 300, 1, 300, 1, 3, 1, 1, 0, 1, 1, 1},  /* time decoder rewrite */
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const int *v = cases[t];
        nn_conv p = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11],
                     v[12], v[13], 0, 0};
        int64_t in_n = (int64_t)p.in_rows * p.in_cols, out_n = (int64_t)p.out_rows * p.out_cols;
        p.x_cstride = in_n + 7; /* a slice of a larger map */
        float *x = random_array(p.c_in * p.x_cstride);
        float *w = random_array((int64_t)p.c_out * p.c_in * p.k_rows * p.k_cols);
        float *bias = random_array(p.c_out);
        double *want = malloc((size_t)p.c_out * out_n * sizeof *want);
        naive_conv(want, x, w, bias, &p);
        /* The whole map, then a range of positions into a strided output. */
        size_t work_len = nn_conv_min_work(&p, be->n_threads) + 1000;
        float *work = malloc(work_len * sizeof *work);
        p.y_cstride = out_n;
        float *y = malloc((size_t)p.c_out * out_n * sizeof *y);
        be->conv(be, y, x, w, bias, &p, 0, out_n, work, work_len);
        double e = rel_error(y, want, p.c_out * out_n);
        CHECK(e < 1e-5, "%s conv case %zu: relative error %g", name, t, e);
        int64_t b0 = out_n / 3, b1 = out_n - out_n / 5;
        p.y_cstride = b1 - b0 + 3;
        float *part = malloc((size_t)p.c_out * p.y_cstride * sizeof *part);
        be->conv(be, part, x, w, bias, &p, b0, b1, work, work_len);
        double worst = 0;
        for (int co = 0; co < p.c_out; co++)
            for (int64_t q = b0; q < b1; q++)
                worst = fmax(worst, fabs(part[co * p.y_cstride + q - b0] - want[co * out_n + q]));
        CHECK(worst < 1e-4, "%s conv case %zu, positions [%lld, %lld): largest error %g", name,
              t, (long long)b0, (long long)b1, worst);
        free(x);
        free(w);
        free(bias);
        free(want);
        free(work);
        free(y);
        free(part);
    }
}

static void test_conv_transpose(nn_backend *be, const char *name)
{
    /* c_in, c_out, n_in, n_out, inner, kernel, stride, crop */
    const int cases[][8] = {{8, 4, 16, 64, 11, 8, 4, 2}, {6, 3, 253, 1001, 1, 8, 4, 2},
                            {5, 2, 7, 20, 3, 4, 2, 1}};
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        const int *v = cases[t];
        nn_conv_transpose p = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], 0, 0};
        p.x_cstride = (int64_t)p.n_in * p.inner;
        p.y_cstride = (int64_t)p.n_out * p.inner;
        float *x = random_array(p.c_in * p.x_cstride);
        float *w = random_array((int64_t)p.c_in * p.c_out * p.kernel);
        float *bias = random_array(p.c_out);
        double *want = calloc((size_t)p.c_out * p.y_cstride, sizeof *want);
        for (int co = 0; co < p.c_out; co++)
            for (int o = 0; o < p.n_out; o++)
                for (int t2 = 0; t2 < p.inner; t2++) {
                    double acc = bias[co];
                    for (int ci = 0; ci < p.c_in; ci++)
                        for (int i = 0; i < p.n_in; i++) {
                            int k = o + p.crop - i * p.stride;
                            if (k < 0 || k >= p.kernel) continue;
                            acc += (double)w[(ci * p.c_out + co) * p.kernel + k] *
                                   x[ci * p.x_cstride + (int64_t)i * p.inner + t2];
                        }
                    want[co * p.y_cstride + (int64_t)o * p.inner + t2] = acc;
                }
        size_t work_len = nn_conv_transpose_min_work(&p, be->n_threads);
        float *work = malloc(work_len * sizeof *work);
        float *y = malloc((size_t)p.c_out * p.y_cstride * sizeof *y);
        be->conv_transpose(be, y, x, w, bias, &p, work, work_len);
        double e = rel_error(y, want, p.c_out * p.y_cstride);
        CHECK(e < 1e-5, "%s conv_transpose case %zu: relative error %g", name, t, e);
        free(x);
        free(w);
        free(bias);
        free(want);
        free(work);
        free(y);
    }
}

/* ---- norms, activations, attention ------------------------------------------------ */

static void test_norms(nn_backend *be, const char *name)
{
    /* GroupNorm over (items, channels, len) in the three strides the model uses. */
    const int items = 3, channels = 5, len = 70;
    float *x = random_array(items * channels * len), *w = random_array(channels);
    float *b = random_array(channels), *y = malloc((size_t)items * channels * len * sizeof *y);
    double *want = malloc((size_t)items * channels * len * sizeof *want);
    for (int layout = 0; layout < 3; layout++) {
        /* 0: (item, c, t); 1: (c, item, t) as DConv rows; 2: (t, c) tokens, one item */
        int it_n = layout == 2 ? 1 : items, t_n = layout == 2 ? items * len : len;
        int64_t is = layout == 0 ? (int64_t)channels * len : layout == 1 ? len : 0;
        int64_t cs = layout == 0 ? len : layout == 1 ? (int64_t)items * len : 1;
        int64_t ts = layout == 2 ? channels : 1;
        for (int it = 0; it < it_n; it++) {
            double s = 0, s2 = 0, n = (double)channels * t_n;
            for (int c = 0; c < channels; c++)
                for (int t = 0; t < t_n; t++) {
                    double v = x[it * is + c * cs + t * ts];
                    s += v;
                    s2 += v * v;
                }
            double mean = s / n, rstd = 1.0 / sqrt(s2 / n - mean * mean + 1e-5);
            for (int c = 0; c < channels; c++)
                for (int t = 0; t < t_n; t++) {
                    int64_t o = it * is + c * cs + t * ts;
                    want[o] = (x[o] - mean) * rstd * w[c] + b[c];
                }
        }
        be->group_norm(be, y, x, w, b, it_n, channels, t_n, is, cs, ts, 1e-5f);
        double e = rel_error(y, want, items * channels * len);
        CHECK(e < 1e-6, "%s group_norm layout %d: relative error %g", name, layout, e);
    }
    /* LayerNorm over rows of 40 */
    const int rows = 7 * 5, dim = 30;
    float *lw = random_array(dim), *lb = random_array(dim);
    for (int r = 0; r < rows; r++) {
        double s = 0, s2 = 0;
        for (int i = 0; i < dim; i++) {
            s += x[r * dim + i];
            s2 += (double)x[r * dim + i] * x[r * dim + i];
        }
        double mean = s / dim, rstd = 1.0 / sqrt(s2 / dim - mean * mean + 1e-5);
        for (int i = 0; i < dim; i++) want[r * dim + i] = (x[r * dim + i] - mean) * rstd * lw[i] + lb[i];
    }
    be->layer_norm(be, y, x, lw, lb, rows, dim, 1e-5f);
    double e = rel_error(y, want, rows * dim);
    CHECK(e < 1e-6, "%s layer_norm: relative error %g", name, e);
    free(x);
    free(w);
    free(b);
    free(y);
    free(want);
    free(lw);
    free(lb);
}

static void test_activations(nn_backend *be, const char *name)
{
    const int n = 100003;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    for (int i = 0; i < n; i++) x[i] = -12.0f + 24.0f * i / (n - 1); /* both tails */
    be->gelu(be, y, x, n);
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double want = 0.5 * x[i] * erfc(-x[i] / sqrt(2.0));
        worst = fmax(worst, fabs(y[i] - want) / fmax(fabs(want), 1.0));
    }
    /* torch's own form, x/2 (1 + erf), is good to about 1e-7 absolute in the
     * negative tail; so is the reference, which uses it */
    CHECK(worst < 1e-6, "%s gelu: largest error %g", name, worst);

    /* GLU with and without the LayerScale'd accumulate, strided channels */
    const int ch = 3, len = 1000;
    float *g = random_array(2 * ch * (len + 5)), *acc = random_array(ch * (len + 2));
    float *acc0 = malloc(ch * (len + 2) * sizeof *acc0), scale[3] = {0.5f, -2.0f, 0.25f};
    for (int i = 0; i < 2 * ch * (len + 5); i++) g[i] *= 20.0f;
    memcpy(acc0, acc, ch * (len + 2) * sizeof *acc0);
    be->glu(be, acc, g, scale, ch, len, len + 5, len + 2);
    worst = 0;
    for (int c = 0; c < ch; c++)
        for (int t = 0; t < len; t++) {
            double a = g[c * (len + 5) + t], gate = g[(c + ch) * (len + 5) + t];
            double want = acc0[c * (len + 2) + t] + scale[c] * a / (1.0 + exp(-gate));
            worst = fmax(worst, fabs(acc[c * (len + 2) + t] - want));
        }
    CHECK(worst < 1e-5, "%s glu: largest error %g", name, worst);

    /* softmax rows, with large spreads (the tails underflow) */
    const int rows = 4, cols = 333;
    float *s = random_array(rows * cols);
    double *want = malloc(rows * cols * sizeof *want);
    for (int i = 0; i < rows * cols; i++) s[i] *= 60.0f;
    for (int r = 0; r < rows; r++) {
        double mx = -1e300, sum = 0;
        for (int i = 0; i < cols; i++) mx = fmax(mx, s[r * cols + i]);
        for (int i = 0; i < cols; i++) sum += exp(s[r * cols + i] - mx);
        for (int i = 0; i < cols; i++) want[r * cols + i] = exp(s[r * cols + i] - mx) / sum;
    }
    be->softmax(be, s, rows, cols);
    double e = rel_error(s, want, rows * cols);
    CHECK(e < 1e-6, "%s softmax: relative error %g", name, e);
    free(x);
    free(y);
    free(g);
    free(acc);
    free(acc0);
    free(s);
    free(want);
}

static void test_attention(nn_backend *be, const char *name)
{
    const int nq = 70, nk = 45, heads = 3, hd = 8, d = heads * hd;
    const int64_t ldq = 3 * d, ldk = 2 * d, ldo = d + 1;
    float *q = random_array(nq * ldq), *kv = random_array(nk * ldk);
    float *out = malloc(nq * ldo * sizeof *out);
    double *want = calloc(nq * ldo, sizeof *want);
    double *score = malloc(nk * sizeof *score);
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < nq; i++) {
            double mx = -1e300, sum = 0;
            for (int j = 0; j < nk; j++) {
                double acc = 0;
                for (int c = 0; c < hd; c++)
                    acc += (double)q[i * ldq + h * hd + c] * kv[j * ldk + h * hd + c];
                score[j] = acc / sqrt((double)hd);
                mx = fmax(mx, score[j]);
            }
            for (int j = 0; j < nk; j++) sum += score[j] = exp(score[j] - mx);
            for (int c = 0; c < hd; c++) {
                double acc = 0;
                for (int j = 0; j < nk; j++) acc += score[j] / sum * kv[j * ldk + d + h * hd + c];
                want[i * ldo + h * hd + c] = acc;
            }
        }
    size_t work_len = nn_attention_min_work(nk, be->n_threads);
    float *work = malloc(work_len * sizeof *work);
    be->attention(be, out, q, kv, kv + d, nq, nk, heads, hd, ldq, ldk, ldk, ldo, work, work_len);
    double worst = 0;
    for (int i = 0; i < nq; i++)
        for (int c = 0; c < d; c++) worst = fmax(worst, fabs(out[i * ldo + c] - want[i * ldo + c]));
    CHECK(worst < 1e-5, "%s attention: largest error %g", name, worst);
    free(q);
    free(kv);
    free(out);
    free(want);
    free(score);
    free(work);
}

static void test_elementwise(nn_backend *be, const char *name)
{
    const int n = 70001;
    float *a = random_array(n), *b = random_array(n), *y = malloc(n * sizeof *y);
    be->add(be, y, a, b, n);
    int ok = 1;
    for (int i = 0; i < n; i++) ok &= y[i] == a[i] + b[i];
    CHECK(ok, "%s add", name);
    /* per-channel scale, channels along the last axis (tokens) */
    float scale[7];
    for (int c = 0; c < 7; c++) scale[c] = (float)c - 3.0f;
    memcpy(y, a, n * sizeof *y);
    be->add_scaled(be, y, b, scale, 7, n / 7, 1, 7);
    double worst = 0;
    for (int i = 0; i < n / 7 * 7; i++)
        worst = fmax(worst, fabs(y[i] - (a[i] + (double)scale[i % 7] * b[i])));
    CHECK(worst < 1e-6, "%s add_scaled: largest error %g", name, worst); /* fused or not */
    free(a);
    free(b);
    free(y);
}

/* ---- the same bits whatever the thread count ----------------------------------- */

static void model_like_ops(nn_backend *be, float *out)
{
    rng = 777;
    /* a linear layer, a conv of each kind, attention: results concatenated */
    int m = 300, n = 250, k = 130;
    float *a = random_array(m * k), *b = random_array(n * k);
    be->gemm(be, 0, 1, m, n, k, 1.0f, a, k, b, k, 0.0f, out, n);
    out += m * n;
    nn_conv p = {8, 16, 9, 37, 9, 37, 3, 3, 1, 1, 1, 1, 1, 1, 9 * 37, 9 * 37};
    float *x = random_array(8 * 9 * 37), *w = random_array(16 * 8 * 9), *bias = random_array(16);
    size_t work_len = nn_conv_min_work(&p, be->n_threads) * 4;
    float *work = malloc(work_len * sizeof *work);
    be->conv(be, out, x, w, bias, &p, 0, 9 * 37, work, work_len);
    out += 16 * 9 * 37;
    nn_conv_transpose tr = {8, 4, 37, 144, 9, 8, 4, 2, 37 * 9, 144 * 9};
    size_t tr_len = nn_conv_transpose_min_work(&tr, be->n_threads);
    float *tr_work = malloc(tr_len * sizeof *tr_work);
    be->conv_transpose(be, out, x, w, bias, &tr, tr_work, tr_len);
    out += 4 * 144 * 9;
    size_t at_len = nn_attention_min_work(n, be->n_threads);
    float *at_work = malloc(at_len * sizeof *at_work);
    be->attention(be, out, a, b, b + 64, m, n / 2, 2, 32, k, k, k, 64, at_work, at_len);
    free(a);
    free(b);
    free(x);
    free(w);
    free(bias);
    free(work);
    free(tr_work);
    free(at_work);
}

static void test_thread_count(nn_gemm_kind kind, const char *name)
{
    const size_t n = 300 * 250 + 16 * 9 * 37 + 4 * 144 * 9 + 300 * 64;
    float *out[2];
    int threads[2] = {1, 3};
    for (int t = 0; t < 2; t++) {
        d2m_error err;
        nn_backend *be = nn_backend_cpu_new(threads[t], kind, &err);
        out[t] = calloc(n, sizeof(float));
        if (be) model_like_ops(be, out[t]);
        nn_backend_free(be);
    }
    CHECK(memcmp(out[0], out[1], n * sizeof(float)) == 0, "%s: 1 and 3 threads differ", name);
    free(out[0]);
    free(out[1]);
}

int main(void)
{
    for (size_t i = 0; i < sizeof kernels / sizeof kernels[0]; i++) {
        d2m_error err = {0};
        nn_backend *be = nn_backend_cpu_new(3, kernels[i].kind, &err);
        if (!be) {
            printf("test_nn_backend: %s kernel not here (%s)\n", kernels[i].name, err.message);
            continue;
        }
        CHECK(be->n_threads == 3, "thread count %d", be->n_threads);
        test_gemm(be, kernels[i].name);
        test_conv(be, kernels[i].name);
        test_conv_transpose(be, kernels[i].name);
        test_norms(be, kernels[i].name);
        test_activations(be, kernels[i].name);
        test_attention(be, kernels[i].name);
        test_elementwise(be, kernels[i].name);
        nn_backend_free(be);
        if (kernels[i].kind != NN_GEMM_BLAS) /* a BLAS picks kernels by shape */
            test_thread_count(kernels[i].kind, kernels[i].name);
    }
    nn_backend_free(NULL);
    return test_summary("test_nn_backend");
}
