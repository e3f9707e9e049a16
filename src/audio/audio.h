/* Audio layer: decoding files, resampling, writing WAV. */
#ifndef D2M_AUDIO_H
#define D2M_AUDIO_H

#include "base/base.h"

#include <stdint.h>

/* Interleaved float samples in [-1, 1]. Owned by whoever holds the struct. */
typedef struct {
    float *data;     /* (frames, channels) */
    int64_t frames;
    int channels;
    int sample_rate;
} d2m_audio;

/* More channels than this is refused as a damaged or hostile header. */
#define AUDIO_MAX_CHANNELS 256

int d2m_audio_alloc(d2m_audio *a, int64_t frames, int channels, int sample_rate);
void d2m_audio_free(d2m_audio *a);

/* What the decoder learned about the file. */
typedef struct {
    int sample_rate, channels; /* as stored in the file */
    int bits;                  /* bits per sample where the format says, else 0 */
    char format[16];           /* "mp3", "wav", "flac", "ogg", ... */
    char warning[256];         /* non-empty when only part of the file could be decoded */
} d2m_decode_info;

/* Which container the first bytes look like; "" when none. Pure function of
 * the bytes, used to route decoding and to check uploads. */
const char *audio_sniff(const unsigned char *bytes, size_t n);

/* Bytes taken by an ID3v2 tag at the start of bytes (header, body and
 * footer), 0 when there is none. May exceed n: the caller reads further. */
size_t audio_id3v2_size(const unsigned char *bytes, size_t n);

/* Length in bytes of the MPEG audio frame whose 4-byte header is h, 0 when h
 * is not a valid header (reserved fields, free format). */
size_t audio_mpeg_frame_length(const unsigned char *h);

/* Whether two valid frame headers can belong to one stream: same version,
 * layer, sample rate and mono/stereo. */
int audio_mpeg_same_stream(const unsigned char *a, const unsigned char *b);

/* The container of a file from its first bytes, after any ID3v2 tags (the
 * same look audio_decode_file takes); "" when unreadable or not audio. */
const char *audio_sniff_file(const char *path);

/* Decode a whole file. Refuses files longer than max_duration_s (0 = no
 * limit) before allocating for them. Returns 0, D2M_ERR_IO, D2M_ERR_FORMAT,
 * D2M_ERR_TOO_LONG or D2M_ERR_NOMEM. */
int audio_decode_file(d2m_audio *out, d2m_decode_info *info, const char *path,
                      double max_duration_s, d2m_error *err);

/* MP3 from memory through libmpg123 (used by audio_decode_file; separate for fuzzing). */
int audio_decode_mp3_memory(d2m_audio *out, d2m_decode_info *info, const unsigned char *bytes,
                            size_t n, double max_duration_s, d2m_error *err);

/* MP3 from an open, seekable file descriptor, streamed (the compressed file
 * is never held in memory). name starts every message. Does not close fd. */
int audio_decode_mp3_fd(d2m_audio *out, d2m_decode_info *info, int fd, const char *name,
                        double max_duration_s, d2m_error *err);

/* Any supported format from memory: sniffed like a file, sndfile formats read
 * through virtual I/O. Messages start with "(memory)". Same return codes as
 * audio_decode_file except D2M_ERR_IO. */
int audio_decode_memory(d2m_audio *out, d2m_decode_info *info, const unsigned char *bytes,
                        size_t n, double max_duration_s, d2m_error *err);

/* Resample with libsoxr (very high quality) and convert to out_channels
 * (1 = average of channels; 2 = mono duplicated or first two kept). */
int audio_convert(d2m_audio *out, const d2m_audio *in, int out_rate, int out_channels,
                  d2m_error *err);

/* Mono mixdown: out (frames) = mean over channels. out must hold in->frames. */
void audio_mixdown(float *out, const d2m_audio *in);

/* Write frames [first, first + count) as 24-bit PCM WAV (libsndfile). */
int audio_write_wav(const char *path, const d2m_audio *a, int64_t first, int64_t count,
                    d2m_error *err);

/* ---- Streams: songs of any length in O(block) memory ----------------------- */

/* Receives audio in order, a block at a time: x (frames, channels). Returns
 * 0, or a negative code with err set, which stops the stream. */
typedef int (*audio_block_fn)(void *user, const float *x, int64_t frames, d2m_error *err);

/* Decode a file and hand it to fn converted to out_rate and out_channels
 * (exactly the samples audio_decode_file then audio_convert give, in blocks
 * of any size), holding only a block. info and *file_frames (the decoded
 * length at the file's own rate) are as audio_decode_file gives them.
 * Returns audio_decode_file's codes, D2M_ERR_INVALID for a conversion
 * audio_convert refuses, or fn's code. */
int audio_stream_file(const char *path, int out_rate, int out_channels, double max_duration_s,
                      audio_block_fn fn, void *user, d2m_decode_info *info,
                      int64_t *file_frames, d2m_error *err);

/* Random access to a signal of known length: read fills dst (count,
 * channels) with frames [first, first + count), zeros outside [0, frames).
 * read may be called from several threads at once. Returns 0 or a negative
 * code with err set. */
typedef struct {
    int (*read)(void *user, float *dst, int64_t first, int64_t count, d2m_error *err);
    void *user;
    int64_t frames;
    int channels, sample_rate;
} audio_reader;

/* A reader over a buffer (borrowed: keep it alive while reading). */
audio_reader audio_reader_of(const d2m_audio *a);

/* Audio kept in an unnamed temporary file instead of memory: raw float
 * (frames, channels) appended in order, then read at random (audio_reader).
 * The file is unlinked at creation, so it disappears with the handle or the
 * process. Appending is single-threaded; reading is thread-safe. */
typedef struct audio_temp audio_temp;

/* A temporary file in folder dir. Returns 0, D2M_ERR_IO, D2M_ERR_NOMEM. */
int audio_temp_new(audio_temp **out, const char *dir, int channels, int sample_rate,
                   d2m_error *err);
/* Append x (frames, channels). Returns 0, D2M_ERR_IO (disk full?). */
int audio_temp_append(audio_temp *t, const float *x, int64_t frames, d2m_error *err);
/* Finish appending (writes what is buffered). Returns 0, D2M_ERR_IO. */
int audio_temp_flush(audio_temp *t, d2m_error *err);
/* Overwrite frames [first, first + count) (inside what was appended and
 * flushed) with x (count, channels). Returns 0, D2M_ERR_IO. */
int audio_temp_write(audio_temp *t, const float *x, int64_t first, int64_t count, d2m_error *err);
/* A reader over the flushed contents. */
audio_reader audio_temp_reader(audio_temp *t);
void audio_temp_free(audio_temp *t); /* NULL-safe */

/* A 24-bit PCM WAV written a block at a time (audio_write_wav's format,
 * clipping and cleanup): a failed write or close removes the file. */
typedef struct audio_wav_writer audio_wav_writer;

int audio_wav_open(audio_wav_writer **out, const char *path, int channels, int sample_rate,
                   d2m_error *err);
/* Append x (frames, channels). Returns 0, D2M_ERR_IO. */
int audio_wav_write(audio_wav_writer *w, const float *x, int64_t frames, d2m_error *err);
/* Finish the file and free w. Returns 0, D2M_ERR_IO. */
int audio_wav_close(audio_wav_writer *w, d2m_error *err);
/* Abandon: close, remove the file, free w. NULL-safe. */
void audio_wav_discard(audio_wav_writer *w);

#endif
