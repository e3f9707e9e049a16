/* Harmonic/percussive/residual separation by median filtering.
 *
 * References: D. FitzGerald, "Harmonic/percussive separation using median
 * filtering", DAFx 2010; J. Driedger, M. Mueller, S. Disch, "Extending
 * harmonic-percussive separation of audio signals", ISMIR 2014.
 *
 * On the magnitude spectrogram |X| (mean of the channels' magnitudes, so both
 * channels share one mask and the stereo image stays put): H = median of |X|
 * across time (harmonic_frames), P = median across frequency
 * (percussive_bins). Soft masks with Driedger's margin m:
 *     Mp = P^2 / (P^2 + (m H)^2),  Mh = H^2 / (H^2 + (m P)^2),  Mr = 1 - Mp - Mh
 * (the residual takes what neither dominates by the margin). The drum stem is
 * Mp * X, inverted per channel.
 *
 * Layout: blocks of block_s seconds of output; each block computes the STFT
 * frames touching it plus harmonic_frames/2 frames of context on both sides,
 * so every output sample equals what whole-signal processing would give.
 * Memory is O(block), whatever the song's length, plus the input and the
 * output; channels are read and written in place through a stride.
 *
 * Threading: blocks are independent; worker threads take blocks in order
 * through an atomic counter and write disjoint output ranges, so the result
 * does not depend on the thread count. Progress is reported from the
 * calling thread.
 */
#include "separate.h"

#include "dsp/dsp.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

hpss_params hpss_default_params(void)
{
    hpss_params p = {.n_fft = 2048,
                     .hop = 512,
                     .harmonic_frames = 31,
                     .percussive_bins = 31,
                     /* 2 rather than 1.5: less bass and chord attack in the
                      * stem, for the same drums (measured on rendered songs:
                      * tempo right in 2 more of 108, hits about the same). */
                     .margin = 2.0f,
                     .block_s = 20.0};
    return p;
}

/* Median of a sliding window over a sequence read through a stride, with the
 * sequence mirrored at both ends (scipy's "reflect" mode). dst[i] = median of
 * src[(i - half .. i + half) * stride]. sorted is scratch of 2*half+1 floats. */
static void sliding_median(float *dst, int dst_stride, const float *src, int src_stride, int n,
                           int half, float *sorted)
{
    int width = 2 * half + 1;
#define AT(i) src[(size_t)dsp_reflect_index((i), n) * (size_t)src_stride]
    for (int k = 0; k < width; k++) {
        float v = AT(k - half);
        int j = k;
        while (j > 0 && sorted[j - 1] > v) {
            sorted[j] = sorted[j - 1];
            j--;
        }
        sorted[j] = v;
    }
    for (int i = 0; i < n; i++) {
        dst[(size_t)i * dst_stride] = sorted[half];
        if (i + 1 == n) break;
        float out = AT(i - half), in = AT(i + half + 1);
        /* Replace `out` by `in` and restore order by shifting. */
        int lo = 0, hi = width - 1;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (sorted[mid] < out) lo = mid + 1;
            else hi = mid;
        }
        int j = lo;
        sorted[j] = in;
        while (j > 0 && sorted[j - 1] > sorted[j]) {
            float t = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = t;
            j--;
        }
        while (j + 1 < width && sorted[j + 1] < sorted[j]) {
            float t = sorted[j];
            sorted[j] = sorted[j + 1];
            sorted[j + 1] = t;
            j++;
        }
    }
#undef AT
}

typedef struct {
    const hpss_params *p;
    const d2m_audio *mix;
    d2m_audio *drums;
    int64_t n_blocks, block_len;
    atomic_llong next_block;
    atomic_llong done_blocks;
    atomic_int failed, cancelled;
} job;

static int process_block(job *j, int64_t block, stft_plan *plan)
{
    const hpss_params *p = j->p;
    const int64_t n = j->mix->frames;
    const int channels = j->mix->channels;
    const int bins = stft_bins(plan);
    const int half_h = p->harmonic_frames / 2, half_p = p->percussive_bins / 2;
    int64_t first = block * j->block_len;
    int64_t count = first + j->block_len > n ? n - first : j->block_len;
    int64_t total_frames = stft_frames(plan, n);
    /* Frames whose windows touch [first, first + count). */
    int64_t half = p->n_fft / 2;
    int64_t t_lo = (first + half - p->n_fft) / p->hop;
    if (first + half - p->n_fft < 0) t_lo = 0;
    int64_t t_hi = (first + count - 1 + half) / p->hop; /* inclusive */
    if (t_hi >= total_frames) t_hi = total_frames - 1;
    /* With context for the time median. */
    int64_t c_lo = t_lo - half_h < 0 ? 0 : t_lo - half_h;
    int64_t c_hi = t_hi + half_h >= total_frames ? total_frames - 1 : t_hi + half_h;
    int frames = (int)(c_hi - c_lo + 1);

    int rc = D2M_ERR_NOMEM;
    size_t spec_len = (size_t)frames * bins * 2;
    float *spec = malloc(spec_len * channels * sizeof *spec);      /* (channels, frames, bins, 2) */
    float *mag = malloc((size_t)frames * bins * sizeof *mag);      /* (frames, bins) */
    float *harm = malloc((size_t)frames * bins * sizeof *harm);    /* (frames, bins) */
    float *perc = malloc((size_t)frames * bins * sizeof *perc);    /* (frames, bins) */
    float *sorted = malloc((size_t)(2 * (half_h > half_p ? half_h : half_p) + 1) * sizeof *sorted);
    float *wave = malloc((size_t)count * sizeof *wave);            /* (count) one channel's output */
    if (!spec || !mag || !harm || !perc || !sorted || !wave) goto fail;

    for (int c = 0; c < channels; c++)
        for (int f = 0; f < frames; f++)
            stft_frame_strided(spec + c * spec_len + (size_t)f * bins * 2, j->mix->data + c,
                               channels, n, c_lo + f, plan);
    for (size_t i = 0; i < (size_t)frames * bins; i++) {
        float m = 0.0f;
        for (int c = 0; c < channels; c++) {
            const float *s = spec + c * spec_len + 2 * i;
            m += sqrtf(s[0] * s[0] + s[1] * s[1]);
        }
        mag[i] = m / (float)channels;
    }
    /* Medians. At the song's edges the mirror gives the same answer the
     * whole-signal filter would; inside the song the block has real context. */
    for (int k = 0; k < bins; k++)
        sliding_median(harm + k, bins, mag + k, bins, frames, half_h, sorted);
    for (int f = 0; f < frames; f++)
        sliding_median(perc + (size_t)f * bins, 1, mag + (size_t)f * bins, 1, bins, half_p, sorted);
    const float m2 = p->margin * p->margin;
    for (size_t i = 0; i < (size_t)frames * bins; i++) {
        float pp = perc[i] * perc[i], hh = harm[i] * harm[i];
        float denom = pp + m2 * hh;
        float mask = denom > 1e-20f ? pp / denom : 0.0f;
        for (int c = 0; c < channels; c++) {
            float *s = spec + c * spec_len + 2 * i;
            s[0] *= mask;
            s[1] *= mask;
        }
    }
    for (int c = 0; c < channels; c++) {
        stft_inverse(wave, spec + c * spec_len + (size_t)(t_lo - c_lo) * bins * 2, t_lo,
                     t_hi - t_lo + 1, n, first, count, plan);
        float *dst = j->drums->data + first * channels + c;
        for (int64_t i = 0; i < count; i++) dst[i * channels] = wave[i];
    }
    rc = 0;
fail:
    free(spec);
    free(mag);
    free(harm);
    free(perc);
    free(sorted);
    free(wave);
    return rc;
}

static void *worker(void *arg)
{
    job *j = arg;
    stft_plan *plan = stft_plan_new(j->p->n_fft, j->p->hop);
    if (!plan) {
        atomic_store(&j->failed, 1);
        return NULL;
    }
    for (;;) {
        if (atomic_load(&j->failed) || atomic_load(&j->cancelled)) break;
        long long b = atomic_fetch_add(&j->next_block, 1);
        if (b >= j->n_blocks) break;
        if (process_block(j, b, plan) != 0) {
            atomic_store(&j->failed, 1);
            break;
        }
        atomic_fetch_add(&j->done_blocks, 1);
    }
    stft_plan_free(plan);
    return NULL;
}

int hpss_separate(d2m_audio *drums, const d2m_audio *mix, const hpss_params *p,
                  separate_progress_fn progress, void *user, d2m_error *err)
{
    memset(drums, 0, sizeof *drums);
    if (p->n_fft < 64 || p->hop < 1 || p->hop > p->n_fft / 2 || p->harmonic_frames < 1 ||
        p->percussive_bins < 1 || !(p->harmonic_frames & 1) || !(p->percussive_bins & 1) ||
        p->margin < 1.0f || p->block_s <= 0)
        return d2m_fail(err, D2M_ERR_INVALID, "hpss: invalid parameters");
    if (mix->frames < 1 || mix->channels < 1)
        return d2m_fail(err, D2M_ERR_INVALID, "hpss: empty input");
    int rc = d2m_audio_alloc(drums, mix->frames, mix->channels, mix->sample_rate);
    if (rc) return d2m_fail(err, rc, "hpss: out of memory for the drum stem");
    job j = {.p = p, .mix = mix, .drums = drums};
    j.block_len = (int64_t)(p->block_s * mix->sample_rate);
    if (j.block_len < p->n_fft) j.block_len = p->n_fft;
    j.n_blocks = (mix->frames + j.block_len - 1) / j.block_len;
    atomic_init(&j.next_block, 0);
    atomic_init(&j.done_blocks, 0);
    atomic_init(&j.failed, 0);
    atomic_init(&j.cancelled, 0);

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int n_threads = cpus < 1 ? 1 : cpus > 8 ? 8 : (int)cpus;
    if (n_threads > j.n_blocks) n_threads = (int)j.n_blocks;
    pthread_t threads[8];
    int started = 0;
    for (int t = 0; t < n_threads; t++) {
        if (pthread_create(&threads[t], NULL, worker, &j) != 0) break;
        started++;
    }
    if (started == 0) worker(&j);
    /* Report progress while the workers run. */
    while (started > 0) {
        long long done = atomic_load(&j.done_blocks);
        if (progress && progress(user, (double)done / (double)j.n_blocks) != 0)
            atomic_store(&j.cancelled, 1);
        if (done >= j.n_blocks || atomic_load(&j.failed) || atomic_load(&j.cancelled)) break;
        nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
    }
    for (int t = 0; t < started; t++) pthread_join(threads[t], NULL);
    if (atomic_load(&j.cancelled)) {
        rc = d2m_fail(err, D2M_ERR_CANCELLED, "separation cancelled");
        goto done;
    }
    if (atomic_load(&j.failed)) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "hpss: out of memory in a block");
        goto done;
    }
    if (progress) progress(user, 1.0);
    return 0;
done:
    d2m_audio_free(drums);
    return rc;
}
