/* Image layer: spectrogram pictures. */
#ifndef D2M_IMAGE_H
#define D2M_IMAGE_H

#include "audio/audio.h"

/* Render a spectrogram of frames [first, first + count) of a as a PNG:
 * log-frequency axis (30 Hz to Nyquist), dB colour scale with a colour bar,
 * axis labels in seconds and Hz, a title. width and height are of the whole
 * image in pixels. Returns 0, D2M_ERR_IO, D2M_ERR_NOMEM, D2M_ERR_INVALID. */
int spectrogram_png(const char *path, const d2m_audio *a, int64_t first, int64_t count,
                    int width, int height, const char *title, d2m_error *err);
/* The same, reading the audio through a reader a block at a time (the
 * same picture for the same samples). */
int spectrogram_png_read(const char *path, const audio_reader *a, int64_t first, int64_t count,
                         int width, int height, const char *title, d2m_error *err);

/* Where spectrogram_png puts the plot in a width x height picture, so tests
 * and pages can find a frequency or a time in it. The plot's columns cover
 * the shown range left to right in equal steps of time. */
typedef struct {
    int x, y, width, height; /* plot area in picture pixels; (x, y) its top-left */
    double min_hz, max_hz;   /* bottom and top edges of the log frequency axis */
} spectrogram_layout;

/* The layout spectrogram_png uses. Returns 0, or D2M_ERR_INVALID when
 * width < 320, height < 200 or sample_rate < 1000. */
int spectrogram_layout_compute(spectrogram_layout *out, int width, int height, int sample_rate);

/* Picture row (fractional, 0 = top) whose centre shows hz. */
double spectrogram_row_of_hz(const spectrogram_layout *l, double hz);

#endif
