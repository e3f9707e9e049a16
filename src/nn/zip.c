/* Strict ZIP reader for PyTorch archives (torch.save's zip format, written by
 * miniz inside torch): read the end-of-central-directory record (zip64 when
 * its fields are saturated), walk the central directory, check each local
 * header against it, and index the records by name. Only stored records
 * (method 0) are accepted: torch never compresses, so that the data can be
 * mapped in place; deflate would need zlib for no real file.
 *
 * torch sets general-purpose flag bit 3 (sizes and CRC in a data descriptor
 * after the data, zeros in the local header) and pads the local header's
 * extra field ("FB" block) so each record's data starts on a 64-byte
 * boundary. The central directory is therefore the only source of sizes.
 *
 * Layout reference: PKWARE APPNOTE.TXT 6.3 sections 4.3.7 (local header),
 * 4.3.12 (central directory), 4.3.14-16 (zip64 and end records).
 * Threading: see zip.h.
 */
#include "zip.h"

#include <stdlib.h>
#include <string.h>

enum {
    LOCAL_SIGNATURE = 0x04034b50,
    CENTRAL_SIGNATURE = 0x02014b50,
    END_SIGNATURE = 0x06054b50,
    ZIP64_END_SIGNATURE = 0x06064b50,
    ZIP64_LOCATOR_SIGNATURE = 0x07064b50,
    LOCAL_HEADER_SIZE = 30,
    CENTRAL_HEADER_SIZE = 46,
    END_SIZE = 22,
    ZIP64_END_SIZE = 56,
    ZIP64_LOCATOR_SIZE = 20,
    FLAG_ENCRYPTED = 0x0001,
    FLAG_STRONG_ENCRYPTION = 0x0040,
};

static uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

/* Printable form of a record name for messages (names come from the file). */
static const char *shown_name(char *buf, size_t size, const unsigned char *name, size_t len)
{
    size_t j = 0;
    for (size_t i = 0; i < len && j + 1 < size; i++)
        buf[j++] = name[i] >= 0x20 && name[i] < 0x7f ? (char)name[i] : '?';
    buf[j] = '\0';
    return buf;
}

static void make_crc_tables(uint32_t table[8][256])
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        table[0][i] = c;
    }
    for (int i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++) table[t][i] = table[0][table[t - 1][i] & 0xff] ^ (table[t - 1][i] >> 8);
}

uint32_t zip_crc32(const zip_archive *zip, uint32_t crc, const unsigned char *p, size_t n)
{
    const uint32_t(*t)[256] = zip->crc_table;
    crc = ~crc;
    while (n >= 8) {
        uint32_t lo = crc ^ get32(p), hi = get32(p + 4);
        crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
              t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) crc = t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

static int compare_records(const void *a, const void *b)
{
    const zip_record *x = a, *y = b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    if (c) return c;
    return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

/* The end of central directory: where the central directory lies and how
 * many records it holds. */
typedef struct {
    uint64_t count, cd_offset, cd_size;
    size_t cd_limit; /* the central directory must end by here */
} directory_info;

static int find_directory(directory_info *info, const unsigned char *b, size_t n, d2m_error *err)
{
    if (n < END_SIZE) return d2m_fail(err, D2M_ERR_FORMAT, "zip: %zu bytes, too short for an archive", n);
    /* The end record is last, followed only by its comment (up to 65535 bytes). */
    size_t end = SIZE_MAX;
    size_t lowest = n - END_SIZE > 65535 ? n - END_SIZE - 65535 : 0;
    for (size_t p = n - END_SIZE + 1; p-- > lowest;) {
        if (get32(b + p) == END_SIGNATURE && p + END_SIZE + get16(b + p + 20) == n) {
            end = p;
            break;
        }
    }
    if (end == SIZE_MAX)
        return d2m_fail(err, D2M_ERR_FORMAT, "zip: no end-of-central-directory record (truncated file?)");
    const unsigned char *e = b + end;
    if (get16(e + 4) != 0 || get16(e + 6) != 0 || get16(e + 8) != get16(e + 10))
        return d2m_fail(err, D2M_ERR_FORMAT, "zip: multi-disk archives are not supported");
    info->count = get16(e + 10);
    info->cd_size = get32(e + 12);
    info->cd_offset = get32(e + 16);
    info->cd_limit = end;
    if (info->count != 0xffff && info->cd_size != 0xffffffffu && info->cd_offset != 0xffffffffu)
        return 0;

    /* Saturated fields: the zip64 locator sits just before the end record. */
    if (end < ZIP64_LOCATOR_SIZE || get32(b + end - ZIP64_LOCATOR_SIZE) != ZIP64_LOCATOR_SIGNATURE)
        return d2m_fail(err, D2M_ERR_FORMAT, "zip: end record needs zip64 but has no zip64 locator");
    const unsigned char *loc = b + end - ZIP64_LOCATOR_SIZE;
    uint64_t z64 = get64(loc + 8);
    if (get32(loc + 4) != 0 || get32(loc + 16) != 1)
        return d2m_fail(err, D2M_ERR_FORMAT, "zip: multi-disk archives are not supported");
    if (z64 > end - ZIP64_LOCATOR_SIZE || end - ZIP64_LOCATOR_SIZE - z64 < ZIP64_END_SIZE ||
        get32(b + z64) != ZIP64_END_SIGNATURE)
        return d2m_fail(err, D2M_ERR_FORMAT, "zip: zip64 end record missing or out of place");
    const unsigned char *e64 = b + z64;
    if (get32(e64 + 16) != 0 || get32(e64 + 20) != 0 || get64(e64 + 24) != get64(e64 + 32))
        return d2m_fail(err, D2M_ERR_FORMAT, "zip: multi-disk archives are not supported");
    info->count = get64(e64 + 32);
    info->cd_size = get64(e64 + 40);
    info->cd_offset = get64(e64 + 48);
    info->cd_limit = (size_t)z64;
    return 0;
}

/* Replace saturated 32-bit fields from the zip64 extended-information extra
 * field (id 1), which holds, in this order, only the fields that are saturated. */
static int read_zip64_extra(uint64_t *size, uint64_t *csize, uint64_t *offset, const unsigned char *x,
                            size_t len, const char *name, d2m_error *err)
{
    while (len >= 4) {
        uint16_t id = get16(x), sz = get16(x + 2);
        if ((size_t)sz + 4 > len) break;
        if (id == 1) {
            const unsigned char *p = x + 4;
            size_t left = sz;
            uint64_t *fields[3] = {size, csize, offset};
            for (int i = 0; i < 3; i++) {
                if (*fields[i] != 0xffffffffu) continue;
                if (left < 8) break;
                *fields[i] = get64(p);
                p += 8;
                left -= 8;
            }
            break;
        }
        x += 4 + sz;
        len -= 4 + (size_t)sz;
    }
    if (*size == 0xffffffffu || *csize == 0xffffffffu || *offset == 0xffffffffu)
        return d2m_fail(err, D2M_ERR_FORMAT, "zip: record %s: zip64 sizes missing", name);
    return 0;
}

int zip_open(zip_archive *zip, const unsigned char *b, size_t n, d2m_error *err)
{
    zip->records = NULL;
    zip->count = 0;
    make_crc_tables(zip->crc_table);
    char shown[96];
    directory_info dir = {0};
    int rc = find_directory(&dir, b, n, err);
    if (rc) return rc;
    if (dir.cd_offset > dir.cd_limit || dir.cd_size > dir.cd_limit - dir.cd_offset)
        return d2m_fail(err, D2M_ERR_FORMAT, "zip: central directory (offset %llu, %llu bytes) lies past the end",
                        (unsigned long long)dir.cd_offset, (unsigned long long)dir.cd_size);
    /* Each entry takes at least 46 bytes: this bounds the allocation by the input. */
    if (dir.count == 0 || dir.count > dir.cd_size / CENTRAL_HEADER_SIZE)
        return d2m_fail(err, D2M_ERR_FORMAT, "zip: %llu records cannot fit a %llu-byte central directory",
                        (unsigned long long)dir.count, (unsigned long long)dir.cd_size);
    zip->records = calloc((size_t)dir.count, sizeof *zip->records);
    if (!zip->records) return d2m_fail(err, D2M_ERR_NOMEM, "zip: out of memory for %llu records",
                                       (unsigned long long)dir.count);

    const size_t data_end = (size_t)dir.cd_offset; /* records lie before the directory */
    size_t pos = (size_t)dir.cd_offset, cd_end = (size_t)(dir.cd_offset + dir.cd_size);
    for (uint64_t i = 0; i < dir.count; i++) {
        const unsigned char *c = b + pos;
        if (cd_end - pos < CENTRAL_HEADER_SIZE || get32(c) != CENTRAL_SIGNATURE) {
            rc = d2m_fail(err, D2M_ERR_FORMAT, "zip: central directory entry %llu is damaged",
                          (unsigned long long)i);
            goto fail;
        }
        uint16_t flags = get16(c + 8), method = get16(c + 10);
        uint64_t csize = get32(c + 20), size = get32(c + 24), offset = get32(c + 42);
        size_t name_len = get16(c + 28), extra_len = get16(c + 30), comment_len = get16(c + 32);
        if (cd_end - pos - CENTRAL_HEADER_SIZE < name_len + extra_len + comment_len || name_len == 0) {
            rc = d2m_fail(err, D2M_ERR_FORMAT, "zip: central directory entry %llu is damaged",
                          (unsigned long long)i);
            goto fail;
        }
        const unsigned char *name = c + CENTRAL_HEADER_SIZE;
        shown_name(shown, sizeof shown, name, name_len);
        if (get16(c + 34) != 0) {
            rc = d2m_fail(err, D2M_ERR_FORMAT, "zip: record %s is on another disk", shown);
            goto fail;
        }
        if (flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION)) {
            rc = d2m_fail(err, D2M_ERR_FORMAT, "zip: record %s is encrypted", shown);
            goto fail;
        }
        if (method != 0) {
            rc = d2m_fail(err, D2M_ERR_FORMAT,
                          "zip: record %s uses compression method %u; only stored (uncompressed) "
                          "records are supported, as torch.save writes them", shown, method);
            goto fail;
        }
        rc = read_zip64_extra(&size, &csize, &offset, name + name_len, extra_len, shown, err);
        if (rc) goto fail;
        if (csize != size) {
            rc = d2m_fail(err, D2M_ERR_FORMAT, "zip: stored record %s has sizes %llu and %llu", shown,
                          (unsigned long long)csize, (unsigned long long)size);
            goto fail;
        }

        /* The local header must agree with the directory. */
        if (offset > data_end || data_end - offset < LOCAL_HEADER_SIZE ||
            get32(b + offset) != LOCAL_SIGNATURE) {
            rc = d2m_fail(err, D2M_ERR_FORMAT, "zip: record %s: no local header at offset %llu", shown,
                          (unsigned long long)offset);
            goto fail;
        }
        const unsigned char *l = b + offset;
        size_t local_name = get16(l + 26), local_extra = get16(l + 28);
        if (get16(l + 8) != method || local_name != name_len ||
            data_end - offset - LOCAL_HEADER_SIZE < local_name ||
            memcmp(l + LOCAL_HEADER_SIZE, name, name_len) != 0) {
            rc = d2m_fail(err, D2M_ERR_FORMAT, "zip: record %s: local header disagrees with the directory",
                          shown);
            goto fail;
        }
        if (!(get16(l + 6) & 0x0008) && get32(l + 14) != get32(c + 16)) {
            rc = d2m_fail(err, D2M_ERR_FORMAT, "zip: record %s: local header disagrees with the directory",
                          shown);
            goto fail;
        }
        size_t start = (size_t)offset + LOCAL_HEADER_SIZE + local_name + local_extra;
        if (start > data_end || size > data_end - start) {
            rc = d2m_fail(err, D2M_ERR_FORMAT,
                          "zip: record %s (%llu bytes at offset %zu) runs past the end of the data", shown,
                          (unsigned long long)size, start);
            goto fail;
        }
        zip_record *r = &zip->records[i];
        r->name = name;
        r->name_len = name_len;
        r->data = b + start;
        r->size = (size_t)size;
        r->crc32 = get32(c + 16);
        pos += CENTRAL_HEADER_SIZE + name_len + extra_len + comment_len;
    }
    if (pos != cd_end) {
        rc = d2m_fail(err, D2M_ERR_FORMAT, "zip: central directory has %zu bytes after its %llu entries",
                      cd_end - pos, (unsigned long long)dir.count);
        goto fail;
    }
    zip->count = (int)dir.count; /* dir.count <= n / 46 fits an int for any buffer we accept */
    if ((uint64_t)zip->count != dir.count) {
        rc = d2m_fail(err, D2M_ERR_FORMAT, "zip: too many records");
        goto fail;
    }
    qsort(zip->records, (size_t)zip->count, sizeof *zip->records, compare_records);
    for (int i = 1; i < zip->count; i++) {
        if (compare_records(&zip->records[i - 1], &zip->records[i]) == 0) {
            rc = d2m_fail(err, D2M_ERR_FORMAT, "zip: record %s appears twice",
                          shown_name(shown, sizeof shown, zip->records[i].name, zip->records[i].name_len));
            goto fail;
        }
    }
    return 0;
fail:
    zip_close(zip);
    return rc;
}

zip_record *zip_find(const zip_archive *zip, const char *name)
{
    zip_record key = {.name = (const unsigned char *)name, .name_len = strlen(name)};
    return bsearch(&key, zip->records, (size_t)zip->count, sizeof key, compare_records);
}

int zip_verify(zip_archive *zip, zip_record *r, d2m_error *err)
{
    if (r->verified) return 0;
    uint32_t crc = zip_crc32(zip, 0, r->data, r->size);
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    if (crc != r->crc32) {
        char shown[96];
        return d2m_fail(err, D2M_ERR_FORMAT, "zip: record %s is damaged (CRC-32 %08x, expected %08x)",
                        shown_name(shown, sizeof shown, r->name, r->name_len), crc, r->crc32);
    }
#else
    (void)crc;
    (void)err;
#endif
    r->verified = 1;
    return 0;
}

void zip_close(zip_archive *zip)
{
    if (!zip) return;
    free(zip->records);
    zip->records = NULL;
    zip->count = 0;
}
