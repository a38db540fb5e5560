"""`detection report` and `detection inspect --report`: a real job, bad inputs, exit codes."""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest
from report_browser import artifacts_dir, chromium, open_report
from report_folders import THRESHOLDS, hostile_folder
from square_model import square_image

from detection.commands.common import EXIT_OK, EXIT_USAGE
from detection.commands.inspect import main as inspect_main
from detection.commands.report import main as report_main
from detection.inspect.writer import iter_results
from detection.report import write_report
from detection.report.decisions import counts_at
from detection.report.folder import read_inspect_folder
from detection.report.synthetic import write_inspect_folder

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread: see conftest.py


def _images(root: Path, count: int) -> Path:
    rng = np.random.default_rng(4)
    root.mkdir(parents=True)
    for i in range(count):
        image, _ = square_image(rng, 64, 64, squares=i % 3 != 0)
        cv2.imwrite(str(root / f"img {i:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return root


def _changing_threshold(out: Path, job: float) -> float:
    """A threshold above ``job`` that passes the failed image with the lowest top score, and
    lies more than 5e-4 from every stored score: a rerun's float32 scores and the records'
    rounded ones then fall on the same side of it."""
    scores = sorted({d["score"] for r in iter_results(out) for d in r["detections"]})
    tops = sorted(
        {max(d["score"] for d in r["detections"]) for r in iter_results(out) if r["detections"]}
    )
    tops = [t for t in tops if t >= job]
    for low, high in zip(tops, tops[1:], strict=False):
        middle = round((low + high) / 2, 3)  # the sliders step by 0.001
        if min(abs(score - middle) for score in scores) > 5e-4:
            return middle
    raise AssertionError(f"no usable threshold between the failed images' scores {tops}")


def _inspect(checkpoint: Path, images: Path, out: Path, *extra: str) -> int:
    argv = [
        "--checkpoint", str(checkpoint), "--input", str(images), "--output", str(out),
        "--workers", "0", "--no-progress", "--report-threshold", "0.01", *extra,
    ]  # fmt: skip
    return inspect_main(argv)


def test_inspect_report_end_to_end_and_its_thresholds_file(
    tmp_path: Path, square_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    images = _images(tmp_path / "in", 12)
    out = tmp_path / "job"
    assert _inspect(square_checkpoint, images, out, "--report") == EXIT_OK
    index = out / "report" / "index.html"
    assert f"wrote {index}" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    records = list(iter_results(out))
    value = _changing_threshold(out, summary["thresholds"]["square"])
    with chromium() as browser, open_report(browser, index) as page:
        assert page.count("count-inspected") == summary["images"] == 12
        assert page.count("count-passed") == summary["passed"]
        assert page.count("count-failed") == summary["failed"]
        header = page.page.locator("#job-info").text_content()
        assert square_checkpoint.name in header and "fasterrcnn_resnet18_fpn" in header
        assert "calibrated (checkpoint)" in header
        used = page.set_threshold("square", value)
        assert used == value
        expected = counts_at(records, {"square": used}, summary["thresholds"])
        assert expected["failed"] < summary["failed"]
        assert page.count("count-failed") == expected["failed"]
        with page.page.expect_download() as info:
            page.page.get_by_test_id("download-thresholds").click()
        info.value.save_as(tmp_path / "thresholds.json")
        arguments = page.page.get_by_test_id("threshold-args").text_content()
        page.page.screenshot(path=str(artifacts_dir() / "report-inspect-job.png"), full_page=True)
        assert page.console_errors == []
    # The file and the arguments the page wrote are what `detection inspect` takes, and a rerun
    # at those thresholds fails the images the page said it would.
    for name, extra in {
        "file": ["--thresholds", str(tmp_path / "thresholds.json")],
        "args": shlex.split(arguments),
    }.items():
        rerun = tmp_path / name
        assert _inspect(square_checkpoint, images, rerun, *extra) == EXIT_OK
        again = json.loads((rerun / "summary.json").read_text())
        assert again["thresholds"] == {"square": used}
        assert again["failed"] == expected["failed"]


def test_report_command_writes_the_page_with_labels(tmp_path: Path, capsys) -> None:
    made = hostile_folder(tmp_path / "data", count=12)
    assert report_main([str(made["output"]), "--gt", str(made["gt"]), "--no-progress"]) == EXIT_OK
    report = made["output"] / "report"
    assert capsys.readouterr().out.strip() == f"wrote {report / 'index.html'}"
    assert {"index.html", "data.js", "report.js", "report.css", "pr_curves.png"} <= {
        p.name for p in report.iterdir()
    }
    assert len(list((report / "thumbs").glob("*.jpg"))) == 11  # one source image is missing
    # Written again: replaced whole, no temporary folder left beside it.
    assert report_main([str(made["output"]), "--no-progress"]) == EXIT_OK
    assert sorted(p.name for p in made["output"].iterdir() if p.name.startswith(".")) == []
    assert not (report / "pr_curves.png").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{tmp}"], "not an inspect folder (no job.json"),
        (["{tmp}/nowhere"], "not a folder"),
        (["{job}", "--images", "{tmp}"], "--images needs --gt"),
        (["{job}", "--gt", "{tmp}/missing.json"], "missing.json"),
        (["{job}", "--gt", "{other_gt}"], "has no category named 'dent'"),
        (["{job}", "--band", "2"], "band must be in 0..1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    job = tmp_path / "job"
    write_inspect_folder(job, [], THRESHOLDS)
    other_gt = tmp_path / "other.json"
    other_gt.write_text(
        json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "scratch"},
                    {"id": 3, "name": "stain"}]})
    )  # fmt: skip
    values = {"tmp": tmp_path, "job": job, "other_gt": other_gt}
    assert report_main([a.format(**values) for a in argv]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("detection report: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (job / "report").exists()


def test_a_broken_line_is_left_out_and_named(tmp_path: Path) -> None:
    good = hostile_folder(tmp_path / "data", count=4)["records"]
    broken = {"image": "a.png", "width": 1, "height": 1, "decision": "pass",
              "detections": [{"score": 0.5}]}  # fmt: skip
    summary = write_inspect_folder(tmp_path / "job", [*good, broken], THRESHOLDS)
    folder = read_inspect_folder(tmp_path / "job")
    assert [r["image"] for r in folder.records] == [r["image"] for r in good]
    assert summary["images"] == len(good)
    (bad,) = folder.bad_lines
    assert "part-00000-00000.jsonl line 5" in bad
    write_report(tmp_path / "job", progress=False)
    data = (tmp_path / "job" / "report" / "data.js").read_text()
    assert '"badLines":1' in data


def test_benchmark_script_runs_on_a_small_job(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_report", SCRIPTS / "bench_report.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert (
        bench.main(
            ["--sizes", "30", "--repeats", "1", "--thumbnail-images", "1", "--out", str(out)]
        )
        == 0
    )
    (row,) = json.loads(out.read_text())["sizes"]
    assert row["images"] == 30 and row["page_MB"] > 0 and row["load_ms"] > 0
