/* PNG output through libpng: 8-bit RGB, no interlacing, default compression.
 *
 * Layout: writes raster rows top to bottom as they are stored.
 * Reference: libpng manual, "IV. Writing" (png_create_write_struct,
 * png_init_io, png_write_row); errors arrive by longjmp from our error
 * handler, which keeps libpng's message for the d2m_error.
 * Threading: reentrant; each call has its own libpng state.
 */
#include "raster.h"

#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    char message[200];
} png_failure;

/* A half-written picture would look complete to a browser; devices such as
 * /dev/full are left alone. */
static void remove_partial(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) remove(path);
}

static void on_error(png_structp png, png_const_charp message)
{
    png_failure *failure = png_get_error_ptr(png);
    snprintf(failure->message, sizeof failure->message, "%s", message);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp message)
{
    (void)png;
    (void)message; /* warnings do not stop the write and users cannot act on them */
}

int image_write_png(const char *path, const raster *r, d2m_error *err)
{
    png_failure failure = {{0}};
    png_structp png = NULL;
    png_infop info = NULL;
    int rc = 0;
    FILE *f = fopen(path, "wb");
    if (!f) return d2m_fail(err, D2M_ERR_IO, "cannot write %s: %s", path, strerror(errno));

    png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &failure, on_error, on_warning);
    if (png) info = png_create_info_struct(png);
    if (!info) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "out of memory writing %s", path);
        goto fail;
    }
    /* Nothing below changes png, info, f or rc before a longjmp can land here. */
    if (setjmp(png_jmpbuf(png))) {
        rc = d2m_fail(err, D2M_ERR_IO, "cannot write %s: %s", path, failure.message);
        goto fail;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)r->width, (png_uint_32)r->height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < r->height; y++)
        png_write_row(png, r->rgb + (size_t)y * (size_t)r->width * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    if (fclose(f) != 0) { /* the last buffered bytes may fail here, e.g. disk full */
        rc = d2m_fail(err, D2M_ERR_IO, "cannot write %s: %s", path, strerror(errno));
        remove_partial(path);
        return rc;
    }
    return 0;

fail:
    png_destroy_write_struct(png ? &png : NULL, info ? &info : NULL);
    fclose(f);
    remove_partial(path);
    return rc;
}
