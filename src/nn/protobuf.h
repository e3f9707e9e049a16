/* A minimal, strict reader of the protobuf wire format: enough to walk an
 * ONNX file. It never allocates and never copies: a field's payload is a
 * view into the caller's bytes, which must outlive every reader over them.
 *
 * Strict means: every length is checked against the bytes that remain,
 * varints longer than 10 bytes or wider than 64 bits are errors, field
 * number 0 and the group wire types (3, 4) and the unused ones (6, 7) are
 * errors, and nesting deeper than PROTOBUF_MAX_DEPTH is an error.
 *
 * Reference: https://protobuf.dev/programming-guides/encoding/
 * Thread safety: a reader is a cursor owned by one thread; readers over the
 * same bytes on different threads are independent.
 */
#ifndef D2M_PROTOBUF_H
#define D2M_PROTOBUF_H

#include <stddef.h>
#include <stdint.h>

enum {
    PROTOBUF_VARINT = 0,
    PROTOBUF_FIXED64 = 1,
    PROTOBUF_LEN = 2, /* bytes, strings, embedded messages, packed repeated */
    PROTOBUF_FIXED32 = 5,
};

enum { PROTOBUF_MAX_DEPTH = 16 };

/* Errors (negative; protobuf_strerror describes them). */
enum {
    PROTOBUF_ERR_TRUNCATED = -1,    /* a varint, fixed field or length runs past the end */
    PROTOBUF_ERR_VARINT = -2,       /* a varint longer than 10 bytes or wider than 64 bits */
    PROTOBUF_ERR_FIELD_NUMBER = -3, /* field number 0 or above 2^29 - 1 */
    PROTOBUF_ERR_WIRE_TYPE = -4,    /* wire type 3, 4, 6 or 7 */
    PROTOBUF_ERR_TOO_DEEP = -5,     /* messages nested deeper than PROTOBUF_MAX_DEPTH */
};

typedef struct {
    const unsigned char *pos, *end; /* the unread part of this message */
    const unsigned char *base;      /* the start of the outermost bytes, for offsets */
    int depth;                      /* 0 for the outermost message */
} protobuf_reader;

typedef struct {
    uint32_t number;           /* field number, 1 .. 2^29 - 1 */
    int wire_type;             /* PROTOBUF_VARINT ... PROTOBUF_FIXED32 */
    uint64_t value;            /* VARINT, FIXED64, FIXED32 (little-endian decoded) */
    const unsigned char *data; /* LEN: the payload (a view), size bytes */
    size_t size;
} protobuf_field;

/* A reader over a whole buffer (the outermost message). */
void protobuf_init(protobuf_reader *r, const unsigned char *bytes, size_t n);

/* Read the next field. Returns 1 when a field was read, 0 at the end of the
 * message, or a PROTOBUF_ERR_* code; after an error the reader stays at the
 * start of the bad field (protobuf_offset says where). */
int protobuf_next(protobuf_reader *r, protobuf_field *f);

/* A reader over the payload of a LEN field, one level deeper. Returns 0, or
 * PROTOBUF_ERR_WIRE_TYPE when f is not LEN, PROTOBUF_ERR_TOO_DEEP. */
int protobuf_enter(protobuf_reader *child, const protobuf_reader *parent, const protobuf_field *f);

/* Byte offset of the reader's position from the outermost start. */
size_t protobuf_offset(const protobuf_reader *r);

/* Read one varint from [*pos, end), advancing *pos; for packed repeated
 * fields. Returns 0, PROTOBUF_ERR_TRUNCATED or PROTOBUF_ERR_VARINT. */
int protobuf_read_varint(const unsigned char **pos, const unsigned char *end, uint64_t *value);

/* Little-endian loads from unaligned bytes. */
uint32_t protobuf_le32(const unsigned char *p);
uint64_t protobuf_le64(const unsigned char *p);

/* A short static description of a PROTOBUF_ERR_* code. */
const char *protobuf_strerror(int code);

#endif
