/* Speed and memory of the native HTDemucs on the real model.
 *
 *   demucs_speed [--model PATH | --random] [--threads N]
 *                [--gemm auto|amx|avx512|blas|reference] [--runs N] [--stages]
 *
 * Runs one 7.8 s segment --runs times (after one untimed warm-up pass) and
 * prints the median seconds per segment, the achieved GFLOP/s (convolutions,
 * projections and attention, htdemucs_segment_flops), the real-time factor
 * and the peak RSS of the process (getrusage), weights included. --stages
 * adds the time spent between the engine's capture points. The model is
 * $DRUM2MIDI_MODEL or ~/.cache/drum2midi/htdemucs.onnx by default;
 * --random builds the released architecture with random weights instead
 * (the speed does not depend on the values), for machines without the file.
 */
#include "nn/weights.h"
#include "nn/weights_internal.h"
#include "separate/htdemucs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

typedef struct {
    double last;
    char names[64][32];
    double seconds[64];
    int n;
} stage_clock;

static void on_stage(void *user, const char *name, const float *data, int ndim,
                     const int64_t *shape)
{
    stage_clock *c = user;
    double now = d2m_now();
    int i = 0;
    while (i < c->n && strcmp(c->names[i], name) != 0) i++;
    if (i == c->n && c->n < 64) snprintf(c->names[c->n++], sizeof c->names[0], "%s", name);
    if (i < 64) c->seconds[i] += now - c->last;
    c->last = d2m_now();
}

typedef struct {
    d2m_weights *w;
    uint32_t seed;
    int failed;
} random_weights;

static void add_random(void *user, const char *name, int ndim, const int64_t *shape)
{
    random_weights *r = user;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *data = malloc((size_t)n * sizeof *data);
    if (!data) {
        r->failed = 1;
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        r->seed = r->seed * 1664525u + 1013904223u;
        data[i] = ((r->seed >> 9) / 8388608.0f - 0.5f) * 0.06f;
    }
    d2m_error err;
    if (weights_add(r->w, name, ndim, shape, data, &err)) r->failed = 1;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    char model[1024];
    const char *env = getenv("DRUM2MIDI_MODEL"), *home = getenv("HOME");
    snprintf(model, sizeof model, "%s", env && *env ? env : "");
    if (!model[0]) snprintf(model, sizeof model, "%s/.cache/drum2midi/htdemucs.onnx", home ? home : ".");
    int threads = 0, runs = 3, stages = 0, random = 0;
    nn_gemm_kind gemm = NN_GEMM_AUTO;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            snprintf(model, sizeof model, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--stages"))
            stages = 1;
        else if (!strcmp(argv[i], "--random"))
            random = 1;
        else if (!strcmp(argv[i], "--gemm") && i + 1 < argc) {
            const char *g = argv[++i];
            gemm = !strcmp(g, "avx512") ? NN_GEMM_AVX512 : !strcmp(g, "amx") ? NN_GEMM_AMX
                   : !strcmp(g, "blas") ? NN_GEMM_BLAS
                   : !strcmp(g, "reference") ? NN_GEMM_REFERENCE : NN_GEMM_AUTO;
        } else {
            fprintf(stderr, "usage: %s [--model PATH | --random] [--threads N] "
                            "[--gemm auto|amx|avx512|blas|reference] [--runs N] [--stages]\n", argv[0]);
            return 2;
        }
    }
    if (runs < 1 || runs > 100) runs = 3;

    d2m_error err = {0};
    d2m_weights *w = NULL;
    double t0 = d2m_now();
    if (random) {
        random_weights r = {weights_new(), 1, 0};
        if (!r.w || htdemucs_expected_tensors(NULL, add_random, &r, &err) < 0 || r.failed) {
            fprintf(stderr, "cannot build random weights: %s\n", err.message);
            return 1;
        }
        w = r.w;
        snprintf(model, sizeof model, "(random weights)");
    } else if (weights_load(&w, model, &err)) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    double load_s = d2m_now() - t0;
    nn_backend *be = nn_backend_cpu_new(threads, gemm, &err);
    htdemucs *m = NULL;
    if (!be || htdemucs_new_with_backend(&m, w, be, &err)) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    int64_t L = htdemucs_segment_length(m);
    int S = htdemucs_sources(m);
    float *in = malloc((size_t)2 * L * sizeof *in), *out = malloc((size_t)S * 2 * L * sizeof *out);
    if (!in || !out) return 1;
    /* A deterministic chord with noise; the speed does not depend on it. */
    uint32_t seed = 1;
    for (int64_t i = 0; i < L; i++) {
        seed = seed * 1664525u + 1013904223u;
        float noise = ((seed >> 9) / 8388608.0f - 0.5f) * 0.2f;
        float v = (float)(0.3 * sin(0.0313 * i) + 0.2 * sin(0.0471 * i)) + noise;
        in[i] = v;
        in[L + i] = 0.8f * v - noise;
    }
    stage_clock clock = {0};
    if (stages) htdemucs_set_capture(m, on_stage, &clock);
    htdemucs_forward(m, out, in); /* warm-up: first touches of every buffer */
    memset(&clock, 0, sizeof clock);
    double *times = malloc((size_t)runs * sizeof *times);
    double cpu0 = cpu_seconds();
    for (int r = 0; r < runs; r++) {
        clock.last = d2m_now();
        double t = d2m_now();
        htdemucs_forward(m, out, in);
        times[r] = d2m_now() - t;
    }
    double cpu_per_run = (cpu_seconds() - cpu0) / runs;
    qsort(times, (size_t)runs, sizeof *times, compare_double);
    double median = times[runs / 2], flops = htdemucs_segment_flops(m);
    double seg_s = (double)L / htdemucs_samplerate(m);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("model %s (loaded in %.2f s), backend %s, %d threads\n", model, load_s,
           htdemucs_backend_name(m), be->n_threads);
    printf("segment %.2f s of audio: %.3f s per segment (median of %d; best %.3f)\n", seg_s,
           median, runs, times[0]);
    printf("%.1f GFLOP per segment, %.1f GFLOP/s, %.2fx real time\n", flops * 1e-9,
           flops * 1e-9 / median, seg_s / median);
    /* On a shared machine the wall time includes waiting for the CPU; the
     * process's CPU time over the thread count is what it would take alone. */
    printf("CPU time %.3f s per segment (%.3f s per thread, %.1f GFLOP/s per thread)\n",
           cpu_per_run, cpu_per_run / be->n_threads, flops * 1e-9 / cpu_per_run);
    printf("activations %.0f MB, peak RSS %.0f MB\n", htdemucs_activation_bytes(m) / 1048576.0,
           ru.ru_maxrss / 1024.0);
    if (stages) {
        printf("time before each capture point (mean per segment):\n");
        for (int i = 0; i < clock.n; i++)
            if (clock.seconds[i] / runs >= 0.0005)
                printf("  %-16s %.3f s\n", clock.names[i], clock.seconds[i] / runs);
    }
    free(times);
    free(in);
    free(out);
    htdemucs_free(m);
    nn_backend_free(be);
    weights_free(w);
    return 0;
}
