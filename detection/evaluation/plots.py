"""PNG plots of an evaluation: PR curves, F1 against threshold, confusion matrix."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from detection.evaluation.operating_point import ClassCurve

# Beyond this many classes a legend or cell labels hide the plot they describe.
MAX_LEGEND_CLASSES = 20
MAX_ANNOTATED_CLASSES = 20


def _plottable(curves: Mapping[str, ClassCurve]) -> dict[str, ClassCurve]:
    """The classes with ground truth and detections: the others have no curve to draw."""
    return {
        name: curve
        for name, curve in curves.items()
        if len(curve.thresholds) > 0 and curve.num_gt > 0
    }


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    # Figure.savefig uses the Agg canvas directly: no pyplot, no global backend switch.
    fig.savefig(path, dpi=120)
    return path


def _per_class_axes(
    curves: Mapping[str, ClassCurve], size: tuple[float, float]
) -> tuple[Figure, Axes, dict[str, ClassCurve]]:
    fig = Figure(figsize=size)
    return fig, fig.subplots(), _plottable(curves)


def _grid_and_legend(ax: Axes, plotted: int, classes: int) -> None:
    ax.grid(alpha=0.3)
    if plotted and classes <= MAX_LEGEND_CLASSES:
        ax.legend(fontsize="small", loc="lower left")


def plot_pr_curves(
    curves: Mapping[str, ClassCurve], thresholds: Mapping[str, float], iou: float, path: Path
) -> Path:
    """Precision against recall per class, with each class's operating point marked."""
    return _save(pr_curves_figure(curves, thresholds, iou), path)


def pr_curves_figure(
    curves: Mapping[str, ClassCurve], thresholds: Mapping[str, float], iou: float
) -> Figure:
    """The figure of `plot_pr_curves` (also drawn into TensorBoard at each validation)."""
    fig, ax, plotted = _per_class_axes(curves, (7, 6))
    for name, curve in plotted.items():
        (line,) = ax.plot(curve.recall, curve.precision, drawstyle="steps-post", label=name)
        at = np.flatnonzero(curve.thresholds >= thresholds[name])
        if len(at):
            ax.plot(curve.recall[at[-1]], curve.precision[at[-1]], "o", color=line.get_color())
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02))
    ax.set_title(f"Precision-recall per class at IoU {iou:g} (dots: operating point)")
    _grid_and_legend(ax, len(plotted), len(curves))
    fig.tight_layout()
    return fig


def plot_f1_curves(
    curves: Mapping[str, ClassCurve], thresholds: Mapping[str, float], path: Path
) -> Path:
    """F1 against score threshold per class."""
    fig, ax, plotted = _per_class_axes(curves, (7, 5))
    for name, curve in plotted.items():
        ax.plot(curve.thresholds, curve.f1, drawstyle="steps-pre", label=name)
    for value in sorted(set(thresholds.values())):
        ax.axvline(value, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="score threshold", ylabel="F1", ylim=(0, 1.02))
    ax.set_title("F1 against score threshold (dashed: thresholds in use)")
    _grid_and_legend(ax, len(plotted), len(curves))
    return _save(fig, path)


def plot_confusion_matrix(confusion: Mapping, path: Path) -> Path:
    """The (K+1)x(K+1) confusion matrix with counts (rows ground truth, columns predicted)."""
    labels = list(confusion["labels"])
    matrix = np.asarray(confusion["matrix"], dtype=np.int64)
    size = max(5.0, 0.45 * len(labels) + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(np.log1p(matrix), cmap="Blues")
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=90, fontsize="small")
    ax.set_yticks(ticks, labels, fontsize="small")
    ax.set(
        xlabel="predicted", ylabel="ground truth", title="Confusion matrix at the operating point"
    )
    if len(labels) <= MAX_ANNOTATED_CLASSES + 1:
        limit = np.log1p(matrix).max() / 2 if matrix.size else 0
        for (row, col), count in np.ndenumerate(matrix):
            colour = "white" if np.log1p(count) > limit else "black"
            ax.text(col, row, str(count), ha="center", va="center", fontsize=8, color=colour)
    return _save(fig, path)


def operating_point(report: Mapping) -> tuple[dict[str, float], float]:
    """A report's threshold per class and the IoU its matches used."""
    op = report["operating_point"]
    thresholds = {name: stats["threshold"] for name, stats in op["per_class"].items()}
    return thresholds, op["iou_threshold"]


def save_plots(
    curves: Mapping[str, ClassCurve], report: Mapping, out_dir: str | Path
) -> list[Path]:
    """Write pr_curves.png, f1_vs_threshold.png and confusion_matrix.png; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    thresholds, iou = operating_point(report)
    return [
        plot_pr_curves(curves, thresholds, iou, out_dir / "pr_curves.png"),
        plot_f1_curves(curves, thresholds, out_dir / "f1_vs_threshold.png"),
        plot_confusion_matrix(
            report["image_level"]["confusion_matrix"], out_dir / "confusion_matrix.png"
        ),
    ]
