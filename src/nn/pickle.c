/* Strict pickle protocol 2 reader for torch checkpoints: a loop over opcodes
 * with an explicit value stack, MARK stack and memo, building values in an
 * arena owned by the document. The allowed globals are a table; REDUCE and
 * BINPERSID build their few known results directly (tensor references,
 * storages, fractions, dicts) instead of calling anything.
 *
 * Reference: CPython Lib/pickle.py (_Unpickler.load_* methods) and
 * Lib/pickletools.py (opcode table); torch/serialization.py and
 * torch/_utils.py (_rebuild_tensor_v2) for what torch.save writes.
 * Memory: every opcode adds at most one 32-byte value (None, True and False
 * are shared) and one stack slot, container arrays double, the memo grows to
 * the largest index used (which must be below the input length): all bounded
 * by about 48 bytes per input byte.
 * Threading: pickle_load is reentrant; a document is read-only afterwards.
 */
#include "pickle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

typedef struct block {
    struct block *next;
    size_t used, size;
    _Alignas(max_align_t) unsigned char data[];
} block;

struct pickle_doc {
    block *blocks;
    const pickle_value *root;
    pickle_value none, true_value, false_value; /* shared: scalars are never modified */
};

enum { BLOCK_SIZE = 64 * 1024, ALIGN = _Alignof(max_align_t) };

static void *arena_alloc(pickle_doc *doc, size_t size)
{
    size = (size + ALIGN - 1) / ALIGN * ALIGN;
    block *b = doc->blocks;
    if (!b || b->size - b->used < size) {
        size_t cap = size > BLOCK_SIZE ? size : BLOCK_SIZE;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = doc->blocks;
        b->used = 0;
        b->size = cap;
        doc->blocks = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    return p;
}

void pickle_free(pickle_doc *doc)
{
    if (!doc) return;
    for (block *b = doc->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(doc);
}

const pickle_value *pickle_root(const pickle_doc *doc) { return doc ? doc->root : NULL; }

/* ---- names for messages ---- */

const char *pickle_kind_name(pickle_kind kind)
{
    switch (kind) {
    case PICKLE_NONE: return "None";
    case PICKLE_BOOL: return "bool";
    case PICKLE_INT: return "int";
    case PICKLE_FLOAT: return "float";
    case PICKLE_STR: return "str";
    case PICKLE_TUPLE: return "tuple";
    case PICKLE_LIST: return "list";
    case PICKLE_DICT: return "dict";
    case PICKLE_GLOBAL: return "global";
    case PICKLE_STORAGE: return "storage";
    case PICKLE_TENSOR: return "tensor";
    case PICKLE_FRACTION: return "Fraction";
    }
    return "?";
}

/* Every opcode of protocols 0-5 (pickletools), so an error can name it. */
static const char *opcode_name(unsigned char op)
{
    switch (op) {
    case '(': return "MARK";
    case '.': return "STOP";
    case '0': return "POP";
    case '1': return "POP_MARK";
    case '2': return "DUP";
    case 'F': return "FLOAT";
    case 'I': return "INT";
    case 'J': return "BININT";
    case 'K': return "BININT1";
    case 'L': return "LONG";
    case 'M': return "BININT2";
    case 'N': return "NONE";
    case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
    case 'R': return "REDUCE";
    case 'S': return "STRING";
    case 'T': return "BINSTRING";
    case 'U': return "SHORT_BINSTRING";
    case 'V': return "UNICODE";
    case 'X': return "BINUNICODE";
    case 'a': return "APPEND";
    case 'b': return "BUILD";
    case 'c': return "GLOBAL";
    case 'd': return "DICT";
    case '}': return "EMPTY_DICT";
    case 'e': return "APPENDS";
    case 'g': return "GET";
    case 'h': return "BINGET";
    case 'i': return "INST";
    case 'j': return "LONG_BINGET";
    case 'l': return "LIST";
    case ']': return "EMPTY_LIST";
    case 'o': return "OBJ";
    case 'p': return "PUT";
    case 'q': return "BINPUT";
    case 'r': return "LONG_BINPUT";
    case 's': return "SETITEM";
    case 't': return "TUPLE";
    case ')': return "EMPTY_TUPLE";
    case 'u': return "SETITEMS";
    case 'G': return "BINFLOAT";
    case 0x80: return "PROTO";
    case 0x81: return "NEWOBJ";
    case 0x82: return "EXT1";
    case 0x83: return "EXT2";
    case 0x84: return "EXT4";
    case 0x85: return "TUPLE1";
    case 0x86: return "TUPLE2";
    case 0x87: return "TUPLE3";
    case 0x88: return "NEWTRUE";
    case 0x89: return "NEWFALSE";
    case 0x8a: return "LONG1";
    case 0x8b: return "LONG4";
    case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES";
    case 0x8c: return "SHORT_BINUNICODE";
    case 0x8d: return "BINUNICODE8";
    case 0x8e: return "BINBYTES8";
    case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS";
    case 0x91: return "FROZENSET";
    case 0x92: return "NEWOBJ_EX";
    case 0x93: return "STACK_GLOBAL";
    case 0x94: return "MEMOIZE";
    case 0x95: return "FRAME";
    case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER";
    case 0x98: return "READONLY_BUFFER";
    }
    return "unknown";
}

/* ---- allowed globals ---- */

static const struct {
    const char *name; /* "module name" as GLOBAL spells it */
    pickle_global_id id;
} allowed_globals[] = {
    {"collections OrderedDict", PICKLE_GLOBAL_ORDERED_DICT},
    {"torch._utils _rebuild_tensor_v2", PICKLE_GLOBAL_REBUILD_TENSOR},
    {"fractions Fraction", PICKLE_GLOBAL_FRACTION},
    {"torch HalfStorage", PICKLE_GLOBAL_HALF_STORAGE},
    {"torch FloatStorage", PICKLE_GLOBAL_FLOAT_STORAGE},
    {"demucs.htdemucs HTDemucs", PICKLE_GLOBAL_MODEL_CLASS},
    {"demucs.hdemucs HDemucs", PICKLE_GLOBAL_MODEL_CLASS},
    {"demucs.demucs Demucs", PICKLE_GLOBAL_MODEL_CLASS},
};

/* ---- the machine ---- */

typedef struct {
    pickle_doc *doc;
    const unsigned char *b;
    size_t n, pos, op_pos; /* op_pos: offset of the opcode being run */
    unsigned char op;
    pickle_value **stack;  /* (sp) of (stack_cap) */
    size_t sp, stack_cap;
    size_t marks[PICKLE_MAX_MARKS]; /* stack heights at each open MARK */
    int n_marks;
    pickle_value **memo; /* (memo_cap), NULL where unset */
    size_t memo_cap;
    d2m_error *err;
} unpickler;

static int fail(unpickler *u, const char *fmt, ...) D2M_PRINTF(2, 3);
static int fail(unpickler *u, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return d2m_fail(u->err, D2M_ERR_FORMAT, "pickle offset %zu: %s %s", u->op_pos, opcode_name(u->op),
                    what);
}

static int out_of_memory(unpickler *u)
{
    return d2m_fail(u->err, D2M_ERR_NOMEM, "pickle: out of memory at offset %zu", u->op_pos);
}

static pickle_value *new_value(unpickler *u, pickle_kind kind)
{
    pickle_value *v = arena_alloc(u->doc, sizeof *v);
    if (v) {
        memset(v, 0, sizeof *v);
        v->kind = kind;
    }
    return v;
}

/* Store item at slot of a tuple, list or dict (a dict keeps pair k in
 * slots 2k, 2k+1), growing its array by doubling. */
static int put_slot(unpickler *u, pickle_value *c, int slot, pickle_value *item)
{
    if (slot == c->cap) {
        if (c->cap > (1 << 28)) return fail(u, "container too large");
        int cap = c->cap ? 2 * c->cap : 4;
        pickle_value **items = arena_alloc(u->doc, (size_t)cap * sizeof *items);
        if (!items) return out_of_memory(u);
        if (slot) memcpy(items, c->items, (size_t)slot * sizeof *items);
        c->items = items;
        c->cap = cap;
    }
    c->items[slot] = item;
    if (item->depth + 1 > c->depth) {
        c->depth = item->depth + 1;
        if (c->depth > PICKLE_MAX_DEPTH)
            return fail(u, "nests containers deeper than %d levels", PICKLE_MAX_DEPTH);
    }
    return 0;
}

static pickle_value *new_container(unpickler *u, pickle_kind kind)
{
    pickle_value *v = new_value(u, kind);
    if (v) v->depth = 1;
    return v;
}

static int push(unpickler *u, pickle_value *v)
{
    if (!v) return out_of_memory(u);
    if (u->sp == u->stack_cap) {
        size_t cap = u->stack_cap ? 2 * u->stack_cap : 64;
        pickle_value **s = realloc(u->stack, cap * sizeof *s);
        if (!s) return out_of_memory(u);
        u->stack = s;
        u->stack_cap = cap;
    }
    u->stack[u->sp++] = v;
    return 0;
}

/* The stack height below which the current MARK frame may not reach. */
static size_t frame_base(const unpickler *u) { return u->n_marks ? u->marks[u->n_marks - 1] : 0; }

static int pop(unpickler *u, pickle_value **v)
{
    if (u->sp <= frame_base(u)) return fail(u, "pops an empty stack");
    *v = u->stack[--u->sp];
    return 0;
}

static int top(unpickler *u, pickle_value **v)
{
    if (u->sp <= frame_base(u)) return fail(u, "needs a value on an empty stack");
    *v = u->stack[u->sp - 1];
    return 0;
}

/* Close the innermost MARK: its items are stack[*first, *first + *count). */
static int pop_mark(unpickler *u, size_t *first, size_t *count)
{
    if (!u->n_marks) return fail(u, "without a MARK");
    *first = u->marks[--u->n_marks];
    *count = u->sp - *first;
    u->sp = *first;
    return 0;
}

static int need(unpickler *u, size_t k)
{
    if (u->n - u->pos < k) return fail(u, "is cut short (the pickle is truncated)");
    return 0;
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF, no NUL. */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c == 0) return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        int len;
        unsigned min;
        if (c >= 0xc2 && c <= 0xdf) len = 2, min = 0x80;
        else if (c >= 0xe0 && c <= 0xef) len = 3, min = 0x800;
        else if (c >= 0xf0 && c <= 0xf4) len = 4, min = 0x10000;
        else return 0;
        if (n - i < (size_t)len) return 0;
        unsigned cp = c & (0x7f >> len);
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += (size_t)len;
    }
    return 1;
}

static pickle_value *new_string(unpickler *u, pickle_kind kind, const unsigned char *s, size_t len)
{
    pickle_value *v = new_value(u, kind);
    char *copy = v ? arena_alloc(u->doc, len + 1) : NULL;
    if (!copy) return NULL;
    memcpy(copy, s, len);
    copy[len] = '\0';
    v->str = copy;
    v->len = len;
    return v;
}

static int push_int(unpickler *u, pickle_kind kind, int64_t i)
{
    pickle_value *v = new_value(u, kind);
    if (v) v->i = i;
    return push(u, v);
}

static int load_global(unpickler *u)
{
    /* Two newline-terminated lines: module, then name. */
    char name[130];
    size_t len = 0;
    for (int line = 0; line < 2; line++) {
        for (;;) {
            if (u->pos >= u->n) return fail(u, "is cut short (the pickle is truncated)");
            unsigned char c = u->b[u->pos++];
            if (c == '\n') break;
            if (c <= 0x20 || c >= 0x7f || len + 2 >= sizeof name) return fail(u, "has a malformed name");
            name[len++] = (char)c;
        }
        if (line == 0) name[len++] = ' ';
    }
    name[len] = '\0';
    for (size_t k = 0; k < sizeof allowed_globals / sizeof allowed_globals[0]; k++) {
        if (strcmp(name, allowed_globals[k].name) == 0) {
            pickle_value *v = new_string(u, PICKLE_GLOBAL, (const unsigned char *)name, len);
            if (v) v->global_id = allowed_globals[k].id;
            return push(u, v);
        }
    }
    return fail(u, "'%s' is not an allowed global (a Demucs checkpoint uses only torch tensors, "
                   "OrderedDict, Fraction and the model class)", name);
}

static int int_arg(unpickler *u, const pickle_value *v, const char *what, int64_t *out)
{
    if (v->kind != PICKLE_INT || v->i < 0) return fail(u, "%s must be a non-negative int", what);
    *out = v->i;
    return 0;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks) */
static int rebuild_tensor(unpickler *u, const pickle_value *args)
{
    if (args->n != 6) return fail(u, "_rebuild_tensor_v2 takes 6 arguments, got %d", args->n);
    pickle_value **a = args->items;
    if (a[0]->kind != PICKLE_STORAGE) return fail(u, "_rebuild_tensor_v2: argument 1 is not a storage");
    if (a[2]->kind != PICKLE_TUPLE || a[3]->kind != PICKLE_TUPLE || a[2]->n != a[3]->n)
        return fail(u, "_rebuild_tensor_v2: size and stride must be tuples of one length");
    if (a[2]->n > PICKLE_MAX_DIMS)
        return fail(u, "_rebuild_tensor_v2: %d dimensions (at most %d)", a[2]->n, PICKLE_MAX_DIMS);
    if (a[4]->kind != PICKLE_BOOL) return fail(u, "_rebuild_tensor_v2: requires_grad is not a bool");
    if (a[5]->kind != PICKLE_DICT || a[5]->n != 0)
        return fail(u, "_rebuild_tensor_v2: backward hooks must be an empty OrderedDict");
    pickle_value *v = new_value(u, PICKLE_TENSOR);
    pickle_tensor *t = v ? arena_alloc(u->doc, sizeof *t) : NULL;
    if (!t) return out_of_memory(u);
    memset(t, 0, sizeof *t);
    v->tensor = t;
    t->storage = a[0];
    t->ndim = a[2]->n;
    int rc = int_arg(u, a[1], "_rebuild_tensor_v2: storage offset", &t->offset);
    for (int d = 0; d < t->ndim && !rc; d++) {
        rc = int_arg(u, a[2]->items[d], "_rebuild_tensor_v2: size", &t->shape[d]);
        if (!rc) rc = int_arg(u, a[3]->items[d], "_rebuild_tensor_v2: stride", &t->stride[d]);
    }
    return rc ? rc : push(u, v);
}

/* Fraction('n'), Fraction('n/d'), Fraction('a.b') or Fraction(n, d). */
static int make_fraction(unpickler *u, const pickle_value *args)
{
    int64_t num = 0, den = 1;
    if (args->n == 2 && args->items[0]->kind == PICKLE_INT && args->items[1]->kind == PICKLE_INT) {
        num = args->items[0]->i;
        den = args->items[1]->i;
    } else if (args->n == 1 && args->items[0]->kind == PICKLE_STR) {
        const char *s = args->items[0]->str;
        int negative = *s == '-', digits = 0;
        if (*s == '-' || *s == '+') s++;
        const int64_t limit = INT64_MAX / 10 - 9;
        for (; *s >= '0' && *s <= '9'; s++, digits++) {
            if (num > limit) return fail(u, "Fraction('%s') is too large", args->items[0]->str);
            num = 10 * num + (*s - '0');
        }
        if (*s == '.') {
            for (s++; *s >= '0' && *s <= '9'; s++, digits++) {
                if (num > limit || den > limit) return fail(u, "Fraction('%s') is too precise", args->items[0]->str);
                num = 10 * num + (*s - '0');
                den *= 10;
            }
        } else if (*s == '/' && digits) {
            den = 0;
            int den_digits = 0;
            for (s++; *s >= '0' && *s <= '9'; s++, den_digits++) {
                if (den > limit) return fail(u, "Fraction('%s') is too large", args->items[0]->str);
                den = 10 * den + (*s - '0');
            }
            if (!den_digits) digits = 0;
        }
        if (*s || !digits) return fail(u, "Fraction('%s') is not a number this reader accepts",
                                       args->items[0]->str);
        if (negative) num = -num;
    } else {
        return fail(u, "Fraction takes a string or two ints");
    }
    if (den == 0) return fail(u, "Fraction with a zero denominator");
    if (den < 0) {
        if (den == INT64_MIN || num == INT64_MIN) return fail(u, "Fraction out of range");
        num = -num;
        den = -den;
    }
    pickle_value *v = new_value(u, PICKLE_FRACTION);
    if (!v) return out_of_memory(u);
    v->fraction.numerator = num;
    v->fraction.denominator = den;
    return push(u, v);
}

static int load_reduce(unpickler *u)
{
    pickle_value *args = NULL, *callable = NULL;
    int rc = pop(u, &args);
    if (!rc) rc = pop(u, &callable);
    if (rc) return rc;
    if (callable->kind != PICKLE_GLOBAL)
        return fail(u, "callable is of type %s, not an allowed global", pickle_kind_name(callable->kind));
    if (args->kind != PICKLE_TUPLE) return fail(u, "of '%s' with arguments that are not a tuple", callable->str);
    switch (callable->global_id) {
    case PICKLE_GLOBAL_ORDERED_DICT:
        if (args->n != 0) return fail(u, "OrderedDict with arguments is not supported");
        return push(u, new_container(u, PICKLE_DICT));
    case PICKLE_GLOBAL_REBUILD_TENSOR: return rebuild_tensor(u, args);
    case PICKLE_GLOBAL_FRACTION: return make_fraction(u, args);
    default: return fail(u, "calling '%s' is not allowed", callable->str);
    }
}

/* Storage keys become record names: keep them to plain identifiers. */
static int valid_key(const pickle_value *v)
{
    if (v->kind != PICKLE_STR || v->len == 0 || v->len > 64) return 0;
    for (size_t i = 0; i < v->len; i++) {
        char c = v->str[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'))
            return 0;
    }
    return 1;
}

/* ('storage', storage type, key, location, numel) */
static int load_persid(unpickler *u)
{
    pickle_value *pid = NULL;
    int rc = pop(u, &pid);
    if (rc) return rc;
    if (pid->kind != PICKLE_TUPLE || pid->n != 5 || pid->items[0]->kind != PICKLE_STR ||
        strcmp(pid->items[0]->str, "storage") != 0)
        return fail(u, "expects ('storage', type, key, location, numel)");
    pickle_value **a = pid->items;
    if (a[1]->kind != PICKLE_GLOBAL ||
        (a[1]->global_id != PICKLE_GLOBAL_HALF_STORAGE && a[1]->global_id != PICKLE_GLOBAL_FLOAT_STORAGE))
        return fail(u, "storage type must be torch HalfStorage or FloatStorage");
    if (!valid_key(a[2])) return fail(u, "storage key must be a short alphanumeric string");
    if (a[3]->kind != PICKLE_STR) return fail(u, "storage location must be a string");
    if (a[4]->kind != PICKLE_INT || a[4]->i < 0) return fail(u, "storage size must be a non-negative int");
    pickle_value *v = new_value(u, PICKLE_STORAGE);
    if (!v) return out_of_memory(u);
    v->storage.dtype = a[1]->global_id == PICKLE_GLOBAL_HALF_STORAGE ? PICKLE_FLOAT16 : PICKLE_FLOAT32;
    v->storage.key = a[2]->str;
    v->storage.numel = a[4]->i;
    return push(u, v);
}

static int memo_put(unpickler *u, size_t index)
{
    pickle_value *v = NULL;
    int rc = top(u, &v);
    if (rc) return rc;
    /* Python numbers memo entries 0, 1, 2, ...: each PUT takes at least two
     * bytes, so a real index is always below the pickle's length. */
    if (index >= u->n) return fail(u, "memo index %zu is out of range", index);
    if (index >= u->memo_cap) {
        size_t cap = u->memo_cap ? u->memo_cap : 256;
        while (cap <= index) cap *= 2;
        if (cap > u->n) cap = u->n;
        pickle_value **m = realloc(u->memo, cap * sizeof *m);
        if (!m) return out_of_memory(u);
        memset(m + u->memo_cap, 0, (cap - u->memo_cap) * sizeof *m);
        u->memo = m;
        u->memo_cap = cap;
    }
    u->memo[index] = v;
    return 0;
}

static int memo_get(unpickler *u, size_t index)
{
    if (index >= u->memo_cap || !u->memo[index]) return fail(u, "memo entry %zu was never stored", index);
    return push(u, u->memo[index]);
}

static int make_tuple(unpickler *u, size_t first, size_t count)
{
    pickle_value *t = new_container(u, PICKLE_TUPLE);
    if (!t) return out_of_memory(u);
    for (size_t k = 0; k < count; k++) {
        int rc = put_slot(u, t, t->n, u->stack[first + k]);
        if (rc) return rc;
        t->n++;
    }
    return push(u, t);
}

static int hashable(const pickle_value *v) { return v->kind != PICKLE_LIST && v->kind != PICKLE_DICT; }

static int set_items(unpickler *u, pickle_value *dict, pickle_value *const *kv, size_t count)
{
    if (dict->kind != PICKLE_DICT) return fail(u, "on a %s, not a dict", pickle_kind_name(dict->kind));
    if (count % 2) return fail(u, "with an odd number of items");
    for (size_t k = 0; k < count; k += 2) {
        if (!hashable(kv[k])) return fail(u, "with an unhashable %s key", pickle_kind_name(kv[k]->kind));
        int rc = put_slot(u, dict, 2 * dict->n, kv[k]);
        if (!rc) rc = put_slot(u, dict, 2 * dict->n + 1, kv[k + 1]);
        if (rc) return rc;
        dict->n++;
    }
    return 0;
}

static int append_items(unpickler *u, pickle_value *list, pickle_value *const *items, size_t count)
{
    if (list->kind != PICKLE_LIST) return fail(u, "on a %s, not a list", pickle_kind_name(list->kind));
    for (size_t k = 0; k < count; k++) {
        int rc = put_slot(u, list, list->n, items[k]);
        if (rc) return rc;
        list->n++;
    }
    return 0;
}

static int run(unpickler *u)
{
    const unsigned char *b = u->b;
    int rc = 0;
    while (u->pos < u->n && !rc) {
        u->op_pos = u->pos;
        u->op = b[u->pos++];
        pickle_value *v = NULL, *w = NULL;
        size_t first = 0, count = 0;
        switch (u->op) {
        case 0x80: /* PROTO */
            if (u->op_pos != 0) return fail(u, "after the start");
            if ((rc = need(u, 1))) return rc;
            if (b[u->pos] != 2) return fail(u, "%d: only protocol 2 (torch.save's default) is supported", b[u->pos]);
            u->pos++;
            break;
        case '.': /* STOP */
            if (u->n_marks || u->sp != 1) return fail(u, "leaves %zu values and %d MARKs", u->sp, u->n_marks);
            if (u->pos != u->n) return fail(u, "is followed by %zu stray bytes", u->n - u->pos);
            u->doc->root = u->stack[0];
            return 0;
        case '(': /* MARK */
            if (u->n_marks == PICKLE_MAX_MARKS) return fail(u, "nests deeper than %d", PICKLE_MAX_MARKS);
            u->marks[u->n_marks++] = u->sp;
            break;
        case 'N': rc = push(u, &u->doc->none); break;
        case 0x88: rc = push(u, &u->doc->true_value); break;
        case 0x89: rc = push(u, &u->doc->false_value); break;
        case 'K': /* BININT1 */
            if (!(rc = need(u, 1))) rc = push_int(u, PICKLE_INT, b[u->pos]);
            u->pos += 1;
            break;
        case 'M': /* BININT2 */
            if (!(rc = need(u, 2))) rc = push_int(u, PICKLE_INT, b[u->pos] | b[u->pos + 1] << 8);
            u->pos += 2;
            break;
        case 'J': /* BININT: signed 32-bit */
            if (!(rc = need(u, 4))) {
                uint32_t x = get_u32(b + u->pos);
                rc = push_int(u, PICKLE_INT, x & 0x80000000u ? (int64_t)x - 0x100000000ll : (int64_t)x);
            }
            u->pos += 4;
            break;
        case 0x8a: { /* LONG1: little-endian two's complement of n bytes */
            if ((rc = need(u, 1))) return rc;
            size_t len = b[u->pos++];
            if ((rc = need(u, len))) return rc;
            if (len > 8) return fail(u, "integer of %zu bytes does not fit 64 bits", len);
            uint64_t x = 0;
            for (size_t k = 0; k < len; k++) x |= (uint64_t)b[u->pos + k] << (8 * k);
            if (len > 0 && len < 8 && (b[u->pos + len - 1] & 0x80)) x |= ~(uint64_t)0 << (8 * len);
            int64_t i;
            memcpy(&i, &x, sizeof i);
            u->pos += len;
            rc = push_int(u, PICKLE_INT, i);
            break;
        }
        case 'G': /* BINFLOAT: big-endian double */
            if ((rc = need(u, 8))) return rc;
            v = new_value(u, PICKLE_FLOAT);
            if (v) {
                uint64_t x = 0;
                for (int k = 0; k < 8; k++) x = x << 8 | b[u->pos + k];
                memcpy(&v->f, &x, sizeof v->f);
            }
            u->pos += 8;
            rc = push(u, v);
            break;
        case 'X': { /* BINUNICODE */
            if ((rc = need(u, 4))) return rc;
            size_t len = get_u32(b + u->pos);
            u->pos += 4;
            if ((rc = need(u, len))) return rc;
            if (!valid_utf8(b + u->pos, len)) return fail(u, "string is not valid UTF-8 (or holds a NUL)");
            rc = push(u, new_string(u, PICKLE_STR, b + u->pos, len));
            u->pos += len;
            break;
        }
        case ')': rc = push(u, new_container(u, PICKLE_TUPLE)); break;
        case ']': rc = push(u, new_container(u, PICKLE_LIST)); break;
        case '}': rc = push(u, new_container(u, PICKLE_DICT)); break;
        case 't': /* TUPLE */
            if (!(rc = pop_mark(u, &first, &count))) rc = make_tuple(u, first, count);
            break;
        case 0x85:
        case 0x86:
        case 0x87: /* TUPLE1..3 */
            count = (size_t)(u->op - 0x84);
            if (u->sp - frame_base(u) < count) return fail(u, "needs %zu values", count);
            u->sp -= count;
            rc = make_tuple(u, u->sp, count);
            break;
        case 'a': /* APPEND */
            if (!(rc = pop(u, &v)) && !(rc = top(u, &w))) rc = append_items(u, w, &v, 1);
            break;
        case 'e': /* APPENDS */
            if (!(rc = pop_mark(u, &first, &count)) && !(rc = top(u, &w)))
                rc = append_items(u, w, u->stack + first, count);
            break;
        case 's': { /* SETITEM */
            pickle_value *kv[2] = {NULL, NULL};
            if (!(rc = pop(u, &kv[1])) && !(rc = pop(u, &kv[0])) && !(rc = top(u, &w)))
                rc = set_items(u, w, kv, 2);
            break;
        }
        case 'u': /* SETITEMS */
            if (!(rc = pop_mark(u, &first, &count)) && !(rc = top(u, &w)))
                rc = set_items(u, w, u->stack + first, count);
            break;
        case 'q': /* BINPUT */
            if (!(rc = need(u, 1))) rc = memo_put(u, b[u->pos]);
            u->pos += 1;
            break;
        case 'r': /* LONG_BINPUT */
            if (!(rc = need(u, 4))) rc = memo_put(u, get_u32(b + u->pos));
            u->pos += 4;
            break;
        case 'h': /* BINGET */
            if (!(rc = need(u, 1))) rc = memo_get(u, b[u->pos]);
            u->pos += 1;
            break;
        case 'j': /* LONG_BINGET */
            if (!(rc = need(u, 4))) rc = memo_get(u, get_u32(b + u->pos));
            u->pos += 4;
            break;
        case 'c': rc = load_global(u); break;
        case 'R': rc = load_reduce(u); break;
        case 'Q': rc = load_persid(u); break;
        default:
            return d2m_fail(u->err, D2M_ERR_FORMAT,
                            "pickle offset %zu: opcode 0x%02x (%s) is not supported in a checkpoint",
                            u->op_pos, u->op, opcode_name(u->op));
        }
    }
    if (rc) return rc;
    return d2m_fail(u->err, D2M_ERR_FORMAT, "pickle: ends after %zu bytes without STOP (truncated?)", u->n);
}

int pickle_load(pickle_doc **out, const unsigned char *bytes, size_t n, d2m_error *err)
{
    *out = NULL;
    pickle_doc *doc = calloc(1, sizeof *doc);
    if (!doc) return d2m_fail(err, D2M_ERR_NOMEM, "pickle: out of memory");
    doc->none.kind = PICKLE_NONE;
    doc->true_value.kind = doc->false_value.kind = PICKLE_BOOL;
    doc->true_value.i = 1;
    unpickler u = {.doc = doc, .b = bytes, .n = n, .err = err};
    int rc;
    if (n < 2 || bytes[0] != 0x80)
        rc = d2m_fail(err, D2M_ERR_FORMAT, "pickle: does not start with PROTO 2");
    else
        rc = run(&u);
    free(u.stack);
    free(u.memo);
    if (rc) {
        pickle_free(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

const pickle_value *pickle_dict_get(const pickle_value *dict, const char *key)
{
    if (!dict || dict->kind != PICKLE_DICT) return NULL;
    for (int k = dict->n - 1; k >= 0; k--) {
        const pickle_value *kv = dict->items[2 * k];
        if (kv->kind == PICKLE_STR && strcmp(kv->str, key) == 0) return dict->items[2 * k + 1];
    }
    return NULL;
}
