"""Synthetic drum tracks for tests: numpy-made kick, snare and hi-hat on a
known grid, written as WAV (16/24-bit, any rate and channel count) with the
standard library's wave module. Deterministic (seeded)."""
import wave

import numpy as np


def drum_track(bpm=120.0, bars=8, rate=44100, seed=1, pattern="rock", lead_in_s=0.0):
    """Mono float signal and the truth: list of (time_s, gm_note)."""
    rng = np.random.default_rng(seed)
    beat = 60.0 / bpm
    n = int(round((lead_in_s + bars * 4 * beat + 1.0) * rate))
    x = np.zeros(n)
    hits = []

    def add(sig, t):
        i = int(round(t * rate))
        end = min(n, i + len(sig))
        x[i:end] += sig[: end - i]

    t_k = np.arange(int(0.35 * rate)) / rate
    kick = np.sin(2 * np.pi * (50 * t_k + 60 * (1 - np.exp(-t_k * 30)) / 30)) * np.exp(-t_k * 12)
    kick[: int(0.002 * rate)] += rng.standard_normal(int(0.002 * rate)) * 0.5
    t_s = np.arange(int(0.25 * rate)) / rate
    snare = (rng.standard_normal(len(t_s)) * 0.6 + np.sin(2 * np.pi * 190 * t_s)) * np.exp(-t_s * 22)
    t_h = np.arange(int(0.06 * rate)) / rate
    noise = rng.standard_normal(len(t_h))
    hat = np.diff(np.diff(noise, prepend=0), prepend=0) * np.exp(-t_h * 70) * 0.25
    for bar in range(bars):
        for step in range(8):  # eighth notes
            t = lead_in_s + (bar * 4 + step / 2) * beat
            add(hat * (0.8 if step % 2 else 1.0), t)
            hits.append((t, 42))
            if pattern == "rock" and step in (0, 4, 5):
                add(kick, t)
                hits.append((t, 36))
            if step in (2, 6):
                add(snare * 0.8, t)
                hits.append((t, 38))
    x /= np.max(np.abs(x)) * 1.12
    return x, sorted(hits)


def write_wav(path, x, rate=44100, channels=1, bits=16):
    """x: mono float in [-1, 1]; duplicated to `channels`."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    frames = np.repeat(x[:, None], channels, axis=1)
    if bits == 16:
        data = (frames * 32767).astype("<i2").tobytes()
    elif bits == 24:
        ints = (frames * 8388607).astype("<i4").reshape(-1)
        b = ints.view(np.uint8).reshape(-1, 4)[:, :3]
        data = b.tobytes()
    else:
        raise ValueError("bits must be 16 or 24")
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(bits // 8)
        w.setframerate(rate)
        w.writeframes(data)


def resample_linear(x, rate_in, rate_out):
    n_out = int(len(x) * rate_out / rate_in)
    return np.interp(np.arange(n_out) * rate_in / rate_out, np.arange(len(x)), x)
