/* Inside the HTDemucs engine: its configuration, weight views, activation
 * buffers and the stage functions the forward pass is made of. Only the
 * htdemucs*.c files include this. */
#ifndef D2M_HTDEMUCS_INTERNAL_H
#define D2M_HTDEMUCS_INTERNAL_H

#include "htdemucs.h"

#include <fftw3.h>

#define HT_MAX_DEPTH 6
#define HT_MAX_LAYERS 8
#define HT_MAX_SOURCES HTDEMUCS_MAX_SOURCES

/* One residual branch of a DConv: conv (C -> hidden, 3, dilation), GN,
 * GELU, conv 1x1 (hidden -> 2C), GN, GLU, LayerScale. */
typedef struct {
    const float *conv1_w; /* (hidden, C, 3) */
    const float *conv1_b; /* (hidden) */
    const float *norm1_w, *norm1_b; /* (hidden) */
    const float *conv2_w; /* (2C, hidden, 1) */
    const float *conv2_b; /* (2C) */
    const float *norm2_w, *norm2_b; /* (2C) */
    const float *scale;   /* (C) */
    int dilation;
} ht_dconv;

typedef struct {
    int c_in, c_out, hidden;
    const float *conv_w;    /* (c_out, c_in, K[, 1]) */
    const float *conv_b;    /* (c_out) */
    const float *rewrite_w; /* (2 c_out, c_out, 1[, 1]) */
    const float *rewrite_b; /* (2 c_out) */
    ht_dconv dconv[2];      /* on c_out channels */
} ht_encoder;

typedef struct {
    int c_in, c_out, hidden;
    const float *rewrite_w; /* (2 c_in, c_in, 3[, 3]) */
    const float *rewrite_b; /* (2 c_in) */
    ht_dconv dconv[2];      /* on c_in channels */
    const float *conv_tr_w; /* (c_in, c_out, K[, 1]) */
    const float *conv_tr_b; /* (c_out) */
} ht_decoder;

typedef struct {
    int cross;                     /* cross-attention (else self-attention) */
    const float *in_proj_w;        /* (3D, D): rows Wq; Wk; Wv */
    const float *in_proj_b;        /* (3D) */
    const float *out_proj_w;       /* (D, D) */
    const float *out_proj_b;       /* (D) */
    const float *linear1_w;        /* (hidden, D) */
    const float *linear1_b;        /* (hidden) */
    const float *linear2_w;        /* (D, hidden) */
    const float *linear2_b;        /* (D) */
    const float *norm1_w, *norm1_b; /* (D) */
    const float *norm2_w, *norm2_b; /* (D) */
    const float *norm3_w, *norm3_b; /* (D), cross layers only */
    const float *norm_out_w, *norm_out_b; /* (D) */
    const float *gamma1, *gamma2;  /* (D) */
} ht_tlayer;

struct htdemucs {
    nn_backend *be;
    int own_backend;

    /* ---- configuration ---- */
    int sources, audio_channels, samplerate;
    char names[HT_MAX_SOURCES][16];
    int64_t length;                 /* L: samples per segment */
    int nfft, hop, bins, frames;    /* bins = nfft/2 (the last one dropped), frames = le */
    int depth, kernel, stride, dconv_comp;
    int chans[HT_MAX_DEPTH];        /* C_i, output channels of encoder i */
    int freqs[HT_MAX_DEPTH + 1];    /* F_0 = bins, F_{i+1} = F_i / stride */
    int64_t tlen[HT_MAX_DEPTH + 1]; /* T_0 = L, T_{i+1} = ceil(T_i / stride) */
    int dim, heads, hidden, t_layers, bottom, cross_first;
    float freq_emb_weight, emb_scale; /* 0.2 and 10: x += 0.2 * (10 * W) */

    /* ---- weights (views into the d2m_weights) ---- */
    ht_encoder enc[HT_MAX_DEPTH], tenc[HT_MAX_DEPTH];
    ht_decoder dec[HT_MAX_DEPTH], tdec[HT_MAX_DEPTH]; /* [0] is the deepest */
    const float *freq_emb;          /* (F_1, C_0) */
    const float *up_w, *up_b;       /* (D, C_last, 1), (D); NULL without bottom channels */
    const float *down_w, *down_b;   /* (C_last, D, 1), (C_last) */
    const float *up_t_w, *up_t_b, *down_t_w, *down_t_b;
    const float *norm_in_w, *norm_in_b, *norm_in_t_w, *norm_in_t_b; /* (D) */
    ht_tlayer layers[HT_MAX_LAYERS], layers_t[HT_MAX_LAYERS];

    /* ---- constants ---- */
    float *window;       /* (nfft) periodic Hann */
    float *istft_env;    /* (L) overlap-added squared window at each output sample */
    float *pos_freq;     /* (F_depth * frames, D) 2-D sinusoidal embedding, token t*F + f */
    float *pos_time;     /* (T_depth, D) 1-D sinusoidal embedding */
    fftwf_plan fft_forward, fft_inverse;
    float *padded;                  /* (2, padded_len) the twice reflect-padded input */
    int64_t padded_len;
    float *spec_scratch;            /* (threads, spec_scratch_floats) FFT blocks per thread */
    size_t spec_scratch_floats;

    /* ---- activations: one arena, carved at creation ---- */
    float *arena;
    size_t arena_floats;
    /* persistent through the pass */
    float *spec;                    /* (4, bins, frames) CaC spectrogram, normalised */
    float *freq_out;                /* (4 S, bins, frames) last decoder's output, over spec */
    float *wave;                    /* (2, L) normalised waveform */
    float *skip[HT_MAX_DEPTH];      /* (C_i, F_{i+1}, frames) encoder outputs */
    float *tskip[HT_MAX_DEPTH];     /* (C_i, T_{i+1}) time encoder outputs */
    /* reused by every stage (each stage carves what it needs from here) */
    float *scratch;
    size_t scratch_floats;
    /* the sizes stages carve */
    size_t dconv_budget;            /* floats for a DConv's 2C-channel block of rows */
    size_t conv_work;               /* floats of im2col / transposed-conv scratch */
    size_t attn_work;               /* floats of attention scores */

    /* per-pass statistics */
    float freq_mean, freq_std, time_mean, time_std;

    htdemucs_capture_fn capture;
    void *capture_user;
};

/* htdemucs_spec.c (on the backend's threads) */
int ht_spec_init(htdemucs *m);
void ht_spec_free(htdemucs *m);
/* spec (4, bins, frames) = CaC STFT of in (2, L). */
void ht_stft(htdemucs *m, float *spec, const float *in);
/* out (sources, 2, L) = iSTFT of the CaC spectrograms z (sources, 4, bins,
 * frames). */
void ht_istft(htdemucs *m, float *out, const float *z);

/* htdemucs_layers.c: scratch is the engine's shared scratch. */
size_t ht_encoder_scratch(const htdemucs *m, int freq, int i);
size_t ht_decoder_scratch(const htdemucs *m, int freq, int idx);
/* y (c_out, F_{i+1}, frames) from x (c_in, F_i, frames). */
void ht_encode_freq(htdemucs *m, float *y, const float *x, int i, float *scratch);
/* y (c_out, T_{i+1}) from x (c_in, T_i). */
void ht_encode_time(htdemucs *m, float *y, const float *x, int i, float *scratch);
/* y (c_out, stride * F, frames) from x (c_in, F, frames); x += skip first. */
void ht_decode_freq(htdemucs *m, float *y, float *x, const float *skip, int idx, float *scratch);
/* y (c_out, T_level) from x (c_in, T_{level+1}); x += skip first. */
void ht_decode_time(htdemucs *m, float *y, float *x, const float *skip, int idx, float *scratch);

/* htdemucs_transformer.c */
int ht_transformer_init(htdemucs *m);
size_t ht_transformer_scratch(const htdemucs *m);
/* x (D, F_depth, frames) and xt (D, T_depth) in place. */
void ht_transformer(htdemucs *m, float *x, float *xt, float *scratch);

/* Capture helper (no-op when capture is off). */
void ht_capture(htdemucs *m, const char *name, const float *data, int ndim, ...);

#endif
