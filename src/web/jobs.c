/* The job store behind `drum2midi serve`: jobs in memory mirrored on disk,
 * a FIFO queue served by cfg.workers "heavy" threads (whole songs) and one
 * "light" thread (re-analysis of a finished drum stem, seconds of work, so it
 * never waits behind a separation), and a janitor that applies retention.
 *
 * Layout on disk: see jobs.h. job.json is rewritten (temporary file, then
 * rename) on every state change, so a restarted server finds each job as it
 * was: queued and running jobs are queued again, finished ones are served.
 *
 * Threading: one mutex guards the store and every job in it; two condition
 * variables: `work` wakes workers and the janitor, `changed` wakes event
 * streams. Each worker hands its jobs to its own runner process (runner.h:
 * this binary started afresh, which keeps the Demucs model loaded between
 * jobs): a crash in the analysis fails that job, not the server, and a
 * cancel kills the runner at once. The runner sends progress up a pipe; the
 * worker applies it under the mutex. A job is freed only when it is out of
 * the store and no worker holds it.
 */
#include "web/jobs.h"

#include "base/base.h"
#include "web/files.h"
#include "web/runner.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define JOB_JSON_MAX (64 * 1024)
#define REPORT_MAX (64 * 1024 * 1024)
#define JANITOR_PERIOD_S 60
#define INPUT_BASE RUNNER_INPUT_BASE

typedef enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED } job_state;
static const char *const state_names[] = {"queued", "running", "done", "failed", "cancelled"};

typedef struct {
    char id[JOB_ID_LEN + 1];
    char display_name[256]; /* the client's file name: text for the page, never a path */
    char safe_name[96];     /* [A-Za-z0-9_-] only: download names */
    char format[16];        /* audio_sniff() of the upload */
    double created, finished; /* unix seconds */
    job_state state;
    int reanalysis;         /* the queued or running work is a re-analysis */
    job_request req;        /* options of the results on disk (or of the pending first run) */
    job_request pending;    /* what a queued re-analysis asks for */
    char original_separator[16];
    long long seq;          /* queue order */
    char stage[32];
    double stage_progress, progress, eta_s;
    double run_started, last_signal; /* monotonic seconds */
    char error[512];
    int cancel, remove;
    unsigned version;       /* bumped on every change an event stream shows */
    char *report;           /* report.json as the API shows it, when results exist */
    long long bytes;        /* on disk, measured when the job finished */
    int refs;               /* workers holding it */
} job;

typedef struct {
    job_store *s;
    int light; /* serves re-analyses only */
} worker_arg;

struct job_store {
    job_store_config cfg;
    worker_arg args[2]; /* heavy, light */
    pthread_mutex_t lock;
    pthread_cond_t work, changed;
    job **jobs; /* (n) in creation order */
    int n, cap;
    long long next_seq;
    int stopping;
    pthread_t *threads; /* (n_threads) */
    int n_threads;
};

/* ---------------------------------------------------------------- helpers */

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int jobs_valid_id(const char *t)
{
    if (!t) return 0;
    for (int i = 0; i < JOB_ID_LEN; i++)
        if (!((t[i] >= '0' && t[i] <= '9') || (t[i] >= 'a' && t[i] <= 'f'))) return 0;
    return t[JOB_ID_LEN] == '\0';
}

static int random_hex(char *out, int n_hex)
{
    unsigned char bytes[32];
    int n = (n_hex + 1) / 2;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t got = read(fd, bytes, (size_t)n);
    close(fd);
    if (got != n) return -1;
    for (int i = 0; i < n_hex; i++) out[i] = "0123456789abcdef"[(bytes[i / 2] >> (i % 2 ? 0 : 4)) & 15];
    out[n_hex] = '\0';
    return 0;
}

static void job_dir(const job_store *s, const char *id, char *buf, size_t n)
{
    snprintf(buf, n, "%s/jobs/%s", s->cfg.data_dir, id);
}

/* The client's file name as display text: its last path component, control
 * characters dropped, cut on a UTF-8 character boundary. */
static void display_from_client(char *dst, size_t n, const char *name)
{
    const char *base = name ? name : "";
    for (const char *c = base; *c; c++)
        if (*c == '/' || *c == '\\') base = c + 1;
    size_t j = 0;
    for (const unsigned char *c = (const unsigned char *)base; *c && j + 1 < n; c++)
        if (*c >= 0x20 && *c != 0x7F) dst[j++] = (char)*c;
    while (j > 0 && ((unsigned char)dst[j - 1] & 0xC0) == 0x80) j--; /* continuation bytes */
    if (j > 0 && ((unsigned char)dst[j - 1] & 0x80)) j--;          /* a cut lead byte */
    dst[j] = '\0';
    if (!dst[0]) snprintf(dst, n, "song");
}

/* A name for downloads: the display name without extension, reduced to
 * characters every file system and header accepts. */
static void safe_from_display(char *dst, size_t n, const char *display)
{
    const char *dot = strrchr(display, '.');
    size_t len = dot && dot != display ? (size_t)(dot - display) : strlen(display);
    size_t j = 0;
    int last_underscore = 0;
    for (size_t i = 0; i < len && j + 1 < n && j < 80; i++) {
        unsigned char c = (unsigned char)display[i];
        int keep = isalnum(c) || c == '-' || c == '_';
        if (!keep && last_underscore) continue;
        dst[j++] = keep ? (char)c : '_';
        last_underscore = !keep || c == '_';
    }
    while (j > 0 && dst[j - 1] == '_') j--;
    dst[j] = '\0';
    if (!dst[0]) snprintf(dst, n, "song");
}

static const struct {
    const char *name;
    d2m_separator value;
} separators[] = {{"auto", D2M_SEPARATOR_AUTO},
                  {"demucs", D2M_SEPARATOR_DEMUCS},
                  {"hpss", D2M_SEPARATOR_HPSS},
                  {"none", D2M_SEPARATOR_NONE}};

const char *jobs_separator_name(d2m_separator value)
{
    for (size_t i = 0; i < sizeof separators / sizeof separators[0]; i++)
        if (separators[i].value == value) return separators[i].name;
    return "auto";
}

int jobs_separator_from(const char *name, d2m_separator *out)
{
    for (size_t i = 0; i < sizeof separators / sizeof separators[0]; i++)
        if (name && !strcmp(name, separators[i].name)) return *out = separators[i].value, 0;
    return -1;
}

/* ------------------------------------------------------- store bookkeeping */

static job *find_locked(job_store *s, const char *id)
{
    if (!jobs_valid_id(id)) return NULL;
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->jobs[i]->id, id)) return s->jobs[i];
    return NULL;
}

static int add_locked(job_store *s, job *j)
{
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 64;
        job **v = realloc(s->jobs, (size_t)cap * sizeof *v);
        if (!v) return D2M_ERR_NOMEM;
        s->jobs = v;
        s->cap = cap;
    }
    s->jobs[s->n++] = j;
    return 0;
}

static void job_free(job *j)
{
    if (!j) return;
    free(j->report);
    free(j);
}

/* Takes the job out of the store; frees it unless a worker holds it. */
static void drop_locked(job_store *s, job *j)
{
    for (int i = 0; i < s->n; i++) {
        if (s->jobs[i] != j) continue;
        memmove(&s->jobs[i], &s->jobs[i + 1], (size_t)(s->n - i - 1) * sizeof *s->jobs);
        s->n--;
        break;
    }
    if (j->refs == 0) job_free(j);
}

static void delete_job_locked(job_store *s, job *j)
{
    char dir[1024];
    job_dir(s, j->id, dir, sizeof dir);
    files_remove_tree(dir, 0);
    drop_locked(s, j);
}

static void signal_locked(job_store *s, job *j)
{
    j->version++;
    j->last_signal = mono_now();
    pthread_cond_broadcast(&s->changed);
}

static cJSON *request_json(const job_request *r)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "quantize", r->quantize);
    cJSON_AddNumberToObject(o, "bars", r->bars);
    cJSON_AddNumberToObject(o, "tempo_bpm", r->tempo_bpm);
    cJSON_AddStringToObject(o, "separator", jobs_separator_name(r->separator));
    cJSON_AddNumberToObject(o, "loop_start_bar", r->loop_start_bar);
    return o;
}

static void request_from_json(job_request *r, const cJSON *o)
{
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "quantize")) && cJSON_IsNumber(v)) r->quantize = v->valueint;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "bars")) && cJSON_IsNumber(v)) r->bars = v->valueint;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "tempo_bpm")) && cJSON_IsNumber(v)) r->tempo_bpm = v->valuedouble;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "separator")) && cJSON_IsString(v))
        jobs_separator_from(v->valuestring, &r->separator);
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "loop_start_bar")) && cJSON_IsNumber(v))
        r->loop_start_bar = v->valueint;
}

/* Mirrors the job on disk. A re-analysis in progress is not recorded: the
 * results on disk stay those of `req`, and a restart simply forgets it. */
static void save_locked(job_store *s, const job *j)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return;
    job_state st = j->state;
    if (j->reanalysis && (st == JOB_QUEUED || st == JOB_RUNNING)) st = JOB_DONE;
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "name", j->display_name);
    cJSON_AddStringToObject(o, "format", j->format);
    cJSON_AddNumberToObject(o, "created", j->created);
    cJSON_AddNumberToObject(o, "finished", j->finished);
    cJSON_AddStringToObject(o, "state", state_names[st]);
    cJSON_AddStringToObject(o, "error", j->error);
    cJSON_AddStringToObject(o, "original_separator", j->original_separator);
    cJSON_AddItemToObject(o, "options", request_json(&j->req));
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text) return;
    char path[1100];
    job_dir(s, j->id, path, sizeof path);
    strncat(path, "/job.json", sizeof path - strlen(path) - 1);
    if (files_write_text_atomic(path, text) != 0)
        fprintf(stderr, "drum2midi serve: cannot write %s: %s\n", path, strerror(errno));
    free(text);
}

static int queue_position_locked(const job_store *s, const job *j)
{
    if (j->state != JOB_QUEUED) return 0;
    int pos = 1;
    for (int i = 0; i < s->n; i++) {
        const job *o = s->jobs[i];
        if (o != j && o->state == JOB_QUEUED && o->reanalysis == j->reanalysis && o->seq < j->seq) pos++;
    }
    return pos;
}

/* ------------------------------------------------------------ the report */

/* The disk name of an output: the library names every file after the input,
 * whose name on disk is INPUT_BASE; downloads carry the song's own name. */
static int download_to_disk(const job *j, const char *download, char *disk, size_t n)
{
    size_t k = strlen(j->safe_name);
    if (strncmp(download, j->safe_name, k) != 0) return -1;
    const char *rest = download + k;
    if (strchr(rest, '/') || strstr(rest, "..")) return -1;
    snprintf(disk, n, "%s%s", INPUT_BASE, rest);
    return 0;
}

/* report.json as the API shows it: the input's path replaced by the client's
 * name, files under their download names, plus "input" and "overview_json". */
static char *report_view(const job *j, const char *raw)
{
    cJSON *root = cJSON_Parse(raw);
    if (!root) return NULL;
    cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
    if (cJSON_IsObject(input)) cJSON_ReplaceItemInObjectCaseSensitive(input, "path", cJSON_CreateString(j->display_name));
    cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    if (cJSON_IsObject(files)) {
        cJSON *f;
        char name[512];
        cJSON_ArrayForEach(f, files)
        {
            if (cJSON_IsString(f) && f->string && !strcmp(f->string, "report_json")) {
                snprintf(name, sizeof name, "%s_report.json", j->safe_name);
                cJSON_SetValuestring(f, name);
                continue;
            }
            if (!cJSON_IsString(f) || strncmp(f->valuestring, INPUT_BASE, strlen(INPUT_BASE)) != 0) continue;
            snprintf(name, sizeof name, "%s%s", j->safe_name, f->valuestring + strlen(INPUT_BASE));
            cJSON_SetValuestring(f, name);
        }
        snprintf(name, sizeof name, "%s.%s", j->safe_name, j->format);
        cJSON_AddStringToObject(files, "input", name);
        snprintf(name, sizeof name, "%s_overview.json", j->safe_name);
        cJSON_AddStringToObject(files, "overview_json", name);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(root, "job");
    cJSON *info = cJSON_AddObjectToObject(root, "job");
    if (info) {
        cJSON_AddStringToObject(info, "id", j->id);
        cJSON_AddItemToObject(info, "options", request_json(&j->req));
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

static int load_report_locked(job_store *s, job *j)
{
    char path[1100];
    job_dir(s, j->id, path, sizeof path);
    strncat(path, "/out/report.json", sizeof path - strlen(path) - 1);
    char *raw = files_read_text(path, REPORT_MAX);
    if (!raw) return -1;
    char *view = report_view(j, raw);
    free(raw);
    if (!view) return -1;
    free(j->report);
    j->report = view;
    return 0;
}

/* -------------------------------------------------------------- status JSON */

static cJSON *status_locked(const job_store *s, const job *j, int with_report)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "name", j->display_name);
    cJSON_AddStringToObject(o, "state", state_names[j->state]);
    cJSON_AddBoolToObject(o, "reanalysis", j->reanalysis && (j->state == JOB_QUEUED || j->state == JOB_RUNNING));
    cJSON_AddStringToObject(o, "stage", j->stage);
    cJSON_AddNumberToObject(o, "stage_progress", round(j->stage_progress * 1000) / 1000);
    cJSON_AddNumberToObject(o, "progress", round(j->progress * 1000) / 1000);
    if (j->state == JOB_RUNNING && j->eta_s >= 0) cJSON_AddNumberToObject(o, "eta_s", round(j->eta_s * 10) / 10);
    else cJSON_AddNullToObject(o, "eta_s");
    cJSON_AddNumberToObject(o, "queue_position", queue_position_locked(s, j));
    if (j->error[0]) cJSON_AddStringToObject(o, "error", j->error);
    else cJSON_AddNullToObject(o, "error");
    cJSON_AddNumberToObject(o, "created", floor(j->created));
    cJSON_AddItemToObject(o, "options", request_json(&j->req));
    if (with_report) {
        cJSON *r = j->report ? cJSON_Parse(j->report) : NULL;
        if (r) cJSON_AddItemToObject(o, "report", r);
        else cJSON_AddNullToObject(o, "report");
    }
    return o;
}

char *jobs_status_json(job_store *s, const char *id, int with_report, unsigned *version)
{
    char *text = NULL;
    pthread_mutex_lock(&s->lock);
    job *j = find_locked(s, id);
    if (j) {
        cJSON *o = status_locked(s, j, with_report);
        if (o) text = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (version) *version = j->version;
    }
    pthread_mutex_unlock(&s->lock);
    return text;
}

char *jobs_list_json(job_store *s)
{
    char *text = NULL;
    pthread_mutex_lock(&s->lock);
    cJSON *a = cJSON_CreateArray();
    for (int i = s->n - 1; a && i >= 0; i--) {
        cJSON *o = status_locked(s, s->jobs[i], 0);
        if (o) cJSON_AddItemToArray(a, o);
    }
    if (a) text = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    pthread_mutex_unlock(&s->lock);
    return text;
}

int jobs_wait_change(job_store *s, const char *id, unsigned *version, int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) deadline.tv_sec++, deadline.tv_nsec -= 1000000000L;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        job *j = find_locked(s, id);
        if (!j || s->stopping) {
            rc = -1;
            break;
        }
        if (j->version != *version) {
            *version = j->version;
            rc = 1;
            break;
        }
        if (pthread_cond_timedwait(&s->changed, &s->lock, &deadline) == ETIMEDOUT) break;
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int jobs_finished(job_store *s, const char *id)
{
    pthread_mutex_lock(&s->lock);
    job *j = find_locked(s, id);
    int done = !j || j->state == JOB_DONE || j->state == JOB_FAILED || j->state == JOB_CANCELLED;
    pthread_mutex_unlock(&s->lock);
    return done;
}

void jobs_counts(job_store *s, int *queued, int *running, int *total)
{
    pthread_mutex_lock(&s->lock);
    *queued = *running = 0;
    for (int i = 0; i < s->n; i++) {
        if (s->jobs[i]->state == JOB_QUEUED) ++*queued;
        if (s->jobs[i]->state == JOB_RUNNING) ++*running;
    }
    *total = s->n;
    pthread_mutex_unlock(&s->lock);
}

int jobs_accepting(job_store *s)
{
    int queued, running, total;
    jobs_counts(s, &queued, &running, &total);
    return queued < s->cfg.max_queued;
}

/* ------------------------------------------------------------ client calls */

int jobs_upload_path(job_store *s, char *path, size_t n)
{
    char name[17];
    if (random_hex(name, 16)) return D2M_ERR_IO;
    snprintf(path, n, "%s/tmp/%s.upload", s->cfg.data_dir, name);
    return 0;
}

int jobs_create(job_store *s, const char *upload_path, const char *display_name,
                const char *format, const job_request *req, char *id, d2m_error *err)
{
    job *j = calloc(1, sizeof *j);
    if (!j) {
        unlink(upload_path);
        return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
    }
    display_from_client(j->display_name, sizeof j->display_name, display_name);
    safe_from_display(j->safe_name, sizeof j->safe_name, j->display_name);
    size_t k = 0;
    for (const char *c = format; *c && k + 1 < sizeof j->format; c++)
        if (isalnum((unsigned char)*c)) j->format[k++] = (char)tolower((unsigned char)*c);
    j->format[k] = '\0';
    if (!j->format[0]) snprintf(j->format, sizeof j->format, "bin");
    j->created = wall_now();
    j->req = *req;
    snprintf(j->original_separator, sizeof j->original_separator, "%s", jobs_separator_name(req->separator));
    j->state = JOB_QUEUED;
    snprintf(j->stage, sizeof j->stage, "queued");
    j->eta_s = -1;

    char dir[1100], dest[1200];
    pthread_mutex_lock(&s->lock);
    for (int attempt = 0;; attempt++) {
        if (attempt == 8 || random_hex(j->id, JOB_ID_LEN)) {
            pthread_mutex_unlock(&s->lock);
            unlink(upload_path);
            free(j);
            return d2m_fail(err, D2M_ERR_IO, "cannot make a job folder");
        }
        if (find_locked(s, j->id)) continue;
        job_dir(s, j->id, dir, sizeof dir);
        if (mkdir(dir, 0750) == 0) break;
        if (errno != EEXIST) {
            pthread_mutex_unlock(&s->lock);
            unlink(upload_path);
            free(j);
            return d2m_fail(err, D2M_ERR_IO, "cannot make a job folder: %s", strerror(errno));
        }
    }
    snprintf(dest, sizeof dest, "%s/%s.%s", dir, INPUT_BASE, j->format);
    if (rename(upload_path, dest) != 0 || add_locked(s, j) != 0) {
        int e = errno;
        unlink(upload_path);
        files_remove_tree(dir, 0);
        pthread_mutex_unlock(&s->lock);
        free(j);
        return d2m_fail(err, D2M_ERR_IO, "cannot store the upload: %s", strerror(e));
    }
    j->seq = s->next_seq++;
    save_locked(s, j);
    snprintf(id, JOB_ID_LEN + 1, "%s", j->id);
    pthread_cond_broadcast(&s->work);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int jobs_cancel(job_store *s, const char *id, int remove)
{
    pthread_mutex_lock(&s->lock);
    job *j = find_locked(s, id);
    if (!j) {
        pthread_mutex_unlock(&s->lock);
        return D2M_ERR_INVALID;
    }
    if (j->state == JOB_RUNNING) {
        /* The worker sees the flag at its next progress report. */
        j->cancel = 1;
        j->remove |= remove;
        snprintf(j->stage, sizeof j->stage, "cancelling");
        signal_locked(s, j);
    } else {
        if (j->state == JOB_QUEUED) {
            if (j->reanalysis) {
                j->state = JOB_DONE;
                j->reanalysis = 0;
                snprintf(j->stage, sizeof j->stage, "done");
            } else {
                j->state = JOB_CANCELLED;
                snprintf(j->error, sizeof j->error, "cancelled");
                snprintf(j->stage, sizeof j->stage, "cancelled");
                j->finished = wall_now();
            }
            save_locked(s, j);
            signal_locked(s, j);
        }
        if (remove) {
            signal_locked(s, j);
            delete_job_locked(s, j);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int jobs_reanalyze(job_store *s, const char *id, const job_request *req, d2m_error *err)
{
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    job *j = find_locked(s, id);
    if (!j) rc = d2m_fail(err, D2M_ERR_INVALID, "no such job");
    else if (j->state != JOB_DONE || !j->report)
        rc = d2m_fail(err, D2M_ERR_INVALID, "the job is %s; only a done job can be re-analysed",
                      state_names[j->state]);
    if (rc == 0) {
        j->pending = *req;
        if (req->quantize < 0) j->pending.quantize = j->req.quantize;
        if (req->bars < 0) j->pending.bars = j->req.bars;
        if (req->tempo_bpm < 0) j->pending.tempo_bpm = j->req.tempo_bpm;
        j->pending.separator = D2M_SEPARATOR_NONE;
        j->reanalysis = 1;
        j->state = JOB_QUEUED;
        j->error[0] = '\0';
        j->progress = j->stage_progress = 0;
        snprintf(j->stage, sizeof j->stage, "queued");
        j->seq = s->next_seq++;
        signal_locked(s, j);
        pthread_cond_broadcast(&s->work);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static const char *content_type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot) return "application/octet-stream";
    static const char *const types[][2] = {
        {".wav", "audio/wav"},  {".mid", "audio/midi"}, {".png", "image/png"},
        {".json", "application/json"}, {".mp3", "audio/mpeg"}, {".flac", "audio/flac"},
        {".ogg", "audio/ogg"},  {".aiff", "audio/aiff"}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(dot, types[i][0])) return types[i][1];
    return "application/octet-stream";
}

int jobs_file(job_store *s, const char *id, const char *key, char *path, size_t path_n,
              char *download_name, size_t name_n, const char **content_type, char **memory)
{
    int rc = D2M_ERR_INVALID;
    *memory = NULL;
    path[0] = '\0';
    pthread_mutex_lock(&s->lock);
    job *j = find_locked(s, id);
    if (!j) goto done;
    char dir[1100];
    job_dir(s, j->id, dir, sizeof dir);
    if (!strcmp(key, "input")) {
        snprintf(path, path_n, "%s/%s.%s", dir, INPUT_BASE, j->format);
        snprintf(download_name, name_n, "%s.%s", j->safe_name, j->format);
        *content_type = content_type_of(path);
        rc = 0;
        goto done;
    }
    if (!j->report) goto done;
    cJSON *root = cJSON_Parse(j->report);
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(root, "files");
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(files, key);
    char disk[600];
    int found = cJSON_IsString(f) && download_to_disk(j, f->valuestring, disk, sizeof disk) == 0;
    if (found && !strcmp(key, "overview_json")) snprintf(disk, sizeof disk, "overview.json");
    if (found) {
        snprintf(download_name, name_n, "%s", f->valuestring);
        *content_type = content_type_of(download_name);
        if (!strcmp(key, "report_json")) {
            *memory = strdup(j->report);
            rc = *memory ? 0 : D2M_ERR_NOMEM;
        } else {
            snprintf(path, path_n, "%s/out/%s", dir, disk);
            rc = 0;
        }
    }
    cJSON_Delete(root);
done:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* ---------------------------------------------------------------- workers */

/* Progress as the worker thread learns it from its runner. */
static void apply_progress(job_store *s, job *j, const char *stage, double fraction, double overall)
{
    pthread_mutex_lock(&s->lock);
    double now = mono_now();
    int stage_changed = strcmp(j->stage, stage) != 0;
    double step = overall - j->progress;
    if (!j->cancel) snprintf(j->stage, sizeof j->stage, "%s", stage);
    j->stage_progress = fraction < 0 ? 0 : fraction > 1 ? 1 : fraction;
    j->progress = overall < 0 ? 0 : overall > 1 ? 1 : overall;
    double elapsed = now - j->run_started;
    j->eta_s = j->progress > 0.02 && elapsed > 0.5 ? elapsed * (1 - j->progress) / j->progress : -1;
    /* Event streams get every stage change and at most ~10 updates a second. */
    if (stage_changed || step >= 0.01 || now - j->last_signal >= 0.1) signal_locked(s, j);
    pthread_mutex_unlock(&s->lock);
}

/* What the worker's runner reports and asks: progress goes into the job;
 * a cancel or a shutdown stops the runner. */
typedef struct {
    job_store *s;
    job *j;
} worker_job;

static void on_runner_progress(void *user, const char *stage, double fraction, double overall)
{
    worker_job *wj = user;
    apply_progress(wj->s, wj->j, stage, fraction, overall);
}

static int runner_should_stop(void *user)
{
    worker_job *wj = user;
    pthread_mutex_lock(&wj->s->lock);
    int stop = wj->j->cancel || wj->s->stopping;
    pthread_mutex_unlock(&wj->s->lock);
    return stop;
}

/* Swaps re/out in as out/ (under the lock, so no file lookup sees half). */
static int swap_in_reanalysis(job_store *s, job *j)
{
    char dir[1100], out[1200], fresh[1200], old[1200];
    job_dir(s, j->id, dir, sizeof dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(fresh, sizeof fresh, "%s/re/out", dir);
    snprintf(old, sizeof old, "%s/re/old", dir);
    if (rename(out, old) != 0) return -1;
    if (rename(fresh, out) != 0) {
        rename(old, out);
        return -1;
    }
    return 0;
}

static job *next_queued_locked(job_store *s, int light)
{
    job *best = NULL;
    for (int i = 0; i < s->n; i++) {
        job *j = s->jobs[i];
        if (j->state == JOB_QUEUED && j->reanalysis == light && (!best || j->seq < best->seq)) best = j;
    }
    return best;
}

static void finish_locked(job_store *s, job *j, int rc, const d2m_error *err, const job_request *asked)
{
    char dir[1100], re[1200];
    job_dir(s, j->id, dir, sizeof dir);
    snprintf(re, sizeof re, "%s/re", dir);
    int light = j->reanalysis;
    if (rc == D2M_ERR_CANCELLED && s->stopping && !j->cancel) {
        /* Interrupted by shutdown: queued again on disk, run by the next server. */
        if (light) files_remove_tree(re, 0);
        return;
    }
    if (j->remove) {
        j->state = JOB_CANCELLED;
        signal_locked(s, j);
        delete_job_locked(s, j);
        return;
    }
    j->cancel = 0;
    j->reanalysis = 0;
    j->eta_s = -1;
    if (light) {
        if (rc == 0 && swap_in_reanalysis(s, j) == 0) {
            j->req = *asked;
            j->error[0] = '\0';
            if (load_report_locked(s, j) != 0) snprintf(j->error, sizeof j->error, "cannot read the new report");
        } else if (rc == D2M_ERR_CANCELLED) {
            snprintf(j->error, sizeof j->error, "re-analysis cancelled");
        } else {
            char msg[sizeof j->error];
            if (snprintf(msg, sizeof msg, "re-analysis failed: %s",
                         rc ? err->message : "cannot swap in the results") >= (int)sizeof msg)
                msg[sizeof msg - 1] = '\0';
            memcpy(j->error, msg, sizeof msg);
        }
        files_remove_tree(re, 0);
        j->state = JOB_DONE; /* the previous results still stand when it failed */
    } else if (rc == 0 && load_report_locked(s, j) == 0) {
        j->state = JOB_DONE;
        j->error[0] = '\0';
    } else if (rc == D2M_ERR_CANCELLED) {
        j->state = JOB_CANCELLED;
        snprintf(j->error, sizeof j->error, "cancelled");
    } else {
        j->state = JOB_FAILED;
        snprintf(j->error, sizeof j->error, "%s", rc ? err->message : "cannot read the report");
    }
    snprintf(j->stage, sizeof j->stage, "%s", state_names[j->state]);
    if (j->state == JOB_DONE) j->progress = j->stage_progress = 1;
    j->finished = wall_now();
    j->bytes = files_tree_bytes(dir, 0);
    save_locked(s, j);
    signal_locked(s, j);
}

static void *worker_main(void *arg)
{
    worker_arg *w = arg;
    job_store *s = w->s;
    runner proc; /* this worker's runner process, started on its first job */
    runner_init(&proc);
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        job *j = next_queued_locked(s, w->light);
        if (!j) {
            pthread_cond_wait(&s->work, &s->lock);
            continue;
        }
        j->state = JOB_RUNNING;
        j->refs++;
        j->run_started = mono_now();
        j->progress = j->stage_progress = 0;
        j->eta_s = -1;
        snprintf(j->stage, sizeof j->stage, "starting");
        job_request asked = w->light ? j->pending : j->req;
        if (!w->light) save_locked(s, j);
        signal_locked(s, j);
        pthread_mutex_unlock(&s->lock);

        runner_work work = {.reanalysis = w->light, .req = asked, .max_duration_s = s->cfg.max_duration_s};
        job_dir(s, j->id, work.dir, sizeof work.dir);
        snprintf(work.format, sizeof work.format, "%s", j->format);
        snprintf(work.display_name, sizeof work.display_name, "%s", j->display_name);
        snprintf(work.title, sizeof work.title, "%s", j->safe_name);
        worker_job wj = {s, j};
        d2m_error err = {0};
        int rc = runner_run(&proc, &work, on_runner_progress, runner_should_stop, &wj, &err);

        pthread_mutex_lock(&s->lock);
        j->refs--;
        int in_store = 0;
        for (int i = 0; i < s->n; i++) in_store |= s->jobs[i] == j;
        if (in_store) finish_locked(s, j, rc, &err, &asked);
        else if (j->refs == 0) job_free(j);
    }
    pthread_mutex_unlock(&s->lock);
    runner_close(&proc);
    return NULL;
}

/* ---------------------------------------------------------------- janitor */

static void retention_locked(job_store *s)
{
    double now = wall_now();
    for (int i = 0; i < s->n; i++) {
        job *j = s->jobs[i];
        int finished = j->state == JOB_DONE || j->state == JOB_FAILED || j->state == JOB_CANCELLED;
        if (finished && !j->refs && s->cfg.keep_days > 0 && now - j->finished > s->cfg.keep_days * 86400) {
            delete_job_locked(s, j);
            i--;
        }
    }
    if (s->cfg.max_data_mb <= 0) return;
    for (;;) {
        long long total = 0;
        job *oldest = NULL;
        for (int i = 0; i < s->n; i++) {
            job *j = s->jobs[i];
            total += j->bytes;
            int finished = j->state == JOB_DONE || j->state == JOB_FAILED || j->state == JOB_CANCELLED;
            if (finished && !j->refs && (!oldest || j->finished < oldest->finished)) oldest = j;
        }
        if (total <= s->cfg.max_data_mb * 1048576.0 || !oldest) break;
        delete_job_locked(s, oldest);
    }
}

static void *janitor_main(void *arg)
{
    job_store *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        retention_locked(s);
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += JANITOR_PERIOD_S;
        while (!s->stopping && pthread_cond_timedwait(&s->work, &s->lock, &deadline) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ------------------------------------------------------------ open, close */

static void load_job_locked(job_store *s, const char *id)
{
    char path[1100];
    job_dir(s, id, path, sizeof path);
    strncat(path, "/job.json", sizeof path - strlen(path) - 1);
    char *text = files_read_text(path, JOB_JSON_MAX);
    cJSON *o = text ? cJSON_Parse(text) : NULL;
    free(text);
    const cJSON *v;
    job *j = o ? calloc(1, sizeof *j) : NULL;
    if (!j) goto done;
    memcpy(j->id, id, JOB_ID_LEN); /* validated by the caller */
    j->id[JOB_ID_LEN] = '\0';
    v = cJSON_GetObjectItemCaseSensitive(o, "name");
    display_from_client(j->display_name, sizeof j->display_name, cJSON_IsString(v) ? v->valuestring : "");
    safe_from_display(j->safe_name, sizeof j->safe_name, j->display_name);
    v = cJSON_GetObjectItemCaseSensitive(o, "format");
    snprintf(j->format, sizeof j->format, "%s", cJSON_IsString(v) ? v->valuestring : "bin");
    for (char *c = j->format; *c; c++)
        if (!isalnum((unsigned char)*c)) *c = '_';
    v = cJSON_GetObjectItemCaseSensitive(o, "created");
    j->created = cJSON_IsNumber(v) ? v->valuedouble : wall_now();
    v = cJSON_GetObjectItemCaseSensitive(o, "finished");
    j->finished = cJSON_IsNumber(v) ? v->valuedouble : j->created;
    v = cJSON_GetObjectItemCaseSensitive(o, "error");
    snprintf(j->error, sizeof j->error, "%s", cJSON_IsString(v) ? v->valuestring : "");
    v = cJSON_GetObjectItemCaseSensitive(o, "original_separator");
    snprintf(j->original_separator, sizeof j->original_separator, "%s", cJSON_IsString(v) ? v->valuestring : "auto");
    j->req = (job_request){.quantize = 16, .bars = 4, .separator = d2m_default_options().separator};
    request_from_json(&j->req, cJSON_GetObjectItemCaseSensitive(o, "options"));
    v = cJSON_GetObjectItemCaseSensitive(o, "state");
    j->state = JOB_QUEUED;
    for (int k = 0; k < 5; k++)
        if (cJSON_IsString(v) && !strcmp(v->valuestring, state_names[k])) j->state = (job_state)k;
    if (j->state == JOB_RUNNING) j->state = JOB_QUEUED;
    if (j->state == JOB_DONE && load_report_locked(s, j) != 0) {
        j->state = JOB_FAILED;
        snprintf(j->error, sizeof j->error, "the results are missing");
    }
    if (j->state == JOB_DONE) j->progress = j->stage_progress = 1;
    snprintf(j->stage, sizeof j->stage, "%s", state_names[j->state]);
    j->eta_s = -1;
    char dir[1100];
    job_dir(s, id, dir, sizeof dir);
    j->bytes = files_tree_bytes(dir, 0);
    if (add_locked(s, j) != 0) {
        job_free(j);
        j = NULL;
    }
done:
    cJSON_Delete(o);
}

static int compare_created(const void *a, const void *b)
{
    const job *x = *(job *const *)a, *y = *(job *const *)b;
    return x->created < y->created ? -1 : x->created > y->created;
}

int jobs_open(job_store **out, const job_store_config *cfg, d2m_error *err)
{
    *out = NULL;
    job_store *s = calloc(1, sizeof *s);
    if (!s) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
    s->cfg = *cfg;
    if (s->cfg.workers < 1) s->cfg.workers = 1;
    if (s->cfg.max_queued < 1) s->cfg.max_queued = 1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->changed, &ca);
    pthread_condattr_destroy(&ca);

    char path[1100];
    const char *subs[] = {"", "/jobs", "/tmp"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s%s", s->cfg.data_dir, subs[i]);
        if (mkdir(path, 0750) != 0 && errno != EEXIST) {
            d2m_fail(err, D2M_ERR_IO, "%s: cannot make the folder: %s", path, strerror(errno));
            jobs_close(s);
            return err->code;
        }
        if (access(path, W_OK) != 0) {
            d2m_fail(err, D2M_ERR_IO, "%s: not writable", path);
            jobs_close(s);
            return err->code;
        }
    }
    /* Uploads a killed server left behind. */
    snprintf(path, sizeof path, "%s/tmp", s->cfg.data_dir);
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        files_remove_tree(p, 0);
    }
    if (d) closedir(d);
    snprintf(path, sizeof path, "%s/jobs", s->cfg.data_dir);
    d = opendir(path);
    pthread_mutex_lock(&s->lock);
    while (d && (e = readdir(d)))
        if (jobs_valid_id(e->d_name)) load_job_locked(s, e->d_name);
    if (d) closedir(d);
    if (s->n > 1) qsort(s->jobs, (size_t)s->n, sizeof *s->jobs, compare_created);
    for (int i = 0; i < s->n; i++) {
        char re[1200];
        job_dir(s, s->jobs[i]->id, re, sizeof re);
        strncat(re, "/re", sizeof re - strlen(re) - 1);
        files_remove_tree(re, 0); /* an interrupted re-analysis */
        s->jobs[i]->seq = s->next_seq++;
    }
    retention_locked(s); /* before the first request can see an expired job */
    pthread_mutex_unlock(&s->lock);

    s->threads = calloc((size_t)s->cfg.workers + 2, sizeof *s->threads);
    if (!s->threads) {
        jobs_close(s);
        return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
    }
    s->args[0] = (worker_arg){s, 0};
    s->args[1] = (worker_arg){s, 1};
    for (int i = 0; i < s->cfg.workers + 2; i++) {
        int rc = i < s->cfg.workers ? pthread_create(&s->threads[i], NULL, worker_main, &s->args[0])
                 : i == s->cfg.workers ? pthread_create(&s->threads[i], NULL, worker_main, &s->args[1])
                                       : pthread_create(&s->threads[i], NULL, janitor_main, s);
        if (rc != 0) {
            jobs_close(s);
            return d2m_fail(err, D2M_ERR_INTERNAL, "cannot start a worker thread");
        }
        s->n_threads++;
    }
    *out = s;
    return 0;
}

void jobs_stop(job_store *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    pthread_cond_broadcast(&s->work);
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < s->n_threads; i++) pthread_join(s->threads[i], NULL);
    s->n_threads = 0;
}

void jobs_close(job_store *s)
{
    if (!s) return;
    jobs_stop(s);
    free(s->threads);
    for (int i = 0; i < s->n; i++) job_free(s->jobs[i]);
    free(s->jobs);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->changed);
    free(s);
}
