"""detection: train, evaluate and run Faster R-CNN detectors on COCO-format data."""
