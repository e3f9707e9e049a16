// The page end to end in Debian's headless Chromium (playwright-core, no
// browser download): drop a song, watch progress reach 100%, see the tempo,
// change the grid, download the loop MIDI and check it is a 2-track SMF on
// the new grid, preview and A/B without errors, and save a screenshot.
// Environment: D2M_URL (a running server), D2M_SONG (a WAV), D2M_SCREENSHOT
// (where the PNG goes), CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";

const url = process.env.D2M_URL, song = process.env.D2M_SONG, shot = process.env.D2M_SCREENSHOT;
let passed = 0, failed = 0;
function check(name, ok, detail = "") {
  if (ok) passed++; else failed++;
  console.log(`${ok ? "ok" : "FAIL"} - ${name}${detail ? `: ${detail}` : ""}`);
}

// Note-on ticks of every track of a type-1 SMF (running status not used by drum2midi).
function noteOnTicks(bytes) {
  const ticks = [];
  let at = 14;
  while (at + 8 <= bytes.length) {
    const len = bytes.readUInt32BE(at + 4), end = at + 8 + len;
    if (bytes.toString("latin1", at, at + 4) === "MTrk") {
      let p = at + 8, now = 0;
      while (p < end) {
        let delta = 0, b;
        do { b = bytes[p++]; delta = delta * 128 + (b & 0x7f); } while (b & 0x80);
        now += delta;
        const status = bytes[p++];
        if (status === 0xff) { p++; let l = 0; do { b = bytes[p++]; l = l * 128 + (b & 0x7f); } while (b & 0x80); p += l; }
        else { if ((status & 0xf0) === 0x90 && bytes[p + 1] > 0) ticks.push(now); p += 2; }
      }
    }
    at = end;
  }
  return ticks;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required"],
});
const failures = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(120000);
  page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") failures.push(`console error: ${m.text()}`); });

  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("server-info").textContent.length > 0);
  check("page loads and reads /api/health", true);

  // Options before the drop: a drum track needs no separation.
  await page.selectOption("#separator", "none");

  // Drop the song on the drop zone, as a person would.
  const b64 = readFileSync(song).toString("base64");
  const dataTransfer = await page.evaluateHandle((data) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], "Test Groove.wav", { type: "audio/wav" }));
    return dt;
  }, b64);
  const seen = [];
  await page.exposeFunction("reportProgress", (v) => seen.push(v));
  await page.evaluate(() => {
    const bar = document.getElementById("bar");
    new MutationObserver(() => window.reportProgress(Number(bar.getAttribute("aria-valuenow"))))
      .observe(bar, { attributes: true, attributeFilter: ["aria-valuenow"] });
  });
  await page.dispatchEvent("#drop", "drop", { dataTransfer });
  const playLabel = await page.getAttribute("#play", "aria-label");
  check("the input is not auto-played", playLabel === "Play the input", playLabel);

  await page.waitForSelector("#result:not([hidden]), #error:not([hidden])", { timeout: 180000 });
  const error = await page.evaluate(() => { const e = document.getElementById("error"); return e.hidden ? "" : e.textContent; });
  if (error) throw new Error(`the page shows an error: ${error}`);
  const final = Number(await page.getAttribute("#bar", "aria-valuenow"));
  check("progress reaches 100%", final === 100 && seen.length > 0, `final ${final}, ${seen.length} updates, max ${Math.max(0, ...seen)}`);
  const tempo = Number(await page.textContent("#tempo"));
  check("the tempo is shown", tempo >= 30 && tempo <= 300, `${tempo} BPM`);
  const spectro = await page.evaluate(() => new Promise((resolve) => {
    const img = document.getElementById("spec-loop");
    if (img.complete && img.naturalWidth) resolve(img.naturalWidth);
    img.addEventListener("load", () => resolve(img.naturalWidth));
    img.addEventListener("error", () => resolve(0));
  }));
  check("the loop spectrogram loads", spectro > 100, `${spectro} px wide`);
  const gridNotes = await page.evaluate(() => window.d2m.state.notes.length);
  check("the drum grid has the loop's notes", gridNotes > 0, `${gridNotes} notes`);

  // Another grid: the MIDI is re-written in the page, no re-processing.
  const requestsBefore = [];
  page.on("request", (r) => requestsBefore.push(r.url()));
  await page.selectOption("#quantize", "8");
  const name = await page.textContent('a[data-key="loop-midi"] small');
  check("the download name says the new grid", /_q8\.mid$/.test(name), name);
  check("changing the grid asks the server nothing", !requestsBefore.some((u) => u.includes("/reanalyze") || u.includes("/api/jobs") && !u.includes("/files/")), requestsBefore.join(" "));

  const [download] = await Promise.all([page.waitForEvent("download"), page.click('a[data-key="loop-midi"]')]);
  const path = await download.path();
  const midi = readFileSync(path);
  const head = midi.toString("latin1", 0, 4);
  const tracks = midi.readUInt16BE(10), ppq = midi.readUInt16BE(12);
  check("the downloaded MIDI starts with MThd", head === "MThd", head);
  check("the downloaded MIDI has 2 tracks", tracks === 2, `${tracks}`);
  check("the download has a meaningful name", /^Test_Groove_drums_loop.*_q8\.mid$/.test(download.suggestedFilename()), download.suggestedFilename());
  const ticks = noteOnTicks(midi);
  check("every note is on the 1/8 grid", ticks.length > 0 && ticks.every((t) => t % (ppq / 2) === 0), `${ticks.length} notes, ppq ${ppq}`);

  // Move the loop by keyboard, then preview it A/B.
  await page.focus("#overview");
  await page.keyboard.press("Home");
  const start = await page.getAttribute("#overview", "aria-valuenow");
  check("the loop can be moved with the keyboard", start === "1", `starts at bar ${start}`);
  await page.click("#play-midi");
  await page.waitForFunction(() => document.getElementById("stop").disabled === false);
  await page.click("#ab");
  const ab = await page.textContent("#ab");
  check("A/B switches to the loop audio", ab.includes("loop audio"), ab);
  await page.click("#stop");
  await page.focus("#overview");
  await page.keyboard.press("End");
  const last = Number(await page.getAttribute("#overview", "aria-valuenow"));
  check("End moves the loop to the last window", last > 1, `bar ${last}`);
  await page.click("#best-loop");
  const best = await page.evaluate(() => window.d2m.state.loopBar === window.d2m.state.report.loop.first_bar);
  check("'Back to the best loop' restores the server's loop", best);

  await page.selectOption("#quantize", "16");
  await page.waitForTimeout(300);
  mkdirSync(dirname(shot), { recursive: true });
  await page.screenshot({ path: shot, fullPage: true });
  check("screenshot saved", readFileSync(shot).length > 10000, shot);

  // A phone-sized screen: nothing wider than the viewport.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(200);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check("fits a phone's width", overflow <= 0, `${overflow} px too wide`);
  if (process.env.D2M_PHONE_SCREENSHOT) writeFileSync(process.env.D2M_PHONE_SCREENSHOT, await page.screenshot({ fullPage: true }));

  check("no errors in the page", failures.length === 0, failures.join("; "));
} catch (e) {
  check("the browser test ran to the end", false, e.stack || String(e));
} finally {
  await browser.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
