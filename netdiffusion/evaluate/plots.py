"""Report figures (matplotlib, Agg backend): field JSD bars, flow images, flags, sizes, mixing.

Flow images use the image codec ``netdiffusion.image.matrix_to_image`` (the paper's palette: green
set, red unset, grey absent), so readers see what the diffusion model sees; if the codec is not
importable the matrix is drawn directly in grey/white/black.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from netdiffusion.evaluate.data import FlowSet
from netdiffusion.evaluate.flowstats import PACKET_SIZE_BINS, Stat
from netdiffusion.fields import Layout
from netdiffusion.names import file_name

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def field_jsd(path: Path, report: dict, top: int = 40) -> None:
    """Horizontal bars: JSD per field, synthetic vs floor vs random, worst ``top`` fields."""
    plt = _plt()
    rows = report["similarity"]["per_field"]

    def num(v: float | None) -> float:
        return 0.0 if v is None or v != v else float(v)

    keys = sorted(rows, key=lambda k: -num(rows[k]["jsd"]))[:top][::-1]
    y = np.arange(len(keys))
    fig, ax = plt.subplots(figsize=(8, max(3, 0.28 * len(keys) + 1)))
    h = 0.28
    for i, (col, label, color) in enumerate((("random_jsd", "random bits", "#bbbbbb"),
                                             ("jsd", "synthetic", "#d62728"),
                                             ("floor_jsd", "real-vs-real floor", "#1f77b4"))):
        ax.barh(y + (i - 1) * h, [num(rows[k][col]) for k in keys], height=h, label=label, color=color)
    ax.set_yticks(y, keys, fontsize=7)
    ax.set_xlabel("Jensen-Shannon divergence (base 2)")
    ax.set_xlim(0, 1)
    ax.set_title("Per-field JSD vs held-out real traffic")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _flow_matrix(fs: FlowSet, flow: int, k: int) -> np.ndarray:
    s, n = fs.starts[flow], min(fs.lengths[flow], k)
    return fs.packets.nprint[s:s + n]


def flow_images(path: Path, real: FlowSet, synthetic: FlowSet, layout: Layout, cls: str, k: int) -> None:
    """Real and synthetic nPrint matrices of one class side by side (longest flow of each)."""
    plt = _plt()
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["#9e9e9e", "#ffffff", "#000000"])  # -1 absent, 0, 1
    try:
        from netdiffusion.image import matrix_to_image
        legend = "green = 1, red = 0, grey = absent"
    except ImportError:
        matrix_to_image = None
        legend = "grey = absent, white = 0, black = 1"
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, fs, title in ((axes[0], real, "real"), (axes[1], synthetic, "synthetic")):
        idx = np.flatnonzero(fs.label == cls)
        if idx.size == 0:
            ax.set_axis_off()
            continue
        m = _flow_matrix(fs, int(idx[np.argmax(fs.lengths[idx])]), k)  # the longest flow shows most
        if matrix_to_image is not None:
            ax.imshow(matrix_to_image(m, rows=None), aspect="auto", interpolation="nearest")
        else:
            ax.imshow(m + 1, cmap=cmap, vmin=0, vmax=2, aspect="auto", interpolation="nearest")
        ax.set_title(f"{cls}: {title} ({m.shape[0]} packets)")
        mids = []
        for h in layout.headers:
            sl = layout.header_slice(h)
            ax.axvline(sl.start - 0.5, color="#1f77b4", lw=0.6)
            mids.append((sl.start + sl.stop) / 2)
        ax.set_xticks(mids, list(layout.headers), fontsize=7)
        ax.set_xlabel(f"nPrint header bits ({legend})")
    axes[0].set_ylabel("packet")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def flags_and_sizes(path_flags: Path, path_sizes: Path, real: dict[str, Stat], syn: dict[str, Stat]) -> None:
    """TCP flag shares and packet-size histograms, real vs synthetic."""
    plt = _plt()
    flags = [f for f in ("syn", "fin", "rst", "ackf", "psh") if f"tcp_{f}_share" in real]
    if flags:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        x = np.arange(len(flags))
        for off, stats, label, color in ((-0.2, real, "real", "#1f77b4"), (0.2, syn, "synthetic", "#d62728")):
            vals = [stats[f"tcp_{f}_share"].values.mean() * 1024 if stats[f"tcp_{f}_share"].values.size else 0
                    for f in flags]
            ax.bar(x + off, vals, width=0.4, label=label, color=color)
        ax.set_xticks(x, [f.upper().replace("ACKF", "ACK") for f in flags])
        ax.set_ylabel("packets per 1,024 TCP packets")
        ax.set_title("TCP flags")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path_flags, dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    edges = PACKET_SIZE_BINS
    labels = [f"{int(a)}-{int(b) - 1}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    labels[-1] = f">={int(edges[-2])}"
    x = np.arange(len(labels))
    for off, stats, label, color in ((-0.2, real, "real", "#1f77b4"), (0.2, syn, "synthetic", "#d62728")):
        v = stats["packet_size"].values
        hist = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)[0].astype(float)
        ax.bar(x + off, hist / max(hist.sum(), 1), width=0.4, label=label, color=color)
    ax.set_xticks(x, labels, rotation=45, fontsize=7)
    ax.set_ylabel("share of packets")
    ax.set_xlabel("IP packet size (bytes)")
    ax.set_title("Packet sizes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path_sizes, dpi=110)
    plt.close(fig)


def mixing_curves(path: Path, mixing: dict) -> bool:
    """Accuracy on real test flows vs share of synthetic training flows (paper Fig. 4)."""
    curves = [(task, model, vals) for task, models in mixing.items() if isinstance(models, dict)
              for model, vals in models.items()]
    if not curves:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for task, model, vals in curves:
        rates = [float(r) for r in vals]
        acc = [np.nan if v is None else v for v in vals.values()]
        ax.plot(rates, acc, marker="o", ls="-" if task == "micro" else "--", label=f"{model} {task}")
    ax.set_xlabel("share of synthetic flows in training set")
    ax.set_ylabel("accuracy on held-out real flows")
    ax.set_ylim(0, 1.02)
    ax.set_title("Mixing real and synthetic training data")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_all(output: Path, report: dict, real: FlowSet, synthetic: FlowSet, layout: Layout,
              stats_real: dict[str, Stat], stats_syn: dict[str, Stat]) -> dict[str, str]:
    """Every figure; returns ``name -> relative path`` for the report. Plot errors never fail a run."""
    figures: dict[str, str] = {}
    jobs = [
        ("field_jsd", "field_jsd.png", lambda p: field_jsd(p, report)),
        ("mixing", "mixing.png", lambda p: mixing_curves(p, report.get("mixing", {}))),
    ]
    for name, file, job in jobs:
        try:
            if job(output / file) is not False:
                figures[name] = file
        except Exception as exc:  # a broken figure must not lose the numbers
            log.warning("%s: figure %s failed: %s", output / file, name, exc)
    try:
        flags_and_sizes(output / "tcp_flags.png", output / "packet_sizes.png", stats_real, stats_syn)
        figures["tcp_flags"] = "tcp_flags.png"
        figures["packet_sizes"] = "packet_sizes.png"
    except Exception as exc:
        log.warning("%s: flag/size figures failed: %s", output, exc)
    (output / "images").mkdir(exist_ok=True)
    k = int(report["similarity"]["packets_per_flow"])
    for cls in report["similarity"]["classes"]:
        file = f"images/{file_name(cls)}.png"  # the file-safe name every stage uses
        try:
            flow_images(output / file, real, synthetic, layout, cls, k)
            figures[f"images_{cls}"] = file
        except Exception as exc:
            log.warning("%s: image figure failed: %s", output / file, exc)
    return figures
