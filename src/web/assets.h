/* The page's files (the web folder), embedded at build time by cmake/web.cmake into a
 * generated web_assets.c: one read-only byte array per file. */
#ifndef D2M_WEB_ASSETS_H
#define D2M_WEB_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *name;           /* file name under web/, e.g. "app.js" */
    const unsigned char *bytes; /* (size) */
    size_t size;
} web_asset;

extern const web_asset web_assets[];
extern const int web_asset_count;

#endif
