/* Separating a whole song with an HTDemucs engine, exactly as upstream
 * demucs/separate.py + demucs/apply.py apply_model do it:
 *
 * 1. Normalise: ref = mean of the channels (mono); mix_n = (mix - mean(ref))
 *    / (std(ref) + 1e-8), std unbiased; at the end out = out_n * (std +
 *    1e-8) + mean for every stem.
 * 2. Shifts (optional): the mix is padded with max_shift = samplerate / 2
 *    zeros on both sides; each pass takes it from a random offset o in
 *    [0, max_shift] (a seeded generator, not Python's), separates that view
 *    and keeps the part aligned with the song; passes are averaged.
 * 3. Split: a view is cut into segments at offsets 0, stride, 2*stride, ...
 *    (stride = int((1 - overlap) * segment)). A segment with l < segment
 *    real samples is padded centred, taking real audio from before its
 *    offset where there is some, zeros beyond the song. Its output is
 *    centre-trimmed back to l, weighted by the first l values of the
 *    triangle [1, 2, ..., segment/2, segment/2, ..., 1] / (segment/2), and
 *    overlap-added; the sum is divided by the summed weights.
 *
 * Memory: the outputs, plus one segment in and one segment out (all
 * sources); nothing the size of the song besides the outputs. The weighted
 * sum is divided as it is added (the weights covering a sample are known in
 * advance), so each output sample is final once its last segment is done.
 *
 * Threading: the engine's; progress is reported from the calling thread.
 */
#include "htdemucs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

demucs_apply_params demucs_apply_default_params(void)
{
    demucs_apply_params p = {.overlap = 0.25, .shifts = 0, .seed = 0, .sources = 0};
    return p;
}

/* splitmix64: the shifts' offsets depend on the seed alone. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct {
    htdemucs *model;
    const d2m_audio *mix;
    d2m_audio *stems;
    const int *want;        /* (sources) 1 = write this source */
    float mix_mean, mix_scale; /* mono mean, std + 1e-8 */
    int64_t segment, stride;
    float *weight;          /* (segment) triangle */
    float *in;              /* (2, segment) */
    float *out;             /* (sources, 2, segment) */
    double out_scale;       /* 1 / passes */
    separate_progress_fn progress;
    void *user;
    int64_t done, total;    /* segments */
} apply_ctx;

/* Sum of the triangle weights over the segments of a view of length
 * view_len that cover view position v, in segment order (as torch sums). */
static float weight_sum(const apply_ctx *a, int64_t v, int64_t view_len)
{
    float sum = 0.0f;
    int64_t first = v >= a->segment ? (v - a->segment) / a->stride + 1 : 0;
    for (int64_t k = first; k * a->stride <= v; k++) {
        int64_t off = k * a->stride;
        if (off >= view_len) break;
        int64_t len = view_len - off < a->segment ? view_len - off : a->segment;
        if (v < off + len) sum += a->weight[v - off];
    }
    return sum;
}

/* Separate the view of the song starting at song position start (<= 0
 * with shifts) of length view_len, adding its weighted share to the stems
 * at song positions [0, n). */
static int separate_view(apply_ctx *a, int64_t start, int64_t view_len)
{
    const int64_t n = a->mix->frames, seg = a->segment;
    const int S = htdemucs_sources(a->model);
    const float *mix = a->mix->data;
    for (int64_t off = 0; off < view_len; off += a->stride) {
        int64_t len = view_len - off < seg ? view_len - off : seg;
        int64_t lead = (seg - len) / 2; /* centred padding: real audio before off */
        /* Input: song samples from (start + off - lead), zeros outside the song. */
        int64_t first = start + off - lead;
        for (int64_t i = 0; i < seg; i++) {
            int64_t s = first + i;
            float l = 0.0f, r = 0.0f;
            if (s >= 0 && s < n) {
                l = (mix[2 * s] - a->mix_mean) / a->mix_scale;
                r = (mix[2 * s + 1] - a->mix_mean) / a->mix_scale;
            }
            a->in[i] = l;
            a->in[seg + i] = r;
        }
        htdemucs_forward(a->model, a->out, a->in);
        /* Output position i of the trimmed segment is view position off + i
         * and song position start + off + i. */
        for (int64_t i = 0; i < len; i++) {
            int64_t s = start + off + i;
            if (s < 0 || s >= n) continue;
            float w = a->weight[i] / weight_sum(a, off + i, view_len) * (float)a->out_scale;
            for (int src = 0; src < S; src++) {
                if (!a->want[src]) continue;
                const float *o = a->out + (int64_t)src * 2 * seg + lead;
                float *dst = a->stems[src].data + 2 * s;
                dst[0] += w * o[i];
                dst[1] += w * o[seg + i];
            }
        }
        a->done++;
        if (a->progress && a->progress(a->user, (double)a->done / (double)a->total))
            return D2M_ERR_CANCELLED;
    }
    return 0;
}

int demucs_apply(htdemucs *m, d2m_audio *stems, const d2m_audio *mix,
                 const demucs_apply_params *p, separate_progress_fn progress, void *user,
                 d2m_error *err)
{
    demucs_apply_params defaults = demucs_apply_default_params();
    if (!p) p = &defaults;
    const int S = htdemucs_sources(m);
    for (int s = 0; s < S; s++) memset(&stems[s], 0, sizeof stems[s]);
    if (!mix || mix->channels != 2 || mix->sample_rate != htdemucs_samplerate(m))
        return d2m_fail(err, D2M_ERR_INVALID,
                        "Demucs needs stereo audio at %d Hz (got %d channels at %d Hz)",
                        htdemucs_samplerate(m), mix ? mix->channels : 0,
                        mix ? mix->sample_rate : 0);
    if (mix->frames < 1) return d2m_fail(err, D2M_ERR_INVALID, "Demucs: empty mix");
    if (!(p->overlap >= 0.0 && p->overlap <= 0.9) || p->shifts < 0 || p->shifts > 20)
        return d2m_fail(err, D2M_ERR_INVALID, "Demucs: overlap %g (0 to 0.9), shifts %d (0 to 20)",
                        p->overlap, p->shifts);
    int want[HTDEMUCS_MAX_SOURCES];
    unsigned mask = p->sources;
    if (mask == 0) {
        int drums = htdemucs_source_index(m, "drums");
        mask = 1u << (drums >= 0 ? drums : 0);
    }
    if (mask >> S)
        return d2m_fail(err, D2M_ERR_INVALID, "Demucs: source mask 0x%x for a %d-source model",
                        mask, S);
    for (int s = 0; s < S; s++) want[s] = (mask >> s) & 1;

    apply_ctx a = {0};
    a.model = m;
    a.mix = mix;
    a.stems = stems;
    a.want = want;
    a.segment = htdemucs_segment_length(m);
    a.stride = (int64_t)((1.0 - p->overlap) * (double)a.segment);
    a.progress = progress;
    a.user = user;
    const int64_t n = mix->frames, seg = a.segment;

    /* The caller-level normalisation, from the mono mix. */
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += 0.5 * ((double)mix->data[2 * i] + mix->data[2 * i + 1]);
    double mean = sum / (double)n, ss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double v = 0.5 * ((double)mix->data[2 * i] + mix->data[2 * i + 1]) - mean;
        ss += v * v;
    }
    double std = n > 1 ? sqrt(ss / (double)(n - 1)) : 0.0;
    a.mix_mean = (float)mean;
    a.mix_scale = (float)std + 1e-8f;

    int rc = 0;
    a.weight = malloc((size_t)seg * sizeof *a.weight);
    a.in = malloc((size_t)2 * seg * sizeof *a.in);
    a.out = malloc((size_t)S * 2 * seg * sizeof *a.out);
    if (!a.weight || !a.in || !a.out) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "out of memory for Demucs segments");
        goto done;
    }
    for (int s = 0; s < S && !rc; s++)
        if (want[s] && d2m_audio_alloc(&stems[s], n, 2, mix->sample_rate) != 0)
            rc = d2m_fail(err, D2M_ERR_NOMEM, "out of memory for the %s stem",
                          htdemucs_source_name(m, s));
    if (rc) goto done;
    for (int s = 0; s < S; s++)
        if (want[s]) memset(stems[s].data, 0, (size_t)n * 2 * sizeof(float));
    /* Triangle: 1 .. seg/2 then seg - seg/2 .. 1, over seg/2, in float. */
    for (int64_t i = 0; i < seg; i++) {
        int64_t up = i < seg / 2 ? i + 1 : seg - i;
        a.weight[i] = (float)up / (float)(seg / 2);
    }

    const int64_t max_shift = htdemucs_samplerate(m) / 2;
    int passes = p->shifts > 0 ? p->shifts : 1;
    a.out_scale = 1.0 / passes;
    int64_t views_start[20], views_len[20];
    uint64_t rng = p->seed;
    for (int k = 0; k < passes; k++) {
        if (p->shifts > 0) {
            int64_t o = (int64_t)(next_random(&rng) % (uint64_t)(max_shift + 1));
            views_start[k] = o - max_shift;
            views_len[k] = n + max_shift - o;
        } else {
            views_start[k] = 0;
            views_len[k] = n;
        }
        a.total += (views_len[k] + a.stride - 1) / a.stride;
    }
    for (int k = 0; k < passes && !rc; k++) rc = separate_view(&a, views_start[k], views_len[k]);
    if (rc == D2M_ERR_CANCELLED) {
        d2m_fail(err, rc, "Demucs separation cancelled");
        goto done;
    }
    /* De-normalise every written stem. */
    for (int s = 0; s < S; s++) {
        if (!want[s]) continue;
        float *x = stems[s].data;
        for (int64_t i = 0; i < 2 * n; i++) x[i] = x[i] * a.mix_scale + a.mix_mean;
    }
done:
    free(a.weight);
    free(a.in);
    free(a.out);
    if (rc)
        for (int s = 0; s < S; s++) d2m_audio_free(&stems[s]);
    return rc;
}
