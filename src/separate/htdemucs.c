/* The HTDemucs v4 engine: configuration, the weight table it expects, its
 * activation buffers, and the forward pass over one segment.
 *
 * Reference: upstream demucs/htdemucs.py HTDemucs.forward (demucs 4.1.0a2),
 * described step by step in ../shared/demucs/README.md, whose intermediate
 * tensors the tests compare against (see htdemucs_set_capture).
 *
 * Data flow for a segment of L samples (sizes for the released model):
 *   in (2, L) -> STFT -> CaC z (4, 2048, 336) -> normalise
 *   frequency encoders (48,512,336) (96,128,336) (192,32,336) (384,8,336)
 *   time encoders      (48,85995)   (96,21499)   (192,5375)   (384,1344)
 *   1x1 up to 512 -> cross transformer -> 1x1 down to 384
 *   decoders back up, with skips -> (16, 2048, 336) and (8, L)
 *   iSTFT of the first + the second -> out (4, 2, L)
 *
 * Memory: every buffer lives in one arena allocated at creation (and again
 * by the first pass after htdemucs_release_activations). The
 * encoder outputs (skips), the spectrogram and the normalised waveform
 * persist through the pass; one scratch region is reused by each stage in
 * turn (see layout()).
 *
 * Threading: the ops run on the backend's threads; one pass at a time.
 */
#include "htdemucs_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- configuration -------------------------------------------------------- */

static const char *const default_sources[4] = {"drums", "bass", "other", "vocals"};

/* The released htdemucs settings fill what the args leave at 0; w (may be
 * NULL) tells whether the optional frequency embedding and bottom
 * projections are there when the args do not say. */
static int configure(htdemucs *m, const d2m_model_args *a, const d2m_weights *w, d2m_error *err)
{
    d2m_model_args none;
    if (!a) {
        memset(&none, 0, sizeof none);
        a = &none;
    }
    m->sources = a->n_sources ? a->n_sources : 4;
    if (m->sources < 1 || m->sources > HT_MAX_SOURCES)
        return d2m_fail(err, D2M_ERR_FORMAT, "model with %d sources (1 to %d supported)",
                        m->sources, HT_MAX_SOURCES);
    for (int s = 0; s < m->sources; s++) {
        const char *name = a->sources[s][0] ? a->sources[s] : s < 4 ? default_sources[s] : "source";
        snprintf(m->names[s], sizeof m->names[s], "%s", name);
    }
    m->audio_channels = a->audio_channels ? a->audio_channels : 2;
    m->samplerate = a->samplerate ? a->samplerate : 44100;
    int channels = a->channels ? a->channels : 48;
    int growth = a->growth ? a->growth : 2;
    m->nfft = a->nfft ? a->nfft : 4096;
    m->depth = a->depth ? a->depth : 4;
    m->kernel = a->kernel_size ? a->kernel_size : 8;
    m->stride = a->stride ? a->stride : 4;
    m->dconv_comp = a->dconv_comp ? a->dconv_comp : 8;
    int dconv_depth = a->dconv_depth ? a->dconv_depth : 2;
    int context = a->context ? a->context : 1;
    int norm_starts = a->norm_starts ? a->norm_starts : 4;
    m->t_layers = a->t_layers ? a->t_layers : 5;
    m->cross_first = a->t_cross_first != 0;
    m->heads = a->t_heads ? a->t_heads : 8;
    double hidden_scale = a->t_hidden_scale > 0 ? a->t_hidden_scale : 4.0;
    double segment_s = a->segment_s > 0 ? a->segment_s : 7.8;
    const d2m_tensor *emb = w ? weights_get(w, "freq_emb.embedding.weight") : NULL;
    double freq_emb = a->freq_emb > 0 ? a->freq_emb : emb || !w ? 0.2 : 0.0;
    m->freq_emb_weight = (float)freq_emb;
    m->emb_scale = (float)(a->emb_scale > 0 ? a->emb_scale : 10.0);
    const d2m_tensor *up = w ? weights_get(w, "channel_upsampler.weight") : NULL;
    m->bottom = a->bottom_channels ? a->bottom_channels : up ? (int)up->shape[0] : w ? 0 : 512;

    /* What this engine runs: the HTDemucs family as released (CaC, rewrite,
     * DConv of depth 2 everywhere, no GroupNorm in the layers, the
     * frequency axis never collapsing to one bin, decoder context 1). */
    if (m->audio_channels != 2)
        return d2m_fail(err, D2M_ERR_FORMAT, "model with %d audio channels (2 supported)",
                        m->audio_channels);
    if (dconv_depth != 2 || context != 1 || norm_starts < m->depth)
        return d2m_fail(err, D2M_ERR_FORMAT,
                        "unsupported model variant (dconv_depth %d, context %d, norm_starts %d, "
                        "depth %d)", dconv_depth, context, norm_starts, m->depth);
    if (m->nfft < 64 || (m->nfft & (m->nfft - 1)) || m->depth < 1 || m->depth > HT_MAX_DEPTH ||
        m->kernel < 4 || m->stride < 1 || m->t_layers < 0 || m->t_layers > HT_MAX_LAYERS ||
        m->heads < 1 || channels < 1 || growth < 1 || m->dconv_comp < 1)
        return d2m_fail(err, D2M_ERR_FORMAT,
                        "unsupported model shape (nfft %d, depth %d, kernel %d, stride %d, "
                        "%d transformer layers, %d heads)", m->nfft, m->depth, m->kernel,
                        m->stride, m->t_layers, m->heads);
    m->hop = m->nfft / 4;
    m->bins = m->nfft / 2;
    m->length = (int64_t)floor(segment_s * m->samplerate + 1e-6);
    if (m->length < 4 * m->hop || m->length > 100LL * m->samplerate)
        return d2m_fail(err, D2M_ERR_FORMAT, "segment of %lld samples", (long long)m->length);
    m->frames = (int)((m->length + m->hop - 1) / m->hop);
    m->freqs[0] = m->bins;
    m->tlen[0] = m->length;
    for (int i = 0; i < m->depth; i++) {
        if (m->freqs[i] <= m->kernel)
            return d2m_fail(err, D2M_ERR_FORMAT,
                            "encoder %d would merge the branches (%d bins): unsupported", i,
                            m->freqs[i]);
        m->chans[i] = i == 0 ? channels : m->chans[i - 1] * growth;
        m->freqs[i + 1] = m->freqs[i] / m->stride;
        m->tlen[i + 1] = (m->tlen[i] + m->stride - 1) / m->stride;
    }
    m->dim = m->bottom ? m->bottom : m->chans[m->depth - 1];
    m->hidden = (int)(m->dim * hidden_scale);
    if (m->dim % m->heads || m->dim % 4)
        return d2m_fail(err, D2M_ERR_FORMAT, "transformer width %d with %d heads", m->dim,
                        m->heads);
    return 0;
}

/* ---- the expected weight table ---------------------------------------------- */

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[4];
    const float **dst;
} want;

typedef struct {
    want *v;
    int n, cap, oom;
} want_list;

static void need(want_list *l, const float **dst, const char *prefix, const char *suffix,
                 int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 512;
        want *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v) {
            l->oom = 1;
            return;
        }
        l->v = v;
        l->cap = cap;
    }
    want *t = &l->v[l->n++];
    snprintf(t->name, sizeof t->name, "%s%s", prefix, suffix);
    t->ndim = ndim;
    int64_t dims[4] = {d0, d1, d2, d3};
    memcpy(t->shape, dims, sizeof dims);
    t->dst = dst;
}

static void need_dconv(want_list *l, ht_dconv *d, const char *prefix, int c, int hidden)
{
    char pre[96];
    for (int k = 0; k < 2; k++) {
        d[k].dilation = 1 << k;
        snprintf(pre, sizeof pre, "%sdconv.layers.%d.", prefix, k);
        need(l, &d[k].conv1_w, pre, "0.weight", 3, hidden, c, 3, 0);
        need(l, &d[k].conv1_b, pre, "0.bias", 1, hidden, 0, 0, 0);
        need(l, &d[k].norm1_w, pre, "1.weight", 1, hidden, 0, 0, 0);
        need(l, &d[k].norm1_b, pre, "1.bias", 1, hidden, 0, 0, 0);
        need(l, &d[k].conv2_w, pre, "3.weight", 3, 2 * c, hidden, 1, 0);
        need(l, &d[k].conv2_b, pre, "3.bias", 1, 2 * c, 0, 0, 0);
        need(l, &d[k].norm2_w, pre, "4.weight", 1, 2 * c, 0, 0, 0);
        need(l, &d[k].norm2_b, pre, "4.bias", 1, 2 * c, 0, 0, 0);
        need(l, &d[k].scale, pre, "6.scale", 1, c, 0, 0, 0);
    }
}

static void need_tlayer(want_list *l, ht_tlayer *t, const char *prefix, int d, int hidden)
{
    char pre[96];
    snprintf(pre, sizeof pre, "%s%s.", prefix, t->cross ? "cross_attn" : "self_attn");
    need(l, &t->in_proj_w, pre, "in_proj_weight", 2, 3 * d, d, 0, 0);
    need(l, &t->in_proj_b, pre, "in_proj_bias", 1, 3 * d, 0, 0, 0);
    need(l, &t->out_proj_w, pre, "out_proj.weight", 2, d, d, 0, 0);
    need(l, &t->out_proj_b, pre, "out_proj.bias", 1, d, 0, 0, 0);
    need(l, &t->linear1_w, prefix, "linear1.weight", 2, hidden, d, 0, 0);
    need(l, &t->linear1_b, prefix, "linear1.bias", 1, hidden, 0, 0, 0);
    need(l, &t->linear2_w, prefix, "linear2.weight", 2, d, hidden, 0, 0);
    need(l, &t->linear2_b, prefix, "linear2.bias", 1, d, 0, 0, 0);
    need(l, &t->norm1_w, prefix, "norm1.weight", 1, d, 0, 0, 0);
    need(l, &t->norm1_b, prefix, "norm1.bias", 1, d, 0, 0, 0);
    need(l, &t->norm2_w, prefix, "norm2.weight", 1, d, 0, 0, 0);
    need(l, &t->norm2_b, prefix, "norm2.bias", 1, d, 0, 0, 0);
    if (t->cross) {
        need(l, &t->norm3_w, prefix, "norm3.weight", 1, d, 0, 0, 0);
        need(l, &t->norm3_b, prefix, "norm3.bias", 1, d, 0, 0, 0);
    }
    need(l, &t->norm_out_w, prefix, "norm_out.weight", 1, d, 0, 0, 0);
    need(l, &t->norm_out_b, prefix, "norm_out.bias", 1, d, 0, 0, 0);
    need(l, &t->gamma1, prefix, "gamma_1.scale", 1, d, 0, 0, 0);
    need(l, &t->gamma2, prefix, "gamma_2.scale", 1, d, 0, 0, 0);
}

/* Every tensor the configuration implies, with its shape and where its
 * data pointer goes (PyTorch state-dict names and shapes). */
static void build_table(htdemucs *m, want_list *l)
{
    char pre[96];
    int k = m->kernel, ac = m->audio_channels, s = m->sources;
    for (int i = 0; i < m->depth; i++) {
        int cout = m->chans[i];
        int hidden = cout / m->dconv_comp;
        for (int freq = 1; freq >= 0; freq--) {
            ht_encoder *e = freq ? &m->enc[i] : &m->tenc[i];
            e->c_in = i == 0 ? (freq ? 2 * ac : ac) : m->chans[i - 1];
            e->c_out = cout;
            e->hidden = hidden;
            snprintf(pre, sizeof pre, "%s.%d.", freq ? "encoder" : "tencoder", i);
            if (freq) {
                need(l, &e->conv_w, pre, "conv.weight", 4, cout, e->c_in, k, 1);
                need(l, &e->rewrite_w, pre, "rewrite.weight", 4, 2 * cout, cout, 1, 1);
            } else {
                need(l, &e->conv_w, pre, "conv.weight", 3, cout, e->c_in, k, 0);
                need(l, &e->rewrite_w, pre, "rewrite.weight", 3, 2 * cout, cout, 1, 0);
            }
            need(l, &e->conv_b, pre, "conv.bias", 1, cout, 0, 0, 0);
            need(l, &e->rewrite_b, pre, "rewrite.bias", 1, 2 * cout, 0, 0, 0);
            need_dconv(l, e->dconv, pre, cout, hidden);
        }
    }
    for (int idx = 0; idx < m->depth; idx++) {
        int level = m->depth - 1 - idx, cin = m->chans[level];
        for (int freq = 1; freq >= 0; freq--) {
            ht_decoder *d = freq ? &m->dec[idx] : &m->tdec[idx];
            d->c_in = cin;
            d->c_out = level > 0 ? m->chans[level - 1] : freq ? 2 * ac * s : ac * s;
            d->hidden = cin / m->dconv_comp;
            snprintf(pre, sizeof pre, "%s.%d.", freq ? "decoder" : "tdecoder", idx);
            if (freq) {
                need(l, &d->conv_tr_w, pre, "conv_tr.weight", 4, cin, d->c_out, k, 1);
                need(l, &d->rewrite_w, pre, "rewrite.weight", 4, 2 * cin, cin, 3, 3);
            } else {
                need(l, &d->conv_tr_w, pre, "conv_tr.weight", 3, cin, d->c_out, k, 0);
                need(l, &d->rewrite_w, pre, "rewrite.weight", 3, 2 * cin, cin, 3, 0);
            }
            need(l, &d->conv_tr_b, pre, "conv_tr.bias", 1, d->c_out, 0, 0, 0);
            need(l, &d->rewrite_b, pre, "rewrite.bias", 1, 2 * cin, 0, 0, 0);
            need_dconv(l, d->dconv, pre, cin, d->hidden);
        }
    }
    if (m->freq_emb_weight > 0)
        need(l, &m->freq_emb, "freq_emb.embedding.", "weight", 2, m->freqs[1], m->chans[0], 0, 0);
    int last = m->chans[m->depth - 1], d = m->dim;
    if (m->bottom) {
        need(l, &m->up_w, "channel_upsampler.", "weight", 3, d, last, 1, 0);
        need(l, &m->up_b, "channel_upsampler.", "bias", 1, d, 0, 0, 0);
        need(l, &m->down_w, "channel_downsampler.", "weight", 3, last, d, 1, 0);
        need(l, &m->down_b, "channel_downsampler.", "bias", 1, last, 0, 0, 0);
        need(l, &m->up_t_w, "channel_upsampler_t.", "weight", 3, d, last, 1, 0);
        need(l, &m->up_t_b, "channel_upsampler_t.", "bias", 1, d, 0, 0, 0);
        need(l, &m->down_t_w, "channel_downsampler_t.", "weight", 3, last, d, 1, 0);
        need(l, &m->down_t_b, "channel_downsampler_t.", "bias", 1, last, 0, 0, 0);
    }
    need(l, &m->norm_in_w, "crosstransformer.norm_in.", "weight", 1, d, 0, 0, 0);
    need(l, &m->norm_in_b, "crosstransformer.norm_in.", "bias", 1, d, 0, 0, 0);
    need(l, &m->norm_in_t_w, "crosstransformer.norm_in_t.", "weight", 1, d, 0, 0, 0);
    need(l, &m->norm_in_t_b, "crosstransformer.norm_in_t.", "bias", 1, d, 0, 0, 0);
    for (int i = 0; i < m->t_layers; i++) {
        /* Self-attention first unless t_cross_first, then alternating. */
        m->layers[i].cross = m->layers_t[i].cross = i % 2 != (m->cross_first ? 1 : 0);
        snprintf(pre, sizeof pre, "crosstransformer.layers.%d.", i);
        need_tlayer(l, &m->layers[i], pre, d, m->hidden);
        snprintf(pre, sizeof pre, "crosstransformer.layers_t.%d.", i);
        need_tlayer(l, &m->layers_t[i], pre, d, m->hidden);
    }
}

static void format_shape(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "",
                                 (long long)shape[i]);
    if (used < n) snprintf(buf + used, n - used, ")");
}

static int bind_weights(htdemucs *m, const d2m_weights *w, d2m_error *err)
{
    want_list l = {0};
    build_table(m, &l);
    int rc = 0;
    if (l.oom) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "out of memory for the weight table");
        goto done;
    }
    for (int i = 0; i < l.n; i++) {
        const want *t = &l.v[i];
        const d2m_tensor *have = weights_get(w, t->name);
        char want_s[96], have_s[96];
        format_shape(want_s, sizeof want_s, t->ndim, t->shape);
        if (!have) {
            rc = d2m_fail(err, D2M_ERR_FORMAT, "the weights lack tensor %s %s", t->name, want_s);
            goto done;
        }
        int same = have->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = have->shape[d] == t->shape[d];
        if (!same) {
            format_shape(have_s, sizeof have_s, have->ndim, have->shape);
            rc = d2m_fail(err, D2M_ERR_FORMAT, "tensor %s has shape %s, expected %s", t->name,
                          have_s, want_s);
            goto done;
        }
        *t->dst = have->data;
    }
    /* Tensors nothing reads mean the configuration misread the file. */
    for (int i = 0; i < weights_count(w); i++) {
        const char *name = weights_at(w, i)->name;
        int used = 0;
        for (int j = 0; j < l.n && !used; j++) used = strcmp(l.v[j].name, name) == 0;
        if (!used) {
            rc = d2m_fail(err, D2M_ERR_FORMAT,
                          "unexpected tensor %s: the model as configured (depth %d, %d "
                          "transformer layers) has no such weight",
                          name, m->depth, m->t_layers);
            goto done;
        }
    }
done:
    free(l.v);
    return rc;
}

/* ---- buffers ---------------------------------------------------------------------- */

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

typedef struct {
    float *base;
    size_t used;
} carver;

static float *take(carver *c, size_t n)
{
    float *p = c->base ? c->base + c->used : NULL;
    c->used += round16(n);
    return p;
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Scratch region pieces at the start of the decoder phase. */
/* The two frequency and two time buffers the decoders alternate between:
 * [0] holds the first decoder's input, decoder idx writes to [(idx+1) % 2];
 * each is sized for what it will hold. The last frequency output goes to
 * the spectrogram and first skip's place instead (see layout()). */
static void pingpong_sizes(const htdemucs *m, size_t freq[2], size_t time[2])
{
    int d = m->depth;
    freq[0] = round16((size_t)m->chans[d - 1] * m->freqs[d] * m->frames);
    time[0] = round16((size_t)m->chans[d - 1] * m->tlen[d]);
    freq[1] = time[1] = 0;
    for (int idx = 0; idx < d; idx++) {
        int level = d - 1 - idx, k = (idx + 1) % 2;
        if (idx < d - 1)
            freq[k] = max_size(freq[k], round16((size_t)m->dec[idx].c_out * m->freqs[level] * m->frames));
        time[k] = max_size(time[k], round16((size_t)m->tdec[idx].c_out * m->tlen[level]));
    }
}

static void size_work(htdemucs *m)
{
    int threads = m->be->n_threads;
    size_t budget = 0, kdim = 0, tr_row = 0;
    for (int i = 0; i < m->depth; i++) {
        budget = max_size(budget, (size_t)2 * m->chans[i] * m->tlen[i + 1]);
        budget = max_size(budget, (size_t)2 * m->chans[i] * m->frames);
        kdim = max_size(kdim, (size_t)m->enc[i].c_in * m->kernel);
        kdim = max_size(kdim, (size_t)m->chans[i] * 9);
        kdim = max_size(kdim, (size_t)m->chans[i] * 3);
        tr_row = max_size(tr_row, (size_t)m->dec[m->depth - 1 - i].c_out * m->kernel * m->frames);
    }
    m->dconv_budget = round16(budget);
    size_t per_thread = max_size(kdim * NN_MIN_TILE, tr_row * NN_MIN_TILE);
    per_thread = max_size(per_thread, max_size(kdim * 256, (size_t)1 << 18));
    m->conv_work = round16(per_thread * (size_t)threads);
    size_t nk = max_size((size_t)m->freqs[m->depth] * m->frames, (size_t)m->tlen[m->depth]);
    m->attn_work = round16((size_t)threads * 256 * nk);
}

/* Carve the arena (base NULL: only measure). Returns its size in floats. */
static size_t layout(htdemucs *m, float *base)
{
    carver c = {base, 0};
    /* The spectrogram and the first skip, then the last decoder's output in
     * their place: both are dead by the time it is written (the skip is
     * added to the decoder's input first). For htdemucs the sizes match
     * exactly, 4*2048 + 48*512 = 16*2048 rows of frames. */
    size_t spec_n = round16((size_t)2 * m->audio_channels * m->bins * m->frames);
    size_t skip0_n = round16((size_t)m->chans[0] * m->freqs[1] * m->frames);
    size_t out_n = (size_t)2 * m->audio_channels * m->sources * m->bins * m->frames;
    float *head = take(&c, max_size(spec_n + skip0_n, out_n));
    m->spec = m->freq_out = head;
    m->skip[0] = head ? head + spec_n : NULL;
    m->wave = take(&c, (size_t)m->audio_channels * m->length);
    for (int i = 0; i < m->depth; i++) {
        if (i > 0) m->skip[i] = take(&c, (size_t)m->chans[i] * m->freqs[i + 1] * m->frames);
        m->tskip[i] = take(&c, (size_t)m->chans[i] * m->tlen[i + 1]);
    }
    size_t enc = 0, dec = 0;
    for (int i = 0; i < m->depth; i++) {
        enc = max_size(enc, max_size(ht_encoder_scratch(m, 1, i), ht_encoder_scratch(m, 0, i)));
        dec = max_size(dec, max_size(ht_decoder_scratch(m, 1, i), ht_decoder_scratch(m, 0, i)));
    }
    size_t bottom = round16((size_t)m->dim * m->freqs[m->depth] * m->frames) +
                    round16((size_t)m->dim * m->tlen[m->depth]) + ht_transformer_scratch(m);
    size_t fsize[2], tsize[2];
    pingpong_sizes(m, fsize, tsize);
    size_t pingpong = fsize[0] + fsize[1] + tsize[0] + tsize[1];
    m->scratch_floats = round16(max_size(enc, pingpong + max_size(bottom, dec)));
    m->scratch = take(&c, m->scratch_floats);
    return c.used;
}

/* ---- creation ------------------------------------------------------------------------ */

/* The arena, carved into the activation buffers. Returns 0 or D2M_ERR_NOMEM. */
static int allocate_arena(htdemucs *m)
{
    if (posix_memalign((void **)&m->arena, 64, m->arena_floats * sizeof(float)) != 0) {
        m->arena = NULL;
        return D2M_ERR_NOMEM;
    }
    layout(m, m->arena);
    return 0;
}

void htdemucs_release_activations(htdemucs *m)
{
    if (!m) return;
    free(m->arena);
    m->arena = NULL;
}

int htdemucs_new_with_backend(htdemucs **out, const d2m_weights *w, nn_backend *be,
                              d2m_error *err)
{
    *out = NULL;
    if (!w || !be) return d2m_fail(err, D2M_ERR_INVALID, "htdemucs_new: no weights or backend");
    htdemucs *m = calloc(1, sizeof *m);
    if (!m) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory for the model");
    m->be = be;
    int rc = configure(m, weights_args(w), w, err);
    if (rc) goto fail;
    rc = bind_weights(m, w, err);
    if (rc) goto fail;
    size_work(m);
    m->arena_floats = layout(m, NULL);
    if (allocate_arena(m)) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "out of memory for %zu MB of activations",
                      m->arena_floats * sizeof(float) >> 20);
        goto fail;
    }
    if (ht_spec_init(m) || ht_transformer_init(m)) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "out of memory for the model's tables");
        goto fail;
    }
    *out = m;
    return 0;
fail:
    htdemucs_free(m);
    return rc;
}

int htdemucs_expected_tensors(const d2m_model_args *args,
                              void (*fn)(void *user, const char *name, int ndim,
                                         const int64_t *shape),
                              void *user, d2m_error *err)
{
    htdemucs *m = calloc(1, sizeof *m);
    if (!m) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
    int rc = configure(m, args, NULL, err);
    want_list l = {0};
    if (rc == 0) {
        build_table(m, &l);
        if (l.oom) rc = d2m_fail(err, D2M_ERR_NOMEM, "out of memory for the weight table");
    }
    if (rc == 0)
        for (int i = 0; i < l.n; i++) fn(user, l.v[i].name, l.v[i].ndim, l.v[i].shape);
    free(l.v);
    free(m);
    return rc ? rc : l.n;
}

int htdemucs_new(htdemucs **out, const d2m_weights *w, int n_threads, d2m_error *err)
{
    *out = NULL;
    nn_backend *be = nn_backend_cpu_new(n_threads, NN_GEMM_AUTO, err);
    if (!be) return err ? err->code : D2M_ERR_NOMEM;
    int rc = htdemucs_new_with_backend(out, w, be, err);
    if (rc) {
        nn_backend_free(be);
        return rc;
    }
    (*out)->own_backend = 1;
    return 0;
}

void htdemucs_free(htdemucs *m)
{
    if (!m) return;
    ht_spec_free(m);
    free(m->pos_freq);
    free(m->pos_time);
    free(m->arena);
    if (m->own_backend) nn_backend_free(m->be);
    free(m);
}

int64_t htdemucs_segment_length(const htdemucs *m) { return m->length; }
int htdemucs_samplerate(const htdemucs *m) { return m->samplerate; }
int htdemucs_sources(const htdemucs *m) { return m->sources; }

const char *htdemucs_source_name(const htdemucs *m, int source)
{
    return source >= 0 && source < m->sources ? m->names[source] : NULL;
}

int htdemucs_source_index(const htdemucs *m, const char *name)
{
    for (int s = 0; s < m->sources; s++)
        if (strcmp(m->names[s], name) == 0) return s;
    return -1;
}

size_t htdemucs_activation_bytes(const htdemucs *m)
{
    return m->arena_floats * sizeof(float) +
           ((size_t)m->freqs[m->depth] * m->frames + (size_t)m->tlen[m->depth]) * m->dim *
               sizeof(float) +
           (size_t)(m->length + m->nfft + 2 * m->padded_len) * sizeof(float) +
           m->spec_scratch_floats * m->be->n_threads * sizeof(float);
}

const char *htdemucs_backend_name(const htdemucs *m) { return m->be->name; }

double htdemucs_segment_flops(const htdemucs *m)
{
    double total = 0, t = m->frames;
    for (int i = 0; i < m->depth; i++) {
        double c = m->chans[i], h = m->enc[i].hidden, f = m->freqs[i + 1], tl = m->tlen[i + 1];
        double dconv = 2 * (2 * h * c * 3 + 2 * 2 * c * h); /* per position, both branches */
        /* encoders: conv, DConv, rewrite; per output position */
        total += f * t * (2 * c * m->enc[i].c_in * m->kernel + dconv + 2 * 2 * c * c);
        total += tl * (2 * c * m->tenc[i].c_in * m->kernel + dconv + 2 * 2 * c * c);
        /* decoders at this level: rewrite, DConv, transposed conv; per input position */
        const ht_decoder *d = &m->dec[m->depth - 1 - i], *td = &m->tdec[m->depth - 1 - i];
        total += f * t * (2 * 2 * c * c * 9 + dconv + 2 * c * d->c_out * m->kernel);
        total += tl * (2 * 2 * c * c * 3 + dconv + 2 * c * td->c_out * m->kernel);
    }
    double nf = (double)m->freqs[m->depth] * m->frames, nt = (double)m->tlen[m->depth];
    double d = m->dim, hid = m->hidden, last = m->chans[m->depth - 1];
    if (m->bottom) total += 2 * 2 * d * last * (nf + nt);
    for (int i = 0; i < m->t_layers; i++) {
        for (int b = 0; b < 2; b++) {
            double n = b ? nt : nf, other = b ? nf : nt;
            double keys = m->layers[i].cross ? other : n;
            total += 2 * n * d * d + 2 * keys * 2 * d * d; /* q, then k and v */
            total += 2 * 2 * n * keys * d;                 /* scores and their sum over v */
            total += 2 * n * d * d + 2 * 2 * n * d * hid;  /* out projection, feed-forward */
        }
    }
    return total;
}

void htdemucs_set_capture(htdemucs *m, htdemucs_capture_fn fn, void *user)
{
    m->capture = fn;
    m->capture_user = user;
}

void ht_capture(htdemucs *m, const char *name, const float *data, int ndim, ...)
{
    if (!m->capture) return;
    int64_t shape[8];
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim && i < 8; i++) shape[i] = va_arg(ap, int64_t);
    va_end(ap);
    m->capture(m->capture_user, name, data, ndim, shape);
}

/* ---- forward ----------------------------------------------------------------------- */

/* Host-side loops over big tensors, in a fixed number of chunks on the
 * backend's threads (partial sums are combined in chunk order, so the
 * result does not depend on the thread count). */
enum { HOST_CHUNKS = 64 };

typedef struct {
    const float *x;
    float *y;
    int64_t n;
    double mean;
    float a, b;
    int mode; /* 0: sum, 1: squared deviations from mean, 2: (x - a) / b, 3: x * a + b */
    double part[HOST_CHUNKS];
} host_job;

static void host_task(void *ctx, int task, int thread)
{
    host_job *h = ctx;
    int64_t i0 = h->n * task / HOST_CHUNKS, i1 = h->n * (task + 1) / HOST_CHUNKS;
    double acc = 0.0;
    switch (h->mode) {
    case 0:
        for (int64_t i = i0; i < i1; i++) acc += h->x[i];
        break;
    case 1:
        for (int64_t i = i0; i < i1; i++) acc += ((double)h->x[i] - h->mean) * ((double)h->x[i] - h->mean);
        break;
    case 2:
        for (int64_t i = i0; i < i1; i++) h->y[i] = (h->x[i] - h->a) / h->b;
        break;
    default:
        for (int64_t i = i0; i < i1; i++) h->y[i] = h->x[i] * h->a + h->b;
        break;
    }
    h->part[task] = acc;
}

static double host_run(htdemucs *m, host_job *h)
{
    m->be->parallel(m->be, host_task, h, HOST_CHUNKS);
    double total = 0.0;
    for (int i = 0; i < HOST_CHUNKS; i++) total += h->part[i];
    return total;
}

/* Mean and unbiased standard deviation of x (n), accumulated in double. */
static void mean_std(htdemucs *m, const float *x, int64_t n, float *mean, float *std)
{
    host_job h = {.x = x, .n = n, .mode = 0};
    double mu = host_run(m, &h) / (double)n;
    h.mode = 1;
    h.mean = mu;
    double s2 = host_run(m, &h);
    *mean = (float)mu;
    *std = (float)sqrt(s2 / (double)(n > 1 ? n - 1 : 1));
}

/* y = (x - mean) / (1e-5 + std), in float32 as torch computes it. */
static void normalise(htdemucs *m, float *y, const float *x, int64_t n, float mean, float std)
{
    host_job h = {.x = x, .y = y, .n = n, .a = mean, .b = 1e-5f + std, .mode = 2};
    host_run(m, &h);
}

/* x = x * std + mean, in place. */
static void denormalise(htdemucs *m, float *x, int64_t n, float mean, float std)
{
    host_job h = {.x = x, .y = x, .n = n, .a = std, .b = mean, .mode = 3};
    host_run(m, &h);
}

typedef struct {
    htdemucs *m;
    float *x;
} emb_job;

/* x[c, f, t] += 0.2 * (10 * W[f, c]) for one channel c, rounded as torch does. */
static void freq_emb_task(void *ctx, int c, int thread)
{
    emb_job *e = ctx;
    const htdemucs *m = e->m;
    int c_n = m->chans[0], f_n = m->freqs[1], le = m->frames;
    for (int f = 0; f < f_n; f++) {
        float v = m->freq_emb_weight * (m->freq_emb[f * c_n + c] * m->emb_scale);
        float *row = e->x + ((int64_t)c * f_n + f) * le;
        for (int t = 0; t < le; t++) row[t] += v;
    }
}

/* A 1x1 convolution between (c_in, n) and (c_out, n). */
static void pointwise(htdemucs *m, float *y, const float *x, const float *w, const float *b,
                      int c_in, int c_out, int64_t n)
{
    nn_conv p = {.c_in = c_in, .c_out = c_out, .in_rows = 1, .in_cols = (int)n, .out_rows = 1,
                 .out_cols = (int)n, .k_rows = 1, .k_cols = 1, .stride_rows = 1,
                 .stride_cols = 1, .dil_rows = 1, .dil_cols = 1, .x_cstride = n, .y_cstride = n};
    m->be->conv(m->be, y, x, w, b, &p, 0, n, NULL, 0);
}

int htdemucs_forward(htdemucs *m, float *out, const float *in)
{
    if (!m || !out || !in) return D2M_ERR_INVALID;
    if (!m->arena && allocate_arena(m)) return D2M_ERR_NOMEM; /* released since the last pass */
    nn_backend *be = m->be;
    const int64_t L = m->length, one = 1;
    const int S = m->sources, ac = m->audio_channels, bins = m->bins, le = m->frames;
    const int64_t spec_n = (int64_t)2 * ac * bins * le;
    char name[32];

    /* Inputs of both branches, each normalised by its own statistics. */
    ht_stft(m, m->spec, in);
    ht_capture(m, "00_spec", m->spec, 4, one, (int64_t)2 * ac, (int64_t)bins, (int64_t)le);
    mean_std(m, m->spec, spec_n, &m->freq_mean, &m->freq_std);
    ht_capture(m, "01_freq_mean", &m->freq_mean, 4, one, one, one, one);
    ht_capture(m, "02_freq_std", &m->freq_std, 4, one, one, one, one);
    normalise(m, m->spec, m->spec, spec_n, m->freq_mean, m->freq_std);
    mean_std(m, in, ac * L, &m->time_mean, &m->time_std);
    ht_capture(m, "03_time_mean", &m->time_mean, 3, one, one, one);
    ht_capture(m, "04_time_std", &m->time_std, 3, one, one, one);
    normalise(m, m->wave, in, ac * L, m->time_mean, m->time_std);
    ht_capture(m, "05_time_in", m->wave, 3, one, (int64_t)ac, L);

    for (int i = 0; i < m->depth; i++) {
        ht_encode_time(m, m->tskip[i], i ? m->tskip[i - 1] : m->wave, i, m->scratch);
        snprintf(name, sizeof name, "%02d_tenc%d", 6 + 2 * i, i);
        ht_capture(m, name, m->tskip[i], 3, one, (int64_t)m->chans[i], m->tlen[i + 1]);
        ht_encode_freq(m, m->skip[i], i ? m->skip[i - 1] : m->spec, i, m->scratch);
        if (i == 0 && m->freq_emb) {
            emb_job e = {m, m->skip[0]};
            be->parallel(be, freq_emb_task, &e, m->chans[0]);
        }
        snprintf(name, sizeof name, "%02d_enc%d", 7 + 2 * i, i);
        ht_capture(m, name, m->skip[i], 4, one, (int64_t)m->chans[i], (int64_t)m->freqs[i + 1],
                   (int64_t)le);
    }

    /* The bottom: project to the transformer width and back. */
    const int last = m->chans[m->depth - 1], d = m->dim, fd = m->freqs[m->depth];
    const int64_t nf = (int64_t)fd * le, nt = m->tlen[m->depth];
    size_t fsize[2], tsize[2];
    pingpong_sizes(m, fsize, tsize);
    float *fa = m->scratch, *fb = fa + fsize[0], *ta = fb + fsize[1], *tb = ta + tsize[0];
    float *after = tb + tsize[1]; /* bottom buffers, then each decoder's scratch */
    float *xf = after, *xt = xf + round16((size_t)d * nf);
    float *tscratch = xt + round16((size_t)d * nt);
    if (m->bottom) {
        pointwise(m, xf, m->skip[m->depth - 1], m->up_w, m->up_b, last, d, nf);
        pointwise(m, xt, m->tskip[m->depth - 1], m->up_t_w, m->up_t_b, last, d, nt);
    } else {
        memcpy(xf, m->skip[m->depth - 1], (size_t)d * nf * sizeof(float));
        memcpy(xt, m->tskip[m->depth - 1], (size_t)d * nt * sizeof(float));
    }
    ht_capture(m, "14_ct_in_freq", xf, 4, one, (int64_t)d, (int64_t)fd, (int64_t)le);
    ht_capture(m, "15_ct_in_time", xt, 3, one, (int64_t)d, nt);
    if (m->t_layers > 0) ht_transformer(m, xf, xt, tscratch);
    ht_capture(m, "22_ct_out_freq", xf, 4, one, (int64_t)d, (int64_t)fd, (int64_t)le);
    ht_capture(m, "23_ct_out_time", xt, 3, one, (int64_t)d, nt);
    if (m->bottom) {
        pointwise(m, fa, xf, m->down_w, m->down_b, d, last, nf);
        pointwise(m, ta, xt, m->down_t_w, m->down_t_b, d, last, nt);
    } else {
        memcpy(fa, xf, (size_t)d * nf * sizeof(float));
        memcpy(ta, xt, (size_t)d * nt * sizeof(float));
    }
    ht_capture(m, "24_down_freq", fa, 4, one, (int64_t)last, (int64_t)fd, (int64_t)le);
    ht_capture(m, "25_down_time", ta, 3, one, (int64_t)last, nt);

    /* Decoders, deepest first, each adding its encoder's output. */
    for (int idx = 0; idx < m->depth; idx++) {
        int level = m->depth - 1 - idx;
        if (idx == m->depth - 1) fb = m->freq_out;
        ht_decode_freq(m, fb, fa, m->skip[level], idx, after);
        ht_decode_time(m, tb, ta, m->tskip[level], idx, after);
        if (idx < m->depth - 1) {
            snprintf(name, sizeof name, "%02d_dec%d", 26 + 2 * idx, idx);
            ht_capture(m, name, fb, 4, one, (int64_t)m->dec[idx].c_out,
                       (int64_t)m->freqs[level], (int64_t)le);
            snprintf(name, sizeof name, "%02d_tdec%d", 27 + 2 * idx, idx);
            ht_capture(m, name, tb, 3, one, (int64_t)m->tdec[idx].c_out, m->tlen[level]);
        }
        float *swap = fa;
        fa = fb;
        fb = swap;
        swap = ta;
        ta = tb;
        tb = swap;
    }

    /* Outputs: de-normalise both branches; iSTFT the spectral one. */
    denormalise(m, fa, (int64_t)S * 2 * ac * bins * le, m->freq_mean, m->freq_std);
    ht_istft(m, out, fa);
    ht_capture(m, "32_freq_wave", out, 4, one, (int64_t)S, (int64_t)ac, L);
    denormalise(m, ta, S * ac * L, m->time_mean, m->time_std);
    ht_capture(m, "33_time_out", ta, 4, one, (int64_t)S, (int64_t)ac, L);
    be->add(be, out, ta, out, S * ac * L);
    return 0;
}
