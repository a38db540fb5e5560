"""Human review: send the images worth a person's time to Label Studio or CVAT, bring the
corrections back as a per-box diff, a corrected COCO json and a review report.

export: inspect folder -> selection.py (rules) -> manifest.py (what was shown, with the model's
boxes) -> label_studio.py / cvat.py (task files) -> client.py (push to a running Label Studio).
import: a Label Studio or CVAT export -> label_studio.py / cvat.py (reviewed boxes in pixels) ->
diff.py (per-box diff) -> merge.py (COCO) and report.py (review_report.json and .md).
"""
