/* Tempo, beats and downbeats of a 4/4 drum stem.
 *
 * 1. Onset envelope: the per-band log spectral flux, each band scaled by its
 *    own mean so kick, snare and hats weigh alike, with the hat band halved
 *    (hats mark eighths, kick and snare mark beats); a moving average is
 *    subtracted and the rest half-wave rectified.
 * 2. Tempo: autocorrelation of the envelope, scored per candidate period by
 *    a comb over its multiples (the beat's multiples line up, an eighth
 *    pulse's do too but weaker) times a log-normal prior on 60..200 BPM
 *    centred at 115 BPM: picks the beat level, not eighths or half-time.
 *    Parabolic interpolation refines the lag.
 * 3. Beats: a constant-tempo grid fitted to the whole song (period and
 *    phase maximising the envelope on the grid, +-17 ms tolerance), so
 *    every section votes and a hats-only intro cannot pull the phase onto
 *    the off-beats. Ellis' dynamic programming ("Beat tracking by dynamic
 *    programming", JNMR 2007, tightness 100) tracks beats too; its beats are
 *    used only when their mean period over 32-beat windows wanders more than
 *    2.5% from the grid's (a song whose tempo moves). A steady grid is what
 *    a DAW wants.
 * 4. Downbeats: the phase of four whose beats carry the most kick and the
 *    least snare, with beat 1 weighted over beat 3 and cymbals at bar starts.
 *
 * Single-threaded; no state outside the call.
 */
#include "drums.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MIN_BPM 60.0
#define MAX_BPM 200.0
#define PRIOR_BPM 115.0
#define PRIOR_OCTAVES 0.9
#define TIGHTNESS 100.0
#define GRID_TOLERANCE 3     /* frames: +-17 ms, a human drummer's spread */
#define STEADY_WINDOW 32      /* beats: a half-beat slip moves the mean period 1.6% */
#define STEADY_TOLERANCE 0.025 /* the mean period may wander this much and still be steady */
#define MIN_CONFIDENCE 0.08

static double band_mean(const float *v, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += v[i];
    return n > 0 ? s / (double)n : 0.0;
}

/* env (n) = weighted band flux, locally detrended and rectified. */
static void onset_envelope(float *env, const d2m_features *f, float *scratch)
{
    const int64_t n = f->frames;
    const double weight[D2M_NBANDS] = {1.0, 1.0, 0.7, 0.7, 0.5};
    for (int64_t t = 0; t < n; t++) scratch[t] = 0.0f;
    for (int b = 0; b < D2M_NBANDS; b++) {
        double m = band_mean(f->band_flux[b], n);
        if (m <= 1e-9) continue;
        float w = (float)(weight[b] / m);
        for (int64_t t = 0; t < n; t++) scratch[t] += w * f->band_flux[b][t];
    }
    /* Subtract a 0.5 s moving average (running sum). */
    int half = (int)(0.25 * f->frame_rate);
    double sum = 0.0;
    int64_t lo = 0, hi = 0; /* window [lo, hi) */
    for (int64_t t = 0; t < n; t++) {
        while (hi < n && hi <= t + half) sum += scratch[hi++];
        while (lo < t - half) sum -= scratch[lo++];
        float mean = (float)(sum / (double)(hi - lo));
        float v = scratch[t] - mean;
        env[t] = v > 0 ? v : 0.0f;
    }
}

/* Autocorrelation acf (max_lag + 1) of env (n). */
static void autocorrelate(double *acf, const float *env, int64_t n, int max_lag)
{
    for (int lag = 0; lag <= max_lag; lag++) {
        double s = 0.0;
        for (int64_t t = lag; t < n; t++) s += (double)env[t] * env[t - lag];
        acf[lag] = s;
    }
}

static double acf_at(const double *acf, int max_lag, double lag)
{
    if (lag < 0 || lag >= max_lag) return 0.0;
    int i = (int)lag;
    double frac = lag - i;
    return acf[i] * (1.0 - frac) + acf[i + 1] * frac;
}

/* Best beat period in frames, and the normalised periodicity there. */
static double estimate_period(const double *acf, int max_lag, double frame_rate, double *confidence)
{
    int lag_lo = (int)floor(60.0 * frame_rate / MAX_BPM);
    int lag_hi = (int)ceil(60.0 * frame_rate / MIN_BPM);
    if (lag_hi * 4 > max_lag) lag_hi = max_lag / 4;
    double best = -1.0;
    int best_lag = lag_lo;
    for (int lag = lag_lo; lag <= lag_hi; lag++) {
        double comb = 0.0;
        for (int k = 1; k <= 4; k++) {
            /* Take the best value within +-1 frame around each multiple. */
            double c = k * lag, peak = 0.0;
            for (int d = -k; d <= k; d++) peak = fmax(peak, acf_at(acf, max_lag, c + d));
            comb += peak / k;
        }
        double bpm = 60.0 * frame_rate / lag;
        double octaves = log2(bpm / PRIOR_BPM) / PRIOR_OCTAVES;
        double score = comb * exp(-0.5 * octaves * octaves);
        if (score > best) {
            best = score;
            best_lag = lag;
        }
    }
    /* Parabolic refinement on the acf itself. */
    double period = best_lag;
    if (best_lag > 1 && best_lag < max_lag) {
        double a = acf[best_lag - 1], b = acf[best_lag], c = acf[best_lag + 1];
        double denom = a - 2 * b + c;
        if (denom < 0) period += 0.5 * (a - c) / denom;
    }
    *confidence = acf[0] > 0 ? acf[best_lag] / acf[0] : 0.0;
    return period;
}

/* Ellis DP beat tracking on env (n) with period (frames). beats gets frame
 * indices in increasing order; returns their count or a negative code. */
static int track_beats(int64_t **beats, const float *env, int64_t n, double period)
{
    double *score = malloc((size_t)n * sizeof *score);
    int64_t *back = malloc((size_t)n * sizeof *back);
    int64_t *out = NULL;
    int count = 0;
    if (!score || !back) goto fail;
    /* Normalise the envelope so the penalty's scale is meaningful. */
    double sd = 0.0;
    for (int64_t t = 0; t < n; t++) sd += (double)env[t] * env[t];
    sd = sqrt(sd / (double)n);
    if (sd <= 0) sd = 1.0;
    int lo = (int)floor(period / 2), hi = (int)ceil(period * 2);
    for (int64_t t = 0; t < n; t++) {
        double local = env[t] / sd, best = -1e300;
        int64_t arg = -1;
        for (int d = lo; d <= hi && t - d >= 0; d++) {
            double r = log((double)d / period);
            double s = score[t - d] - TIGHTNESS * r * r;
            if (s > best) {
                best = s;
                arg = t - d;
            }
        }
        if (arg >= 0 && best > 0) {
            score[t] = local + best;
            back[t] = arg;
        } else {
            score[t] = local;
            back[t] = -1;
        }
    }
    /* Start from the best score within the last period, among local maxima. */
    int64_t end = n - 1;
    double best = -1e300;
    for (int64_t t = n - 1; t >= 0 && t >= n - 1 - (int64_t)ceil(period); t--)
        if (score[t] > best) {
            best = score[t];
            end = t;
        }
    for (int64_t t = end; t >= 0; t = back[t]) count++;
    out = malloc((size_t)count * sizeof *out);
    if (!out) goto fail;
    int i = count;
    for (int64_t t = end; t >= 0; t = back[t]) out[--i] = t;
    free(score);
    free(back);
    *beats = out;
    return count;
fail:
    free(score);
    free(back);
    return D2M_ERR_NOMEM;
}

/* Mean of env (n) sampled on the grid phase + k * period (frames, linear
 * interpolation). */
static double grid_mean(const float *env, int64_t n, double phase, double period)
{
    double s = 0.0;
    int64_t count = 0;
    for (double x = phase; x < n - 1; x += period, count++) {
        int64_t i = (int64_t)x;
        double frac = x - (double)i;
        s += env[i] * (1.0 - frac) + env[i + 1] * frac;
    }
    return count ? s / (double)count : 0.0;
}

/* Best constant grid: period within +-2% of the estimate (exactly it when
 * fixed), phase within one period; coarse then fine. Returns the mean
 * envelope on the grid. */
static double fit_grid(const float *env, int64_t n, double period, int fixed, double *best_phase,
                       double *best_period)
{
    double best = -1.0;
    *best_phase = 0.0;
    *best_period = period;
    const double span = fixed ? 0.0 : 0.02;
    for (int pass = 0; pass < 2; pass++) {
        double centre = *best_period, width = pass == 0 ? span : span / 20.0;
        int steps = fixed ? 0 : 40;
        double phase_lo = pass == 0 ? 0.0 : *best_phase - 1.0;
        double phase_hi = pass == 0 ? centre : *best_phase + 1.0;
        double phase_step = pass == 0 ? 1.0 : 0.125;
        for (int k = -steps; k <= steps; k++) {
            double p = centre * (1.0 + width * k / (steps ? steps : 1));
            for (double ph = phase_lo; ph < phase_hi; ph += phase_step) {
                if (ph < 0) continue;
                double m = grid_mean(env, n, ph, p);
                if (m > best) {
                    best = m;
                    *best_phase = ph;
                    *best_period = p;
                }
            }
        }
    }
    return best;
}

/* Whether the tracked beats (frames) keep the grid's period: their mean
 * period over every window of STEADY_WINDOW beats stays within tolerance. */
static int steady_tempo(const int64_t *beats, int count, double period)
{
    int w = count - 1 < STEADY_WINDOW ? count - 1 : STEADY_WINDOW;
    if (w < 4) return 1;
    for (int k = 0; k + w < count; k += w / 4 > 0 ? w / 4 : 1) {
        double mean = (double)(beats[k + w] - beats[k]) / w;
        if (fabs(mean / period - 1.0) > STEADY_TOLERANCE) return 0;
    }
    return 1;
}

/* Strength of a band's flux around time s: max within +-2 frames. */
static double flux_near(const d2m_features *f, const float *v, double s)
{
    int64_t c = (int64_t)llround(s * f->frame_rate);
    double m = 0.0;
    for (int64_t t = c - 2; t <= c + 2; t++)
        if (t >= 0 && t < f->frames && v[t] > m) m = v[t];
    return m;
}

static int choose_downbeat_phase(const d2m_features *f, const double *beats, int n)
{
    double kick[4] = {0}, snare[4] = {0}, cymbal[4] = {0};
    double mk = band_mean(f->band_flux[BAND_SUB], f->frames) + 1e-9;
    double ms = band_mean(f->band_flux[BAND_PRES], f->frames) + 1e-9;
    double ml = band_mean(f->band_flux[BAND_LOW], f->frames) + 1e-9;
    double ma = band_mean(f->band_flux[BAND_AIR], f->frames) + 1e-9;
    for (int k = 0; k < n; k++) {
        int ph = k % 4;
        double sub = flux_near(f, f->band_flux[BAND_SUB], beats[k]) / mk;
        double low = flux_near(f, f->band_flux[BAND_LOW], beats[k]) / ml;
        double pres = flux_near(f, f->band_flux[BAND_PRES], beats[k]) / ms;
        double air = flux_near(f, f->band_flux[BAND_AIR], beats[k]) / ma;
        kick[ph] += sub;
        /* A snare is body plus wires without a matching sub thump. */
        double sn = 0.5 * (low + pres) - sub;
        snare[ph] += sn > 0 ? sn : 0;
        cymbal[ph] += air;
    }
    int best = 0;
    double best_score = -1e300;
    for (int ph = 0; ph < 4; ph++) {
        int p2 = (ph + 2) % 4, off1 = (ph + 1) % 4, off3 = (ph + 3) % 4;
        double s = kick[ph] + 0.5 * kick[p2] - 0.5 * (kick[off1] + kick[off3]) +
                   (snare[off1] + snare[off3]) - (snare[ph] + snare[p2]) +
                   0.25 * (cymbal[ph] - cymbal[p2]);
        if (s > best_score + 1e-9) {
            best_score = s;
            best = ph;
        }
    }
    return best;
}

int tempo_track(d2m_beats *out, const d2m_features *f, double forced_bpm, double duration_s,
                d2m_error *err)
{
    memset(out, 0, sizeof *out);
    const int64_t n = f->frames;
    const double fr = f->frame_rate;
    int rc = 0;
    float *env = malloc((size_t)n * sizeof *env);
    float *scratch = malloc((size_t)n * sizeof *scratch);
    int max_lag = (int)ceil(4.5 * 60.0 * fr / MIN_BPM);
    double *acf = malloc((size_t)(max_lag + 1) * sizeof *acf);
    int64_t *frames_of_beats = NULL;
    d2m_dvec beats = {0}, downbeats = {0};
    if (!env || !scratch || !acf) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "tempo: out of memory");
        goto done;
    }
    if (n < 2 * max_lag && forced_bpm <= 0) {
        rc = d2m_fail(err, D2M_ERR_NO_RHYTHM, "too short to find a tempo (%.1f s)", duration_s);
        goto done;
    }
    onset_envelope(env, f, scratch);
    if (max_lag >= n) max_lag = (int)n - 1;
    autocorrelate(acf, env, n, max_lag);

    double confidence = 0.0, period;
    if (forced_bpm > 0) {
        period = 60.0 * fr / forced_bpm;
        confidence = acf[0] > 0 ? acf_at(acf, max_lag, period) / acf[0] : 0.0;
    } else {
        period = estimate_period(acf, max_lag, fr, &confidence);
        if (!(confidence >= MIN_CONFIDENCE))
            {
                rc = d2m_fail(err, D2M_ERR_NO_RHYTHM,
                              "no steady beat found (periodicity %.2f); use --tempo BPM to set one",
                              confidence);
                goto done;
            }
    }
    /* A constant-tempo grid fitted to the whole song; the tracked beats only
     * where the tempo really moves. */
    for (int64_t t = 0; t < n; t++) {
        float m = 0.0f;
        for (int64_t d = t - GRID_TOLERANCE; d <= t + GRID_TOLERANCE; d++)
            if (d >= 0 && d < n && env[d] > m) m = env[d];
        scratch[t] = m;
    }
    double grid_phase, grid_period;
    double grid = fit_grid(scratch, n, period, forced_bpm > 0, &grid_phase, &grid_period);
    int count = track_beats(&frames_of_beats, env, n, grid_period);
    if (count < 0) {
        rc = d2m_fail(err, count, "tempo: out of memory");
        goto done;
    }
    for (int i = 0; i < count; i++)
        if ((rc = d2m_dvec_push(&beats, features_time(f, (double)frames_of_beats[i])))) goto nomem;
    if (beats.n < 2) {
        rc = d2m_fail(err, D2M_ERR_NO_RHYTHM, "no steady beat found (fewer than two beats)");
        goto done;
    }
    (void)grid;
    if (forced_bpm > 0 || steady_tempo(frames_of_beats, count, grid_period)) {
        double beat_s = grid_period / fr, first = grid_phase / fr;
        beats.n = 0;
        for (int64_t k = 0; first + k * beat_s < duration_s; k++)
            if ((rc = d2m_dvec_push(&beats, first + k * beat_s))) goto nomem;
        out->bpm = 60.0 / beat_s;
    } else {
        /* Median interval: robust to the odd skipped beat. */
        double *iv = malloc((size_t)(beats.n - 1) * sizeof *iv);
        if (!iv) goto nomem;
        for (int k = 1; k < beats.n; k++) iv[k - 1] = beats.v[k] - beats.v[k - 1];
        for (int a = 1; a < beats.n - 1; a++)
            for (int b = a; b > 0 && iv[b - 1] > iv[b]; b--) {
                double t = iv[b];
                iv[b] = iv[b - 1];
                iv[b - 1] = t;
            }
        out->bpm = 60.0 / iv[(beats.n - 1) / 2];
        free(iv);
    }
    int phase = choose_downbeat_phase(f, beats.v, beats.n);
    for (int k = phase; k < beats.n; k += 4)
        if ((rc = d2m_dvec_push(&downbeats, beats.v[k]))) goto nomem;
    out->beats = beats.v;
    out->n_beats = beats.n;
    out->first_downbeat = phase;
    out->downbeats = downbeats.v;
    out->n_downbeats = downbeats.n;
    out->confidence = confidence;
    beats.v = downbeats.v = NULL;
    rc = 0;
    goto done;
nomem:
    rc = d2m_fail(err, D2M_ERR_NOMEM, "tempo: out of memory");
done:
    d2m_dvec_free(&beats);
    d2m_dvec_free(&downbeats);
    free(frames_of_beats);
    free(env);
    free(scratch);
    free(acf);
    return rc;
}
