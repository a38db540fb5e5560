"""The package's layers, stated once, bottom up: a module imports only from its own layer or a
lower one. The tree is the architecture: each layer is a folder (the root holds `__init__.py`,
the public API, and `cli.py`, the top)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "detection"

# One entry a floor; folders on one floor do not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("core",),
    ("data", "models"),
    ("evaluation",),
    ("training", "inference"),
    ("inspect",),
    ("review", "report"),
    ("demo",),
    ("commands",),
    ("cli",),
]
FLOOR = {name: floor for floor, names in enumerate(LAYERS) for name in names}
MAX_LINES = 400


def _layer(module: str) -> str | None:
    """The layer of a `detection.*` module name, None for other packages and the root API."""
    parts = module.split(".")
    if parts[0] != "detection" or len(parts) == 1:
        return None
    return parts[1]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _modules() -> list[Path]:
    return sorted(
        p for p in PACKAGE.glob("**/*.py") if p.name != "__init__.py" or p.parent != PACKAGE
    )


def test_the_root_holds_the_api_and_the_cli_only() -> None:
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "cli.py"]
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= set(FLOOR), sorted(folders - set(FLOOR))


def test_every_import_goes_down_or_sideways_within_its_folder() -> None:
    modules = _modules()
    assert len(modules) > 60
    wrong = []
    for path in modules:
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        assert own in FLOOR, f"{relative} is in no layer of LAYERS"
        for name in _imports(path):
            layer = _layer(name)
            if layer is None or layer == own:
                continue
            assert layer in FLOOR, f"{relative} imports {name}, which is in no layer"
            if FLOOR[layer] >= FLOOR[own]:
                wrong.append(f"{relative} ({own}) imports {name} ({layer})")
    assert not wrong, wrong


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule above cannot pass by reading nothing: an upward import is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("from detection.inspect.job import run_inspect\n", encoding="utf-8")
    (layer,) = {_layer(name) for name in _imports(probe)}
    assert FLOOR[layer] > FLOOR["data"]


def test_no_module_is_longer_than_the_limit() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long
