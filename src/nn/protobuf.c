/* Strict protobuf wire-format reader (see protobuf.h). A message is a
 * sequence of (tag varint, payload) pairs, tag = field_number << 3 | wire
 * type; payloads are a varint, 8 or 4 little-endian bytes, or a varint
 * length followed by that many bytes. Nothing here allocates.
 * Reference: https://protobuf.dev/programming-guides/encoding/
 * Thread safety: stateless apart from the caller's reader. */
#include "protobuf.h"

enum { MAX_FIELD_NUMBER = (1 << 29) - 1, MAX_VARINT_BYTES = 10 };

void protobuf_init(protobuf_reader *r, const unsigned char *bytes, size_t n)
{
    r->pos = bytes;
    r->end = bytes + n;
    r->base = bytes;
    r->depth = 0;
}

size_t protobuf_offset(const protobuf_reader *r) { return (size_t)(r->pos - r->base); }

uint32_t protobuf_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t protobuf_le64(const unsigned char *p)
{
    return (uint64_t)protobuf_le32(p) | (uint64_t)protobuf_le32(p + 4) << 32;
}

int protobuf_read_varint(const unsigned char **pos, const unsigned char *end, uint64_t *value)
{
    const unsigned char *p = *pos;
    uint64_t v = 0;
    for (int i = 0; i < MAX_VARINT_BYTES; i++) {
        if (p == end) return PROTOBUF_ERR_TRUNCATED;
        unsigned char b = *p++;
        /* The 10th byte holds bit 63 only: anything more overflows 64 bits. */
        if (i == MAX_VARINT_BYTES - 1 && b > 1) return PROTOBUF_ERR_VARINT;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *pos = p;
            *value = v;
            return 0;
        }
    }
    return PROTOBUF_ERR_VARINT;
}

int protobuf_next(protobuf_reader *r, protobuf_field *f)
{
    if (r->pos == r->end) return 0;
    const unsigned char *p = r->pos;
    uint64_t tag;
    int rc = protobuf_read_varint(&p, r->end, &tag);
    if (rc) return rc;
    uint64_t number = tag >> 3;
    if (number == 0 || number > MAX_FIELD_NUMBER) return PROTOBUF_ERR_FIELD_NUMBER;
    f->number = (uint32_t)number;
    f->wire_type = (int)(tag & 7);
    f->value = 0;
    f->data = NULL;
    f->size = 0;
    switch (f->wire_type) {
    case PROTOBUF_VARINT:
        rc = protobuf_read_varint(&p, r->end, &f->value);
        if (rc) return rc;
        break;
    case PROTOBUF_FIXED64:
        if ((size_t)(r->end - p) < 8) return PROTOBUF_ERR_TRUNCATED;
        f->value = protobuf_le64(p);
        p += 8;
        break;
    case PROTOBUF_FIXED32:
        if ((size_t)(r->end - p) < 4) return PROTOBUF_ERR_TRUNCATED;
        f->value = protobuf_le32(p);
        p += 4;
        break;
    case PROTOBUF_LEN: {
        uint64_t len;
        rc = protobuf_read_varint(&p, r->end, &len);
        if (rc) return rc;
        if (len > (uint64_t)(r->end - p)) return PROTOBUF_ERR_TRUNCATED;
        f->data = p;
        f->size = (size_t)len;
        p += len;
        break;
    }
    default: return PROTOBUF_ERR_WIRE_TYPE;
    }
    r->pos = p;
    return 1;
}

int protobuf_enter(protobuf_reader *child, const protobuf_reader *parent, const protobuf_field *f)
{
    if (f->wire_type != PROTOBUF_LEN) return PROTOBUF_ERR_WIRE_TYPE;
    if (parent->depth + 1 > PROTOBUF_MAX_DEPTH) return PROTOBUF_ERR_TOO_DEEP;
    child->pos = f->data;
    child->end = f->data + f->size;
    child->base = parent->base;
    child->depth = parent->depth + 1;
    return 0;
}

const char *protobuf_strerror(int code)
{
    switch (code) {
    case PROTOBUF_ERR_TRUNCATED: return "a field runs past the end of its message";
    case PROTOBUF_ERR_VARINT: return "a varint is longer than 10 bytes or wider than 64 bits";
    case PROTOBUF_ERR_FIELD_NUMBER: return "a field number is 0 or too large";
    case PROTOBUF_ERR_WIRE_TYPE: return "an unsupported wire type";
    case PROTOBUF_ERR_TOO_DEEP: return "messages nested too deeply";
    default: return "not a protobuf error";
    }
}
