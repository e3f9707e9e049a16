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
 * Streaming: the mix is read through an audio_reader a segment at a time
 * and the stems leave through a writer as they become final, so memory is
 * O(segment) whatever the song's length. The weighted sum is divided as it
 * is added (the weights covering a sample are known in advance), so a
 * sample is final once the last segment covering it, in every pass, is
 * done. The passes run interleaved: a segment of pass k runs only once pass
 * k - 1 has finished every sample it covers, so each output sample adds
 * its terms in exactly the order of the pass-after-pass loop above (the
 * same floats), while the overlap-add window stays a few segments long
 * (about one segment per pass).
 *
 * Threading: the engine's; progress is reported from the calling thread.
 */
#include "htdemucs.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_PASSES = 20, STATS_BLOCK_FRAMES = 1 << 16 };

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
    const audio_reader *mix;
    const demucs_stem_writer *writer;
    int64_t n;              /* song frames */
    const int *want;        /* (sources) 1 = write this source */
    float mix_mean, mix_scale; /* mono mean, std + 1e-8 */
    int64_t segment, stride;
    float *weight;          /* (segment) triangle */
    float *read;            /* (segment, 2) the mix as read */
    float *in;              /* (2, segment) normalised, planar */
    float *out;             /* (sources, 2, segment) */
    /* Overlap-add window: song frames [base, base + capacity); [base, end)
     * holds partial sums, frames before base went to the writer. */
    float *acc[HTDEMUCS_MAX_SOURCES]; /* (capacity, 2) per wanted source */
    int64_t base, end, capacity;
    double out_scale;       /* 1 / passes */
    int passes;
    int64_t view_start[MAX_PASSES], view_len[MAX_PASSES]; /* song position, length */
    int64_t next[MAX_PASSES], count[MAX_PASSES];           /* segments */
    separate_progress_fn progress;
    void *user;
    int64_t done, total;    /* segments */
} apply_ctx;

static int64_t clamp(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

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

/* Song frames below this are finished for pass k. */
static int64_t pass_frontier(const apply_ctx *a, int k)
{
    if (a->next[k] >= a->count[k]) return a->n;
    return clamp(a->view_start[k] + a->next[k] * a->stride, 0, a->n);
}

/* End (exclusive, in the song) of what segment j of pass k writes. */
static int64_t segment_end(const apply_ctx *a, int k, int64_t j)
{
    int64_t off = j * a->stride;
    int64_t len = a->view_len[k] - off < a->segment ? a->view_len[k] - off : a->segment;
    return clamp(a->view_start[k] + off + len, 0, a->n);
}

/* Make the window reach song frame end (exclusive). */
static int window_reach(apply_ctx *a, int64_t end, d2m_error *err)
{
    if (end - a->base <= a->capacity) return 0;
    int64_t capacity = a->capacity ? a->capacity : a->segment;
    while (capacity < end - a->base) capacity *= 2;
    const int S = htdemucs_sources(a->model);
    for (int s = 0; s < S; s++) {
        if (!a->want[s]) continue;
        float *grown = realloc(a->acc[s], (size_t)capacity * 2 * sizeof *grown);
        if (!grown) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory for Demucs' overlap-add");
        memset(grown + a->capacity * 2, 0, (size_t)(capacity - a->capacity) * 2 * sizeof *grown);
        a->acc[s] = grown;
    }
    a->capacity = capacity;
    return 0;
}

/* De-normalise song frames [base, final) of every written stem, hand them
 * to the writer and slide the window. */
static int window_finish(apply_ctx *a, int64_t final, d2m_error *err)
{
    const int64_t count = final - a->base;
    if (count <= 0) return 0;
    const int S = htdemucs_sources(a->model);
    for (int s = 0; s < S; s++) {
        if (!a->want[s]) continue;
        float *x = a->acc[s];
        for (int64_t i = 0; i < 2 * count; i++) x[i] = x[i] * a->mix_scale + a->mix_mean;
        int rc = a->writer->write(a->writer->user, s, x, count, err);
        if (rc) return rc;
        int64_t keep = a->end > final ? a->end - final : 0;
        memmove(x, x + 2 * count, (size_t)keep * 2 * sizeof *x);
        memset(x + 2 * keep, 0, (size_t)(a->capacity - keep) * 2 * sizeof *x);
    }
    a->base = final;
    if (a->end < final) a->end = final;
    return 0;
}

/* Segment j of pass k: the model on the view's samples [off, off + seg)
 * (centred padding for a short last one), its weighted share added to the
 * window. */
static int run_segment(apply_ctx *a, int k, int64_t j, d2m_error *err)
{
    const int64_t seg = a->segment, view_len = a->view_len[k], start = a->view_start[k];
    const int S = htdemucs_sources(a->model);
    const int64_t off = j * a->stride;
    int64_t len = view_len - off < seg ? view_len - off : seg;
    int64_t lead = (seg - len) / 2; /* centred padding: real audio before off */
    /* Input: song samples from (start + off - lead), zeros outside the song. */
    const int64_t first = start + off - lead;
    int rc = a->mix->read(a->mix->user, a->read, first, seg, err);
    if (rc) return rc;
    for (int64_t i = 0; i < seg; i++) {
        int inside = first + i >= 0 && first + i < a->n;
        a->in[i] = inside ? (a->read[2 * i] - a->mix_mean) / a->mix_scale : 0.0f;
        a->in[seg + i] = inside ? (a->read[2 * i + 1] - a->mix_mean) / a->mix_scale : 0.0f;
    }
    if (htdemucs_forward(a->model, a->out, a->in))
        return d2m_fail(err, D2M_ERR_NOMEM, "out of memory for the Demucs activations");
    if ((rc = window_reach(a, segment_end(a, k, j), err))) return rc;
    /* Output position i of the trimmed segment is view position off + i
     * and song position start + off + i. */
    for (int64_t i = 0; i < len; i++) {
        int64_t s = start + off + i;
        if (s < 0 || s >= a->n) continue;
        float w = a->weight[i] / weight_sum(a, off + i, view_len) * (float)a->out_scale;
        for (int src = 0; src < S; src++) {
            if (!a->want[src]) continue;
            const float *o = a->out + (int64_t)src * 2 * seg + lead;
            float *dst = a->acc[src] + 2 * (s - a->base);
            dst[0] += w * o[i];
            dst[1] += w * o[seg + i];
        }
    }
    if (a->end < segment_end(a, k, j)) a->end = segment_end(a, k, j);
    a->done++;
    if (a->progress && a->progress(a->user, (double)a->done / (double)a->total))
        return d2m_fail(err, D2M_ERR_CANCELLED, "Demucs separation cancelled");
    return 0;
}

/* Every segment of every pass, interleaved (see the top of the file). */
static int run_passes(apply_ctx *a, d2m_error *err)
{
    for (;;) {
        /* The latest pass that may run keeps the window short; pass 0 always may. */
        int k = -1;
        for (int q = a->passes - 1; q >= 0 && k < 0; q--) {
            if (a->next[q] >= a->count[q]) continue;
            if (q == 0 || pass_frontier(a, q - 1) >= segment_end(a, q, a->next[q])) k = q;
        }
        if (k < 0) return 0;
        int rc = run_segment(a, k, a->next[k], err);
        if (rc) return rc;
        a->next[k]++;
        int64_t final = a->n;
        for (int q = 0; q < a->passes; q++) {
            int64_t f = pass_frontier(a, q);
            if (f < final) final = f;
        }
        if ((rc = window_finish(a, final, err))) return rc;
    }
}

/* The caller-level normalisation, from the mono mix, in two passes. */
static int mix_stats(apply_ctx *a, d2m_error *err)
{
    const int64_t n = a->n;
    float *x = malloc((size_t)STATS_BLOCK_FRAMES * 2 * sizeof *x); /* (block, 2) */
    if (!x) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
    double sum = 0.0, mean = 0.0, ss = 0.0;
    int rc = 0;
    for (int pass = 0; pass < 2 && !rc; pass++) {
        for (int64_t first = 0; first < n && !rc; first += STATS_BLOCK_FRAMES) {
            int64_t count = n - first < STATS_BLOCK_FRAMES ? n - first : STATS_BLOCK_FRAMES;
            if ((rc = a->mix->read(a->mix->user, x, first, count, err))) break;
            for (int64_t i = 0; i < count; i++) {
                double v = 0.5 * ((double)x[2 * i] + x[2 * i + 1]);
                if (pass == 0) {
                    sum += v;
                } else {
                    v -= mean;
                    ss += v * v;
                }
            }
        }
        mean = sum / (double)n;
    }
    free(x);
    double std = n > 1 ? sqrt(ss / (double)(n - 1)) : 0.0;
    a->mix_mean = (float)mean;
    a->mix_scale = (float)std + 1e-8f;
    return rc;
}

int demucs_apply_stream(htdemucs *m, const audio_reader *mix, const demucs_stem_writer *writer,
                        const demucs_apply_params *p, separate_progress_fn progress, void *user,
                        d2m_error *err)
{
    demucs_apply_params defaults = demucs_apply_default_params();
    if (!p) p = &defaults;
    const int S = htdemucs_sources(m);
    if (!mix || mix->channels != 2 || mix->sample_rate != htdemucs_samplerate(m))
        return d2m_fail(err, D2M_ERR_INVALID,
                        "Demucs needs stereo audio at %d Hz (got %d channels at %d Hz)",
                        htdemucs_samplerate(m), mix ? mix->channels : 0,
                        mix ? mix->sample_rate : 0);
    if (mix->frames < 1) return d2m_fail(err, D2M_ERR_INVALID, "Demucs: empty mix");
    if (!(p->overlap >= 0.0 && p->overlap <= 0.9) || p->shifts < 0 || p->shifts > MAX_PASSES)
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
    a.writer = writer;
    a.n = mix->frames;
    a.want = want;
    a.segment = htdemucs_segment_length(m);
    a.stride = (int64_t)((1.0 - p->overlap) * (double)a.segment);
    a.progress = progress;
    a.user = user;
    const int64_t n = a.n, seg = a.segment;

    int rc = mix_stats(&a, err);
    if (rc) return rc;
    a.weight = malloc((size_t)seg * sizeof *a.weight);
    a.read = malloc((size_t)2 * seg * sizeof *a.read);
    a.in = malloc((size_t)2 * seg * sizeof *a.in);
    a.out = malloc((size_t)S * 2 * seg * sizeof *a.out);
    if (!a.weight || !a.read || !a.in || !a.out) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "out of memory for Demucs segments");
        goto done;
    }
    /* Triangle: 1 .. seg/2 then seg - seg/2 .. 1, over seg/2, in float. */
    for (int64_t i = 0; i < seg; i++) {
        int64_t up = i < seg / 2 ? i + 1 : seg - i;
        a.weight[i] = (float)up / (float)(seg / 2);
    }

    const int64_t max_shift = htdemucs_samplerate(m) / 2;
    a.passes = p->shifts > 0 ? p->shifts : 1;
    a.out_scale = 1.0 / a.passes;
    uint64_t rng = p->seed;
    for (int k = 0; k < a.passes; k++) {
        if (p->shifts > 0) {
            int64_t o = (int64_t)(next_random(&rng) % (uint64_t)(max_shift + 1));
            a.view_start[k] = o - max_shift;
            a.view_len[k] = n + max_shift - o;
        } else {
            a.view_start[k] = 0;
            a.view_len[k] = n;
        }
        a.count[k] = (a.view_len[k] + a.stride - 1) / a.stride;
        a.total += a.count[k];
    }
    rc = run_passes(&a, err);
done:
    free(a.weight);
    free(a.read);
    free(a.in);
    free(a.out);
    for (int s = 0; s < S; s++) free(a.acc[s]);
    return rc;
}

/* ---- Whole songs in memory ----------------------------------------------------- */

typedef struct {
    d2m_audio *stems;
    int64_t written[HTDEMUCS_MAX_SOURCES];
} memory_stems;

static int write_memory(void *user, int source, const float *x, int64_t frames, d2m_error *err)
{
    memory_stems *w = user;
    memcpy(w->stems[source].data + 2 * w->written[source], x, (size_t)frames * 2 * sizeof *x);
    w->written[source] += frames;
    return 0;
}

int demucs_apply(htdemucs *m, d2m_audio *stems, const d2m_audio *mix,
                 const demucs_apply_params *p, separate_progress_fn progress, void *user,
                 d2m_error *err)
{
    const int S = htdemucs_sources(m);
    for (int s = 0; s < S; s++) memset(&stems[s], 0, sizeof stems[s]);
    if (!mix || mix->channels != 2 || mix->sample_rate != htdemucs_samplerate(m))
        return d2m_fail(err, D2M_ERR_INVALID,
                        "Demucs needs stereo audio at %d Hz (got %d channels at %d Hz)",
                        htdemucs_samplerate(m), mix ? mix->channels : 0,
                        mix ? mix->sample_rate : 0);
    demucs_apply_params defaults = demucs_apply_default_params();
    if (!p) p = &defaults;
    unsigned mask = p->sources;
    if (mask == 0) {
        int drums = htdemucs_source_index(m, "drums");
        mask = 1u << (drums >= 0 ? drums : 0);
    }
    int rc = 0;
    for (int s = 0; s < S && !rc; s++)
        if (((mask >> s) & 1) && d2m_audio_alloc(&stems[s], mix->frames, 2, mix->sample_rate))
            rc = d2m_fail(err, D2M_ERR_NOMEM, "out of memory for the %s stem",
                          htdemucs_source_name(m, s));
    if (rc == 0) {
        audio_reader reader = audio_reader_of(mix);
        memory_stems w = {.stems = stems};
        demucs_stem_writer writer = {write_memory, &w};
        rc = demucs_apply_stream(m, &reader, &writer, p, progress, user, err);
    }
    if (rc)
        for (int s = 0; s < S; s++) d2m_audio_free(&stems[s]);
    return rc;
}
