/* HTDemucs against the PyTorch reference in ../shared/demucs/tiny (a tiny
 * random-weight model with every intermediate of one forward pass): each
 * intermediate within 1e-4 relative L2, the segment output and the chunked
 * apply_model output at >= 80 dB SNR per stem, the reference and the fast
 * backend agreeing, results independent of the thread count, seeded shifts
 * reproducible, cancellation, and a precise error for every wrong tensor.
 * Skips (passing) when ../shared is absent. */
#include "nn/weights.h"
#include "nn/weights_internal.h"
#include "separate/htdemucs.h"
#include "npy.h"
#include "test.h"

#include <stdint.h>
#include <string.h>

/* ---- comparisons --------------------------------------------------------------- */

static double rel_l2(const float *c, const float *r, int64_t n)
{
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)c[i] - r[i];
        e += d * d;
        s += (double)r[i] * r[i];
    }
    return sqrt(e / (s > 0 ? s : 1e-300));
}

/* Per-stem SNR with the README's rule for near-silent stems: a stem below
 * 1% of the mix energy must instead have error <= 1e-10 * mix energy. */
static void check_stems(const char *what, const float *got, const float *ref, int sources,
                        int64_t stem_n, const float *mix, int64_t mix_n)
{
    double mix_e = 0;
    for (int64_t i = 0; i < mix_n; i++) mix_e += (double)mix[i] * mix[i];
    for (int s = 0; s < sources; s++) {
        double e = 0, r = 0;
        for (int64_t i = 0; i < stem_n; i++) {
            double d = (double)got[s * stem_n + i] - ref[s * stem_n + i];
            e += d * d;
            r += (double)ref[s * stem_n + i] * ref[s * stem_n + i];
        }
        double snr = 10 * log10(r / (e > 0 ? e : 1e-300));
        printf("  %s stem %d: SNR %.1f dB (stem/mix energy %.3g)\n", what, s, snr, r / mix_e);
        if (r < 0.01 * mix_e)
            CHECK(e <= 1e-10 * mix_e, "%s stem %d: error energy %g > 1e-10 * mix energy %g", what,
                  s, e, mix_e);
        else
            CHECK(snr >= 80.0, "%s stem %d: SNR %.2f dB < 80 dB", what, s, snr);
    }
}

static char tiny_dir[1024];

static int tiny_path(char *buf, size_t n, const char *file)
{
    return snprintf(buf, n, "%s/%s", tiny_dir, file) < (int)n ? 0 : -1;
}

/* ---- intermediates ---------------------------------------------------------------- */

typedef struct {
    int seen;
    const char *backend;
    float freq_std;
} capture_state;

static void compare_capture(void *user, const char *name, const float *data, int ndim,
                            const int64_t *shape)
{
    capture_state *st = user;
    char path[1200], file[64];
    snprintf(file, sizeof file, "%s.npy", name);
    tiny_path(path, sizeof path, file);
    npy ref;
    if (npy_load(&ref, path) != 0) {
        CHECK(0, "reference %s missing or not strict .npy", path);
        return;
    }
    st->seen++;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *expect = ref.data;
    float *converted = NULL;
    if (strcmp(name, "00_spec") == 0) {
        /* reference (1, 2, F, T, re/im) -> complex-as-channels (1, 4, F, T) */
        CHECK(ref.ndim == 5 && ref.n == n, "00_spec: reference has %lld values, got %lld",
              (long long)ref.n, (long long)n);
        if (ref.n != n) goto done;
        int64_t ft = ref.shape[2] * ref.shape[3];
        converted = malloc((size_t)n * sizeof *converted);
        for (int c = 0; c < 2; c++)
            for (int64_t i = 0; i < ft; i++)
                for (int k = 0; k < 2; k++)
                    converted[(2 * c + k) * ft + i] = ref.data[(c * ft + i) * 2 + k];
        expect = converted;
    } else {
        int same = ref.ndim == ndim;
        for (int i = 0; same && i < ndim; i++) same = ref.shape[i] == shape[i];
        CHECK(same, "%s: shape differs from the reference", name);
        if (!same) goto done;
    }
    if (strcmp(name, "02_freq_std") == 0) st->freq_std = expect[0];
    if (strcmp(name, "01_freq_mean") == 0) {
        double diff = fabs((double)data[0] - expect[0]);
        printf("  [%s] %-16s |diff| %.3g\n", st->backend, name, diff);
        CHECK(diff <= 1e-6 * 0.424823612, "01_freq_mean: expected %.9g, got %.9g", expect[0],
              data[0]);
    } else {
        double e = rel_l2(data, expect, n);
        printf("  [%s] %-16s rel L2 %.3g\n", st->backend, name, e);
        CHECK(e <= 1e-4, "%s: relative L2 error %.3g > 1e-4", name, e);
    }
done:
    free(converted);
    npy_free(&ref);
}

static int run_segment(htdemucs *m, float *out, const npy *segment_in)
{
    return htdemucs_forward(m, out, segment_in->data);
}

static void test_forward_matches_reference(const d2m_weights *w, nn_gemm_kind kind,
                                           const char *label, const npy *segment_in,
                                           const npy *segment_out, float *keep)
{
    d2m_error err = {0};
    nn_backend *be = nn_backend_cpu_new(2, kind, &err);
    if (!be) {
        printf("  %s backend unavailable: %s\n", label, err.message);
        return;
    }
    htdemucs *m = NULL;
    int rc = htdemucs_new_with_backend(&m, w, be, &err);
    CHECK(rc == 0, "htdemucs_new: %s", err.message);
    if (rc) {
        nn_backend_free(be);
        return;
    }
    CHECK(htdemucs_segment_length(m) == 44100, "segment length %lld",
          (long long)htdemucs_segment_length(m));
    CHECK(htdemucs_sources(m) == 4 && strcmp(htdemucs_source_name(m, 0), "drums") == 0 &&
              strcmp(htdemucs_source_name(m, 3), "vocals") == 0 &&
              htdemucs_source_index(m, "bass") == 1,
          "sources");
    capture_state st = {0, label, 0};
    htdemucs_set_capture(m, compare_capture, &st);
    float *out = malloc((size_t)segment_out->n * sizeof *out);
    rc = run_segment(m, out, segment_in);
    CHECK(rc == 0, "forward returned %d", rc);
    CHECK(st.seen == 34, "%d intermediates captured, expected 34 (00..33)", st.seen);
    check_stems(label, out, segment_out->data, 4, 2 * 44100, segment_in->data, segment_in->n);
    if (keep) memcpy(keep, out, (size_t)segment_out->n * sizeof *out);
    free(out);
    htdemucs_free(m);
    nn_backend_free(be);
}

/* ---- thread count ---------------------------------------------------------------- */

/* The reference and the AVX-512 kernels compute every element in an order
 * fixed by the sizes alone; a BLAS may pick kernels by shape, so the BLAS
 * backend only promises the same bits for the same thread count. */
static void test_threads_do_not_change_results(const d2m_weights *w, nn_gemm_kind kind,
                                               const char *label, const npy *segment_in,
                                               int64_t out_n)
{
    d2m_error err = {0};
    float *out[2] = {NULL, NULL};
    int threads[2] = {1, 3};
    for (int k = 0; k < 2; k++) {
        nn_backend *be = nn_backend_cpu_new(threads[k], kind, &err);
        if (!be) {
            printf("  %s backend unavailable: %s\n", label, err.message);
            free(out[0]);
            return;
        }
        htdemucs *m = NULL;
        out[k] = calloc((size_t)out_n, sizeof(float));
        int rc = htdemucs_new_with_backend(&m, w, be, &err);
        CHECK(rc == 0, "htdemucs_new: %s", err.message);
        if (rc == 0) htdemucs_forward(m, out[k], segment_in->data);
        htdemucs_free(m);
        nn_backend_free(be);
    }
    CHECK(memcmp(out[0], out[1], (size_t)out_n * sizeof(float)) == 0,
          "%s backend: 1 and 3 threads give different bits", label);
    free(out[0]);
    free(out[1]);
}

/* ---- the apply loop ------------------------------------------------------------------ */

static int cancel_at_first(void *user, double fraction)
{
    (*(int *)user)++;
    return 1;
}

static int count_progress(void *user, double fraction)
{
    double *last = user;
    CHECK(fraction > last[0] && fraction <= 1.0, "progress %g after %g", fraction, last[0]);
    last[0] = fraction;
    last[1]++;
    return 0;
}

/* The shift offsets' generator (splitmix64), as demucs_apply documents it. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* apply_model(shifts=1, split=True, overlap=0.25) inside separate.py's
 * normalisation, written from the README: out (4, 2, n) planar. */
static void oracle_one_shift(htdemucs *m, float *out, const d2m_audio *raw, uint64_t seed)
{
    const int64_t n = raw->frames, seg = htdemucs_segment_length(m), stride = seg * 3 / 4;
    const int64_t max_shift = 22050;
    uint64_t state = seed;
    int64_t o = (int64_t)(splitmix64(&state) % (uint64_t)(max_shift + 1));
    double sum = 0, ss = 0;
    for (int64_t i = 0; i < n; i++) sum += 0.5 * ((double)raw->data[2 * i] + raw->data[2 * i + 1]);
    double mean = sum / n;
    for (int64_t i = 0; i < n; i++) {
        double v = 0.5 * ((double)raw->data[2 * i] + raw->data[2 * i + 1]) - mean;
        ss += v * v;
    }
    float fmean = (float)mean, scale = (float)sqrt(ss / (n - 1)) + 1e-8f;
    /* The view: padded (zeros, mix, zeros) from offset o; view index v is
     * song sample v + o - max_shift. */
    int64_t lv = n + max_shift - o;
    double *acc = calloc((size_t)8 * lv, sizeof *acc), *wsum = calloc((size_t)lv, sizeof *wsum);
    float *in = malloc((size_t)2 * seg * sizeof *in), *y = malloc((size_t)8 * seg * sizeof *y);
    for (int64_t off = 0; off < lv; off += stride) {
        int64_t l = lv - off < seg ? lv - off : seg, d = seg - l, start = off - d / 2;
        for (int64_t i = 0; i < seg; i++) {
            int64_t s = start + i + o - max_shift;
            for (int c = 0; c < 2; c++)
                in[c * seg + i] = s >= 0 && s < n ? (raw->data[2 * s + c] - fmean) / scale : 0.0f;
        }
        htdemucs_forward(m, y, in);
        for (int64_t i = 0; i < l; i++) {
            float w = (float)(i < seg / 2 ? i + 1 : seg - i) / (float)(seg / 2);
            wsum[off + i] += w;
            for (int sc = 0; sc < 8; sc++) acc[sc * lv + off + i] += w * y[sc * seg + d / 2 + i];
        }
    }
    for (int sc = 0; sc < 8; sc++)
        for (int64_t j = 0; j < n; j++) {
            int64_t v = j + max_shift - o;
            out[sc * n + j] = (float)(acc[sc * lv + v] / wsum[v]) * scale + fmean;
        }
    free(acc);
    free(wsum);
    free(in);
    free(y);
}

static void test_apply_matches_reference(const d2m_weights *w)
{
    char path[1200];
    npy mix, ref;
    tiny_path(path, sizeof path, "mix.npy");
    int ok = npy_load(&mix, path) == 0;
    tiny_path(path, sizeof path, "apply_out.npy");
    ok = ok && npy_load(&ref, path) == 0;
    CHECK(ok, "tiny mix.npy / apply_out.npy");
    if (!ok) return;
    int64_t n = mix.shape[1];
    /* mix.npy is already normalised; rebuild the raw mix from the README's
     * statistics so the whole path, normalisation included, is exercised:
     * raw = mix * (std + 1e-8) + mean, and the stems scale back the same way. */
    const float mean = 0.00150697795f, scale = 0.128141478f + 1e-8f;
    d2m_audio raw;
    d2m_audio_alloc(&raw, n, 2, 44100);
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < 2; c++) raw.data[2 * i + c] = mix.data[c * n + i] * scale + mean;
    float *expect = malloc((size_t)ref.n * sizeof *expect);
    for (int64_t i = 0; i < ref.n; i++) expect[i] = ref.data[i] * scale + mean;

    d2m_error err = {0};
    htdemucs *m = NULL;
    int rc = htdemucs_new(&m, w, 2, &err);
    CHECK(rc == 0, "htdemucs_new: %s", err.message);
    if (rc) goto done;
    d2m_audio stems[HTDEMUCS_MAX_SOURCES];
    demucs_apply_params p = demucs_apply_default_params();
    p.sources = 0xf;
    double progress[2] = {0, 0};
    rc = demucs_apply(m, stems, &raw, &p, count_progress, progress, &err);
    CHECK(rc == 0, "demucs_apply: %s", err.message);
    CHECK(progress[1] == 5 && progress[0] == 1.0, "progress: %g calls, last %g (5 segments)",
          progress[1], progress[0]);
    if (rc == 0) {
        float *got = malloc((size_t)ref.n * sizeof *got);
        for (int s = 0; s < 4; s++)
            for (int c = 0; c < 2; c++)
                for (int64_t i = 0; i < n; i++)
                    got[(s * 2 + c) * n + i] = stems[s].data[2 * i + c];
        float *raw_planar = malloc((size_t)2 * n * sizeof *raw_planar);
        for (int64_t i = 0; i < n; i++)
            for (int c = 0; c < 2; c++) raw_planar[c * n + i] = raw.data[2 * i + c];
        check_stems("apply_out", got, expect, 4, 2 * n, raw_planar, 2 * n);
        free(raw_planar);
        free(got);
        for (int s = 0; s < 4; s++) d2m_audio_free(&stems[s]);
    }

    /* Drums only by default; other stems untouched. */
    p = demucs_apply_default_params();
    rc = demucs_apply(m, stems, &raw, &p, NULL, NULL, &err);
    CHECK(rc == 0 && stems[0].data && !stems[1].data && !stems[2].data && !stems[3].data,
          "default params write the drums only");
    for (int s = 0; s < 4; s++) d2m_audio_free(&stems[s]);

    /* Shifts: against an independent implementation of the README's
     * description, on the whole mix and on an excerpt shorter than a
     * segment (one centred chunk that reads audio before its offset). */
    for (int k = 0; k < 2; k++) {
        d2m_audio part = raw;
        if (k == 1) part.frames = 30000;
        float *want_out = malloc((size_t)8 * part.frames * sizeof *want_out);
        float *got = malloc((size_t)8 * part.frames * sizeof *got);
        oracle_one_shift(m, want_out, &part, 7);
        p = demucs_apply_default_params();
        p.shifts = 1;
        p.seed = 7;
        p.sources = 0xf;
        rc = demucs_apply(m, stems, &part, &p, NULL, NULL, &err);
        CHECK(rc == 0, "shifted apply: %s", err.message);
        if (rc == 0) {
            for (int s = 0; s < 4; s++)
                for (int c = 0; c < 2; c++)
                    for (int64_t i = 0; i < part.frames; i++)
                        got[(s * 2 + c) * part.frames + i] = stems[s].data[2 * i + c];
            float *mix_planar = malloc((size_t)2 * part.frames * sizeof *mix_planar);
            for (int64_t i = 0; i < part.frames; i++)
                for (int c = 0; c < 2; c++) mix_planar[c * part.frames + i] = part.data[2 * i + c];
            check_stems(k ? "one shift, 30000 samples" : "one shift", got, want_out, 4,
                        2 * part.frames, mix_planar, 2 * part.frames);
            free(mix_planar);
        }
        for (int s = 0; s < 4; s++) d2m_audio_free(&stems[s]);
        free(want_out);
        free(got);
    }

    /* The same seed gives the same bits, another seed others. */
    float *first = NULL;
    for (int k = 0; k < 3; k++) {
        p = demucs_apply_default_params();
        p.shifts = 2;
        p.seed = k < 2 ? 7 : 8;
        rc = demucs_apply(m, stems, &raw, &p, NULL, NULL, &err);
        CHECK(rc == 0, "shifted apply: %s", err.message);
        if (rc) break;
        if (k == 0) {
            first = malloc((size_t)2 * n * sizeof *first);
            memcpy(first, stems[0].data, (size_t)2 * n * sizeof *first);
        } else if (k == 1) {
            CHECK(memcmp(first, stems[0].data, (size_t)2 * n * sizeof *first) == 0,
                  "same seed, different output");
        } else {
            CHECK(memcmp(first, stems[0].data, (size_t)2 * n * sizeof *first) != 0,
                  "another seed, same output");
        }
        d2m_audio_free(&stems[0]);
    }
    free(first);

    /* Cancelling from the progress callback. */
    int calls = 0;
    p = demucs_apply_default_params();
    rc = demucs_apply(m, stems, &raw, &p, cancel_at_first, &calls, &err);
    CHECK(rc == D2M_ERR_CANCELLED && calls == 1 && !stems[0].data,
          "cancel: rc %d after %d calls", rc, calls);

    /* Bad input. */
    raw.channels = 1;
    rc = demucs_apply(m, stems, &raw, &p, NULL, NULL, &err);
    CHECK(rc == D2M_ERR_INVALID, "mono input accepted (%d)", rc);
    raw.channels = 2;
    p.overlap = 0.95;
    rc = demucs_apply(m, stems, &raw, &p, NULL, NULL, &err);
    CHECK(rc == D2M_ERR_INVALID, "overlap 0.95 accepted (%d)", rc);
done:
    htdemucs_free(m);
    d2m_audio_free(&raw);
    free(expect);
    npy_free(&mix);
    npy_free(&ref);
}

/* ---- streaming apply ----------------------------------------------------------------- */

/* demucs_apply as it was written before it streamed: every pass over the
 * whole song in turn, into stems the length of the song, then
 * de-normalised. stems (sources, n, 2) interleaved per source. Kept as
 * the reference the interleaved streaming passes must equal bit for bit. */
static void pass_after_pass(htdemucs *m, float *stems, const d2m_audio *mix, int shifts,
                            uint64_t seed)
{
    const int64_t n = mix->frames, seg = htdemucs_segment_length(m), stride = seg * 3 / 4;
    const int S = htdemucs_sources(m);
    double sum = 0.0, ss = 0.0;
    for (int64_t i = 0; i < n; i++) sum += 0.5 * ((double)mix->data[2 * i] + mix->data[2 * i + 1]);
    double mean = sum / (double)n;
    for (int64_t i = 0; i < n; i++) {
        double v = 0.5 * ((double)mix->data[2 * i] + mix->data[2 * i + 1]) - mean;
        ss += v * v;
    }
    const float fmean = (float)mean, scale = (float)sqrt(ss / (double)(n - 1)) + 1e-8f;
    float *weight = malloc((size_t)seg * sizeof *weight), *in = malloc((size_t)2 * seg * sizeof *in);
    float *out = malloc((size_t)S * 2 * seg * sizeof *out);
    for (int64_t i = 0; i < seg; i++)
        weight[i] = (float)(i < seg / 2 ? i + 1 : seg - i) / (float)(seg / 2);
    memset(stems, 0, (size_t)S * n * 2 * sizeof *stems);
    int passes = shifts > 0 ? shifts : 1;
    uint64_t state = seed;
    for (int k = 0; k < passes; k++) {
        int64_t start = 0, view_len = n;
        if (shifts > 0) {
            int64_t o = (int64_t)(splitmix64(&state) % (uint64_t)(22050 + 1));
            start = o - 22050;
            view_len = n + 22050 - o;
        }
        for (int64_t off = 0; off < view_len; off += stride) {
            int64_t len = view_len - off < seg ? view_len - off : seg, lead = (seg - len) / 2;
            for (int64_t i = 0; i < seg; i++) {
                int64_t s = start + off - lead + i;
                int inside = s >= 0 && s < n;
                in[i] = inside ? (mix->data[2 * s] - fmean) / scale : 0.0f;
                in[seg + i] = inside ? (mix->data[2 * s + 1] - fmean) / scale : 0.0f;
            }
            htdemucs_forward(m, out, in);
            for (int64_t i = 0; i < len; i++) {
                int64_t s = start + off + i, v = off + i;
                if (s < 0 || s >= n) continue;
                float wsum = 0.0f;
                for (int64_t j = v >= seg ? (v - seg) / stride + 1 : 0; j * stride <= v; j++) {
                    int64_t o2 = j * stride;
                    if (o2 >= view_len) break;
                    int64_t l2 = view_len - o2 < seg ? view_len - o2 : seg;
                    if (v < o2 + l2) wsum += weight[v - o2];
                }
                float w = weight[i] / wsum * (float)(1.0 / passes);
                for (int src = 0; src < S; src++) {
                    float *dst = stems + ((int64_t)src * n + s) * 2;
                    dst[0] += w * out[(int64_t)src * 2 * seg + lead + i];
                    dst[1] += w * out[(int64_t)src * 2 * seg + seg + lead + i];
                }
            }
        }
    }
    for (int64_t i = 0; i < (int64_t)S * n * 2; i++) stems[i] = stems[i] * scale + fmean;
    free(weight);
    free(in);
    free(out);
}

/* Collects what demucs_apply_stream writes and checks it comes in order. */
typedef struct {
    float *stems;      /* (sources, n, 2) */
    int64_t n, written[HTDEMUCS_MAX_SOURCES], largest;
    int calls, fail_at;
} collected;

static int collect(void *user, int source, const float *x, int64_t frames, d2m_error *err)
{
    collected *c = user;
    if (++c->calls == c->fail_at) return d2m_fail(err, D2M_ERR_IO, "disk full (test)");
    CHECK(frames > 0 && c->written[source] + frames <= c->n, "source %d: %lld frames at %lld of %lld",
          source, (long long)frames, (long long)c->written[source], (long long)c->n);
    if (frames <= 0 || c->written[source] + frames > c->n) return 0;
    memcpy(c->stems + (source * c->n + c->written[source]) * 2, x, (size_t)frames * 2 * sizeof *x);
    c->written[source] += frames;
    if (frames > c->largest) c->largest = frames;
    return 0;
}

static void test_stream_apply_equals_pass_after_pass(const d2m_weights *w)
{
    char path[1200];
    npy mix;
    tiny_path(path, sizeof path, "mix.npy");
    if (npy_load(&mix, path) != 0) {
        CHECK(0, "tiny mix.npy");
        return;
    }
    d2m_error err = {0};
    htdemucs *m = NULL;
    int rc = htdemucs_new(&m, w, 2, &err);
    CHECK(rc == 0, "htdemucs_new: %s", err.message);
    /* A song of many segments: the tiny mix twice over, the second time
     * a little quieter, plus an odd tail. */
    const int64_t part = mix.shape[1], n = 2 * part + 1234;
    d2m_audio raw;
    d2m_audio_alloc(&raw, n, 2, 44100);
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < 2; c++)
            raw.data[2 * i + c] = mix.data[c * part + i % part] * 0.1f * (float)(1.0 - 0.2 * (double)(i / part));
    const int S = rc == 0 ? htdemucs_sources(m) : 0;
    float *want = malloc((size_t)S * n * 2 * sizeof *want + 1);
    collected got = {.stems = malloc((size_t)S * n * 2 * sizeof(float) + 1), .n = n};
    audio_reader reader = audio_reader_of(&raw);
    demucs_stem_writer writer = {collect, &got};
    static const int shifts[] = {0, 1, 3};
    for (int k = 0; k < 3 && rc == 0; k++) {
        pass_after_pass(m, want, &raw, shifts[k], 11);
        demucs_apply_params p = demucs_apply_default_params();
        p.shifts = shifts[k];
        p.seed = 11;
        p.sources = (1u << S) - 1u;
        memset(got.written, 0, sizeof got.written);
        got.calls = 0;
        got.largest = 0;
        /* The second run after the activations were given back. */
        if (k == 2) htdemucs_release_activations(m);
        rc = demucs_apply_stream(m, &reader, &writer, &p, NULL, NULL, &err);
        CHECK(rc == 0, "demucs_apply_stream, %d shifts: %s", shifts[k], err.message);
        if (rc) break;
        int all = 1;
        for (int s = 0; s < S; s++) all = all && got.written[s] == n;
        CHECK(all, "%d shifts: every source written to the end", shifts[k]);
        CHECK(memcmp(want, got.stems, (size_t)S * n * 2 * sizeof *want) == 0,
              "%d shifts: streaming apply differs from pass after pass", shifts[k]);
        CHECK(got.calls > 3 * S && got.largest < n / 2,
              "%d shifts: written as it became final (%d calls, largest %lld of %lld frames)",
              shifts[k], got.calls, (long long)got.largest, (long long)n);
    }
    /* A writer's failure stops the separation with its code. */
    if (rc == 0) {
        demucs_apply_params p = demucs_apply_default_params();
        memset(got.written, 0, sizeof got.written);
        got.calls = 0;
        got.fail_at = 2;
        rc = demucs_apply_stream(m, &reader, &writer, &p, NULL, NULL, &err);
        CHECK(rc == D2M_ERR_IO && strstr(err.message, "disk full"), "writer failure: rc %d (%s)",
              rc, err.message);
    }
    free(want);
    free(got.stems);
    d2m_audio_free(&raw);
    htdemucs_free(m);
    npy_free(&mix);
}

/* ---- the weight table --------------------------------------------------------------- */

/* A copy of w with tensor `drop` left out, `reshape` given a wrong first
 * dimension, and `extra` added. */
static d2m_weights *edited(const d2m_weights *w, const char *drop, const char *reshape,
                           const char *extra)
{
    d2m_weights *c = weights_new();
    d2m_error err;
    c->args = *weights_args(w);
    for (int i = 0; i < weights_count(w); i++) {
        const d2m_tensor *t = weights_at(w, i);
        if (drop && strcmp(t->name, drop) == 0) continue;
        float *data = malloc((size_t)t->numel * sizeof *data);
        memcpy(data, t->data, (size_t)t->numel * sizeof *data);
        int64_t shape[D2M_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        if (reshape && strcmp(t->name, reshape) == 0 && t->ndim >= 2) {
            shape[0] *= 2;
            shape[1] /= 2;
        }
        weights_add(c, t->name, t->ndim, shape, data, &err);
    }
    if (extra) {
        int64_t one = 1;
        weights_add(c, extra, 1, &one, calloc(1, sizeof(float)), &err);
    }
    return c;
}

static void test_wrong_tensors_are_named(const d2m_weights *w)
{
    struct {
        const char *drop, *reshape, *extra, *message;
    } cases[] = {
        {"decoder.1.rewrite.weight", NULL, NULL,
         "the weights lack tensor decoder.1.rewrite.weight (64, 32, 3, 3)"},
        {NULL, "crosstransformer.layers_t.1.linear1.weight", NULL,
         "tensor crosstransformer.layers_t.1.linear1.weight has shape (256, 16), expected "
         "(128, 32)"},
        {NULL, NULL, "crosstransformer.layers.2.norm1.weight",
         "unexpected tensor crosstransformer.layers.2.norm1.weight"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        d2m_weights *c = edited(w, cases[k].drop, cases[k].reshape, cases[k].extra);
        htdemucs *m = NULL;
        d2m_error err = {0};
        int rc = htdemucs_new(&m, c, 1, &err);
        CHECK(rc == D2M_ERR_FORMAT && m == NULL, "case %zu: rc %d", k, rc);
        CHECK(strstr(err.message, cases[k].message) != NULL, "case %zu: message \"%s\"", k,
              err.message);
        htdemucs_free(m);
        weights_free(c);
    }
}

/* ---- the expected table ---------------------------------------------------------- */

typedef struct {
    const d2m_weights *w;
    const char *tsv; /* or the text of real/tensors.tsv */
    int count, mismatches;
} table_check;

static void check_entry(void *user, const char *name, int ndim, const int64_t *shape)
{
    table_check *c = user;
    c->count++;
    if (c->w) {
        const d2m_tensor *t = weights_get(c->w, name);
        int same = t && t->ndim == ndim;
        for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
        if (!same) c->mismatches++;
    } else if (c->tsv) {
        /* the line "name<TAB>d0,d1,...<TAB>" */
        char line[256];
        int used = snprintf(line, sizeof line, "\n%s\t", name);
        for (int i = 0; i < ndim; i++)
            used += snprintf(line + used, sizeof line - (size_t)used, "%s%lld", i ? "," : "",
                             (long long)shape[i]);
        snprintf(line + used, sizeof line - (size_t)used, "\t");
        if (!strstr(c->tsv, line)) {
            if (c->mismatches++ < 3) printf("  not in real/tensors.tsv: %s", line + 1);
        }
    }
}

static void test_expected_tensors(const d2m_weights *w)
{
    table_check c = {w, NULL, 0, 0};
    d2m_error err = {0};
    int n = htdemucs_expected_tensors(weights_args(w), check_entry, &c, &err);
    CHECK(n == 433 && c.count == 433 && c.mismatches == 0,
          "tiny table: %d tensors (433 expected), %d not in tiny.th as listed", n, c.mismatches);
    /* No args: the released htdemucs, whose 533 tensors real/tensors.tsv lists. */
    char path[1200];
    snprintf(path, sizeof path, "%s/../real/tensors.tsv", tiny_dir);
    FILE *f = fopen(path, "rb");
    char *tsv = calloc(1, 1 << 20);
    if (f) {
        tsv[0] = '\n';
        size_t got = fread(tsv + 1, 1, (1 << 20) - 2, f);
        tsv[got + 1] = 0;
        fclose(f);
    }
    table_check real = {NULL, f ? tsv : NULL, 0, 0};
    n = htdemucs_expected_tensors(NULL, check_entry, &real, &err);
    CHECK(n == 533 && real.count == 533 && real.mismatches == 0,
          "htdemucs table: %d tensors (533 expected), %d not in real/tensors.tsv", n,
          real.mismatches);
    free(tsv);
}

int main(void)
{
    const char *root = getenv("D2M_SOURCE_DIR");
    snprintf(tiny_dir, sizeof tiny_dir, "%s/../shared/demucs/tiny", root ? root : ".");
    char path[1200];
    tiny_path(path, sizeof path, "tiny.th");
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        printf("test_htdemucs: skipped, %s is absent\n", path);
        return 0;
    }
    fclose(probe);

    d2m_weights *w = NULL;
    d2m_error err = {0};
    int rc = weights_load_th(&w, path, &err);
    CHECK(rc == 0, "loading tiny.th: %s", err.message);
    if (rc) return test_summary("test_htdemucs");

    npy segment_in, segment_out;
    tiny_path(path, sizeof path, "segment_in.npy");
    int ok = npy_load(&segment_in, path) == 0;
    tiny_path(path, sizeof path, "segment_out.npy");
    ok = ok && npy_load(&segment_out, path) == 0;
    CHECK(ok, "segment_in.npy / segment_out.npy");
    if (ok) {
        float *ref_out = malloc((size_t)segment_out.n * sizeof(float));
        float *fast_out = malloc((size_t)segment_out.n * sizeof(float));
        test_forward_matches_reference(w, NN_GEMM_REFERENCE, "reference", &segment_in,
                                       &segment_out, ref_out);
        test_forward_matches_reference(w, NN_GEMM_AUTO, "auto", &segment_in, &segment_out,
                                       fast_out);
        check_stems("auto vs reference backend", fast_out, ref_out, 4, 2 * 44100,
                    segment_in.data, segment_in.n);
        free(ref_out);
        free(fast_out);
        test_threads_do_not_change_results(w, NN_GEMM_REFERENCE, "reference", &segment_in,
                                           segment_out.n);
        test_threads_do_not_change_results(w, NN_GEMM_AVX512, "avx512", &segment_in,
                                           segment_out.n);
        test_threads_do_not_change_results(w, NN_GEMM_AMX, "amx", &segment_in, segment_out.n);
    }
    test_apply_matches_reference(w);
    test_stream_apply_equals_pass_after_pass(w);
    test_wrong_tensors_are_named(w);
    test_expected_tensors(w);
    npy_free(&segment_in);
    npy_free(&segment_out);
    weights_free(w);
    return test_summary("test_htdemucs");
}
