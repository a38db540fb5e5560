"""The package's layers import downwards only: data, models, evaluation and the bottom-layer
modules never reach up to inference, the commands, the demo or the LightningModule."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "detection"
LOWER = ["data", "models", "evaluation", "thresholds.py", "coco_format.py", "images.py"]
UPPER = ("detection.inference", "detection.commands", "detection.lightning_module")
UPPER += ("detection.demo", "detection.cli")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_lower_layers_do_not_import_upper_ones() -> None:
    files = [p for name in LOWER for p in sorted((PACKAGE / name).glob("**/*.py"))]
    files += [PACKAGE / name for name in LOWER if name.endswith(".py")]
    assert len(files) > 10
    upward = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in files
        if path.is_file()
        for name in _imports(path)
        if name.startswith(UPPER)
    }
    assert not upward, sorted(upward)
