"""The bench sections. Each takes a :class:`Ctx` and fills a :class:`bench.common.Section`.

Timing rules: every number is wall-clock ``time.perf_counter`` on this machine; warm numbers come after
one untimed warm-up call; ``runs`` timed repetitions for calls under ~10 s, ``heavy_runs`` for longer
ones (BEN2 at 1024², Florence batches, the naive classifier, the full pipeline); tables show median
(min–max, n).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .common import Section, load_avg, measure, quiet_fds, stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Caption mix for the classifier and the gate: 6 of 10 (60 %) are settled SAFE by the default keyword
# gate; 4 need the classifier (sensitive words, or nothing the gate knows).
CAPTIONS = [
    "A product shot of a brown leather handbag on a white background.",
    "A ceramic coffee mug with a blue logo on a wooden table.",
    "A golden retriever dog running on the beach at sunset.",
    "A mountain landscape with a lake and pine trees under a clear sky.",
    "A pair of white sneakers photographed from the side on a grey floor.",
    "A bowl of fresh fruit with apples, bananas and grapes on a kitchen table.",
    "A man holding a kitchen knife while cutting vegetables on a board.",
    "A woman in red lingerie posing in front of a mirror.",
    "A person lying on the ground next to a pool of blood.",
    "Two people talking at a crowded concert with bright stage lights.",
]
SAFE_SHARE = 0.6


@dataclass
class Ctx:
    quick: bool
    runs: int
    heavy_runs: int
    out: str
    paths: dict
    builds: dict
    florence_tokens: int = 32
    florence_batch: int = 8
    pipeline_images: int = 4
    log: object = print
    shared: dict = field(default_factory=dict)     # results one section hands to another

    @property
    def size(self) -> tuple[int, int]:
        return (192, 256) if self.quick else (768, 1024)


def make_images(n: int, hw: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Deterministic photo-like test images: a gradient background, a bright ellipse 'subject', noise."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        bg = np.stack([0.2 + 0.3 * xx / w, 0.25 + 0.2 * yy / h, np.full_like(xx, 0.3 + 0.05 * i)], -1)
        cy, cx = h * (0.4 + 0.2 * rng.random()), w * (0.4 + 0.2 * rng.random())
        ry, rx = h * (0.2 + 0.1 * rng.random()), w * (0.15 + 0.1 * rng.random())
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        col = rng.random(3).astype(np.float32) * 0.5 + 0.5
        img = np.where(inside[..., None], col, bg) + rng.normal(0, 0.02, (h, w, 3)).astype(np.float32)
        out.append(np.clip(img, 0, 1).astype(np.float32))
    return out


def _pil(im: np.ndarray):
    from PIL import Image

    return Image.fromarray((np.clip(im, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as tl

        tl.disable_progress_bar()
        tl.set_verbosity_error()
    except Exception:
        pass


def _unload_all():
    from safecut.cache import get_cache

    get_cache().unload()


# ---- env: machine + GEMM limit ------------------------------------------------------------------------
def _matmul_model(n: int, k: int, m: int, dtype=np.float32):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.standard_normal((k, m), dtype=np.float32), "B")
    node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    g = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, k])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, m])], [b])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def gemm_peak(threads: int, sizes, runs: int, int8: bool = False, tmpdir: str | None = None) -> dict:
    """Best fp32 (or dynamic-int8) GEMM FLOP/s of ORT MatMul over ``sizes`` (square), ``threads`` threads."""
    import tempfile

    import onnxruntime as ort

    res = {}
    for n in sizes:
        model = _matmul_model(n, n, n)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "1")
        if int8:
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with tempfile.TemporaryDirectory(dir=tmpdir) as td:
                src, dst = os.path.join(td, "a.onnx"), os.path.join(td, "b.onnx")
                onnx.save(model, src)
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
                sess = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
        else:
            sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        a = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        st = measure(lambda: sess.run(None, {"A": a}), runs, warmup=2)
        st["gflops"] = 2.0 * n ** 3 / st["median"] / 1e9
        st["gflops_best"] = 2.0 * n ** 3 / st["min"] / 1e9
        res[n] = st
    best = max(res.values(), key=lambda s: s["gflops"])
    return {"by_size": {str(k): {"median_s": v["median"], "gflops": round(v["gflops"], 1),
                                 "gflops_best": round(v["gflops_best"], 1)} for k, v in res.items()},
            "gflops": round(best["gflops"], 1), "gflops_best": round(max(v["gflops_best"] for v in res.values()), 1)}


def section_env(ctx: Ctx, sec: Section) -> None:
    from .common import cpu_info, versions

    sec.data["cpu"] = cpu_info()
    sec.data["versions"] = versions()
    sizes = [256, 512] if ctx.quick else [1024, 2048, 3072]
    threads = os.cpu_count() or 1
    fp32 = gemm_peak(threads, sizes, max(3, ctx.runs))
    int8 = gemm_peak(threads, sizes[-1:], max(3, ctx.runs), int8=True, tmpdir=ctx.out)
    one = gemm_peak(1, sizes[-1:], max(3, ctx.runs))
    ctx.shared["gemm_gflops"] = fp32["gflops"]
    ctx.shared["gemm_int8_gflops"] = int8["gflops"]
    sec.data.update(gemm_fp32=fp32, gemm_int8_dynamic=int8, gemm_fp32_1thread=one)
    sec.row(what=f"ORT MatMul fp32, {threads} threads (best of sizes {sizes})", value=f"{fp32['gflops']:.1f} GFLOP/s",
            detail=", ".join(f"{k}²: {v['gflops']} GFLOP/s" for k, v in fp32["by_size"].items()))
    sec.row(what="ORT MatMul fp32, 1 thread", value=f"{one['gflops']:.1f} GFLOP/s",
            detail=f"{threads}-thread scaling ×{fp32['gflops'] / max(one['gflops'], 1e-9):.2f}")
    sec.row(what=f"ORT MatMul dynamic int8 (quantize_dynamic), {threads} threads", value=f"{int8['gflops']:.1f} GOP/s",
            detail=f"×{int8['gflops'] / max(fp32['gflops'], 1e-9):.2f} vs fp32")
    cpu = sec.data["cpu"]
    sec.notes.append(f"CPU: {cpu.get('cpu', '?')}, {cpu.get('cores')} cores, SIMD {', '.join(cpu.get('simd', []))}, "
                     f"{cpu.get('mem_gb')} GB. Versions: " + ", ".join(f"{k} {v}" for k, v in sec.data["versions"].items()
                                                                     if v))


# ---- pack import -------------------------------------------------------------------------------------
_IMPORT_CODE = """
import importlib.util, json, sys, time
path = {path!r}
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("safecut_pack_bench", path + "/__init__.py", submodule_search_locations=[path])
mod = importlib.util.module_from_spec(spec); sys.modules["safecut_pack_bench"] = mod; spec.loader.exec_module(mod)
dt = time.perf_counter() - t
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ("torch", "onnxruntime", "transformers", "llama_cpp"))
print(json.dumps(dict(dt=dt, nodes=len(mod.NODE_CLASS_MAPPINGS), heavy=heavy)))
"""


def section_import(ctx: Ctx, sec: Section) -> None:
    code = _IMPORT_CODE.format(path=ROOT)
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)  # compile .pyc
    samples, last = [], {}
    for _ in range(max(ctx.runs, 3)):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        last = json.loads(r.stdout.strip().splitlines()[-1])
        samples.append(last["dt"])
    st = stats(samples)
    sec.data.update(import_=st, nodes=last.get("nodes"), heavy=last.get("heavy"))
    ctx.shared["import"] = st
    sec.row(what="pack import (ComfyUI-style, by path; fresh process; numpy counted)", value=f"{st['median'] * 1000:.0f} ms",
            detail=f"min {st['min'] * 1000:.0f} ms, max {st['max'] * 1000:.0f} ms, n={st['n']}; {last.get('nodes')} nodes; "
                   f"heavy modules imported: {last.get('heavy') or 'none'}")


# ---- BEN2 ----------------------------------------------------------------------------------------------
def section_ben2(ctx: Ctx, sec: Section) -> None:
    from safecut import ben2
    from safecut.cache import get_cache

    from .flops import count_flops
    from .naive import NaiveBEN2

    path, int8 = ctx.paths["ben2"], ctx.paths.get("ben2_int8")
    img = make_images(1, ctx.size, seed=3)[0]
    runs = ctx.runs if ctx.quick else ctx.heavy_runs
    fl = count_flops(path, {"input": [1, 3, 1024, 1024]})
    sec.data["flops"] = fl
    info = ctx.builds.get("ben2", {})
    sec.data["model"] = {k: info.get(k) for k in ("path", "params", "bytes", "real", "description")}

    # naive
    naive = NaiveBEN2(path)
    n = measure(lambda: naive(img), runs)
    n["load"] = naive.load_seconds
    del naive
    # ours fp32 (the engine, through the cache)
    _unload_all()
    t0 = time.perf_counter()
    first = ben2.remove_background([img], path, device="CPU")
    cold_call = time.perf_counter() - t0
    ours = measure(lambda: ben2.remove_background([img], path, device="CPU"), runs, warmup=1)
    rep = ours["_result"]
    # what a repeat call pays besides the model run: the cache's load time (0 on a hit) + the lookup itself
    # (model file resolution + cache hit with its file-signature check), timed over 200 lookups
    from safecut import modelfiles

    cache = get_cache()
    key = next(k for k in cache.keys() if k.kind == "ben2")
    t0 = time.perf_counter()
    for _ in range(200):
        p = modelfiles.resolve("ben2", path)
        with cache.use(key, lambda: None, files=[p]):
            pass
    overhead = (time.perf_counter() - t0) / 200
    res = {"naive": n, "ours": ours, "ours_first_call": cold_call, "ours_load": first.load_seconds,
           "repeat_load_seconds": rep.load_seconds, "repeat_overhead_seconds": overhead}
    if int8 and os.path.isfile(int8):
        _unload_all()
        t0 = time.perf_counter()
        fi = ben2.remove_background([img], int8, device="CPU")
        res["int8_first_call"] = time.perf_counter() - t0
        res["int8_load"] = fi.load_seconds
        res["int8"] = measure(lambda: ben2.remove_background([img], int8, device="CPU"), runs, warmup=1)
        a = np.asarray(first.masks[0])
        b = np.asarray(res["int8"]["_result"].masks[0])
        res["int8_mask_mae_vs_fp32"] = float(np.abs(a - b).mean())
        res["int8_bytes"] = os.path.getsize(int8)
    _unload_all()
    sec.data.update(res)
    ctx.shared["ben2"] = res
    gemm = ctx.shared.get("gemm_gflops")
    achieved = fl["total"] / ours["median"] / 1e9
    ctx.shared["ben2_gflops"] = achieved
    sp = n["median"] / ours["median"]
    sec.row(what="naive (seed node: 8 intra + 2 inter threads, ORT_PARALLEL, spinning, PIL pre/post)",
            value=_fs(n), detail=f"session load {n['load']:.2f} s")
    sec.row(what="SafeCut fp32 (ben2.remove_background, cached session, threads = cores, no spinning)",
            value=_fs(ours), detail=f"×{sp:.2f} vs naive; first call {cold_call:.2f} s (load {first.load_seconds:.2f} s)")
    if "int8" in res:
        sp8 = n["median"] / res["int8"]["median"]
        sec.row(what="SafeCut int8 (safecut.quantize.quantize_ben2: dynamic int8 MatMul weights)", value=_fs(res["int8"]),
                detail=f"×{sp8:.2f} vs naive, ×{ours['median'] / res['int8']['median']:.2f} vs fp32; "
                       f"{res['int8_bytes'] / 1e6:.0f} MB; mask MAE vs fp32 {res['int8_mask_mae_vs_fp32']:.4f} (random weights)")
    frac = (rep.load_seconds + overhead) / ours["median"]
    sec.row(what="repeat call on the cached model: loading + lookup",
            value=f"{(rep.load_seconds + overhead) * 1000:.2f} ms ({frac * 100:.3f} % of the call)",
            detail=f"cache load_seconds on repeat = {rep.load_seconds:.3f} s; resolve + cache hit "
                   f"{overhead * 1e6:.0f} µs")
    sec.row(what=f"graph FLOPs (Conv/MatMul, bench.flops) → achieved", value=f"{achieved:.1f} GFLOP/s",
            detail=f"{fl['total'] / 1e9:.0f} GFLOP per image" + (f"; {achieved / gemm * 100:.0f} % of this machine's "
                                                                 f"ORT fp32 GEMM ({gemm:.0f} GFLOP/s)" if gemm else ""))


def _fs(st: dict) -> str:
    from .common import fmt_stat

    return fmt_stat(st)


# ---- Llama classifier ------------------------------------------------------------------------------------
def _classifier(path: str, **kw):
    """SafeCut's classifier. Random weights put almost no probability on 'safe'/'unsafe', which the engine
    reports as an error (fail closed) before any category pass: the bench lowers that floor to 0 so the
    timing is a real model's (verdict, then categories for UNSAFE captions)."""
    import inspect

    from safecut.guard import SafetyClassifier

    if "min_answer_mass" in inspect.signature(SafetyClassifier.__init__).parameters:
        kw.setdefault("min_answer_mass", 0.0)
    return SafetyClassifier(path, threads=0, **kw)


def instruct_alias(ctx: Ctx) -> str:
    """The same GGUF under an instruct-family name: the engine then uses its short instruct prompt."""
    src = ctx.paths["llama_Q4_K_M"]
    d = os.path.join(ctx.out, "models-view", "LLM")
    os.makedirs(d, exist_ok=True)
    dst = os.path.join(d, os.path.basename(src).replace("Llama-Guard-3-1B", "Llama-3.2-1B-Instruct"))
    if dst == os.path.join(d, os.path.basename(src)):
        dst = os.path.join(d, "Llama-3.2-1B-Instruct-" + os.path.basename(src))
    if not os.path.lexists(dst):
        os.symlink(src, dst)
    return dst


def _per_caption(path: str, runs: int, **kw) -> dict:
    clf = _classifier(path, **kw)
    with quiet_fds():
        t0 = time.perf_counter()
        clf.classify(CAPTIONS[:1])
        first = time.perf_counter() - t0
        first_run = dict(clf.last_run)
        per, verdict, cats, results = [], [], [], []
        for _ in range(runs):
            results = clf.classify(CAPTIONS)
            per += clf.last_run["caption_seconds"]
            verdict += clf.last_run["suffix_seconds"]
            cats += clf.last_run.get("category_seconds", [])
        clf.classify(CAPTIONS[:2])
    repeat = dict(clf.last_run)
    _unload_all()
    return {"per_caption": stats(per), "verdict": stats(verdict), "categories": stats(cats), "first": first,
            "first_run": first_run, "repeat": repeat, "suffix_tokens": repeat.get("suffix_tokens", 0) / 2,
            "prefix_tokens": first_run.get("prefix_tokens"),
            "verdicts": [r.verdict for r in results], "decided_by": [r.decided_by for r in results]}


def section_llama(ctx: Ctx, sec: Section) -> None:
    from .naive import NaiveClassifier

    path = ctx.paths["llama_Q4_K_M"]
    runs = ctx.runs
    _unload_all()
    guard_safe = _per_caption(path, runs, threshold=1.0)     # every verdict SAFE: the verdict pass only
    guard_unsafe = _per_caption(path, max(1, runs // 2), threshold=0.0)   # every verdict UNSAFE: + categories
    inst = _per_caption(instruct_alias(ctx), runs, threshold=1.0)
    # naive: full 300-token completion per caption (random weights never emit EOS)
    naive = NaiveClassifier(path)
    with quiet_fds():
        naive(CAPTIONS[0])                                      # warm-up: load + prompt
    nruns = 1 if ctx.quick else ctx.heavy_runs
    samples, usage = [], []
    for i in range(nruns):
        t0 = time.perf_counter()
        with quiet_fds():
            r = naive(CAPTIONS[(i + 1) % len(CAPTIONS)])
        samples.append(time.perf_counter() - t0)
        usage.append((r["prompt_tokens"], r["completion_tokens"]))
    naive.close()
    nst = stats(samples)
    _unload_all()
    ours = guard_safe["per_caption"]
    res = {"naive_per_caption": nst, "naive_usage": usage, "ours_per_caption": ours, "guard_safe": guard_safe,
           "guard_unsafe": guard_unsafe, "instruct": inst, "speedup": nst["median"] / ours["median"],
           "speedup_instruct": nst["median"] / inst["per_caption"]["median"],
           "repeat_load_seconds": guard_safe["repeat"].get("load_seconds", 0.0),
           "repeat_seconds": guard_safe["repeat"].get("seconds")}
    sec.data.update(res)
    ctx.shared["llama"] = res
    sec.row(what="naive (few-shot JSON completion, 300 tokens, temp 0.1, default threads, n_ctx 4096)", value=_fs(nst),
            detail=f"prompt/completion tokens {usage[0][0]}/{usage[0][1]}")
    sec.row(what="SafeCut, Llama Guard prompt (default family): SAFE caption = one forward of caption + tail",
            value=_fs(ours), detail=f"×{res['speedup']:.0f} vs naive; {guard_safe['suffix_tokens']:.0f} tokens per "
                                    f"caption after a cached {guard_safe['prefix_tokens']}-token prefix")
    cat = guard_unsafe["categories"]
    sec.row(what="SafeCut, Llama Guard prompt: UNSAFE caption (+ grammar-constrained category codes)",
            value=_fs(guard_unsafe["per_caption"]),
            detail=f"category pass {cat['median'] * 1000:.0f} ms" if cat.get("median") else "")
    sec.row(what="SafeCut, instruct prompt (Llama-3.2-1B-Instruct family, same weights): SAFE caption",
            value=_fs(inst["per_caption"]), detail=f"×{res['speedup_instruct']:.0f} vs naive; "
                                                   f"{inst['suffix_tokens']:.0f} tokens per caption")
    fr = guard_safe["first_run"]
    sec.row(what="SafeCut first call (load + prefix eval + 1 caption)", value=f"{guard_safe['first']:.2f} s",
            detail=f"load {fr.get('load_seconds', 0):.2f} s, prefix {fr.get('prefix_tokens')} tokens "
                   f"in {fr.get('prefix_seconds', 0):.2f} s")
    sec.notes.append("Per-caption cost is one forward pass over caption + the prompt's fixed tail; it grows "
                     "linearly with those tokens (prompt eval is ~110 tok/s here whatever the batch). The Llama "
                     "Guard template puts its answer instructions after the conversation, so its tail is long.")


# ---- quantization table ----------------------------------------------------------------------------------
_PROMPT_100 = ("The quick brown fox jumps over the lazy dog near the river bank while the children play in the "
               "park and the old man reads a newspaper on a wooden bench under the tall oak tree. ") * 3


def _quant_probe(path: str, runs: int) -> dict:
    """Fresh process: load time, prompt tok/s (fresh eval of ~100 tokens), SafeCut per-caption latency."""
    code = f"""
import json, sys, time, os
sys.path.insert(0, {ROOT!r})
from bench.common import quiet_fds, stats
from bench.sections import CAPTIONS, _PROMPT_100
with quiet_fds():
    import llama_cpp
    t = time.perf_counter()
    llm = llama_cpp.Llama(model_path={path!r}, n_ctx=1024, n_batch=512, n_threads=os.cpu_count(), n_threads_batch=os.cpu_count(), verbose=False)
    load = time.perf_counter() - t
    toks = llm.tokenize(_PROMPT_100.encode())[:100]
    pp = []
    for _ in range({runs}):
        llm.reset(); llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        t = time.perf_counter(); llm.eval(toks); pp.append(time.perf_counter() - t)
    gen = []
    for _ in range({runs}):
        t = time.perf_counter(); llm.eval([toks[0]]); gen.append(time.perf_counter() - t)
    llm.close()
    from safecut.guard import SafetyClassifier
    clf = SafetyClassifier({path!r}, threads=0, threshold=1.0)
    clf.classify(CAPTIONS[:1])
    per = []
    for _ in range({runs}):
        clf.classify(CAPTIONS); per += clf.last_run["caption_seconds"]
print(json.dumps(dict(load=load, n_prompt=len(toks), prompt=stats(pp), token=stats(gen), caption=stats(per))))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def section_quant(ctx: Ctx, sec: Section) -> None:
    from .models import LLAMA_QUANTS

    quants = [q for q in LLAMA_QUANTS if f"llama_{q}" in ctx.paths]
    if "llama_F16" in ctx.paths and not ctx.quick:
        quants.append("F16")
    runs = 2 if ctx.quick else max(2, min(ctx.runs, 3))
    table = {}
    for q in quants:
        path = ctx.paths[f"llama_{q}"]
        p = _quant_probe(path, runs)
        p["bytes"] = os.path.getsize(path)
        p["prompt_tok_s"] = p["n_prompt"] / p["prompt"]["median"]
        p["gen_tok_s"] = 1.0 / p["token"]["median"]
        table[q] = p
        sec.row(quant=q, size=f"{p['bytes'] / 1e6:.0f} MB", load=f"{p['load']:.2f} s",
                prompt=f"{p['prompt_tok_s']:.0f} tok/s", generate=f"{p['gen_tok_s']:.1f} tok/s",
                caption=_fs(p["caption"]), build=f"{ctx.builds.get('llama-' + q, {}).get('seconds', 0):.0f} s")
    sec.data["quants"] = table
    ctx.shared["quant"] = table
    sec.notes.append("Fresh process per quant, file in the page cache. prompt = eval of 100 fresh tokens; generate = "
                     "one decode step; caption = SafeCut per-caption latency over the 10-caption mix (prefix cached). "
                     "build = F16 write (F16 row) or llama_model_quantize from F16, 2 threads.")


# ---- Florence-2 ------------------------------------------------------------------------------------------
def section_florence(ctx: Ctx, sec: Section) -> None:
    import torch

    from safecut import florence

    from .naive import NaiveFlorence

    _quiet_transformers()
    path = ctx.paths["florence"]
    T = 8 if ctx.quick else ctx.florence_tokens
    B = ctx.florence_batch
    images = make_images(B, ctx.size, seed=5)
    runs = ctx.runs if ctx.quick else ctx.heavy_runs
    task = "more detailed caption"
    # naive: load + one image at a time + unload, per node execution
    naive = NaiveFlorence(path, T, florence.task_token(task))
    nst = measure(lambda: naive(images), runs, warmup=0 if not ctx.quick else 1)
    n_loads = naive.load_seconds
    n_gen = naive.generated
    # ours: the engine's batched generate on a loaded model (same token count forced)
    _unload_all()
    fm = florence.load_model(path, "cpu", "fp32")
    fm.model.generation_config.min_new_tokens = T
    gen_lens = []

    def ours_call():
        caps = florence.generate_captions(fm, images, task, max_new_tokens=T, num_beams=3, batch_size=B)
        return caps

    ost = measure(ours_call, runs, warmup=1 if ctx.quick else 0)
    with torch.inference_mode():  # token count check (same prompt, one image)
        inputs = fm.processor(text=[florence.task_token(task)], images=[_pil(images[0])],
                              return_tensors="pt")
        ids = fm.model.generate(**inputs, max_new_tokens=T, num_beams=3, do_sample=False)
        gen_lens.append(int(ids.shape[-1]))
    fm.close()
    # the same engine path with bf16 weights (caption_images maps bf16 to fp32 on CPU today: an option to weigh)
    bst = None
    try:
        import torch as _t

        bf16_ok = bool(_t.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        bf16_ok = False
    if bf16_ok:
        fb = florence.load_model(path, "cpu", "bf16")
        fb.model.generation_config.min_new_tokens = T
        bst = measure(lambda: florence.generate_captions(fb, images, task, max_new_tokens=T, num_beams=3,
                                                         batch_size=B), runs, warmup=1 if ctx.quick else 0)
        fb.close()
    # the engine entry point twice: repeat call load share
    r1 = florence.caption_images(images[:1], path, task=task, device="CPU", max_new_tokens=T)
    r2 = florence.caption_images(images[:1], path, task=task, device="CPU", max_new_tokens=T)
    _unload_all()
    per_naive = nst["median"] / B
    per_ours = ost["median"] / B
    res = {"naive": nst, "ours": ost, "naive_load": n_loads, "naive_generated_lengths": n_gen,
           "ours_generated_lengths": gen_lens, "tokens": T, "batch": B, "per_image_naive": per_naive,
           "per_image_ours": per_ours, "speedup": per_naive / per_ours, "engine_first_load": r1.load_seconds,
           "engine_repeat_load": r2.load_seconds, "engine_repeat_seconds": r2.seconds,
           "params": ctx.builds.get("florence", {}).get("params")}
    sec.data.update(res)
    ctx.shared["florence"] = res
    sec.row(what=f"naive ({B} images one at a time, do_sample, 3 beams, load+unload per run)",
            value=f"{per_naive:.2f} s/img", detail=f"batch total {_fs(nst)}; load {n_loads:.2f} s of it")
    sec.row(what=f"SafeCut (florence.generate_captions, batch {B}, 3 beams, inference_mode, SDPA, cached model)",
            value=f"{per_ours:.2f} s/img", detail=f"batch total {_fs(ost)}; ×{per_naive / per_ours:.2f} per image")
    if bst is not None:
        res["bf16"] = bst
        res["per_image_bf16"] = bst["median"] / B
        sec.row(what=f"SafeCut engine path with bf16 weights (this CPU has AVX512-BF16; caption_images runs fp32 "
                     f"on CPU today)", value=f"{bst['median'] / B:.2f} s/img",
                detail=f"batch total {_fs(bst)}; ×{per_naive / (bst['median'] / B):.2f} per image vs naive")
    sec.row(what="SafeCut caption_images repeat call (1 image): load share", value=f"{r2.load_seconds:.3f} s",
            detail=f"of {r2.seconds:.2f} s; first call loaded in {r1.load_seconds:.2f} s")
    sec.notes.append(f"Both generate exactly {T} new tokens per caption (min_new_tokens = max_new_tokens): random "
                     f"weights never emit EOS, the cap equalises the work. Task <MORE_DETAILED_CAPTION>, images "
                     f"{ctx.size[1]}×{ctx.size[0]} → 768² ({ctx.builds.get('florence', {}).get('image_tokens', '?')} "
                     f"image tokens).")


# ---- keyword gate ----------------------------------------------------------------------------------------
def section_gate(ctx: Ctx, sec: Section) -> None:
    from safecut import gate

    path = ctx.paths["llama_Q4_K_M"]
    kg = gate.KeywordGate()
    decisions = kg.decide_all(CAPTIONS)
    settled_safe = sum(d.verdict == gate.SAFE for d in decisions)
    _unload_all()
    clf = _classifier(path, threshold=1.0)   # verdict pass only: the same work per caption in both variants
    clf.classify(CAPTIONS[:1])               # load + prefix: both variants run warm

    def with_gate():
        ds = kg.decide_all(CAPTIONS)
        return gate.settle(ds, clf.classify)

    def without_gate():
        return clf.classify(CAPTIONS)

    runs = ctx.runs
    wg = measure(with_gate, runs, warmup=1)
    ng = measure(without_gate, runs, warmup=1)
    _unload_all()
    sp = ng["median"] / wg["median"]
    # what it means for the full per-image pipeline, from the other sections' numbers (when measured)
    res = {"with_gate": wg, "without_gate": ng, "speedup": sp, "settled_safe": settled_safe,
           "captions": len(CAPTIONS)}
    ctx.shared["gate"] = res
    sec.data.update(res)
    sec.row(what=f"classification of {len(CAPTIONS)} captions, no gate (classifier on all)", value=_fs(ng), detail="")
    sec.row(what=f"keyword gate first ({settled_safe}/{len(CAPTIONS)} settled SAFE), classifier on the rest",
            value=_fs(wg), detail=f"×{sp:.2f}")
    naive = ctx.shared.get("llama", {}).get("naive_per_caption", {}).get("median")
    if naive:
        est = len(CAPTIONS) * naive / ((len(CAPTIONS) - settled_safe) * naive)
        sec.row(what="with the naive classifier (~{:.0f} s/caption) the same gate saves".format(naive),
                value=f"×{est:.2f}", detail="computed: only undecided captions reach the classifier")


# ---- full pipeline ---------------------------------------------------------------------------------------
def _models_root(ctx: Ctx) -> str:
    """A SAFECUT_MODELS_DIR whose folders hold the bench models (symlinks)."""
    root = os.path.join(ctx.out, "models-view")
    for kind, key in (("ben2", "ben2"), ("ben2", "ben2_int8"), ("florence2", "florence"), ("LLM", "llama_Q4_K_M")):
        src = ctx.paths.get(key)
        if not src:
            continue
        d = os.path.join(root, kind)
        os.makedirs(d, exist_ok=True)
        dst = os.path.join(d, os.path.basename(src))
        if not os.path.lexists(dst):
            os.symlink(src, dst)
    return root


def _write_images(ctx: Ctx, n: int, name: str) -> str:
    from PIL import Image

    d = os.path.join(ctx.out, name)
    os.makedirs(d, exist_ok=True)
    for i, im in enumerate(make_images(n, ctx.size, seed=11)):
        p = os.path.join(d, f"img{i:02d}.png")
        if not os.path.exists(p):
            Image.fromarray((im * 255).astype(np.uint8)).save(p)
    return d


def section_pipeline(ctx: Ctx, sec: Section) -> None:
    from safecut import pipeline

    _quiet_transformers()
    root = _models_root(ctx)
    os.environ["SAFECUT_MODELS_DIR"] = root
    N = 2 if ctx.quick else ctx.pipeline_images
    src = _write_images(ctx, N, "pipeline-in")
    warm_src = _write_images(ctx, 1, "pipeline-warm")
    T = 8 if ctx.quick else ctx.florence_tokens
    variants = [("fp32", ctx.paths["ben2"])]
    if ctx.paths.get("ben2_int8"):
        variants.append(("int8", ctx.paths["ben2_int8"]))
    runs = ctx.runs if ctx.quick else max(1, min(ctx.heavy_runs, 2))
    res = {}
    for label, ben2_path in variants:
        opts = pipeline.Options(ben2_model=os.path.basename(ben2_path), device="CPU", batch_size=N, caption=True,
                                florence_model=os.path.basename(ctx.paths["florence"]), task="more detailed caption",
                                max_new_tokens=T, num_beams=3, nudenet=bool(ctx.paths.get("nudenet")), gate=True,
                                classify=True, llm_model=os.path.basename(ctx.paths["llama_Q4_K_M"]))
        _unload_all()
        with quiet_fds():
            t0 = time.perf_counter()
            pipeline.run(warm_src, os.path.join(ctx.out, f"pipeline-out-{label}-warm"), opts)
            cold = time.perf_counter() - t0
        samples, reports = [], []
        for i in range(runs):
            out = os.path.join(ctx.out, f"pipeline-out-{label}")
            with quiet_fds():
                t0 = time.perf_counter()
                s = pipeline.run(src, out, opts)
                samples.append((time.perf_counter() - t0) / N)
            with open(s.report) as f:
                reports = [json.loads(ln) for ln in f]
            if s.failed:
                raise RuntimeError(f"pipeline failed: {[r.get('error') for r in reports if r.get('error')]}")
        st = stats(samples)
        timings = {}
        for r in reports:
            for k, v in (r.get("timings") or {}).items():
                timings[k] = timings.get(k, 0.0) + v / len(reports)
        res[label] = {"per_image": st, "first_run_1_image": cold, "stage_per_image": timings,
                      "verdicts": [r.get("verdict") for r in reports], "decided_by": [r.get("decided_by") for r in reports]}
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())
        sec.row(what=f"cpu-full pipeline per image, warm, BEN2 {label} (python -m safecut run: BEN2 + Florence-2 "
                     f"caption + NudeNet + gate + Llama), {N} images/run",
                value=_fs(st), detail=stages)
    _unload_all()
    os.environ.pop("SAFECUT_MODELS_DIR", None)
    ctx.shared["pipeline"] = res
    sec.data.update(res)
    sec.notes.append("Random-weight captions contain no gate keyword, so every image goes to the classifier (worst "
                     "case for the gate). Stage times are the report's per-image averages.")


# ---- cold start ------------------------------------------------------------------------------------------
def _cold(ctx: Ctx, profile: str, env: dict, args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bench.coldstart", "--profile", profile] + args
    e = dict(os.environ, **env)
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=e)
    wall = time.time() - t0
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["spawn_to_result"] = out["t_result"] - t0
    out["process_wall"] = wall
    out["interpreter"] = out["t_main"] - t0
    return out


def section_coldstart(ctx: Ctx, sec: Section) -> None:
    args = ["--ben2", ctx.paths["ben2"], "--florence", ctx.paths["florence"], "--llama", ctx.paths["llama_Q4_K_M"],
            "--tokens", str(8 if ctx.quick else ctx.florence_tokens), "--size", f"{ctx.size[0]}x{ctx.size[1]}"]
    cache_dir = os.path.join(ctx.out, "ort-cache")
    import shutil

    shutil.rmtree(cache_dir, ignore_errors=True)
    res = {}
    plan = [("cpu-fast", "no opt cache", {"SAFECUT_ORT_OPT_CACHE": "0"}),
            ("cpu-fast", "opt cache: first (writes it)", {"SAFECUT_ORT_OPT_CACHE": "1"}),
            ("cpu-fast", "opt cache: next start (reads it)", {"SAFECUT_ORT_OPT_CACHE": "1"}),
            ("cpu-full", "opt cache (read), mmap GGUF", {"SAFECUT_ORT_OPT_CACHE": "1"})]
    for profile, label, env in plan:
        env = dict(env, SAFECUT_CACHE_DIR=cache_dir)
        r = _cold(ctx, profile, env, args)
        res[f"{profile} | {label}"] = r
        load = sum(v for k, v in r["load"].items())
        first = sum(v for k, v in r["first"].items())
        sec.row(profile=profile, variant=label, total=f"{r['spawn_to_result']:.2f} s",
                interpreter=f"{r['interpreter']:.2f} s", imports=f"{r['import']:.2f} s",
                load=f"{load:.2f} s (" + ", ".join(f"{k} {v:.2f}" for k, v in r["load"].items()) + ")",
                first=f"{first:.2f} s (" + ", ".join(f"{k} {v:.2f}" for k, v in r["first"].items()) + ")")
    # GGUF: mmap vs read, fresh process each (page cache warm)
    mm = {}
    for use_mmap in (True, False):
        samples = []
        for _ in range(2 if ctx.quick else 3):
            code = (f"import time,sys; sys.path.insert(0,{ROOT!r})\nfrom bench.common import quiet_fds\n"
                    f"with quiet_fds():\n    import llama_cpp\n    t=time.perf_counter()\n"
                    f"    l=llama_cpp.Llama(model_path={ctx.paths['llama_Q4_K_M']!r}, n_ctx=1024, use_mmap={use_mmap}, "
                    f"verbose=False)\n    dt=time.perf_counter()-t\nprint(dt)")
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
            samples.append(float(r.stdout.strip().splitlines()[-1]))
        mm["mmap" if use_mmap else "read"] = stats(samples)
    res["gguf_load"] = mm
    sec.data.update(res)
    ctx.shared["coldstart"] = res
    sec.notes.append(f"GGUF load (Q4_K_M, fresh process, page cache warm): use_mmap=True {_fs(mm['mmap'])}, "
                     f"use_mmap=False {_fs(mm['read'])}.")
    sec.notes.append("total = process spawn → first result; interpreter = spawn → the bench's main() starts; "
                     "imports = onnxruntime/torch/transformers/llama_cpp + SafeCut engines; load and first = per "
                     "engine, through the engines' public calls.")


# ---- tuning sweeps (opt-in: --only tune-ben2,tune-florence,tune-llama,tune-int8) ---------------------------
def _ort_session(path, threads, spinning, mode="seq", opt="all", inter=1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = inter
    so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if mode == "par" else ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                   "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "ext": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[opt]
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    t0 = time.perf_counter()
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return s, time.perf_counter() - t0


def section_tune_ben2(ctx: Ctx, sec: Section) -> None:
    path = ctx.paths["ben2"]
    x = np.random.default_rng(0).random((1, 3, 1024, 1024), dtype=np.float32)
    runs = 2 if not ctx.quick else ctx.runs
    cores = os.cpu_count() or 1
    configs = [(cores, False, "seq", "all", 1), (cores, True, "seq", "all", 1), (1, False, "seq", "all", 1),
               (4, False, "seq", "all", 1), (8, True, "par", "all", 2), (cores, False, "par", "all", 2),
               (cores, False, "seq", "ext", 1), (cores, False, "seq", "basic", 1)]
    out = {}
    for th, spin, mode, opt, inter in configs:
        s, load = _ort_session(path, th, spin, mode, opt, inter)
        st = measure(lambda: s.run(None, {"input": x}), runs, warmup=1)
        key = f"intra={th} inter={inter} spin={int(spin)} mode={mode} opt={opt}"
        out[key] = dict(st, load=load)
        sec.row(config=key, run=_fs(st), session=f"{load:.2f} s")
        del s
    sec.data["configs"] = out


def section_tune_int8(ctx: Ctx, sec: Section) -> None:
    from safecut.quantize import METHODS, quantize_ben2

    path = ctx.paths["ben2"]
    x = np.random.default_rng(0).random((1, 3, 1024, 1024), dtype=np.float32)
    runs = 2 if not ctx.quick else ctx.runs
    cores = os.cpu_count() or 1
    out = {}
    s, load = _ort_session(path, cores, False)
    st = measure(lambda: s.run(None, {"input": x}), runs, warmup=1)
    ref = np.asarray(st["_result"][0], np.float32)
    out["fp32"] = dict(st, load=load, bytes=os.path.getsize(path))
    sec.row(variant="fp32", run=_fs(st), session=f"{load:.2f} s", size=f"{os.path.getsize(path) / 1e6:.0f} MB",
            quantize="–", mae="–")
    del s
    for method in METHODS:
        dst = os.path.join(ctx.out, f"tune-{method}.onnx")
        t0 = time.perf_counter()
        quantize_ben2(path, dst, method=method)
        qt = time.perf_counter() - t0
        s, load = _ort_session(dst, cores, False)
        st = measure(lambda: s.run(None, {"input": x}), runs, warmup=1)
        mae = float(np.abs(np.asarray(st["_result"][0], np.float32) - ref).mean())
        out[method] = dict(st, load=load, bytes=os.path.getsize(dst), quantize_seconds=qt, mae=mae)
        sec.row(variant=f"dynamic int8: {method} (QOperator)", run=_fs(st), session=f"{load:.2f} s",
                size=f"{os.path.getsize(dst) / 1e6:.0f} MB", quantize=f"{qt:.1f} s", mae=f"{mae:.4f}")
        del s
        os.remove(dst)
    # QDQ weight-only: int8 weights + DequantizeLinear feeding float MatMuls
    dst = os.path.join(ctx.out, "tune-qdq.onnx")
    t0 = time.perf_counter()
    qdq_weight_only(path, dst)
    qt = time.perf_counter() - t0
    s, load = _ort_session(dst, cores, False)
    st = measure(lambda: s.run(None, {"input": x}), runs, warmup=1)
    mae = float(np.abs(np.asarray(st["_result"][0], np.float32) - ref).mean())
    out["qdq-weight-only"] = dict(st, load=load, bytes=os.path.getsize(dst), quantize_seconds=qt, mae=mae)
    sec.row(variant="QDQ weight-only (int8 weights → DequantizeLinear → fp32 MatMul)", run=_fs(st),
            session=f"{load:.2f} s", size=f"{os.path.getsize(dst) / 1e6:.0f} MB", quantize=f"{qt:.1f} s",
            mae=f"{mae:.4f}")
    os.remove(dst)
    sec.data["variants"] = out
    sec.notes.append("mae = mean |mask - fp32 mask| on one random image (random weights: indicative only).")


def qdq_weight_only(src: str, dst: str) -> None:
    """int8 per-tensor symmetric weights + DequantizeLinear for every MatMul with a constant weight."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(src)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes, drop = [], set()
    for n in g.node:
        if n.op_type == "MatMul" and n.input[1] in inits and n.input[1] not in drop:
            w = numpy_helper.to_array(inits[n.input[1]])
            scale = np.float32(max(np.abs(w).max(), 1e-8) / 127.0)
            q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            base = n.input[1]
            g.initializer.append(numpy_helper.from_array(q, base + "_q"))
            g.initializer.append(numpy_helper.from_array(np.array(scale, np.float32), base + "_s"))
            g.initializer.append(numpy_helper.from_array(np.array(0, np.int8), base + "_z"))
            new_nodes.append(helper.make_node("DequantizeLinear", [base + "_q", base + "_s", base + "_z"], [base + "_dq"]))
            n.input[1] = base + "_dq"
            drop.add(base)
    keep = [t for t in g.initializer if t.name not in drop]
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = new_nodes + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(m, dst)


def _bf16_vision(fm):
    """Vision tower in bfloat16, the rest fp32 (casts at the tower's boundary)."""
    import torch

    vt = fm.model.model.vision_tower
    vt.to(torch.bfloat16)
    vt.register_forward_pre_hook(lambda m, args: tuple(a.to(torch.bfloat16) if torch.is_tensor(a) else a
                                                       for a in args))

    def _out(m, args, out):
        if torch.is_tensor(out):
            return out.float()
        if hasattr(out, "items"):
            for k, v in list(out.items()):
                if torch.is_tensor(v):
                    out[k] = v.float()
        return out

    vt.register_forward_hook(_out)
    return fm


def section_tune_florence(ctx: Ctx, sec: Section) -> None:
    import torch

    from safecut import florence

    _quiet_transformers()
    path = ctx.paths["florence"]
    T = 8 if ctx.quick else ctx.florence_tokens
    images = make_images(8, ctx.size, seed=5)
    runs = ctx.runs if ctx.quick else 1
    task = florence.task_token("more detailed caption")
    torch_threads = torch.get_num_threads()
    out = {}

    def run(fm, batch, beams, threads=None, mode="inference", imgs=images):
        if threads:
            torch.set_num_threads(threads)
        try:
            ctxm = torch.inference_mode() if mode == "inference" else torch.no_grad()
            with ctxm:
                for s in range(0, len(imgs), batch):
                    chunk = [_pil(im) for im in imgs[s:s + batch]]
                    inp = fm.processor(text=[task] * len(chunk), images=chunk, return_tensors="pt")
                    inp["pixel_values"] = inp["pixel_values"].to(fm.model.dtype)
                    fm.model.generate(**inp, max_new_tokens=T, min_new_tokens=T, num_beams=beams, do_sample=False)
        finally:
            torch.set_num_threads(torch_threads)

    def row(label, st, n=len(images)):
        out[label] = st
        sec.row(config=label, per_image=f"{st['median'] / n:.2f} s", total=_fs(st))

    fm = florence.load_model(path, "cpu", "fp32")
    plan = [("fp32, batch 8, beams 3 (engine default)", dict(batch=8, beams=3)),
            ("fp32, batch 1, beams 3", dict(batch=1, beams=3)),
            ("fp32, batch 8, beams 1 (greedy)", dict(batch=8, beams=1)),
            ("fp32, batch 8, beams 3, no_grad instead of inference_mode", dict(batch=8, beams=3, mode="no_grad")),
            ("fp32, batch 8, beams 3, 1 torch thread", dict(batch=8, beams=3, threads=1))]
    for label, kw in plan:
        row(label, measure(lambda: run(fm, **kw), runs, warmup=0))
    with torch.inference_mode():
        pv = fm.processor(text=[task] * 8, images=[_pil(im) for im in images], return_tensors="pt")["pixel_values"]
        row("vision encoder only, fp32, batch 8", measure(lambda: fm.model.get_image_features(pv), runs, warmup=0))
        row("vision encoder only, fp32, one image at a time",
            measure(lambda: [fm.model.get_image_features(pv[i:i + 1]) for i in range(8)], runs, warmup=0))
    fm.close()
    import transformers

    m = transformers.Florence2ForConditionalGeneration.from_pretrained(path, attn_implementation="eager",
                                                                       local_files_only=True).eval()
    fm2 = florence.FlorenceModel(m, transformers.Florence2Processor.from_pretrained(path, local_files_only=True),
                                 "cpu", "fp32", path)
    row("fp32, batch 8, beams 3, attn_implementation=eager", measure(lambda: run(fm2, 8, 3), runs, warmup=0))
    fm2.close()
    bf = florence.load_model(path, "cpu", "bf16")
    row("bf16 weights, batch 8, beams 3", measure(lambda: run(bf, 8, 3), runs, warmup=0))
    with torch.inference_mode():
        pvb = pv.to(torch.bfloat16)
        row("vision encoder only, bf16, one image at a time",
            measure(lambda: [bf.model.get_image_features(pvb[i:i + 1]) for i in range(8)], runs, warmup=0))
    bf.close()
    mx = _bf16_vision(florence.load_model(path, "cpu", "fp32"))
    row("bf16 vision tower + fp32 text, batch 8, beams 3", measure(lambda: run(mx, 8, 3), runs, warmup=0))
    mx.close()
    try:
        sec.data["mkldnn_bf16_supported"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        sec.data["mkldnn_bf16_supported"] = None
    sec.data["configs"] = out
    sec.notes.append(f"{len(images)} images {ctx.size[1]}×{ctx.size[0]}, {T} forced new tokens, "
                     f"<MORE_DETAILED_CAPTION>; torch reports mkldnn bf16 support: {sec.data['mkldnn_bf16_supported']}.")


def section_tune_llama(ctx: Ctx, sec: Section) -> None:
    path = ctx.paths["llama_Q4_K_M"]
    runs = ctx.runs
    out = {}
    for label, kw in [("n_threads = cores (engine default)", {}), ("n_threads = 1", {"threads": 1}),
                      ("n_ctx 4096", {"n_ctx": 4096})]:
        _unload_all()
        clf = _classifier(path, threshold=1.0, **{k: v for k, v in kw.items() if k != "threads"})
        if "threads" in kw:
            clf.threads = kw["threads"]
        clf.classify(CAPTIONS[:1])
        per, suf = [], []
        for _ in range(runs):
            clf.classify(CAPTIONS)
            per += clf.last_run["caption_seconds"]
            suf += clf.last_run["suffix_seconds"]
        out[label] = {"caption": stats(per), "verdict": stats(suf)}
        sec.row(config=label, caption=_fs(out[label]["caption"]), verdict_only=_fs(out[label]["verdict"]))
    _unload_all()
    # create_completion(max_tokens=1) with the library's prefix reuse, vs SafeCut's logits read
    code_path = path
    from llama_cpp import Llama

    from .naive import FEW_SHOT

    with quiet_fds():
        llm = Llama(model_path=code_path, n_ctx=1024, n_threads=os.cpu_count(), verbose=False)
        llm.create_completion(FEW_SHOT.replace("{caption}", CAPTIONS[0]), max_tokens=1, temperature=0.0)
        samples = []
        for i in range(runs):
            t0 = time.perf_counter()
            llm.create_completion(FEW_SHOT.replace("{caption}", CAPTIONS[(i + 1) % len(CAPTIONS)]), max_tokens=1,
                                  temperature=0.0)
            samples.append(time.perf_counter() - t0)
        llm.close()
    out["create_completion max_tokens=1 (library prefix reuse)"] = stats(samples)
    sec.row(config="create_completion(max_tokens=1), few-shot prompt, library prefix reuse", caption=_fs(stats(samples)),
            verdict_only="–")
    sec.data["configs"] = out


SECTIONS = {
    "env": ("Machine and GEMM limit", section_env),
    "import": ("Pack import", section_import),
    "ben2": ("BEN2 background removal (1024², one image)", section_ben2),
    "llama": ("Llama safety classifier, per caption", section_llama),
    "quant": ("Llama quantizations (the dropdown)", section_quant),
    "florence": ("Florence-2-base captions", section_florence),
    "gate": ("Keyword gate on a caption mix (60 % clearly safe)", section_gate),
    "pipeline": ("Full CPU pipeline (headline)", section_pipeline),
    "coldstart": ("Cold start: process start → first result", section_coldstart),
    "tune-ben2": ("Tuning: ORT session settings for BEN2", section_tune_ben2),
    "tune-int8": ("Tuning: INT8 variants of BEN2", section_tune_int8),
    "tune-florence": ("Tuning: Florence-2 generation settings", section_tune_florence),
    "tune-llama": ("Tuning: Llama classifier settings", section_tune_llama),
}
DEFAULT = ["env", "import", "ben2", "llama", "quant", "florence", "gate", "pipeline", "coldstart"]
TUNE = ["tune-ben2", "tune-int8", "tune-florence", "tune-llama"]
