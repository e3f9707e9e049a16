#!/usr/bin/python3
"""drum2midi with the native HTDemucs on a song whose parts are known: a
real drummer's groove with bass and chords (tools/songlib.py), the drums and
the accompaniment rendered apart by FluidSynth and summed, so the true drum
part is known. The drum stem must be the drums
(signal-to-distortion ratio against the true drum part), the bass stem the
bass, report.json must say which model ran, and --stems all must write every
stem. Skips when the weights are not installed (scripts/fetch-model) and in
the sanitizer pass, where test_htdemucs covers the engine."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import copy  # noqa: E402

import numpy as np  # noqa: E402

import songlib  # noqa: E402

from checks import check, summary  # noqa: E402

BIN = os.environ.get("D2M_BIN", "build/drum2midi")


def model_path():
    if os.environ.get("DRUM2MIDI_MODEL"):
        return os.environ["DRUM2MIDI_MODEL"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "drum2midi", "htdemucs.onnx")


def read_wav(path):
    with wave.open(path) as w:
        raw = w.readframes(w.getnframes())
        width, ch = w.getsampwidth(), w.getnchannels()
    if width != 3:
        raise ValueError(f"{path}: expected 24-bit PCM")
    b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
    ints = (b[:, 0].astype(np.int32) | b[:, 1].astype(np.int32) << 8 | b[:, 2].astype(np.int32) << 16)
    ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
    return (ints / 8388608.0).reshape(-1, ch).mean(axis=1)


def sdr(estimate, truth):
    n = min(len(estimate), len(truth))
    e, t = estimate[:n], truth[:n]
    return 10 * np.log10(np.sum(t * t) / max(np.sum((e - t) ** 2), 1e-20))


def main():
    if not os.path.exists(BIN):
        print(f"SKIP: {BIN} not built\n0 passed, 0 failed")
        return 0
    if os.environ.get("D2M_QUICK"):
        print("SKIP: the Demucs CLI test runs in the release pass only\n0 passed, 0 failed")
        return 0
    if not os.path.exists(model_path()):
        print(f"SKIP: no Demucs weights at {model_path()} (scripts/fetch-model)\n0 passed, 0 failed")
        return 0
    tmp = tempfile.mkdtemp(prefix="d2m-demucs-")
    try:
        song = songlib.arrange(songlib.find_groove("drummer9/session1/23"), 3)
        parts = {}
        for name, keep in (("drums", lambda ch: ch == songlib.DRUM_CHANNEL),
                           ("band", lambda ch: ch != songlib.DRUM_CHANNEL)):
            part = copy.copy(song)
            part.notes = [n for n in song.notes if keep(n[0])]
            part.controls = [c for c in song.controls if keep(c[1])]
            midi = os.path.join(tmp, name + ".mid")
            songlib.write_midi(part, midi)
            parts[name] = songlib.fluidsynth_render(midi)
        n = min(len(parts["drums"]), len(parts["band"]), 12 * 44100)
        drums, band = parts["drums"][:n].mean(axis=1), parts["band"][:n].mean(axis=1)
        mix = drums + band
        scale = 0.9 / np.max(np.abs(mix))
        drums, band, mix = drums * scale, band * scale, mix * scale
        path = os.path.join(tmp, "song.wav")
        songlib.write_wav(path, np.stack([mix, mix], axis=1))
        out = os.path.join(tmp, "out")
        p = subprocess.run([BIN, path, "-o", out, "--separator", "demucs", "--stems", "all",
                            "--progress=none", "--json"], capture_output=True, text=True,
                           timeout=900)
        check(p.returncode == 0, "demucs run succeeds", p.stderr[-2000:])
        if p.returncode != 0:
            return finish()
        rep = json.loads(p.stdout)
        check(rep["separator"]["name"] == "htdemucs", "report names the separator", str(rep["separator"]))
        check(rep["separator"]["model"] == os.path.basename(model_path()), "report names the weights",
              str(rep["separator"]))
        for key in ("drum_stem_wav", "bass_stem_wav", "other_stem_wav", "vocals_stem_wav"):
            check(key in rep["files"] and os.path.getsize(os.path.join(out, rep["files"][key])) > 1000,
                  f"--stems all writes {key}", str(rep["files"]))
        got_drums = read_wav(os.path.join(out, rep["files"]["drum_stem_wav"]))
        rest = sum(read_wav(os.path.join(out, rep["files"][k]))
                   for k in ("bass_stem_wav", "other_stem_wav", "vocals_stem_wav"))
        d, b, mixed = sdr(got_drums, drums), sdr(rest, band), sdr(mix, drums)
        print(f"drum stem SDR {d:.1f} dB (the mix itself: {mixed:.1f} dB), "
              f"other stems against the band {b:.1f} dB")
        check(d > mixed + 6.0 and d > 6.0, "the drum stem is the drums (SDR > 6 dB, 6 dB over the mix)",
              f"{d:.1f} dB vs {mixed:.1f} dB")
        check(b > 6.0, "the other stems hold the band", f"{b:.1f} dB")
        check(abs(rep["tempo_bpm"] - 120) < 1.0, "tempo from the Demucs stem", str(rep["tempo_bpm"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return finish()


def finish():
    return summary("test_demucs_cli")


if __name__ == "__main__":
    sys.exit(main())
