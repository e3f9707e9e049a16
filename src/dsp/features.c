/* Per-frame features of a mono signal in one streaming STFT pass: spectral
 * flux (all bins and per band), band energies, centroid and RMS.
 *
 * Flux follows the log-compressed spectral flux of Klapuri 1999 / Dixon
 * 2006: magnitudes are scaled to sine amplitude, compressed with
 * log(1 + 1000 |X|), and positive differences to the previous frame are
 * summed; the frame before the first is silence. Memory is O(frames);
 * the spectrum of one frame lives in scratch, and the signal is read
 * through an audio_reader a block of frames (plus a window) at a time, so
 * a signal kept on disk is never loaded whole. Single-threaded.
 */
#include "dsp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const double d2m_band_edges_hz[D2M_NBANDS + 1] = {20.0, 150.0, 400.0, 2000.0, 6000.0, 20000.0};

void features_free(d2m_features *f)
{
    if (!f) return;
    free(f->flux);
    for (int b = 0; b < D2M_NBANDS; b++) {
        free(f->band_flux[b]);
        free(f->band_energy[b]);
    }
    free(f->centroid);
    free(f->rms);
    memset(f, 0, sizeof *f);
}

double features_time(const d2m_features *f, double frame) { return frame / f->frame_rate; }

enum { BLOCK_FRAMES = 2048 };

int features_compute_read(d2m_features *out, const audio_reader *x, int n_fft, int hop,
                          d2m_error *err)
{
    memset(out, 0, sizeof *out);
    const int64_t n = x->frames;
    const int sample_rate = x->sample_rate;
    if (n < 1 || sample_rate < 1000 || x->channels != 1)
        return d2m_fail(err, D2M_ERR_INVALID, "features: empty signal, bad sample rate or not mono");
    stft_plan *plan = stft_plan_new(n_fft, hop);
    if (!plan) return d2m_fail(err, D2M_ERR_NOMEM, "features: cannot create an STFT plan");
    int bins = stft_bins(plan);
    int64_t frames = stft_frames(plan, n);
    /* Samples a block of frames reads: its windows and RMS spans, and at the
     * signal's ends the mirrored samples (within n_fft of the end). */
    const int64_t block_cap = (int64_t)(BLOCK_FRAMES - 1) * hop + 2 * (int64_t)n_fft;
    float *block = malloc((size_t)(block_cap < n ? block_cap : n) * sizeof *block); /* (block samples) */
    float *spec = malloc((size_t)bins * 2 * sizeof *spec);      /* (bins, 2) */
    float *logmag = malloc((size_t)bins * 2 * sizeof *logmag);  /* (2, bins) current, previous */
    int *band_of = malloc((size_t)bins * sizeof *band_of);      /* (bins) band index or -1 */
    int rc = 0;
    out->frames = frames;
    out->hop = hop;
    out->n_fft = n_fft;
    out->sample_rate = sample_rate;
    out->frame_rate = (double)sample_rate / hop;
    size_t fsz = (size_t)frames * sizeof(float);
    out->flux = calloc(1, fsz);
    out->centroid = calloc(1, fsz);
    out->rms = calloc(1, fsz);
    int ok = block && spec && logmag && band_of && out->flux && out->centroid && out->rms;
    for (int b = 0; b < D2M_NBANDS; b++) {
        out->band_flux[b] = calloc(1, fsz);
        out->band_energy[b] = calloc(1, fsz);
        ok = ok && out->band_flux[b] && out->band_energy[b];
    }
    if (!ok) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "features: out of memory for %lld frames",
                      (long long)frames);
        goto fail;
    }

    for (int k = 0; k < bins; k++) {
        double hz = (double)k * sample_rate / n_fft;
        band_of[k] = -1;
        for (int b = 0; b < D2M_NBANDS; b++)
            if (hz >= d2m_band_edges_hz[b] && hz < d2m_band_edges_hz[b + 1]) band_of[k] = b;
    }
    /* |X| of a full-scale sine under a Hann window is n_fft/4. */
    const float to_amplitude = 4.0f / (float)n_fft;
    float *cur = logmag, *prev = logmag + bins;
    /* Silence before the signal: a sound that starts with the file is an
     * onset at frame 0 (its first frames all hold it, so no later frame
     * would show the rise). */
    for (int k = 0; k < bins; k++) prev[k] = 0.0f;
    for (int64_t t0 = 0; t0 < frames; t0 += BLOCK_FRAMES) {
        int64_t t1 = t0 + BLOCK_FRAMES < frames ? t0 + BLOCK_FRAMES : frames;
        int64_t first = t0 * hop - n_fft, last = (t1 - 1) * hop + n_fft;
        if (first < 0) first = 0;
        if (last > n) last = n;
        if ((rc = x->read(x->user, block, first, last - first, err))) goto fail;
        for (int64_t t = t0; t < t1; t++) {
            stft_frame_window(spec, block, 1, first, n, t, plan);
            double flux = 0.0, band_flux[D2M_NBANDS] = {0}, band_energy[D2M_NBANDS] = {0};
            double weighted = 0.0, total = 0.0;
            for (int k = 0; k < bins; k++) {
                float re = spec[2 * k] * to_amplitude, im = spec[2 * k + 1] * to_amplitude;
                float power = re * re + im * im;
                float amp = sqrtf(power);
                cur[k] = log1pf(1000.0f * amp);
                float rise = cur[k] - prev[k];
                int b = band_of[k];
                if (b >= 0) {
                    band_energy[b] += power;
                    if (rise > 0) band_flux[b] += rise;
                    weighted += amp * ((double)k * sample_rate / n_fft);
                    total += amp;
                }
                if (rise > 0) flux += rise;
            }
            out->flux[t] = (float)flux;
            for (int b = 0; b < D2M_NBANDS; b++) {
                out->band_flux[b][t] = (float)band_flux[b];
                out->band_energy[b][t] = (float)band_energy[b];
            }
            out->centroid[t] = total > 1e-12 ? (float)(weighted / total) : 0.0f;
            /* RMS over the hop centred on the frame. */
            int64_t s0 = t * hop - hop / 2, s1 = s0 + hop;
            if (s0 < 0) s0 = 0;
            if (s1 > n) s1 = n;
            double sum = 0.0;
            for (int64_t s = s0; s < s1; s++) sum += (double)block[s - first] * block[s - first];
            out->rms[t] = s1 > s0 ? (float)sqrt(sum / (double)(s1 - s0)) : 0.0f;
            float *swap = cur;
            cur = prev;
            prev = swap;
        }
    }
fail:
    free(block);
    free(spec);
    free(logmag);
    free(band_of);
    stft_plan_free(plan);
    if (rc) features_free(out);
    return rc;
}

int features_compute(d2m_features *out, const float *x, int64_t n, int sample_rate, int n_fft,
                     int hop, d2m_error *err)
{
    memset(out, 0, sizeof *out);
    if (n < 1 || sample_rate < 1000)
        return d2m_fail(err, D2M_ERR_INVALID, "features: empty signal or bad sample rate");
    d2m_audio signal = {.data = (float *)x, .frames = n, .channels = 1, .sample_rate = sample_rate};
    audio_reader reader = audio_reader_of(&signal);
    return features_compute_read(out, &reader, n_fft, hop, err);
}
