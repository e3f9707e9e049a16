/* See runner.h: the job runner process and the server's handle on it. */
#define _GNU_SOURCE /* pipe2, posix_spawn_file_actions_addclosefrom_np */
#include "web/runner.h"

#include "audio/audio.h"
#include "web/files.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define REQUEST_MAX 8192
#define REPORT_MAX (64 * 1024 * 1024)
#define OVERVIEW_MAX_BINS 4000

extern char **environ;

/* ------------------------------------------------------------ line output */

/* Progress goes to the server as "p STAGE FRACTION OVERALL" lines, at most
 * one per 0.2% unless the stage changes. The runner never cancels itself;
 * the server kills it. */
typedef struct {
    int fd;
    char stage[32];
    double last;
} progress_out;

static int on_progress(void *user, const char *stage, double fraction, double overall)
{
    progress_out *c = user;
    if (!strcmp(c->stage, stage) && overall - c->last < 0.002 && fraction < 1.0) return 0;
    snprintf(c->stage, sizeof c->stage, "%s", stage);
    c->last = overall;
    char line[96];
    snprintf(line, sizeof line, "p %.31s %.4f %.4f\n", stage, fraction, overall);
    for (char *ch = line + 2; *ch && *ch != ' '; ch++)
        if (*ch < 0x21 || *ch > 0x7e) *ch = '_';
    files_write_all(c->fd, line, strlen(line));
    return 0;
}

/* -------------------------------------------------------- the work itself */

/* overview.json: the drum stem's peak level per bin, for the page's song
 * overview: {"duration_s", "bin_s", "peak": [...]}, at most 4000 bins. */
static int write_overview(const char *stem_path, const char *out_path, double max_s, d2m_error *err)
{
    d2m_audio a = {0};
    d2m_decode_info info = {0};
    int rc = audio_decode_file(&a, &info, stem_path, max_s + 60, err);
    if (rc) return rc;
    int64_t bin = a.frames / OVERVIEW_MAX_BINS + 1;
    if (bin < 512) bin = 512;
    int64_t n_bins = (a.frames + bin - 1) / bin;
    cJSON *o = cJSON_CreateObject();
    cJSON *peaks = o ? cJSON_AddArrayToObject(o, "peak") : NULL;
    if (!peaks) {
        cJSON_Delete(o);
        d2m_audio_free(&a);
        return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
    }
    cJSON_AddNumberToObject(o, "duration_s", (double)a.frames / a.sample_rate);
    cJSON_AddNumberToObject(o, "bin_s", (double)bin / a.sample_rate);
    for (int64_t b = 0; b < n_bins; b++) {
        float peak = 0;
        int64_t end = (b + 1) * bin < a.frames ? (b + 1) * bin : a.frames;
        for (int64_t i = b * bin * a.channels; i < end * a.channels; i++) peak = fmaxf(peak, fabsf(a.data[i]));
        cJSON_AddItemToArray(peaks, cJSON_CreateNumber(round(peak * 1000) / 1000));
    }
    d2m_audio_free(&a);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
    rc = files_write_text_atomic(out_path, text) ? d2m_fail(err, D2M_ERR_IO, "cannot write the overview") : 0;
    free(text);
    return rc;
}

/* Replaces every occurrence of what in text (in place, bounded by n). */
static void replace_all(char *text, size_t n, const char *what, const char *with)
{
    size_t wl = strlen(what), rl = strlen(with);
    if (!wl) return;
    char out[1024];
    size_t o = 0;
    for (const char *p = text; *p && o + 1 < sizeof out;) {
        if (!strncmp(p, what, wl)) {
            for (size_t i = 0; i < rl && o + 1 < sizeof out; i++) out[o++] = with[i];
            p += wl;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    size_t len = o < n - 1 ? o : n - 1;
    memcpy(text, out, len);
    text[len] = '\0';
}

static void options_from(d2m_options *o, const runner_work *w)
{
    *o = d2m_default_options();
    o->quantize = w->req.quantize;
    o->bars = w->req.bars;
    o->tempo_bpm = w->req.tempo_bpm;
    o->separator = w->req.separator;
    o->max_duration_s = w->max_duration_s;
    o->loop_first_bar = w->req.loop_start_bar;
    o->title = w->title;
}

/* A whole song: upload -> out/. */
static int run_song(d2m_engine *e, const runner_work *w, progress_out *po, d2m_error *err)
{
    char in[1200], out[1200], stem[1400], overview[1300];
    snprintf(in, sizeof in, "%s/%s.%s", w->dir, RUNNER_INPUT_BASE, w->format);
    snprintf(out, sizeof out, "%s/out", w->dir);
    d2m_options opt;
    options_from(&opt, w);
    d2m_result r;
    int rc = d2m_engine_process_file(e, &r, in, out, &opt, on_progress, po, err);
    if (rc == 0) {
        on_progress(po, "overview", 0.0, 1.0);
        if (snprintf(stem, sizeof stem, "%s/%s", out, r.drum_stem_wav) >= (int)sizeof stem ||
            snprintf(overview, sizeof overview, "%s/overview.json", out) >= (int)sizeof overview)
            rc = d2m_fail(err, D2M_ERR_IO, "the data folder's path is too long");
        else
            rc = write_overview(stem, overview, w->max_duration_s, err);
    }
    d2m_result_free(&r);
    replace_all(err->message, sizeof err->message, in, w->display_name);
    return rc;
}

/* The disk report with the song's own input, separator and separation time
 * kept from the first run, and what this re-analysis asked for. */
static int merge_reanalysis_report(const char *new_path, const char *old_path, const job_request *req)
{
    char *new_text = files_read_text(new_path, REPORT_MAX), *old_text = files_read_text(old_path, REPORT_MAX);
    cJSON *fresh = new_text ? cJSON_Parse(new_text) : NULL, *old = old_text ? cJSON_Parse(old_text) : NULL;
    free(new_text);
    free(old_text);
    int rc = -1;
    if (fresh && old) {
        static const char *const kept[] = {"input", "separator"};
        for (int i = 0; i < 2; i++) {
            cJSON *v = cJSON_DetachItemFromObjectCaseSensitive(old, kept[i]);
            if (v) cJSON_ReplaceItemInObjectCaseSensitive(fresh, kept[i], v);
        }
        cJSON *t_old = cJSON_GetObjectItemCaseSensitive(old, "timings_s");
        cJSON *t_new = cJSON_GetObjectItemCaseSensitive(fresh, "timings_s");
        cJSON *sep = cJSON_GetObjectItemCaseSensitive(t_old, "separate");
        if (cJSON_IsObject(t_new) && cJSON_IsNumber(sep))
            cJSON_ReplaceItemInObjectCaseSensitive(t_new, "separate", cJSON_CreateNumber(sep->valuedouble));
        cJSON *re = cJSON_AddObjectToObject(fresh, "reanalysis");
        if (re) {
            cJSON_AddNumberToObject(re, "tempo_bpm", req->tempo_bpm);
            cJSON_AddNumberToObject(re, "loop_start_bar", req->loop_start_bar);
        }
        char *text = cJSON_Print(fresh);
        if (text && files_write_text_atomic(new_path, text) == 0) rc = 0;
        free(text);
    }
    cJSON_Delete(fresh);
    cJSON_Delete(old);
    return rc;
}

/* A re-analysis: out/<stem> linked as re/song.wav, the pipeline with
 * separator none into re/out, the report merged; the server swaps folders. */
static int run_reanalysis(d2m_engine *e, const runner_work *w, progress_out *po, d2m_error *err)
{
    char re[1200], in[1300], out[1300], old_stem[1400], path[1400], path2[1400];
    snprintf(re, sizeof re, "%s/re", w->dir);
    files_remove_tree(re, 0);
    if (mkdir(re, 0750) != 0) return d2m_fail(err, D2M_ERR_IO, "cannot make the re-analysis folder");
    snprintf(old_stem, sizeof old_stem, "%s/out/%s_drums.wav", w->dir, RUNNER_INPUT_BASE);
    snprintf(in, sizeof in, "%s/%s.wav", re, RUNNER_INPUT_BASE);
    snprintf(out, sizeof out, "%s/out", re);
    if (link(old_stem, in) != 0) return d2m_fail(err, D2M_ERR_IO, "the drum stem is missing");
    d2m_options opt;
    options_from(&opt, w);
    d2m_result r;
    int rc = d2m_engine_process_file(e, &r, in, out, &opt, on_progress, po, err);
    d2m_result_free(&r);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/report.json", out);
        snprintf(path2, sizeof path2, "%s/out/report.json", w->dir);
        if (merge_reanalysis_report(path, path2, &w->req)) rc = d2m_fail(err, D2M_ERR_IO, "cannot write the report");
    }
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/out/overview.json", w->dir);
        snprintf(path2, sizeof path2, "%s/overview.json", out);
        if (rename(path, path2) != 0) rc = write_overview(in, path2, w->max_duration_s, err);
    }
    replace_all(err->message, sizeof err->message, in, w->display_name);
    return rc;
}

/* ------------------------------------------------------------- the request */

static char *request_text(const runner_work *w)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "kind", w->reanalysis ? "reanalysis" : "song");
    cJSON_AddStringToObject(o, "dir", w->dir);
    cJSON_AddStringToObject(o, "format", w->format);
    cJSON_AddStringToObject(o, "display_name", w->display_name);
    cJSON_AddStringToObject(o, "title", w->title);
    cJSON_AddNumberToObject(o, "quantize", w->req.quantize);
    cJSON_AddNumberToObject(o, "bars", w->req.bars);
    cJSON_AddNumberToObject(o, "tempo", w->req.tempo_bpm);
    cJSON_AddNumberToObject(o, "separator", (double)w->req.separator);
    cJSON_AddNumberToObject(o, "loop_start_bar", w->req.loop_start_bar);
    cJSON_AddNumberToObject(o, "max_duration_s", w->max_duration_s);
    char *text = cJSON_PrintUnformatted(o); /* escapes control characters: one line */
    cJSON_Delete(o);
    return text;
}

static int copy_string(char *dst, size_t n, const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= n) return -1;
    memcpy(dst, v->valuestring, strlen(v->valuestring) + 1);
    return 0;
}

static int get_number(double *dst, const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) return -1;
    *dst = v->valuedouble;
    return 0;
}

static int parse_request(runner_work *w, const char *line)
{
    memset(w, 0, sizeof *w);
    cJSON *o = cJSON_Parse(line);
    char kind[16];
    double q, bars, tempo, sep, first;
    int bad = !o || copy_string(kind, sizeof kind, o, "kind") || copy_string(w->dir, sizeof w->dir, o, "dir") ||
              copy_string(w->format, sizeof w->format, o, "format") ||
              copy_string(w->display_name, sizeof w->display_name, o, "display_name") ||
              copy_string(w->title, sizeof w->title, o, "title") ||
              get_number(&q, o, "quantize") || get_number(&bars, o, "bars") || get_number(&tempo, o, "tempo") ||
              get_number(&sep, o, "separator") || get_number(&first, o, "loop_start_bar") ||
              get_number(&w->max_duration_s, o, "max_duration_s");
    cJSON_Delete(o);
    if (bad || (strcmp(kind, "song") && strcmp(kind, "reanalysis")) || sep < 0 || sep > D2M_SEPARATOR_NONE)
        return -1;
    w->reanalysis = !strcmp(kind, "reanalysis");
    w->req = (job_request){.quantize = (int)q, .bars = (int)bars, .tempo_bpm = tempo,
                           .separator = (d2m_separator)(int)sep, .loop_start_bar = (int)first};
    return 0;
}

/* ------------------------------------------------------ the runner process */

int web_runner_main(int argc, char **argv)
{
    /* Die with the server (the thread that started us): nothing left behind.
     * argv[1] is the server's pid: had it gone before the prctl, we would
     * have a new parent by now (the server may itself be pid 1, in a
     * container, so "parent is 1" says nothing). */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (argc < 2 || atol(argv[1]) != (long)getppid()) {
        fprintf(stderr, "drum2midi __runner: the server's job runner; not for use by hand\n");
        return 2;
    }
    d2m_engine *engine = NULL;
    d2m_error err = {0};
    if (d2m_engine_new(&engine, &err)) {
        fprintf(stderr, "drum2midi runner: %s\n", err.message);
        return 1;
    }
    static char line[REQUEST_MAX];
    while (fgets(line, sizeof line, stdin)) {
        runner_work w;
        memset(&err, 0, sizeof err);
        progress_out po = {.fd = STDOUT_FILENO, .last = -1};
        int had_model = d2m_engine_loaded(engine);
        int rc = parse_request(&w, line) ? d2m_fail(&err, D2M_ERR_INVALID, "bad request to the runner")
                 : w.reanalysis         ? run_reanalysis(engine, &w, &po, &err)
                                        : run_song(engine, &w, &po, &err);
        if (!had_model && d2m_engine_loaded(engine))
            fprintf(stderr, "drum2midi serve: job runner %d loaded the Demucs model\n", (int)getpid());
        if (rc) replace_all(err.message, sizeof err.message, w.dir, "");
        char answer[sizeof err.message + 32];
        for (char *c = err.message; *c; c++)
            if (*c == '\n' || *c == '\r') *c = ' ';
        snprintf(answer, sizeof answer, "end %d %s\n", rc, rc ? err.message : "");
        if (files_write_all(STDOUT_FILENO, answer, strlen(answer))) break;
        malloc_trim(0); /* the song's buffers go back to the system while idle; the model stays */
    }
    d2m_engine_free(engine);
    return 0;
}

/* ---------------------------------------------------- the server's handle */

void runner_init(runner *r)
{
    r->pid = -1;
    r->to = r->from = -1;
}

static void reap(runner *r, int *status)
{
    if (r->to >= 0) close(r->to);
    if (r->from >= 0) close(r->from);
    int st = 0;
    while (r->pid > 0 && waitpid(r->pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (status) *status = st;
    runner_init(r);
}

static int start(runner *r, d2m_error *err)
{
    int req[2], rep[2];
    if (pipe2(req, O_CLOEXEC) != 0) return d2m_fail(err, D2M_ERR_INTERNAL, "cannot make a pipe: %s", strerror(errno));
    if (pipe2(rep, O_CLOEXEC) != 0) {
        close(req[0]);
        close(req[1]);
        return d2m_fail(err, D2M_ERR_INTERNAL, "cannot make a pipe: %s", strerror(errno));
    }
    /* The child gets the pipes as stdin/stdout, the server's stderr (its
     * log), no other descriptor, no blocked signal, default dispositions. */
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, req[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, rep[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclosefrom_np(&fa, STDERR_FILENO + 1);
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    char arg0[] = "drum2midi", arg1[] = "__runner", arg2[24];
    snprintf(arg2, sizeof arg2, "%ld", (long)getpid());
    char *args[] = {arg0, arg1, arg2, NULL};
    pid_t pid = -1;
    int rc = posix_spawn(&pid, "/proc/self/exe", &fa, &attr, args, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(req[0]);
    close(rep[1]);
    if (rc != 0) {
        close(req[1]);
        close(rep[0]);
        return d2m_fail(err, D2M_ERR_INTERNAL, "cannot start the job runner: %s", strerror(rc));
    }
    r->pid = pid;
    r->to = req[1];
    r->from = rep[0];
    return 0;
}

int runner_run(runner *r, const runner_work *w, runner_progress_fn progress, runner_stop_fn should_stop,
               void *user, d2m_error *err)
{
    char *text = request_text(w);
    size_t len = text ? strlen(text) : 0;
    if (!text || len + 2 > REQUEST_MAX) {
        free(text);
        return d2m_fail(err, D2M_ERR_NOMEM, "cannot describe the job to the runner");
    }
    char request[REQUEST_MAX];
    memcpy(request, text, len);
    request[len++] = '\n';
    free(text);
    /* A runner that died while idle (killed by hand, say) shows as a failed
     * write: start a fresh one once. */
    int sent = 0;
    for (int attempt = 0; attempt < 2 && !sent; attempt++) {
        if (r->pid <= 0 && start(r, err)) return err->code;
        sent = files_write_all(r->to, request, len) == 0;
        if (!sent) reap(r, NULL);
    }
    if (!sent) return d2m_fail(err, D2M_ERR_INTERNAL, "cannot reach the job runner");

    char buf[2048];
    size_t have = 0;
    for (;;) {
        struct pollfd pf = {.fd = r->from, .events = POLLIN};
        int ready = poll(&pf, 1, 200);
        if (should_stop(user)) {
            kill(r->pid, SIGKILL);
            reap(r, NULL);
            return d2m_fail(err, D2M_ERR_CANCELLED, "cancelled");
        }
        if (ready < 0 && errno == EINTR) continue;
        if (ready <= 0) continue;
        ssize_t got = read(r->from, buf + have, sizeof buf - 1 - have);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break; /* the runner is gone */
        have += (size_t)got;
        buf[have] = '\0';
        char *line = buf, *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = '\0';
            char stage[32];
            double fraction, overall;
            int code, at = 0;
            if (sscanf(line, "p %31s %lf %lf", stage, &fraction, &overall) == 3) {
                progress(user, stage, fraction, overall);
            } else if (sscanf(line, "end %d %n", &code, &at) == 1) {
                if (code) d2m_fail(err, code, "%s", line + at);
                return code; /* the runner stays for the next job */
            }
            line = nl + 1;
        }
        have = strlen(line);
        memmove(buf, line, have + 1);
        if (have == sizeof buf - 1) have = 0; /* a line this long is not ours: drop it */
    }
    int status = 0;
    reap(r, &status);
    if (WIFSIGNALED(status))
        return d2m_fail(err, D2M_ERR_INTERNAL, "the analysis crashed (signal %d); please report this song",
                        WTERMSIG(status));
    return d2m_fail(err, D2M_ERR_INTERNAL, "the analysis stopped unexpectedly (status %d)", WEXITSTATUS(status));
}

void runner_close(runner *r)
{
    if (!r || r->pid <= 0) return;
    close(r->to); /* end of input: the runner finishes and exits */
    r->to = -1;
    int status = 0;
    reap(r, &status);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "drum2midi serve: the job runner ended with status %d\n", status);
}
