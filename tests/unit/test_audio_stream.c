/* Streaming audio tests: audio_stream_file's blocks put together equal
 * audio_decode_file then audio_convert bit for bit (MP3, WAV, FLAC; native
 * rate, resampled, channels mixed or duplicated), with the same info,
 * warnings and errors; the temporary audio file and the block-wise WAV
 * writer give back exactly what they were given. Test files are written at
 * run time into a fresh temporary folder (MP3 through `lame`, skipped with a
 * message when it is missing). */
#include "audio/audio.h"
#include "test.h"

#include <math.h>
#include <sndfile.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmp_dir[256];

static const char *tmp_path(char *buf, const char *name)
{
    snprintf(buf, 320, "%s/%s", tmp_dir, name);
    return buf;
}

/* A chirp plus noise (deterministic), so resampling has work to do. */
static int write_test_file(const char *path, int format, int rate, int channels, double seconds)
{
    SF_INFO si = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *sf = sf_open(path, SFM_WRITE, &si);
    if (!sf) return -1;
    int64_t frames = (int64_t)llround(seconds * rate);
    float *x = malloc((size_t)(frames * channels) * sizeof *x);
    uint32_t state = 1;
    for (int64_t i = 0; i < frames; i++)
        for (int k = 0; k < channels; k++) {
            state = state * 1664525u + 1013904223u;
            double t = (double)i / rate;
            x[i * channels + k] = (float)(0.4 / (k + 1) * sin(2 * M_PI * (200 + 3000 * t) * t) +
                                          0.05 * ((double)(state >> 8) / (1 << 24) - 0.5));
        }
    sf_count_t written = sf_writef_float(sf, x, frames);
    free(x);
    sf_close(sf);
    return written == frames ? 0 : -1;
}

typedef struct {
    float *data; /* (frames, 2) */
    int64_t frames, capacity;
    int blocks, stop_after;
} gathered;

static int gather(void *user, const float *x, int64_t frames, d2m_error *err)
{
    gathered *g = user;
    if (g->stop_after && g->blocks == g->stop_after)
        return d2m_fail(err, D2M_ERR_CANCELLED, "stopped by the test");
    if (g->frames + frames > g->capacity) {
        g->capacity = 2 * (g->frames + frames);
        g->data = realloc(g->data, (size_t)g->capacity * 2 * sizeof *g->data);
    }
    memcpy(g->data + g->frames * 2, x, (size_t)frames * 2 * sizeof *x);
    g->frames += frames;
    g->blocks++;
    return 0;
}

/* The stream of path at 44.1 kHz stereo equals decode + convert. */
static void check_stream(const char *label, const char *path, int min_blocks)
{
    d2m_audio whole = {0}, mix = {0};
    d2m_decode_info info_whole, info_stream;
    d2m_error err = {0};
    int rc = audio_decode_file(&whole, &info_whole, path, 0, &err);
    CHECK(rc == 0, "%s: decode: %s", label, err.message);
    if (rc) return;
    rc = audio_convert(&mix, &whole, 44100, 2, &err);
    CHECK(rc == 0, "%s: convert: %s", label, err.message);
    gathered g = {0};
    int64_t file_frames = -1;
    rc = audio_stream_file(path, 44100, 2, 0, gather, &g, &info_stream, &file_frames, &err);
    CHECK(rc == 0, "%s: stream: %s", label, err.message);
    CHECK(file_frames == whole.frames, "%s: file frames %lld, decoded %lld", label,
          (long long)file_frames, (long long)whole.frames);
    CHECK(g.frames == mix.frames, "%s: streamed %lld frames, converted %lld", label,
          (long long)g.frames, (long long)mix.frames);
    CHECK(g.frames == mix.frames && memcmp(g.data, mix.data, (size_t)g.frames * 2 * sizeof(float)) == 0,
          "%s: streamed samples differ from decode + convert", label);
    CHECK(g.blocks >= min_blocks, "%s: %d blocks, expected at least %d", label, g.blocks, min_blocks);
    CHECK(!memcmp(&info_whole, &info_stream, sizeof info_whole), "%s: info differs ('%s' / '%s')",
          label, info_whole.warning, info_stream.warning);
    free(g.data);
    d2m_audio_free(&whole);
    d2m_audio_free(&mix);
}

static void test_stream_equals_whole_decode(void)
{
    char p[6][320];
    CHECK(write_test_file(tmp_path(p[0], "s44.wav"), SF_FORMAT_WAV | SF_FORMAT_PCM_16, 44100, 2, 7.3) == 0, "write");
    CHECK(write_test_file(tmp_path(p[1], "s48.wav"), SF_FORMAT_WAV | SF_FORMAT_PCM_24, 48000, 2, 6.1) == 0, "write");
    CHECK(write_test_file(tmp_path(p[2], "m22.flac"), SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 22050, 1, 5.2) == 0, "write");
    CHECK(write_test_file(tmp_path(p[3], "six96.wav"), SF_FORMAT_WAV | SF_FORMAT_FLOAT, 96000, 6, 2.5) == 0, "write");
    check_stream("wav 44.1 kHz stereo (no conversion)", p[0], 4);
    check_stream("wav 48 kHz stereo", p[1], 4);
    check_stream("flac 22.05 kHz mono", p[2], 4);
    check_stream("wav 96 kHz 6 channels", p[3], 4);
    if (system("lame --version >/dev/null 2>&1") != 0) {
        printf("test_audio_stream: lame not found, skipping the MP3 cases\n");
    } else {
        char cmd[1400];
        snprintf(cmd, sizeof cmd, "lame --quiet -V 2 '%s' '%s' && lame --quiet -b 96 '%s' '%s'",
                 p[1], tmp_path(p[4], "s48.mp3"), p[2], tmp_path(p[5], "m22.mp3"));
        CHECK(system(cmd) == 0, "lame failed");
        check_stream("mp3 48 kHz stereo", p[4], 4);
        check_stream("mp3 22.05 kHz mono", p[5], 4);
        /* A truncated MP3: the same samples and the same warning. */
        FILE *f = fopen(p[4], "r+b");
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fclose(f);
        CHECK(truncate(p[4], size * 2 / 3) == 0, "truncate");
        check_stream("mp3 cut at two thirds", p[4], 4);
    }
    for (int i = 0; i < 6; i++) unlink(p[i]);
}

static void test_stream_errors(void)
{
    char p[2][320];
    d2m_decode_info info;
    d2m_error whole = {0}, stream = {0};
    d2m_audio a;
    gathered g = {0};
    int64_t frames;
    CHECK(write_test_file(tmp_path(p[0], "long.wav"), SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 1, 3.0) == 0, "write");
    const char *cases[][2] = {{"missing", "no-such-file.wav"}, {"too long", p[0]}};
    for (int k = 0; k < 2; k++) {
        const char *path = k == 0 ? tmp_path(p[1], cases[0][1]) : p[0];
        int rc_whole = audio_decode_file(&a, &info, path, 1.0, &whole);
        int rc_stream = audio_stream_file(path, 44100, 2, 1.0, gather, &g, &info, &frames, &stream);
        CHECK(rc_whole != 0 && rc_whole == rc_stream && !strcmp(whole.message, stream.message),
              "%s: decode %d '%s', stream %d '%s'", cases[k][0], rc_whole, whole.message,
              rc_stream, stream.message);
        d2m_audio_free(&a);
    }
    /* The block function's code stops the stream. */
    g.stop_after = 2;
    int rc = audio_stream_file(p[0], 44100, 2, 0, gather, &g, &info, &frames, &stream);
    CHECK(rc == D2M_ERR_CANCELLED && g.blocks == 2, "stopped stream: rc %d after %d blocks", rc,
          g.blocks);
    free(g.data);
    unlink(p[0]);
}

static void test_temp_and_wav_writer(void)
{
    enum { N = 100003 };
    d2m_audio a;
    d2m_audio_alloc(&a, N, 2, 44100);
    for (int64_t i = 0; i < 2 * N; i++) a.data[i] = (float)sin(0.001 * (double)i * (double)i) * 0.7f;
    d2m_error err = {0};
    audio_temp *t = NULL;
    int rc = audio_temp_new(&t, tmp_dir, 2, 44100, &err);
    CHECK(rc == 0, "audio_temp_new: %s", err.message);
    if (rc) return;
    /* Appended in uneven blocks, read back at random with zeros outside. */
    for (int64_t done = 0, step = 1; done < N; done += step, step = step * 3 + 1) {
        if (done + step > N) step = N - done;
        CHECK(audio_temp_append(t, a.data + 2 * done, step, &err) == 0, "append: %s", err.message);
    }
    CHECK(audio_temp_flush(t, &err) == 0, "flush: %s", err.message);
    audio_reader r = audio_temp_reader(t), m = audio_reader_of(&a);
    CHECK(r.frames == N && r.channels == 2 && r.sample_rate == 44100, "reader: %lld frames",
          (long long)r.frames);
    static const int64_t ranges[][2] = {{0, N}, {-500, 1000}, {N - 10, 300}, {-5, N + 10}, {N + 5, 7}, {4097, 65536}};
    for (int k = 0; k < 6; k++) {
        int64_t first = ranges[k][0], count = ranges[k][1];
        float *x = malloc((size_t)count * 2 * sizeof *x), *y = malloc((size_t)count * 2 * sizeof *y);
        int ok = r.read(r.user, x, first, count, &err) == 0 && m.read(m.user, y, first, count, &err) == 0;
        int zeros = 1;
        for (int64_t i = 0; i < count; i++)
            if (first + i < 0 || first + i >= N) zeros = zeros && x[2 * i] == 0.0f && x[2 * i + 1] == 0.0f;
        CHECK(ok && zeros && !memcmp(x, y, (size_t)count * 2 * sizeof *x),
              "frames [%lld, +%lld): file and buffer readers differ", (long long)first, (long long)count);
        free(x);
        free(y);
    }
    /* Overwriting in place. */
    float patch[2 * 300];
    for (int i = 0; i < 600; i++) patch[i] = -0.25f;
    CHECK(audio_temp_write(t, patch, 5000, 300, &err) == 0, "audio_temp_write: %s", err.message);
    float back[2 * 302];
    CHECK(r.read(r.user, back, 4999, 302, &err) == 0, "read: %s", err.message);
    CHECK(back[0] == a.data[2 * 4999] && back[2] == -0.25f && back[601] == -0.25f &&
              back[602] == a.data[2 * 5300],
          "overwritten frames [5000, 5300) read back %g %g %g %g", back[0], back[2], back[601], back[602]);
    audio_temp_free(t);
    audio_temp_free(NULL);

    /* Block-wise WAV == whole WAV, byte for byte. */
    char whole[320], blocks[320];
    tmp_path(whole, "whole.wav");
    tmp_path(blocks, "blocks.wav");
    CHECK(audio_write_wav(whole, &a, 0, N, &err) == 0, "audio_write_wav: %s", err.message);
    audio_wav_writer *w = NULL;
    rc = audio_wav_open(&w, blocks, 2, 44100, &err);
    CHECK(rc == 0, "audio_wav_open: %s", err.message);
    for (int64_t done = 0, step = 7; rc == 0 && done < N; done += step, step *= 2) {
        if (done + step > N) step = N - done;
        rc = audio_wav_write(w, a.data + 2 * done, step, &err);
    }
    CHECK(rc == 0 && audio_wav_close(w, &err) == 0, "block-wise writing: %s", err.message);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", whole, blocks);
    CHECK(system(cmd) == 0, "block-wise WAV differs from the whole-buffer one");
    /* Discarding removes the file. */
    rc = audio_wav_open(&w, blocks, 2, 44100, &err);
    if (rc == 0) audio_wav_discard(w);
    CHECK(access(blocks, F_OK) != 0, "discarded WAV still there");
    audio_wav_discard(NULL);
    unlink(whole);
    d2m_audio_free(&a);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/d2m-stream-XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_stream_equals_whole_decode();
    test_stream_errors();
    test_temp_and_wav_writer();
    rmdir(tmp_dir);
    return test_summary("test_audio_stream");
}
