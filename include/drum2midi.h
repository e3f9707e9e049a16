/* drum2midi: a song in, its drums out as a stem, a 4-bar loop and MIDI.
 *
 * This is the one header the command line and the server need. A job is
 * described by d2m_options (start from d2m_default_options()), run by
 * d2m_process_file(), and reported through a progress callback while it runs
 * and a d2m_result when it ends.
 *
 * Ownership: everything a d2m_* call allocates is released by the matching
 * *_free call; strings passed in are copied or only read during the call.
 * Thread safety: separate jobs may run on separate threads; one job is not
 * shared between threads.
 */
#ifndef DRUM2MIDI_H
#define DRUM2MIDI_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define D2M_VERSION "0.1.0"

/* Error codes: 0 is success, every failure is negative. */
enum {
    D2M_OK = 0,
    D2M_ERR_INVALID = -1,   /* a parameter is out of range */
    D2M_ERR_NOMEM = -2,     /* an allocation failed */
    D2M_ERR_IO = -3,        /* a file could not be read or written */
    D2M_ERR_FORMAT = -4,    /* the bytes are not audio this tool can decode */
    D2M_ERR_SILENT = -5,    /* the audio (or its drum stem) is silent */
    D2M_ERR_NO_RHYTHM = -6, /* no steady beat was found */
    D2M_ERR_TOO_SHORT = -7, /* the song is shorter than the loop asked for */
    D2M_ERR_TOO_LONG = -8,  /* the song is longer than the configured limit */
    D2M_ERR_CANCELLED = -9, /* the progress callback asked to stop */
    D2M_ERR_INTERNAL = -10  /* a library call failed unexpectedly */
};

/* A short, static description of an error code. */
const char *d2m_strerror(int code);

/* The detailed message of a failure: which file, what went wrong. */
typedef struct {
    int code;
    char message[512];
} d2m_error;

typedef enum {
    D2M_SEPARATOR_AUTO = 0,   /* Demucs when its weights are found, else HPSS with a warning */
    D2M_SEPARATOR_DEMUCS = 1, /* HTDemucs v4; an error when no weights are found */
    D2M_SEPARATOR_HPSS = 2,   /* built-in harmonic/percussive separation: fast, lower quality */
    D2M_SEPARATOR_NONE = 3    /* the input already is a drum track */
} d2m_separator;

typedef enum {
    D2M_CLASSIFIER_BANDS = 0, /* per-band onset detection, several drums per instant */
    D2M_CLASSIFIER_RATIO = 1  /* the seed's band-energy ratio: one label per onset */
} d2m_classifier;

typedef struct {
    int quantize;              /* grid: 4, 8, 16 or 32 (notes per bar); 0 = off */
    int bars;                  /* loop length in bars, 1..64 */
    int loop_first_bar;        /* 0 = the best window; N >= 1 = the loop starts at bar N */
    double tempo_bpm;          /* > 0 overrides detection; 0 = detect */
    d2m_separator separator;
    d2m_classifier classifier;
    int ppq;                   /* MIDI ticks per quarter note: 480 or 960 */
    double max_duration_s;     /* longer inputs are refused (bounds memory) */
    const char *model_path;    /* Demucs weights (.th or .onnx); NULL = search, see README */
    int shifts;                /* Demucs random time shifts averaged (0 = none) */
    unsigned long long seed;   /* seed of those shifts: same seed, same output */
    int all_stems;             /* also write Demucs' other stems (bass, other, vocals) */
    int threads;               /* compute threads; 0 = every online CPU */
    const char *title;         /* the song's name inside the outputs (MIDI track name,
                                  spectrogram titles); NULL = from the input's file name */
} d2m_options;

d2m_options d2m_default_options(void);

/* Progress: stage is a short name ("decode", "separate", "tempo", "loop",
 * "transcribe", "write"); fraction in [0,1] within the stage, overall in
 * [0,1] for the job. Return non-zero to cancel the job. */
typedef int (*d2m_progress_fn)(void *user, const char *stage, double fraction, double overall);

/* One detected drum hit, in seconds from the start of the input. */
typedef struct {
    double time_s;
    int note;     /* General MIDI drum note: 36 kick, 38 snare, 42 closed hat, ... */
    int velocity; /* 1..127 */
    float strength;
} d2m_hit;

/* What a finished job produced. Paths are relative to the output folder. */
typedef struct {
    char input_path[1024];
    double duration_s;
    int sample_rate, channels;      /* of the input file, before resampling */
    char separator[16];             /* "htdemucs", "hpss" or "none" */
    char model[256];                /* the weights file's name, "" without Demucs */
    double tempo_bpm;
    double *beats_s;                /* (n_beats) */
    int n_beats;
    double *downbeats_s;            /* (n_downbeats) */
    int n_downbeats;
    double loop_start_s, loop_end_s;
    int loop_bars, loop_first_bar;  /* first_bar counts from 1 */
    int quantize;
    d2m_hit *hits;                  /* (n_hits) whole song, unquantized */
    int n_hits;
    char drum_stem_wav[256], loop_wav[256], loop_midi[256], full_midi[256];
    char stem_spectrogram_png[256], loop_spectrogram_png[256], report_file[256];
    int n_other_stems;              /* with all_stems: Demucs' other sources */
    char other_stem_names[7][16];   /* "bass", "other", "vocals", ... */
    char other_stem_wavs[7][256];
    double t_decode, t_separate, t_analyze, t_write, t_total;
    char warnings[1024];            /* '\n'-separated, empty when none */
    char *report_json;              /* the text of report.json (malloc'ed) */
} d2m_result;

void d2m_result_free(d2m_result *r);

/* Run the whole pipeline on one file, writing every output into out_dir
 * (created if missing). Files are written under temporary names and renamed
 * at the end, report.json last, so a failed job leaves nothing that looks
 * complete. Returns 0 or a negative code; err gets the message. */
int d2m_process_file(d2m_result *result, const char *in_path, const char *out_dir,
                     const d2m_options *opt, d2m_progress_fn progress, void *user,
                     d2m_error *err);

/* An engine keeps what is costly to set up between jobs: the Demucs model
 * (its weights read once, its compute buffers and threads). A batch or a
 * server makes one and runs every job through it; the model is loaded on
 * the first job that needs it and rebuilt only when a job names another
 * weights file (or the file changed) or another thread count. One job at a
 * time per engine. d2m_process_file is one job on a temporary engine. */
typedef struct d2m_engine d2m_engine;

int d2m_engine_new(d2m_engine **out, d2m_error *err);
void d2m_engine_free(d2m_engine *e); /* NULL-safe */
/* Whether the engine holds a Demucs model now. */
int d2m_engine_loaded(const d2m_engine *e);
int d2m_engine_process_file(d2m_engine *e, d2m_result *result, const char *in_path,
                            const char *out_dir, const d2m_options *opt, d2m_progress_fn progress,
                            void *user, d2m_error *err);

#ifdef __cplusplus
}
#endif
#endif
