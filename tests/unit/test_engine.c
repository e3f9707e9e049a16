/* d2m_engine: a batch or a server runs every job through one engine, which
 * keeps the Demucs model between jobs. Two jobs through one engine must give
 * exactly what two independent d2m_process_file calls give (a reused model
 * carries no state from one song to the next), and the engine must hold the
 * model after the first Demucs job. Uses the tiny random-weight htdemucs of
 * ../shared/demucs (quick); skips (passing) when ../shared is absent. */
#include "audio/audio.h"
#include "drum2midi.h"
#include "synth.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RATE 44100

static unsigned char *slurp(const char *path, long *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)*len + 1);
    if (b && fread(b, 1, (size_t)*len, f) != (size_t)*len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    return b;
}

static int same_file(const char *a, const char *b)
{
    long la = 0, lb = 0;
    unsigned char *x = slurp(a, &la), *y = slurp(b, &lb);
    int same = x && y && la == lb && memcmp(x, y, (size_t)la) == 0;
    free(x);
    free(y);
    return same;
}

/* A song of drums and a bass tone, so the separator has work to do. */
static int write_song(const char *path)
{
    const int bars = 12;
    const double beat = 0.5; /* 120 BPM */
    int64_t n = (int64_t)(bars * 4 * beat * RATE) + RATE;
    d2m_audio a = {0};
    if (d2m_audio_alloc(&a, n, 2, RATE)) return -1;
    float *mono = calloc((size_t)n, sizeof *mono);
    if (!mono) return -1;
    for (int b = 0; b < bars * 4; b++) {
        int64_t at = (int64_t)(b * beat * RATE);
        synth_hit(mono, n, at, RATE, b % 2 ? SYNTH_SNARE : SYNTH_KICK, 0.8f);
        synth_hit(mono, n, at + (int64_t)(beat / 2 * RATE), RATE, SYNTH_HAT, 0.4f);
    }
    for (int64_t i = 0; i < n; i++) {
        float bass = 0.2f * (float)sin(2 * M_PI * 55.0 * (double)i / RATE);
        a.data[2 * i] = mono[i] + bass;
        a.data[2 * i + 1] = 0.9f * mono[i] + bass;
    }
    free(mono);
    d2m_error err = {0};
    int rc = audio_write_wav(path, &a, 0, a.frames, &err);
    d2m_audio_free(&a);
    return rc;
}

int main(void)
{
    char tiny[1024], dir[] = "/tmp/d2m-engine-XXXXXX", song[1100], out[3][1100], a[1400], b[1400];
    test_source_path(tiny, sizeof tiny, "../shared/demucs/tiny/tiny.th");
    if (access(tiny, R_OK) != 0) {
        printf("test_engine: skipped, %s is absent\n", tiny);
        return 0;
    }
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    snprintf(song, sizeof song, "%s/song.wav", dir);
    CHECK(write_song(song) == 0, "writing %s", song);

    d2m_options opt = d2m_default_options();
    opt.separator = D2M_SEPARATOR_DEMUCS;
    opt.model_path = tiny;
    opt.tempo_bpm = 120.0;
    opt.bars = 1;
    opt.threads = 2;
    d2m_result r[3];
    d2m_error err = {0};
    int rc[3];
    for (int k = 0; k < 3; k++) snprintf(out[k], sizeof out[k], "%s/out%d", dir, k);
    rc[0] = d2m_process_file(&r[0], song, out[0], &opt, NULL, NULL, &err);
    CHECK(rc[0] == 0, "a job on a temporary engine: %s", err.message);

    d2m_engine *e = NULL;
    CHECK(d2m_engine_new(&e, &err) == 0, "%s", err.message);
    CHECK(!d2m_engine_loaded(e), "a new engine holds no model");
    for (int k = 1; k < 3; k++) {
        rc[k] = d2m_engine_process_file(e, &r[k], song, out[k], &opt, NULL, NULL, &err);
        CHECK(rc[k] == 0, "job %d on a shared engine: %s", k, err.message);
        CHECK(d2m_engine_loaded(e), "the engine keeps the model after job %d", k);
    }
    for (int k = 1; k < 3; k++) {
        if (rc[0] || rc[k]) continue;
        snprintf(a, sizeof a, "%s/%s", out[0], r[0].drum_stem_wav);
        snprintf(b, sizeof b, "%s/%s", out[k], r[k].drum_stem_wav);
        CHECK(same_file(a, b), "job %d's drum stem equals the independent job's", k);
        snprintf(a, sizeof a, "%s/%s", out[0], r[0].full_midi);
        snprintf(b, sizeof b, "%s/%s", out[k], r[k].full_midi);
        CHECK(same_file(a, b), "job %d's MIDI equals the independent job's", k);
        CHECK(!strcmp(r[k].separator, "htdemucs"), "separator %s", r[k].separator);
    }
    /* A bad job in between (a missing model) fails alone; the engine is
     * still good for the next one. */
    d2m_options bad = opt;
    bad.model_path = "/nonexistent/model.th";
    d2m_result rb;
    CHECK(d2m_engine_process_file(e, &rb, song, out[2], &bad, NULL, NULL, &err) != 0, "a missing model fails");
    d2m_result_free(&rb);
    d2m_result r3;
    CHECK(d2m_engine_process_file(e, &r3, song, out[2], &opt, NULL, NULL, &err) == 0, "after a failure: %s",
          err.message);
    d2m_result_free(&r3);
    d2m_engine_free(e);
    for (int k = 0; k < 3; k++) d2m_result_free(&r[k]);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary("test_engine");
}
