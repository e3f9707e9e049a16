/* The job runner: the process that does a job's work for `drum2midi serve`.
 *
 * A runner is this same binary started as `drum2midi __runner PID` with
 * posix_spawn (a fresh process image: never a bare fork of the threaded
 * server, whose locks, allocator included, another thread may hold at the
 * fork). It reads one request per line on stdin, runs it on a d2m_engine it
 * keeps, and answers on stdout: progress lines, then one end line. Since the
 * engine outlives the job, the Demucs model is loaded once, on the first job
 * that needs it, and shared by every later job the runner does. A crash
 * fails that job, not the server; a cancel kills the runner, and the next
 * job starts a fresh one.
 *
 * Protocol (internal; both ends are this file):
 *   request: {"kind": "song"|"reanalysis", "dir", "format", "display_name", "title",
 *             "quantize", "bars", "tempo", "separator", "loop_start_bar",
 *             "max_duration_s"} on one line
 *   answers: "p STAGE FRACTION OVERALL" ... then "end CODE MESSAGE"
 *
 * Threading: a runner handle belongs to one worker thread.
 */
#ifndef D2M_WEB_RUNNER_H
#define D2M_WEB_RUNNER_H

#include "web/jobs.h"
#include "web/web.h"

#include <sys/types.h>

#define RUNNER_INPUT_BASE "song" /* the upload's name on disk, and so the outputs' prefix */

/* One piece of work: a whole song (upload -> dir/out) or a re-analysis of
 * its drum stem (dir/out -> dir/re/out, the caller swaps the folders). */
typedef struct {
    int reanalysis;
    char dir[1100];         /* the job's folder */
    char format[16];        /* the upload is dir/song.<format> */
    char display_name[256]; /* file paths in error messages become this */
    char title[96];         /* the song's name inside the outputs (MIDI, spectrograms) */
    job_request req;
    double max_duration_s;
} runner_work;

typedef struct {
    pid_t pid; /* -1: not running */
    int to, from;
} runner;

/* Applied to every progress line; should_stop is asked every 200 ms and a
 * non-zero answer kills the runner. */
typedef void (*runner_progress_fn)(void *user, const char *stage, double fraction, double overall);
typedef int (*runner_stop_fn)(void *user);

void runner_init(runner *r);

/* Runs w, starting the runner process first when none is running. Returns
 * the job's code (0 or a D2M_ERR_*, err set), D2M_ERR_CANCELLED when
 * should_stop killed it, D2M_ERR_INTERNAL when the runner died on its own
 * or could not be started. */
int runner_run(runner *r, const runner_work *w, runner_progress_fn progress,
               runner_stop_fn should_stop, void *user, d2m_error *err);

/* Ends the runner process (it exits at the end of its input) and waits for
 * it. NULL-safe; the handle can be used again. */
void runner_close(runner *r);

#endif
