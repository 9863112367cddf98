"""NudeNet engine and node, with the real bundled 320n.onnx (shipped in the nudenet wheel).

Flagged results cannot come from synthetic images, so decoding, NMS and the letterbox box mapping are
tested exactly with handcrafted model outputs (a fake session), and the real model is used for what it
must NOT find, for colours, batching, sizes and devices.
"""
import inspect
import json
import os
import sys

import numpy as np
import pytest

from conftest import load_pack, ort_has_cuda
from safecut.engines import nudenet as nn
from safecut.runtime.cache import get_cache
from safecut.errors import BadInputError, DeviceUnavailableError, ModelNotFoundError
from safecut.runtime.providers import DeviceChoice

pytestmark = pytest.mark.skipif(nn.bundled_model_path() is None, reason="nudenet package (bundled 320n.onnx) missing")

IDX = {label: i for i, label in enumerate(nn.LABELS)}


# ---- helpers ----------------------------------------------------------------------------------
def solid(h, w, rgb=(1.0, 0.0, 0.0)):
    img = np.empty((h, w, 3), np.float32)
    img[...] = rgb
    return img


def gradient(h=240, w=360):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([xx / w, yy / h, 1 - xx / w], -1)


def raw_output(boxes, anchors=16, n_cls=18, batch=1):
    """[batch, 4+n_cls, anchors] YOLOv8 output; boxes = [(anchor, cx, cy, w, h, {label: score}), …] per image
    (a flat list means image 0)."""
    out = np.zeros((batch, 4 + n_cls, anchors), np.float32)
    per_image = boxes if boxes and isinstance(boxes[0], list) else [boxes]
    for b, items in enumerate(per_image):
        for a, cx, cy, w, h, scores in items:
            out[b, :4, a] = (cx, cy, w, h)
            for label, s in scores.items():
                out[b, 4 + IDX[label], a] = s
    return out


class FakeSession:
    """Stands in for the ORT session: records the input, returns a prepared output."""

    def __init__(self, out):
        self.out, self.inputs = out, []

    def run(self, names, feed):
        x = feed["images"]
        self.inputs.append(x)
        out = self.out(x) if callable(self.out) else self.out
        return [out[: x.shape[0]]]


def fake_model(out, size=320, fixed_batch=0):
    return nn.NudeNetModel(FakeSession(out), "images", "output0", size, False, fixed_batch, nn.LABELS,
                           DeviceChoice("CPU", "CPU"), "/fake/320n.onnx")


# ---- model file, labels, sizes ------------------------------------------------------------------
def test_bundled_model_is_found_without_importing_nudenet(models_dir):
    path = nn.resolve_model("320n.onnx")
    assert path == nn.bundled_model_path() and os.path.getsize(path) == 12_150_158
    assert nn.resolve_model("320n.onnx (bundled)") == path
    assert "nudenet" not in sys.modules  # importing it would need OpenCV


def test_labels_and_input_size_come_from_the_model():
    m = nn.load_model(nn.bundled_model_path(), "CPU")
    assert m.labels == nn.LABELS and len(nn.LABELS) == 18   # model metadata agrees with our table
    assert (m.size, m.fixed_size, m.fixed_batch) == (320, False, 0)
    assert (m.input_name, m.output_name) == ("images", "output0")
    assert set(nn.DEFAULT_UNSAFE) <= set(nn.LABELS) and all("EXPOSED" in l for l in nn.DEFAULT_UNSAFE)


def test_model_in_models_folder_wins_and_unknown_models_fail(models_dir):
    (models_dir / "nudenet").mkdir()
    os.symlink(nn.bundled_model_path(), models_dir / "nudenet" / "320n.onnx")
    assert nn.resolve_model("320n.onnx") == str(models_dir / "nudenet" / "320n.onnx")
    with pytest.raises(ModelNotFoundError):
        nn.resolve_model("nope.onnx")
    with pytest.raises(ModelNotFoundError, match="models fetch 640m.onnx"):  # known, but downloads are off
        nn.resolve_model("640m.onnx")


def test_input_size_override_is_rounded_to_the_stride():
    img = gradient(120, 200)
    run = nn.detect([img], device="CPU", input_size=300)
    assert run.input_size == 320
    run = nn.detect([img], device="CPU", input_size=480)
    assert run.input_size == 480 and not run.results[0].detections


def test_parse_labels():
    assert nn.parse_labels("female_breast_exposed, ANUS_EXPOSED\n# comment\nBUTTOCKS EXPOSED # inline") == (
        "FEMALE_BREAST_EXPOSED", "ANUS_EXPOSED", "BUTTOCKS_EXPOSED")
    assert nn.parse_labels("\n".join(nn.DEFAULT_UNSAFE)) == nn.DEFAULT_UNSAFE
    assert nn.parse_labels(None) == nn.DEFAULT_UNSAFE and nn.parse_labels("") == ()
    with pytest.raises(BadInputError, match="FEMALE_BRAEST_EXPOSED"):  # a typo must not disable a label
        nn.parse_labels("FEMALE_BRAEST_EXPOSED")


# ---- preprocessing and colours --------------------------------------------------------------------
def test_letterbox_keeps_rgb_and_pads_bottom_right_with_black():
    x, (fr,) = nn.letterbox([solid(200, 400)], 320)        # pure red, wide
    assert x.shape == (1, 3, 320, 320) and x.dtype == np.float32
    content = x[0, :, :160, :]
    assert np.all(content[0] == 1.0) and np.all(content[1:] == 0.0)   # R channel exactly 1: no BGR swap
    assert np.all(x[0, :, 160:, :] == 0.0)                              # padding below, black
    assert (fr.height, fr.width, fr.sx, fr.sy) == (200, 400, 0.8, 0.8)
    x, _ = nn.letterbox([solid(320, 100, (0.0, 0.0, 1.0))], 320)        # tall, pure blue
    assert np.all(x[0, 2, :, :100] == 1.0) and np.all(x[0, :2] == 0.0) and np.all(x[0, :, :, 100:] == 0.0)


def test_letterbox_accepts_uint8_rgba_and_gray():
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 128
    gray = np.full((10, 20, 1), 0.5, np.float32)
    x, _ = nn.letterbox([rgba, gray], 64)
    assert np.all(x[0, 0, :32] == 1.0) and np.all(x[0, 1:, :32] == 0.0)
    assert np.allclose(x[1, :, :32], 0.5)
    with pytest.raises(BadInputError):
        nn.letterbox([np.zeros((4, 4, 2), np.float32)], 64)


def test_resize_is_bilinear_and_exact_on_flat_colour():
    img = np.arange(4, dtype=np.float32).reshape(1, 4, 1).repeat(2, 0)   # 2x4 ramp 0,1,2,3
    np.testing.assert_allclose(nn.resize_bilinear(img, 2, 2)[0, :, 0], [0.5, 2.5])  # pixel-centre aligned
    flat = solid(37, 53, (0.2, 0.4, 0.6))
    out = nn.resize_bilinear(flat, 20, 29)
    assert out.shape == (20, 29, 3) and np.all(out == flat[0, 0])


# ---- decode / NMS / box mapping (handcrafted outputs) --------------------------------------------------
def test_overlapping_boxes_of_one_label_become_one_box_mapped_to_original_pixels():
    # original 200x400 (HxW) -> model scale 0.8, content 160x320 at the top-left of 320x320
    raw = raw_output([(0, 160, 80, 80, 40, {"FEMALE_BREAST_EXPOSED": 0.9}),
                      (1, 164, 82, 80, 40, {"FEMALE_BREAST_EXPOSED": 0.8}),    # IoU ~0.8 with anchor 0
                      (2, 40, 40, 16, 16, {"FEET_EXPOSED": 0.7})])
    (res,) = nn.decode(raw, [nn.Letterbox(200, 400, 0.8, 0.8)], threshold=0.5)
    assert res.is_unsafe and res.max_score == pytest.approx(0.9)
    assert [d["label"] for d in res.detections] == ["FEMALE_BREAST_EXPOSED", "FEET_EXPOSED"]
    breast, feet = res.detections
    # model box x 120..200, y 60..100 -> original /0.8 -> x 150..250, y 75..125 -> [x, y, w, h]
    assert breast["box"] == [150, 75, 100, 50] and breast["unsafe"] is True
    assert breast["score"] == pytest.approx(0.9)
    assert feet["box"] == [40, 40, 20, 20] and feet["unsafe"] is False


def test_boxes_are_rounded_outwards_and_clipped_and_padding_boxes_dropped():
    raw = raw_output([(0, 10.3, 10.3, 10.0, 10.0, {"ANUS_EXPOSED": 0.6}),       # 5.3..15.3
                      (1, 315, 20, 30, 20, {"ANUS_EXPOSED": 0.7}),              # crosses the right edge
                      (2, 100, 250, 40, 40, {"MALE_GENITALIA_EXPOSED": 0.95})])  # only in the padding
    (res,) = nn.decode(raw, [nn.Letterbox(160, 320, 1.0, 1.0)], threshold=0.5)
    boxes = [d["box"] for d in sorted(res.detections, key=lambda d: d["score"])]
    assert boxes == [[5, 5, 11, 11], [300, 10, 20, 20]]
    assert len(res.detections) == 2 and res.max_score == pytest.approx(0.7)  # the padding box counts nowhere


def test_nms_is_per_label_and_multi_label_by_default():
    face_over_breast = [(0, 100, 100, 60, 60, {"FACE_FEMALE": 0.95}),
                        (1, 102, 100, 60, 60, {"FEMALE_BREAST_EXPOSED": 0.6})]
    fr = [nn.Letterbox(320, 320, 1.0, 1.0)]
    (res,) = nn.decode(raw_output(face_over_breast), fr, threshold=0.5)
    assert res.is_unsafe and {d["label"] for d in res.detections} == {"FACE_FEMALE", "FEMALE_BREAST_EXPOSED"}
    (agn,) = nn.decode(raw_output(face_over_breast), fr, threshold=0.5, agnostic=True)   # NudeNet's own NMS
    assert [d["label"] for d in agn.detections] == ["FACE_FEMALE"] and not agn.is_unsafe
    one_anchor_two_labels = [(0, 100, 100, 60, 60, {"FACE_FEMALE": 0.9, "FEMALE_BREAST_EXPOSED": 0.6})]
    (ml,) = nn.decode(raw_output(one_anchor_two_labels), fr, threshold=0.5)
    (sl,) = nn.decode(raw_output(one_anchor_two_labels), fr, threshold=0.5, multi_label=False)
    assert ml.is_unsafe and len(ml.detections) == 2
    assert not sl.is_unsafe and [d["label"] for d in sl.detections] == ["FACE_FEMALE"]


def test_nms_function():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    keep = nn.nms(boxes, np.array([0.5, 0.9, 0.8, 0.1]), 0.45)
    assert keep.tolist() == [1, 2]
    assert nn.nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


@pytest.mark.parametrize("threshold, unsafe", [(0.3, True), (0.59, True), (0.61, False), (0.9, False)])
def test_threshold_decides_and_max_score_is_reported_below_it(threshold, unsafe):
    raw = raw_output([(0, 100, 100, 50, 50, {"BUTTOCKS_EXPOSED": 0.6, "FEET_COVERED": 0.4})])
    (res,) = nn.decode(raw, [nn.Letterbox(320, 320, 1.0, 1.0)], threshold=threshold)
    assert res.is_unsafe is unsafe and res.max_score == pytest.approx(0.6)
    assert res.is_unsafe == (res.max_score >= threshold)
    assert [d["label"] for d in res.detections if d["unsafe"]] == (["BUTTOCKS_EXPOSED"] if unsafe else [])


def test_unsafe_labels_choose_what_flags():
    raw = raw_output([(0, 100, 100, 50, 50, {"FEET_EXPOSED": 0.8})])
    fr = [nn.Letterbox(320, 320, 1.0, 1.0)]
    assert not nn.decode(raw, fr)[0].is_unsafe
    (res,) = nn.decode(raw, fr, unsafe_labels=("FEET_EXPOSED",))
    assert res.is_unsafe and res.max_score == pytest.approx(0.8)
    assert nn.decode(raw, fr, unsafe_labels=())[0].max_score == 0.0


def test_transposed_output_layout_is_accepted():
    raw = raw_output([(0, 160, 80, 80, 40, {"ANUS_EXPOSED": 0.9})])
    fr = [nn.Letterbox(200, 400, 0.8, 0.8)]
    assert nn.decode(raw.transpose(0, 2, 1), fr) == nn.decode(raw, fr)
    with pytest.raises(Exception, match="channels"):
        nn.decode(np.zeros((1, 30, 8), np.float32), fr)


def test_batch_of_mixed_sizes_maps_each_image_back_to_its_own_pixels():
    # the same model-space box (x 40..120, y 40..80) in three differently sized images:
    # 160x320 -> scale 1; 100x50 -> scale 3.2 (x 12.5..37.5, y 12.5..25, rounded outwards); 640x640 -> 0.5
    box = [(0, 80, 60, 80, 40, {"FEMALE_GENITALIA_EXPOSED": 0.88})]
    model = fake_model(raw_output([box, box, box], batch=3))
    imgs = [solid(160, 320), solid(100, 50), solid(640, 640)]
    res = nn.run_model(model, imgs, batch_size=3)
    assert [r.detections[0]["box"] for r in res] == [[40, 40, 80, 40], [12, 12, 26, 13], [80, 80, 160, 80]]
    assert all(r.is_unsafe for r in res)
    (x,) = model.session.inputs
    assert x.shape == (3, 3, 320, 320)


def test_progress_per_chunk_and_fixed_batch_models():
    calls = []
    model = fake_model(lambda x: raw_output([], batch=x.shape[0]), fixed_batch=0)
    nn.run_model(model, [solid(20, 20)] * 5, batch_size=2, progress=calls.append)
    assert calls == [2, 2, 1] and [x.shape[0] for x in model.session.inputs] == [2, 2, 1]
    fixed = fake_model(lambda x: raw_output([], batch=x.shape[0]), fixed_batch=1)
    assert len(nn.run_model(fixed, [solid(20, 20)] * 3, batch_size=8)) == 3
    assert [x.shape[0] for x in fixed.session.inputs] == [1, 1, 1]


# ---- the real model ---------------------------------------------------------------------------------
def test_plain_gradient_and_noise_images_have_no_detections():
    rng = np.random.default_rng(0)
    imgs = [solid(200, 300, (0.5, 0.5, 0.5)), gradient(), solid(150, 100), rng.random((300, 200, 3), np.float32)]
    run = nn.detect(imgs, device="CPU", threshold=0.2)
    assert len(run.results) == 4 and run.device.used == "CPU" and run.input_size == 320
    for r in run.results:
        assert r.detections == [] and not r.is_unsafe and 0.0 <= r.max_score < 0.2


def test_batch_of_different_sizes_equals_one_by_one():
    rng = np.random.default_rng(1)
    imgs = [gradient(64, 96), rng.random((200, 120, 3), np.float32), solid(333, 500, (0.9, 0.7, 0.6)),
            gradient(320, 320)]
    together = nn.detect(imgs, device="CPU", threshold=0.05, batch_size=4).results
    alone = [nn.detect([im], device="CPU", threshold=0.05, batch_size=1).results[0] for im in imgs]
    for a, b in zip(together, alone):
        assert a.max_score == pytest.approx(b.max_score, abs=1e-4)
        assert [d["label"] for d in a.detections] == [d["label"] for d in b.detections]


def test_cuda_request_falls_back_to_cpu_with_a_note_and_strict_raises():
    if ort_has_cuda():
        pytest.skip("CUDA provider present: no fallback to observe")
    get_cache().unload("nudenet")
    with pytest.raises(DeviceUnavailableError):
        nn.detect([gradient()], device="CUDA", strict=True)
    run = nn.detect([gradient()], device="CUDA")
    assert run.device.used == "CPU" and "CUDA" in run.device.note and run.device.describe().startswith("CPU · ")
    with pytest.raises(DeviceUnavailableError):   # the cached fallback session must not satisfy strict mode
        nn.detect([gradient()], device="CUDA", strict=True)
    assert nn.detect([gradient()], device="auto").device.note == ""


def test_model_stays_cached_or_is_released():
    cache = get_cache()
    cache.unload("nudenet")
    nn.detect([gradient()], device="CPU", keep_loaded=True)
    assert any(k.kind == "nudenet" for k in cache.keys())
    loads = cache.stats()["loads"]
    run = nn.detect([gradient()], device="CPU")
    assert cache.stats()["loads"] == loads and run.load_seconds == 0.0
    nn.detect([gradient()], device="CPU", keep_loaded=False)
    assert not any(k.kind == "nudenet" for k in cache.keys())


def test_bad_arguments():
    with pytest.raises(BadInputError):
        nn.detect([gradient()], threshold=0)
    with pytest.raises(BadInputError):
        nn.detect([gradient()], threshold=1.5)
    with pytest.raises(BadInputError):
        nn.detect([gradient()], unsafe_labels="NOT_A_LABEL")


# ---- mask and censoring -------------------------------------------------------------------------------
DETS = [{"label": "FEMALE_BREAST_EXPOSED", "score": 0.9, "box": [10, 20, 30, 15], "unsafe": True},
        {"label": "FACE_FEMALE", "score": 0.9, "box": [0, 0, 8, 8], "unsafe": False},
        {"label": "ANUS_EXPOSED", "score": 0.7, "box": [90, 50, 40, 40], "unsafe": True}]   # crosses the border


def test_mask_from_detections():
    m = nn.mask_from_detections(DETS, 64, 100)
    assert m.shape == (64, 100) and m.dtype == np.float32
    assert m[20:35, 10:40].min() == 1.0 and m[50:64, 90:100].min() == 1.0
    assert m.sum() == 30 * 15 + 14 * 10 and m[0:8, 0:8].max() == 0.0      # the face is not flagged
    assert nn.mask_from_detections(DETS, 64, 100, labels=["FACE_FEMALE"]).sum() == 64
    assert nn.mask_from_detections(DETS, 64, 100, grow=2)[18, 8] == 1.0
    assert nn.mask_from_detections([], 5, 6).sum() == 0


@pytest.mark.parametrize("mode", ["blur", "pixelate", "black", "none"])
def test_censor_changes_only_the_boxes_and_keeps_colours(mode):
    red = solid(64, 100)
    out = nn.censor(red, DETS, mode)
    outside = nn.mask_from_detections(DETS, 64, 100) == 0
    assert out.shape == red.shape and out.dtype == np.float32
    assert np.array_equal(out[outside], red[outside])                     # bit-for-bit outside the boxes
    inside = out[20:35, 10:40]
    if mode == "black":
        assert np.all(inside == 0.0)
    else:                                                                  # flat red stays pure red
        assert np.all(inside[..., 0] == 1.0) and np.all(inside[..., 1:] == 0.0)


def test_censor_actually_hides_detail():
    img = np.random.default_rng(0).random((64, 100, 3)).astype(np.float32)
    for mode in ("blur", "pixelate"):
        out = nn.censor(img, DETS, mode)
        region, before = out[20:35, 10:40], img[20:35, 10:40]
        assert region.std() < before.std() * 0.5, mode
        assert np.array_equal(out[:8, :8], img[:8, :8])                     # unflagged face untouched
    px = nn.censor(img, DETS, "pixelate")[20:35, 10:40]       # 30x15 box -> 4 px blocks, 8x4 of them
    assert len(np.unique(px[..., 0])) <= 32 and np.all(px[:4, :4] == px[0, 0])
    with pytest.raises(BadInputError):
        nn.censor(img, DETS, "smudge")


# ---- the ComfyUI node -----------------------------------------------------------------------------------
WIDGETS = ["model", "device", "threshold", "unsafe_labels", "censor", "threads", "keep_model_loaded"]


@pytest.fixture(scope="module")
def node_mod():
    pack = load_pack()
    assert "nudenet_nodes" not in pack.IMPORT_ERRORS
    return sys.modules[pack.__name__ + ".nodes.nudenet_nodes"]


def _run(node_mod, image, **kw):
    args = dict(model="320n.onnx", device="CPU", threshold=0.5, unsafe_labels="\n".join(nn.DEFAULT_UNSAFE),
                censor="none", threads=0, keep_model_loaded=True)
    args.update(kw)
    return node_mod.SafeCutNudeNetDetector().run(image, **args)


def test_node_contract(node_mod):
    pack = load_pack()
    cls = pack.NODE_CLASS_MAPPINGS["SafeCutNudeNetDetector"]
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["SafeCutNudeNetDetector"] == "SafeCut NudeNet Detector"
    req = cls.INPUT_TYPES()["required"]
    assert [k for k in req if k != "image"] == WIDGETS and req["image"][0] == "IMAGE"
    assert req["model"][0][0] == "320n.onnx" and req["censor"][0] == ["none", "blur", "pixelate", "black"]
    assert req["device"][0] == ["auto", "CPU", "CUDA"] and req["threshold"][1]["default"] == 0.25
    for name, spec in req.items():
        assert spec[1].get("tooltip"), name
    assert all(l in req["unsafe_labels"][1]["tooltip"] for l in nn.LABELS)
    assert cls.RETURN_TYPES == ("SAFECUT_NUDENET", "BOOLEAN", "FLOAT", "STRING", "MASK", "IMAGE")
    assert cls.RETURN_NAMES == ("nudenet", "is_unsafe", "max_score", "detections_json", "mask", "censored")
    assert cls.OUTPUT_IS_LIST == (False, True, True, False, False, False)
    assert len(cls.OUTPUT_TOOLTIPS) == 6 and cls.DESCRIPTION


def test_node_outputs_with_the_real_model(node_mod):
    import torch

    img = torch.zeros(2, 48, 80, 3)
    img[..., 0] = 1.0
    out = _run(node_mod, img, censor="blur")
    nudenet, is_unsafe, max_score, js, mask, censored = out["result"]
    assert is_unsafe == [False, False] and len(max_score) == 2 and all(isinstance(s, float) for s in max_score)
    assert [set(r) for r in nudenet] == [{"is_unsafe", "max_score", "detections"}] * 2
    assert tuple(mask.shape) == (2, 48, 80) and mask.dtype == torch.float32 and mask.sum() == 0
    assert tuple(censored.shape) == (2, 48, 80, 3) and torch.equal(censored, img)   # pure red stays pure red
    report = json.loads(js)
    assert report["device"].startswith("CPU · ") and report["model"] == "320n.onnx" and len(report["images"]) == 2
    assert out["ui"]["device"] == [report["device"]] and "0/2 unsafe" in out["ui"]["text"][0]
    assert _run(node_mod, img)["result"][5] is img                         # censor=none: passthrough


def test_node_flagged_result_feeds_mask_censor_and_gate(node_mod, monkeypatch):
    import torch

    engine = node_mod.nudenet
    real_detect = engine.detect

    def fake_detect(frames, **kw):
        run = real_detect(frames, **kw)
        run.results[1] = engine.NudeResult(True, 0.91, [dict(DETS[0])])
        return run

    monkeypatch.setattr(engine, "detect", fake_detect)
    img = torch.zeros(2, 64, 100, 3)
    img[..., 0] = 1.0
    nudenet, is_unsafe, max_score, js, mask, censored = _run(node_mod, img, censor="black")["result"]
    assert is_unsafe == [False, True] and max_score[1] == pytest.approx(0.91)
    assert mask[1, 20:35, 10:40].min() == 1.0 and mask[1].sum() == 450 and mask[0].sum() == 0
    assert censored[1, 20:35, 10:40].abs().max() == 0.0 and torch.equal(censored[0], img[0])
    keep = mask[1] == 0
    assert torch.equal(censored[1][keep], img[1][keep])
    gate_nodes = sys.modules[load_pack().__name__ + ".nodes.gate_nodes"]
    assert gate_nodes._nudenet_flags([nudenet]) == [False, True]           # list-mode runs arrive nested
    assert json.loads(js)["images"][1]["detections"][0]["box"] == [10, 20, 30, 15]


def test_node_rejects_unknown_labels_before_loading(node_mod):
    import torch

    pack_errors = sys.modules[load_pack().__name__ + ".safecut.errors"]    # the pack's own copy of the module
    with pytest.raises(pack_errors.BadInputError, match="not a NudeNet label"):
        _run(node_mod, torch.zeros(1, 8, 8, 3), unsafe_labels="FEMALE_BREAST_EXPOSED, BOOBS")


def test_default_threshold_is_nudenets_own_score_cut():
    """nudenet 3.4.2 itself reports a detection from a score of 0.25 (NMSBoxes score_threshold); read from
    the installed package source so a change upstream shows up here."""
    import importlib.util
    import re

    spec = importlib.util.find_spec("nudenet")
    src = open(os.path.join(list(spec.submodule_search_locations)[0], "nudenet.py")).read()
    m = re.search(r"NMSBoxes\(\s*boxes,\s*scores,\s*([0-9.]+)", src)
    assert m and float(m.group(1)) == nn.DEFAULT_THRESHOLD == 0.25
    assert inspect.signature(nn.detect).parameters["threshold"].default == nn.DEFAULT_THRESHOLD


# ---- per-label thresholds -------------------------------------------------------------------------
def test_parse_label_thresholds():
    text = "buttocks_exposed = 0.7  # stricter\n\nFEMALE-BREAST-EXPOSED=0.4, feet exposed=1"
    assert nn.parse_label_thresholds(text) == {"BUTTOCKS_EXPOSED": 0.7, "FEMALE_BREAST_EXPOSED": 0.4,
                                               "FEET_EXPOSED": 1.0}
    assert nn.parse_label_thresholds("") == {} == nn.parse_label_thresholds(None)
    assert nn.parse_label_thresholds("# only a comment\n") == {}
    assert nn.parse_label_thresholds({"anus_exposed": "0.3"}) == {"ANUS_EXPOSED": 0.3}
    for bad, msg in [("BOOBS=0.4", "is not a NudeNet label"), ("BUTTOCKS_EXPOSED 0.4", "is not LABEL=score"),
                     ("BUTTOCKS_EXPOSED=0", "out of range"), ("BUTTOCKS_EXPOSED=1.5", "out of range"),
                     ("BUTTOCKS_EXPOSED=nan", "out of range"), ("BUTTOCKS_EXPOSED=high", "out of range"),
                     ("BUTTOCKS_EXPOSED=0.4\nbuttocks_exposed=0.5", "given twice")]:
        with pytest.raises(BadInputError, match=msg):
            nn.parse_label_thresholds(bad)


@pytest.mark.parametrize("multi_label", [True, False])
def test_label_thresholds_override_the_global_threshold_per_label(multi_label):
    raw = raw_output([(0, 60, 60, 40, 40, {"BUTTOCKS_EXPOSED": 0.6}),
                      (1, 200, 200, 40, 40, {"FEMALE_BREAST_EXPOSED": 0.3}),
                      (2, 260, 100, 40, 40, {"FEET_EXPOSED": 0.35})])
    fr = [nn.Letterbox(320, 320, 1.0, 1.0)]

    def flagged(threshold, overrides):
        (res,) = nn.decode(raw, fr, threshold=threshold, label_thresholds=overrides, multi_label=multi_label)
        assert res.max_score == pytest.approx(0.6)            # the tuning aid ignores every threshold
        return res, sorted(d["label"] for d in res.detections if d["unsafe"])

    assert flagged(0.25, {})[1] == ["BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED"]
    assert flagged(0.25, {"BUTTOCKS_EXPOSED": 0.7})[1] == ["FEMALE_BREAST_EXPOSED"]      # stricter for one label
    res, labels = flagged(0.25, {"BUTTOCKS_EXPOSED": 0.7, "FEMALE_BREAST_EXPOSED": 0.5})
    assert labels == [] and not res.is_unsafe
    assert flagged(0.9, {})[1] == []
    assert flagged(0.9, {"FEMALE_BREAST_EXPOSED": 0.3})[1] == ["FEMALE_BREAST_EXPOSED"]   # looser for one label
    # an override sets the score a label needs, not whether it counts: FEET_EXPOSED is listed, never unsafe
    res, labels = flagged(0.9, {"FEET_EXPOSED": 0.3})
    assert labels == [] and not res.is_unsafe and [d["label"] for d in res.detections] == ["FEET_EXPOSED"]


def test_node_label_thresholds_input_is_the_last_optional_and_reaches_the_report(node_mod):
    import torch

    cls = node_mod.SafeCutNudeNetDetector
    opt = cls.INPUT_TYPES()["optional"]
    assert list(opt)[-1] == "label_thresholds" and opt["label_thresholds"][1]["default"] == ""
    tip = opt["label_thresholds"][1]["tooltip"]
    assert "LABEL=score" in tip and "unsafe_labels" in tip and "error" in tip
    img = torch.zeros(1, 48, 80, 3)
    out = _run(node_mod, img, label_thresholds="buttocks_exposed=0.7")
    assert json.loads(out["result"][3])["label_thresholds"] == {"BUTTOCKS_EXPOSED": 0.7}
    assert json.loads(_run(node_mod, img)["result"][3])["label_thresholds"] == {}   # optional: old workflows


def test_node_rejects_unknown_threshold_labels_before_loading(node_mod, monkeypatch):
    import torch

    engine = node_mod.nudenet
    monkeypatch.setattr(engine, "detect", lambda *a, **k: pytest.fail("the model must not run"))
    pack_errors = sys.modules[load_pack().__name__ + ".safecut.errors"]
    with pytest.raises(pack_errors.BadInputError, match="not a NudeNet label"):
        _run(node_mod, torch.zeros(1, 8, 8, 3), label_thresholds="BOOBS=0.4")
