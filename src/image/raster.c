/* An RGB picture and the two drawing primitives everything else is built
 * from: blending one pixel and filling a rectangle.
 *
 * Layout: rgb is (height, width, 3) bytes, rows top to bottom.
 * Reference: "over" compositing with 8-bit coverage (Porter & Duff 1984).
 * Threading: a raster belongs to one thread; the functions keep no state.
 */
#include "raster.h"

#include <stdlib.h>

int raster_alloc(raster *r, int width, int height)
{
    r->width = width;
    r->height = height;
    r->rgb = calloc((size_t)width * (size_t)height, 3);
    return r->rgb ? 0 : D2M_ERR_NOMEM;
}

void raster_free(raster *r)
{
    if (!r) return;
    free(r->rgb);
    r->rgb = NULL;
    r->width = r->height = 0;
}

static uint8_t mix(uint8_t dst, uint8_t src, int alpha)
{
    return (uint8_t)(dst + ((int)src - (int)dst) * alpha / 255);
}

void raster_blend(raster *r, int x, int y, raster_colour c, int alpha)
{
    if (x < 0 || y < 0 || x >= r->width || y >= r->height || alpha <= 0) return;
    if (alpha > 255) alpha = 255;
    uint8_t *p = r->rgb + ((size_t)y * (size_t)r->width + (size_t)x) * 3;
    p[0] = mix(p[0], c.r, alpha);
    p[1] = mix(p[1], c.g, alpha);
    p[2] = mix(p[2], c.b, alpha);
}

void raster_fill(raster *r, int x, int y, int w, int h, raster_colour c, int alpha)
{
    int x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    int x1 = x + w > r->width ? r->width : x + w;
    int y1 = y + h > r->height ? r->height : y + h;
    for (int j = y0; j < y1; j++)
        for (int i = x0; i < x1; i++) raster_blend(r, i, j, c, alpha);
}
