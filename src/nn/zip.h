/* A strict reader for the ZIP archives torch.save writes (a .th checkpoint):
 * every record stored uncompressed (method 0), read in place from a buffer
 * the caller keeps alive. Compressed, encrypted, multi-disk or inconsistent
 * archives are refused with a message naming the record.
 *
 * Ownership: a zip_archive borrows the archive bytes and owns only its record
 * index; zip_close releases the index. Thread safety: an open archive may be
 * read from several threads except zip_verify, which marks records checked.
 */
#ifndef D2M_ZIP_H
#define D2M_ZIP_H

#include "base/base.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const unsigned char *name; /* (name_len) bytes inside the archive, not NUL-terminated */
    size_t name_len;
    const unsigned char *data; /* (size) bytes inside the archive */
    size_t size;
    uint32_t crc32;            /* as the central directory states it */
    int verified;              /* zip_verify has checked the CRC */
} zip_record;

typedef struct {
    zip_record *records;       /* (count) sorted by name, names unique */
    int count;
    uint32_t crc_table[8][256]; /* slice-by-8 CRC-32 tables */
} zip_archive;

/* Index the archive in bytes[0, n). Every record's data is checked to lie
 * inside the archive, before the central directory. Returns 0,
 * D2M_ERR_FORMAT (err says what and where) or D2M_ERR_NOMEM. On failure the
 * archive needs no zip_close (calling it is harmless). */
int zip_open(zip_archive *zip, const unsigned char *bytes, size_t n, d2m_error *err);

/* The record called name (exact, case-sensitive match), or NULL. */
zip_record *zip_find(const zip_archive *zip, const char *name);

/* Check the record's CRC-32 once (later calls are free). Returns 0 or
 * D2M_ERR_FORMAT naming the record. Fuzzing builds
 * (FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION) compute it but accept a mismatch,
 * so mutated inputs reach the parsers behind the archive. */
int zip_verify(zip_archive *zip, zip_record *record, d2m_error *err);

/* Update a CRC-32 (IEEE, as zip and zlib use; start with 0). */
uint32_t zip_crc32(const zip_archive *zip, uint32_t crc, const unsigned char *p, size_t n);

void zip_close(zip_archive *zip);

#endif
