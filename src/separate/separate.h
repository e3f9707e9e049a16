/* Separation layer: the drum stem from a mix. */
#ifndef D2M_SEPARATE_H
#define D2M_SEPARATE_H

#include "audio/audio.h"

typedef struct {
    int n_fft, hop;
    int harmonic_frames;  /* median length across time, odd */
    int percussive_bins;  /* median length across frequency, odd */
    float margin;         /* Driedger's separation factor (>= 1) */
    double block_s;       /* audio processed per block (bounds memory) */
} hpss_params;

hpss_params hpss_default_params(void);

/* Progress within separation: fraction in [0,1]; non-zero return cancels. */
typedef int (*separate_progress_fn)(void *user, double fraction);

/* Median-filtering harmonic/percussive/residual separation (Fitzgerald 2010,
 * Driedger 2014) with soft masks; drums = the percussive component, same rate
 * and channels as mix. Processes blocks with enough context that the result
 * equals whole-signal processing. Returns 0, D2M_ERR_NOMEM, D2M_ERR_CANCELLED. */
int hpss_separate(d2m_audio *drums, const d2m_audio *mix, const hpss_params *p,
                  separate_progress_fn progress, void *user, d2m_error *err);

/* The same for a song of any length: the mix is read through a reader a
 * block (plus context) at a time and the drum stem, the same floats, goes
 * to write in order. Memory is O(block_s x threads). Returns
 * hpss_separate's codes, or the reader's or write's. */
int hpss_separate_stream(const audio_reader *mix, audio_block_fn write, void *write_user,
                         const hpss_params *p, separate_progress_fn progress, void *user,
                         d2m_error *err);

#endif
