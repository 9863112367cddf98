"""Naive references: what the seed project's own nodes do (comfy-ben2-serverless: ComfyUI_BEN2_ONNX and
ComfyUI_LocalJSONExtractor, with kijai's Florence-2 node defaults), rewritten here for the bench.
Same model files as SafeCut's engines, same machine, same run.

* BEN2 (``NaiveBEN2``): the seeds' node as it is: one ORT session kept by the node, threads from the
  image's ``OMP_NUM_THREADS=8`` for both ``intra_op_num_threads`` and ``inter_op_num_threads`` (8 + 8,
  whatever the core count), ORT's default sequential execution and spinning, ``ORT_ENABLE_ALL``, the default
  CPU arena; torch pre/post-processing: IMAGE tensor -> NCHW -> ``F.interpolate(1024², bilinear)`` -> ORT ->
  float32 -> ``F.interpolate`` back to the image size (bilinear) -> min-max -> RGBA.
* Classifier (``NaiveClassifier``): llama-cpp-python text completion, a few-shot prompt with three JSON
  examples (~190 prompt tokens), ``max_tokens=300``, ``temperature=0.1``, no stop at the closing brace,
  llama-cpp-python's default threads (n_threads = cores // 2 for generation, all cores for the prompt),
  ``n_ctx=4096``; the model is kept in a module-level dict (as the seed's node does); the JSON is
  recovered with ``find('{')`` and, as in the seed, anything unparsable counts as SAFE (fail-open).
  With random weights no EOS is ever produced, so every call generates the full 300 tokens: the real
  8B/1B model stops earlier only if it emits EOS after the JSON, which the seed's prompt does not ask for.
* Florence-2 (``NaiveFlorence``): the model is loaded for the call and dropped after it (keep_model_loaded
  False), images one at a time, ``do_sample=True``, ``num_beams=3``, fp32 on CPU, no inference_mode.
  Both naive and SafeCut generate exactly the same number of new tokens (``min_new_tokens =
  max_new_tokens = T``): random weights never emit EOS on their own, the cap makes the work equal.
"""
from __future__ import annotations

import json
import time

import numpy as np

# ---- BEN2 --------------------------------------------------------------------------------------------


class NaiveBEN2:
    THREADS = 8   # the seeds' Docker image: OMP_NUM_THREADS=8, read by the node for intra and inter threads

    def __init__(self, path: str):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.THREADS
        so.inter_op_num_threads = self.THREADS
        t0 = time.perf_counter()
        self.session = ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])
        self.load_seconds = time.perf_counter() - t0
        inp = self.session.get_inputs()[0]
        self.input_name, self.size = inp.name, tuple(inp.shape[2:])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 float 0..1 -> HxWx4 float RGBA (the seed node's IMAGE output)."""
        import torch
        import torch.nn.functional as F

        h, w = image.shape[:2]
        t = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)[None].float()
        x = F.interpolate(t, size=self.size, mode="bilinear", align_corners=False)
        out = self.session.run(None, {self.input_name: x.numpy()})[0]
        m = F.interpolate(torch.from_numpy(np.asarray(out, np.float32)), size=(h, w), mode="bilinear",
                          align_corners=False)[0, 0]
        m = (m - m.min()) / (m.max() - m.min() + 1e-8)
        return np.concatenate([image[..., :3], m.numpy()[..., None]], axis=-1)


# ---- Llama classifier --------------------------------------------------------------------------------
DOMAINS = ["nudity", "violence", "weapons", "drugs", "hate"]
FEW_SHOT = """Classify the image description. For each domain answer SAFE or UNSAFE, as JSON.

Description: A red apple on a wooden table next to a glass of water.
JSON: {"nudity": "SAFE", "violence": "SAFE", "weapons": "SAFE", "drugs": "SAFE", "hate": "SAFE"}

Description: A man pointing a pistol at another man in a dark alley.
JSON: {"nudity": "SAFE", "violence": "UNSAFE", "weapons": "UNSAFE", "drugs": "SAFE", "hate": "SAFE"}

Description: A woman lying topless on a beach towel.
JSON: {"nudity": "UNSAFE", "violence": "SAFE", "weapons": "SAFE", "drugs": "SAFE", "hate": "SAFE"}

Description: {caption}
JSON:"""

_LLMS: dict[str, object] = {}   # the seed node's module-level cache, keyed "path|ctx|gpu"


class NaiveClassifier:
    def __init__(self, path: str, n_ctx: int = 4096, max_tokens: int = 300):
        self.path, self.n_ctx, self.max_tokens = path, n_ctx, max_tokens
        self.load_seconds = 0.0

    def llm(self):
        key = f"{self.path}|{self.n_ctx}|0"
        if key not in _LLMS:
            from llama_cpp import Llama

            t0 = time.perf_counter()
            _LLMS[key] = Llama(model_path=self.path, n_ctx=self.n_ctx, n_gpu_layers=0, verbose=False)
            self.load_seconds = time.perf_counter() - t0
        return _LLMS[key]

    def prompt(self, caption: str) -> str:
        return FEW_SHOT.replace("{caption}", caption)

    def __call__(self, caption: str) -> dict:
        llm = self.llm()
        out = llm.create_completion(self.prompt(caption), max_tokens=self.max_tokens, temperature=0.1)
        text = out["choices"][0]["text"]
        usage = out.get("usage", {})
        verdicts = {d: "SAFE" for d in DOMAINS}   # the seed fails open: anything unparsable is SAFE
        try:
            start, end = text.find("{"), text.rfind("}")
            if start >= 0 and end > start:
                verdicts.update(json.loads(text[start:end + 1]))
        except (ValueError, TypeError):
            pass
        return {"verdicts": verdicts, "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens")}

    def close(self) -> None:
        llm = _LLMS.pop(f"{self.path}|{self.n_ctx}|0", None)
        if llm is not None:
            llm.close()


# ---- Florence-2 ---------------------------------------------------------------------------------------
class NaiveFlorence:
    def __init__(self, path: str, tokens: int, task: str = "<MORE_DETAILED_CAPTION>", num_beams: int = 3):
        self.path, self.tokens, self.task, self.num_beams = path, tokens, task, num_beams
        self.load_seconds = 0.0
        self.generated: list[int] = []

    def __call__(self, images: list[np.ndarray]) -> list[str]:
        """One node execution: load, caption one image at a time, unload."""
        import torch
        from PIL import Image
        from transformers import Florence2ForConditionalGeneration, Florence2Processor

        t0 = time.perf_counter()
        model = Florence2ForConditionalGeneration.from_pretrained(self.path, dtype=torch.float32,
                                                                  local_files_only=True).eval()
        processor = Florence2Processor.from_pretrained(self.path, local_files_only=True)
        self.load_seconds = time.perf_counter() - t0
        captions = []
        self.generated = []
        for im in images:
            pil = Image.fromarray((np.clip(im, 0, 1) * 255).astype(np.uint8), "RGB")
            inputs = processor(text=self.task, images=pil, return_tensors="pt")
            ids = model.generate(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                 max_new_tokens=self.tokens, min_new_tokens=self.tokens, do_sample=True,
                                 num_beams=self.num_beams)
            self.generated.append(int(ids.shape[-1]))
            text = processor.batch_decode(ids, skip_special_tokens=False)[0]
            try:
                parsed = processor.post_process_generation(text, task=self.task, image_size=pil.size)
                captions.append(str(parsed.get(self.task, text)))
            except Exception:
                captions.append(text)
        del model, processor
        return captions
