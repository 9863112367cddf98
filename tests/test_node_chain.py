"""Load Image Batch -> BEN2 -> (Florence -> Gate) -> Save Cutout, wired the way ComfyUI maps lists:
list outputs run the next (non-list) node once per item; INPUT_IS_LIST nodes get everything at once."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, TINY_BEN2


def _unwrap(out):
    return out["result"] if isinstance(out, dict) else out


@pytest.fixture()
def folders(tmp_path, monkeypatch, tiny_ben2_path):
    inp, outp = tmp_path / "input", tmp_path / "output"
    shutil.copytree(os.path.join(ROOT, "examples", "images"), inp / "batch1")
    # odd members: grayscale+alpha, 16-bit, and a broken file
    Image.new("LA", (40, 30), (128, 200)).save(inp / "batch1" / "la.png")
    Image.fromarray(np.full((20, 20), 40000, np.uint16)).save(inp / "batch1" / "sixteen.png")
    (inp / "batch1" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    monkeypatch.setenv("SAFECUT_INPUT_DIR", str(inp))
    monkeypatch.setenv("SAFECUT_OUTPUT_DIR", str(outp))
    monkeypatch.setenv("SAFECUT_MODELS_DIR", os.path.dirname(os.path.dirname(tiny_ben2_path)))
    return inp, outp


def test_folder_of_mixed_images_through_loader_ben2_save(pack, folders):
    inp, outp = folders
    N = pack.NODE_CLASS_MAPPINGS
    images, masks, names, count, errors = _unwrap(N["SafeCutLoadImageBatch"]().run(
        "batch1", "*", "natural", 0, 0, "list", "pad", "skip", ""))
    assert count == 5 and names == ["bottle.png", "la.png", "mug.jpg", "sixteen.png", "sticker.png"]
    assert [e["file"] for e in json.loads(errors)] == ["zz_broken.jpg"]      # reported, not dropped silently
    ben = N["SafeCutBEN2RemoveBackground"]()
    rgba, cut_masks = [], []
    for img in images:                                                       # ComfyUI maps the list item by item
        _, m, r, info = _unwrap(ben.run(img, TINY_BEN2, "auto", 1, "alpha", "", False, True))
        assert r.shape[:3] == img.shape[:3] and r.shape[-1] == 4
        rgba.append(r)
        cut_masks.append(m)
    out = N["SafeCutSaveCutout"]().save(rgba, ["safecut/test"], mask=cut_masks, filenames=names)
    files = [i for i in out["ui"]["images"] if i["filename"].endswith(".png")]
    assert len(files) == 5
    for f, name, m in zip(files, names, cut_masks):
        png = Image.open(outp / f["subfolder"] / f["filename"])
        assert png.mode == "RGBA" and os.path.splitext(name)[0] in f["filename"]
        alpha = np.asarray(png)[..., 3].astype(np.float32) / 255
        assert np.abs(alpha - m[0].numpy()).max() <= 1 / 255 + 1e-6            # the mask is the alpha
    assert not [p for p in (outp / "safecut").iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_gate_report_decides_what_is_saved(pack, folders):
    inp, outp = folders
    N = pack.NODE_CLASS_MAPPINGS
    images, _, names, _, _ = _unwrap(N["SafeCutLoadImageBatch"]().run(
        "batch1", "*.png", "natural", 0, 2, "list", "pad", "fail", ""))
    verdicts, by, safe, report = _unwrap(N["SafeCutKeywordGate"]().run(
        captions=["a green bottle", "a quokka"], safe_keywords=["bottle"], unsafe_keywords=["gun"],
        policy=["review"], block_unsafe=[False], images=images, filenames=names))
    assert verdicts == ["SAFE", "UNSAFE"] and by == ["keywords", "error"]     # no classifier: fail closed
    out = N["SafeCutSaveCutout"]().save(images, ["safecut/gated"], filenames=names, report=[report],
                                         save_unsafe=[False])
    saved = [i["filename"] for i in out["ui"]["images"]]
    assert any("bottle" in s for s in saved) and not any("la" in s and s.endswith(".png") for s in saved)
    rep = [i for i in out["ui"]["images"] if i["filename"].endswith(".json")]
    assert len(rep) == 1
    data = json.loads((outp / rep[0]["subfolder"] / rep[0]["filename"]).read_text())
    assert "UNSAFE" in json.dumps(data)
