"""Keyword gate on a caption mix."""
from __future__ import annotations

from ..common import Section, measure
from .base import CAPTIONS, Ctx, _fs, _unload_all
from .llama import _classifier


# ---- keyword gate ----------------------------------------------------------------------------------------
def section_gate(ctx: Ctx, sec: Section) -> None:
    from safecut.engines import gate

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
    _labelled_gate_figures(ctx, sec, ng["median"] / len(CAPTIONS))


def _labelled_gate_figures(ctx: Ctx, sec: Section, classifier_seconds: float) -> None:
    """bench/gate_eval.py (labelled captions: benign share settled, unsafe never settled, time saved), when
    present; the time saved is priced with the classifier time per caption this section just measured."""
    try:
        from .. import gate_eval
    except ImportError:
        return
    res = gate_eval.evaluate(quick=ctx.quick, classifier_seconds=classifier_seconds)
    sec.data["gate_eval"] = res
    sec.data["markdown"] = gate_eval.markdown(res)

