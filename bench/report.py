"""Targets, RESULTS.md and the PNG plots, from the section JSON files of an output folder; ``--publish`` merges a run's
sections into the published bench/RESULTS.md (the sections it ran replace theirs, the others stay with the line
naming their own run) and README's speed table is read from that file."""
from __future__ import annotations

import glob
import json
import os

from . import plots


def load_sections(out: str) -> dict[str, dict]:
    secs = {}
    for p in sorted(glob.glob(os.path.join(out, "sections", "*.json"))):
        try:
            with open(p) as f:
                d = json.load(f)
            secs[d["name"]] = d
        except (OSError, ValueError, KeyError):
            continue
    return secs


def _g(secs, name, *keys):
    d = secs.get(name, {}).get("data", {})
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


# per-CPU-class goals of issue 24 (2 cores): BEN2 with auto per 1024² image, full pipeline per image warm
BEN2_AUTO_GOAL = {"AVX-512": 5.0}
PIPELINE_AUTO_GOAL = {"AVX-512": 10.0, "AVX2": 20.0}
INT8_GAIN = 1.3   # auto may use int8 on a CPU class only where it is this much faster than OpenVINO f32 there


def targets(secs: dict) -> list[dict]:
    """[{section, target, measured, met}] for every target whose measurement exists."""
    out = []
    section = ""

    def add(target, measured, met):
        out.append({"section": section, "target": target, "measured": measured, "met": bool(met)})

    section = "ben2"
    c = _g(secs, "ben2", "configs") or {}
    st = {k: v.get("steady_s") for k, v in c.items() if isinstance(v, dict)}
    n, o, i8, pl = st.get("naive"), st.get("safecut"), st.get("safecut-int8"), st.get("plain")
    if n and o:
        add("BEN2 warm ≥ 1.5× the seeds' node", f"{n:.2f} s → {o:.2f} s: ×{n / o:.2f}", n / o >= 1.5)
    if pl and i8:
        add("BEN2 INT8 (OpenVINO, NNCF) ≥ 2× a plain fp32 ORT session", f"{pl:.2f} s → {i8:.2f} s: ×{pl / i8:.2f}",
            pl / i8 >= 2)
    if o:
        pk = c["safecut"]["peak_mb"] / 1024
        add("BEN2 auto peak RSS ≤ 3 GB (one image, fresh process)", f"{pk:.2f} GB", pk <= 3.0)
        f = c["safecut"]["first_s"] / o - 1
        add("BEN2 first call after load within 10 % of steady", f"{f * 100:+.0f} % ({c['safecut']['first_s']:.2f} s "
            f"vs {o:.2f} s)", f <= 0.10)
    fl, size = _g(secs, "ben2", "flops", "total"), _g(secs, "ben2", "model", "size")
    if fl and size == 1024:
        add("stand-in FLOPs within ±5 % of the upstream's 2,151 GFLOP", f"{fl / 1e9:.0f} GFLOP ({fl / 2151e9 * 100 - 100:+.1f} %)",
            abs(fl / 2151e9 - 1) <= 0.05)
    if pl and st.get("reference"):
        r = c["reference"]
        tr, mr = pl / r["steady_s"], c["plain"]["peak_mb"] / r["peak_mb"]
        add("stand-in plain-ORT time and peak RSS within ±15 % of the upstream export",
            f"time ×{tr:.3f}, peak RSS ×{mr:.3f}", abs(tr - 1) <= 0.15 and abs(mr - 1) <= 0.15)
    section = "cpu"
    b = _g(secs, "cpu", "ben2") or {}
    cls = _g(secs, "cpu", "cpu", "class")
    f32, q8 = b.get("ov-f32"), b.get("ov-int8")
    if f32 and q8:
        gain = f32["steady_s"] / q8["steady_s"]
        add(f"BEN2 INT8 (OpenVINO, NNCF) ≥ {INT8_GAIN}× OpenVINO f32 on this CPU ({cls}): the speed half of auto's "
            f"int8 rule", f"{f32['steady_s']:.2f} s → {q8['steady_s']:.2f} s: ×{gain:.2f}", gain >= INT8_GAIN)
        add("BEN2 INT8 peak RSS below OpenVINO f32", f"{q8['peak_mb'] / 1024:.2f} GB vs {f32['peak_mb'] / 1024:.2f} GB",
            q8["peak_mb"] < f32["peak_mb"])
    auto = _g(secs, "cpu", "ben2_auto")
    row = next((b[k] for k, rt in (("ort", "ONNX Runtime"), ("ov-f32", "OpenVINO f32"), ("ov-int8", "OpenVINO int8"),
                                   ("ov-bf16", "OpenVINO bf16")) if rt == auto and k in b), None)
    if row and cls in BEN2_AUTO_GOAL:
        add(f"BEN2 with auto ≤ {BEN2_AUTO_GOAL[cls]} s per 1024² image ({cls})", f"{row['steady_s']:.2f} s ({auto})",
            row["steady_s"] <= BEN2_AUTO_GOAL[cls])
    section = ""
    shares = []
    fl, fs = _g(secs, "florence", "engine_repeat_load"), _g(secs, "florence", "engine_repeat_seconds")
    if fl is not None and fs:
        shares.append(("Florence", fl / fs))
    ll, ls = _g(secs, "llama", "repeat_load_seconds"), _g(secs, "llama", "repeat_seconds")
    if ll is not None and ls:
        shares.append(("Llama", ll / ls))
    if shares:
        section = "florence, llama"
        add("repeat call on a cached model: ≤ 1 % of its time in loading",
            ", ".join(f"{k} {v * 100:.2f} %" for k, v in shares), all(v <= 0.01 for _, v in shares))
    section = "llama"
    ln, lo = _g(secs, "llama", "naive_per_caption", "median"), _g(secs, "llama", "ours_per_caption", "median")
    if ln and lo:
        add("Llama classification per caption ≥ 50× naive (Llama Guard prompt, the default)",
            f"{ln:.1f} s → {lo * 1000:.0f} ms: ×{ln / lo:.0f}", ln / lo >= 50)
    li = _g(secs, "llama", "instruct", "per_caption", "median")
    if ln and li:
        add("Llama classification per caption ≥ 50× naive (instruct prompt, same weights)",
            f"{ln:.1f} s → {li * 1000:.0f} ms: ×{ln / li:.0f}", ln / li >= 50)
    section = "florence"
    pn, po = _g(secs, "florence", "per_image_naive"), _g(secs, "florence", "per_image_ours")
    if pn and po:
        add("Florence batch of 8 ≥ 1.5× per image (engine default: fp32 on CPU)",
            f"{pn:.2f} → {po:.2f} s/img: ×{pn / po:.2f}", pn / po >= 1.5)
    pb = _g(secs, "florence", "per_image_bf16")
    if pn and pb:
        add("Florence batch of 8 ≥ 1.5× per image (bf16 weights, not the engine default yet)",
            f"{pn:.2f} → {pb:.2f} s/img: ×{pn / pb:.2f}", pn / pb >= 1.5)
    section = "gate"
    gw, gn = _g(secs, "gate", "with_gate", "median"), _g(secs, "gate", "without_gate", "median")
    if gw and gn:
        add("gate on a 60 %-safe caption mix ≥ 2× (safety stage: gate + classifier vs classifier on all)",
            f"{gn:.2f} s → {gw:.2f} s: ×{gn / gw:.2f}", gn / gw >= 2)
    section = "import"
    imp = _g(secs, "import", "import_", "median")
    if imp is not None:
        add("pack import ≤ 150 ms", f"{imp * 1000:.0f} ms median (min {_g(secs, 'import', 'import_', 'min') * 1000:.0f} ms)",
            imp <= 0.150)
    section = "pipeline"
    cls = _g(secs, "pipeline", "cpu_class")
    p = _g(secs, "pipeline", "auto", "per_image", "median")
    if p and cls in PIPELINE_AUTO_GOAL:
        add(f"full CPU pipeline with auto ≤ {PIPELINE_AUTO_GOAL[cls]:.0f} s per image warm ({cls})",
            f"{p:.2f} s/img ({_g(secs, 'pipeline', 'auto', 'devices', 'ben2')})", p <= PIPELINE_AUTO_GOAL[cls])
    for label in ("auto", "OpenVINO int8", "auto low-memory"):
        pk = _g(secs, "pipeline", label, "peak_mb")
        if pk:
            p = _g(secs, "pipeline", label, "per_image", "median")
            kept = _g(secs, "pipeline", "auto", "per_image", "median") if label.endswith("low-memory") else None
            cost = f" ({p:.2f} vs {kept:.2f} s/img with models kept)" if p and kept else ""
            add(f"full CPU pipeline peak RSS ≤ 4 GB (cpu_runtime {label}, fresh process)", f"{pk / 1024:.2f} GB{cost}",
                pk <= 4096)
    for label, r in (_g(secs, "pipeline") or {}).items():
        if label.endswith("4 GiB memory cgroup") and isinstance(r, dict) and "unmeasured" not in r:
            ok = "per_image" in r and not r.get("oom_kills") and r.get("peak_mb", 1e9) <= 4096
            got = (f"{r['per_image']['median']:.2f} s/img, peak {r['peak_mb'] / 1024:.2f} GB, low-memory by itself: "
                   f"{r.get('low_memory')}" if "per_image" in r else f"failed: {r.get('error', '')[:120]}")
            add(f"full CPU pipeline on a 4 GB worker (cpu_runtime {label}): runs, peak RSS ≤ 4 GB",
                f"{got}; OOM kills {r.get('oom_kills')}", ok)
    return out


def _md_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    cols = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in cols) + " |")
    return lines


def _rows_md(rows: list[dict]) -> list[str]:
    """Rows with a ``table`` key form one table per value, under a bold heading; the others one table."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r.get("table", ""), []).append({k: v for k, v in r.items() if k != "table"})
    out: list[str] = []
    for name, rs in groups.items():
        if name:
            out += ["", f"**{name}**", ""]
        out += _md_table(rs)
    return out


ORDER = ["builds", "env", "import", "ben2", "cpu", "llama", "quant", "florence", "gate", "pipeline", "coldstart",
         "tune-ben2", "tune-florence", "tune-llama"]
RUN_PREFIX = "- run "


def _run_line(meta: dict, names: list[str]) -> str:
    """One run, as RESULTS.md lists it: when, where, what, how long, how noisy."""
    m = meta.get("machine") or {}
    where = (f" on {m.get('cpu', '?')}, {m.get('cores')} cores ({', '.join(m.get('simd', []))}), {m.get('mem_gb')} GB"
             if m else "")
    oc = (meta.get("other_cpu") or {}).get("other_share", 0)
    return (f"{RUN_PREFIX}{meta.get('started')}{where}: `{meta.get('command', 'python -m bench')}` "
            f"({'quick, tiny models' if meta.get('quick') else 'real-size models'}); sections {', '.join(names)}; "
            f"wall time **{meta.get('wall_seconds', 0) / 60:.1f} min** (model builds {meta.get('build_seconds', 0):.0f} s "
            f"of it); load average {meta.get('load_before')} → {meta.get('load_after')}; other processes used "
            f"**{oc * 100:.0f} %** of the CPU meanwhile (/proc/stat busy time minus the bench's own: the noise "
            f"indicator)")


def _section_md(s: dict) -> list[str]:
    oc = s.get("other_cpu") or {}
    L = ["", f"## {s['title']}", "",
         f"_section `{s['name']}`: {s.get('started')}, {s.get('seconds')} s, load {s.get('load_before')} → "
         f"{s.get('load_after')}; other processes used {oc.get('other_share', 0) * 100:.0f} % of the CPU meanwhile_", ""]
    if s.get("error"):
        L += [f"**error:** `{s['error'][:500]}`", ""]
    L += _rows_md(s.get("rows", []))
    if (s.get("data") or {}).get("markdown"):
        L += ["", s["data"]["markdown"].rstrip()]
    for note in s.get("notes", []):
        L += ["", f"- {note}"]
    return L


def _parse(text: str) -> tuple[list[str], list[list[str]], dict[str, str]]:
    """A RESULTS.md this module wrote: (run lines, target rows [section, target, measured, met], section name ->
    its markdown block)."""
    runs = [ln for ln in text.splitlines() if ln.startswith(RUN_PREFIX)]
    rows, blocks = [], {}
    for part in text.split("\n## ")[1:]:
        head = part.split("\n", 1)[0]
        if head == "Targets":
            rows += [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in part.splitlines()[3:]
                     if ln.startswith("| ")]
        elif "\n_section `" in part:
            blocks[part.split("\n_section `", 1)[1].split("`", 1)[0]] = "## " + part.rstrip()
    return runs, rows, blocks


def _run_sections(run_line: str) -> list[str]:
    return run_line.split("; sections ", 1)[-1].split("; ", 1)[0].split(", ")


def _met(t: dict) -> str:
    return "met" if t["met"] else "**not met**"


def render(out: str, meta: dict, *, with_plots: bool = True, previous: str | None = None,
           only: list[str] | None = None, write: bool = True) -> str:
    """RESULTS.md of the sections in ``out`` (``only``: just those), written to ``out`` unless ``write`` is False.
    With ``previous`` (a RESULTS.md written here before), its sections, targets and runs that this one does not
    replace are kept: each section keeps the line that names its own run and conditions."""
    secs = load_sections(out)
    if only is not None:
        secs = {k: v for k, v in secs.items() if k in only}
    old_runs, old_rows, old_blocks = _parse(previous) if previous else ([], [], {})
    blocks = {k: v for k, v in old_blocks.items() if k not in secs}
    blocks.update({k: "\n".join(_section_md(s)).strip() for k, s in secs.items()})
    rows = [r for r in old_rows if len(r) == 4 and not set(r[0].split(", ")) & set(secs)]
    rows += [[t["section"], t["target"], t["measured"], _met(t)] for t in targets(secs)]
    runs = [_run_line(meta, [k for k in ORDER if k in secs] + sorted(set(secs) - set(ORDER)))]
    claimed = set(secs)
    for r in old_runs:   # earlier runs, newest first, each listing just the sections still from it
        names = [k for k in _run_sections(r) if k in blocks and k not in claimed]
        claimed.update(names)
        if names:
            runs.append(r.replace(f"; sections {', '.join(_run_sections(r))};", f"; sections {', '.join(names)};"))
    L = ["# SafeCut bench results", "",
         "Each section names the run it comes from, with its own date, load and the CPU share other processes took "
         "meanwhile; `python -m bench --only A,B --publish` replaces just those sections.", ""]
    L += runs
    L.append(f"- timings: median (min–max, n); warm = after one untimed call; this run: runs {meta.get('runs')}, "
             f"heavy runs {meta.get('heavy_runs')} (calls over ~10 s)")
    L += ["", "## Targets", ""]
    L += _md_table([dict(zip(("section", "target", "measured", "met"), r)) for r in rows])
    for name in [k for k in ORDER if k in blocks] + sorted(set(blocks) - set(ORDER)):
        L += ["", blocks[name]]
    L += ["", "## Reference (naive) implementations", "",
          "bench/naive.py rewrites what the seed project's nodes do, on the same files in the same run: BEN2 with "
          "one ORT session at 8 intra + 8 inter threads (the image's OMP_NUM_THREADS=8) whatever the core count, "
          "sequential execution, torch bilinear resize pre/post; the classifier as a llama-cpp text completion with a three-example few-shot JSON prompt "
          "(~190 tokens), max_tokens 300, temperature 0.1, no stop, library-default threads, n_ctx 4096 (random "
          "weights never stop early, so all 300 tokens are generated); Florence-2 loaded per run, one image at a "
          "time, do_sample, 3 beams, fp32, the same forced number of new tokens as SafeCut's run."]
    L += ["", "## Models", "",
          "Built locally, random weights, real sizes (bench/models.py, bench/ben2_arch.py): Llama with "
          "Llama-3.2-1B dims and the real Llama-3 vocabulary (GGUF F16 → llama_model_quantize); Florence-2-base "
          "dims (231 M params, vocab 51,289); BEN2: the real BEN2_Base.onnx when `--ben2 PATH` is given, else "
          "SafeCut's own implementation of the BEN_Base architecture (Swin-B 2/2/18/2 on 5 views of 512², MCLM/MCRM "
          "decoder, full-resolution refinement; 94.13 M parameters named and shaped as the published checkpoint), "
          "exported with the published file's I/O (opset 18, static [1,3,1024,1024] → float16 mask), and its INT8 "
          "model made by the product (`safecut.engines.ben2_quantize.quantize_ben2`: NNCF, OpenVINO IR; build time "
          "and peak RSS in section builds); `--ben2-reference PATH` times an export of the upstream code next to it; "
          "NudeNet: the bundled real 320n.onnx. Speeds only: random weights say nothing about quality. INT8 "
          "quality on your own weights: `python -m safecut models verify --precision int8` (the product's quality "
          "probe), or per image on your own photos `python -m bench.iou IMAGES_DIR --model BEN2_Base.onnx`."]
    if with_plots:
        pl = make_plots(out, secs)
        if pl:
            L += ["", "## Plots", ""] + [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in pl]
    text = "\n".join(L) + "\n"
    if write:
        with open(os.path.join(out, "RESULTS.md"), "w") as f:
            f.write(text)
    return text


README_BEGIN, README_END = "<!-- bench:speed-table (python -m bench --publish) -->", "<!-- /bench:speed-table -->"


def readme_block(results_md: str) -> str:
    """The README speed table: the run lines and the targets of the published bench/RESULTS.md, as they are there."""
    runs, rows, _ = _parse(results_md)
    L = [README_BEGIN, "From [bench/RESULTS.md](bench/RESULTS.md) (each target names its section, each section its "
                       "run). BEN2 = SafeCut's implementation of the real BEN_Base architecture (random weights).", ""]
    L += runs + [""]
    L += _md_table([dict(zip(("section", "target", "measured", "met"), r)) for r in rows])
    L.append(README_END)
    return "\n".join(L)


def publish_readme(readme: str, results_md: str) -> bool:
    """Replace the marked block of README.md; False when the markers are missing."""
    with open(readme) as f:
        text = f.read()
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        return False
    with open(readme, "w") as f:
        f.write(text[:a] + readme_block(results_md) + text[b + len(README_END):])
    return True


def make_plots(out: str, secs: dict) -> list[str]:
    d = os.path.join(out, "plots")
    os.makedirs(d, exist_ok=True)
    made = []
    cats, naive, ours, int8 = [], [], [], []
    c = _g(secs, "ben2", "configs") or {}
    if c.get("naive") and c.get("safecut"):
        cats.append("BEN2 s/img")
        naive.append(c["naive"]["steady_s"])
        ours.append(c["safecut"]["steady_s"])
        int8.append((c.get("safecut-int8") or {}).get("steady_s"))
    if _g(secs, "florence", "per_image_naive"):
        cats.append("Florence s/img (batch 8)")
        naive.append(_g(secs, "florence", "per_image_naive"))
        ours.append(_g(secs, "florence", "per_image_ours"))
        int8.append(None)
    if _g(secs, "llama", "naive_per_caption", "median"):
        cats.append("Llama s/caption")
        naive.append(_g(secs, "llama", "naive_per_caption", "median"))
        ours.append(_g(secs, "llama", "ours_per_caption", "median"))
        int8.append(None)
    if _g(secs, "gate", "without_gate", "median"):
        cats.append("10 captions, gate")
        naive.append(_g(secs, "gate", "without_gate", "median"))
        ours.append(_g(secs, "gate", "with_gate", "median"))
        int8.append(None)
    if cats:
        series = {"naive / no gate": naive, "SafeCut": ours}
        if any(v is not None for v in int8):
            series["SafeCut INT8"] = int8
        made.append(plots.bars(os.path.join(d, "naive_vs_safecut.png"), "Naive reference vs SafeCut (seconds, log)",
                               cats, series, "seconds", log=True))
    q = _g(secs, "quant", "quants")
    if q:
        names = list(q)
        made.append(plots.bars(os.path.join(d, "quantizations.png"), "Llama-3.2-1B dims: per quantization",
                               names, {"file GB": [q[k]["bytes"] / 1e9 for k in names],
                                       "load s": [q[k]["load"] for k in names],
                                       "caption s": [q[k]["caption"]["median"] for k in names],
                                       "prompt 100 tok s": [q[k]["prompt"]["median"] for k in names]}, "GB / s"))
    cs = secs.get("coldstart", {}).get("data", {})
    runs = {k: v for k, v in cs.items() if isinstance(v, dict) and "spawn_to_result" in v}
    if runs:
        names = list(runs)
        made.append(plots.bars(
            os.path.join(d, "coldstart.png"), "Cold start: process start → first result (s)",
            [n.replace(" | ", "\n") for n in names],
            {"interpreter": [runs[k]["interpreter"] for k in names], "imports": [runs[k]["import"] for k in names],
             "model load": [sum(runs[k]["load"].values()) for k in names],
             "first inference": [sum(runs[k]["first"].values()) for k in names]}, "seconds", stacked=True))
    gemm = _g(secs, "env", "gemm_fp32", "gflops")
    fl = _g(secs, "ben2", "flops", "total")
    if gemm and fl and c.get("safecut"):
        cats = ["ORT GEMM fp32", "BEN2 auto", "BEN2 OpenVINO int8 (fp32-equiv.)"]
        i8s = (c.get("safecut-int8") or {}).get("steady_s")
        vals = [gemm, fl / c["safecut"]["steady_s"] / 1e9, fl / i8s / 1e9 if i8s else None]
        made.append(plots.bars(os.path.join(d, "flops.png"), "Achieved vs achievable (GFLOP/s)", cats,
                               {"GFLOP/s": vals}, "GFLOP/s"))
    return made
