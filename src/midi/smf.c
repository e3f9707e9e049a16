/* Standard MIDI File writer for a drum part: a type 1 file of two tracks.
 *
 * Layout (all numbers big-endian, deltas as variable-length quantities):
 *   MThd 6: format 1, 2 tracks, ppq ticks per quarter note
 *   MTrk conductor: 0 FF 03 name | 0 FF 51 03 tempo (us per quarter)
 *                   | 0 FF 58 04 04 02 18 08 (4/4, 24 clocks, 8 32nds)
 *                   | end_tick FF 2F 00
 *   MTrk drums:     0 FF 03 "Drums" | note-on 0x99 / note-off 0x89 velocity 64
 *                   in tick order, note-offs before note-ons on a tick,
 *                   no running status | FF 2F 00 exactly at end_tick
 * Reference: Standard MIDI Files 1.0 (MIDI Manufacturers Association), and
 * General MIDI's channel 10 for percussion.
 * Threading: pure function; the output buffer belongs to the caller.
 */
#include "smf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DRUM_CHANNEL 9       /* channel 10, counted from 0 */
#define NOTE_OFF_VELOCITY 64 /* "no velocity sensing" default of the spec */
#define MAX_VLQ 0x0FFFFFFF   /* four 7-bit groups */
#define MAX_TEMPO_US 0xFFFFFF

/* A growing byte buffer; `failed` sticks after an allocation failure so the
 * writer can emit everything and check once. */
typedef struct {
    unsigned char *v; /* (n) */
    size_t n, cap;
    int failed;
} byte_buffer;

static void put_bytes(byte_buffer *b, const void *src, size_t n)
{
    if (b->failed) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        unsigned char *v = realloc(b->v, cap);
        if (!v) {
            b->failed = 1;
            return;
        }
        b->v = v;
        b->cap = cap;
    }
    memcpy(b->v + b->n, src, n);
    b->n += n;
}

static void put_byte(byte_buffer *b, unsigned value)
{
    unsigned char c = (unsigned char)value;
    put_bytes(b, &c, 1);
}

static void put_be(byte_buffer *b, uint32_t value, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) put_byte(b, (value >> (8 * i)) & 0xFF);
}

/* Variable-length quantity: 7 bits a byte, most significant group first, the
 * high bit set on every byte but the last. value <= MAX_VLQ. */
static void put_vlq(byte_buffer *b, uint32_t value)
{
    unsigned char groups[4];
    int n = 0;
    do {
        groups[n++] = value & 0x7F;
        value >>= 7;
    } while (value && n < 4);
    while (n > 1) put_byte(b, groups[--n] | 0x80);
    put_byte(b, groups[0]);
}

static void put_text_meta(byte_buffer *b, unsigned type, const char *text)
{
    size_t len = strlen(text);
    put_byte(b, 0x00);
    put_byte(b, 0xFF);
    put_byte(b, type);
    put_vlq(b, (uint32_t)len);
    put_bytes(b, text, len);
}

/* Opens an MTrk chunk with a placeholder length; returns where the length goes. */
static size_t begin_track(byte_buffer *b)
{
    put_bytes(b, "MTrk", 4);
    put_be(b, 0, 4);
    return b->n;
}

static void end_track(byte_buffer *b, size_t start)
{
    if (b->failed) return;
    uint32_t len = (uint32_t)(b->n - start);
    for (int i = 0; i < 4; i++) b->v[start - 4 + i] = (unsigned char)(len >> (8 * (3 - i)));
}

typedef struct {
    int64_t tick;
    int is_on; /* 0 sorts note-offs first on a tick */
    int note, velocity;
    int order; /* index in the input, for a deterministic order among equals */
} midi_event;

static int compare_events(const void *a, const void *b)
{
    const midi_event *x = a, *y = b;
    if (x->tick != y->tick) return x->tick < y->tick ? -1 : 1;
    if (x->is_on != y->is_on) return x->is_on - y->is_on;
    if (x->note != y->note) return x->note - y->note;
    return x->order - y->order;
}

int smf_write_drums(unsigned char **out, size_t *out_len, const d2m_notes *notes, double bpm,
                    int ppq, int64_t end_tick, const char *name, d2m_error *err)
{
    byte_buffer buf = {0};
    midi_event *events = NULL;
    int rc = 0;

    *out = NULL;
    *out_len = 0;
    if (!(bpm > 0 && bpm <= 1000)) {
        rc = d2m_fail(err, D2M_ERR_INVALID, "MIDI tempo %g bpm: must be in (0, 1000]", bpm);
        goto fail;
    }
    const long long tempo_us = llround(60e6 / bpm);
    if (tempo_us > MAX_TEMPO_US) {
        rc = d2m_fail(err, D2M_ERR_INVALID,
                      "MIDI tempo %g bpm: slower than a MIDI tempo can say (%d us per quarter)",
                      bpm, MAX_TEMPO_US);
        goto fail;
    }
    if (ppq != 480 && ppq != 960) {
        rc = d2m_fail(err, D2M_ERR_INVALID,
                      "MIDI resolution %d ticks per quarter: must be 480 or 960", ppq);
        goto fail;
    }
    if (end_tick < 0 || end_tick > MAX_VLQ) {
        rc = d2m_fail(err, D2M_ERR_INVALID, "MIDI end tick %lld: must be in 0..%d",
                      (long long)end_tick, MAX_VLQ);
        goto fail;
    }
    int n_notes = notes ? notes->n : 0;
    if (n_notes < 0 || (n_notes > 0 && !notes->v)) {
        rc = d2m_fail(err, D2M_ERR_INVALID, "MIDI writer: %d notes without a note list", n_notes);
        goto fail;
    }
    for (int i = 0; i < n_notes; i++) {
        const d2m_note *note = &notes->v[i];
        if (note->note < 0 || note->note > 127 || note->velocity < 1 || note->velocity > 127) {
            rc = d2m_fail(err, D2M_ERR_INVALID,
                          "MIDI note %d at tick %lld: note %d velocity %d, need 0..127 and 1..127",
                          i, (long long)note->tick, note->note, note->velocity);
            goto fail;
        }
        /* A note needs one tick of length before the end, or its note-off
         * would sort before its own note-on. */
        if (note->tick < 0 || note->tick >= end_tick || note->duration < 1) {
            rc = d2m_fail(err, D2M_ERR_INVALID,
                          "MIDI note %d: tick %lld duration %lld, need 0 <= tick < end tick %lld "
                          "and duration >= 1",
                          i, (long long)note->tick, (long long)note->duration, (long long)end_tick);
            goto fail;
        }
    }

    events = malloc((size_t)(2 * n_notes + 1) * sizeof *events);
    if (!events) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "MIDI writer: no memory for %d notes", n_notes);
        goto fail;
    }
    for (int i = 0; i < n_notes; i++) {
        const d2m_note *note = &notes->v[i];
        /* Cut at the end, written so tick + duration cannot overflow. */
        int64_t off = note->duration > end_tick - note->tick ? end_tick
                                                              : note->tick + note->duration;
        events[2 * i] = (midi_event){note->tick, 1, note->note, note->velocity, i};
        events[2 * i + 1] = (midi_event){off, 0, note->note, NOTE_OFF_VELOCITY, i};
    }
    qsort(events, (size_t)(2 * n_notes), sizeof *events, compare_events);

    put_bytes(&buf, "MThd", 4);
    put_be(&buf, 6, 4);
    put_be(&buf, 1, 2); /* format 1: simultaneous tracks */
    put_be(&buf, 2, 2);
    put_be(&buf, (uint32_t)ppq, 2);

    size_t start = begin_track(&buf);
    put_text_meta(&buf, 0x03, name ? name : "");
    put_bytes(&buf, "\x00\xFF\x51\x03", 4);
    put_be(&buf, (uint32_t)tempo_us, 3);
    put_bytes(&buf, "\x00\xFF\x58\x04\x04\x02\x18\x08", 8);
    put_vlq(&buf, (uint32_t)end_tick);
    put_bytes(&buf, "\xFF\x2F\x00", 3);
    end_track(&buf, start);

    start = begin_track(&buf);
    put_text_meta(&buf, 0x03, "Drums");
    int64_t now = 0;
    for (int i = 0; i < 2 * n_notes; i++) {
        const midi_event *e = &events[i];
        put_vlq(&buf, (uint32_t)(e->tick - now));
        put_byte(&buf, (e->is_on ? 0x90 : 0x80) | DRUM_CHANNEL);
        put_byte(&buf, (unsigned)e->note);
        put_byte(&buf, (unsigned)e->velocity);
        now = e->tick;
    }
    put_vlq(&buf, (uint32_t)(end_tick - now));
    put_bytes(&buf, "\xFF\x2F\x00", 3);
    end_track(&buf, start);

    if (buf.failed) {
        rc = d2m_fail(err, D2M_ERR_NOMEM, "MIDI writer: no memory for the file");
        goto fail;
    }
    free(events);
    *out = buf.v;
    *out_len = buf.n;
    return 0;

fail:
    free(events);
    free(buf.v);
    return rc;
}
