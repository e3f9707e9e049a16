// drum2midi's page: upload with live progress (Server-Sent Events), the
// input's player and spectrum analyser, and the results: tempo (×2/÷2 re-run
// the analysis on the kept drum stem), the song overview where the loop can
// be moved, the loop's drum grid, MIDI preview A/B against the loop audio,
// instant re-quantization, downloads and spectrograms. No framework; the
// music code lives in drums.js.
import {
  beatsPosition, beatsTime, quantizeHits, writeSmf, readSmfHeader, DRUMS, strike, fetchWavSlice,
} from "./drums.js";

const $ = (id) => document.getElementById(id);
const STAGES = [
  ["upload", "Upload"], ["queued", "Queue"], ["decode", "Decode"], ["separate", "Separate drums"],
  ["tempo", "Tempo"], ["loop", "Loop"], ["transcribe", "Hits"], ["write", "Files"], ["overview", "Overview"],
];
const STAGE_LABEL = Object.fromEntries(STAGES);

const state = {
  health: null,
  jobId: null,
  events: null,
  xhr: null,
  report: null,
  overview: null,
  loopBar: 1,      // 1-based index into downbeats_s where the loop starts
  bars: 4,
  grid: 16,
  notes: [],
  blobUrls: [],
  loopAudio: { key: "", buffer: null },
  ctx: null,
};

// ------------------------------------------------------------ utilities

function fmtTime(s) {
  if (!isFinite(s) || s < 0) s = 0;
  const m = Math.floor(s / 60), r = Math.floor(s % 60);
  return `${m}:${String(r).padStart(2, "0")}`;
}

function showError(msg) {
  const e = $("error");
  e.textContent = msg;
  e.hidden = !msg;
}

async function api(path, options = {}) {
  const res = await fetch(path, options);
  let body = null;
  try { body = await res.json(); } catch { body = null; }
  if (!res.ok) throw new Error((body && body.error) || `${res.status} ${res.statusText}`);
  return body;
}

function audioContext() {
  if (!state.ctx) state.ctx = new (window.AudioContext || window.webkitAudioContext)();
  if (state.ctx.state === "suspended") state.ctx.resume();
  return state.ctx;
}

// Canvas sized to its CSS box at the screen's pixel density.
function fitCanvas(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(canvas.clientWidth * dpr)), h = Math.max(1, Math.round(canvas.clientHeight * dpr));
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  return { g, w: canvas.clientWidth, h: canvas.clientHeight };
}

// ------------------------------------------------------------ the input

const audioEl = $("audio");
let analyser = null, mediaSource = null, analyserFrame = 0;

function setInput(src, name) {
  audioEl.pause();
  audioEl.src = src;
  $("song-name").textContent = name ? `· ${name}` : "";
  $("input").hidden = false;
  updatePlayButton();
}

function updatePlayButton() {
  const playing = !audioEl.paused;
  $("play").textContent = playing ? "❚❚" : "▶";
  $("play").setAttribute("aria-label", playing ? "Pause the input" : "Play the input");
}

$("play").addEventListener("click", async () => {
  if (!audioEl.src) return;
  if (!audioEl.paused) { audioEl.pause(); return; }
  const ctx = audioContext();
  if (!mediaSource) {
    mediaSource = ctx.createMediaElementSource(audioEl);
    analyser = ctx.createAnalyser();
    analyser.fftSize = 4096;
    analyser.smoothingTimeConstant = 0.75;
    mediaSource.connect(analyser);
    analyser.connect(ctx.destination);
  }
  try { await audioEl.play(); } catch (e) { showError(`Cannot play the input: ${e.message}`); }
});
audioEl.addEventListener("play", () => { updatePlayButton(); drawAnalyser(); });
audioEl.addEventListener("pause", updatePlayButton);
audioEl.addEventListener("ended", updatePlayButton);
audioEl.addEventListener("timeupdate", () => {
  $("time").textContent = `${fmtTime(audioEl.currentTime)} / ${fmtTime(audioEl.duration)}`;
  if (isFinite(audioEl.duration) && audioEl.duration > 0) $("seek").value = Math.round(1000 * audioEl.currentTime / audioEl.duration);
  drawOverview();
});
audioEl.addEventListener("loadedmetadata", () => { $("time").textContent = `0:00 / ${fmtTime(audioEl.duration)}`; });
$("seek").addEventListener("input", () => {
  if (isFinite(audioEl.duration)) audioEl.currentTime = $("seek").value / 1000 * audioEl.duration;
});

// Log-frequency bars of the analyser, 30 Hz to 16 kHz, while the input plays.
function drawAnalyser() {
  cancelAnimationFrame(analyserFrame);
  const canvas = $("analyser");
  const data = analyser ? new Uint8Array(analyser.frequencyBinCount) : null;
  const frame = () => {
    const { g, w, h } = fitCanvas(canvas);
    g.clearRect(0, 0, w, h);
    if (analyser) {
      analyser.getByteFrequencyData(data);
      const n = Math.max(24, Math.floor(w / 7)), rate = state.ctx.sampleRate;
      const lo = Math.log(30), hi = Math.log(16000);
      for (let i = 0; i < n; i++) {
        const f0 = Math.exp(lo + (hi - lo) * i / n), f1 = Math.exp(lo + (hi - lo) * (i + 1) / n);
        const b0 = Math.floor(f0 / rate * 2 * data.length), b1 = Math.max(b0 + 1, Math.floor(f1 / rate * 2 * data.length));
        let v = 0;
        for (let b = b0; b < b1 && b < data.length; b++) v = Math.max(v, data[b]);
        const bh = (v / 255) * (h - 4);
        const x = (i / n) * w;
        g.fillStyle = `hsl(${40 - 40 * (i / n) + 190 * (i / n)}, 85%, ${45 + 20 * v / 255}%)`;
        g.fillRect(x + 1, h - bh, w / n - 2, bh);
      }
    }
    if (!audioEl.paused) analyserFrame = requestAnimationFrame(frame);
  };
  frame();
}

// ------------------------------------------------------------ upload and progress

function resetForNewSong() {
  stopPreview();
  if (state.events) state.events.close();
  state.events = null;
  state.report = null;
  state.overview = null;
  state.loopAudio = { key: "", buffer: null };
  $("result").hidden = true;
  showError("");
}

function chooseFile(file) {
  if (!file) return;
  const limit = state.health ? state.health.max_upload_mb : 200;
  if (file.size > limit * 1024 * 1024) {
    showError(`${file.name} is ${(file.size / 1048576).toFixed(0)} MB; this server takes up to ${limit} MB.`);
    return;
  }
  resetForNewSong();
  setInput(URL.createObjectURL(file), file.name);
  upload(file);
}

function upload(file) {
  const form = new FormData();
  form.append("quantize", $("quantize").value);
  form.append("bars", $("bars").value);
  form.append("separator", $("separator").value);
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  state.xhr = xhr;
  showProgress({ state: "uploading", stage: "upload", stage_progress: 0, progress: 0 });
  xhr.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) showProgress({ state: "uploading", stage: "upload", stage_progress: e.loaded / e.total, progress: 0 });
  });
  xhr.addEventListener("load", () => {
    state.xhr = null;
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch { body = null; }
    if (xhr.status !== 201 || !body) {
      $("progress").hidden = true;
      showError(`Upload refused: ${(body && body.error) || xhr.status}`);
      return;
    }
    openJob(body.id, false);
  });
  xhr.addEventListener("error", () => { state.xhr = null; $("progress").hidden = true; showError("The upload failed (network error)."); });
  xhr.open("POST", "/api/jobs");
  xhr.send(form);
}

function showProgress(st) {
  $("progress").hidden = false;
  const overall = st.state === "done" ? 1 : st.progress || 0;
  const pct = Math.round(overall * 100);
  $("bar-fill").style.width = `${pct}%`;
  $("bar").setAttribute("aria-valuenow", String(pct));
  const stage = st.stage || "";
  let text;
  if (st.state === "uploading") text = `Uploading… ${Math.round((st.stage_progress || 0) * 100)}%`;
  else if (st.state === "queued") text = st.queue_position > 1
    ? `Waiting: ${st.queue_position - 1} song${st.queue_position > 2 ? "s" : ""} ahead in the queue`
    : "Waiting: next in the queue";
  else if (st.state === "running") {
    text = `${STAGE_LABEL[stage] || stage} ${Math.round((st.stage_progress || 0) * 100)}% · overall ${pct}%`;
    if (st.eta_s != null) text += ` · about ${st.eta_s < 60 ? `${Math.ceil(st.eta_s)} s` : `${Math.ceil(st.eta_s / 60)} min`} left`;
    if (st.reanalysis) text = `Re-analysing (the separation is kept): ${text}`;
  } else text = st.state === "done" ? "Done: 100%" : st.state;
  $("stage-text").textContent = text;
  const order = STAGES.map((s) => s[0]);
  const at = st.state === "queued" ? 1 : st.state === "uploading" ? 0 : st.state === "done" ? order.length : Math.max(2, order.indexOf(stage));
  $("stages").replaceChildren(...STAGES.map(([key, label], i) => {
    const li = document.createElement("li");
    li.textContent = label;
    if (i < at) li.className = "done";
    else if (i === at) li.className = "now";
    if (i === at) li.setAttribute("aria-current", "step");
    return li;
  }));
  $("cancel").disabled = !(st.state === "uploading" || st.state === "queued" || st.state === "running");
}

function openJob(id, restoring) {
  state.jobId = id;
  if (location.hash !== `#job=${id}`) history.replaceState(null, "", `#job=${id}`);
  watch(id, restoring);
}

function watch(id, restoring) {
  if (state.events) state.events.close();
  const es = new EventSource(`/api/jobs/${id}/events`);
  state.events = es;
  es.addEventListener("status", (e) => {
    const st = JSON.parse(e.data);
    if (st.state === "done") {
      es.close();
      showProgress(st);
      $("cancel").disabled = true;
      loadResult(id, st);
    } else if (st.state === "failed" || st.state === "cancelled") {
      es.close();
      $("progress").hidden = true;
      if (st.state === "failed") showError(`The song could not be processed: ${st.error}`);
      else showError(st.removed ? "Cancelled and removed." : "Cancelled.");
    } else {
      showProgress(st);
    }
  });
  es.addEventListener("error", async () => {
    if (es.readyState !== EventSource.CLOSED) return; // reconnecting by itself
    try { await api(`/api/jobs/${id}`); watch(id, restoring); } catch (err) {
      $("progress").hidden = true;
      showError(restoring ? `That job is gone (${err.message}).` : `Lost the job: ${err.message}`);
    }
  });
}

$("cancel").addEventListener("click", async () => {
  if (state.xhr) { state.xhr.abort(); state.xhr = null; $("progress").hidden = true; showError("Upload cancelled."); return; }
  if (!state.jobId) return;
  $("cancel").disabled = true;
  const hadResult = !!state.report;
  try {
    if (hadResult) await api(`/api/jobs/${state.jobId}/cancel`, { method: "POST" }); // keep the results
    else {
      await api(`/api/jobs/${state.jobId}`, { method: "DELETE" });
      history.replaceState(null, "", location.pathname);
    }
  } catch (e) { showError(e.message); }
});

const drop = $("drop");
drop.addEventListener("click", () => $("file").click());
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
  chooseFile(f);
});
$("file").addEventListener("change", () => { chooseFile($("file").files[0]); $("file").value = ""; });
// A song dropped anywhere on the page counts too.
window.addEventListener("dragover", (e) => e.preventDefault());
window.addEventListener("drop", (e) => { if (e.target !== drop) { e.preventDefault(); chooseFile(e.dataTransfer.files[0]); } });

// ------------------------------------------------------------ results

async function loadResult(id, status) {
  let job;
  try { job = await api(`/api/jobs/${id}`); } catch (e) { showError(e.message); return; }
  if (job.error) showError(job.error); else showError("");
  const r = job.report;
  if (!r) { showError("The job has no report."); return; }
  state.report = r;
  state.loopBar = r.loop.first_bar;
  state.bars = r.loop.bars;
  state.grid = gridOf(r.quantize);
  $("quantize").value = String(state.grid);
  $("bars").value = String(state.bars);
  state.loopAudio = { key: "", buffer: null };
  try { state.overview = await api(`/api/jobs/${id}/files/overview_json`); } catch { state.overview = null; }
  if (!audioEl.src) setInput(`/api/jobs/${id}/files/input`, r.input.path);
  $("result").hidden = false;
  const version = encodeURIComponent(String(r.timings_s ? r.timings_s.total : Date.now()));
  $("spec-loop").src = `/api/jobs/${id}/files/loop_spectrogram_png?v=${version}`;
  $("spec-stem").src = `/api/jobs/${id}/files/stem_spectrogram_png?v=${version}`;
  $("tempo").textContent = r.tempo_bpm.toFixed(1);
  $("tempo-note").textContent = r.reanalysis && r.reanalysis.tempo_bpm ? "(tempo set by hand)" : `confidence ${(r.tempo_confidence * 100).toFixed(0)}%`;
  $("half").disabled = r.tempo_bpm / 2 < 30;
  $("double").disabled = r.tempo_bpm * 2 > 300;
  update();
}

function gridOf(q) {
  const m = /^1\/(\d+)$/.exec(q || "");
  return m ? Number(m[1]) : 0;
}

// The name every download starts with: the song's, as the server gave it.
function songPrefix() {
  const stem = state.report.files.drum_stem_wav || "song_drums.wav";
  return stem.replace(/_drums\.wav$/, "");
}

function loopWindow() {
  const r = state.report, d = r.downbeats_s;
  const i = state.loopBar - 1;
  const start = d[i];
  const end = i + state.bars < d.length ? d[i + state.bars]
    : beatsTime(r.beats_s, beatsPosition(r.beats_s, start) + 4 * state.bars);
  return { start, end };
}

// The highest bar the loop can start on and still fit in the song.
function lastStartBar() {
  const r = state.report, d = r.downbeats_s;
  for (let i = d.length - 1; i >= 0; i--) {
    const end = i + state.bars < d.length ? d[i + state.bars]
      : beatsTime(r.beats_s, beatsPosition(r.beats_s, d[i]) + 4 * state.bars);
    if (end <= r.input.duration_s + 0.02) return i + 1;
  }
  return 1;
}

function isServerLoop() {
  const r = state.report;
  return state.loopBar === r.loop.first_bar && state.bars === r.loop.bars && state.grid === gridOf(r.quantize);
}

function update() {
  if (!state.report) return;
  const r = state.report;
  state.loopBar = Math.min(Math.max(1, state.loopBar), lastStartBar());
  const { start, end } = loopWindow();
  const origin = Math.round(beatsPosition(r.beats_s, start));
  state.notes = quantizeHits(r.hits, r.beats_s, origin, 4 * state.bars, state.grid, r.ppq);
  $("loop-text").textContent = `Loop: bars ${state.loopBar}–${state.loopBar + state.bars - 1} (${start.toFixed(2)}–${end.toFixed(2)} s), ${state.notes.length} notes` +
    (state.loopBar === r.loop.first_bar ? " · the best loop" : "");
  $("best-loop").hidden = state.loopBar === r.loop.first_bar;
  $("apply-loop").hidden = !(state.health && state.health.loop_start_bar) || isServerLoop();
  const ov = $("overview");
  ov.setAttribute("aria-valuemin", "1");
  ov.setAttribute("aria-valuemax", String(lastStartBar()));
  ov.setAttribute("aria-valuenow", String(state.loopBar));
  ov.setAttribute("aria-valuetext", `bars ${state.loopBar} to ${state.loopBar + state.bars - 1}`);
  drawOverview();
  drawGrid();
  buildDownloads();
}

function midiName(kind) {
  const bpm = Math.round(state.report.tempo_bpm);
  const q = state.grid ? `q${state.grid}` : "qoff";
  const where = kind === "loop" && state.loopBar !== state.report.loop.first_bar ? `_bar${state.loopBar}` : "";
  return `${songPrefix()}_drums_${kind}${where}_${bpm}bpm_${q}.mid`;
}

function loopMidiBytes() {
  const r = state.report;
  return writeSmf(state.notes, r.tempo_bpm, r.ppq, state.bars * 4 * r.ppq, songPrefix());
}

function fullMidiBytes() {
  const r = state.report;
  const origin = Math.round(beatsPosition(r.beats_s, r.downbeats_s[0]));
  const songBeats = beatsPosition(r.beats_s, r.input.duration_s) - origin;
  const bars = Math.max(1, Math.ceil(songBeats / 4 - 1e-6));
  const notes = quantizeHits(r.hits, r.beats_s, origin, 4 * bars, state.grid, r.ppq);
  return writeSmf(notes, r.tempo_bpm, r.ppq, bars * 4 * r.ppq, songPrefix());
}

function blobUrl(bytes, type) {
  const url = URL.createObjectURL(new Blob([bytes], { type }));
  state.blobUrls.push(url);
  return url;
}

function buildDownloads() {
  for (const u of state.blobUrls) URL.revokeObjectURL(u);
  state.blobUrls = [];
  const r = state.report, f = r.files, base = `/api/jobs/${state.jobId}/files/`;
  const serverGrid = state.grid === gridOf(r.quantize);
  const items = [];
  if (isServerLoop()) items.push(["Loop MIDI", f.loop_midi, base + "loop_midi", "loop-midi"]);
  else items.push(["Loop MIDI", midiName("loop"), blobUrl(loopMidiBytes(), "audio/midi"), "loop-midi"]);
  if (serverGrid) items.push(["Full-song MIDI", f.full_midi, base + "full_midi", "full-midi"]);
  else items.push(["Full-song MIDI", midiName("full"), blobUrl(fullMidiBytes(), "audio/midi"), "full-midi"]);
  if (state.loopBar === r.loop.first_bar && state.bars === r.loop.bars) items.push(["Loop audio", f.loop_wav, base + "loop_wav", "loop-wav"]);
  else items.push(["Loop audio", `${songPrefix()}_drums_loop_bar${state.loopBar}_${Math.round(r.tempo_bpm)}bpm.wav`, "", "loop-wav"]);
  items.push(["Drum stem", f.drum_stem_wav, base + "drum_stem_wav", "stem"]);
  items.push(["Report (JSON)", f.report_json, base + "report_json", "report"]);
  $("downloads").replaceChildren(...items.map(([label, name, href, key]) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.dataset.key = key;
    a.download = name;
    a.href = href || "#";
    a.append(label);
    const small = document.createElement("small");
    small.textContent = name;
    a.append(small);
    if (!href) a.addEventListener("click", (e) => { e.preventDefault(); downloadLoopAudio(name); });
    li.append(a);
    return li;
  }));
}

// The loop's audio for a window the server did not write: the slice of the
// stem, fetched by range and written as a 24-bit WAV here.
async function downloadLoopAudio(name) {
  try {
    const buf = await loopBuffer();
    const a = document.createElement("a");
    a.href = blobUrl(encodeWav24(buf), "audio/wav");
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
  } catch (e) { showError(`Cannot make the loop audio: ${e.message}`); }
}

function encodeWav24(buf) {
  const ch = buf.numberOfChannels, n = buf.length, bytes = 44 + n * ch * 3;
  const out = new Uint8Array(bytes), dv = new DataView(out.buffer);
  const str = (at, s) => { for (let i = 0; i < 4; i++) out[at + i] = s.charCodeAt(i); };
  str(0, "RIFF"); dv.setUint32(4, bytes - 8, true); str(8, "WAVE"); str(12, "fmt ");
  dv.setUint32(16, 16, true); dv.setUint16(20, 1, true); dv.setUint16(22, ch, true);
  dv.setUint32(24, buf.sampleRate, true); dv.setUint32(28, buf.sampleRate * ch * 3, true);
  dv.setUint16(32, ch * 3, true); dv.setUint16(34, 24, true); str(36, "data"); dv.setUint32(40, n * ch * 3, true);
  const data = [];
  for (let c = 0; c < ch; c++) data.push(buf.getChannelData(c));
  let at = 44;
  for (let i = 0; i < n; i++) for (let c = 0; c < ch; c++) {
    const v = Math.max(-8388608, Math.min(8388607, Math.round(data[c][i] * 8388608)));
    out[at++] = v & 255; out[at++] = (v >> 8) & 255; out[at++] = (v >> 16) & 255;
  }
  return out;
}

async function loopBuffer() {
  const r = state.report, { start, end } = loopWindow();
  const key = `${state.jobId}:${state.loopBar}:${state.bars}:${r.tempo_bpm}`;
  if (state.loopAudio.key === key && state.loopAudio.buffer) return state.loopAudio.buffer;
  const ctx = audioContext(), base = `/api/jobs/${state.jobId}/files/`;
  let buffer;
  if (state.loopBar === r.loop.first_bar && state.bars === r.loop.bars) {
    const bytes = await (await fetch(base + "loop_wav")).arrayBuffer();
    buffer = await ctx.decodeAudioData(bytes);
  } else {
    buffer = await fetchWavSlice(ctx, base + "drum_stem_wav", start, end);
  }
  state.loopAudio = { key, buffer };
  return buffer;
}

// ------------------------------------------------------------ overview

function drawOverview() {
  const canvas = $("overview");
  if (!state.report || canvas.offsetParent === null) return;
  const r = state.report, { g, w, h } = fitCanvas(canvas);
  const dur = r.input.duration_s, x = (t) => (t / dur) * w;
  g.clearRect(0, 0, w, h);
  const top = 18, mid = top + (h - top - 14) / 2, amp = (h - top - 14) / 2;
  const { start, end } = loopWindow();
  g.fillStyle = "rgba(242,177,52,0.22)";
  g.fillRect(x(start), top, x(end) - x(start), h - top);
  if (state.loopBar !== r.loop.first_bar) {
    g.strokeStyle = "rgba(79,195,247,0.8)";
    g.setLineDash([4, 3]);
    g.strokeRect(x(r.loop.start_s) + 0.5, top + 0.5, x(r.loop.end_s) - x(r.loop.start_s) - 1, h - top - 1);
    g.setLineDash([]);
  }
  const ov = state.overview;
  g.fillStyle = "#8fa3b8";
  if (ov && ov.peak && ov.peak.length) {
    const peaks = ov.peak, per = peaks.length / w;
    let max = 0.001;
    for (const p of peaks) max = Math.max(max, p);
    for (let px = 0; px < w; px++) {
      let v = 0;
      for (let k = Math.floor(px * per); k < Math.floor((px + 1) * per) || k === Math.floor(px * per); k++) v = Math.max(v, peaks[k] || 0);
      const a = (v / max) * amp;
      g.fillRect(px, mid - a, 1, Math.max(1, 2 * a));
    }
  } else {
    for (const hit of r.hits) g.fillRect(x(hit.time_s), mid - amp * hit.velocity / 127, 1, 2 * amp * hit.velocity / 127);
  }
  // Bars and their numbers, labelled often enough to read, never crowded.
  const d = r.downbeats_s;
  const barPx = d.length > 1 ? x(d[1]) - x(d[0]) : w;
  const every = [1, 2, 4, 8, 16, 32, 64].find((k) => k * barPx >= 26) || 128;
  g.font = "11px system-ui, sans-serif";
  g.textBaseline = "top";
  for (let i = 0; i < d.length; i++) {
    const bar = i + 1, labelled = (bar - 1) % every === 0;
    g.fillStyle = labelled ? "rgba(232,237,242,0.45)" : "rgba(232,237,242,0.14)";
    g.fillRect(Math.round(x(d[i])), top, 1, h - top);
    if (labelled) { g.fillStyle = "#c9d3dd"; g.fillText(String(bar), x(d[i]) + 2, 3); }
  }
  // Hits as ticks along the bottom: kick, snare, hats.
  for (const hit of r.hits) {
    g.fillStyle = hit.note === 36 ? "#f2b134" : hit.note === 38 ? "#ff8a65" : "#4fc3f7";
    g.fillRect(x(hit.time_s), h - (hit.note === 36 ? 4 : hit.note === 38 ? 8 : 12), 1, 3);
  }
  if (audioEl.src && isFinite(audioEl.currentTime) && audioEl.currentTime > 0) {
    g.fillStyle = "#ffffff";
    g.fillRect(x(audioEl.currentTime), top, 2, h - top);
  }
}

function barAt(t) {
  const d = state.report.downbeats_s;
  let i = 0;
  while (i + 1 < d.length && d[i + 1] <= t) i++;
  return i + 1;
}

$("overview").addEventListener("click", (e) => {
  if (!state.report) return;
  const rect = e.currentTarget.getBoundingClientRect();
  const t = ((e.clientX - rect.left) / rect.width) * state.report.input.duration_s;
  state.loopBar = barAt(t);
  update();
});
$("overview").addEventListener("keydown", (e) => {
  if (!state.report) return;
  const step = { ArrowLeft: -1, ArrowRight: 1, ArrowDown: -1, ArrowUp: 1, PageDown: -state.bars, PageUp: state.bars }[e.key];
  if (step) state.loopBar += step;
  else if (e.key === "Home") state.loopBar = 1;
  else if (e.key === "End") state.loopBar = lastStartBar();
  else return;
  e.preventDefault();
  update();
});
$("best-loop").addEventListener("click", () => { state.loopBar = state.report.loop.first_bar; update(); });

// ------------------------------------------------------------ drum grid

let playhead = -1;

function drawGrid() {
  const canvas = $("grid");
  if (!state.report || canvas.offsetParent === null) return;
  const r = state.report, { g, w, h } = fitCanvas(canvas);
  g.clearRect(0, 0, w, h);
  const rows = DRUMS.slice();
  for (const n of state.notes) if (!rows.some((d) => d.note === n.note)) rows.push({ note: n.note, name: `Note ${n.note}` });
  const left = Math.min(92, w * 0.22), rowH = h / rows.length;
  const ticks = state.bars * 4 * r.ppq, steps = state.bars * (state.grid || 16);
  const xOf = (tick) => left + ((w - left) * tick) / ticks;
  g.font = "12px system-ui, sans-serif";
  g.textBaseline = "middle";
  rows.forEach((row, i) => {
    g.fillStyle = i % 2 ? "#12171d" : "#151b22";
    g.fillRect(left, i * rowH, w - left, rowH);
    g.fillStyle = "#c9d3dd";
    g.fillText(row.name, 6, i * rowH + rowH / 2);
  });
  for (let s = 0; s <= steps; s++) {
    const perBar = state.grid || 16, bar = s % perBar === 0, beat = s % (perBar / 4) === 0;
    g.fillStyle = bar ? "rgba(232,237,242,0.55)" : beat ? "rgba(232,237,242,0.22)" : "rgba(232,237,242,0.07)";
    g.fillRect(Math.round(xOf((s * ticks) / steps)), 0, 1, h);
  }
  const cell = Math.max(3, ((w - left) / steps) * 0.8);
  for (const n of state.notes) {
    const i = rows.findIndex((d) => d.note === n.note);
    g.fillStyle = `rgba(242,177,52,${0.3 + 0.7 * (n.velocity / 127)})`;
    g.fillRect(xOf(n.tick) + 1, i * rowH + rowH * 0.18, cell, rowH * 0.64);
  }
  if (playhead >= 0) {
    g.fillStyle = "#ffffff";
    g.fillRect(left + (w - left) * playhead, 0, 2, h);
  }
}

// ------------------------------------------------------------ preview (A/B)

const preview = { on: false, mode: "midi", timer: 0, frame: 0, src: null, midiGain: null, loopGain: null, t0: 0, next: 0, dur: 0 };

async function startPreview(mode) {
  if (!state.report) return;
  const ctx = audioContext();
  stopPreview();
  preview.mode = mode;
  let buffer = null;
  try { buffer = await loopBuffer(); } catch (e) { if (mode === "loop") { showError(`Cannot load the loop audio: ${e.message}`); return; } }
  const r = state.report;
  preview.dur = buffer ? buffer.duration : (state.bars * 4 * 60) / r.tempo_bpm;
  preview.midiGain = ctx.createGain();
  preview.loopGain = ctx.createGain();
  preview.midiGain.connect(ctx.destination);
  preview.loopGain.connect(ctx.destination);
  preview.t0 = ctx.currentTime + 0.12;
  preview.next = preview.t0;
  if (buffer) {
    preview.src = ctx.createBufferSource();
    preview.src.buffer = buffer;
    preview.src.loop = true;
    preview.src.connect(preview.loopGain);
    preview.src.start(preview.t0);
  }
  preview.on = true;
  setMode(mode);
  schedule();
  preview.timer = setInterval(schedule, 40);
  const frame = () => {
    if (!preview.on) return;
    const t = ctx.currentTime - preview.t0;
    playhead = t < 0 ? 0 : (t % preview.dur) / preview.dur;
    drawGrid();
    preview.frame = requestAnimationFrame(frame);
  };
  frame();
  $("ab").disabled = !buffer;
  $("stop").disabled = false;
}

// Schedules each loop pass a little ahead; a pass reads the notes as they
// are then, so a new grid is heard from the next pass.
function schedule() {
  const ctx = state.ctx, r = state.report;
  const ticks = state.bars * 4 * r.ppq;
  while (preview.next < ctx.currentTime + 0.3) {
    for (const n of state.notes) strike(ctx, preview.midiGain, n.note, n.velocity, preview.next + (n.tick / ticks) * preview.dur);
    preview.next += preview.dur;
  }
}

function setMode(mode) {
  preview.mode = mode;
  const t = state.ctx.currentTime;
  preview.midiGain.gain.setTargetAtTime(mode === "midi" ? 0.9 : 0, t, 0.01);
  preview.loopGain.gain.setTargetAtTime(mode === "loop" ? 1 : 0, t, 0.01);
  $("play-midi").setAttribute("aria-pressed", String(mode === "midi"));
  $("play-loop").setAttribute("aria-pressed", String(mode === "loop"));
  $("ab").textContent = `A/B: ${mode === "midi" ? "MIDI" : "loop audio"}`;
}

function stopPreview() {
  if (!preview.on) return;
  preview.on = false;
  clearInterval(preview.timer);
  cancelAnimationFrame(preview.frame);
  try { if (preview.src) preview.src.stop(); } catch { /* already stopped */ }
  for (const gnode of [preview.midiGain, preview.loopGain]) if (gnode) gnode.disconnect();
  preview.src = null;
  playhead = -1;
  drawGrid();
  $("play-midi").setAttribute("aria-pressed", "false");
  $("play-loop").setAttribute("aria-pressed", "false");
  $("ab").disabled = true;
  $("stop").disabled = true;
}

$("play-midi").addEventListener("click", () => (preview.on ? setMode("midi") : startPreview("midi")));
$("play-loop").addEventListener("click", () => (preview.on ? setMode("loop") : startPreview("loop")));
$("ab").addEventListener("click", () => preview.on && setMode(preview.mode === "midi" ? "loop" : "midi"));
$("stop").addEventListener("click", stopPreview);

// ------------------------------------------------------------ options and re-analysis

$("quantize").addEventListener("change", () => { state.grid = Number($("quantize").value); update(); });
$("bars").addEventListener("change", () => {
  const b = Math.round(Number($("bars").value));
  if (!(b >= 1 && b <= 64)) { $("bars").value = String(state.bars); return; }
  state.bars = b;
  if (state.report) { state.loopAudio = { key: "", buffer: null }; if (preview.on) stopPreview(); }
  update();
});

async function reanalyze(body) {
  if (!state.jobId) return;
  stopPreview();
  try {
    await api(`/api/jobs/${state.jobId}/reanalyze`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    watch(state.jobId, false);
  } catch (e) { showError(e.message); }
}

$("half").addEventListener("click", () => reanalyze({ tempo: Math.round(state.report.tempo_bpm / 2 * 1000) / 1000, quantize: state.grid, bars: state.bars }));
$("double").addEventListener("click", () => reanalyze({ tempo: Math.round(state.report.tempo_bpm * 2 * 1000) / 1000, quantize: state.grid, bars: state.bars }));
$("apply-loop").addEventListener("click", () => reanalyze({ loop_start_bar: state.loopBar, quantize: state.grid, bars: state.bars }));

window.addEventListener("resize", () => { drawOverview(); drawGrid(); });

// For tests and the curious: the page's MIDI reader.
window.d2m = { readSmfHeader, state };

// ------------------------------------------------------------ start

(async () => {
  try {
    state.health = await api("/api/health");
    $("server-info").textContent = `drum2midi ${state.health.version} · up to ${state.health.max_upload_mb} MB per song · ${state.health.queued} waiting, ${state.health.running} running`;
  } catch (e) { showError(`The server does not answer: ${e.message}`); }
  const m = /^#job=([0-9a-f]{16})$/.exec(location.hash);
  if (m) openJob(m[1], true);
})();
