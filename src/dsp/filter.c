/* Butterworth low-pass as a cascade of biquads (RBJ cookbook formulas with
 * the Butterworth pole Qs), applied forward then backward (filtfilt) so the
 * low band keeps the timing of the original. Reflected edges reduce the
 * start-up transient. Single-threaded, in place; a pass may go block by
 * block (each section carries its state over), so a signal kept on disk is
 * filtered without loading it, with the same result. */
#include "dsp.h"

#include <math.h>
#include <string.h>

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

/* Direct form II transposed over x (n) with stride +1 or -1, continuing
 * from the state (z1, z2); the first call warms the state on its first
 * sample so a DC offset does not ring. */
static void run_section(float *x, int64_t n, const biquad *s, int backward, lowpass_section_state *st)
{
    if (n <= 0) return;
    double z1 = st->z1, z2 = st->z2;
    if (!st->started) {
        double x0 = backward ? x[n - 1] : x[0];
        double gain = (s->b0 + s->b1 + s->b2) / (1.0 + s->a1 + s->a2);
        double y0 = x0 * gain;
        z1 = y0 - s->b0 * x0;
        z2 = s->b2 * x0 - s->a2 * y0;
        st->started = 1;
    }
    for (int64_t k = 0; k < n; k++) {
        int64_t i = backward ? n - 1 - k : k;
        double in = x[i];
        double out = s->b0 * in + z1;
        z1 = s->b1 * in - s->a1 * out + z2;
        z2 = s->b2 * in - s->a2 * out;
        x[i] = (float)out;
    }
    st->z1 = z1;
    st->z2 = z2;
}

void filter_lowpass_start(lowpass_pass *p, double cutoff_hz, int sample_rate, int backward)
{
    memset(p, 0, sizeof *p);
    p->cutoff_hz = cutoff_hz;
    p->sample_rate = sample_rate;
    p->backward = backward;
}

void filter_lowpass_block(lowpass_pass *p, float *x, int64_t n)
{
    /* 4th-order Butterworth: pole pairs at Q = 1/(2 cos(pi/8)), 1/(2 cos(3pi/8)). */
    const double qs[2] = {0.54119610014619690, 1.30656296487637660};
    for (int k = 0; k < 2; k++) {
        biquad s = lowpass_section(p->cutoff_hz, p->sample_rate, qs[k]);
        run_section(x, n, &s, p->backward, &p->sections[k]);
    }
}

void filter_lowpass(float *x, int64_t n, double cutoff_hz, int sample_rate)
{
    lowpass_pass p;
    for (int backward = 0; backward < 2; backward++) {
        filter_lowpass_start(&p, cutoff_hz, sample_rate, backward);
        filter_lowpass_block(&p, x, n);
    }
}
