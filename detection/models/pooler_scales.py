"""The RoI pooler's level scales, set once from the backbone instead of from the first image.

torchvision's `MultiScaleRoIAlign` infers each FPN level's scale on its first call, from the
feature maps and the tallest image's height before padding, and keeps it for every later call.
A first image whose resized height is small against the 32-pixel padding gets scales twice too
large: a 380x96 strip at the square test model's 64 px becomes 64x16, padded to 64x32, so level
0 is 8 rows for 16 rows of image and reads as scale 1/2 instead of 1/4. Every later image in the
process is then pooled from the wrong places (the trained test model's scores all collapsed to
0.488: no defect found on any image). Thin strips are common on inspection lines (labels, line
scan cameras), and which image comes first should not decide the rest.

The scales are properties of the backbone: `ensure_pooler_scales` measures them once on a square
input that every stride divides and sets them, as torchvision would have inferred them from a
well-sized image. Checked against torchvision 0.26 and 0.29 (`MultiScaleRoIAlign.scales`,
`map_levels` and `torchvision.ops.poolers.initLevelMapper`: public attributes, a module-level
function without an underscore).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import initLevelMapper

# Divisible by every stride the poolers read (4 to 32; 64 for the extra pool level).
PROBE_SIDE = 64


def ensure_pooler_scales(model: nn.Module) -> nn.Module:
    """Fix the box pooler's scales of a torchvision Faster R-CNN from its backbone's strides,
    unless they are set already (every model `build_model` makes, and whatever wraps it).

    Args:
        model: a torchvision `FasterRCNN` (its `roi_heads.box_roi_pool` a `MultiScaleRoIAlign`;
            another pooler is left alone).

    Returns:
        `model`, its pooler's `scales` and `map_levels` set (the module's train/eval mode and
        weights unchanged).
    """
    pooler = getattr(getattr(model, "roi_heads", None), "box_roi_pool", None)
    if not isinstance(pooler, MultiScaleRoIAlign) or pooler.scales is not None:
        return model
    backbone = model.backbone
    weight = next(backbone.parameters())
    probe = torch.zeros(1, 3, PROBE_SIDE, PROBE_SIDE, dtype=weight.dtype, device=weight.device)
    was_training = backbone.training
    with torch.no_grad():
        features = backbone.eval()(probe)  # eval: batch norms keep their running statistics
    backbone.train(was_training)
    # As torchvision filters them: a name the backbone does not return is skipped (MobileNet's
    # FPN returns '0', '1' and 'pool' to a pooler that names '0'-'3').
    maps = [features[name] for name in pooler.featmap_names if name in features]
    scales = [2.0 ** round(math.log2(m.shape[-2] / PROBE_SIDE)) for m in maps]
    pooler.scales = scales
    pooler.map_levels = initLevelMapper(
        int(-math.log2(scales[0])),
        int(-math.log2(scales[-1])),
        canonical_scale=pooler.canonical_scale,
        canonical_level=pooler.canonical_level,
    )
    return model
