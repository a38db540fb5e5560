"""`export_model`: a checkpoint to the format its file name asks for (.onnx, .xml, else .pt).

The exports themselves: `graph_export` (TorchScript, ONNX) and `openvino_export` (IR, INT8).
"""

from __future__ import annotations

from pathlib import Path

from detection.core.thresholds import REPORT_DEFAULT, ThresholdsLike
from detection.inference.graph_export import deployable, export_onnx, export_torchscript
from detection.inference.openvino_export import export_openvino
from detection.models.torchscript import load_torchscript

__all__ = ["deployable", "export_model", "export_onnx", "export_torchscript", "load_torchscript"]


def export_model(
    checkpoint: str | Path,
    out: str | Path,
    thresholds: ThresholdsLike = None,
    report_threshold: float = REPORT_DEFAULT,
) -> Path:
    """Export to ONNX when `out` ends in .onnx, to OpenVINO IR (float32) when it ends in .xml
    (INT8 and bf16: `detection.inference.openvino_export`), else to TorchScript.

    Args:
        checkpoint: a checkpoint written by `DetectionModule`.
        out: the file to write (through a temporary file next to it: never a partial one).
        thresholds: overrides of the checkpoint's thresholds, stored in the exported file.
        report_threshold: the lowest score the exported model returns, in 0..1.

    Returns:
        `out` as a Path.

    Raises:
        WeightsError: the checkpoint cannot be loaded or cannot decide (see the loader).
        OutputError: `out` is a folder, or cannot be written (read-only, disk full); no
            temporary file is left.
        ValueError: thresholds outside 0..1 or naming unknown classes.
        DetectionError: the onnx package is missing (for .onnx).
    """
    if Path(out).suffix.lower() == ".xml":
        return export_openvino(checkpoint, out, thresholds, report_threshold)
    export = export_onnx if Path(out).suffix.lower() == ".onnx" else export_torchscript
    return export(checkpoint, out, thresholds=thresholds, report_threshold=report_threshold)
