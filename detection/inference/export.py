"""`export_model`: a checkpoint to the format its file name asks for (.onnx, .xml, else .pt).

The exports themselves: `graph_export` (TorchScript, ONNX) and `openvino_export` (IR, INT8).
"""

from __future__ import annotations

from pathlib import Path

from detection.core.thresholds import REPORT_DEFAULT, ThresholdsLike
from detection.inference.graph_export import deployable, export_onnx, export_torchscript
from detection.inference.openvino_export import ReducedPrecision, export_openvino
from detection.inference.openvino_model import is_openvino
from detection.models.torchscript import load_torchscript

__all__ = ["deployable", "export_model", "export_onnx", "export_torchscript", "load_torchscript"]


def export_model(
    checkpoint: str | Path,
    out: str | Path,
    thresholds: ThresholdsLike = None,
    report_threshold: float = REPORT_DEFAULT,
    reduced: ReducedPrecision | None = None,
) -> Path:
    """Export to ONNX when `out` ends in .onnx, to OpenVINO IR when it ends in .xml (float32,
    or INT8 / bf16 as `reduced` asks: `detection.inference.openvino_export`), else to
    TorchScript.

    Args:
        checkpoint: a checkpoint written by `DetectionModule`.
        out: the file to write (through a temporary file next to it: never a partial one).
        thresholds: overrides of the checkpoint's thresholds, stored in the exported file.
        report_threshold: the lowest score the exported model returns, in 0..1.
        reduced: the reduced precisions of an OpenVINO export and their accuracy guard.

    Returns:
        `out` as a Path.

    Raises:
        WeightsError: the checkpoint cannot be loaded or cannot decide (see the loader).
        OutputError: `out` is a folder, or cannot be written (read-only, disk full); no
            temporary file is left.
        ValueError: thresholds outside 0..1 or naming unknown classes.
        DetectionError: the onnx package is missing (for .onnx); OpenVINO or the calibration
            split is missing (for .xml).
        AccuracyGuardError: a reduced precision failed its guard (for .xml); nothing written.
    """
    if is_openvino(out):
        return export_openvino(checkpoint, out, thresholds, report_threshold, reduced=reduced)
    export = export_onnx if Path(out).suffix.lower() == ".onnx" else export_torchscript
    return export(checkpoint, out, thresholds=thresholds, report_threshold=report_threshold)
