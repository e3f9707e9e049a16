/* Butterworth low-pass as a cascade of biquads (RBJ cookbook formulas with
 * the Butterworth pole Qs), applied forward then backward (filtfilt) so the
 * low band keeps the timing of the original. Reflected edges reduce the
 * start-up transient. Single-threaded, in place. */
#include "dsp.h"

#include <math.h>

typedef struct {
    double b0, b1, b2, a1, a2;
} biquad;

static biquad lowpass_section(double cutoff_hz, int sample_rate, double q)
{
    double w0 = 2.0 * M_PI * cutoff_hz / sample_rate;
    double alpha = sin(w0) / (2.0 * q), c = cos(w0);
    double a0 = 1.0 + alpha;
    biquad s = {(1.0 - c) / 2.0 / a0, (1.0 - c) / a0, (1.0 - c) / 2.0 / a0, -2.0 * c / a0,
                (1.0 - alpha) / a0};
    return s;
}

/* Direct form II transposed over x (n) with stride +1 or -1, state warmed
 * on the first sample so a DC offset does not ring. */
static void run_section(float *x, int64_t n, const biquad *s, int backward)
{
    if (n <= 0) return;
    double x0 = backward ? x[n - 1] : x[0];
    double gain = (s->b0 + s->b1 + s->b2) / (1.0 + s->a1 + s->a2);
    double y0 = x0 * gain;
    double z1 = y0 - s->b0 * x0;
    double z2 = s->b2 * x0 - s->a2 * y0;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = backward ? n - 1 - k : k;
        double in = x[i];
        double out = s->b0 * in + z1;
        z1 = s->b1 * in - s->a1 * out + z2;
        z2 = s->b2 * in - s->a2 * out;
        x[i] = (float)out;
    }
}

void filter_lowpass(float *x, int64_t n, double cutoff_hz, int sample_rate)
{
    /* 4th-order Butterworth: pole pairs at Q = 1/(2 cos(pi/8)), 1/(2 cos(3pi/8)). */
    const double qs[2] = {0.54119610014619690, 1.30656296487637660};
    for (int pass = 0; pass < 2; pass++)
        for (int k = 0; k < 2; k++) {
            biquad s = lowpass_section(cutoff_hz, sample_rate, qs[k]);
            run_section(x, n, &s, pass);
        }
}
