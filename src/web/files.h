/* Small file helpers the job store and the job runner share: folders the
 * server made, removed or measured without following links; whole small
 * text files read and written (written through a temporary file and a
 * rename, so a reader never sees half of one). */
#ifndef D2M_WEB_FILES_H
#define D2M_WEB_FILES_H

#include <stddef.h>

/* Removes path (a file, or a folder at most a few levels deep). */
void files_remove_tree(const char *path, int depth);

/* Bytes under path (a file or a folder), links not followed. */
long long files_tree_bytes(const char *path, int depth);

/* The whole file as a NUL-terminated string (malloc'ed); NULL when it is
 * missing, unreadable or longer than max bytes. */
char *files_read_text(const char *path, size_t max);

/* All n bytes of data to fd (a file, pipe or socket), retrying short and
 * interrupted writes. Returns 0 or -1 (errno set). */
int files_write_all(int fd, const char *data, size_t n);

/* Writes text to path through path.tmp and a rename. Returns 0 or -1. */
int files_write_text_atomic(const char *path, const char *text);

#endif
