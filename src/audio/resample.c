/* Sample-rate and channel conversion.
 *
 * Layout: interleaved float (frames, channels) in and out. Channels are
 * converted first (so a downmix resamples fewer channels), then libsoxr
 * resamples with its very-high-quality preset (28-bit, linear phase) in one
 * shot, which keeps the output aligned with the input: no delay to trim.
 * Channel rules: to mono averages all channels; to stereo duplicates mono and
 * keeps the first two of more (front left/right in WAV and FLAC order; file
 * formats do not reliably say what further channels are).
 * Reference: libsoxr soxr.h (soxr_oneshot).
 * Threading: soxr runs single-threaded here, so concurrent jobs on separate
 * threads do not oversubscribe the CPU; no shared state. */
#include "audio/audio_internal.h"

#include <math.h>
#include <soxr.h>
#include <string.h>

enum { MAX_RATE = 768000 };

void audio_convert_channels(float *out, int out_channels, const float *in, int64_t frames,
                            int in_channels)
{
    const int c = in_channels;
    if (out_channels == 1) {
        d2m_audio a = {.data = (float *)in, .frames = frames, .channels = c};
        audio_mixdown(out, &a);
    } else if (c == 1) {
        for (int64_t i = 0; i < frames; i++) out[2 * i] = out[2 * i + 1] = in[i];
    } else {
        for (int64_t i = 0; i < frames; i++) {
            out[2 * i] = in[i * c];
            out[2 * i + 1] = in[i * c + 1];
        }
    }
}

int audio_convert(d2m_audio *out, const d2m_audio *in, int out_rate, int out_channels,
                  d2m_error *err)
{
    d2m_audio mixed = {0};
    int rc;

    memset(out, 0, sizeof *out);
    if (!in || !in->data || in->frames < 0 || in->channels < 1 || in->sample_rate < 1 ||
        in->sample_rate > MAX_RATE || out_rate < 1 || out_rate > MAX_RATE || out_channels < 1 ||
        out_channels > 2)
        return d2m_fail(err, D2M_ERR_INVALID,
                        "audio_convert: cannot convert %d channels at %d Hz to %d at %d Hz",
                        in ? in->channels : 0, in ? in->sample_rate : 0, out_channels, out_rate);

    const d2m_audio *source = in;
    if (out_channels != in->channels) {
        rc = d2m_audio_alloc(&mixed, in->frames, out_channels, in->sample_rate);
        if (rc) return d2m_fail(err, rc, "audio_convert: out of memory");
        audio_convert_channels(mixed.data, out_channels, in->data, in->frames, in->channels);
        source = &mixed;
    }
    if (out_rate == in->sample_rate) {
        if (source == &mixed) {
            *out = mixed; /* hand the buffer over */
            return 0;
        }
        rc = d2m_audio_alloc(out, in->frames, out_channels, out_rate);
        if (rc) return d2m_fail(err, rc, "audio_convert: out of memory");
        memcpy(out->data, in->data, (size_t)(in->frames * out_channels) * sizeof *in->data);
        return 0;
    }

    /* soxr_oneshot produces round(frames * ratio) frames; one spare frame
     * guards against rounding the other way. */
    double ratio = (double)out_rate / (double)in->sample_rate;
    int64_t capacity = (int64_t)ceil((double)in->frames * ratio) + 1;
    rc = d2m_audio_alloc(out, capacity, out_channels, out_rate);
    if (rc) {
        d2m_fail(err, rc, "audio_convert: out of memory");
        goto fail;
    }
    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t quality = soxr_quality_spec(SOXR_VHQ, 0);
    soxr_runtime_spec_t runtime = soxr_runtime_spec(1);
    size_t used = 0, produced = 0;
    soxr_error_t e = soxr_oneshot(in->sample_rate, out_rate, (unsigned)out_channels, source->data,
                                  (size_t)source->frames, &used, out->data, (size_t)capacity,
                                  &produced, &io, &quality, &runtime);
    if (e) {
        rc = d2m_fail(err, D2M_ERR_INTERNAL, "audio_convert: libsoxr: %s", e);
        goto fail;
    }
    out->frames = (int64_t)produced;
    d2m_audio_free(&mixed);
    return 0;
fail:
    d2m_audio_free(out);
    d2m_audio_free(&mixed);
    return rc;
}
