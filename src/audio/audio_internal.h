/* Audio layer internals shared by its files: how the decoders hand over
 * what they decode, either into one growing buffer (audio_decode_*) or a
 * block at a time (audio_stream_file), through the same code. */
#ifndef D2M_AUDIO_INTERNAL_H
#define D2M_AUDIO_INTERNAL_H

#include "audio/audio.h"

typedef struct {
    /* Called once before any block with the file's layout and, when its
     * header can be trusted for an allocation, its length (0 = unknown). */
    int (*begin)(void *user, int sample_rate, int channels, int64_t expected_frames,
                 d2m_error *err);
    /* The next decoded frames, x (frames, channels). */
    int (*write)(void *user, const float *x, int64_t frames, d2m_error *err);
    void *user;
} audio_decode_sink;

/* The whole-file sink: a buffer grown by doubling. name starts its
 * out-of-memory message, which says how far decoding got. */
typedef struct {
    const char *name;
    float *data; /* (capacity, channels) */
    int64_t frames, capacity;
    int channels, sample_rate;
} audio_decode_buffer;

audio_decode_sink audio_decode_buffer_sink(audio_decode_buffer *b, const char *name);
/* Hand the buffer over to out, trimmed to its length. */
void audio_decode_buffer_take(d2m_audio *out, audio_decode_buffer *b);
void audio_decode_buffer_free(audio_decode_buffer *b);

/* Decode a file (any supported format) into sink. Same codes as
 * audio_decode_file, or the sink's. */
int audio_decode_file_to(const audio_decode_sink *sink, d2m_decode_info *info, const char *path,
                         double max_duration_s, d2m_error *err);

/* MP3 from an open, seekable fd into sink; does not close fd. */
int audio_decode_mp3_fd_to(const audio_decode_sink *sink, d2m_decode_info *info, int fd,
                           const char *name, double max_duration_s, d2m_error *err);

/* out (frames, out_channels) from in (frames, in_channels) by
 * audio_convert's channel rules; out_channels is 1 or 2. */
void audio_convert_channels(float *out, int out_channels, const float *in, int64_t frames,
                            int in_channels);

/* For an audio_reader's read: zeros the frames of dst (count, channels),
 * which start at frame first, that lie outside [0, frames), and sets
 * [*lo, *hi) to the frames inside, which the reader fills; *hi <= *lo when
 * none are. */
void audio_reader_pad(float *dst, int64_t first, int64_t count, int64_t frames, int channels, int64_t *lo,
                      int64_t *hi);

#endif
