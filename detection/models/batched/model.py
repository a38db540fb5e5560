"""BatchedFasterRCNN: torchvision's Faster R-CNN modules with a batched, sync-free forward pass."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN

from detection.models.batched.roi_heads import roi_heads_forward
from detection.models.batched.rpn import rpn_forward
from detection.models.batched.transform import batch_images, batch_targets, unbatch_detections
from detection.models.pooler_scales import ensure_pooler_scales

# Old option names (in configs and checkpoints' `model_kwargs`) -> the names they now have.
DEPRECATED_NAMES = {"matrix_nms": "fixpoint_nms", "masked_pooling": "pool_every_level"}


def _warn_deprecated(old: str) -> None:
    warnings.warn(
        f"BatchedFasterRCNN option '{old}' is deprecated; use '{DEPRECATED_NAMES[old]}'",
        DeprecationWarning,
        stacklevel=3,
    )


class BatchedFasterRCNN(nn.Module):
    """The same model as a torchvision `FasterRCNN` (same submodules, so the same state dict keys
    both ways), computing each step over the whole batch at once.

    Called like torchvision's model: `model(images)` in eval mode gives a list of dicts with
    `boxes`, `labels`, `scores`; `model(images, targets)` in training mode gives the loss dict.

    Options (None: decided by the device):
    - `pool_every_level` (None: on CUDA) pools every box on every FPN level and keeps its own
      level's result, instead of the host splitting boxes by level (4 syncs) and dropping the
      slots no image fills (1 sync);
    - `fixpoint_nms` (None: on CUDA) runs the RPN's NMS as exact greedy NMS by fixed-point
      iteration, batched tensor work per image and level, instead of torchvision `nms` calls
      (one per image and level on a CPU);
    - `channels_last` runs the backbone in NHWC, which tensor cores prefer;
    - `compile_backbone` compiles the backbone and FPN with torch.compile;
    - `pad_multiple` pads batches to a multiple of this many pixels instead of
      `size_divisible` (32), so that shapes repeat for compiled graphs and cuDNN's autotuner
      (detections then differ slightly from torchvision's, whose anchors cover 32 px of padding).
    `generator` (an attribute) seeds the balanced samplers.

    Deprecated names, still accepted (arguments and attributes) with a DeprecationWarning:
    `masked_pooling` (now `pool_every_level`) and `matrix_nms` (now `fixpoint_nms`: it never was
    SOLOv2's Matrix NMS); checkpoints store them in their `model_kwargs`.
    """

    def __init__(
        self,
        model: FasterRCNN,
        pool_every_level: bool | None = None,
        fixpoint_nms: bool | None = None,
        channels_last: bool = False,
        compile_backbone: bool = False,
        pad_multiple: int | None = None,
        **deprecated: bool | None,
    ) -> None:
        super().__init__()
        for old, value in deprecated.items():
            if old not in DEPRECATED_NAMES:
                raise TypeError(f"BatchedFasterRCNN got an unexpected keyword argument '{old}'")
            _warn_deprecated(old)
            if old == "masked_pooling" and value is not None:
                pool_every_level = value
            if old == "matrix_nms" and value is not None:
                fixpoint_nms = value
        ensure_pooler_scales(model)  # before channels_last and compile change the backbone
        self.transform = model.transform
        self.backbone = model.backbone
        self.rpn = model.rpn
        self.roi_heads = model.roi_heads
        self.pool_every_level = pool_every_level
        self.fixpoint_nms = fixpoint_nms
        self.channels_last = channels_last
        self.pad_multiple = pad_multiple or model.transform.size_divisible
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if compile_backbone:
            # In place: the state dict keys stay those of the plain module.
            self.backbone.compile(dynamic=pad_multiple is None)
        # Kept outside the module tree, so that its submodules (these same ones) are not listed
        # twice in the state dict.
        object.__setattr__(self, "_reference", model)
        self.generator: torch.Generator | None = None
        # Not persistent: the state dict stays exactly torchvision's.
        mean = torch.tensor(model.transform.image_mean)  # [Ch]
        std = torch.tensor(model.transform.image_std)  # [Ch]
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def matrix_nms(self) -> bool | None:
        """Deprecated name of `fixpoint_nms`."""
        _warn_deprecated("matrix_nms")
        return self.fixpoint_nms

    @matrix_nms.setter
    def matrix_nms(self, value: bool | None) -> None:
        _warn_deprecated("matrix_nms")
        self.fixpoint_nms = value

    @property
    def masked_pooling(self) -> bool | None:
        """Deprecated name of `pool_every_level`."""
        _warn_deprecated("masked_pooling")
        return self.pool_every_level

    @masked_pooling.setter
    def masked_pooling(self, value: bool | None) -> None:
        _warn_deprecated("masked_pooling")
        self.pool_every_level = value

    def reference(self) -> FasterRCNN:
        """A torchvision FasterRCNN sharing these modules (for scripting and ONNX export)."""
        return self._reference.train(self.training)

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses in training mode, detections in original pixels in eval mode.

        torchvision: `GeneralizedRCNN.forward`.
        """
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        mean = self.pixel_mean.to(images[0].dtype)  # [Ch]
        std = self.pixel_std.to(images[0].dtype)  # [Ch]
        batch = batch_images(self.transform, images, mean, std, self.training, self.pad_multiple)
        if self.channels_last:
            batch.tensors = batch.tensors.contiguous(
                memory_format=torch.channels_last
            )  # [B, Ch, H, W]
        target_batch = None
        if targets is not None and self.training:
            target_batch = batch_targets(targets, original_sizes, batch)
        features = self.backbone(batch.tensors)  # L x [B, Ch, h, w], by level name
        if isinstance(features, Tensor):
            features = {"0": features}  # 1 x [B, Ch, h, w]
        on_gpu = batch.tensors.is_cuda
        fixpoint_nms = on_gpu if self.fixpoint_nms is None else self.fixpoint_nms
        every_level = on_gpu if self.pool_every_level is None else self.pool_every_level
        proposals, valid, rpn_losses = rpn_forward(
            self.rpn, batch, list(features.values()), target_batch, self.generator, fixpoint_nms
        )  # [B, P, 4], [B, P], {[], []}
        detections, head_losses = roi_heads_forward(
            self.roi_heads,
            features,
            proposals,
            valid,
            batch,
            target_batch,
            every_level,
            self.generator,
        )  # ([B, D, 4], [B, D], [B, D], [B, D]) or None, {[], [], ...}
        if self.training:
            return {**head_losses, **rpn_losses}
        return unbatch_detections(*detections, batch, original_sizes)
