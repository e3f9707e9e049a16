/* Beat-grid arithmetic, hit lists and quantize_hits: known answers on a steady
 * 120 bpm click and on a drifting tempo, merging, durations, range, grid 0,
 * and parameter validation. */
#include "drums/drums.h"
#include "test.h"

#include <string.h>

#define PPQ 480

/* Beats every `period` seconds from 0 (n beats). The caller frees b->beats. */
static d2m_beats steady_beats(int n, double period)
{
    d2m_beats b = {0};
    b.bpm = 60.0 / period;
    b.beats = malloc((size_t)n * sizeof *b.beats);
    for (int k = 0; k < n; k++) b.beats[k] = k * period;
    b.n_beats = n;
    return b;
}

/* Beats speeding up and slowing down: period 0.5 s +- 8 %. */
static d2m_beats drifting_beats(int n)
{
    d2m_beats b = {0};
    b.bpm = 120;
    b.beats = malloc((size_t)n * sizeof *b.beats);
    double t = 0.37;
    for (int k = 0; k < n; k++) {
        b.beats[k] = t;
        t += 0.5 * (1.0 + 0.08 * sin(0.4 * k)) + 0.002 * k;
    }
    b.n_beats = n;
    return b;
}

static d2m_hit hit(double time_s, int note, int velocity)
{
    d2m_hit h = {time_s, note, velocity, 1.0f};
    return h;
}

/* Every note ends by the next strike of the same drum and by end_tick, and
 * lasts at least one tick; ticks are sorted by (tick, note) and unique. */
static void check_note_invariants(const d2m_notes *notes, int ppq, int64_t end_tick,
                                  const char *what)
{
    for (int i = 0; i < notes->n; i++) {
        const d2m_note *a = &notes->v[i];
        CHECK(a->duration >= 1, "%s: note %d duration %lld", what, i, (long long)a->duration);
        CHECK(a->tick + a->duration <= end_tick, "%s: note %d ends at %lld past end %lld", what, i,
              (long long)(a->tick + a->duration), (long long)end_tick);
        CHECK(a->duration <= ppq / 8, "%s: note %d lasts %lld, longer than a 1/32 note", what, i,
              (long long)a->duration);
        if (i > 0) {
            const d2m_note *p = &notes->v[i - 1];
            CHECK(p->tick < a->tick || (p->tick == a->tick && p->note < a->note),
                  "%s: notes %d (%lld, %d) and %d (%lld, %d) out of order or duplicated", what,
                  i - 1, (long long)p->tick, p->note, i, (long long)a->tick, a->note);
        }
        for (int j = i + 1; j < notes->n; j++) {
            if (notes->v[j].note != a->note) continue;
            CHECK(a->tick + a->duration <= notes->v[j].tick,
                  "%s: note %d (%d at %lld) lasts to %lld past the next strike at %lld", what, i,
                  a->note, (long long)a->tick, (long long)(a->tick + a->duration),
                  (long long)notes->v[j].tick);
            break;
        }
    }
}

static void test_beats_position_interpolates_and_extrapolates(void)
{
    d2m_beats b = {0};
    b.bpm = 120;
    double beats[] = {1.0, 1.5, 2.5, 3.25};
    b.beats = beats;
    b.n_beats = 4;
    CHECK_NEAR(beats_position(&b, 1.0), 0.0, 1e-12);
    CHECK_NEAR(beats_position(&b, 1.25), 0.5, 1e-12);
    CHECK_NEAR(beats_position(&b, 2.0), 1.5, 1e-12); /* inside the 1 s beat */
    CHECK_NEAR(beats_position(&b, 3.25), 3.0, 1e-12);
    CHECK_NEAR(beats_position(&b, 0.0), -2.0, 1e-12); /* first period 0.5 s */
    CHECK_NEAR(beats_position(&b, 4.75), 5.0, 1e-12); /* last period 0.75 s */
    for (double x = -3; x <= 7; x += 0.173)
        CHECK_NEAR(beats_position(&b, beats_time(&b, x)), x, 1e-9);
    CHECK_NEAR(beats_time(&b, 1.5), 2.0, 1e-12);
    CHECK_NEAR(beats_time(&b, -1.0), 0.5, 1e-12);
    CHECK_NEAR(beats_time(&b, 4.0), 4.0, 1e-12);

    b.n_beats = 1; /* one beat: period 60/bpm = 0.5 s */
    CHECK_NEAR(beats_position(&b, 2.0), 2.0, 1e-12);
    CHECK_NEAR(beats_position(&b, 0.5), -1.0, 1e-12);
    CHECK_NEAR(beats_time(&b, 3.0), 2.5, 1e-12);

    b.n_beats = 0; /* none: beat 0 at 0 s */
    CHECK_NEAR(beats_position(&b, 1.5), 3.0, 1e-12);
    CHECK_NEAR(beats_time(&b, 3.0), 1.5, 1e-12);
}

static void test_beats_free_is_null_safe_and_zeroes(void)
{
    beats_free(NULL);
    d2m_beats b = steady_beats(8, 0.5);
    b.downbeats = malloc(2 * sizeof *b.downbeats);
    b.n_downbeats = 2;
    beats_free(&b);
    CHECK(b.beats == NULL && b.downbeats == NULL && b.n_beats == 0 && b.n_downbeats == 0,
          "beats_free left n_beats %d n_downbeats %d", b.n_beats, b.n_downbeats);
}

static void test_hits_sort_is_stable(void)
{
    d2m_hits h = {0};
    for (int i = 0; i < 1000; i++) {
        /* Interleaved runs with many equal times; strength records the push order. */
        d2m_hit x = hit((double)((i * 37) % 50) * 0.1, 36, 100);
        x.strength = (float)i;
        CHECK(hits_push(&h, x) == 0, "push %d", i);
    }
    hits_sort(&h);
    CHECK(h.n == 1000, "n %d", h.n);
    int bad = 0;
    for (int i = 1; i < h.n; i++) {
        if (h.v[i].time_s < h.v[i - 1].time_s) bad++;
        if (h.v[i].time_s == h.v[i - 1].time_s && !(h.v[i - 1].strength < h.v[i].strength)) bad++;
    }
    CHECK(bad == 0, "%d hits out of time or push order after hits_sort", bad);
    hits_free(&h);
    CHECK(h.v == NULL && h.n == 0 && h.cap == 0, "hits_free left n %d", h.n);
    hits_free(NULL);
    notes_free(NULL);
}

static void test_drum_names_follow_general_midi(void)
{
    struct {
        int note;
        const char *name;
    } map[] = {{35, "kick"},          {36, "kick"},         {37, "side_stick"},
               {38, "snare"},         {40, "snare"},        {39, "clap"},
               {42, "hihat_closed"},  {44, "hihat_pedal"},  {46, "hihat_open"},
               {41, "tom_floor_low"}, {43, "tom_floor_high"}, {45, "tom_low"},
               {47, "tom_low_mid"},   {48, "tom_high_mid"}, {50, "tom_high"},
               {49, "crash"},         {57, "crash"},        {51, "ride"},
               {59, "ride"},          {53, "ride_bell"},    {55, "splash"},
               {52, "china"},         {54, "perc"},         {0, "perc"},
               {127, "perc"},         {-1, "perc"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        CHECK(strcmp(drum_name(map[i].note), map[i].name) == 0, "note %d: expected %s, got %s",
              map[i].note, map[i].name, drum_name(map[i].note));
}

/* Hits a little early or late (up to 0.3 of a grid step) snap to the step. */
static void test_steady_click_snaps_early_and_late_hits_for_each_grid(void)
{
    d2m_beats b = steady_beats(64, 0.5); /* 120 bpm */
    const double origin = 4, length = 16;
    const int grids[] = {4, 8, 16, 32};
    for (int g = 0; g < 4; g++) {
        int grid = grids[g];
        double step = 4.0 / grid;
        int n_steps = (int)(length / step);
        d2m_hit *hits = malloc((size_t)n_steps * sizeof *hits);
        for (int j = 0; j < n_steps; j++) {
            double jitter = (j % 2 ? 0.3 : -0.3) * step * (j % 3 ? 1.0 : 0.5);
            hits[j] = hit(beats_time(&b, origin + j * step + jitter), 42, 80);
        }
        d2m_notes notes = {0};
        d2m_error err = {0};
        int rc = quantize_hits(&notes, hits, n_steps, &b, origin, length, grid, PPQ, &err);
        CHECK(rc == 0, "grid %d: rc %d (%s)", grid, rc, err.message);
        CHECK(notes.n == n_steps, "grid %d: expected %d notes, got %d", grid, n_steps, notes.n);
        int64_t step_ticks = llround(step * PPQ);
        for (int j = 0; j < notes.n && j < n_steps; j++) {
            CHECK(notes.v[j].tick == j * step_ticks, "grid %d hit %d: expected tick %lld, got %lld",
                  grid, j, (long long)(j * step_ticks), (long long)notes.v[j].tick);
            int64_t want = step_ticks < PPQ / 8 ? step_ticks : PPQ / 8;
            CHECK(notes.v[j].duration == want, "grid %d hit %d: expected duration %lld, got %lld",
                  grid, j, (long long)want, (long long)notes.v[j].duration);
        }
        check_note_invariants(&notes, PPQ, (int64_t)(length * PPQ), "steady click");
        notes_free(&notes);
        CHECK(notes.v == NULL && notes.n == 0, "notes_free left n %d", notes.n);
        free(hits);
    }
    beats_free(&b);
}

/* Sixteenths placed on a drifting beat list by plain interpolation (not via
 * beats_time) land exactly on the 16th grid, even with tiny timing noise;
 * a fixed-tempo grid would have drifted off them. */
static void test_drifting_tempo_hits_land_on_the_tracked_grid(void)
{
    d2m_beats b = drifting_beats(40);
    const int origin = 8, length = 16;
    d2m_hit hits[64];
    int n = 0;
    for (int beat = 0; beat < length; beat++) {
        double t0 = b.beats[origin + beat], t1 = b.beats[origin + beat + 1];
        for (int s = 0; s < 4; s++) {
            double noise = (n % 5 - 2) * 0.004 * (t1 - t0); /* < 1 % of a beat */
            hits[n] = hit(t0 + (s / 4.0) * (t1 - t0) + noise, s == 0 ? 36 : 42, 100);
            n++;
        }
    }
    d2m_notes notes = {0};
    d2m_error err = {0};
    int rc = quantize_hits(&notes, hits, n, &b, origin, length, 16, 960, &err);
    CHECK(rc == 0, "rc %d (%s)", rc, err.message);
    CHECK(notes.n == n, "expected %d notes, got %d", n, notes.n);
    for (int i = 0; i < notes.n && i < n; i++)
        CHECK(notes.v[i].tick == i * 240, "hit %d: expected tick %d, got %lld", i, i * 240,
              (long long)notes.v[i].tick);

    /* The same hits at exact subdivisions with grid 0 also land on the ticks. */
    for (int i = 0; i < n; i++) {
        int beat = i / 4, s = i % 4;
        double t0 = b.beats[origin + beat], t1 = b.beats[origin + beat + 1];
        hits[i].time_s = t0 + (s / 4.0) * (t1 - t0);
    }
    notes_free(&notes);
    rc = quantize_hits(&notes, hits, n, &b, origin, length, 0, 960, &err);
    CHECK(rc == 0 && notes.n == n, "grid 0: rc %d, %d notes", rc, notes.n);
    for (int i = 0; i < notes.n && i < n; i++)
        CHECK(notes.v[i].tick == i * 240, "grid 0 hit %d: expected tick %d, got %lld", i, i * 240,
              (long long)notes.v[i].tick);
    notes_free(&notes);
    beats_free(&b);
}

static void test_same_note_same_tick_merges_keeping_loudest(void)
{
    d2m_beats b = steady_beats(32, 0.5);
    /* Two kicks and a snare near beat 2 (all snap to tick 2*480), a kick at beat 3. */
    d2m_hit hits[] = {hit(1.01, 36, 50), hit(0.98, 38, 70), hit(1.02, 36, 110),
                      hit(0.99, 36, 90), hit(1.5, 36, 60)};
    d2m_notes notes = {0};
    int rc = quantize_hits(&notes, hits, 5, &b, 0, 8, 16, PPQ, NULL);
    CHECK(rc == 0, "rc %d", rc);
    CHECK(notes.n == 3, "expected 3 notes (kick, snare on one tick; kick later), got %d", notes.n);
    if (notes.n == 3) {
        CHECK(notes.v[0].tick == 960 && notes.v[0].note == 36 && notes.v[0].velocity == 110,
              "first: tick %lld note %d velocity %d, expected 960 36 110",
              (long long)notes.v[0].tick, notes.v[0].note, notes.v[0].velocity);
        CHECK(notes.v[1].tick == 960 && notes.v[1].note == 38 && notes.v[1].velocity == 70,
              "second: tick %lld note %d velocity %d, expected 960 38 70",
              (long long)notes.v[1].tick, notes.v[1].note, notes.v[1].velocity);
        CHECK(notes.v[2].tick == 1440 && notes.v[2].note == 36 && notes.v[2].velocity == 60,
              "third: tick %lld note %d velocity %d, expected 1440 36 60",
              (long long)notes.v[2].tick, notes.v[2].note, notes.v[2].velocity);
    }
    check_note_invariants(&notes, PPQ, 8 * PPQ, "merge");
    notes_free(&notes);
    beats_free(&b);
}

/* Grid 0 keeps exact ticks; fast hat strokes shorten each other, the last one
 * stops at the loop's end. */
static void test_grid_off_keeps_exact_ticks_and_durations_never_overlap(void)
{
    d2m_beats b = steady_beats(32, 0.5);
    const double length = 4;
    d2m_hit hits[] = {
        hit(0.5 * 1.2345, 38, 100),            /* beat 1.2345 -> 592.56 -> 593 */
        hit(0.5 * (1.0 + 30.0 / 480), 42, 90), /* hats 30 ticks apart */
        hit(0.5 * 1.0, 42, 90),
        hit(0.5 * (1.0 + 45.0 / 480), 42, 90), /* then 15 ticks later */
        hit(0.5 * (length - 10.0 / 480), 36, 100), /* 10 ticks before the end */
    };
    d2m_notes notes = {0};
    int rc = quantize_hits(&notes, hits, 5, &b, 0, length, 0, PPQ, NULL);
    CHECK(rc == 0, "rc %d", rc);
    CHECK(notes.n == 5, "expected 5 notes, got %d", notes.n);
    if (notes.n == 5) {
        const int64_t want_tick[] = {480, 510, 525, 593, 1910};
        const int want_note[] = {42, 42, 42, 38, 36};
        const int64_t want_duration[] = {30, 15, 60, 60, 10};
        for (int i = 0; i < 5; i++)
            CHECK(notes.v[i].tick == want_tick[i] && notes.v[i].note == want_note[i] &&
                      notes.v[i].duration == want_duration[i],
                  "note %d: expected (%lld, %d, %lld), got (%lld, %d, %lld)", i,
                  (long long)want_tick[i], want_note[i], (long long)want_duration[i],
                  (long long)notes.v[i].tick, notes.v[i].note, (long long)notes.v[i].duration);
    }
    check_note_invariants(&notes, PPQ, (int64_t)(length * PPQ), "grid 0");
    notes_free(&notes);

    /* 32nd-note hats on grid 32 at ppq 960: each lasts exactly one step. */
    d2m_hit hats[32];
    for (int i = 0; i < 32; i++) hats[i] = hit(0.5 * (i / 8.0), 42, 64);
    rc = quantize_hits(&notes, hats, 32, &b, 0, length, 32, 960, NULL);
    CHECK(rc == 0 && notes.n == 32, "32nds: rc %d, %d notes", rc, notes.n);
    for (int i = 0; i < notes.n; i++)
        CHECK(notes.v[i].tick == i * 120 && notes.v[i].duration == 120,
              "32nd %d: tick %lld duration %lld, expected %d 120", i, (long long)notes.v[i].tick,
              (long long)notes.v[i].duration, i * 120);
    notes_free(&notes);
    beats_free(&b);
}

static void test_hits_outside_the_loop_are_dropped(void)
{
    d2m_beats b = steady_beats(64, 0.5);
    const double origin = 8, length = 8; /* loop = beats [8, 16) = [4 s, 8 s) */
    const double step = 0.25;            /* grid 16 */
    d2m_hit hits[] = {
        hit(beats_time(&b, origin - 1), 36, 100),              /* before: dropped */
        hit(beats_time(&b, origin - 0.6 * step), 36, 100),     /* snaps to -1 step: dropped */
        hit(beats_time(&b, origin - 0.4 * step), 38, 100),     /* snaps to 0: kept */
        hit(beats_time(&b, origin + length - 0.6 * step), 42, 100), /* last step: kept */
        hit(beats_time(&b, origin + length - 0.4 * step), 42, 100), /* snaps to end: dropped */
        hit(beats_time(&b, origin + length), 36, 100),          /* at end: dropped */
        hit(beats_time(&b, origin + length + 3), 36, 100),      /* after: dropped */
        hit(NAN, 36, 100),                                      /* no time: dropped */
    };
    int n = (int)(sizeof hits / sizeof hits[0]);
    d2m_notes notes = {0};
    int rc = quantize_hits(&notes, hits, n, &b, origin, length, 16, PPQ, NULL);
    CHECK(rc == 0, "rc %d", rc);
    CHECK(notes.n == 2, "expected 2 notes kept, got %d", notes.n);
    if (notes.n == 2) {
        CHECK(notes.v[0].tick == 0 && notes.v[0].note == 38, "first kept: tick %lld note %d",
              (long long)notes.v[0].tick, notes.v[0].note);
        CHECK(notes.v[1].tick == (int64_t)((length - step) * PPQ) && notes.v[1].note == 42,
              "last kept: tick %lld note %d", (long long)notes.v[1].tick, notes.v[1].note);
    }
    check_note_invariants(&notes, PPQ, (int64_t)(length * PPQ), "range");
    notes_free(&notes);

    /* Grid 0: a hit a hair before the end would round onto the end tick: dropped. */
    d2m_hit edge = hit(beats_time(&b, origin + length - 1e-5), 36, 100);
    rc = quantize_hits(&notes, &edge, 1, &b, origin, length, 0, PPQ, NULL);
    CHECK(rc == 0 && notes.n == 0, "grid 0 edge: rc %d, %d notes (expected 0)", rc, notes.n);
    notes_free(&notes);

    /* No hits at all is an empty, valid result. */
    rc = quantize_hits(&notes, NULL, 0, &b, origin, length, 16, PPQ, NULL);
    CHECK(rc == 0 && notes.n == 0 && notes.v == NULL, "no hits: rc %d n %d", rc, notes.n);
    beats_free(&b);
}

static void test_velocities_are_clamped(void)
{
    d2m_beats b = steady_beats(16, 0.5);
    d2m_hit hits[] = {hit(0.0, 36, 0), hit(0.5, 36, 200), hit(1.0, 36, -5), hit(1.5, 36, 127)};
    d2m_notes notes = {0};
    int rc = quantize_hits(&notes, hits, 4, &b, 0, 4, 4, PPQ, NULL);
    CHECK(rc == 0 && notes.n == 4, "rc %d, %d notes", rc, notes.n);
    const int want[] = {1, 127, 1, 127};
    for (int i = 0; i < notes.n && i < 4; i++)
        CHECK(notes.v[i].velocity == want[i], "hit %d: expected velocity %d, got %d", i, want[i],
              notes.v[i].velocity);
    notes_free(&notes);
    beats_free(&b);
}

static void test_invalid_parameters_are_rejected_with_a_message(void)
{
    d2m_beats b = steady_beats(16, 0.5);
    d2m_hit one = hit(0.5, 36, 100);
    struct {
        int grid, ppq;
        double length, origin;
        int note;
    } bad[] = {
        {12, 480, 4, 0, 36}, {64, 480, 4, 0, 36},  {-4, 480, 4, 0, 36},  {16, 96, 4, 0, 36},
        {16, 0, 4, 0, 36},   {16, 480, 0, 0, 36},  {16, 480, -4, 0, 36}, {16, 480, NAN, 0, 36},
        {16, 480, INFINITY, 0, 36}, {16, 480, 4, NAN, 36}, {16, 480, 4, 0, 128},
        {16, 480, 4, 0, -1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d2m_note stale[1] = {{0}};
        d2m_notes notes = {stale, 99}; /* stale contents in: must be reset */
        d2m_error err = {0};
        one.note = bad[i].note;
        int rc = quantize_hits(&notes, &one, 1, &b, bad[i].origin, bad[i].length, bad[i].grid,
                               bad[i].ppq, &err);
        CHECK(rc == D2M_ERR_INVALID, "case %zu: expected D2M_ERR_INVALID, got %d", i, rc);
        CHECK(err.code == D2M_ERR_INVALID && err.message[0] != '\0', "case %zu: no message", i);
        CHECK(notes.v == NULL && notes.n == 0, "case %zu: output not emptied", i);
    }
    beats_free(&b);
}

int main(void)
{
    test_beats_position_interpolates_and_extrapolates();
    test_beats_free_is_null_safe_and_zeroes();
    test_hits_sort_is_stable();
    test_drum_names_follow_general_midi();
    test_steady_click_snaps_early_and_late_hits_for_each_grid();
    test_drifting_tempo_hits_land_on_the_tracked_grid();
    test_same_note_same_tick_merges_keeping_loudest();
    test_grid_off_keeps_exact_ticks_and_durations_never_overlap();
    test_hits_outside_the_loop_are_dropped();
    test_velocities_are_clamped();
    test_invalid_parameters_are_rejected_with_a_message();
    return test_summary("test_quantize");
}
