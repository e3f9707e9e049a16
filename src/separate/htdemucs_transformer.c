/* The HTDemucs cross-domain transformer (upstream demucs/transformer.py
 * CrossTransformerEncoder with the released settings: sinusoidal position
 * embeddings, LayerNorm on the input, pre-norm layers with LayerScale,
 * GELU feed-forward, and a GroupNorm(1, D) over the whole sequence after
 * each layer). Layers alternate self-attention and cross-attention between
 * the spectral and the waveform tokens.
 *
 * Layout: tokens are (N, D) rows; frequency token n = t * F + f of the
 * (D, F, frames) map, time token t of the (D, T) map. Scratch, in floats:
 *   [ x (Nf,D) | x' (Nf,D) | xt (Nt,D) | norm a (N,D) | norm b (N,D) |
 *     qkv (N,3D) | attention out (N,D) | hidden (N,H) | attention work ]
 * with N the larger token count.
 *
 * The embeddings are computed once, in float32 with the same operations as
 * torch so they match the reference to rounding.
 *
 * Threading: inside the backend's ops.
 */
#include "htdemucs_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int64_t tokens_freq(const htdemucs *m) { return (int64_t)m->freqs[m->depth] * m->frames; }
static int64_t tokens_time(const htdemucs *m) { return m->tlen[m->depth]; }
static int64_t tokens_max(const htdemucs *m)
{
    int64_t a = tokens_freq(m), b = tokens_time(m);
    return a > b ? a : b;
}

size_t ht_transformer_scratch(const htdemucs *m)
{
    size_t d = (size_t)m->dim, nf = (size_t)tokens_freq(m), nt = (size_t)tokens_time(m);
    size_t n = (size_t)tokens_max(m);
    return 2 * nf * d + nt * d + 2 * n * d + 3 * n * d + n * d + n * (size_t)m->hidden +
           m->attn_work;
}

int ht_transformer_init(htdemucs *m)
{
    int d = m->dim, half = d / 2, f_n = m->freqs[m->depth], t_n = m->frames;
    int64_t nt = tokens_time(m);
    m->pos_freq = malloc((size_t)tokens_freq(m) * d * sizeof(float));
    m->pos_time = malloc((size_t)nt * d * sizeof(float));
    if (!m->pos_freq || !m->pos_time) return D2M_ERR_NOMEM;
    /* 2-D: the first half of the channels encode the frame t, the second
     * half the frequency row f, each as interleaved sin/cos pairs with
     * div_i = exp(2i * -(ln(10000) / half)). */
    float neg_log = -(logf(10000.0f) / (float)half);
    for (int t = 0; t < t_n; t++)
        for (int f = 0; f < f_n; f++) {
            float *p = m->pos_freq + ((int64_t)t * f_n + f) * d;
            for (int i = 0; 2 * i < half; i++) {
                float div = expf((float)(2 * i) * neg_log);
                p[2 * i] = sinf((float)t * div);
                p[2 * i + 1] = cosf((float)t * div);
                p[half + 2 * i] = sinf((float)f * div);
                p[half + 2 * i + 1] = cosf((float)f * div);
            }
        }
    /* 1-D: cos of t / 10000^(j / (half - 1)) in the first half, sin in the
     * second. */
    for (int64_t t = 0; t < nt; t++) {
        float *p = m->pos_time + t * d;
        for (int j = 0; j < half; j++) {
            float phase = (float)t / powf(10000.0f, (float)j / (float)(half - 1));
            p[j] = cosf(phase);
            p[half + j] = sinf(phase);
        }
    }
    return 0;
}

typedef struct {
    float *a, *b;      /* (N, D) normalised copies */
    float *qkv;        /* (N, 3D) */
    float *att;        /* (N, D) */
    float *hidden;     /* (N, H) */
    float *work;       /* attention scores */
} tbuf;

/* out (rows, dout) = in (rows, din) w^T + b */
static void linear(nn_backend *be, float *out, const float *in, const float *w, const float *b,
                   int64_t rows, int dout, int din)
{
    for (int64_t r = 0; r < rows; r++) memcpy(out + r * dout, b, (size_t)dout * sizeof(float));
    be->gemm(be, 0, 1, (int)rows, dout, din, 1.0f, in, din, w, din, 1.0f, out, dout);
}

/* Between (D, rows, cols) maps and (cols * rows, D) token rows, token
 * t * rows + r holding column t of row r; one task per block of tokens. */
typedef struct {
    float *tokens, *map;
    int d, rows, cols, to_tokens;
} permute_job;

enum { PERMUTE_TASKS = 32 };

static void permute_task(void *ctx, int task, int thread)
{
    permute_job *p = ctx;
    int64_t n = (int64_t)p->rows * p->cols;
    int64_t n0 = n * task / PERMUTE_TASKS, n1 = n * (task + 1) / PERMUTE_TASKS;
    for (int64_t k = n0; k < n1; k++) {
        int64_t t = k / p->rows, r = k % p->rows, at = (int64_t)r * p->cols + t;
        float *tok = p->tokens + k * p->d;
        if (p->to_tokens)
            for (int c = 0; c < p->d; c++) tok[c] = p->map[c * n + at];
        else
            for (int c = 0; c < p->d; c++) p->map[c * n + at] = tok[c];
    }
}

static void permute(htdemucs *m, float *tokens, float *map, int rows, int cols, int to_tokens)
{
    permute_job p = {tokens, map, m->dim, rows, cols, to_tokens};
    m->be->parallel(m->be, permute_task, &p, PERMUTE_TASKS);
}

/* x (n, D) += gamma2 * FFN(LN(x)), then the whole-sequence GroupNorm. */
static void feed_forward_and_norm(htdemucs *m, const ht_tlayer *l, float *x, int64_t n,
                                  const float *ln_w, const float *ln_b, tbuf *b)
{
    nn_backend *be = m->be;
    int d = m->dim;
    be->layer_norm(be, b->a, x, ln_w, ln_b, n, d, 1e-5f);
    linear(be, b->hidden, b->a, l->linear1_w, l->linear1_b, n, m->hidden, d);
    be->gelu(be, b->hidden, b->hidden, n * m->hidden);
    linear(be, b->att, b->hidden, l->linear2_w, l->linear2_b, n, d, m->hidden);
    be->add_scaled(be, x, b->att, l->gamma2, d, n, 1, d);
    be->group_norm(be, x, x, l->norm_out_w, l->norm_out_b, 1, d, n, 0, 1, d, 1e-5f);
}

static void self_layer(htdemucs *m, const ht_tlayer *l, float *x, int64_t n, tbuf *b)
{
    nn_backend *be = m->be;
    int d = m->dim, hd = d / m->heads;
    be->layer_norm(be, b->a, x, l->norm1_w, l->norm1_b, n, d, 1e-5f);
    linear(be, b->qkv, b->a, l->in_proj_w, l->in_proj_b, n, 3 * d, d);
    be->attention(be, b->att, b->qkv, b->qkv + d, b->qkv + 2 * d, (int)n, (int)n, m->heads, hd,
                  3 * d, 3 * d, 3 * d, d, b->work, m->attn_work);
    linear(be, b->a, b->att, l->out_proj_w, l->out_proj_b, n, d, d);
    be->add_scaled(be, x, b->a, l->gamma1, d, n, 1, d);
    feed_forward_and_norm(m, l, x, n, l->norm2_w, l->norm2_b, b);
}

/* out (n, D) = layer(x (n, D) attending to src (ns, D)); out may be x. */
static void cross_layer(htdemucs *m, const ht_tlayer *l, float *out, const float *x, int64_t n,
                        const float *src, int64_t ns, tbuf *b)
{
    nn_backend *be = m->be;
    int d = m->dim, hd = d / m->heads;
    float *q = b->qkv, *kv = b->qkv + n * d; /* (n, D), (ns, 2D) */
    be->layer_norm(be, b->a, x, l->norm1_w, l->norm1_b, n, d, 1e-5f);
    be->layer_norm(be, b->b, src, l->norm2_w, l->norm2_b, ns, d, 1e-5f);
    linear(be, q, b->a, l->in_proj_w, l->in_proj_b, n, d, d);
    linear(be, kv, b->b, l->in_proj_w + (size_t)d * d, l->in_proj_b + d, ns, 2 * d, d);
    be->attention(be, b->att, q, kv, kv + d, (int)n, (int)ns, m->heads, hd, d, 2 * d, 2 * d, d,
                  b->work, m->attn_work);
    linear(be, b->a, b->att, l->out_proj_w, l->out_proj_b, n, d, d);
    if (out != x) memcpy(out, x, (size_t)n * d * sizeof(float));
    be->add_scaled(be, out, b->a, l->gamma1, d, n, 1, d);
    feed_forward_and_norm(m, l, out, n, l->norm3_w, l->norm3_b, b);
}

void ht_transformer(htdemucs *m, float *x, float *xt, float *scratch)
{
    nn_backend *be = m->be;
    int d = m->dim, f_n = m->freqs[m->depth], t_n = m->frames;
    int64_t nf = tokens_freq(m), nt = tokens_time(m), n = tokens_max(m);
    float *tf = scratch, *tf2 = tf + nf * d, *tt = tf2 + nf * d;
    tbuf b;
    b.a = tt + nt * d;
    b.b = b.a + n * d;
    b.qkv = b.b + n * d;
    b.att = b.qkv + 3 * n * d;
    b.hidden = b.att + n * d;
    b.work = b.hidden + n * m->hidden;

    /* (D, F, T) -> tokens (T*F, D); (D, T) -> (T, D). */
    permute(m, tf, x, f_n, t_n, 1);
    permute(m, tt, xt, 1, (int)nt, 1);
    ht_capture(m, "16_ct_pos_freq", m->pos_freq, 3, (int64_t)1, nf, (int64_t)d);
    ht_capture(m, "17_ct_pos_time", m->pos_time, 3, (int64_t)1, nt, (int64_t)d);
    be->layer_norm(be, tf, tf, m->norm_in_w, m->norm_in_b, nf, d, 1e-5f);
    be->add(be, tf, tf, m->pos_freq, nf * d);
    be->layer_norm(be, tt, tt, m->norm_in_t_w, m->norm_in_t_b, nt, d, 1e-5f);
    be->add(be, tt, tt, m->pos_time, nt * d);
    ht_capture(m, "18_ct_tok_freq", tf, 3, (int64_t)1, nf, (int64_t)d);
    ht_capture(m, "19_ct_tok_time", tt, 3, (int64_t)1, nt, (int64_t)d);

    for (int i = 0; i < m->t_layers; i++) {
        if (!m->layers[i].cross) {
            self_layer(m, &m->layers[i], tf, nf, &b);
            self_layer(m, &m->layers_t[i], tt, nt, &b);
        } else {
            /* Both branches read the other's input to this layer. */
            cross_layer(m, &m->layers[i], tf2, tf, nf, tt, nt, &b);
            cross_layer(m, &m->layers_t[i], tt, tt, nt, tf, nf, &b);
            float *swap = tf;
            tf = tf2;
            tf2 = swap;
        }
        if (i == 0) {
            ht_capture(m, "20_ct_l0_freq", tf, 3, (int64_t)1, nf, (int64_t)d);
            ht_capture(m, "21_ct_l0_time", tt, 3, (int64_t)1, nt, (int64_t)d);
        }
    }

    permute(m, tf, x, f_n, t_n, 0);
    permute(m, tt, xt, 1, (int)nt, 0);
}
