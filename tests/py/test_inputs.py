#!/usr/bin/python3
"""The CLI on awkward and bad inputs: every case either works (and says so
in report.json) or fails with one clear line naming the file and the cause
and a non-zero exit, never a crash, never a result passed off as complete.

Inputs are synthesized here (tests/py/synth.py) and encoded with lame.
Run by ctest with D2M_BIN pointing at the drum2midi binary."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402

import synth  # noqa: E402

from checks import check, summary  # noqa: E402

BIN = os.environ.get("D2M_BIN", "build/drum2midi")


def run(args, timeout=600):
    # Separation quality does not matter here: the fast separator unless a
    # case asks for another.
    sep = [] if "--separator" in args else ["--separator", "hpss"]
    p = subprocess.run([BIN, "--progress=none"] + sep + args, capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def expect_error(name, args, fragments, code=1):
    rc, out, err = run(args)
    lines = [l for l in err.strip().splitlines() if l]
    check(rc == code, f"{name}: exit status {code}", f"got {rc}; stderr: {err.strip()}")
    check(any("error:" in l and all(f.lower() in l.lower() for f in fragments) for l in lines),
          f"{name}: message mentions {fragments}", f"stderr: {err.strip()}")
    check("Traceback" not in err and "Sanitizer" not in err and "runtime error" not in err,
          f"{name}: no crash report", err[-2000:])
    return rc, out, err


def expect_ok(name, args):
    rc, out, err = run(args)
    check(rc == 0, f"{name}: succeeds", f"rc {rc}; stderr: {err.strip()[-1500:]}")
    check("Sanitizer" not in err and "runtime error" not in err, f"{name}: no sanitizer report",
          err[-2000:])
    return rc, out, err


def report_of(out_dir):
    with open(os.path.join(out_dir, "report.json")) as f:
        return json.load(f)


def lame(wav, mp3):
    subprocess.run(["lame", "--quiet", "-b", "192", wav, mp3], check=True)


def main():
    if not os.path.exists(BIN):
        print(f"SKIP: {BIN} not built")
        print("0 passed, 0 failed")
        return 0
    tmp = tempfile.mkdtemp(prefix="d2m-inputs-")
    try:
        cases(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary("test_inputs")


def cases(tmp):
    P = lambda name: os.path.join(tmp, name)  # noqa: E731
    x, _ = synth.drum_track(bpm=120, bars=8)
    synth.write_wav(P("good.wav"), x)
    lame(P("good.wav"), P("good.mp3"))

    # Usage errors exit 2.
    rc, _, err = run([])
    check(rc == 2 and "no input" in err, "no input: usage error", err)
    rc, _, err = run(["-q", "12", P("good.wav")])
    check(rc == 2 and "--quantize" in err, "bad --quantize: usage error", err)
    rc, _, err = run(["--bars", "0", P("good.wav")])
    check(rc == 2 and "--bars" in err, "bad --bars: usage error", err)
    rc, out, _ = run(["--help"])
    check(rc == 0 and "--quantize" in out, "--help prints usage", out)

    # Missing, empty, not audio.
    expect_error("missing file", [P("nope.mp3"), "-o", P("o1")], ["nope.mp3", "no such file"])
    open(P("empty.mp3"), "wb").close()
    expect_error("empty file", [P("empty.mp3"), "-o", P("o2")], ["empty.mp3", "empty"])
    png = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + os.urandom(4000)
    with open(P("picture.mp3"), "wb") as f:
        f.write(png)
    expect_error("PNG renamed .mp3", [P("picture.mp3"), "-o", P("o3")],
                 ["picture.mp3", "not a recognised audio file"])
    with open(P("noise.wav"), "wb") as f:
        f.write(np.random.default_rng(3).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    expect_error("random bytes", [P("noise.wav"), "-o", P("o4")], ["noise.wav", "not a recognised"])
    check(not os.path.exists(P("o3/report.json")), "failed job writes no report.json")
    check(not [f for f in os.listdir(P("o3")) if not f.startswith(".")] if os.path.isdir(P("o3")) else True,
          "failed job leaves no output files", str(os.listdir(P("o3")) if os.path.isdir(P("o3")) else ""))

    # Truncated and damaged MP3: decode what is valid, warn, finish.
    data = open(P("good.mp3"), "rb").read()
    with open(P("cut.mp3"), "wb") as f:
        f.write(data[: int(len(data) * 0.7)])
    rc, out, err = expect_ok("truncated MP3", [P("cut.mp3"), "-o", P("o5")])
    check("warning" in err and "cut.mp3" in err, "truncated MP3: warns", err)
    if rc == 0:
        rep = report_of(P("o5"))
        check(rep["warnings"], "truncated MP3: warning in report.json", str(rep.get("warnings")))
    damaged = bytearray(data)
    mid = len(damaged) // 2
    damaged[mid:mid + 3000] = os.urandom(3000)
    with open(P("damaged.mp3"), "wb") as f:
        f.write(bytes(damaged))
    rc, out, err = expect_ok("damaged MP3", [P("damaged.mp3"), "-o", P("o6")])
    if rc == 0:
        rep = report_of(P("o6"))
        check(rep["input"]["duration_s"] > 0.9 * len(x) / 44100, "damaged MP3: decodes past the damage",
              str(rep["input"]["duration_s"]))

    # Silence and too short.
    synth.write_wav(P("silence.wav"), np.zeros(44100 * 20))
    expect_error("silence", [P("silence.wav"), "-o", P("o7")], ["silence.wav", "silent"])
    synth.write_wav(P("short.wav"), x[: 44100 * 3])
    expect_error("shorter than the loop", [P("short.wav"), "-o", P("o8")], ["short.wav", "short"])

    # Formats: mono MP3, 8 kHz, 96 kHz, 24-bit stereo.
    for name, rate, ch, bits in [("mono8k.wav", 8000, 1, 16), ("hi96k.wav", 96000, 2, 24),
                                 ("stereo24.wav", 44100, 2, 24)]:
        sig, _ = synth.drum_track(bpm=120, bars=8, rate=rate)
        synth.write_wav(P(name), sig, rate=rate, channels=ch, bits=bits)
        rc, out, err = expect_ok(name, [P(name), "-o", P("o_" + name)])
        if rc == 0:
            rep = report_of(P("o_" + name))
            check(rep["input"]["sample_rate"] == rate and rep["input"]["channels"] == ch,
                  f"{name}: input rate and channels reported", str(rep["input"]))
            check(abs(rep["tempo_bpm"] - 120) < 2, f"{name}: tempo 120", str(rep["tempo_bpm"]))
    rc, out, err = expect_ok("mono MP3", [P("good.mp3"), "-o", P("o9")])

    # Output folder that cannot be written: a path through a regular file.
    expect_error("unwritable output", [P("good.wav"), "-o", P("good.wav") + "/sub"],
                 ["output folder"])

    # Demucs weights that are missing, not a model, or damaged.
    expect_error("missing model", [P("good.wav"), "--separator", "demucs", "--model", P("nope.onnx"),
                                   "-o", P("o12")], ["nope.onnx", "not found"])
    expect_error("PNG as model", [P("good.wav"), "--separator", "demucs", "--model", P("picture.mp3"),
                                  "-o", P("o13")], ["picture.mp3"])
    with open(P("broken.th"), "wb") as f:
        f.write(b"PK\x03\x04" + os.urandom(3000))
    expect_error("damaged checkpoint", [P("good.wav"), "--separator", "demucs", "--model", P("broken.th"),
                                        "-o", P("o14")], ["broken.th"])
    check(not os.path.exists(P("o14/report.json")), "bad model: no report.json")
    rc, _, err = run(["--shifts", "x", P("good.wav")])
    check(rc == 2 and "--shifts" in err, "bad --shifts: usage error", err)

    # Too long for the limit.
    expect_error("over --max-minutes", [P("good.wav"), "--max-minutes", "0.2", "-o", P("o10")],
                 ["good.wav", "long"])

    # Batch: one bad input does not stop the others; exit says one failed.
    rc, out, err = run([P("good.wav"), P("picture.mp3"), P("good.mp3"), "-o", P("batch")])
    check(rc == 1, "batch with a bad input: exit 1", f"rc {rc} {err}")
    check(os.path.exists(P("batch/good/report.json")) and os.path.exists(P("batch/good_2/report.json")),
          "batch: good inputs done in their own subfolders", str(os.listdir(P("batch"))))
    check("1 of 3 inputs failed" in err, "batch: failure count reported", err)

    if os.environ.get("D2M_QUICK"):
        print("20-minute song: skipped in the quick (sanitizer) run")
        return
    # A 20-minute stereo song works, and memory does not grow with the
    # song: the mix and the stems stream through temporary files, the
    # analysis reads the stem back block by block, and only the per-frame
    # features (about 1.1 MB a minute) stay. Measured against the same
    # music 4 minutes long, so the bound holds on any number of cores (the
    # separators' working memory depends on the threads, not the length;
    # HPSS's reaches its full size from 8 blocks, 160 s, on).
    # The files are made in another process: a forked child's peak RSS
    # counts the parent's pages.
    minutes = 20
    short_minutes = 4
    for name, length in (("short.wav", short_minutes), ("long.wav", minutes)):
        subprocess.run([sys.executable, "-c", (
            "import sys; sys.path.insert(0, %r); import synth, numpy as np; "
            "x, _ = synth.drum_track(bpm=120, bars=8); "
            "n = %d * 60 * 44100; x = np.tile(x, n // len(x) + 1)[:n]; "
            "synth.write_wav(%r, x, channels=2)") % (os.path.dirname(os.path.abspath(__file__)), length,
                                                     P(name))],
            check=True)
    growth_mb = 15 + 1.5 * (minutes - short_minutes)  # features, plus slack for the allocator
    short_mb, _ = peak_rss_mb(["--separator", "hpss", P("short.wav"), "-o", P("o11s")])
    peak_mb, _ = peak_rss_mb(["--separator", "hpss", P("long.wav"), "-o", P("o11")])
    print(f"HPSS: peak RSS {short_mb:.0f} MB for {short_minutes} minutes, {peak_mb:.0f} MB for {minutes}")
    check(peak_mb - short_mb < growth_mb,
          f"{minutes}-minute song, HPSS: peak RSS within {growth_mb:.0f} MB of a {short_minutes}-minute song's",
          f"{short_mb:.0f} MB, then {peak_mb:.0f} MB")
    with wave.open(P("o11/long_drums.wav")) as w:
        stem_frames = w.getnframes()
    check(stem_frames == minutes * 60 * 44100, f"{minutes}-minute song, HPSS: the whole drum stem written",
          f"{stem_frames} frames")
    # The same with Demucs (the tiny random-weight model, whose engine is
    # small, so the pipeline's own memory shows), every stem written.
    tiny = os.path.join(os.environ.get("D2M_SOURCE_DIR", "."), "..", "shared", "demucs", "tiny", "tiny.th")
    if not os.path.exists(tiny):
        print(f"{minutes}-minute song with Demucs: skipped, {tiny} is absent")
        return
    demucs = ["--model", tiny, "--threads", "2", "--stems", "all"]
    short_mb, _ = peak_rss_mb(demucs + [P("short.wav"), "-o", P("o12s")])
    peak_mb, _ = peak_rss_mb(demucs + [P("long.wav"), "-o", P("o12")])
    print(f"tiny Demucs, all stems: peak RSS {short_mb:.0f} MB for {short_minutes} minutes, "
          f"{peak_mb:.0f} MB for {minutes}")
    check(peak_mb - short_mb < growth_mb,
          f"{minutes}-minute song, tiny Demucs: peak RSS within {growth_mb:.0f} MB of a "
          f"{short_minutes}-minute song's",
          f"{short_mb:.0f} MB, then {peak_mb:.0f} MB")
    wavs = sorted(f for f in os.listdir(P("o12")) if f.endswith(".wav"))
    check(len(wavs) == 5, f"{minutes}-minute song, tiny Demucs: every stem written", str(wavs))


def peak_rss_mb(args):
    """The peak RSS of one drum2midi run, from wait4 (RUSAGE_CHILDREN would
    also count the process that wrote the file); checks that it succeeded."""
    proc = subprocess.Popen([BIN, "--progress=none", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    check(proc.returncode == 0, f"{' '.join(os.path.basename(a) for a in args)}: succeeds", err[-1500:])
    return usage.ru_maxrss / 1024, err


if __name__ == "__main__":
    sys.exit(main())
