#!/usr/bin/python3
"""Regenerate the classifier's training data and (optionally) its weights.
    /usr/bin/python3 tools/classifier/pipeline.py --work DIR [--jobs N]
        [--sets 1,2,...] [--limit N] [--no-demucs] [--train]
Steps, each skipped for outputs already in DIR (delete them to redo):
  1. build DIR/bin/{stem,fdump,gensyn} against build/libd2m.a (cmake build first)
  2. songs of tools/classifier/songs.tsv -> DIR/songs/sS_songI.wav + .truth.json
     (tools/render_song.py for FluidR3 rows, render.py for rows naming
     soundfonts, gensyn for set 7, whose loop is the stem itself)
  3. drum stems -> DIR/stems/SEP/sS_songI.stem (HPSS: bin/stem; Demucs:
     build/drum2midi --separator demucs, its drums WAV mixed to mono)
  4. onset features -> DIR/features/SEP/sS_songI.f (bin/fdump)
  5. with --train: train.py --work DIR --compare src/drums/transcribe.c
--limit N keeps the first N songs of every set (a quick end-to-end check).
"""
import argparse, os, shutil, subprocess, sys, wave
from concurrent.futures import ThreadPoolExecutor
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from train import manifest

PY = '/usr/bin/python3'
LIBS = 'sndfile libmpg123 soxr fftw3f libpng libcjson freetype2'


def sh(cmd, **kw):
    r = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode:
        raise RuntimeError(f'{" ".join(cmd)} failed:\n{r.stdout[-2000:]}')
    return r.stdout


def build(work):
    b = os.path.join(work, 'bin'); os.makedirs(b, exist_ok=True)
    lib = os.path.join(REPO, 'build', 'libd2m.a')
    if not os.path.exists(lib):
        sys.exit('build/libd2m.a missing: cmake -S . -B build && cmake --build build')
    libs = sh(['pkg-config', '--libs'] + LIBS.split()).split() + ['-lm', '-lpthread']
    for name in ('stem', 'fdump'):
        sh(['gcc', '-O2', '-I', 'include', '-I', 'src', f'tools/classifier/{name}.c', lib] + libs + ['-o', os.path.join(b, name)])
    sh(['gcc', '-O2', '-I', 'tests/unit', 'tools/classifier/gensyn.c', '-lm', '-o', os.path.join(b, 'gensyn')])
    return b


def wav_mono(path):
    w = wave.open(path); n = w.getnframes(); ch = w.getnchannels(); sw = w.getsampwidth(); raw = w.readframes(n)
    if sw == 3:
        a = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        x = a[:, 0] | (a[:, 1] << 8) | (a[:, 2] << 16); x = np.where(x >= 1 << 23, x - (1 << 24), x) / float(1 << 23)
    elif sw == 2:
        x = np.frombuffer(raw, dtype='<i2') / 32768.0
    else:
        raise RuntimeError(f'{path}: {sw}-byte samples')
    return x.reshape(-1, ch).mean(1).astype(np.float32)


def song(r, work, binp, demucs):
    name = r['name']; songs = os.path.join(work, 'songs'); wav = os.path.join(songs, name + '.wav')
    stems = {s: os.path.join(work, 'stems', s, name + '.stem') for s in r['separators']}
    if r['groove'] == 'synthetic':
        if not os.path.exists(stems['none']):
            sh([os.path.join(binp, 'gensyn'), str(r['seed']), os.path.join(songs, name)])
            shutil.move(os.path.join(songs, name + '.stem'), stems['none'])
    else:
        if not os.path.exists(wav):
            if r['drum_font'] is None:
                sh([PY, 'tools/render_song.py', r['groove'], str(r['seed']), wav, '--kit', str(r['kit']), '--quiet'])
            else:
                sh([PY, 'tools/classifier/render.py', r['groove'], str(r['seed']), wav, '--kit', str(r['kit']),
                    '--drum-font', r['drum_font'], '--acc-font', r['acc_font']])
        if 'hpss' in stems and not os.path.exists(stems['hpss']):
            sh([os.path.join(binp, 'stem'), wav, stems['hpss']])
        if 'demucs' in stems and demucs and not os.path.exists(stems['demucs']):
            od = os.path.join(work, 'demucs', name)
            sh([os.path.join(REPO, 'build', 'drum2midi'), wav, '-o', od, '--progress=none', '--separator', 'demucs'])
            wav_mono(os.path.join(od, name + '_drums.wav')).tofile(stems['demucs'])
    for s, st in stems.items():
        f = os.path.join(work, 'features', s, name + '.f')
        if os.path.exists(st) and not os.path.exists(f):
            sh([os.path.join(binp, 'fdump'), st, f])
    return name


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', required=True, help='folder for everything generated')
    ap.add_argument('--jobs', type=int, default=os.cpu_count() or 2)
    ap.add_argument('--sets', help='comma list of sets (default all)')
    ap.add_argument('--limit', type=int, help='first N songs of each set only')
    ap.add_argument('--no-demucs', action='store_true', help='skip the Demucs stems (needs scripts/fetch-model)')
    ap.add_argument('--train', action='store_true', help='fit and write DIR/model_block.c at the end')
    a = ap.parse_args()
    work = os.path.abspath(a.work)
    for d in ('songs', 'stems/hpss', 'stems/demucs', 'stems/none', 'features/hpss', 'features/demucs', 'features/none'):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    binp = build(work)
    rows = manifest()
    if a.sets:
        keep = {int(s) for s in a.sets.split(',')}; rows = [r for r in rows if r['set'] in keep]
    if a.limit is not None:
        rows = [r for r in rows if r['index'] < a.limit]
    # Demucs runs multi-threaded itself: those songs go through one at a time after the rest.
    with ThreadPoolExecutor(a.jobs) as ex:
        for n in ex.map(lambda r: song(r, work, binp, False), rows): print('done', n, flush=True)
    if not a.no_demucs:
        for r in rows:
            if 'demucs' in r['separators']: print('demucs', song(r, work, binp, True), flush=True)
    if a.train:
        cmd = [PY, 'tools/classifier/train.py', '--work', work, '--compare', 'src/drums/transcribe.c']
        if a.sets: cmd += ['--sets', a.sets]
        subprocess.run(cmd, cwd=REPO, check=True)


if __name__ == '__main__':
    main()
