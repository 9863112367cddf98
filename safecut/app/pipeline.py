"""The headless pipeline: the same engines as the nodes, no ComfyUI.

For each chunk of images: decode -> BEN2 cutout -> (Florence-2 caption) -> (NudeNet) -> (keyword gate)
-> (Llama classifier, only for undecided captions) -> RGBA PNG with the verdict in its metadata, and one
``report.jsonl`` line per input file (errors included: a broken file is reported, never dropped).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..engines import ben2
from .. import imaging
from ..engines import gate as gating  # 'gate' is also an option name


@dataclass
class Options:
    ben2_model: str = ben2.DEFAULT_MODEL
    device: str = "auto"
    cpu_runtime: str = "auto"     # BEN2 / NudeNet on CPU: safecut.runtime.sessions.CHOICES
    threads: int = 0
    background: str = "alpha"
    refine_edges: bool = False
    batch_size: int = 4
    pattern: str = "*"
    caption: bool = False
    florence_model: str = "Florence-2-base-ft"
    task: str = "caption"
    precision: str = "auto"
    max_new_tokens: int = 0       # 0: the task's default (florence.TASK_MAX_NEW_TOKENS)
    num_beams: int = 3
    nudenet: bool = False
    nudenet_model: str = "320n.onnx"
    nudenet_threshold: float = 0.25   # NudeNet's own (safecut.engines.nudenet.DEFAULT_THRESHOLD)
    gate: bool = False
    policy: str = "review"
    safe_keywords: str = gating.DEFAULT_SAFE_KEYWORDS
    unsafe_keywords: str = gating.DEFAULT_UNSAFE_KEYWORDS
    classify: bool = False
    llm_family: str = "Llama-Guard-3-1B"
    quantization: str = "Q4_K_M"
    llm_model: str = ""          # explicit GGUF file name/path; overrides family + quantization
    n_gpu_layers: int = -1
    threshold: float = 0.5
    save_unsafe: bool = True
    # Release each model when its stage of a chunk is done: the peak is the biggest stage, not every model at
    # once (a 4 GB worker), at the price of reloading them per chunk (bench: pipeline section). "auto": on when
    # the process may use less than LOW_MEMORY_BELOW (container limit or RAM), see resolve_low_memory.
    low_memory: bool | str = "auto"
    extra: dict = field(default_factory=dict)


# Every model of the cpu-full pipeline kept loaded peaks at 4.75-4.91 GB RSS (bench, 1024², 2 cores), ~0.8 GB of it
# the mmapped GGUF: in a 4 GiB cgroup it still ran, at the limit (3.9 GiB, the kernel dropping file pages; one
# bigger batch from an OOM kill). Released per stage: 2.8-2.9 GB. Below 6 GiB SafeCut takes the margin.
LOW_MEMORY_BELOW = 6 << 30


def resolve_low_memory(setting, limit: int | None = None) -> bool:
    """True/False as given; "auto": True when the memory this process may use is known and below LOW_MEMORY_BELOW."""
    if setting != "auto":
        return bool(setting)
    from ..runtime import memlimit

    limit = memlimit.limit_bytes() if limit is None else limit
    return 0 < limit < LOW_MEMORY_BELOW


@dataclass
class Summary:
    images: int = 0
    ok: int = 0
    failed: int = 0
    safe: int = 0
    unsafe: int = 0
    seconds: float = 0.0
    report: str = ""

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def _classifier(opts: Options):
    from ..engines import guard

    return guard.SafetyClassifier.from_choice(
        opts.llm_model or opts.llm_family, opts.quantization, n_gpu_layers=opts.n_gpu_layers,
        threads=opts.threads, threshold=opts.threshold, keep_loaded=not opts.low_memory)


def run(input_dir: str, out_dir: str, opts: Options | None = None,
        progress: Callable[[int, int, str], None] | None = None) -> Summary:
    opts = opts or Options()
    if (opts.classify or opts.nudenet) and not opts.gate:
        opts.gate = True  # verdicts come from the gate (it settles clear cases, NudeNet hits, then the classifier)
    opts.low_memory = resolve_low_memory(opts.low_memory)
    files = imaging.list_images(input_dir, pattern=opts.pattern, sort="natural")
    preflight(opts)
    os.makedirs(out_dir, exist_ok=True)
    report_path = os.path.join(out_dir, "report.jsonl")
    summary = Summary(images=len(files), report=report_path)
    t_all = time.perf_counter()
    keyword_gate = gating.KeywordGate(opts.safe_keywords, opts.unsafe_keywords, opts.policy) if opts.gate else None
    classifier = _classifier(opts) if opts.classify else None
    done = 0
    refused = list(getattr(files, "refused", []))  # links leading outside the folder, broken links
    summary.images += len(refused)
    with open(report_path, "w", encoding="utf-8") as report:
        for r in refused:
            report.write(json.dumps({"file": r["file"], "error": r["error"]}, ensure_ascii=False) + "\n")
            summary.failed += 1
        for start in range(0, len(files), max(1, opts.batch_size)):
            chunk = files[start:start + max(1, opts.batch_size)]
            for line in _process_chunk(chunk, input_dir, out_dir, opts, keyword_gate, classifier):
                report.write(json.dumps(line, ensure_ascii=False) + "\n")
                report.flush()
                done += 1
                if line.get("error"):
                    summary.failed += 1
                else:
                    summary.ok += 1
                    summary.safe += line.get("verdict") == gating.SAFE
                    summary.unsafe += line.get("verdict") == gating.UNSAFE
                if progress:
                    progress(done, len(files), line["file"])
    summary.seconds = time.perf_counter() - t_all
    return summary


def preflight(opts: Options) -> None:
    """Find (or fetch) every model before the first image: a missing model is one clear error, not N."""
    from ..models import modelfiles

    modelfiles.resolve("ben2", opts.ben2_model)
    if opts.caption:
        modelfiles.resolve("florence2", opts.florence_model)


def _process_chunk(files, input_dir, out_dir, opts: Options, keyword_gate, classifier) -> list[dict]:
    lines, frames, alphas = [], [], []
    for f in files:
        rel = os.path.relpath(f, input_dir)
        try:
            d = imaging.decode_image(f)
            frames.append(d.rgb)
            alphas.append(d.alpha)
            lines.append({"file": rel, "size": [int(d.rgb.shape[1]), int(d.rgb.shape[0])]})
        except Exception as exc:
            lines.append({"file": rel, "error": f"{type(exc).__name__}: {exc}"})
    good = [ln for ln in lines if "error" not in ln]
    if not good:
        return lines
    try:
        _run_models(good, frames, out_dir, opts, keyword_gate, classifier)
    except Exception as exc:  # a failure fails the chunk's unfinished images, loudly, never as SAFE
        for ln in good:
            if "output" in ln:
                continue  # finished (written, or deliberately not written): that result stands
            ln["error"] = f"{type(exc).__name__}: {exc}"
            ln.pop("verdict", None)
    return lines


def _run_models(lines, frames, out_dir, opts: Options, keyword_gate, classifier) -> None:
    timings: dict[str, float] = {}
    keep = not opts.low_memory
    t = time.perf_counter()
    cut = ben2.remove_background(frames, opts.ben2_model, device=opts.device, threads=opts.threads,
                                 batch_size=opts.batch_size, keep_loaded=keep, runtime=opts.cpu_runtime)
    timings["ben2"] = time.perf_counter() - t
    devices = {"ben2": cut.device.describe()}
    captions = [""] * len(frames)
    if opts.caption:
        from ..engines import florence

        t = time.perf_counter()
        res = florence.caption_images(frames, opts.florence_model, task=opts.task, device=opts.device,
                                      precision=opts.precision, max_new_tokens=opts.max_new_tokens,
                                      num_beams=opts.num_beams, batch_size=opts.batch_size, keep_loaded=keep)
        captions = list(res.captions)
        timings["caption"] = time.perf_counter() - t
        devices["florence2"] = res.describe()   # with the dtype that really ran: "CPU, bf16"
    nude = [None] * len(frames)
    nude_info: list[dict | None] = [None] * len(frames)
    if opts.nudenet:
        from ..engines import nudenet

        t = time.perf_counter()
        nres = nudenet.detect(frames, model=opts.nudenet_model, device=opts.device, threshold=opts.nudenet_threshold,
                              threads=opts.threads, keep_loaded=keep, runtime=opts.cpu_runtime)
        nude = [r.is_unsafe for r in nres.results]
        nude_info = [{"is_unsafe": r.is_unsafe, "max_score": r.max_score, "detections": r.detections}
                     for r in nres.results]
        timings["nudenet"] = time.perf_counter() - t
        devices["nudenet"] = nres.device.describe()
    decisions = None
    if keyword_gate is not None:
        decisions = keyword_gate.decide_all(captions, nude if opts.nudenet else None)
        if classifier is not None and gating.undecided(decisions):
            t = time.perf_counter()
            gating.settle(decisions, classifier.classify)
            timings["classifier"] = time.perf_counter() - t
            devices["llama"] = classifier.device_description()
        else:
            gating.settle(decisions, None)
    for i, (ln, frame, mask) in enumerate(zip(lines, frames, cut.masks)):
        entry = {"caption": captions[i] if opts.caption else None}
        if decisions is not None:
            d = decisions[i]
            entry.update(verdict=d.verdict, decided_by=d.decided_by, p_unsafe=d.p_unsafe, categories=d.categories,
                         reason=d.reason, safe_hits=d.safe_hits, unsafe_hits=d.unsafe_hits)
        if opts.nudenet:
            entry["nudenet"] = nude_info[i]
        ln.update(entry)
        ln["devices"] = devices
        ln["timings"] = {k: round(v / len(frames), 4) for k, v in timings.items()}  # per image (chunk average)
        fg = ben2.refine_foreground(frame, mask) if opts.refine_edges else frame
        rgb, rgba = ben2.composite(fg, mask, opts.background)
        if decisions is not None and ln.get("verdict") == gating.UNSAFE and not opts.save_unsafe:
            ln["output"] = None
            continue
        name = imaging.sanitize_filename(os.path.splitext(os.path.basename(ln["file"]))[0]) + ".png"
        meta = {"safecut": json.dumps({k: v for k, v in ln.items() if k != "output"}, ensure_ascii=False)}
        ln["output"] = os.path.basename(imaging.save_png_atomic(os.path.join(out_dir, name), rgba, meta))


def describe(opts: Options) -> dict:
    return asdict(opts)
