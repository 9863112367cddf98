"""Florence-2 engine and node, on a tiny Florence-2 built locally (no network, no real weights)."""
import os
import sys
import types

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("transformers")
import torch  # noqa: E402

from conftest import load_pack  # noqa: E402
from safecut.engines import florence  # noqa: E402
from safecut.runtime.cache import get_cache  # noqa: E402
from safecut.errors import BadInputError, MissingDependencyError, ModelNotFoundError, SafeCutError  # noqa: E402
from safecut.testkit.tiny_florence import build_tiny_florence, is_complete  # noqa: E402

TINY = "tiny-florence2"
FAST = dict(device="CPU", max_new_tokens=12, num_beams=2)


@pytest.fixture(scope="session")
def tiny_florence_root(tmp_path_factory):
    """models/ root holding florence2/tiny-florence2 (built once per session)."""
    root = tmp_path_factory.mktemp("flo_models")
    build_tiny_florence(str(root / "florence2" / TINY))
    return root


@pytest.fixture()
def flo_models(tiny_florence_root, monkeypatch):
    monkeypatch.setenv("SAFECUT_MODELS_DIR", str(tiny_florence_root))
    get_cache().unload("florence2")
    get_cache().reset_stats()
    return tiny_florence_root


def images(n=3, h=48, w=64):
    rng = np.random.default_rng(7)
    out = [np.zeros((h, w, 3), np.float32), np.ones((h + 8, w - 8, 3), np.float32)]
    out += [rng.random((h, w, 3), dtype=np.float32) for _ in range(max(0, n - 2))]
    return out[:n]


def test_tiny_build_is_small_and_cached(tiny_florence_root):
    d = tiny_florence_root / "florence2" / TINY
    assert is_complete(str(d))
    size = sum(f.stat().st_size for f in d.iterdir())
    assert size < 5 * 1024 * 1024
    mtime = (d / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_florence(str(d)) == str(d)                       # complete: not rebuilt
    assert (d / "model.safetensors").stat().st_mtime_ns == mtime


def test_tiny_build_is_deterministic(tiny_florence_root, tmp_path):
    again = build_tiny_florence(str(tmp_path / "again"))
    first = tiny_florence_root / "florence2" / TINY
    for f in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (first / f).read_bytes() == (tmp_path / "again" / f).read_bytes(), f
    assert is_complete(again)


def test_caption_end_to_end(flo_models):
    res = florence.caption_images(images(2), TINY, **FAST)
    assert len(res.captions) == 2 and all(isinstance(c, str) and c for c in res.captions)
    assert res.captions[0] != res.captions[1]                          # captions depend on the image
    assert res.device.used == "CPU" and res.dtype == "fp32" and res.note == "" and res.seconds > 0
    assert res.load_seconds > 0


def test_batched_equals_one_by_one_and_is_deterministic(flo_models):
    imgs = images(3)
    batched = florence.caption_images(imgs, TINY, batch_size=3, **FAST).captions
    alone = [florence.caption_images([im], TINY, batch_size=1, **FAST).captions[0] for im in imgs]
    assert batched == alone
    assert len(set(batched)) == 3
    assert florence.caption_images(imgs, TINY, batch_size=2, **FAST).captions == batched   # uneven chunks
    assert florence.caption_images(imgs, TINY, batch_size=3, **FAST).captions == batched   # repeatable


def test_whole_batch_goes_through_batched_generate(flo_models, monkeypatch):
    calls = []
    orig = florence.generate_captions

    def spy(fm, imgs, *a, **kw):
        real = fm.model.generate

        def gen(**inputs):
            calls.append(inputs["pixel_values"].shape[0])
            return real(**inputs)

        monkeypatch.setattr(fm.model, "generate", gen)
        try:
            return orig(fm, imgs, *a, **kw)
        finally:
            monkeypatch.delattr(fm.model, "generate")

    monkeypatch.setattr(florence, "generate_captions", spy)
    progress = []
    florence.caption_images(images(5), TINY, batch_size=2, progress=progress.append, **FAST)
    assert calls == [2, 2, 1] and progress == [2, 2, 1]


def test_fp16_on_cpu_runs_fp32_and_says_so(flo_models):
    res = florence.caption_images(images(1), TINY, precision="fp16", **FAST)
    assert res.dtype == "fp32" and "fp16 requested" in res.note and "fp32" in res.note
    ref = florence.caption_images(images(1), TINY, precision="fp32", **FAST)
    assert res.captions == ref.captions
    assert get_cache().stats()["loads"] == 1                           # same fp32 model, not a second copy
    with pytest.raises(BadInputError, match="precision"):
        florence.caption_images(images(1), TINY, precision="int3", **FAST)


def test_model_is_cached_and_keep_loaded_false_unloads(flo_models):
    cache = get_cache()
    florence.caption_images(images(1), TINY, **FAST)
    florence.caption_images(images(1), TINY, device="CPU", max_new_tokens=8, num_beams=1)  # other generation args
    assert cache.stats()["loads"] == 1 and cache.stats()["hits"] >= 1
    florence.caption_images(images(1), TINY, keep_loaded=False, **FAST)
    assert not [k for k in cache.keys() if k.kind == "florence2"]


def test_missing_model_names_the_file_and_folders(flo_models):
    with pytest.raises(ModelNotFoundError) as err:
        florence.caption_images(images(1), "no-such-florence", **FAST)
    msg = str(err.value)
    assert "no-such-florence" in msg
    assert os.path.join(str(flo_models), "florence2") in msg and os.path.join(str(flo_models), "LLM") in msg


def test_registry_model_offline_says_how_to_fetch(flo_models):
    with pytest.raises(ModelNotFoundError, match="models fetch Florence-2-base-ft"):
        florence.caption_images(images(1), "Florence-2-base-ft", **FAST)


def test_bad_task_and_bad_image_are_named(flo_models):
    with pytest.raises(BadInputError, match="task"):
        florence.caption_images(images(1), TINY, task="poem", **FAST)
    with pytest.raises(BadInputError, match="image 1"):
        florence.caption_images([images(1)[0], np.zeros((4, 4, 1), np.float32)], TINY, **FAST)


def test_tasks_map_to_florence_tokens():
    assert [florence.task_token(t) for t in florence.TASKS] == [
        "<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"]
    assert florence.resolve_precision("auto", "CUDA") == ("fp16", "")


AMX = "avx2 fma avx512f avx512cd avx512vl avx512dq avx512bw avx512_bf16 amx_bf16 amx_tile"
ZEN4 = "avx2 fma avx512f avx512cd avx512vl avx512dq avx512bw avx512_bf16 avx512_vnni"
ICE_LAKE = "avx2 fma avx512f avx512cd avx512vl avx512dq avx512bw avx512_vnni avx512vbmi"


def test_cpu_precision_follows_the_cpu_class(monkeypatch):
    monkeypatch.setenv("SAFECUT_CPU_FLAGS", AMX)
    assert florence.resolve_precision("auto", "CPU") == ("bf16", "")      # AMX: bf16 pays (x2.26 measured)
    assert florence.resolve_precision("fp32", "CPU") == ("fp32", "")
    monkeypatch.setenv("SAFECUT_CPU_FLAGS", ZEN4)                          # avx512_bf16 without AMX: fp32
    assert florence.resolve_precision("auto", "CPU") == ("fp32", "")
    dtype, note = florence.resolve_precision("bf16", "CPU")               # native bf16: honoured, said
    assert dtype == "bf16" and "without AMX" in note
    for no_bf16 in (ICE_LAKE, "avx avx2 fma f16c"):                        # emulated bf16 is never run: fp32
        monkeypatch.setenv("SAFECUT_CPU_FLAGS", no_bf16)
        dtype, note = florence.resolve_precision("bf16", "CPU")
        assert dtype == "fp32" and note == "bf16 asked: emulated on this CPU (about 4x slower), ran fp32"


def test_bf16_on_cpu_really_runs_bf16(flo_models, monkeypatch):
    monkeypatch.setenv("SAFECUT_CPU_FLAGS", AMX)
    res = florence.caption_images(images(1), TINY, precision="auto", **FAST)
    assert res.dtype == "bf16" and len(res.captions) == 1
    fm = next(m for k, m in get_cache()._entries.items() if k.kind == "florence2" and k.precision == "bf16").model
    import torch

    assert next(fm.model.parameters()).dtype == torch.bfloat16


def test_interrupt_stops_generation(flo_models):
    class Stop(Exception):
        pass

    def interrupt():
        raise Stop

    with pytest.raises(Stop):
        florence.caption_images(images(2), TINY, interrupt=interrupt, **FAST)


def _model_dir(root, name, config: str):
    d = root / "florence2" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(config)
    return d


def test_remote_code_repo_and_missing_weights_are_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFECUT_MODELS_DIR", str(tmp_path))
    _model_dir(tmp_path, "Florence-2-remote", '{"model_type": "florence2", "auto_map": {"AutoConfig": "x.Y"}, '
                                              '"text_config": {"model_type": "florence2_language"}}')
    with pytest.raises(SafeCutError, match="never runs remote code"):
        florence.caption_images(images(1), "Florence-2-remote", **FAST)
    _model_dir(tmp_path, "half-downloaded", '{"model_type": "florence2"}')
    with pytest.raises(SafeCutError, match="no weights"):
        florence.caption_images(images(1), "half-downloaded", **FAST)


def test_missing_or_old_transformers_names_the_install(flo_models, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)           # import fails as if not installed
    with pytest.raises(MissingDependencyError, match="pip install 'transformers>=4.56'"):
        florence.caption_images(images(1), TINY, **FAST)
    monkeypatch.setitem(sys.modules, "transformers", types.SimpleNamespace(__version__="4.55.4"))
    with pytest.raises(SafeCutError, match=r"transformers >= 4\.56.*4\.55\.4"):
        florence.caption_images(images(1), TINY, **FAST)


# ---- node -----------------------------------------------------------------------------------------
@pytest.fixture()
def pack_flo(flo_models):
    pack = load_pack()
    pack.safecut.runtime.cache.get_cache().unload("florence2")
    pack.safecut.runtime.cache.get_cache().reset_stats()
    return pack


def test_node_contract(pack_flo):
    cls = pack_flo.NODE_CLASS_MAPPINGS["SafeCutFlorence2Caption"]
    assert pack_flo.NODE_DISPLAY_NAME_MAPPINGS["SafeCutFlorence2Caption"] == "SafeCut Florence-2 Caption"
    req = cls.INPUT_TYPES()["required"]
    widgets = [k for k in req if k != "image"]
    assert widgets == ["model", "task", "device", "precision", "max_new_tokens", "num_beams", "batch_size",
                       "keep_model_loaded"]
    assert req["image"][0] == "IMAGE" and all(spec[1].get("tooltip") for spec in req.values())
    assert req["model"][0][0] == TINY and "Florence-2-base-ft" in req["model"][0]
    assert req["task"][0] == ["caption", "detailed caption", "more detailed caption"]
    assert cls.RETURN_TYPES == ("STRING", "STRING") and cls.OUTPUT_IS_LIST == (True, False)
    assert cls.INPUT_IS_LIST is True  # a list run is one call, so batch_size batches across it


def test_node_batches_a_list_run(pack_flo, monkeypatch):
    """A list run (native sizes, one tensor per image, widget values as one-element lists, as ComfyUI hands an
    INPUT_IS_LIST node) is captioned in generate calls of batch_size images, in order."""
    cls = pack_flo.NODE_CLASS_MAPPINGS["SafeCutFlorence2Caption"]
    flo = pack_flo.safecut.engines.florence
    imgs = images(3)                                                   # two different sizes
    chunks = []

    def spy(fm, ims, *a, **k):
        chunks.append((len(ims), k.get("batch_size")))
        return real(fm, ims, *a, **k)

    real = flo.generate_captions
    monkeypatch.setattr(flo, "generate_captions", spy)
    items = [torch.from_numpy(im[None]) for im in imgs]
    out = cls().run(items, [TINY], ["caption"], ["CPU"], ["fp32"], [12], [2], [2], [True])
    captions, info = out["result"]
    assert chunks == [(3, 2)] and len(captions) == 3 and "3 caption(s)" in info
    assert captions == [flo.caption_images([im], TINY, **FAST).captions[0] for im in imgs]


def test_node_captions_each_image(pack_flo):
    cls = pack_flo.NODE_CLASS_MAPPINGS["SafeCutFlorence2Caption"]
    imgs = [im[:48, :56] for im in images(3)]                          # one size: a ComfyUI batch
    batch = torch.from_numpy(np.stack(imgs))
    out = cls().run(batch, TINY, "caption", "CPU", "fp16", 12, 2, 2, True)
    captions, info = out["result"]
    assert isinstance(captions, list) and len(captions) == 3 and all(isinstance(c, str) for c in captions)
    assert out["ui"]["caption"] == captions and out["ui"]["device"] == ["CPU"]
    assert "fp32" in info and "fp16 requested" in info and "3 caption(s)" in info
    engine = pack_flo.safecut.engines.florence.caption_images(imgs, TINY, **FAST)
    assert engine.captions == captions
    assert pack_flo.safecut.runtime.cache.get_cache().stats()["loads"] == 1


def test_node_keep_loaded_false_and_cuda_fallback(pack_flo):
    cls = pack_flo.NODE_CLASS_MAPPINGS["SafeCutFlorence2Caption"]
    out = cls().run(torch.from_numpy(images(1)[0][None]), TINY, "detailed caption", "CUDA", "auto", 8, 1, 8, False)
    if not torch.cuda.is_available():
        assert out["ui"]["device"] == ["CPU (CUDA unavailable)"]
    assert not [k for k in pack_flo.safecut.runtime.cache.get_cache().keys() if k.kind == "florence2"]


def test_max_new_tokens_default_is_per_task_and_cut_captions_are_reported(flo_models, pack):
    assert florence.max_tokens_for("caption", 0) == 64
    assert florence.max_tokens_for("more detailed caption", 0) == 512 and florence.max_tokens_for("<CAPTION>", 7) == 7
    res = florence.caption_images(images(2), TINY, device="CPU", max_new_tokens=2, num_beams=1)
    assert res.max_new_tokens == 2 and res.cut == [True, True]  # a random tiny model never ends in 2 tokens
    long = florence.caption_images(images(2), TINY, device="CPU", max_new_tokens=0, num_beams=1, task="caption")
    assert long.max_new_tokens == 64 and len(long.cut) == 2
    node = pack.NODE_CLASS_MAPPINGS["SafeCutFlorence2Caption"]()
    import torch

    out = node.run(torch.rand(2, 32, 32, 3), TINY, "caption", "CPU", "auto", 2, 1, 8, True)
    assert "CUT at max_new_tokens=2: caption(s) 0, 1" in out["result"][1] and out["ui"]["cut"] == [True, True]
