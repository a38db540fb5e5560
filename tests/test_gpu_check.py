"""scripts/gpu_check.py --dry-run, the prepared GPU run rehearsed on the CPU, so that it cannot
rot between the sessions that have a device.

Every stage runs tiny (64 px, a few steps) on a generated DeepPCB-format copy; about 95 s on a
quiet machine, a few minutes on a loaded one: the one slow test, kept because nothing else
runs the GPU script's stages and their command lines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def write_deeppcb(root: Path, trainval: int = 12, test: int = 8) -> Path:
    """A DeepPCB-format copy: 640x640 `*_test.jpg` crops with one bright defect each, label
    files of ``x1 y1 x2 y2 type`` lines, and the trainval.txt / test.txt lists."""
    rng = np.random.default_rng(0)
    (root / "g1" / "1").mkdir(parents=True, exist_ok=True)
    (root / "g1" / "1_not").mkdir(parents=True, exist_ok=True)
    for split, count in (("trainval", trainval), ("test", test)):
        lines = []
        for i in range(count):
            name = f"{split}{i:03d}"
            image = rng.integers(0, 60, (640, 640, 3), dtype=np.uint8)
            x, y = (int(v) for v in rng.integers(0, 560, 2))
            image[y : y + 60, x : x + 60] = 230
            cv2.imwrite(str(root / "g1" / "1" / f"{name}_test.jpg"), image)
            label = f"{x} {y} {x + 60} {y + 60} {1 + i % 6}\n"
            (root / "g1" / "1_not" / f"{name}.txt").write_text(label)
            lines.append(f"g1/1/{name}.jpg g1/1_not/{name}.txt")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_gpu_check_dry_run_passes_every_stage(tmp_path: Path) -> None:
    deeppcb = write_deeppcb(tmp_path / "deeppcb")
    out = tmp_path / "out"
    command = [sys.executable, "scripts/gpu_check.py", "--dry-run", "--out", str(out)]
    command += ["--deeppcb", str(deeppcb), "--work", str(tmp_path / "work")]
    command += ["--budget", "1200"]  # a loaded machine is slow: skip no stage for the time
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    log = (out / "log.txt").read_text() if (out / "log.txt").exists() else done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    expected = {"env_sync", "bench_train", "inspect", "fit", "eval", "count_ops"}
    expected |= {"option_channels_last", "option_pad_multiple_128", "option_compile_backbone"}
    assert expected <= set(stages), sorted(stages)
    failed = {name: entry for name, entry in stages.items() if entry.get("rc") != 0}
    assert failed == {}, log[-4000:]
    assert summary["figures"]["fit_checkpoint"]
    assert summary["figures"]["deeppcb"]["coco_mAP"] is not None
