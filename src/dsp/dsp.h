/* DSP layer: STFT, filters and the per-frame features every analysis stage reads. */
#ifndef D2M_DSP_H
#define D2M_DSP_H

#include "audio/audio.h"
#include "base/base.h"

#include <stdint.h>

/* Index i mirrored into [0, n) without repeating the edge sample (NumPy's
 * and torch's "reflect" padding); indices further out keep reflecting. */
static inline int64_t dsp_reflect_index(int64_t i, int64_t n)
{
    if (n == 1) return 0;
    int64_t period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

/* ---- STFT (FFTW3, single precision) ------------------------------------
 * Frames are centred like torch.stft(center=True, pad_mode="reflect"):
 * frame t covers samples [t*hop - n_fft/2, t*hop + n_fft/2), periodic Hann
 * window, no normalisation on the forward transform; stft_inverse divides by
 * the summed squared window so forward then inverse is the identity.
 * A plan owns its FFTW plans and scratch: one plan per thread. */
typedef struct stft_plan stft_plan;

stft_plan *stft_plan_new(int n_fft, int hop);
void stft_plan_free(stft_plan *p);
int stft_bins(const stft_plan *p);                 /* n_fft/2 + 1 */
int64_t stft_frames(const stft_plan *p, int64_t n); /* n/hop + 1 */

/* One frame: dst (bins, 2) = re/im of frame t of x (n). */
void stft_frame(float *dst, const float *x, int64_t n, int64_t t, stft_plan *p);
/* The same on one channel of interleaved audio: sample i is x[i * stride]. */
void stft_frame_strided(float *dst, const float *x, int stride, int64_t n, int64_t t,
                        stft_plan *p);

/* The same from a window of the signal: x holds samples [x_first, ...) of
 * the length-n signal, every sample frame t reads (mirrored ones included). */
void stft_frame_window(float *dst, const float *x, int stride, int64_t x_first, int64_t n,
                       int64_t t, stft_plan *p);

/* Whole signal: dst (frames, bins, 2). */
void stft_forward(float *dst, const float *x, int64_t n, stft_plan *p);

/* Overlap-add inverse: dst (count) = samples [first, first + count) of the
 * signal (length n) whose frames [t0, t0 + frames) are spec (frames, bins, 2).
 * The frames passed must include every frame touching that range. */
void stft_inverse(float *dst, const float *spec, int64_t t0, int64_t frames, int64_t n,
                  int64_t first, int64_t count, stft_plan *p);

/* ---- Filters ------------------------------------------------------------- */

/* 4th-order Butterworth low-pass (two biquads, bilinear transform), in place
 * over x (n), run forward then backward so it adds no delay. */
void filter_lowpass(float *x, int64_t n, double cutoff_hz, int sample_rate);

/* filter_lowpass in pieces, for a signal too long to hold: start a pass,
 * then hand it consecutive blocks in place, from the start for the forward
 * pass, from the end for the backward one (whose blocks come last first).
 * The forward pass over the whole signal, then the backward pass over its
 * output, equal filter_lowpass exactly. */
typedef struct {
    double z1, z2;
    int started;
} lowpass_section_state;

typedef struct {
    double cutoff_hz;
    int sample_rate, backward;
    lowpass_section_state sections[2];
} lowpass_pass;

void filter_lowpass_start(lowpass_pass *p, double cutoff_hz, int sample_rate, int backward);
void filter_lowpass_block(lowpass_pass *p, float *x, int64_t n);

/* ---- Per-frame features -------------------------------------------------- */

/* Bands the drum analysis works in. */
enum {
    BAND_SUB = 0,   /*    20 -   150 Hz: kick */
    BAND_LOW = 1,   /*   150 -   400 Hz: snare and tom bodies */
    BAND_MID = 2,   /*   400 -  2000 Hz */
    BAND_PRES = 3,  /*  2000 -  6000 Hz: snare wires, stick */
    BAND_AIR = 4,   /*  6000 - 20000 Hz: hats, cymbals */
    D2M_NBANDS = 5
};
extern const double d2m_band_edges_hz[D2M_NBANDS + 1];

/* Features of a mono signal on frames every hop samples (frame t centred on
 * sample t*hop). Computed in one streaming pass: memory is O(frames), never
 * O(frames x bins). */
typedef struct {
    int64_t frames;
    int hop, n_fft, sample_rate;
    double frame_rate;               /* frames per second */
    float *flux;                     /* (frames) log-magnitude spectral flux, all bins */
    float *band_flux[D2M_NBANDS];    /* (frames) the same within each band */
    float *band_energy[D2M_NBANDS];  /* (frames) power summed within each band */
    float *centroid;                 /* (frames) spectral centroid, Hz */
    float *rms;                      /* (frames) frame RMS of the signal */
} d2m_features;

int features_compute(d2m_features *out, const float *x, int64_t n, int sample_rate, int n_fft,
                     int hop, d2m_error *err);
/* The same, reading a mono signal through a reader a block at a time (the
 * same features): a long signal on disk is never loaded whole. Returns 0,
 * D2M_ERR_INVALID, D2M_ERR_NOMEM or the reader's code. */
int features_compute_read(d2m_features *out, const audio_reader *x, int n_fft, int hop,
                          d2m_error *err);
void features_free(d2m_features *f);

/* Frame index to seconds and back. */
double features_time(const d2m_features *f, double frame);

#endif
