/* Onset candidates and their classifier features, exactly as
 * src/drums/transcribe.c computes them (it is included, to reach its static
 * functions):
 *     fdump IN.stem OUT.f
 * IN.stem: mono float32 samples at 44.1 kHz (stem.c, gensyn.c or a Demucs
 * drum stem). OUT.f: int32 count, int32 N_FEATURES, then per onset a double
 * frame index (hop 256) and N_FEATURES doubles.
 * Build: see tools/classifier/README.md. */
#include "drums/transcribe.c"

#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: fdump IN.stem OUT.f\n");
        return 2;
    }
    FILE *s = fopen(argv[1], "rb");
    if (!s) return 1;
    fseek(s, 0, SEEK_END);
    long bytes = ftell(s);
    fseek(s, 0, SEEK_SET);
    int64_t n = bytes / 4;
    float *x = malloc(bytes ? bytes : 4);
    if (fread(x, 4, n, s) != (size_t)n) return 1;
    fclose(s);
    d2m_error err;
    d2m_features f;
    if (features_compute(&f, x, n, 44100, 1024, 256, &err)) {
        fprintf(stderr, "%s: %s\n", argv[1], err.message);
        return 1;
    }
    float *odf = malloc(f.frames * sizeof *odf), *scratch = malloc(f.frames * sizeof *scratch);
    float *sc2 = malloc(f.frames * sizeof *sc2);
    int64_t *on = malloc(f.frames * sizeof *on);
    onset_strength(odf, &f);
    int64_t c = pick_peaks(on, odf, &f, scratch);
    song_levels sl;
    for (int b = 0; b < D2M_NBANDS; b++) {
        sl.power[b] = band_mean_power(&f, b, 0, f.frames);
        double fl = 0;
        for (int64_t t = 0; t < f.frames; t++) fl += f.band_flux[b][t];
        sl.flux[b] = fl / f.frames;
    }
    for (int64_t i = 0; i < c; i++) scratch[i] = odf[on[i]];
    sl.strength = quantile(scratch, c, 0.9, sc2);
    double *feat = malloc((c ? c : 1) * N_FEATURES * sizeof *feat);
    onset_features(feat, &f, odf, on, c, &sl);
    FILE *o = fopen(argv[2], "wb");
    if (!o) return 1;
    int32_t hdr[2] = {(int32_t)c, N_FEATURES};
    fwrite(hdr, 4, 2, o);
    for (int64_t i = 0; i < c; i++) {
        double t = (double)on[i];
        fwrite(&t, 8, 1, o);
        fwrite(feat + i * N_FEATURES, 8, N_FEATURES, o);
    }
    return fclose(o) ? 1 : 0;
}
