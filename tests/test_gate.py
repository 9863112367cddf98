import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from safecut.engines import gate
from safecut.engines.gate import SAFE, UNDECIDED, UNSAFE, KeywordGate

TABLE = [
    # caption, expected (review policy), decided_by
    ("a red coffee mug on a white table", SAFE, "keywords"),
    ("Product shot of a leather HANDBAG", SAFE, "keywords"),
    ("two cats sleeping on a sofa", SAFE, "keywords"),            # plural of a safe word
    ("a kitchen knife on a cutting board", UNDECIDED, ""),        # unsafe word -> classifier, not blocked
    ("a mug next to a gun", UNDECIDED, ""),                       # mixed: unsafe wins over safe
    ("no weapons are visible in this landscape", UNDECIDED, ""),  # negation is not a reason to skip
    ("a photo of knives", UNDECIDED, ""),                         # f -> ves plural
    ("a nude figure", UNDECIDED, ""),
    ("a dead body on the street", UNDECIDED, ""),                 # phrase
    ("an abstract shape", SAFE, "keywords"),                      # every word known harmless
    ("a quokka on a rock", UNDECIDED, ""),                        # a word the gate does not know
    ("a car crash on a highway", UNDECIDED, ""),                  # "car" is harmless, the caption is not
    ("a beautiful landscape photo of a woman undressing by a lake", UNDECIDED, ""),
    ("an explosion in a factory", UNDECIDED, ""),
    ("three injured hikers", UNDECIDED, ""),
    ("The image shows a white ceramic mug with a black handle on a wooden table.", SAFE, "keywords"),
    ("Product shot of a leather HANDBAG, blurred background", SAFE, "keywords"),  # phrase + -ed form
    ("", UNDECIDED, ""),                                          # empty caption
    ("a gunboat in the harbour", UNDECIDED, ""),                  # 'gun' is not a whole word here: no match
    ("sunglasses on a beach", SAFE, "keywords"),
    ("a drugstore front", UNDECIDED, ""),                         # 'drug' not whole word; no safe word either
    ("a teen-aged statue", UNDECIDED, ""),
]


@pytest.mark.parametrize("caption,expected,by", TABLE)
def test_caption_table(caption, expected, by):
    d = KeywordGate().decide(caption)
    assert (d.verdict, d.decided_by) == (expected, by), d


def test_hits_are_reported():
    d = KeywordGate().decide("a mug next to a gun and two pistols")
    assert d.safe_hits == ["mug"] and d.unsafe_hits == ["gun", "pistols"]
    d = KeywordGate().decide("a red mug beside a quokka")
    assert d.unknown_words == ["quokka"] and "quokka" in d.reason and d.verdict == UNDECIDED


@pytest.mark.parametrize("word,forms", [
    ("undress", ["undressing", "undressed", "undresses"]),
    ("injure", ["injured", "injuring"]),
    ("knife", ["knives"]),
    ("bloody", ["bloody"]),
    ("self harm", ["self-harm", "self harming"]),
    ("crash", ["crashed", "crashes", "crashing"]),
])
def test_unsafe_keywords_match_their_inflections(word, forms):
    g = KeywordGate("", word, policy="strict")
    for f in forms:
        assert g.decide(f"a photo of {f} here").verdict == UNSAFE, f
    assert KeywordGate("", "stoned", policy="strict").decide("a stone wall").verdict != UNSAFE  # base forms only


def test_benign_words_are_known_in_their_inflections():
    g = KeywordGate()
    for caption in ("two mugs", "a mountain stretching into the distance", "stacked plates", "the biggest boxes",
                    "brightly painted houses", "t-shirts folded on shelves", "a dog running", "berries"):
        assert g.decide(caption).verdict == SAFE, (caption, g.decide(caption))


def test_benign_vocabulary_file_is_grouped_and_holds_no_default_unsafe_word():
    from safecut.engines.gate_words import VOCAB_PATH, KeywordList, builtin_vocabulary, parse_list

    text = open(VOCAB_PATH, encoding="utf-8").read()
    assert text.count("# == ") >= 10 and "# == function words ==" in text
    v = builtin_vocabulary()
    assert len(v.words) > 900 and {"the", "of", "with"} <= v.function
    unsafe = KeywordList(parse_list(gate.DEFAULT_UNSAFE_KEYWORDS))
    entries = sorted(v.words | v.function) + [" ".join(p) for b in v.phrases.values() for p in b]
    clash = [e for e in entries if unsafe.hits(e.split())]
    assert clash == ["hanging plant"], clash  # unsafe wins: a "hanging plant" goes to the classifier
    for person_word in ("man", "woman", "girl", "boy", "child", "people", "body", "hand", "skin", "shot", "powder"):
        assert v.known(person_word) is None, person_word  # left out on purpose (see the file's header)


def _caption_set():
    path = os.path.join(os.path.dirname(__file__), "data", "gate_captions.tsv")
    rows = []
    for line in open(path, encoding="utf-8"):
        if line.strip() and not line.startswith("#"):
            label, category, caption = line.rstrip("\n").split("\t")
            rows.append((label, category, caption))
    return rows


@pytest.mark.parametrize("policy", gate.POLICIES)
def test_labelled_caption_set_no_unsafe_caption_is_settled_safe(policy, capsys):
    rows = _caption_set()
    unsafe_cats = {"violence", "accident_injury", "gore", "weapons", "drugs", "nudity_sexual", "minors", "self_harm",
                   "hate", "disguised"}
    assert len(rows) >= 400 and {c for lab, c, _ in rows if lab == "unsafe"} == unsafe_cats
    assert sum(lab == "unsafe" for lab, _, _ in rows) >= 0.4 * len(rows)
    g = KeywordGate(policy=policy)
    decisions = [(lab, cat, g.decide(cap)) for lab, cat, cap in rows]
    false_skips = [d.caption for lab, _, d in decisions if lab == "unsafe" and d.verdict == SAFE]
    assert false_skips == []
    plain = [d for lab, cat, d in decisions if cat.split("_")[0] in ("product", "landscape")]
    rate = sum(d.verdict == SAFE for d in plain) / len(plain)
    held = [d for lab, cat, d in decisions if cat.endswith("_holdout")]
    held_rate = sum(d.verdict == SAFE for d in held) / len(held)
    benign = [d for lab, cat, d in decisions if lab == "safe"]
    with capsys.disabled():
        print(f"\n[gate/{policy}] {len(rows)} captions: unsafe settled SAFE 0; benign settled "
              f"{sum(d.verdict == SAFE for d in benign)}/{len(benign)}; product+landscape {rate:.0%} "
              f"(held out {held_rate:.0%})")
    assert rate >= 0.6 and held_rate >= 0.5


def test_strict_policy_decides_unsafe_at_once():
    g = KeywordGate(policy="strict")
    d = g.decide("a kitchen knife on a cutting board")
    assert (d.verdict, d.decided_by) == (UNSAFE, "keywords")
    assert g.decide("a red mug").verdict == SAFE


def test_nudenet_decides_unsafe_even_with_safe_words():
    d = KeywordGate().decide("a red mug", nudenet_unsafe=True)
    assert (d.verdict, d.decided_by) == (UNSAFE, "nudenet")


def test_custom_lists_and_comments():
    g = KeywordGate("widget # our products\n, gizmo, Quokka-Plush", "forbidden thing")
    assert g.decide("a shiny widgets display").verdict == SAFE  # the safe list extends the vocabulary
    assert g.decide("two quokka plushes on a shelf").verdict == SAFE  # phrases, hyphens, inflections
    assert g.decide("a forbidden things pile").verdict == UNDECIDED
    assert g.decide("a mug").verdict == SAFE  # the built-in vocabulary stays
    assert g.decide("a knife").verdict == UNDECIDED  # the unsafe list was replaced; "knife" is still unknown
    assert KeywordGate().decide("a widget").verdict == UNDECIDED


def test_bad_policy_and_mismatched_nudenet():
    with pytest.raises(ValueError, match="policy"):
        KeywordGate(policy="lenient")
    with pytest.raises(ValueError, match="nudenet"):
        KeywordGate().decide_all(["a", "b"], [True])


class Result:
    def __init__(self, verdict, p=0.0, error=None, decided_by="classifier"):
        self.verdict, self.p_unsafe, self.error, self.decided_by, self.categories = verdict, p, error, decided_by, []


def test_settle_sends_only_undecided_captions():
    decisions = KeywordGate().decide_all(["a red mug", "a kitchen knife", "a quokka", "a cat"])
    seen = []

    def classify(caps):
        seen.append(list(caps))
        return [Result(SAFE, 0.1), Result(UNSAFE, 0.9)]

    gate.settle(decisions, classify)
    assert seen == [["a kitchen knife", "a quokka"]]
    assert [d.verdict for d in decisions] == [SAFE, SAFE, UNSAFE, SAFE]
    assert [d.decided_by for d in decisions] == ["keywords", "classifier", "classifier", "keywords"]
    assert decisions[2].p_unsafe == 0.9


def test_settle_never_calls_classifier_when_all_decided():
    decisions = KeywordGate().decide_all(["a red mug", "a dog"])
    gate.settle(decisions, lambda caps: pytest.fail("classifier must not run"))
    assert all(d.verdict == SAFE for d in decisions)


@pytest.mark.parametrize("classify", [
    None,                                                        # no classifier connected
    lambda caps: (_ for _ in ()).throw(RuntimeError("model broke")),  # raises
    lambda caps: [],                                             # wrong count
    lambda caps: [Result("maybe")],                              # unparseable verdict
    lambda caps: [Result(SAFE, error="NaN logits")],             # an error never yields SAFE
])
def test_fail_closed(classify):
    decisions = KeywordGate().decide_all(["a quokka on a rock"])
    gate.settle(decisions, classify)
    assert decisions[0].verdict == UNSAFE and decisions[0].decided_by == "error" and decisions[0].reason


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_gate_never_crashes_and_safe_implies_no_unsafe_word(text):
    g = KeywordGate()
    d = g.decide(text)
    assert d.verdict in (SAFE, UNDECIDED)
    if d.verdict == SAFE:
        assert d.safe_hits and not d.unsafe_hits and not d.unknown_words


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["mug", "gun", "no", "a", "cat", "nude", "knife", "table", ",", "."]), max_size=12))
def test_fuzz_adding_an_unsafe_word_never_makes_safe(words):
    g = KeywordGate()
    base = " ".join(words)
    assert g.decide(base + " gun").verdict != SAFE


# ---- node contract -------------------------------------------------------------------------------
class CountingHandle:
    def __init__(self):
        self.loads = 0
        self.calls = []

    def classify(self, captions):
        self.loads += 1
        self.calls.append(list(captions))
        return [Result(UNSAFE, 0.8) for _ in captions]


def _node(pack):
    return pack.NODE_CLASS_MAPPINGS["SafeCutKeywordGate"]()


def _widgets():
    return dict(safe_keywords=[gate.DEFAULT_SAFE_KEYWORDS], unsafe_keywords=[gate.DEFAULT_UNSAFE_KEYWORDS],
                policy=["review"], block_unsafe=[True])


def test_lazy_classifier_not_requested_when_everything_is_decided(pack):
    node = _node(pack)
    assert node.check_lazy_status(captions=["a red mug", "a dog on a beach"], classifier=[None], **_widgets()) == []
    assert node.check_lazy_status(captions=[["a red mug"], ["a knife"]], classifier=[None],
                                  **_widgets()) == ["classifier"]
    assert node.check_lazy_status(captions=["a knife"], classifier=[CountingHandle()], **_widgets()) == []


def test_gate_node_runs_classifier_only_on_undecided(pack):
    node = _node(pack)
    handle = CountingHandle()
    imgs = [torch.full((1, 8, 8, 3), float(i) / 4) for i in range(3)]
    out = node.run(captions=["a red mug", "a kitchen knife", "a dog"], images=imgs, classifier=[handle],
                   filenames=["a.png", "b.png", "c.png"], **_widgets())
    verdicts, by, safe_images, report = out["result"]
    assert handle.calls == [["a kitchen knife"]]
    assert verdicts == [SAFE, UNSAFE, SAFE] and by == ["keywords", "classifier", "keywords"]
    assert len(safe_images) == 3 and not isinstance(safe_images[1], torch.Tensor)  # blocked item
    assert torch.equal(safe_images[2], imgs[2])
    rep = json.loads(report)
    assert rep["summary"]["by_keywords"] == 2 and rep["images"][1]["filename"] == "b.png"
    assert out["ui"]["settled_by_keywords"] == [2]
    # the canvas: per image verdict / decided_by / P(unsafe) (classifier only); the Llama node's rows
    rows = out["ui"]["rows"]
    assert [(r["n"], r["name"], r["verdict"], r["by"]) for r in rows] == [
        (1, "a.png", SAFE, "keywords"), (2, "b.png", UNSAFE, "classifier"), (3, "c.png", SAFE, "keywords")]
    assert [r["p_unsafe"] for r in rows] == [None, 0.8, None]
    cls = out["ui"]["classifier"][0]
    assert cls["rows"] == [rows[1]] and cls["seconds"] >= 0 and out["ui"]["seconds"][0] >= 0


class BrokenHandle:
    def classify(self, captions):
        raise RuntimeError("llama-cpp-python is not installed")


def test_gate_node_shows_why_the_classifier_failed(pack):
    """Fail closed (UNSAFE, decided_by error) and the reason is in the canvas payload, per image and for the
    Llama node, not only in the report JSON."""
    out = _node(pack).run(captions=["a red mug", "a kitchen knife"], classifier=[BrokenHandle()],
                          filenames=["a.png", "b.png"], **_widgets())
    assert out["result"][0] == [SAFE, UNSAFE] and out["result"][1] == ["keywords", "error"]
    row = out["ui"]["rows"][1]
    assert row["verdict"] == UNSAFE and row["by"] == "error" and "llama-cpp-python is not installed" in row["reason"]
    assert out["ui"]["classifier"][0]["rows"] == [row]
    assert "reason" not in out["ui"]["rows"][0]


def test_gate_node_without_classifier_fails_closed_and_without_block_drops(pack):
    node = _node(pack)
    w = _widgets()
    w["block_unsafe"] = [False]
    out = node.run(captions=["a quokka", "a red mug"], images=[torch.zeros(2, 4, 4, 3)], **w)
    verdicts, by, safe_images, _ = out["result"]
    assert verdicts == [UNSAFE, SAFE] and by == ["error", "keywords"]
    assert len(safe_images) == 1 and safe_images[0].shape == (1, 4, 4, 3)


def test_gate_node_uses_nudenet_results(pack):
    out = _node(pack).run(captions=["a red mug"], nudenet=[[{"is_unsafe": True, "max_score": 0.9}]], **_widgets())
    assert out["result"][0] == [UNSAFE] and out["result"][1] == ["nudenet"]


def test_gate_node_image_count_mismatch_is_clear(pack):
    with pytest.raises(ValueError, match="input 'images'"):
        _node(pack).run(captions=["a mug", "a cup"], images=[torch.zeros(1, 4, 4, 3)], **_widgets())


def test_lazy_input_arrives_as_a_tuple_in_real_comfyui(pack):
    """ComfyUI hands a not-yet-evaluated lazy input to an INPUT_IS_LIST node as (None,)."""
    node = _node(pack)
    assert node.check_lazy_status(captions=["a knife"], classifier=(None,), **_widgets()) == ["classifier"]
    assert node.check_lazy_status(captions=["a red mug"], classifier=(None,), nudenet=(None,), **_widgets()) == []


@pytest.mark.parametrize("entry", [{"max_score": 0.1}, {"is_unsafe": "no"}, None, "garbage"])
def test_malformed_nudenet_entry_counts_as_unsafe(pack, entry):
    out = _node(pack).run(captions=["a red mug", "a red cup"], nudenet=[[{"is_unsafe": False}, entry]], **_widgets())
    assert out["result"][0] == [SAFE, UNSAFE] and out["result"][1] == ["keywords", "nudenet"]


def test_bench_gate_eval_reports_rates_and_time_saved():
    from bench import gate_eval

    res = gate_eval.evaluate(classifier_seconds=0.2)
    review = res["policies"]["review"]
    assert review["unsafe_settled_safe"] == 0 and res["policies"]["strict"]["unsafe_settled_safe"] == 0
    assert review["classifier_calls_avoided"] > 100 and review["seconds_saved"] > 0
    md = gate_eval.markdown(res)
    assert "| product | safe |" in md and "passed in" in md
