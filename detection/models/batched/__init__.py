"""A batched, sync-free implementation of torchvision's Faster R-CNN (the fast path).

Same modules, parameters and state dict as torchvision's model; the forward pass treats the
whole batch as padded tensors with validity masks instead of looping over images. Each function
that replaces one of torchvision's names it in its docstring ("torchvision: ..."); lines marked
`# batching:` exist only for the padding and masks.

Every statement that makes or changes a tensor ends in its shape, as DETR's `HungarianMatcher`
is written (`# [B, N, 4]`): one shape per tensor the line gives (`# [B, A], [B, A, 4]`), `[]` a
scalar tensor, `L x [...]` a list of L tensors, `([...], [...])` a tuple, `{[...], [...]}` a
dict's values. A write into part of a tensor (`x[i] = ...`, `x.add_(...)`) gives the shape of
the whole tensor written into; an `append` the shape of what it appends. In the box head, S is
the proposals pooled: sampled ones in training, the kept (P) in evaluation.
tests/test_batched_shape_comments.py checks that every tensor line has a shape in these letters
(not that the shape is right). Dimension letters:
    B   images in the batch
    A   anchors of one image, all FPN levels (the same for every image of a padded batch)
    a   anchors per feature-map location (one per aspect ratio)
    C   RPN candidates: the `pre_nms_top_n` best anchors of each level, levels side by side
    Cl  RPN candidates of one level (`pre_nms_top_n`, or fewer where the level has fewer)
    P   proposals kept per image (`post_nms_top_n`), padded, with a valid mask
    G   ground-truth boxes per image, padded to the most in the batch
    S   sampled anchors or proposals per image (balanced sampler), padded
    Sp  positive slots of a sample: at most `positive_fraction * S`
    K   classes including background
    D   detections per image (`detections_per_img`), padded
    N   candidates per row in code shared by several stages (NMS, matching, IoU): A, C, P + G
        or P * (K - 1)
    M   the other boxes of a pairwise IoU
    R   rows of the fixed-point NMS: one per (image, FPN level) block
    V   candidates of the whole batch, flattened: the valid ones (what a `nonzero` keeps) or
        those an NMS keeps
    U   keys of a grouped NMS: one per (image, level) or (image, class)
    T   the k of a per-image top-k after NMS: P in the RPN, D in the box head
    L   FPN levels
    Ch  channels: 3 of an image, those of an FPN feature map or of the box head's features
    H, W  height and width of an image or of the padded batch of images
    h, w  height and width of one FPN feature map, or of the pooled output
    4   a box (x1, y1, x2, y2) or its regression deltas (dx, dy, dw, dh)
    5   an RoI: the image's index, then its box
    2   an image's (height, width)
    ... any leading dimensions (functions that take several shapes)
"""

from detection.models.batched.model import BatchedFasterRCNN

__all__ = ["BatchedFasterRCNN"]
