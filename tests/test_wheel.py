"""The wheel carries what the commands need: installed outside the checkout, the demo runs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_wheel", REPO / "scripts" / "check_wheel.py")
check_wheel = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_wheel)


def test_wheel_installed_elsewhere_runs_the_demo_from_its_packaged_recipe(tmp_path: Path) -> None:
    wheel = check_wheel.build_wheel(tmp_path)
    bin_dir = check_wheel.install(wheel, tmp_path / "venv")
    found = check_wheel.quick_check(bin_dir, tmp_path / "elsewhere")
    site = tmp_path / "venv" / "lib"
    assert Path(found["module"]).is_relative_to(site)  # the wheel's copy, not the checkout's
    assert "detection demo" in found["usage"] and "--config" in found["usage"]
    recipe = yaml.safe_load(found["recipe"])
    assert Path(recipe["source"]).is_relative_to(site) and recipe["source"].endswith(
        "demo_cpu.yaml"
    )
    assert recipe["model"]["model_name"] == "fasterrcnn_resnet18_fpn"
    assert sorted(found["data"]) == ["test", "train", "val"]
    for path in found["data"].values():
        split = json.loads(Path(path).read_text())
        assert Path(path).is_relative_to(tmp_path / "elsewhere") and split["images"]


def test_configs_link_to_the_packaged_recipes() -> None:
    # One copy of each recipe: configs/ (for users to copy) points into the package.
    for name in ("demo_cpu.yaml", "demo_gpu.yaml"):
        link = REPO / "configs" / name
        assert link.resolve() == (REPO / "detection" / "demo" / "recipes" / name).resolve()
