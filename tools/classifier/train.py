#!/usr/bin/python3
"""Fit the per-instrument logistic regressions of src/drums/transcribe.c.

    /usr/bin/python3 tools/classifier/train.py --work DIR [--l2 1.0]
        [--sets 1,3,5,7] [--out DIR/model_block.c] [--compare src/drums/transcribe.c]

Reads DIR/songs/sS_songI.truth.json and DIR/features/SEP/sS_songI.f (written
by pipeline.py) for the songs of tools/classifier/songs.tsv. Trains on the
"train" rows (every separator listed for them: HPSS, Demucs, none for the
synthetic loops), reports P/R/F on the "test" rows (HPSS only), and writes the
model block (feature_mean ... crash_bias) to --out, ready to replace the text
between "static const double feature_mean[N_FEATURES]" and
"/* End of the fitted model. */" in src/drums/transcribe.c. --compare prints
how far the new numbers are from those in the given file.
Deterministic: Newton's method from zero weights, no random numbers.
"""
import argparse, os, re, sys
import numpy as np
import mir_eval  # python3-mir-eval (scripts/install-deps): maximum matching of onsets

HERE = os.path.dirname(os.path.abspath(__file__))
FR = 44100 / 256          # feature frames per second (hop 256)
WINDOW = 0.05             # an onset is an instrument's when one of its notes lies within 50 ms
CL = ['kick', 'snare', 'hihat', 'tom', 'cymb']
TRUTH_CLASSES = {'cymb': ('ride', 'crash')}
NAMES = ['kick', 'snare', 'hi-hat', 'tom', 'ride and crash cymbals']
GROUPS = [('rise re. before', 5), ('rise re. song', 5)] + [('decay', 3)] * 5 + \
         [('flux', 5), ('share', 5), ('centroid, strength', 2), ('neighbours', 6)]


def manifest(path=os.path.join(HERE, 'songs.tsv')):
    rows = []
    for line in open(path):
        if line.startswith('#') or not line.strip():
            continue
        s, i, role, groove, seed, kit, dfont, afont, seps = line.rstrip('\n').split('\t')
        rows.append(dict(set=int(s), index=int(i), role=role, groove=groove, seed=int(seed),
                         kit=None if kit == '-' else int(kit), drum_font=None if dfont == '-' else dfont,
                         acc_font=None if afont == '-' else afont, separators=seps.split(','),
                         name=f's{s}_song{i}'))
    return rows


def load_features(path):
    raw = open(path, 'rb').read()
    c, nf = np.frombuffer(raw[:8], dtype=np.int32)
    a = np.frombuffer(raw[8:], dtype=np.float64).reshape(c, nf + 1)
    return a[:, 0], a[:, 1:]


def load_truth(work, name):
    import json
    return json.load(open(os.path.join(work, 'songs', name + '.truth.json')))


def labels(truth, times):
    L = np.zeros((len(times), len(CL)), bool); refn = {}
    for j, c in enumerate(CL):
        ref = np.array(sorted(h['time_s'] for h in truth['hits'] if h['class'] in TRUTH_CLASSES.get(c, (c,))))
        refn[c] = len(ref)
        if len(ref) and len(times):
            for a, b in mir_eval.util.match_events(ref, times, WINDOW):
                L[b, j] = True
    return L, refn


def build(work, items):
    X = []; Y = []; R = {}; per = []
    for name, sep in items:
        fr, x = load_features(os.path.join(work, 'features', sep, name + '.f'))
        T = load_truth(work, name); L, refn = labels(T, fr / FR)
        X.append(x); Y.append(L); R[(name, sep)] = refn; per.append((name, sep, fr, x, T))
    return np.vstack(X), np.vstack(Y), R, per


def newton(Z, y, l2, iters=25):
    w = np.zeros(Z.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-Z @ w)); g = Z.T @ (p - y) + l2 * np.r_[w[:-1], 0]
        H = (Z * (p * (1 - p))[:, None]).T @ Z + l2 * np.eye(len(w)); w -= np.linalg.solve(H, g)
    return w


def fit_lr(X, y, l2):
    mu = X.mean(0); sd = X.std(0) + 1e-9
    return mu, sd, newton(np.hstack([(X - mu) / sd, np.ones((len(X), 1))]), y, l2)


def prob(m, X):
    mu, sd, w = m
    return 1 / (1 + np.exp(-(np.hstack([(X - mu) / sd, np.ones((len(X), 1))]) @ w)))


def prf(pred, y, R, c):
    tp = (pred & y).sum(); e = pred.sum(); rf = sum(r[c] for r in R.values())
    p = tp / max(e, 1); r = tp / max(rf, 1)
    return p, r, 2 * p * r / max(p + r, 1e-9)


def fmt(v, indent):
    lines = []; k = 0
    for _, cnt in GROUPS:
        lines.append(indent + ', '.join(f'{x:.4g}' for x in v[k:k + cnt]) + ','); k += cnt
    return '\n'.join(lines)


def block(models, ths, crash_w):
    mu, sd = models[0][0], models[0][1]
    out = ['static const double feature_mean[N_FEATURES] = {\n' + fmt(mu, '    ') + '\n};',
           'static const double feature_scale[N_FEATURES] = {\n' + fmt(sd, '    ') + '\n};',
           'static const double model_weight[N_CLASSES][N_FEATURES] = {\n' +
           '\n'.join(f'    {{/* {nm} */\n' + fmt(m[2][:-1], '     ') + '\n    },' for nm, m in zip(NAMES, models)) + '\n};',
           'static const double model_bias[N_CLASSES] = {' + ', '.join(f'{m[2][-1]:.4g}' for m in models) + '};',
           'static const double model_threshold[N_CLASSES] = {' + ', '.join(f'{t:.3g}' for t in ths) + '};',
           'static const double crash_weight[N_FEATURES] = {\n' + fmt(crash_w[:-1], '    ') + '\n};',
           f'static const double crash_bias = {crash_w[-1]:.4g};']
    return '\n'.join(out) + '\n'


def numbers(text):
    """Arrays of the model block in text, by name."""
    a = text.index('static const double feature_mean[N_FEATURES]')
    b = text.index('/* End of the fitted model. */') if '/* End of the fitted model. */' in text else len(text)
    out = {}
    for m in re.finditer(r'static const double (\w+)[^=]*=\s*(\{.*?\};|[^;]*;)', text[a:b], re.S):
        body = re.sub(r'/\*.*?\*/', '', m.group(2))
        out[m.group(1)] = np.array([float(v) for v in re.findall(r'[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?', body)])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', required=True)
    ap.add_argument('--l2', type=float, default=1.0)
    ap.add_argument('--sets', help='only these sets (comma list), e.g. for a quick check')
    ap.add_argument('--out', help='model block file (default WORK/model_block.c)')
    ap.add_argument('--compare', help='a transcribe.c to compare the new block with')
    a = ap.parse_args()
    rows = manifest()
    if a.sets:
        keep = {int(s) for s in a.sets.split(',')}; rows = [r for r in rows if r['set'] in keep]
    have = lambda n, s: os.path.exists(os.path.join(a.work, 'features', s, n + '.f'))
    tr = [(r['name'], s) for r in rows if r['role'] == 'train' for s in r['separators'] if have(r['name'], s)]
    te = [(r['name'], 'hpss') for r in rows if r['role'] == 'test' and have(r['name'], 'hpss')]
    missing = [(r['name'], s) for r in rows for s in r['separators'] if not have(r['name'], s)]
    if missing:
        print(f'warning: {len(missing)} feature files missing (e.g. {missing[0]}); fitting without them', file=sys.stderr)
    if not tr:
        sys.exit('no training features under ' + a.work)
    print(f'train: {len(tr)} song x separator dumps; test: {len(te)}')
    Xa, Ya, Ra, per = build(a.work, tr)
    if te: Xb, Yb, Rb, _ = build(a.work, te)
    models = []; ths = []
    for j, c in enumerate(CL):
        m = fit_lr(Xa, Ya[:, j].astype(float), a.l2); pa = prob(m, Xa)
        th = max(np.arange(0.1, 0.9, 0.025), key=lambda th: prf(pa > th, Ya[:, j], Ra, c)[2])
        line = f'{c:6s} th {th:.3f} train P/R/F ' + ' '.join(f'{v:.3f}' for v in prf(pa > th, Ya[:, j], Ra, c))
        if te: line += '  test ' + ' '.join(f'{v:.3f}' for v in prf(prob(m, Xb) > th, Yb[:, j], Rb, c))
        print(line); models.append(m); ths.append(th)
    # crash given a cymbal: the training onsets holding a ride or crash, same standardisation
    mu, sd = models[0][0], models[0][1]; Xc = []; Yc = []
    for name, sep, fr, x, T in per:
        t = fr / FR
        par = np.array(sorted(h['time_s'] for h in T['hits'] if h['class'] in ('ride', 'crash')))
        cr = np.array(sorted(h['time_s'] for h in T['hits'] if h['class'] == 'crash'))
        if not len(par) or not len(t): continue
        mc = set(b for _, b in mir_eval.util.match_events(cr, t, WINDOW)) if len(cr) else set()
        for _, b in mir_eval.util.match_events(par, t, WINDOW): Xc.append(x[b]); Yc.append(b in mc)
    Xc = np.array(Xc); Yc = np.array(Yc, float)
    cw = newton(np.hstack([(Xc - mu) / sd, np.ones((len(Xc), 1))]), Yc, a.l2)
    print('crash model on', len(Yc), 'cymbal onsets,', int(Yc.sum()), 'crashes')
    text = block(models, ths, cw)
    out = a.out or os.path.join(a.work, 'model_block.c')
    open(out, 'w').write(text); print('wrote', out)
    if a.compare:
        old = numbers(open(a.compare).read()); new = numbers(text)
        for k in old:
            if k in new and len(new[k]) == len(old[k]):
                d = np.abs(new[k] - old[k])
                print(f'{k:16s} max |diff| {d.max():.4g}  mean {d.mean():.4g}  (mean |old| {np.abs(old[k]).mean():.4g})')


if __name__ == '__main__':
    main()
