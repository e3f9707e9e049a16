/* smf_write_drums: a 2-note file byte for byte, variable-length quantities at
 * their edges, note-offs before note-ons on a tick, End of Track at end_tick,
 * validation, and an independent read-back with Python's mido. */
#include "midi/smf.h"
#include "test.h"

#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void check_bytes(const unsigned char *got, size_t got_len, const unsigned char *want,
                        size_t want_len, const char *what)
{
    CHECK(got_len == want_len, "%s: expected %zu bytes, got %zu", what, want_len, got_len);
    size_t n = got_len < want_len ? got_len : want_len;
    for (size_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            CHECK(got[i] == want[i], "%s: byte %zu expected 0x%02X, got 0x%02X", what, i, want[i],
                  got[i]);
            return;
        }
    }
}

/* One decoded channel event of track 1, for order checks. */
typedef struct {
    int64_t tick;
    int status, note, velocity;
} event;

static int read_vlq(const unsigned char *p, size_t n, size_t *at, uint32_t *value)
{
    *value = 0;
    for (int i = 0; i < 4; i++) {
        if (*at >= n) return -1;
        unsigned char c = p[(*at)++];
        *value = (*value << 7) | (c & 0x7F);
        if (!(c & 0x80)) return 0;
    }
    return -1;
}

/* Decodes the drums track (the second MTrk) of a file this writer produced:
 * no running status, only meta and 3-byte channel events. Returns the count
 * of channel events, -1 on malformed bytes; *end_of_track gets its tick. */
static int decode_drum_track(event *events, int max_events, int64_t *end_of_track,
                             const unsigned char *file, size_t len)
{
    if (len < 22 || memcmp(file, "MThd", 4) != 0) return -1;
    size_t at = 14;
    if (memcmp(file + at, "MTrk", 4) != 0) return -1;
    at += 8 + be32(file + at + 4);
    if (at + 8 > len || memcmp(file + at, "MTrk", 4) != 0) return -1;
    size_t end = at + 8 + be32(file + at + 4);
    if (end != len) return -1;
    at += 8;
    int64_t tick = 0;
    int n = 0;
    while (at < end) {
        uint32_t delta;
        if (read_vlq(file, end, &at, &delta)) return -1;
        tick += delta;
        if (at >= end) return -1;
        int status = file[at++];
        if (status == 0xFF) {
            if (at >= end) return -1;
            int type = file[at++];
            uint32_t meta_len;
            if (read_vlq(file, end, &at, &meta_len) || at + meta_len > end) return -1;
            at += meta_len;
            if (type == 0x2F) {
                *end_of_track = tick;
                return at == end ? n : -1;
            }
            continue;
        }
        if (!(status & 0x80) || at + 2 > end || n >= max_events) return -1;
        events[n++] = (event){tick, status, file[at], file[at + 1]};
        at += 2;
    }
    return -1;
}

static d2m_note note_at(int64_t tick, int64_t duration, int note, int velocity)
{
    d2m_note x = {tick, duration, note, velocity};
    return x;
}

static void test_two_note_file_matches_hand_written_bytes(void)
{
    /* Kick on beat 1, snare on beat 2, 1/32-note long; one 4/4 bar at 120 bpm. */
    d2m_note v[] = {note_at(0, 60, 36, 100), note_at(480, 60, 38, 90)};
    d2m_notes notes = {v, 2};
    static const unsigned char want[] = {
        'M', 'T', 'h', 'd', 0, 0, 0, 6, 0, 1, 0, 2, 0x01, 0xE0, /* type 1, 2 tracks, 480 */
        'M', 'T', 'r', 'k', 0, 0, 0, 25,                       /* conductor */
        0x00, 0xFF, 0x03, 0x01, 't',                           /* name "t" */
        0x00, 0xFF, 0x51, 0x03, 0x07, 0xA1, 0x20,              /* 500000 us */
        0x00, 0xFF, 0x58, 0x04, 0x04, 0x02, 0x18, 0x08,        /* 4/4 */
        0x8F, 0x00, 0xFF, 0x2F, 0x00,                          /* end at 1920 */
        'M', 'T', 'r', 'k', 0, 0, 0, 31,                       /* drums */
        0x00, 0xFF, 0x03, 0x05, 'D', 'r', 'u', 'm', 's',
        0x00, 0x99, 36, 100,                                    /* kick on at 0 */
        0x3C, 0x89, 36, 64,                                     /* off at 60 */
        0x83, 0x24, 0x99, 38, 90,                               /* snare on at 480 */
        0x3C, 0x89, 38, 64,                                     /* off at 540 */
        0x8A, 0x64, 0xFF, 0x2F, 0x00,                           /* end at 1920 */
    };
    unsigned char *file = NULL;
    size_t len = 0;
    d2m_error err = {0};
    int rc = smf_write_drums(&file, &len, &notes, 120.0, 480, 1920, "t", &err);
    CHECK(rc == 0, "rc %d (%s)", rc, err.message);
    if (file) check_bytes(file, len, want, sizeof want, "2-note file");
    free(file);
}

/* With no notes both End of Track deltas equal end_tick, so end_tick shows the
 * writer's variable-length quantities directly. */
static void test_variable_length_quantities_at_their_edges(void)
{
    struct {
        int64_t value;
        unsigned char bytes[4];
        size_t n;
    } cases[] = {
        {0, {0x00}, 1},
        {0x7F, {0x7F}, 1},
        {0x80, {0x81, 0x00}, 2},
        {0x3FFF, {0xFF, 0x7F}, 2},
        {0x4000, {0x81, 0x80, 0x00}, 3},
        {0x1FFFFF, {0xFF, 0xFF, 0x7F}, 3},
        {0x200000, {0x81, 0x80, 0x80, 0x00}, 4},
        {0x0FFFFFFF, {0xFF, 0xFF, 0xFF, 0x7F}, 4},
    };
    d2m_notes none = {NULL, 0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char *file = NULL;
        size_t len = 0;
        int rc = smf_write_drums(&file, &len, &none, 120.0, 960, cases[i].value, "", NULL);
        CHECK(rc == 0, "end tick 0x%llX: rc %d", (long long)cases[i].value, rc);
        if (!file) continue;
        /* Header 14, MTrk 8, empty name 4, tempo 7, time signature 8. */
        const size_t at0 = 14 + 8 + 4 + 7 + 8;
        unsigned char want0[8];
        memcpy(want0, cases[i].bytes, cases[i].n);
        memcpy(want0 + cases[i].n, "\xFF\x2F\x00", 3);
        char what[64];
        snprintf(what, sizeof what, "conductor end 0x%llX", (long long)cases[i].value);
        CHECK(len >= at0 + cases[i].n + 3, "%s: file of %zu bytes", what, len);
        if (len >= at0 + cases[i].n + 3) {
            check_bytes(file + at0, cases[i].n + 3, want0, cases[i].n + 3, what);
            CHECK(be32(file + 18) == cases[i].n + 22, "%s: MTrk length %u, expected %zu", what,
                  be32(file + 18), cases[i].n + 22);
        }
        /* Drums: MTrk 8, "Drums" name 9, then the End of Track delta. */
        const size_t at1 = at0 + cases[i].n + 3 + 8 + 9;
        snprintf(what, sizeof what, "drums end 0x%llX", (long long)cases[i].value);
        CHECK(len == at1 + cases[i].n + 3, "%s: expected %zu bytes, got %zu", what,
              at1 + cases[i].n + 3, len);
        if (len == at1 + cases[i].n + 3)
            check_bytes(file + at1, cases[i].n + 3, want0, cases[i].n + 3, what);
        free(file);
    }
    /* One past four 7-bit groups cannot be written. */
    unsigned char *file = (unsigned char *)"stale";
    size_t len = 7;
    d2m_error err = {0};
    int rc = smf_write_drums(&file, &len, &none, 120.0, 960, 0x10000000, "", &err);
    CHECK(rc == D2M_ERR_INVALID && err.message[0], "end tick 0x10000000: rc %d", rc);
    CHECK(file == NULL && len == 0, "failed write left output %p %zu", (void *)file, len);
}

/* A kick re-struck exactly as it ends, and a snare ending as a hat starts:
 * both note-offs come before both note-ons on tick 480. A note running past
 * the end is cut at end_tick, where End of Track sits. */
static void test_note_offs_come_before_note_ons_and_end_of_track_sits_at_end_tick(void)
{
    d2m_note v[] = {note_at(0, 480, 36, 100), note_at(420, 60, 38, 80),
                    note_at(480, 60, 36, 90), note_at(480, 60, 42, 70),
                    note_at(1900, 500, 49, 127)};
    d2m_notes notes = {v, 5};
    unsigned char *file = NULL;
    size_t len = 0;
    d2m_error err = {0};
    int rc = smf_write_drums(&file, &len, &notes, 120.0, 480, 1920, "order", &err);
    CHECK(rc == 0, "rc %d (%s)", rc, err.message);
    if (!file) return;
    event ev[16];
    int64_t eot = -1;
    int n = decode_drum_track(ev, 16, &eot, file, len);
    const event want[] = {
        {0, 0x99, 36, 100},  {420, 0x99, 38, 80}, {480, 0x89, 36, 64}, {480, 0x89, 38, 64},
        {480, 0x99, 36, 90}, {480, 0x99, 42, 70}, {540, 0x89, 36, 64}, {540, 0x89, 42, 64},
        {1900, 0x99, 49, 127}, {1920, 0x89, 49, 64},
    };
    int n_want = (int)(sizeof want / sizeof want[0]);
    CHECK(n == n_want, "expected %d channel events, decoded %d", n_want, n);
    for (int i = 0; i < n && i < n_want; i++)
        CHECK(ev[i].tick == want[i].tick && ev[i].status == want[i].status &&
                  ev[i].note == want[i].note && ev[i].velocity == want[i].velocity,
              "event %d: expected (%lld, 0x%02X, %d, %d), got (%lld, 0x%02X, %d, %d)", i,
              (long long)want[i].tick, want[i].status, want[i].note, want[i].velocity,
              (long long)ev[i].tick, ev[i].status, ev[i].note, ev[i].velocity);
    CHECK(eot == 1920, "End of Track at %lld, expected 1920", (long long)eot);
    free(file);
}

static void test_invalid_parameters_are_rejected_with_a_message(void)
{
    struct {
        double bpm;
        int ppq;
        int64_t end_tick;
        d2m_note note;
    } bad[] = {
        {0, 480, 1920, {0, 60, 36, 100}},       {-120, 480, 1920, {0, 60, 36, 100}},
        {1000.5, 480, 1920, {0, 60, 36, 100}},  {NAN, 480, 1920, {0, 60, 36, 100}},
        {3, 480, 1920, {0, 60, 36, 100}},       /* 20 s per beat: past 24-bit tempo */
        {120, 96, 1920, {0, 60, 36, 100}},      {120, 480, -1, {0, 60, 36, 100}},
        {120, 480, 1920, {0, 60, 128, 100}},    {120, 480, 1920, {0, 60, -1, 100}},
        {120, 480, 1920, {0, 60, 36, 0}},       {120, 480, 1920, {0, 60, 36, 128}},
        {120, 480, 1920, {-1, 60, 36, 100}},    {120, 480, 1920, {1920, 60, 36, 100}},
        {120, 480, 1920, {2000, 60, 36, 100}},  {120, 480, 1920, {0, 0, 36, 100}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        d2m_notes notes = {&bad[i].note, 1};
        unsigned char *file = NULL;
        size_t len = 0;
        d2m_error err = {0};
        int rc = smf_write_drums(&file, &len, &notes, bad[i].bpm, bad[i].ppq, bad[i].end_tick, "x",
                                 &err);
        CHECK(rc == D2M_ERR_INVALID, "case %zu: expected D2M_ERR_INVALID, got %d", i, rc);
        CHECK(err.code == D2M_ERR_INVALID && err.message[0] != '\0', "case %zu: no message", i);
        CHECK(file == NULL && len == 0, "case %zu: output left set", i);
    }
    /* The edges that are allowed. */
    d2m_note ok = {1919, 1, 0, 1};
    d2m_notes notes = {&ok, 1};
    unsigned char *file = NULL;
    size_t len = 0;
    int rc = smf_write_drums(&file, &len, &notes, 1000, 960, 1920, NULL, NULL);
    CHECK(rc == 0, "bpm 1000, note 0 velocity 1 at the last tick: rc %d", rc);
    free(file);
}

/* Runs tests/py/read_smf.py on the file; returns its stdout (malloc'ed), or
 * NULL after printing why the check is skipped. */
static char *read_back_with_mido(const unsigned char *file, size_t len)
{
    if (access("/usr/bin/python3", X_OK) != 0) {
        printf("skip: /usr/bin/python3 not found, mido read-back not run\n");
        return NULL;
    }
    char path[] = "/tmp/d2m_test_smf_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp failed");
    if (fd < 0) return NULL;
    FILE *f = fdopen(fd, "wb");
    CHECK(f && fwrite(file, 1, len, f) == len, "writing %s failed", path);
    if (f) fclose(f);

    char script[1024], command[2200];
    test_source_path(script, sizeof script, "tests/py/read_smf.py");
    snprintf(command, sizeof command, "/usr/bin/python3 '%s' '%s'", script, path);
    FILE *pipe = popen(command, "r");
    CHECK(pipe != NULL, "popen(%s) failed", command);
    if (!pipe) {
        unlink(path);
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *text = malloc(cap);
    size_t got;
    while (text && (got = fread(text + n, 1, cap - 1 - n, pipe)) > 0) n += got;
    int status = pclose(pipe);
    unlink(path);
    if (!text) return NULL;
    text[n] = '\0';
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == 77 || strncmp(text, "SKIP", 4) == 0) {
        printf("skip: %s", n ? text : "mido read-back skipped\n");
        free(text);
        return NULL;
    }
    CHECK(code == 0, "read_smf.py exited %d: %s", code, text);
    if (code != 0) {
        free(text);
        return NULL;
    }
    return text;
}

static void expect_in(const char *json, const char *part)
{
    CHECK(strstr(json, part) != NULL, "expected %s in %s", part, json);
}

static void test_mido_reads_back_what_was_written(void)
{
    d2m_note v[] = {note_at(0, 120, 36, 127),     note_at(0, 120, 42, 1),
                    note_at(480, 60, 38, 99),     note_at(0x3FFF, 1, 42, 64),
                    note_at(0x4000, 60, 42, 65),  note_at(17000, 200, 49, 30)};
    d2m_notes notes = {v, 6};
    unsigned char *file = NULL;
    size_t len = 0;
    d2m_error err = {0};
    /* 97.3 bpm -> 616649.5... us -> 616650 */
    int rc = smf_write_drums(&file, &len, &notes, 97.3, 960, 17100, "loop 1", &err);
    CHECK(rc == 0, "rc %d (%s)", rc, err.message);
    if (!file) return;
    char *json = read_back_with_mido(file, len);
    free(file);
    if (!json) return;

    expect_in(json, "\"type\":1");
    expect_in(json, "\"ticks_per_beat\":960");
    expect_in(json, "\"tempo\":616650");
    expect_in(json, "\"time_signature\":[4,4,24,8]");
    expect_in(json, "\"track_names\":[\"loop 1\",\"Drums\"]");
    expect_in(json, "\"end_ticks\":[17100,17100]");
    CHECK(strstr(json, "\"other\"") == NULL, "unexpected messages in %s", json);
    expect_in(json, "\"events\":["
                    "[0,\"note_on\",36,127,9],[0,\"note_on\",42,1,9],"
                    "[120,\"note_off\",36,64,9],[120,\"note_off\",42,64,9],"
                    "[480,\"note_on\",38,99,9],[540,\"note_off\",38,64,9],"
                    "[16383,\"note_on\",42,64,9],[16384,\"note_off\",42,64,9],"
                    "[16384,\"note_on\",42,65,9],[16444,\"note_off\",42,64,9],"
                    "[17000,\"note_on\",49,30,9],[17100,\"note_off\",49,64,9]]");
    /* Also read one number back with sscanf, as a reader that ignores layout. */
    const char *t = strstr(json, "\"ticks_per_beat\":");
    int tpb = 0;
    CHECK(t && sscanf(t, "\"ticks_per_beat\":%d", &tpb) == 1 && tpb == 960,
          "ticks_per_beat %d, expected 960", tpb);
    free(json);
}

int main(void)
{
    test_two_note_file_matches_hand_written_bytes();
    test_variable_length_quantities_at_their_edges();
    test_note_offs_come_before_note_ons_and_end_of_track_sits_at_end_tick();
    test_invalid_parameters_are_rejected_with_a_message();
    test_mido_reads_back_what_was_written();
    return test_summary("test_smf");
}
