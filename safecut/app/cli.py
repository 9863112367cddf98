"""Command line: ``python -m safecut run|models|workflow|client``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from ..runtime import sessions


def _bar(done: int, total: int, name: str, t0: float) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    rate = (time.perf_counter() - t0) / max(done, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {rate:.2f}s/img  {name[:40]:<40}")
    sys.stderr.flush()
    if done == total:
        sys.stderr.write("\n")


def cmd_run(a) -> int:
    from ..runtime import quiet

    if not a.verbose:
        quiet.library_defaults()   # before pipeline imports transformers
    from . import pipeline

    if a.models:
        os.environ["SAFECUT_MODELS_DIR"] = os.path.abspath(a.models)
    if a.offline:
        os.environ["SAFECUT_OFFLINE"] = "1"
    if a.tiny_models:
        from ..testkit import demo

        tiny = demo.prepare(a.models or None, florence=a.caption, llm=a.classify)
        os.environ["SAFECUT_MODELS_DIR"] = tiny["models_dir"]
        a.ben2_model = tiny["ben2_model"]
        a.florence_model = tiny.get("florence_model", a.florence_model)
        a.llm_model = tiny.get("llm_model", a.llm_model)
        print("SafeCut: using tiny random-weight models (plumbing demo; results are meaningless)", file=sys.stderr)
    opts = pipeline.Options(
        ben2_model=a.ben2_model, device=a.device, cpu_runtime=a.cpu_runtime, threads=a.threads,
        background=a.background,
        refine_edges=a.refine_edges, batch_size=a.batch_size, pattern=a.pattern,
        caption=a.caption, florence_model=a.florence_model, task=a.task, precision=a.precision,
        max_new_tokens=a.max_new_tokens, num_beams=a.num_beams,
        nudenet=a.nudenet, nudenet_model=a.nudenet_model, nudenet_threshold=a.nudenet_threshold,
        gate=a.gate or a.classify, policy=a.policy, classify=a.classify, llm_family=a.llm_family,
        quantization=a.quantization, llm_model=a.llm_model, n_gpu_layers=a.n_gpu_layers, threshold=a.threshold,
        save_unsafe=not a.skip_unsafe, low_memory=a.low_memory)
    opts.low_memory = pipeline.resolve_low_memory(opts.low_memory)
    if opts.low_memory and a.low_memory == "auto" and not a.quiet:
        print(f"SafeCut: less than {pipeline.LOW_MEMORY_BELOW >> 30} GiB of memory: models are released after each "
              "stage (--keep-models to keep them)", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        summary = pipeline.run(a.input_dir, a.out, opts, progress=None if a.quiet else
                               (lambda d, n, f: _bar(d, n, f, t0)))
    except Exception as exc:  # setup errors (no input dir, missing model…) are one clear line
        print(f"safecut: {exc}", file=sys.stderr)
        return 2
    print(f"SafeCut: {summary.ok}/{summary.images} image(s) done, {summary.failed} failed"
          + (f", {summary.safe} safe, {summary.unsafe} unsafe" if opts.gate else "")
          + f" in {summary.seconds:.1f}s; report: {summary.report}")
    return summary.exit_code


def cmd_models(a) -> int:
    from ..models import modelfiles
    from ..models.registry import REGISTRY

    if a.models:
        os.environ["SAFECUT_MODELS_DIR"] = os.path.abspath(a.models)
    if a.action == "list":
        for kind in modelfiles.FOLDERS:
            print(f"{kind}: folders {modelfiles.search_dirs(kind)}")
            on_disk = modelfiles.list_models(kind)
            for name in on_disk:
                print(f"  [on disk] {name}")
            for s in REGISTRY.values():
                if s.kind == kind and s.name not in on_disk:
                    print(f"  [fetchable] {s.name}  ({s.repo_id}, {s.license or 'see repo'})")
        return 0
    if a.action == "fetch":
        names = list(a.names)
        if a.profile:
            from ..models.profiles import PROFILES

            names += PROFILES[a.profile]
        if not names:
            print("safecut: name a model or --profile", file=sys.stderr)
            return 2
        rc = 0
        for name in names:
            spec = REGISTRY.get(name)
            if spec is None:
                print(f"safecut: unknown model '{name}'; known: {', '.join(sorted(REGISTRY))}", file=sys.stderr)
                rc = 2
                continue
            try:
                print(modelfiles.resolve(spec.kind, name, allow_download=True))
            except Exception as exc:
                print(f"safecut: {exc}", file=sys.stderr)
                rc = 1
        return rc
    if a.action == "verify" and a.precision:
        return _verify_precision(a)
    if a.action == "verify":
        from ..models import modellock
        from ..models.hashing import sha256_file

        rc = 0
        for kind in modelfiles.FOLDERS:
            for name in modelfiles.list_models(kind):
                path = modelfiles.find(kind, name)
                spec = REGISTRY.get(name)
                try:
                    if spec:
                        modelfiles.check_files(spec, path)  # a first use: records unlocked files (TOFU)
                    states = modellock.status(spec, path)
                    digest = sha256_file(path) if os.path.isfile(path) else "(directory)"
                    print(f"ok  {kind}/{name}  sha256={digest}")
                    for f, state in states:
                        print(f"      {state:10s} {f}")
                except Exception as exc:
                    print(f"BAD {kind}/{name}: {exc}")
                    rc = 1
        print("pinned: sha256 from the registry (published upstream); locked: recorded at the first download or "
              "load (safecut-models.lock.json); unverified: not a registry file (nothing to check it against)")
        return rc
    if a.action == "quantize":
        from ..engines.ben2_quantize import quantize_ben2

        if len(a.names) != 1:
            print("safecut: name one BEN2 model to quantize, e.g. `python -m safecut models quantize "
                  "BEN2_Base.onnx`", file=sys.stderr)
            return 2
        out = quantize_ben2(a.names[0], a.output, calibration=a.calibration)
        print(out)
        return 0
    return 2


def _verify_precision(a) -> int:
    """The quality probe on demand: BEN2 in ``--precision`` against f32 on the probe photos (or --photos DIR)."""
    from ..engines import ben2

    rc = 0
    for name in a.names or [ben2.DEFAULT_MODEL]:
        try:
            v = ben2.verify_precision(name, a.precision, folder=a.photos)
        except Exception as exc:
            print(f"safecut: {exc}", file=sys.stderr)
            rc = 1
            continue
        speed = f"{v['s_per_image']:.2f} vs f32 {v['f32_s_per_image']:.2f} s per image ({v['ran_as']})"
        print(f"{'PASS' if v['passed'] else 'FAIL'}  {name} {a.precision}: {v['why']}; {speed}")
        rc = rc or (0 if v["passed"] else 1)
    return rc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m safecut", description="SafeCut headless tools")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="cut out (and optionally caption/judge) every image of a folder")
    r.add_argument("input_dir")
    r.add_argument("--out", required=True, help="output folder: cutout PNGs + report.jsonl")
    r.add_argument("--models", help="models root (default: $SAFECUT_MODELS_DIR or ./models)")
    r.add_argument("--offline", action="store_true", help="never download; fail with the fetch command instead")
    r.add_argument("--tiny-models", action="store_true",
                   help="build and use tiny random-weight models (no downloads; for trying the plumbing)")
    r.add_argument("--device", default="auto", choices=["auto", "CPU", "CUDA"])
    r.add_argument("--cpu-runtime", default="auto", choices=sessions.CHOICES,
                   help="BEN2 and NudeNet on CPU (auto: the path measured fastest for this CPU; README 'Which CPU'). "
                        "OpenVINO bf16 on a CPU without AVX512-BF16/AMX would be emulated (x27 slower): f32 runs "
                        "and the report says so")
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--batch-size", type=int, default=4)
    r.add_argument("--pattern", default="*")
    r.add_argument("--ben2-model", default="BEN2_Base.onnx")
    r.add_argument("--background", default="alpha", choices=["alpha", "white", "black"])
    r.add_argument("--refine-edges", action="store_true")
    r.add_argument("--caption", action="store_true", help="Florence-2 caption")
    r.add_argument("--florence-model", default="Florence-2-base-ft")
    r.add_argument("--task", default="caption", choices=["caption", "detailed caption", "more detailed caption"])
    r.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="Florence-2 (auto: bf16 with AMX, else fp32 on CPU; bf16 on a CPU without AVX512-BF16/AMX "
                        "would be emulated, about 4x slower: fp32 runs and the report says so)")
    r.add_argument("--max-new-tokens", type=int, default=0, help="0: the task's default")
    r.add_argument("--num-beams", type=int, default=3)
    r.add_argument("--nudenet", action="store_true", help="NudeNet detector (an unsafe hit decides UNSAFE)")
    r.add_argument("--nudenet-model", default="320n.onnx")
    r.add_argument("--nudenet-threshold", type=float, default=0.25, help="NudeNet's own default")
    r.add_argument("--gate", action="store_true", help="keyword gate on the captions")
    r.add_argument("--policy", default="review", choices=["review", "strict"])
    r.add_argument("--classify", action="store_true", help="Llama classifier for captions the gate can't decide")
    r.add_argument("--llm-family", default="Llama-Guard-3-1B")
    r.add_argument("--quantization", default="Q4_K_M")
    r.add_argument("--llm-model", default="", help="explicit GGUF file (overrides family/quantization)")
    r.add_argument("--n-gpu-layers", type=int, default=-1)
    r.add_argument("--threshold", type=float, default=0.5)
    r.add_argument("--skip-unsafe", action="store_true", help="do not write cutouts of UNSAFE images")
    mem = r.add_mutually_exclusive_group()
    mem.add_argument("--low-memory", dest="low_memory", action="store_const", const=True, default="auto",
                     help="release each model after its stage of a chunk: peak memory of the biggest stage instead "
                          "of every model at once; each chunk reloads them (use a larger --batch-size). Default: "
                          "on by itself when the process may use less than 6 GiB (container limit or RAM)")
    mem.add_argument("--keep-models", dest="low_memory", action="store_const", const=False,
                     help="keep every model loaded, whatever the memory limit")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_run)

    m = sub.add_parser("models", help="list / fetch / verify / quantize models")
    m.add_argument("action", choices=["list", "fetch", "verify", "quantize"])
    m.add_argument("names", nargs="*")
    m.add_argument("--profile", choices=["cpu-fast", "cpu-full", "gpu-full"])
    m.add_argument("--models", help="models root (default: $SAFECUT_MODELS_DIR or ./models)")
    m.add_argument("--output", help="quantize: the OpenVINO IR (.xml) to write (default: beside the model, in "
                                    "safecut-int8/, where 'OpenVINO int8' and auto find it)")
    m.add_argument("--calibration", help="quantize: a folder of a few of your photos to calibrate on (default: the "
                                         "photos that ship with SafeCut)")
    m.add_argument("--precision", choices=["int8", "bf16"],
                   help="verify: run the quality probe for BEN2 in this precision against f32 (masks on the probe "
                        "photos: IoU, mean |Δ|, edge p95) and record the verdict auto follows")
    m.add_argument("--photos", help="verify --precision: a folder of your own photos instead of the shipped ones")
    m.set_defaults(func=cmd_models)

    try:
        from . import workflows

        workflows.add_cli(sub)
    except ImportError:
        pass
    try:
        from . import client

        client.add_cli(sub)
    except ImportError:
        pass
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if argv is None and a.func is cmd_run:  # the heavy job, as a program: BEN2 runs faster on huge pages
        from ..runtime import hugepages

        hugepages.reexec_with_huge_pages()
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    return int(a.func(a) or 0)
