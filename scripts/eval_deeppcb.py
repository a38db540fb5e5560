"""Score a checkpoint on DeepPCB's test split: COCO metrics and the authors' IoU 0.33 protocol.

    python scripts/eval_deeppcb.py --ckpt runs/deeppcb/.../best.ckpt \
        --test data/deeppcb/test.json --images ../shared/datasets/deeppcb --out results/deeppcb.json

Tang et al. (arXiv:1902.06197) count a detection as correct at IoU > 0.33 and report mAP and
F-score there. This prints COCO mAP / AP50, mAP at IoU 0.33, and F-score at IoU 0.33 twice:
at thresholds calibrated on held-out data (the checkpoint's, from validation during fit, or
best-F1 ones on ``--calibrate VAL.json``: an honest operating point) and at each class's
best-F1 threshold on the test split itself (an oracle operating point, an upper bound).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from detection import evaluate_checkpoint, evaluate_coco, evaluate_detections, load_model

DEEPPCB_IOU = 0.33


def operating_point(gt: Path, predictions: list[dict[str, Any]], thresholds: Any) -> dict:
    """Overall P/R/F1 at IoU 0.33 with the given score thresholds, and per-class best-F1 ones."""
    report = evaluate_detections(
        gt, predictions, iou_threshold=DEEPPCB_IOU, score_threshold=thresholds
    ).report
    return {
        "overall": report["operating_point"]["overall"],
        "thresholds": thresholds,
        "best_f1_thresholds": report["calibrated_thresholds"],
        "coco": {k: report[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")},
    }


def main(argv: list[str] | None = None) -> int:
    """Predict, score, print and save; returns the exit code."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ckpt", type=Path, required=True, help="DetectionModule checkpoint")
    parser.add_argument("--test", type=Path, required=True, help="test.json (convert_deeppcb.py)")
    parser.add_argument("--images", type=Path, required=True, help="DeepPCB root folder")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--calibrate",
        type=Path,
        help="held-out COCO json (same image root) to calibrate thresholds on, instead of the checkpoint's",
    )
    parser.add_argument("--out", type=Path, help="write the figures (and settings) to this json")
    parser.add_argument("--predictions", type=Path, help="also save the COCO detections here")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    loader = {"batch_size": args.batch_size, "workers": args.workers, "iou_threshold": DEEPPCB_IOU}
    predictions = evaluate_checkpoint(args.ckpt, args.test, args.images, **loader).detections
    seconds = time.perf_counter() - start
    if args.predictions:
        args.predictions.parent.mkdir(parents=True, exist_ok=True)
        args.predictions.write_text(json.dumps(predictions))

    _, meta = load_model(args.ckpt)
    if args.calibrate:
        held_out = evaluate_checkpoint(
            args.ckpt, args.calibrate, args.images, thresholds=meta.thresholds.fallback, **loader
        )
        calibrated = held_out.report["calibrated_thresholds"]
        source = f"best F1 on {args.calibrate}"
    else:
        # Classes without a calibrated threshold fall back to the checkpoint's default.
        calibrated = meta.thresholds.resolve(meta.class_names)
        source = "checkpoint" if meta.thresholds.per_class else "none in checkpoint: default used"
    honest = operating_point(args.test, predictions, calibrated)
    oracle = operating_point(args.test, predictions, honest["best_f1_thresholds"])
    map33 = evaluate_coco(args.test, predictions, iou_thresholds=[DEEPPCB_IOU])
    figures = {
        "checkpoint": str(args.ckpt),
        "model": meta.model_name,
        "model_args": meta.model_args,
        "images": len(json.loads(args.test.read_text())["images"]),
        "detections": len(predictions),
        "predict_seconds": round(seconds, 1),
        "coco_mAP": honest["coco"]["AP"],
        "coco_AP50": honest["coco"]["AP50"],
        "coco": honest["coco"],
        "mAP_iou033": map33["AP"],
        "per_class_AP_iou033": {k: v["AP"] for k, v in map33["per_class"].items()},
        "F_iou033_calibrated": honest["overall"]["f1"],
        "F_iou033_oracle": oracle["overall"]["f1"],
        "operating_point_calibrated": honest["overall"],
        "operating_point_oracle": oracle["overall"],
        "thresholds_calibrated": calibrated,
        "thresholds_oracle": oracle["thresholds"],
        "thresholds_source": source,
    }
    print(
        f"{figures['images']} images, {len(predictions)} detections in {seconds:.0f} s\n"
        f"COCO mAP {figures['coco_mAP']:.3f}  AP50 {figures['coco_AP50']:.3f}\n"
        f"IoU 0.33: mAP {figures['mAP_iou033']:.3f}  "
        f"F {figures['F_iou033_calibrated']:.3f} (thresholds: {source})  "
        f"F {figures['F_iou033_oracle']:.3f} (best-F1 thresholds on test, oracle)\n"
        "published (with template image): mAP 0.986, F 0.982"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2))
        print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
