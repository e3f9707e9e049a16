/* MP3 decoding through libmpg123, from memory or from a file descriptor.
 *
 * Both sources go through the same seekable reader callbacks, so the fuzzed
 * memory path and the file path run the same code. The compressed stream is
 * read frame by frame (mpg123 buffers one frame); each decoded frame,
 * interleaved float (frames, channels) at the file's own rate, goes to a
 * sink (audio_internal.h): one growing buffer, or audio_stream_file's
 * converter, which never holds the song.
 *
 * Damaged files: whatever decodes is kept and info->warning says what was
 * lost. Damage is found by byte accounting: every decoded frame must start
 * where the previous one ended (a gap means mpg123 skipped junk), and after
 * the last frame only tags (ID3v1, APEv2) may remain (anything else is a
 * truncated frame or garbage). A frame mpg123 finds by resynchronising is
 * kept only if the next frame header follows it (garbage holds false sync
 * words), and the two frames after a gap are muted rather than let through
 * as noise. Resync gives up after 16 KiB without any plausible header.
 * Reference: libmpg123 mpg123.h (API 47+; mpg123_init is a no-op there).
 * Threading: one mpg123 handle per call; safe on any thread. */
#include "audio/audio_internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <mpg123.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#if MPG123_API_VERSION < 46
#error "libmpg123 1.27 or newer is needed (mpg123_init must be unnecessary)"
#endif

enum {
    /* Real damage is a few hundred bytes to a few disk blocks; past this
     * much without a frame header, the rest is not MP3 any more. */
    RESYNC_LIMIT_BYTES = 16 * 1024,
    /* Decoded float bytes per MP3 byte (8 kbit/s stereo at 24 kHz gives
     * 192): a header claiming more is not trusted for an allocation. */
    MAX_EXPANSION = 256
};

typedef struct {
    const unsigned char *bytes; /* memory source, or NULL for fd */
    int fd;
    int64_t size, pos;
    int read_errno; /* set when the file could not be read */
} mp3_source;

static mpg123_ssize_t source_read(void *handle, void *buf, size_t n)
{
    mp3_source *s = handle;
    if (s->pos >= s->size) return 0;
    if ((uint64_t)n > (uint64_t)(s->size - s->pos)) n = (size_t)(s->size - s->pos);
    if (s->bytes) {
        memcpy(buf, s->bytes + s->pos, n);
    } else {
        ssize_t got;
        do got = pread(s->fd, buf, n, (off_t)s->pos);
        while (got < 0 && errno == EINTR);
        if (got < 0) {
            s->read_errno = errno;
            return -1;
        }
        n = (size_t)got;
    }
    s->pos += (int64_t)n;
    return (mpg123_ssize_t)n;
}

static off_t source_seek(void *handle, off_t offset, int whence)
{
    mp3_source *s = handle;
    if (whence != SEEK_SET && whence != SEEK_CUR && whence != SEEK_END) return -1;
    int64_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? s->pos : s->size;
    if ((offset < 0 && -(int64_t)offset > base) || (offset > 0 && offset > INT64_MAX - base))
        return -1;
    s->pos = base + offset;
    return (off_t)s->pos;
}

/* Bytes of tags at the end of the stream that may follow the last frame. */
static int64_t trailing_tag_bytes(const mp3_source *s, int64_t end)
{
    unsigned char b[32];
    int64_t tags = 0;
    mp3_source probe = *s;
    /* ID3v1: exactly 128 bytes starting with "TAG". */
    if (end - tags >= 128) {
        probe.pos = end - 128;
        if (source_read(&probe, b, 3) == 3 && !memcmp(b, "TAG", 3)) tags += 128;
    }
    /* APEv2: a 32-byte footer "APETAGEX" whose size field counts the items
     * and the footer; a header of 32 more bytes is present if flagged. */
    if (end - tags >= 32) {
        probe.pos = end - tags - 32;
        if (source_read(&probe, b, 32) == 32 && !memcmp(b, "APETAGEX", 8)) {
            int64_t size = (int64_t)b[12] | (int64_t)b[13] << 8 | (int64_t)b[14] << 16 |
                           (int64_t)b[15] << 24;
            if (b[23] & 0x80) size += 32;
            if (size <= end - tags) tags += size;
        }
    }
    return tags;
}

static mpg123_handle *new_decoder(void)
{
    mpg123_handle *mh = mpg123_new(NULL, NULL);
    if (!mh) return NULL;
    const long *rates;
    size_t n_rates;
    mpg123_rates(&rates, &n_rates);
    /* Native rate and channel count, as float: no resampling, no dithering. */
    int ok = mpg123_param(mh, MPG123_ADD_FLAGS, MPG123_QUIET | MPG123_GAPLESS, 0) == MPG123_OK &&
             mpg123_param(mh, MPG123_REMOVE_FLAGS, MPG123_AUTO_RESAMPLE, 0) == MPG123_OK &&
             mpg123_param(mh, MPG123_RESYNC_LIMIT, RESYNC_LIMIT_BYTES, 0) == MPG123_OK &&
             mpg123_format_none(mh) == MPG123_OK;
    for (size_t i = 0; ok && i < n_rates; i++)
        ok = mpg123_format(mh, rates[i], MPG123_MONO | MPG123_STEREO, MPG123_ENC_FLOAT_32) ==
             MPG123_OK;
    if (!ok) {
        mpg123_delete(mh);
        return NULL;
    }
    return mh;
}

/* After mpg123 resynchronised past junk, it may have locked onto a false
 * header inside the junk. A real frame is followed by another header of the
 * same stream (or by the end of the data); a false one almost never is. */
static int frame_is_real(const mp3_source *src, const unsigned char *stream_header,
                         int64_t start, int64_t size)
{
    unsigned char next[4];
    mp3_source probe = *src;
    if (start + size >= src->size) return start + size == src->size;
    probe.pos = start + size;
    if (source_read(&probe, next, 4) != 4) return 0;
    if (!memcmp(next, "TAG", 3) || !memcmp(next, "APET", 4)) return 1;
    return audio_mpeg_frame_length(next) && audio_mpeg_same_stream(stream_header, next);
}

static void header_bytes(unsigned char *b, unsigned long header)
{
    for (int i = 0; i < 4; i++) b[i] = (unsigned char)(header >> (24 - 8 * i));
}

static int decode_source(const audio_decode_sink *sink, d2m_decode_info *info, mp3_source *src,
                         const char *name, double max_duration_s, d2m_error *err)
{
    int64_t decoded = 0; /* frames handed to the sink */
    mpg123_handle *mh = NULL;
    int opened = 0, frames_to_mute = 0, rc = 0;
    long rate = 0;
    int channels = 0, encoding = 0;
    int64_t frame_end = -1, skipped_bytes = 0, first_skip_frame = -1, max_frames = INT64_MAX;
    unsigned char stream_header[4] = {0};
    const char *stop_reason = NULL;

    memset(info, 0, sizeof *info);
    snprintf(info->format, sizeof info->format, "mp3");
    mh = new_decoder();
    if (!mh) {
        rc = d2m_fail(err, D2M_ERR_INTERNAL, "%s: could not set up the MP3 decoder", name);
        goto fail;
    }
    if (mpg123_replace_reader_handle(mh, source_read, source_seek, NULL) != MPG123_OK ||
        mpg123_open_handle(mh, src) != MPG123_OK) {
        rc = d2m_fail(err, D2M_ERR_INTERNAL, "%s: could not open the MP3 stream: %s", name,
                      mpg123_strerror(mh));
        goto fail;
    }
    opened = 1;
    /* Parses the first frame (and a LAME/Xing header) so length is known. */
    if (mpg123_getformat(mh, &rate, &channels, &encoding) != MPG123_OK || rate <= 0 ||
        channels < 1 || channels > 2) {
        rc = src->read_errno
                 ? d2m_fail(err, D2M_ERR_IO, "%s: %s", name, strerror(src->read_errno))
                 : d2m_fail(err, D2M_ERR_FORMAT, "%s: no MPEG audio frames could be decoded",
                            name);
        goto fail;
    }
    info->sample_rate = (int)rate;
    info->channels = channels;

    if (max_duration_s > 0 && max_duration_s * (double)rate < 9e18)
        max_frames = (int64_t)ceil(max_duration_s * (double)rate);
    /* The length is exact with a LAME/Xing header, otherwise estimated from
     * the file size; when the file can hold that much, refuse early and
     * allocate once. A damaged header is found out by decoding instead. */
    off_t expected = mpg123_length(mh);
    if (expected <= 0 ||
        (double)expected * channels * sizeof(float) > (double)src->size * MAX_EXPANSION)
        expected = 0;
    if (expected > max_frames) {
        rc = d2m_fail(err, D2M_ERR_TOO_LONG, "%s: %.0f s long, the limit is %.0f s", name,
                      (double)expected / (double)rate, max_duration_s);
        goto fail;
    }
    /* Slack for an estimate. */
    if ((rc = sink->begin(sink->user, (int)rate, channels,
                          expected > 0 ? (int64_t)expected + rate / 10 : 0, err)))
        goto fail;

    /* mpg123_getformat already parsed the first frame; decode it first. */
    for (int r = MPG123_OK, first = 1;; first = 0) {
        if (!first) r = mpg123_framebyframe_next(mh);
        if (r == MPG123_DONE) break;
        if (r != MPG123_OK && r != MPG123_NEW_FORMAT) {
            if (src->read_errno) {
                rc = d2m_fail(err, D2M_ERR_IO, "%s: %s", name, strerror(src->read_errno));
                goto fail;
            }
            stop_reason = "the file is truncated or damaged";
            break;
        }
        unsigned long header;
        struct mpg123_frameinfo2 fi;
        if (mpg123_framedata(mh, &header, NULL, NULL) != MPG123_OK ||
            mpg123_info2(mh, &fi) != MPG123_OK) {
            stop_reason = "the file is damaged";
            break;
        }
        int64_t start = (int64_t)mpg123_framepos(mh);
        if (frame_end < 0) {
            header_bytes(stream_header, header);
        } else if (start != frame_end) {
            if (first_skip_frame < 0) first_skip_frame = decoded;
            if (!frame_is_real(src, stream_header, start, fi.framesize)) continue;
            skipped_bytes += start > frame_end ? start - frame_end : 0;
            frames_to_mute = 2;
        }
        frame_end = start + fi.framesize;
        if (r == MPG123_NEW_FORMAT) {
            long rate2;
            int channels2, encoding2;
            if (mpg123_getformat(mh, &rate2, &channels2, &encoding2) != MPG123_OK ||
                rate2 != rate || channels2 != channels) {
                stop_reason = "the stream changes format";
                break;
            }
        }

        off_t frame_number;
        unsigned char *pcm;
        size_t bytes;
        if (mpg123_framebyframe_decode(mh, &frame_number, &pcm, &bytes) != MPG123_OK) {
            stop_reason = "the file is damaged";
            break;
        }
        int64_t n = (int64_t)(bytes / sizeof(float) / (size_t)channels);
        if (decoded + n > max_frames) {
            rc = d2m_fail(err, D2M_ERR_TOO_LONG, "%s: longer than the limit of %.0f s", name,
                          max_duration_s);
            goto fail;
        }
        /* A Layer III frame borrows bits from the frames before it, which
         * after a gap are the wrong ones, and its synthesis overlaps into the
         * next frame: both would be bursts of noise, so they are muted. */
        if (frames_to_mute > 0) {
            if (bytes) memset(pcm, 0, bytes);
            frames_to_mute--;
        }
        /* Gapless trimming can empty a frame. */
        if (n > 0 && (rc = sink->write(sink->user, (const float *)(void *)pcm, n, err))) goto fail;
        decoded += n;
    }

    if (decoded == 0) {
        rc = d2m_fail(err, D2M_ERR_FORMAT, "%s: no MPEG audio frames could be decoded", name);
        goto fail;
    }
    /* Anything after the last good frame other than tags is lost audio. */
    if (!stop_reason && src->size - frame_end > trailing_tag_bytes(src, src->size))
        stop_reason = "the file is truncated or damaged";

    int used = 0;
    if (skipped_bytes > 0)
        used = snprintf(info->warning, sizeof info->warning,
                        "skipped %lld damaged bytes at %.1f s%s", (long long)skipped_bytes,
                        (double)first_skip_frame / (double)rate, stop_reason ? "; " : "");
    if (stop_reason && used >= 0 && (size_t)used < sizeof info->warning)
        snprintf(info->warning + used, sizeof info->warning - (size_t)used,
                 "decoded %.1f s; %s after that point", (double)decoded / (double)rate,
                 stop_reason);
fail:
    if (opened) mpg123_close(mh);
    mpg123_delete(mh);
    return rc;
}

/* The whole stream into one buffer. */
static int decode_whole(d2m_audio *out, d2m_decode_info *info, mp3_source *src, const char *name,
                        double max_duration_s, d2m_error *err)
{
    audio_decode_buffer b;
    audio_decode_sink sink = audio_decode_buffer_sink(&b, name);
    int rc = decode_source(&sink, info, src, name, max_duration_s, err);
    if (rc == 0) audio_decode_buffer_take(out, &b);
    audio_decode_buffer_free(&b);
    return rc;
}

int audio_decode_mp3_memory(d2m_audio *out, d2m_decode_info *info, const unsigned char *bytes,
                            size_t n, double max_duration_s, d2m_error *err)
{
    mp3_source src = {.bytes = bytes, .fd = -1, .size = (int64_t)n};
    memset(out, 0, sizeof *out);
    if (!bytes || n == 0) {
        memset(info, 0, sizeof *info);
        return d2m_fail(err, D2M_ERR_FORMAT, "(memory): empty MP3 data");
    }
    return decode_whole(out, info, &src, "(memory)", max_duration_s, err);
}

int audio_decode_mp3_fd_to(const audio_decode_sink *sink, d2m_decode_info *info, int fd,
                           const char *name, double max_duration_s, d2m_error *err)
{
    mp3_source src = {.fd = fd};
    off_t size = lseek(fd, 0, SEEK_END);
    if (size < 0) {
        memset(info, 0, sizeof *info);
        return d2m_fail(err, D2M_ERR_IO, "%s: %s", name, strerror(errno));
    }
    src.size = (int64_t)size;
    return decode_source(sink, info, &src, name, max_duration_s, err);
}

int audio_decode_mp3_fd(d2m_audio *out, d2m_decode_info *info, int fd, const char *name,
                        double max_duration_s, d2m_error *err)
{
    audio_decode_buffer b;
    audio_decode_sink sink = audio_decode_buffer_sink(&b, name);
    memset(out, 0, sizeof *out);
    int rc = audio_decode_mp3_fd_to(&sink, info, fd, name, max_duration_s, err);
    if (rc == 0) audio_decode_buffer_take(out, &b);
    audio_decode_buffer_free(&b);
    return rc;
}
