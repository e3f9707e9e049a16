/* Decoding any supported file: sniff the bytes, route MP3 to libmpg123
 * (mp3.c) and WAV/RF64, FLAC, Ogg and AIFF to libsndfile.
 *
 * Routing is by content, never by file name: a PNG renamed to .mp3 is
 * refused with a message saying what it looks like. Output is interleaved
 * float (frames, channels) at the file's own rate. libsndfile's frame count
 * comes from the header; it is trusted for the duration limit and for one
 * allocation only when plausible for the file size (a hostile FLAC header can
 * claim any length), otherwise the buffer grows as audio actually decodes.
 * Both decoders write into a sink (audio_internal.h): the whole-file buffer
 * here, or audio_stream_file's block-by-block converter (stream.c).
 * Reference: libsndfile sndfile.h (sf_open_fd, sf_open_virtual).
 * Threading: no shared state; safe on any thread. */
#include "audio/audio_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    HEAD_BYTES = 64 * 1024 + 64, /* what audio_sniff needs to find MP3 frames */
    MAX_ID3_TAGS = 8,
    READ_CHUNK_FRAMES = 64 * 1024,
    MAX_SAMPLE_RATE = 768000, /* the highest rate real converters record */
    MAX_EXPANSION = 256       /* decoded float bytes per file byte a header is trusted for */
};

/* Up to n bytes at offset; the count read, or -1 with errno set. */
static ssize_t read_at(int fd, unsigned char *buf, size_t n, off_t offset)
{
    size_t done = 0;
    while (done < n) {
        ssize_t got = pread(fd, buf + done, n - done, offset + (off_t)done);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return -1;
        if (got == 0) break;
        done += (size_t)got;
    }
    return (ssize_t)done;
}

/* Fill head with the bytes that decide the format: the file's start, or,
 * when ID3v2 tags (often with cover art) are larger than that, the bytes
 * after them. Returns the count or -1 with errno set. */
static ssize_t read_head(int fd, unsigned char *head)
{
    ssize_t n = read_at(fd, head, HEAD_BYTES, 0);
    if (n < 0 || audio_id3v2_size(head, (size_t)n) < (size_t)n) return n;
    off_t offset = 0;
    for (int t = 0; t < MAX_ID3_TAGS; t++) {
        unsigned char tag[10];
        size_t size;
        if (read_at(fd, tag, sizeof tag, offset) != (ssize_t)sizeof tag ||
            (size = audio_id3v2_size(tag, sizeof tag)) == 0)
            break;
        offset += (off_t)size;
    }
    return read_at(fd, head, HEAD_BYTES, offset);
}

const char *audio_sniff_file(const char *path)
{
    const char *format = "";
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return format;
    unsigned char *head = malloc(HEAD_BYTES);
    if (head) {
        ssize_t n = read_head(fd, head);
        if (n > 0) format = audio_sniff(head, (size_t)n);
        free(head);
    }
    close(fd);
    return format;
}

/* A hint for the "not recognised" message: common files people try. */
static const char *describe(const unsigned char *b, size_t n)
{
    if (n >= 8 && !memcmp(b + 4, "ftyp", 4)) return "it looks like MP4/M4A, which is not supported";
    if (n >= 4 && !memcmp(b, "\x89PNG", 4)) return "it looks like a PNG image";
    if (n >= 3 && !memcmp(b, "\xFF\xD8\xFF", 3)) return "it looks like a JPEG image";
    if (n >= 4 && !memcmp(b, "PK\x03\x04", 4)) return "it looks like a ZIP archive";
    if (n >= 4 && !memcmp(b, "%PDF", 4)) return "it looks like a PDF document";
    return "expected WAV, FLAC, Ogg, AIFF or MP3";
}

static int not_recognised(d2m_error *err, const char *name, const unsigned char *b, size_t n)
{
    char hex[3 * 8 + 1] = "";
    for (size_t i = 0; i < n && i < 8; i++) snprintf(hex + 3 * i, 4, " %02X", b[i]);
    return d2m_fail(err, D2M_ERR_FORMAT, "%s: not a recognised audio file (%s; first bytes%s)",
                    name, describe(b, n), hex);
}

static int subformat_bits(int format)
{
    switch (format & SF_FORMAT_SUBMASK) {
    case SF_FORMAT_PCM_S8:
    case SF_FORMAT_PCM_U8: return 8;
    case SF_FORMAT_PCM_16: return 16;
    case SF_FORMAT_PCM_24: return 24;
    case SF_FORMAT_PCM_32:
    case SF_FORMAT_FLOAT: return 32;
    case SF_FORMAT_DOUBLE: return 64;
    default: return 0; /* lossy or companded: no meaningful bit depth */
    }
}

/* Grow an interleaved buffer to hold capacity frames. */
static int grow(float **data, int64_t capacity, int channels)
{
    if ((uint64_t)capacity > SIZE_MAX / sizeof(float) / (size_t)channels) return D2M_ERR_NOMEM;
    float *grown = realloc(*data, (size_t)(capacity * channels) * sizeof *grown);
    if (!grown) return D2M_ERR_NOMEM;
    *data = grown;
    return 0;
}

/* ---- The whole-file sink ----------------------------------------------------- */

static int buffer_begin(void *user, int sample_rate, int channels, int64_t expected_frames,
                        d2m_error *err)
{
    audio_decode_buffer *b = user;
    b->sample_rate = sample_rate;
    b->channels = channels;
    /* One allocation when the length is known; a failure here is left to
     * the growth below, which says how far decoding got. */
    if (expected_frames > 0 && grow(&b->data, expected_frames, channels) == 0)
        b->capacity = expected_frames;
    return 0;
}

static int buffer_write(void *user, const float *x, int64_t frames, d2m_error *err)
{
    audio_decode_buffer *b = user;
    if (b->frames + frames > b->capacity) {
        int64_t capacity = b->capacity ? b->capacity : READ_CHUNK_FRAMES;
        while (capacity < b->frames + frames) capacity *= 2;
        if (grow(&b->data, capacity, b->channels))
            return d2m_fail(err, D2M_ERR_NOMEM, "%s: out of memory after %.0f s of audio",
                            b->name, (double)b->frames / b->sample_rate);
        b->capacity = capacity;
    }
    memcpy(b->data + b->frames * b->channels, x, (size_t)(frames * b->channels) * sizeof *x);
    b->frames += frames;
    return 0;
}

audio_decode_sink audio_decode_buffer_sink(audio_decode_buffer *b, const char *name)
{
    memset(b, 0, sizeof *b);
    b->name = name;
    audio_decode_sink s = {buffer_begin, buffer_write, b};
    return s;
}

void audio_decode_buffer_take(d2m_audio *out, audio_decode_buffer *b)
{
    float *exact = realloc(b->data, (size_t)(b->frames * b->channels) * sizeof *exact);
    out->data = exact ? exact : b->data;
    out->frames = b->frames;
    out->channels = b->channels;
    out->sample_rate = b->sample_rate;
    b->data = NULL;
}

void audio_decode_buffer_free(audio_decode_buffer *b)
{
    if (!b) return;
    free(b->data);
    b->data = NULL;
}

/* ---- libsndfile --------------------------------------------------------------- */

/* Read everything libsndfile can give from an open file into sink.
 * file_bytes bounds how far the header's frame count is trusted. */
static int read_sndfile(const audio_decode_sink *sink, d2m_decode_info *info, SNDFILE *sf,
                        const SF_INFO *si, int64_t file_bytes, const char *name,
                        double max_duration_s, d2m_error *err)
{
    float *chunk = NULL; /* (chunk_frames, channels) */
    const int c = si->channels, rate = si->samplerate;
    const int64_t claimed = (int64_t)si->frames;
    int64_t frames = 0;
    int rc;

    info->sample_rate = rate;
    info->channels = c;
    info->bits = subformat_bits(si->format);
    if (c < 1 || c > AUDIO_MAX_CHANNELS || rate < 1 || rate > MAX_SAMPLE_RATE)
        return d2m_fail(err, D2M_ERR_FORMAT, "%s: unsupported layout (%d channels at %d Hz)",
                        name, c, rate);
    /* FLAC and Ogg headers may say anything (or 0 for unknown). */
    int trusted = claimed > 0 && (double)claimed * c * sizeof(float) <=
                                     (double)file_bytes * MAX_EXPANSION;
    if (trusted && max_duration_s > 0 && (double)claimed > max_duration_s * rate)
        return d2m_fail(err, D2M_ERR_TOO_LONG, "%s: %.0f s long, the limit is %.0f s", name,
                        (double)claimed / rate, max_duration_s);

    /* Chunks of at most 64k frames and 512 KiB, whatever the channel count. */
    const int64_t chunk_frames = c == 1 ? READ_CHUNK_FRAMES : READ_CHUNK_FRAMES * 2 / c;
    if ((rc = sink->begin(sink->user, rate, c, trusted ? claimed : 0, err))) return rc;
    chunk = malloc((size_t)(chunk_frames * c) * sizeof *chunk);
    if (!chunk)
        return d2m_fail(err, D2M_ERR_NOMEM, "%s: out of memory after %.0f s of audio", name, 0.0);
    for (;;) {
        sf_count_t got = sf_readf_float(sf, chunk, (sf_count_t)chunk_frames);
        if (got <= 0) break;
        if (max_duration_s > 0 && (double)(frames + got) > max_duration_s * rate) {
            rc = d2m_fail(err, D2M_ERR_TOO_LONG, "%s: longer than the limit of %.0f s", name,
                          max_duration_s);
            goto fail;
        }
        if ((rc = sink->write(sink->user, chunk, (int64_t)got, err))) goto fail;
        frames += got;
    }
    if (frames == 0) {
        rc = d2m_fail(err, D2M_ERR_FORMAT, "%s: contains no audio", name);
        goto fail;
    }
    if (trusted && frames < claimed)
        snprintf(info->warning, sizeof info->warning,
                 "decoded %.1f s of %.1f s; the file is truncated or damaged after that point",
                 (double)frames / rate, (double)claimed / rate);
    rc = 0;
fail:
    free(chunk);
    return rc;
}

static int decode_sndfile_fd(const audio_decode_sink *sink, d2m_decode_info *info, int fd,
                             const char *format, int64_t file_bytes, const char *path,
                             double max_duration_s, d2m_error *err)
{
    SF_INFO si = {0};
    snprintf(info->format, sizeof info->format, "%s", format);
    if (lseek(fd, 0, SEEK_SET) != 0)
        return d2m_fail(err, D2M_ERR_IO, "%s: %s", path, strerror(errno));
    SNDFILE *sf = sf_open_fd(fd, SFM_READ, &si, SF_FALSE);
    if (!sf) return d2m_fail(err, D2M_ERR_FORMAT, "%s: %s", path, sf_strerror(NULL));
    int rc = read_sndfile(sink, info, sf, &si, file_bytes, path, max_duration_s, err);
    sf_close(sf);
    return rc;
}

int audio_decode_file_to(const audio_decode_sink *sink, d2m_decode_info *info, const char *path,
                         double max_duration_s, d2m_error *err)
{
    unsigned char *head = NULL;
    struct stat st;
    int rc, fd;

    memset(info, 0, sizeof *info);
    /* O_NONBLOCK: a FIFO must not hang the open; it is refused below. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return d2m_fail(err, D2M_ERR_IO, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        rc = d2m_fail(err, D2M_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = d2m_fail(err, D2M_ERR_IO, "%s: %s", path,
                      S_ISDIR(st.st_mode) ? strerror(EISDIR) : "not a regular file");
        goto fail;
    }
    if (st.st_size == 0) {
        rc = d2m_fail(err, D2M_ERR_FORMAT, "%s: empty file", path);
        goto fail;
    }
    head = malloc(HEAD_BYTES);
    if (!head) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    ssize_t n = read_head(fd, head);
    if (n < 0) {
        rc = d2m_fail(err, D2M_ERR_IO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    const char *format = audio_sniff(head, (size_t)n);
    if (!format[0]) {
        rc = not_recognised(err, path, head, (size_t)n);
        goto fail;
    }
    if (!strcmp(format, "mp3"))
        rc = audio_decode_mp3_fd_to(sink, info, fd, path, max_duration_s, err);
    else
        rc = decode_sndfile_fd(sink, info, fd, format, (int64_t)st.st_size, path, max_duration_s,
                               err);
fail:
    free(head);
    close(fd);
    return rc;
}

int audio_decode_file(d2m_audio *out, d2m_decode_info *info, const char *path,
                      double max_duration_s, d2m_error *err)
{
    audio_decode_buffer b;
    audio_decode_sink sink = audio_decode_buffer_sink(&b, path);
    memset(out, 0, sizeof *out);
    int rc = audio_decode_file_to(&sink, info, path, max_duration_s, err);
    if (rc == 0) audio_decode_buffer_take(out, &b);
    audio_decode_buffer_free(&b);
    return rc;
}

/* libsndfile virtual I/O over a read-only byte range. */
typedef struct {
    const unsigned char *bytes;
    sf_count_t size, pos;
} memory_file;

static sf_count_t memory_length(void *user) { return ((memory_file *)user)->size; }
static sf_count_t memory_tell(void *user) { return ((memory_file *)user)->pos; }

static sf_count_t memory_seek(sf_count_t offset, int whence, void *user)
{
    memory_file *m = user;
    if (whence != SEEK_SET && whence != SEEK_CUR && whence != SEEK_END) return -1;
    sf_count_t base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? m->pos : m->size;
    if (offset < -base || offset > m->size - base) return -1; /* stay inside the bytes */
    m->pos = base + offset;
    return m->pos;
}

static sf_count_t memory_read(void *ptr, sf_count_t count, void *user)
{
    memory_file *m = user;
    if (count <= 0 || m->pos >= m->size) return 0;
    if (count > m->size - m->pos) count = m->size - m->pos;
    memcpy(ptr, m->bytes + m->pos, (size_t)count);
    m->pos += count;
    return count;
}

int audio_decode_memory(d2m_audio *out, d2m_decode_info *info, const unsigned char *bytes,
                        size_t n, double max_duration_s, d2m_error *err)
{
    const char *name = "(memory)";
    memset(out, 0, sizeof *out);
    memset(info, 0, sizeof *info);
    if (!bytes || n == 0) return d2m_fail(err, D2M_ERR_FORMAT, "%s: empty file", name);
    const char *format = audio_sniff(bytes, n);
    if (!format[0]) return not_recognised(err, name, bytes, n);
    if (!strcmp(format, "mp3"))
        return audio_decode_mp3_memory(out, info, bytes, n, max_duration_s, err);

    SF_VIRTUAL_IO io = {memory_length, memory_seek, memory_read, NULL, memory_tell};
    memory_file m = {bytes, (sf_count_t)n, 0};
    SF_INFO si = {0};
    snprintf(info->format, sizeof info->format, "%s", format);
    SNDFILE *sf = sf_open_virtual(&io, SFM_READ, &si, &m);
    if (!sf) return d2m_fail(err, D2M_ERR_FORMAT, "%s: %s", name, sf_strerror(NULL));
    audio_decode_buffer b;
    audio_decode_sink sink = audio_decode_buffer_sink(&b, name);
    int rc = read_sndfile(&sink, info, sf, &si, (int64_t)n, name, max_duration_s, err);
    sf_close(sf);
    if (rc == 0) audio_decode_buffer_take(out, &b);
    audio_decode_buffer_free(&b);
    return rc;
}
