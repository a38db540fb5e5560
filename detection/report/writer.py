"""`write_report`: an inspect folder -> OUTPUT/report/ (index.html, data.js, thumbnails, records).

The folder is built under a temporary name beside the final one and renamed into place, so a
reader sees the old report or the new one, and a failure leaves no partial folder behind.
"""

from __future__ import annotations

import json
import shutil
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from tqdm import tqdm

from detection.report.folder import InspectFolder, read_inspect_folder
from detection.report.ground_truth import join_labels, save_label_plots
from detection.report.payload import build_payload
from detection.report.thumbs import write_all

REPORT_DIR = "report"
DATA_FILE = "data.js"
RECORDS_DIR = "records"
STATIC_FILES = ("index.html", "rules.js", "report.js", "report.css")
DEFAULT_BAND = 0.1  # "borderline": a detection this far or less under its class threshold
# Images with a thumbnail and preview, highest score first: about 40 kB each (bench_report.py).
DEFAULT_MAX_IMAGES = 1000
RECORDS_PER_CHUNK = 500  # raw records per file the page loads when an image is opened


def _script(variable: str, value: Any) -> str:
    """A JavaScript file that assigns ``value`` (as JSON, ASCII only) to ``variable``."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return f"{variable}={text};\n"


def images_to_copy(folder: InspectFolder, limit: int) -> list[int]:
    """Indices of the records that get a thumbnail: those with detections, highest score first
    (the gallery's candidates at any threshold), then the others in order, up to ``limit``."""
    top = [max((d["score"] for d in r["detections"]), default=-1.0) for r in folder.records]
    order = sorted(range(len(top)), key=lambda i: (-top[i], i))
    return order[: max(0, limit)]


def _write_records(folder: InspectFolder, out_dir: Path, chunk: int) -> None:
    (out_dir / RECORDS_DIR).mkdir()
    for k, start in enumerate(range(0, len(folder.records), chunk)):
        text = "window.REPORT_RECORDS=window.REPORT_RECORDS||{};" + _script(
            f"window.REPORT_RECORDS[{k}]", folder.records[start : start + chunk]
        )
        (out_dir / RECORDS_DIR / f"{k}.js").write_text(text, encoding="ascii")


def _copy_static(out_dir: Path) -> None:
    static = resources.files("detection.report") / "static"
    for name in STATIC_FILES:
        (out_dir / name).write_bytes((static / name).read_bytes())


def _replace_folder(built: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}-old-{uuid.uuid4().hex}")
    if final.exists():
        final.rename(old)
    built.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def write_report(
    output: str | Path,
    *,
    gt: str | Path | None = None,
    images: str | Path | None = None,
    iou: float = 0.5,
    band: float = DEFAULT_BAND,
    max_images: int = DEFAULT_MAX_IMAGES,
    progress: bool = True,
) -> Path:
    """Write ``output``/report/ for the inspect folder ``output``; returns index.html's path.

    Args:
        output: an inspect output folder (job.json, summary.json, results/).
        gt: a COCO ground-truth json of (some of) the inspected images: adds escapes, false
            rejects, per-class P/R/F1 and the evaluator's PR/F1 plots.
        images: the folder ``gt``'s file_name entries are relative to (default: the json's).
        iou: the IoU at which a detection matches a ground truth.
        band: how far under its class threshold a detection makes a part borderline.
        max_images: how many images get a thumbnail and preview (highest score first).
        progress: show a progress bar while thumbnails are written.

    Raises:
        InvalidInputError: ``output`` is not an inspect folder, or the ground truth is bad.
    """
    if not 0 <= band <= 1:
        raise ValueError(f"band must be in 0..1, got {band}")
    folder = read_inspect_folder(output)
    labels = None if gt is None else join_labels(folder, gt, images, iou)
    final = folder.path / REPORT_DIR
    built = folder.path / f".{REPORT_DIR}-{uuid.uuid4().hex}"
    built.mkdir()
    try:
        wanted = images_to_copy(folder, max_images)
        with tqdm(
            total=len(wanted), unit="img", desc="report thumbnails", disable=not progress
        ) as bar:
            status = write_all([r["image"] for r in folder.records], wanted, built, bar.update)
        plots = save_label_plots(labels, built) if labels is not None else []
        payload = build_payload(
            folder, status, band=band, chunk=RECORDS_PER_CHUNK, labels=labels, plots=plots
        )
        (built / DATA_FILE).write_text(_script("window.REPORT_DATA", payload), encoding="ascii")
        _write_records(folder, built, RECORDS_PER_CHUNK)
        _copy_static(built)
        _replace_folder(built, final)
    except BaseException:
        shutil.rmtree(built, ignore_errors=True)
        raise
    return final / "index.html"
