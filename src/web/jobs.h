/* The server's jobs: a store of uploaded songs on disk, a queue in front of a
 * fixed number of worker threads that run the pipeline, live progress, and
 * the retention janitor. The HTTP layer (http.c) only calls these functions;
 * no pipeline work ever runs on an HTTP thread.
 *
 * On disk, under the data folder:
 *   tmp/<random>.upload        an upload being received (removed on abort)
 *   jobs/<id>/job.json         id, display name, options, state, error
 *   jobs/<id>/song.<format>    the upload, renamed once its content was checked
 *   jobs/<id>/out/             the pipeline's outputs, report.json, overview.json
 * A job id is 16 lowercase hex digits from /dev/urandom; nothing the client
 * sends ever becomes part of a path except a validated id.
 *
 * Threading: every function here is safe to call from any thread.
 */
#ifndef D2M_WEB_JOBS_H
#define D2M_WEB_JOBS_H

#include "drum2midi.h"

#include <stddef.h>

#define JOB_ID_LEN 16

typedef struct job_store job_store;

typedef struct {
    char data_dir[512];
    int workers;           /* heavy jobs run at once (default 1) */
    int max_queued;        /* POST answers 503 beyond this many waiting jobs */
    double keep_days;      /* finished jobs older than this are removed; 0 = keep */
    double max_data_mb;    /* finished jobs are removed oldest first above this; 0 = no limit */
    double max_duration_s; /* longest song accepted */
} job_store_config;

/* What a client asked for with an upload or a re-analysis. */
typedef struct {
    int quantize;          /* 0, 4, 8, 16, 32 */
    int bars;              /* 1..64 */
    double tempo_bpm;      /* 0 = detect */
    d2m_separator separator;
    int loop_start_bar;    /* 0 = choose; >= 1 the loop's first bar (needs library support) */
} job_request;

/* Opens (creating) the data folder, loads the jobs found there, re-queues the
 * ones a previous server left unfinished, and starts the worker threads.
 * Returns 0 or D2M_ERR_IO with err set. */
int jobs_open(job_store **out, const job_store_config *cfg, d2m_error *err);

/* Stops the workers (a running job is cancelled and left queued on disk, so
 * the next server runs it again) and wakes every event stream so it ends;
 * the store stays usable for calls still in flight. NULL-safe. */
void jobs_stop(job_store *s);

/* jobs_stop, then frees the store. NULL-safe. */
void jobs_close(job_store *s);

/* A fresh path under tmp/ for an upload to be written to (O_EXCL). */
int jobs_upload_path(job_store *s, char *path, size_t n);

/* Whether the queue can take another job now (0 = full). */
int jobs_accepting(job_store *s);

/* Makes a job from a finished upload at upload_path (renamed into the job's
 * folder; removed on failure). display_name is the client's file name, kept
 * only as text; format is audio_sniff()'s answer. id gets JOB_ID_LEN + 1
 * bytes. Returns 0, D2M_ERR_IO, or D2M_ERR_NOMEM. */
int jobs_create(job_store *s, const char *upload_path, const char *display_name,
                const char *format, const job_request *req, char *id, d2m_error *err);

/* The separator's name in the API ("auto", "demucs", "hpss", "none") and back;
 * jobs_separator_from returns 0, or -1 for an unknown name. */
const char *jobs_separator_name(d2m_separator value);
int jobs_separator_from(const char *name, d2m_separator *out);

/* Whether text is a well-formed job id (says nothing of its existence). */
int jobs_valid_id(const char *text);

/* The job's status as JSON text (malloc'ed): id, name, state, stage,
 * stage_progress, progress, eta_s, queue_position, error, options, and the
 * report when with_report and done. NULL when there is no such job.
 * *version (may be NULL) gets the job's change counter. */
char *jobs_status_json(job_store *s, const char *id, int with_report, unsigned *version);

/* Waits up to timeout_ms for the job's change counter to differ from
 * *version. Returns 1 changed (*version updated), 0 timed out, -1 the job is
 * gone or the server is stopping. */
int jobs_wait_change(job_store *s, const char *id, unsigned *version, int timeout_ms);

/* Whether the job has reached an end state (done, failed, cancelled). */
int jobs_finished(job_store *s, const char *id);

/* Cancels a queued or running job; with remove, also deletes it and its
 * files (a running job is removed by its worker once it has stopped).
 * Returns 0, or D2M_ERR_INVALID when there is no such job. */
int jobs_cancel(job_store *s, const char *id, int remove);

/* Queues a re-analysis of a done job's drum stem with separator "none" and
 * the given options (quantize, bars or tempo_bpm < 0: as the results were). Returns 0, D2M_ERR_INVALID (no such job, or not done:
 * message in err), or D2M_ERR_NOMEM. */
int jobs_reanalyze(job_store *s, const char *id, const job_request *req, d2m_error *err);

/* A file of a job by its key: a key of the report's "files", "input" (the
 * upload) or "overview_json". Fills path (on disk), download_name (the
 * song's name, safe in a header) and content_type. When the file is
 * report_json, *memory gets the report text as the API shows it (malloc'ed)
 * and path is empty. Returns 0, or D2M_ERR_INVALID for an unknown job, an
 * unknown key, or a job that has no such file yet. */
int jobs_file(job_store *s, const char *id, const char *key, char *path, size_t path_n,
              char *download_name, size_t name_n, const char **content_type, char **memory);

/* Counts for /api/health. */
void jobs_counts(job_store *s, int *queued, int *running, int *total);

/* A JSON array of every job's short status (malloc'ed), newest first. */
char *jobs_list_json(job_store *s);

#endif
