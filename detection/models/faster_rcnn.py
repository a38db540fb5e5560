"""One factory in front of torchvision's Faster R-CNN variants (timm's `create_model` idea)."""

from __future__ import annotations

import logging
import pickle
import stat
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import get_model_weights, get_weight
from torchvision.models.detection import (
    FasterRCNN,
    fasterrcnn_mobilenet_v3_large_320_fpn,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import misc as misc_nn_ops

from detection.core.errors import WeightsError, first_line
from detection.models.batched import BatchedFasterRCNN

log = logging.getLogger(__name__)


def _fasterrcnn_resnet18_fpn(
    *,
    weights: Any = None,
    weights_backbone: Any = None,
    num_classes: int | None = None,
    trainable_backbone_layers: int | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    """ResNet18-FPN Faster R-CNN from torchvision parts: a light model for CPU work."""
    if weights is not None:
        raise WeightsError("torchvision publishes no detection weights for fasterrcnn_resnet18_fpn")
    if isinstance(weights_backbone, str):
        weights_backbone = get_weight(f"ResNet18_Weights.{weights_backbone}")
    pretrained = weights_backbone is not None
    layers = 3 if trainable_backbone_layers is None else trainable_backbone_layers
    backbone = resnet_fpn_backbone(
        backbone_name="resnet18",
        weights=weights_backbone,
        trainable_layers=layers if pretrained else 5,
        # Frozen statistics only make sense for a pretrained backbone, as in torchvision.
        norm_layer=misc_nn_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d,
    )
    return FasterRCNN(backbone, num_classes=num_classes or 91, **kwargs)


# name -> (builder, torchvision name of its detection weights enum or None)
MODELS: dict[str, tuple[Callable[..., FasterRCNN], str | None]] = {
    "fasterrcnn_resnet50_fpn": (fasterrcnn_resnet50_fpn, "FasterRCNN_ResNet50_FPN_Weights"),
    "fasterrcnn_resnet50_fpn_v2": (
        fasterrcnn_resnet50_fpn_v2,
        "FasterRCNN_ResNet50_FPN_V2_Weights",
    ),
    "fasterrcnn_mobilenet_v3_large_fpn": (
        fasterrcnn_mobilenet_v3_large_fpn,
        "FasterRCNN_MobileNet_V3_Large_FPN_Weights",
    ),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (
        fasterrcnn_mobilenet_v3_large_320_fpn,
        "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights",
    ),
    "fasterrcnn_resnet18_fpn": (_fasterrcnn_resnet18_fpn, None),
}


# Forward passes over the same modules: the batched fast path, and torchvision's as reference.
IMPLEMENTATIONS = ("batched", "torchvision")
DEFAULT_IMPL = "batched"
# Settings of the batched forward pass (see BatchedFasterRCNN), accepted among the model kwargs.
BATCHED_OPTIONS = (
    "masked_pooling",
    "matrix_nms",
    "channels_last",
    "compile_backbone",
    "pad_multiple",
)


def available_models() -> list[str]:
    """Names accepted by `build_model`."""
    return sorted(MODELS)


def is_local_weights(weights: str | None) -> bool:
    """True when `weights` names a file rather than a torchvision weight enum."""
    if weights is None:
        return False
    return Path(weights).suffix in {".pth", ".pt", ".ckpt", ".bin"} or Path(weights).exists()


def _resolve_enum(model: str, weights: str, enum_name: str | None) -> Any:
    """Turn 'DEFAULT', 'COCO_V1' or 'FasterRCNN_..._Weights.COCO_V1' into the enum member."""
    if enum_name is None:
        raise WeightsError(f"model '{model}' has no torchvision detection weights; got '{weights}'")
    short = weights.split(".")[-1]
    try:
        return get_weight(f"{enum_name}.{short}")
    except (ValueError, KeyError) as err:
        choices = ", ".join(["DEFAULT", *(w.name for w in get_model_weights(MODELS[model][0]))])
        raise WeightsError(
            f"unknown weights '{weights}' for {model}; choose one of: {choices}"
        ) from err


def _download_failed(enum: Any, err: Exception) -> WeightsError:
    url = getattr(enum, "url", None) or "the URL in torchvision's model docs"
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return WeightsError(
        f"could not download {enum} ({type(err).__name__}: {str(err).splitlines()[0]}). Offline? "
        f"Fetch {url} on a connected machine and either put it in {cache} or pass its path, "
        "e.g. --model.weights /path/to/weights.pth"
    )


def _backbone_enum(weights_backbone: str | None, model: str) -> Any:
    """Best-effort enum of a backbone weight name, only to name its URL in an error."""
    family = (
        "ResNet18"
        if "resnet18" in model
        else "ResNet50"
        if "resnet50" in model
        else "MobileNet_V3_Large"
    )
    try:
        return get_weight(f"{family}_Weights.{str(weights_backbone).split('.')[-1]}")
    except (ValueError, KeyError):
        return weights_backbone


def safe_torch_load(path: str | Path, what: str = "weights", *, mmap: bool = False) -> Any:
    """`torch.load` that cannot run code (a checkpoint from a stranger), with one-line errors.

    ``mmap`` maps tensors from the file instead of reading them, for a quick look inside.
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError:
        raise WeightsError(f"{path}: {what} file not found") from None
    # Never open anything but a regular file: reading a FIFO blocks forever.
    if not stat.S_ISREG(info.st_mode):
        raise WeightsError(f"{path}: {what} path is not a regular file")
    if info.st_size == 0:
        raise WeightsError(f"{path}: {what} file is empty (0 bytes)")
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


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
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


def _as_pretrained(body: nn.Module, trainable_layers: int | None) -> None:
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


def build_model(
    name: str = "fasterrcnn_resnet50_fpn",
    num_classes: int = 91,
    weights: str | None = None,
    weights_backbone: str | None = None,
    trainable_backbone_layers: int | None = None,
    min_size: int | tuple[int, ...] = 800,
    max_size: int = 1333,
    impl: str = DEFAULT_IMPL,
    **kwargs: Any,
) -> FasterRCNN | BatchedFasterRCNN:
    """Build a Faster R-CNN for `num_classes` object classes (background excluded).

    `weights` is None (random init), a torchvision weight name ('DEFAULT', 'COCO_V1' or the full
    'FasterRCNN_ResNet50_FPN_Weights.COCO_V1'), or a local .pth/.ckpt file. Pretrained detection
    weights for another class count keep everything but a fresh box predictor. `impl` picks the
    forward pass: 'batched' (the whole batch at once, no host syncs) or 'torchvision' (the
    reference); both hold the same modules and state dict.
    """
    if name not in MODELS:
        raise WeightsError(
            f"unknown model '{name}'; choose one of: {', '.join(available_models())}"
        )
    if impl not in IMPLEMENTATIONS:
        raise WeightsError(f"unknown impl '{impl}'; choose one of: {', '.join(IMPLEMENTATIONS)}")
    options = {key: kwargs.pop(key) for key in BATCHED_OPTIONS if key in kwargs}
    if options and impl != "batched":
        raise WeightsError(f"{', '.join(options)}: options of impl 'batched', not '{impl}'")
    builder, enum_name = MODELS[name]
    total = num_classes + 1  # torchvision counts background as class 0
    kwargs = {"min_size": min_size, "max_size": max_size, **kwargs}
    local = weights if is_local_weights(weights) else None
    enum = _resolve_enum(name, weights, enum_name) if weights and not local else None
    backbone_local = weights_backbone if is_local_weights(weights_backbone) else None
    backbone_enum = weights_backbone if weights_backbone and not backbone_local else None

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchvision's notes on frozen layers
            model = builder(
                weights=enum,
                weights_backbone=backbone_enum,
                # Pretrained heads are built for their own class count, then replaced below.
                num_classes=None if enum is not None else total,
                trainable_backbone_layers=trainable_backbone_layers,
                **kwargs,
            )
    except (OSError, RuntimeError) as err:
        if "download" in str(err).lower() or isinstance(err, OSError):
            failed = enum if enum is not None else _backbone_enum(backbone_enum, name)
            raise _download_failed(failed, err) from err
        raise

    if enum is not None and model.roi_heads.box_predictor.cls_score.out_features != total:
        in_features = model.roi_heads.box_predictor.cls_score.in_features
        model.roi_heads.box_predictor = FastRCNNPredictor(in_features, total)
    if backbone_local is not None:
        # An ImageNet classifier file also holds fc.*, which the detection backbone drops.
        state = load_state_dict_file(backbone_local)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        _load_matching(model.backbone.body, state, str(backbone_local))
        if "resnet" in name:  # the MobileNet bodies name their stages otherwise
            _as_pretrained(model.backbone.body, trainable_backbone_layers)
    if local is not None:
        _load_matching(model, load_state_dict_file(local), str(local))
    return BatchedFasterRCNN(model, **options) if impl == "batched" else model


def as_torchvision(model: nn.Module) -> FasterRCNN:
    """The torchvision model behind `model` (itself if it is one), e.g. for TorchScript or ONNX."""
    return model.reference() if isinstance(model, BatchedFasterRCNN) else model
