// The page's music code, free of the DOM: the same beat grid, quantizer and
// MIDI writer as the C library (src/drums/beats.c, src/drums/quantize.c,
// src/midi/smf.c), so changing the grid or the loop window re-writes the
// MIDI at once without asking the server; a Web Audio drum synth for the
// MIDI preview; and a reader for a slice of a PCM WAV fetched by range.

// Position of time t in beats: 0 at beats[0], linear between tracked beats,
// extended at both ends by the nearest interval (beats_position in C).
export function beatsPosition(beats, t) {
  const n = beats.length;
  if (n === 0) return t / 0.5;
  if (n === 1) return (t - beats[0]) / 0.5;
  if (t < beats[0]) {
    const p = beats[1] - beats[0];
    return p > 0 ? (t - beats[0]) / p : 0;
  }
  if (t >= beats[n - 1]) {
    const p = beats[n - 1] - beats[n - 2];
    return n - 1 + (p > 0 ? (t - beats[n - 1]) / p : 0);
  }
  let lo = 0, hi = n - 1; // beats[lo] <= t < beats[hi]
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (beats[mid] <= t) lo = mid; else hi = mid;
  }
  const p = beats[lo + 1] - beats[lo];
  return lo + (p > 0 ? (t - beats[lo]) / p : 0);
}

// The inverse: seconds at a beat position (beats_time in C).
export function beatsTime(beats, pos) {
  const n = beats.length;
  if (n < 2) return (n ? beats[0] : 0) + pos * 0.5;
  if (pos < 0) return beats[0] + pos * (beats[1] - beats[0]);
  if (!(pos < n - 1)) return beats[n - 1] + (pos - (n - 1)) * (beats[n - 1] - beats[n - 2]);
  const k = Math.floor(pos);
  return beats[k] + (pos - k) * (beats[k + 1] - beats[k]);
}

// C's llround / round: halves away from zero.
function roundAway(x) {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

// Hits (seconds) -> notes {tick, duration, note, velocity} on a grid of
// `grid` notes per bar (0 = off), from originBeat for lengthBeats beats.
// Same rules as quantize_hits: nearest step, one note per (tick, note) with
// the loudest velocity, a 1/32 note long unless the drum strikes sooner.
export function quantizeHits(hits, beats, originBeat, lengthBeats, grid, ppq) {
  const endTick = roundAway(lengthBeats * ppq);
  const step = grid ? 4 / grid : 0;
  let notes = [];
  for (const h of hits) {
    const p = beatsPosition(beats, h.time_s) - originBeat;
    const snapped = grid ? roundAway(p / step) * step : p;
    if (!(snapped >= 0 && snapped < lengthBeats)) continue;
    const tick = roundAway(snapped * ppq);
    if (tick >= endTick) continue;
    notes.push({ tick, note: h.note, velocity: Math.min(127, Math.max(1, h.velocity)), duration: 0 });
  }
  notes.sort((a, b) => a.tick - b.tick || a.note - b.note);
  const kept = [];
  for (const n of notes) {
    const last = kept[kept.length - 1];
    if (last && last.tick === n.tick && last.note === n.note) {
      last.velocity = Math.max(last.velocity, n.velocity);
    } else {
      kept.push(n);
    }
  }
  notes = kept;
  const next = new Map();
  for (let i = notes.length - 1; i >= 0; i--) {
    const n = notes[i];
    const stop = Math.min(n.tick + Math.floor(ppq / 8), next.has(n.note) ? next.get(n.note) : endTick);
    n.duration = stop - n.tick;
    next.set(n.note, n.tick);
  }
  return notes;
}

// A type-1 Standard MIDI File: conductor track (name, tempo, 4/4) and a
// "Drums" track on channel 10, note-offs before note-ons on a tick, the end
// of track exactly at endTick (smf_write_drums in C). Returns a Uint8Array.
export function writeSmf(notes, bpm, ppq, endTick, name) {
  const out = [];
  const be = (v, bytes) => { for (let i = bytes - 1; i >= 0; i--) out.push(Math.floor(v / 2 ** (8 * i)) & 0xff); };
  const vlq = (v) => {
    const groups = [];
    do { groups.push(v & 0x7f); v = Math.floor(v / 128); } while (v > 0 && groups.length < 4);
    for (let i = groups.length - 1; i > 0; i--) out.push(groups[i] | 0x80);
    out.push(groups[0]);
  };
  const text = (type, s) => {
    const bytes = new TextEncoder().encode(s);
    out.push(0, 0xff, type); vlq(bytes.length); for (const b of bytes) out.push(b);
  };
  const track = (body) => {
    out.push(0x4d, 0x54, 0x72, 0x6b); // MTrk
    const at = out.length; be(0, 4);
    body();
    const len = out.length - at - 4;
    for (let i = 0; i < 4; i++) out[at + i] = (len >>> (8 * (3 - i))) & 0xff;
  };
  out.push(0x4d, 0x54, 0x68, 0x64); be(6, 4); be(1, 2); be(2, 2); be(ppq, 2); // MThd
  track(() => {
    text(0x03, name || "");
    out.push(0, 0xff, 0x51, 0x03); be(roundAway(60e6 / bpm), 3);
    out.push(0, 0xff, 0x58, 0x04, 0x04, 0x02, 0x18, 0x08);
    vlq(endTick); out.push(0xff, 0x2f, 0x00);
  });
  const events = [];
  notes.forEach((n, i) => {
    const off = n.duration > endTick - n.tick ? endTick : n.tick + n.duration;
    events.push({ tick: n.tick, on: 1, note: n.note, velocity: n.velocity, order: i });
    events.push({ tick: off, on: 0, note: n.note, velocity: 64, order: i });
  });
  events.sort((a, b) => a.tick - b.tick || a.on - b.on || a.note - b.note || a.order - b.order);
  track(() => {
    text(0x03, "Drums");
    let now = 0;
    for (const e of events) {
      vlq(e.tick - now); now = e.tick;
      out.push(e.on ? 0x99 : 0x89, e.note, e.velocity);
    }
    vlq(endTick - now); out.push(0xff, 0x2f, 0x00);
  });
  return new Uint8Array(out);
}

// The header of a Standard MIDI File: {format, tracks, ppq} and the number of
// MTrk chunks actually present, or null when it is not one.
export function readSmfHeader(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const tag = (at) => String.fromCharCode(b[at], b[at + 1], b[at + 2], b[at + 3]);
  const u32 = (at) => ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
  if (b.length < 14 || tag(0) !== "MThd" || u32(4) !== 6) return null;
  const head = { format: (b[8] << 8) | b[9], tracks: (b[10] << 8) | b[11], ppq: (b[12] << 8) | b[13], chunks: 0, notes: 0 };
  let at = 14;
  while (at + 8 <= b.length) {
    const len = u32(at + 4);
    if (tag(at) === "MTrk") {
      head.chunks++;
      for (let i = at + 8; i + 2 < at + 8 + len && i + 2 < b.length; i++) if (b[i] === 0x99) head.notes++;
    }
    at += 8 + len;
  }
  return head;
}

// General MIDI drum notes the library writes, in the grid's row order.
export const DRUMS = [
  { note: 49, name: "Crash" },
  { note: 46, name: "Open hat" },
  { note: 42, name: "Closed hat" },
  { note: 45, name: "Tom" },
  { note: 38, name: "Snare" },
  { note: 36, name: "Kick" },
];

let noiseBuffer = null;
function noise(ctx) {
  if (!noiseBuffer || noiseBuffer.sampleRate !== ctx.sampleRate) {
    noiseBuffer = ctx.createBuffer(1, ctx.sampleRate, ctx.sampleRate);
    const d = noiseBuffer.getChannelData(0);
    let seed = 12345; // fixed, so every preview sounds the same
    for (let i = 0; i < d.length; i++) { seed = (seed * 1103515245 + 12345) & 0x7fffffff; d[i] = seed / 0x3fffffff - 1; }
  }
  const src = ctx.createBufferSource();
  src.buffer = noiseBuffer;
  return src;
}

// One drum strike at time t into dest: a small synthesized kit.
export function strike(ctx, dest, note, velocity, t) {
  const g = ctx.createGain();
  const v = (velocity / 127) ** 1.5;
  g.connect(dest);
  const env = (peak, decay) => {
    g.gain.setValueAtTime(0.0001, t);
    g.gain.exponentialRampToValueAtTime(peak * v + 0.0001, t + 0.002);
    g.gain.exponentialRampToValueAtTime(0.0001, t + decay);
  };
  if (note === 36 || note === 45) { // kick, tom: a falling sine
    const o = ctx.createOscillator();
    const f0 = note === 36 ? 150 : 220, f1 = note === 36 ? 48 : 110;
    o.frequency.setValueAtTime(f0, t);
    o.frequency.exponentialRampToValueAtTime(f1, t + 0.12);
    o.connect(g); env(note === 36 ? 1.0 : 0.7, note === 36 ? 0.45 : 0.35);
    o.start(t); o.stop(t + 0.5);
    return;
  }
  const n = noise(ctx);
  const f = ctx.createBiquadFilter();
  n.connect(f); f.connect(g);
  if (note === 38) { // snare: band of noise and a short tone
    f.type = "bandpass"; f.frequency.value = 1800; f.Q.value = 0.7; env(0.8, 0.22);
    const o = ctx.createOscillator(), og = ctx.createGain();
    o.frequency.value = 190; o.connect(og); og.connect(dest);
    og.gain.setValueAtTime(0.5 * v, t); og.gain.exponentialRampToValueAtTime(0.0001, t + 0.1);
    o.start(t); o.stop(t + 0.12);
  } else if (note === 42) { f.type = "highpass"; f.frequency.value = 7000; env(0.45, 0.06); }
  else if (note === 46) { f.type = "highpass"; f.frequency.value = 6000; env(0.4, 0.35); }
  else { f.type = "highpass"; f.frequency.value = 4000; env(0.5, 1.2); } // crash and anything else
  n.start(t, Math.random() * 0.5); n.stop(t + 1.3);
}

// Frames [first, first + count) of a PCM WAV served with Range support, as
// an AudioBuffer: reads the header, then only the bytes of the slice.
export async function fetchWavSlice(ctx, url, startS, endS) {
  const head = new Uint8Array(await (await fetch(url, { headers: { Range: "bytes=0-65535" } })).arrayBuffer());
  const dv = new DataView(head.buffer);
  const tag = (at) => String.fromCharCode(head[at], head[at + 1], head[at + 2], head[at + 3]);
  if (tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("not a WAV file");
  let at = 12, fmt = null, dataAt = -1;
  while (at + 8 <= head.length) {
    const id = tag(at), len = dv.getUint32(at + 4, true);
    if (id === "fmt ") {
      fmt = { tag: dv.getUint16(at + 8, true), channels: dv.getUint16(at + 10, true), rate: dv.getUint32(at + 12, true), bits: dv.getUint16(at + 22, true) };
      if (fmt.tag === 0xfffe && len >= 26) fmt.tag = dv.getUint16(at + 32, true); // WAVE_FORMAT_EXTENSIBLE's sub-format
    }
    if (id === "data") { dataAt = at + 8; break; }
    at += 8 + len + (len & 1);
  }
  if (!fmt || dataAt < 0) throw new Error("no audio in the WAV header");
  const isFloat = fmt.tag === 3;
  const bps = fmt.bits / 8, frameBytes = bps * fmt.channels;
  const first = Math.max(0, Math.floor(startS * fmt.rate)), count = Math.max(1, Math.round((endS - startS) * fmt.rate));
  const from = dataAt + first * frameBytes, to = from + count * frameBytes - 1;
  const body = await (await fetch(url, { headers: { Range: `bytes=${from}-${to}` } })).arrayBuffer();
  const bytes = new Uint8Array(body), have = Math.floor(bytes.length / frameBytes);
  const buf = ctx.createBuffer(fmt.channels, count, fmt.rate);
  const bv = new DataView(body);
  for (let c = 0; c < fmt.channels; c++) {
    const out = buf.getChannelData(c);
    for (let i = 0; i < have; i++) {
      const o = i * frameBytes + c * bps;
      let x;
      if (isFloat) x = bv.getFloat32(o, true);
      else if (bps === 2) x = bv.getInt16(o, true) / 32768;
      else if (bps === 3) x = (((bytes[o + 2] << 24) | (bytes[o + 1] << 16) | (bytes[o] << 8)) >> 8) / 8388608;
      else if (bps === 4) x = bv.getInt32(o, true) / 2147483648;
      else x = (bytes[o] - 128) / 128;
      out[i] = x;
    }
  }
  return buf;
}
