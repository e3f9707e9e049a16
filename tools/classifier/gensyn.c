/* Synthetic-kit training loops with truth (sounds of tests/unit/synth.h):
 *     gensyn SEED OUT_PREFIX   -> OUT_PREFIX.stem (mono float32, 44.1 kHz), OUT_PREFIX.truth.json
 * Deterministic in SEED. Build: gcc -O2 -I tests/unit tools/classifier/gensyn.c -lm */
#include "synth.h"
#include <stdio.h>
#include <string.h>
#define RATE 44100
static uint32_t r = 1;
static double urand(void) { r = r * 1103515245u + 12345u; return ((r >> 8) & 0xffffff) / 16777216.0; }
int main(int argc, char **argv)
{
    r = (uint32_t)atoi(argv[1]) * 7919u + 17u;
    synth_rng = 12345u + (uint32_t)atoi(argv[1]);
    double bpm = 70 + 100 * urand(), beat = 60.0 / bpm, dur = 40.0;
    int64_t n = (int64_t)(dur * RATE);
    float *x = calloc(n, sizeof *x);
    char path[512]; snprintf(path, sizeof path, "%s.truth.json", argv[2]);
    FILE *t = fopen(path, "w");
    fprintf(t, "{\"bpm\": %.3f, \"downbeats_s\": [0.0], \"beats_s\": [0.0], \"groove_sections_s\": [], \"hits\": [", bpm);
    /* a 2-bar pattern on 16ths, changed every 4 bars */
    int pat[3][32]; int first = 1;
    double hatp = 0.3 + 0.7 * urand(), kickp = 0.1 + 0.3 * urand(), snp = 0.1 + 0.25 * urand();
    for (int bar = 0; bar * 4 * beat < dur - 1.0; bar++) {
        if (bar % 4 == 0)
            for (int k = 0; k < 32; k++) {
                pat[0][k] = (k % 16 == 0) || urand() < (k % 2 ? kickp * 0.5 : kickp);
                pat[1][k] = (k % 16 == 4 || k % 16 == 12) ? urand() < 0.9 : urand() < snp * 0.5;
                pat[2][k] = (k % 2 == 0) ? urand() < hatp + 0.3 : urand() < hatp * 0.6;
            }
        for (int k = 0; k < 16; k++) {
            int pk = (bar % 2) * 16 + k;
            double at_s = (bar * 4 + k * 0.25) * beat + 0.004 * (urand() - 0.5);
            if (at_s < 0) at_s = 0;
            int64_t at = (int64_t)(at_s * RATE);
            if (at >= n) break;
            const int drums[3] = {SYNTH_KICK, SYNTH_SNARE, SYNTH_HAT};
            const char *cls[3] = {"kick", "snare", "hihat"};
            for (int d = 0; d < 3; d++) {
                if (!pat[d][pk]) continue;
                float g = (float)(d == 0 ? 0.4 + 0.5 * urand() : d == 1 ? 0.15 + 0.6 * urand() : 0.08 + 0.35 * urand());
                synth_hit(x, n, at, RATE, drums[d], g);
                fprintf(t, "%s{\"time_s\": %.6f, \"note\": %d, \"class\": \"%s\", \"velocity\": %d}", first ? "" : ", ", at_s, drums[d], cls[d], (int)(g * 127));
                first = 0;
            }
            /* a bass-like tone now and then: pitched, not a drum */
            if (urand() < 0.15) {
                double f0 = 41.2 * pow(2.0, (int)(urand() * 24) / 12.0), len = 0.1 + 0.3 * urand();
                float g = (float)(0.1 + 0.3 * urand());
                for (int64_t i = 0; i < (int64_t)(len * RATE) && at + i < n; i++) {
                    double tt = (double)i / RATE, env = fmin(1.0, tt / 0.005) * exp(-tt * 3) * fmin(1.0, (len - tt) / 0.01);
                    x[at + i] += (float)(g * env * (sin(2 * M_PI * f0 * tt) + 0.5 * sin(4 * M_PI * f0 * tt) + 0.25 * sin(6 * M_PI * f0 * tt)));
                }
            }
        }
    }
    fprintf(t, "]}\n");
    fclose(t);
    float peak = 0; for (int64_t i = 0; i < n; i++) peak = fmaxf(peak, fabsf(x[i]));
    for (int64_t i = 0; i < n; i++) x[i] *= 0.9f / peak;
    snprintf(path, sizeof path, "%s.stem", argv[2]);
    FILE *o = fopen(path, "wb"); fwrite(x, 4, n, o); fclose(o);
    return 0;
}
