"""The HTML inspection report: one offline page over an inspect folder (`detection report`).

folder.py reads the job, decisions.py holds the pass/fail rules the page recomputes,
ground_truth.py joins labels and reuses the evaluator, payload.py packs the page's data,
thumbs.py writes the JPEG thumbnails and previews, page.py fills the template, writer.py
puts the folder together atomically.
"""

from detection.report.writer import REPORT_DIR, write_report

__all__ = ["REPORT_DIR", "write_report"]
