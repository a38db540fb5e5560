"""Which torch device a run means: the one place 'auto' is resolved."""

from __future__ import annotations

import torch

from detection.core.errors import DetectionError


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device `device` names; 'auto' is the first CUDA device if there is one, else
    the CPU.

    Args:
        device: 'auto', 'cpu', 'cuda', 'cuda:N' or a `torch.device`.

    Returns:
        The device.

    Raises:
        DetectionError: a CUDA device is named but CUDA is not available.
        RuntimeError: `device` is no device name torch knows.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DetectionError(f"device '{device}' requested but CUDA is not available")
    return resolved
