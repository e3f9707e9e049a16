/* Drum stem of a song through the HPSS separator, as drum2midi computes it:
 *     stem IN.wav OUT.stem   -> OUT.stem: mono float32 samples, 44.1 kHz
 * (decode, hpss_separate with the default parameters, mixdown).
 * Build: see tools/classifier/README.md. */
#include "audio/audio.h"
#include "dsp/dsp.h"
#include "separate/separate.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: stem IN.wav OUT.stem\n");
        return 2;
    }
    d2m_audio a, stem;
    d2m_decode_info info;
    d2m_error err;
    if (audio_decode_file(&a, &info, argv[1], 0, &err)) {
        fprintf(stderr, "%s: %s\n", argv[1], err.message);
        return 1;
    }
    hpss_params hp = hpss_default_params();
    if (hpss_separate(&stem, &a, &hp, NULL, NULL, &err)) {
        fprintf(stderr, "%s: %s\n", argv[1], err.message);
        return 1;
    }
    float *mono = malloc((size_t)stem.frames * sizeof *mono);
    if (!mono) return 1;
    audio_mixdown(mono, &stem);
    FILE *o = fopen(argv[2], "wb");
    if (!o || fwrite(mono, 4, (size_t)stem.frames, o) != (size_t)stem.frames || fclose(o)) {
        fprintf(stderr, "%s: write failed\n", argv[2]);
        return 1;
    }
    free(mono);
    return 0;
}
