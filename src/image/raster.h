/* Internal to the image layer: an RGB picture to draw on, the colour map,
 * antialiased text through FreeType and the PNG writer. Nothing outside
 * src/image includes this. */
#ifndef D2M_IMAGE_RASTER_H
#define D2M_IMAGE_RASTER_H

#include "base/base.h"

#include <stdint.h>

typedef struct {
    uint8_t r, g, b;
} raster_colour;

/* An 8-bit RGB picture, rows top to bottom. */
typedef struct {
    uint8_t *rgb; /* (height, width, 3) */
    int width, height;
} raster;

/* Returns 0 or D2M_ERR_NOMEM; the picture starts black. */
int raster_alloc(raster *r, int width, int height);
void raster_free(raster *r);

/* Blend c over pixel (x, y) with coverage alpha in 0..255; pixels outside the
 * picture are skipped, so callers may draw partly off the edge. */
void raster_blend(raster *r, int x, int y, raster_colour c, int alpha);

/* The rectangle [x, x + w) x [y, y + h), clipped to the picture. */
void raster_fill(raster *r, int x, int y, int w, int h, raster_colour c, int alpha);

/* Magma (matplotlib's perceptually uniform map): t = 0 black-purple, t = 1
 * pale yellow; t is clamped to [0, 1]. */
raster_colour image_colormap(float t);

/* Write r as an 8-bit RGB PNG. Returns 0, D2M_ERR_IO (message names the path)
 * or D2M_ERR_NOMEM. A failed write removes the partial file. */
int image_write_png(const char *path, const raster *r, d2m_error *err);

/* ---- Text ------------------------------------------------------------------
 * A font is a FreeType face at one pixel size. Text is UTF-8; a text box is
 * image_font_text_width() wide and image_font_line_height() tall, its top
 * edge image_font_ascent() above the baseline. */
typedef struct image_font image_font;

/* NULL when the file is missing or not a font: callers then draw no text. */
image_font *image_font_load(const char *path, int pixel_size);
void image_font_free(image_font *f);

int image_font_line_height(const image_font *f);
int image_font_ascent(const image_font *f);     /* baseline to top of the box */
int image_font_cap_height(const image_font *f); /* baseline to top of "H" */
int image_font_text_width(image_font *f, const char *utf8);

/* Draw text whose box has its top-left corner at (x, y). vertical = 1 turns
 * it a quarter turn anticlockwise (reads bottom to top): the box is then
 * line_height wide and text_width tall, still with its top-left at (x, y). */
void image_font_draw(raster *r, image_font *f, int x, int y, const char *utf8, raster_colour c,
                     int vertical);

#endif
