/* Writing audio as 24-bit PCM WAV through libsndfile.
 *
 * Layout: frames [first, first + count) of an interleaved float buffer
 * (frames, channels). Samples beyond [-1, 1] are clipped by libsndfile
 * (SFC_SET_CLIPPING) instead of wrapping around. Written in chunks so that a
 * failed write is noticed where it happens; a partial file is removed.
 * Reference: libsndfile sndfile.h.
 * Threading: no shared state; safe on any thread. */
#include "audio/audio.h"

#include <sndfile.h>
#include <stdio.h>

enum { WRITE_CHUNK_FRAMES = 64 * 1024 };

int audio_write_wav(const char *path, const d2m_audio *a, int64_t first, int64_t count,
                    d2m_error *err)
{
    SF_INFO si = {0};
    SNDFILE *sf = NULL;
    int rc = 0;

    if (!path || !a || !a->data || a->channels < 1 || a->sample_rate < 1 || first < 0 ||
        count < 0 || first > a->frames || count > a->frames - first)
        return d2m_fail(err, D2M_ERR_INVALID,
                        "%s: cannot write frames [%lld, %lld) of a %lld-frame buffer",
                        path ? path : "(null)", (long long)first, (long long)first + count,
                        a ? (long long)a->frames : 0LL);
    si.samplerate = a->sample_rate;
    si.channels = a->channels;
    si.format = SF_FORMAT_WAV | SF_FORMAT_PCM_24;
    sf = sf_open(path, SFM_WRITE, &si);
    if (!sf) return d2m_fail(err, D2M_ERR_IO, "%s: %s", path, sf_strerror(NULL));
    sf_command(sf, SFC_SET_CLIPPING, NULL, SF_TRUE);

    const float *x = a->data + first * a->channels;
    for (int64_t done = 0; done < count;) {
        sf_count_t n = count - done < WRITE_CHUNK_FRAMES ? count - done : WRITE_CHUNK_FRAMES;
        if (sf_writef_float(sf, x + done * a->channels, n) != n) {
            rc = d2m_fail(err, D2M_ERR_IO, "%s: %s", path, sf_strerror(sf));
            goto fail;
        }
        done += n;
    }
    int closed = sf_close(sf);
    sf = NULL;
    if (closed != 0) {
        rc = d2m_fail(err, D2M_ERR_IO, "%s: %s", path, sf_error_number(closed));
        goto fail;
    }
    return 0;
fail:
    if (sf) sf_close(sf);
    remove(path);
    return rc;
}
