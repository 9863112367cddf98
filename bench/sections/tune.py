"""Opt-in tuning sweeps."""
from __future__ import annotations

import os
import time

import numpy as np

from ..common import Section, measure, quiet_fds, stats
from .base import CAPTIONS, Ctx, _fs, _pil, _quiet_transformers, _unload_all, make_images
from .llama import _classifier


# ---- tuning sweeps (opt-in: --only tune-ben2,tune-florence,tune-llama) --------------------------------
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

    from safecut.engines import florence

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

    from ..naive import FEW_SHOT

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
