/* The real htdemucs weights against PyTorch: separate ../shared/demucs/real
 * clip_mix.npy (10 s, two segments) and compare every stem with
 * clip_out.npy (separate.py --shifts 0 on PyTorch) at >= 80 dB SNR, or,
 * for the near-silent vocals, an error below 1e-10 of the mix energy.
 * Needs the model file: $DRUM2MIDI_MODEL, else
 * ~/.cache/drum2midi/htdemucs.onnx (scripts/fetch-model); skips (passing)
 * when it or ../shared is absent. */
#include "nn/weights.h"
#include "separate/htdemucs.h"
#include "test.h"

#include <string.h>

/* A strict .npy reader: version 1.0, '<f4', C order. */
static float *npy_load(const char *path, int64_t *shape, int *ndim)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char head[10];
    char text[1024];
    float *data = NULL;
    int64_t n = 1;
    *ndim = 0;
    int ok = fread(head, 1, 10, f) == 10 && memcmp(head, "\x93NUMPY\x01\x00", 8) == 0;
    size_t hlen = ok ? (size_t)head[8] | (size_t)head[9] << 8 : 0;
    ok = ok && hlen < sizeof text && fread(text, 1, hlen, f) == hlen;
    if (ok) {
        text[hlen] = 0;
        const char *prefix = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
        ok = strncmp(text, prefix, strlen(prefix)) == 0;
        const char *s = text + strlen(prefix);
        while (ok && *s != ')') {
            char *end;
            long long v = strtoll(s, &end, 10);
            ok = end != s && v >= 0 && *ndim < 6;
            if (!ok) break;
            shape[(*ndim)++] = v;
            n *= v;
            s = end;
            if (*s == ',') s++;
            if (*s == ' ') s++;
        }
        ok = ok && strncmp(s, "), }", 4) == 0;
    }
    if (ok) {
        data = malloc((size_t)n * sizeof *data + 1);
        ok = data && fread(data, sizeof *data, (size_t)n, f) == (size_t)n && fgetc(f) == EOF;
    }
    fclose(f);
    if (!ok) {
        free(data);
        return NULL;
    }
    return data;
}

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

    int64_t mix_shape[6], out_shape[6];
    int mix_dims, out_dims;
    snprintf(path, sizeof path, "%s/clip_mix.npy", dir);
    float *mix = npy_load(path, mix_shape, &mix_dims);
    snprintf(path, sizeof path, "%s/clip_out.npy", dir);
    float *ref = npy_load(path, out_shape, &out_dims);
    CHECK(mix && ref && mix_dims == 2 && out_dims == 3 && out_shape[0] == 4 &&
              out_shape[2] == mix_shape[1],
          "clip_mix.npy / clip_out.npy");
    if (mix && ref) {
        int64_t n = mix_shape[1];
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
    free(mix);
    free(ref);
    htdemucs_free(m);
    weights_free(w);
    return test_summary("test_demucs_real");
}
