"""PNG figures of a bench run (matplotlib, Agg backend): the per-layer × per-step recompute
heatmap of a ``dcu`` run (the paper's Fig. 2 view) and the speed–accuracy frontier of the rows."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'dynamic-dllm[eval]' (or matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def recompute_heatmap(fractions, path, title: str = "rows recomputed per layer and step") -> Path:
    """``fractions``: ``[n_layers, steps]`` (e.g. :meth:`RecomputeObserver.fractions`)."""
    plt = _pyplot()
    data = [[float(v) for v in layer] for layer in fractions]
    fig, ax = plt.subplots(figsize=(max(6.0, min(16.0, len(data[0]) / 16)), 1.2 + 0.35 * len(data)))
    im = ax.imshow(data, aspect="auto", origin="lower", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xlabel("denoising step")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="fraction of rows recomputed")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def pareto_front(points: Sequence[tuple]) -> list[tuple]:
    """The points ``(speed, accuracy, …)`` not dominated by a faster-and-at-least-as-accurate one,
    sorted by speed."""
    front = []
    for p in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or p[1] > front[-1][1]:
            front.append(p)
    return sorted(front, key=lambda p: p[0])


def label_offsets(points: Sequence[tuple], near: float = 0.06, step: int = 10) -> list[int]:
    """Vertical label offsets (in points) so labels of points at (nearly) the same place stack
    instead of overlapping: a point whose position, scaled to the axes' ranges, lies within ``near``
    of an earlier point's gets its label ``step`` points above the highest such label."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    offsets: list[int] = []
    for i, (x, y, *_) in enumerate(points):
        taken = [offsets[j] for j in range(i)
                 if abs(points[j][0] - x) / span_x < near and abs(points[j][1] - y) / span_y < near]
        offsets.append(max(taken) + step if taken else 4)
    return offsets


def frontier(summary: Sequence[dict], path, title: str = "speed-accuracy frontier") -> Path:
    """One panel per task: tokens/s (x) against accuracy (y), one labelled point per row, the
    Pareto front drawn as a line."""
    plt = _pyplot()
    tasks = list(dict.fromkeys(s["task"] for s in summary))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.0 * len(tasks), 4.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        pts = [(s["tokens_per_second"], 100 * s["accuracy"], s["preset"]) for s in summary if s["task"] == task]
        for (x, y, name), dy in zip(pts, label_offsets(pts)):
            ax.scatter([x], [y])
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, dy), fontsize=8)
        front = pareto_front(pts)
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="gray", linewidth=1)
        ax.set_xlabel("tokens / s")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
