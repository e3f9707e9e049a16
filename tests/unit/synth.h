/* Synthetic drum sounds and patterns for the unit tests (deterministic). */
#ifndef D2M_TEST_SYNTH_H
#define D2M_TEST_SYNTH_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static uint32_t synth_rng = 12345;
static inline float synth_noise(void)
{
    synth_rng = synth_rng * 1664525u + 1013904223u;
    return (float)((synth_rng >> 8) / 8388608.0 - 1.0);
}

enum { SYNTH_KICK = 36, SYNTH_SNARE = 38, SYNTH_HAT = 42 };

/* Add one drum hit at sample `at` of x (n), scaled by gain. */
static inline void synth_hit(float *x, int64_t n, int64_t at, int rate, int drum, float gain)
{
    int64_t len = drum == SYNTH_HAT ? rate / 16 : drum == SYNTH_SNARE ? rate / 4 : rate / 3;
    float prev = 0.0f, prev2 = 0.0f;
    for (int64_t i = 0; i < len && at + i < n; i++) {
        double t = (double)i / rate, v;
        if (drum == SYNTH_KICK) {
            /* Pitch drop 110 -> 50 Hz, short click. */
            double phase = 2 * M_PI * (50 * t + 60 * (1 - exp(-t * 30)) / 30);
            v = sin(phase) * exp(-t * 12) + (i < rate / 500 ? 0.4 * synth_noise() : 0.0);
        } else if (drum == SYNTH_SNARE) {
            /* Body at 190 Hz plus wire noise band-passed (one-pole low-passes
             * at about 1.5 kHz minus one at about 200 Hz), as in real snares:
             * most of the noise between 0.5 and 6 kHz. */
            float w = synth_noise();
            prev = prev + 0.2f * (w - prev);
            prev2 = prev2 + 0.03f * (w - prev2);
            v = (2.0 * (prev - prev2) + 0.5 * sin(2 * M_PI * 190 * t)) * exp(-t * 22);
        } else {
            /* Second difference of noise: mostly above 5 kHz. */
            float w = synth_noise();
            v = (w - 2 * prev + prev2) * 0.25 * exp(-t * 70);
            prev2 = prev;
            prev = w;
        }
        /* A 5 ms fade at the end: a cut-off sound would click. */
        double fade = (double)(len - i) / (rate / 200.0);
        x[at + i] += (float)(gain * v * (fade < 1.0 ? fade : 1.0));
    }
}

#endif
