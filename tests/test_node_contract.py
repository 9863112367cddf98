"""Every node keeps its public contract: class id, input names/types, WIDGET ORDER (saved workflows store
widget values by position), outputs. Appending is allowed only with a regenerated contract.json."""
import inspect

import pytest

from safecut import contract as C

FROZEN = C.load()
EXPECTED_IDS = {"SafeCutLoadImageBatch", "SafeCutBEN2RemoveBackground", "SafeCutSaveCutout", "SafeCutFlorence2Caption",
                "SafeCutKeywordGate", "SafeCutLlamaSafetyClassifier", "SafeCutNudeNetDetector", "SafeCutUnloadModels"}

# The widget order of every node, written out by hand: changing an existing position breaks saved workflows.
WIDGET_ORDER = {
    "SafeCutLoadImageBatch": ["directory", "pattern", "sort", "start_index", "limit", "mode", "batch_fit", "on_error",
                              "uploads"],
    "SafeCutBEN2RemoveBackground": ["model", "provider", "threads", "background", "custom_color", "refine_edges",
                                    "keep_model_loaded", "batch_size", "cpu_runtime"],
    "SafeCutSaveCutout": ["filename_prefix", "save_unsafe"],
    "SafeCutFlorence2Caption": ["model", "task", "device", "precision", "max_new_tokens", "num_beams", "batch_size",
                                "keep_model_loaded"],
    "SafeCutKeywordGate": ["safe_keywords", "unsafe_keywords", "policy", "block_unsafe"],
    "SafeCutLlamaSafetyClassifier": ["model_family", "quantization", "n_gpu_layers", "threads", "n_ctx", "threshold",
                                     "custom_categories", "keep_model_loaded"],
    "SafeCutNudeNetDetector": ["model", "device", "threshold", "unsafe_labels", "censor", "threads",
                               "keep_model_loaded", "label_thresholds"],
    "SafeCutUnloadModels": ["kind"],
}


def test_class_ids_are_stable(pack):
    assert set(pack.NODE_CLASS_MAPPINGS) == EXPECTED_IDS == set(FROZEN)


@pytest.mark.parametrize("cid", sorted(EXPECTED_IDS))
def test_node_matches_frozen_contract(pack, cid):
    live = C.describe_node(pack.NODE_CLASS_MAPPINGS[cid], pack.NODE_DISPLAY_NAME_MAPPINGS[cid])
    assert live == FROZEN[cid], f"{cid} drifted from safecut/contract.json (append-only; rerun freeze_contract.py)"
    assert [w["name"] for w in C.widgets(FROZEN, cid)] == WIDGET_ORDER[cid]


@pytest.mark.parametrize("cid", sorted(EXPECTED_IDS))
def test_node_is_a_well_formed_v1_node(pack, cid):
    cls = pack.NODE_CLASS_MAPPINGS[cid]
    it = cls.INPUT_TYPES()
    assert set(it) <= {"required", "optional", "hidden"}
    for section in ("required", "optional"):
        for name, spec in it.get(section, {}).items():
            assert isinstance(spec, tuple) and 1 <= len(spec) <= 2, name
            opts = spec[1] if len(spec) == 2 else {}
            assert opts.get("tooltip"), f"{cid}.{name} has no tooltip"
            if isinstance(spec[0], list):
                assert opts.get("default") in spec[0], f"{cid}.{name}: default not among the options"
    assert cls.CATEGORY == "SafeCut" and cls.DESCRIPTION
    fn = getattr(cls, cls.FUNCTION)
    params = inspect.signature(fn).parameters
    all_inputs = list(it.get("required", {})) + list(it.get("optional", {}))
    assert set(it.get("required", {})) <= set(params), "FUNCTION must accept every required input"
    assert set(all_inputs) <= set(params) or any(p.kind == p.VAR_KEYWORD for p in params.values())
    rt = cls.RETURN_TYPES
    assert len(getattr(cls, "RETURN_NAMES", rt)) == len(rt)
    if hasattr(cls, "OUTPUT_IS_LIST"):
        assert len(cls.OUTPUT_IS_LIST) == len(rt)
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        assert len(cls.OUTPUT_TOOLTIPS) == len(rt)
    if not rt:
        assert cls.OUTPUT_NODE


def test_lazy_input_is_only_the_classifier():
    lazy = [(cid, i["name"]) for cid, spec in FROZEN.items() for i in spec["inputs"] if i.get("lazy")]
    assert lazy == [("SafeCutKeywordGate", "classifier")]


def test_core_node_ids_are_avoided():
    # ComfyUI core ships LoadBackgroundRemovalModel / RemoveBackground; core ids always win over ours.
    assert not EXPECTED_IDS & {"RemoveBackground", "LoadBackgroundRemovalModel", "LoadImage", "SaveImage"}
