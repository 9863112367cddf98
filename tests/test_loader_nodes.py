"""SafeCut Load Image Batch and SafeCut Save Cutout through their ComfyUI contract (no ComfyUI needed)."""
from __future__ import annotations

import errno
import importlib
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from test_imaging import IS_ROOT, make_bad_images, make_good_images, solid

LOADER, SAVER = "SafeCutLoadImageBatch", "SafeCutSaveCutout"


@pytest.fixture()
def mods(pack):
    name = pack.__name__
    return {"loader": importlib.import_module(f"{name}.nodes.loader_nodes"),
            "save": importlib.import_module(f"{name}.nodes.save_nodes"),
            "imaging": importlib.import_module(f"{name}.safecut.imaging"),
            "errors": importlib.import_module(f"{name}.safecut.errors")}


@pytest.fixture()
def dirs(tmp_path, monkeypatch):
    inp, out = tmp_path / "input", tmp_path / "output"
    inp.mkdir()
    monkeypatch.setenv("SAFECUT_INPUT_DIR", str(inp))
    monkeypatch.setenv("SAFECUT_OUTPUT_DIR", str(out))
    monkeypatch.delenv("SAFECUT_ALLOWED_ROOTS", raising=False)
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    return inp, out


@pytest.fixture()
def loader(pack):
    return pack.NODE_CLASS_MAPPINGS[LOADER]


@pytest.fixture()
def saver(pack):
    return pack.NODE_CLASS_MAPPINGS[SAVER]


def run_loader(cls, **kw):
    args = dict(directory="", pattern="*", sort="natural", start_index=0, limit=0, mode="list",
                batch_fit="pad", on_error="fail")
    args.update(kw)
    out = getattr(cls(), cls.FUNCTION)(**args)
    return out["result"]


# ---- loader contract ----------------------------------------------------------------------------
def test_loader_contract(pack, loader):
    assert pack.NODE_DISPLAY_NAME_MAPPINGS[LOADER] == "SafeCut Load Image Batch"
    it = loader.INPUT_TYPES()
    assert list(it["required"]) == ["directory", "pattern", "sort", "start_index", "limit", "mode", "batch_fit",
                                    "on_error"]
    assert list(it["optional"]) == ["uploads"]
    for section in it.values():
        for name, spec in section.items():
            assert spec[1].get("tooltip"), name
    assert it["required"]["directory"][1]["default"] == "" and it["required"]["pattern"][1]["default"] == "*"
    assert it["required"]["sort"][0] == ["natural", "name", "mtime"]
    assert loader.RETURN_TYPES == ("IMAGE", "MASK", "STRING", "INT", "STRING")
    assert loader.OUTPUT_IS_LIST == (True, True, True, False, False)
    assert len(loader.OUTPUT_TOOLTIPS) == 5


def test_list_mode_native_sizes(loader, dirs):
    inp, _ = dirs
    make_good_images(inp / "odd")
    images, masks, names, count, errors = run_loader(loader, directory="odd")
    assert count == 9 and json.loads(errors) == [] and len(images) == len(masks) == len(names) == 9
    by = dict(zip(names, zip(images, masks)))
    img, m = by["rotated.jpg"]
    assert img.dtype == torch.float32 and tuple(img.shape) == (1, 64, 32, 3) and tuple(m.shape) == (1, 64, 32)
    img, m = by["rgba.png"]
    assert torch.allclose(m, torch.full((1, 2, 3), 1 - 40 / 255))          # mask = 1 - alpha
    assert torch.allclose(img[0, 0, 0], torch.tensor([10, 20, 30]) / 255.0)
    assert not by["one.png"][1].any()                                       # no alpha -> zeros


def test_batch_mode_one_tensor(loader, dirs):
    inp, _ = dirs
    make_good_images(inp)
    for fit in ("pad", "resize", "crop"):
        images, masks, names, count, _ = run_loader(loader, mode="batch", batch_fit=fit, limit=4)
        assert len(images) == 1 and len(masks) == 1 and count == 4 and len(names) == 4
        first = Image.open(inp / names[0]).size
        assert tuple(images[0].shape) == (4, first[1], first[0], 3)
        assert tuple(masks[0].shape) == (4, first[1], first[0])


def test_fail_and_skip_modes(loader, dirs, mods):
    inp, _ = dirs
    make_good_images(inp)
    bad = make_bad_images(inp)
    with pytest.raises(mods["errors"].BadInputError) as ei:
        run_loader(loader)
    for name in bad:
        assert name in str(ei.value)
    images, _, names, count, errors = run_loader(loader, on_error="skip")
    assert count == 9 == len(images)
    assert sorted(e["file"] for e in json.loads(errors)) == sorted(bad)
    assert not set(bad) & set(names)


def test_sort_start_limit_and_pattern(loader, dirs):
    inp, _ = dirs
    for i in (10, 2, 1):
        solid(inp / f"img{i}.png", (1, 1), (i, 0, 0))
    solid(inp / "x.jpg", (1, 1), (0, 0, 0))
    assert run_loader(loader, pattern="img*")[2] == ["img1.png", "img2.png", "img10.png"]
    assert run_loader(loader, pattern="img*", start_index=1, limit=1)[2] == ["img2.png"]
    assert run_loader(loader, sort="name", pattern="*.PNG")[2] == ["img1.png", "img10.png", "img2.png"]


def test_empty_selection_is_a_clear_error(loader, dirs, mods):
    inp, _ = dirs
    (inp / "empty").mkdir()
    with pytest.raises(mods["errors"].BadInputError, match="no images matching"):
        run_loader(loader, directory="empty")


def test_uploads_select_from_input_folder(loader, dirs, mods):
    inp, _ = dirs
    (inp / "other").mkdir()
    for n in ("req1_a.png", "req1_b.png", "req2_a.png"):
        solid(inp / n, (2, 2), (0, 0, 0))
    assert run_loader(loader, directory="other", uploads="req1_")[2] == ["req1_a.png", "req1_b.png"]
    assert run_loader(loader, uploads="req2_a.png,\nreq1_b.png")[2] == ["req2_a.png", "req1_b.png"]
    with pytest.raises(mods["errors"].BadInputError, match="lost.png"):
        run_loader(loader, uploads="req2_a.png, lost.png")
    res = run_loader(loader, uploads="req2_a.png, lost.png", on_error="skip")
    assert res[2] == ["req2_a.png"] and json.loads(res[4])[0]["file"] == "lost.png"


def test_is_changed_follows_content(loader, dirs):
    inp, _ = dirs
    for i in range(3):
        solid(inp / f"s{i}.png", (4, 4), (i, 0, 0))
    kw = dict(directory="", pattern="*", sort="natural", start_index=0, limit=0, mode="list", batch_fit="pad",
              on_error="fail")
    a = loader.IS_CHANGED(**kw)
    assert a == loader.IS_CHANGED(**kw) and isinstance(a, str)
    p = inp / "s1.png"
    st = os.stat(p)
    data = bytearray(p.read_bytes())
    data[-20] ^= 0x01
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    b = loader.IS_CHANGED(**kw)
    assert b != a
    solid(inp / "s3.png", (4, 4), (0, 0, 0))
    c = loader.IS_CHANGED(**kw)
    assert c != b
    os.unlink(inp / "s3.png")
    assert loader.IS_CHANGED(**kw) == b
    assert loader.IS_CHANGED(**dict(kw, uploads="s0.png")) != b
    nan = loader.IS_CHANGED(**dict(kw, directory=".."))
    assert nan != nan  # NaN: run() reports the error


def test_validate_inputs_refuses_escapes(loader, dirs, tmp_path, monkeypatch):
    inp, _ = dirs
    (inp / "ok").mkdir()
    os.symlink(tmp_path, inp / "esc")
    assert loader.VALIDATE_INPUTS(directory="ok") is True
    assert loader.VALIDATE_INPUTS() is True  # linked values are checked at run time
    for bad in ("..", "ok/../..", str(tmp_path), "%2e%2e", "ok\\..", "ok\x00", "esc", "missing"):
        msg = loader.VALIDATE_INPUTS(directory=bad)
        assert isinstance(msg, str) and msg.startswith("folder"), bad
    monkeypatch.setenv("SAFECUT_ALLOWED_ROOTS", str(tmp_path))
    assert loader.VALIDATE_INPUTS(directory=str(tmp_path)) is True


def comfyui_flagged_inputs(cls, inputs: dict) -> list[str]:
    """The input names ComfyUI 0.3.64 marks for a VALIDATE_INPUTS failure (execution.validate_inputs):
    every input the prompt gives that is also an argument of VALIDATE_INPUTS, whatever the message says."""
    import inspect

    spec = inspect.getfullargspec(cls.VALIDATE_INPUTS)
    given = {k: v for k, v in inputs.items() if k in spec.args or spec.varkw}
    return [] if cls.VALIDATE_INPUTS(**given) is True else list(given)


def test_each_path_error_is_blamed_on_its_own_widget(loader, dirs, mods):
    inp, _ = dirs
    (inp / "ok").mkdir()
    solid(inp / "ok" / "a.png", (2, 2), (0, 0, 0))
    solid(inp / "up.png", (2, 2), (0, 0, 0))
    good = dict(directory="ok", pattern="*", sort="natural", start_index=0, limit=0, mode="list",
                batch_fit="pad", on_error="fail", uploads="")
    assert comfyui_flagged_inputs(loader, good) == []
    assert comfyui_flagged_inputs(loader, dict(good, directory="../x")) == ["directory"]
    assert comfyui_flagged_inputs(loader, dict(good, directory="nope")) == ["directory"]
    # a bad pattern or upload name no longer marks 'directory' (nor each other): run() names them
    assert comfyui_flagged_inputs(loader, dict(good, pattern="../*")) == []
    assert comfyui_flagged_inputs(loader, dict(good, uploads="../x.png")) == []
    with pytest.raises(mods["errors"].BadInputError, match=r"^pattern '\.\./\*'"):
        run_loader(loader, **dict(good, pattern="../*"))
    with pytest.raises(mods["errors"].BadInputError, match=r"^uploads entry '\.\./x\.png' contains '\.\.'"):
        run_loader(loader, **dict(good, uploads="up.png, ../x.png"))
    assert run_loader(loader, **dict(good, uploads="up.png"))[2] == ["up.png"]  # uploads: from input/ itself


def test_default_folder_is_created_and_named_when_empty(loader, dirs, mods):
    inp, _ = dirs
    solid(inp / "example.png", (2, 2), (0, 0, 0))  # ComfyUI's own input image: not SafeCut's to read
    assert loader.VALIDATE_INPUTS(directory="safecut") is True
    assert (inp / "safecut").is_dir()
    with pytest.raises(mods["errors"].BadInputError) as err:
        run_loader(loader, directory="safecut")
    assert f"Put your images in {os.path.realpath(inp / 'safecut')}" in str(err.value)
    solid(inp / "safecut" / "mine.png", (2, 2), (0, 0, 0))
    assert run_loader(loader, directory="safecut")[2] == ["mine.png"]
    # uploads (worker-comfyui writes them to input/ itself) still load while directory is the default
    assert run_loader(loader, directory="safecut", uploads="example.png")[2] == ["example.png"]
    assert loader.VALIDATE_INPUTS(directory="other") != True and not (inp / "other").exists()  # no typo folders


def test_progress_is_called_per_file(loader, dirs, mods, monkeypatch):
    inp, _ = dirs
    for i in range(3):
        solid(inp / f"p{i}.png", (1, 1), (0, 0, 0))
    seen = []
    monkeypatch.setattr(mods["loader"], "Progress", lambda total: (seen.append(total), lambda n=1: seen.append(n))[1])
    run_loader(loader)
    assert seen == [3, 1, 1, 1]


# ---- save node ----------------------------------------------------------------------------------
def save(cls, image, **kw):
    listed = {k: (v if isinstance(v, list) else [v]) for k, v in kw.items()}
    listed.setdefault("filename_prefix", ["safecut/cutout"])
    return getattr(cls(), cls.FUNCTION)(image=image if isinstance(image, list) else [image], **listed)


def _frames():
    img = torch.zeros(2, 3, 4, 3)
    img[0, ..., 0], img[1, ..., 2] = 1.0, 1.0
    mask = torch.zeros(2, 3, 4)
    mask[0, :, :2] = 1.0
    mask[1, 1, :] = 51 / 255
    return img, mask


def test_save_contract(pack, saver):
    assert pack.NODE_DISPLAY_NAME_MAPPINGS[SAVER] == "SafeCut Save Cutout"
    assert saver.OUTPUT_NODE is True and saver.INPUT_IS_LIST is True and saver.RETURN_TYPES == ()
    it = saver.INPUT_TYPES()
    assert list(it["required"]) == ["image", "filename_prefix"]
    assert list(it["optional"]) == ["mask", "filenames", "report", "save_unsafe"]
    assert it["optional"]["save_unsafe"][1]["default"] is False
    for section in it.values():
        for name, spec in section.items():
            assert spec[1].get("tooltip"), name


def test_save_writes_rgba_with_mask_as_alpha_and_metadata(saver, dirs):
    _, out = dirs
    img, mask = _frames()
    report = json.dumps([{"verdict": "SAFE", "caption": "a red mug", "decided_by": "keywords"},
                         {"verdict": "SAFE", "caption": "a blue cup ☕", "p_unsafe": 0.01}])
    res = save(saver, img, mask=[mask], filenames=["mug.jpg", "sub/cup.png"], report=[report])
    ui = res["ui"]
    assert res["result"] == ()
    files = [e["filename"] for e in ui["images"]]
    assert files == ["cutout_00001_mug.png", "cutout_00002_sub_cup.png", "cutout_00001_report.json"]
    assert all(e["subfolder"] == "safecut" and e["type"] == "output" for e in ui["images"])
    with Image.open(out / "safecut" / files[0]) as im:
        assert im.mode == "RGBA"
        arr = np.asarray(im)
        meta = json.loads(im.text["safecut"])
        assert im.text["source_filename"] == "mug.jpg"
    np.testing.assert_array_equal(arr[..., 3], (mask[0].numpy() * 255).round())   # alpha == mask
    np.testing.assert_array_equal(arr[..., :3], np.broadcast_to([255, 0, 0], (3, 4, 3)))
    assert meta["verdict"] == "SAFE" and meta["caption"] == "a red mug" and meta["source"] == "mug.jpg"
    with Image.open(out / "safecut" / files[1]) as im:
        assert np.asarray(im)[1, 0, 3] == 51 and json.loads(im.text["safecut"])["caption"] == "a blue cup ☕"
    doc = json.loads((out / "safecut" / files[2]).read_text())
    assert doc["summary"]["saved"] == 2 and [r["filename"] for r in doc["images"]] == files[:2]
    assert ui["safecut"][0]["images"] == 2
    assert not [n for n in os.listdir(out / "safecut") if n.endswith(".tmp")]


def test_unsafe_images_are_listed_not_written(saver, dirs):
    _, out = dirs
    img, mask = _frames()
    report = json.dumps({"images": [{"file": "b.png", "verdict": "UNSAFE", "caption": "a knife"},
                                    {"file": "a.png", "verdict": "SAFE", "caption": "a cup"}]})
    res = save(saver, img, mask=[mask], filenames=["a.png", "b.png"], report=[report], filename_prefix="p")
    written = sorted(os.listdir(out))
    assert written == ["p_00001_a.png", "p_00001_report.json"]
    doc = json.loads((out / "p_00001_report.json").read_text())
    rows = {r["source"]: r for r in doc["images"]}
    assert rows["b.png"]["saved"] is False and rows["b.png"]["verdict"] == "UNSAFE" and "not written" in \
        rows["b.png"]["skipped_reason"]
    assert rows["a.png"]["caption"] == "a cup"  # matched by name, not by position
    assert [e["filename"] for e in res["ui"]["images"]] == ["p_00001_a.png", "p_00001_report.json"]
    res = save(saver, img, mask=[mask], filenames=["a.png", "b.png"], report=[report], filename_prefix="p",
               save_unsafe=True)
    assert [e["filename"] for e in res["ui"]["images"]] == ["p_00002_a.png", "p_00003_b.png", "p_00002_report.json"]
    with Image.open(out / "p_00003_b.png") as im:
        assert json.loads(im.text["safecut"])["verdict"] == "UNSAFE"


def test_report_problems_fail_closed(saver, dirs):
    _, out = dirs
    img, _ = _frames()
    for report in ("not json", json.dumps([{"verdict": "SAFE"}]), json.dumps([{"verdict": "UNDECIDED"}] * 2)):
        res = save(saver, img, report=[report], filename_prefix="fc")
        assert [e["filename"].endswith("_report.json") for e in res["ui"]["images"]] == [True]
        assert res["ui"]["safecut"][0]["saved"] == 0
    rows = json.loads((out / "fc_00001_report.json").read_text())["images"]
    assert rows[0]["verdict"] == "UNSAFE" and rows[0]["decided_by"] == "error"


def test_no_report_writes_all_and_list_input_is_gathered(saver, dirs):
    _, out = dirs
    a, b = torch.rand(1, 5, 6, 4), torch.rand(1, 2, 3, 3)  # list run: one tensor per image, mixed sizes
    res = save(saver, [a, b], filename_prefix="lst/x")
    names = [e["filename"] for e in res["ui"]["images"]]
    assert names == ["x_00001_.png", "x_00002_.png", "x_00001_report.json"]
    with Image.open(out / "lst" / names[0]) as im:  # 4-channel IMAGE keeps its alpha without a mask
        np.testing.assert_array_equal(np.asarray(im)[..., 3], (a[0, ..., 3].numpy() * 255 + 0.5).astype(np.uint8))
    with Image.open(out / "lst" / names[1]) as im:
        assert im.mode == "RGBA" and (np.asarray(im)[..., 3] == 255).all()


def test_counter_never_overwrites(saver, dirs):
    _, out = dirs
    img, _ = _frames()
    save(saver, img, filename_prefix="c")
    (out / "c_00007_manual.png").write_bytes(b"keep")
    res = save(saver, img, filename_prefix="c")
    assert [e["filename"] for e in res["ui"]["images"]][:2] == ["c_00008_.png", "c_00009_.png"]
    assert (out / "c_00007_manual.png").read_bytes() == b"keep"


def test_bad_prefix_and_mismatched_inputs(saver, dirs, mods):
    img, mask = _frames()
    Bad = mods["errors"].BadInputError
    for prefix in ("../x", "/tmp/x", "a/../../x"):
        with pytest.raises(Bad):
            save(saver, img, filename_prefix=prefix)
    with pytest.raises(Bad, match="mask"):
        save(saver, img, mask=[mask[:1]])
    with pytest.raises(Bad, match="filenames"):
        save(saver, img, filenames=["only-one.png"])
    with pytest.raises(Bad, match="mask 0"):
        save(saver, img, mask=[torch.zeros(2, 5, 5)])


def test_disk_full_leaves_no_temp_files(saver, dirs, mods, monkeypatch):
    _, out = dirs
    img, mask = _frames()

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "link", full)
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(mods["imaging"].SaveError, match="disk is full"):
        save(saver, img, mask=[mask])
    assert os.listdir(out / "safecut") == []


@pytest.mark.skipif(IS_ROOT or sys.platform == "win32", reason="root ignores directory permissions")
def test_read_only_output(saver, dirs, mods):
    _, out = dirs
    (out / "safecut").mkdir(parents=True)
    (out / "safecut").chmod(0o555)
    try:
        with pytest.raises(mods["imaging"].SaveError, match="permission denied"):
            save(saver, _frames()[0])
        assert os.listdir(out / "safecut") == []
    finally:
        (out / "safecut").chmod(0o755)


def test_loader_to_saver_roundtrip(loader, saver, dirs):
    """Batch mode: the saver gets [one batch] + the filenames list and pairs them in order."""
    inp, out = dirs
    solid(inp / "k1.png", (3, 2), (255, 0, 0, 128), "RGBA")
    solid(inp / "k2.png", (3, 2), (0, 255, 0, 255), "RGBA")
    images, masks, names, count, _ = run_loader(loader, mode="batch")
    alpha = [1 - m for m in masks]  # core convention (1 - alpha) -> alpha for the saver
    res = save(saver, images, mask=alpha, filenames=names, filename_prefix="rt")
    assert [e["filename"] for e in res["ui"]["images"]] == ["rt_00001_k1.png", "rt_00002_k2.png",
                                                             "rt_00001_report.json"]
    with Image.open(out / "rt_00001_k1.png") as im:
        assert np.asarray(im)[0, 0].tolist() == [255, 0, 0, 128]


def test_real_keyword_gate_report_is_matched_by_file_name(pack, saver, dirs):
    """The Keyword Gate's own report ({"summary", "images": [{..., "filename"}]}) drives what is written."""
    _, out = dirs
    gate_cls = pack.NODE_CLASS_MAPPINGS.get("SafeCutKeywordGate")
    if gate_cls is None:
        pytest.skip("Keyword Gate node not in the pack")
    g = gate_cls()
    res = g.run(captions=["a red mug on a table", "a rusty knife"], safe_keywords=["mug"],
                unsafe_keywords=["knife"], policy=["strict"], block_unsafe=[False],
                filenames=[["mug.png", "knife.png"]])
    report = res["result"][3]
    img, mask = _frames()
    ui = save(saver, img, mask=[mask], filenames=[["mug.png", "knife.png"]], report=report,
              filename_prefix="g")["ui"]
    assert [e["filename"] for e in ui["images"]] == ["g_00001_mug.png", "g_00001_report.json"]
    rows = json.loads((out / "g_00001_report.json").read_text())["images"]
    assert [(r["source"], r["verdict"], r["saved"]) for r in rows] == [("mug.png", "SAFE", True),
                                                                     ("knife.png", "UNSAFE", False)]
    with Image.open(out / "g_00001_mug.png") as im:
        meta = json.loads(im.text["safecut"])
    assert meta["caption"] == "a red mug on a table" and meta["decided_by"] == "keywords"


def test_source_name_falls_back_to_the_reports(saver, dirs):
    _, out = dirs
    img, _ = _frames()
    report = json.dumps({"images": [{"filename": "x/a.jpg", "verdict": "SAFE"}, {"filename": "b.jpg",
                                                                               "verdict": "SAFE"}]})
    ui = save(saver, img, report=report, filename_prefix="fb")["ui"]
    assert [e["filename"] for e in ui["images"]] == ["fb_00001_x_a.png", "fb_00002_b.png", "fb_00001_report.json"]
    with Image.open(out / "fb_00001_x_a.png") as im:
        assert json.loads(im.text["safecut"])["source"] == "x/a.jpg" and im.text["source_filename"] == "x/a.jpg"
