/* `drum2midi serve [--host H] [--port P] [--data DIR] [--max-upload-mb N]
 * [--jobs N] ...`: parse options, open the job store, start the HTTP server,
 * wait for SIGINT/SIGTERM, stop in order (job workers first, so event
 * streams end; then connections; then the store is freed).
 * Threading: the signals are blocked before any thread starts, so only the
 * main thread's sigwait receives them. */
#include "web/web.h"

#include "web/http.h"
#include "web/jobs.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: drum2midi serve [options]\n"
            "The web interface: drop a song in a browser, get its drums as MIDI.\n"
            "\n"
            "      --host ADDR         address to listen on (default 127.0.0.1; 0.0.0.0 for\n"
            "                          every interface, e.g. in a container)\n"
            "      --port N            port (default 8080; 0 = any free port)\n"
            "      --data DIR          where uploads and results live (default: data)\n"
            "      --max-upload-mb N   largest upload accepted (default 200)\n"
            "      --jobs N            songs processed at once (default 1)\n"
            "      --max-queue N       songs waiting at most (default 32)\n"
            "      --keep-days D       remove finished jobs after D days (default 7; 0 = keep)\n"
            "      --max-data-mb N     remove the oldest finished jobs above N MB (default 20000;\n"
            "                          0 = no limit)\n"
            "      --max-minutes M     refuse longer songs (default 30)\n"
            "  -h, --help              this help\n");
}

static int number(const char *name, const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "drum2midi serve: %s must be %g..%g, not '%s'\n", name, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int web_serve_main(int argc, char **argv)
{
    job_store_config jc = {.workers = 1, .max_queued = 32, .keep_days = 7, .max_data_mb = 20000,
                           .max_duration_s = 30 * 60};
    web_server_config wc = {.port = 8080, .max_upload_bytes = 200LL * 1024 * 1024, .max_connections = 256};
    snprintf(jc.data_dir, sizeof jc.data_dir, "data");
    snprintf(wc.host, sizeof wc.host, "127.0.0.1");
    enum { O_HOST = 256, O_PORT, O_DATA, O_UPLOAD, O_JOBS, O_QUEUE, O_KEEP, O_SPACE, O_MINUTES };
    static const struct option longopts[] = {
        {"host", required_argument, 0, O_HOST},         {"port", required_argument, 0, O_PORT},
        {"data", required_argument, 0, O_DATA},         {"max-upload-mb", required_argument, 0, O_UPLOAD},
        {"jobs", required_argument, 0, O_JOBS},         {"max-queue", required_argument, 0, O_QUEUE},
        {"keep-days", required_argument, 0, O_KEEP},    {"max-data-mb", required_argument, 0, O_SPACE},
        {"max-minutes", required_argument, 0, O_MINUTES}, {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    optind = 1;
    opterr = 0;
    int c;
    double v;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_HOST:
            if (strlen(optarg) >= sizeof wc.host) {
                fprintf(stderr, "drum2midi serve: --host is too long\n");
                return 2;
            }
            snprintf(wc.host, sizeof wc.host, "%s", optarg);
            break;
        case O_PORT:
            if (number("--port", optarg, 0, 65535, &v)) return 2;
            wc.port = (int)v;
            break;
        case O_DATA:
            if (strlen(optarg) >= 400 || !optarg[0]) {
                fprintf(stderr, "drum2midi serve: --data must be a folder path under 400 characters\n");
                return 2;
            }
            snprintf(jc.data_dir, sizeof jc.data_dir, "%s", optarg);
            break;
        case O_UPLOAD:
            if (number("--max-upload-mb", optarg, 1, 4096, &v)) return 2;
            wc.max_upload_bytes = (long long)(v * 1024 * 1024);
            break;
        case O_JOBS:
            if (number("--jobs", optarg, 1, 64, &v)) return 2;
            jc.workers = (int)v;
            break;
        case O_QUEUE:
            if (number("--max-queue", optarg, 1, 10000, &v)) return 2;
            jc.max_queued = (int)v;
            break;
        case O_KEEP:
            if (number("--keep-days", optarg, 0, 36500, &v)) return 2;
            jc.keep_days = v;
            break;
        case O_SPACE:
            if (number("--max-data-mb", optarg, 0, 1e9, &v)) return 2;
            jc.max_data_mb = v;
            break;
        case O_MINUTES:
            if (number("--max-minutes", optarg, 0.1, 600, &v)) return 2;
            jc.max_duration_s = v * 60;
            break;
        case 'h': usage(stdout); return 0;
        default:
            fprintf(stderr, "drum2midi serve: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "drum2midi serve: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    size_t len = strlen(jc.data_dir);
    while (len > 1 && jc.data_dir[len - 1] == '/') jc.data_dir[--len] = '\0';

    /* Signals are taken by sigwait below; every thread started from here on
     * inherits the mask. A client that disconnects must not kill us. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    d2m_error err = {0};
    job_store *jobs = NULL;
    web_server *server = NULL;
    int port = 0;
    if (jobs_open(&jobs, &jc, &err) != 0) {
        fprintf(stderr, "drum2midi serve: %s\n", err.message);
        return 1;
    }
    if (web_server_start(&server, &wc, jobs, &port, &err) != 0) {
        fprintf(stderr, "drum2midi serve: %s\n", err.message);
        jobs_close(jobs);
        return 1;
    }
    int v6 = strchr(wc.host, ':') != NULL;
    printf("drum2midi serve: listening on http://%s%s%s:%d/ (data in %s)\n", v6 ? "[" : "", wc.host,
           v6 ? "]" : "", port, jc.data_dir);
    fflush(stdout);

    int sig = 0;
    sigwait(&set, &sig);
    fprintf(stderr, "drum2midi serve: stopping (%s)\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    jobs_stop(jobs);
    web_server_stop(server);
    jobs_close(jobs);
    return 0;
}
