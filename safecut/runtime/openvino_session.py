"""OpenVINO as a CPU runtime for SafeCut's ONNX models (BEN2, NudeNet), made safe to use in ComfyUI's process.

OpenVINO reads the .onnx file directly. Three rules:

* Always an explicit precision hint (``INFERENCE_PRECISION_HINT`` f32 or bf16): OpenVINO's own default turns bf16
  on wherever AVX512-BF16 exists, AMD Zen 4 included, where it is slower than f32 (measured) and where bf16 MatMul
  results were reported wrong.
* Before the first in-process compile on a machine, a child process compiles and runs a tiny model with the
  chosen precision and checks the result against NumPy (``probe``). A crash there (SIGFPE inside compile_model was
  reported on an EPYC VM), a wrong result or a timeout marks that precision unusable: SafeCut then runs ONNX
  Runtime and says why, once. The verdict is kept per CPU model + OpenVINO version + precision in
  ``$SAFECUT_CACHE_DIR/openvino-probe.json`` (default ``~/.cache/safecut``), so later starts cost nothing.
* The session looks like an ONNX Runtime one (``run``, ``get_inputs``, ``get_outputs``), so the engines keep one
  code path for pre/post-processing, interrupt (between images) and unloading (dropping the last reference frees
  the compiled model).

``python -m safecut.runtime.openvino_session --probe f32|bf16`` is the child's entry point.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass

from . import cpu
from .. import userdirs

log = logging.getLogger("safecut.openvino")

PRECISIONS = ("f32", "bf16")
PROBE_TIMEOUT_S = 120.0      # a healthy probe takes ~1-2 s (import + two compiles); a hang is a refusal
_lock = threading.Lock()
_verdicts: dict[str, tuple[bool, str]] = {}   # this process's answers (the file keeps them across processes)


def version() -> str | None:
    """The installed OpenVINO's version, without importing it (cheap; None when it is not installed)."""
    import importlib.metadata as md

    try:
        return md.version("openvino")
    except md.PackageNotFoundError:
        return None


def _verdict_file() -> str:
    return userdirs.cache_dir("openvino-probe.json")


def _key(precision: str) -> str:
    return f"{cpu.model_name()}|{cpu.cpu_class()}|openvino {version()}|{precision}"


def probe_command(precision: str) -> list[str]:
    """The child process that compiles and checks a tiny model (tests replace it with one that crashes)."""
    return [sys.executable, "-m", "safecut.runtime.openvino_session", "--probe", precision]


def usable(precision: str) -> tuple[bool, str]:
    """(True, "") when OpenVINO is installed and its probe passed on this machine for ``precision``; else (False,
    why). ``SAFECUT_OPENVINO=0`` refuses OpenVINO everywhere (the ONNX Runtime path, as before)."""
    if os.environ.get("SAFECUT_OPENVINO", "1").strip() == "0":
        return False, "SAFECUT_OPENVINO=0"
    if version() is None:
        return False, "OpenVINO is not installed (pip install openvino)"
    key = _key(precision)
    with _lock:
        if key in _verdicts:
            return _verdicts[key]
        stored = _read_verdicts().get(key)
        if stored is not None:
            verdict = (bool(stored.get("ok")), str(stored.get("why", "")))
        else:
            verdict = _run_probe(precision)
            _write_verdict(key, verdict)
        _verdicts[key] = verdict
        return verdict


def _read_verdicts() -> dict:
    try:
        with open(_verdict_file()) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_verdict(key: str, verdict: tuple[bool, str]) -> None:
    data = _read_verdicts()
    data[key] = {"ok": verdict[0], "why": verdict[1], "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = _verdict_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    except OSError as exc:   # an unwritable cache only costs a probe per process
        log.debug("SafeCut: could not store the OpenVINO probe verdict in %s (%s)", path, exc)


def _run_probe(precision: str) -> tuple[bool, str]:
    import subprocess   # here, not at module level: importing the pack must stay cheap (~20 ms cold)

    cmd = probe_command(precision)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_pack_parent(), os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return False, f"the OpenVINO {precision} probe did not finish within {PROBE_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return False, f"the OpenVINO {precision} probe could not start ({exc})"
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [""]
    if proc.returncode < 0:
        import signal

        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return False, f"OpenVINO {precision} crashed this CPU's probe ({name} in compile/run)"
    if proc.returncode != 0:
        return False, f"the OpenVINO {precision} probe failed (exit {proc.returncode}: {tail[0][:200]})"
    if "PROBE OK" not in proc.stdout:
        return False, f"OpenVINO {precision} gave wrong results on this CPU ({tail[0][:200]})"
    log.debug("SafeCut: OpenVINO %s probe passed in %.1f s", precision, time.perf_counter() - t0)
    return True, ""


def _pack_parent() -> str:
    """The folder holding the ``safecut`` package, so the child imports this same copy."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---- the child: compile and check a tiny model ------------------------------------------------------
def _probe_main(precision: str) -> int:
    """Conv + MatMul + Softmax, the ops BEN2 and NudeNet spend their time in, at sizes that take the blocked
    kernels (a 1x1 toy would not), checked against NumPy in float64."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 16, 32, 32)).astype(np.float32)
    w = (rng.standard_normal((32, 16, 3, 3)) * 0.1).astype(np.float32)
    m = (rng.standard_normal((32 * 32 * 32 // 64, 256)) * 0.05).astype(np.float32)   # [512, 256]
    p = ops.parameter(list(x.shape), np.float32, name="x")
    conv = ops.relu(ops.convolution(p, ops.constant(w), [1, 1], [1, 1], [1, 1], [1, 1]))
    flat = ops.reshape(conv, ops.constant(np.array([64, 512], np.int64)), False)
    out = ops.softmax(ops.matmul(flat, ops.constant(m), False, False), 1)
    model = ov.Model([out], [p], "safecut_probe")
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                      "INFERENCE_NUM_THREADS": "1"})
    got = np.asarray(compiled({"x": x})[compiled.output(0)], np.float64)
    ran = compiled.get_property("INFERENCE_PRECISION_HINT")
    # reference in float64
    xd, wd = x.astype(np.float64), w.astype(np.float64)
    pad = np.pad(xd, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([pad[0, :, i:i + 32, j:j + 32] for i in range(3) for j in range(3)], 1)   # [16, 9, 32, 32]
    ref = np.einsum("ockl,cklhw->ohw", wd, cols.reshape(16, 3, 3, 32, 32))
    ref = np.maximum(ref, 0).reshape(64, 512) @ m.astype(np.float64)
    ref = np.exp(ref - ref.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    err = float(np.abs(got - ref).max())
    limit = 1e-4 if precision == "f32" else 2e-2
    if got.shape != ref.shape or not np.isfinite(got).all() or err > limit:
        print(f"PROBE WRONG max abs error {err:.3g} > {limit:g}", flush=True)
        return 0
    print(f"PROBE OK max abs error {err:.3g} (ran {ran.get_type_name()})", flush=True)
    return 0


# ---- the session ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Port:
    """What ``get_inputs()``/``get_outputs()`` of an ORT session give: name, shape (str for a dynamic dim), type."""
    name: str
    shape: list
    type: str


_ONNX_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "i64": "tensor(int64)", "u8": "tensor(uint8)",
               "bf16": "tensor(bfloat16)", "i32": "tensor(int32)"}


def _port(p) -> _Port:
    shape = [d.get_length() if d.is_static else "dynamic" for d in p.get_partial_shape()]
    return _Port(p.get_any_name(), shape, _ONNX_TYPES.get(p.get_element_type().get_type_name(), "tensor(float)"))


def model_cache_dir() -> str | None:
    """Where OpenVINO keeps compiled blobs (``SAFECUT_OV_CACHE=1``; off by default: see README "Which CPU")."""
    if os.environ.get("SAFECUT_OV_CACHE", "0") != "1":
        return None
    return userdirs.cache_dir("openvino-blobs")


def _framework_metadata(model) -> dict:
    try:
        if not model.has_rt_info(["framework"]):
            return {}
        keys = list(model.get_rt_info()["framework"])   # a dict of OVAny values
        return {k: model.get_rt_info(["framework", k]).astype(str) for k in keys}
    except Exception:   # metadata is a nicety (label names); the model runs without it
        return {}


class OpenVINOSession:
    """A compiled OpenVINO CPU model with the slice of ONNX Runtime's InferenceSession the engines use."""

    def __init__(self, path: str, precision: str, threads: int):
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO precision '{precision}' is not one of {PRECISIONS}")
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": str(threads)}
        cache = model_cache_dir()
        if cache:
            os.makedirs(cache, exist_ok=True)
            config["CACHE_DIR"] = cache
        self.requested = precision
        model = core.read_model(path)
        self._meta = _framework_metadata(model)
        # from the path when blobs are cached: OpenVINO then skips the ONNX import on a cache hit
        self._compiled = core.compile_model(path if cache else model, "CPU", config)
        del model
        # what really runs: OpenVINO 2026.4 on AMD Zen 4 (avx512_bf16, no AMX) reports no BF16 capability and
        # compiles a bf16 request as f32
        got = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = got.get_type_name() if hasattr(got, "get_type_name") else str(got)
        self._request = self._compiled.create_infer_request()
        self._inputs = [_port(p) for p in self._compiled.inputs]
        self._outputs = [_port(p) for p in self._compiled.outputs]
        self._lock = threading.Lock()   # one infer request: concurrent runs take turns (ORT sessions allow it)

    def get_inputs(self) -> list[_Port]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Port]:
        return list(self._outputs)

    def get_modelmeta(self):
        """ONNX metadata_props (NudeNet's label names), which OpenVINO's ONNX reader keeps as rt_info."""
        from types import SimpleNamespace

        return SimpleNamespace(custom_metadata_map=dict(self._meta))

    def get_providers(self) -> list[str]:
        return [f"OpenVINO-{self.precision}"]

    def run(self, output_names, feed: dict) -> list:
        import numpy as np

        names = output_names or [o.name for o in self._outputs]
        with self._lock:
            self._request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
            # copies: the request's output buffers are reused by the next call
            return [np.array(self._request.get_tensor(n).data, copy=True) for n in names]


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--probe" and argv[1] in PRECISIONS:
        return _probe_main(argv[1])
    for p in PRECISIONS:
        ok, why = usable(p)
        print(f"OpenVINO {version()} {p}: {'usable' if ok else 'refused: ' + why}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
