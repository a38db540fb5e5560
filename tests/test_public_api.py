"""`import detection` exposes the documented API, and stays light until a name is used."""

import importlib
import subprocess
import sys

import detection


def test_every_exported_name_resolves() -> None:
    for name in detection.__all__:
        module = importlib.import_module(detection._EXPORTS[name])
        assert getattr(detection, name) is getattr(module, name), name


def test_import_does_not_load_lightning_or_torch() -> None:
    code = "import sys, detection; print('lightning' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
