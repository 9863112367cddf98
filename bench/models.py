"""Bench models, built locally (no network except pip for the llama.cpp vocab) and cached on disk.

Real-size models (default ``~/.cache/safecut-bench``, override with ``--models-dir`` or
``SAFECUT_BENCH_MODELS``):

* ``LLM/bench-Llama-Guard-3-1B-dims-{F16,Q2_K,Q3_K_M,Q4_K_M,Q5_K_M}.gguf`` — Llama-3.2-1B dimensions
  (hidden 2048, 16 layers, FFN 8192, 32/8 heads, tied embeddings, 1.24 B params), random weights
  (0.02·N(0,1), seeded), the real Llama-3 tokenizer (128,256 tokens, 280,147 merges) copied from the
  ``ggml-vocab-llama-bpe.gguf`` that llama-cpp-python's sdist vendors, a Llama-3 chat template. Written
  as F16 with ``gguf`` and quantized with ``llama_cpp.llama_model_quantize``.
* ``florence2/Florence-2-base-random`` — ``Florence2ForConditionalGeneration`` with the real
  Florence-2-base dimensions (DaViT 1/1/9/1, dims 128..1024; BART 6+6 layers, d_model 768; 231 M params),
  random init, and a byte-level BPE tokenizer trained here, padded to the real vocabulary size 51,289.
* ``ben2/BEN2-standin-v{N}.onnx`` — SafeCut's own implementation of the BEN_Base architecture, random
  seeded weights, the published file's I/O (:mod:`bench.ben2_arch`; the real ``BEN2_Base.onnx`` is used
  instead when ``--ben2 PATH`` is given); its OpenVINO INT8 IR from :func:`safecut.engines.ben2_quantize.quantize_ben2`
  (NNCF), where the product looks for it (``safecut-int8/<stem>-<sha16>.xml`` beside the model), made in a child
  process whose time and peak RSS are recorded. ``--ben2-reference PATH``: an export of the upstream code, timed
  next to the stand-in.
* NudeNet: the ``320n.onnx`` bundled with the ``nudenet`` package (real weights).

Quick mode uses the project's test kits (tiny models) under ``<models>/quick``.
Every build step is timed; the times are kept in ``manifest.json`` so a cached run still reports them.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import time

import numpy as np

from safecut.testkit import llama_vocab as vocab_finder  # shared with the tests

LLAMA_QUANTS = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M"]
LLAMA_STEM = "bench-Llama-Guard-3-1B-dims"
LLAMA_DIMS = dict(hidden=2048, layers=16, ffn=8192, heads=32, kv_heads=8, vocab=128256, ctx=8192)
FLORENCE_NAME = "Florence-2-base-random"
FLORENCE_VOCAB = 51289
BEN2_STEM = "BEN2-standin"
QUICK_BEN2 = {"size": 384, "depths": (2, 2, 2, 2)}   # quick bench: the same architecture code, reduced
BUILD_VERSION = 1


def default_models_dir() -> str:
    return os.path.abspath(os.environ.get("SAFECUT_BENCH_MODELS")
                           or os.path.join(os.path.expanduser("~"), ".cache", "safecut-bench"))


class Manifest:
    """Build times and facts of each model, kept next to the models."""

    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.path = os.path.join(root, "manifest.json")
        try:
            with open(self.path) as f:
                self.data = json.load(f)
        except (OSError, ValueError):
            self.data = {}

    def get(self, key: str) -> dict | None:
        return self.data.get(key)

    def put(self, key: str, value: dict) -> None:
        try:   # merge with what another build process wrote meanwhile (it would otherwise be lost)
            with open(self.path) as f:
                self.data = dict(json.load(f), **{k: v for k, v in self.data.items()})
        except (OSError, ValueError):
            pass
        self.data[key] = value
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)


def _step(manifest: Manifest, key: str, path: str, build, log=print) -> dict:
    """Run ``build()`` unless ``path`` exists with a manifest entry. Returns the entry + ``cached``."""
    entry = manifest.get(key)
    if os.path.exists(path) and entry and entry.get("version") == BUILD_VERSION:
        return dict(entry, cached=True)
    log(f"[build] {key} ...")
    t0 = time.perf_counter()
    info = build() or {}
    secs = time.perf_counter() - t0
    entry = dict(info, version=BUILD_VERSION, seconds=round(secs, 2), path=path,
                 bytes=_size(path), built_at=time.strftime("%Y-%m-%d %H:%M:%S"), load_at_build=_load())
    manifest.put(key, entry)
    log(f"[build] {key}: {secs:.1f}s, {entry['bytes'] / 1e6:.1f} MB")
    return dict(entry, cached=False)


def _size(path: str) -> int:
    if path.endswith(".xml"):   # an OpenVINO IR: .xml + .bin
        return sum(os.path.getsize(p) for p in (path, path[:-4] + ".bin") if os.path.exists(p))
    if os.path.isdir(path):
        return sum(os.path.getsize(p) for p in glob.glob(os.path.join(path, "**"), recursive=True) if os.path.isfile(p))
    return os.path.getsize(path) if os.path.exists(path) else 0


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def _llama_vocab(root: str, log=print) -> str:
    """The real Llama-3 vocab (see safecut.testkit.llama_vocab); the sdist is pip-downloaded when missing."""
    try:
        return vocab_finder.llama_vocab(root, log)
    except FileNotFoundError:
        log(f"[build] pip download llama-cpp-python=={vocab_finder.LCPP_VERSION} sdist (vocab only) ...")
        subprocess.run([sys.executable, *vocab_finder.pip_download_args(os.path.join(root, "sdist"))], check=True,
                       stdout=subprocess.DEVNULL)
        return vocab_finder.llama_vocab(root, log)


# ---- Llama GGUF ------------------------------------------------------------------------------------
def write_llama_f16(path: str, vocab_path: str, dims: dict = LLAMA_DIMS, seed: int = 0) -> dict:
    import gguf
    from safecut.testkit.tiny_gguf import CHAT_TEMPLATE

    t0 = time.perf_counter()
    r = gguf.GGUFReader(vocab_path)

    def field(k):
        return r.fields[k].contents()

    tokens, types, merges = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type"), \
        field("tokenizer.ggml.merges")
    t_vocab = time.perf_counter() - t0
    H, L, F, NH, NKV = dims["hidden"], dims["layers"], dims["ffn"], dims["heads"], dims["kv_heads"]
    V = len(tokens)
    hd = H // NH
    rng = np.random.default_rng(seed)

    def rnd(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    tmp = path + ".tmp"
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name("SafeCut bench: Llama-3.2-1B dims, random weights")
    w.add_context_length(dims["ctx"])
    w.add_embedding_length(H)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_rope_dimension_count(hd)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(500000.0)
    w.add_vocab_size(V)
    w.add_file_type(1)  # mostly F16
    w.add_tokenizer_model(field("tokenizer.ggml.model"))
    w.add_tokenizer_pre(field("tokenizer.ggml.pre"))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(128000)
    w.add_eos_token_id(128009)  # <|eot_id|> ends an assistant turn (Llama 3.x instruct / Guard)
    w.add_add_bos_token(True)
    w.add_chat_template(CHAT_TEMPLATE)
    w.add_tensor("token_embd.weight", rnd(V, H))  # tied output
    w.add_tensor("output_norm.weight", np.ones(H, np.float32))
    from safecut.testkit.tiny_gguf import add_llama_blocks, finish

    add_llama_blocks(w, L, H, F, NKV * hd, rnd)
    finish(w, tmp, path)
    params = V * H + H + L * (2 * H + 2 * H * H + 2 * NKV * hd * H + 3 * F * H)
    return {"params": params, "vocab_parse_seconds": round(t_vocab, 2), "n_vocab": V, "n_merges": len(merges)}


def quantize_gguf(src: str, dst: str, quant: str, threads: int = 0) -> dict:
    from safecut.testkit.tiny_gguf import quantize

    from .common import quiet_fds

    with quiet_fds(os.path.join(os.path.dirname(os.path.dirname(dst)), "build.log")):  # llama.cpp's per-tensor log
        quantize(src, dst, quant, threads=threads or (os.cpu_count() or 1))
    return {"quant": quant, "threads": threads or (os.cpu_count() or 1)}


def build_llama(root: str, quants=LLAMA_QUANTS, log=print) -> dict:
    """{"F16": entry, "Q4_K_M": entry, ...} (entry has path, seconds, bytes, cached)."""
    m = Manifest(root)
    d = os.path.join(root, "LLM")
    os.makedirs(d, exist_ok=True)
    out = {}
    f16 = os.path.join(d, f"{LLAMA_STEM}-F16.gguf")
    need_f16 = any(not os.path.isfile(os.path.join(d, f"{LLAMA_STEM}-{q}.gguf")) for q in quants)
    if need_f16 or os.path.isfile(f16):
        vocab = _llama_vocab(root, log)
        out["F16"] = _step(m, "llama-F16", f16, lambda: write_llama_f16(f16, vocab), log)
    for q in quants:
        dst = os.path.join(d, f"{LLAMA_STEM}-{q}.gguf")
        out[q] = _step(m, f"llama-{q}", dst, lambda q=q, dst=dst: quantize_gguf(f16, dst, q), log)
    return out


# ---- Florence-2-base, random init -----------------------------------------------------------------
def _florence_tokenizer(vocab_size: int = FLORENCE_VOCAB):
    """Byte-level BPE trained on a generated corpus, then padded with filler tokens to ``vocab_size``
    (the real Florence-2 vocabulary size, so embeddings and the LM head have their real shapes)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from safecut.testkit.tiny_florence import _CORPUS, SPECIAL_TOKENS

    specials = SPECIAL_TOKENS + [f"<loc_{i}>" for i in range(1000)]
    rng = np.random.default_rng(7)
    syl = [a + b for a in "bcdfghjklmnprstvwz" for b in ["a", "e", "i", "o", "u", "ai", "ou", "ee"]]
    words = ["".join(rng.choice(syl, size=rng.integers(1, 4))) for _ in range(60000)]
    corpus = list(_CORPUS) * 20 + [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    n = tok.get_vocab_size()
    if n < vocab_size:  # the generated corpus ran out of merges: fill up (never produced by the model's text)
        tok.add_tokens([AddedToken(f"<fill_{i}>", special=True) for i in range(vocab_size - n)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                 unk_token="<unk>", mask_token="<mask>", extra_special_tokens={"image_token": "<image>"})
    return hf


def build_florence_base(dest: str, seed: int = 0) -> dict:
    import shutil
    import tempfile

    import torch
    from transformers import (BartConfig, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor, Florence2VisionConfig)

    from safecut.testkit.tiny_florence import _post_processor_config

    tok = _florence_tokenizer()
    vision = Florence2VisionConfig(depths=[1, 1, 9, 1], embed_dim=[128, 256, 512, 1024], num_heads=[4, 8, 16, 32],
                                   num_groups=[4, 8, 16, 32], window_size=12, projection_dim=768,
                                   drop_path_rate=0.0)
    text = BartConfig(vocab_size=len(tok), d_model=768, encoder_layers=6, decoder_layers=6,
                      encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
                      decoder_ffn_dim=3072, max_position_embeddings=1024, dropout=0.1,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=tok.bos_token_id,
                      forced_eos_token_id=tok.eos_token_id)
    config = Florence2Config(vision_config=vision, text_config=text, image_token_id=tok.image_token_id)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Florence2ForConditionalGeneration(config).eval()
    finally:
        torch.random.set_rng_state(state)
    params = sum(p.numel() for p in model.parameters())
    ip = CLIPImageProcessor(size={"height": 768, "width": 768}, do_center_crop=False,
                            crop_size={"height": 768, "width": 768}, resample=3,
                            image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    ip.image_seq_length = (768 // 32) ** 2 + 1
    processor = Florence2Processor(image_processor=ip, tokenizer=tok, post_processor_config=_post_processor_config())
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".florence-", dir=parent)
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if os.path.isdir(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"params": int(params), "vocab": len(tok), "image_size": 768, "image_tokens": ip.image_seq_length}


# ---- entry points ---------------------------------------------------------------------------------
def quantize_in_child(src: str, log=print) -> dict:
    """The product's INT8 BEN2 (``quantize_ben2``: NNCF, OpenVINO IR where ``OpenVINO int8`` finds it) in a fresh
    process: its peak RSS is that process's own (NNCF at 1024² holds several GB)."""
    r = subprocess.run([sys.executable, "-m", "bench.models", "quantize", src], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("QUANTIZED ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"quantizing {os.path.basename(src)} failed: {r.stderr[-2000:]}")
    return json.loads(line[10:])


def build_ben2(m: "Manifest", root: str, paths: dict, builds: dict, ben2_path: str | None, log, *,
               size: int = 1024, depths=None, tag: str = "", key: str = "ben2", int8: bool = True) -> None:
    """A BEN2 (the stand-in, the given real file, or the test kit's tiny one when ``key`` is not ``ben2``) and,
    with ``int8``, its OpenVINO INT8 IR, into ``paths[key]`` / ``paths[key + "_int8"]``."""
    from safecut.models import quantized_store

    from . import ben2_arch

    if ben2_path:
        paths[key] = os.path.abspath(ben2_path)
        if key == "ben2":
            builds[key] = {"path": paths[key], "real": True, "bytes": _size(paths[key]), "cached": True,
                           "seconds": 0.0, "size": size}
    else:
        p = os.path.join(root, "ben2", f"{BEN2_STEM}{tag}-v{ben2_arch.ARCH_VERSION}.onnx")
        builds[key] = _step(m, os.path.basename(p), p, lambda: ben2_arch.build(p, size, tuple(depths or ben2_arch.DEPTHS)),
                            log)
        paths[key] = p
    if not int8:
        return
    src = paths[key]
    ir = quantized_store.int8_path(src)
    builds[key + "-int8"] = _step(m, "ben2-int8-nncf:" + os.path.relpath(ir, root), ir,
                                  lambda: quantize_in_child(src, log), log)
    paths[key + "_int8"] = ir


def build_all(root: str, sections: set[str], ben2_path: str | None = None, log=print,
              reference: list[str] | None = None) -> dict:
    """Build (or find cached) what ``sections`` need. Returns {"paths": {...}, "builds": {...}}."""
    m = Manifest(root)
    paths, builds = {}, {}
    if sections & {"ben2", "cpu", "pipeline", "coldstart", "tune-ben2"}:
        build_ben2(m, root, paths, builds, ben2_path, log, int8=bool(sections & {"ben2", "cpu", "pipeline"}))
        if reference:
            paths["ben2_references"] = [os.path.abspath(r) for r in reference]
    if sections & {"florence", "cpu", "pipeline", "coldstart", "tune-florence"}:
        p = os.path.join(root, "florence2", FLORENCE_NAME)
        builds["florence"] = _step(m, "florence-base", p, lambda: build_florence_base(p), log)
        paths["florence"] = p
    if sections & {"llama", "quant", "pipeline", "coldstart", "tune-llama"}:
        quants = LLAMA_QUANTS if "quant" in sections else ["Q4_K_M"]
        b = build_llama(root, quants, log)
        for k, v in b.items():
            builds[f"llama-{k}"] = v
            paths[f"llama_{k}"] = v["path"]
    from safecut.engines.nudenet import bundled_model_path

    nn = bundled_model_path()
    if nn:
        paths["nudenet"] = nn
    return {"paths": paths, "builds": builds}


def build_quick(root: str, log=print) -> dict:
    """Tiny models of the test kits (quick mode / CI smoke test)."""
    from safecut.testkit.tiny_ben2 import build_tiny_ben2
    from safecut.testkit.tiny_florence import build_tiny_florence
    from safecut.testkit.tiny_gguf import QUANTS, build_tiny_gguf

    m = Manifest(root)
    paths, builds = {}, {}
    build_ben2(m, root, paths, builds, None, log, size=QUICK_BEN2["size"], depths=QUICK_BEN2["depths"],
               tag=f"-quick{QUICK_BEN2['size']}")
    tiny = os.path.join(root, "ben2", "tiny-ben2.onnx")   # the pipeline / cold-start plumbing in quick mode
    builds["ben2-tiny"] = _step(m, "quick-ben2-tiny", tiny, lambda: build_tiny_ben2(tiny, 1024) and {}, log)
    build_ben2(m, root, paths, builds, tiny, log, key="ben2_tiny")
    f = os.path.join(root, "florence2", "tiny-florence")
    builds["florence"] = _step(m, "quick-florence", f, lambda: build_tiny_florence(f) and {}, log)
    paths["florence"] = f
    for quant in [x for x in QUANTS if x in LLAMA_QUANTS]:
        dst = os.path.join(root, "LLM", f"Llama-Guard-3-1B-tiny-{quant}.gguf")
        builds[f"llama-{quant}"] = _step(m, f"quick-llama-{quant}", dst,
                                         lambda quant=quant: build_tiny_gguf(os.path.join(root, "LLM"), quant,
                                                                             "Llama-Guard-3-1B-tiny-{quant}.gguf",
                                                                             cache_dir=os.path.join(root, "testkit"))
                                         and {}, log)
        paths[f"llama_{quant}"] = dst
    from safecut.engines.nudenet import bundled_model_path

    nn = bundled_model_path()
    if nn:
        paths["nudenet"] = nn
    return {"paths": paths, "builds": builds}


def main(argv: list[str]) -> int:
    """``python -m bench.models quantize SRC``: one INT8 build, then its facts as one JSON line (QUANTIZED ...)."""
    if argv[:1] != ["quantize"] or len(argv) != 2:
        print("usage: python -m bench.models quantize MODEL.onnx", file=sys.stderr)
        return 2
    import nncf
    import openvino

    from safecut.engines import ben2_quantize

    from .ben2_probe import peak_mb

    out = ben2_quantize.quantize_ben2(argv[1])
    n = len(ben2_quantize.calibration_images())
    print("QUANTIZED " + json.dumps({
        "peak_mb": round(peak_mb()), "nncf": nncf.__version__, "openvino": openvino.__version__,
        "method": f"safecut.engines.ben2_quantize.quantize_ben2: NNCF post-training INT8 of the OpenVINO model "
                  f"(TRANSFORMER mode, SmoothQuant off), {n} calibration views of the shipped photos",
        "ir": out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
