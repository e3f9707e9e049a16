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
 * Each block reads the input it needs through an audio_reader and its
 * output goes to the caller's writer in order, so memory is O(block x
 * threads) whatever the song's length; channels are read and written
 * interleaved through a stride.
 *
 * Threading: blocks are independent; worker threads take the blocks of one
 * wave (as many blocks as threads) through an atomic counter, the calling
 * thread then writes the wave's outputs in order, so the result does not
 * depend on the thread count. Progress is reported from the calling thread.
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

enum { MAX_THREADS = 8 };

typedef struct {
    const hpss_params *p;
    const audio_reader *mix;
    int64_t n_blocks, block_len;
    int64_t wave_first;               /* the wave's first block */
    float *outputs[MAX_THREADS];      /* (block_len, channels) per block of the wave */
    atomic_llong next_block;
    atomic_llong done_blocks;
    atomic_int failed, cancelled;
    d2m_error error;                  /* the first failure's message */
    atomic_flag error_taken;
} job;

static int process_block(job *j, int64_t block, stft_plan *plan, d2m_error *err)
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
    /* Input samples [in_lo, in_hi) hold every sample those frames read: a
     * whole window around them, and at the song's ends the mirrored ones
     * (within n_fft of the end they mirror from). */
    int64_t in_lo = c_lo * p->hop - p->n_fft, in_hi = c_hi * p->hop + p->n_fft;
    if (in_lo < 0) in_lo = 0;
    if (in_hi > n) in_hi = n;

    int rc = D2M_ERR_NOMEM;
    size_t spec_len = (size_t)frames * bins * 2;
    float *input = malloc((size_t)(in_hi - in_lo) * channels * sizeof *input); /* (in_hi - in_lo, channels) */
    float *spec = malloc(spec_len * channels * sizeof *spec);      /* (channels, frames, bins, 2) */
    float *mag = malloc((size_t)frames * bins * sizeof *mag);      /* (frames, bins) */
    float *harm = malloc((size_t)frames * bins * sizeof *harm);    /* (frames, bins) */
    float *perc = malloc((size_t)frames * bins * sizeof *perc);    /* (frames, bins) */
    float *sorted = malloc((size_t)(2 * (half_h > half_p ? half_h : half_p) + 1) * sizeof *sorted);
    float *wave = malloc((size_t)count * sizeof *wave);            /* (count) one channel's output */
    if (!input || !spec || !mag || !harm || !perc || !sorted || !wave) {
        d2m_fail(err, rc, "hpss: out of memory in a block");
        goto fail;
    }
    if ((rc = j->mix->read(j->mix->user, input, in_lo, in_hi - in_lo, err))) goto fail;

    for (int c = 0; c < channels; c++)
        for (int f = 0; f < frames; f++)
            stft_frame_window(spec + c * spec_len + (size_t)f * bins * 2, input + c, channels,
                              in_lo, n, c_lo + f, plan);
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
        float *dst = j->outputs[block - j->wave_first] + c;
        for (int64_t i = 0; i < count; i++) dst[i * channels] = wave[i];
    }
    rc = 0;
fail:
    free(input);
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
    d2m_error err = {0};
    stft_plan *plan = stft_plan_new(j->p->n_fft, j->p->hop);
    int rc = plan ? 0 : d2m_fail(&err, D2M_ERR_NOMEM, "hpss: out of memory for an STFT plan");
    const int64_t wave_end = j->wave_first + MAX_THREADS < j->n_blocks ? j->wave_first + MAX_THREADS
                                                                       : j->n_blocks;
    while (rc == 0) {
        if (atomic_load(&j->failed) || atomic_load(&j->cancelled)) break;
        long long b = atomic_fetch_add(&j->next_block, 1);
        if (b >= wave_end) break;
        if ((rc = process_block(j, b, plan, &err))) break;
        atomic_fetch_add(&j->done_blocks, 1);
    }
    if (rc) {
        atomic_store(&j->failed, 1);
        if (!atomic_flag_test_and_set(&j->error_taken)) j->error = err;
    }
    stft_plan_free(plan);
    return NULL;
}

int hpss_separate_stream(const audio_reader *mix, audio_block_fn write, void *write_user,
                         const hpss_params *p, separate_progress_fn progress, void *user,
                         d2m_error *err)
{
    if (p->n_fft < 64 || p->hop < 1 || p->hop > p->n_fft / 2 || p->harmonic_frames < 1 ||
        p->percussive_bins < 1 || !(p->harmonic_frames & 1) || !(p->percussive_bins & 1) ||
        p->margin < 1.0f || p->block_s <= 0)
        return d2m_fail(err, D2M_ERR_INVALID, "hpss: invalid parameters");
    if (mix->frames < 1 || mix->channels < 1)
        return d2m_fail(err, D2M_ERR_INVALID, "hpss: empty input");
    job j = {.p = p, .mix = mix};
    j.block_len = (int64_t)(p->block_s * mix->sample_rate);
    if (j.block_len < p->n_fft) j.block_len = p->n_fft;
    j.n_blocks = (mix->frames + j.block_len - 1) / j.block_len;
    atomic_init(&j.next_block, 0);
    atomic_init(&j.done_blocks, 0);
    atomic_init(&j.failed, 0);
    atomic_init(&j.cancelled, 0);
    atomic_flag_clear(&j.error_taken);

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int n_threads = cpus < 1 ? 1 : cpus > MAX_THREADS ? MAX_THREADS : (int)cpus;
    if (n_threads > j.n_blocks) n_threads = (int)j.n_blocks;
    /* A wave is MAX_THREADS blocks whatever the thread count, so the blocks
     * (and the writes) are the same on every machine. */
    int wave_blocks = j.n_blocks < MAX_THREADS ? (int)j.n_blocks : MAX_THREADS;
    int rc = 0;
    for (int b = 0; b < wave_blocks && !rc; b++) {
        j.outputs[b] = malloc((size_t)j.block_len * mix->channels * sizeof *j.outputs[b]);
        if (!j.outputs[b]) rc = d2m_fail(err, D2M_ERR_NOMEM, "hpss: out of memory for the output");
    }
    for (j.wave_first = 0; j.wave_first < j.n_blocks && !rc; j.wave_first += MAX_THREADS) {
        pthread_t threads[MAX_THREADS];
        int started = 0;
        atomic_store(&j.next_block, j.wave_first);
        for (int t = 0; t < n_threads; t++) {
            if (pthread_create(&threads[t], NULL, worker, &j) != 0) break;
            started++;
        }
        if (started == 0) worker(&j);
        /* Report progress while the workers run. */
        const int64_t wave_end =
            j.wave_first + MAX_THREADS < j.n_blocks ? j.wave_first + MAX_THREADS : j.n_blocks;
        while (started > 0) {
            long long done = atomic_load(&j.done_blocks);
            if (progress && progress(user, (double)done / (double)j.n_blocks) != 0)
                atomic_store(&j.cancelled, 1);
            if (done >= wave_end || atomic_load(&j.failed) || atomic_load(&j.cancelled)) break;
            nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
        }
        for (int t = 0; t < started; t++) pthread_join(threads[t], NULL);
        if (atomic_load(&j.cancelled)) {
            rc = d2m_fail(err, D2M_ERR_CANCELLED, "separation cancelled");
            break;
        }
        if (atomic_load(&j.failed)) {
            *err = j.error;
            rc = j.error.code ? j.error.code : D2M_ERR_NOMEM;
            break;
        }
        for (int64_t b = j.wave_first; b < wave_end && !rc; b++) {
            int64_t first = b * j.block_len;
            int64_t count = first + j.block_len > mix->frames ? mix->frames - first : j.block_len;
            rc = write(write_user, j.outputs[b - j.wave_first], count, err);
        }
    }
    for (int b = 0; b < wave_blocks; b++) free(j.outputs[b]);
    if (rc == 0 && progress) progress(user, 1.0);
    return rc;
}

/* ---- Whole songs in memory ------------------------------------------------------ */

typedef struct {
    d2m_audio *drums;
    int64_t written;
} memory_output;

static int write_memory(void *user, const float *x, int64_t frames, d2m_error *err)
{
    memory_output *o = user;
    const int c = o->drums->channels;
    memcpy(o->drums->data + o->written * c, x, (size_t)(frames * c) * sizeof *x);
    o->written += frames;
    return 0;
}

int hpss_separate(d2m_audio *drums, const d2m_audio *mix, const hpss_params *p,
                  separate_progress_fn progress, void *user, d2m_error *err)
{
    memset(drums, 0, sizeof *drums);
    if (mix->frames < 1 || mix->channels < 1)
        return d2m_fail(err, D2M_ERR_INVALID, "hpss: empty input");
    int rc = d2m_audio_alloc(drums, mix->frames, mix->channels, mix->sample_rate);
    if (rc) return d2m_fail(err, rc, "hpss: out of memory for the drum stem");
    audio_reader reader = audio_reader_of(mix);
    memory_output out = {.drums = drums};
    rc = hpss_separate_stream(&reader, write_memory, &out, p, progress, user, err);
    if (rc) d2m_audio_free(drums);
    return rc;
}
