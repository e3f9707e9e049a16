/* The separation step: pick the separator the options ask for (Demucs when
 * its weights are found, else the built-in HPSS with a warning), run it on
 * the mix and hand back the drum stem, plus Demucs' other stems when asked.
 * Nothing after this step sees the mix. Single job; the separators use
 * worker threads inside.
 *
 * The engine keeps the last Demucs model it built (weights and compute
 * buffers), so a batch or a server loads the weights once: the model is
 * rebuilt only when a job names another file or another thread count. */
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

static int run_demucs(separation *out, d2m_engine *e, const d2m_audio *mix, const char *model_path,
                      const d2m_options *opt, separate_progress_fn progress, void *user,
                      d2m_error *err)
{
    htdemucs *m = NULL;
    d2m_audio stems[HTDEMUCS_MAX_SOURCES];
    memset(stems, 0, sizeof stems);
    int rc = engine_model(e, &m, model_path, opt->threads, err);
    if (rc) goto done;
    int drums = htdemucs_source_index(m, "drums");
    if (drums < 0) {
        rc = d2m_fail(err, D2M_ERR_FORMAT, "%s: the model has no drums source", model_path);
        goto done;
    }
    int n = htdemucs_sources(m);
    demucs_apply_params ap = demucs_apply_default_params();
    ap.shifts = opt->shifts;
    ap.seed = opt->seed;
    ap.sources = opt->all_stems ? (1u << n) - 1u : 1u << drums;
    if ((rc = demucs_apply(m, stems, mix, &ap, progress, user, err))) goto done;
    out->drums = stems[drums];
    memset(&stems[drums], 0, sizeof stems[drums]);
    for (int s = 0; s < n && opt->all_stems; s++) {
        if (s == drums) continue;
        int k = out->n_others++;
        out->others[k] = stems[s];
        memset(&stems[s], 0, sizeof stems[s]);
        snprintf(out->other_names[k], sizeof out->other_names[k], "%s", htdemucs_source_name(m, s));
    }
    const char *base = strrchr(model_path, '/');
    snprintf(out->model, sizeof out->model, "%.200s", base ? base + 1 : model_path);
    snprintf(out->name, sizeof out->name, "htdemucs");
done:
    for (int s = 0; s < HTDEMUCS_MAX_SOURCES; s++) d2m_audio_free(&stems[s]);
    return rc;
}

int pipeline_separate(separation *out, d2m_engine *e, const d2m_audio *mix, const d2m_options *opt,
                      separate_progress_fn progress, void *user, d2m_error *err)
{
    memset(out, 0, sizeof *out);
    if (opt->separator == D2M_SEPARATOR_NONE) {
        snprintf(out->name, sizeof out->name, "none");
        int rc = d2m_audio_alloc(&out->drums, mix->frames, mix->channels, mix->sample_rate);
        if (rc) return d2m_fail(err, rc, "out of memory for the drum stem");
        memcpy(out->drums.data, mix->data, (size_t)(mix->frames * mix->channels) * sizeof(float));
        return 0;
    }
    if (opt->separator != D2M_SEPARATOR_HPSS) {
        char path[1024];
        int found = model_find(path, sizeof path, opt->model_path, err);
        if (found < 0) return found;
        if (found) return run_demucs(out, e, mix, path, opt, progress, user, err);
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
    return hpss_separate(&out->drums, mix, &hp, progress, user, err);
}

void separation_free(separation *s)
{
    if (!s) return;
    d2m_audio_free(&s->drums);
    for (int k = 0; k < s->n_others; k++) d2m_audio_free(&s->others[k]);
    memset(s, 0, sizeof *s);
}
