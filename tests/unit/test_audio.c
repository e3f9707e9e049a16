/* Audio layer tests: sniffing, decoding every supported container, damaged
 * MP3s, resampling and WAV writing. Test files are synthesised at run time
 * into a fresh temporary folder: sines through libsndfile, MP3s through the
 * `lame` command (those cases skip with a message when it is missing). */
#include "audio/audio.h"
#include "test.h"

#include <errno.h>
#include <math.h>
#include <sndfile.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const double PI = 3.14159265358979323846;

static char tmp_dir[256];
static char created[32][320];
static int n_created;

/* A path in the temporary folder, remembered for removal at the end. */
static const char *tmp_path(const char *name)
{
    static char scratch[320];
    char *p = n_created < 32 ? created[n_created++] : scratch;
    snprintf(p, 320, "%s/%s", tmp_dir, name);
    return p;
}

static void remove_tmp(void)
{
    for (int i = 0; i < n_created; i++) unlink(created[i]);
    rmdir(tmp_dir);
}

static uint32_t lcg_state = 12345;
static unsigned char lcg_byte(void)
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return (unsigned char)(lcg_state >> 24);
}

/* Writes amplitude * sin(2 pi f t) (channel k gets amplitude / (k + 1)). */
static int write_sine(const char *path, int format, int rate, int channels, double seconds,
                      double freq, double amplitude)
{
    SF_INFO si = {.samplerate = rate, .channels = channels, .format = format};
    SNDFILE *sf = sf_open(path, SFM_WRITE, &si);
    if (!sf) {
        fprintf(stderr, "%s: %s\n", path, sf_strerror(NULL));
        return -1;
    }
    int64_t frames = (int64_t)llround(seconds * rate);
    float *x = malloc((size_t)(frames * channels) * sizeof *x);
    for (int64_t i = 0; i < frames; i++)
        for (int k = 0; k < channels; k++)
            x[i * channels + k] =
                (float)(amplitude / (k + 1) * sin(2 * PI * freq * (double)i / rate));
    sf_count_t written = sf_writef_float(sf, x, frames);
    free(x);
    sf_close(sf);
    return written == frames ? 0 : -1;
}

static unsigned char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(size > 0 ? (size_t)size : 1);
    *n = fread(b, 1, (size_t)size, f);
    fclose(f);
    return b;
}

static void write_all(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
}

/* Peak of one channel over the middle half (away from codec edge effects). */
static double middle_peak(const d2m_audio *a, int channel)
{
    double peak = 0;
    for (int64_t i = a->frames / 4; i < 3 * a->frames / 4; i++)
        peak = fmax(peak, fabs(a->data[i * a->channels + channel]));
    return peak;
}

/* Frequency of channel 0 from interpolated rising zero crossings. */
static double zero_crossing_frequency(const d2m_audio *a)
{
    double first = -1, last = -1;
    int crossings = 0;
    const int c = a->channels;
    for (int64_t i = a->frames / 10; i + 1 < a->frames * 9 / 10; i++) {
        float x0 = a->data[i * c], x1 = a->data[(i + 1) * c];
        if (x0 < 0 && x1 >= 0) {
            double t = ((double)i + x0 / (x0 - x1)) / a->sample_rate;
            if (first < 0) first = t;
            last = t;
            crossings++;
        }
    }
    return crossings > 1 ? (crossings - 1) / (last - first) : 0;
}

/* ---- sniffing ---- */

/* Builds an MPEG-1 Layer III header at 128 kbps, 44.1 kHz (417 bytes). */
static void mpeg_header(unsigned char *h, int padding)
{
    h[0] = 0xFF;
    h[1] = 0xFB;                                   /* MPEG-1, layer III, no CRC */
    h[2] = (unsigned char)(0x90 | (padding << 1)); /* 128 kbps, 44.1 kHz */
    h[3] = 0xC4;                                   /* mono, original */
}

static void test_frame_lengths(void)
{
    unsigned char h[4];
    mpeg_header(h, 0);
    CHECK(audio_mpeg_frame_length(h) == 417, "MPEG-1 L3 128k 44.1k: %zu",
          audio_mpeg_frame_length(h));
    mpeg_header(h, 1);
    CHECK(audio_mpeg_frame_length(h) == 418, "padded: %zu", audio_mpeg_frame_length(h));
    const unsigned char mpeg2_l3[4] = {0xFF, 0xF3, 0x80, 0xC4}; /* 64 kbps, 22.05 kHz */
    CHECK(audio_mpeg_frame_length(mpeg2_l3) == 208, "MPEG-2 L3: %zu",
          audio_mpeg_frame_length(mpeg2_l3));
    const unsigned char mpeg25_l3[4] = {0xFF, 0xE3, 0x88, 0xC4}; /* 64 kbps, 8 kHz */
    CHECK(audio_mpeg_frame_length(mpeg25_l3) == 576, "MPEG-2.5 L3: %zu",
          audio_mpeg_frame_length(mpeg25_l3));
    const unsigned char mpeg1_l2[4] = {0xFF, 0xFD, 0xA4, 0x04}; /* 192 kbps, 48 kHz */
    CHECK(audio_mpeg_frame_length(mpeg1_l2) == 576, "MPEG-1 L2: %zu",
          audio_mpeg_frame_length(mpeg1_l2));
    const unsigned char mpeg1_l1[4] = {0xFF, 0xFF, 0x10, 0x04}; /* 32 kbps, 44.1 kHz */
    CHECK(audio_mpeg_frame_length(mpeg1_l1) == 32, "MPEG-1 L1: %zu",
          audio_mpeg_frame_length(mpeg1_l1));
    const unsigned char bad[][4] = {
        {0xFF, 0xFB, 0xF0, 0xC4}, /* bitrate index 15 */
        {0xFF, 0xFB, 0x00, 0xC4}, /* free format */
        {0xFF, 0xFB, 0x9C, 0xC4}, /* sample rate index 3 */
        {0xFF, 0xEB, 0x90, 0xC4}, /* reserved version */
        {0xFF, 0xF9, 0x90, 0xC4}, /* reserved layer */
        {0xFF, 0xFB, 0x90, 0xC6}, /* reserved emphasis */
        {0xFE, 0xFB, 0x90, 0xC4}, /* no sync */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(audio_mpeg_frame_length(bad[i]) == 0, "bad header %zu accepted", i);
}

/* An ID3v2 tag of tag_body bytes, then frames MPEG frames (zero bodies). */
static unsigned char *synthetic_mp3(size_t *n, size_t tag_body, int frames)
{
    size_t size = (tag_body ? 10 + tag_body : 0) + 417 * (size_t)frames;
    unsigned char *b = calloc(size ? size : 1, 1);
    size_t pos = 0;
    if (tag_body) {
        memcpy(b, "ID3\x04\x00\x00", 6);
        b[6] = (unsigned char)((tag_body >> 21) & 0x7F);
        b[7] = (unsigned char)((tag_body >> 14) & 0x7F);
        b[8] = (unsigned char)((tag_body >> 7) & 0x7F);
        b[9] = (unsigned char)(tag_body & 0x7F);
        pos = 10 + tag_body;
    }
    for (int f = 0; f < frames; f++, pos += 417) mpeg_header(b + pos, 0);
    *n = size;
    return b;
}

static void test_sniff(void)
{
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0,
                                        0,    13,  'I', 'H', 'D',  'R',  0,    0,    1, 0};
    CHECK(!strcmp(audio_sniff(png, sizeof png), ""), "PNG sniffed as '%s'",
          audio_sniff(png, sizeof png));
    CHECK(!strcmp(audio_sniff(NULL, 0), ""), "NULL");
    CHECK(!strcmp(audio_sniff(png, 0), ""), "empty");

    size_t n_random = 256 * 1024;
    unsigned char *random = malloc(n_random);
    for (size_t i = 0; i < n_random; i++) random[i] = lcg_byte();
    CHECK(!strcmp(audio_sniff(random, n_random), ""), "random bytes sniffed as '%s'",
          audio_sniff(random, n_random));
    free(random);

    struct {
        const char *bytes;
        size_t n;
        const char *want;
    } magic[] = {
        {"RIFF\x24\0\0\0WAVEfmt ", 16, "wav"},
        {"RF64\xff\xff\xff\xffWAVEds64", 16, "wav"},
        {"fLaC\0\0\0\x22", 8, "flac"},
        {"OggS\0\x02\0\0", 8, "ogg"},
        {"FORM\0\0\0\x20"
         "AIFFCOMM",
         16, "aiff"},
        {"FORM\0\0\0\x20"
         "AIFCFVER",
         16, "aiff"},
        {"RIFF\x24\0\0\0AVI LIST", 16, ""},
        {"fLa", 3, ""},
        {"RIFF\x24\0\0\0WAV", 11, ""},
    };
    for (size_t i = 0; i < sizeof magic / sizeof magic[0]; i++) {
        const char *got = audio_sniff((const unsigned char *)magic[i].bytes, magic[i].n);
        CHECK(!strcmp(got, magic[i].want), "magic %zu: expected '%s', got '%s'", i, magic[i].want,
              got);
    }

    size_t n;
    unsigned char *mp3 = synthetic_mp3(&n, 0, 3);
    CHECK(!strcmp(audio_sniff(mp3, n), "mp3"), "3 chained frames: '%s'", audio_sniff(mp3, n));
    free(mp3);
    mp3 = synthetic_mp3(&n, 1000, 3);
    CHECK(!strcmp(audio_sniff(mp3, n), "mp3"), "ID3 + 3 frames: '%s'", audio_sniff(mp3, n));
    CHECK(audio_id3v2_size(mp3, n) == 1010, "ID3 size %zu", audio_id3v2_size(mp3, n));
    /* Every prefix, each in an exact-size copy so ASan sees any overread. */
    int prefix_ok = 1;
    for (size_t len = 0; len <= n; len++) {
        unsigned char *copy = malloc(len ? len : 1);
        memcpy(copy, mp3, len);
        const char *got = audio_sniff(copy, len);
        if (strcmp(got, len >= n - 417 + 4 ? "mp3" : "")) prefix_ok = 0;
        free(copy);
    }
    CHECK(prefix_ok,
          "prefixes of ID3 + 3 frames sniff as mp3 exactly when the third header is there");
    mp3[1010 + 417 + 2] = 0xF0; /* second header: bad bitrate breaks the chain */
    CHECK(!strcmp(audio_sniff(mp3, n), ""), "broken chain: '%s'", audio_sniff(mp3, n));
    free(mp3);
    mp3 = synthetic_mp3(&n, 0, 2);
    CHECK(!strcmp(audio_sniff(mp3, n), ""), "2 frames are not enough: '%s'", audio_sniff(mp3, n));
    free(mp3);
    mp3 = synthetic_mp3(&n, 100000, 3); /* tag larger than the bytes given */
    CHECK(!strcmp(audio_sniff(mp3, 65536), ""), "tag beyond the bytes given");
    CHECK(!strcmp(audio_sniff(mp3, n), "mp3"), "whole buffer with big tag: '%s'",
          audio_sniff(mp3, n));
    free(mp3);
    /* A sync word inside the window whose chain runs past n. */
    unsigned char tail[6] = {0, 0, 0xFF, 0xFB, 0x90, 0xC4};
    CHECK(!strcmp(audio_sniff(tail, sizeof tail), ""), "lone header at the end");
}

/* ---- decoding ---- */

static void check_decoded(const char *label, const char *path, int rate, int channels, int bits,
                          const char *format, int64_t frames, double frames_tolerance,
                          double amplitude, double amplitude_tolerance)
{
    d2m_audio a;
    d2m_decode_info info;
    d2m_error err = {0};
    int rc = audio_decode_file(&a, &info, path, 0, &err);
    CHECK(rc == 0, "%s: rc %d: %s", label, rc, err.message);
    if (rc) return;
    CHECK(a.sample_rate == rate && info.sample_rate == rate, "%s: rate %d / %d, expected %d", label,
          a.sample_rate, info.sample_rate, rate);
    CHECK(a.channels == channels && info.channels == channels, "%s: %d channels, expected %d",
          label, a.channels, channels);
    CHECK(info.bits == bits, "%s: %d bits, expected %d", label, info.bits, bits);
    CHECK(!strcmp(info.format, format), "%s: format '%s', expected '%s'", label, info.format,
          format);
    CHECK(!info.warning[0], "%s: unexpected warning '%s'", label, info.warning);
    CHECK_NEAR(a.frames, frames, frames_tolerance);
    for (int k = 0; k < channels; k++)
        CHECK_NEAR(middle_peak(&a, k), amplitude / (k + 1), amplitude_tolerance);
    d2m_audio_free(&a);
    CHECK(a.data == NULL && a.frames == 0, "free zeroes the struct");
}

static void test_decode_sndfile(void)
{
    const char *wav48 = tmp_path("sine48.wav"), *wav8 = tmp_path("sine8.wav");
    const char *wav96 = tmp_path("sine96.wav"), *flac = tmp_path("stereo.flac");
    const char *ogg = tmp_path("stereo.ogg"), *aiff = tmp_path("sine.aiff");
    CHECK(write_sine(wav48, SF_FORMAT_WAV | SF_FORMAT_PCM_24, 48000, 1, 2.0, 440, 0.5) == 0,
          "write");
    CHECK(write_sine(wav8, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 1, 1.0, 440, 0.5) == 0, "write");
    CHECK(write_sine(wav96, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 96000, 1, 1.0, 440, 0.5) == 0,
          "write");
    CHECK(write_sine(flac, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 44100, 2, 1.5, 440, 0.5) == 0,
          "write");
    CHECK(write_sine(ogg, SF_FORMAT_OGG | SF_FORMAT_VORBIS, 44100, 2, 1.5, 440, 0.5) == 0, "write");
    CHECK(write_sine(aiff, SF_FORMAT_AIFF | SF_FORMAT_PCM_16, 22050, 1, 1.0, 440, 0.5) == 0,
          "write");

    check_decoded("wav 48k/24", wav48, 48000, 1, 24, "wav", 96000, 0, 0.5, 1e-4);
    check_decoded("wav 8k/16", wav8, 8000, 1, 16, "wav", 8000, 0, 0.5, 1e-3);
    check_decoded("wav 96k/float", wav96, 96000, 1, 32, "wav", 96000, 0, 0.5, 1e-6);
    check_decoded("flac stereo", flac, 44100, 2, 16, "flac", 66150, 0, 0.5, 1e-3);
    check_decoded("ogg vorbis", ogg, 44100, 2, 0, "ogg", 66150, 0, 0.5, 0.05);
    check_decoded("aiff", aiff, 22050, 1, 16, "aiff", 22050, 0, 0.5, 1e-3);

    /* The memory entry point reads the same bytes through virtual I/O. */
    size_t n;
    unsigned char *bytes = read_all(flac, &n);
    d2m_audio a;
    d2m_decode_info info;
    d2m_error err = {0};
    int rc = audio_decode_memory(&a, &info, bytes, n, 0, &err);
    CHECK(rc == 0 && a.frames == 66150 && a.channels == 2,
          "flac from memory: rc %d (%s), %lld frames", rc, err.message, (long long)a.frames);
    d2m_audio_free(&a);
    /* Cut in half: libsndfile decodes what is there. */
    rc = audio_decode_memory(&a, &info, bytes, n / 2, 0, &err);
    CHECK(rc == 0 && a.frames > 0 && a.frames < 66150 && strstr(info.warning, "truncated"),
          "half a flac: rc %d (%s), %lld frames, warning '%s'", rc, err.message,
          (long long)a.frames, info.warning);
    d2m_audio_free(&a);
    free(bytes);

    rc = audio_decode_file(&a, &info, wav48, 1.0, &err);
    CHECK(rc == D2M_ERR_TOO_LONG, "2 s WAV with a 1 s limit: rc %d", rc);
    CHECK(strstr(err.message, wav48) == err.message, "message starts with the path: %s",
          err.message);
    CHECK(a.data == NULL, "nothing allocated on failure");
}

static void test_decode_errors(void)
{
    d2m_audio a;
    d2m_decode_info info;
    d2m_error err = {0};
    char missing[320];
    snprintf(missing, sizeof missing, "%s/no-such-song.mp3", tmp_dir);
    int rc = audio_decode_file(&a, &info, missing, 0, &err);
    CHECK(rc == D2M_ERR_IO, "missing file: rc %d", rc);
    CHECK(strstr(err.message, missing) == err.message && strstr(err.message, strerror(ENOENT)),
          "missing file message: %s", err.message);

    const char *empty = tmp_path("empty.wav");
    write_all(empty, (const unsigned char *)"", 0);
    rc = audio_decode_file(&a, &info, empty, 0, &err);
    CHECK(rc == D2M_ERR_FORMAT && strstr(err.message, "empty file"), "empty: rc %d %s", rc,
          err.message);

    /* A PNG renamed to .mp3 is refused by content, whatever its name. */
    unsigned char png[4096] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    for (size_t i = 8; i < sizeof png; i++) png[i] = lcg_byte();
    const char *fake = tmp_path("picture.mp3");
    write_all(fake, png, sizeof png);
    rc = audio_decode_file(&a, &info, fake, 0, &err);
    CHECK(rc == D2M_ERR_FORMAT, "PNG named .mp3: rc %d", rc);
    CHECK(strstr(err.message, fake) == err.message &&
              strstr(err.message, "not a recognised audio file") && strstr(err.message, "PNG"),
          "PNG message: %s", err.message);

    /* A WAV header promising audio that is not there. */
    const char *hollow = tmp_path("hollow.wav");
    CHECK(write_sine(hollow, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 1, 0.0, 440, 0.5) == 0,
          "write");
    rc = audio_decode_file(&a, &info, hollow, 0, &err);
    CHECK(rc == D2M_ERR_FORMAT, "zero-frame WAV: rc %d (%s)", rc, err.message);

    rc = audio_decode_file(&a, &info, tmp_dir, 0, &err);
    CHECK(rc == D2M_ERR_IO, "a folder: rc %d (%s)", rc, err.message);
}

static int have_lame(void)
{
    return system("command -v lame >/dev/null 2>&1") == 0;
}

static int run_lame(const char *options, const char *wav, const char *mp3)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "lame --quiet %s '%s' '%s'", options, wav, mp3);
    return system(cmd);
}

static int decode_warned(const char *label, const char *path, double seconds, double tolerance,
                         const char *warning_part)
{
    d2m_audio a;
    d2m_decode_info info;
    d2m_error err = {0};
    int rc = audio_decode_file(&a, &info, path, 0, &err);
    CHECK(rc == 0, "%s: rc %d (%s)", label, rc, err.message);
    if (rc) return rc;
    double got = (double)a.frames / a.sample_rate;
    CHECK(fabs(got - seconds) <= tolerance, "%s: %.3f s decoded, expected %.3f s +- %.3f", label,
          got, seconds, tolerance);
    CHECK(strstr(info.warning, warning_part), "%s: warning '%s' should mention '%s'", label,
          info.warning, warning_part);
    double peak = middle_peak(&a, 0);
    CHECK(fabs(peak - 0.5) <= 0.05, "%s: peak %.3f, expected 0.5 (no bursts of noise)", label,
          peak);
    d2m_audio_free(&a);
    return 0;
}

static void test_decode_mp3(void)
{
    if (!have_lame()) {
        printf("test_audio: lame not found, skipping the MP3 decoding cases\n");
        return;
    }
    const char *wav = tmp_path("for-mp3.wav"), *mp3 = tmp_path("sine.mp3");
    const char *stereo_wav = tmp_path("for-mp3-stereo.wav"), *stereo = tmp_path("stereo.mp3");
    CHECK(write_sine(wav, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 44100, 1, 4.0, 440, 0.5) == 0, "write");
    CHECK(write_sine(stereo_wav, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 48000, 2, 2.0, 440, 0.5) == 0,
          "write");
    CHECK(run_lame("-b 128", wav, mp3) == 0, "lame failed");
    CHECK(run_lame("-V 2 -m s --add-id3v2 --tt Test", stereo_wav, stereo) == 0, "lame failed");

    /* LAME's header carries the encoder delay and padding: exact length. */
    check_decoded("mp3 cbr", mp3, 44100, 1, 0, "mp3", 176400, 0, 0.5, 0.03);
    check_decoded("mp3 vbr stereo id3", stereo, 48000, 2, 0, "mp3", 96000, 0, 0.5, 0.03);

    size_t n;
    unsigned char *bytes = read_all(mp3, &n);
    d2m_audio a;
    d2m_decode_info info;
    d2m_error err = {0};
    int rc = audio_decode_mp3_memory(&a, &info, bytes, n, 0, &err);
    CHECK(rc == 0 && a.frames == 176400, "mp3 from memory: rc %d (%s), %lld frames", rc,
          err.message, (long long)a.frames);
    d2m_audio_free(&a);

    rc = audio_decode_file(&a, &info, mp3, 1.0, &err);
    CHECK(rc == D2M_ERR_TOO_LONG, "4 s MP3 with a 1 s limit: rc %d (%s)", rc, err.message);
    CHECK(a.data == NULL, "nothing kept on failure");

    /* Cover art larger than the sniffing window before the first frame. */
    size_t tag_body = 200000;
    unsigned char *tagged = calloc(10 + tag_body + n, 1);
    memcpy(tagged, "ID3\x03\x00\x00", 6);
    tagged[6] = (unsigned char)((tag_body >> 21) & 0x7F);
    tagged[7] = (unsigned char)((tag_body >> 14) & 0x7F);
    tagged[8] = (unsigned char)((tag_body >> 7) & 0x7F);
    tagged[9] = (unsigned char)(tag_body & 0x7F);
    memcpy(tagged + 10 + tag_body, bytes, n);
    const char *big_tag = tmp_path("big-tag.mp3");
    write_all(big_tag, tagged, 10 + tag_body + n);
    free(tagged);
    check_decoded("mp3 behind a 200 kB tag", big_tag, 44100, 1, 0, "mp3", 176400, 0, 0.5, 0.03);

    /* Truncated in the middle of a frame: keep the first half, warn. */
    const char *half = tmp_path("half.mp3");
    write_all(half, bytes, n / 2);
    decode_warned("truncated mp3", half, 2.0, 0.1, "truncated");

    /* 3000 random bytes inside the stream: skipped, the rest decodes. */
    unsigned char *damaged = malloc(n + 3000);
    memcpy(damaged, bytes, n / 2);
    for (size_t i = 0; i < 3000; i++) damaged[n / 2 + i] = lcg_byte();
    memcpy(damaged + n / 2 + 3000, bytes + n / 2, n - n / 2);
    const char *middle = tmp_path("garbage-in-middle.mp3");
    write_all(middle, damaged, n + 3000);
    /* False frame headers inside the garbage may swallow a few real frames. */
    decode_warned("garbage in the middle", middle, 3.9, 0.1, "skipped");

    /* Garbage after the last frame: all audio kept, warned. */
    memcpy(damaged, bytes, n);
    for (size_t i = 0; i < 3000; i++) damaged[n + i] = lcg_byte();
    const char *appended = tmp_path("garbage-at-end.mp3");
    write_all(appended, damaged, n + 3000);
    decode_warned("garbage at the end", appended, 4.0, 0.01, "damaged");

    /* Zeros over 1/4 of the stream (a lost disk block). */
    memcpy(damaged, bytes, n);
    memset(damaged + n / 2, 0, 8000);
    const char *zeroed = tmp_path("zeroed.mp3");
    write_all(zeroed, damaged, n);
    decode_warned("zeroed block", zeroed, 3.5, 0.3, "skipped");
    free(damaged);

    /* Trailing ID3v1 tag is not damage. */
    unsigned char *with_v1 = malloc(n + 128);
    memcpy(with_v1, bytes, n);
    memset(with_v1 + n, ' ', 128);
    memcpy(with_v1 + n, "TAG", 3);
    const char *v1 = tmp_path("id3v1.mp3");
    write_all(v1, with_v1, n + 128);
    check_decoded("mp3 with ID3v1", v1, 44100, 1, 0, "mp3", 176400, 0, 0.5, 0.03);
    free(with_v1);
    free(bytes);
}

/* ---- conversion and writing ---- */

static d2m_audio sine_buffer(int rate, int channels, double seconds, double freq)
{
    d2m_audio a;
    d2m_audio_alloc(&a, (int64_t)llround(seconds * rate), channels, rate);
    for (int64_t i = 0; i < a.frames; i++)
        for (int k = 0; k < channels; k++)
            a.data[i * channels + k] =
                (float)(0.5 / (k + 1) * sin(2 * PI * freq * (double)i / rate));
    return a;
}

static void test_convert(void)
{
    d2m_error err = {0};
    d2m_audio in = sine_buffer(48000, 1, 2.0, 1000), out;
    int rc = audio_convert(&out, &in, 44100, 1, &err);
    CHECK(rc == 0, "48k -> 44.1k: rc %d (%s)", rc, err.message);
    CHECK(out.sample_rate == 44100 && out.channels == 1, "rate %d, %d channels", out.sample_rate,
          out.channels);
    CHECK_NEAR(out.frames, 88200, 44.1); /* within 1 ms */
    CHECK_NEAR(zero_crossing_frequency(&out), 1000, 0.5);
    CHECK_NEAR(middle_peak(&out, 0), 0.5, 0.005);
    d2m_audio_free(&out);

    rc = audio_convert(&out, &in, 48000, 2, &err);
    CHECK(rc == 0 && out.frames == in.frames && out.channels == 2, "mono -> stereo: rc %d", rc);
    int same = 1;
    for (int64_t i = 0; rc == 0 && i < out.frames; i++)
        same &= out.data[2 * i] == in.data[i] && out.data[2 * i + 1] == in.data[i];
    CHECK(same, "mono duplicated into both channels");
    d2m_audio_free(&out);
    d2m_audio_free(&in);

    in = sine_buffer(44100, 3, 0.5, 440);
    rc = audio_convert(&out, &in, 44100, 1, &err);
    int mean_ok = rc == 0;
    for (int64_t i = 0; mean_ok && i < in.frames; i++) {
        float *x = in.data + 3 * i;
        mean_ok = fabsf(out.data[i] - (x[0] + x[1] + x[2]) / 3) < 1e-6f;
    }
    CHECK(mean_ok, "three channels -> mono is their mean");
    d2m_audio_free(&out);
    rc = audio_convert(&out, &in, 22050, 2, &err);
    CHECK(rc == 0 && out.channels == 2, "3 -> 2 channels at 22.05k: rc %d", rc);
    if (rc == 0) {
        CHECK_NEAR(middle_peak(&out, 0), 0.5, 0.005);  /* first channel */
        CHECK_NEAR(middle_peak(&out, 1), 0.25, 0.005); /* second channel */
    }
    d2m_audio_free(&out);

    float mix[4];
    d2m_audio small = {0};
    d2m_audio_alloc(&small, 4, 2, 8000);
    for (int i = 0; i < 8; i++) small.data[i] = (float)i;
    audio_mixdown(mix, &small);
    CHECK(mix[0] == 0.5f && mix[3] == 6.5f, "mixdown: %g %g", mix[0], mix[3]);
    d2m_audio_free(&small);

    CHECK(audio_convert(&out, &in, 0, 1, &err) == D2M_ERR_INVALID, "rate 0 refused");
    CHECK(audio_convert(&out, &in, 44100, 3, &err) == D2M_ERR_INVALID, "3 output channels refused");
    d2m_audio_free(&in);

    d2m_audio_free(NULL);
    CHECK(d2m_audio_alloc(&small, -1, 1, 8000) == D2M_ERR_INVALID, "negative frames refused");
    CHECK(d2m_audio_alloc(&small, 1, 0, 8000) == D2M_ERR_INVALID, "zero channels refused");
}

static void test_write_wav(void)
{
    d2m_error err = {0};
    d2m_audio a = sine_buffer(48000, 2, 1.0, 440), back;
    d2m_decode_info info;
    a.data[2 * 1500] = 1.5f; /* beyond full scale: must clip, not wrap */
    const char *path = tmp_path("written.wav");
    int rc = audio_write_wav(path, &a, 1000, 4800, &err);
    CHECK(rc == 0, "write: rc %d (%s)", rc, err.message);
    rc = audio_decode_file(&back, &info, path, 0, &err);
    CHECK(rc == 0 && back.frames == 4800 && back.channels == 2 && info.bits == 24 &&
              back.sample_rate == 48000,
          "read back: rc %d, %lld frames, %d bits", rc, (long long)back.frames, info.bits);
    if (rc == 0) {
        double worst = 0;
        for (int64_t i = 0; i < back.frames * 2; i++)
            if (i != 2 * 500) worst = fmax(worst, fabs(back.data[i] - a.data[2000 + i]));
        CHECK(worst < 2.0 / 8388608, "24-bit round trip error %g", worst);
        CHECK(back.data[2 * 500] > 0.999f, "1.5 clipped to full scale, got %g", back.data[2 * 500]);
    }
    d2m_audio_free(&back);

    CHECK(audio_write_wav(path, &a, 47000, 2000, &err) == D2M_ERR_INVALID, "past the end refused");
    CHECK(audio_write_wav(path, &a, -1, 10, &err) == D2M_ERR_INVALID, "negative start refused");
    CHECK(audio_write_wav(path, &a, 0, INT64_MAX, &err) == D2M_ERR_INVALID,
          "overflowing count refused");
    char bad[320];
    snprintf(bad, sizeof bad, "%s/no-such-folder/out.wav", tmp_dir);
    rc = audio_write_wav(bad, &a, 0, 100, &err);
    CHECK(rc == D2M_ERR_IO && strstr(err.message, bad) == err.message, "unwritable: rc %d (%s)", rc,
          err.message);
    d2m_audio_free(&a);
}

int main(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/d2m-audio-XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_frame_lengths();
    test_sniff();
    test_decode_sndfile();
    test_decode_errors();
    test_decode_mp3();
    test_convert();
    test_write_wav();
    if (!getenv("D2M_KEEP_TMP")) remove_tmp();
    return test_summary("test_audio");
}
