"""Keyword gate: the early exit that settles clear cases without the LLM.

Rules per caption (whole words and phrases, case-insensitive, any inflection: see :mod:`safecut.engines.gate_words`):
* NudeNet said unsafe                      -> UNSAFE (decided_by "nudenet")
* an unsafe keyword matches                -> policy "review": UNDECIDED (the classifier decides; a
                                              "kitchen knife" product shot is not blocked by a word)
                                              policy "strict": UNSAFE at once (decided_by "keywords")
* EVERY word is known harmless, nothing    -> SAFE (decided_by "keywords")
  unsafe matched
* anything else: a word the gate does not  -> UNDECIDED
  know, an empty caption
SAFE by keywords is a closed-world rule: no list can name every unsafe word or form ("a car crash on a
highway" has a harmless "car"), so a caption skips the classifier only when the gate knows all of its words:
the packaged benign vocabulary (``data/benign_words.txt``: objects, materials, colours, shapes, scenery,
food, animals, clothing, photo and style words, function words) plus the node's ``safe_keywords``.
Negation is not a reason to skip: "no weapons visible" still matches "weapon" and goes to the classifier.
UNDECIDED captions go to the classifier; without one, or when it fails, they are UNSAFE (fail closed).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from .gate_words import KeywordList, builtin_vocabulary, parse_list, tokens

SAFE, UNSAFE, UNDECIDED = "SAFE", "UNSAFE", "UNDECIDED"
POLICIES = ["review", "strict"]

DEFAULT_SAFE_KEYWORDS = """# Extra harmless words for your images, added to SafeCut's benign vocabulary (safecut/data/benign_words.txt).
# A caption is SAFE by keywords only when every word in it is known harmless. Comma or newline separated.
"""

DEFAULT_UNSAFE_KEYWORDS = """# Sensitive terms, any inflection (undress = undressed, undressing). By default they send the caption to the
# classifier (policy "review"); words listed nowhere go there too.
nude, naked, nudity, topless, bottomless, nipple, genitals, genital, penis, vagina, breast, buttocks, crotch,
sex, sexual, sexy, porn, pornographic, erotic, explicit, lingerie, underwear, panties, bra, thong, bikini,
undress, undressed, striptease, stripper, seductive, provocative, aroused, orgasm, masturbate, fetish,
bondage, intercourse, prostitute, escort,
blood, bloody, bleed, gore, gory, guts, intestines, entrails, wound, wounded, injury, injure, injured,
hurt, bruise, scar, burn, burned, corpse, dead, death, die, dying, body bag, decapitated, beheaded, severed,
dismembered, mutilated, mangled, skull, carcass, slaughter, kill, killed, murder, victim,
violence, violent, fight, assault, attack, beaten, punch, kick, stab, shoot, strangle,
choke, torture, abuse, hostage, kidnap, riot, war, massacre, execution, crash, collision, accident, wreck,
wreckage, explosion, explode, blast, fire, flames, burning, smoke, disaster, casualty, ambulance, stretcher,
weapon, gun, handgun, pistol, revolver, rifle, firearm, shotgun, ammo, ammunition, bullet, knife, dagger, blade,
sword, machete, axe, bomb, explosive, grenade, missile, sniper, armed,
drug, drugs, cocaine, heroin, meth, methamphetamine, opioid, fentanyl, syringe, needle, inject, pill,
powder, marijuana, cannabis, weed, joint, bong, narcotic, overdose, stoned, drunk, vomit,
child, children, kid, minor, baby, infant, toddler, teen, teenager, underage, schoolgirl, schoolboy,
suicide, suicidal, self-harm, slit wrist, hanging, hanged, noose, overdose, jump off,
swastika, nazi, kkk, ku klux klan, white power, confederate flag, terrorist, terrorism, extremist, isis, hate,
racist, slur
"""


def parse_keywords(text: str | Sequence[str]) -> list[str]:
    """Comma/newline separated; '#' starts a comment; blanks and duplicates dropped; lower-cased."""
    return parse_list(text)


@dataclass
class Decision:
    caption: str
    verdict: str                       # SAFE / UNSAFE / UNDECIDED (before the classifier)
    decided_by: str                    # keywords / nudenet / classifier / error / "" while undecided
    safe_hits: list[str] = field(default_factory=list)
    unsafe_hits: list[str] = field(default_factory=list)
    unknown_words: list[str] = field(default_factory=list)   # words the gate does not know: the classifier decides
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
        self.vocabulary = builtin_vocabulary().extended(parse_list(safe_keywords))
        self.unsafe = KeywordList(parse_list(unsafe_keywords))

    def words(self, caption: str) -> tuple[list[str], list[str], list[str]]:
        """(unsafe hits, known content words, unknown words) of ``caption``, each in order, unique."""
        toks = tokens(caption)
        unsafe: list[str] = []
        for i, n in self.unsafe.hits(toks):
            _add(unsafe, " ".join(toks[i:i + n]))
        known: list[str] = []
        unknown: list[str] = []
        i = 0
        while i < len(toks):
            n = self.vocabulary.phrase_at(toks, i)
            if n:
                _add(known, " ".join(toks[i:i + n]))
                i += n
                continue
            kind = self.vocabulary.known(toks[i])
            if kind == "content":
                _add(known, toks[i])
            elif kind is None:
                _add(unknown, toks[i])
            i += 1
        return unsafe, known, unknown

    def decide(self, caption: str, nudenet_unsafe: bool | None = None) -> Decision:
        caption = caption if isinstance(caption, str) else ""
        unsafe_hits, safe_hits, unknown = self.words(caption)
        d = Decision(caption, UNDECIDED, "", safe_hits, unsafe_hits, unknown)
        if nudenet_unsafe:
            d.verdict, d.decided_by, d.reason = UNSAFE, "nudenet", "NudeNet flagged exposed content"
        elif unsafe_hits and self.policy == "strict":
            d.verdict, d.decided_by, d.reason = UNSAFE, "keywords", "unsafe keyword (strict policy)"
        elif unsafe_hits:
            d.reason = "unsafe keyword: the classifier decides"
        elif not safe_hits:
            d.reason = "empty caption" if not caption.strip() else "no harmless content word: the classifier decides"
        elif unknown:
            d.reason = f"words the gate does not know ({', '.join(unknown[:5])}): the classifier decides"
        else:
            d.verdict, d.decided_by, d.reason = SAFE, "keywords", "every word is known harmless, nothing unsafe"
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


def _add(seen: list[str], item: str) -> None:
    if item not in seen:
        seen.append(item)


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
