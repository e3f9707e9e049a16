/* Hits (seconds) to notes on the MIDI timeline (ticks), snapped to a grid
 * measured on the tracked beats, so a drifting tempo still lands every hit on
 * the bar's subdivisions.
 *
 * Layout: a hit's position is p = beats_position(time) - origin_beat beats;
 * grid g (4, 8, 16, 32 notes per 4/4 bar) has a step of 4/g beats and p snaps
 * to the nearest step; grid 0 keeps p. Kept: 0 <= snapped < length_beats and
 * tick = llround(snapped * ppq) < llround(length_beats * ppq). Output is
 * sorted by tick then note; one note per (tick, note), the loudest velocity
 * kept. A note lasts a 1/32 note (ppq/8 ticks) unless the same drum strikes
 * again sooner or the loop ends sooner; it always lasts at least one tick.
 * Reference: none beyond drums.h; durations follow the usual drum-MIDI habit
 * of short fixed notes (samplers ignore note-off on one-shot drums).
 * Threading: pure function on caller-owned data.
 */
#include "drums.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DRUM_NOTES 128

static int compare_tick_note(const void *a, const void *b)
{
    const d2m_note *x = a, *y = b;
    if (x->tick != y->tick) return x->tick < y->tick ? -1 : 1;
    if (x->note != y->note) return x->note < y->note ? -1 : 1;
    return 0;
}

static int clamp_velocity(int velocity)
{
    return velocity < 1 ? 1 : velocity > 127 ? 127 : velocity;
}

int quantize_hits(d2m_notes *out, const d2m_hit *hits, int n_hits, const d2m_beats *b,
                  double origin_beat, double length_beats, int grid, int ppq, d2m_error *err)
{
    d2m_note *notes = NULL;
    int rc = 0;

    out->v = NULL;
    out->n = 0;
    if (grid != 0 && grid != 4 && grid != 8 && grid != 16 && grid != 32) {
        rc = d2m_fail(err, D2M_ERR_INVALID, "quantize grid %d: must be 0 (off), 4, 8, 16 or 32",
                      grid);
        goto fail;
    }
    if (ppq != 480 && ppq != 960) {
        rc = d2m_fail(err, D2M_ERR_INVALID,
                      "MIDI resolution %d ticks per quarter: must be 480 or 960", ppq);
        goto fail;
    }
    if (!(length_beats > 0) || !isfinite(length_beats) || length_beats * ppq > 1e15) {
        rc = d2m_fail(err, D2M_ERR_INVALID, "loop length %g beats: must be positive and finite",
                      length_beats);
        goto fail;
    }
    if (!isfinite(origin_beat)) {
        rc = d2m_fail(err, D2M_ERR_INVALID, "loop origin %g beats: must be finite", origin_beat);
        goto fail;
    }
    if (n_hits < 0 || (n_hits > 0 && !hits) || !b) {
        rc = d2m_fail(err, D2M_ERR_INVALID, "quantize: %d hits given without a hit list or beats",
                      n_hits);
        goto fail;
    }

    notes = malloc((size_t)(n_hits > 0 ? n_hits : 1) * sizeof *notes);
    if (!notes) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "quantize: no memory for %d notes", n_hits);
        goto fail;
    }

    const int64_t end_tick = llround(length_beats * ppq);
    const double step = grid ? 4.0 / grid : 0.0;
    int n = 0;
    for (int i = 0; i < n_hits; i++) {
        const d2m_hit *h = &hits[i];
        if (h->note < 0 || h->note >= DRUM_NOTES) {
            rc = d2m_fail(err, D2M_ERR_INVALID, "hit %d at %.3f s: MIDI note %d outside 0..127", i,
                          h->time_s, h->note);
            goto fail;
        }
        double p = beats_position(b, h->time_s) - origin_beat;
        double snapped = grid ? round(p / step) * step : p;
        /* Written so NaN fails too, before it can reach llround. */
        if (!(snapped >= 0 && snapped < length_beats)) continue;
        int64_t tick = llround(snapped * ppq);
        if (tick >= end_tick) continue; /* grid 0: a hit a hair before the end */
        notes[n].tick = tick;
        notes[n].note = h->note;
        notes[n].velocity = clamp_velocity(h->velocity);
        notes[n].duration = 0;
        n++;
    }

    qsort(notes, (size_t)n, sizeof *notes, compare_tick_note);

    /* Merge same (tick, note): the loudest strike stands for them all. */
    int kept = 0;
    for (int i = 0; i < n; i++) {
        d2m_note *last = kept > 0 ? &notes[kept - 1] : NULL;
        if (last && last->tick == notes[i].tick && last->note == notes[i].note) {
            if (notes[i].velocity > last->velocity) last->velocity = notes[i].velocity;
            continue;
        }
        notes[kept++] = notes[i];
    }
    n = kept;

    /* Durations, walking backwards so next_start[note] is the next strike of
     * that drum (or the loop's end). Ticks are unique per note after the
     * merge and all below end_tick, so every duration is at least 1. */
    int64_t next_start[DRUM_NOTES];
    for (int k = 0; k < DRUM_NOTES; k++) next_start[k] = end_tick;
    const int64_t default_duration = ppq / 8;
    for (int i = n - 1; i >= 0; i--) {
        d2m_note *note = &notes[i];
        int64_t stop = note->tick + default_duration;
        if (stop > next_start[note->note]) stop = next_start[note->note];
        note->duration = stop - note->tick;
        next_start[note->note] = note->tick;
    }

    if (n == 0) {
        free(notes);
        notes = NULL;
    }
    out->v = notes;
    out->n = n;
    return 0;

fail:
    free(notes);
    return rc;
}
