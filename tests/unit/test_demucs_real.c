/* The real htdemucs weights against PyTorch: separate ../shared/demucs/real
 * clip_mix.npy (10 s, two segments) and compare every stem with
 * clip_out.npy (separate.py --shifts 0 on PyTorch) at >= 80 dB SNR, or,
 * for the near-silent vocals, an error below 1e-10 of the mix energy.
 * Needs the model file: $DRUM2MIDI_MODEL, else
 * ~/.cache/drum2midi/htdemucs.onnx (scripts/fetch-model); skips (passing)
 * when it or ../shared is absent. */
#include "nn/weights.h"
#include "separate/htdemucs.h"
#include "npy.h"
#include "test.h"

#include <string.h>

int main(void)
{
    char model[1024], dir[1024], path[1200];
    const char *env = getenv("DRUM2MIDI_MODEL"), *home = getenv("HOME");
    if (env && *env)
        snprintf(model, sizeof model, "%s", env);
    else
        snprintf(model, sizeof model, "%s/.cache/drum2midi/htdemucs.onnx", home ? home : ".");
    const char *root = getenv("D2M_SOURCE_DIR");
    snprintf(dir, sizeof dir, "%s/../shared/demucs/real", root ? root : ".");
    FILE *probe = fopen(model, "rb");
    if (!probe) {
        printf("test_demucs_real: skipped, no model at %s (run scripts/fetch-model)\n", model);
        return 0;
    }
    fclose(probe);
    snprintf(path, sizeof path, "%s/clip_out.npy", dir);
    probe = fopen(path, "rb");
    if (!probe) {
        printf("test_demucs_real: skipped, %s is absent\n", path);
        return 0;
    }
    fclose(probe);

    d2m_error err = {0};
    d2m_weights *w = NULL;
    int rc = weights_load(&w, model, &err);
    CHECK(rc == 0, "loading %s: %s", model, err.message);
    if (rc) return test_summary("test_demucs_real");
    htdemucs *m = NULL;
    rc = htdemucs_new(&m, w, 0, &err);
    CHECK(rc == 0, "htdemucs_new: %s", err.message);
    if (rc) {
        weights_free(w);
        return test_summary("test_demucs_real");
    }
    CHECK(htdemucs_segment_length(m) == 343980, "segment %lld",
          (long long)htdemucs_segment_length(m));

    npy mix_npy, ref_npy;
    snprintf(path, sizeof path, "%s/clip_mix.npy", dir);
    int loaded = npy_load(&mix_npy, path) == 0;
    snprintf(path, sizeof path, "%s/clip_out.npy", dir);
    loaded = npy_load(&ref_npy, path) == 0 && loaded;
    const float *mix = mix_npy.data, *ref = ref_npy.data;
    CHECK(loaded && mix_npy.ndim == 2 && ref_npy.ndim == 3 && ref_npy.shape[0] == 4 &&
              ref_npy.shape[2] == mix_npy.shape[1],
          "clip_mix.npy / clip_out.npy");
    if (loaded) {
        int64_t n = mix_npy.shape[1];
        d2m_audio audio;
        d2m_audio_alloc(&audio, n, 2, 44100);
        for (int64_t i = 0; i < n; i++)
            for (int c = 0; c < 2; c++) audio.data[2 * i + c] = mix[c * n + i];
        d2m_audio stems[HTDEMUCS_MAX_SOURCES];
        demucs_apply_params p = demucs_apply_default_params();
        p.sources = 0xf;
        double t0 = d2m_now();
        rc = demucs_apply(m, stems, &audio, &p, NULL, NULL, &err);
        double seconds = d2m_now() - t0;
        CHECK(rc == 0, "demucs_apply: %s", err.message);
        printf("  separated %.1f s in %.1f s (%s)\n", n / 44100.0, seconds,
               htdemucs_backend_name(m));
        if (rc == 0) {
            double mix_e = 0;
            for (int64_t i = 0; i < 2 * n; i++) mix_e += (double)mix[i] * mix[i];
            for (int s = 0; s < 4; s++) {
                double e = 0, r = 0;
                for (int c = 0; c < 2; c++)
                    for (int64_t i = 0; i < n; i++) {
                        double want = ref[(s * 2 + c) * n + i];
                        double d = stems[s].data[2 * i + c] - want;
                        e += d * d;
                        r += want * want;
                    }
                double snr = 10 * log10(r / (e > 0 ? e : 1e-300));
                printf("  %-6s SNR %.1f dB (stem/mix energy %.3g, error/mix %.3g)\n",
                       htdemucs_source_name(m, s), snr, r / mix_e, e / mix_e);
                if (r < 0.01 * mix_e)
                    CHECK(e <= 1e-10 * mix_e, "%s: error energy %g > 1e-10 * mix energy %g",
                          htdemucs_source_name(m, s), e, mix_e);
                else
                    CHECK(snr >= 80.0, "%s: SNR %.2f dB < 80 dB", htdemucs_source_name(m, s),
                          snr);
                d2m_audio_free(&stems[s]);
            }
        }
        d2m_audio_free(&audio);
    }
    npy_free(&mix_npy);
    npy_free(&ref_npy);
    htdemucs_free(m);
    weights_free(w);
    return test_summary("test_demucs_real");
}
