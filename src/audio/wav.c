/* Writing audio as 24-bit PCM WAV through libsndfile, whole or a block at
 * a time.
 *
 * Layout: interleaved float (frames, channels). Samples beyond [-1, 1] are
 * clipped by libsndfile (SFC_SET_CLIPPING) instead of wrapping around.
 * Written in chunks so that a failed write is noticed where it happens; a
 * partial file is removed.
 * Reference: libsndfile sndfile.h.
 * Threading: no shared state; safe on any thread. */
#include "audio/audio.h"

#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>

enum { WRITE_CHUNK_FRAMES = 64 * 1024 };

struct audio_wav_writer {
    SNDFILE *sf;
    int channels;
    char path[1400];
};

int audio_wav_open(audio_wav_writer **out, const char *path, int channels, int sample_rate,
                   d2m_error *err)
{
    *out = NULL;
    SF_INFO si = {0};
    si.samplerate = sample_rate;
    si.channels = channels;
    si.format = SF_FORMAT_WAV | SF_FORMAT_PCM_24;
    audio_wav_writer *w = calloc(1, sizeof *w);
    if (!w) return d2m_fail(err, D2M_ERR_NOMEM, "%s: out of memory", path);
    snprintf(w->path, sizeof w->path, "%s", path);
    w->channels = channels;
    w->sf = sf_open(path, SFM_WRITE, &si);
    if (!w->sf) {
        free(w);
        return d2m_fail(err, D2M_ERR_IO, "%s: %s", path, sf_strerror(NULL));
    }
    sf_command(w->sf, SFC_SET_CLIPPING, NULL, SF_TRUE);
    *out = w;
    return 0;
}

int audio_wav_write(audio_wav_writer *w, const float *x, int64_t frames, d2m_error *err)
{
    for (int64_t done = 0; done < frames;) {
        sf_count_t n = frames - done < WRITE_CHUNK_FRAMES ? frames - done : WRITE_CHUNK_FRAMES;
        if (sf_writef_float(w->sf, x + done * w->channels, n) != n)
            return d2m_fail(err, D2M_ERR_IO, "%s: %s", w->path, sf_strerror(w->sf));
        done += n;
    }
    return 0;
}

int audio_wav_close(audio_wav_writer *w, d2m_error *err)
{
    int closed = sf_close(w->sf);
    int rc = 0;
    if (closed != 0) {
        rc = d2m_fail(err, D2M_ERR_IO, "%s: %s", w->path, sf_error_number(closed));
        remove(w->path);
    }
    free(w);
    return rc;
}

void audio_wav_discard(audio_wav_writer *w)
{
    if (!w) return;
    sf_close(w->sf);
    remove(w->path);
    free(w);
}

int audio_write_wav(const char *path, const d2m_audio *a, int64_t first, int64_t count,
                    d2m_error *err)
{
    if (!path || !a || !a->data || a->channels < 1 || a->sample_rate < 1 || first < 0 ||
        count < 0 || first > a->frames || count > a->frames - first)
        return d2m_fail(err, D2M_ERR_INVALID,
                        "%s: cannot write frames [%lld, %lld) of a %lld-frame buffer",
                        path ? path : "(null)", (long long)first, (long long)first + count,
                        a ? (long long)a->frames : 0LL);
    audio_wav_writer *w;
    int rc = audio_wav_open(&w, path, a->channels, a->sample_rate, err);
    if (rc) return rc;
    if ((rc = audio_wav_write(w, a->data + first * a->channels, count, err))) {
        audio_wav_discard(w);
        return rc;
    }
    return audio_wav_close(w, err);
}
