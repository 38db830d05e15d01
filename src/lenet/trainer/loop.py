"""The training loop, readable top to bottom: `fit` runs one config, epoch by epoch, and reports test accuracy.

    fit            lock the run folder, set the process state, build the engine, resume, then per epoch:
    train_epoch      one pass over the shuffled training images (one `train_step` per batch), with a
                     mid-epoch checkpoint every --checkpoint-every minutes; each step is timed for the
                     thread policy, which may change the thread count (trainer/threads.py)
    end_epoch        validation accuracy, the epoch's line, the checkpoint, the caller's hook
    finish         test accuracy, the final checkpoint

Checkpoints are committed atomically into the run folder (trainer/runfolder.py). A non-finite loss or
weight stops the run (TrainingError) before anything is saved, so the last good checkpoint stays current;
checked when an epoch ends and before each mid-epoch checkpoint, not after every step (that would sync host
and device every step).

`run_training` is what `lenet.train(...)` and `lenet train` call: it resolves the config (trainer/config.py),
then fits it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn
from tqdm import tqdm

from .. import checkpoint
from ..checkpoint import METRICS_NAME, RESUME_NAME, SIDECAR_NAME, WEIGHTS_NAME
from ..errors import CheckpointError, ConfigError, Terminated, TrainingError
from ..inference import EvalResult, emulated_bf16_warning, evaluate, pick_device, resolve_precision, to_input
from ..optim import EpochHook, lr_multiplier
from .config import TrainConfig, resolve_config
from .engine import Engine, augmentation_generator, build_engine, epoch_permutation
from .runfolder import RunFolder, check_agreement, config_identity, open_run, write_config
from .state import training_state
from .threads import ThreadPolicy

_MODULE_START = time.perf_counter()

EpochCallback = Callable[[int, dict[str, Any]], None]
# Metrics that measure the machine, not the run: kept out of resume.safetensors, so identical runs write
# identical bytes (metrics.jsonl and model.json keep them). The thread count adapts to the machine's load
# (trainer/threads.py).
TIMINGS = ("images_per_s", "seconds", "threads", "thread_switches")
# The mid-epoch state beside the weights, optimizer and global RNG in resume.safetensors.
POSITION_TENSORS = ("loss_sum", "correct", "augment_rng")
EMA_PREFIX = "ema."  # the moving average's tensors among resume.safetensors' extra tensors


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


def startup_line() -> str:
    """How long this process took to get here, its first training step, and how much of that was imports
    (interpreter, torch and lenet's modules, up to this module's): `lenet speedrun` reports both, since on a
    slow CPU `import torch` alone can be half of a short run."""
    now = process_seconds()
    imports = now - (time.perf_counter() - _MODULE_START)
    return f"Start-up: {now:.2f} s from process start to the first step (imports {imports:.2f} s)"


@dataclass
class Position:
    """Where a run continues: after `epoch` whole epochs and `step` steps of the next one (0: at its start),
    `seconds` into it, with the running sums and augmentation state those steps left (`tensors`)."""

    epoch: int = 0
    step: int = 0
    seconds: float = 0.0
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def describe(self, steps: int) -> str:
        return f"epoch {self.epoch + 1} at step {self.step}/{steps}" if self.step else f"epoch {self.epoch}"


def run_training(*, recipe: str | None = None, resume: str | os.PathLike | None = None,
                 progress_bar: bool | None = False, command: str | None = None, overwrite: bool = False,
                 **options: Any) -> TrainResult:
    """Train with `options` (TrainConfig fields) over `recipe`; with `resume`, continue that run folder
    (only `epochs` and how it runs may change: config.RESUME_MAY_CHANGE); with `overwrite`, replace the run
    that `out` holds. Process-wide torch state is restored afterwards (trainer/state.py).

    `command` is recorded in the run's model.json as what made it (`lenet train` passes its command line);
    by default, this call written out."""
    given = {"recipe": recipe, "resume": resume, **options}
    command = command or "lenet.train({})".format(", ".join(f"{k}={v!r}" for k, v in given.items() if v is not None))
    cfg = resolve_config(recipe=recipe, resume=resume, **options)
    return fit(cfg, resume=resume, progress_bar=progress_bar, command=command, overwrite=overwrite)


def fit(cfg: TrainConfig, *, resume: str | os.PathLike | None = None, stream: TextIO | None = None,
        progress_bar: bool | None = None, on_epoch_end: EpochCallback | None = None,
        command: str | None = None, overwrite: bool = False) -> TrainResult:
    """Train `cfg.model` on `cfg.dataset` and report test accuracy.

    With `resume`, continue the run saved in that folder; with `overwrite`, replace the run `cfg.out` holds
    (without either, a folder holding a run is refused). `on_epoch_end(epoch, metrics)` is called after
    each epoch's checkpoint is on disk (tests use it to interrupt a run). `progress_bar=None`: a bar when
    stderr is a terminal. SIGTERM (errors.Terminated) is re-raised saying where the last checkpoint is."""
    stream = stream or sys.stdout
    device = pick_device(cfg.device)
    cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device))
    warning = emulated_bf16_warning(cfg.precision, device)
    if warning:
        print(warning, file=stream)
    with open_run(cfg, resume, overwrite, command) as run:
        try:
            with training_state(cfg, device):
                engine = build_engine(cfg, device, command)
                position, history = _start(engine, run, resume, stream)
                threads = ThreadPolicy.for_run(cfg, device, engine.steps_per_epoch, _writer(stream))
                print(startup_line(), file=stream)
                engine.model.train()
                for epoch in range(position.epoch, cfg.epochs):
                    start = position if epoch == position.epoch else None
                    metrics = train_epoch(engine, epoch, stream, progress_bar, run, history, start, threads)
                    end_epoch(engine, run, metrics, history, stream, on_epoch_end)
                threads.close()
                return finish(engine, run, history, stream)
        except Terminated:
            raise Terminated(run.terminated_detail()) from None


def _writer(stream: TextIO) -> Callable[[str], None]:
    """Print a line to `stream` above a progress bar, if one is showing."""
    return lambda text: tqdm.write(text, file=stream)


def _start(engine: Engine, run: RunFolder, resume: str | os.PathLike | None,
           stream: TextIO) -> tuple[Position, list[dict[str, Any]]]:
    """(where to start, history so far): the saved position when resuming (weights, optimizer and RNG
    state restored), else the start. Writes config.json into the run folder."""
    position, history = Position(), []
    if resume is not None:
        position, history = _resume(engine, Path(resume), stream)
        same = run.path is not None and os.path.exists(resume) and os.path.samefile(run.path, resume)
        if same and (position.epoch or position.step):
            run.committed = position.describe(engine.steps_per_epoch)
    if run.path is not None:
        write_config(run.path, engine.cfg)
    return position, history


def _resume(engine: Engine, folder: Path, stream: TextIO) -> tuple[Position, list[dict[str, Any]]]:
    cfg = engine.cfg
    nothing = not checkpoint.run_file(folder, RESUME_NAME).exists() and not os.path.lexists(folder / WEIGHTS_NAME)
    if nothing and (folder / "config.json").is_file():
        # killed before its first checkpoint: the config alone fixes the run, so starting over is resuming
        print(f"Resuming {folder}: no checkpoint was written yet, starting its run from the beginning", file=stream)
        return Position(), []
    progress, tensors = checkpoint.restore_training_state(folder, engine.model, engine.optimizer)
    check_agreement(folder, cfg, progress)
    restore_ema(engine, tensors, folder)
    position = Position(progress["epoch"], progress.get("step", 0), progress.get("seconds", 0.0), tensors)
    if position.step and set(POSITION_TENSORS) - set(tensors):
        raise CheckpointError(f"{checkpoint.run_file(folder, RESUME_NAME)} is damaged (a mid-epoch state without "
                              f"its {', '.join(POSITION_TENSORS)}): restore the run folder from a copy")
    _check_epochs_left(folder, cfg.epochs, position)
    history = _with_timings(progress["history"], checkpoint.run_file(folder, METRICS_NAME))
    if position.step:
        where = f"in epoch {position.epoch + 1}/{cfg.epochs} at step {position.step}/{engine.steps_per_epoch}"
    else:
        where = f"after epoch {position.epoch}/{cfg.epochs}"
    print(f"Resuming {folder} {where}", file=stream)
    return position, history


def _check_epochs_left(folder: Path, epochs: int, position: Position) -> None:
    """Refuse a resume whose --epochs would end the run before the point it has already reached."""
    reached = position.epoch + (1 if position.step else 0)  # a mid-epoch state is inside epoch `reached`
    if epochs < reached:
        done = (f"is in epoch {reached}" if position.step else f"has trained {reached} epoch{'s' * (reached > 1)}")
        raise ConfigError(f"{folder} {done}; --epochs {epochs} would end it before that: give --epochs {reached} "
                          "or more, or leave it out")


def ema_tensors(engine: Engine) -> dict[str, torch.Tensor]:
    """The moving average's state for resume.safetensors ("ema.NAME"); none without --ema."""
    if engine.ema is None:
        return {}
    return {f"{EMA_PREFIX}{k}": v for k, v in engine.ema.state_dict().items()}


def restore_ema(engine: Engine, tensors: dict[str, torch.Tensor], folder: Path) -> None:
    """Put the saved moving average back (`tensors`: resume.safetensors' extra tensors)."""
    if engine.ema is None:
        return
    saved = {k[len(EMA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EMA_PREFIX)}
    try:
        engine.ema.load_state_dict(saved)
    except RuntimeError as e:
        raise CheckpointError(f"{checkpoint.run_file(folder, RESUME_NAME)} is damaged (its moving average of the "
                              f"weights does not fit the network: {str(e).splitlines()[0]}): restore the run folder "
                              "from a copy") from None


def _with_timings(history: list[dict[str, Any]], metrics: Path) -> list[dict[str, Any]]:
    """`history` from resume.safetensors (timings left out) with the timings of its generation's metrics.jsonl."""
    try:
        rows = {row["epoch"]: row for row in map(json.loads, metrics.read_text(encoding="utf-8").splitlines())}
    except (OSError, ValueError, KeyError, TypeError):
        rows = {}
    return [{**m, **{k: rows[m["epoch"]][k] for k in TIMINGS if k in rows.get(m["epoch"], {})}} for m in history]


def train_epoch(engine: Engine, epoch: int, stream: TextIO, progress_bar: bool | None, run: RunFolder | None = None,
                history: list[dict[str, Any]] | None = None, start: Position | None = None,
                threads: ThreadPolicy | None = None) -> dict[str, Any]:
    """One pass over the training images in the epoch's order (from `start`'s step, when it resumes one
    mid-way), committing a mid-epoch checkpoint to `run` when one is due, timing every step for the thread
    policy `threads` (default: the process's count, fixed); returns the epoch's metrics."""
    cfg, train, steps = engine.cfg, engine.train, engine.steps_per_epoch
    run, history = run or RunFolder(None), history if history is not None else []
    threads = threads or ThreadPolicy(None, _writer(stream))
    start = start if start is not None and start.step else Position(epoch)
    order = epoch_permutation(len(train), cfg.seed, epoch, engine.device)
    augment_rng = augmentation_generator(cfg.seed, epoch, engine.device)
    _prepare_epoch(engine, order, resumed=start.step > 0)
    loss_sum, correct = _running_sums(engine, start, augment_rng)
    bar = tqdm(range(start.step, steps), initial=start.step, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               leave=False, disable=not progress_bar if progress_bar is not None else None, file=sys.stderr)
    t0 = time.perf_counter()
    threads.begin_epoch(epoch, start.step)
    for step in bar:
        _set_lr(engine, epoch * steps + step)
        idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        x, y = _batch(engine, idx, augment_rng)
        loss = train_step(engine, x, y, loss_sum, correct)
        threads.step(len(y))
        if cfg.log_every and (step + 1) % cfg.log_every == 0:
            bar.write(f"Epoch [{epoch + 1}/{cfg.epochs}], Step [{step + 1}/{steps}], Loss: {loss.item():.4f}",
                      file=stream)
        if run.due() and step + 1 < steps:
            sums = {"loss_sum": loss_sum, "correct": correct, "augment_rng": augment_rng.get_state()}
            save_mid_epoch(engine, run, history, Position(epoch, step + 1, start.seconds + time.perf_counter() - t0,
                                                          sums))
    check_finite(engine, run, epoch + 1, loss_sum)
    n = len(train)
    metrics = {"epoch": epoch + 1, "train_loss": loss_sum.item() / n, "train_accuracy": correct.item() / n * 100}
    seconds = start.seconds + time.perf_counter() - t0  # after .item(): the device has finished the epoch
    bar.close()
    metrics.update({"images_per_s": n / seconds, "seconds": seconds, "lr": engine.optimizer.param_groups[0]["lr"],
                    **threads.end_epoch()})
    return metrics


def _prepare_epoch(engine: Engine, order: torch.Tensor, resumed: bool) -> None:
    """The optimizer's work before a pass (e.g. SDLM re-estimates its Hessian diagonal on a sample). An
    epoch resumed mid-way keeps the estimate made at its start, which the restored optimizer state holds."""
    if not isinstance(engine.optimizer, EpochHook):
        return
    kept = None
    if resumed:  # copies of the per-parameter dicts: prepare_epoch replaces their entries
        state = engine.optimizer.state_dict()
        kept = {"state": {i: dict(s) for i, s in state["state"].items()}, "param_groups": state["param_groups"]}
    sample = order[:500]
    engine.optimizer.prepare_epoch(engine.model, engine.loss_fn,
                                   to_input(engine.train.images[sample], engine.channels_last),
                                   engine.train.labels[sample])
    if kept is not None:
        engine.optimizer.load_state_dict(kept)


def _running_sums(engine: Engine, start: Position,
                  augment_rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The epoch's summed loss and correct count (zero, or as `start` left them; the augmentation generator
    too). They stay on the device: reading them every step would sync host and device each step."""
    loss_sum = torch.zeros((), device=engine.device)
    correct = torch.zeros((), dtype=torch.long, device=engine.device)
    if start.step:
        loss_sum.copy_(start.tensors["loss_sum"])
        correct.copy_(start.tensors["correct"])
        augment_rng.set_state(start.tensors["augment_rng"])
    return loss_sum, correct


def check_finite(engine: Engine, run: RunFolder, epoch: int, loss_sum: torch.Tensor) -> None:
    """Stop the run (TrainingError) when the running loss or a weight is not finite: one host sync."""
    params = [p.detach().isfinite().all() for p in engine.model.parameters()]
    if torch.stack([loss_sum.isfinite(), *params]).all().item():
        return
    loss = loss_sum.item()
    what = f"loss became {loss}" if not math.isfinite(loss) else "weights became non-finite"
    raise TrainingError(f"the training {what} in epoch {epoch}; {run.kept()}; lower --lr (now {engine.cfg.lr}) "
                        "or add --warmup-epochs, and check the data")


def _set_lr(engine: Engine, global_step: int) -> None:
    cfg = engine.cfg
    lr = cfg.lr * lr_multiplier(cfg.schedule, global_step, engine.total_steps, engine.steps_per_epoch,
                                engine.warmup_steps)
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def _batch(engine: Engine, idx: torch.Tensor, augment_rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (network input) and labels at `idx` of the resident training split."""
    # index_select, not images[idx]: the same gather in 0.01 ms instead of 0.22 ms at batch 1024 (CPU)
    y = engine.train.labels.index_select(0, idx)
    images = engine.train.images.index_select(0, idx)
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
    if engine.ema is not None:
        engine.ema.update_parameters(engine.model)
    return loss


def end_epoch(engine: Engine, run: RunFolder, metrics: dict[str, Any], history: list[dict[str, Any]],
              stream: TextIO, on_epoch_end: EpochCallback | None) -> None:
    """Validation accuracy, the epoch's summary line, the run folder's files, then the caller's hook."""
    cfg = engine.cfg
    if engine.data.val is not None:
        metrics["val_accuracy"] = evaluate(engine.eval_model, engine.data.val).accuracy
        if engine.ema is not None:  # the raw weights too: what the average adds, measured on every run
            metrics["val_accuracy_raw"] = evaluate(engine.model, engine.data.val).accuracy
    history.append(metrics)
    val = f", val acc {metrics['val_accuracy']:.2f}%" if "val_accuracy" in metrics else ""
    if "val_accuracy_raw" in metrics:
        val += f" (without the moving average {metrics['val_accuracy_raw']:.2f}%)"
    print(f"Epoch {metrics['epoch']}/{cfg.epochs}: train loss {metrics['train_loss']:.4f}, train acc "
          f"{metrics['train_accuracy']:.2f}%{val}, {metrics['images_per_s']:,.0f} images/s, "
          f"{metrics['seconds']:.1f} s", file=stream)
    if run.path is not None:
        save_epoch(engine, run, history)
    if on_epoch_end is not None:
        on_epoch_end(metrics["epoch"], metrics)


def save_epoch(engine: Engine, run: RunFolder, history: list[dict[str, Any]]) -> None:
    """Commit the checkpoint, the resume state and metrics.jsonl after an epoch, in one step."""
    epoch = history[-1]["epoch"]
    files = checkpoint.checkpoint_files(engine.eval_model, record_info(engine, history, history[-1]))
    progress = _progress(engine, history, Position(epoch))
    files[RESUME_NAME] = checkpoint.training_state_bytes(engine.model, engine.optimizer, progress, ema_tensors(engine))
    files[METRICS_NAME] = "".join(json.dumps(m) + "\n" for m in history).encode()
    run.commit(files, keep=(), what=f"epoch {epoch}")


def save_mid_epoch(engine: Engine, run: RunFolder, history: list[dict[str, Any]], position: Position) -> None:
    """Commit a mid-epoch resume state; the weights and record stay those of the last whole epoch."""
    check_finite(engine, run, position.epoch + 1, position.tensors["loss_sum"])
    progress = _progress(engine, history, position)
    data = checkpoint.training_state_bytes(engine.model, engine.optimizer, progress,
                                           {**position.tensors, **ema_tensors(engine)})
    run.commit({RESUME_NAME: data}, keep=(WEIGHTS_NAME, SIDECAR_NAME, METRICS_NAME),
               what=position.describe(engine.steps_per_epoch))


def _progress(engine: Engine, history: list[dict[str, Any]], position: Position) -> dict[str, Any]:
    """The JSON part of resume.safetensors: the position, the history (timings aside) and the config's hash."""
    return {"epoch": position.epoch, "step": position.step, "seconds": position.seconds,
            "history": [{k: v for k, v in m.items() if k not in TIMINGS} for m in history],
            "config_sha256": config_identity(engine.cfg.to_dict())}


def finish(engine: Engine, run: RunFolder, history: list[dict[str, Any]], stream: TextIO) -> TrainResult:
    """Test accuracy of the trained network, the final checkpoint, and the result."""
    cfg, model = engine.cfg, engine.eval_model
    engine.model.eval()
    model.eval()
    test = evaluate(model, engine.data.test)
    print(f"Test Accuracy: {test.accuracy:.2f}%", file=stream)
    metrics = {**(history[-1] if history else {}), "test_accuracy": test.accuracy, "test_errors": test.errors}
    if engine.ema is not None:  # reported beside, never used to choose: the saved weights are the average's
        raw = evaluate(engine.model, engine.data.test)
        print(f"Test Accuracy without the moving average: {raw.accuracy:.2f}%", file=stream)
        metrics.update(test_accuracy_raw=raw.accuracy, test_errors_raw=raw.errors)
    wall = process_seconds()
    print(f"Wall time: {wall:.1f} s from process start", file=stream)
    if run.path is not None:
        files = checkpoint.checkpoint_files(model, record_info(engine, history, metrics))
        run.commit(files, keep=(RESUME_NAME, METRICS_NAME), what=f"epoch {history[-1]['epoch'] if history else 0}")
    return TrainResult(model, cfg, history, test, run.path, wall)


def record_info(engine: Engine, history: list[dict[str, Any]], metrics: dict[str, Any]) -> dict[str, Any]:
    """What the run folder's model.json records besides the weights: config, command, progress, metrics."""
    cfg = engine.cfg
    return {"config": cfg.to_dict(), "command": engine.command, "epoch": history[-1]["epoch"] if history else 0,
            "dataset": cfg.dataset, "metrics": metrics, "history": history}
