/* Tempo, beats and downbeats of a 4/4 drum stem.
 *
 * 1. Onset envelope: the per-band log spectral flux, each band scaled by its
 *    own mean so kick, snare and hats weigh alike, with the hat band halved
 *    (hats mark eighths, kick and snare mark beats); a moving average is
 *    subtracted and the rest half-wave rectified.
 * 2. Tempo: autocorrelation of the envelope, scored per candidate period by
 *    a comb over its multiples times a log-normal prior on 60..200 BPM
 *    centred at 115 BPM. The comb alone takes 4/3 of the beat in swung
 *    grooves and twice it under loud hats, so its best few maxima are
 *    re-ranked by how well a constant grid at each lands on onsets (the
 *    grid fit of step 3 over the envelope's mean). Confidence: the
 *    envelope's autocorrelation at the beat's multiples, mean removed, as a
 *    fraction of its variance (white noise about 0.05).
 * 3. Beats: a constant-tempo grid fitted to the whole song (period and
 *    phase maximising the envelope on the grid, +-17 ms tolerance), so
 *    every section votes and a hats-only intro cannot pull the phase onto
 *    the off-beats, then refined by a weighted least-squares line through
 *    the onsets nearest each grid beat (sub-frame period: no drift over a
 *    long song). A beat up to a 32nd note before 0 s is kept at 0 s.
 *    Ellis' dynamic programming ("Beat tracking by dynamic programming",
 *    JNMR 2007, tightness 100) tracks beats too; its beats are used only
 *    when their mean period over 32-beat windows wanders more than 2.5% from
 *    the grid's (a song whose tempo moves). A steady grid is what a DAW
 *    wants.
 * 4. Downbeats: bar lines are where the music changes. Foote's novelty on
 *    beat-synchronous band fluxes (8 beats either side) votes for the phase
 *    of four where the changes fall; the song's first sounding beat adds a
 *    small vote that decides when there are no changes. On rendered GMD
 *    songs this finds beat 1 in about 9 songs of 10 whose tempo is right,
 *    against 4 in 10 for kick-on-1 / backbeat cues (the sub band's flux
 *    follows bass and snare bleed as much as the kick).
 *
 * Memory O(frames); single-threaded; no state outside the call.
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
#define MIN_CONFIDENCE 0.07 /* periodicity: white noise 0.05, rendered songs 0.1 and up */
#define CANDIDATES 6      /* comb maxima re-ranked by their grid fit */
#define BEAT_DIMS (2 * D2M_NBANDS) /* beat features: band flux in each half beat */
#define NOVELTY_BEATS 8   /* two bars each side: a fill alone is not a section */
#define NOVELTY_FLOOR 0.05 /* of a band's mean flux: silence to a whisper is no change */
#define STEADY_CHANGE 2.0 /* squared novelty per beat of steady playing (1 on synthetic loops) */
#define START_WEIGHT 0.05 /* the start's vote, as a share of the novelty: it breaks near-ties */
#define BACKBEAT_WEIGHT 0.15 /* the backbeat cue's weight against the novelty's shares */

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

/* How periodic the envelope is at a beat period (frames): the best of its
 * autocorrelation at the first four multiples (+-k frames around the k-th,
 * like the comb), as a fraction of its variance, with the mean removed
 * first: an envelope that is never zero, noise's, would otherwise
 * correlate with itself at every lag by its mean alone. About 0.06 at most
 * for 20 s of white noise, 0.1 to 0.9 for music. */
static double periodicity(const double *acf, int max_lag, const float *env, int64_t n,
                          double period)
{
    double mean = 0.0;
    for (int64_t t = 0; t < n; t++) mean += env[t];
    mean /= (double)n;
    double var = acf[0] / (double)n - mean * mean, best = 0.0;
    if (var <= 0) return 0.0;
    for (int k = 1; k <= 4; k++)
        for (int d = -k; d <= k; d++) {
            double lag = k * period + d;
            if (lag < 1 || lag >= max_lag) continue;
            double cov = acf_at(acf, max_lag, lag) / (double)(n - lag) - mean * mean;
            best = fmax(best, cov / var);
        }
    return best;
}

/* Periodicity score of each lag in [lag_lo, lag_hi]: a comb over the first
 * four multiples of the lag on the acf (the best value within +-k frames
 * of the k-th multiple, weighted 1/k) times the log-normal tempo prior. */
static double comb_score(const double *acf, int max_lag, double frame_rate, int lag)
{
    double comb = 0.0;
    for (int k = 1; k <= 4; k++) {
        double c = k * lag, peak = 0.0;
        for (int d = -k; d <= k; d++) peak = fmax(peak, acf_at(acf, max_lag, c + d));
        comb += peak / k;
    }
    double bpm = 60.0 * frame_rate / lag;
    double octaves = log2(bpm / PRIOR_BPM) / PRIOR_OCTAVES;
    return comb * exp(-0.5 * octaves * octaves);
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

/* Refines a fitted grid (phase, period in frames) to the onsets themselves:
 * the strongest envelope peak within GRID_TOLERANCE of each grid beat, at
 * sub-frame precision (parabolic interpolation), then a line through them
 * by least squares weighted by the peaks' strength. The grid search alone
 * is only as fine as its widened peaks: a plateau 7 frames wide leaves the
 * period 0.1% off, 20 ms after 30 beats. With fixed, only the phase moves. */
static void refine_grid(const float *env, int64_t n, int fixed, double *phase, double *period)
{
    double sw = 0, sk = 0, st = 0, skk = 0, skt = 0;
    for (int64_t k = 0; *phase + k * *period < n - 1; k++) {
        int64_t c = (int64_t)llround(*phase + k * *period), best = -1;
        for (int64_t t = c - GRID_TOLERANCE; t <= c + GRID_TOLERANCE; t++)
            if (t > 0 && t < n - 1 && env[t] > 0 && env[t] >= env[t - 1] && env[t] > env[t + 1] &&
                (best < 0 || env[t] > env[best]))
                best = t;
        if (best < 0) continue;
        double a = env[best - 1], b = env[best], d = env[best + 1];
        double denom = a - 2 * b + d;
        double t = (double)best + (denom < 0 ? 0.5 * (a - d) / denom : 0.0);
        double w = b;
        sw += w;
        sk += w * k;
        st += w * t;
        skk += w * (double)k * k;
        skt += w * k * t;
    }
    if (sw <= 0) return;
    double det = sw * skk - sk * sk;
    double slope = fixed || det <= 0 ? *period : (sw * skt - sk * st) / det;
    /* Guard against a degenerate fit: the grid search's period is within 0.1%. */
    if (fabs(slope / *period - 1.0) > 0.005) slope = *period;
    double start = (st - slope * sk) / sw;
    *period = slope;
    *phase = fmod(start, slope);
    if (*phase < 0) *phase += slope;
}

/* The beat period (frames) and its grid. The acf comb alone confuses the
 * beat with related periods (4/3 of it in swung grooves, twice it when the
 * hats are loud), so the best few local maxima of the comb are re-ranked by
 * how well a constant grid at each lands on onsets: the mean of the
 * max-filtered envelope peaks (n) on the fitted grid over its mean
 * everywhere. At a wrong period most grid points fall between hits; at half
 * the tempo they land on hits too, which the comb's prior outweighs.
 * chosen_lag gets the comb's lag of the chosen candidate. */
static void choose_period(const double *acf, int max_lag, const float *peaks, int64_t n,
                          double frame_rate, double *chosen_lag, double *grid_phase,
                          double *grid_period)
{
    int lag_lo = (int)floor(60.0 * frame_rate / MAX_BPM);
    int lag_hi = (int)ceil(60.0 * frame_rate / MIN_BPM);
    if (lag_hi * 4 > max_lag) lag_hi = max_lag / 4;
    int best_lags[CANDIDATES];
    double best_scores[CANDIDATES];
    int count = 0;
    double prev = 0.0, cur = comb_score(acf, max_lag, frame_rate, lag_lo);
    for (int lag = lag_lo; lag <= lag_hi; lag++) {
        double next = lag < lag_hi ? comb_score(acf, max_lag, frame_rate, lag + 1) : 0.0;
        int is_peak = cur > 0 && cur >= prev && cur >= next;
        if (is_peak && (count < CANDIDATES || cur > best_scores[CANDIDATES - 1])) {
            /* Insert into the descending list of the best local maxima. */
            int i = count < CANDIDATES ? count++ : CANDIDATES - 1;
            while (i > 0 && best_scores[i - 1] < cur) {
                best_scores[i] = best_scores[i - 1];
                best_lags[i] = best_lags[i - 1];
                i--;
            }
            best_scores[i] = cur;
            best_lags[i] = lag;
        }
        prev = cur;
        cur = next;
    }
    double mean = 0.0;
    for (int64_t t = 0; t < n; t++) mean += peaks[t];
    mean = mean > 0 ? mean / (double)n : 1.0;
    double best = -1.0, best_period = lag_lo;
    int best_lag = lag_lo;
    *grid_phase = 0.0;
    for (int c = 0; c < count; c++) {
        double phase, period;
        double on_grid = fit_grid(peaks, n, best_lags[c], 0, &phase, &period);
        double s = best_scores[c] * on_grid / mean;
        if (s > best) {
            best = s;
            best_lag = best_lags[c];
            best_period = period;
            *grid_phase = phase;
        }
    }
    *grid_period = best_period;
    *chosen_lag = best_lag;
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

/* The frames [*t0, *t1) from beats[k] + from * period to beats[k] + to *
 * period (period: beat k's length; the last beat's, the one before it),
 * clipped to the song; empty when *t1 <= *t0. Needs n >= 2. */
static void beat_window(int64_t *t0, int64_t *t1, const d2m_features *f, const double *beats, int n,
                        int k, double from, double to)
{
    double period = k + 1 < n ? beats[k + 1] - beats[k] : beats[k] - beats[k - 1];
    *t0 = (int64_t)llround((beats[k] + from * period) * f->frame_rate);
    *t1 = (int64_t)llround((beats[k] + to * period) * f->frame_rate);
    if (*t0 < 0) *t0 = 0;
    if (*t1 > f->frames) *t1 = f->frames;
}

/* Beat-synchronous features v (n, BEAT_DIMS): the mean flux of each band
 * over each half of beat k, divided by the band's song mean (mean, per
 * band). Means, not peaks: they change when the playing changes, not from
 * hit to hit. */
static void beat_features(double *v, const d2m_features *f, const double *mean, const double *beats,
                          int n)
{
    for (int k = 0; k < n; k++) {
        for (int half = 0; half < 2; half++) {
            int64_t t0, t1;
            beat_window(&t0, &t1, f, beats, n, k, 0.5 * half, 0.5 * (half + 1));
            double *out = v + (size_t)k * BEAT_DIMS + half * D2M_NBANDS;
            for (int b = 0; b < D2M_NBANDS; b++) {
                double s = 0.0;
                for (int64_t t = t0; t < t1; t++) s += f->band_flux[b][t];
                out[b] = t1 > t0 ? s / (double)(t1 - t0) / mean[b] : 0.0;
            }
        }
    }
}

/* Activity a (n) around each beat: the band-balanced flux (mean: per band)
 * within a quarter beat of it (the beat's own hits, not the off-beat's). */
static void beat_activity(double *a, const d2m_features *f, const double *mean, const double *beats,
                          int n)
{
    for (int k = 0; k < n; k++) {
        int64_t t0, t1;
        beat_window(&t0, &t1, f, beats, n, k, -0.25, 0.25);
        double s = 0.0;
        for (int64_t t = t0; t < t1; t++)
            for (int b = 0; b < D2M_NBANDS; b++) s += f->band_flux[b][t] / mean[b];
        a[k] = t1 > t0 ? s / (double)(t1 - t0) : 0.0;
    }
}

/* The backbeat: backbeat[p] (4), for phase p taken as beat 1, is the snare
 * (its 150-400 Hz body plus its 2-6 kHz wires: band flux within an eighth
 * of a beat of each beat, averaged per phase) on p+1 and p+3 minus on p and
 * p+2, over the snare's total: a share like the novelty's, positive for
 * beats 1 and 3 in the grooves that put the snare on 2 and 4. It cannot
 * tell beat 1 from beat 3 (the novelty and the start do that), and is near
 * 0 in grooves without a backbeat. */
static void backbeat_cue(double *backbeat, const d2m_features *f, const double *mean, const double *beats,
                         int n)
{
    double snare[4] = {0}, total = 1e-9;
    int count[4] = {0};
    for (int k = 0; k < n; k++) {
        int64_t t0, t1;
        beat_window(&t0, &t1, f, beats, n, k, -0.125, 0.125);
        if (t1 <= t0) continue;
        double s = 0.0;
        for (int64_t t = t0; t < t1; t++) s += f->band_flux[1][t] / mean[1] + f->band_flux[3][t] / mean[3];
        snare[k % 4] += s / (double)(t1 - t0);
        count[k % 4]++;
    }
    for (int p = 0; p < 4; p++) {
        if (count[p]) snare[p] /= count[p];
        total += snare[p];
    }
    for (int p = 0; p < 4; p++)
        backbeat[p] = (snare[(p + 1) % 4] + snare[(p + 3) % 4] - snare[p] - snare[(p + 2) % 4]) / total;
}

/* Which of the four beat phases is beat 1 (0..3), or D2M_ERR_NOMEM. Bar
 * lines are where the music changes, so cues vote for a phase:
 *  - novelty (Foote, "Automatic audio segmentation using a measure of audio
 *    novelty", ICME 2000, on beat-synchronous features): at each beat, the
 *    summed log ratio of the mean features over the NOVELTY_BEATS beats
 *    before and after, squared so that the few real section changes
 *    (intro -> groove, breakdowns, fills into a crash) outvote the small
 *    changes from beat to beat;
 *  - the start: songs start on a downbeat far more often than not, so the
 *    first sounding beat gets a small vote that settles the songs whose
 *    novelty is ambiguous (a steady groove throughout);
 *  - the backbeat (backbeat_cue): the snare on 2 and 4 rules out beats 2
 *    and 4 as bar starts. On a Demucs stem the first sounding beat is often
 *    a drum pickup into bar 1 (the band's own start, which HPSS stems keep
 *    through bleed, is gone), and the backbeat outvotes the start there.
 * The novelty votes are shares of their total plus what steady playing
 * shows anyway (STEADY_CHANGE per window), so a song without sections
 * leaves the start and the backbeat to decide. Only windows inside the
 * sounding part count: silence before or after is a change wherever the bar
 * lines are. Weights chosen on rendered GMD songs (bench/eval.py's 12 and
 * the 15 of --set-seed 7, Demucs and HPSS stems): the backbeat at 0.15
 * finds beat 1 in 9 of the 12 with Demucs (was 7) and 9 with HPSS (was 8),
 * and loses none of the 15. Tried and dropped, as they lost songs: the kick
 * on 1 rather than 3 (kicks on the "and", bass bleed in the sub band), and
 * moving the start's vote past a first beat the backbeat rules out (a
 * pickup); the start stays the first sounding beat. */
static int choose_downbeat_phase(const d2m_features *f, const double *beats, int n)
{
    if (n < 2) return 0;
    double *v = malloc((size_t)n * BEAT_DIMS * sizeof *v);           /* (n, BEAT_DIMS) */
    double *sum = calloc((size_t)(n + 1) * BEAT_DIMS, sizeof *sum); /* (n + 1, BEAT_DIMS) running */
    double *act = malloc((size_t)n * sizeof *act);                   /* (n) */
    if (!v || !sum || !act) {
        free(v);
        free(sum);
        free(act);
        return D2M_ERR_NOMEM;
    }
    double mean[D2M_NBANDS]; /* each band's song mean: the cues' scale */
    for (int b = 0; b < D2M_NBANDS; b++) mean[b] = band_mean(f->band_flux[b], f->frames) + 1e-9;
    beat_features(v, f, mean, beats, n);
    beat_activity(act, f, mean, beats, n);
    double mean_act = 0.0;
    for (int k = 0; k < n; k++) {
        const double *row = v + (size_t)k * BEAT_DIMS, *prev = sum + (size_t)k * BEAT_DIMS;
        double *next = sum + (size_t)(k + 1) * BEAT_DIMS;
        for (int d = 0; d < BEAT_DIMS; d++) next[d] = prev[d] + row[d];
        mean_act += act[k] / n;
    }
    /* The song's first and last sounding beats (a tenth of the mean
     * activity). */
    int first = 0, last = n - 1;
    while (first < n - 1 && act[first] < 0.1 * mean_act) first++;
    while (last > first && act[last] < 0.1 * mean_act) last--;
    double novelty[4] = {0};
    const int w = NOVELTY_BEATS;
    int windows = 0;
    for (int k = first + w; k + w <= last + 1; k++, windows++) {
        const double *start = sum + (size_t)(k - w) * BEAT_DIMS, *here = sum + (size_t)k * BEAT_DIMS;
        const double *end = sum + (size_t)(k + w) * BEAT_DIMS;
        double change = 0.0;
        for (int d = 0; d < BEAT_DIMS; d++) {
            double before = (here[d] - start[d]) / w, after = (end[d] - here[d]) / w;
            change += fabs(log((after + NOVELTY_FLOOR) / (before + NOVELTY_FLOOR)));
        }
        novelty[k % 4] += change * change;
    }
    free(v);
    free(sum);
    free(act);
    /* Shares of the total plus the change a steady groove shows anyway, so
     * that the start decides in a song without sections. */
    double total = STEADY_CHANGE * windows;
    for (int ph = 0; ph < 4; ph++) total += novelty[ph];
    double backbeat[4];
    backbeat_cue(backbeat, f, mean, beats, n);
    int best = 0;
    double best_score = -INFINITY;
    for (int ph = 0; ph < 4; ph++) {
        double s = (total > 0 ? novelty[ph] / total : 0.0) + (ph == first % 4 ? START_WEIGHT : 0.0) +
                   BACKBEAT_WEIGHT * backbeat[ph];
        if (s > best_score + 1e-12) {
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

    /* The envelope's peaks, widened to a drummer's spread, for the grid fits. */
    for (int64_t t = 0; t < n; t++) {
        float m = 0.0f;
        for (int64_t d = t - GRID_TOLERANCE; d <= t + GRID_TOLERANCE; d++)
            if (d >= 0 && d < n && env[d] > m) m = env[d];
        scratch[t] = m;
    }
    double confidence = 0.0, grid_phase, grid_period;
    if (forced_bpm > 0) {
        double period = 60.0 * fr / forced_bpm;
        confidence = periodicity(acf, max_lag, env, n, period);
        fit_grid(scratch, n, period, 1, &grid_phase, &grid_period);
        refine_grid(env, n, 1, &grid_phase, &grid_period);
    } else {
        double lag;
        choose_period(acf, max_lag, scratch, n, fr, &lag, &grid_phase, &grid_period);
        confidence = periodicity(acf, max_lag, env, n, lag);
        refine_grid(env, n, 0, &grid_phase, &grid_period);
        if (!(confidence >= MIN_CONFIDENCE)) {
            rc = d2m_fail(err, D2M_ERR_NO_RHYTHM,
                          "no steady beat found (periodicity %.2f); use --tempo BPM to set one",
                          confidence);
            goto done;
        }
    }
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
    if (forced_bpm > 0 || steady_tempo(frames_of_beats, count, grid_period)) {
        double beat_s = grid_period / fr, first = grid_phase / fr;
        /* A beat up to a 32nd note before 0 s is the song's first (drummers
         * play ahead of the beat): keep it, at 0 s, so the downbeat cues see
         * where the song starts. */
        if (first - beat_s > -beat_s / 8.0) first -= beat_s;
        beats.n = 0;
        for (int64_t k = 0; first + k * beat_s < duration_s; k++)
            if ((rc = d2m_dvec_push(&beats, fmax(0.0, first + k * beat_s)))) goto nomem;
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
    if (phase < 0) goto nomem;
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
