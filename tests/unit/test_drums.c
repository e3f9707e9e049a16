/* Drum analysis on synthetic drum tracks of known tempo and structure:
 * tempo and beats on rock patterns at several BPMs, forced tempo, no rhythm
 * in noise, the loop on an arrangement whose groove section is known, the
 * band-energy-ratio classifier, and the default classifier's hits. */
#include "drums/drums.h"
#include "synth.h"
#include "test.h"

#include <string.h>

#define RATE 44100

/* A rock beat (kick 1 and 3, snare 2 and 4, eighth hats) after lead_s of
 * silence; sections per bar: 'h' hats only, 'g' full groove, 's' snare +
 * hats. Returns the signal (n) and the bar length. */
static float *rock_song(int64_t *n, double bpm, double lead_s, const char *bars)
{
    double beat = 60.0 / bpm;
    int nbars = (int)strlen(bars);
    *n = (int64_t)((lead_s + nbars * 4 * beat + 1.0) * RATE);
    float *x = calloc(*n, sizeof *x);
    for (int b = 0; b < nbars; b++)
        for (int e = 0; e < 8; e++) {
            int64_t at = (int64_t)llround((lead_s + (b * 4 + e * 0.5) * beat) * RATE);
            synth_hit(x, *n, at, RATE, SYNTH_HAT, e % 2 ? 0.25f : 0.35f);
            if (bars[b] == 'g' && (e == 0 || e == 4)) synth_hit(x, *n, at, RATE, SYNTH_KICK, 0.8f);
            if (bars[b] != 'h' && (e == 2 || e == 6)) synth_hit(x, *n, at, RATE, SYNTH_SNARE, 0.6f);
        }
    return x;
}

static void analyse(d2m_features *f, d2m_beats *b, const float *x, int64_t n, double forced,
                    int expect_rc)
{
    d2m_error err = {0};
    CHECK(features_compute(f, x, n, RATE, 1024, 256, &err) == 0, "features: %s", err.message);
    int rc = tempo_track(b, f, forced, (double)n / RATE, &err);
    CHECK(rc == expect_rc, "tempo_track returned %d (%s), expected %d", rc, err.message, expect_rc);
}

static void test_tempo_on_rock_beats(void)
{
    const double bpms[] = {80.0, 100.0, 128.0, 160.0};
    for (int i = 0; i < 4; i++) {
        int64_t n;
        const double lead = 1.0;
        float *x = rock_song(&n, bpms[i], lead, "gggggggg");
        d2m_features f;
        d2m_beats b;
        analyse(&f, &b, x, n, 0.0, 0);
        CHECK(fabs(b.bpm / bpms[i] - 1.0) < 0.01, "%.0f BPM track: detected %.2f", bpms[i], b.bpm);
        /* Every beat of the song is found within 20 ms. */
        double beat = 60.0 / bpms[i];
        int matched = 0;
        for (int k = 0; k < 32; k++) {
            double truth = lead + k * beat;
            for (int j = 0; j < b.n_beats; j++)
                if (fabs(b.beats[j] - truth) < 0.02) {
                    matched++;
                    break;
                }
        }
        CHECK(matched == 32, "%.0f BPM: %d of 32 beats within 20 ms", bpms[i], matched);
        /* Downbeats on the bar lines. */
        int on_bars = 0;
        for (int j = 0; j < b.n_downbeats; j++) {
            double bars = (b.downbeats[j] - lead) / (4 * beat);
            if (fabs(bars - round(bars)) * 4 * beat < 0.02) on_bars++;
        }
        CHECK(b.n_downbeats > 0 && on_bars == b.n_downbeats, "%.0f BPM: %d of %d downbeats on bar lines",
              bpms[i], on_bars, b.n_downbeats);
        beats_free(&b);
        features_free(&f);
        free(x);
    }
}

/* A steady groove (no sections: the novelty cannot decide) that starts with
 * a drum pickup, a 16th-note snare fill on the beat before bar 1, so the
 * first sounding beat is a beat 4. The backbeat (snare on 2 and 4) must
 * keep the bar lines off beats 2 and 4: the downbeats land on the true beat
 * 1 or beat 3 (which of the two, a steady groove cannot say). */
static void test_downbeat_not_on_the_backbeat(void)
{
    const double bpm = 110.0, beat = 60.0 / bpm, lead = 1.0 + beat;
    int64_t n;
    float *x = rock_song(&n, bpm, lead, "gggggggggggg");
    for (int i = 0; i < 4; i++)
        synth_hit(x, n, (int64_t)llround((lead - beat + i * beat / 4) * RATE), RATE, SYNTH_SNARE, 0.5f);
    d2m_features f;
    d2m_beats b;
    analyse(&f, &b, x, n, 0.0, 0);
    int strong = 0;
    for (int j = 0; j < b.n_downbeats; j++) {
        double half_bars = (b.downbeats[j] - lead) / (2 * beat);
        if (fabs(half_bars - round(half_bars)) * 2 * beat < 0.02) strong++;
    }
    CHECK(b.n_downbeats > 0 && strong == b.n_downbeats, "after a pickup: %d of %d downbeats on beat 1 or 3",
          strong, b.n_downbeats);
    beats_free(&b);
    features_free(&f);
    free(x);
}

static void test_forced_tempo(void)
{
    int64_t n;
    float *x = rock_song(&n, 120.0, 0.5, "gggggggg");
    d2m_features f;
    d2m_beats b;
    analyse(&f, &b, x, n, 120.0, 0);
    CHECK_NEAR(b.bpm, 120.0, 1e-9);
    CHECK(b.n_beats >= 32, "beats %d", b.n_beats);
    beats_free(&b);
    features_free(&f);
    free(x);
}

static void test_no_rhythm_in_noise(void)
{
    const int64_t n = RATE * 20;
    float *x = malloc(n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = 0.3f * synth_noise();
    d2m_features f;
    d2m_beats b;
    analyse(&f, &b, x, n, 0.0, D2M_ERR_NO_RHYTHM);
    beats_free(&b);
    features_free(&f);
    free(x);
}

static void test_loop_on_the_groove_section(void)
{
    /* Bars 1-4 hats, 5-8 groove, 9-12 snare and hats: the loop is bars 5-8. */
    int64_t n;
    const double bpm = 110.0, lead = 0.0;
    float *x = rock_song(&n, bpm, lead, "hhhhgggghhss");
    d2m_features f, low;
    d2m_beats b;
    analyse(&f, &b, x, n, 0.0, 0);
    filter_lowpass(x, n, 200.0, RATE);
    d2m_error err = {0};
    CHECK(features_compute(&low, x, n, RATE, 2048, 256, &err) == 0, "%s", err.message);
    d2m_loop loop;
    CHECK(loop_select(&loop, &low, &b, 4, -1, (double)n / RATE, &err) == 0, "%s", err.message);
    double bar = 4 * 60.0 / bpm;
    CHECK_NEAR(loop.start_s, lead + 4 * bar, 0.02);
    CHECK_NEAR(loop.end_s - loop.start_s, 4 * bar, 0.01);
    CHECK(loop.bars == 4, "bars %d", loop.bars);
    /* A window the user chose: bars 3-6, whatever their activity. */
    CHECK(loop_select(&loop, &low, &b, 4, 2, (double)n / RATE, &err) == 0, "%s", err.message);
    CHECK_NEAR(loop.start_s, b.downbeats[2], 1e-9);
    CHECK(loop.first_bar == 2, "first bar %d", loop.first_bar);
    CHECK(loop_select(&loop, &low, &b, 4, 10, (double)n / RATE, &err) == D2M_ERR_TOO_SHORT,
          "bars 11-14 of 12 run past the end");
    /* A loop longer than the song is refused with a clear code. */
    CHECK(loop_select(&loop, &low, &b, 64, -1, (double)n / RATE, &err) == D2M_ERR_TOO_SHORT,
          "64 bars in a 12-bar song");
    CHECK(strstr(err.message, "64 bars") != NULL, "message: %s", err.message);
    beats_free(&b);
    features_free(&f);
    features_free(&low);
    free(x);
}

static void test_ratio_rule(void)
{
    CHECK(classify_ratio(1.0, 1.0, 500) == 36, "low > 0.8 high is a kick");
    CHECK(classify_ratio(0.81, 1.0, 9000) == 36, "0.81 > 0.8: kick whatever the centroid");
    CHECK(classify_ratio(0.79, 1.0, 2500) == 38, "low centroid: snare");
    CHECK(classify_ratio(0.1, 1.0, 7000) == 42, "high centroid: closed hat");
    CHECK(classify_ratio(0.0, 0.0, 0) == 38, "nothing at all is not a kick (0 > 0 is false)");
}

/* Hits of the given note within 50 ms of each truth time. */
static int matched(const d2m_hits *h, int note, const double *truth, int n_truth)
{
    int m = 0;
    for (int i = 0; i < n_truth; i++)
        for (int j = 0; j < h->n; j++)
            if (h->v[j].note == note && fabs(h->v[j].time_s - truth[i]) < 0.05) {
                m++;
                break;
            }
    return m;
}

static int count_note(const d2m_hits *h, int note)
{
    int c = 0;
    for (int j = 0; j < h->n; j++) c += h->v[j].note == note;
    return c;
}

static void test_ratio_classifier_on_isolated_hits(void)
{
    const int64_t n = RATE * 7;
    float *x = calloc(n, sizeof *x);
    const int drums[3] = {SYNTH_KICK, SYNTH_SNARE, SYNTH_HAT};
    double times[3][4];
    for (int k = 0; k < 12; k++) {
        double t = 0.5 + 0.5 * k;
        times[k % 3][k / 3] = t;
        synth_hit(x, n, (int64_t)(t * RATE), RATE, drums[k % 3], 0.6f);
    }
    d2m_features f;
    d2m_error err = {0};
    features_compute(&f, x, n, RATE, 1024, 256, &err);
    d2m_hits h;
    CHECK(transcribe(&h, &f, D2M_CLASSIFIER_RATIO, &err) == 0, "%s", err.message);
    CHECK(h.n == 12, "12 onsets, got %d", h.n);
    for (int d = 0; d < 3; d++)
        CHECK(matched(&h, drums[d], times[d], 4) == 4, "note %d: %d of 4 labelled right", drums[d],
              matched(&h, drums[d], times[d], 4));
    hits_free(&h);
    features_free(&f);
    free(x);
}

static void test_bands_classifier_on_a_groove(void)
{
    int64_t n;
    const double bpm = 100.0, beat = 0.6, lead = 0.5;
    float *x = rock_song(&n, bpm, lead, "gggggggg");
    d2m_features f;
    d2m_error err = {0};
    features_compute(&f, x, n, RATE, 1024, 256, &err);
    d2m_hits h;
    CHECK(transcribe(&h, &f, D2M_CLASSIFIER_BANDS, &err) == 0, "%s", err.message);
    double kicks[16], snares[16], hats[64];
    for (int b = 0; b < 8; b++) {
        for (int k = 0; k < 2; k++) {
            kicks[b * 2 + k] = lead + (b * 4 + 2 * k) * beat;
            snares[b * 2 + k] = lead + (b * 4 + 2 * k + 1) * beat;
        }
        for (int e = 0; e < 8; e++) hats[b * 8 + e] = lead + (b * 4 + e * 0.5) * beat;
    }
    int hats_closed = matched(&h, 42, hats, 64) + matched(&h, 46, hats, 64);
    CHECK(matched(&h, 36, kicks, 16) >= 15, "kicks found %d of 16", matched(&h, 36, kicks, 16));
    CHECK(matched(&h, 38, snares, 16) >= 15, "snares found %d of 16", matched(&h, 38, snares, 16));
    CHECK(hats_closed >= 58, "hats under kicks and snares too: %d of 64", hats_closed);
    CHECK(count_note(&h, 36) <= 18, "no more than a couple of extra kicks: %d", count_note(&h, 36));
    CHECK(count_note(&h, 38) <= 18, "no more than a couple of extra snares: %d", count_note(&h, 38));
    /* Velocities: on-beat hats (louder in the pattern) above off-beat ones. */
    double on = 0, off = 0;
    int n_on = 0, n_off = 0;
    for (int j = 0; j < h.n; j++) {
        if (h.v[j].note != 42) continue;
        double pos = (h.v[j].time_s - lead) / (beat / 2);
        if (fabs(pos - round(pos)) > 0.1) continue;
        if (((long)llround(pos)) % 2) off += h.v[j].velocity, n_off++;
        else on += h.v[j].velocity, n_on++;
    }
    CHECK(n_on > 0 && n_off > 0 && on / n_on > off / n_off + 3, "hat velocity on %.1f vs off %.1f",
          n_on ? on / n_on : 0, n_off ? off / n_off : 0);
    for (int j = 0; j < h.n; j++)
        CHECK(h.v[j].velocity >= 1 && h.v[j].velocity <= 127, "velocity %d", h.v[j].velocity);
    hits_free(&h);
    features_free(&f);
    free(x);
}

int main(void)
{
    test_tempo_on_rock_beats();
    test_downbeat_not_on_the_backbeat();
    test_forced_tempo();
    test_no_rhythm_in_noise();
    test_loop_on_the_groove_section();
    test_ratio_rule();
    test_ratio_classifier_on_isolated_hits();
    test_bands_classifier_on_a_groove();
    return test_summary("test_drums");
}
