"""Regenerate safecut/contract.json from the nodes' INPUT_TYPES / RETURN_TYPES.

The contract is public: saved workflows store widget values by position, and API workflows by name.
tests/test_node_contract.py fails when a node drifts from it. Only ever APPEND widgets; then rerun:
    .venv/bin/python scripts/freeze_contract.py
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
os.environ.setdefault("SAFECUT_MODELS_DIR", os.path.join(ROOT, ".no-models"))

from conftest import load_pack  # noqa: E402


def main() -> None:
    pack = load_pack()
    sys.path.insert(0, ROOT)
    from safecut.contract import describe_node

    contract = {cid: describe_node(cls, pack.NODE_DISPLAY_NAME_MAPPINGS[cid])
                for cid, cls in sorted(pack.NODE_CLASS_MAPPINGS.items())}
    path = os.path.join(ROOT, "safecut", "contract.json")
    with open(path, "w") as f:
        json.dump(contract, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"wrote {path}: {len(contract)} nodes")


if __name__ == "__main__":
    main()
