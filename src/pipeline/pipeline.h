/* Pipeline internals shared by its files. */
#ifndef D2M_PIPELINE_H
#define D2M_PIPELINE_H

#include "audio/audio.h"
#include "drums/drums.h"
#include "separate/separate.h"

/* Everything the analysis found, for the report. */
typedef struct {
    const d2m_options *opt;
    const d2m_decode_info *info;
    const d2m_beats *beats;
    const d2m_loop *loop;
    const d2m_hits *hits;
    const d2m_notes *loop_notes;
    int ppq;
} report_input;

/* report.json text (malloc'ed) from the result and the analysis; NULL when
 * out of memory. */
char *report_build(const d2m_result *r, const report_input *in);

/* Output files are written as ".NAME.part" and renamed when the job
 * succeeds; a failed job removes its parts. */
typedef struct {
    char dir[1024];
    char names[16][256];
    int n;
} output_set;

/* Path to write NAME to (its .part name); registers NAME in the set. */
const char *outputs_part_path(output_set *s, char *buf, size_t n, const char *name);
int outputs_commit(output_set *s, d2m_error *err);
void outputs_discard(output_set *s);

/* What separation did. */
typedef struct {
    char name[16];             /* "htdemucs", "hpss" or "none" */
    char model[256];           /* the weights file's name with Demucs */
    char warning[256];         /* non-empty when the user should know about a fallback */
    char other_names[7][16];   /* with all_stems: Demucs' other sources, in model order */
    int n_others;
} separation;

/* Receives a stem ("drums", or another Demucs source) a block at a time:
 * x (frames, channels of the mix), in order from the start of the song;
 * stems may interleave. Returns 0 or a negative code with err set. */
typedef int (*stem_write_fn)(void *user, const char *stem, const float *x, int64_t frames,
                             d2m_error *err);

/* Run the separator the options choose on mix (44.1 kHz stereo), with the
 * engine's cached Demucs model when it fits; the stems go to write. Returns
 * 0, D2M_ERR_IO (named weights missing), D2M_ERR_FORMAT (bad weights),
 * D2M_ERR_NOMEM, D2M_ERR_CANCELLED, or the reader's or write's code. */
int pipeline_separate(separation *out, d2m_engine *e, const audio_reader *mix,
                      const d2m_options *opt, stem_write_fn write, void *write_user,
                      separate_progress_fn progress, void *user, d2m_error *err);

/* Find the Demucs weights (see model_path.c for the order). Returns 1 and
 * the path in out when found, 0 when there are none, or a negative code when
 * an explicitly named file is missing. */
int model_find(char *out, size_t n, const char *explicit_path, d2m_error *err);

/* mkdir -p dir and check a file can be created there. */
int outputs_prepare_dir(const char *dir, d2m_error *err);

#endif
