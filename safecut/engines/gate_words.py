"""Words for the Keyword Gate: caption tokens, inflections, the benign vocabulary and keyword lists.

Inflections come from a small rule set, not a library. It only has to answer "is this token a form of a
listed word?", and its mistakes are safe in the direction that matters: a form it cannot reduce stays
unknown and goes to the classifier. Looked at and not used: Snowball stemmers (``snowballstemmer``,
``PyStemmer``) conflate unrelated words (a known word's stem can cover an unknown word, which here would
mean a skipped classifier); ``lemminflect`` has had no release since 2022; ``simplemma`` is precise but
brings multi-MB dictionaries per language for a job a dozen rules do; ``inflect`` handles nouns only.
"""
from __future__ import annotations

import functools
import os
import re
from typing import Iterable, Sequence

from .. import DATA_DIR

VOCAB_PATH = os.path.join(DATA_DIR, "benign_words.txt")
FUNCTION_GROUP = "function words"
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_APOSTROPHE_S = re.compile(r"['’]s\b")
_HYPHENS = re.compile(r"[-‐‑‒–—/]")


def tokens(text: str) -> list[str]:
    """Lower-case word tokens: hyphens and slashes split words ("t-shirt" -> "t shirt"), a possessive 's
    is dropped, any other punctuation separates."""
    text = _HYPHENS.sub(" ", _APOSTROPHE_S.sub("", text.lower()))
    return _TOKEN.findall(text)


@functools.lru_cache(maxsize=65536)
def forms(word: str) -> frozenset[str]:
    """``word`` and the base forms it may be an inflection of: plural -s/-es/-ies/-ves, -ing, -ed, -er,
    -est (with a dropped final e, a doubled consonant, y -> i), -ly/-ily. Stems shorter than 3 letters are
    not produced ("weed" is not a form of "we")."""
    out = {word}

    def add(stem: str) -> None:
        if len(stem) >= 3:
            out.add(stem)

    if word.endswith("ies"):
        add(word[:-3] + "y")
    if word.endswith("ves"):
        add(word[:-3] + "f")
        add(word[:-3] + "fe")
    if word.endswith("es"):
        add(word[:-2])
    if word.endswith("s") and not word.endswith("ss"):
        add(word[:-1])
    for suffix in ("ing", "ed", "er", "est"):
        if word.endswith(suffix):
            stem = word[:-len(suffix)]
            if len(stem) < 3:
                continue
            add(stem)
            add(stem + "e")
            if stem[-1] == stem[-2] and stem[-1] not in "aeiouls":
                add(stem[:-1])          # running -> run, stopped -> stop
            if stem.endswith("i"):
                add(stem[:-1] + "y")    # carried -> carry, happier -> happy
    for suffix in ("ers", "ings"):      # plurals of the above: stickers, paintings, buildings
        if word.endswith(suffix):
            out |= forms(word[:-1])
    if word.endswith("ly"):
        add(word[:-2])
        if word.endswith("ily"):
            add(word[:-3] + "y")
    return frozenset(out)


def parse_list(text: str | Sequence[str] | None) -> list[str]:
    """Comma/newline separated entries; '#' starts a comment; blanks and duplicates dropped; lower-cased,
    tokenised like captions (so "T-Shirt" is the phrase "t shirt")."""
    if text is None:
        return []
    if not isinstance(text, str):
        text = "\n".join(str(t) for t in text)
    out: list[str] = []
    for line in text.splitlines():
        for item in line.split("#", 1)[0].split(","):
            k = " ".join(tokens(item))
            if k and k not in out:
                out.append(k)
    return out


class Vocabulary:
    """Known entries (words and phrases). A token is known when one of its :func:`forms` is a known word."""

    def __init__(self, content: Iterable[str] = (), function: Iterable[str] = ()):
        self.words: set[str] = set()
        self.function: set[str] = set()
        self.phrases: dict[str, list[tuple[str, ...]]] = {}   # first word -> phrases, longest first
        for entry in content:
            self.add(entry)
        for entry in function:
            self.add(entry, function=True)

    def add(self, entry: str, function: bool = False) -> None:
        words = tuple(entry.split())
        if not words:
            return
        if len(words) == 1:
            (self.function if function else self.words).add(words[0])
            return
        bucket = self.phrases.setdefault(words[0], [])
        if words not in bucket:
            bucket.append(words)
            bucket.sort(key=len, reverse=True)

    def extended(self, extra: Iterable[str]) -> "Vocabulary":
        v = Vocabulary()
        v.words, v.function = set(self.words), set(self.function)
        v.phrases = {k: list(b) for k, b in self.phrases.items()}
        for e in extra:
            v.add(e)
        return v

    def known(self, token: str) -> str | None:
        """'function' / 'content' / None."""
        if token.isdigit() or (token[:1].isdigit() and token.rstrip("s").isdigit()):  # 3, 1920s
            return "function"
        f = forms(token)
        if f & self.function:
            return "function"
        if f & self.words:
            return "content"
        return None

    def phrase_at(self, toks: Sequence[str], i: int) -> int:
        """Length of the longest known phrase starting at ``toks[i]`` (0: none). The last word may be
        inflected ("still lifes", "t shirts")."""
        for phrase in self.phrases.get(toks[i], ()):
            n = len(phrase)
            if i + n <= len(toks) and all(toks[i + j] == phrase[j] for j in range(n - 1)) \
                    and phrase[-1] in forms(toks[i + n - 1]):
                return n
        return 0


@functools.lru_cache(maxsize=1)
def builtin_vocabulary() -> Vocabulary:
    """The packaged benign vocabulary (``data/benign_words.txt``)."""
    content: list[str] = []
    function: list[str] = []
    group = ""
    with open(VOCAB_PATH, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            m = re.match(r"#\s*==\s*(.+?)\s*==", line)
            if m:
                group = m.group(1).lower()
                continue
            entry = " ".join(tokens(line.split("#", 1)[0]))
            if entry:
                (function if group == FUNCTION_GROUP else content).append(entry)
    return Vocabulary(content, function)


class KeywordList:
    """Keywords (words or phrases) matched in any inflection: a caption token matches a keyword word when
    the token is the keyword or an inflection of it (:func:`forms`): "undress" matches "undressing" and
    "undressed". Keywords are base forms: "stoned" does not match "stone", "stripper" does not match
    "striped"; list "undress" to catch every form of it."""

    def __init__(self, keywords: Sequence[str]):
        self.keywords = [tuple(k.split()) for k in keywords if k.split()]
        self._single = {k[0] for k in self.keywords if len(k) == 1}
        self._phrases = [k for k in self.keywords if len(k) > 1]

    def hits(self, toks: Sequence[str]) -> list[tuple[int, int]]:
        """(start, length) of every keyword occurrence in ``toks``, in caption order."""
        tok_forms = [forms(t) for t in toks]
        out = [(i, 1) for i, f in enumerate(tok_forms) if f & self._single]
        for words in self._phrases:
            n = len(words)
            for i in range(len(toks) - n + 1):
                if all(words[j] in tok_forms[i + j] for j in range(n)):
                    out.append((i, n))
        return sorted(out)
