/* HTDemucs encoder and decoder layers, both branches, with their DConv
 * residual branches (upstream demucs/hdemucs.py HEncLayer / HDecLayer and
 * demucs/demucs.py DConv, at the released settings: no GroupNorm in the
 * layers, DConv in every layer, encoder rewrite 1x1, decoder rewrite 3x3).
 *
 * Layout: frequency tensors (C, F, frames), time tensors (C, T). The
 * frequency branch's DConv runs on every frequency row on its own (PyTorch
 * folds F into the batch), so it is computed in blocks of rows, each block
 * small enough for the scratch; the 1x1 rewrite + GLU runs in blocks of
 * positions. Scratch layout of one layer call, in floats:
 *   [ layer temp | DConv hidden | DConv 2C block (budget) | conv work ]
 * where a block of rows holds 2C * rows * T <= budget, so its hidden part,
 * C/comp channels, fits budget / (2 comp).
 *
 * Threading: all parallelism is inside the backend's ops.
 */
#include "htdemucs_internal.h"

#include <string.h>

/* ---- DConv ------------------------------------------------------------------ */

static size_t hidden_floats(const htdemucs *m)
{
    return (m->dconv_budget / (2 * (size_t)m->dconv_comp) + 31) & ~(size_t)15;
}

static size_t dconv_scratch(const htdemucs *m)
{
    return hidden_floats(m) + m->dconv_budget + m->conv_work;
}

/* x (C, rows, T) with channel stride cstride, in place: both residual
 * branches, a block of rows at a time. */
static void dconv(htdemucs *m, float *x, const ht_dconv *layers, int c, int hidden, int rows,
                  int64_t t, int64_t cstride, float *scratch)
{
    nn_backend *be = m->be;
    float *hid = scratch;                        /* (hidden, block, T) */
    float *wide = scratch + hidden_floats(m);    /* (2C, block, T) */
    float *work = wide + m->dconv_budget;
    int64_t block = (int64_t)(m->dconv_budget / ((size_t)2 * c * t));
    if (block > rows) block = rows;
    for (int64_t r0 = 0; r0 < rows; r0 += block) {
        int nb = (int)(rows - r0 < block ? rows - r0 : block);
        float *xb = x + r0 * t;
        int64_t n = nb * t;
        for (int k = 0; k < 2; k++) {
            const ht_dconv *l = &layers[k];
            nn_conv c1 = {.c_in = c, .c_out = hidden, .in_rows = nb, .in_cols = (int)t,
                          .out_rows = nb, .out_cols = (int)t, .k_rows = 1, .k_cols = 3,
                          .stride_rows = 1, .stride_cols = 1, .pad_rows = 0,
                          .pad_cols = l->dilation, .dil_rows = 1, .dil_cols = l->dilation,
                          .x_cstride = cstride, .y_cstride = n};
            be->conv(be, hid, xb, l->conv1_w, l->conv1_b, &c1, 0, n, work, m->conv_work);
            be->group_norm(be, hid, hid, l->norm1_w, l->norm1_b, nb, hidden, t, t, n, 1, 1e-5f);
            be->gelu(be, hid, hid, (int64_t)hidden * n);
            nn_conv c2 = {.c_in = hidden, .c_out = 2 * c, .in_rows = nb, .in_cols = (int)t,
                          .out_rows = nb, .out_cols = (int)t, .k_rows = 1, .k_cols = 1,
                          .stride_rows = 1, .stride_cols = 1, .dil_rows = 1, .dil_cols = 1,
                          .x_cstride = n, .y_cstride = n};
            be->conv(be, wide, hid, l->conv2_w, l->conv2_b, &c2, 0, n, work, m->conv_work);
            be->group_norm(be, wide, wide, l->norm2_w, l->norm2_b, nb, 2 * c, t, t, n, 1, 1e-5f);
            be->glu(be, xb, wide, l->scale, c, n, n, cstride);
        }
    }
}

/* y (C, n) = GLU(rewrite(x)) for a conv whose output positions are n; in
 * blocks of positions through the DConv's wide buffer. */
static void conv_glu(htdemucs *m, float *y, const float *x, const float *w, const float *b,
                     const nn_conv *p, float *scratch)
{
    nn_backend *be = m->be;
    float *wide = scratch + hidden_floats(m);
    float *work = wide + m->dconv_budget;
    int64_t total = (int64_t)p->out_rows * p->out_cols;
    int64_t block = (int64_t)(m->dconv_budget / (size_t)p->c_out);
    nn_conv q = *p;
    for (int64_t p0 = 0; p0 < total; p0 += block) {
        int64_t n = total - p0 < block ? total - p0 : block;
        q.y_cstride = n;
        be->conv(be, wide, x, w, b, &q, p0, p0 + n, work, m->conv_work);
        be->glu(be, y + p0, wide, NULL, p->c_out / 2, n, n, total);
    }
}

/* ---- encoders ----------------------------------------------------------------- */

size_t ht_encoder_scratch(const htdemucs *m, int freq, int i)
{
    size_t temp = freq ? (size_t)m->chans[i] * m->freqs[i + 1] * m->frames
                       : (size_t)m->chans[i] * m->tlen[i + 1];
    return temp + dconv_scratch(m);
}

void ht_encode_freq(htdemucs *m, float *y, const float *x, int i, float *scratch)
{
    nn_backend *be = m->be;
    const ht_encoder *e = &m->enc[i];
    int fin = m->freqs[i], fout = m->freqs[i + 1], t = m->frames, c = e->c_out;
    int64_t n = (int64_t)fout * t;
    float *tmp = scratch, *rest = scratch + (size_t)c * n;
    float *work = rest + hidden_floats(m) + m->dconv_budget;
    /* Conv2d (K, 1), stride (S, 1), padding (K/4, 0), then GELU. */
    nn_conv conv = {.c_in = e->c_in, .c_out = c, .in_rows = fin, .in_cols = t, .out_rows = fout,
                    .out_cols = t, .k_rows = m->kernel, .k_cols = 1, .stride_rows = m->stride,
                    .stride_cols = 1, .pad_rows = m->kernel / 4, .pad_cols = 0, .dil_rows = 1,
                    .dil_cols = 1, .x_cstride = (int64_t)fin * t, .y_cstride = n};
    be->conv(be, tmp, x, e->conv_w, e->conv_b, &conv, 0, n, work, m->conv_work);
    be->gelu(be, tmp, tmp, (int64_t)c * n);
    dconv(m, tmp, e->dconv, c, e->hidden, fout, t, n, rest);
    nn_conv rw = {.c_in = c, .c_out = 2 * c, .in_rows = fout, .in_cols = t, .out_rows = fout,
                  .out_cols = t, .k_rows = 1, .k_cols = 1, .stride_rows = 1, .stride_cols = 1,
                  .dil_rows = 1, .dil_cols = 1, .x_cstride = n, .y_cstride = n};
    conv_glu(m, y, tmp, e->rewrite_w, e->rewrite_b, &rw, rest);
}

void ht_encode_time(htdemucs *m, float *y, const float *x, int i, float *scratch)
{
    nn_backend *be = m->be;
    const ht_encoder *e = &m->tenc[i];
    int64_t tin = m->tlen[i], tout = m->tlen[i + 1];
    int c = e->c_out;
    float *tmp = scratch, *rest = scratch + (size_t)c * tout;
    float *work = rest + hidden_floats(m) + m->dconv_budget;
    /* Right-padding to a multiple of the stride is the longer output: the
     * conv reads zeros past the input's end. */
    nn_conv conv = {.c_in = e->c_in, .c_out = c, .in_rows = 1, .in_cols = (int)tin, .out_rows = 1,
                    .out_cols = (int)tout, .k_rows = 1, .k_cols = m->kernel, .stride_rows = 1,
                    .stride_cols = m->stride, .pad_rows = 0, .pad_cols = m->kernel / 4,
                    .dil_rows = 1, .dil_cols = 1, .x_cstride = tin, .y_cstride = tout};
    be->conv(be, tmp, x, e->conv_w, e->conv_b, &conv, 0, tout, work, m->conv_work);
    be->gelu(be, tmp, tmp, (int64_t)c * tout);
    dconv(m, tmp, e->dconv, c, e->hidden, 1, tout, tout, rest);
    nn_conv rw = {.c_in = c, .c_out = 2 * c, .in_rows = 1, .in_cols = (int)tout, .out_rows = 1,
                  .out_cols = (int)tout, .k_rows = 1, .k_cols = 1, .stride_rows = 1,
                  .stride_cols = 1, .dil_rows = 1, .dil_cols = 1, .x_cstride = tout,
                  .y_cstride = tout};
    conv_glu(m, y, tmp, e->rewrite_w, e->rewrite_b, &rw, rest);
}

/* ---- decoders ------------------------------------------------------------------- */

size_t ht_decoder_scratch(const htdemucs *m, int freq, int idx)
{
    int level = m->depth - 1 - idx;
    size_t temp = freq ? (size_t)m->chans[level] * m->freqs[level + 1] * m->frames
                       : (size_t)m->chans[level] * m->tlen[level + 1];
    return temp + dconv_scratch(m);
}

void ht_decode_freq(htdemucs *m, float *y, float *x, const float *skip, int idx, float *scratch)
{
    nn_backend *be = m->be;
    const ht_decoder *d = &m->dec[idx];
    int level = m->depth - 1 - idx;
    int f = m->freqs[level + 1], t = m->frames, c = d->c_in;
    int64_t n = (int64_t)f * t;
    float *tmp = scratch, *rest = scratch + (size_t)c * n;
    float *work = rest + hidden_floats(m) + m->dconv_budget;
    be->add(be, x, x, skip, (int64_t)c * n);
    /* Rewrite: Conv2d 3x3, padding 1, C -> 2C, then GLU. */
    nn_conv rw = {.c_in = c, .c_out = 2 * c, .in_rows = f, .in_cols = t, .out_rows = f,
                  .out_cols = t, .k_rows = 3, .k_cols = 3, .stride_rows = 1, .stride_cols = 1,
                  .pad_rows = 1, .pad_cols = 1, .dil_rows = 1, .dil_cols = 1, .x_cstride = n,
                  .y_cstride = n};
    conv_glu(m, tmp, x, d->rewrite_w, d->rewrite_b, &rw, rest);
    dconv(m, tmp, d->dconv, c, d->hidden, f, t, n, rest);
    /* ConvTranspose2d (K, 1), stride (S, 1): F -> S*F + (K - S), crop K/4 each end. */
    nn_conv_transpose tr = {.c_in = c, .c_out = d->c_out, .n_in = f, .n_out = m->stride * f,
                            .inner = t, .kernel = m->kernel, .stride = m->stride,
                            .crop = m->kernel / 4, .x_cstride = n,
                            .y_cstride = (int64_t)m->stride * f * t};
    be->conv_transpose(be, y, tmp, d->conv_tr_w, d->conv_tr_b, &tr, work, m->conv_work);
    if (idx != m->depth - 1) be->gelu(be, y, y, (int64_t)d->c_out * m->stride * f * t);
}

void ht_decode_time(htdemucs *m, float *y, float *x, const float *skip, int idx, float *scratch)
{
    nn_backend *be = m->be;
    const ht_decoder *d = &m->tdec[idx];
    int level = m->depth - 1 - idx;
    int64_t t = m->tlen[level + 1], length = m->tlen[level];
    int c = d->c_in;
    float *tmp = scratch, *rest = scratch + (size_t)c * t;
    float *work = rest + hidden_floats(m) + m->dconv_budget;
    be->add(be, x, x, skip, (int64_t)c * t);
    nn_conv rw = {.c_in = c, .c_out = 2 * c, .in_rows = 1, .in_cols = (int)t, .out_rows = 1,
                  .out_cols = (int)t, .k_rows = 1, .k_cols = 3, .stride_rows = 1,
                  .stride_cols = 1, .pad_rows = 0, .pad_cols = 1, .dil_rows = 1, .dil_cols = 1,
                  .x_cstride = t, .y_cstride = t};
    conv_glu(m, tmp, x, d->rewrite_w, d->rewrite_b, &rw, rest);
    dconv(m, tmp, d->dconv, c, d->hidden, 1, t, t, rest);
    /* ConvTranspose1d (K, stride S): keep [K/4, K/4 + length), length = this
     * level's encoder input before its right pad. */
    nn_conv_transpose tr = {.c_in = c, .c_out = d->c_out, .n_in = (int)t, .n_out = (int)length,
                            .inner = 1, .kernel = m->kernel, .stride = m->stride,
                            .crop = m->kernel / 4, .x_cstride = t, .y_cstride = length};
    be->conv_transpose(be, y, tmp, d->conv_tr_w, d->conv_tr_b, &tr, work, m->conv_work);
    if (idx != m->depth - 1) be->gelu(be, y, y, (int64_t)d->c_out * length);
}
