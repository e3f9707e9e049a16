/* HPSS: block processing equals whole-signal processing; a steady tone goes
 * to the harmonic side while drum hits stay in the drum stem. */
#include "separate/separate.h"
#include "synth.h"
#include "test.h"

#include <string.h>

static void make_mix(d2m_audio *a, int64_t n, int rate)
{
    d2m_audio_alloc(a, n, 2, rate);
    float *mono = calloc(n, sizeof *mono);
    for (int k = 0; k < 12; k++) synth_hit(mono, n, (int64_t)(0.3 * rate) + k * rate / 2, rate, k % 2 ? SYNTH_SNARE : SYNTH_KICK, 0.5f);
    for (int64_t i = 0; i < n; i++) {
        float tone = 0.3f * (float)sin(2 * M_PI * 440.0 * i / rate);
        a->data[2 * i] = mono[i] + tone;
        a->data[2 * i + 1] = 0.8f * mono[i] + tone;
    }
    free(mono);
}

/* Energy of x (stereo interleaved) at hz, by correlation over [i0, i1). */
static double tone_level(const float *x, int64_t i0, int64_t i1, double hz, int rate)
{
    double re = 0, im = 0;
    for (int64_t i = i0; i < i1; i++) {
        re += x[2 * i] * cos(2 * M_PI * hz * i / rate);
        im += x[2 * i] * sin(2 * M_PI * hz * i / rate);
    }
    return 2 * sqrt(re * re + im * im) / (double)(i1 - i0);
}

static void test_blocks_equal_whole(void)
{
    const int rate = 44100;
    const int64_t n = rate * 6 + 123;
    d2m_audio mix, whole, blocks;
    make_mix(&mix, n, rate);
    hpss_params p = hpss_default_params();
    d2m_error err = {0};
    p.block_s = 100.0;
    CHECK(hpss_separate(&whole, &mix, &p, NULL, NULL, &err) == 0, "whole: %s", err.message);
    p.block_s = 0.7;
    CHECK(hpss_separate(&blocks, &mix, &p, NULL, NULL, &err) == 0, "blocks: %s", err.message);
    CHECK(whole.frames == n && whole.channels == 2 && whole.sample_rate == rate, "shape");
    double worst = 0;
    for (int64_t i = 0; i < n * 2; i++) worst = fmax(worst, fabs(whole.data[i] - blocks.data[i]));
    CHECK(worst < 1e-5, "block vs whole max difference %g", worst);
    d2m_audio_free(&whole);
    d2m_audio_free(&blocks);
    d2m_audio_free(&mix);
}

static void test_tone_leaves_hits_stay(void)
{
    const int rate = 44100;
    const int64_t n = rate * 6;
    d2m_audio mix, drums;
    make_mix(&mix, n, rate);
    hpss_params p = hpss_default_params();
    d2m_error err = {0};
    CHECK(hpss_separate(&drums, &mix, &p, NULL, NULL, &err) == 0, "%s", err.message);
    double before = tone_level(mix.data, rate, 5 * rate, 440.0, rate);
    double after = tone_level(drums.data, rate, 5 * rate, 440.0, rate);
    double db = 20 * log10(after / before);
    CHECK(db < -15, "steady tone reduced by %.1f dB (want < -15)", db);
    /* The hits keep their attacks: the first 50 ms after each hit. A kick's
     * tonal body (a decaying 50-110 Hz sine) is partly harmonic to HPSS, so
     * about 40% of the energy stays, against 1% of the tone. */
    double e_mix = 0, e_drums = 0;
    for (int k = 0; k < 12; k++) {
        int64_t at = (int64_t)(0.3 * rate) + k * rate / 2;
        for (int64_t i = at; i < at + rate / 20; i++) {
            double tone = 0.3 * sin(2 * M_PI * 440.0 * i / rate);
            double hit = mix.data[2 * i] - tone;
            e_mix += hit * hit;
            e_drums += (double)drums.data[2 * i] * drums.data[2 * i];
        }
    }
    CHECK(e_drums > 0.3 * e_mix, "hits keep %.0f%% of their energy", 100 * e_drums / e_mix);
    d2m_audio_free(&drums);
    d2m_audio_free(&mix);
}

static int cancel_at_half(void *user, double fraction)
{
    (void)user;
    return fraction >= 0.5;
}

static void test_parameters_and_cancel(void)
{
    d2m_audio mix, drums;
    make_mix(&mix, 44100 * 3, 44100);
    d2m_error err = {0};
    hpss_params p = hpss_default_params();
    p.harmonic_frames = 30; /* must be odd */
    CHECK(hpss_separate(&drums, &mix, &p, NULL, NULL, &err) == D2M_ERR_INVALID, "even kernel rejected");
    p = hpss_default_params();
    p.margin = 0.5f;
    CHECK(hpss_separate(&drums, &mix, &p, NULL, NULL, &err) == D2M_ERR_INVALID, "margin < 1 rejected");
    p = hpss_default_params();
    p.block_s = 0.3;
    int rc = hpss_separate(&drums, &mix, &p, cancel_at_half, NULL, &err);
    CHECK(rc == D2M_ERR_CANCELLED, "cancel honoured, got %d", rc);
    CHECK(drums.data == NULL, "no stem after cancel");
    d2m_audio_free(&mix);
}

int main(void)
{
    test_blocks_equal_whole();
    test_tone_leaves_hits_stay();
    test_parameters_and_cancel();
    return test_summary("test_hpss");
}
