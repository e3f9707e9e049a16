/* Beat-grid arithmetic and the small containers of the drums layer: time <->
 * fractional beat position on a tracked (possibly drifting) beat list, the
 * growable hit list, the note list's release, and General MIDI drum names.
 *
 * Layout: d2m_beats.beats (n_beats) holds increasing seconds; beat k sits at
 * position k. Between two tracked beats the position is linear in time;
 * before the first and after the last it continues with the first/last
 * inter-beat period. With one beat the period is 60/bpm; with none, beat 0 is
 * at 0 s (period 60/bpm, or 0.5 s when bpm is unset).
 * Reference: GM drum map, General MIDI Level 1 specification, percussion key
 * map (channel 10).
 * Threading: pure functions on caller-owned data; no shared state.
 */
#include "drums.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void beats_free(d2m_beats *b)
{
    if (!b) return;
    free(b->beats);
    free(b->downbeats);
    memset(b, 0, sizeof *b);
}

/* Seconds per beat when the beat list itself cannot say (fewer than 2 beats). */
static double nominal_period(const d2m_beats *b)
{
    return (b->bpm > 0 && isfinite(b->bpm)) ? 60.0 / b->bpm : 0.5;
}

/* Index k of the tracked interval [beats[k], beats[k+1]) holding t, for
 * beats[0] <= t < beats[n-1] and n >= 2. */
static int interval_of_time(const double *beats, int n, double t)
{
    int lo = 0, hi = n - 1; /* invariant: beats[lo] <= t < beats[hi] */
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (beats[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

double beats_position(const d2m_beats *b, double t)
{
    int n = b->n_beats;
    if (n <= 0) return t / nominal_period(b);
    if (n == 1) return (t - b->beats[0]) / nominal_period(b);

    const double *beats = b->beats;
    if (t < beats[0]) {
        double period = beats[1] - beats[0];
        return period > 0 ? (t - beats[0]) / period : 0.0;
    }
    if (t >= beats[n - 1]) {
        double period = beats[n - 1] - beats[n - 2];
        return (n - 1) + (period > 0 ? (t - beats[n - 1]) / period : 0.0);
    }
    int k = interval_of_time(beats, n, t);
    double period = beats[k + 1] - beats[k];
    return k + (period > 0 ? (t - beats[k]) / period : 0.0);
}

double beats_time(const d2m_beats *b, double position)
{
    int n = b->n_beats;
    if (n <= 0) return position * nominal_period(b);
    if (n == 1) return b->beats[0] + position * nominal_period(b);

    const double *beats = b->beats;
    if (position < 0) return beats[0] + position * (beats[1] - beats[0]);
    if (!(position < n - 1)) /* also NaN, which must not reach the int cast */
        return beats[n - 1] + (position - (n - 1)) * (beats[n - 1] - beats[n - 2]);
    int k = (int)floor(position);
    return beats[k] + (position - k) * (beats[k + 1] - beats[k]);
}

int hits_push(d2m_hits *h, d2m_hit hit)
{
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 256;
        d2m_hit *v = realloc(h->v, (size_t)cap * sizeof *v);
        if (!v) return D2M_ERR_NOMEM;
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n++] = hit;
    return 0;
}

/* Stable merge of the sorted runs src[lo, mid) and src[mid, hi) into dst. */
static void merge_runs(d2m_hit *dst, const d2m_hit *src, int lo, int mid, int hi)
{
    int i = lo, j = mid, k = lo;
    while (i < mid && j < hi) dst[k++] = (src[j].time_s < src[i].time_s) ? src[j++] : src[i++];
    while (i < mid) dst[k++] = src[i++];
    while (j < hi) dst[k++] = src[j++];
}

/* Stable and in place, for when no scratch buffer can be had. */
static void insertion_sort(d2m_hit *v, int n)
{
    for (int i = 1; i < n; i++) {
        d2m_hit x = v[i];
        int j = i;
        while (j > 0 && x.time_s < v[j - 1].time_s) {
            v[j] = v[j - 1];
            j--;
        }
        v[j] = x;
    }
}

/* Stable, so hits at the same instant keep the order the detector pushed them
 * in (it matters for reproducible output). Bottom-up merge sort; if the
 * scratch allocation fails, falls back to insertion sort (hit lists arrive as
 * a few sorted runs, so it is rarely slow). */
void hits_sort(d2m_hits *h)
{
    if (!h || h->n < 2) return;
    int n = h->n;
    d2m_hit *scratch = malloc((size_t)n * sizeof *scratch);
    if (!scratch) {
        insertion_sort(h->v, n);
        return;
    }
    d2m_hit *src = h->v, *dst = scratch;
    for (int width = 1; width < n; width *= 2) {
        for (int lo = 0; lo < n; lo += 2 * width) {
            int mid = lo + width < n ? lo + width : n;
            int hi = lo + 2 * width < n ? lo + 2 * width : n;
            merge_runs(dst, src, lo, mid, hi);
        }
        d2m_hit *swap = src;
        src = dst;
        dst = swap;
    }
    if (src != h->v) memcpy(h->v, src, (size_t)n * sizeof *src);
    free(scratch);
}

void hits_free(d2m_hits *h)
{
    if (!h) return;
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}

void notes_free(d2m_notes *n)
{
    if (!n) return;
    free(n->v);
    n->v = NULL;
    n->n = 0;
}

const char *drum_name(int note)
{
    switch (note) {
    case 35:
    case 36: return "kick";
    case 37: return "side_stick";
    case 38:
    case 40: return "snare";
    case 39: return "clap";
    case 41: return "tom_floor_low";
    case 42: return "hihat_closed";
    case 43: return "tom_floor_high";
    case 44: return "hihat_pedal";
    case 45: return "tom_low";
    case 46: return "hihat_open";
    case 47: return "tom_low_mid";
    case 48: return "tom_high_mid";
    case 49:
    case 57: return "crash";
    case 50: return "tom_high";
    case 51:
    case 59: return "ride";
    case 52: return "china";
    case 53: return "ride_bell";
    case 55: return "splash";
    default: return "perc";
    }
}
