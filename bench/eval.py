#!/usr/bin/python3
"""Benchmark drum2midi on rendered songs with known truth.

    /usr/bin/python3 bench/eval.py [--bin build/drum2midi] [--n 12]
        [--format wav|mp3|mixed] [--songs-dir build/eval-songs]
        [--out-dir build/eval-out] [--jobs 1] [--verbose] [--json FILE]
        [--min-velocity 0] [--render-only] [-- extra CLI args]

Renders a deterministic set of songs (tools/render_song.py: GMD grooves from
different drummers and styles at 80-160 bpm with >= 1.5 kicks a bar, kits
Standard/Room/Power in turn; cached in --songs-dir keyed by groove, seed, kit and renderer version),
runs `BIN SONG -o OUTDIR --json --progress=none [extra args]` on each, reads
OUTDIR/report.json and prints markdown tables:

- hits per class (kick, snare, hihat = 42/44/46, tom, cymbal = crash + ride):
  precision / recall / F with a 50 ms window, one-to-one matching
  (mir_eval.util.match_events), counts summed over songs (micro average);
  "any" = all drum onsets, simultaneous hits (< 30 ms apart) merged first.
  --min-velocity V ignores truth hits quieter than V (not misses; estimates
  matching them are not false positives).
- tempo: Acc1 (within 4 % of the truth bpm), Acc2 (also x2, /2, x3, /3).
- beats / downbeats: mean F-measure (mir_eval.beat.f_measure, 70 ms), and the
  share of songs with downbeat F >= 0.8.
- loop: share of songs whose loop starts within 70 ms of a true downbeat and
  lies inside one full-groove section (70 ms slack at both ends).
A song whose run fails counts as all misses and wrong in every column.
Exit status 0 whatever the scores (2 for usage errors, e.g. no binary).
"""

import argparse
import collections
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(ROOT, "tools"))

import numpy as np  # noqa: E402

import songlib  # noqa: E402
from render_song import render_song, truth_path_for  # noqa: E402

HIT_WINDOW = 0.05
BEAT_WINDOW = 0.07
LOOP_TOL = 0.07
TEMPO_TOL = 0.04
DOWNBEAT_OK_F = 0.8
MIN_KICKS_PER_BAR = 1.5


def kicks_per_bar(row, n_bars=16):
    """Mean number of kicks per bar over the groove's first n_bars usable bars."""
    bars = songlib.load_groove_bars(os.path.join(songlib.GROOVES_DIR, row["midi_filename"]))[:n_bars]
    return sum(1 for b in bars for h in b if h[1] == 36) / max(1, len(bars))


def eval_set(n, fmt="wav", bpm_min=80, bpm_max=160, set_seed=2024):
    """Deterministic list of songs: dicts row, seed, kit, fmt, key.

    Usable grooves: beat, 4/4, >= 20 s, bpm_min..bpm_max, at least
    MIN_KICKS_PER_BAR kicks a bar (kick-less jazz takes cannot be scored on
    kicks or loop placement). Round robin over drummers (sorted); each takes,
    from its own seeded shuffle of usable grooves, the one whose top-level
    style has been picked least so far. Kits cycle Standard, Room, Power; with fmt "mixed" every
    4th song is an MP3."""
    cands = songlib.candidate_grooves(min_duration=20.0, bpm_min=bpm_min, bpm_max=bpm_max)
    by_drummer = collections.defaultdict(list)
    for r in sorted(cands, key=lambda r: r["id"]):
        by_drummer[r["drummer"]].append(r)
    rng = random.Random(set_seed)
    for d in sorted(by_drummer):
        rng.shuffle(by_drummer[d])
    drummers = sorted(by_drummer, key=lambda d: int(d.replace("drummer", "") or 0))
    for d in drummers:  # grooves with (almost) no kick cannot be scored on kicks or loops
        by_drummer[d] = [r for r in by_drummer[d] if kicks_per_bar(r) >= MIN_KICKS_PER_BAR]
    style_count = collections.Counter()
    picked = []
    while len(picked) < n and any(by_drummer.values()):
        for d in drummers:
            if len(picked) >= n:
                break
            if not by_drummer[d]:
                continue
            lst = by_drummer[d]
            best = min(range(len(lst)), key=lambda i: (style_count[lst[i]["style"].split("/")[0]], i))
            r = lst.pop(best)
            style_count[r["style"].split("/")[0]] += 1
            picked.append(r)
    songs = []
    for i, r in enumerate(picked):
        kit = songlib.KIT_PROGRAMS[i % len(songlib.KIT_PROGRAMS)]
        f = ("mp3" if i % 4 == 3 else "wav") if fmt == "mixed" else fmt
        seed = 100 + i
        key = "%s_s%d_k%d_v%d" % (r["id"].replace("/", "-"), seed, kit, songlib.RENDER_VERSION)
        songs.append({"row": r, "seed": seed, "kit": kit, "fmt": f, "key": key})
    return songs


def ensure_rendered(song, songs_dir):
    path = os.path.join(songs_dir, song["key"] + "." + song["fmt"])
    tpath = truth_path_for(path)
    if not (os.path.isfile(path) and os.path.isfile(tpath)):
        row = dict(song["row"], path=os.path.join(songlib.GROOVES_DIR, song["row"]["midi_filename"]))
        render_song(row, song["seed"], path, kit=song["kit"])
    return path, songlib.load_json(tpath)


def run_cli(binary, audio, out_dir, extra, timeout):
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    cmd = [binary, audio, "-o", out_dir, "--json", "--progress=none"] + list(extra)
    t0 = time.time()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        rc, err = p.returncode, p.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        rc, err = "timeout", "timed out after %ss" % timeout
    wall = time.time() - t0
    rep_path = os.path.join(out_dir, "report.json")
    report = None
    if rc == 0 and os.path.isfile(rep_path):
        try:
            report = songlib.load_json(rep_path)
        except ValueError as e:
            err += "\nreport.json unreadable: %s" % e
    return {"rc": rc, "stderr": err.strip()[-400:], "wall_s": wall, "report": report,
            "cmd": cmd}


def tempo_ok(est, ref, factors=(1.0,)):
    if not est or est <= 0:
        return False
    return any(abs(est - ref * f) <= TEMPO_TOL * ref * f for f in factors)


def loop_ok(report, truth):
    loop = (report or {}).get("loop") or {}
    s, e = loop.get("start_s"), loop.get("end_s")
    if s is None or e is None:
        return False
    db = np.array(truth["downbeats_s"])
    if len(db) == 0 or np.min(np.abs(db - s)) > LOOP_TOL:
        return False
    return any(a - LOOP_TOL <= s and e <= b + LOOP_TOL for a, b in truth["groove_sections_s"])


def score_song(truth, report, min_velocity=0):
    """Everything eval prints for one song; report None = failed run."""
    import mir_eval.beat
    hits = (report or {}).get("hits") or []
    counts = songlib.score_hits(truth, hits, HIT_WINDOW, min_velocity)
    if report is None:  # a failed run misses everything
        counts = {k: (0, nref, 0) for k, (_tp, nref, _ne) in counts.items()}
    est_bpm = (report or {}).get("tempo_bpm") or 0.0
    ref_bpm = truth["bpm"]

    def beat_f(key):
        est = np.array((report or {}).get(key) or [], dtype=float)
        ref = np.array(truth[key], dtype=float)
        if len(est) == 0 or len(ref) == 0:
            return 0.0
        return float(mir_eval.beat.f_measure(ref, np.sort(est), BEAT_WINDOW))

    return {
        "counts": counts,
        "ref_bpm": ref_bpm,
        "est_bpm": est_bpm,
        "acc1": tempo_ok(est_bpm, ref_bpm),
        "acc2": tempo_ok(est_bpm, ref_bpm, (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)),
        "beat_f": beat_f("beats_s"),
        "downbeat_f": beat_f("downbeats_s"),
        "loop_ok": loop_ok(report, truth),
        "loop": (report or {}).get("loop"),
        "timings": (report or {}).get("timings_s") or {},
    }


def fmt_row(cells):
    return "| " + " | ".join(str(c) for c in cells) + " |"


def print_tables(results, verbose=False):
    ok = [r for r in results if r["run"]["rc"] == 0 and r["run"]["report"] is not None]
    n = len(results)
    print("## drum2midi eval: %d songs (%d ran OK)\n" % (n, len(ok)))
    tot = collections.defaultdict(lambda: [0, 0, 0])
    for r in results:
        for k, (tp, nr, ne) in r["score"]["counts"].items():
            tot[k][0] += tp
            tot[k][1] += nr
            tot[k][2] += ne
    print("### Hits (%d ms window, micro average over songs)\n" % int(HIT_WINDOW * 1000))
    print(fmt_row(["class", "P", "R", "F", "TP", "truth", "detected"]))
    print(fmt_row(["---"] * 7))
    for k in list(songlib.EVAL_CLASSES) + ["any"]:
        tp, nr, ne = tot[k]
        p, rr, f = songlib.prf(tp, nr, ne)
        print(fmt_row([k, "%.3f" % p, "%.3f" % rr, "**%.3f**" % f, tp, nr, ne]))
    print()
    mean = lambda xs: (sum(xs) / len(xs)) if xs else 0.0
    print("### Rhythm and loop\n")
    print(fmt_row(["metric", "value"]))
    print(fmt_row(["---", "---"]))
    print(fmt_row(["tempo Acc1 (4 %)", "%.3f" % mean([r["score"]["acc1"] for r in results])]))
    print(fmt_row(["tempo Acc2 (x2, /2, x3, /3)", "%.3f" % mean([r["score"]["acc2"] for r in results])]))
    print(fmt_row(["beat F (70 ms), mean", "%.3f" % mean([r["score"]["beat_f"] for r in results])]))
    print(fmt_row(["downbeat F (70 ms), mean",
                   "%.3f" % mean([r["score"]["downbeat_f"] for r in results])]))
    print(fmt_row(["songs with downbeat F >= %.1f" % DOWNBEAT_OK_F,
                   "%.3f" % mean([r["score"]["downbeat_f"] >= DOWNBEAT_OK_F for r in results])]))
    print(fmt_row(["loop on a downbeat inside a groove section",
                   "%.3f" % mean([r["score"]["loop_ok"] for r in results])]))
    walls = [r["run"]["wall_s"] for r in results]
    print(fmt_row(["wall time per song, mean / max (s)", "%.1f / %.1f" % (mean(walls), max(walls or [0]))]))
    tkeys = sorted({k for r in ok for k in r["score"]["timings"]})
    for k in tkeys:
        vals = [r["score"]["timings"][k] for r in ok if isinstance(r["score"]["timings"].get(k), (int, float))]
        if vals:
            print(fmt_row(["timings_s.%s, mean" % k, "%.2f" % mean(vals)]))
    print()
    failed = [r for r in results if r not in ok]
    if failed:
        print("### Failed runs\n")
        for r in failed:
            print("- %s: rc=%s %s" % (r["song"]["key"], r["run"]["rc"],
                                      r["run"]["stderr"].replace("\n", " / ")[-300:]))
        print()
    if verbose:
        print("### Per song\n")
        hdr = ["song", "style", "kit", "fmt", "bpm", "est bpm", "kick F", "snare F", "hihat F",
               "tom F", "cym F", "any F", "beat F", "db F", "loop", "loop ok", "wall s"]
        print(fmt_row(hdr))
        print(fmt_row(["---"] * len(hdr)))
        for r in results:
            s, c = r["score"], r["score"]["counts"]
            fs = ["%.2f" % songlib.prf(*c[k])[2] if c[k][1] else "-"
                  for k in list(songlib.EVAL_CLASSES) + ["any"]]
            loop = s["loop"] or {}
            loop_txt = ("%.2f-%.2f" % (loop.get("start_s", 0), loop.get("end_s", 0))) if loop else "-"
            print(fmt_row([r["song"]["row"]["id"], r["song"]["row"]["style"],
                           songlib.KITS.get(r["song"]["kit"]), r["song"]["fmt"],
                           "%g" % s["ref_bpm"], "%.1f" % s["est_bpm"]] + fs +
                          ["%.2f" % s["beat_f"], "%.2f" % s["downbeat_f"], loop_txt,
                           "yes" if s["loop_ok"] else "no", "%.1f" % r["run"]["wall_s"]]))
        print()


def main(argv=None):
    ap = argparse.ArgumentParser(description="drum2midi benchmark on rendered songs",
                                 epilog="Arguments after -- go to the CLI.")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "drum2midi"))
    ap.add_argument("--n", type=int, default=12, help="number of songs (default 12)")
    ap.add_argument("--format", choices=("wav", "mp3", "mixed"), default="wav")
    ap.add_argument("--songs-dir", default=os.path.join(ROOT, "build", "eval-songs"))
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "build", "eval-out"))
    ap.add_argument("--jobs", type=int, default=1, help="songs run in parallel")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--min-velocity", type=int, default=0)
    ap.add_argument("--verbose", "-v", action="store_true", help="per-song rows")
    ap.add_argument("--json", help="also write all results to this JSON file")
    ap.add_argument("--render-only", action="store_true", help="render the set and stop")
    ap.add_argument("--set-seed", type=int, default=2024,
                    help="which songs (default 2024, the set the README reports; "
                         "tune on another seed, never on the reported set)")
    argv = sys.argv[1:] if argv is None else argv
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    a = ap.parse_args(argv)

    missing = songlib.have_tools()
    if missing:
        print("eval: missing %s" % ", ".join(missing), file=sys.stderr)
        return 2
    songs = eval_set(a.n, a.format, set_seed=a.set_seed)
    os.makedirs(a.songs_dir, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        rendered = list(ex.map(lambda s: ensure_rendered(s, a.songs_dir), songs))
    if a.render_only:
        for s, (path, truth) in zip(songs, rendered):
            print("%s  %s %s %g bpm %.1f s" % (path, s["row"]["id"], s["row"]["style"],
                                               truth["bpm"], truth["duration_s"]))
        return 0
    if not (os.path.isfile(a.bin) and os.access(a.bin, os.X_OK)):
        print("eval: no executable at %s (build it, or pass --bin)" % a.bin, file=sys.stderr)
        return 2

    def one(i):
        s, (path, truth) = songs[i], rendered[i]
        run = run_cli(a.bin, path, os.path.join(a.out_dir, s["key"]), extra, a.timeout)
        return {"song": s, "audio": path, "truth": truth, "run": run,
                "score": score_song(truth, run["report"], a.min_velocity)}

    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as ex:
        results = list(ex.map(one, range(len(songs))))
    print_tables(results, a.verbose)
    if a.json:
        slim = [{"song": r["song"]["key"], "groove": r["song"]["row"]["id"],
                 "style": r["song"]["row"]["style"], "kit": r["song"]["kit"],
                 "format": r["song"]["fmt"], "audio": r["audio"], "rc": r["run"]["rc"],
                 "wall_s": r["run"]["wall_s"],
                 "score": {k: v for k, v in r["score"].items()}} for r in results]
        songlib.save_json(a.json, slim)
    return 0


if __name__ == "__main__":
    sys.exit(main())
