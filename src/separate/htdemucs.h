/* HTDemucs v4 (Rouard, Massa, Defossez, "Hybrid Transformers for Music
 * Source Separation", ICASSP 2023) run natively: the model engine for one
 * segment, and the chunked apply loop that separates a whole song.
 *
 * The engine is opaque. htdemucs_new builds, from the weights' hyper-
 * parameters, the full table of tensors the network needs (every name and
 * shape), checks the weights against it, and allocates every activation
 * buffer for one segment; htdemucs_forward then never allocates (unless
 * they were released with htdemucs_release_activations).
 *
 * Ownership: the engine borrows the d2m_weights (keep them alive until
 * htdemucs_free) and, with htdemucs_new_with_backend, the backend.
 * Thread safety: one engine runs one forward pass at a time; it uses the
 * backend's threads inside. Separate engines may run on separate threads.
 */
#ifndef D2M_HTDEMUCS_H
#define D2M_HTDEMUCS_H

#include "audio/audio.h"
#include "nn/backend.h"
#include "nn/weights.h"
#include "separate/separate.h"

#include <stdint.h>

typedef struct htdemucs htdemucs;

#define HTDEMUCS_MAX_SOURCES 8

/* Returns 0, D2M_ERR_FORMAT (a tensor is missing, misshaped or unexpected,
 * or the hyperparameters describe a variant this engine does not run; err
 * names the tensor, both shapes or the setting), D2M_ERR_NOMEM,
 * D2M_ERR_INVALID. n_threads <= 0 uses every online CPU. */
int htdemucs_new(htdemucs **out, const d2m_weights *w, int n_threads, d2m_error *err);
/* The same on a caller's backend (borrowed). */
int htdemucs_new_with_backend(htdemucs **out, const d2m_weights *w, nn_backend *be,
                              d2m_error *err);
void htdemucs_free(htdemucs *m); /* NULL-safe */

/* The tensors a model with these hyperparameters needs, exactly as
 * htdemucs_new checks them (PyTorch state-dict names and shapes): fn is
 * called for each, in order. args NULL or zero fields mean the released
 * htdemucs. Returns the count, or D2M_ERR_FORMAT for a variant this engine
 * does not run, D2M_ERR_NOMEM. For loaders' tests and tools. */
int htdemucs_expected_tensors(const d2m_model_args *args,
                              void (*fn)(void *user, const char *name, int ndim,
                                         const int64_t *shape),
                              void *user, d2m_error *err);

/* Samples per segment: int(segment_s * samplerate) (343980 for htdemucs). */
int64_t htdemucs_segment_length(const htdemucs *m);
int htdemucs_samplerate(const htdemucs *m);
int htdemucs_sources(const htdemucs *m);
const char *htdemucs_source_name(const htdemucs *m, int source); /* "drums", ... */
int htdemucs_source_index(const htdemucs *m, const char *name);  /* -1 when absent */
/* Bytes of activation buffers and tables the engine holds (not the weights). */
size_t htdemucs_activation_bytes(const htdemucs *m);
const char *htdemucs_backend_name(const htdemucs *m);
/* Floating-point operations of one forward pass (multiply-adds count 2),
 * convolutions, projections and attention only: about 335e9 for htdemucs. */
double htdemucs_segment_flops(const htdemucs *m);

/* One segment: out (sources, 2, L) = the model applied to in (2, L), both
 * planar, L = htdemucs_segment_length(). in is what Demucs calls mix: the
 * caller's normalisation (demucs_apply) is already done. Returns 0, or
 * D2M_ERR_NOMEM when the activations were released and cannot be
 * allocated again. */
int htdemucs_forward(htdemucs *m, float *out, const float *in);

/* Give the activation buffers (most of htdemucs_activation_bytes) back to
 * the system while the model stays loaded: between songs, or while a song's
 * analysis needs the memory. The next htdemucs_forward allocates them
 * again. NULL-safe. */
void htdemucs_release_activations(htdemucs *m);

/* Intermediate tensors, for tests: during htdemucs_forward, fn is called
 * with each stage's output, named and shaped like the reference files
 * (e.g. "06_tenc0", (1, 48, 85995)), C order. Exception: "00_spec" is given
 * complex-as-channels, (1, 4, bins, frames) with channels L.re, L.im, R.re,
 * R.im. data is valid only during the call. fn NULL turns capture off. */
typedef void (*htdemucs_capture_fn)(void *user, const char *name, const float *data, int ndim,
                                    const int64_t *shape);
void htdemucs_set_capture(htdemucs *m, htdemucs_capture_fn fn, void *user);

/* ---- Whole songs ------------------------------------------------------------ */

typedef struct {
    double overlap;   /* fraction of a segment shared by neighbours, [0, 0.9]: 0.25 */
    int shifts;       /* random time shifts averaged (Demucs' "shift trick"); 0 = off */
    uint64_t seed;    /* the shifts' offsets come from this seed alone */
    unsigned sources; /* bit s: write source s; 0 means drums only */
} demucs_apply_params;

demucs_apply_params demucs_apply_default_params(void); /* 0.25, 0 shifts, seed 0, drums */

/* Separate a whole song exactly as Demucs' separate.py + apply_model do:
 * normalise by the mono mix's mean and std (unbiased, + 1e-8), run the model
 * on segments with overlap, centred zero padding of the short last one and
 * triangular cross-fades, average the shifted passes, de-normalise.
 * mix: stereo at htdemucs_samplerate(). stems: htdemucs_sources() entries;
 * each requested source is allocated (d2m_audio_alloc, interleaved stereo,
 * the mix's length), the others are left zeroed. Memory beyond the outputs
 * is O(segment). progress (may be NULL) is called after each segment with
 * the fraction done; a non-zero return stops the work.
 * Returns 0, D2M_ERR_INVALID (not stereo, wrong rate, bad params; err
 * says), D2M_ERR_NOMEM, D2M_ERR_CANCELLED (stems are then freed). */
int demucs_apply(htdemucs *m, d2m_audio *stems, const d2m_audio *mix,
                 const demucs_apply_params *p, separate_progress_fn progress, void *user,
                 d2m_error *err);

/* Where demucs_apply_stream's stems go: write gets each requested source's
 * frames in order from the start, x (frames, 2) interleaved, final (the
 * same floats demucs_apply gives). Returns 0 or a negative code with err
 * set, which stops the separation. */
typedef struct {
    int (*write)(void *user, int source, const float *x, int64_t frames, d2m_error *err);
    void *user;
} demucs_stem_writer;

/* demucs_apply for a song of any length: the mix is read through a reader
 * (stereo at htdemucs_samplerate(); read twice for the normalisation, then
 * a segment at a time) and the stems go to writer as they become final.
 * Memory is O(segment x passes), never O(song). Returns demucs_apply's
 * codes, or the reader's or writer's. */
int demucs_apply_stream(htdemucs *m, const audio_reader *mix, const demucs_stem_writer *writer,
                        const demucs_apply_params *p, separate_progress_fn progress, void *user,
                        d2m_error *err);

#endif
