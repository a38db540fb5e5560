"""The HTML report at 1k, 10k and 100k inspected images: page bytes, write, load and filter times.

Synthetic result records (no model: detection/report/synthetic.py writes them with the inspect
job's own writers), about 1.5 detections an image over three classes. Times are measured in
Debian's Chromium (headless, through Playwright): load is navigation start to the page's ready
marker; a filter or slider move is the synchronous recompute + render after the input event,
forced layout included. The peer is an empty page loaded in the same browser. Thumbnail sizes
are measured on generated 1600x1200 camera-like images.

    python scripts/bench_report.py --out results/bench_report.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from detection.report import write_report
from detection.report.synthetic import detection, record, write_inspect_folder
from detection.report.thumbs import write_copies

THRESHOLDS = {"scratch": 0.5, "dent": 0.6, "stain": 0.45}
SIZES = (1000, 10000, 100000)

MEASURE = """([testid, value]) => {
  const el = document.querySelector('[data-testid="' + testid + '"]');
  const start = performance.now();
  el.value = value;
  el.dispatchEvent(new Event('input', {bubbles: true}));
  document.body.offsetHeight;  // force layout of what was rendered
  return performance.now() - start;
}"""


def synthetic_records(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` result records of 0-3 detections, paths like a factory's folders."""
    rng = np.random.default_rng(seed)
    names = list(THRESHOLDS)
    records = []
    for i in range(count):
        dets = []
        for _ in range(int(rng.choice(4, p=[0.3, 0.4, 0.2, 0.1]))):
            name = names[int(rng.integers(0, 3))]
            x, y = rng.uniform(0, 1400, 2)
            score = float(rng.beta(1.2, 3.0))
            dets.append(detection(name, score, [x, y, x + 80, y + 60], THRESHOLDS[name]))
        dets.sort(key=lambda d: -d["score"])
        path = f"/data/line{i % 4}/2026-12-03/cam{i % 2}/part-{i:07d}.png"
        records.append(record(path, 1600, 1200, dets))
    return records


def folder_bytes(folder: Path, exclude: tuple[str, ...] = ()) -> int:
    """Bytes of the files under ``folder`` outside the ``exclude`` subfolders."""
    return sum(
        p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] not in exclude
    )


def thumbnail_sizes(work: Path, count: int = 12) -> dict[str, float]:
    """Mean JPEG bytes of a thumbnail and a preview of 1600x1200 camera-like images, and the
    time to write both from the source PNG."""
    rng = np.random.default_rng(1)
    out = work / "thumbs-bench"
    (out / "thumbs").mkdir(parents=True)
    (out / "full").mkdir()
    seconds = []
    for i in range(count):
        yy, xx = np.mgrid[0:1200, 0:1600]
        base = (80 + 60 * np.sin(xx / 170.0 + i) + 40 * np.cos(yy / 130.0)).astype(np.float32)
        image = np.stack([base, base * 0.9, base * 0.8], axis=-1)
        image += rng.normal(0, 4, image.shape)
        for _ in range(20):
            x, y = rng.integers(0, 1500), rng.integers(0, 1100)
            image[y : y + 60, x : x + 90] = rng.uniform(0, 255, 3)
        path = out / f"src{i}.png"
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8))
        start = time.perf_counter()
        write_copies(str(path), i, out)
        seconds.append(time.perf_counter() - start)
    thumbs = [p.stat().st_size for p in (out / "thumbs").glob("*.jpg")]
    previews = [p.stat().st_size for p in (out / "full").glob("*.jpg")]
    return {
        "thumb_kB": statistics.mean(thumbs) / 1e3,
        "preview_kB": statistics.mean(previews) / 1e3,
        "copies_ms_per_image": 1e3 * statistics.median(seconds),  # decode + both JPEGs
    }


def measure_page(browser, index: Path, repeats: int) -> dict[str, float]:
    """Load time, and the times of a class filter and a slider move (medians of ``repeats``)."""
    loads, filters, sliders = [], [], []
    for r in range(repeats):
        page = browser.new_page()
        page.goto(index.resolve().as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=120000)
        loads.append(float(page.get_attribute("body", "data-ready-ms")))
        filters.append(page.evaluate(MEASURE, ["filter-class", str(r % 3)]))
        filters.append(page.evaluate(MEASURE, ["filter-class", ""]))
        sliders.append(page.evaluate(MEASURE, ["threshold-scratch", str(0.3 + 0.05 * r)]))
        sliders.append(page.evaluate(MEASURE, ["threshold-all", str(0.55 + 0.05 * r)]))
        page.close()
    return {
        "load_ms": statistics.median(loads),
        "filter_ms": statistics.median(filters),
        "slider_ms": statistics.median(sliders),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print a table and write the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench_report.json"))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--thumbnail-images", type=int, default=12, help="for the JPEG sizes")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        print("bench_report: no chromium on PATH (.ci/parts/chromium.sh)", file=sys.stderr)
        return 2
    figures: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "sizes": []}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        work = Path(tmp)
        figures["thumbnails"] = thumbnail_sizes(work, args.thumbnail_images)
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        empty = work / "empty.html"
        empty.write_text(
            "<!doctype html><body><script>document.body.setAttribute('data-ready-ms',"
            "performance.now().toFixed(1));document.body.setAttribute('data-ready','1')</script>"
        )
        page = browser.new_page()
        page.goto(empty.as_uri())
        figures["empty_page_load_ms"] = float(page.get_attribute("body", "data-ready-ms"))
        page.close()
        for count in args.sizes:
            output = work / f"job-{count}"
            records = synthetic_records(count)
            write_inspect_folder(output, records, THRESHOLDS, shard_lines=10000)
            start = time.perf_counter()
            index = write_report(output, max_images=0, progress=False)
            write_s = time.perf_counter() - start
            report = index.parent
            row = {
                "images": count,
                "detections": sum(len(r["detections"]) for r in records),
                "write_s": round(write_s, 2),
                "page_MB": round(folder_bytes(report, ("records", "thumbs", "full")) / 1e6, 3),
                "data_js_MB": round((report / "data.js").stat().st_size / 1e6, 3),
                "records_MB": round(folder_bytes(report / "records") / 1e6, 3),
                **{k: round(v, 1) for k, v in measure_page(browser, index, args.repeats).items()},
            }
            figures["sizes"].append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(output)
        browser.close()
    figures["thumbnails"] = {k: round(v, 1) for k, v in figures["thumbnails"].items()}
    print(json.dumps({k: v for k, v in figures.items() if k != "sizes"}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
