/* Drum analysis: tempo and beats, the loop window, hits, the grid. */
#ifndef D2M_DRUMS_H
#define D2M_DRUMS_H

#include "dsp/dsp.h"

/* Beats of a 4/4 song. Beat k is at beats[k]; downbeats are a subset. */
typedef struct {
    double bpm;
    double *beats;      /* (n_beats) seconds, increasing */
    int n_beats;
    int first_downbeat; /* index into beats of the first downbeat; downbeats are every 4th after */
    double *downbeats;  /* (n_downbeats) seconds */
    int n_downbeats;
    double confidence;  /* 0..1, how periodic the onset curve is at bpm */
} d2m_beats;

void beats_free(d2m_beats *b);

/* Tempo, beats and downbeats from the drum stem's features. forced_bpm > 0
 * skips tempo estimation. duration_s bounds the beat grid. Returns 0,
 * D2M_ERR_NO_RHYTHM, D2M_ERR_NOMEM. */
int tempo_track(d2m_beats *out, const d2m_features *f, double forced_bpm, double duration_s,
                d2m_error *err);

/* Fractional beat index of time t (beat k at beats[k]); linear between
 * tracked beats and extrapolated with the edge beat period outside. */
double beats_position(const d2m_beats *b, double t);
/* Inverse of beats_position. */
double beats_time(const d2m_beats *b, double position);

/* The chosen loop: `bars` bars starting at downbeat first_bar. */
typedef struct {
    int first_bar;      /* index into downbeats */
    int bars;
    double start_s, end_s;
    double score;       /* mean low-end onset strength inside */
} d2m_loop;

/* "4 on the floor": the window of `bars` bars, starting on a downbeat, whose
 * low-end onset strength (low_flux: flux of the 200 Hz low-passed stem) is
 * highest; or, with first_bar >= 0, the window starting at that downbeat
 * (index into downbeats). Returns 0 or D2M_ERR_TOO_SHORT. */
int loop_select(d2m_loop *out, const d2m_features *low, const d2m_beats *b, int bars,
                int first_bar, double duration_s, d2m_error *err);

/* A growable hit list. */
typedef struct {
    d2m_hit *v; /* (n) sorted by time */
    int n, cap;
} d2m_hits;
int hits_push(d2m_hits *h, d2m_hit hit);
void hits_sort(d2m_hits *h);
void hits_free(d2m_hits *h);

/* Instrument name of a GM drum note ("kick", "snare", "hihat_closed", ...). */
const char *drum_name(int note);

/* Detect and label hits on the drum stem's features. Velocities are set from
 * each hit's strength relative to the song's hits of the same instrument. */
int transcribe(d2m_hits *out, const d2m_features *f, d2m_classifier classifier,
               d2m_error *err);

/* The seed's band-energy-ratio label of one onset: energy below 150 Hz vs
 * above 2000 Hz; kick if low > 0.8 * high, else snare below centroid_split_hz,
 * else closed hi-hat. */
int classify_ratio(double low_energy, double high_energy, double centroid_hz);
/* Measured on FluidR3's Standard, Room, Power and TR-808 kits (first 23 ms
 * of a hit, magnitude-weighted centroid): snares 2.0-5.5 kHz, closed and
 * open hats 8.9-11.8 kHz. The split sits between. */
#define D2M_RATIO_CENTROID_SPLIT_HZ 7000.0

/* A note on the MIDI timeline. */
typedef struct {
    int64_t tick, duration;
    int note, velocity;
} d2m_note;

typedef struct {
    d2m_note *v; /* (n) sorted by tick, then note */
    int n;
} d2m_notes;
void notes_free(d2m_notes *n);

/* Place hits on the MIDI timeline: tick 0 is beat position origin_beat;
 * hits outside [origin_beat, origin_beat + length_beats) are dropped.
 * grid = 4, 8, 16 or 32 snaps to that fraction of a bar (4/4) measured on
 * the tracked beats; 0 keeps exact positions. Same-note events that land on
 * the same tick merge (loudest velocity kept); durations never overlap the
 * next event of the same note nor pass the end. */
int quantize_hits(d2m_notes *out, const d2m_hit *hits, int n_hits, const d2m_beats *b,
                  double origin_beat, double length_beats, int grid, int ppq, d2m_error *err);

#endif
