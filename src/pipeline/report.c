/* report.json: what a job found and wrote, for tools and the web page.
 * Schema version 1 (README "report.json"); keys are only ever added.
 * Built with cJSON; the caller frees the returned text. */
#include "pipeline.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cJSON *number_array(const double *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        /* Milliseconds are plenty and keep the file readable. */
        cJSON *x = cJSON_CreateNumber(round(v[i] * 1e4) / 1e4);
        if (!x) {
            cJSON_Delete(a);
            return NULL;
        }
        cJSON_AddItemToArray(a, x);
    }
    return a;
}

static const char *grid_name(int quantize)
{
    switch (quantize) {
    case 4: return "1/4";
    case 8: return "1/8";
    case 16: return "1/16";
    case 32: return "1/32";
    default: return "off";
    }
}

char *report_build(const d2m_result *r, const report_input *in)
{
    char *text = NULL;
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddStringToObject(root, "drum2midi", D2M_VERSION);

    cJSON *input = cJSON_AddObjectToObject(root, "input");
    if (!input) goto done;
    cJSON_AddStringToObject(input, "path", r->input_path);
    cJSON_AddNumberToObject(input, "duration_s", round(r->duration_s * 1e4) / 1e4);
    cJSON_AddNumberToObject(input, "sample_rate", r->sample_rate);
    cJSON_AddNumberToObject(input, "channels", r->channels);
    cJSON_AddStringToObject(input, "format", in->info->format);
    if (in->info->bits) cJSON_AddNumberToObject(input, "bits", in->info->bits);

    cJSON *sep = cJSON_AddObjectToObject(root, "separator");
    if (!sep) goto done;
    cJSON_AddStringToObject(sep, "name", r->separator);
    if (r->model[0]) cJSON_AddStringToObject(sep, "model", r->model);
    else cJSON_AddNullToObject(sep, "model");
    cJSON_AddStringToObject(sep, "device", "cpu");

    cJSON_AddNumberToObject(root, "tempo_bpm", round(r->tempo_bpm * 1000) / 1000);
    cJSON_AddNumberToObject(root, "tempo_confidence", round(in->beats->confidence * 1000) / 1000);
    cJSON_AddItemToObject(root, "beats_s", number_array(r->beats_s, r->n_beats));
    cJSON_AddItemToObject(root, "downbeats_s", number_array(r->downbeats_s, r->n_downbeats));

    cJSON *loop = cJSON_AddObjectToObject(root, "loop");
    if (!loop) goto done;
    cJSON_AddNumberToObject(loop, "start_s", round(r->loop_start_s * 1e4) / 1e4);
    cJSON_AddNumberToObject(loop, "end_s", round(r->loop_end_s * 1e4) / 1e4);
    cJSON_AddNumberToObject(loop, "bars", r->loop_bars);
    cJSON_AddNumberToObject(loop, "first_bar", r->loop_first_bar);
    cJSON_AddNumberToObject(loop, "low_end_activity", round(in->loop->score * 1e4) / 1e4);

    cJSON_AddStringToObject(root, "quantize", grid_name(r->quantize));
    cJSON_AddStringToObject(root, "classifier",
                            in->opt->classifier == D2M_CLASSIFIER_RATIO ? "ratio" : "bands");
    cJSON_AddNumberToObject(root, "ppq", in->ppq);

    cJSON *hits = cJSON_AddArrayToObject(root, "hits");
    if (!hits) goto done;
    for (int i = 0; i < r->n_hits; i++) {
        const d2m_hit *h = &r->hits[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) goto done;
        cJSON_AddItemToArray(hits, o);
        cJSON_AddNumberToObject(o, "time_s", round(h->time_s * 1e4) / 1e4);
        cJSON_AddStringToObject(o, "instrument", drum_name(h->note));
        cJSON_AddNumberToObject(o, "note", h->note);
        cJSON_AddNumberToObject(o, "velocity", h->velocity);
    }
    /* The loop's MIDI notes, so a viewer can draw the grid without parsing MIDI. */
    cJSON *notes = cJSON_AddArrayToObject(root, "loop_notes");
    if (!notes) goto done;
    for (int i = 0; i < in->loop_notes->n; i++) {
        const d2m_note *nt = &in->loop_notes->v[i];
        cJSON *o = cJSON_CreateObject();
        if (!o) goto done;
        cJSON_AddItemToArray(notes, o);
        cJSON_AddNumberToObject(o, "tick", (double)nt->tick);
        cJSON_AddNumberToObject(o, "duration", (double)nt->duration);
        cJSON_AddNumberToObject(o, "note", nt->note);
        cJSON_AddNumberToObject(o, "velocity", nt->velocity);
    }

    cJSON *files = cJSON_AddObjectToObject(root, "files");
    if (!files) goto done;
    cJSON_AddStringToObject(files, "drum_stem_wav", r->drum_stem_wav);
    cJSON_AddStringToObject(files, "loop_wav", r->loop_wav);
    cJSON_AddStringToObject(files, "loop_midi", r->loop_midi);
    cJSON_AddStringToObject(files, "full_midi", r->full_midi);
    cJSON_AddStringToObject(files, "stem_spectrogram_png", r->stem_spectrogram_png);
    cJSON_AddStringToObject(files, "loop_spectrogram_png", r->loop_spectrogram_png);
    cJSON_AddStringToObject(files, "report_json", r->report_file);
    for (int k = 0; k < r->n_other_stems; k++) {
        char key[64];
        snprintf(key, sizeof key, "%s_stem_wav", r->other_stem_names[k]);
        cJSON_AddStringToObject(files, key, r->other_stem_wavs[k]);
    }

    cJSON *t = cJSON_AddObjectToObject(root, "timings_s");
    if (!t) goto done;
    cJSON_AddNumberToObject(t, "decode", round(r->t_decode * 1e4) / 1e4);
    cJSON_AddNumberToObject(t, "separate", round(r->t_separate * 1e4) / 1e4);
    cJSON_AddNumberToObject(t, "analyze", round(r->t_analyze * 1e4) / 1e4);
    cJSON_AddNumberToObject(t, "write", round(r->t_write * 1e4) / 1e4);
    cJSON_AddNumberToObject(t, "total", round(r->t_total * 1e4) / 1e4);

    cJSON *warnings = cJSON_AddArrayToObject(root, "warnings");
    if (!warnings) goto done;
    const char *w = r->warnings;
    while (*w) {
        const char *end = strchr(w, '\n');
        size_t len = end ? (size_t)(end - w) : strlen(w);
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)len, w);
        cJSON_AddItemToArray(warnings, cJSON_CreateString(line));
        w += len + (end ? 1 : 0);
    }
    text = cJSON_Print(root);
done:
    cJSON_Delete(root);
    return text;
}
