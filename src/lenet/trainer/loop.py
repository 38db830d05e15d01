"""The training loop, readable top to bottom: `fit` runs one config, epoch by epoch, and reports test accuracy.

    fit            set the process state, build the engine, resume, then per epoch:
    train_epoch      one pass over the shuffled training images (one `train_step` per batch)
    end_epoch        validation accuracy, the epoch's line, the checkpoint, the caller's hook
    finish         test accuracy, the final checkpoint

`run_training` is what `lenet.train(...)` and `lenet train` call: it resolves the config (trainer/config.py),
then fits it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn
from tqdm import tqdm

from .. import checkpoint
from .._io import atomic_write_json, atomic_write_text
from ..inference import EvalResult, evaluate, pick_device, to_input
from ..optim import EpochHook, lr_multiplier
from .config import TrainConfig, resolve_config
from .engine import Engine, augmentation_generator, build_engine, epoch_permutation
from .state import training_state

_MODULE_START = time.perf_counter()

EpochCallback = Callable[[int, dict[str, Any]], None]


@dataclass(frozen=True)
class TrainResult:
    model: nn.Module
    config: TrainConfig
    history: list[dict[str, Any]]  # one dict of metrics per epoch, as in metrics.jsonl
    test: EvalResult
    out: Path | None
    wall_seconds: float  # from process start (see process_seconds)


def process_seconds() -> float:
    """Seconds since this process started (Linux: from /proc, so `import torch` is counted); elsewhere,
    since the trainer was imported."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _MODULE_START


def run_training(*, recipe: str | None = None, resume: str | os.PathLike | None = None,
                 progress_bar: bool | None = False, command: str | None = None, **options: Any) -> TrainResult:
    """Train with `options` (TrainConfig fields) over `recipe`; with `resume`, continue that run folder
    (only `epochs` may change). Process-wide torch state is restored afterwards (trainer/state.py).

    `command` is recorded in the run's model.json as what made it (`lenet train` passes its command line);
    by default, this call written out."""
    given = {"recipe": recipe, "resume": resume, **options}
    command = command or "lenet.train({})".format(", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None))
    cfg = resolve_config(recipe=recipe, resume=resume, **options)
    return fit(cfg, resume=resume, progress_bar=progress_bar, command=command)


def fit(cfg: TrainConfig, *, resume: str | os.PathLike | None = None, stream: TextIO | None = None,
        progress_bar: bool | None = None, on_epoch_end: EpochCallback | None = None,
        command: str | None = None) -> TrainResult:
    """Train `cfg.model` on `cfg.dataset` and report test accuracy.

    With `resume`, continue the run saved in that folder. `on_epoch_end(epoch, metrics)` is called after
    each epoch's checkpoint is on disk (tests use it to interrupt a run). `progress_bar=None`: a bar when
    stderr is a terminal."""
    stream = stream or sys.stdout
    device = pick_device(cfg.device)
    with training_state(cfg, device):
        engine = build_engine(cfg, device, command)
        start_epoch, history = _start(engine, resume, stream)
        engine.model.train()
        for epoch in range(start_epoch, cfg.epochs):
            metrics = train_epoch(engine, epoch, stream, progress_bar)
            end_epoch(engine, metrics, history, stream, on_epoch_end)
        return finish(engine, history, stream)


def _start(engine: Engine, resume: str | os.PathLike | None, stream: TextIO) -> tuple[int, list[dict[str, Any]]]:
    """(first epoch to run, history so far): the saved progress when resuming (weights, optimizer and RNG
    state restored), else (0, []). Writes config.json into the run folder."""
    cfg = engine.cfg
    start_epoch, history = 0, []
    if resume is not None:
        progress = checkpoint.load_training_state(resume, engine.model, engine.optimizer)
        start_epoch, history = progress["epoch"], progress["history"]
        print(f"Resuming {resume} after epoch {start_epoch}/{cfg.epochs}", file=stream)
    if cfg.out:
        atomic_write_json(Path(cfg.out) / "config.json", cfg.to_dict())
    return start_epoch, history


def train_epoch(engine: Engine, epoch: int, stream: TextIO, progress_bar: bool | None) -> dict[str, Any]:
    """One pass over the training images in the epoch's order; returns the epoch's metrics."""
    cfg, train, steps = engine.cfg, engine.train, engine.steps_per_epoch
    order = epoch_permutation(len(train), cfg.seed, epoch, engine.device)
    augment_rng = augmentation_generator(cfg.seed, epoch, engine.device)
    if isinstance(engine.optimizer, EpochHook):
        # e.g. SDLM re-estimates its Hessian diagonal on a sample before each pass
        sample = order[:500]
        engine.optimizer.prepare_epoch(engine.model, engine.loss_fn,
                                       to_input(train.images[sample], engine.channels_last), train.labels[sample])
    # Running sums stay on the device: reading them every step would sync host and device each step.
    loss_sum = torch.zeros((), device=engine.device)
    correct = torch.zeros((), dtype=torch.long, device=engine.device)
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not progress_bar if progress_bar is not None else None, file=sys.stderr)
    t0 = time.perf_counter()
    for step in bar:
        _set_lr(engine, epoch * steps + step)
        idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        x, y = _batch(engine, idx, augment_rng)
        loss = train_step(engine, x, y, loss_sum, correct)
        if cfg.log_every and (step + 1) % cfg.log_every == 0:
            bar.write(f"Epoch [{epoch + 1}/{cfg.epochs}], Step [{step + 1}/{steps}], Loss: {loss.item():.4f}",
                      file=stream)
    n = len(train)
    metrics = {"epoch": epoch + 1, "train_loss": loss_sum.item() / n, "train_accuracy": correct.item() / n * 100}
    seconds = time.perf_counter() - t0  # after .item(): the device has finished the epoch
    bar.close()
    metrics.update({"images_per_s": n / seconds, "seconds": seconds, "lr": engine.optimizer.param_groups[0]["lr"]})
    return metrics


def _set_lr(engine: Engine, global_step: int) -> None:
    cfg = engine.cfg
    lr = cfg.lr * lr_multiplier(cfg.schedule, global_step, engine.total_steps, engine.steps_per_epoch,
                                engine.warmup_steps)
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def _batch(engine: Engine, idx: torch.Tensor, augment_rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (network input) and labels at `idx` of the resident training split."""
    y = engine.train.labels[idx]
    images = engine.train.images[idx]
    x = images if engine.raw_pixels else to_input(images, engine.channels_last)
    if engine.augmentation is not None:
        x = engine.augmentation(x, augment_rng)
    return x, y


def train_step(engine: Engine, x: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor,
               correct: torch.Tensor) -> torch.Tensor:
    """One optimizer step on (x, y); adds the batch's summed loss and correct count to the running sums in
    place. Returns the batch's mean loss."""
    # Only full batches go through the compiled network (one compile per shape).
    net = engine.step_model if len(y) == engine.cfg.batch_size else engine.train_net
    if engine.cuda_graphs and net is engine.step_model:
        torch.compiler.cudagraph_mark_step_begin()  # the previous step's graph outputs are dead
    with engine.autocast():
        scores = net(x)
        loss = engine.loss_fn(scores, y)
    # read the outputs before backward: with CUDA graphs their memory is reused by the next replay
    loss_sum += loss.detach() * len(y)
    correct += (scores.detach().argmax(1) == y).sum()
    engine.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    engine.optimizer.step()
    return loss


def end_epoch(engine: Engine, metrics: dict[str, Any], history: list[dict[str, Any]], stream: TextIO,
              on_epoch_end: EpochCallback | None) -> None:
    """Validation accuracy, the epoch's summary line, the run folder's files, then the caller's hook."""
    cfg = engine.cfg
    if engine.data.val is not None:
        metrics["val_accuracy"] = evaluate(engine.model, engine.data.val).accuracy
    history.append(metrics)
    val = f", val acc {metrics['val_accuracy']:.2f}%" if "val_accuracy" in metrics else ""
    print(f"Epoch {metrics['epoch']}/{cfg.epochs}: train loss {metrics['train_loss']:.4f}, train acc "
          f"{metrics['train_accuracy']:.2f}%{val}, {metrics['images_per_s']:,.0f} images/s, "
          f"{metrics['seconds']:.1f} s", file=stream)
    if cfg.out:
        save_epoch(Path(cfg.out), engine, history)
    if on_epoch_end is not None:
        on_epoch_end(metrics["epoch"], metrics)


def save_epoch(out: Path, engine: Engine, history: list[dict[str, Any]]) -> None:
    """The resume state, the checkpoint and metrics.jsonl after an epoch."""
    epoch = history[-1]["epoch"]
    # resume state first: if we die between the two writes, resuming redoes nothing twice
    checkpoint.save_training_state(out, engine.model, engine.optimizer, {"epoch": epoch, "history": history})
    checkpoint.save_checkpoint(out, engine.model, record_info(engine, history, history[-1]))
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in history))


def finish(engine: Engine, history: list[dict[str, Any]], stream: TextIO) -> TrainResult:
    """Test accuracy of the trained network, the final checkpoint, and the result."""
    cfg, model = engine.cfg, engine.model
    model.eval()
    test = evaluate(model, engine.data.test)
    wall = process_seconds()
    print(f"Test Accuracy: {test.accuracy:.2f}%", file=stream)
    print(f"Wall time: {wall:.1f} s from process start", file=stream)
    out = Path(cfg.out) if cfg.out else None
    if out:
        metrics = {**(history[-1] if history else {}), "test_accuracy": test.accuracy, "test_errors": test.errors}
        checkpoint.save_checkpoint(out, model, record_info(engine, history, metrics))
    return TrainResult(model, cfg, history, test, out, wall)


def record_info(engine: Engine, history: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
    """What the run folder's model.json records besides the weights: config, command, progress, metrics."""
    cfg = engine.cfg
    return {"config": cfg.to_dict(), "command": engine.command, "epoch": history[-1]["epoch"] if history else 0,
            "dataset": cfg.dataset, "metrics": metrics, "history": history}
