"""`lenet bench`: the tutorial's pipeline and lenet's engine, measured side by side in one process.

Both sides train the same `seed` network on the same machine in the same minute, so their ratio holds
even when the absolute numbers are noisy (shared CPUs, laptops on battery):

- tutorial: torchvision MNIST + ToTensor + DataLoader(batch 64, shuffle) + Adam, fp32, eager: the
  tutorial's training loop (its whole script: benchmarks/tutorial.py), reading the MNIST copy shipped
  with lenet (offline).
- lenet: `lenet.trainer.fit` itself, the loop `lenet train` runs, at the engine's best settings; its own
  per-epoch images/s, with the first epoch (warm-up, compile) left out.

Then inference: images/s at a large batch under `inference_mode`, and the latency of one image.
Every number is the median of several repetitions after a warm-up.

Against the hardware: the `seed` network's FLOPs per training image, counted from its stage declaration
(models/summary.py: flops_per_image), times lenet's images/s gives the achieved GFLOP/s of the training step;
divided by the CPU's fp32 FMA peak (hardware.py: detect_cpu, which says how it found each factor) it gives the
fraction of peak. Only the conv / linear FLOPs count; the memory-bound element passes are reported apart.
"""

from __future__ import annotations

import io
import shutil
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import MNIST_FILES, SHIPPED_MNIST, Split
from .errors import ConfigError
from .hardware import Cpu, detect_cpu
from .inference import pick_device, predict_split, resolve_precision, to_input
from .models import get_model
from .models.summary import NetworkFlops, flops_per_image
from .trainer.config import MAX_EPOCHS, make_config, train_size_problem
from .trainer.engine import training_network
from .trainer.loop import fit

MNIST_TRAIN_IMAGES = MNIST_FILES["train_images"].count


@dataclass
class BenchResult:
    device: str
    threads: int  # lenet's
    tutorial_threads: int  # the tutorial's: torch's default, as its script runs, unless --threads is given
    tutorial_train_images_per_s: float
    lenet_train_images_per_s: float
    speedup: float
    inference_images_per_s: float
    latency_ms: float
    lenet_settings: dict[str, Any] = field(default_factory=dict)
    lenet_first_epoch_seconds: float = 0.0  # includes warm-up (and the compile, with compile on)
    tutorial_samples: list[float] = field(default_factory=list)
    lenet_samples: list[float] = field(default_factory=list)
    inference_batch: int = 0
    inference_precision: str = "fp32"
    inference_fp32_images_per_s: float = 0.0
    torch_version: str = torch.__version__
    cpu: dict[str, Any] = field(default_factory=dict)  # hardware.Cpu.to_dict(): model, widths, cores, GHz, how
    peak_gflops: float | None = None  # fp32 FMA peak of all the CPU's cores
    flops_per_image: dict[str, int] = field(default_factory=dict)  # seed network: forward, training_step, ...
    achieved_gflops: float = 0.0  # lenet's training step: images/s x training-step FLOPs per image
    fraction_of_peak: float | None = None  # achieved / peak (None off the CPU, or with the clock unknown)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tutorial_dataset(root: Path):
    """torchvision's MNIST over the copy shipped with lenet: the `.gz` files in ROOT/MNIST/raw/ match
    torchvision's MD5 sums, so `download=True` only extracts them (no network)."""
    import torchvision.datasets as datasets
    import torchvision.transforms as transforms

    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for spec in MNIST_FILES.values():
        target = raw / f"{spec.stem}.gz"
        if not target.exists():
            shutil.copyfile(SHIPPED_MNIST / f"{spec.stem}.gz", target)
    return datasets.MNIST(root=str(root), train=True, transform=transforms.ToTensor(), download=True)


def bench_tutorial(steps: int, repeats: int, warmup_steps: int = 20) -> list[float]:
    """Training images/s of the tutorial's loop, one sample per `steps` steps (CPU, fp32, batch 64)."""
    with tempfile.TemporaryDirectory(prefix="lenet-bench-") as tmp:
        dataset = tutorial_dataset(Path(tmp))
        loader = torch.utils.data.DataLoader(dataset=dataset, batch_size=64, shuffle=True)
        model = get_model("seed")  # the tutorial's network, identical layers and initialisation
        criterion = torch.nn.CrossEntropyLoss()
        optimizer = torch.optim.Adam(model.parameters())

        def batches():
            while True:
                yield from loader

        stream = batches()

        def run(n: int) -> int:
            images_seen = 0
            for _ in range(n):
                images, labels = next(stream)
                optimizer.zero_grad()
                loss = criterion(model(images), labels)
                loss.backward()
                optimizer.step()
                images_seen += len(labels)
            return images_seen

        run(warmup_steps)
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            seen = run(steps)
            samples.append(seen / (time.perf_counter() - t0))
        return samples


def bench_lenet(epochs: int, train_size: int | None, **options: Any) -> tuple[list[float], float, int]:
    """Per-epoch training images/s of `fit` itself (the first epoch is the warm-up and is left out), the
    warm-up's seconds, and the thread count most of the timed epochs used."""
    val_size = MNIST_TRAIN_IMAGES - train_size if train_size else 0  # a smaller training set for quick checks
    cfg = make_config(epochs=epochs + 1, log_every=0, val_size=val_size, **options)
    result = fit(cfg, stream=io.StringIO(), progress_bar=False)
    timed = result.history[1:]
    threads = Counter(m.get("threads", torch.get_num_threads()) for m in timed).most_common(1)[0][0]
    return [m["images_per_s"] for m in timed], result.history[0]["seconds"], threads


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


@torch.inference_mode()
def bench_inference(device: torch.device, batch: int, repeats: int, latency_calls: int,
                    precision: str = "fp32") -> tuple[list[float], float]:
    """(images/s samples for `batch` images through `predict_split`, median single-image latency in ms)
    of an eval-mode `seed` network. Latency is fp32, one uint8 image in, its class on the host out."""
    model = get_model("seed").to(device).eval()
    channels_last = device.type == "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = torch.randint(0, 256, (batch, 28, 28), dtype=torch.uint8, device=device)
    split = Split(images, torch.zeros(batch, dtype=torch.long, device=device))
    for _ in range(2):
        predict_split(model, split, precision=precision)
    _synchronize(device)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_split(model, split, precision=precision)
        _synchronize(device)
        samples.append(batch / (time.perf_counter() - t0))

    one = images[:1]
    for _ in range(20):
        model(to_input(one, channels_last)).argmax(1)
    times = []
    for _ in range(latency_calls):
        t0 = time.perf_counter()
        int(model(to_input(one, channels_last)).argmax(1))  # int(): the answer is on the host
        times.append(time.perf_counter() - t0)
    return samples, statistics.median(times) * 1000


def run_bench(*, repeats: int = 5, tutorial_steps: int = 200, epochs: int | None = None,
              train_size: int | None = None, batch_size: int = 1024, precision: str = "auto",
              compile: bool = False, kernels: str = "auto", device: str = "auto", threads: int | None = None,
              inference_batch: int = 10000, latency_calls: int = 200,
              tutorial_threads: int | None = None, fma_units: int | None = None,
              cpu_ghz: float | None = None) -> BenchResult:
    """Measure everything; `repeats` samples per number (lenet: `epochs` timed epochs, default `repeats`).
    torch's thread count is set for each side and restored at the end. `fma_units` / `cpu_ghz` override
    the CPU detection (hardware.detect_cpu)."""
    check_lenet_side(repeats, epochs, train_size)
    dev = pick_device(device)
    precision = resolve_precision(precision, dev)
    cpu = detect_cpu(fma_units=fma_units, ghz=cpu_ghz)  # first: a bad override fails before the measuring
    flops = flops_per_image(get_model("seed"))
    # The tutorial runs as its script does, with torch's default thread count (or --threads for both sides);
    # lenet as `lenet train` runs: its thread policy adapts the count during the run (trainer/threads.py)
    # unless --threads pins it. On idle cores both are the core count; on a busy machine they differ, and the
    # JSON records both (lenet's: the count most of its timed epochs used).
    before = torch.get_num_threads()
    tutorial_threads = tutorial_threads or threads or before
    try:
        torch.set_num_threads(tutorial_threads)
        tutorial = bench_tutorial(tutorial_steps, repeats)
        # Throughput does not depend on the learning rate; Adam as in the tutorial, so only the engine differs.
        settings = {"batch_size": batch_size, "precision": precision, "compile": compile, "kernels": kernels,
                    "device": device}
        lenet_samples, first_epoch, threads = bench_lenet(epochs or repeats, train_size, threads=threads,
                                                          **settings)
        torch.set_num_threads(threads)
        # record what "auto" chose, so a result says which kernels produced it
        seed_net = get_model("seed")
        chosen = training_network(seed_net, dev, kernels, precision, batch_size, compile)
        settings["kernels"] = "conv" if chosen is seed_net else "matmul"
        inference, latency = bench_inference(dev, inference_batch, repeats, latency_calls, precision)
        inference_fp32 = inference if precision == "fp32" else bench_inference(dev, inference_batch, repeats, 1)[0]
    finally:
        torch.set_num_threads(before)
    tutorial_ips, lenet_ips = statistics.median(tutorial), statistics.median(lenet_samples)
    achieved = lenet_ips * flops.training_step / 1e9
    peak = cpu.peak_gflops if dev.type == "cpu" else None
    return BenchResult(device=str(dev), threads=threads, tutorial_threads=tutorial_threads,
                       tutorial_train_images_per_s=tutorial_ips,
                       lenet_train_images_per_s=lenet_ips, speedup=lenet_ips / tutorial_ips,
                       inference_images_per_s=statistics.median(inference), latency_ms=latency,
                       lenet_settings=settings, lenet_first_epoch_seconds=first_epoch,
                       tutorial_samples=tutorial, lenet_samples=lenet_samples, inference_batch=inference_batch,
                       inference_precision=precision, inference_fp32_images_per_s=statistics.median(inference_fp32),
                       cpu=cpu.to_dict(), peak_gflops=cpu.peak_gflops, flops_per_image=flop_counts(flops),
                       achieved_gflops=achieved, fraction_of_peak=None if peak is None else achieved / peak)


def check_lenet_side(repeats: int, epochs: int | None, train_size: int | None) -> None:
    """ConfigError, before anything is measured, for a lenet side that `fit` would refuse only after the
    tutorial's side has run, and then by the values bench derives (--val-size, the warm-up epoch added), not
    by the flag the user gave."""
    if train_size is not None and train_size > MNIST_TRAIN_IMAGES:
        raise ConfigError(train_size_problem(train_size, MNIST_TRAIN_IMAGES, zero_means_all=False))
    timed = epochs or repeats
    if timed >= MAX_EPOCHS:
        flag = "--epochs" if epochs else "--repeats"  # without --epochs, --repeats is lenet's timed epochs
        raise ConfigError(f"{flag} {timed}: lenet trains at most {MAX_EPOCHS:,} epochs, its warm-up epoch included; "
                          f"give {flag} {MAX_EPOCHS - 1} or less")


def flop_counts(flops: NetworkFlops) -> dict[str, int]:
    """The JSON form of summary.NetworkFlops: per image, weighted (conv / linear) and element-wise apart."""
    return {"forward": flops.forward, "training_step": flops.training_step, "other_forward": flops.other_forward,
            "other_backward": flops.other_backward}


def hardware_line(r: BenchResult) -> str:
    """One line: the training step's FLOPs, achieved GFLOP/s and the fraction of the CPU's fp32 peak."""
    f = r.flops_per_image
    fraction = "unknown peak" if r.fraction_of_peak is None else f"{r.fraction_of_peak:.1%} of"
    peak = "" if r.peak_gflops is None else f" {r.peak_gflops:,.0f} GFLOP/s fp32 peak"
    return (f"hardware: {f['training_step'] / 1e6:.2f} MFLOP per training image (forward {f['forward'] / 1e6:.2f}) "
            f"x {r.lenet_train_images_per_s:,.0f} images/s = {r.achieved_gflops:.1f} GFLOP/s, {fraction}{peak} "
            f"({r.cpu['model']}, {r.cpu['cores']} cores; lenet used {r.threads} threads)")


def format_result(r: BenchResult) -> str:
    s = r.lenet_settings
    lines = [
        f"device {r.device}, threads: tutorial {r.tutorial_threads}, lenet {r.threads}; torch {r.torch_version}",
        f"training, seed network (median of {len(r.tutorial_samples)} / {len(r.lenet_samples)} samples, warm-up "
        "excluded):",
        f"  tutorial (torchvision + DataLoader, batch 64, fp32) {r.tutorial_train_images_per_s:>10,.0f} images/s",
        f"  lenet engine (batch {s['batch_size']}, {s['precision']}, {s['kernels']} kernels"
        f"{', compiled' if s['compile'] else ''})"
        f"  {r.lenet_train_images_per_s:>10,.0f} images/s",
        f"  speedup {r.speedup:.1f}x   (lenet's first epoch, with warm-up: {r.lenet_first_epoch_seconds:.1f} s)",
        f"inference, {r.inference_batch} images: {r.inference_images_per_s:,.0f} images/s ({r.inference_precision}; "
        f"fp32: {r.inference_fp32_images_per_s:,.0f})",
        f"latency, one image: {r.latency_ms:.3f} ms",
        hardware_line(r),
        f"  peak: {Cpu.from_dict(r.cpu).describe()}",
        "  detected: " + "; ".join(f"{k} from {v}" for k, v in r.cpu["how"].items()),
    ]
    return "\n".join(lines)
