#!/usr/bin/python3
"""Render a short test song around a Groove MIDI Dataset groove, with truth.

    /usr/bin/python3 tools/render_song.py GROOVE SEED OUT.(wav|mp3)
        [--kit 0|8|16] [--mp3-mode V2|192] [--keep-midi] [--verify] [--quiet]

GROOVE is a GMD id ("drummer1/session1/101"), an info.csv midi_filename, or a
path to a 4/4 groove .mid. Writes OUT plus OUT-without-extension.truth.json
(and .mid with --keep-midi). Deterministic: same groove + seed + version of
this file -> same bytes. Importable: render_song(groove, seed, out_path, ...).

The song (sections of whole bars at the groove's info.csv bpm, bar 1 at 0 s):
  intro      4 bars (2 at slow tempi): bass + chords, only the groove's
             hi-hats and cymbals
  groove     8 bars (more at fast tempi): the full groove from its bar 1
  breakdown  2 or 4 bars: no kick (hats, or snare + hats), held chords
  groove     8 bars: the groove continued (wrapping around)
  ending     1 bar: kick + crash + held chord, fading out
GM kit by seed among FluidR3 Standard (0), Room (8), Power (16); bass
(Fingered/Picked) follows the kick on an 8th grid; chords (piano, Rhodes,
strings or pad) follow a seeded progression, one chord a bar.

Truth JSON: bpm, duration_s, downbeats_s, beats_s (every bar, ending
included), groove_sections_s ([[start, end], ...] of the full-groove
sections), sections, hits [{time_s, note (GM, folded), class, velocity}]
(only notes actually rendered), song (groove, seed, kit, key, ...).

Timing: truth times are the MIDI note times. FluidSynth starts notes
2-6 ms later (64-sample blocks + sample attack; measured mean ~4.5 ms for the
kick). MP3: lame writes a LAME/Xing tag with the encoder delay and padding;
libmpg123 (gapless, its default; drum2midi's decoder) removes them, so the
decoded MP3 lines up with the WAV sample for sample and the WAV truth holds
for the MP3 as well. Decoders that ignore the tag (e.g. `lame --decode`)
are late by 1105 samples (25.1 ms = 576 encoder delay + 529 decoder delay).
"""

import argparse
import os
import shutil
import sys
import tempfile

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

import songlib  # noqa: E402
from songlib import (arrange, encode_mp3, find_groove, fluidsynth_render, normalise,  # noqa: E402,F401
                     save_json, song_truth, write_midi, write_wav, SAMPLE_RATE)


def truth_path_for(out_path):
    return os.path.splitext(out_path)[0] + ".truth.json"


def render_song(groove, seed, out_path, kit=None, structure=None, mp3_mode="V2",
                keep_midi=False, peak_dbfs=-1.0, fade_s=0.4, bass_program=None,
                chord_program=None):
    """Render the song for (groove, seed) to out_path (.wav or .mp3) and its
    truth JSON next to it. Returns the truth dict (also written to disk)."""
    row = find_groove(groove) if not isinstance(groove, dict) else groove
    if row.get("time_signature", "4-4") != "4-4":
        raise ValueError("groove is not 4/4: %s" % row.get("id"))
    song = arrange(row, seed, kit=kit, structure=structure, bass_program=bass_program,
                   chord_program=chord_program)
    truth = song_truth(song)
    ext = os.path.splitext(out_path)[1].lower()
    if ext not in (".wav", ".mp3"):
        raise ValueError("output must be .wav or .mp3: %s" % out_path)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="d2m-song-", dir=out_dir) as td:
        mid_path = os.path.join(td, "song.mid")
        write_midi(song, mid_path)
        x = fluidsynth_render(mid_path)
        n = int(round(song.n_bars * song.bar_s * SAMPLE_RATE))
        if len(x) < n:
            x = np.concatenate([x, np.zeros((n - len(x), x.shape[1]), x.dtype)])
        x = x[:n].astype(np.float64)
        nf = min(n, int(fade_s * SAMPLE_RATE))
        if nf > 0:
            x[n - nf:] *= np.linspace(1.0, 0.0, nf)[:, None] ** 2
        x = normalise(x, peak_dbfs)
        wav_tmp = os.path.join(td, "song.wav")
        write_wav(wav_tmp, x)
        if ext == ".mp3":
            mp3_tmp = os.path.join(td, "song.mp3")
            encode_mp3(wav_tmp, mp3_tmp, mp3_mode)
            os.replace(mp3_tmp, out_path)
        else:
            os.replace(wav_tmp, out_path)
        if keep_midi:
            shutil.copyfile(mid_path, os.path.splitext(out_path)[0] + ".mid")
    rms = float(np.sqrt(np.mean(x ** 2)))
    truth["duration_s"] = round(n / SAMPLE_RATE, 6)
    truth["audio"] = {"file": os.path.basename(out_path), "sample_rate": SAMPLE_RATE,
                      "channels": 2, "format": ext[1:],
                      "mp3_mode": mp3_mode if ext == ".mp3" else None,
                      "peak_dbfs": peak_dbfs,
                      "rms_dbfs": round(20 * np.log10(max(rms, 1e-12)), 2),
                      "timing_note": "truth = MIDI times; FluidSynth onsets 2-6 ms later; "
                                     "MP3 decoded gapless (libmpg123) == WAV"}
    save_json(truth_path_for(out_path), truth)
    return truth


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("groove", help="GMD id, info.csv midi_filename, or .mid path")
    ap.add_argument("seed", type=int)
    ap.add_argument("out", help="output .wav or .mp3")
    ap.add_argument("--kit", type=int, choices=sorted(songlib.KITS), default=None,
                    help="FluidR3 drum kit program (default: by seed)")
    ap.add_argument("--mp3-mode", default="V2", help="V2 (VBR, default) or a CBR kbps, e.g. 192")
    ap.add_argument("--keep-midi", action="store_true", help="also write OUT.mid")
    ap.add_argument("--verify", action="store_true",
                    help="also render stems and print audibility/alignment checks")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    t = render_song(a.groove, a.seed, a.out, kit=a.kit, mp3_mode=a.mp3_mode,
                    keep_midi=a.keep_midi)
    if not a.quiet:
        s = t["song"]
        print("%s: %s (%s, %s) %.1f bpm, %.1f s, %d bars, kit %s, key %s, %d hits, "
              "rms %.1f dBFS; truth %s" % (
                  a.out, s["groove_id"], s["drummer"], s["style"], t["bpm"], t["duration_s"],
                  len(t["downbeats_s"]), s["kit"], s["key"], len(t["hits"]),
                  t["audio"]["rms_dbfs"], truth_path_for(a.out)))
    if a.verify:
        row = find_groove(a.groove)
        song = arrange(row, a.seed, kit=a.kit)
        print(songlib.json.dumps(songlib.verify_song(song, t)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
