"""A batched, sync-free implementation of torchvision's Faster R-CNN (the fast path).

Same modules, parameters and state dict as torchvision's model; the forward pass treats the
whole batch as padded tensors with validity masks instead of looping over images. Each function
that replaces one of torchvision's names it in its docstring ("torchvision: ..."); lines marked
`# batching:` exist only for the padding and masks.

Dimension letters in the shape comments (`# [B, N, 4]`):
    B  images in the batch
    A  anchors of one image, all FPN levels (the same for every image of a padded batch)
    C  RPN candidates: the `pre_nms_top_n` best anchors of each level, levels side by side
    P  proposals kept per image (`post_nms_top_n`), padded, with a valid mask
    G  ground-truth boxes per image, padded to the most in the batch
    S  sampled anchors or proposals per image (balanced sampler), padded
    K  classes including background; in NMS code, candidates per row
    D  detections per image (`detections_per_img`), padded
    L  FPN levels
    4  a box (x1, y1, x2, y2) or its regression deltas (dx, dy, dw, dh)
"""

from detection.models.batched.model import BatchedFasterRCNN

__all__ = ["BatchedFasterRCNN"]
