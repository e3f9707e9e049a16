/* Antialiased text through FreeType: UTF-8 strings drawn in one colour,
 * horizontally or turned a quarter turn for a vertical axis title.
 *
 * Layout: a string is first rendered into a coverage mask (line_height rows
 * of text_width bytes, 0..255), glyphs placed on the baseline with kerning,
 * then the mask is blended onto the raster, rotated if asked.
 * Reference: FreeType tutorial, step 1 and 2 (FT_Set_Pixel_Sizes,
 * FT_Load_Char with FT_LOAD_RENDER, bitmap_left/bitmap_top placement,
 * FT_Get_Kerning); the light hinting target keeps glyph shapes.
 * Threading: each font owns its FT_Library, so fonts on different threads
 * are independent; one font is used by one thread at a time.
 */
#include "raster.h"

#include <ft2build.h>
#include FT_FREETYPE_H

#include <stdlib.h>
#include <string.h>

struct image_font {
    FT_Library library;
    FT_Face face;
    int ascent, descent, cap_height; /* pixels; descent counts down from the baseline */
};

static const FT_Int32 load_flags = FT_LOAD_RENDER | FT_LOAD_TARGET_LIGHT;

image_font *image_font_load(const char *path, int pixel_size)
{
    image_font *f = calloc(1, sizeof *f);
    if (!f || !path) goto fail;
    if (FT_Init_FreeType(&f->library)) goto fail;
    if (FT_New_Face(f->library, path, 0, &f->face)) goto fail;
    if (FT_Set_Pixel_Sizes(f->face, 0, (FT_UInt)pixel_size)) goto fail;
    const FT_Size_Metrics *m = &f->face->size->metrics;
    f->ascent = (int)((m->ascender + 63) >> 6);
    f->descent = (int)((-m->descender + 63) >> 6);
    f->cap_height = pixel_size * 7 / 10;
    if (!FT_Load_Char(f->face, 'H', load_flags)) f->cap_height = f->face->glyph->bitmap_top;
    return f;
fail:
    image_font_free(f);
    return NULL;
}

void image_font_free(image_font *f)
{
    if (!f) return;
    if (f->face) FT_Done_Face(f->face);
    if (f->library) FT_Done_FreeType(f->library);
    free(f);
}

int image_font_line_height(const image_font *f) { return f->ascent + f->descent; }
int image_font_ascent(const image_font *f) { return f->ascent; }
int image_font_cap_height(const image_font *f) { return f->cap_height; }

/* Next code point of s, advancing *i; malformed bytes become U+FFFD. */
static unsigned long next_code_point(const char *s, size_t *i)
{
    const unsigned char *u = (const unsigned char *)s + *i;
    unsigned long c = u[0];
    int extra = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (extra < 0) {
        *i += 1;
        return 0xFFFD;
    }
    c &= extra == 0 ? 0x7F : (0x3Fu >> extra);
    for (int k = 1; k <= extra; k++) {
        if ((u[k] & 0xC0) != 0x80) {
            *i += (size_t)k;
            return 0xFFFD;
        }
        c = (c << 6) | (u[k] & 0x3F);
    }
    *i += (size_t)extra + 1;
    return c;
}

/* Walk the glyphs of s; with a mask, draw them into it. Returns the advance
 * width in pixels. */
static int layout_text(image_font *f, const char *s, uint8_t *mask, int mask_w)
{
    FT_Face face = f->face;
    FT_Pos pen = 0; /* 26.6 fixed point */
    FT_UInt previous = 0;
    for (size_t i = 0; s[i];) {
        FT_UInt glyph = FT_Get_Char_Index(face, next_code_point(s, &i));
        if (previous && glyph && FT_HAS_KERNING(face)) {
            FT_Vector kern;
            if (!FT_Get_Kerning(face, previous, glyph, FT_KERNING_DEFAULT, &kern)) pen += kern.x;
        }
        previous = glyph;
        if (FT_Load_Glyph(face, glyph, load_flags)) continue;
        FT_GlyphSlot g = face->glyph;
        if (mask && g->bitmap.pixel_mode == FT_PIXEL_MODE_GRAY) {
            int x0 = (int)((pen + 32) >> 6) + g->bitmap_left;
            int y0 = f->ascent - g->bitmap_top;
            int height = image_font_line_height(f);
            for (int y = 0; y < (int)g->bitmap.rows; y++) {
                if (y0 + y < 0 || y0 + y >= height) continue;
                const uint8_t *src = g->bitmap.buffer + y * g->bitmap.pitch;
                uint8_t *dst = mask + (size_t)(y0 + y) * (size_t)mask_w;
                for (int x = 0; x < (int)g->bitmap.width; x++) {
                    if (x0 + x < 0 || x0 + x >= mask_w) continue;
                    int sum = dst[x0 + x] + src[x];
                    dst[x0 + x] = (uint8_t)(sum > 255 ? 255 : sum);
                }
            }
        }
        pen += g->advance.x;
    }
    return (int)((pen + 63) >> 6);
}

int image_font_text_width(image_font *f, const char *utf8)
{
    return layout_text(f, utf8, NULL, 0);
}

void image_font_draw(raster *r, image_font *f, int x, int y, const char *utf8, raster_colour c,
                     int vertical)
{
    int w = image_font_text_width(f, utf8) + 2; /* room for a glyph overhanging its advance */
    int h = image_font_line_height(f);
    if (w <= 2 || h <= 0) return;
    uint8_t *mask = calloc((size_t)w * (size_t)h, 1);
    if (!mask) return; /* text is decoration: a picture without it beats no picture */
    layout_text(f, utf8, mask, w);
    for (int my = 0; my < h; my++)
        for (int mx = 0; mx < w; mx++) {
            int alpha = mask[(size_t)my * (size_t)w + (size_t)mx];
            if (!alpha) continue;
            if (vertical)
                raster_blend(r, x + my, y + (w - 3) - mx, c, alpha);
            else
                raster_blend(r, x + mx, y + my, c, alpha);
        }
    free(mask);
}
