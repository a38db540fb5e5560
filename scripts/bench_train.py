"""Training throughput: DetectionModule under the Lightning Trainer against a plain torchvision loop.

    python scripts/bench_train.py --out results/bench_train.json

Both paths train the same Faster R-CNN (same architecture and initial weights), with the same
optimizer and warmup schedule (SGD momentum 0.9, weight decay 1e-4, LambdaLR from
detection.training.lr_schedule), on the same batches: each builds its loader with
CocoDataModule.train_dataloader() (generated data, same seed, so the same images in the same
order with the same augmentation) and finishes each batch with the data module's
finish_batch (uint8 to float, device transforms), as the Trainer does. The plain loop is
torchvision's references/detection train_one_epoch: forward, backward, step, a loss.item()
finiteness check and every loss term read with .item() for its metric logger.

The Trainer runs as `detection fit` would: default logger (to a temp dir), progress bar,
checkpointing, model summary and the CLI's LearningRateMonitor; log_every_n_steps 5 as in
configs/cpu_quick.yaml. Only steady-state steps are timed (after --warmup steps, from one
optimizer step's end to another's), so the one-time costs of fit (summary, checkpoint at the
end) are left out of both. Repetitions alternate A, B, A, B on a shared machine; the figures
are medians, with CPU time (time.process_time, all threads) per image beside wall time. The
first losses of both paths are compared (same_work): equal losses mean equal work.

Other tenants' load swings a repetition's speed by far more than the loops differ, so the
work both loops share (data, forward, backward, zero_grad, SGD update) is timed inside each
step too; a step's wall time less that work is the loop's own overhead, and
ratio_from_overhead = (work + plain overhead) / (work + Trainer overhead) is the ratio with
the shared noise taken out.

--profile adds a cProfile of one run of each path.

--impl picks the Faster R-CNN implementation (batched, the default, or torchvision's);
--compare-impl runs both, one after the other, and reports their images/s side by side.
--device cuda --precision 16-mixed (or bf16-mixed) trains on the GPU: the Trainer with that
precision, the plain loop as a plain AMP loop (torch.autocast, and a GradScaler for 16-mixed
only) with the Trainer's warmup schedule and gradient clipping (unscaled first), its batches
moved with Lightning's own move_data_to_device. On CUDA the clock synchronizes the device at
the first and last timed step only; the parts timed inside a step are host time there.
R50-FPN at 800 px, batch 8, as issue 12 measures it:

    python scripts/bench_train.py --device cuda --precision 16-mixed --compare-impl \
        --model fasterrcnn_resnet50_fpn --size 800 --max-size 1333 --width 1066 \
        --batch-size 8 --workers 8 --clip 10 --warmup 5 --steps 15 --reps 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import importlib
import io
import json
import math
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from lightning.fabric.utilities.apply_func import move_data_to_device  # noqa: E402
from lightning.pytorch.callbacks import Callback, LearningRateMonitor  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from detection.data.datamodule import CocoDataModule  # noqa: E402
from detection.data.synthetic import generate_dataset  # noqa: E402
from detection.models.faster_rcnn import build_model  # noqa: E402
from detection.training.module import DetectionModule  # noqa: E402
from detection.training.options import BatchedOptions, OptimizationOptions  # noqa: E402

PATHS = ("plain", "trainer")
IMPLS = ("batched", "torchvision")
AUTOCAST = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


class Parts:
    """Wall time inside the work both paths must do each step: data, forward, backward, update.

    Measured by light wrappers (no profiler), so a step's remaining time, its wall time less
    these parts, is what the training loop itself costs: Lightning's hooks, logging, progress
    bar and closures, or the plain loop's .item() calls.
    """

    NAMES = ("data", "forward", "backward", "zero_grad", "update")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.NAMES, 0.0)

    def _timed(self, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start

        return timed

    @contextlib.contextmanager
    def measure(self, model: torch.nn.Module) -> Iterator[None]:
        """Time the parts while the block trains ``model``."""
        iterator = torch.utils.data.dataloader._BaseDataLoaderIter
        sgd_module = importlib.import_module("torch.optim.sgd")  # torch.optim hides the name
        saved = [
            (iterator, "__next__", iterator.__next__),
            (torch.Tensor, "backward", torch.Tensor.backward),
            (torch.optim.Optimizer, "zero_grad", torch.optim.Optimizer.zero_grad),
            # SGD.step runs Lightning's closure (forward and backward); sgd() is the update.
            (sgd_module, "sgd", sgd_module.sgd),
        ]
        for (owner, attr, fn), part in zip(
            saved, ("data", "backward", "zero_grad", "update"), strict=True
        ):
            setattr(owner, attr, self._timed(part, fn))
        started: list[float] = []

        def pre_hook(*_: Any) -> None:
            started.append(time.perf_counter())

        def post_hook(*_: Any) -> None:
            self.seconds["forward"] += time.perf_counter() - started.pop()

        handles = [
            model.register_forward_pre_hook(pre_hook),
            model.register_forward_hook(post_hook),
        ]
        try:
            yield
        finally:
            for owner, attr, fn in saved:
                setattr(owner, attr, fn)
            for handle in handles:
                handle.remove()


class StepClock:
    """Wall and CPU time at the end of every optimizer step, the loss, and the parts so far."""

    def __init__(self, device: torch.device | None = None, sync_at: tuple[int, ...] = ()) -> None:
        # On CUDA the host runs ahead of the device: synchronize at the steps whose times
        # bound the timed span (the first and last), and nowhere else.
        self.sync = device is not None and device.type == "cuda"
        self.sync_at = set(sync_at)
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.loss: list[float | torch.Tensor] = []
        self.parts = Parts()
        self.part_marks: list[dict[str, float]] = []
        self.log_ms_per_step: float | None = None  # host time in self.log (Trainer paths)
        self.log_calls_per_step: float | None = None

    def tick(self, loss: float | torch.Tensor) -> None:
        """Record the end of one step; a tensor loss is read later, so timing adds no sync."""
        if self.sync and len(self.wall) in self.sync_at:
            torch.cuda.synchronize()
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())
        self.loss.append(loss)
        self.part_marks.append(dict(self.parts.seconds))

    def figures(self, warmup: int, batch_size: int) -> dict[str, Any]:
        """Images/s, CPU seconds per image and ms per step in each part, after ``warmup``."""
        steps = len(self.wall) - 1 - warmup
        images = steps * batch_size
        wall = self.wall[-1] - self.wall[warmup]
        cpu = self.cpu[-1] - self.cpu[warmup]
        parts = {
            name: 1000 * (self.part_marks[-1][name] - self.part_marks[warmup][name]) / steps
            for name in Parts.NAMES
        }
        step_ms = 1000 * wall / steps
        return {
            "images_per_s": images / wall,
            "cpu_s_per_image": cpu / images,
            "wall_s": wall,
            "steps": steps,
            "step_ms": step_ms,
            "parts_ms_per_step": parts,
            "loop_overhead_ms_per_step": step_ms - sum(parts.values()),
        }


class ClockCallback(Callback):
    """Feeds a StepClock from the Trainer at the end of every training batch."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: Any, outputs: Any, *args: Any
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.clock.tick(float("nan") if loss is None else loss.detach())


def seeded_loader(data: CocoDataModule, seed: int) -> Callable[[], DataLoader]:
    """data.train_dataloader, seeding everything first: the same batches in both paths.

    Everything the batches draw from (image order, augmentation seeds, and then the RPN and
    RoI samplers in the first forward) follows the torch seed set just before the loader is
    built; the Trainer consumes random numbers of its own during set-up, before that.
    """
    build = data.train_dataloader

    def loader() -> DataLoader:
        L.seed_everything(seed, verbose=False)
        return build()

    return loader


# ------------------------------------------------------------------------------ the setup


def make_data(args: argparse.Namespace) -> CocoDataModule:
    """A fresh data module over the generated training split."""
    return CocoDataModule(
        train_annotations=str(args.data / "annotations" / "train.json"),
        train_images=str(args.data / "images"),
        val_annotations=str(args.data / "annotations" / "val.json"),
        val_images=str(args.data / "images"),
        batch_size=args.batch_size,
        num_workers=args.workers,
        pin_memory=args.device == "cuda",
        persistent_workers=False,
    )


def model_kwargs(args: argparse.Namespace, options: bool = True) -> dict[str, Any]:
    """What DetectionModule and build_model both receive; the batched model's speed-up
    options (``options``) only when it is the one built."""
    kwargs = {
        "min_size": args.size,
        "max_size": args.max_size,
        "box_batch_size_per_image": 128,
        "rpn_post_nms_top_n_train": 600,
    }
    if options and args.impl == "batched":
        kwargs.update(speedups(args))
    return kwargs


def speedups(args: argparse.Namespace) -> dict[str, Any]:
    """The batched model's optional speed-ups asked for on the command line."""
    chosen = {"channels_last": args.channels_last, "compile_backbone": args.compile_backbone}
    chosen["pad_multiple"] = args.pad_multiple
    return {k: v for k, v in chosen.items() if v}


def hparams(args: argparse.Namespace) -> dict[str, Any]:
    """Optimizer and schedule settings shared by both paths (`OptimizationOptions` fields)."""
    return {
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "warmup_iters": 50,
        "warmup_factor": 0.01,
        "scheduler": "constant",
    }


def make_module(args: argparse.Namespace, data: CocoDataModule) -> DetectionModule:
    """The DetectionModule both paths train: the Trainer's as `detection fit` builds it, and the
    plain loop's model, optimizer and schedule (its own `optimizers_for`)."""
    return DetectionModule(
        model_name=args.model,
        class_names=data.class_names,
        category_ids=data.category_ids,
        min_size=args.size,
        max_size=args.max_size,
        impl=args.impl,
        model_kwargs={
            k: v
            for k, v in model_kwargs(args, options=False).items()
            if k not in ("min_size", "max_size")
        },
        batched=BatchedOptions(**speedups(args)) if args.impl == "batched" else BatchedOptions(),
        optimization=OptimizationOptions(**hparams(args)),
    )


# ------------------------------------------------------------------------------ the paths


def new_clock(args: argparse.Namespace) -> StepClock:
    """A StepClock that synchronizes a CUDA device at the first and last timed steps."""
    return StepClock(torch.device(args.device), (args.warmup, args.warmup + args.steps))


def run_plain(args: argparse.Namespace, init: dict[str, torch.Tensor], seed: int) -> StepClock:
    """torchvision references' train_one_epoch, on the data module's loader."""
    L.seed_everything(seed, verbose=False)
    data = make_data(args)
    module = make_module(args, data)
    model = module.model
    model.load_state_dict(init)
    model.to(args.device)
    model.train()
    total = args.warmup + args.steps + 1
    params = [p for p in model.parameters() if p.requires_grad]
    optimization = module.optimizers_for(total)
    optimizer = optimization["optimizer"]
    scheduler = optimization["lr_scheduler"]["scheduler"]
    data.setup("fit")
    loader = seeded_loader(data, seed)()
    clock = new_clock(args)
    with clock.parts.measure(model):
        train_plain(args, model, loader, data, optimizer, scheduler, params, clock, total)
    return clock


def train_plain(
    args: argparse.Namespace,
    model: torch.nn.Module,
    loader: DataLoader,
    data: CocoDataModule,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    params: list[torch.nn.Parameter],
    clock: StepClock,
    total: int,
) -> None:
    """The loop body of torchvision references' train_one_epoch (with its AMP scaler when
    mixed), for ``total`` steps."""
    meter: dict[str, float] = {}
    device = torch.device(args.device)
    dtype = AUTOCAST[args.precision]
    # As Lightning: a GradScaler for float16 only (bfloat16 has float32's range).
    scaler = torch.amp.GradScaler(device.type) if args.precision == "16-mixed" else None
    for batch in epochs(loader):
        batch = move_data_to_device(batch, device)  # as the Trainer moves it
        images, targets = data.finish_batch(batch, augment=True)  # as the Trainer does
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss_dict = model(images, targets)
        losses = sum(loss_dict.values())
        loss_value = losses.item()
        if not math.isfinite(loss_value):
            raise RuntimeError(f"loss is {loss_value}")
        optimizer.zero_grad()
        (scaler.scale(losses) if scaler else losses).backward()
        if args.clip:
            if scaler:
                scaler.unscale_(optimizer)  # clip the true gradients, as Lightning does
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        meter.update({k: v.item() for k, v in loss_dict.items()})  # references' MetricLogger
        clock.tick(loss_value)
        if len(clock.wall) == total:
            break


def epochs(loader: DataLoader) -> Iterator[Any]:
    """The loader's batches, epoch after epoch, as the Trainer draws them under max_steps."""
    while True:
        yield from loader


class LogTimer:
    """Host time spent in DetectionModule.log (wrapped), per training step."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    @contextlib.contextmanager
    def wrap(self) -> Iterator[None]:
        """Time every DetectionModule.log call inside the block."""
        original = DetectionModule.log

        def timed(module: DetectionModule, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(module, *args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        DetectionModule.log = timed  # type: ignore[method-assign]
        try:
            yield
        finally:
            DetectionModule.log = original  # type: ignore[method-assign]


def run_trainer(
    args: argparse.Namespace,
    init: dict[str, torch.Tensor],
    seed: int,
    profile: cProfile.Profile | None = None,
) -> StepClock:
    """DetectionModule under a Trainer set up as `detection fit` sets it up."""
    L.seed_everything(seed, verbose=False)
    data = make_data(args)
    module = make_module(args, data)
    module.model.load_state_dict(init)
    data.train_dataloader = seeded_loader(data, seed)  # type: ignore[method-assign]
    clock = new_clock(args)
    total = args.warmup + args.steps + 1
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(
            accelerator=args.device,
            devices=1,
            precision=args.precision,
            max_steps=total,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            log_every_n_steps=5,
            gradient_clip_val=args.clip or None,
            default_root_dir=root,
            callbacks=[
                LearningRateMonitor(logging_interval="step"),
                ClockCallback(clock),
            ],
        )
        timer = LogTimer()
        with profiling(profile), timer.wrap(), clock.parts.measure(module.model):
            trainer.fit(module, datamodule=data)
    clock.log_ms_per_step = 1000 * timer.seconds / len(clock.wall)
    clock.log_calls_per_step = timer.calls / len(clock.wall)
    return clock


@contextlib.contextmanager
def profiling(profile: cProfile.Profile | None) -> Iterator[None]:
    """Run the block under ``profile`` when one is given."""
    if profile is None:
        yield
        return
    profile.enable()
    try:
        yield
    finally:
        profile.disable()


# ------------------------------------------------------------------------------ main


# (file name, function) -> label: the parts of a step, cumulative time per call in the profile.
STEP_PARTS = {
    ("training_epoch_loop.py", "advance"): "lightning: whole step (advance)",
    ("fetchers.py", "__next__"): "data: next batch",
    ("dataloader.py", "__next__"): "data: DataLoader.__next__",
    ("lightning_module.py", "training_step"): "DetectionModule.training_step",
    ("generalized_rcnn.py", "forward"): "model forward",
    ("_tensor.py", "backward"): "backward",
    ("sgd.py", "step"): "SGD.step (under Lightning it runs the closure)",
    ("sgd.py", "sgd"): "SGD update",
    ("optimizer.py", "zero_grad"): "zero_grad",
    ("module.py", "log"): "LightningModule.log",
    ("strategy.py", "reduce_boolean_decision"): "reduce_boolean_decision",
    ("rich_progress.py", "on_train_batch_end"): "RichProgressBar.on_train_batch_end",
    ("lr_monitor.py", "on_train_batch_start"): "LearningRateMonitor.on_train_batch_start",
    ("logger_connector.py", "update_train_step_metrics"): "logger: update_train_step_metrics",
    ("call.py", "_call_callback_hooks"): "all callback hooks",
}


def step_parts(profile: cProfile.Profile, steps: int) -> dict[str, dict[str, float]]:
    """Milliseconds per training step in each part of STEP_PARTS (cumulative, so parts nest)."""
    stats = pstats.Stats(profile, stream=io.StringIO())
    parts: dict[str, dict[str, float]] = {}
    for (file, _, name), (_, calls, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        label = STEP_PARTS.get((Path(file).name, name))
        if label is None or ("lightning" not in file and label.startswith("lightning")):
            continue
        if label == "LightningModule.log" and "lightning/pytorch/core" not in file:
            continue
        entry = parts.setdefault(label, {"ms_per_step": 0.0, "calls_per_step": 0.0})
        entry["ms_per_step"] += 1000 * cumulative / steps
        entry["calls_per_step"] += calls / steps
    return {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in sorted(parts.items())}


def top_functions(profile: cProfile.Profile, limit: int = 25) -> list[dict[str, Any]]:
    """The Lightning and detection functions with the most cumulative time."""
    stats = pstats.Stats(profile, stream=io.StringIO())
    rows = []
    for (file, line, name), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "lightning" in file or "/detection/" in file:
            rows.append(
                {
                    "function": f"{Path(file).name}:{line}({name})",
                    "calls": calls,
                    "own_s": round(own, 4),
                    "cumulative_s": round(cumulative, 4),
                }
            )
    rows.sort(key=lambda r: r["own_s"], reverse=True)
    return rows[:limit]


def summarize(results: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Medians per path and ratios against the plain loop."""
    out: dict[str, Any] = {}
    for path, reps in results.items():
        out[path] = {
            key: statistics.median(r[key] for r in reps)
            for key in (
                "images_per_s",
                "cpu_s_per_image",
                "wall_s",
                "step_ms",
                "loop_overhead_ms_per_step",
                "log_ms_per_step",
            )
            if key in reps[0]
        }
        out[path]["parts_ms_per_step"] = {
            name: statistics.median(r["parts_ms_per_step"][name] for r in reps)
            for name in Parts.NAMES
        }
        out[path]["images_per_s_all"] = [round(r["images_per_s"], 3) for r in reps]
    plain = out["plain"]["images_per_s"]
    plain_reps = results["plain"]
    for path in results:
        if path == "plain":
            continue
        pairs = [
            b["images_per_s"] / a["images_per_s"]
            for a, b in zip(plain_reps, results[path], strict=False)
        ]
        out[path]["ratio_of_medians"] = out[path]["images_per_s"] / plain
        out[path]["median_pairwise_ratio"] = statistics.median(pairs)
        out[path]["pairwise_ratios"] = [round(p, 4) for p in pairs]
        out[path]["cpu_ratio"] = out["plain"]["cpu_s_per_image"] / out[path]["cpu_s_per_image"]
        # The same work with each loop's own overhead: the ratio without the other tenants'
        # noise in the work itself (which both paths share).
        work = sum(out["plain"]["parts_ms_per_step"].values())
        out[path]["ratio_from_overhead"] = (work + out["plain"]["loop_overhead_ms_per_step"]) / (
            work + out[path]["loop_overhead_ms_per_step"]
        )
    return out


def measure_impl(args: argparse.Namespace, init: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The interleaved repetitions (and the profile) of both paths with ``args.impl``."""
    paths = list(PATHS)
    results: dict[str, list[dict[str, float]]] = {p: [] for p in paths}
    first_losses: dict[str, list[float]] = {}
    for rep in range(args.reps):
        for path in paths:
            seed = 1000 + rep
            run = run_plain if path == "plain" else run_trainer
            clock = run(args, init, seed)
            fig = clock.figures(args.warmup, args.batch_size)
            if clock.log_ms_per_step is not None:
                fig["log_ms_per_step"] = clock.log_ms_per_step
                fig["log_calls_per_step"] = clock.log_calls_per_step
            results[path].append(fig)
            first_losses.setdefault(path, [round(float(v), 5) for v in clock.loss[:3]])
            print(
                f"rep {rep} {args.impl:11s} {path:8s} {fig['images_per_s']:7.2f} img/s  "
                f"{1000 * fig['cpu_s_per_image']:7.1f} ms CPU/img  "
                f"loop overhead {fig['loop_overhead_ms_per_step']:6.1f} of {fig['step_ms']:6.0f} ms/step  "
                f"load {os.getloadavg()[0]:.2f}"
                + (
                    f"  self.log {fig['log_ms_per_step']:.2f} ms/step"
                    if "log_ms_per_step" in fig
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )
    summary = summarize(results) if args.reps else {}

    profile_out: dict[str, Any] | None = None
    if args.profile:
        # cProfile slows Python code (Lightning's hooks) far more than torch's kernels: the
        # Lightning share it shows is an upper bound.
        steps = args.warmup + args.steps + 1
        profiles = {"trainer": cProfile.Profile(), "plain": cProfile.Profile()}
        run_trainer(args, init, 999, profile=profiles["trainer"])
        with profiling(profiles["plain"]):
            run_plain(args, init, 999)
        profile_out = {
            "steps": steps,
            "trainer_parts": step_parts(profiles["trainer"], steps),
            "plain_parts": step_parts(profiles["plain"], steps),
            "trainer_top_lightning_and_detection": top_functions(profiles["trainer"]),
        }
        parts = profile_out["trainer_parts"]
        whole = parts.get("lightning: whole step (advance)", {}).get("ms_per_step", 0.0)
        for label, entry in parts.items():
            print(f"  profile {label:42s} {entry['ms_per_step']:9.2f} ms/step", file=sys.stderr)
        if whole:
            work = sum(
                parts.get(k, {}).get("ms_per_step", 0.0)
                for k in (
                    "data: next batch",
                    "model forward",
                    "backward",
                    "SGD update",
                    "zero_grad",
                )
            )
            profile_out["trainer_overhead_ms_per_step"] = whole - work
            profile_out["trainer_overhead_share"] = (whole - work) / whole

    # Same initial weights, batches and random samples: on a CPU in float32 the first losses
    # agree exactly; kernels chosen per run (cuDNN, mixed precision) leave a rounding difference.
    exact = args.device == "cpu" and args.precision == "32"
    reference = first_losses.get("plain", [])
    same_work = all(
        len(v) == len(reference)
        and all(
            math.isclose(a, b, rel_tol=0 if exact else 1e-2)
            for a, b in zip(v, reference, strict=True)
        )
        for v in first_losses.values()
    )
    return {
        "impl": args.impl,
        "first_step_losses": first_losses,
        "same_work": same_work,
        "summary": summary,
        "repetitions": results,
        "profile": profile_out,
    }


def print_summary(impl: str, summary: dict[str, Any]) -> None:
    """One line per path: medians, and the Trainer's ratios to the plain loop."""
    for path, s in summary.items():
        line = f"{impl:11s} {path:8s} median {s['images_per_s']:7.2f} img/s  {1000 * s['cpu_s_per_image']:7.1f} ms CPU/img"
        line += f"  loop overhead {s['loop_overhead_ms_per_step']:.1f} ms/step"
        if "log_ms_per_step" in s:
            line += f"  self.log {s['log_ms_per_step']:.2f} ms/step"
        if path != "plain":
            line += (
                f"  ratio {s['ratio_of_medians']:.3f} (pairwise median {s['median_pairwise_ratio']:.3f},"
                f" CPU {s['cpu_ratio']:.3f}, from overheads {s['ratio_from_overhead']:.3f})"
            )
        print(line)


def impl_table(sections: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median images/s of each path under each implementation, and batched / torchvision."""
    table: dict[str, dict[str, float]] = {}
    for path in PATHS:
        row = {
            impl: s["summary"][path]["images_per_s"] for impl, s in sections.items() if s["summary"]
        }
        if len(row) == len(IMPLS):
            row["batched_over_torchvision"] = row["batched"] / row["torchvision"]
        table[path] = row
    return table


def main(argv: list[str] | None = None) -> int:
    """Generate data, run the interleaved repetitions, print and save the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="fasterrcnn_resnet18_fpn")
    parser.add_argument(
        "--size", type=int, default=128, help="generated image height and model min_size, px"
    )
    parser.add_argument("--max-size", type=int, help="model max_size (default: --size)")
    parser.add_argument("--width", type=int, help="generated image width (default: --size)")
    parser.add_argument("--impl", choices=IMPLS, default=IMPLS[0], help="Faster R-CNN code")
    parser.add_argument(
        "--compare-impl", action="store_true", help="run both implementations, --impl first"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--channels-last", action="store_true", help="batched: NHWC backbone")
    parser.add_argument(
        "--compile-backbone", action="store_true", help="batched: torch.compile backbone+FPN"
    )
    parser.add_argument(
        "--pad-multiple", type=int, help="batched: pad batches to a multiple of this, px"
    )
    parser.add_argument("--precision", choices=tuple(AUTOCAST), default="32")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="loader workers, both paths")
    parser.add_argument("--images", type=int, default=64, help="generated images (train ~70%%)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per repetition")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repetition")
    parser.add_argument("--reps", type=int, default=7, help="repetitions of each path")
    parser.add_argument("--clip", type=float, default=0.0, help="gradient clipping, both paths")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--profile", action="store_true", help="cProfile one Trainer run")
    parser.add_argument("--data", type=Path, help="generated data folder (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path("results/bench_train.json"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda, but torch sees no CUDA device", file=sys.stderr)
        return 2
    args.max_size = args.max_size or args.size
    args.width = args.width or args.size
    if args.device == "cuda":
        # Every generated image has one size: cuDNN's autotuning pays off (both paths).
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        import logging

        logging.getLogger(name).setLevel(logging.ERROR)

    tmp = tempfile.TemporaryDirectory()
    if args.data is None:
        args.data = Path(tmp.name) / "data"
    if not (args.data / "annotations" / "train.json").is_file():
        # Enough for one pass without repeating an image (the training split is ~70%).
        needed = math.ceil((args.warmup + args.steps + 1) * args.batch_size / 0.7) + 1
        generate_dataset(
            args.data,
            num_images=max(args.images, needed),
            image_size=(args.width, args.size),
            seed=0,
        )
    args.num_classes = make_data(args).num_classes
    torch.manual_seed(0)
    # The state dict is the same for both implementations: one set of initial weights.
    init = copy.deepcopy(
        build_model(
            args.model, args.num_classes, impl="torchvision", **model_kwargs(args, options=False)
        ).state_dict()
    )

    impls = list(IMPLS) if args.compare_impl else [args.impl]
    if args.compare_impl:  # the asked-for implementation first
        impls.sort(key=lambda name: name != args.impl)
    load_before = os.getloadavg()
    started = time.perf_counter()
    sections = {}
    for impl in impls:
        args.impl = impl
        sections[impl] = measure_impl(args, init)

    report = {
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "settings": {
            "model": args.model,
            "impl": impls[0],
            "impls": impls,
            "device": args.device,
            "precision": args.precision,
            "size": args.size,
            "max_size": args.max_size,
            "image_size": [args.width, args.size],
            "batch_size": args.batch_size,
            "workers": args.workers,
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "reps": args.reps,
            "clip": args.clip,
            "torch_threads": torch.get_num_threads(),
            "model_kwargs": model_kwargs(args, options=False),
            "batched_options": speedups(args),
            "optimizer": hparams(args),
            "trainer": {
                "precision": args.precision,
                "log_every_n_steps": 5,
                "logger": "Lightning default (to a temp dir)",
                "progress_bar": "default TQDMProgressBar, refresh every step",
                "callbacks": "LearningRateMonitor(step) as in the CLI; default ModelCheckpoint",
            },
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "lightning": L.__version__,
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg(),
            "bench_wall_s": time.perf_counter() - started,
        },
        # The first implementation's figures at the top, as before --compare-impl.
        **{k: v for k, v in sections[impls[0]].items() if k != "impl"},
    }
    if len(impls) > 1:
        report["by_impl"] = sections
        report["images_per_s_by_impl"] = impl_table(sections)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for impl, section in sections.items():
        print_summary(impl, section["summary"])
    if len(impls) > 1:
        for path, row in report["images_per_s_by_impl"].items():
            print(f"{path:8s} " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()))
    print(
        f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; saved {args.out}"
    )
    return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
