"""Shared helpers for drum2midi's test tooling (Debian python3 + numpy + mido).

Used by tools/render_song.py, bench/eval.py, scripts/make-demo and
tests/py/test_e2e_songs.py:

- Groove MIDI Dataset (GMD) access: info.csv rows, loading a groove as bars of
  notes (positions in beats), folding Roland TD-11 note numbers to General MIDI.
- Song building: a short arrangement (intro / groove / breakdown / groove /
  ending) with bass and chords, written as a type-1 MIDI file.
- Rendering with FluidSynth, level normalisation, WAV I/O, MP3 encode (lame)
  and decode (libmpg123 through ctypes, the decoder drum2midi itself uses).
- Scoring helpers: GM note -> evaluation class, per-class onset matching.

Timing facts (measured, see render_song.py's docstring): FluidSynth starts a
note 2-6 ms after its MIDI time (64-sample blocks plus the samples' attack);
truth times are the MIDI times. libmpg123 with the LAME/Xing tag (gapless,
its default) returns exactly the WAV's samples, so MP3 truth == WAV truth.
"""

import csv
import ctypes
import ctypes.util
import json
import math
import os
import random
import shutil
import subprocess
import tempfile
import wave

import mido
import numpy as np

RENDER_VERSION = 4  # bump when the arrangement or rendering changes (invalidates caches)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROOVES_DIR = os.environ.get("D2M_GROOVES_DIR") or next(
    (d for d in (os.path.join(REPO_ROOT, "shared", "grooves"), "/work/shared/grooves")
     if os.path.isfile(os.path.join(d, "info.csv"))),
    "/work/shared/grooves")
SF2 = os.environ.get("D2M_SF2", "/usr/share/sounds/sf2/FluidR3_GM.sf2")
SAMPLE_RATE = 44100
PPQ = 960  # ticks per quarter of the MIDI we render (0.52 ms at 120 bpm)

# FluidR3_GM bank 128 kits that sound like a real acoustic kit.
KITS = {0: "Standard", 8: "Room", 16: "Power"}
KIT_PROGRAMS = (0, 8, 16)

# Roland TD-11 note -> GM note to render and score with (grooves README table).
TD11_TO_GM = {
    36: 36,
    38: 38, 40: 38, 37: 37,
    42: 42, 22: 42, 46: 46, 26: 46, 44: 44,
    48: 50, 50: 50, 45: 47, 47: 47, 43: 43, 58: 43,
    49: 49, 55: 49, 57: 57, 52: 57,
    51: 51, 59: 51, 53: 53,
}

# GM drum note -> truth class ("kick","snare","hihat","tom","crash","ride").
GM_CLASS = {
    35: "kick", 36: "kick",
    37: "snare", 38: "snare", 39: "snare", 40: "snare",
    42: "hihat", 44: "hihat", 46: "hihat",
    41: "tom", 43: "tom", 45: "tom", 47: "tom", 48: "tom", 50: "tom",
    49: "crash", 52: "crash", 55: "crash", 57: "crash",
    51: "ride", 53: "ride", 59: "ride",
}

# Evaluation classes: crash and ride are scored together as "cymbal".
EVAL_CLASSES = ("kick", "snare", "hihat", "tom", "cymbal")


def eval_class(note=None, cls=None):
    """Evaluation class of a GM note (or of a truth class name); None if unknown."""
    if cls is None:
        cls = GM_CLASS.get(int(note)) if note is not None else None
    if cls in ("crash", "ride", "cymbal"):
        return "cymbal"
    return cls


def fold_note(td11_note):
    """GM note for a TD-11 note; None for a note outside the README table."""
    return TD11_TO_GM.get(int(td11_note))


# ---------------------------------------------------------------- GMD access

def load_info(grooves_dir=None):
    """info.csv rows as dicts (bpm and duration as numbers)."""
    gdir = grooves_dir or GROOVES_DIR
    rows = []
    with open(os.path.join(gdir, "info.csv"), newline="") as f:
        for r in csv.DictReader(f):
            r = dict(r)
            r["bpm"] = float(r["bpm"])
            r["duration"] = float(r["duration"])
            rows.append(r)
    return rows


def candidate_grooves(min_duration=20.0, bpm_min=0.0, bpm_max=1e9, grooves_dir=None):
    """Rows usable for songs: beat_type=beat, 4-4, duration >= min_duration."""
    return [r for r in load_info(grooves_dir)
            if r["beat_type"] == "beat" and r["time_signature"] == "4-4"
            and r["duration"] >= min_duration and bpm_min <= r["bpm"] <= bpm_max]


def find_groove(spec, grooves_dir=None):
    """info.csv row for a groove given as GMD id ("drummer1/session1/101"),
    midi_filename, or a path to the .mid; a synthetic row for unknown files."""
    gdir = grooves_dir or GROOVES_DIR
    spec_s = str(spec)
    for r in load_info(gdir):
        if spec_s in (r["id"], r["midi_filename"]) or (
                os.path.exists(spec_s) and os.path.exists(os.path.join(gdir, r["midi_filename"]))
                and os.path.samefile(spec_s, os.path.join(gdir, r["midi_filename"]))):
            return dict(r, path=os.path.join(gdir, r["midi_filename"]))
    if not os.path.exists(spec_s):
        raise FileNotFoundError("groove not found: %s" % spec_s)
    mid = mido.MidiFile(spec_s)
    bpm = None
    for tr in mid.tracks:
        for msg in tr:
            if msg.type == "set_tempo":
                bpm = mido.tempo2bpm(msg.tempo)
                break
        if bpm:
            break
    return {"id": os.path.splitext(os.path.basename(spec_s))[0], "drummer": "?", "style": "?",
            "bpm": round(bpm or 120.0, 2), "beat_type": "beat", "time_signature": "4-4",
            "midi_filename": spec_s, "duration": mid.length, "path": spec_s}


def load_groove_bars(path, min_fill=0.5):
    """The groove as a list of bars; each bar a list of (beat_offset, gm_note,
    velocity, td11_note) with beat_offset in beats from that bar's downbeat
    (slightly negative for hits played just ahead of the bar line).

    GMD bar 1 starts at time 0 on the file's tempo grid; times are taken in
    beats (ticks / ppq), so the groove can be rendered at info.csv's bpm.
    A hit belongs to the bar whose downbeat is nearest within a 32nd note
    before it. Leading bars (pickups, count-ins) and trailing bars with fewer
    than min_fill x the median number of hits are dropped; so is the last,
    possibly cut, bar.
    """
    mid = mido.MidiFile(path)
    ppq = mid.ticks_per_beat
    hits = []
    for tr in mid.tracks:
        tick = 0
        for msg in tr:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0:
                gm = fold_note(msg.note)
                if gm is not None:
                    hits.append((tick / ppq, gm, msg.velocity, msg.note))
    hits.sort()
    if not hits:
        return []
    tol = 4 * (1.0 / 32)  # a 32nd note, in beats
    n_bars = int(math.floor((hits[-1][0] + tol) / 4.0)) + 1
    bars = [[] for _ in range(n_bars)]
    for b, gm, vel, td in hits:
        k = int(math.floor((b + tol) / 4.0))
        bars[k].append((b - 4.0 * k, gm, vel, td))
    # the last bar may be cut short by the end of the recording
    bars = bars[:-1] if len(bars) > 1 else bars
    counts = [len(x) for x in bars]
    med = float(np.median(counts)) if counts else 0.0
    lo, hi = 0, len(bars)
    while lo < hi and counts[lo] < min_fill * med:
        lo += 1
    while hi > lo and counts[hi - 1] < min_fill * med:
        hi -= 1
    return bars[lo:hi]


# ---------------------------------------------------------------- arrangement

MAJOR = {"I": (0, "maj"), "ii": (2, "min"), "iii": (4, "min"), "IV": (5, "maj"),
         "V": (7, "maj"), "vi": (9, "min")}
MINOR = {"i": (0, "min"), "III": (3, "maj"), "iv": (5, "min"), "v": (7, "min"),
         "VI": (8, "maj"), "VII": (10, "maj")}
PROGRESSIONS = [
    ("major", ["I", "V", "vi", "IV"]),
    ("major", ["vi", "IV", "I", "V"]),
    ("major", ["I", "vi", "IV", "V"]),
    ("major", ["I", "IV", "vi", "V"]),
    ("major", ["I", "IV", "I", "V"]),
    ("minor", ["i", "VI", "III", "VII"]),
    ("minor", ["i", "VII", "VI", "VII"]),
    ("minor", ["i", "iv", "VI", "v"]),
]
NOTE_NAMES = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"]
CHORD_PROGRAMS = {0: "Yamaha Grand Piano", 4: "Rhodes EP", 48: "Strings", 89: "Warm Pad"}
BASS_PROGRAMS = {33: "Fingered Bass", 34: "Picked Bass"}
COMP_PATTERNS = [  # piano/EP comping, in 8th notes of a bar: (start, length)
    [(0, 3), (3, 3), (6, 2)],
    [(0, 2), (2, 2), (4, 2), (6, 2)],
    [(0, 4), (4, 4)],
    [(0, 3), (3, 1), (4, 3), (7, 1)],
]

DRUM_CHANNEL, BASS_CHANNEL, CHORD_CHANNEL = 9, 0, 1
CYMBALS = {49, 51, 52, 53, 55, 57, 59}
HATS = {42, 44, 46}


def _bar_pattern(bar):
    """16-step x (kick, snare, hats/ride) velocity pattern of a groove bar."""
    p = np.zeros((3, 16))
    rows = {"kick": 0, "snare": 1, "hihat": 2, "ride": 2}
    for off, gm, vel, _td in bar:
        row = rows.get(GM_CLASS.get(gm))
        if row is not None:
            k = int(round(off * 4)) % 16
            p[row, k] = max(p[row, k], vel / 127.0)
    return p.ravel()


def groove_likeness(bars, n_ref=8):
    """Per bar: cosine similarity of its pattern to the mean pattern of the
    first n_ref bars (fills and breaks score low)."""
    pats = [_bar_pattern(b) for b in bars]
    ref = np.mean(pats[:n_ref], axis=0)
    return [float(p @ ref / (np.linalg.norm(p) * np.linalg.norm(ref) + 1e-9)) for p in pats]


def second_groove_start(bars, first_len, second_len):
    """Groove bar where the second groove section starts: right after the
    first section's bars when those bars still sound like the groove (mean
    likeness >= 0.9 x the first section's), else bar 1 again (GMD "beat"
    takes often drift into fills or a different feel later on)."""
    if len(bars) < first_len + second_len:
        return 0
    like = groove_likeness(bars, first_len)
    a = float(np.mean(like[:first_len]))
    b = float(np.mean(like[first_len:first_len + second_len]))
    return first_len if b >= 0.9 * a else 0


def default_structure(bpm, rng):
    """Sections (name, bars) for a 30-60 s song at bpm (long at very slow tempi)."""
    bar_s = 240.0 / bpm
    intro, brk, main = 4, rng.choice([2, 4]), 8
    total = lambda: (intro + main + brk + main + 1) * bar_s
    while total() > 60.0 and (intro > 2 or brk > 2):
        if brk > 2:
            brk = 2
        else:
            intro = 2
    while total() < 30.0:
        main += 4
    return [("intro", intro), ("groove", main), ("breakdown", brk), ("groove", main),
            ("ending", 1)]


def _chord_pitches(root_pc, quality, prev):
    """Close triad voicing in MIDI 55..76 nearest to the previous voicing."""
    third = 4 if quality == "maj" else 3
    pcs = [root_pc % 12, (root_pc + third) % 12, (root_pc + 7) % 12]
    options = []
    for inv in range(3):
        order = pcs[inv:] + pcs[:inv]
        for base in range(55, 67):
            if base % 12 != order[0]:
                continue
            v = [base]
            for pc in order[1:]:
                n = v[-1] + 1
                while n % 12 != pc:
                    n += 1
                v.append(n)
            if v[-1] <= 76:
                options.append(v)
    if prev is None:
        return min(options, key=lambda v: abs(sum(v) / 3.0 - 64))
    return min(options, key=lambda v: sum(abs(a - b) for a, b in zip(v, prev)))


class Song:
    """An arranged song: MIDI events plus everything the truth needs."""

    def __init__(self, bpm):
        self.bpm = float(bpm)
        self.notes = []  # (channel, on_tick, off_tick, note, velocity)
        self.controls = []  # (tick, channel, kind, a, b): kind "program" | "cc"
        self.sections = []  # (name, first_bar, n_bars)
        self.n_bars = 0
        self.meta = {}

    def tick(self, beats):
        return max(0, int(round(beats * PPQ)))

    def tick_to_s(self, tick):
        return tick * 60.0 / (self.bpm * PPQ)

    @property
    def bar_s(self):
        return 240.0 / self.bpm


def arrange(groove_row, seed, kit=None, structure=None, bass_program=None,
            chord_program=None):
    """Build a Song from a groove (an info.csv row with "path") and a seed.

    Sections: intro (accompaniment + the groove's hi-hats/cymbals only),
    groove (the full groove), breakdown (no kick: hats, or snare + hats),
    groove again (continuing through the groove's bars, wrapping), ending
    (one bar: kick + crash + held chord). Everything is deterministic in seed.
    """
    rng = random.Random("d2m-song-%s-%d" % (groove_row["id"], int(seed)))
    bpm = float(groove_row["bpm"])
    bars = load_groove_bars(groove_row["path"])
    if not bars:
        raise ValueError("groove has no usable bars: %s" % groove_row["path"])
    # every choice is drawn, overrides applied after, so that passing e.g. a
    # kit leaves the rest of the arrangement as the seed alone makes it
    seeded_kit = rng.choice(KIT_PROGRAMS)
    seeded_structure = default_structure(bpm, rng)
    mode, prog = rng.choice(PROGRESSIONS)
    key_pc = rng.randrange(12)
    seeded_bass = rng.choice(sorted(BASS_PROGRAMS))
    seeded_chords = rng.choice(sorted(CHORD_PROGRAMS))
    kit = seeded_kit if kit is None else kit
    structure = seeded_structure if structure is None else structure
    bass_program = seeded_bass if bass_program is None else bass_program
    chord_program = seeded_chords if chord_program is None else chord_program
    pad = chord_program in (48, 89)
    comp = rng.choice(COMP_PATTERNS)
    breakdown_kind = rng.choice(["hats", "snare+hats"])
    intro_bass = rng.random() < 0.5
    crash_a = rng.random() < 0.5
    crash_b = rng.random() < 0.8
    bass_vel = rng.randrange(88, 104)
    chord_vel = rng.randrange(58, 72) if not pad else rng.randrange(50, 62)

    song = Song(bpm)
    song.meta = {
        "groove_id": groove_row["id"], "groove_file": groove_row["midi_filename"],
        "drummer": groove_row.get("drummer"), "style": groove_row.get("style"),
        "seed": int(seed), "kit_program": int(kit), "kit": KITS.get(kit, str(kit)),
        "key": NOTE_NAMES[key_pc] + ("" if mode == "major" else "m"),
        "progression": prog, "bass_program": bass_program,
        "bass": BASS_PROGRAMS.get(bass_program, str(bass_program)),
        "chord_program": chord_program,
        "chords": CHORD_PROGRAMS.get(chord_program, str(chord_program)),
        "breakdown": breakdown_kind, "render_version": RENDER_VERSION,
        "groove_bars_available": len(bars),
    }
    song.controls += [
        (0, DRUM_CHANNEL, "program", kit, 0),
        (0, DRUM_CHANNEL, "cc", 7, 120), (0, DRUM_CHANNEL, "cc", 91, 25),
        (0, BASS_CHANNEL, "program", bass_program, 0),
        (0, BASS_CHANNEL, "cc", 7, 70), (0, BASS_CHANNEL, "cc", 91, 10),
        (0, CHORD_CHANNEL, "program", chord_program, 0),
        (0, CHORD_CHANNEL, "cc", 7, 48 if pad else 57), (0, CHORD_CHANNEL, "cc", 10, 48),
        (0, CHORD_CHANNEL, "cc", 91, 50),
    ]
    chord_table = MAJOR if mode == "major" else MINOR

    drum_hits = []  # (beat_pos, gm, vel)
    bass_notes = []  # (start_beat, end_beat, note, vel)
    chord_notes = []
    prev_voicing = [None]
    groove_lens = [n for name, n in structure if name == "groove"]
    b_start = second_groove_start(bars, groove_lens[0], groove_lens[1]) \
        if len(groove_lens) > 1 else 0
    song.meta["second_groove_from_bar"] = b_start + 1
    groove_idx = 0  # next groove bar for a groove section
    groove_sections_seen = 0
    song_bar = 0

    def chord_of(bar_no):
        root_off, quality = chord_table[prog[bar_no % len(prog)]]
        return (key_pc + root_off) % 12, quality

    def bass_pitch(pc):
        return 28 + (pc - 4) % 12  # E1..D#2

    def add_chords(b0, bar_no, style):
        pc, quality = chord_of(bar_no)
        v = _chord_pitches(pc, quality, prev_voicing[0])
        prev_voicing[0] = v
        if pad or style == "hold":
            for n in v:
                chord_notes.append((b0 + 0.0, b0 + 3.9, n, chord_vel))
        else:
            for st, ln in comp:
                vel = chord_vel + (6 if st == 0 else 0)
                for n in v:
                    chord_notes.append((b0 + st * 0.5, b0 + (st + ln) * 0.5 - 0.08, n, vel))

    def add_bass(b0, bar_no, positions, vel):
        pc, _ = chord_of(bar_no)
        root = bass_pitch(pc)
        positions = sorted(set(positions))
        for i, p in enumerate(positions):
            nxt = positions[i + 1] if i + 1 < len(positions) else 8
            note = root
            if p % 2 == 1 and rng.random() < 0.25:
                note = root + 12
            elif p in (3, 6) and rng.random() < 0.2:
                note = root + 7
            start = b0 + p * 0.5
            end = b0 + min(nxt, p + 4) * 0.5 - 0.06
            bass_notes.append((start, end, note, vel - (0 if p == 0 else 6)))

    for name, n in structure:
        first = song_bar
        if name == "groove":
            groove_sections_seen += 1
            if groove_sections_seen == 2:
                groove_idx = b_start
        want_crash = (crash_a if groove_sections_seen == 1 else crash_b)
        for k in range(n):
            b0 = 4.0 * song_bar  # beat position of this song bar's downbeat
            if name == "ending":
                drum_hits += [(b0, 36, 110), (b0, 49, 112)]
                pc, quality = chord_of(0)
                for nn in _chord_pitches(pc, quality, prev_voicing[0]):
                    chord_notes.append((b0, b0 + 3.6, nn, chord_vel + 6))
                bass_notes.append((b0, b0 + 3.6, bass_pitch(pc), bass_vel))
            else:
                if name == "intro":
                    gbar = bars[k % len(bars)]
                    keep = HATS | CYMBALS
                elif name == "breakdown":
                    gbar = bars[(groove_idx + k) % len(bars)]  # the bars after groove 1
                    keep = HATS | CYMBALS if breakdown_kind == "hats" else HATS | CYMBALS | {37, 38}
                else:
                    gbar = bars[groove_idx % len(bars)]
                    groove_idx += 1
                    keep = None
                for off, gm, vel, _td in gbar:
                    if keep is None or gm in keep:
                        drum_hits.append((b0 + off, gm, vel))
                if name == "groove" and k == 0 and want_crash:
                    has_crash = any(gm in (49, 57) and off < 0.5 for off, gm, _, _ in gbar)
                    if not has_crash:
                        kicks = [off for off, gm, _, _ in gbar if gm == 36 and abs(off) < 0.25]
                        drum_hits.append((b0 + (kicks[0] if kicks else 0.0), 49, 105))
                # accompaniment
                if name == "groove":
                    kick_pos = [int(round(off * 2)) for off, gm, _, _ in gbar if gm == 36]
                    pos = [p for p in kick_pos if 0 <= p < 8] + [0]
                    if len(set(pos)) < 2:
                        pos.append(4)
                    add_bass(b0, song_bar, pos, bass_vel)
                    add_chords(b0, song_bar, "comp")
                elif name == "intro":
                    if intro_bass:
                        add_bass(b0, song_bar, [0, 4], bass_vel - 10)
                    add_chords(b0, song_bar, "comp" if k >= n // 2 else "hold")
                else:  # breakdown
                    add_bass(b0, song_bar, [0], bass_vel - 8)
                    add_chords(b0, song_bar, "hold")
            song_bar += 1
        song.sections.append((name, first, n))
    song.n_bars = song_bar

    # drums: ticks, GM lengths (0.5 s, 1.5 s cymbals, 1.0 s open hat), cut at
    # the next hit of the same note
    sec_to_ticks = bpm * PPQ / 60.0
    dh = sorted((song.tick(b), gm, vel) for b, gm, vel in drum_hits)
    # merge duplicates (same note within 2 ticks): keep the louder
    merged = []
    for t, gm, vel in dh:
        if merged and merged[-1][1] == gm and t - merged[-1][0] <= 2:
            if vel > merged[-1][2]:
                merged[-1] = (merged[-1][0], gm, vel)
            continue
        merged.append((t, gm, vel))
    next_same = {}
    offs = [0] * len(merged)
    for i in range(len(merged) - 1, -1, -1):
        t, gm, vel = merged[i]
        length_s = 1.5 if gm in CYMBALS else (1.0 if gm == 46 else 0.5)
        off = t + int(round(length_s * sec_to_ticks))
        if gm in next_same:
            off = min(off, next_same[gm])
        offs[i] = max(off, t + 1)
        next_same[gm] = t
    for (t, gm, vel), off in zip(merged, offs):
        song.notes.append((DRUM_CHANNEL, t, off, gm, vel))
    for ch, lst in ((BASS_CHANNEL, bass_notes), (CHORD_CHANNEL, chord_notes)):
        for s, e, n, v in lst:
            song.notes.append((ch, song.tick(s), max(song.tick(e), song.tick(s) + 1), n,
                               max(1, min(127, v))))
    return song


def write_midi(song, path):
    """Type-1 SMF: conductor (tempo, 4/4) + one track per channel; note-offs
    sort before note-ons on the same tick. End of track after the ending bar."""
    mid = mido.MidiFile(type=1, ticks_per_beat=PPQ)
    cond = mido.MidiTrack()
    cond.append(mido.MetaMessage("track_name", name="drum2midi test song", time=0))
    cond.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(song.bpm), time=0))
    cond.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    end_tick = song.n_bars * 4 * PPQ
    cond.append(mido.MetaMessage("end_of_track", time=end_tick))
    mid.tracks.append(cond)
    for ch, name in ((DRUM_CHANNEL, "Drums"), (BASS_CHANNEL, "Bass"), (CHORD_CHANNEL, "Chords")):
        ev = []
        for tick, c, kind, a, b in song.controls:
            if c == ch:
                ev.append((tick, 0, mido.Message("program_change", channel=ch, program=a)
                           if kind == "program" else
                           mido.Message("control_change", channel=ch, control=a, value=b)))
        for c, on, off, note, vel in song.notes:
            if c == ch:
                ev.append((on, 2, mido.Message("note_on", channel=ch, note=note, velocity=vel)))
                ev.append((off, 1, mido.Message("note_off", channel=ch, note=note, velocity=0)))
        ev.sort(key=lambda e: (e[0], e[1]))
        tr = mido.MidiTrack()
        tr.append(mido.MetaMessage("track_name", name=name, time=0))
        last = 0
        for tick, _, msg in ev:
            tr.append(msg.copy(time=tick - last))
            last = tick
        tr.append(mido.MetaMessage("end_of_track", time=max(0, end_tick - last)))
        mid.tracks.append(tr)
    mid.save(path)
    return path


def song_truth(song):
    """The truth dictionary (without duration_s, which the render sets)."""
    bar_s = song.bar_s
    hits = []
    for ch, on, _off, note, vel in sorted(song.notes, key=lambda n: (n[1], n[3])):
        if ch != DRUM_CHANNEL:
            continue
        hits.append({"time_s": round(song.tick_to_s(on), 6), "note": note,
                     "class": GM_CLASS[note], "velocity": vel})
    sections = []
    for name, first, n in song.sections:
        sections.append({"name": name, "first_bar": first + 1, "bars": n,
                         "start_s": round(first * bar_s, 6),
                         "end_s": round((first + n) * bar_s, 6)})
    return {
        "bpm": song.bpm,
        "duration_s": None,
        "downbeats_s": [round(b * bar_s, 6) for b in range(song.n_bars)],
        "beats_s": [round(b * bar_s / 4.0, 6) for b in range(song.n_bars * 4)],
        "groove_sections_s": [[s["start_s"], s["end_s"]] for s in sections
                              if s["name"] == "groove"],
        "sections": sections,
        "hits": hits,
        "song": dict(song.meta),
    }


# ---------------------------------------------------------------- audio

def fluidsynth_render(midi_path, sample_rate=SAMPLE_RATE, gain=0.6):
    """Render a MIDI file with FluidSynth; returns float32 (frames, 2)."""
    with tempfile.TemporaryDirectory(prefix="d2m-fs-") as td:
        raw = os.path.join(td, "out.raw")
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", str(gain), "-r", str(sample_rate),
                        "-T", "raw", "-O", "float", "-F", raw, SF2, midi_path],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        x = np.fromfile(raw, dtype="<f4")
    return x.reshape(-1, 2)


def normalise(x, peak_dbfs=-1.0):
    """Scale to a peak of peak_dbfs (no limiting: transients stay intact)."""
    pk = float(np.max(np.abs(x))) if x.size else 0.0
    if pk <= 0:
        return x
    return x * (10 ** (peak_dbfs / 20.0) / pk)


def write_wav(path, x, sample_rate=SAMPLE_RATE):
    """16-bit PCM WAV from float (frames, channels) or (frames,)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(x.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


def read_wav(path):
    """(float32 (frames, channels), sample_rate) of a 16-bit PCM WAV."""
    with wave.open(path, "rb") as w:
        n, ch, sw, sr = w.getnframes(), w.getnchannels(), w.getsampwidth(), w.getframerate()
        data = w.readframes(n)
    if sw != 2:
        raise ValueError("only 16-bit WAV supported: %s" % path)
    return np.frombuffer(data, dtype="<i2").reshape(-1, ch).astype(np.float32) / 32768.0, sr


def encode_mp3(wav_path, mp3_path, mode="V2"):
    """lame: mode "V2" (VBR) or a CBR bitrate like "192"."""
    args = ["lame", "--quiet", "--noreplaygain"]
    args += ["-V2"] if mode == "V2" else (["-V", mode[1:]] if mode.startswith("V")
                                        else ["-b", str(mode), "--cbr"])
    subprocess.run(args + [wav_path, mp3_path], check=True)


def decode_mp3_mpg123(path):
    """Decode an MP3 with libmpg123 (ctypes), its default flags (gapless on):
    float32 (frames, channels), sample_rate. The decoder drum2midi links."""
    lib = ctypes.CDLL(ctypes.util.find_library("mpg123") or "libmpg123.so.0")
    lib.mpg123_new.restype = ctypes.c_void_p
    lib.mpg123_new.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    for fn in ("mpg123_open", "mpg123_getformat", "mpg123_read", "mpg123_format_none",
               "mpg123_format", "mpg123_close", "mpg123_param"):
        getattr(lib, fn).restype = ctypes.c_int
    lib.mpg123_open.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.mpg123_format_none.argtypes = [ctypes.c_void_p]
    lib.mpg123_format.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_int]
    lib.mpg123_getformat.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_long),
                                     ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
    lib.mpg123_read.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                ctypes.POINTER(ctypes.c_size_t)]
    lib.mpg123_close.argtypes = [ctypes.c_void_p]
    lib.mpg123_delete.argtypes = [ctypes.c_void_p]
    lib.mpg123_delete.restype = None
    if hasattr(lib, "mpg123_init"):
        lib.mpg123_init()
    err = ctypes.c_int(0)
    h = lib.mpg123_new(None, ctypes.byref(err))
    if not h:
        raise RuntimeError("mpg123_new failed")
    try:
        MPG123_ENC_SIGNED_16 = 0xD0
        lib.mpg123_format_none(h)
        for rate in (44100, 48000, 32000, 22050, 24000, 16000, 11025, 12000, 8000):
            lib.mpg123_format(h, rate, 3, MPG123_ENC_SIGNED_16)
        if lib.mpg123_open(h, os.fsencode(path)) != 0:
            raise RuntimeError("mpg123_open failed: %s" % path)
        rate, ch, enc = ctypes.c_long(), ctypes.c_int(), ctypes.c_int()
        buf = ctypes.create_string_buffer(1 << 16)
        out = []
        done = ctypes.c_size_t()
        fmt = None
        while True:
            r = lib.mpg123_read(h, buf, len(buf), ctypes.byref(done))
            if r == -11:  # MPG123_NEW_FORMAT
                lib.mpg123_getformat(h, ctypes.byref(rate), ctypes.byref(ch), ctypes.byref(enc))
                fmt = (rate.value, ch.value)
            if done.value:
                out.append(buf.raw[:done.value])
            if r == -12:  # MPG123_DONE
                break
            if r not in (0, -11, -10):
                raise RuntimeError("mpg123_read error %d" % r)
        if fmt is None:
            lib.mpg123_getformat(h, ctypes.byref(rate), ctypes.byref(ch), ctypes.byref(enc))
            fmt = (rate.value, ch.value)
        lib.mpg123_close(h)
    finally:
        lib.mpg123_delete(h)
    x = np.frombuffer(b"".join(out), dtype="<i2").astype(np.float32) / 32768.0
    return x.reshape(-1, fmt[1]), fmt[0]


def measure_offset(ref, x, max_lag=4096):
    """Lag (samples) of x relative to ref (positive: x is late), by
    cross-correlating mono mixes over the first 10 s."""
    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(x, dtype=np.float64)
    a = a.mean(1) if a.ndim == 2 else a
    b = b.mean(1) if b.ndim == 2 else b
    n = min(len(a), len(b), 441000)
    a, b = a[:n], b[:n]
    size = 1 << int(math.ceil(math.log2(2 * n)))
    c = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    vals = np.concatenate([c[:max_lag + 1], c[-max_lag:]])
    return int(lags[int(np.argmax(vals))])


# ---------------------------------------------------------------- scoring

def match_counts(ref_times, est_times, window=0.05):
    """(tp, n_ref, n_est) with one-to-one matching (mir_eval.util.match_events)."""
    import mir_eval.util
    ref = np.sort(np.asarray(ref_times, dtype=float))
    est = np.sort(np.asarray(est_times, dtype=float))
    if len(ref) == 0 or len(est) == 0:
        return 0, len(ref), len(est)
    return len(mir_eval.util.match_events(ref, est, window)), len(ref), len(est)


def prf(tp, n_ref, n_est):
    p = tp / n_est if n_est else (1.0 if n_ref == 0 else 0.0)
    r = tp / n_ref if n_ref else (1.0 if n_est == 0 else 0.0)
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f


def merge_onsets(times, gap=0.03):
    """Distinct onset instants: a time within gap of the first time of the
    current group joins that group (the group is represented by its first)."""
    out = []
    for t in sorted(times):
        if not out or t - out[-1] > gap:
            out.append(t)
    return out


def report_hit_class(hit):
    """Evaluation class of a report.json hit (by GM note, else by instrument name)."""
    c = eval_class(note=hit.get("note")) if hit.get("note") is not None else None
    if c is None:
        name = str(hit.get("instrument", "")).lower()
        for key, cls in (("kick", "kick"), ("bass", "kick"), ("snare", "snare"),
                         ("hat", "hihat"), ("tom", "tom"), ("crash", "cymbal"),
                         ("ride", "cymbal"), ("cymbal", "cymbal")):
            if key in name:
                return cls
    return c


def score_hits(truth, report_hits, window=0.05, min_velocity=0):
    """Per-class counts {cls: (tp, n_ref, n_est)} plus "any" (merged onsets).
    Truth hits quieter than min_velocity are ignored: they count neither as
    misses nor, when an estimate matches them, as false positives."""
    import mir_eval.util

    def counts(ref_all, est_times):
        ref_all = sorted(ref_all)
        est = np.sort(np.asarray(est_times, dtype=float))
        ref_t = np.array([t for t, _ in ref_all], dtype=float)
        loud = np.array([v >= min_velocity for _, v in ref_all], dtype=bool)
        pairs = mir_eval.util.match_events(ref_t, est, window) if len(ref_t) and len(est) else []
        tp = sum(1 for i, _ in pairs if loud[i])
        return tp, int(loud.sum()), len(est) - (len(pairs) - tp)

    out = {}
    for cls in EVAL_CLASSES:
        out[cls] = counts([(h["time_s"], h["velocity"]) for h in truth["hits"]
                           if eval_class(cls=h["class"]) == cls],
                          [h["time_s"] for h in report_hits if report_hit_class(h) == cls])
    # any drum: simultaneous hits merged; a merged onset is as loud as its loudest hit
    ref_any = []
    for t, v in sorted((h["time_s"], h["velocity"]) for h in truth["hits"]):
        if ref_any and t - ref_any[-1][2] <= 0.03:
            ref_any[-1][1] = max(ref_any[-1][1], v)
        else:
            ref_any.append([t, v, t])
    out["any"] = counts([(t, v) for t, v, _ in ref_any],
                        merge_onsets([h["time_s"] for h in report_hits]))
    return out


def load_json(path):
    with open(path) as f:
        return json.load(f)


def save_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def have_tools():
    """Names of missing external programs/files needed to render songs."""
    missing = [p for p in ("fluidsynth", "lame") if shutil.which(p) is None]
    if not os.path.isfile(SF2):
        missing.append(SF2)
    if not os.path.isfile(os.path.join(GROOVES_DIR, "info.csv")):
        missing.append(os.path.join(GROOVES_DIR, "info.csv"))
    return missing


# ---------------------------------------------------------------- verification

def _band_energy(x, sr, lo, hi, t0, t1):
    a, b = int(t0 * sr), int(t1 * sr)
    seg = x[max(0, a):max(0, b)]
    if len(seg) < 16:
        return 0.0
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)))) ** 2
    f = np.fft.rfftfreq(len(seg), 1.0 / sr)
    return float(spec[(f >= lo) & (f < hi)].sum())


def verify_song(song, truth, sample_rate=SAMPLE_RATE):
    """Render drums-only and accompaniment-only stems of a Song and check the
    truth against the audio. Returns a dict of measurements:
    drums_vs_acc_db (stem RMS ratio), kick_vs_acc_db (median over kicks of
    30-150 Hz energy, 0-60 ms after the kick, drums stem vs accompaniment),
    kick_vs_nokick_db (full mix 30-150 Hz energy at kicks vs at 8th-grid
    positions >= 100 ms from any kick), onset_lag_ms (median, p5, p95 of the
    audio onset minus truth time for isolated hits of the drums stem)."""
    import copy
    out = {}
    stems = {}
    with tempfile.TemporaryDirectory(prefix="d2m-verify-") as td:
        for name, keep in (("full", None), ("drums", {DRUM_CHANNEL}),
                           ("acc", {BASS_CHANNEL, CHORD_CHANNEL})):
            s2 = copy.copy(song)
            s2.notes = [n for n in song.notes if keep is None or n[0] in keep]
            p = os.path.join(td, name + ".mid")
            write_midi(s2, p)
            stems[name] = fluidsynth_render(p, sample_rate).mean(1).astype(np.float64)
    n = min(len(v) for v in stems.values())
    full, drums, acc = (stems[k][:n] for k in ("full", "drums", "acc"))
    rms = lambda v: float(np.sqrt(np.mean(v ** 2)) + 1e-12)
    out["drums_vs_acc_db"] = round(20 * np.log10(rms(drums) / rms(acc)), 1)
    kicks = [h["time_s"] for h in truth["hits"] if h["class"] == "kick"]
    ratios = []
    for t in kicks:
        ek = _band_energy(drums, sample_rate, 30, 150, t, t + 0.06)
        ea = _band_energy(acc, sample_rate, 30, 150, t, t + 0.06)
        ratios.append(10 * np.log10((ek + 1e-12) / (ea + 1e-12)))
    out["kick_vs_acc_db"] = round(float(np.median(ratios)), 1) if ratios else None
    kick_arr = np.array(kicks)
    grid = np.arange(0, n / sample_rate - 0.1, 60.0 / truth["bpm"] / 2)
    nokick = [g for g in grid if len(kick_arr) == 0 or np.min(np.abs(kick_arr - g)) > 0.1]
    ek = np.median([_band_energy(full, sample_rate, 30, 150, t, t + 0.06) for t in kicks]) \
        if kicks else 0.0
    en = np.median([_band_energy(full, sample_rate, 30, 150, t, t + 0.06) for t in nokick]) \
        if nokick else 1e-12
    out["kick_vs_nokick_db"] = round(float(10 * np.log10((ek + 1e-12) / (en + 1e-12))), 1)
    # onset alignment: render the drums again without some isolated hits;
    # the difference of the two renders is exactly those hits' audio
    drum_notes = sorted((n for n in song.notes if n[0] == DRUM_CHANNEL), key=lambda n: n[1])
    on_s = [song.tick_to_s(n[1]) for n in drum_notes]
    iso = [i for i in range(1, len(drum_notes))
           if on_s[i] - on_s[i - 1] >= 0.08 and (i + 1 == len(on_s) or on_s[i + 1] - on_s[i] >= 0.05)]
    removed, last_end = set(), -1.0
    for i in iso:  # removed hits far enough apart that their tails do not overlap
        if on_s[i] - 0.03 > last_end:
            removed.add(i)
            last_end = on_s[i] + (2.0 if drum_notes[i][3] in CYMBALS else 0.8)
    s3 = copy.copy(song)
    s3.notes = [n for n in song.notes if n[0] != DRUM_CHANNEL] + \
        [n for i, n in enumerate(drum_notes) if i not in removed]
    s3.notes = [n for n in s3.notes if n[0] == DRUM_CHANNEL]
    with tempfile.TemporaryDirectory(prefix="d2m-verify-") as td:
        p = os.path.join(td, "minus.mid")
        write_midi(s3, p)
        minus = fluidsynth_render(p, sample_rate).mean(1).astype(np.float64)
    m = min(len(minus), len(drums))
    diff = np.abs(drums[:m] - minus[:m])
    lags, by_note = [], {}
    for i in sorted(removed):
        t = on_s[i]
        a, b = int((t - 0.005) * sample_rate), int((t + 0.05) * sample_rate)
        seg = diff[a:b]
        pre = diff[int((t - 0.02) * sample_rate):a]
        if len(seg) == 0 or len(pre) == 0 or seg.max() <= 4 * pre.max():
            continue  # another removed hit's tail dominates: no clean measurement
        lag = (a + int(np.argmax(seg > max(0.05 * seg.max(), 4 * pre.max())))) / sample_rate - t
        lags.append(lag)
        by_note.setdefault(drum_notes[i][3], []).append(lag)
    if lags:
        lg = np.array(lags) * 1000
        out["onset_lag_ms"] = {"n": len(lg), "median": round(float(np.median(lg)), 2),
                               "p5": round(float(np.percentile(lg, 5)), 2),
                               "p95": round(float(np.percentile(lg, 95)), 2),
                               "by_note_median": {str(k): round(float(np.median(v)) * 1000, 2)
                                                  for k, v in sorted(by_note.items())}}
    return out
