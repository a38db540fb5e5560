"""Shared pytest set-up: quiet, deterministic, CPU-friendly."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

# CI has two cores; more threads than that only adds contention.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
