"""Image decoding, kept importable here for existing code: the rules live in detection.images."""

from detection.images import MAX_PIXELS, image_size, read_image, to_rgb_uint8

__all__ = ["MAX_PIXELS", "image_size", "read_image", "to_rgb_uint8"]
