"""Llama safety classifier per caption, and the quantization table."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time


from ..common import Section, quiet_fds, stats
from .base import CAPTIONS, ROOT, Ctx, _fs, _unload_all


# ---- Llama classifier ------------------------------------------------------------------------------------
def _classifier(path: str, **kw):
    """SafeCut's classifier. Random weights put almost no probability on 'safe'/'unsafe', which the engine
    reports as an error (fail closed) before any category pass: the bench lowers that floor to 0 so the
    timing is a real model's (verdict, then categories for UNSAFE captions)."""
    import inspect

    from safecut.engines.guard import SafetyClassifier

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
    from ..naive import NaiveClassifier

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
from bench.sections.base import CAPTIONS
from bench.sections.llama import _PROMPT_100
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
    from safecut.engines.guard import SafetyClassifier
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
    from ..models import LLAMA_QUANTS

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
