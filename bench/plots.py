"""Bar charts as PNG: matplotlib when it is installed, else a small PIL renderer (same charts, plainer)."""
from __future__ import annotations

import math

COLORS = ["#d9534f", "#2b7bba", "#5cb85c", "#f0ad4e", "#8e6cc0", "#5bc0de", "#777777"]


def backend() -> str:
    try:
        import matplotlib  # noqa: F401

        return "matplotlib"
    except ImportError:
        return "pil"


def bars(path: str, title: str, categories: list[str], series: dict[str, list], ylabel: str, *,
         log: bool = False, stacked: bool = False) -> str:
    """Grouped (or stacked) bars: one group per category, one bar per series. None values are skipped."""
    if backend() == "matplotlib":
        return _mpl(path, title, categories, series, ylabel, log, stacked)
    return _pil(path, title, categories, series, ylabel, log, stacked)


def _mpl(path, title, categories, series, ylabel, log, stacked):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(categories) + 2), 4.2), dpi=110)
    n = len(series)
    width = 0.8 if stacked else 0.8 / max(n, 1)
    bottoms = [0.0] * len(categories)
    for i, (name, vals) in enumerate(series.items()):
        xs, ys, bs = [], [], []
        for j, v in enumerate(vals):
            if v is None:
                continue
            xs.append(j if stacked else j - 0.4 + width * (i + 0.5))
            ys.append(v)
            bs.append(bottoms[j] if stacked else 0.0)
        rects = ax.bar(xs, ys, width, bottom=bs if stacked else None, label=name, color=COLORS[i % len(COLORS)])
        if not stacked:
            for r, v in zip(rects, ys):
                ax.annotate(_label(v), (r.get_x() + r.get_width() / 2, r.get_height()), ha="center", va="bottom",
                            fontsize=7)
        if stacked:
            for j, v in enumerate(vals):
                if v is not None:
                    bottoms[j] += v
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _label(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.1f}"
    return f"{v:.2g}"


def _pil(path, title, categories, series, ylabel, log, stacked):
    from PIL import Image, ImageDraw

    W, H = max(640, 150 * len(categories) + 120), 420
    L, R, T, B = 70, 20, 40, 70
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((L, 10), title, fill="black")
    vals = []
    for j in range(len(categories)):
        col = [v[j] for v in series.values() if v[j] is not None]
        vals.append(sum(col) if stacked else max(col or [0]))
    vmax = max(vals + [1e-9])
    vmin = min([v for s in series.values() for v in s if v] + [vmax]) if log else 0.0
    lo = math.log10(max(vmin, 1e-9)) - 0.3 if log else 0.0
    hi = math.log10(vmax) + 0.1 if log else vmax * 1.1

    def y(v):
        if log:
            v = math.log10(max(v, 1e-9))
        return H - B - (v - lo) / (hi - lo) * (H - T - B)

    d.line([(L, T), (L, H - B), (W - R, H - B)], fill="black")
    d.text((5, T), ylabel[:12], fill="black")
    gw = (W - L - R) / max(len(categories), 1)
    n = len(series)
    for j, cat in enumerate(categories):
        x0 = L + j * gw + gw * 0.1
        bw = gw * 0.8 / (1 if stacked else max(n, 1))
        base = H - B
        for i, (name, vs) in enumerate(series.items()):
            v = vs[j]
            if v is None:
                continue
            color = COLORS[i % len(COLORS)]
            if stacked:
                top = y(sum(x for x in [s[j] for s in list(series.values())[:i + 1]] if x is not None))
                d.rectangle([x0, top, x0 + bw, base], fill=color)
                base = top
            else:
                xa = x0 + i * bw
                d.rectangle([xa, y(v), xa + bw - 2, H - B], fill=color)
                d.text((xa, y(v) - 12), _label(v), fill="black")
        d.text((L + j * gw + 4, H - B + 6), cat[:22], fill="black")
    for i, name in enumerate(series):
        d.rectangle([L + 10 + i * 150, H - 25, L + 22 + i * 150, H - 13], fill=COLORS[i % len(COLORS)])
        d.text((L + 26 + i * 150, H - 26), name[:20], fill="black")
    img.save(path)
    return path
