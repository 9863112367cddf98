"""The public contract of SafeCut's nodes (class ids, inputs, widget order, outputs), frozen in
contract.json. The workflow generator and converter read it; tests check the nodes still match it."""
from __future__ import annotations

import json
import os

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
# model dropdowns list files found on disk: their options are not part of the contract
DYNAMIC_COMBOS = {"model", "model_family", "quantization"}


def _input_entry(name: str, spec, optional: bool) -> dict:
    typ, opts = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
    entry = {"name": name, "optional": optional}
    if isinstance(typ, (list, tuple)):
        entry["type"] = "COMBO"
        entry["options"] = None if name in DYNAMIC_COMBOS else list(typ)
    else:
        entry["type"] = typ
    entry["widget"] = entry["type"] in WIDGET_TYPES and not opts.get("forceInput", False)
    if entry["widget"]:
        entry["default"] = opts.get("default")
        for k in ("min", "max"):
            if k in opts:
                entry[k] = opts[k]
    if opts.get("lazy"):
        entry["lazy"] = True
    return entry


def describe_node(cls, display_name: str) -> dict:
    it = cls.INPUT_TYPES()
    inputs = [_input_entry(n, s, False) for n, s in it.get("required", {}).items()]
    inputs += [_input_entry(n, s, True) for n, s in it.get("optional", {}).items()]
    out_list = list(getattr(cls, "OUTPUT_IS_LIST", ()) or ())
    outputs = [{"name": n, "type": t, "is_list": bool(out_list[i]) if i < len(out_list) else False}
               for i, (n, t) in enumerate(zip(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), cls.RETURN_TYPES))]
    return {"display_name": display_name, "inputs": inputs, "outputs": outputs,
            "input_is_list": bool(getattr(cls, "INPUT_IS_LIST", False)),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False))}


def load() -> dict:
    with open(os.path.join(os.path.dirname(__file__), "contract.json")) as f:
        return json.load(f)


def widgets(contract: dict, class_type: str) -> list[dict]:
    return [i for i in contract[class_type]["inputs"] if i["widget"]]


def sockets(contract: dict, class_type: str) -> list[dict]:
    return [i for i in contract[class_type]["inputs"] if not i["widget"]]


def output_index(contract: dict, class_type: str, name: str) -> int:
    names = [o["name"] for o in contract[class_type]["outputs"]]
    if name not in names:
        raise KeyError(f"{class_type} has no output '{name}' (outputs: {names})")
    return names.index(name)
