/* Spectrogram pictures: tones land on the rows of their frequencies, stereo
 * ranges are mixed and offset correctly, long ranges stay clean across the
 * analysis blocks, labels are drawn, and bad arguments and paths fail with
 * the right codes. Pictures are read back with libpng. */
#include "image/image.h"

#include "test.h"

#include <png.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#ifndef D2M_FONT_PATH
#define D2M_FONT_PATH "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
#endif

static char dir[256];

typedef struct {
    unsigned char *rgb; /* (height, width, 3) */
    int width, height;
} picture;

static int read_png(picture *p, const char *path)
{
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    p->rgb = NULL;
    if (!png_image_begin_read_from_file(&image, path)) return -1;
    image.format = PNG_FORMAT_RGB;
    p->rgb = malloc(PNG_IMAGE_SIZE(image));
    p->width = (int)image.width;
    p->height = (int)image.height;
    if (!p->rgb || !png_image_finish_read(&image, NULL, p->rgb, 0, NULL)) {
        png_image_free(&image);
        free(p->rgb);
        p->rgb = NULL;
        return -1;
    }
    return 0;
}

static int brightness(const picture *p, int x, int y)
{
    const unsigned char *px = p->rgb + ((size_t)y * p->width + x) * 3;
    return px[0] + px[1] + px[2];
}

/* Brightest pixel of the plot rows showing hz. The rows chosen lie between
 * grid lines; a crossing vertical grid line alone reaches about 100. */
static int brightest_in_row(const picture *p, const spectrogram_layout *l, double hz)
{
    int y = (int)lround(spectrogram_row_of_hz(l, hz)), best = 0;
    for (int x = l->x; x < l->x + l->width; x++)
        if (brightness(p, x, y) > best) best = brightness(p, x, y);
    return best;
}

/* Centre of the run of brightest plot rows in picture column x. */
static double brightest_row(const picture *p, const spectrogram_layout *l, int x)
{
    int best = -1, first = 0, last = 0;
    for (int y = l->y; y < l->y + l->height; y++) {
        int b = brightness(p, x, y);
        if (b > best) {
            best = b;
            first = last = y;
        } else if (b == best) {
            last = y;
        }
    }
    return 0.5 * (first + last);
}

/* Pixels in [x0, x1) x [y0, y1) unlike the background at (0, 0). */
static int count_marked(const picture *p, int x0, int x1, int y0, int y1)
{
    int n = 0;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            if (memcmp(p->rgb + ((size_t)y * p->width + x) * 3, p->rgb, 3) != 0) n++;
    return n;
}

static void add_sine(d2m_audio *a, int channel, double hz, double from_s, double to_s, float amp)
{
    int64_t i0 = (int64_t)(from_s * a->sample_rate), i1 = (int64_t)(to_s * a->sample_rate);
    for (int64_t i = i0; i < i1 && i < a->frames; i++)
        a->data[i * a->channels + channel] += amp * (float)sin(2 * M_PI * hz * i / a->sample_rate);
}

static int font_exists(void)
{
    FILE *f = fopen(D2M_FONT_PATH, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static void test_sines_land_on_their_rows_and_labels_are_drawn(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/sines.png", dir);
    d2m_audio a = {0};
    CHECK(d2m_audio_alloc(&a, 2 * 44100, 1, 44100) == 0, "allocating 2 s of audio");
    add_sine(&a, 0, 1000, 0, 1, 0.5f);
    add_sine(&a, 0, 100, 1, 2, 0.5f);
    d2m_error err = {0};
    int rc = spectrogram_png(path, &a, 0, a.frames, 800, 400, "1 kHz then 100 Hz", &err);
    CHECK(rc == 0, "spectrogram_png returned %d: %s", rc, err.message);

    picture p;
    CHECK(read_png(&p, path) == 0, "reading %s back", path);
    if (p.rgb) {
        CHECK(p.width == 800 && p.height == 400, "size %dx%d, expected 800x400", p.width, p.height);
        spectrogram_layout l;
        CHECK(spectrogram_layout_compute(&l, 800, 400, 44100) == 0, "layout of 800x400");
        CHECK_NEAR(brightest_row(&p, &l, l.x + l.width / 4), spectrogram_row_of_hz(&l, 1000), 3);
        CHECK_NEAR(brightest_row(&p, &l, l.x + 3 * l.width / 4), spectrogram_row_of_hz(&l, 100), 3);
        if (font_exists()) {
            int left = count_marked(&p, 0, l.x - 8, l.y, l.y + l.height);
            int title = count_marked(&p, l.x, l.x + l.width, 0, l.y - 2);
            int below = count_marked(&p, l.x, l.x + l.width, l.y + l.height + 8, p.height);
            CHECK(left > 200, "only %d text pixels left of the plot", left);
            CHECK(title > 100, "only %d title pixels above the plot", title);
            CHECK(below > 200, "only %d text pixels below the plot", below);
        } else {
            printf("test_spectrogram: %s missing, label checks skipped\n", D2M_FONT_PATH);
        }
        free(p.rgb);
    }
    d2m_audio_free(&a);
    remove(path);
}

static void test_stereo_range_is_mixed_and_offset(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/stereo.png", dir);
    d2m_audio a = {0};
    CHECK(d2m_audio_alloc(&a, 3 * 48000, 2, 48000) == 0, "allocating 3 s of stereo");
    add_sine(&a, 0, 5000, 0, 1, 0.9f); /* before the range: must not show */
    add_sine(&a, 1, 5000, 0, 1, 0.9f);
    add_sine(&a, 0, 2000, 1, 2, 0.5f); /* left only */
    add_sine(&a, 1, 200, 2, 3, 0.5f);  /* right only */
    d2m_error err = {0};
    int rc = spectrogram_png(path, &a, 48000, 2 * 48000, 640, 360, NULL, &err);
    CHECK(rc == 0, "spectrogram_png returned %d: %s", rc, err.message);
    picture p;
    CHECK(read_png(&p, path) == 0, "reading %s back", path);
    if (p.rgb) {
        spectrogram_layout l;
        spectrogram_layout_compute(&l, 640, 360, 48000);
        CHECK_NEAR(brightest_row(&p, &l, l.x + l.width / 4), spectrogram_row_of_hz(&l, 2000), 3);
        CHECK_NEAR(brightest_row(&p, &l, l.x + 3 * l.width / 4), spectrogram_row_of_hz(&l, 200), 3);
        int title = count_marked(&p, l.x, l.x + l.width, 0, l.y - 2);
        CHECK(title == 0, "%d marked pixels above the plot without a title", title);
        free(p.rgb);
    }
    d2m_audio_free(&a);
    remove(path);
}

/* A steady tone over a minute crosses many analysis blocks; a wrong block
 * edge would show as broadband energy far from the tone. */
static void test_long_range_is_clean_across_blocks(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/long.png", dir);
    d2m_audio a = {0};
    CHECK(d2m_audio_alloc(&a, 60 * 48000, 1, 48000) == 0, "allocating 60 s");
    add_sine(&a, 0, 5000, 0, 60, 0.5f);
    d2m_error err = {0};
    int rc = spectrogram_png(path, &a, 0, a.frames, 1600, 600, "a minute of 5 kHz", &err);
    CHECK(rc == 0, "spectrogram_png returned %d: %s", rc, err.message);
    picture p;
    CHECK(read_png(&p, path) == 0, "reading %s back", path);
    if (p.rgb) {
        spectrogram_layout l;
        spectrogram_layout_compute(&l, 1600, 600, 48000);
        double tone = spectrogram_row_of_hz(&l, 5000);
        int off_tone = 0;
        for (int x = l.x; x < l.x + l.width; x++)
            if (fabs(brightest_row(&p, &l, x) - tone) > 3) off_tone++;
        CHECK(off_tone == 0, "%d columns peak away from 5 kHz", off_tone);
        /* Magma at 0.25 (-60 dB) sums to about 275. The end columns are left
         * out: there the STFT's reflection folds the sine into a kink. */
        int y = (int)lround(spectrogram_row_of_hz(&l, 700)), loud = 0;
        for (int x = l.x + 1; x < l.x + l.width - 1; x++)
            if (brightness(&p, x, y) >= 120) loud++;
        CHECK(loud == 0, "%d columns bright at 700 Hz", loud);
        free(p.rgb);
    }
    d2m_audio_free(&a);
    remove(path);
}

static void test_silence_is_dark(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/silence.png", dir);
    d2m_audio a = {0};
    CHECK(d2m_audio_alloc(&a, 1000, 1, 22050) == 0, "allocating");
    d2m_error err = {0};
    /* Also shorter than the plot is wide: columns without a frame of their own. */
    int rc = spectrogram_png(path, &a, 0, a.frames, 1200, 600, "silence", &err);
    CHECK(rc == 0, "spectrogram_png returned %d: %s", rc, err.message);
    picture p;
    CHECK(read_png(&p, path) == 0, "reading %s back", path);
    if (p.rgb) {
        spectrogram_layout l;
        spectrogram_layout_compute(&l, 1200, 600, 22050);
        static const double hz[] = {70, 700, 7000};
        for (int i = 0; i < 3; i++)
            CHECK(brightest_in_row(&p, &l, hz[i]) < 120, "silence at %g Hz reaches %d", hz[i],
                  brightest_in_row(&p, &l, hz[i]));
        free(p.rgb);
    }
    d2m_audio_free(&a);
    remove(path);
}

static void test_invalid_arguments_are_refused(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/invalid.png", dir);
    d2m_audio a = {0};
    CHECK(d2m_audio_alloc(&a, 44100, 2, 44100) == 0, "allocating");
    d2m_error err = {0};
    CHECK(spectrogram_png(NULL, &a, 0, 100, 800, 400, "", &err) == D2M_ERR_INVALID, "no path");
    CHECK(spectrogram_png(path, NULL, 0, 100, 800, 400, "", &err) == D2M_ERR_INVALID, "no audio");
    CHECK(spectrogram_png(path, &a, 0, 0, 800, 400, "", &err) == D2M_ERR_INVALID, "count 0");
    CHECK(spectrogram_png(path, &a, -1, 100, 800, 400, "", &err) == D2M_ERR_INVALID, "first -1");
    CHECK(spectrogram_png(path, &a, 44000, 101, 800, 400, "", &err) == D2M_ERR_INVALID,
          "range past the end");
    CHECK(spectrogram_png(path, &a, 0, 100, 319, 400, "", &err) == D2M_ERR_INVALID, "width 319");
    CHECK(spectrogram_png(path, &a, 0, 100, 800, 199, "", &err) == D2M_ERR_INVALID, "height 199");
    CHECK(err.code == D2M_ERR_INVALID && err.message[0], "message \"%s\"", err.message);
    d2m_audio bad = a;
    bad.channels = 0;
    CHECK(spectrogram_png(path, &bad, 0, 100, 800, 400, "", &err) == D2M_ERR_INVALID, "0 channels");
    CHECK(access(path, F_OK) != 0, "a refused call left %s behind", path);

    spectrogram_layout l;
    CHECK(spectrogram_layout_compute(&l, 320, 200, 44100) == 0, "smallest layout");
    CHECK(l.width > 0 && l.height > 0, "plot %dx%d", l.width, l.height);
    CHECK_NEAR(spectrogram_row_of_hz(&l, l.max_hz), l.y - 0.5, 1e-9);
    CHECK_NEAR(spectrogram_row_of_hz(&l, l.min_hz), l.y + l.height - 0.5, 1e-9);
    d2m_audio_free(&a);
}

static void test_unwritable_path_is_an_io_error(void)
{
    d2m_audio a = {0};
    CHECK(d2m_audio_alloc(&a, 44100, 1, 44100) == 0, "allocating");
    d2m_error err = {0};
    const char *path = "/nonexistent-d2m-folder/out.png";
    int rc = spectrogram_png(path, &a, 0, a.frames, 800, 400, "x", &err);
    CHECK(rc == D2M_ERR_IO, "expected %d, got %d", D2M_ERR_IO, rc);
    CHECK(strstr(err.message, path) != NULL, "message \"%s\" does not name the path", err.message);
    if (access("/dev/full", W_OK) == 0) { /* a full disk fails inside libpng */
        rc = spectrogram_png("/dev/full", &a, 0, a.frames, 800, 400, "x", &err);
        CHECK(rc == D2M_ERR_IO, "/dev/full: expected %d, got %d", D2M_ERR_IO, rc);
        CHECK(access("/dev/full", F_OK) == 0, "the failed write removed /dev/full");
    }
    d2m_audio_free(&a);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/d2m_spectrogram_XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_sines_land_on_their_rows_and_labels_are_drawn();
    test_stereo_range_is_mixed_and_offset();
    test_long_range_is_clean_across_blocks();
    test_silence_is_dark();
    test_invalid_arguments_are_refused();
    test_unwritable_path_is_an_io_error();
    rmdir(dir);
    return test_summary("test_spectrogram");
}
