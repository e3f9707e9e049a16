/* HTTP for `drum2midi serve` on libmicrohttpd (thread per connection).
 *
 * Routes (every error is JSON {"error": "..."} with a 4xx status, except
 * 503 when the queue is full and 500 when the disk fails):
 *   GET  /                               the page (web/index.html), and GET /<asset>
 *   GET  /api/health                     {"status": "ok", ...}
 *   GET  /api/jobs                       every job's short status, newest first
 *   POST /api/jobs                       multipart/form-data: file, quantize, bars, separator, tempo
 *   GET  /api/jobs/{id}                  status + report
 *   DELETE /api/jobs/{id}                cancel and remove
 *   POST /api/jobs/{id}/cancel           cancel, keep the job
 *   POST /api/jobs/{id}/reanalyze        JSON {tempo, quantize, bars, loop_start_bar}
 *   GET  /api/jobs/{id}/events           Server-Sent Events: "status" events until the job ends
 *   GET  /api/jobs/{id}/files/{key}      a result file (Range supported), attachment with its name
 *
 * Uploads stream through MHD's multipart parser into tmp/ under the size
 * limit: a Content-Length beyond it is refused before the body is read (413),
 * a body that grows beyond it is drained and refused, one far beyond it
 * (chunked) has its connection dropped. The type is read from the bytes
 * (audio_sniff, after ID3v2 tags). A connection that ends early has its
 * partial upload removed by the completion callback.
 *
 * Threading: MHD calls the handler on each connection's own thread; the
 * event stream's reader blocks on jobs_wait_change on that thread.
 */
#include "web/http.h"

#include "audio/audio.h"
#include "web/assets.h"
#include "web/files.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define FORM_OVERHEAD (1024 * 1024) /* multipart boundaries and small fields */
#define JSON_BODY_MAX (16 * 1024)
#define MAX_UPLOADS_AT_ONCE 16
#define SSE_KEEPALIVE_MS 15000

struct web_server {
    web_server_config cfg;
    job_store *jobs;
    struct MHD_Daemon *daemon;
    atomic_int uploads;
};

enum { FIELD_QUANTIZE, FIELD_BARS, FIELD_SEPARATOR, FIELD_TEMPO, N_FIELDS };
static const char *const field_names[N_FIELDS] = {"quantize", "bars", "separator", "tempo"};

/* One request's state, from its first handler call to its completion. */
typedef struct {
    web_server *w;
    int is_upload, counted;
    struct MHD_PostProcessor *pp;
    int fd;                  /* the upload being written, -1 when none */
    char upload_path[1100];  /* non-empty while a temporary upload exists */
    long long file_bytes, body_bytes;
    int n_files, too_large, write_failed;
    const char *bad_field;   /* a static message */
    char filename[256];
    char fields[N_FIELDS][24];
    char *body;              /* other requests' body (JSON), (body_len) */
    size_t body_len;
    int body_too_large;
} request;

/* ---------------------------------------------------------------- replies */

static enum MHD_Result send_buffer(struct MHD_Connection *c, unsigned status, const char *type,
                                   void *bytes, size_t n, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(n, bytes, mode);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

/* Takes ownership of text (malloc'ed). */
static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, char *text)
{
    if (!text) return send_buffer(c, 500, "application/json", "{\"error\":\"out of memory\"}", 25,
                                  MHD_RESPMEM_PERSISTENT);
    return send_buffer(c, status, "application/json", text, strlen(text), MHD_RESPMEM_MUST_FREE);
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    if (o) cJSON_AddStringToObject(o, "error", msg);
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return send_json(c, status, text);
}

/* ----------------------------------------------------------------- assets */

static const char *asset_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot) return "application/octet-stream";
    if (!strcmp(dot, ".html")) return "text/html; charset=utf-8";
    if (!strcmp(dot, ".js")) return "text/javascript; charset=utf-8";
    if (!strcmp(dot, ".css")) return "text/css; charset=utf-8";
    if (!strcmp(dot, ".svg")) return "image/svg+xml";
    if (!strcmp(dot, ".png")) return "image/png";
    if (!strcmp(dot, ".json")) return "application/json";
    return "application/octet-stream";
}

static enum MHD_Result send_asset(struct MHD_Connection *c, const char *name)
{
    for (int i = 0; i < web_asset_count; i++) {
        const web_asset *a = &web_assets[i];
        if (strcmp(a->name, name) != 0) continue;
        /* FNV-1a of the bytes: the ETag changes exactly when the file does. */
        unsigned long long h = 1469598103934665603ULL;
        for (size_t k = 0; k < a->size; k++) h = (h ^ a->bytes[k]) * 1099511628211ULL;
        char etag[24];
        snprintf(etag, sizeof etag, "\"%016llx\"", h);
        const char *match = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
        int same = match && !strcmp(match, etag);
        struct MHD_Response *r = same ? MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT)
                                      : MHD_create_response_from_buffer(a->size, (void *)a->bytes,
                                                                        MHD_RESPMEM_PERSISTENT);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", asset_type(name));
        MHD_add_response_header(r, "ETag", etag);
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
        MHD_add_response_header(r, "X-Frame-Options", "DENY");
        MHD_add_response_header(r, "Content-Security-Policy",
                                "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
                                "connect-src 'self'; object-src 'none'; base-uri 'none'; "
                                "frame-ancestors 'none'; form-action 'none'");
        enum MHD_Result ok = MHD_queue_response(c, same ? 304 : 200, r);
        MHD_destroy_response(r);
        return ok;
    }
    return send_error(c, 404, "no such page");
}

/* ------------------------------------------------------------- job files */

/* One "bytes=a-b" range of a file of `size` bytes; 1 when a valid range was
 * asked for, 0 when none (or several, which get the whole file), -1 when it
 * cannot be satisfied. */
static int parse_range(const char *h, long long size, long long *first, long long *last)
{
    if (!h || strncmp(h, "bytes=", 6) != 0 || strchr(h, ',')) return 0;
    const char *p = h + 6;
    char *end;
    if (*p == '-') {
        long long n = strtoll(p + 1, &end, 10);
        if (end == p + 1 || *end || n <= 0) return -1;
        if (size == 0) return -1;
        *first = n >= size ? 0 : size - n;
        *last = size - 1;
        return 1;
    }
    long long a = strtoll(p, &end, 10);
    if (end == p || *end != '-' || a < 0) return -1;
    p = end + 1;
    long long b = size - 1;
    if (*p) {
        b = strtoll(p, &end, 10);
        if (end == p || *end || b < a) return -1;
        if (b > size - 1) b = size - 1;
    }
    if (a >= size) return -1;
    *first = a;
    *last = b;
    return 1;
}

static enum MHD_Result send_job_file(struct MHD_Connection *c, job_store *jobs, const char *id,
                                     const char *key)
{
    char path[1200], name[300], disposition[400];
    const char *type = NULL;
    char *memory = NULL;
    if (jobs_file(jobs, id, key, path, sizeof path, name, sizeof name, &type, &memory) != 0)
        return send_error(c, 404, "no file '%s' for this job (yet)", key);
    snprintf(disposition, sizeof disposition, "attachment; filename=\"%s\"", name);
    struct MHD_Response *r;
    unsigned status = 200;
    if (memory) {
        r = MHD_create_response_from_buffer(strlen(memory), memory, MHD_RESPMEM_MUST_FREE);
        if (!r) free(memory);
    } else {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            if (fd >= 0) close(fd);
            return send_error(c, 404, "the file '%s' is missing", key);
        }
        long long first = 0, last = (long long)st.st_size - 1;
        int ranged = parse_range(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Range"),
                                 (long long)st.st_size, &first, &last);
        if (ranged < 0) {
            close(fd);
            char cr[64];
            snprintf(cr, sizeof cr, "bytes */%lld", (long long)st.st_size);
            r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
            if (!r) return MHD_NO;
            MHD_add_response_header(r, "Content-Range", cr);
            enum MHD_Result ok = MHD_queue_response(c, 416, r);
            MHD_destroy_response(r);
            return ok;
        }
        /* MHD closes fd when the response is destroyed. */
        r = MHD_create_response_from_fd_at_offset64((uint64_t)(last - first + 1), fd, (uint64_t)first);
        if (!r) {
            close(fd);
            return MHD_NO;
        }
        if (ranged) {
            char cr[96];
            snprintf(cr, sizeof cr, "bytes %lld-%lld/%lld", first, last, (long long)st.st_size);
            MHD_add_response_header(r, "Content-Range", cr);
            status = 206;
        }
        MHD_add_response_header(r, "Accept-Ranges", "bytes");
    }
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Content-Disposition", disposition);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static int job_exists(job_store *jobs, const char *id)
{
    char *text = jobs_status_json(jobs, id, 0, NULL);
    int exists = text != NULL;
    free(text);
    return exists;
}

/* ---------------------------------------------------------- event stream */

typedef struct {
    job_store *jobs;
    char id[JOB_ID_LEN + 1];
    unsigned version;
    int started, done;
    char *buf; /* (len) bytes, sent from off */
    size_t len, off;
} event_stream;

static void stream_set(event_stream *e, char *text)
{
    free(e->buf);
    e->buf = text;
    e->len = text ? strlen(text) : 0;
    e->off = 0;
}

static void stream_status(event_stream *e)
{
    char *json = jobs_status_json(e->jobs, e->id, 0, NULL);
    if (!json) {
        /* Deleted while we watched. */
        char *text = malloc(160);
        if (text)
            snprintf(text, 160, "event: status\ndata: {\"id\":\"%s\",\"state\":\"cancelled\",\"removed\":true}\n\n",
                     e->id);
        stream_set(e, text);
        e->done = 1;
        return;
    }
    size_t n = strlen(json) + 32;
    char *text = malloc(n);
    if (text) snprintf(text, n, "event: status\ndata: %s\n\n", json);
    free(json);
    stream_set(e, text);
    if (jobs_finished(e->jobs, e->id)) e->done = 1;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    event_stream *e = cls;
    for (;;) {
        if (e->buf && e->off < e->len) {
            size_t n = e->len - e->off < max ? e->len - e->off : max;
            memcpy(out, e->buf + e->off, n);
            e->off += n;
            return (ssize_t)n;
        }
        if (e->done) return MHD_CONTENT_READER_END_OF_STREAM;
        if (!e->started) {
            e->started = 1;
            /* Read the version before the status, so no change is missed. */
            char *json = jobs_status_json(e->jobs, e->id, 0, &e->version);
            free(json);
            stream_status(e);
            if (e->buf) {
                size_t n = e->len + 16;
                char *text = malloc(n);
                if (text) snprintf(text, n, "retry: 2000\n%s", e->buf);
                stream_set(e, text);
            }
            continue;
        }
        int rc = jobs_wait_change(e->jobs, e->id, &e->version, SSE_KEEPALIVE_MS);
        if (rc > 0) stream_status(e);
        else if (rc == 0) stream_set(e, strdup(": keep-alive\n\n"));
        else if (!job_exists(e->jobs, e->id)) stream_status(e); /* removed */
        else return MHD_CONTENT_READER_END_OF_STREAM;                                /* stopping */
        if (!e->buf) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

static void stream_free(void *cls)
{
    event_stream *e = cls;
    free(e->buf);
    free(e);
}

static enum MHD_Result send_events(struct MHD_Connection *c, job_store *jobs, const char *id)
{
    if (!job_exists(jobs, id)) return send_error(c, 404, "no such job");
    event_stream *e = calloc(1, sizeof *e);
    if (!e) return MHD_NO;
    e->jobs = jobs;
    snprintf(e->id, sizeof e->id, "%s", id);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, e, stream_free);
    if (!r) {
        free(e);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    enum MHD_Result ok = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ok;
}

/* -------------------------------------------------------------- options */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

static int parse_quantize(const char *s, int *out)
{
    if (!strcasecmp(s, "off") || !strcmp(s, "0")) return *out = 0, 0;
    if (!strncmp(s, "1/", 2)) s += 2;
    int v;
    if (parse_int(s, 4, 32, &v) || (v != 4 && v != 8 && v != 16 && v != 32)) return -1;
    *out = v;
    return 0;
}

static int parse_tempo(const char *s, double *out)
{
    if (!*s || !strcasecmp(s, "auto") || !strcmp(s, "0")) return *out = 0, 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 30 && v <= 300)) return -1;
    *out = v;
    return 0;
}

/* ----------------------------------------------------------------- uploads */

static void drop_upload(request *r)
{
    if (r->fd >= 0) close(r->fd);
    r->fd = -1;
    if (r->upload_path[0]) unlink(r->upload_path);
    r->upload_path[0] = '\0';
}

static enum MHD_Result on_form_field(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *filename, const char *content_type,
                                     const char *transfer_encoding, const char *data, uint64_t off,
                                     size_t size)
{
    request *r = cls;
    if (!key) return MHD_YES;
    if (!strcmp(key, "file")) {
        if (off == 0 && r->n_files > 0 && r->file_bytes > 0) {
            r->bad_field = "send one file per upload";
            return MHD_YES;
        }
        if (r->too_large || r->write_failed || r->bad_field) return MHD_YES;
        if (r->n_files == 0) {
            r->n_files = 1;
            snprintf(r->filename, sizeof r->filename, "%s", filename ? filename : "");
            if (jobs_upload_path(r->w->jobs, r->upload_path, sizeof r->upload_path) != 0 ||
                (r->fd = open(r->upload_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
                r->upload_path[0] = '\0';
                r->write_failed = 1;
                return MHD_YES;
            }
        }
        if (r->file_bytes + (long long)size > r->w->cfg.max_upload_bytes) {
            r->too_large = 1;
            drop_upload(r);
            return MHD_YES;
        }
        if (size && files_write_all(r->fd, data, size) != 0) {
            r->write_failed = 1;
            drop_upload(r);
            return MHD_YES;
        }
        r->file_bytes += (long long)size;
        return MHD_YES;
    }
    for (int i = 0; i < N_FIELDS; i++) {
        if (strcmp(key, field_names[i]) != 0) continue;
        if (off + size >= sizeof r->fields[i]) {
            r->bad_field = "an option's value is too long";
            return MHD_YES;
        }
        memcpy(r->fields[i] + off, data, size);
        r->fields[i][off + size] = '\0';
    }
    return MHD_YES; /* other fields are ignored */
}


static enum MHD_Result finish_upload(struct MHD_Connection *c, request *r)
{
    web_server *w = r->w;
    int complete = MHD_destroy_post_processor(r->pp) == MHD_YES;
    r->pp = NULL;
    if (r->fd >= 0) {
        if (close(r->fd) != 0) r->write_failed = 1;
        r->fd = -1;
    }
    if (r->too_large) {
        drop_upload(r);
        return send_error(c, 413, "the file is larger than the limit of %lld MB",
                          w->cfg.max_upload_bytes / (1024 * 1024));
    }
    if (r->write_failed) {
        drop_upload(r);
        return send_error(c, 500, "the server could not store the upload");
    }
    if (!complete) {
        drop_upload(r);
        return send_error(c, 400, "the multipart body is incomplete or malformed");
    }
    if (r->bad_field) {
        drop_upload(r);
        return send_error(c, 400, "%s", r->bad_field);
    }
    if (!r->n_files || !r->upload_path[0]) return send_error(c, 400, "no 'file' field in the form");
    d2m_options defaults = d2m_default_options();
    job_request req = {.quantize = defaults.quantize, .bars = defaults.bars, .separator = defaults.separator};
    const char *f;
    if (*(f = r->fields[FIELD_QUANTIZE]) && parse_quantize(f, &req.quantize)) {
        drop_upload(r);
        return send_error(c, 400, "quantize must be 4, 8, 16, 32 or off");
    }
    if (*(f = r->fields[FIELD_BARS]) && parse_int(f, 1, 64, &req.bars)) {
        drop_upload(r);
        return send_error(c, 400, "bars must be 1..64");
    }
    if (*(f = r->fields[FIELD_SEPARATOR]) && jobs_separator_from(f, &req.separator)) {
        drop_upload(r);
        return send_error(c, 400, "separator must be auto, demucs, hpss or none");
    }
    if (*(f = r->fields[FIELD_TEMPO]) && parse_tempo(f, &req.tempo_bpm)) {
        drop_upload(r);
        return send_error(c, 400, "tempo must be 30..300 BPM, or auto");
    }
    if (r->file_bytes == 0) {
        drop_upload(r);
        return send_error(c, 415, "the file is empty");
    }
    const char *format = audio_sniff_file(r->upload_path);
    if (!format[0]) {
        drop_upload(r);
        return send_error(c, 415, "not an audio file this server reads (MP3, WAV, FLAC, Ogg or AIFF)");
    }
    if (!jobs_accepting(w->jobs)) {
        drop_upload(r);
        return send_error(c, 503, "the queue is full; try again later");
    }
    char id[JOB_ID_LEN + 1];
    d2m_error err = {0};
    int rc = jobs_create(w->jobs, r->upload_path, r->filename, format, &req, id, &err);
    r->upload_path[0] = '\0'; /* moved into the job, or removed */
    if (rc) return send_error(c, 500, "%s", err.message);
    char *status = jobs_status_json(w->jobs, id, 0, NULL);
    char location[64];
    snprintf(location, sizeof location, "/api/jobs/%s", id);
    struct MHD_Response *resp =
        status ? MHD_create_response_from_buffer(strlen(status), status, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!resp) {
        free(status);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Location", location);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(c, 201, resp);
    MHD_destroy_response(resp);
    return ok;
}

/* ------------------------------------------------------------------ API */

static enum MHD_Result reanalyze(struct MHD_Connection *c, request *r, const char *id)
{
    if (r->body_too_large) return send_error(c, 413, "the request body is too large");
    cJSON *o = r->body_len ? cJSON_ParseWithLength(r->body, r->body_len) : cJSON_CreateObject();
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return send_error(c, 400, "the body must be a JSON object");
    }
    /* -1: keep what the job's results were made with. */
    job_request req = {.quantize = -1, .bars = -1, .tempo_bpm = -1, .loop_start_bar = 0};
    const char *bad = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "tempo");
    if (!v) v = cJSON_GetObjectItemCaseSensitive(o, "tempo_bpm");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || !(v->valuedouble == 0 || (v->valuedouble >= 30 && v->valuedouble <= 300)))
            bad = "tempo must be 30..300 BPM, 0 (detect) or null (keep)";
        else req.tempo_bpm = v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "quantize")) && !cJSON_IsNull(v)) {
        char text[24] = "";
        if (cJSON_IsNumber(v)) snprintf(text, sizeof text, "%d", v->valueint);
        else if (cJSON_IsString(v)) snprintf(text, sizeof text, "%s", v->valuestring);
        if (parse_quantize(text, &req.quantize)) bad = "quantize must be 4, 8, 16, 32 or off";
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "bars")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble != (int)v->valuedouble || v->valueint < 1 || v->valueint > 64)
            bad = "bars must be 1..64";
        else req.bars = v->valueint;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "loop_start_bar")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsNumber(v) || v->valuedouble != (int)v->valuedouble || v->valueint < 0 || v->valueint > 100000)
            bad = "loop_start_bar must be a bar number from 1, or 0 to choose";
        else req.loop_start_bar = v->valueint;
    }
    cJSON_Delete(o);
    if (bad) return send_error(c, 400, "%s", bad);
    d2m_error err = {0};
    int rc = jobs_reanalyze(r->w->jobs, id, &req, &err);
    if (rc == D2M_ERR_INVALID && !job_exists(r->w->jobs, id))
        return send_error(c, 404, "no such job");
    if (rc) return send_error(c, 409, "%s", err.message);
    return send_json(c, 202, jobs_status_json(r->w->jobs, id, 0, NULL));
}

static enum MHD_Result health(struct MHD_Connection *c, web_server *w)
{
    int queued, running, total;
    jobs_counts(w->jobs, &queued, &running, &total);
    cJSON *o = cJSON_CreateObject();
    if (!o) return send_json(c, 500, NULL);
    cJSON_AddStringToObject(o, "status", "ok");
    cJSON_AddStringToObject(o, "version", D2M_VERSION);
    cJSON_AddNumberToObject(o, "queued", queued);
    cJSON_AddNumberToObject(o, "running", running);
    cJSON_AddNumberToObject(o, "jobs", total);
    cJSON_AddNumberToObject(o, "max_upload_mb", (double)(w->cfg.max_upload_bytes / (1024 * 1024)));
    cJSON *seps = cJSON_AddArrayToObject(o, "separators");
    static const d2m_separator all[] = {D2M_SEPARATOR_AUTO, D2M_SEPARATOR_DEMUCS, D2M_SEPARATOR_HPSS,
                                        D2M_SEPARATOR_NONE};
    for (size_t i = 0; seps && i < sizeof all / sizeof all[0]; i++)
        cJSON_AddItemToArray(seps, cJSON_CreateString(jobs_separator_name(all[i])));
    cJSON_AddBoolToObject(o, "loop_start_bar", 1);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return send_json(c, 200, text);
}

/* /api/jobs/{id}[/{sub}[/{name}]] */
static enum MHD_Result job_route(struct MHD_Connection *c, request *r, const char *method,
                                 const char *rest)
{
    char copy[512];
    if (strlen(rest) >= sizeof copy) return send_error(c, 404, "no such resource");
    snprintf(copy, sizeof copy, "%s", rest);
    char *parts[4] = {0};
    int n = 0;
    char *save = NULL;
    for (char *p = strtok_r(copy, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
        if (n == 3) return send_error(c, 404, "no such resource");
        parts[n++] = p;
    }
    if (n == 0) return send_error(c, 404, "no such resource");
    if (!jobs_valid_id(parts[0])) return send_error(c, 404, "no such job");
    const char *id = parts[0];
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (n == 1) {
        if (is_get) {
            char *text = jobs_status_json(r->w->jobs, id, 1, NULL);
            return text ? send_json(c, 200, text) : send_error(c, 404, "no such job");
        }
        if (!strcmp(method, "DELETE")) {
            if (jobs_cancel(r->w->jobs, id, 1) != 0) return send_error(c, 404, "no such job");
            char body[96];
            snprintf(body, sizeof body, "{\"id\":\"%s\",\"state\":\"cancelled\",\"removed\":true}", id);
            return send_json(c, 200, strdup(body));
        }
        return send_error(c, 405, "use GET or DELETE on a job");
    }
    if (n == 2 && !strcmp(parts[1], "events")) {
        if (!is_get) return send_error(c, 405, "use GET for events");
        return send_events(c, r->w->jobs, id);
    }
    if (n == 2 && !strcmp(parts[1], "cancel")) {
        if (strcmp(method, "POST") != 0) return send_error(c, 405, "use POST to cancel");
        if (jobs_cancel(r->w->jobs, id, 0) != 0) return send_error(c, 404, "no such job");
        return send_json(c, 200, jobs_status_json(r->w->jobs, id, 0, NULL));
    }
    if (n == 2 && !strcmp(parts[1], "reanalyze")) {
        if (strcmp(method, "POST") != 0) return send_error(c, 405, "use POST to re-analyse");
        return reanalyze(c, r, id);
    }
    if (n == 3 && !strcmp(parts[1], "files")) {
        if (!is_get) return send_error(c, 405, "use GET for files");
        if (!job_exists(r->w->jobs, id)) return send_error(c, 404, "no such job");
        for (const char *k = parts[2]; *k; k++)
            if (!((*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') || *k == '_'))
                return send_error(c, 404, "no such file");
        return send_job_file(c, r->w->jobs, id, parts[2]);
    }
    return send_error(c, 404, "no such resource");
}

static enum MHD_Result route(struct MHD_Connection *c, request *r, const char *url, const char *method)
{
    int is_get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (!strcmp(url, "/api/health")) {
        if (!is_get) return send_error(c, 405, "use GET");
        return health(c, r->w);
    }
    if (!strcmp(url, "/api/jobs") || !strcmp(url, "/api/jobs/")) {
        if (is_get) return send_json(c, 200, jobs_list_json(r->w->jobs));
        return send_error(c, 405, "use POST with multipart/form-data, or GET");
    }
    if (!strncmp(url, "/api/jobs/", 10)) return job_route(c, r, method, url + 10);
    if (!strncmp(url, "/api/", 5) || !strcmp(url, "/api")) return send_error(c, 404, "no such resource");
    if (!is_get) return send_error(c, 405, "use GET");
    if (!strcmp(url, "/")) return send_asset(c, "index.html");
    const char *name = url + 1;
    if (strchr(name, '/') || name[0] == '.') return send_error(c, 404, "no such page");
    return send_asset(c, name);
}

/* --------------------------------------------------------------- MHD glue */

/* Percent-decoding of the URL in place, except that %00 stays as it is: a
 * NUL would cut the path short and turn "/api/jobs/%00" into "/api/jobs/". */
static size_t unescape_url(void *cls, struct MHD_Connection *c, char *s)
{
    char *out = s;
    for (const char *in = s; *in; in++) {
        int hi, lo;
        if (in[0] == '%' && (hi = hex_digit(in[1])) >= 0 && (lo = hex_digit(in[2])) >= 0 && (hi | lo)) {
            *out++ = (char)(hi * 16 + lo);
            in += 2;
        } else {
            *out++ = *in;
        }
    }
    *out = '\0';
    return (size_t)(out - s);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    web_server *w = cls;
    request *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->w = w;
        r->fd = -1;
        *con_cls = r;
        if (!strcmp(method, "POST") && (!strcmp(url, "/api/jobs") || !strcmp(url, "/api/jobs/"))) {
            r->is_upload = 1;
            const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
            if (length && strtoll(length, NULL, 10) > w->cfg.max_upload_bytes + FORM_OVERHEAD)
                return send_error(c, 413, "the file is larger than the limit of %lld MB",
                                  w->cfg.max_upload_bytes / (1024 * 1024));
            if (!jobs_accepting(w->jobs)) return send_error(c, 503, "the queue is full; try again later");
            if (atomic_fetch_add(&w->uploads, 1) >= MAX_UPLOADS_AT_ONCE) {
                atomic_fetch_sub(&w->uploads, 1);
                return send_error(c, 503, "too many uploads at once; try again shortly");
            }
            r->counted = 1;
            const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
            if (!type || strncasecmp(type, "multipart/form-data", 19) != 0)
                return send_error(c, 400, "send the song as multipart/form-data with a 'file' field");
            r->pp = MHD_create_post_processor(c, 64 * 1024, on_form_field, r);
            if (!r->pp) return send_error(c, 400, "the multipart/form-data header is malformed");
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        r->body_bytes += (long long)n;
        if (r->is_upload) {
            /* A body this far past the limit is not draining honestly: drop it. */
            if (r->body_bytes > w->cfg.max_upload_bytes + 8LL * FORM_OVERHEAD) return MHD_NO;
            if (r->pp && MHD_post_process(r->pp, upload_data, n) != MHD_YES && !r->bad_field)
                r->bad_field = "the multipart body is malformed";
            return MHD_YES;
        }
        if (r->body_len + n > JSON_BODY_MAX) {
            r->body_too_large = 1;
            if (r->body_bytes > 64LL * JSON_BODY_MAX) return MHD_NO;
            return MHD_YES;
        }
        char *grown = realloc(r->body, r->body_len + n + 1);
        if (!grown) return MHD_NO;
        r->body = grown;
        memcpy(r->body + r->body_len, upload_data, n);
        r->body_len += n;
        r->body[r->body_len] = '\0';
        return MHD_YES;
    }
    if (r->is_upload) return finish_upload(c, r);
    return route(c, r, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    request *r = *con_cls;
    if (!r) return;
    if (r->pp) MHD_destroy_post_processor(r->pp);
    drop_upload(r); /* an upload that did not become a job */
    if (r->counted) atomic_fetch_sub(&r->w->uploads, 1);
    free(r->body);
    free(r);
    *con_cls = NULL;
}

int web_server_start(web_server **out, const web_server_config *cfg, job_store *jobs,
                     int *port_out, d2m_error *err)
{
    *out = NULL;
    struct sockaddr_in v4 = {0};
    struct sockaddr_in6 v6 = {0};
    const struct sockaddr *addr;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ERROR_LOG;
    const char *host = !strcmp(cfg->host, "localhost") ? "127.0.0.1" : cfg->host;
    if (cfg->port < 0 || cfg->port > 65535) return d2m_fail(err, D2M_ERR_INVALID, "port %d: must be 0..65535", cfg->port);
    if (inet_pton(AF_INET, host, &v4.sin_addr) == 1) {
        v4.sin_family = AF_INET;
        v4.sin_port = htons((uint16_t)cfg->port);
        addr = (const struct sockaddr *)&v4;
    } else if (inet_pton(AF_INET6, host, &v6.sin6_addr) == 1) {
        v6.sin6_family = AF_INET6;
        v6.sin6_port = htons((uint16_t)cfg->port);
        addr = (const struct sockaddr *)&v6;
        flags |= MHD_USE_IPv6;
    } else {
        return d2m_fail(err, D2M_ERR_INVALID, "--host %s: give an IP address (127.0.0.1, ::1, 0.0.0.0)", cfg->host);
    }
    web_server *w = calloc(1, sizeof *w);
    if (!w) return d2m_fail(err, D2M_ERR_NOMEM, "out of memory");
    w->cfg = *cfg;
    w->jobs = jobs;
    atomic_init(&w->uploads, 0);
    w->daemon = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, w,
                                 MHD_OPTION_SOCK_ADDR, addr,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, w,
                                 MHD_OPTION_UNESCAPE_CALLBACK, unescape_url, NULL,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                                 MHD_OPTION_END);
    if (!w->daemon) {
        free(w);
        return d2m_fail(err, D2M_ERR_IO, "cannot listen on %s port %d (in use, or not an address of this machine)",
                        cfg->host, cfg->port);
    }
    if (port_out) {
        const union MHD_DaemonInfo *info = MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_BIND_PORT);
        *port_out = info ? info->port : cfg->port;
    }
    *out = w;
    return 0;
}

void web_server_stop(web_server *w)
{
    if (!w) return;
    MHD_stop_daemon(w->daemon);
    free(w);
}
