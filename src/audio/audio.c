/* Audio buffers: allocation, the mono mixdown and a reader over a buffer.
 *
 * Layout: d2m_audio.data is interleaved float, (frames, channels), nominally
 * in [-1, 1]; decoders may leave float sources' overshoot unclipped.
 * Threading: pure functions on caller-owned data; safe on any thread. */
#include "audio/audio_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int d2m_audio_alloc(d2m_audio *a, int64_t frames, int channels, int sample_rate)
{
    memset(a, 0, sizeof *a);
    if (frames < 0 || channels < 1 || channels > AUDIO_MAX_CHANNELS || sample_rate < 1)
        return D2M_ERR_INVALID;
    if ((uint64_t)frames > SIZE_MAX / sizeof(float) / (size_t)channels) return D2M_ERR_NOMEM;
    /* calloc so a zero-length buffer still has a valid pointer and unused
     * tails read as silence. */
    size_t n = (size_t)frames * (size_t)channels;
    a->data = calloc(n ? n : 1, sizeof *a->data);
    if (!a->data) return D2M_ERR_NOMEM;
    a->frames = frames;
    a->channels = channels;
    a->sample_rate = sample_rate;
    return 0;
}

void d2m_audio_free(d2m_audio *a)
{
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

void audio_reader_pad(float *dst, int64_t first, int64_t count, int64_t frames, int channels, int64_t *lo,
                      int64_t *hi)
{
    const int64_t end = first + count;
    *lo = first < 0 ? 0 : first;
    *hi = end > frames ? frames : end;
    if (*hi <= *lo) {
        memset(dst, 0, (size_t)(count * channels) * sizeof *dst);
        return;
    }
    memset(dst, 0, (size_t)((*lo - first) * channels) * sizeof *dst);
    memset(dst + (*hi - first) * channels, 0, (size_t)((end - *hi) * channels) * sizeof *dst);
}

static int buffer_read(void *user, float *dst, int64_t first, int64_t count, d2m_error *err)
{
    const d2m_audio *a = user;
    const int c = a->channels;
    int64_t lo, hi;
    audio_reader_pad(dst, first, count, a->frames, c, &lo, &hi);
    if (hi > lo) memcpy(dst + (lo - first) * c, a->data + lo * c, (size_t)((hi - lo) * c) * sizeof *dst);
    return 0;
}

audio_reader audio_reader_of(const d2m_audio *a)
{
    audio_reader r = {buffer_read, (void *)a, a->frames, a->channels, a->sample_rate};
    return r;
}

void audio_mixdown(float *out, const d2m_audio *in)
{
    const int c = in->channels;
    const float scale = 1.0f / (float)c;
    for (int64_t i = 0; i < in->frames; i++) {
        const float *x = in->data + i * c;
        float sum = 0.0f;
        for (int k = 0; k < c; k++) sum += x[k];
        out[i] = sum * scale;
    }
}
