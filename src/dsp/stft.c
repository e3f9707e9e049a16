/* Short-time Fourier transform on FFTW3 (single precision, real-to-complex).
 *
 * Layout: a frame is (bins, 2) floats, re then im; a spectrogram is
 * (frames, bins, 2). Frames are centred like torch.stft(center=True,
 * pad_mode="reflect"): frame t's window starts at sample t*hop - n_fft/2 and
 * samples outside [0, n) are mirrored (without repeating the edge sample).
 * Periodic Hann window. The inverse is weighted overlap-add divided by the
 * summed squared window (librosa/torch istft), so forward-then-inverse is the
 * identity wherever the window sum is non-zero.
 *
 * Threading: FFTW planning is not thread-safe, so plans are created under
 * the process-wide library lock (base.h), shared with the Demucs engine; a
 * plan then owns its scratch and must be used by one thread at a time.
 */
#include "dsp.h"

#include <fftw3.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct stft_plan {
    int n_fft, hop, bins;
    float *window;  /* (n_fft) */
    float *time;    /* (n_fft) scratch, FFTW-aligned */
    fftwf_complex *freq; /* (bins) scratch, FFTW-aligned */
    fftwf_plan forward, inverse;
};

stft_plan *stft_plan_new(int n_fft, int hop)
{
    if (n_fft < 16 || (n_fft & 1) || hop < 1 || hop > n_fft) return NULL;
    stft_plan *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n_fft = n_fft;
    p->hop = hop;
    p->bins = n_fft / 2 + 1;
    p->window = malloc((size_t)n_fft * sizeof *p->window);
    p->time = fftwf_malloc((size_t)n_fft * sizeof *p->time);
    p->freq = fftwf_malloc((size_t)p->bins * sizeof *p->freq);
    if (!p->window || !p->time || !p->freq) goto fail;
    for (int i = 0; i < n_fft; i++)
        p->window[i] = (float)(0.5 - 0.5 * cos(2.0 * M_PI * i / n_fft));
    d2m_library_lock();
    p->forward = fftwf_plan_dft_r2c_1d(n_fft, p->time, p->freq, FFTW_ESTIMATE);
    p->inverse = fftwf_plan_dft_c2r_1d(n_fft, p->freq, p->time, FFTW_ESTIMATE);
    d2m_library_unlock();
    if (!p->forward || !p->inverse) goto fail;
    return p;
fail:
    stft_plan_free(p);
    return NULL;
}

void stft_plan_free(stft_plan *p)
{
    if (!p) return;
    d2m_library_lock();
    if (p->forward) fftwf_destroy_plan(p->forward);
    if (p->inverse) fftwf_destroy_plan(p->inverse);
    d2m_library_unlock();
    fftwf_free(p->time);
    fftwf_free(p->freq);
    free(p->window);
    free(p);
}

int stft_bins(const stft_plan *p) { return p->bins; }

int64_t stft_frames(const stft_plan *p, int64_t n) { return n / p->hop + 1; }

void stft_frame_window(float *dst, const float *x, int stride, int64_t x_first, int64_t n,
                       int64_t t, stft_plan *p)
{
    int64_t start = t * p->hop - p->n_fft / 2;
    if (start >= 0 && start + p->n_fft <= n) {
        const float *src = x + (start - x_first) * stride;
        for (int i = 0; i < p->n_fft; i++) p->time[i] = src[(int64_t)i * stride] * p->window[i];
    } else {
        for (int i = 0; i < p->n_fft; i++)
            p->time[i] = x[(dsp_reflect_index(start + i, n) - x_first) * stride] * p->window[i];
    }
    fftwf_execute(p->forward);
    memcpy(dst, p->freq, (size_t)p->bins * 2 * sizeof *dst);
}

void stft_frame_strided(float *dst, const float *x, int stride, int64_t n, int64_t t,
                        stft_plan *p)
{
    stft_frame_window(dst, x, stride, 0, n, t, p);
}

void stft_frame(float *dst, const float *x, int64_t n, int64_t t, stft_plan *p)
{
    stft_frame_strided(dst, x, 1, n, t, p);
}

void stft_forward(float *dst, const float *x, int64_t n, stft_plan *p)
{
    int64_t frames = stft_frames(p, n);
    for (int64_t t = 0; t < frames; t++) stft_frame(dst + t * p->bins * 2, x, n, t, p);
}

void stft_inverse(float *dst, const float *spec, int64_t t0, int64_t frames, int64_t n,
                  int64_t first, int64_t count, stft_plan *p)
{
    const int half = p->n_fft / 2;
    const float scale = 1.0f / (float)p->n_fft; /* FFTW's inverse is unnormalised */
    for (int64_t i = 0; i < count; i++) dst[i] = 0.0f;
    for (int64_t f = 0; f < frames; f++) {
        int64_t start = (t0 + f) * p->hop - half;
        if (start + p->n_fft <= first || start >= first + count) continue;
        memcpy(p->freq, spec + f * p->bins * 2, (size_t)p->bins * 2 * sizeof(float));
        fftwf_execute(p->inverse);
        int i0 = (int)(start < first ? first - start : 0);
        int i1 = (int)(start + p->n_fft > first + count ? first + count - start : p->n_fft);
        for (int i = i0; i < i1; i++) dst[start + i - first] += p->time[i] * scale * p->window[i];
    }
    /* Divide by the summed squared window of every frame touching the sample,
     * including frames outside [t0, t0+frames) that the caller chose not to
     * pass: those samples are outside the fully determined range anyway. */
    int64_t total_frames = stft_frames(p, n);
    for (int64_t s = first; s < first + count; s++) {
        int64_t shifted = s + half;
        int64_t f_hi = shifted / p->hop;
        int64_t f_lo = (shifted - p->n_fft) / p->hop + 1;
        if (shifted - p->n_fft < 0) f_lo = 0;
        if (f_hi >= total_frames) f_hi = total_frames - 1;
        double wsum = 0.0;
        for (int64_t f = f_lo; f <= f_hi; f++) {
            int64_t i = shifted - f * p->hop;
            if (i >= 0 && i < p->n_fft) wsum += (double)p->window[i] * p->window[i];
        }
        dst[s - first] = wsum > 1e-8 ? (float)(dst[s - first] / wsum) : 0.0f;
    }
}
