"""A batched, sync-free implementation of torchvision's Faster R-CNN (the fast path).

Same modules, parameters and state dict as torchvision's model; the forward pass treats the
whole batch as padded tensors with validity masks instead of looping over images.
"""

from detection.models.batched.model import BatchedFasterRCNN

__all__ = ["BatchedFasterRCNN"]
