"""Issue 12's GPU measurements in one run of under 9 minutes; every figure lands in --out.

Stages, in order of importance, each a subprocess under `timeout` with its own cap (a stage
whose cap no longer fits the total budget is skipped and says so):

  install      the wheels in .whl/ (../shared/tools/gpu-wheels fetched them: albumentations,
               pycocotools, faster-coco-eval, jsonargparse and their needs) into /tmp/site,
               then `pip install --no-deps --no-build-isolation -e .`
  env_sync     versions and the GPU, and one batched training step of R50-FPN at 800 px,
               batch 8, 16-mixed under torch.cuda.set_sync_debug_mode("warn"): the host-device
               syncs it makes, counted by place (torchvision's implementation beside it)
  bench_train  scripts/bench_train.py, cuda 16-mixed, both implementations, Trainer against a
               plain AMP loop, R50-FPN 1066x800 images at 800 px, batch 8
  inspect      scripts/bench_inspect.py --device cuda --precision 16-mixed, R50-FPN 1333x800
  options      bench_train.py, batched only, with channels_last alone, then pad_multiple 128
  fit          `detection fit --config configs/deeppcb.yaml` from random initialisation, its
               epochs sized from bench_train's images/s to fit the budget (max_time as a guard)
  eval         scripts/eval_deeppcb.py on the DeepPCB test split, with the fit's checkpoint
  count_ops    scripts/count_ops.py (a CPU profile: the same figures on any machine)
  options      the same with compile_backbone (torch.compile of backbone+FPN: minutes of
               compiling, so last; likely skipped in one call, see below)

Files in --out (8 at most come back from the device machine): summary.json (headline figures,
each stage's exit status and wall time), log.txt (every stage's output), env_sync.json,
bench_train.json, bench_train_options.json, bench_inspect.json, deeppcb_eval.json,
count_ops.json.

Before the GPU session, on this machine, from the project root (both folders are ignored):

    mkdir -p data && cp -r ../shared/datasets/deeppcb data/deeppcb   # 50 MB; JSONs made here
    ../shared/tools/gpu-wheels                                       # .whl/, about 10 MB
    .venv/bin/python scripts/gpu_check.py --dry-run --out /tmp/gpu_check_dry   # CPU rehearsal

--dry-run runs every stage on the CPU with tiny sizes and no wheel install, to catch typos
(on a loaded 2-core machine the CPU-bound count_ops and compile stages may hit their caps).
What travels must stay under 64 MiB: the tree (~1 MB), .whl (~10 MB) and data/deeppcb
(~53 MB with its JSONs) come to ~64 MB; keep other large untracked files out of the checkout.
The one device call (about 8.5 minutes of work plus the machine's start):

    run(command="PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py --out $OUT",
        carry=[".whl", "data/deeppcb"], timeout_s=580)

Stages that the budget skipped (summary.json says "skipped") can follow in a second call, if
device time is left: the same command with `--stages count_ops options` appended.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEEPPCB = Path("data/deeppcb")  # a copy of ../shared/datasets/deeppcb, carried to the machine
WORK = Path("/tmp/gpu_check")  # checkpoints and other large things stay out of --out
BUDGET_S = 520  # all stages together; the call's timeout_s leaves room above this
TRAIN_SETTINGS = ["--model", "fasterrcnn_resnet50_fpn", "--size", "800", "--max-size", "1333"]
TRAIN_SETTINGS += ["--width", "1066", "--batch-size", "8", "--workers", "8", "--clip", "10"]
DRY_TRAIN = ["--model", "fasterrcnn_resnet18_fpn", "--size", "64", "--batch-size", "2"]
DRY_TRAIN += ["--workers", "0", "--clip", "10", "--images", "8"]
SPLITS = ("train", "val", "test")
STAGES = ("env_sync", "bench_train", "inspect", "fit", "count_ops", "options")
OPTIONS = {
    "channels_last": ["--channels-last"],
    "compile_backbone": ["--compile-backbone"],
    "pad_multiple_128": ["--pad-multiple", "128"],
}


class Run:
    """The budget, the log and the summary of one gpu_check run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.dry = args.dry_run
        self.started = time.monotonic()
        self.summary: dict[str, Any] = {"dry_run": self.dry, "stages": {}, "figures": {}}
        self.out.mkdir(parents=True, exist_ok=True)
        self.deeppcb: Path = args.deeppcb
        self.work: Path = args.work
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = (self.out / "log.txt").open("w")
        self.env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
        site = [] if self.dry else ["/tmp/site"]
        self.env["PYTHONPATH"] = os.pathsep.join([*site, str(ROOT)])

    def left(self) -> float:
        """Seconds of the budget still unspent."""
        return self.args.budget - (time.monotonic() - self.started)

    def stage(self, name: str, command: list[str], cap: float) -> int | None:
        """Run `command` under `timeout cap`; None if the budget no longer holds the cap."""
        cap = int(min(cap * (4 if self.dry else 1), self.left()))  # a loaded CPU is slow
        entry: dict[str, Any] = {"cap_s": cap, "command": " ".join(command)}
        self.summary["stages"][name] = entry
        if cap < 10:
            entry["skipped"] = "budget spent"
            self.note(f"== {name}: skipped, {self.left():.0f} s of the budget left")
            return None
        self.note(f"== {name} (cap {cap} s, {self.left():.0f} s left): {' '.join(command)}")
        start = time.monotonic()
        done = subprocess.run(
            ["timeout", "-k", "10", str(cap), *command],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        entry.update(rc=done.returncode, wall_s=round(time.monotonic() - start, 1))
        entry["timed_out"] = done.returncode in (124, 137)
        self.note(f"== {name}: exit {done.returncode} in {entry['wall_s']} s")
        self.save()
        return done.returncode

    def note(self, line: str) -> None:
        """A line in the log and on stdout."""
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def save(self) -> None:
        """Write summary.json as it stands (a later stage may be killed)."""
        self.summary["wall_s"] = round(time.monotonic() - self.started, 1)
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=2))


def read_json(path: Path) -> dict[str, Any]:
    """A stage's JSON report, or {} if the stage did not write it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------- the stages


def install(run: Run) -> None:
    """The carried wheels into /tmp/site, and the project itself (editable, no dependencies)."""
    wheels = sorted(str(p) for p in (ROOT / ".whl").glob("*.whl"))
    if not wheels:
        run.note("== install: no .whl/ folder (run ../shared/tools/gpu-wheels here first)")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    run.stage(
        "install_wheels",
        [*pip, "--no-compile", "--no-cache-dir", "--upgrade", "--target", "/tmp/site", *wheels],
        60,
    )
    # Imports work from the checkout through PYTHONPATH anyway; the install adds the console
    # script (the stages call `python -m detection.cli`, so they need not).
    run.stage("install_project", [*pip, "--no-build-isolation", "-e", "."], 40)


def env_sync(run: Run) -> None:
    """Versions, the GPU, and the syncs of one training step (the --step-check mode below)."""
    out = run.out / "env_sync.json"
    run.stage("env_sync", [sys.executable, __file__, "--step-check", str(out)] + dry(run), 90)
    report = read_json(out)
    run.summary["figures"]["syncs_per_training_step"] = {
        impl: r.get("sync_warnings") for impl, r in report.get("step", {}).items()
    }


def dry(run: Run) -> list[str]:
    """--dry-run, passed on to this script's own modes."""
    return ["--dry-run"] if run.dry else []


def train_settings(run: Run) -> list[str]:
    """bench_train.py's device, precision, model and sizes (tiny, on the CPU, in a dry run)."""
    if run.dry:
        return ["--device", "cpu", "--precision", "bf16-mixed", *DRY_TRAIN]
    return ["--device", "cuda", "--precision", "16-mixed", *TRAIN_SETTINGS]


def bench_train(run: Run) -> float | None:
    """Both implementations, Trainer and plain AMP loop; the batched Trainer's images/s."""
    out = run.out / "bench_train.json"
    reps = ["--warmup", "1", "--steps", "2"] if run.dry else ["--warmup", "5", "--steps", "20"]
    command = [sys.executable, "scripts/bench_train.py", *train_settings(run), *reps, "--reps", "1"]
    command += ["--compare-impl", "--data", str(run.work / "bench_data"), "--out", str(out)]
    run.stage("bench_train", command, 150)
    report = read_json(out)
    table = report.get("images_per_s_by_impl", {})
    ratios = {
        impl: section["summary"].get("trainer", {}).get("ratio_of_medians")
        for impl, section in report.get("by_impl", {}).items()
        if section.get("summary")
    }
    run.summary["figures"]["bench_train_images_per_s"] = table
    run.summary["figures"]["trainer_over_plain"] = ratios
    return table.get("trainer", {}).get("batched")


def options(run: Run, names: tuple[str, ...]) -> None:
    """Each speed-up option of the batched model alone, one short repetition each."""
    merged = read_json(run.out / "bench_train_options.json")
    reps = ["--warmup", "1", "--steps", "2"] if run.dry else ["--warmup", "5", "--steps", "10"]
    for name in names:
        flags = OPTIONS[name]
        out = run.work / f"bench_train_{name}.json"
        command = [sys.executable, "scripts/bench_train.py", *train_settings(run), *reps, *flags]
        command += ["--reps", "1", "--data", str(run.work / "bench_data"), "--out", str(out)]
        run.stage(f"option_{name}", command, 200 if name == "compile_backbone" else 60)
        report = read_json(out)
        merged[name] = report
        run.summary["figures"].setdefault("options_images_per_s", {})[name] = {
            path: s.get("images_per_s") for path, s in report.get("summary", {}).items()
        }
        (run.out / "bench_train_options.json").write_text(json.dumps(merged, indent=2))


def inspect(run: Run) -> None:
    """`detection inspect` against the naive loop, R50-FPN 1333x800, 16-mixed."""
    out = run.out / "bench_inspect.json"
    if run.dry:
        sizes = ["--device", "cpu", "--precision", "32", "--min-size", "64", "--max-size", "96"]
        sizes += ["--size", "96x64", "--images", "4", "--repeats", "1"]
    else:
        sizes = ["--device", "cuda", "--precision", "16-mixed", "--min-size", "800"]
        sizes += ["--max-size", "1333", "--size", "1333x800", "--images", "200"]
    command = [sys.executable, "scripts/bench_inspect.py", "--model", "fasterrcnn_resnet50_fpn"]
    command += [*sizes, "--workdir", str(run.work / "inspect"), "--out", str(out)]
    run.stage("inspect", command, 100)
    report = read_json(out)
    run.summary["figures"]["inspect"] = {
        k: report.get(k)
        for k in ("inspect_images_per_s", "naive_images_per_s", "speedup_vs_best_naive")
    }


def deeppcb_data(run: Run) -> None:
    """COCO files for DeepPCB next to its images (convert, hold out 10% of trainval)."""
    if (run.deeppcb / "val.json").is_file() and (run.deeppcb / "test.json").is_file():
        return
    python = sys.executable
    convert = [
        python,
        "scripts/convert_deeppcb.py",
        "--root",
        str(run.deeppcb),
        "--out",
        str(run.deeppcb),
    ]
    run.stage("deeppcb_convert", convert, 60)
    split = [
        python,
        "scripts/split_coco.py",
        str(run.deeppcb / "trainval.json"),
        "--holdout",
        "0.1",
    ]
    split += [
        "--seed",
        "0",
        "--out",
        str(run.deeppcb / "train.json"),
        str(run.deeppcb / "val.json"),
    ]
    run.stage("deeppcb_split", split, 30)


def fit_epochs(seconds: float, images_per_s: float | None) -> int:
    """Epochs of DeepPCB's 900 training images that fit in `seconds`, from bench_train's rate.

    bench_train's images are 1066x800; DeepPCB's 640x640 hold 0.48 of their pixels. Half the
    pixel-scaled rate leaves room for start-up, validation and the data loader.
    """
    rate = 0.5 * (images_per_s or 40.0) * (1066 * 800) / (640 * 640)
    return max(2, min(36, int((seconds - 40) * rate / 900)))


def fit(run: Run, images_per_s: float | None) -> Path | None:
    """DeepPCB from random initialisation in what the budget leaves; the checkpoint it keeps."""
    deeppcb_data(run)
    root = run.work / "fit"
    shutil.rmtree(root, ignore_errors=True)
    seconds = min(240.0, run.left() - 70)  # the eval follows (count_ops, options if time is left)
    epochs = 1 if run.dry else fit_epochs(seconds, images_per_s)
    milestones = [max(1, round(epochs * 2 / 3)), max(1, round(epochs * 8 / 9))]
    images = str(run.deeppcb)
    command = [sys.executable, "-m", "detection.cli", "fit", "--config", "configs/deeppcb.yaml"]
    command += ["--model.weights_backbone", "null", "--model.trainable_backbone_layers", "null"]
    command += [f"--data.{split}_annotations={run.deeppcb / split}.json" for split in SPLITS]
    command += ["--data.train_images", images, "--data.val_images", images]
    command += ["--data.test_images", images, "--trainer.default_root_dir", str(root)]
    command += [
        "--trainer.max_epochs",
        str(epochs),
        f"--model.optimization.milestones=[{milestones[0]}, {milestones[1]}]",
    ]
    # Warmup ~1/6 of the run (the recipe's 200 steps are ~2 of its 36 epochs).
    command += ["--model.optimization.warmup_iters", str(min(200, epochs * 113 // 6))]
    command += ["--trainer.check_val_every_n_epoch", str(max(1, epochs // 4))]
    if run.dry:
        command += ["--trainer.accelerator", "cpu", "--trainer.precision", "32"]
        command += ["--trainer.benchmark", "false", "--trainer.limit_train_batches", "2"]
        command += ["--trainer.limit_val_batches", "2", "--data.num_workers", "0"]
        command += ["--data.batch_size", "2", "--data.eval_batch_size", "2"]
        command += ["--model.min_size", "64", "--model.max_size", "64"]
    else:
        guard = max(30, int(seconds) - 35)  # Lightning starts its timer after set-up
        command += ["--trainer.max_time", f"00:00:{guard // 60:02d}:{guard % 60:02d}"]
    run.summary["figures"]["fit_settings"] = {"epochs": epochs, "budget_s": round(seconds)}
    run.stage("fit", command, seconds)
    found = sorted(root.rglob("best-*.ckpt")) or sorted(root.rglob("last*.ckpt"))
    found = found or sorted(root.rglob("*.ckpt"))
    run.summary["figures"]["fit_checkpoint"] = str(found[-1]) if found else None
    return found[-1] if found else None


def evaluate(run: Run, checkpoint: Path | None) -> None:
    """mAP at IoU 0.33 (and COCO's) on DeepPCB's test split."""
    if checkpoint is None:
        run.note("== eval: skipped, the fit left no checkpoint")
        return
    test = run.deeppcb / "test.json"
    if run.dry:  # eight test images are enough to prove the stage
        data = json.loads(test.read_text())
        keep = {image["id"] for image in data["images"][:8]}
        data["images"] = [i for i in data["images"] if i["id"] in keep]
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        test = run.work / "test_subset.json"
        test.write_text(json.dumps(data))
    out = run.out / "deeppcb_eval.json"
    command = [sys.executable, "scripts/eval_deeppcb.py", "--ckpt", str(checkpoint)]
    command += ["--test", str(test), "--images", str(run.deeppcb), "--batch-size", "8"]
    command += ["--workers", "0" if run.dry else "8", "--out", str(out)]
    run.stage("eval", command, 60)
    report = read_json(out)
    run.summary["figures"]["deeppcb"] = {
        k: report.get(k) for k in ("mAP_iou033", "coco_mAP", "coco_AP50", "F_iou033_calibrated")
    }


def count_ops(run: Run) -> None:
    """Aten and sync ops per training step, both implementations (a CPU profile)."""
    out = run.out / "count_ops.json"
    sizes = ["--model", "fasterrcnn_resnet18_fpn", "--size", "64", "--batches", "1", "2"]
    command = [sys.executable, "scripts/count_ops.py", "--out", str(out)]
    run.stage("count_ops", command + (sizes if run.dry else []), 120)
    report = read_json(out)
    run.summary["figures"]["count_ops"] = {
        impl: {k: v for k, v in report.get(impl, {}).items()} for impl in ("batched", "torchvision")
    }


# ------------------------------------------------------------------ the sync check (a mode)


def step_check(path: Path, dry_run: bool) -> int:
    """Versions, the device, and the host-device syncs of one training step of each impl."""
    import platform

    import torch

    cuda = torch.cuda.is_available() and not dry_run
    device = torch.device("cuda" if cuda else "cpu")
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "packages": package_versions(),
        "step": {},
    }
    if cuda:
        report["nvidia_smi"] = subprocess.run(
            ["nvidia-smi"], capture_output=True, text=True
        ).stdout.splitlines()[:12]
    size, count, name = (
        (64, 2, "fasterrcnn_resnet18_fpn") if dry_run else (800, 8, "fasterrcnn_resnet50_fpn")
    )
    for impl in ("batched", "torchvision"):
        report["step"][impl] = count_syncs(impl, name, size, count, device)
    path.write_text(json.dumps(report, indent=2))
    print(f"saved {path}")
    return 0


def count_syncs(impl: str, name: str, size: int, count: int, device: Any) -> dict[str, Any]:
    """Sync warnings of one mixed-precision training step (after one warm-up step)."""
    import warnings

    import torch

    from detection import build_model

    cuda = device.type == "cuda"
    torch.manual_seed(0)
    model = build_model(name, 3, impl=impl, min_size=size, max_size=size).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=cuda)
    images, targets = random_batch(size, count, device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16 if cuda else torch.bfloat16):
            loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)  # the scaler's inf check is one deliberate sync
        scaler.update()

    step()  # warm-up: lazy initialisation may sync
    if cuda:
        torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        start = time.perf_counter()
        try:
            step()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    places: dict[str, int] = {}
    for w in syncs:
        where = f"{Path(w.filename).name}:{w.lineno}"
        places[where] = places.get(where, 0) + 1
    print(f"{impl}: {len(syncs)} sync warnings in one step, {places}", flush=True)
    return {
        "model": name,
        "size": size,
        "batch": count,
        "sync_warnings": len(syncs) if cuda else None,
        "sync_places": dict(sorted(places.items(), key=lambda kv: -kv[1])),
        "step_s_with_sync_debug": round(seconds, 3),
    }


def random_batch(size: int, count: int, device: Any) -> tuple[list, list]:
    """count_ops.py's batch (three boxes an image, the last image without any) on `device`."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from count_ops import batch

    images, targets = batch(size, count, seed=1)
    images = [image.to(device) for image in images]
    return images, [{k: v.to(device) for k, v in t.items()} for t in targets]


def package_versions() -> dict[str, str | None]:
    """Versions of the packages the project runs on, as this interpreter sees them."""
    from importlib.metadata import PackageNotFoundError, version

    names = ("torch", "torchvision", "lightning", "albumentations", "pycocotools")
    names += ("faster-coco-eval", "jsonargparse", "numpy", "opencv-python-headless", "detection")
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the stages in order of importance within the budget; write summary.json."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="folder for the figures ($OUT), required")
    parser.add_argument("--dry-run", action="store_true", help="every stage, tiny, on the CPU")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all stages")
    parser.add_argument(
        "--stages",
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="stages to run (all by default; the wheel install always runs)",
    )
    parser.add_argument("--deeppcb", type=Path, default=DEEPPCB, help="DeepPCB copy (%(default)s)")
    parser.add_argument("--work", type=Path, default=WORK, help="large files (%(default)s)")
    parser.add_argument("--step-check", type=Path, help=argparse.SUPPRESS)  # the env_sync stage
    args = parser.parse_args(argv)
    if args.step_check:
        return step_check(args.step_check, args.dry_run)
    if args.out is None:
        parser.error("--out is required")
    if not (ROOT / args.deeppcb / "trainval.txt").is_file():
        print(
            f"error: {args.deeppcb} holds no DeepPCB copy (see this script's docstring)",
            file=sys.stderr,
        )
        return 2
    os.chdir(ROOT)
    run = Run(args)
    if not run.dry:
        install(run)
    stages = set(args.stages)
    rate = None
    if "env_sync" in stages:
        env_sync(run)
    if "bench_train" in stages:
        rate = bench_train(run)
    if "inspect" in stages:
        inspect(run)
    if "options" in stages:  # the cheap ones here, compiling (minutes) last
        options(run, ("channels_last", "pad_multiple_128"))
    if "fit" in stages:
        evaluate(run, fit(run, rate))
    if "count_ops" in stages:
        count_ops(run)
    if "options" in stages:
        options(run, ("compile_backbone",))
    run.save()
    run.note(json.dumps(run.summary["figures"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
