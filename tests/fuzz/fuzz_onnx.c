/* libFuzzer target for the ONNX weight loader (protobuf reader, name
 * mapping, transforms): whatever the bytes, weights_parse_onnx must return
 * 0 with a consistent table or an error with a message, without crashing,
 * leaking, hanging, or allocating more than a small multiple of the input.
 * Build with cmake -DD2M_FUZZ=ON (clang), or compile src/base/error.c and
 * src/nn/{weights,protobuf,weights_onnx}.c with this file using
 * -fsanitize=fuzzer,address,undefined. Seeds: tests/fuzz/seeds/fuzz_onnx/
 * (written by `test_weights_onnx --write-seeds DIR`).
 * Threading: libFuzzer calls it on one thread. */
#include "nn/weights.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    d2m_weights *w = NULL;
    d2m_error err;
    memset(&err, 0, sizeof err);
    int rc = weights_parse_onnx(&w, data, size, &err);
    if (rc != 0) {
        if (w || !err.message[0]) __builtin_trap(); /* the contract: no table, a message */
        return 0;
    }
    int64_t total = 0;
    for (int i = 0; i < weights_count(w); i++) {
        const d2m_tensor *t = weights_at(w, i);
        int64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= t->shape[d];
        if (numel != t->numel || weights_get(w, t->name) != t) __builtin_trap();
        /* Touch every value so an undersized buffer shows up. */
        float sum = 0;
        for (int64_t k = 0; k < t->numel; k++) sum += t->data[k];
        (void)sum;
        total += t->numel;
    }
    /* The values come from the input: never more floats than input bytes / 4. */
    if (total > (int64_t)(size / 4)) __builtin_trap();
    if (strcmp(weights_args(w)->format, "onnx") != 0) __builtin_trap();
    weights_free(w);
    return 0;
}
