/* A small, strict unpickler for the data.pkl of a PyTorch checkpoint (pickle
 * protocol 2, as torch.save writes it). It runs no code: the few callables a
 * Demucs checkpoint needs are recognised by name and built as plain values,
 * and any other global, opcode or call is an error naming it and its offset.
 *
 * Supported opcodes (protocol 2 as CPython's pickler writes plain data):
 *   PROTO (must come first, protocol 2), STOP, MARK, NONE, NEWTRUE, NEWFALSE,
 *   BININT, BININT1, BININT2, LONG1 (up to 8 bytes), BINFLOAT, BINUNICODE,
 *   EMPTY_TUPLE, TUPLE, TUPLE1, TUPLE2, TUPLE3, EMPTY_LIST, APPEND, APPENDS,
 *   EMPTY_DICT, SETITEM, SETITEMS, BINPUT, LONG_BINPUT, BINGET, LONG_BINGET,
 *   GLOBAL, REDUCE, BINPERSID.
 * Allowed globals:
 *   collections OrderedDict         REDUCE with () -> an empty dict
 *   torch._utils _rebuild_tensor_v2 REDUCE (storage, offset, size, stride,
 *                                   requires_grad, {}) -> a tensor reference
 *   fractions Fraction              REDUCE ('n', 'n/d' or 'a.b') or (n, d)
 *   torch HalfStorage, torch FloatStorage   storage types inside BINPERSID
 *   demucs.htdemucs HTDemucs, demucs.hdemucs HDemucs, demucs.demucs Demucs
 *                                   model classes: opaque names, never called
 * BINPERSID takes ('storage', storage type, key, location, numel).
 *
 * Limits against hostile input: at most PICKLE_MAX_MARKS open MARKs,
 * containers nested at most PICKLE_MAX_DEPTH deep, memo indices below the
 * pickle's length, strings valid UTF-8 without NUL. Nothing recurses, and
 * memory stays below about 48 bytes per input byte (one 32-byte value and a
 * stack slot per opcode, the memo, container arrays that double): callers
 * cap the pickle's length (weights_th.c: 4 MiB).
 *
 * Ownership: a pickle_doc owns every value reachable from its root;
 * pickle_free releases them all. Values may be shared (the memo) and, in a
 * hostile pickle, cyclic: walk them by path, never recursively.
 * Thread safety: a loaded document is read-only.
 */
#ifndef D2M_PICKLE_H
#define D2M_PICKLE_H

#include "base/base.h"

#include <stddef.h>
#include <stdint.h>

enum { PICKLE_MAX_MARKS = 64, PICKLE_MAX_DEPTH = 64, PICKLE_MAX_DIMS = 8 };

typedef enum {
    PICKLE_NONE,
    PICKLE_BOOL,     /* i: 0 or 1 */
    PICKLE_INT,      /* i */
    PICKLE_FLOAT,    /* f */
    PICKLE_STR,      /* str, len: UTF-8, NUL-terminated */
    PICKLE_TUPLE,    /* items, n */
    PICKLE_LIST,     /* items, n */
    PICKLE_DICT,     /* items: n key/value pairs as items[2k], items[2k+1], in insertion order */
    PICKLE_GLOBAL,   /* str: "module name"; global_id */
    PICKLE_STORAGE,  /* storage */
    PICKLE_TENSOR,   /* *tensor */
    PICKLE_FRACTION, /* fraction: numerator / denominator (> 0) */
} pickle_kind;

typedef enum {
    PICKLE_GLOBAL_ORDERED_DICT,
    PICKLE_GLOBAL_REBUILD_TENSOR,
    PICKLE_GLOBAL_FRACTION,
    PICKLE_GLOBAL_HALF_STORAGE,
    PICKLE_GLOBAL_FLOAT_STORAGE,
    PICKLE_GLOBAL_MODEL_CLASS,
} pickle_global_id;

typedef enum { PICKLE_FLOAT16, PICKLE_FLOAT32 } pickle_dtype;

typedef struct pickle_value pickle_value;

typedef struct {
    pickle_dtype dtype;
    const char *key;  /* record name under <archive>/data/ */
    int64_t numel;    /* elements the storage declares */
} pickle_storage;

typedef struct {
    const pickle_value *storage; /* kind PICKLE_STORAGE */
    int64_t offset;              /* in elements */
    int ndim;
    int64_t shape[PICKLE_MAX_DIMS], stride[PICKLE_MAX_DIMS];
} pickle_tensor;

struct pickle_value {
    pickle_kind kind;
    int depth; /* containers nested inside this one (0 for scalars) */
    union {
        int64_t i;
        double f;
        struct {
            const char *str;
            size_t len;
            pickle_global_id global_id;
        };
        struct {
            pickle_value **items;
            int n, cap;
        };
        pickle_storage storage;
        const pickle_tensor *tensor;
        struct {
            int64_t numerator, denominator;
        } fraction;
    };
};

typedef struct pickle_doc pickle_doc;

/* Unpickle bytes[0, n), which must hold exactly one pickle ending in STOP.
 * Returns 0, D2M_ERR_FORMAT (err names the opcode or global and its byte
 * offset) or D2M_ERR_NOMEM. */
int pickle_load(pickle_doc **out, const unsigned char *bytes, size_t n, d2m_error *err);
const pickle_value *pickle_root(const pickle_doc *doc);
void pickle_free(pickle_doc *doc);

/* The value stored under string key in a dict (the last one, as Python keeps
 * it), or NULL when dict is not a dict or has no such key. */
const pickle_value *pickle_dict_get(const pickle_value *dict, const char *key);

/* A short name of a kind for messages: "str", "dict", ... */
const char *pickle_kind_name(pickle_kind kind);

#endif
