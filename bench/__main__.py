"""``python -m bench``: SafeCut vs the naive reference, real-size models, this machine.

  python -m bench                       # default sections, real-size models (built + cached on first use)
  python -m bench --quick               # tiny models + a reduced BEN2 build (384², depths 2/2/2/2), CI smoke test
  python -m bench --only ben2,llama     # some sections; 'tune' = all tuning sweeps
  python -m bench --runs 5 --heavy-runs 3 --ben2 /path/BEN2_Base.onnx --out bench/results

Writes OUT/results.json, OUT/sections/*.json, OUT/RESULTS.md and OUT/plots/*.png (default OUT =
bench/results). ``--publish`` also puts this run's sections into bench/RESULTS.md (the others stay, each with the
line naming its own run) and README.md's speed table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse(argv=None):
    from .sections import DEFAULT, SECTIONS, TUNE

    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny test-kit models (< 2 min)")
    ap.add_argument("--only", default="", help=f"comma list of: {', '.join(SECTIONS)}; 'tune' = {','.join(TUNE)}")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per measurement (default 5)")
    ap.add_argument("--heavy-runs", type=int, default=3, help="timed runs for calls over ~10 s (default 3)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--models-dir", default=None, help="model cache (default ~/.cache/safecut-bench or "
                                                       "$SAFECUT_BENCH_MODELS)")
    ap.add_argument("--ben2", default=None, help="the real BEN2_Base.onnx (else the stand-in of bench/ben2_arch.py)")
    ap.add_argument("--ben2-reference", action="append", default=[],
                    help="an ONNX export of the upstream BEN_Base code, timed next to the stand-in (faithfulness); "
                         "repeat for exports made by other exporters: the target compares the one made by the "
                         "stand-in's own exporter")
    ap.add_argument("--florence-tokens", type=int, default=32, help="new tokens per caption, naive and SafeCut")
    ap.add_argument("--publish", action="store_true",
                    help="put this run's sections into bench/RESULTS.md (replacing theirs, keeping the others) and "
                         "regenerate README.md's speed table from it")
    ap.add_argument("--fresh", action="store_true", help="forget earlier section results in OUT")
    a = ap.parse_args(argv)
    names = []
    for part in (a.only.split(",") if a.only else DEFAULT):
        part = part.strip()
        if not part:
            continue
        if part == "tune":
            names += TUNE
        elif part in SECTIONS:
            names.append(part)
        else:
            ap.error(f"unknown section '{part}' (known: {', '.join(SECTIONS)}, tune)")
    a.sections = list(dict.fromkeys(names))
    if a.publish and a.quick:
        ap.error("--publish publishes real-size runs only (not --quick)")
    return a


def main(argv=None) -> int:
    a = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("SAFECUT_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # the optimized-graph "hardware specific" warning
    except ImportError:
        pass
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    sys.path.insert(0, ROOT)
    from . import models, report
    from .common import Section, cpu_info, load_avg
    from .sections import SECTIONS, Ctx

    t_start = time.time()
    load_before = load_avg()
    from .common import cpu_snapshot, foreign_cpu

    cpu0 = cpu_snapshot()
    out = os.path.abspath(a.out)
    os.makedirs(os.path.join(out, "sections"), exist_ok=True)
    if a.fresh:
        shutil.rmtree(os.path.join(out, "sections"), ignore_errors=True)
        os.makedirs(os.path.join(out, "sections"))
    root = os.path.abspath(a.models_dir or models.default_models_dir())
    if a.quick:
        root = os.path.join(root, "quick")
    os.environ.setdefault("SAFECUT_CACHE_DIR", os.path.join(root, "safecut-cache"))

    def log(msg):
        print(msg, flush=True)

    log(f"SafeCut bench: sections {','.join(a.sections)}; models {root}; out {out}; load {load_before}")
    t0 = time.perf_counter()
    builds = Section("builds", "Model builds (timed; cached on disk)")
    try:
        built = models.build_quick(root, log) if a.quick else models.build_all(root, set(a.sections), a.ben2, log,
                                                                                     reference=a.ben2_reference)
    except Exception as exc:
        traceback.print_exc()
        print(f"bench: building the models failed: {exc}", file=sys.stderr)
        return 2
    build_seconds = time.perf_counter() - t0
    for k, v in built["builds"].items():
        builds.row(model=k, file=os.path.basename(v.get("path", "")), size=f"{v.get('bytes', 0) / 1e6:.1f} MB",
                   build=f"{v.get('seconds', 0):.1f} s", now="cached" if v.get("cached") else "built in this run",
                   params=f"{v['params'] / 1e6:.1f} M" if v.get("params") else "",
                   peak_rss=f"{v['peak_mb'] / 1024:.1f} GB" if v.get("peak_mb") else "",
                   load_at_build=v.get("load_at_build", ""))
        if v.get("method"):
            builds.notes.append(f"{k}: {v['method']}; peak RSS = the building process's own (VmHWM).")
    builds.data = built
    builds.finish(build_seconds)
    _save(out, builds)
    ctx = Ctx(quick=a.quick, runs=max(1, a.runs), heavy_runs=max(1, a.heavy_runs), out=out, paths=built["paths"],
              builds=built["builds"], florence_tokens=a.florence_tokens, log=log)
    if a.quick:
        ctx.runs = min(ctx.runs, 2)
        ctx.heavy_runs = 1
        ctx.pipeline_images = 2
    failed = []
    for name in a.sections:
        title, fn = SECTIONS[name]
        sec = Section(name, title)
        log(f"[{name}] {title} (load {sec.load_before[0]}) ...")
        t = time.perf_counter()
        try:
            fn(ctx, sec)
        except Exception as exc:
            sec.error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            failed.append(name)
        sec.finish(time.perf_counter() - t)
        _save(out, sec)
        log(f"[{name}] {sec.seconds:.1f}s; other processes used {sec.other_cpu.get('other_share', 0) * 100:.0f} % of "
            f"the CPU meanwhile" + (f" ERROR {sec.error}" if sec.error else ""))
        for r in sec.rows:
            log("    " + " | ".join(str(v) for v in r.values()))
    meta = {"command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]), "quick": a.quick,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t_start)),
            "wall_seconds": round(time.time() - t_start, 1), "build_seconds": round(build_seconds, 1),
            "load_before": load_before, "load_after": load_avg(), "other_cpu": foreign_cpu(cpu0), "runs": ctx.runs, "heavy_runs": ctx.heavy_runs,
            "sections_run": a.sections, "failed": failed, "models_dir": root, "machine": cpu_info()}
    secs = report.load_sections(out)
    results = {"meta": meta, "targets": report.targets(secs), "sections": secs}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    report.render(out, meta)
    if a.publish:   # this run's sections replace theirs in bench/RESULTS.md; README's table is read from it
        published = os.path.join(HERE, "RESULTS.md")
        previous = open(published).read() if os.path.isfile(published) else None
        text = report.render(out, meta, with_plots=False, previous=previous, only=["builds", *a.sections],
                             write=False)
        with open(published, "w") as f:
            f.write(text + "\nPlots: run `python -m bench` and open bench/results/plots/.\n")
        if report.publish_readme(os.path.join(ROOT, "README.md"), text):
            log("bench: bench/RESULTS.md and README.md's speed table updated")
    log(f"bench: done in {meta['wall_seconds'] / 60:.1f} min; {os.path.join(out, 'RESULTS.md')}"
        + (f"; FAILED sections: {failed}" if failed else ""))
    for t in results["targets"]:
        log(f"  [{'met' if t['met'] else 'NOT MET'}] {t['target']}: {t['measured']}")
    return 1 if failed else 0


def _save(out: str, sec) -> None:
    with open(os.path.join(out, "sections", f"{sec.name}.json"), "w") as f:
        json.dump(sec.as_dict(), f, indent=1, default=str)


if __name__ == "__main__":
    sys.exit(main())
