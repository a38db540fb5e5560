"""scripts/bench_train.py's device and precision options, on tiny settings (seconds)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch

from detection.data.synthetic import generate_dataset

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("bench_train", ROOT / "scripts" / "bench_train.py")
bench_train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_train)


def test_cuda_without_a_gpu_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "bench.json"
    assert bench_train.main(["--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: --device cuda, but torch sees no CUDA device"
    assert not out.exists()


class TinyDetector(torch.nn.Module):
    """A one-convolution stand-in with the detector's training call: (images, targets) -> losses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3)

    def forward(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        out = self.conv(torch.stack(images)).float()
        boxes = sum(len(t["boxes"]) for t in targets)
        return {"loss_a": out.pow(2).mean(), "loss_b": (out.mean() - boxes).abs()}


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_plain_amp_loop_trains_across_epochs(tmp_path, precision):
    """autocast, the GradScaler (16-mixed) with unscaling before clipping, the warmup schedule,
    and a second pass over a training split shorter than the run."""
    data_dir = tmp_path / "data"
    generate_dataset(data_dir, num_images=6, image_size=32, seed=0)  # 4 training images
    args = argparse.Namespace(
        size=32, max_size=32, device="cpu", precision=precision, batch_size=2, workers=0, clip=0.5,
        model="fasterrcnn_resnet18_fpn", impl="torchvision", channels_last=False,
        compile_backbone=False, pad_multiple=None,
    )  # fmt: skip
    args.data = data_dir
    data = bench_train.make_data(args)
    data.setup("fit")
    model = TinyDetector()
    before = model.conv.weight.detach().clone()
    params = list(model.parameters())
    total = 5  # two batches an epoch: three epochs
    # The optimizer and schedule are DetectionModule's own, over the stand-in's parameters.
    module = bench_train.make_module(args, data)
    module.model = model
    optimization = module.optimizers_for(total)
    optimizer, scheduler = optimization["optimizer"], optimization["lr_scheduler"]["scheduler"]
    clock = bench_train.StepClock()
    loader = bench_train.seeded_loader(data, 0)()
    bench_train.train_plain(args, model, loader, data, optimizer, scheduler, params, clock, total)
    assert len(clock.wall) == total
    assert all(torch.isfinite(torch.tensor(float(loss))) for loss in clock.loss)
    assert not torch.equal(model.conv.weight, before)  # the optimizer stepped
    assert scheduler.last_epoch == total
