"""Inference: Detector API (predictor), batch jobs (job, sources, writer), tiling, draw, export.

Nothing is imported here: `detection/__init__.py` exposes the public names lazily.
"""
