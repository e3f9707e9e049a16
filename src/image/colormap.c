/* The magma colour map: dark for quiet, bright for loud, with lightness
 * rising evenly so equal dB steps look like equal steps.
 *
 * Layout: 17 control points, entries 0, 16, 32, ..., 240 and 255 of
 * matplotlib's 256-entry table, in 8-bit RGB; colours between them are
 * interpolated linearly (within 1/255 of the full table).
 * Reference: van der Walt & Smith, "mpl colourmaps" (BIDS/colormap,
 * colormaps.py, CC0), the table matplotlib ships as _magma_data.
 * Threading: a pure function of its argument.
 */
#include "raster.h"

static const uint8_t magma[17][3] = {
    {0, 0, 4},       {10, 8, 34},     {29, 17, 71},    {54, 16, 107},   {81, 18, 124},
    {106, 28, 129},  {131, 38, 129},  {156, 46, 127},  {183, 55, 121},  {208, 65, 111},
    {231, 82, 99},   {245, 107, 92},  {252, 137, 97},  {254, 167, 114}, {254, 196, 136},
    {253, 226, 163}, {252, 253, 191},
};

raster_colour image_colormap(float t)
{
    if (!(t > 0.0f)) t = 0.0f; /* also catches NaN */
    if (t > 1.0f) t = 1.0f;
    /* Control point i sits at table entry 16 * i, the last at 255. */
    float entry = t * 255.0f;
    int i = entry >= 240.0f ? 15 : (int)(entry / 16.0f);
    float lo = 16.0f * (float)i, hi = i == 15 ? 255.0f : lo + 16.0f;
    float u = (entry - lo) / (hi - lo);
    raster_colour c;
    c.r = (uint8_t)(magma[i][0] + u * (magma[i + 1][0] - magma[i][0]) + 0.5f);
    c.g = (uint8_t)(magma[i][1] + u * (magma[i + 1][1] - magma[i][1]) + 0.5f);
    c.b = (uint8_t)(magma[i][2] + u * (magma[i + 1][2] - magma[i][2]) + 0.5f);
    return c;
}
