/* Drum transcription: find hits in the drum stem and name them.
 *
 * Onsets: peaks of a band-balanced spectral flux (each band's flux divided
 * by its mean) above a moving median plus a fraction of the song's loud
 * level, at least 30 ms apart.
 *
 * Labels, two classifiers:
 *  - "bands" (default): each onset's rise in band magnitude (5 bands, see
 *    dsp.h) is explained as a non-negative mix of instrument templates
 *    (kick, snare, hi-hat, tom) learned from the song itself by NMF
 *    (Lee & Seung multiplicative updates) started from, and held near,
 *    generic drum templates. Every template with enough weight is a hit, so
 *    a kick under a hi-hat gives both. Hats become open (46) when the air
 *    band rings on, and crashes (49) when loud and long.
 *  - "ratio": the seed's band-energy ratio, one label per onset; see
 *    classify_ratio().
 * Velocity: 20 log10 of the hit's strength relative to the loud hits of the
 * same instrument in the song, 2.2 velocity steps per dB below 112.
 *
 * Single-threaded; no state outside the call.
 */
#include "drums.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Flux peaks a frame or two after the sound starts (the rise enters the
 * window's centre gradually); measured on clicks in tests/unit/test_drums.c. */
#define ONSET_LAG_S 0.0
#define MIN_GAP_S 0.030
#define PEAK_RADIUS 2 /* frames each side: a peak is the maximum of 5 frames */

enum { T_KICK, T_SNARE, T_HAT, T_TOM, N_TEMPLATES };

/* Generic templates: magnitude rise per band (sub, low, mid, presence, air). */
static const double prior_templates[N_TEMPLATES][D2M_NBANDS] = {
    {1.00, 0.35, 0.12, 0.04, 0.02}, /* kick */
    {0.25, 0.80, 0.70, 0.55, 0.30}, /* snare */
    {0.00, 0.02, 0.08, 0.40, 1.00}, /* hi-hat, cymbals */
    {0.45, 1.00, 0.30, 0.08, 0.04}, /* tom */
};
static const double present_fraction[N_TEMPLATES] = {0.18, 0.22, 0.18, 0.35};

int classify_ratio(double low_energy, double high_energy, double centroid_hz)
{
    if (low_energy > 0.8 * high_energy) return 36;
    return centroid_hz < D2M_RATIO_CENTROID_SPLIT_HZ ? 38 : 42;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* q-quantile of v (n) using scratch (n). */
static float quantile(const float *v, int64_t n, double q, float *scratch)
{
    if (n <= 0) return 0.0f;
    memcpy(scratch, v, (size_t)n * sizeof *v);
    qsort(scratch, (size_t)n, sizeof *scratch, cmp_float);
    int64_t i = (int64_t)(q * (double)(n - 1));
    return scratch[i];
}

/* Onset frames: peaks of odf (n). Returns the count, writes frames to peaks. */
static int64_t pick_peaks(int64_t *peaks, const float *odf, int64_t n, double frame_rate,
                          float *scratch)
{
    float loud = quantile(odf, n, 0.99, scratch);
    float floor_level = 0.06f * loud;
    int half = (int)(0.15 * frame_rate);
    int min_gap = (int)ceil(MIN_GAP_S * frame_rate);
    int64_t count = 0;
    float window[512];
    if (2 * half + 1 > (int)(sizeof window / sizeof *window)) half = 255;
    for (int64_t t = 0; t < n; t++) {
        float v = odf[t];
        if (v <= floor_level) continue;
        int is_max = 1;
        for (int64_t d = t - PEAK_RADIUS; d <= t + PEAK_RADIUS && is_max; d++)
            if (d >= 0 && d < n && d != t && (odf[d] > v || (odf[d] == v && d < t))) is_max = 0;
        if (!is_max) continue;
        /* Moving median of the surroundings. */
        int m = 0;
        for (int64_t d = t - half; d <= t + half; d++)
            if (d >= 0 && d < n) window[m++] = odf[d];
        qsort(window, (size_t)m, sizeof *window, cmp_float);
        if (v < window[m / 2] + 0.05f * loud) continue;
        if (count > 0 && t - peaks[count - 1] < min_gap) {
            if (v > odf[peaks[count - 1]]) peaks[count - 1] = t;
            continue;
        }
        peaks[count++] = t;
    }
    return count;
}

/* Magnitude rise of band b at onset frame t: peak after minus level before. */
static double band_rise(const d2m_features *f, int b, int64_t t)
{
    double after = 0.0, before = 0.0;
    int nb = 0;
    for (int64_t d = t; d <= t + 3 && d < f->frames; d++)
        if (f->band_energy[b][d] > after) after = f->band_energy[b][d];
    for (int64_t d = t - 5; d <= t - 2; d++)
        if (d >= 0) {
            before += f->band_energy[b][d];
            nb++;
        }
    double rise = sqrt(after) - (nb ? sqrt(before / nb) : 0.0);
    return rise > 0 ? rise : 0.0;
}

/* How much of band b's peak energy is left `delay_s` after frame t (0..1). */
static double band_ring(const d2m_features *f, int b, int64_t t, double from_s, double to_s)
{
    double peak = 0.0;
    for (int64_t d = t; d <= t + 3 && d < f->frames; d++)
        if (f->band_energy[b][d] > peak) peak = f->band_energy[b][d];
    double least = INFINITY;
    for (int64_t d = t + (int64_t)(from_s * f->frame_rate); d <= t + (int64_t)(to_s * f->frame_rate); d++) {
        if (d >= f->frames) break;
        if (f->band_energy[b][d] < least) least = f->band_energy[b][d];
    }
    if (peak <= 0 || !isfinite(least)) return 0.0;
    return least / peak;
}

static int velocity_from_db(double db)
{
    long v = lround(112.0 + 2.2 * db);
    return v < 1 ? 1 : v > 127 ? 127 : (int)v;
}

/* NMF of v (n, bands) ~ h (n, templates) x w (templates, bands), w starting
 * from and pulled towards the priors. */
static void factorise(double *h, double *w, const double *v, int64_t n)
{
    memcpy(w, prior_templates, sizeof prior_templates);
    for (int64_t i = 0; i < n * N_TEMPLATES; i++) h[i] = 0.1;
    for (int iter = 0; iter < 60; iter++) {
        /* h <- h * (v w^T) / (h w w^T) */
        double wwt[N_TEMPLATES][N_TEMPLATES];
        for (int a = 0; a < N_TEMPLATES; a++)
            for (int c = 0; c < N_TEMPLATES; c++) {
                double s = 0;
                for (int b = 0; b < D2M_NBANDS; b++) s += w[a * D2M_NBANDS + b] * w[c * D2M_NBANDS + b];
                wwt[a][c] = s;
            }
        for (int64_t i = 0; i < n; i++)
            for (int a = 0; a < N_TEMPLATES; a++) {
                double num = 0, den = 1e-12;
                for (int b = 0; b < D2M_NBANDS; b++) num += v[i * D2M_NBANDS + b] * w[a * D2M_NBANDS + b];
                for (int c = 0; c < N_TEMPLATES; c++) den += h[i * N_TEMPLATES + c] * wwt[c][a];
                h[i * N_TEMPLATES + a] *= num / den;
            }
        if (iter >= 40) continue; /* let h settle on the final templates */
        /* w <- w * (h^T v) / (h^T h w), then pull towards the prior and normalise. */
        double hth[N_TEMPLATES][N_TEMPLATES] = {{0}};
        double htv[N_TEMPLATES][D2M_NBANDS] = {{0}};
        for (int64_t i = 0; i < n; i++)
            for (int a = 0; a < N_TEMPLATES; a++) {
                for (int c = 0; c < N_TEMPLATES; c++) hth[a][c] += h[i * N_TEMPLATES + a] * h[i * N_TEMPLATES + c];
                for (int b = 0; b < D2M_NBANDS; b++) htv[a][b] += h[i * N_TEMPLATES + a] * v[i * D2M_NBANDS + b];
            }
        for (int a = 0; a < N_TEMPLATES; a++) {
            double norm = 0;
            for (int b = 0; b < D2M_NBANDS; b++) {
                double den = 1e-12;
                for (int c = 0; c < N_TEMPLATES; c++) den += hth[a][c] * w[c * D2M_NBANDS + b];
                double updated = w[a * D2M_NBANDS + b] * htv[a][b] / den;
                double x = 0.6 * updated + 0.4 * prior_templates[a][b];
                w[a * D2M_NBANDS + b] = x;
                norm += x * x;
            }
            norm = sqrt(norm);
            for (int b = 0; b < D2M_NBANDS && norm > 0; b++) w[a * D2M_NBANDS + b] /= norm;
        }
    }
}

static int label_bands(d2m_hits *out, const d2m_features *f, const int64_t *onsets, int64_t n)
{
    int rc = D2M_ERR_NOMEM;
    double *v = malloc((size_t)n * D2M_NBANDS * sizeof *v);    /* (n, bands) */
    double *h = malloc((size_t)n * N_TEMPLATES * sizeof *h);   /* (n, templates) */
    float *gain = malloc((size_t)n * sizeof *gain);            /* (n) */
    float *scratch = malloc((size_t)n * sizeof *scratch);      /* (n) */
    double w[N_TEMPLATES * D2M_NBANDS];                        /* (templates, bands) */
    if (!v || !h || !gain || !scratch) goto done;
    for (int64_t i = 0; i < n; i++)
        for (int b = 0; b < D2M_NBANDS; b++) v[i * D2M_NBANDS + b] = band_rise(f, b, onsets[i]);
    factorise(h, w, v, n);
    for (int a = 0; a < N_TEMPLATES; a++) {
        /* Reference level: the loud hits among those this template leads. */
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++) {
            int lead = 1;
            for (int c = 0; c < N_TEMPLATES; c++)
                if (h[i * N_TEMPLATES + c] > h[i * N_TEMPLATES + a]) lead = 0;
            if (lead) gain[m++] = (float)h[i * N_TEMPLATES + a];
        }
        double ref = m > 0 ? quantile(gain, m, 0.9, scratch) : 0.0;
        if (ref <= 0) continue;
        for (int64_t i = 0; i < n; i++) {
            double g = h[i * N_TEMPLATES + a];
            double total = 0.0;
            for (int c = 0; c < N_TEMPLATES; c++) total += h[i * N_TEMPLATES + c];
            if (g < present_fraction[a] * ref || g < 0.2 * total) continue;
            int note = a == T_KICK ? 36 : a == T_SNARE ? 38 : a == T_TOM ? 45 : 42;
            if (a == T_HAT) {
                double ring = band_ring(f, BAND_AIR, onsets[i], 0.06, 0.10);
                if (g > 1.6 * ref && band_ring(f, BAND_AIR, onsets[i], 0.25, 0.35) > 0.3) note = 49;
                else if (ring > 0.3) note = 46;
            }
            double db = 20.0 * log10(g / ref);
            d2m_hit hit = {.time_s = features_time(f, (double)onsets[i]) - ONSET_LAG_S,
                           .note = note,
                           .velocity = velocity_from_db(db),
                           .strength = (float)g};
            if (hit.time_s < 0) hit.time_s = 0;
            if ((rc = hits_push(out, hit))) goto done;
        }
    }
    hits_sort(out);
    rc = 0;
done:
    free(v);
    free(h);
    free(gain);
    free(scratch);
    return rc;
}

static int label_ratio(d2m_hits *out, const d2m_features *f, const int64_t *onsets, int64_t n,
                       const float *odf)
{
    float *strength = malloc((size_t)n * sizeof *strength);
    float *scratch = malloc((size_t)n * sizeof *scratch);
    int rc = D2M_ERR_NOMEM;
    if (!strength || !scratch) goto done;
    for (int64_t i = 0; i < n; i++) strength[i] = odf[onsets[i]];
    double ref = quantile(strength, n, 0.9, scratch);
    for (int64_t i = 0; i < n; i++) {
        int64_t t = onsets[i];
        double low = 0, high = 0, centroid = 0;
        for (int64_t d = t; d <= t + 3 && d < f->frames; d++) {
            low = fmax(low, f->band_energy[BAND_SUB][d]);
            high = fmax(high, f->band_energy[BAND_PRES][d] + f->band_energy[BAND_AIR][d]);
            centroid = fmax(centroid, f->centroid[d]);
        }
        d2m_hit hit = {.time_s = features_time(f, (double)t) - ONSET_LAG_S,
                       .note = classify_ratio(low, high, centroid),
                       .velocity = velocity_from_db(20.0 * log10(strength[i] / ref)),
                       .strength = strength[i]};
        if (hit.time_s < 0) hit.time_s = 0;
        if ((rc = hits_push(out, hit))) goto done;
    }
    rc = 0;
done:
    free(strength);
    free(scratch);
    return rc;
}

int transcribe(d2m_hits *out, const d2m_features *f, d2m_classifier classifier, d2m_error *err)
{
    memset(out, 0, sizeof *out);
    const int64_t n = f->frames;
    float *odf = calloc((size_t)n, sizeof *odf);
    float *scratch = malloc((size_t)n * sizeof *scratch);
    int64_t *onsets = malloc((size_t)n * sizeof *onsets);
    int rc = 0;
    if (!odf || !scratch || !onsets) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "transcribe: out of memory");
        goto done;
    }
    for (int b = 0; b < D2M_NBANDS; b++) {
        double mean = 0.0;
        for (int64_t t = 0; t < n; t++) mean += f->band_flux[b][t];
        mean /= (double)n;
        if (mean <= 1e-9) continue;
        for (int64_t t = 0; t < n; t++) odf[t] += (float)(f->band_flux[b][t] / mean);
    }
    int64_t count = pick_peaks(onsets, odf, n, f->frame_rate, scratch);
    rc = classifier == D2M_CLASSIFIER_RATIO ? label_ratio(out, f, onsets, count, odf)
                                            : label_bands(out, f, onsets, count);
    if (rc) {
        hits_free(out);
        rc = d2m_fail(err, rc, "transcribe: out of memory");
    }
done:
    free(odf);
    free(scratch);
    free(onsets);
    return rc;
}
