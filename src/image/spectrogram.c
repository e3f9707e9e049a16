/* Spectrogram pictures: what a musician looks at to see the drums.
 *
 * The shown range is mixed to mono and analysed frame by frame with the STFT
 * (periodic Hann, 2048 or 4096 points). Each frame's power spectrum, in dB, is
 * mapped onto the plot's rows on a log frequency axis from 30 Hz to Nyquist
 * (rows narrower than a bin interpolate between bins with a Catmull-Rom
 * cubic, rows wider than a bin take their loudest bin), and every plot column
 * keeps the loudest value of the frames whose centres fall in it, so a short
 * hit stays visible however long the range. Levels are shown relative to the
 * loudest point over 80 dB with the magma colour map, framed by axes, a colour
 * bar and a title.
 *
 * Layout: level is (columns, rows) floats, column-major so one frame writes
 * one contiguous column; row 0 is the top (highest frequency). Only one block
 * of mono samples (about 64k plus a window either side) is held at a time and
 * never the whole STFT, so a 20-minute stem costs the same memory as a loop;
 * the audio may come from a buffer or any audio_reader (a file on disk).
 * Reference: the look of librosa.display.specshow(y_axis="log") with
 * matplotlib's magma; Catmull & Rom (1974) for the interpolating cubic.
 * Threading: reentrant; everything lives in the call.
 */
#include "image.h"

#include "dsp/dsp.h"
#include "raster.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef D2M_FONT_PATH
#define D2M_FONT_PATH "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
#endif

enum {
    MARGIN_LEFT = 84,   /* "Frequency (Hz)" turned, then tick labels like "20 kHz" */
    MARGIN_RIGHT = 100, /* colour bar and its "−80 dB" labels */
    MARGIN_TOP = 40,    /* title */
    MARGIN_BOTTOM = 58, /* time tick labels and "Time (s)" */
    LABEL_PX = 13,
    TITLE_PX = 15,
    TICK_LENGTH = 5,
    BAR_GAP = 16, /* plot to colour bar */
    BAR_WIDTH = 14,
    MIN_WIDTH = 320,
    MIN_HEIGHT = 200,
};

static const double min_hz = 30.0;
static const float range_db = 80.0f;
/* Levels are relative to the loudest bin, but never to one quieter than
 * silence_db + range_db, so digital silence and rounding noise stay black
 * instead of being stretched to full scale. */
static const float silence_db = -120.0f;
/* Samples per block of mono mixdown, before the half-window margins. */
static const int64_t block_samples = 1 << 16;

static const raster_colour background = {18, 18, 24};
static const raster_colour frame_colour = {88, 88, 102};
static const raster_colour text_colour = {205, 205, 214};
static const raster_colour title_colour = {240, 240, 245};
static const raster_colour grid_colour = {255, 255, 255};
static const int grid_alpha = 34;

int spectrogram_layout_compute(spectrogram_layout *out, int width, int height, int sample_rate)
{
    if (width < MIN_WIDTH || height < MIN_HEIGHT || sample_rate < 1000) return D2M_ERR_INVALID;
    out->x = MARGIN_LEFT;
    out->y = MARGIN_TOP;
    out->width = width - MARGIN_LEFT - MARGIN_RIGHT;
    out->height = height - MARGIN_TOP - MARGIN_BOTTOM;
    out->min_hz = min_hz;
    out->max_hz = 0.5 * sample_rate;
    return 0;
}

/* Frequency at fractional plot row position (0 = top edge, height = bottom edge). */
static double hz_at(const spectrogram_layout *l, double position)
{
    return l->max_hz * pow(l->min_hz / l->max_hz, position / l->height);
}

double spectrogram_row_of_hz(const spectrogram_layout *l, double hz)
{
    return l->y + l->height * log(l->max_hz / hz) / log(l->max_hz / l->min_hz) - 0.5;
}

/* ---- Analysis ------------------------------------------------------------ */

/* Which bins feed a plot row: interpolate at bin when last < first, else the
 * loudest of bins [first, last]. */
typedef struct {
    float bin;
    int first, last;
} row_bins;

static void map_rows(row_bins *map, const spectrogram_layout *l, int n_fft, int sample_rate)
{
    const int bins = n_fft / 2 + 1;
    const double bins_per_hz = (double)n_fft / sample_rate;
    for (int r = 0; r < l->height; r++) {
        double top = hz_at(l, r) * bins_per_hz, bottom = hz_at(l, r + 1) * bins_per_hz;
        map[r].bin = (float)(hz_at(l, r + 0.5) * bins_per_hz);
        map[r].first = 1;
        map[r].last = 0;
        if (top - bottom >= 1.0) {
            map[r].first = (int)ceil(bottom);
            map[r].last = (int)floor(top);
            if (map[r].last > bins - 1) map[r].last = bins - 1;
        }
    }
}

static float catmull_rom(const float *db, int bins, float bin)
{
    int k = (int)bin;
    float u = bin - (float)k;
    float p0 = db[k > 0 ? k - 1 : 0], p1 = db[k < bins ? k : bins - 1];
    float p2 = db[k + 1 < bins ? k + 1 : bins - 1], p3 = db[k + 2 < bins ? k + 2 : bins - 1];
    return p1 + 0.5f * u * (p2 - p0 + u * (2 * p0 - 5 * p1 + 4 * p2 - p3 + u * (3 * (p1 - p2) + p3 - p0)));
}

/* dst (count) = mean over channels of frames [first, first + count) of a,
 * read through scratch (count, channels). */
static int mix_to_mono(float *dst, float *scratch, const audio_reader *a, int64_t first,
                       int64_t count, d2m_error *err)
{
    const int ch = a->channels;
    int rc = a->read(a->user, scratch, first, count, err);
    if (rc) return rc;
    for (int64_t i = 0; i < count; i++) {
        float sum = 0.0f;
        for (int c = 0; c < ch; c++) sum += scratch[i * ch + c];
        dst[i] = sum / (float)ch;
    }
    return 0;
}

/* level (columns, rows) = per column, the loudest dB per row over the frames
 * centred in that column. Returns 0 or D2M_ERR_NOMEM. */
static int analyse(float *level, const audio_reader *a, int64_t first, int64_t count,
                   const spectrogram_layout *l, d2m_error *err)
{
    const int columns = l->width, rows = l->height;
    /* Long columns can afford the finer frequency detail of a longer window;
     * short ones (a loop) need the sharper timing of a shorter one. */
    const int64_t per_column = count / columns;
    const int n_fft = per_column >= 1024 ? 4096 : 2048;
    int64_t hop = per_column < n_fft / 4 ? per_column : n_fft / 4; /* every column gets a frame */
    if (hop < 1) hop = 1;
    const int64_t frames = (count - 1) / hop + 1; /* centres inside the range */
    const int64_t margin = (n_fft / 2 + hop - 1) / hop; /* frames in half a window */
    const int64_t block = block_samples / hop > 0 ? block_samples / hop : 1; /* frames per block */
    const int64_t block_cap = (block - 1 + 2 * margin) * hop + 1;

    int rc = 0;
    stft_plan *plan = stft_plan_new(n_fft, (int)hop);
    const int bins = n_fft / 2 + 1;
    const int64_t mono_cap = block_cap < count ? block_cap : count;
    float *mono = malloc((size_t)mono_cap * sizeof *mono);                   /* (mono_cap) */
    float *frames_in = malloc((size_t)(mono_cap * a->channels) * sizeof *frames_in); /* (mono_cap, channels) */
    float *spectrum = malloc((size_t)bins * 2 * sizeof *spectrum); /* (bins, 2) */
    float *db = malloc((size_t)bins * sizeof *db);                 /* (bins) */
    row_bins *map = malloc((size_t)rows * sizeof *map);            /* (rows) */
    if (!plan || !mono || !frames_in || !spectrum || !db || !map) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "out of memory for a %d-point spectrogram", n_fft);
        goto fail;
    }
    map_rows(map, l, n_fft, a->sample_rate);
    for (int64_t i = 0; i < (int64_t)columns * rows; i++) level[i] = -INFINITY;

    for (int64_t t0 = 0; t0 < frames; t0 += block) {
        int64_t t1 = t0 + block < frames ? t0 + block : frames;
        /* Samples [s0, s1) hold every window of frames [t0, t1); s0 is a whole
         * number of hops so frame t is frame t - s0/hop of the block. A block
         * edge inside the range is never reached by a window, so the STFT's
         * reflection only happens at the true ends of the range. */
        int64_t s0 = t0 > margin ? (t0 - margin) * hop : 0;
        int64_t s1 = (t1 - 1 + margin) * hop < count ? (t1 - 1 + margin) * hop : count;
        if ((rc = mix_to_mono(mono, frames_in, a, first + s0, s1 - s0, err))) goto fail;
        for (int64_t t = t0; t < t1; t++) {
            stft_frame(spectrum, mono, s1 - s0, t - s0 / hop, plan);
            for (int k = 0; k < bins; k++) {
                float re = spectrum[2 * k], im = spectrum[2 * k + 1];
                db[k] = 10.0f * log10f(re * re + im * im + 1e-20f);
            }
            int64_t column = t * hop * columns / count;
            float *out = level + column * rows;
            for (int r = 0; r < rows; r++) {
                float v;
                if (map[r].last < map[r].first) {
                    v = catmull_rom(db, bins, map[r].bin);
                } else {
                    v = db[map[r].first];
                    for (int k = map[r].first + 1; k <= map[r].last; k++)
                        if (db[k] > v) v = db[k];
                }
                if (v > out[r]) out[r] = v;
            }
        }
    }
    /* Ranges shorter than the plot is wide leave columns without a frame:
     * they repeat the column to their left (column 0 always has frame 0). */
    for (int c = 1; c < columns; c++)
        if (level[(int64_t)c * rows] == -INFINITY)
            memcpy(level + (int64_t)c * rows, level + (int64_t)(c - 1) * rows,
                   (size_t)rows * sizeof *level);

fail:
    stft_plan_free(plan);
    free(mono);
    free(frames_in);
    free(spectrum);
    free(db);
    free(map);
    return rc;
}

/* ---- Drawing ------------------------------------------------------------- */

typedef enum { ALIGN_START, ALIGN_CENTRE, ALIGN_END } align;

/* Draw s horizontally at x (aligned as asked) with its capitals centred on
 * the row mid_y. Does nothing without a font. */
static void draw_label(raster *r, image_font *font, int x, int mid_y, align h, const char *s,
                       raster_colour c)
{
    if (!font) return;
    int w = image_font_text_width(font, s);
    int left = h == ALIGN_START ? x : h == ALIGN_CENTRE ? x - w / 2 : x - w;
    int top = mid_y + image_font_cap_height(font) / 2 - image_font_ascent(font);
    image_font_draw(r, font, left, top, s, c, 0);
}

static void draw_levels(raster *r, const float *level, const spectrogram_layout *l)
{
    float peak = silence_db + range_db;
    for (int64_t i = 0; i < (int64_t)l->width * l->height; i++)
        if (level[i] > peak) peak = level[i];
    for (int c = 0; c < l->width; c++)
        for (int row = 0; row < l->height; row++) {
            float t = (level[(int64_t)c * l->height + row] - peak + range_db) / range_db;
            raster_blend(r, l->x + c, l->y + row, image_colormap(t), 255);
        }
}

/* Frequency ticks and grid; labels are skipped where they would touch the
 * one below, which only happens on small pictures. */
static void draw_frequency_axis(raster *r, image_font *font, const spectrogram_layout *l)
{
    static const double ticks[] = {50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000};
    int last_label_top = 1 << 30;
    for (size_t i = 0; i < sizeof ticks / sizeof ticks[0]; i++) {
        if (ticks[i] < l->min_hz || ticks[i] > l->max_hz) continue;
        int y = (int)lround(spectrogram_row_of_hz(l, ticks[i]));
        raster_fill(r, l->x, y, l->width, 1, grid_colour, grid_alpha);
        raster_fill(r, l->x - TICK_LENGTH, y, TICK_LENGTH, 1, frame_colour, 255);
        if (!font) continue;
        int half = image_font_line_height(font) / 2;
        if (y + half + 2 > last_label_top) continue;
        char label[32];
        if (ticks[i] >= 1000)
            snprintf(label, sizeof label, "%g kHz", ticks[i] / 1000);
        else
            snprintf(label, sizeof label, "%g Hz", ticks[i]);
        draw_label(r, font, l->x - TICK_LENGTH - 4, y, ALIGN_END, label, text_colour);
        last_label_top = y - half;
    }
}

/* The smallest of 1, 2, 5 x 10^k seconds at least min_step long. */
static double nice_step(double min_step)
{
    double decade = pow(10.0, floor(log10(min_step)));
    static const double multiples[] = {1, 2, 5, 10};
    for (int i = 0; i < 4; i++)
        if (multiples[i] * decade >= min_step * (1 - 1e-9)) return multiples[i] * decade;
    return 10 * decade;
}

static void draw_time_axis(raster *r, image_font *font, const spectrogram_layout *l,
                           double duration_s)
{
    double px_per_s = l->width / duration_s;
    /* Room for the widest label plus a gap, judged on a wide sample label. */
    double min_px = font ? image_font_text_width(font, "0000.0") + 28 : 70;
    double step = nice_step(min_px / px_per_s);
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    int label_y = l->y + l->height + TICK_LENGTH + 11;
    for (int k = 0; k * step <= duration_s * (1 + 1e-9); k++) {
        int x = l->x + (int)lround(k * step * px_per_s);
        if (x >= l->x + l->width) x = l->x + l->width - 1;
        if (k > 0) raster_fill(r, x, l->y, 1, l->height, grid_colour, grid_alpha);
        raster_fill(r, x, l->y + l->height, 1, TICK_LENGTH, frame_colour, 255);
        char label[32];
        snprintf(label, sizeof label, "%.*f", decimals, k * step);
        draw_label(r, font, x, label_y, ALIGN_CENTRE, label, text_colour);
    }
}

static void draw_frame(raster *r, int x, int y, int w, int h)
{
    raster_fill(r, x - 1, y - 1, w + 2, 1, frame_colour, 255);
    raster_fill(r, x - 1, y + h, w + 2, 1, frame_colour, 255);
    raster_fill(r, x - 1, y, 1, h, frame_colour, 255);
    raster_fill(r, x + w, y, 1, h, frame_colour, 255);
}

static void draw_colour_bar(raster *r, image_font *font, const spectrogram_layout *l)
{
    int x = l->x + l->width + BAR_GAP;
    for (int row = 0; row < l->height; row++) {
        float t = 1.0f - ((float)row + 0.5f) / (float)l->height;
        raster_fill(r, x, l->y + row, BAR_WIDTH, 1, image_colormap(t), 255);
    }
    draw_frame(r, x, l->y, BAR_WIDTH, l->height);
    for (int db = 0; db >= -(int)range_db; db -= 20) {
        int y = l->y + (int)lround(-db / range_db * (l->height - 1));
        raster_fill(r, x + BAR_WIDTH + 1, y, 4, 1, frame_colour, 255);
        char label[32];
        /* U+2212, the typographic minus, lines up with the digits. */
        snprintf(label, sizeof label, db < 0 ? "\xe2\x88\x92%d dB" : "%d dB", -db);
        draw_label(r, font, x + BAR_WIDTH + 8, y, ALIGN_START, label, text_colour);
    }
}

/* Centre title over the plot, cut short with an ellipsis if it is too wide. */
static void draw_title(raster *r, image_font *font, const spectrogram_layout *l, const char *title)
{
    char text[256];
    snprintf(text, sizeof text, "%s", title);
    size_t n = strlen(text);
    int cut = strlen(title) >= sizeof text; /* snprintf may have split a character */
    while (n > 0 && (cut || image_font_text_width(font, text) > l->width)) {
        cut = 0;
        do n--; /* back to the start of a UTF-8 character */
        while (n > 0 && ((unsigned char)text[n] & 0xC0) == 0x80);
        if (n + 4 > sizeof text) continue;
        memcpy(text + n, "\xe2\x80\xa6", 4); /* U+2026 and the terminator */
    }
    draw_label(r, font, l->x + l->width / 2, l->y / 2, ALIGN_CENTRE, text, title_colour);
}

int spectrogram_png(const char *path, const d2m_audio *a, int64_t first, int64_t count,
                    int width, int height, const char *title, d2m_error *err)
{
    if (!path || !a || !a->data || a->channels < 1)
        return d2m_fail(err, D2M_ERR_INVALID, "spectrogram: no output path or no audio");
    audio_reader reader = audio_reader_of(a);
    return spectrogram_png_read(path, &reader, first, count, width, height, title, err);
}

int spectrogram_png_read(const char *path, const audio_reader *a, int64_t first, int64_t count,
                         int width, int height, const char *title, d2m_error *err)
{
    spectrogram_layout l;
    if (!path || !a || !a->read || a->channels < 1)
        return d2m_fail(err, D2M_ERR_INVALID, "spectrogram: no output path or no audio");
    if (spectrogram_layout_compute(&l, width, height, a->sample_rate))
        return d2m_fail(err, D2M_ERR_INVALID,
                        "spectrogram: %dx%d at %d Hz is too small (at least %dx%d, 1000 Hz)",
                        width, height, a->sample_rate, MIN_WIDTH, MIN_HEIGHT);
    if (first < 0 || count < 1 || first > a->frames - count)
        return d2m_fail(err, D2M_ERR_INVALID,
                        "spectrogram: frames [%lld, +%lld) are outside the audio's %lld",
                        (long long)first, (long long)count, (long long)a->frames);

    int rc = 0;
    raster picture = {0};
    image_font *label_font = image_font_load(D2M_FONT_PATH, LABEL_PX);
    image_font *title_font = image_font_load(D2M_FONT_PATH, TITLE_PX);
    float *level = malloc((size_t)l.width * (size_t)l.height * sizeof *level); /* (columns, rows) */
    if (!level || raster_alloc(&picture, width, height)) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "out of memory for a %dx%d spectrogram", width, height);
        goto fail;
    }
    rc = analyse(level, a, first, count, &l, err);
    if (rc) goto fail;

    raster_fill(&picture, 0, 0, width, height, background, 255);
    draw_levels(&picture, level, &l);
    draw_frequency_axis(&picture, label_font, &l);
    draw_time_axis(&picture, label_font, &l, (double)count / a->sample_rate);
    draw_frame(&picture, l.x, l.y, l.width, l.height);
    draw_colour_bar(&picture, label_font, &l);
    if (label_font) {
        int mid_x = l.x + l.width / 2;
        int line = image_font_line_height(label_font);
        draw_label(&picture, label_font, mid_x, height - line / 2 - 6, ALIGN_CENTRE, "Time (s)",
                   text_colour);
        const char *freq_title = "Frequency (Hz)";
        int w = image_font_text_width(label_font, freq_title);
        image_font_draw(&picture, label_font, 8, l.y + l.height / 2 - w / 2, freq_title,
                        text_colour, 1);
    }
    if (title_font && title && title[0]) draw_title(&picture, title_font, &l, title);

    rc = image_write_png(path, &picture, err);

fail:
    image_font_free(label_font);
    image_font_free(title_font);
    raster_free(&picture);
    free(level);
    return rc;
}
