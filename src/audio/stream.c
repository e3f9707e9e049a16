/* Streaming decode: a file handed to the caller block by block at the rate
 * and channel count it asks for, holding one block, never the song.
 *
 * The decoders (mp3.c, decode.c) write into a sink; this one converts the
 * channels (audio_convert's rules) and feeds libsoxr in streaming mode with
 * audio_convert's settings (very high quality, linear phase, one thread).
 * soxr's output does not depend on how its input is cut into blocks, and
 * flushing at the end gives the same length as soxr_oneshot, so the blocks
 * put together equal audio_decode_file then audio_convert sample for sample
 * (tests/unit/test_audio.c checks it).
 * Layout: interleaved float (frames, channels) everywhere.
 * Reference: libsoxr soxr.h (soxr_process; in = NULL flushes).
 * Threading: everything lives in the call; safe on any thread. */
#include "audio/audio_internal.h"

#include <soxr.h>
#include <stdlib.h>
#include <string.h>

enum { OUT_BLOCK_FRAMES = 16384, MAX_RATE = 768000 };

typedef struct {
    int out_rate, out_channels;
    audio_block_fn fn;
    void *user;
    int in_channels;
    float *mixed; /* (mixed_capacity, out_channels): the input, channels converted */
    int64_t mixed_capacity;
    float *out;   /* (OUT_BLOCK_FRAMES, out_channels): soxr's output */
    soxr_t soxr;  /* NULL when the rates match */
    int64_t file_frames;
} stream;

static int stream_begin(void *user, int sample_rate, int channels, int64_t expected_frames,
                        d2m_error *err)
{
    stream *s = user;
    s->in_channels = channels;
    if (sample_rate < 1 || sample_rate > MAX_RATE)
        return d2m_fail(err, D2M_ERR_INVALID,
                        "audio_convert: cannot convert %d channels at %d Hz to %d at %d Hz",
                        channels, sample_rate, s->out_channels, s->out_rate);
    if (sample_rate == s->out_rate) return 0;
    s->out = malloc((size_t)OUT_BLOCK_FRAMES * (size_t)s->out_channels * sizeof *s->out);
    if (!s->out) return d2m_fail(err, D2M_ERR_NOMEM, "audio_convert: out of memory");
    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t quality = soxr_quality_spec(SOXR_VHQ, 0);
    soxr_runtime_spec_t runtime = soxr_runtime_spec(1);
    soxr_error_t e = NULL;
    s->soxr = soxr_create(sample_rate, s->out_rate, (unsigned)s->out_channels, &e, &io, &quality,
                          &runtime);
    if (e || !s->soxr) {
        s->soxr = NULL;
        return d2m_fail(err, D2M_ERR_INTERNAL, "audio_convert: libsoxr: %s", e ? e : "no memory");
    }
    return 0;
}

/* Resample x (frames, out_channels) and hand the output on; x NULL flushes
 * what soxr still holds at the end of the input. */
static int resample(stream *s, const float *x, int64_t frames, d2m_error *err)
{
    if (!s->soxr) return x && frames > 0 ? s->fn(s->user, x, frames, err) : 0;
    const int c = s->out_channels;
    int64_t pos = 0;
    for (;;) {
        size_t used = 0, produced = 0;
        soxr_error_t e = soxr_process(s->soxr, x ? x + pos * c : NULL, x ? (size_t)(frames - pos) : 0,
                                      x ? &used : NULL, s->out, OUT_BLOCK_FRAMES, &produced);
        if (e) return d2m_fail(err, D2M_ERR_INTERNAL, "audio_convert: libsoxr: %s", e);
        pos += (int64_t)used;
        if (produced > 0) {
            int rc = s->fn(s->user, s->out, (int64_t)produced, err);
            if (rc) return rc;
        }
        if (x ? pos >= frames : produced == 0) return 0;
        if (used == 0 && produced == 0)
            return d2m_fail(err, D2M_ERR_INTERNAL, "audio_convert: libsoxr takes no input");
    }
}

static int stream_write(void *user, const float *x, int64_t frames, d2m_error *err)
{
    stream *s = user;
    s->file_frames += frames;
    if (s->in_channels == s->out_channels) return resample(s, x, frames, err);
    if (frames > s->mixed_capacity) {
        float *grown = realloc(s->mixed, (size_t)frames * (size_t)s->out_channels * sizeof *grown);
        if (!grown) return d2m_fail(err, D2M_ERR_NOMEM, "audio_convert: out of memory");
        s->mixed = grown;
        s->mixed_capacity = frames;
    }
    audio_convert_channels(s->mixed, s->out_channels, x, frames, s->in_channels);
    return resample(s, s->mixed, frames, err);
}

int audio_stream_file(const char *path, int out_rate, int out_channels, double max_duration_s,
                      audio_block_fn fn, void *user, d2m_decode_info *info,
                      int64_t *file_frames, d2m_error *err)
{
    *file_frames = 0;
    if (out_rate < 1 || out_rate > MAX_RATE || out_channels < 1 || out_channels > 2) {
        memset(info, 0, sizeof *info);
        return d2m_fail(err, D2M_ERR_INVALID, "audio_stream_file: cannot convert to %d channels at %d Hz",
                        out_channels, out_rate);
    }
    stream s = {.out_rate = out_rate, .out_channels = out_channels, .fn = fn, .user = user};
    audio_decode_sink sink = {stream_begin, stream_write, &s};
    int rc = audio_decode_file_to(&sink, info, path, max_duration_s, err);
    if (rc == 0) rc = resample(&s, NULL, 0, err);
    *file_frames = s.file_frames;
    if (s.soxr) soxr_delete(s.soxr);
    free(s.mixed);
    free(s.out);
    return rc;
}
