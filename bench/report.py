"""Targets, RESULTS.md and the PNG plots, from the section JSON files of an output folder."""
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


def targets(secs: dict) -> list[dict]:
    """[{target, measured, met}] for every target whose measurement exists."""
    out = []

    def add(target, measured, met):
        out.append({"target": target, "measured": measured, "met": bool(met)})

    c = _g(secs, "ben2", "configs") or {}
    st = {k: v.get("steady_s") for k, v in c.items() if isinstance(v, dict)}
    n, o, i8, pl = st.get("naive"), st.get("safecut"), st.get("safecut-int8"), st.get("plain")
    if n and o:
        add("BEN2 warm ≥ 1.5× the seeds' node", f"{n:.2f} s → {o:.2f} s: ×{n / o:.2f}", n / o >= 1.5)
    if pl and i8:
        add("BEN2 INT8 ≥ 2× a plain fp32 ORT session", f"{pl:.2f} s → {i8:.2f} s: ×{pl / i8:.2f}", pl / i8 >= 2)
    if o:
        pk = c["safecut"]["peak_mb"] / 1024
        add("BEN2 fp32 peak RSS ≤ 3 GB (one image, fresh process)", f"{pk:.2f} GB", pk <= 3.0)
        f = c["safecut"]["first_s"] / o - 1
        add("BEN2 first call after load within 10 % of steady", f"{f * 100:+.0f} % ({c['safecut']['first_s']:.2f} s "
            f"vs {o:.2f} s)", f <= 0.10)
    if o and i8:
        p8 = c["safecut-int8"]["peak_mb"] / 1024
        add("BEN2 INT8 peak RSS below fp32", f"{p8:.2f} GB vs {c['safecut']['peak_mb'] / 1024:.2f} GB",
            p8 < c["safecut"]["peak_mb"] / 1024)
    fl, size = _g(secs, "ben2", "flops", "total"), _g(secs, "ben2", "model", "size")
    if fl and size == 1024:
        add("stand-in FLOPs within ±5 % of the upstream's 2,151 GFLOP", f"{fl / 1e9:.0f} GFLOP ({fl / 2151e9 * 100 - 100:+.1f} %)",
            abs(fl / 2151e9 - 1) <= 0.05)
    if pl and st.get("reference"):
        r = c["reference"]
        tr, mr = pl / r["steady_s"], c["plain"]["peak_mb"] / r["peak_mb"]
        add("stand-in plain-ORT time and peak RSS within ±15 % of the upstream export",
            f"time ×{tr:.3f}, peak RSS ×{mr:.3f}", abs(tr - 1) <= 0.15 and abs(mr - 1) <= 0.15)
    shares = []
    fl, fs = _g(secs, "florence", "engine_repeat_load"), _g(secs, "florence", "engine_repeat_seconds")
    if fl is not None and fs:
        shares.append(("Florence", fl / fs))
    ll, ls = _g(secs, "llama", "repeat_load_seconds"), _g(secs, "llama", "repeat_seconds")
    if ll is not None and ls:
        shares.append(("Llama", ll / ls))
    if shares:
        add("repeat call on a cached model: ≤ 1 % of its time in loading",
            ", ".join(f"{k} {v * 100:.2f} %" for k, v in shares), all(v <= 0.01 for _, v in shares))
    ln, lo = _g(secs, "llama", "naive_per_caption", "median"), _g(secs, "llama", "ours_per_caption", "median")
    if ln and lo:
        add("Llama classification per caption ≥ 50× naive (Llama Guard prompt, the default)",
            f"{ln:.1f} s → {lo * 1000:.0f} ms: ×{ln / lo:.0f}", ln / lo >= 50)
    li = _g(secs, "llama", "instruct", "per_caption", "median")
    if ln and li:
        add("Llama classification per caption ≥ 50× naive (instruct prompt, same weights)",
            f"{ln:.1f} s → {li * 1000:.0f} ms: ×{ln / li:.0f}", ln / li >= 50)
    pn, po = _g(secs, "florence", "per_image_naive"), _g(secs, "florence", "per_image_ours")
    if pn and po:
        add("Florence batch of 8 ≥ 1.5× per image (engine default: fp32 on CPU)",
            f"{pn:.2f} → {po:.2f} s/img: ×{pn / po:.2f}", pn / po >= 1.5)
    pb = _g(secs, "florence", "per_image_bf16")
    if pn and pb:
        add("Florence batch of 8 ≥ 1.5× per image (bf16 weights, not the engine default yet)",
            f"{pn:.2f} → {pb:.2f} s/img: ×{pn / pb:.2f}", pn / pb >= 1.5)
    gw, gn = _g(secs, "gate", "with_gate", "median"), _g(secs, "gate", "without_gate", "median")
    if gw and gn:
        add("gate on a 60 %-safe caption mix ≥ 2× (safety stage: gate + classifier vs classifier on all)",
            f"{gn:.2f} s → {gw:.2f} s: ×{gn / gw:.2f}", gn / gw >= 2)
    imp = _g(secs, "import", "import_", "median")
    if imp is not None:
        add("pack import ≤ 150 ms", f"{imp * 1000:.0f} ms median (min {_g(secs, 'import', 'import_', 'min') * 1000:.0f} ms)",
            imp <= 0.150)
    for label in ("fp32", "int8", "fp32 low-memory", "int8 low-memory"):
        p = _g(secs, "pipeline", label, "per_image", "median")
        if p and label == "int8":
            add("full CPU pipeline ≤ 20 s per image warm (BEN2 INT8)", f"{p:.2f} s/img", p <= 20.0)
        pk = _g(secs, "pipeline", label, "peak_mb")
        if pk:
            kept = _g(secs, "pipeline", label.split()[0], "per_image", "median") if label.endswith("low-memory") else None
            cost = f" ({p:.2f} vs {kept:.2f} s/img with models kept)" if p and kept else ""
            add(f"full CPU pipeline peak RSS ≤ 4 GB (BEN2 {label}, fresh process)", f"{pk / 1024:.2f} GB{cost}",
                pk <= 4096)
    for label, r in (_g(secs, "pipeline") or {}).items():
        if label.endswith("4 GiB memory cgroup") and isinstance(r, dict) and "unmeasured" not in r:
            ok = "per_image" in r and not r.get("oom_kills") and r.get("peak_mb", 1e9) <= 4096
            got = (f"{r['per_image']['median']:.2f} s/img, peak {r['peak_mb'] / 1024:.2f} GB, low-memory by itself: "
                   f"{r.get('low_memory')}" if "per_image" in r else f"failed: {r.get('error', '')[:120]}")
            add(f"full CPU pipeline on a 4 GB worker (BEN2 {label}): runs, peak RSS ≤ 4 GB",
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


def render(out: str, meta: dict, *, with_plots: bool = True) -> str:
    secs = load_sections(out)
    tg = targets(secs)
    L = ["# SafeCut bench results", ""]
    L.append(f"- command: `{meta.get('command', 'python -m bench')}`; mode: {'quick (tiny models)' if meta.get('quick') else 'real-size models'}")
    L.append(f"- run: {meta.get('started')} → wall time **{meta.get('wall_seconds', 0) / 60:.1f} min** "
             f"(model builds {meta.get('build_seconds', 0):.0f} s of it); load average before {meta.get('load_before')}, "
             f"after {meta.get('load_after')}; other processes used "
             f"{(meta.get('other_cpu') or {}).get('other_share', 0) * 100:.0f} % of the CPU during the run "
             f"(/proc/stat busy time minus the bench's own CPU time: the noise indicator)")
    cpu = _g(secs, "env", "cpu") or {}
    if cpu:
        L.append(f"- machine: {cpu.get('cpu', '?')}, {cpu.get('cores')} cores ({', '.join(cpu.get('simd', []))}), "
                 f"{cpu.get('mem_gb')} GB, no GPU")
    L.append(f"- timings: median (min–max, n); warm = after one untimed call; runs {meta.get('runs')}, heavy runs "
             f"{meta.get('heavy_runs')} (calls over ~10 s)")
    L += ["", "## Targets", ""]
    L += _md_table([{"target": t["target"], "measured": t["measured"], "met": "met" if t["met"] else "**not met**"}
                    for t in tg])
    order = ["builds", "env", "import", "ben2", "llama", "quant", "florence", "gate", "pipeline", "coldstart",
             "tune-ben2", "tune-int8", "tune-florence", "tune-llama"]
    for name in order + [k for k in secs if k not in order]:
        s = secs.get(name)
        if not s:
            continue
        L += ["", f"## {s['title']}", ""]
        oc = s.get("other_cpu") or {}
        L.append(f"_section `{name}`: {s.get('started')}, {s.get('seconds')} s, load {s.get('load_before')} → "
                 f"{s.get('load_after')}; other processes used {oc.get('other_share', 0) * 100:.0f} % of the CPU "
                 f"meanwhile_")
        L.append("")
        if s.get("error"):
            L.append(f"**error:** `{s['error'][:500]}`")
            L.append("")
        L += _rows_md(s.get("rows", []))
        if (s.get("data") or {}).get("markdown"):
            L += ["", s["data"]["markdown"].rstrip()]
        for note in s.get("notes", []):
            L += ["", f"- {note}"]
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
          "exported with the published file's I/O (opset 18, static [1,3,1024,1024] → float16 mask); "
          "`--ben2-reference PATH` times an export of the upstream code next to it; NudeNet: the bundled real 320n.onnx. Speeds only: random weights "
          "say nothing about quality. INT8 quality: run `python -m bench.iou IMAGES_DIR --model BEN2_Base.onnx "
          "--int8 BEN2_Base.int8.onnx` on your own images."]
    if with_plots:
        pl = make_plots(out, secs)
        if pl:
            L += ["", "## Plots", ""] + [f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in pl]
    text = "\n".join(L) + "\n"
    with open(os.path.join(out, "RESULTS.md"), "w") as f:
        f.write(text)
    return text


README_BEGIN, README_END = "<!-- bench:speed-table (python -m bench --publish) -->", "<!-- /bench:speed-table -->"


def readme_block(meta: dict, secs: dict) -> str:
    """The README speed table: the targets of one run, with date, machine, SIMD flags, GEMM peak and load."""
    cpu = _g(secs, "env", "cpu") or {}
    gemm = _g(secs, "env", "gemm_fp32", "gflops")
    oc = (meta.get("other_cpu") or {}).get("other_share", 0)
    L = [README_BEGIN,
         f"Run {meta.get('started')} (`{meta.get('command')}`, {meta.get('wall_seconds', 0) / 60:.0f} min): "
         f"{cpu.get('cpu', '?')}, {cpu.get('cores')} cores, SIMD {', '.join(cpu.get('simd', [])) or '?'}, "
         f"ORT fp32 GEMM peak {gemm} GFLOP/s; load average {meta.get('load_before')} → {meta.get('load_after')}, "
         f"other processes took {oc * 100:.0f} % of the CPU meanwhile. BEN2 = SafeCut's implementation of the real "
         f"BEN_Base architecture (random weights).", ""]
    L += _md_table([{"target": t["target"], "measured": t["measured"], "met": "met" if t["met"] else "**not met**"}
                    for t in targets(secs)])
    L.append(README_END)
    return "\n".join(L)


def publish_readme(readme: str, meta: dict, secs: dict) -> bool:
    """Replace the marked block of README.md; False when the markers are missing."""
    with open(readme) as f:
        text = f.read()
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        return False
    with open(readme, "w") as f:
        f.write(text[:a] + readme_block(meta, secs) + text[b + len(README_END):])
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
        cats = ["ORT GEMM fp32", "ORT GEMM int8", "BEN2 fp32", "BEN2 int8 (fp32-equiv.)"]
        i8s = (c.get("safecut-int8") or {}).get("steady_s")
        vals = [gemm, _g(secs, "env", "gemm_int8_dynamic", "gflops"), fl / c["safecut"]["steady_s"] / 1e9,
                fl / i8s / 1e9 if i8s else None]
        made.append(plots.bars(os.path.join(d, "flops.png"), "Achieved vs achievable (GFLOP/s)", cats,
                               {"GFLOP/s": vals}, "GFLOP/s"))
    return made
