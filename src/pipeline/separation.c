/* The separation step: pick the separator the options ask for (Demucs when
 * its weights are found, else the built-in HPSS with a warning), run it on
 * the mix (read through an audio_reader) and hand the drum stem, plus
 * Demucs' other stems when asked, to the caller's writer as they are made.
 * Nothing after this step sees the mix. Single job; the separators use
 * worker threads inside.
 *
 * The engine keeps the last Demucs model it built, so a batch or a server
 * loads the weights once: the model is rebuilt only when a job names another
 * file or another thread count. Its activation buffers are given back after
 * each separation (the analysis that follows needs the memory) and come
 * back with the next one. */
#include "pipeline.h"

#include "separate/htdemucs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct d2m_engine {
    char model_path[1024];   /* the file the cached model came from; "" = none */
    struct stat model_stat;  /* its identity then: a replaced file is read again */
    int threads;
    d2m_weights *weights;
    htdemucs *model;
};

int d2m_engine_new(d2m_engine **out, d2m_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
    return 0;
}

static void engine_drop_model(d2m_engine *e)
{
    htdemucs_free(e->model);
    weights_free(e->weights);
    e->model = NULL;
    e->weights = NULL;
    e->model_path[0] = '\0';
}

void d2m_engine_free(d2m_engine *e)
{
    if (!e) return;
    engine_drop_model(e);
    free(e);
}

int d2m_engine_loaded(const d2m_engine *e)
{
    return e && e->model != NULL;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* The model for model_path at opt->threads: the cached one when it is the
 * same file (path and identity) and thread count, else loaded afresh. */
static int engine_model(d2m_engine *e, htdemucs **model, const char *model_path, int threads,
                        d2m_error *err)
{
    struct stat st;
    if (stat(model_path, &st) != 0) memset(&st, 0, sizeof st);
    if (e->model && !strcmp(e->model_path, model_path) && e->threads == threads &&
        same_file(&e->model_stat, &st)) {
        *model = e->model;
        return 0;
    }
    engine_drop_model(e);
    int rc = weights_load(&e->weights, model_path, err);
    if (rc) return rc;
    if ((rc = htdemucs_new(&e->model, e->weights, threads, err))) {
        d2m_error inner = *err;
        d2m_fail(err, rc, "%s: %s", model_path, inner.message);
        engine_drop_model(e);
        return rc;
    }
    snprintf(e->model_path, sizeof e->model_path, "%s", model_path);
    e->model_stat = st;
    e->threads = threads;
    *model = e->model;
    return 0;
}

/* Demucs' stems, by source index, on to the pipeline's writer by name. */
typedef struct {
    htdemucs *model;
    stem_write_fn write;
    void *user;
} demucs_output;

static int write_demucs_stem(void *user, int source, const float *x, int64_t frames,
                             d2m_error *err)
{
    demucs_output *o = user;
    return o->write(o->user, htdemucs_source_name(o->model, source), x, frames, err);
}

static int run_demucs(separation *out, d2m_engine *e, const audio_reader *mix,
                      const char *model_path, const d2m_options *opt, stem_write_fn write,
                      void *write_user, separate_progress_fn progress, void *user, d2m_error *err)
{
    htdemucs *m = NULL;
    int rc = engine_model(e, &m, model_path, opt->threads, err);
    if (rc) return rc;
    int drums = htdemucs_source_index(m, "drums");
    if (drums < 0) return d2m_fail(err, D2M_ERR_FORMAT, "%s: the model has no drums source", model_path);
    int n = htdemucs_sources(m);
    for (int s = 0; s < n && opt->all_stems; s++) {
        if (s == drums) continue;
        int k = out->n_others++;
        snprintf(out->other_names[k], sizeof out->other_names[k], "%s", htdemucs_source_name(m, s));
    }
    const char *base = strrchr(model_path, '/');
    snprintf(out->model, sizeof out->model, "%.200s", base ? base + 1 : model_path);
    snprintf(out->name, sizeof out->name, "htdemucs");
    demucs_apply_params ap = demucs_apply_default_params();
    ap.shifts = opt->shifts;
    ap.seed = opt->seed;
    ap.sources = opt->all_stems ? (1u << n) - 1u : 1u << drums;
    demucs_output o = {m, write, write_user};
    demucs_stem_writer writer = {write_demucs_stem, &o};
    rc = demucs_apply_stream(m, mix, &writer, &ap, progress, user, err);
    /* The model stays loaded for the next song; its activations (about
     * two thirds of its memory) are not needed until then. */
    htdemucs_release_activations(m);
    return rc;
}

typedef struct {
    stem_write_fn write;
    void *user;
} drums_output;

static int write_drums(void *user, const float *x, int64_t frames, d2m_error *err)
{
    drums_output *o = user;
    return o->write(o->user, "drums", x, frames, err);
}

/* The mix itself as the drum stem, a block at a time. */
static int copy_mix(const audio_reader *mix, stem_write_fn write, void *write_user, d2m_error *err)
{
    enum { BLOCK = 1 << 16 };
    float *x = malloc((size_t)BLOCK * (size_t)mix->channels * sizeof *x); /* (BLOCK, channels) */
    if (!x) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory for the drum stem");
    int rc = 0;
    for (int64_t first = 0; first < mix->frames && !rc; first += BLOCK) {
        int64_t count = mix->frames - first < BLOCK ? mix->frames - first : BLOCK;
        rc = mix->read(mix->user, x, first, count, err);
        if (rc == 0) rc = write(write_user, "drums", x, count, err);
    }
    free(x);
    return rc;
}

int pipeline_separate(separation *out, d2m_engine *e, const audio_reader *mix,
                      const d2m_options *opt, stem_write_fn write, void *write_user,
                      separate_progress_fn progress, void *user, d2m_error *err)
{
    memset(out, 0, sizeof *out);
    if (opt->separator == D2M_SEPARATOR_NONE) {
        snprintf(out->name, sizeof out->name, "none");
        return copy_mix(mix, write, write_user, err);
    }
    if (opt->separator != D2M_SEPARATOR_HPSS) {
        char path[1024];
        int found = model_find(path, sizeof path, opt->model_path, err);
        if (found < 0) return found;
        if (found) return run_demucs(out, e, mix, path, opt, write, write_user, progress, user, err);
        if (opt->separator == D2M_SEPARATOR_DEMUCS)
            return d2m_fail(err, D2M_ERR_IO,
                            "no Demucs weights found: run scripts/fetch-model, or pass --model PATH");
        snprintf(out->warning, sizeof out->warning,
                 "no Demucs weights found (run scripts/fetch-model); used the built-in HPSS "
                 "separator, whose drum stem keeps more of the other instruments");
    } else {
        snprintf(out->warning, sizeof out->warning,
                 "separated with the built-in HPSS separator: fast, but its drum stem keeps "
                 "more of the other instruments than Demucs'");
    }
    snprintf(out->name, sizeof out->name, "hpss");
    hpss_params hp = hpss_default_params();
    drums_output o = {write, write_user};
    return hpss_separate_stream(mix, write_drums, &o, &hp, progress, user, err);
}
