/* STFT against a direct DFT with torch.stft's conventions, inverse identity,
 * the low-pass filter's response, and features on known signals. */
#include "dsp/dsp.h"
#include "test.h"

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

int main(void)
{
    test_stft_matches_direct_dft();
    test_stft_inverse_is_identity();
    test_lowpass_response();
    test_features_of_clicks();
    return test_summary("test_dsp");
}
