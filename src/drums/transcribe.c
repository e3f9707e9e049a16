/* Drum transcription: find hits in the drum stem and name them.
 *
 * Onsets: peaks of a band-balanced spectral flux (each band's flux divided
 * by its mean) above a moving median plus a fraction of the song's loud
 * level, at least 30 ms apart, that raise the power of some band by
 * MIN_RISE_DB to within MIN_LEVEL_DB of its song mean: the noise of a
 * decaying snare or cymbal makes the log flux flicker, but its band powers
 * only fall.
 *
 * Labels, two classifiers:
 *  - "bands" (default): every onset is described by N_FEATURES numbers read
 *    from the band powers and fluxes around it (onset_features: how much
 *    each band rises, relative to before and to the song's level, how fast
 *    it decays, where the rise sits in the spectrum, and the neighbouring
 *    onsets), and one logistic regression per instrument (kick, snare,
 *    hi-hat, tom, ride/crash) says whether that instrument is in it, in the
 *    manner of Gillet & Richard, "Automatic transcription of drum loops"
 *    (ICASSP 2004). Several can be, so a kick under a hi-hat gives both.
 *    Hats are written closed (42); cymbals are rides (51), or crashes (49)
 *    when a sixth regression, fitted on the cymbal onsets, says so.
 *    The weights were fitted (L2-regularised, lambda 1, Newton's method; per
 *    instrument the probability threshold with the best F on the training
 *    songs) on 56 songs: Groove MIDI Dataset performances by real drummers
 *    with bass and chords, rendered with FluidSynth on FluidR3 (Standard,
 *    Room, Power, Jazz, Brush, Electronic kits) and TimGM6mb kits, through
 *    the HPSS separator and, 32 of them, the Demucs one; plus 12 loops of the
 *    synthetic kit in tests/unit/synth.h. An onset is an instrument's when
 *    one of its notes lies within 50 ms. Bass notes leaking through separation are so
 *    learnt as "not a kick". On 52 held-out songs (other grooves; two
 *    sampled acoustic kits never seen in training among them; HPSS) F is
 *    0.67 kick, 0.60 snare, 0.71 hi-hat, 0.60 tom, 0.47 ride/crash, where
 *    the earlier template NMF scored 0.36, 0.51, 0.61, 0.11 and no cymbals.
 *  - "ratio": the seed's band-energy ratio, one label per onset; see
 *    classify_ratio().
 * Velocity: 20 log10 of the hit's strength (its rise in the instrument's
 * bands) relative to the loud hits of the same instrument in the song, 2.2
 * velocity steps per dB below 112.
 *
 * Memory O(frames); single-threaded; no state outside the call.
 */
#include "drums.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Flux peaks a frame or two after the sound starts (the rise enters the
 * window's centre gradually); measured on clicks in tests/unit/test_drums.c. */
#define ONSET_LAG_S 0.0
#define MIN_GAP_S 0.030
#define PEAK_RADIUS 2   /* frames each side: a peak is the maximum of 5 frames */
#define MIN_RISE_DB 2.0 /* some band's power must rise this much at an onset */
#define MIN_LEVEL_DB -20.0 /* to this level re. the band's song mean power */

enum { C_KICK, C_SNARE, C_HAT, C_TOM, C_CYMBAL, N_CLASSES };

/* Per onset: for each band, rise relative to before and to the song's
 * level, decay after 60, 150 and 250 ms, flux, share of the rise; then the
 * centroid, the onset strength and six numbers on the neighbouring onsets. */
enum {
    F_REL = 0,
    F_ABS = F_REL + D2M_NBANDS,
    F_DECAY = F_ABS + D2M_NBANDS,
    F_FLUX = F_DECAY + 3 * D2M_NBANDS,
    F_SHARE = F_FLUX + D2M_NBANDS,
    F_CENTROID = F_SHARE + D2M_NBANDS,
    F_STRENGTH,
    F_CONTEXT,
    N_FEATURES = F_CONTEXT + 6
};
static const double decay_s[3] = {0.06, 0.15, 0.25};

/* The fitted model: features are standardised by feature_mean and
 * feature_scale, then weighted; an instrument is present when its
 * probability passes model_threshold. A cymbal is a crash rather than a
 * ride when the crash model's probability passes one half. */
static const double feature_mean[N_FEATURES] = {
    1.426, 1.513, 1.419, 1.62, 1.69,
    -1.746, -1.856, -2.276, -2.144, -2.149,
    -1.19, -1.27, -1.237,
    -1.322, -1.345, -1.293,
    -1.243, -1.225, -1.167,
    -1.384, -1.401, -1.301,
    -1.348, -1.471, -1.322,
    1.163, 1.077, 0.7319, 0.6072, 0.4021,
    0.3185, 0.2293, 0.1253, 0.1403, 0.1866,
    8.558, 2.676,
    -2.339, -2.339, 0.0102, 0.003847, -1.924, -1.131,
};
static const double feature_scale[N_FEATURES] = {
    2.007, 2.215, 2.402, 2.58, 2.659,
    1.908, 1.975, 2.197, 2.365, 2.436,
    1.534, 2.204, 2.395,
    1.691, 2.43, 2.633,
    1.687, 2.574, 2.829,
    1.826, 2.75, 2.989,
    1.931, 2.926, 3.059,
    1.101, 1.004, 1.206, 1.624, 1.778,
    0.3161, 0.2318, 0.154, 0.1573, 0.253,
    0.7, 0.832,
    0.6373, 0.6373, 1.113, 1.117, 2.52, 0.7767,
};
static const double model_weight[N_CLASSES][N_FEATURES] = {
    {/* kick */
     1.688, -1.965, 0.5095, -0.9318, 0.6115,
     1.078, -0.2791, 0.5151, 1.239, 0.02201,
     1.629, -0.6362, -0.6139,
     -1.095, 0.7983, 0.4347,
     0.657, -0.4624, 0.4764,
     -0.8876, 0.1794, -0.7954,
     0.2548, -0.08527, 0.7231,
     0.3387, 0.6722, 0.5587, 0.2233, -0.8445,
     -0.02862, 0.2886, -0.3067, -0.02094, -0.02905,
     0.3635, -0.152,
     0.2572, -0.3825, 0.05839, 0.2161, -0.3358, -0.6557,
    },
    {/* snare */
     -0.9078, 0.3596, 0.8624, -0.5496, 0.194,
     0.02932, 0.2655, 0.3732, 0.782, 0.7025,
     -0.5584, 0.4191, 0.2004,
     0.6299, -0.8932, 0.028,
     -0.6009, 0.6908, 0.1261,
     1.456, -0.628, -0.6111,
     -0.3669, 0.4942, 0.0856,
     0.5828, -0.2064, 0.4538, 1.611, -0.6107,
     0.3131, 0.2403, 0.09381, -0.2642, -0.5042,
     -0.0962, -1.127,
     0.1428, -0.1407, 0.1773, 0.2143, -0.07933, 0.08968,
    },
    {/* hi-hat */
     0.2181, -0.3926, 0.4089, -0.4093, 0.5933,
     0.1032, 0.4366, -0.3046, -0.02327, 1.016,
     -0.01303, -0.1372, 0.087,
     -0.05616, -0.1355, -0.002015,
     0.1076, 0.1482, -0.3423,
     -0.8337, 0.1925, 0.4115,
     1.225, -0.6927, -0.1649,
     -0.1505, -0.02166, 0.06527, 0.2379, -2.348,
     -0.1364, -0.1837, -0.04319, -0.05913, 0.4018,
     1.923, 1.418,
     0.5702, -0.1168, -0.1432, 0.1381, -0.1958, -1.32,
    },
    {/* tom */
     -0.1486, 0.436, -0.3255, 0.4657, -1.326,
     0.6732, 0.7399, 1.119, -0.008753, -0.2079,
     0.5797, -0.007385, 0.4295,
     -0.1755, 0.476, -0.4612,
     1.338, -0.8043, 0.196,
     -1.291, 1.185, 0.6833,
     -0.914, -0.5191, -0.3399,
     -0.257, 0.5254, 1.24, -0.4519, 5.022,
     0.1084, 0.08009, -0.199, 0.2444, -0.2396,
     -3.036, -3.712,
     -0.05596, -0.1487, 0.01105, 0.4919, -0.5427, 0.5576,
    },
    {/* ride and crash cymbals */
     0.5755, -0.1845, -0.009888, -0.6994, 0.1701,
     -0.3386, -0.4626, 0.05042, 1.645, 0.3135,
     0.1852, -0.2256, -0.1736,
     -0.8064, 0.6708, 0.1389,
     1.23, -1.641, -0.1069,
     -0.7092, 1.476, -0.05848,
     0.6184, -0.1848, 0.1655,
     -0.1149, 0.1206, -0.5036, -1.267, 1.473,
     0.09914, -0.1223, 0.1513, -0.1916, 0.01526,
     0.2764, -2.867,
     0.5921, -0.234, -0.2923, 0.07046, -0.02794, 3.251,
    },
};
static const double model_bias[N_CLASSES] = {-3.301, -2.349, -1.015, -6.203, -4.03};
static const double model_threshold[N_CLASSES] = {0.35, 0.4, 0.425, 0.325, 0.275};
static const double crash_weight[N_FEATURES] = {
    1.169, -1.762, 1.293, 0.7212, -0.9054,
    0.4241, 1.237, 1.029, 0.00469, -1.347,
    0.5998, -0.362, -0.1489,
    -1.267, 1.851, 0.2147,
    1.77, -3.526, 0.3711,
    2.291, 2.208, -0.9504,
    -2.433, 0.3299, 1.301,
    -0.02003, -0.3062, 0.9163, 1.24, 3.086,
    -0.2478, 0.6836, 0.1689, 0.0788, -0.4686,
    -1.643, -2.194,
    0.2117, -0.5595, -0.02903, 0.009674, 0.1947, -1.068,
};
static const double crash_bias = -4.419;
/* End of the fitted model. */

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

/* Mean power of band b over frames [t0, t1) clipped to the song; 0 if empty. */
static double band_mean_power(const d2m_features *f, int b, int64_t t0, int64_t t1)
{
    if (t0 < 0) t0 = 0;
    if (t1 > f->frames) t1 = f->frames;
    double s = 0.0;
    for (int64_t t = t0; t < t1; t++) s += f->band_energy[b][t];
    return t1 > t0 ? s / (double)(t1 - t0) : 0.0;
}

/* Peak power of band b over the 4 frames from t (the hit), and the mean
 * over the 5 frames ending 2 before t (what was sounding before it). */
static double band_peak(const d2m_features *f, int b, int64_t t)
{
    double peak = 0.0;
    for (int64_t d = t; d <= t + 3 && d < f->frames; d++) peak = fmax(peak, f->band_energy[b][d]);
    return peak;
}

static double band_before(const d2m_features *f, int b, int64_t t)
{
    return band_mean_power(f, b, t - 6, t - 1);
}

/* Whether some band's power rises by MIN_RISE_DB at frame t to within
 * MIN_LEVEL_DB of its song mean (mean_power, D2M_NBANDS): the leakage of a
 * sound's cut-off end rises too, but far below anything audible. */
static int power_rises(const d2m_features *f, const double *mean_power, int64_t t)
{
    const double ratio = pow(10.0, MIN_RISE_DB / 10.0), level = pow(10.0, MIN_LEVEL_DB / 10.0);
    for (int b = 0; b < D2M_NBANDS; b++) {
        double peak = band_peak(f, b, t), before = band_before(f, b, t);
        if (peak > 0 && peak >= ratio * before && peak >= level * mean_power[b]) return 1;
    }
    return 0;
}

/* Onset frames: peaks of odf (n). Returns the count, writes frames to peaks. */
static int64_t pick_peaks(int64_t *peaks, const float *odf, const d2m_features *f,
                          float *scratch)
{
    const int64_t n = f->frames;
    double mean_power[D2M_NBANDS];
    for (int b = 0; b < D2M_NBANDS; b++) mean_power[b] = band_mean_power(f, b, 0, n);
    float loud = quantile(odf, n, 0.99, scratch);
    float floor_level = 0.06f * loud;
    int half = (int)(0.15 * f->frame_rate);
    int min_gap = (int)ceil(MIN_GAP_S * f->frame_rate);
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
        if (!power_rises(f, mean_power, t)) continue;
        if (count > 0 && t - peaks[count - 1] < min_gap) {
            if (v > odf[peaks[count - 1]]) peaks[count - 1] = t;
            continue;
        }
        peaks[count++] = t;
    }
    return count;
}

/* The band-balanced onset detection function odf (n). */
static void onset_strength(float *odf, const d2m_features *f)
{
    const int64_t n = f->frames;
    for (int64_t t = 0; t < n; t++) odf[t] = 0.0f;
    for (int b = 0; b < D2M_NBANDS; b++) {
        double mean = 0.0;
        for (int64_t t = 0; t < n; t++) mean += f->band_flux[b][t];
        mean /= (double)n;
        if (mean <= 1e-9) continue;
        for (int64_t t = 0; t < n; t++) odf[t] += (float)(f->band_flux[b][t] / mean);
    }
}

/* Song-level scales the features are measured against. */
typedef struct {
    double power[D2M_NBANDS]; /* mean band power */
    double flux[D2M_NBANDS];  /* mean band flux */
    double strength;          /* 90th percentile of the onsets' odf */
} song_levels;

/* Features x (count, N_FEATURES) of the onsets (count) at frames onsets. */
static void onset_features(double *x, const d2m_features *f, const float *odf,
                           const int64_t *onsets, int64_t count, const song_levels *s)
{
    const double fr = f->frame_rate;
    for (int64_t i = 0; i < count; i++) {
        double *v = x + (size_t)i * N_FEATURES;
        const int64_t t = onsets[i];
        double rise[D2M_NBANDS], total_rise = 1e-9;
        for (int b = 0; b < D2M_NBANDS; b++) {
            double eps = 0.02 * s->power[b] + 1e-20;
            double peak = band_peak(f, b, t), before = band_before(f, b, t);
            v[F_REL + b] = log((peak + eps) / (before + eps));
            rise[b] = fmax(sqrt(peak) - sqrt(before), 0.0) / sqrt(s->power[b] + 1e-20);
            total_rise += rise[b];
            v[F_ABS + b] = log(rise[b] + 0.01);
            for (int j = 0; j < 3; j++) {
                int64_t d = t + (int64_t)(decay_s[j] * fr);
                double later = band_mean_power(f, b, d, d + 3);
                v[F_DECAY + 3 * b + j] = log((later + eps) / (peak + eps));
            }
            double flux = 0.0;
            for (int64_t d = t - 1; d <= t + 1; d++)
                if (d >= 0 && d < f->frames) flux = fmax(flux, f->band_flux[b][d]);
            v[F_FLUX + b] = log(flux / (s->flux[b] + 1e-9) + 0.01);
        }
        for (int b = 0; b < D2M_NBANDS; b++) v[F_SHARE + b] = rise[b] / total_rise;
        double centroid = 0.0;
        for (int64_t d = t; d <= t + 2 && d < f->frames; d++)
            centroid = fmax(centroid, f->centroid[d]);
        v[F_CENTROID] = log(centroid + 1.0);
        const double od = odf[t] + 1e-9;
        v[F_STRENGTH] = log(od + 0.01);
        /* Neighbours: a re-trigger on a decaying hit follows a stronger onset
         * closely; a flam or a drag shows up as a short gap. */
        double prev_dt = i > 0 ? (double)(t - onsets[i - 1]) / fr : 1.0;
        double next_dt = i + 1 < count ? (double)(onsets[i + 1] - t) / fr : 1.0;
        double prev_od = i > 0 ? odf[onsets[i - 1]] / od : 0.0;
        double next_od = i + 1 < count ? odf[onsets[i + 1]] / od : 0.0;
        double louder_before = 0.0;
        for (int64_t j = i - 1; j >= 0 && t - onsets[j] <= (int64_t)(0.1 * fr); j--)
            louder_before = fmax(louder_before, odf[onsets[j]] / od);
        v[F_CONTEXT + 0] = log(fmin(prev_dt, 1.0));
        v[F_CONTEXT + 1] = log(fmin(next_dt, 1.0));
        v[F_CONTEXT + 2] = log(prev_od + 0.01);
        v[F_CONTEXT + 3] = log(next_od + 0.01);
        v[F_CONTEXT + 4] = log(louder_before + 0.01);
        v[F_CONTEXT + 5] = log(od / (s->strength + 1e-9) + 0.01);
    }
}

/* Logistic regression on the standardised features v (N_FEATURES). */
static double probability(const double *weight, double bias, const double *v)
{
    double z = bias;
    for (int j = 0; j < N_FEATURES; j++) z += weight[j] * (v[j] - feature_mean[j]) / feature_scale[j];
    return 1.0 / (1.0 + exp(-z));
}

/* Strength of instrument c in the onset at frame t: the amplitude rise in
 * the bands that carry it (for the kick its beater click too: that is what
 * follows the drummer's velocity best, rank correlation 0.48 against 0.41
 * for the sub band alone, on rendered songs). */
static double class_strength(const d2m_features *f, int c, int64_t t)
{
    static const int bands[N_CLASSES][2] = {{BAND_SUB, BAND_PRES}, {BAND_LOW, BAND_PRES},
                                            {BAND_PRES, BAND_AIR}, {BAND_LOW, BAND_MID},
                                            {BAND_PRES, BAND_AIR}};
    double s = 0.0;
    for (int b = bands[c][0]; b <= bands[c][1]; b++)
        s += fmax(sqrt(band_peak(f, b, t)) - sqrt(band_before(f, b, t)), 0.0);
    return s;
}

static int velocity_from_db(double db)
{
    long v = lround(112.0 + 2.2 * db);
    return v < 1 ? 1 : v > 127 ? 127 : (int)v;
}

static int label_bands(d2m_hits *out, const d2m_features *f, const int64_t *onsets, int64_t n,
                       const float *odf)
{
    int rc = D2M_ERR_NOMEM;
    double *x = malloc((size_t)(n > 0 ? n : 1) * N_FEATURES * sizeof *x); /* (n, N_FEATURES) */
    unsigned char *present = malloc((size_t)(n > 0 ? n : 1) * N_CLASSES);   /* (n, N_CLASSES) */
    float *strength = malloc((size_t)(n > 0 ? n : 1) * sizeof *strength);   /* (n) */
    float *scratch = malloc((size_t)(n > 0 ? n : 1) * sizeof *scratch);     /* (n) */
    if (!x || !present || !strength || !scratch) goto done;
    song_levels s;
    for (int b = 0; b < D2M_NBANDS; b++) {
        s.power[b] = band_mean_power(f, b, 0, f->frames);
        double flux = 0.0;
        for (int64_t t = 0; t < f->frames; t++) flux += f->band_flux[b][t];
        s.flux[b] = flux / (double)f->frames;
    }
    for (int64_t i = 0; i < n; i++) strength[i] = odf[onsets[i]];
    s.strength = quantile(strength, n, 0.9, scratch);
    onset_features(x, f, odf, onsets, n, &s);
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < N_CLASSES; c++)
            present[i * N_CLASSES + c] =
                probability(model_weight[c], model_bias[c], x + (size_t)i * N_FEATURES) >
                model_threshold[c];
    for (int c = 0; c < N_CLASSES; c++) {
        /* Reference level: the loud hits of this instrument. */
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (present[i * N_CLASSES + c]) strength[m++] = (float)class_strength(f, c, onsets[i]);
        double ref = m > 0 ? quantile(strength, m, 0.9, scratch) : 0.0;
        for (int64_t i = 0; i < n; i++) {
            if (!present[i * N_CLASSES + c]) continue;
            double g = class_strength(f, c, onsets[i]);
            /* Hats are all closed: open and closed hats look alike in these
             * bands (an open-hat model found 15% of them right on held-out
             * songs), and a closed hat for an open one is the milder error. */
            static const int notes[N_CLASSES] = {36, 38, 42, 45, 51};
            int note = notes[c];
            const double *v = x + (size_t)i * N_FEATURES;
            if (c == C_CYMBAL && probability(crash_weight, crash_bias, v) > 0.5) note = 49;
            double db = ref > 0 && g > 0 ? 20.0 * log10(g / ref) : -60.0;
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
    free(x);
    free(present);
    free(strength);
    free(scratch);
    return rc;
}

static int label_ratio(d2m_hits *out, const d2m_features *f, const int64_t *onsets, int64_t n,
                       const float *odf)
{
    float *strength = malloc((size_t)(n > 0 ? n : 1) * sizeof *strength);
    float *scratch = malloc((size_t)(n > 0 ? n : 1) * sizeof *scratch);
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
    float *odf = malloc((size_t)n * sizeof *odf);
    float *scratch = malloc((size_t)n * sizeof *scratch);
    int64_t *onsets = malloc((size_t)n * sizeof *onsets);
    int rc = 0;
    if (!odf || !scratch || !onsets) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "transcribe: out of memory");
        goto done;
    }
    onset_strength(odf, f);
    int64_t count = pick_peaks(onsets, odf, f, scratch);
    rc = classifier == D2M_CLASSIFIER_RATIO ? label_ratio(out, f, onsets, count, odf)
                                            : label_bands(out, f, onsets, count, odf);
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
