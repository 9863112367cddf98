"""SafeCut Keyword Gate: settles clear captions by keywords; wakes the Llama classifier (a lazy input)
only when at least one image is undecided, and sends it only the undecided captions."""
from __future__ import annotations

from ..safecut.engines import gate
from .common import CATEGORY, combo, dumps, flatten, flatten_images, timer, ui_result, verdict_row


def _first(v, default=None):
    # ComfyUI hands an INPUT_IS_LIST node a list per input, and a linked input it has not evaluated (yet) --
    # the lazy 'classifier' before check_lazy_status asked for it -- as the tuple (None,): unwrap both.
    if isinstance(v, (list, tuple)):
        return v[0] if v else default
    return v


def _nudenet_flags(nudenet) -> list | None:
    if not nudenet or all(r is None for r in flatten(nudenet)):
        return None
    return [_flag(r) for r in flatten(nudenet)]


def _flag(r) -> bool:
    """A malformed NudeNet entry (missing, None, not a bool) counts as unsafe: fail closed."""
    v = r.get("is_unsafe") if isinstance(r, dict) else r
    return v if isinstance(v, bool) else True


class SafeCutKeywordGate:
    DESCRIPTION = ("Decides SAFE/UNSAFE per image from its caption: a caption whose every word is known harmless "
                   "(SafeCut's benign vocabulary + safe_keywords) is SAFE at once; an unknown word or an unsafe "
                   "keyword sends it to the classifier (or decides UNSAFE with the strict policy), "
                   "NudeNet hits decide UNSAFE. The classifier input is lazy: the Llama node only runs, and its "
                   "model only loads, when some image is undecided. Errors never yield SAFE.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["moderation", "safety filter", "nsfw filter", "content filter", "keyword filter",
                      "safe or unsafe"]
    FUNCTION = "run"
    INPUT_IS_LIST = True
    RETURN_TYPES = ("STRING", "STRING", "IMAGE", "STRING")
    RETURN_NAMES = ("verdict", "decided_by", "safe_images", "report")
    OUTPUT_IS_LIST = (True, True, True, False)
    OUTPUT_TOOLTIPS = ("SAFE / UNSAFE per image.", "keywords / classifier / nudenet / error per image.",
                       "The safe images, one list item each (unsafe ones are left out, or blocked when "
                       "block_unsafe is on).", "JSON report: caption, verdict, who decided, scores, per image.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "captions": ("STRING", {"forceInput": True, "tooltip": "Captions, one per image (Florence-2 Caption)."}),
            "safe_keywords": ("STRING", {"default": gate.DEFAULT_SAFE_KEYWORDS, "multiline": True, "tooltip":
                              "Extra harmless words and phrases, added to SafeCut's benign vocabulary "
                              "(safecut/data/benign_words.txt). A caption skips the classifier only when EVERY "
                              "word in it is known harmless and nothing unsafe matches. Comma/newline separated; "
                              "'#' comments; case-insensitive; plurals, -ing, -ed, -er, -ly forms match."}),
            "unsafe_keywords": ("STRING", {"default": gate.DEFAULT_UNSAFE_KEYWORDS, "multiline": True, "tooltip":
                                "Comma/newline separated base forms; every inflection matches (undress = "
                                "undressing, undressed). A match sends the caption to the classifier (review) or "
                                "decides UNSAFE (strict). Negation does not help: 'no weapons' still matches."}),
            "policy": combo(gate.POLICIES, "review", "review: an unsafe keyword sends the caption to the classifier "
                            "(a kitchen-knife product shot is not blocked by a word). strict: UNSAFE at once."),
            "block_unsafe": ("BOOLEAN", {"default": True, "tooltip":
                             "Block downstream nodes for unsafe images (ExecutionBlocker) instead of just "
                             "leaving them out of safe_images."}),
        }, "optional": {
            "images": ("IMAGE", {"tooltip": "The captioned images, passed through as safe_images when SAFE."}),
            "nudenet": ("SAFECUT_NUDENET", {"tooltip": "NudeNet results: an unsafe hit decides UNSAFE without the LLM."}),
            "classifier": ("SAFECUT_CLASSIFIER", {"lazy": True, "tooltip":
                           "Llama Safety Classifier. Evaluated only when some caption is undecided."}),
            "filenames": ("STRING", {"forceInput": True, "tooltip": "Original file names, for the report."}),
        }}

    def _decide(self, captions, safe_keywords, unsafe_keywords, policy, nudenet=None):
        g = gate.KeywordGate(_first(safe_keywords, ""), _first(unsafe_keywords, ""), _first(policy, "review"))
        return g.decide_all([c if isinstance(c, str) else "" for c in flatten(captions)], _nudenet_flags(nudenet))

    def check_lazy_status(self, captions, safe_keywords, unsafe_keywords, policy, block_unsafe, images=None,
                          nudenet=None, classifier=None, filenames=None):
        if classifier is not None and _first(classifier) is not None:
            return []
        if captions is None or any(c is None for c in flatten(captions)):
            return []  # captions not ready yet: ComfyUI evaluates them first
        if gate.undecided(self._decide(captions, safe_keywords, unsafe_keywords, policy, nudenet)):
            return ["classifier"]
        return []

    def run(self, captions, safe_keywords, unsafe_keywords, policy, block_unsafe, images=None, nudenet=None,
            classifier=None, filenames=None):
        t0 = timer()
        decisions = self._decide(captions, safe_keywords, unsafe_keywords, policy, nudenet)
        handle = _first(classifier)
        settled_by_keywords = sum(d.decided_by in ("keywords", "nudenet") for d in decisions)
        todo = gate.undecided(decisions)
        asked_classifier = bool(todo) and handle is not None
        t_cls = timer()
        gate.settle(decisions, handle.classify if handle is not None else None)
        t_cls = timer() - t_cls
        names = [str(n) for n in flatten(filenames)] if filenames else []
        report = [dict(d.as_dict(), index=i, filename=names[i] if i < len(names) else "")
                  for i, d in enumerate(decisions)]
        frames = flatten_images(images) if images is not None else []
        if frames and len(frames) != len(decisions):
            raise ValueError(f"input 'images' has {len(frames)} image(s) but there are {len(decisions)} caption(s); "
                             f"caption the same images you pass in")
        safe_out = _safe_images(frames, decisions, bool(_first(block_unsafe, True)))
        stats = gate.summary(decisions)
        text = (f"{stats['safe']} safe / {stats['unsafe']} unsafe; settled without the LLM: {settled_by_keywords} "
                f"of {len(decisions)}; classifier: {stats['by_classifier']}; errors: {stats['by_error']}")
        rows = [_row(i, names, d) for i, d in enumerate(decisions)]
        extra = {}
        if asked_classifier:  # the Llama model ran here (lazy path): say on which device, never silently
            loaded = getattr(handle, "device", None) is not None or not hasattr(handle, "device_description")
            extra["device"] = (handle.device_description() if hasattr(handle, "device_description") else "unknown") \
                if loaded else "none (not loaded)"
            text += f"; classifier on {extra['device']}"
            # what the Llama node shows on the canvas (it hands out the classifier; the captions come here)
            extra["classifier"] = {"device": extra["device"], "seconds": round(t_cls, 3),
                                   "model": _model_name(handle), "rows": [rows[i] for i in todo]}
        return ui_result(([d.verdict for d in decisions], [d.decided_by for d in decisions], safe_out,
                          dumps({"summary": stats, "images": report})),
                         verdict=[d.verdict for d in decisions], decided_by=[d.decided_by for d in decisions],
                         settled_by_keywords=settled_by_keywords, rows=rows, seconds=round(timer() - t0, 3),
                         text=text, **extra)


def _model_name(handle) -> str:
    resolved = getattr(handle, "_resolved", None)  # set when the Llama node resolved its file
    return getattr(resolved, "name", "") or str(getattr(handle, "model", ""))


def _row(i: int, names: list[str], d) -> dict:
    return verdict_row(i, names[i] if i < len(names) else "", verdict=d.verdict, decided_by=d.decided_by,
                       p_unsafe=d.p_unsafe if d.decided_by == "classifier" else None, categories=d.categories,
                       reason=d.reason if d.decided_by == "error" else "")


def _blocker():
    try:
        from comfy_execution.graph import ExecutionBlocker  # type: ignore
    except ImportError:  # outside ComfyUI: a stand-in with the same meaning
        class ExecutionBlocker:  # noqa: D401
            def __init__(self, message):
                self.message = message
    return ExecutionBlocker(None)


def _safe_images(frames, decisions, block: bool) -> list:
    out = []
    for frame, d in zip(frames, decisions):
        if d.verdict == gate.SAFE:
            out.append(frame)
        elif block:
            out.append(_blocker())  # downstream per-image nodes (e.g. Save) skip this item
    return out or [_blocker()]      # nothing safe: block rather than hand on an empty list


NODE_CLASS_MAPPINGS = {"SafeCutKeywordGate": SafeCutKeywordGate}
NODE_DISPLAY_NAME_MAPPINGS = {"SafeCutKeywordGate": "SafeCut Keyword Gate"}
