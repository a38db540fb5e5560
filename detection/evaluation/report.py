"""The evaluation report on disk (metrics.json) and on the terminal (rich tables)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from detection.evaluation.coco import METRIC_KEYS


def write_metrics_json(report: Mapping, path: str | Path) -> Path:
    """Write ``report`` as indented JSON (the 12 COCO numbers first) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: a NaN would make the file unreadable to strict JSON parsers.
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if value == -1:
        return "n/a"  # COCOeval's marker for "nothing to average"
    return f"{value:.{digits}f}"


def coco_table(report: Mapping) -> Table:
    """The 12 COCO numbers in two rows: precision, then recall."""
    table = Table(title="COCO box metrics", box=box.SIMPLE_HEAD)
    for key in METRIC_KEYS[:6]:
        table.add_column(key, justify="right")
    table.add_row(*(_fmt(report[k]) for k in METRIC_KEYS[:6]))
    table.add_row(*METRIC_KEYS[6:], style="bold")
    table.add_row(*(_fmt(report[k]) for k in METRIC_KEYS[6:]))
    return table


def class_table(report: Mapping) -> Table:
    """Per class: AP, AP50 and the operating-point counts, rates and suggested thresholds."""
    op = report["operating_point"]
    table = Table(
        title=f"Per class (operating point at IoU {op['iou_threshold']:g})", box=box.SIMPLE_HEAD
    )
    columns = ["class", "AP", "AP50", "thr", "TP", "FP", "FN", "P", "R", "F1", "best-F1 thr"]
    if op.get("target_recall") is not None:
        columns.append(f"thr@R{op['target_recall']:g}")
    table.add_column(columns[0], overflow="fold")
    for column in columns[1:]:
        table.add_column(column, justify="right", no_wrap=True)
    for name, stats in op["per_class"].items():
        ap = report["per_class"][name]
        row = [
            name,
            _fmt(ap["AP"]),
            _fmt(ap["AP50"]),
            _fmt(stats["threshold"], 2),
            str(stats["tp"]),
            str(stats["fp"]),
            str(stats["fn"]),
            _fmt(stats["precision"]),
            _fmt(stats["recall"]),
            _fmt(stats["f1"]),
            _fmt(stats["best_f1_threshold"]),
        ]
        if op.get("target_recall") is not None:
            row.append(_fmt(stats["target_recall_threshold"]))
        table.add_row(*row)
    overall = op["overall"]
    table.add_row(
        "all",
        _fmt(report["AP"]),
        _fmt(report["AP50"]),
        "",
        str(overall["tp"]),
        str(overall["fp"]),
        str(overall["fn"]),
        _fmt(overall["precision"]),
        _fmt(overall["recall"]),
        _fmt(overall["f1"]),
        "",
        *([""] if op.get("target_recall") is not None else []),
        style="bold",
    )
    return table


def image_table(report: Mapping) -> Table:
    """Image-level pass/fail: defective images caught and escaped, false rejects."""
    level = report["image_level"]
    table = Table(
        title="Image level (an image fails when any detection reaches its threshold)",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("")
    table.add_column("images", justify="right")
    table.add_column("rate", justify="right")
    table.add_row(
        "defective, failed (caught)",
        str(level["defective_failed"]),
        _fmt(level["defective_recall"]),
    )
    table.add_row("defective, passed (escapes)", str(level["escapes"]), _fmt(level["escape_rate"]))
    table.add_row(
        "defect-free, failed (false rejects)",
        str(level["false_rejects"]),
        _fmt(level["false_reject_rate"]),
    )
    table.add_row("all images", str(level["images"]), "")
    return table


def print_report(report: Mapping, console: Console | None = None) -> None:
    """Print the COCO, per-class and image-level tables."""
    # Piped output has no terminal width; keep the per-class table on one line per class.
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    console.print(coco_table(report))
    console.print(class_table(report))
    console.print(image_table(report))
