"""The HTML report in a real browser (system Chromium + Playwright), on folders of known content."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser
from report_browser import OpenedPage, artifacts_dir, chromium, open_report
from report_folders import MISSING, THRESHOLDS, hostile_folder

from detection.core.thresholds import Thresholds
from detection.evaluation.evaluator import evaluate_detections
from detection.report import write_report
from detection.report.decisions import counts_at, image_fails, is_borderline
from detection.report.folder import read_inspect_folder
from detection.report.ground_truth import image_level_at, join_labels
from detection.report.synthetic import detection, record, write_inspect_folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict:
    made = hostile_folder(tmp_path_factory.mktemp("report"))
    made["index"] = write_report(made["output"], gt=made["gt"], progress=False)
    return made


@pytest.fixture()
def page(browser: Browser, job: dict) -> Iterator[OpenedPage]:
    with open_report(browser, job["index"]) as opened:
        yield opened
        assert opened.console_errors == []
        report_dir = job["index"].parent.resolve().as_uri() + "/"
        outside = [u for u in opened.requests if not u.startswith(report_dir)]
        assert [u for u in outside if not u.startswith(("blob:", "data:"))] == []


def test_counts_equal_summary_and_page_stays_in_its_folder(page: OpenedPage, job: dict) -> None:
    summary = job["summary"]
    assert page.count("count-inspected") == summary["images"] == 71
    assert page.count("count-passed") == summary["passed"]
    assert page.count("count-failed") == summary["failed"]
    assert page.count("count-errors") == summary["errors"] == 1
    for name, counts in summary["classes"].items():
        assert (
            int(page.page.get_by_test_id(f"failed-class-{name}").text_content())
            == counts["failed_images"]
        )
    # Every thumbnail on the page decoded; the missing source shows a placeholder instead.
    widths = page.page.eval_on_selector_all(
        "[data-testid=part] img", "imgs => imgs.map(i => i.complete && i.naturalWidth)"
    )
    assert widths and all(w > 0 for w in widths)
    page.page.screenshot(path=str(artifacts_dir() / "report-page.png"), full_page=True)


def test_gallery_holds_failed_and_borderline_parts_largest_score_first(
    page: OpenedPage, job: dict
) -> None:
    records = job["records"]
    wanted = [
        r for r in records if image_fails(r, THRESHOLDS, THRESHOLDS) or is_borderline(r, THRESHOLDS, THRESHOLDS, 0.1)
    ]  # fmt: skip
    shown = page.shown_images()
    assert sorted(shown) == sorted(r["image"] for r in wanted)
    assert len(page.page.get_by_test_id("part").all()) <= 48  # paged: only one page in the DOM
    by_image = {r["image"]: r for r in records}
    failed = [i for i in shown if image_fails(by_image[i], THRESHOLDS, THRESHOLDS)]
    tops = [max(d["score"] for d in by_image[i]["detections"] if d["fail"]) for i in failed]
    assert tops == sorted(tops, reverse=True)


@pytest.mark.parametrize("name", ["scratch", "dent", "stain"])
def test_class_filter_shows_exactly_that_class_failed_images(
    page: OpenedPage, job: dict, name: str
) -> None:
    page.select("filter-decision", "fail")
    page.select("filter-class", str(list(THRESHOLDS).index(name)))
    expected = {
        r["image"]
        for r in job["records"]
        if any(d["fail"] and d["class_name"] == name for d in r["detections"])
    }
    assert set(page.shown_images()) == expected
    assert (len(expected) == 0) == (name == "stain")


@pytest.mark.parametrize(
    "moves",
    [
        {"scratch": 0.3},
        {"dent": 0.85},
        {"scratch": 0.72, "dent": 0.15},
        {"stain": 0.05, "dent": 0.6},  # dent back at its job value: the stored decisions again
        {"all": 0.45},
        {"all": 0.999},
    ],
)
def test_sliders_give_the_python_rules_counts(page: OpenedPage, job: dict, moves: dict) -> None:
    used = {}
    for name, value in moves.items():
        used[name] = page.set_threshold(name, value)
        assert used[name] == pytest.approx(value, abs=1e-12)
    value = Thresholds(used.get("all"), {k: v for k, v in used.items() if k != "all"})
    expected = counts_at(job["records"], value, THRESHOLDS)
    assert page.count("count-passed") == expected["passed"]
    assert page.count("count-failed") == expected["failed"]
    for name, failed in expected["by_class"].items():
        assert int(page.page.get_by_test_id(f"failed-class-{name}").text_content()) == failed
    moved = expected["failed"] - job["summary"]["failed"]
    delta = page.page.get_by_test_id("delta").text_content()
    assert (f"{abs(moved)} rejected" in delta) == (moved != 0)
    # With labels: escapes and false rejects as the evaluator counts them at those thresholds.
    folder = read_inspect_folder(job["output"])
    labels = join_labels(folder, job["gt"], None)
    resolved = Thresholds(None, THRESHOLDS).updated(value).resolve(list(THRESHOLDS))
    level = image_level_at(folder, labels, resolved)
    assert page.count("count-escapes") == level["escapes"]
    assert page.count("count-false-rejects") == level["false_rejects"]
    # And per-class P/R/F1 as `detection evaluate` reports them.
    report = evaluate_detections(
        labels.gt, labels.detections(folder), score_threshold=resolved
    ).report["operating_point"]["per_class"]
    rows = page.page.locator("#threshold-table tbody tr")
    for k, name in enumerate(THRESHOLDS):
        cells = rows.nth(k).locator("td.gt-col").all_text_contents()
        stats = report[name]
        assert [float(c) for c in cells] == pytest.approx(
            [stats["precision"], stats["recall"], stats["f1"]], abs=5e-4
        )


def test_names_from_files_are_text_and_missing_images_get_a_placeholder(
    page: OpenedPage, job: dict
) -> None:
    dialogs: list[str] = []
    page.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.select("filter-decision", "all")
    shown = set(page.shown_images())
    assert {r["image"] for r in job["records"] if r["detections"]} <= shown
    assert page.page.locator("[data-testid=part] script").count() == 0
    assert page.page.locator("text=<script>alert(2)&amp;.png").count() == 1
    assert page.page.locator("text=défaut-é3.png").count() == 1
    assert page.page.locator("#errors td", has_text="bad <b>.png").count() == 1
    missing = job["records"][MISSING]["image"]
    if job["records"][MISSING]["detections"]:
        part = page.page.locator(f"[data-testid=part][data-index='{MISSING}']")
        assert part.get_attribute("data-image") == missing
        assert part.locator(".placeholder").text_content() == "source image unreadable"
    assert dialogs == []


def test_click_opens_full_image_with_every_detection_and_the_raw_record(
    page: OpenedPage, job: dict
) -> None:
    first = page.page.get_by_test_id("part").first
    image = first.get_attribute("data-image")
    first.click()
    page.page.wait_for_selector("#viewer[data-ready='1']")
    (shown,) = [r for r in job["records"] if r["image"] == image]
    assert json.loads(page.page.get_by_test_id("viewer-record").text_content()) == shown
    assert page.page.locator("#viewer-detections tbody tr").count() == len(shown["detections"])
    assert (
        page.page.locator("#viewer-image img").evaluate(
            "i => i.decode().then(() => i.naturalWidth)"
        )
        > 0
    )
    page.page.screenshot(path=str(artifacts_dir() / "report-viewer.png"))


def test_downloads_thresholds_and_selected_images(
    page: OpenedPage, job: dict, tmp_path: Path
) -> None:
    page.set_threshold("scratch", 0.25)
    with page.page.expect_download() as info:
        page.page.get_by_test_id("download-thresholds").click()
    path = tmp_path / "thresholds.json"
    info.value.save_as(path)
    chosen = json.loads(path.read_text())
    assert chosen == {"scratch": 0.25, "dent": 0.6, "stain": 0.4}
    page.select("filter-outcome", "false_reject")
    with page.page.expect_download() as info:
        page.page.get_by_test_id("download-list").click()
    listed = tmp_path / "list.txt"
    info.value.save_as(listed)
    folder = read_inspect_folder(job["output"])
    labels = join_labels(folder, job["gt"], None)
    resolved = Thresholds(None, THRESHOLDS).updated(chosen).resolve(list(THRESHOLDS))
    expected = {
        r["image"]
        for r, defective in zip(job["records"], labels.defective, strict=True)
        if defective is False and image_fails(r, resolved, THRESHOLDS)
    }
    assert set(listed.read_text(encoding="utf-8").splitlines()) == expected
    assert expected  # the test data has false rejects at this threshold


def test_errors_only_and_no_failed_part(browser: Browser, tmp_path: Path) -> None:
    errors = [
        {"image": f"/nowhere/{i}.png", "error": "missing", "type": "ImageReadError"}
        for i in range(3)
    ]
    write_inspect_folder(tmp_path / "errors", [], THRESHOLDS, errors=errors)
    clean = [
        record(f"/nowhere/ok{i}.png", 32, 32, [detection("dent", 0.1, [1, 1, 5, 5], 0.6)])
        for i in range(4)
    ]
    write_inspect_folder(tmp_path / "clean", clean, THRESHOLDS)
    for name, counts in {"errors": (3, 0, 0, 3), "clean": (4, 4, 0, 0)}.items():
        index = write_report(tmp_path / name, progress=False)
        with open_report(browser, index) as opened:
            shown = tuple(
                opened.count(f"count-{k}") for k in ("inspected", "passed", "failed", "errors")
            )
            assert shown == counts
            assert opened.page.get_by_test_id("gallery-empty").count() == 1
            assert opened.console_errors == []
