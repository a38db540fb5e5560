"""The batched model under DistributedDataParallel: two gloo ranks on different images.

DDP's reducer (find_unused_parameters=False, Lightning's default) averages every trainable
parameter's gradient and fails on the next step when one received none; the averaged gradients
must be those of the two ranks' batches computed apart.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from batch_norm import train_with_fixed_batch_norm
from torch.nn.parallel import DistributedDataParallel

from detection.models.batched import BatchedFasterRCNN
from detection.models.faster_rcnn import build_model

SMALL = {
    "min_size": 64,
    "max_size": 96,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    # Every candidate is sampled: no random stream differs between ranks and the reference.
    "rpn_batch_size_per_image": 10**6,
    "box_batch_size_per_image": 10**6,
}
# Both ways the batched model can run: the CPU path, and the CUDA path (RoI pooling on every
# level and fixpoint NMS) forced on.
PATHS = {
    "cpu_path": {"pool_every_level": False, "fixpoint_nms": False},
    "cuda_path": {"pool_every_level": True, "fixpoint_nms": True},
}


def _model(path: str) -> torch.nn.Module:
    torch.manual_seed(0)
    reference = build_model("fasterrcnn_resnet18_fpn", 3, impl="torchvision", **SMALL)
    model = BatchedFasterRCNN(reference, **PATHS[path])
    # The two ranks' batch statistics would differ from one pass over both batches.
    return train_with_fixed_batch_norm(model)


def _rank_batch(rank: int) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    generator = torch.Generator().manual_seed(rank)
    images = [torch.rand(3, 80, 96, generator=generator) for _ in range(2)]
    boxes = [[[10.0, 20, 50, 60]], [[30.0, 5, 90, 40], [5, 40, 30, 75]]][rank]
    targets = [
        {"boxes": torch.tensor(boxes), "labels": torch.arange(1, len(boxes) + 1)},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # a negative
    ]
    return images, targets


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _ddp_worker(rank: int, world_size: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        images, targets = _rank_batch(rank)
        for path in PATHS:
            model = _model(path)
            ddp = DistributedDataParallel(model)
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
            sum(ddp(images, targets).values()).backward()
            grads = {name: p.grad.clone() for name, p in _trainable(model).items()}
            optimizer.step()
            optimizer.zero_grad()
            # The reducer raises here if the first step left a parameter without a gradient.
            sum(ddp(images, targets).values()).backward()
            optimizer.step()
            weights = {name: p.detach().clone() for name, p in _trainable(model).items()}
            torch.save({"grads": grads, "weights": weights}, f"{out_dir}/{path}_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_averages_every_gradient_over_ranks(tmp_path) -> None:
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    for path in PATHS:
        results = [torch.load(tmp_path / f"{path}_rank{rank}.pt") for rank in (0, 1)]
        apart = []
        for rank in (0, 1):
            model = _model(path)
            images, targets = _rank_batch(rank)
            sum(model(images, targets).values()).backward()
            apart.append({name: p.grad for name, p in _trainable(model).items()})

        # Different batches, different gradients: an average is something to check.
        assert any(not torch.equal(apart[0][name], apart[1][name]) for name in apart[0])
        for result in results:
            assert set(result["grads"]) == set(apart[0]), path
        for name in apart[0]:
            assert apart[0][name] is not None, f"{path}: {name} received no gradient"
            mean = (apart[0][name] + apart[1][name]) / 2
            for result in results:
                torch.testing.assert_close(result["grads"][name], mean, rtol=1e-4, atol=1e-6)
            # Same gradients from the same start: the ranks stay identical after two steps.
            torch.testing.assert_close(results[0]["weights"][name], results[1]["weights"][name])
