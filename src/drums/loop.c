/* Loop selection, the seed's "4 on the floor": the window of whole bars,
 * starting on a downbeat, with the highest low-end rhythmic activity — the
 * mean onset strength of the drum stem low-passed at 200 Hz. Starting on a
 * downbeat is what makes the loop usable in a DAW. Ties go to the earlier
 * window. A caller may instead name the first bar (a user's choice). Pure
 * function of its inputs. */
#include "drums.h"

#include <string.h>

int loop_select(d2m_loop *out, const d2m_features *low, const d2m_beats *b, int bars,
                int first_bar, double duration_s, d2m_error *err)
{
    memset(out, 0, sizeof *out);
    if (bars < 1) return d2m_fail(err, D2M_ERR_INVALID, "loop: bars must be at least 1");
    if (first_bar >= b->n_downbeats)
        return d2m_fail(err, D2M_ERR_TOO_SHORT, "the song has %d bars; there is no bar %d",
                        b->n_downbeats, first_bar + 1);
    double bar_s = 4.0 * 60.0 / b->bpm;
    int best = -1;
    double best_score = -1.0;
    for (int i = first_bar >= 0 ? first_bar : 0; i < b->n_downbeats; i++) {
        double start = b->downbeats[i];
        double end = i + bars < b->n_downbeats ? b->downbeats[i + bars]
                                                : beats_time(b, beats_position(b, start) + 4.0 * bars);
        /* Allow the last window to end a few ms past the audio's end. */
        if (start < 0 || end > duration_s + 0.02) break;
        int64_t f0 = (int64_t)(start * low->frame_rate), f1 = (int64_t)(end * low->frame_rate);
        if (f1 > low->frames) f1 = low->frames;
        if (f1 <= f0) continue;
        double sum = 0.0;
        for (int64_t t = f0; t < f1; t++) sum += low->flux[t];
        double score = sum / (double)(f1 - f0);
        if (score > best_score + 1e-12) {
            best_score = score;
            best = i;
            out->start_s = start;
            out->end_s = end; /* may pass the audio by < 20 ms: padded with silence */
        }
        if (first_bar >= 0) break; /* the caller chose the window */
    }
    if (best < 0 && first_bar >= 0)
        return d2m_fail(err, D2M_ERR_TOO_SHORT, "%d bars from bar %d run past the end of the song",
                        bars, first_bar + 1);
    if (best < 0)
        return d2m_fail(err, D2M_ERR_TOO_SHORT,
                        "the song is %.1f s long; %d bars at %.1f BPM need %.1f s from a downbeat",
                        duration_s, bars, b->bpm, bars * bar_s);
    out->first_bar = best;
    out->bars = bars;
    out->score = best_score;
    return 0;
}
