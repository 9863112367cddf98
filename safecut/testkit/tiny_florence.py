"""A tiny Florence-2 (native transformers classes, random weights), built locally and deterministically.

Same on-disk layout as the converted ``florence-community/Florence-2-*`` repos (``save_pretrained`` of
``Florence2ForConditionalGeneration`` and ``Florence2Processor``), so :func:`safecut.engines.florence.caption_images`
loads it offline exactly like a real model. The tokenizer is a byte-level BPE trained here on a few
sentences; the image processor takes 64x64 images (4 patches + 1 pooled token). Under 5 MB on disk.

Its captions are meaningless words, but they are a deterministic function of the image: tests use it
to check loading, batching, caching, precision handling and the node contract, never caption quality.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

BUILD_TAG = "safecut-tiny-florence2 v1"
_MARKER = ".safecut-tiny-complete"
IMAGE_SIZE = 64
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>"]

# Tokenizer training text: the task prompts Florence2Processor substitutes for <CAPTION> & co., and
# caption-like words so the random model "speaks" recognisable fragments.
_CORPUS = [
    "What does the image describe?",
    "Describe in detail what is shown in the image.",
    "Describe with a paragraph what is shown in the image.",
    "What is the text in the image?",
    "Locate the objects with category name in the image.",
    "a photo of a cat sitting on a red sofa next to a window",
    "a dog running on the beach at sunset with waves behind it",
    "a woman in a blue dress standing in front of a white wall",
    "a man riding a bicycle down a city street in the rain",
    "a bowl of fruit on a wooden table, apples, bananas and grapes",
    "a green car parked outside a small house with a garden",
    "the image shows a mountain landscape with snow and a lake",
    "a close up of a flower with yellow petals and a bee",
    "two children playing football in a park on a sunny day",
    "a black and white picture of an old building with tall columns",
]


def is_complete(dest_dir: str) -> bool:
    try:
        with open(os.path.join(dest_dir, _MARKER)) as f:
            return f.read().strip() == BUILD_TAG
    except OSError:
        return False


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", mask_token="<mask>",
                                   extra_special_tokens={"image_token": "<image>"})


def _post_processor_config() -> dict:
    loc = "".join(r"<loc_(\d+)>" for _ in range(8))
    return {"pure_text": {}, "ocr": {"pattern": r"(.+?)" + loc, "area_threshold": 0.0},
            "phrase_grounding": {"banned_grounding_tokens": []}, "description_with_bboxes": {},
            "description_with_polygons": {}, "polygons": {}, "bboxes": {}, "description_with_bboxes_or_polygons": {}}


def build_tiny_florence(dest_dir: str, *, seed: int = 0) -> str:
    """Build the tiny model into ``dest_dir`` (a model directory) unless a complete build is there."""
    dest_dir = os.path.abspath(dest_dir)
    if is_complete(dest_dir):
        return dest_dir
    import torch
    from transformers import (BartConfig, CLIPImageProcessor, Florence2Config, Florence2ForConditionalGeneration,
                              Florence2Processor, Florence2VisionConfig)

    tok = _tokenizer()
    vision = Florence2VisionConfig(depths=[1, 1, 1, 1], embed_dim=[16, 32, 64, 128], num_heads=[1, 2, 4, 8],
                                   num_groups=[1, 2, 4, 8], window_size=2, projection_dim=64,
                                   max_position_embeddings=IMAGE_SIZE // 32 + 2, drop_path_rate=0.0,
                                   initializer_range=0.2)
    text = BartConfig(vocab_size=len(tok), d_model=64, encoder_layers=1, decoder_layers=1,
                      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
                      max_position_embeddings=256, init_std=0.2, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=None, forced_eos_token_id=None)
    config = Florence2Config(vision_config=vision, text_config=text, image_token_id=tok.image_token_id)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Florence2ForConditionalGeneration(config).eval()
    finally:
        torch.random.set_rng_state(state)
    ip = CLIPImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    ip.image_seq_length = (IMAGE_SIZE // 32) ** 2 + 1
    processor = Florence2Processor(image_processor=ip, tokenizer=tok, post_processor_config=_post_processor_config())

    parent = os.path.dirname(dest_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tiny-florence-", dir=parent)
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        with open(os.path.join(tmp, _MARKER), "w") as f:
            f.write(BUILD_TAG + "\n")
        if os.path.isdir(dest_dir):  # an incomplete earlier build
            shutil.rmtree(dest_dir)
        os.replace(tmp, dest_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest_dir


def describe(dest_dir: str) -> dict:
    """Files and total size of a build (for benches and debugging)."""
    files = sorted(f for f in os.listdir(dest_dir) if not f.startswith("."))
    size = sum(os.path.getsize(os.path.join(dest_dir, f)) for f in files)
    with open(os.path.join(dest_dir, "config.json")) as f:
        cfg = json.load(f)
    return {"files": files, "bytes": size, "model_type": cfg.get("model_type")}
