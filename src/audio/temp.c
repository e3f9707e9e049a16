/* Audio in an unnamed temporary file, so a long song's mix or stem costs
 * disk, not memory: raw float (frames, channels) in native byte order,
 * appended through a small buffer, then read (and overwritten in place) at
 * random with pread and pwrite.
 *
 * The file is created in a folder the caller names (the job's output
 * folder: known writable, and not a RAM-backed /tmp) and unlinked at once,
 * so nothing is left behind even if the process dies.
 * Threading: appending from one thread; reads (pread) from any number. */
#include "audio/audio_internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { BUFFER_BYTES = 1 << 18 };

struct audio_temp {
    int fd;
    int channels, sample_rate;
    int64_t frames;      /* appended, buffered ones included */
    unsigned char *buffer; /* (BUFFER_BYTES) not yet written */
    size_t buffered;
};

int audio_temp_new(audio_temp **out, const char *dir, int channels, int sample_rate,
                   d2m_error *err)
{
    *out = NULL;
    audio_temp *t = calloc(1, sizeof *t);
    char path[1100];
    if (!t || !(t->buffer = malloc(BUFFER_BYTES))) {
        free(t);
        return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
    }
    snprintf(path, sizeof path, "%s/.drum2midi-audio-XXXXXX", dir);
    t->fd = mkstemp(path);
    if (t->fd < 0) {
        int e = errno;
        free(t->buffer);
        free(t);
        return d2m_fail(err, D2M_ERR_IO, "%s: cannot create a temporary file: %s", dir, strerror(e));
    }
    unlink(path);
    t->channels = channels;
    t->sample_rate = sample_rate;
    *out = t;
    return 0;
}

/* n bytes from b into the file at offset. */
static int pwrite_all(int fd, const unsigned char *b, size_t n, off_t offset, d2m_error *err)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, b, n, offset);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0)
            return d2m_fail(err, D2M_ERR_IO, "cannot write a temporary audio file: %s",
                            w < 0 ? strerror(errno) : "disk full?");
        b += w;
        n -= (size_t)w;
        offset += w;
    }
    return 0;
}

int audio_temp_flush(audio_temp *t, d2m_error *err)
{
    off_t end = lseek(t->fd, 0, SEEK_END); /* what earlier flushes wrote */
    int rc = end < 0 ? d2m_fail(err, D2M_ERR_IO, "cannot write a temporary audio file: %s", strerror(errno))
                     : pwrite_all(t->fd, t->buffer, t->buffered, end, err);
    t->buffered = 0;
    return rc;
}

int audio_temp_append(audio_temp *t, const float *x, int64_t frames, d2m_error *err)
{
    const unsigned char *b = (const unsigned char *)x;
    size_t n = (size_t)frames * (size_t)t->channels * sizeof *x;
    t->frames += frames;
    while (n > 0) {
        size_t take = BUFFER_BYTES - t->buffered < n ? BUFFER_BYTES - t->buffered : n;
        memcpy(t->buffer + t->buffered, b, take);
        t->buffered += take;
        b += take;
        n -= take;
        if (t->buffered == BUFFER_BYTES) {
            int rc = audio_temp_flush(t, err);
            if (rc) return rc;
        }
    }
    return 0;
}

int audio_temp_write(audio_temp *t, const float *x, int64_t first, int64_t count, d2m_error *err)
{
    assert(t->buffered == 0 && first >= 0 && first + count <= t->frames);
    return pwrite_all(t->fd, (const unsigned char *)x, (size_t)(count * t->channels) * sizeof *x,
                      (off_t)(first * t->channels) * (off_t)sizeof *x, err);
}

static int temp_read(void *user, float *dst, int64_t first, int64_t count, d2m_error *err)
{
    const audio_temp *t = user;
    const int c = t->channels;
    assert(t->buffered == 0); /* audio_temp_flush comes before reading */
    int64_t lo, hi;
    audio_reader_pad(dst, first, count, t->frames, c, &lo, &hi);
    if (hi <= lo) return 0;
    unsigned char *b = (unsigned char *)(dst + (lo - first) * c);
    size_t n = (size_t)((hi - lo) * c) * sizeof *dst;
    off_t offset = (off_t)(lo * c) * (off_t)sizeof *dst;
    while (n > 0) {
        ssize_t got = pread(t->fd, b, n, offset);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return d2m_fail(err, D2M_ERR_IO, "cannot read a temporary audio file: %s",
                            got < 0 ? strerror(errno) : "it is shorter than written");
        b += got;
        n -= (size_t)got;
        offset += got;
    }
    return 0;
}

audio_reader audio_temp_reader(audio_temp *t)
{
    audio_reader r = {temp_read, t, t->frames, t->channels, t->sample_rate};
    return r;
}

void audio_temp_free(audio_temp *t)
{
    if (!t) return;
    close(t->fd);
    free(t->buffer);
    free(t);
}
