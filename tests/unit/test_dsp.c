/* STFT against a direct DFT with torch.stft's conventions, inverse identity,
 * the low-pass filter's response, and features on known signals. */
#include "dsp/dsp.h"
#include "test.h"

#include <stdint.h>
#include <string.h>

static void test_stft_matches_direct_dft(void)
{
    const int n_fft = 64, hop = 16;
    const int64_t n = 200;
    float x[200];
    for (int64_t i = 0; i < n; i++) x[i] = (float)(sin(0.3 * i) + 0.5 * cos(1.7 * i + 0.2) + 0.01 * i);
    stft_plan *p = stft_plan_new(n_fft, hop);
    CHECK(p != NULL, "plan");
    int bins = stft_bins(p);
    CHECK(bins == 33, "bins %d", bins);
    CHECK(stft_frames(p, n) == n / hop + 1, "frames %lld", (long long)stft_frames(p, n));
    float frame[66];
    double worst = 0.0;
    for (int64_t t = 0; t < stft_frames(p, n); t++) {
        stft_frame(frame, x, n, t, p);
        for (int k = 0; k < bins; k++) {
            double re = 0, im = 0;
            for (int i = 0; i < n_fft; i++) {
                /* torch.stft(center=True, pad_mode="reflect") */
                int64_t s = t * hop - n_fft / 2 + i;
                if (s < 0) s = -s;
                if (s >= n) s = 2 * (n - 1) - s;
                double w = 0.5 - 0.5 * cos(2 * M_PI * i / n_fft);
                re += w * x[s] * cos(2 * M_PI * k * i / n_fft);
                im -= w * x[s] * sin(2 * M_PI * k * i / n_fft);
            }
            worst = fmax(worst, fabs(re - frame[2 * k]) + fabs(im - frame[2 * k + 1]));
        }
    }
    CHECK(worst < 1e-3, "largest difference from the direct DFT %g", worst);
    stft_plan_free(p);
}

static void test_stft_inverse_is_identity(void)
{
    const int n_fft = 256, hop = 64;
    const int64_t n = 5000;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    for (int64_t i = 0; i < n; i++) x[i] = (float)sin(0.01 * i * (1 + i * 1e-4)) * 0.7f;
    stft_plan *p = stft_plan_new(n_fft, hop);
    int64_t frames = stft_frames(p, n);
    float *spec = malloc((size_t)frames * stft_bins(p) * 2 * sizeof *spec);
    stft_forward(spec, x, n, p);
    stft_inverse(y, spec, 0, frames, n, 0, n, p);
    double err = 0, ref = 0;
    for (int64_t i = 0; i < n; i++) {
        err += (double)(x[i] - y[i]) * (x[i] - y[i]);
        ref += (double)x[i] * x[i];
    }
    double snr = 10 * log10(ref / err);
    CHECK(snr > 100, "round trip SNR %.1f dB", snr);
    /* A sub-range from just the frames touching it gives the same samples. */
    int64_t first = 1000, count = 700;
    int64_t t0 = (first + n_fft / 2 - n_fft) / hop + 1, t1 = (first + count - 1 + n_fft / 2) / hop;
    float part[700];
    stft_inverse(part, spec + t0 * stft_bins(p) * 2, t0, t1 - t0 + 1, n, first, count, p);
    double worst = 0;
    for (int64_t i = 0; i < count; i++) worst = fmax(worst, fabs(part[i] - y[first + i]));
    CHECK(worst < 1e-5, "partial inverse differs by %g", worst);
    stft_plan_free(p);
    free(spec);
    free(x);
    free(y);
}

/* Gain of filter_lowpass at frequency hz, measured on a steady sine. */
static double lowpass_gain(double hz)
{
    const int rate = 44100;
    const int64_t n = rate;
    float *x = malloc(n * sizeof *x);
    for (int64_t i = 0; i < n; i++) x[i] = (float)sin(2 * M_PI * hz * i / rate);
    filter_lowpass(x, n, 200.0, rate);
    double e = 0;
    for (int64_t i = n / 4; i < 3 * n / 4; i++) e += (double)x[i] * x[i];
    free(x);
    return sqrt(e / (n / 2) * 2.0);
}

static void test_lowpass_response(void)
{
    /* Forward-backward 4th order Butterworth: -6 dB at the cutoff, 8th-order slope. */
    CHECK_NEAR(20 * log10(lowpass_gain(50)), 0.0, 0.1);
    CHECK_NEAR(20 * log10(lowpass_gain(200)), -6.02, 0.3);
    double stop = 20 * log10(lowpass_gain(1600));
    CHECK(stop < -100, "1.6 kHz attenuated to %.1f dB", stop);
    double octave = 20 * log10(lowpass_gain(400));
    CHECK(octave < -45 && octave > -52, "one octave above: %.1f dB (expected about -48)", octave);
}

static void test_features_of_clicks(void)
{
    /* Clicks every 0.5 s: the flux peaks there, the quiet between is flat. */
    const int rate = 44100;
    const int64_t n = rate * 4;
    float *x = calloc(n, sizeof *x);
    for (int k = 0; k < 8; k++) {
        int64_t at = (int64_t)(0.25 * rate) + k * rate / 2;
        for (int i = 0; i < 200; i++) x[at + i] = (float)(0.8 * exp(-i / 40.0) * ((i % 2) ? 1 : -1));
    }
    d2m_features f;
    d2m_error err = {0};
    CHECK(features_compute(&f, x, n, rate, 1024, 256, &err) == 0, "features: %s", err.message);
    CHECK(f.frames == n / 256 + 1, "frames %lld", (long long)f.frames);
    CHECK_NEAR(f.frame_rate, 44100.0 / 256, 1e-9);
    for (int k = 0; k < 8; k++) {
        double at = 0.25 + 0.5 * k;
        int64_t best = 0;
        for (int64_t t = (int64_t)((at - 0.1) * f.frame_rate); t < (int64_t)((at + 0.1) * f.frame_rate); t++)
            if (f.flux[t] > f.flux[best] || best == 0) best = t;
        CHECK_NEAR(features_time(&f, (double)best), at, 0.012);
    }
    /* Broadband clicks: the air band sees them, the centroid is high. */
    int64_t t = (int64_t)(0.25 * f.frame_rate);
    CHECK(f.band_energy[BAND_AIR][t] > 0, "air energy at a click");
    features_free(&f);
    free(x);
}

/* The low-pass in blocks (forward from the start, backward from the end,
 * uneven sizes) gives exactly the whole-signal filter. */
static void test_lowpass_in_blocks_equals_whole(void)
{
    const int64_t n = 100000;
    float *whole = malloc((size_t)n * sizeof *whole), *blocks = malloc((size_t)n * sizeof *blocks);
    for (int64_t i = 0; i < n; i++)
        whole[i] = blocks[i] = (float)(0.3 + 0.5 * sin(0.01 * i) + 0.2 * sin(0.9 * i) * cos(0.0003 * i * i));
    filter_lowpass(whole, n, 200.0, 44100);
    lowpass_pass p;
    filter_lowpass_start(&p, 200.0, 44100, 0);
    for (int64_t first = 0, size = 1; first < n; first += size, size = size * 2 + 3) {
        if (first + size > n) size = n - first;
        filter_lowpass_block(&p, blocks + first, size);
    }
    filter_lowpass_start(&p, 200.0, 44100, 1);
    for (int64_t end = n, size = 7; end > 0; end -= size, size = size * 3 + 1) {
        if (size > end) size = end;
        filter_lowpass_block(&p, blocks + end - size, size);
    }
    CHECK(memcmp(whole, blocks, (size_t)n * sizeof *whole) == 0, "block-wise low-pass differs");
    free(whole);
    free(blocks);
}

/* features_compute_read reads a block of frames at a time: every frame's
 * flux and RMS equal a frame-by-frame computation on the whole signal
 * (stft_frame, which mirrors at the ends), for signals shorter than a
 * window, around the block size and over several blocks; and a reader over
 * a temporary file gives the same features as the buffer. */
static void test_features_read_in_blocks(void)
{
    const int n_fft = 1024, hop = 256;
    const int64_t lengths[] = {300, 2048 * 256 - 1, 2048 * 256 + 600, 3 * 2048 * 256 + 12345};
    stft_plan *plan = stft_plan_new(n_fft, hop);
    const int bins = stft_bins(plan);
    float *spec = malloc((size_t)bins * 2 * sizeof *spec);
    float *prev = malloc((size_t)bins * sizeof *prev), *cur = malloc((size_t)bins * sizeof *cur);
    for (int k = 0; k < 4; k++) {
        const int64_t n = lengths[k];
        d2m_audio a;
        d2m_audio_alloc(&a, n, 1, 44100);
        uint32_t state = 7;
        for (int64_t i = 0; i < n; i++) {
            state = state * 1664525u + 1013904223u;
            a.data[i] = (float)(0.3 * sin(0.05 * i) + 0.2 * ((double)(state >> 8) / (1 << 24) - 0.5));
        }
        d2m_features f, g;
        d2m_error err = {0};
        CHECK(features_compute(&f, a.data, n, 44100, n_fft, hop, &err) == 0, "features: %s", err.message);
        int64_t bad_flux = -1, bad_rms = -1;
        for (int b = 0; b < bins; b++) prev[b] = 0.0f;
        for (int64_t t = 0; t < f.frames; t++) {
            stft_frame(spec, a.data, n, t, plan);
            double flux = 0.0;
            for (int b = 0; b < bins; b++) {
                float re = spec[2 * b] * (4.0f / n_fft), im = spec[2 * b + 1] * (4.0f / n_fft);
                cur[b] = log1pf(1000.0f * sqrtf(re * re + im * im));
                if (cur[b] - prev[b] > 0) flux += cur[b] - prev[b];
            }
            memcpy(prev, cur, (size_t)bins * sizeof *cur);
            if ((float)flux != f.flux[t] && bad_flux < 0) bad_flux = t;
            int64_t s0 = t * hop - hop / 2, s1 = s0 + hop;
            s0 = s0 < 0 ? 0 : s0;
            s1 = s1 > n ? n : s1;
            double sum = 0.0;
            for (int64_t s = s0; s < s1; s++) sum += (double)a.data[s] * a.data[s];
            if ((float)sqrt(sum / (double)(s1 - s0)) != f.rms[t] && bad_rms < 0) bad_rms = t;
        }
        CHECK(bad_flux < 0 && bad_rms < 0, "%lld samples: first frame differing from whole-signal "
              "processing: flux %lld, rms %lld", (long long)n, (long long)bad_flux, (long long)bad_rms);
        /* The same through a temporary file. */
        audio_temp *t = NULL;
        const char *dir = getenv("TMPDIR");
        int rc = audio_temp_new(&t, dir && dir[0] ? dir : "/tmp", 1, 44100, &err);
        if (rc == 0) rc = audio_temp_append(t, a.data, n, &err);
        if (rc == 0) rc = audio_temp_flush(t, &err);
        audio_reader r = audio_temp_reader(t);
        if (rc == 0) rc = features_compute_read(&g, &r, n_fft, hop, &err);
        CHECK(rc == 0, "features from a file: %s", err.message);
        if (rc == 0) {
            int same = g.frames == f.frames &&
                       !memcmp(g.flux, f.flux, (size_t)f.frames * sizeof(float)) &&
                       !memcmp(g.centroid, f.centroid, (size_t)f.frames * sizeof(float)) &&
                       !memcmp(g.rms, f.rms, (size_t)f.frames * sizeof(float));
            for (int b = 0; b < D2M_NBANDS; b++)
                same = same && !memcmp(g.band_flux[b], f.band_flux[b], (size_t)f.frames * sizeof(float)) &&
                       !memcmp(g.band_energy[b], f.band_energy[b], (size_t)f.frames * sizeof(float));
            CHECK(same, "%lld samples: features from a file differ from the buffer's", (long long)n);
            features_free(&g);
        }
        audio_temp_free(t);
        features_free(&f);
        d2m_audio_free(&a);
    }
    stft_plan_free(plan);
    free(spec);
    free(prev);
    free(cur);
}

int main(void)
{
    test_stft_matches_direct_dft();
    test_stft_inverse_is_identity();
    test_lowpass_response();
    test_features_of_clicks();
    test_lowpass_in_blocks_equals_whole();
    test_features_read_in_blocks();
    return test_summary("test_dsp");
}
