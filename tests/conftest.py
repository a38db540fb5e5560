"""Shared pytest set-up: quiet, deterministic, CPU-friendly."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

# CI has two cores: more threads than that only adds contention. On a machine busy with other
# work, OMP_NUM_THREADS=1 avoids OpenMP barrier stalls (an explicit setting wins).
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
