"""Weight files: reading state dicts without running code, and fitting them into a model.

The factory (`faster_rcnn.build_model`) uses these for `weights=` / `weights_backbone=` files;
`checkpoint.py` and the model loader use `safe_torch_load` and `check_finite`.
"""

from __future__ import annotations

import logging
import math
import pickle
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.ops import misc as misc_nn_ops

from detection.core.errors import WeightsError, first_line

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = {".pth", ".pt", ".ckpt", ".bin"}


def is_local_weights(weights: str | None) -> bool:
    """True when `weights` names a file rather than a torchvision weight enum."""
    if weights is None:
        return False
    return Path(weights).suffix in WEIGHT_SUFFIXES or Path(weights).exists()


def check_regular_file(path: str | Path, what: str) -> Path:
    """`path` as a Path when it is a non-empty regular file, else a one-line WeightsError.

    Never open anything but a regular file: reading a FIFO blocks forever.
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError:
        raise WeightsError(f"{path}: {what} file not found") from None
    if not stat.S_ISREG(info.st_mode):
        raise WeightsError(f"{path}: {what} path is not a regular file")
    if info.st_size == 0:
        raise WeightsError(f"{path}: {what} file is empty (0 bytes)")
    return path


def safe_torch_load(path: str | Path, what: str = "weights", *, mmap: bool = False) -> Any:
    """`torch.load` that cannot run code (a checkpoint from a stranger), with one-line errors.

    ``mmap`` maps tensors from the file instead of reading them, for a quick look inside.
    """
    path = check_regular_file(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise WeightsError(f"{path}: cannot load {what} safely: {_load_problem(err)}") from None


def _load_problem(err: Exception) -> str:
    """One line on why torch.load failed; torch's own messages run to paragraphs, or are empty."""
    text = str(err)
    if isinstance(err, pickle.UnpicklingError) and "weights_only" in text:
        return "it holds Python objects that would run code when loaded (refused)"
    if "central directory" in text or isinstance(err, EOFError | OSError):
        return "truncated or corrupt file (an interrupted copy or save?)"
    if "_use_new_zipfile_serialization" in text:  # mmap refuses the legacy format
        return "not a torch zip archive, as every Lightning checkpoint is"
    return f"not a torch checkpoint ({type(err).__name__}: {first_line(err)})"


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a model state dict from a .pth file or a Lightning .ckpt, without running code."""
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and "state_dict" in obj:  # Lightning checkpoint
        obj = {k.removeprefix("model."): v for k, v in obj["state_dict"].items()}
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # torchvision references' checkpoint layout
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: not a state dict of tensors")
    return obj


def first_non_finite(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """Name of the first floating tensor holding NaN or inf, or None when all are finite."""
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def check_finite(tensors: Iterable[tuple[str, torch.Tensor]], source: str | Path) -> None:
    """Refuse weights with NaN or inf: such a model returns no detection, so every part would
    pass. Raises a WeightsError naming `source` and the first bad tensor."""
    bad = first_non_finite(tensors)
    if bad is not None:
        raise WeightsError(f"{source}: field '{bad}': weights hold NaN or inf (a diverged run?)")


def check_finite_values(values: Iterable[tuple[str, float]], source: str | Path) -> None:
    """Like `check_finite`, for plain numbers (e.g. an ONNX graph's scalar initializers)."""
    for name, value in values:
        if not math.isfinite(value):
            raise WeightsError(f"{source}: field '{name}': weights hold NaN or inf")


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state`, skipping only tensors whose shape differs (another class count)."""
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    for key in skipped:
        del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise WeightsError(
            f"{source}: does not fit this model (missing {len(missing)} keys, e.g. {missing[:2]}; "
            f"unexpected {len(unexpected)}, e.g. {unexpected[:2]})"
        )
    if skipped:
        log.info("%s: re-initialised %d layers of another shape: %s", source, len(skipped), skipped)


def _frozen_batch_norms(module: nn.Module) -> nn.Module:
    """BatchNorm2d layers replaced by FrozenBatchNorm2d with the same statistics."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = misc_nn_ops.FrozenBatchNorm2d(module.num_features, eps=module.eps)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(frozen, name).copy_(getattr(module, name).detach())
        return frozen
    for name, child in module.named_children():
        setattr(module, name, _frozen_batch_norms(child))
    return module


def as_pretrained(body: nn.Module, trainable_layers: int | None) -> None:
    """Treat a ResNet body loaded from a local file as torchvision treats downloaded weights.

    torchvision freezes batch norms and the early stages only when it loads the backbone
    weights itself; built without them, every layer trains with batch statistics of a few
    images. Same stages as torchvision's _resnet_fpn_extractor (default 3 trainable).
    """
    layers = 3 if trainable_layers is None else trainable_layers
    if not 0 <= layers <= 5:
        raise WeightsError(f"trainable_backbone_layers must be 0..5, got {layers}")
    _frozen_batch_norms(body)
    trained = ["layer4", "layer3", "layer2", "layer1", "conv1"][:layers]
    for name, parameter in body.named_parameters():
        if not any(name.startswith(layer) for layer in trained):
            parameter.requires_grad_(False)
