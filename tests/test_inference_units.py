"""Inference building blocks without a model: discovery, sharding, tiling, merging, writers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from square_model import make_meta

from detection.core.errors import DetectionError, InvalidInputError, OutputError, WeightsError
from detection.core.thresholds import DECISION_DEFAULT, Thresholds
from detection.inference.draw import draw_boxes
from detection.inference.predictor import resolve_precision
from detection.inference.tiling import merge_detections, tile_windows
from detection.inspect.records import error_problem, result_problem
from detection.inspect.sources import discover_inputs, shard_items
from detection.inspect.writer import (
    JsonlAppender,
    RankLock,
    ShardedJsonlWriter,
    drop_bad_lines,
    iter_records,
    read_sound,
    repair_tail,
)
from detection.models.checkpoint import FORMAT_VERSION, CheckpointMeta

pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread: see conftest.py


def _touch(path: Path, data: bytes = b"x") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def test_discover_folder_recursive_sorted_filtered(tmp_path: Path) -> None:
    root = tmp_path / "in"
    b = _touch(root / "b.PNG")
    a = _touch(root / "sub" / "deeper" / "a.jpg")
    _touch(root / "notes.txt")
    _touch(root / ".hidden.jpg")
    _touch(root / ".cache" / "c.jpg")
    _touch(root / "out" / "failed" / "drawn.jpg")  # the job's own output inside the input
    found = discover_inputs([root], exclude=[root / "out"])
    assert found == sorted([a, b])


def test_discover_glob_list_and_file(tmp_path: Path) -> None:
    a = _touch(tmp_path / "imgs" / "a.png")
    b = _touch(tmp_path / "imgs" / "b.png")
    c = _touch(tmp_path / "other" / "c.bmp")
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\n\nother/c.bmp\n" + f"{a}\n")  # relative to the list file
    found = discover_inputs([str(tmp_path / "imgs" / "*.png"), listing, b])
    assert found == sorted({a, b, c})  # duplicates collapse


@pytest.mark.parametrize("spec", ["missing_dir", "nothing/*.png"])
def test_discover_bad_spec_names_it(tmp_path: Path, spec: str) -> None:
    with pytest.raises(InvalidInputError, match="missing_dir|nothing"):
        discover_inputs([str(tmp_path / spec)])


@given(
    names=st.lists(st.text(min_size=1, max_size=12), max_size=60, unique=True),
    world=st.integers(1, 7),
)
def test_shards_partition_the_inputs(names: list[str], world: int) -> None:
    shards = [shard_items(names, rank, world) for rank in range(world)]
    flat = [n for shard in shards for n in shard]
    assert sorted(flat) == sorted(names)  # every item exactly once over the ranks
    for shard in shards:
        assert shard == [n for n in names if n in set(shard)]  # order kept


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 700),
    height=st.integers(1, 700),
    tile=st.integers(16, 256),
    overlap=st.floats(0.0, 0.75),
)
def test_tiles_cover_the_image_with_overlap(
    width: int, height: int, tile: int, overlap: float
) -> None:
    windows = tile_windows(width, height, tile, overlap)
    covered = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in windows:
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert x1 - x0 == min(tile, width) and y1 - y0 == min(tile, height)
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    xs = sorted({w[0] for w in windows})
    # Neighbouring columns overlap by at least `overlap` of a tile (rounded down to pixels).
    for left, right in zip(xs, xs[1:], strict=False):
        assert left + tile - right >= int(tile * overlap) - 1


def test_merge_shifts_and_suppresses_duplicates() -> None:
    windows = [(0, 0, 64, 64), (48, 0, 112, 64)]
    # The same object seen by both windows, and a second class at the same place.
    boxes = [
        torch.tensor([[50.0, 10, 60, 20], [50, 10, 60, 20]]),
        torch.tensor([[2.0, 10, 12, 20]]),
    ]
    scores = [torch.tensor([0.9, 0.6]), torch.tensor([0.8])]
    labels = [torch.tensor([1, 2]), torch.tensor([1])]
    out_boxes, out_scores, out_labels = merge_detections(boxes, scores, labels, windows, 0.5, 100)
    assert out_boxes.tolist() == [[50.0, 10, 60, 20], [50.0, 10, 60, 20]]
    assert out_scores.tolist() == pytest.approx([0.9, 0.6])
    assert out_labels.tolist() == [1, 2]  # class-wise: the label-2 box is not suppressed


def test_repair_tail_and_iter_records(tmp_path: Path) -> None:
    path = tmp_path / "part.jsonl"
    path.write_bytes(b'{"image": "a"}\nnot json\n{"image": "b"}\n{"image": "c", "det')
    assert [r["image"] for r in iter_records(path)] == ["a", "b"]  # torn and garbled lines skipped
    assert repair_tail(path) == len(b'{"image": "c", "det')
    assert path.read_bytes().endswith(b'{"image": "b"}\n')
    assert repair_tail(path) == 0
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(b'{"image": "only half')
    assert repair_tail(torn) == len(b'{"image": "only half') and torn.read_bytes() == b""


def test_sharded_writer_rotates_and_resumes_after_torn_line(tmp_path: Path) -> None:
    writer = ShardedJsonlWriter(tmp_path, rank=1, max_lines=3)
    writer.write([{"image": str(i)} for i in range(4)])
    writer.close()
    last = tmp_path / "part-00001-00001.jsonl"
    with open(last, "ab") as f:
        f.write(b'{"image": "torn')  # as if killed in the middle of a write
    writer = ShardedJsonlWriter(tmp_path, rank=1, max_lines=3)
    writer.write([{"image": str(i)} for i in range(4, 7)])
    writer.close()
    files = sorted(tmp_path.glob("part-*.jsonl"))
    assert [f.name for f in files] == [
        "part-00001-00000.jsonl",
        "part-00001-00001.jsonl",
        "part-00001-00002.jsonl",
    ]
    images = [r["image"] for f in files for r in iter_records(f)]
    assert images == [str(i) for i in range(7)]
    assert all(f.read_bytes().endswith(b"\n") for f in files)
    assert all(json.loads(line) for f in files for line in f.read_text().splitlines())


def test_appender_counts_existing_lines(tmp_path: Path) -> None:
    path = tmp_path / "errors.jsonl"
    path.write_bytes(b'{"image": "a"}\n{"ima')
    appender = JsonlAppender(path)
    assert appender.lines == 1
    appender.write([{"image": "b"}])
    appender.close()
    assert [r["image"] for r in iter_records(path)] == ["a", "b"]


def test_rank_lock_is_exclusive(tmp_path: Path) -> None:
    with RankLock(tmp_path, 0):
        with pytest.raises(DetectionError, match="another process"):
            with RankLock(tmp_path, 0):
                pass
        with RankLock(tmp_path, 1):  # other ranks are independent
            pass
    with RankLock(tmp_path, 0):  # released on exit
        pass


def test_thresholds_from_the_command_line() -> None:
    assert Thresholds.parse(None) is None
    assert Thresholds.parse(["0.7"]) == Thresholds(0.7)
    assert Thresholds.parse(["square=0.3"]) == Thresholds(None, {"square": 0.3})
    assert Thresholds.parse(["0.7", "square=0.3"]) == Thresholds(0.7, {"square": 0.3})
    # A recipe holds the same strings; numbers and mappings are taken as they are.
    assert Thresholds.coerce(["0.7", "square=0.3"]) == Thresholds(0.7, {"square": 0.3})
    assert Thresholds.coerce(0.4) == Thresholds(0.4) and Thresholds.coerce(None) == Thresholds()
    for bad in ("square=high", "=0.3", "1.5"):
        with pytest.raises(ValueError, match="--threshold"):
            Thresholds.parse([bad])


def test_overrides_of_a_checkpoints_thresholds() -> None:
    stored = make_meta(thresholds={"square": 0.42}).thresholds
    names = ["square"]
    assert stored.updated(None).per_label(names) == [0.42]
    assert stored.updated(0.9).per_label(names) == [0.9]  # a global value replaces calibration
    assert Thresholds(0.3).updated({"b": 0.8}).per_label(["a", "b"]) == [0.3, 0.8]
    assert Thresholds(None, {"a": 0.2}).per_label(["a", "b"]) == [0.2, DECISION_DEFAULT]
    assert stored.lowest(names, report_threshold=0.05) == 0.05
    assert stored.label_tensor(names).tolist() == [float("inf"), pytest.approx(0.42)]
    with pytest.raises(ValueError, match="unknown classes"):
        stored.updated({"circle": 0.1}).resolve(names)


def test_thresholds_survive_the_checkpoint_format() -> None:
    meta = make_meta(thresholds={"square": 0.42})
    stored = meta.to_dict()
    assert stored["thresholds"] == {"square": 0.42} and stored["score_threshold"] == 0.5
    assert CheckpointMeta.from_dict(stored) == meta
    # A checkpoint written before any calibration: no per-class values, its own default.
    old = {**stored, "thresholds": None, "score_threshold": 0.3}
    assert CheckpointMeta.from_dict(old).thresholds.per_label(["square"]) == [0.3]
    with pytest.raises(WeightsError, match="newer"):
        CheckpointMeta.from_dict({**stored, "format_version": FORMAT_VERSION + 1})


def test_mixed_precision_only_on_cuda() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "32"
    with pytest.warns(UserWarning, match="only used on CUDA"):
        assert resolve_precision("bf16-mixed", cpu) == "32"
    assert resolve_precision("16-mixed", torch.device("cuda")) == "16-mixed"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", cpu)


def test_draw_boxes_marks_the_box(tmp_path: Path) -> None:
    image = np.zeros((60, 80, 3), dtype=np.uint8)
    drawn = draw_boxes(image, np.array([[10.0, 20, 50, 40]]), ["square 0.93"], [1])
    assert image.sum() == 0  # the input is not modified
    assert drawn[30, 10].any() and drawn[30, 50].any() and not drawn[30, 30].any()
    assert os.path.exists(tmp_path)


SOUND = {"image": "a", "width": 8, "height": 6, "decision": "pass", "detections": []}
DEFECT = {
    "bbox": [1, 2, 3, 4.5], "score": 0.9, "label": 1, "class_name": "s", "category_id": 7,
    "fail": True,
}  # fmt: skip


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"garbage", "not a JSON line"),
        (b"\xff\xfe", "not a JSON line"),
        (b"[" * 100000 + b"]" * 100000, "not a JSON line"),  # too deep for the parser
        (b"[1]", "not a JSON object"),
        (json.dumps({**SOUND, "image": 3}).encode(), "field 'image'"),
        (json.dumps({k: v for k, v in SOUND.items() if k != "width"}).encode(), "field 'width'"),
        (json.dumps({**SOUND, "decision": "maybe"}).encode(), "field 'decision'"),
        (json.dumps({**SOUND, "detections": {}}).encode(), "field 'detections'"),
        (json.dumps({**SOUND, "detections": [{**DEFECT, "bbox": [1]}]}).encode(), "'bbox'"),
        (json.dumps({**SOUND, "detections": [{**DEFECT, "fail": 1}]}).encode(), "'fail'"),
        (b'{"image": "a", "width": 8, "height": 6, "decision": "pass", "detections": '
         b'[{"bbox": [1, 2, 3, NaN], "score": 1, "label": 1, "class_name": "s", '
         b'"category_id": 7, "fail": false}]}', "'bbox'"),
    ],
)  # fmt: skip
def test_a_bad_line_anywhere_in_a_shard_is_found_and_dropped(
    tmp_path: Path, line: bytes, problem: str
) -> None:
    good = [json.dumps(SOUND).encode(), json.dumps({**SOUND, "detections": [DEFECT]}).encode()]
    path = tmp_path / "part-00000-00000.jsonl"
    path.write_bytes(good[0] + b"\n" + line + b"\n" + good[1] + b"\n" + b'{"image": "torn')
    records, bad = read_sound(path, result_problem)
    assert len(records) == 2 and [(b.line, b.path) for b in bad] == [(2, path)]
    assert problem in bad[0].problem and str(bad[0]).startswith(f"{path} line 2: ")
    assert "\n" not in str(bad[0])
    assert drop_bad_lines(path, result_problem, fsync=False) == bad
    assert path.read_bytes() == good[0] + b"\n" + good[1] + b"\n"  # the good bytes as written
    assert drop_bad_lines(path, result_problem, fsync=False) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file


def test_dropping_bad_lines_on_a_full_disk_leaves_the_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "errors.jsonl"
    original = b'{"image": "a", "error": "x"}\ngarbage\n'
    path.write_bytes(original)

    def full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match="errors.jsonl: cannot write \\(No space left"):
        drop_bad_lines(path, error_problem, fsync=False)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
