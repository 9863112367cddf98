"""Keyword gate: the early exit that settles clear cases without the LLM.

Rules per caption (case-insensitive whole words and phrases, plurals included):
* NudeNet said unsafe                      -> UNSAFE (decided_by "nudenet")
* an unsafe keyword matches                -> policy "review": UNDECIDED (the classifier decides; a
                                              "kitchen knife" product shot is not blocked by a word)
                                              policy "strict": UNSAFE at once (decided_by "keywords")
* a safe keyword matches, nothing unsafe   -> SAFE (decided_by "keywords")
* anything else (also empty captions)      -> UNDECIDED
Negation is not a reason to skip: "no weapons visible" still matches "weapon" and goes to the classifier.
UNDECIDED captions go to the classifier; without one, or when it fails, they are UNSAFE (fail closed).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

SAFE, UNSAFE, UNDECIDED = "SAFE", "UNSAFE", "UNDECIDED"
POLICIES = ["review", "strict"]

DEFAULT_SAFE_KEYWORDS = """\
# Clearly harmless subjects: a caption matching one of these (and nothing unsafe) is SAFE without the LLM.
product, packshot, bottle, cup, mug, chair, table, sofa, lamp, shoe, sneaker, bag, handbag, watch, jewelry,
ring, necklace, phone, laptop, camera, headphones, toy, plush, book, vase, plant, flower, tree, fruit, vegetable,
bread, cake, food, dish, plate, bowl, car, bicycle, building, house, bridge, landscape, mountain, beach, sea,
ocean, lake, river, forest, field, sky, sunset, city, street, logo, icon, illustration, painting, drawing,
still life, furniture, dog, cat, bird, horse, animal, shirt, t-shirt, jacket, dress, hat, sunglasses
"""

DEFAULT_UNSAFE_KEYWORDS = """\
# Sensitive terms: by default they send the caption to the classifier (policy "review").
nude, naked, nudity, topless, bottomless, nipple, genitals, penis, vagina, breast, buttocks, sex, sexual,
porn, pornographic, erotic, explicit, lingerie, underwear, bikini, undressed,
blood, bloody, gore, gory, wound, injury, corpse, dead body, decapitated, violence, violent, fight, assault,
weapon, gun, pistol, rifle, firearm, shotgun, knife, blade, sword, machete, bomb, explosive, grenade, ammunition,
drug, cocaine, heroin, meth, syringe, needle, pill, marijuana, cannabis, joint, bong,
child, kid, minor, baby, toddler, teen, teenager, schoolgirl, schoolboy,
suicide, self-harm, hanging, noose, swastika, nazi, terrorist, hate
"""


def parse_keywords(text: str | Sequence[str]) -> list[str]:
    """Comma/newline separated; '#' starts a comment; blanks and duplicates dropped; lower-cased."""
    if not isinstance(text, str):
        text = "\n".join(text)
    out: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        for item in line.split(","):
            k = " ".join(item.strip().lower().split())
            if k and k not in out:
                out.append(k)
    return out


def _plural_forms(word: str) -> list[str]:
    forms = [word, word + "s", word + "es"]
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        forms.append(word[:-1] + "ies")
    if word.endswith("fe"):
        forms.append(word[:-2] + "ves")
    elif word.endswith("f"):
        forms.append(word[:-1] + "ves")
    if word.endswith("s"):
        forms.append(word + "es")
    return forms


def compile_keywords(keywords: Sequence[str]) -> re.Pattern | None:
    """One regex for the whole list; the last word of each phrase may be plural."""
    alts = []
    for k in keywords:
        words = k.split()
        head = r"\s+".join(re.escape(w) for w in words[:-1])
        last = "(?:" + "|".join(re.escape(f) for f in sorted(set(_plural_forms(words[-1])), key=len, reverse=True)) + ")"
        alts.append((head + r"\s+" if head else "") + last)
    if not alts:
        return None
    return re.compile(r"(?<![\w-])(?:" + "|".join(alts) + r")(?![\w-])", re.IGNORECASE)


def _hits(pattern: re.Pattern | None, text: str) -> list[str]:
    if pattern is None or not text:
        return []
    seen: list[str] = []
    for m in pattern.finditer(text):
        w = " ".join(m.group(0).lower().split())
        if w not in seen:
            seen.append(w)
    return seen


@dataclass
class Decision:
    caption: str
    verdict: str                       # SAFE / UNSAFE / UNDECIDED (before the classifier)
    decided_by: str                    # keywords / nudenet / classifier / error / "" while undecided
    safe_hits: list[str] = field(default_factory=list)
    unsafe_hits: list[str] = field(default_factory=list)
    p_unsafe: float | None = None
    categories: list[str] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class KeywordGate:
    def __init__(self, safe_keywords: str | Sequence[str] = DEFAULT_SAFE_KEYWORDS,
                 unsafe_keywords: str | Sequence[str] = DEFAULT_UNSAFE_KEYWORDS, policy: str = "review"):
        if policy not in POLICIES:
            raise ValueError(f"policy '{policy}' is not one of {POLICIES}")
        self.policy = policy
        self.safe = compile_keywords(parse_keywords(safe_keywords))
        self.unsafe = compile_keywords(parse_keywords(unsafe_keywords))

    def decide(self, caption: str, nudenet_unsafe: bool | None = None) -> Decision:
        caption = caption if isinstance(caption, str) else ""
        safe_hits, unsafe_hits = _hits(self.safe, caption), _hits(self.unsafe, caption)
        d = Decision(caption, UNDECIDED, "", safe_hits, unsafe_hits)
        if nudenet_unsafe:
            d.verdict, d.decided_by, d.reason = UNSAFE, "nudenet", "NudeNet flagged exposed content"
        elif unsafe_hits and self.policy == "strict":
            d.verdict, d.decided_by, d.reason = UNSAFE, "keywords", "unsafe keyword (strict policy)"
        elif unsafe_hits:
            d.reason = "unsafe keyword: the classifier decides"
        elif safe_hits:
            d.verdict, d.decided_by, d.reason = SAFE, "keywords", "safe keyword, nothing unsafe"
        elif not caption.strip():
            d.reason = "empty caption"
        else:
            d.reason = "no keyword matched"
        return d

    def decide_all(self, captions: Sequence[str], nudenet: Sequence[bool | None] | None = None) -> list[Decision]:
        flags = list(nudenet) if nudenet is not None else [None] * len(captions)
        if len(flags) != len(captions):
            raise ValueError(f"input 'nudenet' has {len(flags)} result(s) for {len(captions)} caption(s); "
                             f"connect NudeNet to the same images as the captioner")
        return [self.decide(c, f) for c, f in zip(captions, flags)]


def undecided(decisions: Sequence[Decision]) -> list[int]:
    return [i for i, d in enumerate(decisions) if d.verdict == UNDECIDED]


def settle(decisions: list[Decision], classify: Callable[[list[str]], list[Any]] | None) -> list[Decision]:
    """Send only the UNDECIDED captions to ``classify``; fail closed on anything unexpected."""
    todo = undecided(decisions)
    if not todo:
        return decisions
    if classify is None:
        for i in todo:
            _fail(decisions[i], "undecided by keywords and no classifier connected")
        return decisions
    try:
        results = list(classify([decisions[i].caption for i in todo]))
        if len(results) != len(todo):
            raise RuntimeError(f"classifier returned {len(results)} results for {len(todo)} captions")
    except Exception as exc:  # fail closed: never SAFE when the classifier did not answer
        for i in todo:
            _fail(decisions[i], f"classifier failed: {type(exc).__name__}: {exc}")
        return decisions
    for i, r in zip(todo, results):
        d = decisions[i]
        verdict = getattr(r, "verdict", None)
        if verdict not in (SAFE, UNSAFE):
            _fail(d, f"classifier gave no verdict ({verdict!r})")
            continue
        d.verdict = verdict
        d.decided_by = getattr(r, "decided_by", "classifier") or "classifier"
        d.p_unsafe = getattr(r, "p_unsafe", None)
        d.categories = list(getattr(r, "categories", []) or [])
        err = getattr(r, "error", None)
        d.reason = f"classifier error: {err}" if err else "classifier"
        if err and d.verdict == SAFE:  # an error never yields SAFE
            _fail(d, str(err))
    return decisions


def _fail(d: Decision, reason: str) -> None:
    d.verdict, d.decided_by, d.reason = UNSAFE, "error", reason


def summary(decisions: Sequence[Decision]) -> dict[str, int]:
    out = {"images": len(decisions), "safe": 0, "unsafe": 0, "by_keywords": 0, "by_nudenet": 0,
           "by_classifier": 0, "by_error": 0}
    for d in decisions:
        out["safe" if d.verdict == SAFE else "unsafe"] += 1
        key = f"by_{d.decided_by}"
        if key in out:
            out[key] += 1
    return out
