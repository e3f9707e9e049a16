/* The whole job for one song: decode -> resample -> separate -> features ->
 * tempo -> loop -> transcribe -> quantize -> write. Every stage after
 * separation reads the drum stem only, never the mix.
 *
 * Memory: the decoded file, its 44.1 kHz stereo copy (none when the file is
 * already that) and the drum stem are held whole, 21 MB per minute of audio
 * each; the file is freed after resampling, the mix after separation, so
 * the peak is two of them plus O(block) for the separator and O(frames) for
 * the features, about 47 MB per minute + 100 MB: bounded by --max-minutes.
 *
 * Threading: one job per call; the separator uses worker threads inside.
 */
#include "pipeline.h"

#include "image/image.h"
#include "midi/smf.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RATE 44100
#define ANALYSIS_FFT 1024
#define ANALYSIS_HOP 256
#define LOW_CUTOFF_HZ 200.0
#define SILENCE_PEAK 1e-4 /* -80 dBFS */

d2m_options d2m_default_options(void)
{
    d2m_options o = {.quantize = 16,
                     .bars = 4,
                     .tempo_bpm = 0.0,
                     .separator = D2M_SEPARATOR_AUTO,
                     .shifts = 1,
                     .seed = 0,
                     .classifier = D2M_CLASSIFIER_BANDS,
                     .ppq = 480,
                     .max_duration_s = 30.0 * 60.0};
    return o;
}

void d2m_result_free(d2m_result *r)
{
    if (!r) return;
    free(r->beats_s);
    free(r->downbeats_s);
    free(r->hits);
    free(r->report_json);
    memset(r, 0, sizeof *r);
}

/* Progress bookkeeping: stage weights in the whole job. */
typedef struct {
    d2m_progress_fn fn;
    void *user;
    const char *stage;
    double base, weight;
    int cancelled;
} progress_state;

static int report_progress(progress_state *p, const char *stage, double base, double weight,
                           double fraction)
{
    p->stage = stage;
    p->base = base;
    p->weight = weight;
    if (p->fn && p->fn(p->user, stage, fraction, base + weight * fraction) != 0) p->cancelled = 1;
    return p->cancelled;
}

static int separate_progress(void *user, double fraction)
{
    progress_state *p = user;
    return report_progress(p, "separate", p->base, p->weight, fraction);
}

static void add_warning(d2m_result *r, const char *msg)
{
    size_t len = strlen(r->warnings);
    snprintf(r->warnings + len, sizeof r->warnings - len, "%s%s", len ? "\n" : "", msg);
}

/* The song's name for file names: basename without extension, limited to
 * characters every file system and DAW accepts. */
static void song_name(char *dst, size_t n, const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t len = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    size_t j = 0;
    for (size_t i = 0; i < len && j + 1 < n && j < 80; i++) {
        unsigned char c = (unsigned char)base[i];
        dst[j++] = (char)(isalnum(c) || c == '-' || c == '_' ? c : '_');
    }
    if (j == 0) dst[j++] = 's', dst[j++] = 'o', dst[j++] = 'n', dst[j++] = 'g';
    dst[j] = '\0';
}

static int write_file(const char *path, const unsigned char *bytes, size_t len, d2m_error *err)
{
    FILE *f = fopen(path, "wb");
    if (!f) return d2m_fail(err, D2M_ERR_IO, "%s: cannot write", path);
    size_t w = fwrite(bytes, 1, len, f);
    int closed = fclose(f);
    if (w != len || closed != 0) return d2m_fail(err, D2M_ERR_IO, "%s: write failed (disk full?)", path);
    return 0;
}

/* Loop audio: exactly [start, end) of the stem, silence past the end. */
static int write_loop_wav(const char *path, const d2m_audio *stem, double start_s, double end_s,
                          d2m_error *err)
{
    int64_t first = (int64_t)llround(start_s * stem->sample_rate);
    int64_t count = (int64_t)llround(end_s * stem->sample_rate) - first;
    if (first + count <= stem->frames) return audio_write_wav(path, stem, first, count, err);
    d2m_audio padded = {0};
    int rc = d2m_audio_alloc(&padded, count, stem->channels, stem->sample_rate);
    if (rc) return d2m_fail(err, rc, "out of memory for the loop audio");
    int64_t have = stem->frames - first;
    memcpy(padded.data, stem->data + first * stem->channels,
           (size_t)(have * stem->channels) * sizeof(float));
    rc = audio_write_wav(path, &padded, 0, count, err);
    d2m_audio_free(&padded);
    return rc;
}

static int copy_array(double **dst, const double *src, int n)
{
    *dst = malloc((size_t)(n > 0 ? n : 1) * sizeof **dst);
    if (!*dst) return D2M_ERR_NOMEM;
    if (n > 0) memcpy(*dst, src, (size_t)n * sizeof **dst);
    return 0;
}

static int check_options(const d2m_options *o, d2m_error *err)
{
    if (o->quantize != 0 && o->quantize != 4 && o->quantize != 8 && o->quantize != 16 &&
        o->quantize != 32)
        return d2m_fail(err, D2M_ERR_INVALID, "quantize must be 4, 8, 16, 32 or off");
    if (o->bars < 1 || o->bars > 64) return d2m_fail(err, D2M_ERR_INVALID, "bars must be 1..64");
    if (o->loop_first_bar < 0) return d2m_fail(err, D2M_ERR_INVALID, "the loop's first bar must be 1 or more");
    if (o->tempo_bpm < 0 || (o->tempo_bpm > 0 && (o->tempo_bpm < 30 || o->tempo_bpm > 300)))
        return d2m_fail(err, D2M_ERR_INVALID, "tempo must be 30..300 BPM");
    if (o->ppq != 480 && o->ppq != 960) return d2m_fail(err, D2M_ERR_INVALID, "ppq must be 480 or 960");
    if (o->max_duration_s <= 0) return d2m_fail(err, D2M_ERR_INVALID, "max duration must be positive");
    if (o->shifts < 0 || o->shifts > 20) return d2m_fail(err, D2M_ERR_INVALID, "shifts must be 0..20");
    if (o->threads < 0) return d2m_fail(err, D2M_ERR_INVALID, "threads must be 0 or more");
    return 0;
}

int d2m_process_file(d2m_result *r, const char *in_path, const char *out_dir,
                     const d2m_options *opt, d2m_progress_fn progress, void *user,
                     d2m_error *err)
{
    d2m_engine *e = NULL;
    memset(r, 0, sizeof *r);
    int rc = d2m_engine_new(&e, err);
    if (rc == 0) rc = d2m_engine_process_file(e, r, in_path, out_dir, opt, progress, user, err);
    d2m_engine_free(e);
    return rc;
}

int d2m_engine_process_file(d2m_engine *e, d2m_result *r, const char *in_path,
                            const char *out_dir, const d2m_options *opt, d2m_progress_fn progress,
                            void *user, d2m_error *err)
{
    memset(r, 0, sizeof *r);
    if (!e) return d2m_fail(err, D2M_ERR_INVALID, "no engine");
    int rc = check_options(opt, err);
    if (rc) return rc;
    double t_start = d2m_now(), t;
    progress_state ps = {.fn = progress, .user = user};
    output_set outs = {0};
    d2m_audio file = {0}, mix = {0}, stem = {0};
    separation sep = {0};
    d2m_decode_info info = {0};
    d2m_features feats = {0}, low = {0};
    d2m_beats beats = {0};
    d2m_loop loop = {0};
    d2m_hits hits = {0};
    d2m_notes loop_notes = {0}, full_notes = {0};
    float *mono = NULL;
    unsigned char *midi = NULL;
    size_t midi_len = 0;
    char name[96], path[1400];

    snprintf(r->input_path, sizeof r->input_path, "%s", in_path);
    snprintf(outs.dir, sizeof outs.dir, "%s", out_dir);
    if ((rc = outputs_prepare_dir(out_dir, err))) return rc;

    /* 1. Decode and resample. */
    report_progress(&ps, "decode", 0.0, 0.08, 0.0);
    t = d2m_now();
    if ((rc = audio_decode_file(&file, &info, in_path, opt->max_duration_s, err))) goto fail;
    if (info.warning[0]) add_warning(r, info.warning);
    r->sample_rate = info.sample_rate;
    r->channels = info.channels;
    r->duration_s = (double)file.frames / file.sample_rate;
    if (file.sample_rate == RATE && file.channels == 2) {
        mix = file; /* already what the separator wants: no copy */
        memset(&file, 0, sizeof file);
    } else if ((rc = audio_convert(&mix, &file, RATE, 2, err))) {
        goto fail;
    }
    d2m_audio_free(&file);
    float peak = 0.0f;
    for (int64_t i = 0; i < mix.frames * mix.channels; i++) peak = fmaxf(peak, fabsf(mix.data[i]));
    if (peak < SILENCE_PEAK) {
        rc = d2m_fail(err, D2M_ERR_SILENT, "%s: the audio is silent (peak %.1f dBFS)", in_path,
                      peak > 0 ? 20.0 * log10(peak) : -INFINITY);
        goto fail;
    }
    double min_s = opt->bars * 4 * 60.0 / 200.0; /* the loop at the fastest tempo we detect */
    if (r->duration_s < min_s) {
        rc = d2m_fail(err, D2M_ERR_TOO_SHORT, "%s: %.1f s is too short for a %d-bar loop", in_path,
                      r->duration_s, opt->bars);
        goto fail;
    }
    r->t_decode = d2m_now() - t;
    if (report_progress(&ps, "decode", 0.0, 0.08, 1.0)) goto cancelled;

    /* 2. Separation: nothing later sees the mix. */
    t = d2m_now();
    ps.base = 0.08;
    ps.weight = 0.5;
    report_progress(&ps, "separate", 0.08, 0.5, 0.0);
    if ((rc = pipeline_separate(&sep, e, &mix, opt, separate_progress, &ps, err))) {
        if (rc == D2M_ERR_CANCELLED) goto cancelled;
        goto fail;
    }
    d2m_audio_free(&mix);
    if (sep.warning[0]) add_warning(r, sep.warning);
    snprintf(r->separator, sizeof r->separator, "%s", sep.name);
    snprintf(r->model, sizeof r->model, "%s", sep.model);
    stem = sep.drums;
    memset(&sep.drums, 0, sizeof sep.drums);
    r->t_separate = d2m_now() - t;

    /* 3. Analysis of the drum stem. */
    t = d2m_now();
    if (report_progress(&ps, "tempo", 0.58, 0.12, 0.0)) goto cancelled;
    mono = malloc((size_t)stem.frames * sizeof *mono);
    if (!mono) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
        goto fail;
    }
    audio_mixdown(mono, &stem);
    float stem_peak = 0.0f;
    for (int64_t i = 0; i < stem.frames; i++) stem_peak = fmaxf(stem_peak, fabsf(mono[i]));
    if (stem_peak < SILENCE_PEAK) {
        rc = d2m_fail(err, D2M_ERR_SILENT, "%s: no drums found (the drum stem is silent)", in_path);
        goto fail;
    }
    if ((rc = features_compute(&feats, mono, stem.frames, RATE, ANALYSIS_FFT, ANALYSIS_HOP, err)))
        goto fail;
    if ((rc = tempo_track(&beats, &feats, opt->tempo_bpm, r->duration_s, err))) {
        d2m_error inner = *err;
        d2m_fail(err, rc, "%s: %s", in_path, inner.message);
        goto fail;
    }
    if (report_progress(&ps, "loop", 0.70, 0.04, 0.0)) goto cancelled;
    filter_lowpass(mono, stem.frames, LOW_CUTOFF_HZ, RATE);
    if ((rc = features_compute(&low, mono, stem.frames, RATE, 2048, ANALYSIS_HOP, err))) goto fail;
    if ((rc = loop_select(&loop, &low, &beats, opt->bars, opt->loop_first_bar - 1, r->duration_s,
                          err))) {
        d2m_error inner = *err;
        d2m_fail(err, rc, "%s: %s", in_path, inner.message);
        goto fail;
    }
    if (report_progress(&ps, "transcribe", 0.74, 0.06, 0.0)) goto cancelled;
    if ((rc = transcribe(&hits, &feats, opt->classifier, err))) goto fail;
    if (hits.n == 0) add_warning(r, "no drum hits were detected");

    /* 4. The MIDI timeline: loop from its downbeat, full song from bar 1. */
    double loop_origin = beats_position(&beats, loop.start_s);
    loop_origin = round(loop_origin); /* a downbeat is a whole beat */
    if ((rc = quantize_hits(&loop_notes, hits.v, hits.n, &beats, loop_origin, 4.0 * opt->bars,
                            opt->quantize, opt->ppq, err)))
        goto fail;
    double song_origin = beats.first_downbeat;
    double song_beats = beats_position(&beats, r->duration_s) - song_origin;
    int song_bars = (int)ceil(song_beats / 4.0 - 1e-6);
    if (song_bars < 1) song_bars = 1;
    if ((rc = quantize_hits(&full_notes, hits.v, hits.n, &beats, song_origin, 4.0 * song_bars,
                            opt->quantize, opt->ppq, err)))
        goto fail;
    r->t_analyze = d2m_now() - t;

    /* 5. Files. */
    t = d2m_now();
    if (report_progress(&ps, "write", 0.80, 0.20, 0.0)) goto cancelled;
    song_name(name, sizeof name, in_path);
    int bpm_int = (int)lround(beats.bpm);
    char grid[8];
    if (opt->quantize) snprintf(grid, sizeof grid, "q%d", opt->quantize);
    else snprintf(grid, sizeof grid, "qoff");
    snprintf(r->drum_stem_wav, sizeof r->drum_stem_wav, "%s_drums.wav", name);
    snprintf(r->loop_wav, sizeof r->loop_wav, "%s_drums_loop_%dbpm.wav", name, bpm_int);
    snprintf(r->loop_midi, sizeof r->loop_midi, "%s_drums_loop_%dbpm_%s.mid", name, bpm_int, grid);
    snprintf(r->full_midi, sizeof r->full_midi, "%s_drums_full_%dbpm_%s.mid", name, bpm_int, grid);
    snprintf(r->stem_spectrogram_png, sizeof r->stem_spectrogram_png, "%s_drums_spectrogram.png", name);
    snprintf(r->loop_spectrogram_png, sizeof r->loop_spectrogram_png,
             "%s_drums_loop_%dbpm_spectrogram.png", name, bpm_int);
    snprintf(r->report_file, sizeof r->report_file, "report.json");

    char title[256];
    if ((rc = smf_write_drums(&midi, &midi_len, &loop_notes, beats.bpm, opt->ppq,
                              (int64_t)opt->bars * 4 * opt->ppq, name, err)))
        goto fail;
    if ((rc = write_file(outputs_part_path(&outs, path, sizeof path, r->loop_midi), midi, midi_len, err)))
        goto fail;
    free(midi);
    midi = NULL;
    if ((rc = smf_write_drums(&midi, &midi_len, &full_notes, beats.bpm, opt->ppq,
                              (int64_t)song_bars * 4 * opt->ppq, name, err)))
        goto fail;
    if ((rc = write_file(outputs_part_path(&outs, path, sizeof path, r->full_midi), midi, midi_len, err)))
        goto fail;
    if (report_progress(&ps, "write", 0.80, 0.20, 0.1)) goto cancelled;
    if ((rc = write_loop_wav(outputs_part_path(&outs, path, sizeof path, r->loop_wav), &stem,
                             loop.start_s, loop.end_s, err)))
        goto fail;
    if ((rc = audio_write_wav(outputs_part_path(&outs, path, sizeof path, r->drum_stem_wav), &stem, 0,
                              stem.frames, err)))
        goto fail;
    for (int k = 0; k < sep.n_others; k++) {
        snprintf(r->other_stem_names[k], sizeof r->other_stem_names[k], "%s", sep.other_names[k]);
        snprintf(r->other_stem_wavs[k], sizeof r->other_stem_wavs[k], "%s_%s.wav", name,
                 sep.other_names[k]);
        if ((rc = audio_write_wav(outputs_part_path(&outs, path, sizeof path, r->other_stem_wavs[k]),
                                  &sep.others[k], 0, sep.others[k].frames, err)))
            goto fail;
        r->n_other_stems = k + 1;
    }
    if (report_progress(&ps, "write", 0.80, 0.20, 0.4)) goto cancelled;
    snprintf(title, sizeof title, "%s - drum stem", name);
    if ((rc = spectrogram_png(outputs_part_path(&outs, path, sizeof path, r->stem_spectrogram_png),
                              &stem, 0, stem.frames, 1600, 600, title, err)))
        goto fail;
    if (report_progress(&ps, "write", 0.80, 0.20, 0.8)) goto cancelled;
    {
        int64_t first = (int64_t)llround(loop.start_s * RATE);
        int64_t count = (int64_t)llround(loop.end_s * RATE) - first;
        if (first + count > stem.frames) count = stem.frames - first;
        snprintf(title, sizeof title, "%s - loop, bars %d-%d at %.1f BPM", name, loop.first_bar + 1,
                 loop.first_bar + loop.bars, beats.bpm);
        if ((rc = spectrogram_png(outputs_part_path(&outs, path, sizeof path, r->loop_spectrogram_png),
                                  &stem, first, count, 1200, 600, title, err)))
            goto fail;
    }

    /* The result and report. */
    r->tempo_bpm = beats.bpm;
    if (copy_array(&r->beats_s, beats.beats, beats.n_beats) ||
        copy_array(&r->downbeats_s, beats.downbeats, beats.n_downbeats))
        goto nomem;
    r->n_beats = beats.n_beats;
    r->n_downbeats = beats.n_downbeats;
    r->loop_start_s = loop.start_s;
    r->loop_end_s = loop.end_s;
    r->loop_bars = loop.bars;
    r->loop_first_bar = loop.first_bar + 1;
    r->quantize = opt->quantize;
    r->hits = hits.v;
    r->n_hits = hits.n;
    hits.v = NULL;
    r->t_write = d2m_now() - t;
    r->t_total = d2m_now() - t_start;
    report_input ri = {.opt = opt, .info = &info, .beats = &beats, .loop = &loop, .hits = &hits,
                       .loop_notes = &loop_notes, .ppq = opt->ppq};
    r->report_json = report_build(r, &ri);
    if (!r->report_json) goto nomem;
    if ((rc = write_file(outputs_part_path(&outs, path, sizeof path, r->report_file),
                         (const unsigned char *)r->report_json, strlen(r->report_json), err)))
        goto fail;
    if ((rc = outputs_commit(&outs, err))) goto fail;
    report_progress(&ps, "done", 1.0, 0.0, 1.0);
    rc = 0;
    goto done;

cancelled:
    rc = d2m_fail(err, D2M_ERR_CANCELLED, "%s: cancelled", in_path);
    goto fail;
nomem:
    rc = d2m_fail(err, D2M_ERR_NOMEM, "%s: out of memory", in_path);
fail:
    outputs_discard(&outs);
    d2m_result_free(r);
    snprintf(r->input_path, sizeof r->input_path, "%s", in_path);
done:
    free(midi);
    free(mono);
    d2m_audio_free(&file);
    d2m_audio_free(&mix);
    d2m_audio_free(&stem);
    separation_free(&sep);
    features_free(&feats);
    features_free(&low);
    beats_free(&beats);
    hits_free(&hits);
    notes_free(&loop_notes);
    notes_free(&full_notes);
    return rc;
}
