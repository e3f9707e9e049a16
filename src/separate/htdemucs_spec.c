/* The STFT and inverse STFT exactly as HTDemucs uses them (upstream
 * demucs/htdemucs.py _spec/_ispec over demucs/spec.py, on torch 1.13's
 * stft/istft with center=True, reflect padding, normalized=True).
 *
 * Forward, for a segment of L samples, le = ceil(L / hop) frames: reflect-pad
 * by 3*hop/2 on the left and 3*hop/2 + le*hop - L on the right, then
 * torch.stft's own reflect pad of nfft/2 on both sides (two successive
 * reflections, not one longer one), frames every hop, periodic Hann window,
 * scale 1/sqrt(nfft); keep bins [0, nfft/2) and frames [2, 2 + le).
 * Output complex-as-channels (4, bins, le): L.re, L.im, R.re, R.im.
 *
 * Inverse: the bins back to complex, a zero Nyquist bin and two zero frames
 * on each side; each frame is the Hermitian sum scaled by 1/sqrt(nfft),
 * windowed and overlap-added, the sum divided by the overlap-added squared
 * window (every frame counted, the zero ones too), and the result cropped
 * to [3*hop/2, 3*hop/2 + L) after torch's nfft/2 centre trim.
 *
 * FFTW plans are made once per engine under the process-wide library lock
 * (FFTW's planner is not thread-safe; dsp/stft.c takes the same lock) and run with the new-array interface. Frames go FRAME_BLOCK
 * at a time through per-thread scratch so that the (bins, frames) layout
 * is read and written in contiguous runs.
 *
 * Threading: tasks on the backend's threads (the STFT by channel and block
 * of frames, the inverse by source and channel), each writing its own
 * part of the output.
 */
#include "htdemucs_internal.h"

#include "dsp/dsp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Sample u of the twice-padded signal, as an index into the input (L). */
static int64_t source_index(const htdemucs *m, int64_t u)
{
    int64_t pad = 3 * m->hop / 2;
    int64_t padded1 = (int64_t)m->frames * m->hop + 2 * pad; /* after the first pad */
    int64_t v = dsp_reflect_index(u - m->nfft / 2, padded1);
    return dsp_reflect_index(v - pad, m->length);
}

enum { FRAME_BLOCK = 16 }; /* frames transformed per step, for contiguous (bins, frames) access */

int ht_spec_init(htdemucs *m)
{
    int n = m->nfft, threads = m->be->n_threads;
    m->window = malloc((size_t)n * sizeof(float));
    m->istft_env = malloc((size_t)m->length * sizeof(float));
    m->padded_len = (int64_t)m->frames * m->hop + 3 * m->hop + n;
    m->padded = malloc((size_t)2 * m->padded_len * sizeof(float));
    /* per thread: FRAME_BLOCK spectra of n + 2 floats, and one time frame */
    m->spec_scratch_floats = (size_t)(FRAME_BLOCK + 1) * (n + 16);
    m->spec_scratch = fftwf_malloc(m->spec_scratch_floats * threads * sizeof(float));
    if (!m->window || !m->istft_env || !m->padded || !m->spec_scratch) return D2M_ERR_NOMEM;
    for (int i = 0; i < n; i++) m->window[i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / n));
    float *frame = m->spec_scratch, *bins = frame + n + 16;
    d2m_library_lock();
    m->fft_forward = fftwf_plan_dft_r2c_1d(n, frame, (fftwf_complex *)bins, FFTW_ESTIMATE);
    m->fft_inverse = fftwf_plan_dft_c2r_1d(n, (fftwf_complex *)bins, frame, FFTW_ESTIMATE);
    d2m_library_unlock();
    if (!m->fft_forward || !m->fft_inverse) return D2M_ERR_NOMEM;
    /* torch.istft's envelope counts every frame, the zero ones included:
     * frames t' = 0 .. le+3 start at t' * hop of the padded signal, and
     * output sample j sits at u = nfft/2 + 3*hop/2 + j there. */
    int64_t total_frames = m->frames + 4;
    for (int64_t j = 0; j < m->length; j++) {
        int64_t u = n / 2 + 3 * m->hop / 2 + j;
        float env = 0.0f;
        int64_t t_hi = u / m->hop, t_lo = (u - n) / m->hop + 1;
        if (u - n < 0) t_lo = 0;
        if (t_hi > total_frames - 1) t_hi = total_frames - 1;
        for (int64_t t = t_lo; t <= t_hi; t++) {
            float w = m->window[u - t * m->hop];
            env += w * w;
        }
        m->istft_env[j] = env;
    }
    return 0;
}

void ht_spec_free(htdemucs *m)
{
    d2m_library_lock();
    if (m->fft_forward) fftwf_destroy_plan(m->fft_forward);
    if (m->fft_inverse) fftwf_destroy_plan(m->fft_inverse);
    d2m_library_unlock();
    fftwf_free(m->spec_scratch);
    free(m->padded);
    free(m->window);
    free(m->istft_env);
}

typedef struct {
    htdemucs *m;
    float *dst;
    const float *src;
    int blocks; /* frame blocks per channel */
} spec_job;

static void stft_task(void *ctx, int task, int thread)
{
    spec_job *j = ctx;
    htdemucs *m = j->m;
    int n = m->nfft, bins = m->bins, le = m->frames, c = task / j->blocks;
    int j0 = (task % j->blocks) * FRAME_BLOCK, nb = le - j0 < FRAME_BLOCK ? le - j0 : FRAME_BLOCK;
    float *frame = m->spec_scratch + (size_t)thread * m->spec_scratch_floats;
    float *block = frame + n + 16; /* (FRAME_BLOCK, n + 16): complex bins per frame */
    const float *x = m->padded + c * m->padded_len;
    const float scale = 1.0f / sqrtf((float)n);
    for (int k = 0; k < nb; k++) {
        const float *src = x + (int64_t)(j0 + k + 2) * m->hop; /* frame j + 2 of the padding */
        for (int i = 0; i < n; i++) frame[i] = src[i] * m->window[i];
        fftwf_execute_dft_r2c(m->fft_forward, frame, (fftwf_complex *)(block + (size_t)k * (n + 16)));
    }
    float *re = j->dst + (int64_t)(2 * c) * bins * le, *im = re + (int64_t)bins * le;
    for (int f = 0; f < bins; f++)
        for (int k = 0; k < nb; k++) {
            const float *b = block + (size_t)k * (n + 16) + 2 * f;
            re[(int64_t)f * le + j0 + k] = b[0] * scale;
            im[(int64_t)f * le + j0 + k] = b[1] * scale;
        }
}

void ht_stft(htdemucs *m, float *spec, const float *in)
{
    /* The twice-padded channels; only the ends need the reflections. */
    int64_t off = m->nfft / 2 + 3 * m->hop / 2; /* input sample 0 in padded coordinates */
    for (int c = 0; c < m->audio_channels; c++) {
        float *p = m->padded + c * m->padded_len;
        const float *x = in + c * m->length;
        for (int64_t u = 0; u < m->padded_len; u++) {
            int64_t i = u - off;
            p[u] = i >= 0 && i < m->length ? x[i] : x[source_index(m, u)];
        }
    }
    spec_job j = {m, spec, in, (m->frames + FRAME_BLOCK - 1) / FRAME_BLOCK};
    m->be->parallel(m->be, stft_task, &j, m->audio_channels * j.blocks);
}

static void istft_task(void *ctx, int task, int thread)
{
    spec_job *j = ctx;
    htdemucs *m = j->m;
    int n = m->nfft, bins = m->bins, le = m->frames, hop = m->hop;
    int source = task / m->audio_channels, c = task % m->audio_channels;
    float *frame = m->spec_scratch + (size_t)thread * m->spec_scratch_floats;
    float *block = frame + n + 16;
    const float *re = j->src + ((int64_t)source * 2 * m->audio_channels + 2 * c) * bins * le;
    const float *im = re + (int64_t)bins * le;
    float *acc = j->dst + ((int64_t)source * m->audio_channels + c) * m->length;
    const float scale = 1.0f / sqrtf((float)n);
    int64_t offset = n / 2 + 3 * hop / 2; /* output sample 0 in padded coordinates */
    memset(acc, 0, (size_t)m->length * sizeof *acc);
    for (int j0 = 0; j0 < le; j0 += FRAME_BLOCK) {
        int nb = le - j0 < FRAME_BLOCK ? le - j0 : FRAME_BLOCK;
        for (int f = 0; f < bins; f++)
            for (int k = 0; k < nb; k++) {
                float *b = block + (size_t)k * (n + 16) + 2 * f;
                b[0] = re[(int64_t)f * le + j0 + k];
                b[1] = im[(int64_t)f * le + j0 + k];
            }
        for (int k = 0; k < nb; k++) {
            float *b = block + (size_t)k * (n + 16);
            b[2 * bins] = b[2 * bins + 1] = 0.0f; /* the Nyquist bin */
            fftwf_execute_dft_c2r(m->fft_inverse, (fftwf_complex *)b, frame);
            int64_t start = (int64_t)(j0 + k + 2) * hop - offset; /* in output coordinates */
            int i0 = start < 0 ? (int)-start : 0;
            int i1 = start + n > m->length ? (int)(m->length - start) : n;
            for (int i = i0; i < i1; i++) acc[start + i] += frame[i] * scale * m->window[i];
        }
    }
    for (int64_t s = 0; s < m->length; s++) acc[s] /= m->istft_env[s];
}

void ht_istft(htdemucs *m, float *out, const float *z)
{
    spec_job j = {m, out, z, 0};
    m->be->parallel(m->be, istft_task, &j, m->sources * m->audio_channels);
}
