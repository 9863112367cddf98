import hashlib
import os

import pytest

from safecut.models import modelfiles
from safecut.errors import ChecksumError, ModelNotFoundError
from safecut.models.registry import REGISTRY, ModelSpec, RemoteFile


def _spec(name, data: bytes, kind="ben2", sha=None, size=None):
    return ModelSpec(name, kind, "org/repo", (RemoteFile(name, len(data) if size is None else size,
                                                         sha or hashlib.sha256(data).hexdigest()),))


@pytest.fixture()
def fake_hub(monkeypatch):
    """Replaces only the network call: serves bytes from a dict, records calls."""
    served, calls = {}, []

    def hub(repo_id, filename, revision, dest):
        calls.append((repo_id, filename))
        out = os.path.join(dest, filename)
        with open(out, "wb") as f:
            f.write(served[filename])
        return out

    monkeypatch.setattr(modelfiles, "_hub_download", hub)
    return served, calls


def test_missing_model_error_names_file_folders_and_command(models_dir):
    with pytest.raises(ModelNotFoundError) as e:
        modelfiles.resolve("ben2", "BEN2_Base.onnx", allow_download=False)
    msg = str(e.value)
    assert "BEN2_Base.onnx" in msg
    assert str(models_dir / "ben2") in msg and str(models_dir / "ben2_onnx") in msg
    assert "python -m safecut models fetch BEN2_Base.onnx" in msg


def test_offline_env_blocks_download(models_dir, monkeypatch, fake_hub):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="Downloads are off"):
        modelfiles.resolve("ben2", "BEN2_Base.onnx")
    assert fake_hub[1] == []


def test_unknown_model_is_not_fetchable(models_dir):
    with pytest.raises(ModelNotFoundError, match="not a model SafeCut knows"):
        modelfiles.resolve("ben2", "mystery.onnx")


def test_found_in_second_folder_and_listed(models_dir):
    (models_dir / "ben2_onnx").mkdir()
    (models_dir / "ben2_onnx" / "custom.onnx").write_bytes(b"x")
    assert modelfiles.resolve("ben2", "custom.onnx") == str(models_dir / "ben2_onnx" / "custom.onnx")
    assert "custom.onnx" in modelfiles.list_models("ben2")
    assert modelfiles.choices("ben2")[0] == "custom.onnx" and "BEN2_Base.onnx" in modelfiles.choices("ben2")


def test_download_verifies_and_lands_under_final_name(models_dir, fake_hub, monkeypatch):
    data = b"model-bytes" * 100
    spec = _spec("good.onnx", data)
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    fake_hub[0]["good.onnx"] = data
    path = modelfiles.resolve("ben2", "good.onnx", allow_download=True)
    assert path == str(models_dir / "ben2" / "good.onnx")
    assert open(path, "rb").read() == data
    assert [n for n in os.listdir(models_dir / "ben2")] == ["good.onnx"]  # no temp leftovers
    assert modelfiles.resolve("ben2", "good.onnx", allow_download=True) == path
    assert len(fake_hub[1]) == 1  # second resolve finds it on disk


def test_corrupt_download_never_lands(models_dir, fake_hub, monkeypatch):
    data = b"expected" * 10
    spec = _spec("bad.onnx", data)
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    fake_hub[0]["bad.onnx"] = b"tampered" * 10  # same size, other content
    with pytest.raises(ChecksumError):
        modelfiles.resolve("ben2", "bad.onnx", allow_download=True)
    assert os.listdir(models_dir / "ben2") == []


def test_truncated_download_never_lands(models_dir, fake_hub, monkeypatch):
    data = b"0123456789" * 50
    spec = _spec("trunc.onnx", data)
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    fake_hub[0]["trunc.onnx"] = data[:123]
    with pytest.raises(ChecksumError, match="damaged"):
        modelfiles.resolve("ben2", "trunc.onnx", allow_download=True)
    assert os.listdir(models_dir / "ben2") == []


def test_registry_file_on_disk_with_wrong_checksum_is_refused(models_dir, monkeypatch):
    data = b"abc" * 10
    spec = _spec("placed.onnx", data)
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    (models_dir / "ben2").mkdir()
    (models_dir / "ben2" / "placed.onnx").write_bytes(b"xyz" * 10)
    with pytest.raises(ChecksumError):
        modelfiles.resolve("ben2", "placed.onnx")
    (models_dir / "ben2" / "placed.onnx").write_bytes(data)
    assert modelfiles.resolve("ben2", "placed.onnx").endswith("placed.onnx")


def test_directory_model_download(models_dir, fake_hub, monkeypatch):
    files = {"config.json": b"{}", "model.safetensors": b"w" * 64}
    spec = ModelSpec("Tiny-Flo", "florence2", "org/flo",
                     tuple(RemoteFile(n, len(b), hashlib.sha256(b).hexdigest()) for n, b in files.items()),
                     is_dir=True)
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    fake_hub[0].update(files)
    path = modelfiles.resolve("florence2", "Tiny-Flo", allow_download=True)
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    assert modelfiles.list_models("florence2") == ["Tiny-Flo"]


def test_url_hosted_file_uses_plain_download(models_dir, monkeypatch):
    data = b"nudenet" * 7
    spec = ModelSpec("n.onnx", "nudenet", "org/x", (RemoteFile("n.onnx", len(data), hashlib.sha256(data).hexdigest(),
                                                               url="https://example.invalid/n.onnx"),))
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    seen = []

    def fake_url(url, filename, dest):
        seen.append(url)
        out = os.path.join(dest, filename)
        open(out, "wb").write(data)
        return out

    monkeypatch.setattr(modelfiles, "_url_download", fake_url)
    assert modelfiles.resolve("nudenet", "n.onnx", allow_download=True).endswith("n.onnx")
    assert seen == ["https://example.invalid/n.onnx"]


def test_folder_provider_is_used(tmp_path):
    d = tmp_path / "yaml_extra" / "ben2"
    d.mkdir(parents=True)
    (d / "x.onnx").write_bytes(b"1")
    modelfiles.set_folder_provider(lambda name: [str(tmp_path / "yaml_extra" / name)])
    try:
        assert modelfiles.find("ben2", "x.onnx") == str(d / "x.onnx")
        assert modelfiles.find("ben2", "../ben2/x.onnx") is None  # no parent escapes inside ComfyUI
    finally:
        modelfiles.set_folder_provider(None)


def test_registry_entries_are_well_formed():
    for spec in REGISTRY.values():
        assert spec.kind in modelfiles.FOLDERS
        for rf in spec.files:
            assert rf.sha256 is None or (len(rf.sha256) == 64 and int(rf.sha256, 16) >= 0)
    ben = REGISTRY["BEN2_Base.onnx"]
    assert ben.files[0].sha256.startswith("22cea621") and ben.files[0].size == 222_932_053


# ---- offline / hub down: fail at once, one log line, clean text ---------------------------------------------
@pytest.fixture()
def hub_spec(models_dir, monkeypatch):
    spec = _spec("h.onnx", b"x" * 10)
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return spec


def _no_dns(monkeypatch, calls):
    import socket

    def getaddrinfo(host, *a, **k):
        calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_unresolvable_hub_fails_at_once_with_one_log_line(hub_spec, models_dir, monkeypatch, caplog):
    import huggingface_hub

    dns, hub_calls = [], []
    _no_dns(monkeypatch, dns)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda **kw: hub_calls.append(kw))
    caplog.set_level("INFO")
    with pytest.raises(modelfiles.SafeCutError) as err:
        modelfiles.resolve("ben2", "h.onnx", allow_download=True)
    assert dns == ["huggingface.co"] and hub_calls == []  # never reaches the hub's 5-retry backoff loop
    msg = str(err.value)
    assert msg.startswith("Cannot download 'h.onnx': huggingface.co cannot be resolved, so this machine looks offline")
    assert str(models_dir / "ben2") in msg and "python -m safecut models fetch h.onnx" in msg and ".." not in msg
    assert [r.getMessage() for r in caplog.records] == ["SafeCut: downloading org/repo/h.onnx (0 MB) …"]
    assert os.listdir(models_dir / "ben2") == []  # no temp folder left


def test_url_host_is_checked_too(models_dir, monkeypatch):
    spec = ModelSpec("u.onnx", "nudenet", "org/x", (RemoteFile("u.onnx", 3, None, url="https://files.example/u.onnx"),))
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    dns = []
    _no_dns(monkeypatch, dns)
    with pytest.raises(modelfiles.SafeCutError, match="files.example cannot be resolved"):
        modelfiles.resolve("nudenet", "u.onnx", allow_download=True)
    assert dns == ["files.example"]


def test_behind_a_proxy_the_proxy_resolves(hub_spec, monkeypatch):
    import huggingface_hub

    dns, hub_calls = [], []
    _no_dns(monkeypatch, dns)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.local:3128")

    def hub(**kw):
        hub_calls.append(kw)
        raise OSError("proxy said no")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    with pytest.raises(modelfiles.SafeCutError, match="failed: proxy said no. Check the network"):
        modelfiles.resolve("ben2", "h.onnx", allow_download=True)
    assert dns == [] and len(hub_calls) == 1


def _requests_name_error():
    import requests
    from urllib3.exceptions import MaxRetryError, NameResolutionError

    gai = __import__("socket").gaierror(-2, "Name or service not known")
    inner = NameResolutionError("huggingface.co", None, gai)
    return requests.ConnectionError(MaxRetryError(None, "/x", inner))


def _hub_offline_error():
    """What hf_hub_download raises after its retries when DNS fails: the gaierror sits deep in the chain."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    conn = ConnectionError("[Errno -2] Name or service not known")
    conn.__cause__ = __import__("socket").gaierror(-2, "Name or service not known")
    err = LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub and we cannot find "
                                  "the requested files in the local cache. Please check your connection and try "
                                  "again or make sure your Internet connection is on.")
    err.__cause__ = conn
    return err


@pytest.mark.parametrize("make", [lambda: __import__("socket").gaierror(-2, "Name or service not known"),
                                  _requests_name_error, _hub_offline_error],
                         ids=["gaierror", "requests-NameResolutionError", "hub-LocalEntryNotFound"])
def test_name_resolution_errors_from_the_network_call_read_the_same(hub_spec, monkeypatch, make):
    calls = []

    def hub(*a):
        calls.append(a)
        raise make()

    monkeypatch.setattr(modelfiles, "_hub_download", hub)
    with pytest.raises(modelfiles.SafeCutError) as err:
        modelfiles.resolve("ben2", "h.onnx", allow_download=True)
    assert len(calls) == 1  # SafeCut itself never retries
    assert "cannot be resolved, so this machine looks offline" in str(err.value), str(err.value)


def test_other_failures_read_cleanly(hub_spec, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def hub(*a):
        raise LocalEntryNotFoundError("Please check your connection and try again or make sure your Internet "
                                      "connection is on.")

    monkeypatch.setattr(modelfiles, "_hub_download", hub)
    with pytest.raises(modelfiles.SafeCutError) as err:
        modelfiles.resolve("ben2", "h.onnx", allow_download=True)
    msg = str(err.value)
    assert "connection is on. Check the network, or place the file(s) by hand in" in msg and ".." not in msg


def test_hub_warnings_are_printed_once_under_a_root_handler(hub_spec, monkeypatch):
    """ComfyUI puts a handler on the root logger; huggingface_hub's logger has its own and propagates."""
    import io
    import logging
    import socket

    import huggingface_hub
    from huggingface_hub.utils import logging as hub_logging

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [("ok",)])
    stream = io.StringIO()
    root_handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(root_handler)
    hub_logger = logging.getLogger("huggingface_hub")
    assert hub_logger.handlers, "huggingface_hub no longer installs its own handler: revisit _HubLogsOnce"
    hub_stream = io.StringIO()
    old_streams = [h.setStream(hub_stream) for h in hub_logger.handlers]

    def hub(**kw):
        hub_logging.get_logger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise OSError("hub down")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    try:
        with pytest.raises(modelfiles.SafeCutError, match="hub down"):
            modelfiles.resolve("ben2", "h.onnx", allow_download=True)
    finally:
        logging.getLogger().removeHandler(root_handler)
        for h, old in zip(hub_logger.handlers, old_streams):
            h.setStream(old)
    printed = stream.getvalue() + hub_stream.getvalue()
    assert printed.count("Retrying in 1s") == 1, printed
    assert hub_logger.propagate is True  # restored after the call


# ---- trust on first use (safecut/models/modellock.py) ---------------------------------------------------
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def hub_with_commit(monkeypatch):
    """Like huggingface_hub with local_dir: the file plus the metadata naming the resolved commit."""
    served, calls = {}, []

    def hub(repo_id, filename, revision, dest):
        calls.append((repo_id, filename, revision))
        out = os.path.join(dest, filename)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as f:
            f.write(served[filename])
        meta = os.path.join(dest, ".cache", "huggingface", "download", filename + ".metadata")
        os.makedirs(os.path.dirname(meta), exist_ok=True)
        with open(meta, "w") as f:
            f.write(f"{COMMIT}\n\"etag\"\n1700000000.0\n")
        return out

    monkeypatch.setattr(modelfiles, "_hub_download", hub)
    return served, calls


def _lock(folder):
    import json

    from safecut.models.modellock import LOCK_NAME

    return json.load(open(folder / LOCK_NAME))


def test_unpinned_download_is_locked_then_a_tampered_file_is_refused(models_dir, hub_with_commit, monkeypatch):
    from safecut.models.modellock import LockMismatchError

    data = b"gguf-bytes" * 200
    spec = ModelSpec("Guard-Q4.gguf", "llm", "org/guard-gguf", (RemoteFile("Guard-Q4.gguf"),))
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    hub_with_commit[0]["Guard-Q4.gguf"] = data
    path = modelfiles.resolve("llm", spec.name, allow_download=True)
    entry = _lock(models_dir / "LLM")[spec.name]
    assert (entry["repo"], entry["revision"], entry["source"]) == ("org/guard-gguf", COMMIT, "download")
    assert entry["files"]["Guard-Q4.gguf"] == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert modelfiles.resolve("llm", spec.name) == path  # a later load verifies and passes
    tampered = bytearray(data)
    tampered[100] ^= 1  # same size, one bit
    with open(path, "wb") as f:
        f.write(tampered)
    os.utime(path, ns=(1, 1))  # a new mtime: no stale "already verified" memo
    with pytest.raises(LockMismatchError, match="not the locked"):
        modelfiles.resolve("llm", spec.name)
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(LockMismatchError, match="bytes"):
        modelfiles.resolve("llm", spec.name)
    from safecut.engines import guard

    monkeypatch.setitem(guard.FAMILIES, "Guard", guard.Family("Guard", ("Guard",), "guard", "llama3"))
    (res,) = guard.SafetyClassifier("Guard", "Q4").classify(["a cat"])  # the classifier fails closed
    assert (res.verdict, res.decided_by) == ("UNSAFE", "error") and "LockMismatchError" in res.error


def test_file_placed_by_hand_is_locked_at_first_load(models_dir, monkeypatch):
    from safecut.models.modellock import LockMismatchError

    spec = ModelSpec("placed.gguf", "llm", "org/x", (RemoteFile("placed.gguf"),))
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    (models_dir / "LLM").mkdir()
    (models_dir / "LLM" / "placed.gguf").write_bytes(b"v1" * 50)
    modelfiles.resolve("llm", "placed.gguf")
    entry = _lock(models_dir / "LLM")["placed.gguf"]
    assert entry["source"] == "disk" and entry["revision"] is None
    (models_dir / "LLM" / "placed.gguf").write_bytes(b"v2" * 50)
    os.utime(models_dir / "LLM" / "placed.gguf", ns=(2, 2))
    with pytest.raises(LockMismatchError):
        modelfiles.resolve("llm", "placed.gguf")


def test_directory_model_locks_unpinned_files_and_verify_reports_each_state(models_dir, hub_with_commit,
                                                                           monkeypatch, capsys):
    from safecut.app import cli

    files = {"config.json": b'{"a": 1}', "model.safetensors": b"w" * 64, "tokenizer.json": b"{}"}
    weights = hashlib.sha256(files["model.safetensors"]).hexdigest()
    spec = ModelSpec("Flo-Big", "florence2", "org/flo", (RemoteFile("config.json"),
                                                         RemoteFile("model.safetensors", 64, weights),
                                                         RemoteFile("tokenizer.json")), is_dir=True)
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    hub_with_commit[0].update(files)
    path = modelfiles.resolve("florence2", "Flo-Big", allow_download=True)
    entry = _lock(models_dir / "florence2")["Flo-Big"]
    assert sorted(entry["files"]) == ["config.json", "tokenizer.json"] and entry["revision"] == COMMIT
    (models_dir / "LLM").mkdir()
    (models_dir / "LLM" / "my-own.gguf").write_bytes(b"GGUF")
    assert cli.main(["models", "verify"]) == 0
    out = capsys.readouterr().out
    assert "pinned     model.safetensors" in out and "locked     config.json" in out
    assert "unverified my-own.gguf" in out
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write('{"a": 2}')
    os.utime(os.path.join(path, "config.json"), ns=(3, 3))
    assert cli.main(["models", "verify"]) == 1
    assert "BAD florence2/Flo-Big" in capsys.readouterr().out


def test_which_default_model_files_are_pinned_and_which_are_locked():
    """The README's table: what the registry pins (public sha256) and what trust on first use covers."""
    from safecut.models import modellock
    from safecut.models.profiles import PROFILES

    names = sorted({n for files in PROFILES.values() for n in files} | {"320n.onnx"})
    pinned = {n: [rf.path for rf in REGISTRY[n].files if rf.sha256] for n in names}
    locked = {n: [rf.path for rf in modellock.unpinned(REGISTRY[n])] for n in names}
    assert {n for n in names if not locked[n]} == {"BEN2_Base.onnx", "320n.onnx", "640m.onnx"}
    assert pinned["Florence-2-base-ft"] == ["model.safetensors"] and "config.json" in locked["Florence-2-base-ft"]
    for n in ("Llama-Guard-3-1B-Q4_K_M.gguf", "Llama-Guard-3-1B-Q8_0.gguf", "Florence-2-large-ft"):
        assert pinned[n] == [] and locked[n], n  # no public pin found: locked at the first download
