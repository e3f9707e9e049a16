#!/usr/bin/python3
"""The JSON API of `drum2midi serve`, against the real server on 127.0.0.1
(standard library only): upload -> live events -> results and files; cancel
(running and queued); oversize uploads (declared and streamed); non-audio
and empty files; unknown jobs; path traversal in ids, file names and the
upload's own name; a client that disconnects mid-upload; several uploads at
once while status stays responsive; a job runner killed mid-job; the model
loaded once for several jobs; re-analysis without re-separation;
results surviving a restart; retention. Every request has a timeout and every
wait a bound. Env: D2M_BIN, D2M_SOURCE_DIR."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid

SRC = os.environ.get("D2M_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("D2M_BIN", os.path.join(SRC, "build", "drum2midi"))
sys.path.insert(0, os.path.join(SRC, "tests", "py"))
import synth  # noqa: E402

TIMEOUT = 30
UPLOAD_MB = 4


class Server:
    def __init__(self, data, *args, env=None):
        self.data = data
        self.log = open(os.path.join(os.path.dirname(data), f"server-{uuid.uuid4().hex[:6]}.log"), "w+")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--host", "127.0.0.1", "--port", "0", "--data", data,
             "--max-upload-mb", str(UPLOAD_MB), *args],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        line = self.proc.stdout.readline()
        if "listening on http://127.0.0.1:" not in line:
            raise RuntimeError(f"server did not start: {line!r}")
        self.port = int(line.split("127.0.0.1:")[1].split("/")[0])

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the server did not stop within 30 s of SIGTERM")
        assert code == 0, f"server exit status {code}"

    def alive(self):
        return self.proc.poll() is None

    def log_text(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def runners(self):
        """Process ids of the server's job runners (its child processes)."""
        out = []
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if pid.isdigit() and int(fields[1]) == self.proc.pid:
                out.append(int(pid))
        return out


def request(port, method, path, body=None, headers=None, timeout=TIMEOUT):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data
    finally:
        c.close()


def get_json(port, path, method="GET", body=None, headers=None):
    status, h, data = request(port, method, path, body, headers)
    return status, json.loads(data) if data else None


def multipart(fields, file_bytes, filename="song.wav"):
    boundary = "----d2m" + uuid.uuid4().hex
    out = []
    for k, v in fields.items():
        out.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode())
    out.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
               "Content-Type: application/octet-stream\r\n\r\n".encode())
    out.append(file_bytes)
    out.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def upload(port, file_bytes, filename="song.wav", **fields):
    fields = {k: str(v) for k, v in fields.items()}
    body, ctype = multipart(fields, file_bytes, filename)
    status, h, data = request(port, "POST", "/api/jobs", body, {"Content-Type": ctype})
    return status, h, json.loads(data) if data else None


def wait_state(port, job, states, limit=120):
    deadline = time.time() + limit
    while time.time() < deadline:
        status, st = get_json(port, f"/api/jobs/{job}")
        if status == 200 and st["state"] in states:
            return st
        if status == 404 and "gone" in states:
            return None
        time.sleep(0.05)
    raise AssertionError(f"job {job} did not reach {states} in {limit} s (last: {st})")


def events(port, job, limit=120):
    """Every SSE status event of a job until the server ends the stream."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=limit)
    c.request("GET", f"/api/jobs/{job}/events")
    r = c.getresponse()
    assert r.status == 200, r.status
    assert r.getheader("Content-Type") == "text/event-stream"
    out, name, deadline = [], None, time.time() + limit
    while time.time() < deadline:
        line = r.readline()
        if not line:
            break
        line = line.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name == "status":
            out.append(json.loads(line[6:]))
    c.close()
    return out


def song(bars=8, rate=44100, bpm=120.0, seed=1):
    x, _ = synth.drum_track(bpm=bpm, bars=bars, seed=seed)
    if rate != 44100:
        x = synth.resample_linear(x, 44100, rate)
    path = os.path.join(tempfile.gettempdir(), f"d2m-api-{uuid.uuid4().hex}.wav")
    synth.write_wav(path, x, rate=rate)
    with open(path, "rb") as f:
        data = f.read()
    os.unlink(path)
    return data


def leftovers(data):
    return os.listdir(os.path.join(data, "tmp"))


# ------------------------------------------------------------------ tests

def test_health(s, ctx):
    status, h = get_json(s.port, "/api/health")
    assert status == 200 and h["status"] == "ok", (status, h)
    assert h["max_upload_mb"] == UPLOAD_MB, h


def test_upload_events_results(s, ctx):
    status, headers, body = upload(s.port, ctx["short"], "My Song (live).wav", separator="none", quantize="1/16")
    assert status == 201, (status, body)
    job = body["id"]
    assert headers["location"] == f"/api/jobs/{job}"
    evs = events(s.port, job)
    states = [e["state"] for e in evs]
    assert states[-1] == "done", states
    stages = [e["stage"] for e in evs if e["state"] == "running"]
    assert "tempo" in stages and "write" in stages, f"stages seen: {stages}"
    progress = [e["progress"] for e in evs if e["state"] == "running"]
    assert progress == sorted(progress), f"progress went backwards: {progress}"
    assert evs[-1]["progress"] == 1, evs[-1]
    status, st = get_json(s.port, f"/api/jobs/{job}")
    assert status == 200 and st["state"] == "done" and st["error"] is None, st
    r = st["report"]
    assert 100 < r["tempo_bpm"] < 140, r["tempo_bpm"]
    assert r["input"]["path"] == "My Song (live).wav", r["input"]
    assert r["loop_notes"], "no loop notes"
    assert set(["loop_midi", "full_midi", "drum_stem_wav", "loop_wav", "report_json", "stem_spectrogram_png",
                "loop_spectrogram_png", "input", "overview_json"]) <= set(r["files"]), r["files"]
    for key, name in r["files"].items():
        status, h, data = request(s.port, "GET", f"/api/jobs/{job}/files/{key}")
        assert status == 200, (key, status)
        assert h["content-disposition"] == f'attachment; filename="{name}"', (key, h["content-disposition"])
        assert name.startswith("My_Song_live") or key == "report_json", name
        assert data, key
    status, h, midi = request(s.port, "GET", f"/api/jobs/{job}/files/loop_midi")
    assert midi[:4] == b"MThd" and int.from_bytes(midi[10:12], "big") == 2, midi[:14]
    assert h["content-type"] == "audio/midi"
    # The DAW shows the song's name as the track name, not the name on disk.
    names = [midi[i + 3:i + 3 + midi[i + 2]] for i in range(len(midi) - 3) if midi[i:i + 2] == b"\xff\x03"]
    assert b"My_Song_live" in names, names
    status, h, part = request(s.port, "GET", f"/api/jobs/{job}/files/drum_stem_wav", headers={"Range": "bytes=0-11"})
    assert status == 206 and part == b"RIFF" + part[4:8] + b"WAVE", (status, part)
    assert h["content-range"].startswith("bytes 0-11/"), h
    status, h, _ = request(s.port, "GET", f"/api/jobs/{job}/files/drum_stem_wav", headers={"Range": "bytes=999999999-"})
    assert status == 416, status
    status, ov = get_json(s.port, f"/api/jobs/{job}/files/overview_json")
    assert ov["peak"] and ov["bin_s"] > 0, ov.keys()
    ctx["done_job"] = job


def test_wrong_type(s, ctx):
    png = b"\x89PNG\r\n\x1a\n" + bytes(4000)
    status, _, body = upload(s.port, png, "song.mp3")
    assert status == 415 and "error" in body, (status, body)
    status, _, body = upload(s.port, os.urandom(50000), "noise.wav")
    assert status == 415, (status, body)
    status, _, body = upload(s.port, b"", "empty.wav")
    assert status == 415, (status, body)
    assert leftovers(s.data) == [], leftovers(s.data)


def test_bad_requests(s, ctx):
    for fields, what in (({"quantize": "7"}, "quantize"), ({"bars": "0"}, "bars"), ({"separator": "x"}, "separator"),
                         ({"tempo": "1000"}, "tempo")):
        status, _, body = upload(s.port, ctx["short"], **fields)
        assert status == 400 and what in body["error"], (fields, status, body)
    status, body = get_json(s.port, "/api/jobs", "POST", b"hello", {"Content-Type": "text/plain"})
    assert status == 400 and "multipart" in body["error"], (status, body)
    body, ctype = multipart({"quantize": "8"}, b"", "x")
    status, _, data = request(s.port, "POST", "/api/jobs", body.replace(b'name="file"', b'name="other"'), {"Content-Type": ctype})
    assert status == 400, (status, data)
    status, body = get_json(s.port, "/api/health", "DELETE")
    assert status == 405 and "error" in body, (status, body)
    status, body = get_json(s.port, "/api/nothing")
    assert status == 404 and "error" in body
    assert leftovers(s.data) == [], leftovers(s.data)


def test_unknown_job(s, ctx):
    for method, path in (("GET", "/api/jobs/0123456789abcdef"), ("DELETE", "/api/jobs/0123456789abcdef"),
                         ("GET", "/api/jobs/0123456789abcdef/events"),
                         ("GET", "/api/jobs/0123456789abcdef/files/loop_midi"),
                         ("POST", "/api/jobs/0123456789abcdef/reanalyze"),
                         ("GET", "/api/jobs/not-an-id"), ("GET", "/api/jobs/0123456789ABCDEF")):
        status, body = get_json(s.port, path, method)
        assert status == 404 and "error" in body, (method, path, status, body)


def test_path_traversal(s, ctx):
    job = ctx["done_job"]
    paths = ["/api/jobs/../../../../etc/passwd", "/api/jobs/..%2f..%2fetc%2fpasswd",
             f"/api/jobs/{job}/files/../job.json", f"/api/jobs/{job}/files/..%2fjob.json",
             f"/api/jobs/{job}/files/%2e%2e%2f%2e%2e%2fjob.json", f"/api/jobs/{job}/files/job.json",
             f"/api/jobs/{job}/files/loop_midi/../../job.json", f"/api/jobs/{job}/files/",
             f"/api/jobs/{job}/..%2f{job}/files/loop_midi", "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
             "/..%2fCMakeLists.txt", "/.hidden", "/api/jobs/%00", f"/api/jobs/{job}%00/files/loop_midi"]
    for p in paths:
        status, h, data = request(s.port, "GET", p)
        assert status in (400, 404), (p, status)
        assert b"root:" not in data and b'"options"' not in data, (p, data[:100])
        if status == 404:
            assert json.loads(data)["error"], p
    # The upload's own name never becomes a path.
    evil = "../../../../../tmp/d2m-evil-" + uuid.uuid4().hex + ".wav"
    status, _, body = upload(s.port, ctx["short"], evil, separator="none")
    assert status == 201, (status, body)
    st = wait_state(s.port, body["id"], {"done", "failed"})
    assert not os.path.exists("/tmp/" + os.path.basename(evil)), "the client's name became a path"
    assert sorted(os.listdir(os.path.join(s.data, "jobs", body["id"]))) == ["job.json", "out", "song.wav"]
    names = st and get_json(s.port, f"/api/jobs/{body['id']}")[1]["report"]["files"]
    assert all("/" not in n and ".." not in n for n in names.values()), names


def test_oversize(s, ctx):
    limit = UPLOAD_MB * 1024 * 1024
    # Declared too large: refused before the body is sent.
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=TIMEOUT)
    c.putrequest("POST", "/api/jobs")
    c.putheader("Content-Type", "multipart/form-data; boundary=x")
    c.putheader("Content-Length", str(limit * 3))
    c.putheader("Expect", "100-continue")
    c.endheaders()
    r = c.getresponse()
    body = json.loads(r.read())
    assert r.status == 413 and "limit" in body["error"], (r.status, body)
    c.close()
    # Streamed (chunked, no length) past the limit: drained, then refused.
    big = ctx["short"] * (limit // len(ctx["short"]) + 1)
    payload, ctype = multipart({"separator": "none"}, big)
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=TIMEOUT)
    c.request("POST", "/api/jobs", body=(payload[i:i + 65536] for i in range(0, len(payload), 65536)),
              headers={"Content-Type": ctype}, encode_chunked=True)
    r = c.getresponse()
    body = json.loads(r.read())
    assert r.status == 413, (r.status, body)
    c.close()
    assert leftovers(s.data) == [], leftovers(s.data)
    assert get_json(s.port, "/api/health")[0] == 200


def test_disconnect_mid_upload(s, ctx):
    payload, ctype = multipart({}, ctx["short"])
    for cut in (200, len(payload) // 3, len(payload) - 10):
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT)
        sock.sendall((f"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                      f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload[:cut])
        time.sleep(0.2)
        sock.close()
    deadline = time.time() + 10
    while leftovers(s.data) and time.time() < deadline:
        time.sleep(0.1)
    assert leftovers(s.data) == [], f"partial uploads left: {leftovers(s.data)}"
    assert get_json(s.port, "/api/health")[0] == 200 and s.alive()


def test_cancel_running_and_queued(s, ctx):
    status, _, first = upload(s.port, ctx["long"], "long.wav", separator="hpss")
    assert status == 201
    status, _, second = upload(s.port, ctx["short"], "queued.wav", separator="hpss")
    assert status == 201
    st = wait_state(s.port, first["id"], {"running", "done"})
    assert st["state"] == "running", f"the long song finished before it could be cancelled: {st}"
    status, st2 = get_json(s.port, f"/api/jobs/{second['id']}")
    assert st2["state"] == "queued" and st2["queue_position"] == 1, st2
    # Cancel the queued one: it goes, the running one goes on.
    status, body = get_json(s.port, f"/api/jobs/{second['id']}", "DELETE")
    assert status == 200 and body["state"] == "cancelled", body
    assert get_json(s.port, f"/api/jobs/{second['id']}")[0] == 404
    # Cancel the running one; its event stream ends with "cancelled".
    got = []
    t = threading.Thread(target=lambda: got.extend(events(s.port, first["id"], 60)))
    t.start()
    time.sleep(0.3)
    t0 = time.time()
    status, _ = get_json(s.port, f"/api/jobs/{first['id']}/cancel", "POST")
    assert status == 200
    st = wait_state(s.port, first["id"], {"cancelled", "done", "failed"}, 30)
    assert st["state"] == "cancelled", st
    assert time.time() - t0 < 5, f"cancel took {time.time() - t0:.1f} s"
    t.join(60)
    assert got and got[-1]["state"] == "cancelled", got[-1:]
    status, _ = get_json(s.port, f"/api/jobs/{first['id']}", "DELETE")
    assert status == 200 and not os.path.exists(os.path.join(s.data, "jobs", first["id"]))


def test_concurrent_uploads(s, ctx):
    results, errors = [], []

    def one(i):
        try:
            results.append(upload(s.port, ctx["short"], f"c{i}.wav", separator="none"))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    worst = 0.0
    while any(t.is_alive() for t in threads):
        t0 = time.time()
        assert get_json(s.port, "/api/health")[0] == 200
        worst = max(worst, time.time() - t0)
        time.sleep(0.02)
    for t in threads:
        t.join(TIMEOUT)
    assert not errors, errors
    assert [r[0] for r in results] == [201] * 5, [r[0] for r in results]
    ids = [r[2]["id"] for r in results]
    positions = []
    running_seen = 0
    deadline = time.time() + 120
    while time.time() < deadline:
        t0 = time.time()
        sts = [get_json(s.port, f"/api/jobs/{i}")[1] for i in ids]
        running_seen = max(running_seen, get_json(s.port, "/api/health")[1]["running"])
        worst = max(worst, (time.time() - t0) / (len(ids) + 1))
        positions += [st["queue_position"] for st in sts if st["state"] == "queued"]
        if all(st["state"] in ("done", "failed") for st in sts):
            break
        time.sleep(0.05)
    assert all(st["state"] == "done" for st in sts), [(st["state"], st["error"]) for st in sts]
    assert running_seen == 1, f"{running_seen} jobs ran at once with --jobs 1"
    assert positions and max(positions) >= 2, f"queue positions seen: {sorted(set(positions))}"
    assert worst < 1.0, f"a status request took {worst:.2f} s while jobs ran"


def test_runner_killed(s, ctx):
    """The process doing a job dies (a crash, the OOM killer): that job fails
    with a message, the server stays up, and the next job gets a fresh runner."""
    status, _, first = upload(s.port, ctx["long"], "killed.wav", separator="hpss")
    assert status == 201
    st = wait_state(s.port, first["id"], {"running", "done"})
    assert st["state"] == "running", f"the long song finished before its runner could be killed: {st}"
    runners = s.runners()
    assert runners, "the running job has no runner process"
    for pid in runners:
        os.kill(pid, signal.SIGKILL)
    st = wait_state(s.port, first["id"], {"failed", "done", "cancelled"}, 30)
    assert st["state"] == "failed" and "signal 9" in st["error"], st
    assert s.alive()
    status, _, second = upload(s.port, ctx["short"], "after.wav", separator="none")
    assert status == 201
    st = wait_state(s.port, second["id"], {"done", "failed", "cancelled"})
    assert st["state"] == "done", st
    for job in (first["id"], second["id"]):
        assert get_json(s.port, f"/api/jobs/{job}", "DELETE")[0] == 200


def test_model_loaded_once(s, ctx):
    """Two Demucs jobs in a row: the runner loads the model for the first and
    keeps it for the second (the tiny random-weight htdemucs of ../shared,
    so this is quick; its stems are noise, so the analysis may fail)."""
    tiny = os.path.join(SRC, "..", "shared", "demucs", "tiny", "tiny.th")
    if not os.path.exists(tiny):
        print(f"  (skipped: no {tiny})")
        return
    data = os.path.join(os.path.dirname(s.data), "data-model")
    s2 = Server(data, env=dict(os.environ, DRUM2MIDI_MODEL=tiny))
    try:
        ids = []
        for name in ("one.wav", "two.wav"):
            status, _, body = upload(s2.port, ctx["short"], name, separator="demucs")
            assert status == 201, (status, body)
            ids.append(body["id"])
        for job in ids:
            st = wait_state(s2.port, job, {"done", "failed", "cancelled"})
            assert st["state"] == "done" or ("weights" not in st["error"] and "model" not in st["error"]), st
            if st["state"] == "done":
                assert st["report"]["separator"]["name"] == "htdemucs", st["report"]["separator"]
        loads = s2.log_text().count("loaded the Demucs model")
        assert loads == 1, f"the model was loaded {loads} times for two jobs:\n{s2.log_text()}"
        assert len(s2.runners()) == 1, s2.runners()
    finally:
        s2.stop()
    assert not s2.runners(), "a job runner outlived its server"


def test_server_as_pid_1(s, ctx):
    """In a container the server is pid 1: its job runners must still run
    (a runner that took "my parent is pid 1" for "the server is gone" would
    fail every job there). Needs unshare(1) with PID namespaces (root)."""
    probe = subprocess.run(["unshare", "--pid", "--fork", "--kill-child", "true"], capture_output=True)
    if probe.returncode != 0:
        print("  (skipped: unshare --pid is not allowed here)")
        return
    data = os.path.join(os.path.dirname(s.data), "data-pid1")
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child=SIGTERM", BIN, "serve", "--host", "127.0.0.1",
                             "--port", "0", "--data", data], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line
        port = int(line.split("127.0.0.1:")[1].split("/")[0])
        status, _, body = upload(port, ctx["short"], "pid1.wav", separator="none")
        assert status == 201, (status, body)
        st = wait_state(port, body["id"], {"done", "failed", "cancelled"})
        assert st["state"] == "done", st
    finally:
        # The server itself (unshare's child) gets the SIGTERM, as from `docker stop`.
        children = []
        for task in os.listdir(f"/proc/{proc.pid}/task"):
            with open(f"/proc/{proc.pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
        for c in children:
            os.kill(c, signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the server as pid 1 did not stop within 30 s of SIGTERM")
    assert children and code == 0, (children, code)


def test_reanalyze(s, ctx):
    job = ctx["done_job"]
    status, st = get_json(s.port, f"/api/jobs/{job}")
    tempo = st["report"]["tempo_bpm"]
    body = json.dumps({"tempo": round(tempo * 2, 3), "quantize": 8}).encode()
    status, st = get_json(s.port, f"/api/jobs/{job}/reanalyze", "POST", body, {"Content-Type": "application/json"})
    assert status == 202 and st["reanalysis"], (status, st)
    evs = events(s.port, job)
    assert evs[-1]["state"] == "done", evs[-1]
    status, st = get_json(s.port, f"/api/jobs/{job}")
    r = st["report"]
    assert abs(r["tempo_bpm"] - tempo * 2) < 0.01, (r["tempo_bpm"], tempo)
    assert r["quantize"] == "1/8" and r["separator"]["name"] == "none" and r["input"]["path"] == "My Song (live).wav", r
    assert r["reanalysis"]["tempo_bpm"] == round(tempo * 2, 3)
    assert st["options"]["quantize"] == 8
    status, h, _ = request(s.port, "GET", f"/api/jobs/{job}/files/loop_midi")
    assert status == 200 and "_q8.mid" in h["content-disposition"], h
    for bad in (b"{", b"[]", json.dumps({"tempo": 5}).encode(), json.dumps({"bars": 0}).encode(),
                json.dumps({"quantize": 3}).encode()):
        status, body = get_json(s.port, f"/api/jobs/{job}/reanalyze", "POST", bad)
        assert status == 400 and body["error"], (bad, status, body)


def test_restart_and_retention(s, ctx):
    job = ctx["done_job"]
    s.stop()
    ctx["stopped"] = True
    s2 = Server(s.data)
    try:
        status, st = get_json(s2.port, f"/api/jobs/{job}")
        assert status == 200 and st["state"] == "done" and st["report"]["quantize"] == "1/8", (status, st)
        status, h, midi = request(s2.port, "GET", f"/api/jobs/{job}/files/loop_midi")
        assert status == 200 and midi[:4] == b"MThd"
    finally:
        s2.stop()
    # Finished jobs older than --keep-days go at start-up.
    time.sleep(0.1)
    s3 = Server(s.data, "--keep-days", "0.00000001")  # about a millisecond
    try:
        status, _ = get_json(s3.port, f"/api/jobs/{job}")
        assert status == 404, status
        assert os.listdir(os.path.join(s.data, "jobs")) == [], os.listdir(os.path.join(s.data, "jobs"))
    finally:
        s3.stop()


def main():
    if not os.access(BIN, os.X_OK):
        print(f"SKIP: {BIN} is not built")
        return 77
    tmp = tempfile.mkdtemp(prefix="d2m-api-")
    ctx = {"short": song(8), "long": song(40, rate=22050, seed=2)}
    server = Server(os.path.join(tmp, "data"))
    tests = [test_health, test_upload_events_results, test_wrong_type, test_bad_requests, test_unknown_job,
             test_path_traversal, test_oversize, test_disconnect_mid_upload, test_cancel_running_and_queued,
             test_concurrent_uploads, test_runner_killed, test_model_loaded_once, test_server_as_pid_1, test_reanalyze,
             test_restart_and_retention]
    passed = failed = 0
    try:
        for t in tests:
            t0 = time.time()
            try:
                t(server, ctx)
                passed += 1
                print(f"ok - {t.__name__} ({time.time() - t0:.1f} s)")
            except Exception:  # noqa: BLE001 - every failure is printed and counted
                failed += 1
                print(f"FAIL - {t.__name__}\n{traceback.format_exc()}")
            if not server.alive() and not ctx.get("stopped"):
                failed += 1
                print("FAIL - the server died")
                break
    finally:
        if server.alive():
            server.stop()
        server.log.seek(0)
        log = server.log.read()
        if failed:
            print("--- server log\n" + log[-3000:])
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
