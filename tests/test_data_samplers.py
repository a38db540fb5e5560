"""Aspect-ratio grouped batching, alone and sharded over two simulated DDP ranks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from coco_files import random_images, write_coco
from torch.utils.data import BatchSampler, DistributedSampler, RandomSampler, SequentialSampler

from detection.core.lightning_private import (
    is_dataloader_shuffled,
    replace_dunder_methods,
    update_dataloader,
)
from detection.data.datamodule import CocoDataModule
from detection.data.samplers import GroupedBatchSampler, create_aspect_ratio_groups

# Landscape, portrait and square images: three aspect-ratio groups with k=3.
SIZES = ((64, 32), (32, 64), (40, 40))


def test_groups_match_torchvision_bins():
    ratios = [0.4, 0.5, 0.8, 1.0, 1.2, 2.0, 3.0]
    # torchvision: bins = 2 ** linspace(-1, 1, 7); group = bisect_right(bins, ratio)
    assert create_aspect_ratio_groups(ratios, k=3).tolist() == [0, 1, 3, 4, 4, 7, 7]
    assert create_aspect_ratio_groups(ratios, k=0).tolist() == [0, 0, 0, 1, 1, 1, 1]


@pytest.mark.parametrize("drop_last", [False, True])
def test_every_index_once_and_batches_grouped(drop_last):
    rng = np.random.default_rng(0)
    group_ids = rng.integers(0, 4, 103)
    sampler = GroupedBatchSampler(RandomSampler(range(103)), group_ids, 4, drop_last=drop_last)
    batches = list(sampler)
    assert len(batches) == len(sampler) == (25 if drop_last else 26)
    flat = [i for batch in batches for i in batch]
    assert len(flat) == len(set(flat))
    if not drop_last:
        assert sorted(flat) == list(range(103))
    mixed = [b for b in batches if len({int(group_ids[i]) for i in b}) > 1]
    assert len(mixed) <= 3  # only the leftovers of the 4 groups are merged, at the end
    assert all(len(b) == 4 for b in batches[:-1])


def _datamodule(tmp_path, num_images=30, **kwargs):
    ann, root = write_coco(tmp_path, random_images(num_images, sizes=SIZES))
    defaults = dict(train_annotations=str(ann), batch_size=4, num_workers=0, train_transforms=None)
    return CocoDataModule(**{**defaults, **kwargs})


def _check_two_ranks(batches_per_rank, dataset, group_ids):
    shards = [[i for batch in batches for i in batch] for batches in batches_per_rank]
    assert len(batches_per_rank[0]) == len(batches_per_rank[1])  # DDP needs equal step counts
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(len(dataset)))
    for batches in batches_per_rank:
        mixed = [b for b in batches if len({int(group_ids[i]) for i in b}) > 1]
        assert len(mixed) <= len(set(group_ids.tolist())) - 1


def test_two_ranks_through_lightnings_distributed_sampler(tmp_path):
    """use_distributed_sampler=True: Lightning re-creates our batch sampler around its sampler."""
    dm = _datamodule(tmp_path)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    group_ids = create_aspect_ratio_groups(dataset.aspect_ratios(), k=3)
    batches_per_rank = []
    for rank in (0, 1):
        # As Lightning's data connector does: build inside the patching context, then inject.
        with replace_dunder_methods(BatchSampler):
            loader = dm.train_dataloader()
        assert is_dataloader_shuffled(loader)  # so Lightning's DistributedSampler shuffles
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        loader = update_dataloader(loader, sampler)
        assert isinstance(loader.batch_sampler, GroupedBatchSampler)
        assert loader.batch_sampler.sampler is sampler
        batches_per_rank.append(list(loader.batch_sampler))
    _check_two_ranks(batches_per_rank, dataset, group_ids)


def _rank_batches(rank, world_size, store, out_dir, annotations):
    """One rank of a real gloo process group, without Lightning: the datamodule shards itself."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        dm = CocoDataModule(
            train_annotations=annotations, batch_size=4, num_workers=0, train_transforms=None
        )
        dm.setup("fit")
        loader = dm.train_dataloader()
        first = [list(b) for b in loader.batch_sampler]
        loader.batch_sampler.sampler.set_epoch(1)  # what a training loop calls each epoch
        second = [i for b in loader.batch_sampler for i in b]
        with open(f"{out_dir}/rank{rank}.json", "w") as handle:
            json.dump({"first": first, "second": second}, handle)
    finally:
        dist.destroy_process_group()


def test_two_ranks_sharded_by_the_datamodule(tmp_path):
    """Under torch.distributed without a Trainer, the datamodule builds the DistributedSampler."""
    ann, _ = write_coco(tmp_path, random_images(30, sizes=SIZES))
    mp.spawn(_rank_batches, args=(2, str(tmp_path / "store"), str(tmp_path), str(ann)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    dm = _datamodule(tmp_path)
    dm.setup("fit")
    dataset = dm.datasets["train"]
    group_ids = create_aspect_ratio_groups(dataset.aspect_ratios(), k=3)
    _check_two_ranks([r["first"] for r in ranks], dataset, group_ids)
    assert sorted(ranks[0]["second"] + ranks[1]["second"]) == list(range(len(dataset)))
    assert ranks[0]["second"] != [i for b in ranks[0]["first"] for i in b]  # reshuffled


def test_grouping_disabled_gives_a_plain_shuffled_loader(tmp_path):
    dm = _datamodule(tmp_path, aspect_ratio_group_factor=-1)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, RandomSampler) and loader.batch_size == 4
    indices = [i for batch in loader.batch_sampler for i in batch]
    assert sorted(indices) == list(range(30)) and indices != list(range(30))  # shuffled, all once


def test_eval_loader_is_sequential(tmp_path):
    ann, root = write_coco(tmp_path, random_images(5, sizes=SIZES))
    dm = CocoDataModule(val_annotations=str(ann), num_workers=0, eval_batch_size=2)
    dm.setup("validate")
    loader = dm.val_dataloader()
    assert isinstance(loader.sampler, SequentialSampler) and loader.batch_size == 2
    ids = [t["image_id"] for _, targets in loader for t in targets]
    assert ids == dm.datasets["val"].image_ids
