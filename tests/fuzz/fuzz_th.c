/* libFuzzer target for the Demucs checkpoint reader: the whole .th path
 * (zip index, CRC, unpickler, tensor checks, float16 conversion) through
 * weights_parse_th, and the unpickler alone on the same bytes, so mutations
 * of a bare pickle reach it without a zip around it. Every failure must come
 * with a message; every success must hold consistent tensors.
 * Build with cmake -DD2M_FUZZ=ON (clang), or compile src/base/error.c and the
 * src/nn weight sources with this file using -fsanitize=fuzzer,address,undefined.
 * Define FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION for the library so mutated
 * records are not all stopped by their CRC-32 (zip.h).
 * Seeds: tests/fuzz/seeds/fuzz_th (small checkpoints, a truncated tiny.th,
 * tiny.th's data.pkl). Threading: libFuzzer calls it on one thread. */
#include "nn/pickle.h"
#include "nn/weights.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_weights(const d2m_weights *w)
{
    for (int i = 0; i < weights_count(w); i++) {
        const d2m_tensor *t = weights_at(w, i);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
        if (numel != t->numel || !t->name || weights_get(w, t->name) != t) __builtin_trap();
        /* Touch every value so an undersized buffer shows up. */
        float sum = 0;
        for (int64_t k = 0; k < t->numel; k++) sum += t->data[k];
        (void)sum;
    }
    const d2m_model_args *a = weights_args(w);
    if (a->n_sources < 0 || a->n_sources > 8 || strnlen(a->klass, sizeof a->klass) == sizeof a->klass)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    d2m_weights *w = NULL;
    d2m_error err;
    err.message[0] = '\0';
    int rc = weights_parse_th(&w, data, size, &err);
    if (rc == 0) check_weights(w);
    else if (!err.message[0] || w) __builtin_trap();
    weights_free(w);

    pickle_doc *doc = NULL;
    err.message[0] = '\0';
    rc = pickle_load(&doc, data, size, &err);
    if (rc == 0) {
        const pickle_value *root = pickle_root(doc);
        if (!root) __builtin_trap();
        const pickle_value *state = pickle_dict_get(root, "state");
        if (state && state->kind == PICKLE_DICT && state->n < 0) __builtin_trap();
    } else if (!err.message[0] || doc) {
        __builtin_trap();
    }
    pickle_free(doc);
    return 0;
}
