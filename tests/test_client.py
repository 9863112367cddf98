"""`python -m safecut client` against a fake RunPod endpoint and a fake ComfyUI server (127.0.0.1, random ports).

The fake RunPod answers like worker-comfyui 5.x behind RunPod's queue: /run -> id, /status/<id> goes
IN_QUEUE -> IN_PROGRESS -> COMPLETED, /runsync; its output is {"images": [{"filename", "type": "base64",
"data"}]} holding one cutout PNG per uploaded image (verdict JSON in a "safecut" tEXt chunk) and a report
JSON. Every wait is bounded (client --timeout, server thread join, socket timeouts).
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from safecut.app import cli, client

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402
from PIL.PngImagePlugin import PngInfo  # noqa: E402

API_KEY = "rp_test_key_123"
WORKFLOW = {
    "1": {"class_type": "SafeCutLoadImageBatch",
          "inputs": {"directory": "", "pattern": "*", "sort": "natural", "start_index": 0, "limit": 0,
                     "mode": "list", "batch_fit": "pad", "on_error": "fail", "uploads": ""}},
    "2": {"class_type": "SafeCutSaveCutout", "inputs": {"images": ["1", 0], "filename_prefix": "safecut/job"}},
}


def png_bytes(meta: dict | None = None, size=(8, 6), mode="RGBA") -> bytes:
    im = Image.new(mode, size, (200, 30, 30, 128) if mode == "RGBA" else (200, 30, 30))
    info = PngInfo()
    if meta is not None:
        info.add_text("safecut", json.dumps(meta))
    buf = io.BytesIO()
    im.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def verdict_for(name: str) -> dict:
    stem = os.path.splitext(name)[0]
    if "bad" in stem:
        return {"file": name, "verdict": "UNSAFE", "decided_by": "classifier", "p_unsafe": 0.91,
                "caption": "a knife\tattack"}
    return {"file": name, "verdict": "SAFE", "decided_by": "keywords", "p_unsafe": None,
            "caption": f"a photo of {stem}"}


def worker_output(workflow: dict, images: list[dict]) -> dict:
    """What worker-comfyui 5.x returns for our fake SafeCut run."""
    names = []
    for node in workflow.values():
        if node.get("class_type") == "SafeCutLoadImageBatch":
            names = [n.strip() for n in node["inputs"].get("uploads", "").split(",") if n.strip()]
    uploaded = {i["name"] for i in images}
    out, report = [], []
    for n in names:
        if n not in uploaded:
            report.append({"file": n, "error": "not uploaded", "verdict": "UNSAFE", "decided_by": "error"})
            continue
        entry = dict(verdict_for(n), output=f"job_{os.path.splitext(n)[0]}_00001_.png")
        report.append(entry)
        out.append({"filename": entry["output"], "type": "base64",
                    "data": base64.b64encode(png_bytes(entry)).decode()})
    out.append({"filename": "job_report.json", "type": "base64",
                "data": base64.b64encode(json.dumps({"images": report}).encode()).decode()})
    return {"images": out}


class FakeRunPod(BaseHTTPRequestHandler):
    jobs: dict = {}
    requests: list = []
    lock = threading.Lock()
    runsync_pending = False  # /runsync answers IN_PROGRESS (the client must fall back to polling)

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, code: int, doc) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        with self.lock:
            self.requests.append((self.command, self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            self._send(401, {"error": "Unauthorized request, please check your API key."})
            return False
        return True

    def do_POST(self):
        if not self._authorized():
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        route = self.path.rsplit("/", 1)[-1]
        if not self.path.startswith("/v2/ep123/") or route not in ("run", "runsync"):
            return self._send(404, {"error": "not found"})
        with self.lock:
            job_id = f"job-{len(self.jobs) + 1}"
            self.jobs[job_id] = {"payload": body, "polls": 0}
        inp = body["input"]
        if route == "runsync" and not self.runsync_pending:
            return self._send(200, {"id": job_id, "status": "COMPLETED", "delayTime": 5, "executionTime": 20,
                                    "output": worker_output(inp["workflow"], inp.get("images") or [])})
        self._send(200, {"id": job_id, "status": "IN_PROGRESS" if route == "runsync" else "IN_QUEUE"})

    def do_GET(self):
        if not self._authorized():
            return
        prefix = "/v2/ep123/status/"
        if not self.path.startswith(prefix):
            return self._send(404, {"error": "not found"})
        job_id = self.path[len(prefix):]
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return self._send(404, {"error": "job not found"})
            job["polls"] += 1
            polls = job["polls"]
        inp = job["payload"]["input"]
        if polls == 1:
            return self._send(200, {"id": job_id, "status": "IN_QUEUE"})
        if polls == 2:
            return self._send(200, {"id": job_id, "status": "IN_PROGRESS"})
        if "3" in inp["workflow"]:  # the failure case: a node that errors
            err = {"error": "Job processing failed",
                   "details": ["Workflow execution error: Node Type: SafeCutBEN2, Node ID: 3, Message: boom"]}
            return self._send(200, {"id": job_id, "status": "FAILED", "error": json.dumps(err)})
        if inp["workflow"].get("2", {}).get("inputs", {}).get("filename_prefix") == "never":
            return self._send(200, {"id": job_id, "status": "IN_PROGRESS"})
        self._send(200, {"id": job_id, "status": "COMPLETED", "delayTime": 5, "executionTime": 20,
                         "output": worker_output(inp["workflow"], inp.get("images") or [])})


@pytest.fixture()
def runpod():
    FakeRunPod.jobs = {}
    FakeRunPod.requests = []
    FakeRunPod.runsync_pending = False
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeRunPod)
    srv.timeout = 5
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v2/ep123"
    srv.shutdown()
    srv.server_close()
    t.join(timeout=5)


@pytest.fixture()
def files(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    paths = []
    for name in ("cat.png", "bad_knife.png"):
        p = d / name
        p.write_bytes(png_bytes(mode="RGB", size=(5, 4)))
        paths.append(str(p))
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"input": {"workflow": WORKFLOW}}))
    return {"payload": str(payload), "images": paths, "out": str(tmp_path / "out"), "tmp": tmp_path}


def run_cli(*args) -> int:
    return cli.main(["client", *args, "--poll", "0.02", "--timeout", "10"])


def rows(out: str) -> list[list[str]]:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines[0] == client.HEADER
    return [ln.split("\t") for ln in lines[1:]]


# ---- make_payload / payload handling -------------------------------------------------------------
def test_make_payload_encodes_images_and_sets_uploads(files):
    payload = client.make_payload(WORKFLOW, files["images"])
    inp = payload["input"]
    assert [i["name"] for i in inp["images"]] == ["cat.png", "bad_knife.png"]
    with open(files["images"][0], "rb") as f:
        assert base64.b64decode(inp["images"][0]["image"]) == f.read()
    assert inp["workflow"]["1"]["inputs"]["uploads"] == "cat.png, bad_knife.png"
    assert WORKFLOW["1"]["inputs"]["uploads"] == ""  # the caller's workflow is not modified
    json.dumps(payload)  # serialisable as is


def test_make_payload_refuses_duplicate_names_and_ui_format(tmp_path, files):
    other = tmp_path / "x"
    other.mkdir()
    dup = other / "cat.png"
    dup.write_bytes(b"\x89PNG")
    with pytest.raises(client.ClientError, match="two images are named 'cat.png'"):
        client.make_payload(WORKFLOW, [files["images"][0], str(dup)])
    with pytest.raises(ValueError, match="API-format"):
        client.make_payload({"nodes": [], "links": []}, [])


def test_images_replace_same_name_and_keep_others(files):
    payload = {"input": {"workflow": WORKFLOW, "images": [{"name": "cat.png", "image": "AAAA"},
                                                          {"name": "mask.png", "image": "BBBB"}]}}
    out = client.apply_images(payload, files["images"][:1])
    imgs = {i["name"]: i["image"] for i in out["input"]["images"]}
    assert set(imgs) == {"cat.png", "mask.png"} and imgs["mask.png"] == "BBBB" and imgs["cat.png"] != "AAAA"
    assert out["input"]["workflow"]["1"]["inputs"]["uploads"] == "cat.png"


def test_single_core_loadimage_gets_the_image(files):
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}
    assert client.make_payload(wf, files["images"][:1])["input"]["workflow"]["1"]["inputs"]["image"] == "cat.png"


@pytest.mark.parametrize("endpoint, base", [
    ("abc123", "https://api.runpod.ai/v2/abc123"),
    ("https://api.runpod.ai/v2/abc123/", "https://api.runpod.ai/v2/abc123"),
    ("https://api.runpod.ai/v2/abc123/runsync", "https://api.runpod.ai/v2/abc123"),
    ("http://127.0.0.1:9/v2/x/run", "http://127.0.0.1:9/v2/x"),
])
def test_endpoint_base(endpoint, base):
    assert client.endpoint_base(endpoint) == base


def test_usage_errors_exit_2(files, tmp_path, monkeypatch, capsys, runpod):
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    assert run_cli(files["payload"], "--endpoint", runpod) == 2
    assert "no API key" in capsys.readouterr().err
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "last_node_id": 0}))
    assert run_cli(str(ui), "--endpoint", runpod, "--api-key", API_KEY) == 2
    assert "UI-format" in capsys.readouterr().err
    assert run_cli(str(tmp_path / "missing.json"), "--endpoint", runpod, "--api-key", API_KEY) == 2
    assert run_cli(files["payload"], "--endpoint", runpod, "--api-key", API_KEY,
                   "--images", str(tmp_path / "nope.png")) == 2
    assert "cannot read image" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: neither --endpoint nor --local
        cli.main(["client", files["payload"]])
    assert exc.value.code == 2
    assert not FakeRunPod.requests  # nothing was sent


# ---- RunPod ------------------------------------------------------------------------------------------
def test_run_and_poll_saves_images_and_prints_verdicts(files, runpod, capsys, monkeypatch):
    monkeypatch.setenv("RUNPOD_API_KEY", API_KEY)  # the default key source
    rc = run_cli(files["payload"], "--endpoint", runpod, "--out", files["out"], "--images", *files["images"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    # auth header on every call; /run then /status polls until COMPLETED (IN_QUEUE, IN_PROGRESS, COMPLETED)
    assert [r[2] for r in FakeRunPod.requests] == [f"Bearer {API_KEY}"] * len(FakeRunPod.requests)
    assert FakeRunPod.requests[0][:2] == ("POST", "/v2/ep123/run")
    assert [r[1] for r in FakeRunPod.requests[1:]] == ["/v2/ep123/status/job-1"] * 3
    assert "IN_QUEUE" in cap.err and "IN_PROGRESS" in cap.err and "COMPLETED" in cap.err
    sent = FakeRunPod.jobs["job-1"]["payload"]["input"]
    assert sent["workflow"]["1"]["inputs"]["uploads"] == "cat.png, bad_knife.png"
    assert [i["name"] for i in sent["images"]] == ["cat.png", "bad_knife.png"]
    # files saved, PNG metadata read back
    saved = sorted(os.listdir(files["out"]))
    assert saved == ["job_bad_knife_00001_.png", "job_cat_00001_.png", "job_report.json"]
    with Image.open(os.path.join(files["out"], "job_cat_00001_.png")) as im:
        assert json.loads(im.text["safecut"])["verdict"] == "SAFE"
    got = {os.path.basename(r[0]): r[1:] for r in rows(cap.out)}
    assert got == {"job_cat_00001_.png": ["SAFE", "keywords", "-", "a photo of cat"],
                   "job_bad_knife_00001_.png": ["UNSAFE", "classifier", "0.910", "a knife attack"]}


def test_runsync(files, runpod, capsys):
    rc = run_cli(files["payload"], "--endpoint", runpod, "--api-key", API_KEY, "--sync", "--out", files["out"],
                 "--images", files["images"][0])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert [r[1] for r in FakeRunPod.requests] == ["/v2/ep123/runsync"]
    assert [r[1] for r in rows(cap.out)] == ["SAFE"]


def test_runsync_not_done_falls_back_to_polling(files, runpod, capsys):
    FakeRunPod.runsync_pending = True
    rc = run_cli(files["payload"], "--endpoint", runpod, "--api-key", API_KEY, "--sync", "--out", files["out"],
                 "--images", files["images"][1])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert [r[1] for r in FakeRunPod.requests][:2] == ["/v2/ep123/runsync", "/v2/ep123/status/job-1"]
    assert [r[1:3] for r in rows(cap.out)] == [["UNSAFE", "classifier"]]


def test_failed_job_exits_1_with_the_error(files, runpod, capsys):
    wf = dict(WORKFLOW, **{"3": {"class_type": "SafeCutBEN2", "inputs": {}}})
    p = files["tmp"] / "failing.json"
    p.write_text(json.dumps(wf))  # a bare API workflow is accepted too
    rc = run_cli(str(p), "--endpoint", runpod, "--api-key", API_KEY, "--out", files["out"],
                 "--images", files["images"][0])
    cap = capsys.readouterr()
    assert rc == 1
    assert "FAILED" in cap.err and "Job processing failed" in cap.err and "Message: boom" in cap.err
    assert cap.out == ""


def test_wrong_key_shows_status_and_body(files, runpod, capsys):
    rc = run_cli(files["payload"], "--endpoint", runpod, "--api-key", "wrong", "--out", files["out"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "HTTP 401" in err and "Unauthorized request" in err and "RUNPOD_API_KEY" in err


def test_timeout_exits_1_and_names_the_job(files, runpod, capsys):
    wf = json.loads(json.dumps(WORKFLOW))
    wf["2"]["inputs"]["filename_prefix"] = "never"
    p = files["tmp"] / "slow.json"
    p.write_text(json.dumps(wf))
    rc = cli.main(["client", str(p), "--endpoint", runpod, "--api-key", API_KEY, "--out", files["out"],
                   "--poll", "0.02", "--timeout", "0.5"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "job-1" in err and "still IN_PROGRESS" in err and "/cancel/job-1" in err


def test_unreachable_endpoint_exits_1(files, capsys):
    rc = run_cli(files["payload"], "--endpoint", "http://127.0.0.1:9/v2/ep123", "--api-key", API_KEY,
                 "--out", files["out"])
    assert rc == 1
    assert "no answer" in capsys.readouterr().err


# ---- result decoding -----------------------------------------------------------------------------
def test_errored_image_in_report_and_s3_urls(tmp_path, capsys):
    report = {"images": [{"file": "a.png", "output": "a_cut.png", "verdict": "SAFE", "decided_by": "keywords",
                          "p_unsafe": 0.1, "caption": "a cup"},
                         {"file": "broken.png", "error": "cannot decode", "verdict": "UNSAFE",
                          "decided_by": "error"}]}
    output = {"images": [
        {"filename": "a_cut.png", "type": "base64", "data": "data:image/png;base64,"
         + base64.b64encode(png_bytes()).decode()},  # no safecut chunk: the report supplies the verdict
        {"filename": "../../evil_report.json", "type": "base64",
         "data": base64.b64encode(json.dumps(report).encode()).decode()},
        {"filename": "b_cut.png", "type": "s3_url", "data": "https://bucket.example/b_cut.png?sig=1"},
    ]}
    res = client.collect_worker_output(output)
    lines, errs = client.save_and_report(res, str(tmp_path / "o"))
    assert not errs and sorted(os.listdir(tmp_path / "o")) == ["a_cut.png", "evil_report.json"]
    by = {os.path.basename(ln.file): ln for ln in lines}
    assert (by["a_cut.png"].verdict, by["a_cut.png"].p_unsafe, by["a_cut.png"].error) == ("SAFE", "0.100", False)
    assert by["broken.png"].error and by["broken.png"].caption == "error: cannot decode"
    assert by["b_cut.png"].caption == "s3_url https://bucket.example/b_cut.png?sig=1"


def test_bad_base64_and_worker_errors_are_errors():
    res = client.collect_worker_output({"images": [{"filename": "x.png", "type": "base64", "data": "@@@"}],
                                        "errors": ["Failed to fetch image data for y.png from /view endpoint."]})
    assert not res.files and len(res.errors) == 2 and "bad base64" in res.errors[1]
    empty = client.collect_worker_output({"status": "success_no_images", "images": []})
    assert "returned no images" in empty.errors[0]


# ---- --local (a fake ComfyUI) --------------------------------------------------------------------
class FakeComfy(BaseHTTPRequestHandler):
    uploads: dict = {}
    prompts: dict = {}
    history_calls = 0
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def _send(self, code, doc, ctype="application/json"):
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/upload/image":
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
            parts = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
            img = parts["image"]
            assert parts["overwrite"].get_content().strip() == "true"
            with self.lock:
                self.uploads[img.get_filename()] = img.get_payload(decode=True)
            return self._send(200, {"name": img.get_filename(), "subfolder": "", "type": "input"})
        if self.path == "/prompt":
            body = json.loads(raw)
            wf = body["prompt"]
            if any(n["class_type"] == "Missing" for n in wf.values()):
                return self._send(400, {"error": {"type": "prompt_outputs_failed_validation",
                                                  "message": "Prompt outputs failed validation", "details": ""},
                                        "node_errors": {"9": {"errors": [{"message": "Value not in list",
                                                                          "details": "uploads: x.png"}],
                                                              "class_type": "Missing"}}})
            with self.lock:
                pid = f"p{len(self.prompts) + 1}"
                self.prompts[pid] = wf
            return self._send(200, {"prompt_id": pid, "number": 1, "node_errors": {}})
        self._send(404, {})

    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        if u.path.startswith("/history/"):
            pid = u.path.rsplit("/", 1)[-1]
            with self.lock:
                FakeComfy.history_calls += 1
                first = FakeComfy.history_calls == 1
            if first or pid not in self.prompts:
                return self._send(200, {})  # not finished yet
            wf = self.prompts[pid]
            names = [n.strip() for n in wf["1"]["inputs"]["uploads"].split(",") if n.strip()]
            imgs = [{"filename": f"job_{os.path.splitext(n)[0]}_00001_.png", "subfolder": "safecut",
                     "type": "output"} for n in names]
            imgs += [{"filename": "job_report.json", "subfolder": "safecut", "type": "output"},
                     {"filename": "preview.png", "subfolder": "", "type": "temp"}]
            status = {"status_str": "success", "completed": True, "messages": []}
            return self._send(200, {pid: {"prompt": [], "outputs": {"2": {"images": imgs, "text": ["ignored"]}},
                                          "status": status}})
        if u.path == "/view":
            q = dict(urllib.parse.parse_qsl(u.query))
            assert q["type"] == "output" and q["subfolder"] == "safecut"
            name = q["filename"]
            if name == "job_report.json":
                rep = [dict(verdict_for(n), output=f"job_{os.path.splitext(n)[0]}_00001_.png")
                       for n in self.uploads]
                return self._send(200, json.dumps(rep).encode())
            src = name[len("job_"):-len("_00001_.png")] + ".png"
            if src not in self.uploads:
                return self._send(404, b"missing", "text/plain")
            return self._send(200, png_bytes(verdict_for(src)), "image/png")
        self._send(404, {})


@pytest.fixture()
def comfy():
    FakeComfy.uploads, FakeComfy.prompts, FakeComfy.history_calls = {}, {}, 0
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeComfy)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    t.join(timeout=5)


def test_local_uploads_queues_polls_and_views(files, comfy, capsys):
    rc = run_cli(files["payload"], "--local", comfy, "--out", files["out"], "--images", *files["images"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    with open(files["images"][0], "rb") as f:
        assert FakeComfy.uploads["cat.png"] == f.read()
    assert FakeComfy.prompts["p1"]["1"]["inputs"]["uploads"] == "cat.png, bad_knife.png"
    assert FakeComfy.history_calls >= 2  # polled until finished
    assert sorted(os.listdir(files["out"])) == ["job_bad_knife_00001_.png", "job_cat_00001_.png",
                                                 "job_report.json"]  # temp previews are skipped
    got = {os.path.basename(r[0]): r[1] for r in rows(cap.out)}
    assert got == {"job_cat_00001_.png": "SAFE", "job_bad_knife_00001_.png": "UNSAFE"}


def test_local_validation_error_exits_1(files, comfy, capsys):
    wf = dict(WORKFLOW, **{"9": {"class_type": "Missing", "inputs": {}}})
    p = files["tmp"] / "bad.json"
    p.write_text(json.dumps({"input": {"workflow": wf}}))
    rc = run_cli(str(p), "--local", comfy, "--out", files["out"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "HTTP 400" in err and "prompt_outputs_failed_validation" in err and "node 9 (Missing)" in err
