/* The whole job for one song: decode -> resample -> separate -> features ->
 * tempo -> loop -> transcribe -> quantize -> write. Every stage after
 * separation reads the drum stem only, never the mix.
 *
 * Memory: no signal the length of the song is held in memory. The file is
 * decoded and resampled a block at a time into a temporary file of 44.1 kHz
 * stereo floats (21 MB per minute, on disk in the output folder, unlinked
 * at creation); the separator reads it back a segment at a time and its
 * stems go, as they become final, to their WAV files and the drum stem also
 * to a second temporary file. The analysis reads that stem back block by
 * block, mixed to mono on the fly; the low band the loop search needs is
 * filtered forward into a third temporary file and backward in place. What
 * stays in memory is O(frames) features, about 2 MB per minute of audio.
 * So the peak is the separator's own memory (Demucs: weights + activations,
 * about 490 MB, the activations given back before the analysis; HPSS: a few
 * 20 s blocks per thread) whatever the song's length.
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

enum { COPY_BLOCK_FRAMES = 1 << 16 };

/* Loop audio: exactly [start, end) of the stem, silence past the end (the
 * reader's zeros), copied a block at a time. */
static int write_loop_wav(const char *path, const audio_reader *stem, double start_s,
                          double end_s, d2m_error *err)
{
    int64_t first = (int64_t)llround(start_s * stem->sample_rate);
    int64_t count = (int64_t)llround(end_s * stem->sample_rate) - first;
    audio_wav_writer *w = NULL;
    float *x = malloc((size_t)COPY_BLOCK_FRAMES * (size_t)stem->channels * sizeof *x); /* (block, channels) */
    if (!x) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory for the loop audio");
    int rc = audio_wav_open(&w, path, stem->channels, stem->sample_rate, err);
    for (int64_t done = 0; rc == 0 && done < count; done += COPY_BLOCK_FRAMES) {
        int64_t n = count - done < COPY_BLOCK_FRAMES ? count - done : COPY_BLOCK_FRAMES;
        rc = stem->read(stem->user, x, first + done, n, err);
        if (rc == 0) rc = audio_wav_write(w, x, n, err);
    }
    free(x);
    if (rc) {
        audio_wav_discard(w);
        return rc;
    }
    return audio_wav_close(w, err);
}

/* The mono drum stem as a reader: its stereo temporary file read and mixed
 * down block by block (the same floats audio_mixdown gives on the whole
 * stem). Single-threaded: the scratch is shared. */
typedef struct {
    const audio_reader *stem;
    float *scratch; /* (capacity, channels) */
    int64_t capacity;
} mono_stem;

static int read_mono(void *user, float *dst, int64_t first, int64_t count, d2m_error *err)
{
    mono_stem *m = user;
    if (count > m->capacity) {
        float *grown = realloc(m->scratch, (size_t)(count * m->stem->channels) * sizeof *grown);
        if (!grown) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
        m->scratch = grown;
        m->capacity = count;
    }
    int rc = m->stem->read(m->stem->user, m->scratch, first, count, err);
    if (rc) return rc;
    d2m_audio block = {.data = m->scratch, .frames = count, .channels = m->stem->channels};
    audio_mixdown(dst, &block);
    return 0;
}

/* The low band of the mono stem for the loop search: filter_lowpass's
 * forward pass from the start into low (a temporary file), noting the
 * stem's peak on the way; then its backward pass from the end, in place. */
static int low_band_forward(audio_temp *low, float *peak, const audio_reader *mono, d2m_error *err)
{
    float *x = malloc((size_t)COPY_BLOCK_FRAMES * sizeof *x); /* (block) */
    if (!x) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
    lowpass_pass pass;
    filter_lowpass_start(&pass, LOW_CUTOFF_HZ, RATE, 0);
    int rc = 0;
    *peak = 0.0f;
    for (int64_t first = 0; rc == 0 && first < mono->frames; first += COPY_BLOCK_FRAMES) {
        int64_t n = mono->frames - first < COPY_BLOCK_FRAMES ? mono->frames - first : COPY_BLOCK_FRAMES;
        if ((rc = mono->read(mono->user, x, first, n, err))) break;
        for (int64_t i = 0; i < n; i++) *peak = fmaxf(*peak, fabsf(x[i]));
        filter_lowpass_block(&pass, x, n);
        rc = audio_temp_append(low, x, n, err);
    }
    free(x);
    return rc ? rc : audio_temp_flush(low, err);
}

static int low_band_backward(audio_temp *low, d2m_error *err)
{
    audio_reader r = audio_temp_reader(low);
    float *x = malloc((size_t)COPY_BLOCK_FRAMES * sizeof *x); /* (block) */
    if (!x) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
    lowpass_pass pass;
    filter_lowpass_start(&pass, LOW_CUTOFF_HZ, RATE, 1);
    int rc = 0;
    for (int64_t end = r.frames; rc == 0 && end > 0; end -= COPY_BLOCK_FRAMES) {
        int64_t first = end > COPY_BLOCK_FRAMES ? end - COPY_BLOCK_FRAMES : 0;
        if ((rc = r.read(r.user, x, first, end - first, err))) break;
        filter_lowpass_block(&pass, x, end - first);
        rc = audio_temp_write(low, x, first, end - first, err);
    }
    free(x);
    return rc;
}

/* Decoding: the 44.1 kHz stereo mix into its temporary file, and its peak. */
typedef struct {
    audio_temp *mix;
    float peak;
} decode_target;

static int keep_mix(void *user, const float *x, int64_t frames, d2m_error *err)
{
    decode_target *d = user;
    for (int64_t i = 0; i < frames * 2; i++) d->peak = fmaxf(d->peak, fabsf(x[i]));
    return audio_temp_append(d->mix, x, frames, err);
}

/* Separation's stems: each to its WAV file (opened when its first block
 * comes), the drum stem also to a temporary file for the analysis. */
typedef struct {
    output_set *outs;
    d2m_result *r;
    const char *song;
    audio_temp *drums;
    audio_wav_writer *wavs[8];
    char names[8][16];
    int n;
} stem_files;

static int write_stem(void *user, const char *stem, const float *x, int64_t frames, d2m_error *err)
{
    stem_files *f = user;
    int k = 0;
    while (k < f->n && strcmp(f->names[k], stem)) k++;
    if (k == f->n) {
        char path[1400];
        const char *file = f->r->drum_stem_wav;
        if (k == (int)(sizeof f->wavs / sizeof f->wavs[0]))
            return d2m_fail(err, D2M_ERR_INTERNAL, "too many stems");
        if (strcmp(stem, "drums")) {
            int o = f->r->n_other_stems++;
            snprintf(f->r->other_stem_names[o], sizeof f->r->other_stem_names[o], "%s", stem);
            snprintf(f->r->other_stem_wavs[o], sizeof f->r->other_stem_wavs[o], "%s_%s.wav",
                     f->song, stem);
            file = f->r->other_stem_wavs[o];
        }
        int rc = audio_wav_open(&f->wavs[k], outputs_part_path(f->outs, path, sizeof path, file), 2,
                                RATE, err);
        if (rc) return rc;
        snprintf(f->names[k], sizeof f->names[k], "%s", stem);
        f->n++;
    }
    if (!strcmp(stem, "drums")) {
        int rc = audio_temp_append(f->drums, x, frames, err);
        if (rc) return rc;
    }
    return audio_wav_write(f->wavs[k], x, frames, err);
}

/* Finish every stem file; after a failure, remove them. */
static int close_stems(stem_files *f, int failed, d2m_error *err)
{
    int rc = 0;
    for (int k = 0; k < f->n; k++) {
        if (failed || rc) audio_wav_discard(f->wavs[k]);
        else rc = audio_wav_close(f->wavs[k], err);
        f->wavs[k] = NULL;
    }
    f->n = 0;
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
    audio_temp *mix_file = NULL, *stem_file = NULL, *low_file = NULL;
    mono_stem mono_state = {0};
    stem_files stems = {0};
    separation sep = {0};
    d2m_decode_info info = {0};
    d2m_features feats = {0}, low = {0};
    d2m_beats beats = {0};
    d2m_loop loop = {0};
    d2m_hits hits = {0};
    d2m_notes loop_notes = {0}, full_notes = {0};
    unsigned char *midi = NULL;
    size_t midi_len = 0;
    char name[96], path[1400];

    snprintf(r->input_path, sizeof r->input_path, "%s", in_path);
    snprintf(outs.dir, sizeof outs.dir, "%s", out_dir);
    if ((rc = outputs_prepare_dir(out_dir, err))) return rc;
    song_name(name, sizeof name, in_path);
    snprintf(r->drum_stem_wav, sizeof r->drum_stem_wav, "%s_drums.wav", name);

    /* 1. Decode and resample, a block at a time, into a temporary file. */
    report_progress(&ps, "decode", 0.0, 0.08, 0.0);
    t = d2m_now();
    if ((rc = audio_temp_new(&mix_file, out_dir, 2, RATE, err))) goto fail;
    decode_target target = {.mix = mix_file};
    int64_t file_frames = 0;
    if ((rc = audio_stream_file(in_path, RATE, 2, opt->max_duration_s, keep_mix, &target, &info,
                                &file_frames, err)) ||
        (rc = audio_temp_flush(mix_file, err)))
        goto fail;
    if (info.warning[0]) add_warning(r, info.warning);
    r->sample_rate = info.sample_rate;
    r->channels = info.channels;
    r->duration_s = (double)file_frames / info.sample_rate;
    float peak = target.peak;
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

    /* 2. Separation: nothing later sees the mix. The stems go to their
     * files as they are made. */
    t = d2m_now();
    ps.base = 0.08;
    ps.weight = 0.5;
    report_progress(&ps, "separate", 0.08, 0.5, 0.0);
    if ((rc = audio_temp_new(&stem_file, out_dir, 2, RATE, err))) goto fail;
    stems.outs = &outs;
    stems.r = r;
    stems.song = name;
    stems.drums = stem_file;
    audio_reader mix = audio_temp_reader(mix_file);
    rc = pipeline_separate(&sep, e, &mix, opt, write_stem, &stems, separate_progress, &ps, err);
    if (rc == 0) rc = close_stems(&stems, 0, err);
    if (rc == 0) rc = audio_temp_flush(stem_file, err);
    if (rc) {
        if (rc == D2M_ERR_CANCELLED) goto cancelled;
        goto fail;
    }
    audio_temp_free(mix_file);
    mix_file = NULL;
    if (sep.warning[0]) add_warning(r, sep.warning);
    snprintf(r->separator, sizeof r->separator, "%s", sep.name);
    snprintf(r->model, sizeof r->model, "%s", sep.model);
    audio_reader stem = audio_temp_reader(stem_file);
    r->t_separate = d2m_now() - t;

    /* 3. Analysis of the drum stem. */
    t = d2m_now();
    if (report_progress(&ps, "tempo", 0.58, 0.12, 0.0)) goto cancelled;
    mono_state.stem = &stem;
    audio_reader mono = {read_mono, &mono_state, stem.frames, 1, RATE};
    float stem_peak = 0.0f;
    if ((rc = audio_temp_new(&low_file, out_dir, 1, RATE, err)) ||
        (rc = low_band_forward(low_file, &stem_peak, &mono, err)))
        goto fail;
    if (stem_peak < SILENCE_PEAK) {
        rc = d2m_fail(err, D2M_ERR_SILENT, "%s: no drums found (the drum stem is silent)", in_path);
        goto fail;
    }
    if ((rc = features_compute_read(&feats, &mono, ANALYSIS_FFT, ANALYSIS_HOP, err))) goto fail;
    if ((rc = tempo_track(&beats, &feats, opt->tempo_bpm, r->duration_s, err))) {
        d2m_error inner = *err;
        d2m_fail(err, rc, "%s: %s", in_path, inner.message);
        goto fail;
    }
    if (report_progress(&ps, "loop", 0.70, 0.04, 0.0)) goto cancelled;
    if ((rc = low_band_backward(low_file, err))) goto fail;
    audio_reader low_band = audio_temp_reader(low_file);
    if ((rc = features_compute_read(&low, &low_band, 2048, ANALYSIS_HOP, err))) goto fail;
    audio_temp_free(low_file);
    low_file = NULL;
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
    /* Only the hits, beats and loop are needed from here on. */
    free(mono_state.scratch);
    mono_state.scratch = NULL;
    features_free(&feats);
    features_free(&low);

    /* 5. Files. */
    t = d2m_now();
    if (report_progress(&ps, "write", 0.80, 0.20, 0.0)) goto cancelled;
    int bpm_int = (int)lround(beats.bpm);
    char grid[8];
    if (opt->quantize) snprintf(grid, sizeof grid, "q%d", opt->quantize);
    else snprintf(grid, sizeof grid, "qoff");
    snprintf(r->loop_wav, sizeof r->loop_wav, "%s_drums_loop_%dbpm.wav", name, bpm_int);
    snprintf(r->loop_midi, sizeof r->loop_midi, "%s_drums_loop_%dbpm_%s.mid", name, bpm_int, grid);
    snprintf(r->full_midi, sizeof r->full_midi, "%s_drums_full_%dbpm_%s.mid", name, bpm_int, grid);
    snprintf(r->stem_spectrogram_png, sizeof r->stem_spectrogram_png, "%s_drums_spectrogram.png", name);
    snprintf(r->loop_spectrogram_png, sizeof r->loop_spectrogram_png,
             "%s_drums_loop_%dbpm_spectrogram.png", name, bpm_int);
    snprintf(r->report_file, sizeof r->report_file, "report.json");

    char title[256];
    const char *label = opt->title && opt->title[0] ? opt->title : name;
    if ((rc = smf_write_drums(&midi, &midi_len, &loop_notes, beats.bpm, opt->ppq,
                              (int64_t)opt->bars * 4 * opt->ppq, label, err)))
        goto fail;
    if ((rc = write_file(outputs_part_path(&outs, path, sizeof path, r->loop_midi), midi, midi_len, err)))
        goto fail;
    free(midi);
    midi = NULL;
    if ((rc = smf_write_drums(&midi, &midi_len, &full_notes, beats.bpm, opt->ppq,
                              (int64_t)song_bars * 4 * opt->ppq, label, err)))
        goto fail;
    if ((rc = write_file(outputs_part_path(&outs, path, sizeof path, r->full_midi), midi, midi_len, err)))
        goto fail;
    if (report_progress(&ps, "write", 0.80, 0.20, 0.1)) goto cancelled;
    if ((rc = write_loop_wav(outputs_part_path(&outs, path, sizeof path, r->loop_wav), &stem,
                             loop.start_s, loop.end_s, err)))
        goto fail;
    if (report_progress(&ps, "write", 0.80, 0.20, 0.4)) goto cancelled;
    snprintf(title, sizeof title, "%.200s - drum stem", label);
    if ((rc = spectrogram_png_read(outputs_part_path(&outs, path, sizeof path, r->stem_spectrogram_png),
                                   &stem, 0, stem.frames, 1600, 600, title, err)))
        goto fail;
    if (report_progress(&ps, "write", 0.80, 0.20, 0.8)) goto cancelled;
    {
        int64_t first = (int64_t)llround(loop.start_s * RATE);
        int64_t count = (int64_t)llround(loop.end_s * RATE) - first;
        if (first + count > stem.frames) count = stem.frames - first;
        snprintf(title, sizeof title, "%.200s - loop, bars %d-%d at %.1f BPM", label, loop.first_bar + 1,
                 loop.first_bar + loop.bars, beats.bpm);
        if ((rc = spectrogram_png_read(outputs_part_path(&outs, path, sizeof path, r->loop_spectrogram_png),
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
    close_stems(&stems, 1, NULL);
    outputs_discard(&outs);
    d2m_result_free(r);
    snprintf(r->input_path, sizeof r->input_path, "%s", in_path);
done:
    free(midi);
    free(mono_state.scratch);
    audio_temp_free(mix_file);
    audio_temp_free(stem_file);
    audio_temp_free(low_file);
    features_free(&feats);
    features_free(&low);
    beats_free(&beats);
    hits_free(&hits);
    notes_free(&loop_notes);
    notes_free(&full_notes);
    return rc;
}
