"""One factory in front of torchvision's Faster R-CNN variants (timm's `create_model` idea).

Weight files (local `weights=` / `weights_backbone=` paths) are read by `weight_files.py`.
"""

from __future__ import annotations

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

from detection.core.errors import ConfigError, WeightsError
from detection.models.batched import BatchedFasterRCNN
from detection.models.pooler_scales import ensure_pooler_scales
from detection.models.weight_files import (
    as_pretrained,
    is_local_weights,
    load_matching,
    load_state_dict_file,
)


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
# The old names (`masked_pooling`, `matrix_nms`) still reach the model, which warns and maps them.
BATCHED_OPTIONS = (
    "pool_every_level",
    "fixpoint_nms",
    "masked_pooling",
    "matrix_nms",
    "channels_last",
    "compile_backbone",
    "pad_multiple",
)


def available_models() -> list[str]:
    """Names accepted by `build_model`."""
    return sorted(MODELS)


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

    Args:
        name: one of `available_models()`, e.g. ``"fasterrcnn_resnet50_fpn"``.
        num_classes: object classes, without the background (torchvision's label 0).
        weights: None (random init), a torchvision weight name (``"DEFAULT"``, ``"COCO_V1"``
            or the full ``"FasterRCNN_ResNet50_FPN_Weights.COCO_V1"``), or a local
            .pth/.ckpt file. Detection weights for another class count keep everything but
            a fresh box predictor.
        weights_backbone: ImageNet weights of the backbone: a torchvision name or a local
            file (treated as torchvision treats downloaded ones: frozen batch norms).
        trainable_backbone_layers: backbone stages that train (0..5), as in torchvision.
        min_size: shorter side the images are resized to (a tuple: one picked per batch
            when training).
        max_size: longest side after the resize.
        impl: the forward pass: ``"batched"`` (the whole batch at once, no host syncs) or
            ``"torchvision"`` (the reference); both hold the same modules and state dict.
        **kwargs: torchvision's `FasterRCNN` arguments (``box_score_thresh``, ...) and, with
            ``impl="batched"``, the options of `BatchedFasterRCNN` (``pool_every_level``,
            ``fixpoint_nms``, ``channels_last``, ``compile_backbone``, ``pad_multiple``).

    Returns:
        The model in training mode: a torchvision `FasterRCNN`, or a `BatchedFasterRCNN`
        around one.

    Raises:
        ConfigError: unknown `name` or `impl`, or batched options with another `impl`.
        WeightsError: unknown weight name, a download that failed (the message says how to
            pass a local file), or a weight file that cannot be read or does not fit.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(available_models())}")
    if impl not in IMPLEMENTATIONS:
        raise ConfigError(f"unknown impl '{impl}'; choose one of: {', '.join(IMPLEMENTATIONS)}")
    options = {key: kwargs.pop(key) for key in BATCHED_OPTIONS if key in kwargs}
    if options and impl != "batched":
        raise ConfigError(f"{', '.join(options)}: options of impl 'batched', not '{impl}'")
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
        load_matching(model.backbone.body, state, str(backbone_local))
        if "resnet" in name:  # the MobileNet bodies name their stages otherwise
            as_pretrained(model.backbone.body, trainable_backbone_layers)
    if local is not None:
        load_matching(model, load_state_dict_file(local), str(local))
    ensure_pooler_scales(model)  # not from the first image the model sees: see pooler_scales.py
    return BatchedFasterRCNN(model, **options) if impl == "batched" else model


def as_torchvision(model: nn.Module) -> FasterRCNN:
    """The torchvision model behind `model` (itself if it is one), e.g. for TorchScript or ONNX."""
    return model.reference() if isinstance(model, BatchedFasterRCNN) else model
