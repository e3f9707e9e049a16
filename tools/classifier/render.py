#!/usr/bin/python3
"""Render one training song: drums and accompaniment from chosen soundfonts.
    /usr/bin/python3 tools/classifier/render.py GROOVE SEED OUT.wav [--kit P]
        [--drum-font F] [--acc-font F]
Like tools/render_song.py (same arrangement from tools/songlib.py), but the
drum track and the bass + chords are rendered separately with FluidSynth,
each from its own soundfont, and summed. Writes OUT.wav and OUT.truth.json.
Fonts are paths or file names looked up in /usr/share/sounds/sf2, sf3 and
/usr/lib/lv2/avldrums.lv2."""
import argparse, os, subprocess, sys, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import numpy as np, mido, songlib
from songlib import arrange, find_groove, write_midi, song_truth, normalise, write_wav, save_json, SAMPLE_RATE

FONT_DIRS = ('/usr/share/sounds/sf2', '/usr/share/sounds/sf3', '/usr/lib/lv2/avldrums.lv2')


def font_path(f):
    if f is None or os.path.exists(f): return f or songlib.SF2
    for d in FONT_DIRS:
        if os.path.exists(os.path.join(d, f)): return os.path.join(d, f)
    sys.exit(f'soundfont {f} not found (see tools/classifier/README.md for its Debian package)')


def render(mid_path, font):
    with tempfile.TemporaryDirectory() as td:
        raw = os.path.join(td, 'o.raw')
        cmd = ['fluidsynth', '-ni', '-q', '-g', '0.6', '-r', str(SAMPLE_RATE), '-T', 'raw', '-O', 'float', '-F', raw]
        subprocess.run(cmd + [font, mid_path], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return np.fromfile(raw, dtype='<f4').reshape(-1, 2)


def split(mid_path, out_drums, out_acc):
    m = mido.MidiFile(mid_path)
    for path, keep in ((out_drums, {'Drums'}), (out_acc, {'Bass', 'Chords'})):
        n = mido.MidiFile(type=1, ticks_per_beat=m.ticks_per_beat); n.tracks.append(m.tracks[0])
        for tr in m.tracks[1:]:
            if next((x.name for x in tr if x.type == 'track_name'), '') in keep: n.tracks.append(tr)
        n.save(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('groove'); ap.add_argument('seed', type=int); ap.add_argument('out')
    ap.add_argument('--kit', type=int, default=0, help='GM drum-kit program (bank 128)')
    ap.add_argument('--drum-font'); ap.add_argument('--acc-font')
    a = ap.parse_args()
    dfont, afont = font_path(a.drum_font), font_path(a.acc_font)
    song = arrange(find_groove(a.groove), a.seed, kit=a.kit)
    truth = song_truth(song)
    with tempfile.TemporaryDirectory() as td:
        mp = write_midi(song, os.path.join(td, 's.mid')); dp = os.path.join(td, 'd.mid'); acp = os.path.join(td, 'a.mid')
        split(mp, dp, acp)
        xd = render(dp, dfont); xa = render(acp, afont)
    n = int(round(song.n_bars * song.bar_s * SAMPLE_RATE))
    x = np.zeros((n, 2))
    for y in (xd, xa):
        k = min(n, len(y)); x[:k] += y[:k]
    nf = int(0.4 * SAMPLE_RATE); x[n - nf:] *= np.linspace(1, 0, nf)[:, None] ** 2
    write_wav(a.out, normalise(x, -1.0))
    truth['duration_s'] = round(n / SAMPLE_RATE, 6)
    truth['song']['drum_font'] = os.path.basename(dfont); truth['song']['acc_font'] = os.path.basename(afont)
    save_json(os.path.splitext(a.out)[0] + '.truth.json', truth)


if __name__ == '__main__':
    main()
