"""The review report: what the reviewer changed, and what it says about the model and the lot.

On the reviewed slice: the precision of the job's rejects (of the failed images reviewed, the
share the reviewer also fails) and the escape rate (of the audited passed images, the share the
reviewer fails), each with a 95 % Wilson interval (scipy's binomtest), and the escapes that rate
implies for the whole lot's passed images at the audit's sampling rate.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scipy.stats import binomtest

from detection.core.run_folder import write_atomic
from detection.review.diff import KINDS, ImageDiff
from detection.review.manifest import Manifest

REPORT_JSON = "review_report.json"
REPORT_MD = "review_report.md"


def proportion(successes: int, trials: int) -> dict[str, Any]:
    """successes / trials with its 95 % Wilson interval (all None when there are no trials)."""
    if trials == 0:
        return {"k": 0, "n": 0, "rate": None, "low": None, "high": None}
    interval = binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    return {
        "k": successes, "n": trials, "rate": round(successes / trials, 4),
        "low": round(float(interval.low), 4), "high": round(float(interval.high), 4),
    }  # fmt: skip


def build_report(
    manifest: Manifest, diffs: Sequence[ImageDiff], statuses: dict[str, int], merged: dict[str, int]
) -> dict[str, Any]:
    """The report's numbers. `statuses` counts the tasks by status (and left-out images)."""
    kinds = Counter()
    per_class: dict[str, Counter] = {}
    for diff in diffs:
        for box in diff.boxes:
            kinds[box["kind"]] += 1
            name = box["model_class"] if box["kind"] == "removed" else box["class_name"]
            per_class.setdefault(name, Counter())[box["kind"]] += 1
    rejects = [d for d in diffs if d.decision == "fail"]
    audited = [d for d in diffs if "audit" in d.reasons and d.decision == "pass"]
    escape = proportion(sum(d.verdict == "fail" for d in audited), len(audited))
    passed = manifest.lot["passed"]
    lot_escapes = None
    if escape["n"]:
        lot_escapes = {
            "passed_images": passed,
            "sampling_rate": round(escape["n"] / passed, 4) if passed else None,
            "estimate": round(escape["rate"] * passed, 1),
            "low": round(escape["low"] * passed, 1),
            "high": round(escape["high"] * passed, 1),
        }
    return {
        "export_id": manifest.export_id,
        "model_version": manifest.model_version,
        "tasks": statuses,
        "reviewed_images": len(diffs),
        "verdict_differs": sum(d.differs for d in diffs),
        "false_rejects": sum(d.decision == "fail" and d.verdict == "pass" for d in diffs),
        "escapes_found": sum(d.decision == "pass" and d.verdict == "fail" for d in diffs),
        "boxes": {k: kinds[k] for k in KINDS},
        "boxes_per_class": {
            name: {k: c[k] for k in KINDS} for name, c in sorted(per_class.items())
        },
        "reject_precision": proportion(sum(d.verdict == "fail" for d in rejects), len(rejects)),
        "audit_escape_rate": escape,
        "lot_escapes": lot_escapes,
        "lot": manifest.lot,
        "merge": merged,
    }


def _rate(p: dict[str, Any]) -> str:
    if not p["n"]:
        return "n/a (nothing reviewed)"
    return f"{p['rate']:.3f} ({p['k']}/{p['n']}; 95 % interval {p['low']:.3f}-{p['high']:.3f})"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    tasks = ", ".join(f"{k} {v}" for k, v in report["tasks"].items())
    lines = [
        "# Review report", "",
        f"Model `{report['model_version']}`, export `{report['export_id']}`.", "",
        f"Tasks: {tasks}. Skipped, unanswered and missing images are left out of every figure.",
        "",
        f"Reviewed images: {report['reviewed_images']}; the reviewer's verdict differs from the "
        f"job's on {report['verdict_differs']} ({report['false_rejects']} false rejects, "
        f"{report['escapes_found']} escapes).", "",
        "| class | " + " | ".join(KINDS) + " |", "| --- |" + " ---: |" * len(KINDS),
    ]  # fmt: skip
    for name, counts in report["boxes_per_class"].items():
        lines.append(f"| {name} | " + " | ".join(str(counts[k]) for k in KINDS) + " |")
    lines.append("| **all** | " + " | ".join(str(report["boxes"][k]) for k in KINDS) + " |")
    lines += [
        "",
        f"- Precision of the job's rejects (reviewed slice): {_rate(report['reject_precision'])}",
        f"- Escape rate in the audit sample: {_rate(report['audit_escape_rate'])}",
    ]
    lot = report["lot_escapes"]
    if lot:
        lines.append(
            f"- Escapes in the whole lot's {lot['passed_images']} passed images (audit sampled "
            f"{lot['sampling_rate']:.1%} of them): about {lot['estimate']:g} "
            f"(95 % interval {lot['low']:g}-{lot['high']:g})"
        )
    lines.append("")
    return "\n".join(lines)


def write_report(folder: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write review_report.json and review_report.md atomically."""
    json_path, md_path = folder / REPORT_JSON, folder / REPORT_MD
    write_atomic(json_path, json.dumps(report, indent=2) + "\n")
    write_atomic(md_path, markdown(report))
    return json_path, md_path
