#!/usr/bin/python3
"""Speed and memory of the drum2midi CLI on a 3-minute song.

    /usr/bin/python3 bench/speed.py [--bin build/drum2midi] [--runs 3] [--separator hpss]

Renders a realistic song (a Groove MIDI Dataset groove with bass and chords,
FluidSynth, tools/render_song.py), repeats it to 3:00, encodes it to MP3
(the main input), then runs the CLI --runs times and prints the median
seconds of each stage (from report.json's timings_s), seconds per minute of
audio, the real-time factor and the peak RSS of the CLI process (its own
rusage, from wait4). Machines here are shared: compare figures from one run."""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GROOVE = "drummer1/session1/101"  # dance/disco, 120 BPM
SONG_S = 180.0


def make_song(folder):
    wav = os.path.join(folder, "song.wav")
    mp3 = os.path.join(folder, "song3min.mp3")
    code = f"""
import sys, wave
sys.path.insert(0, {os.path.join(ROOT, 'tools')!r})
import numpy as np
from render_song import render_song
render_song({GROOVE!r}, 7, {os.path.join(folder, 'base.wav')!r})
w = wave.open({os.path.join(folder, 'base.wav')!r}); rate = w.getframerate(); ch = w.getnchannels()
x = np.frombuffer(w.readframes(w.getnframes()), dtype='<i2').reshape(-1, ch)
n = int({SONG_S} * rate); x = np.tile(x, (n // len(x) + 1, 1))[:n]
o = wave.open({wav!r}, 'wb'); o.setnchannels(ch); o.setsampwidth(2); o.setframerate(rate)
o.writeframes(x.astype('<i2').tobytes()); o.close()
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    subprocess.run(["lame", "--quiet", "-V2", wav, mp3], check=True)
    return mp3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "drum2midi"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--separator", default="hpss")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="d2m-bench-")
    try:
        song = make_song(tmp)
        stages = ["decode", "separate", "analyze", "write", "total"]
        times = {s: [] for s in stages}
        peak_mb = 0.0
        for r in range(args.runs):
            out = os.path.join(tmp, f"out{r}")
            proc = subprocess.Popen([args.bin, song, "-o", out, "--progress=none",
                                     "--separator", args.separator], stdout=subprocess.DEVNULL)
            _, status, usage = os.wait4(proc.pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                sys.exit(f"drum2midi failed on {song}")
            peak_mb = max(peak_mb, usage.ru_maxrss / 1024.0)
            with open(os.path.join(out, "report.json")) as f:
                rep = json.load(f)
            for s in stages:
                times[s].append(rep["timings_s"][s])
            duration = rep["input"]["duration_s"]
        minutes = duration / 60.0
        print(f"drum2midi on a {duration:.0f} s MP3 ({args.separator} separator), "
              f"median of {args.runs} runs, {os.cpu_count()} cores")
        print()
        print("| stage | seconds | seconds per minute of audio |")
        print("|---|---:|---:|")
        for s in stages:
            med = statistics.median(times[s])
            print(f"| {s} | {med:.2f} | {med / minutes:.3f} |")
        total = statistics.median(times["total"])
        print()
        print(f"real-time factor: {duration / total:.0f}x faster than real time")
        print(f"peak RSS: {peak_mb:.0f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
