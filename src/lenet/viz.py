"""Figures that show what a network learned, as PNG files (matplotlib, imported only when drawing).

    training_curves   loss and accuracy per epoch, from a run's metrics.jsonl (or shipped weights' history)
    confusion_matrix  true class x predicted class on the 10,000 MNIST test images
    misclassified     every misclassified test digit (up to a limit), true and predicted label: the
                      paper's figure 8
    kernels           the first convolution's 5x5 kernels
    feature_maps      the activations of every stage for one image (lenet.models.feature_maps)
    elastic_examples  real digits under several elastic distortions, and the displacement field of one

Every function writes its PNG atomically and returns the path. matplotlib is an optional dependency: every
function imports it through `_pyplot()`, so without it the answer is a LenetError naming the install.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_write
from ._paths import read_regular_file
from .augment import ELASTIC_ALPHA, ELASTIC_SIGMA, elastic_field, elastic_warp
from .errors import ConfigError, LenetError
from .inference import model_device, probabilities, to_input
from .models import feature_maps as stage_outputs

# metrics.jsonl is one short line per epoch; anything this large is not one
MAX_HISTORY_BYTES = 64 * 1024 * 1024


def _pyplot():
    """matplotlib.pyplot on its file-only backend; called before any other matplotlib import."""
    try:
        import matplotlib
    except ImportError:
        raise LenetError("lenet viz needs matplotlib: pip install 'lenet[viz]'") from None
    matplotlib.use("Agg")  # files only, never a window; works without a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def _name(model: nn.Module) -> str:
    return getattr(model, "model_name", type(model).__name__)


# --- training curves --------------------------------------------------------------------------------------

def read_history(source: str | os.PathLike) -> list[dict[str, Any]]:
    """Per-epoch metrics from a run folder, its metrics.jsonl, or a metadata JSON with a `history` list."""
    path = Path(source)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise ConfigError(f"no training metrics at {path}: give a run folder written by `lenet train --out` "
                          "(it holds metrics.jsonl)")
    text = read_regular_file(path, MAX_HISTORY_BYTES, "the training metrics", ConfigError).decode("utf-8", "replace")
    try:
        if path.suffix == ".json":
            history = json.loads(text).get("history", [])
        else:
            history = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (json.JSONDecodeError, AttributeError) as e:
        raise ConfigError(f"{path} is not valid lenet metrics ({e})") from None
    return check_history(history, str(path))


def check_history(history: Any, where: str) -> list[dict[str, Any]]:
    """`history` if it is a non-empty list of per-epoch metrics, else ConfigError naming `where` it came from."""
    if not history or not all(isinstance(h, dict) and "epoch" in h for h in history):
        raise ConfigError(f"{where} holds no per-epoch metrics")
    return history


def training_curves(history: list[dict[str, Any]], out: str | os.PathLike, title: str = "training",
                    test_accuracy: float | None = None) -> Path:
    """Two panels: training loss (log scale) and accuracy (train, validation, final test) per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    has_lr = "lr" in history[0]
    fig, axes = plt.subplots(1, 3 if has_lr else 2, figsize=(15 if has_lr else 10, 4.2), layout="constrained")
    ax_loss, ax_acc = axes[0], axes[1]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", color="tab:blue", label="train loss")
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="loss (log scale)", title="training loss")
    ax_loss.legend(loc="upper right", fontsize=8)
    ax_loss.grid(alpha=0.3)
    if has_lr:
        axes[2].plot(epochs, [h["lr"] for h in history], "o-", color="tab:gray")
        axes[2].set(xlabel="epoch", ylabel="learning rate", title="learning rate (end of each epoch)")
        axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        axes[2].grid(alpha=0.3)

    ax_acc.plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train (during the epoch)")
    if any("val_accuracy" in h for h in history):
        ax_acc.plot([h["epoch"] for h in history if "val_accuracy" in h],
                    [h["val_accuracy"] for h in history if "val_accuracy" in h], "s-", label="validation")
    if test_accuracy is not None:
        ax_acc.plot([epochs[-1]], [test_accuracy], "*", markersize=14, color="tab:red",
                    label=f"test (final): {test_accuracy:.2f}%")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(loc="lower right", fontsize=8)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.suptitle(title)
    return _save(fig, out)


# --- test-set figures -------------------------------------------------------------------------------------

def confusion_matrix(confusion: list[list[int]], out: str | os.PathLike, title: str = "confusion matrix") -> Path:
    """Counts on a log colour scale, so the few errors show next to the ~1,000 correct per class."""
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    counts = torch.tensor(confusion, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(counts.clamp(min=0.5).numpy(), cmap="Blues", norm=LogNorm(vmin=0.5, vmax=float(counts.max())))
    n = len(confusion)
    for t in range(n):
        for p in range(n):
            value = int(counts[t, p])
            if value:
                ax.text(p, t, str(value), ha="center", va="center", fontsize=8,
                        color="white" if t == p else ("tab:red" if value >= 5 else "black"))
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted digit", ylabel="true digit", title=title)
    fig.colorbar(image, ax=ax, label="test images (log scale)")
    return _save(fig, out)


def misclassified(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, out: str | os.PathLike,
                  limit: int = 100, columns: int = 10) -> Path:
    """A grid of the misclassified digits, 'true -> predicted (probability)', in test-set order; at most `limit`
    of them (a positive integer: 0 would draw none, and -5 all but the last five)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ConfigError(f"limit must be a positive integer (the most misclassified digits shown), got {limit!r}")
    plt = _pyplot()
    probs = probabilities(model, images)
    predicted = probs.argmax(1)
    wrong = torch.nonzero(predicted != labels).flatten()
    shown = wrong[:limit]
    rows = max(1, -(-len(shown) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.15, rows * 1.35 + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, shown.tolist(), strict=False):
        ax.imshow(images[index].numpy(), cmap="gray_r", vmin=0, vmax=255)
        p = float(probs[index, predicted[index]])
        ax.set_title(f"{int(labels[index])}\u2192{int(predicted[index])} ({p:.0%})", fontsize=8)
    more = f", first {len(shown)} shown" if len(wrong) > len(shown) else ""
    fig.suptitle(f"{_name(model)}: {len(wrong)} misclassified of {len(labels):,} test digits{more}\n"
                 "true \u2192 predicted (probability of the prediction)", fontsize=10)
    return _save(fig, out)


# --- inside the network -----------------------------------------------------------------------------------

def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ConfigError(f"the {_name(model)} network has no convolution layer to draw")


def kernels(model: nn.Module, out: str | os.PathLike) -> Path:
    """The first convolution's kernels, one panel each, on one symmetric colour scale (red +, blue -)."""
    plt = _pyplot()
    name, conv = first_conv(model)
    weight = conv.weight.detach().cpu()[:, 0]  # (C, k, k): the input has one channel
    limit = float(weight.abs().max())
    count = len(weight)
    columns = min(count, 8)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.5 + 1.2, rows * 1.6 + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:count]):
        image = ax.imshow(weight[i].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"kernel {i}", fontsize=9)
    fig.colorbar(image, ax=axes.ravel().tolist(), label="weight", shrink=0.8)
    k = weight.shape[-1]
    fig.suptitle(f"{_name(model)}: {count} {k}x{k} kernels of the first convolution ({name})")
    return _save(fig, out)


def layer_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The network's input as it sees it and every stage's output for input x (1, 1, 28, 28), on the CPU, in
    eval mode. ConfigError for a network that does not declare its stages (lenet.models.staged)."""
    model.eval()
    return {name: value.cpu() for name, value in stage_outputs(model, x).items()}


def _colour_scale(value: torch.Tensor) -> dict[str, Any]:
    # signed values on a diverging map centred on 0, non-negative ones (ReLU outputs, the input) on magma
    limit = float(value.abs().max()) or 1.0
    low = -limit if float(value.min()) < 0 else 0.0
    return {"cmap": "magma" if low == 0 else "RdBu_r", "vmin": low, "vmax": limit}


def _draw_maps(subfig, name: str, value: torch.Tensor, columns: int) -> None:
    """(C, H, W): one panel per channel, the first `columns` of them."""
    channels = value.shape[0]
    shown = min(channels, columns)
    axes = subfig.subplots(1, columns, squeeze=False)[0]
    scale = _colour_scale(value)
    for c, ax in enumerate(axes):
        ax.axis("off")
        if c < shown:
            image = ax.imshow(value[c].numpy(), **scale)
    subfig.colorbar(image, ax=axes.tolist(), shrink=0.9, aspect=8)
    more = f", first {shown} shown" if channels > shown else ""
    what = f"{channels} maps" if channels > 1 else "1 map"
    subfig.suptitle(f"{name}: {what} of {value.shape[1]}x{value.shape[2]}{more}", fontsize=9)


def _draw_vector(subfig, name: str, vector: torch.Tensor, what: str) -> None:
    ax = subfig.subplots(1, 1)
    image = ax.imshow(vector[None].numpy(), aspect="auto", **_colour_scale(vector))
    ax.set_yticks([])
    if len(vector) == 10:
        ax.set_xticks(range(10))
    subfig.colorbar(image, ax=ax, shrink=0.9, aspect=8)
    subfig.suptitle(f"{name}: {what}", fontsize=9)


def feature_maps(model: nn.Module, image: torch.Tensor, out: str | os.PathLike, title: str = "") -> Path:
    """One row per stage, from the input as the network sees it (classic: padded to 32x32, the paper's pixel
    values) to the scores: every channel of a map, vectors as a strip; last row the class probabilities.
    `image` is uint8 (28, 28), MNIST-style."""
    plt = _pyplot()
    rows = list(layer_outputs(model, to_input(image[None].to(model_device(model)))).items())
    probs = probabilities(model, image[None])[0]
    columns = min(max((m.shape[1] for _, m in rows if m.ndim == 4), default=1), 16)
    fig = plt.figure(figsize=(columns * 0.95 + 1.6, 1.25 * len(rows) + 1.9), layout="constrained")
    subfigs = fig.subfigures(len(rows) + 1, 1, height_ratios=[1] * len(rows) + [1.6])
    for index, (subfig, (name, value)) in enumerate(zip(subfigs, rows, strict=False)):
        value = value[0]
        if value.ndim == 3 and value.shape[1:].numel() > 1:
            _draw_maps(subfig, name, value, columns)
        else:  # a vector, or C maps of 1x1 (classic's C5), which read better as one
            what = "the scores (higher = more likely)" if index == len(rows) - 1 else f"{value.numel()} units"
            _draw_vector(subfig, name, value.flatten(), what)
    ax = subfigs[-1].subplots(1, 1)
    ax.bar(range(10), probs.numpy(), color="tab:blue")
    ax.set(xticks=range(10), ylim=(0, 1), xlabel="digit", ylabel="probability")
    top = int(probs.argmax())
    subfigs[-1].suptitle(f"softmax of the scores: predicts {top} ({float(probs[top]):.1%})", fontsize=9)
    fig.suptitle(title or f"{_name(model)}: activations of every stage", fontsize=11)
    return _save(fig, out)


# --- the training data's distortions ----------------------------------------------------------------------

def elastic_examples(images: torch.Tensor, out: str | os.PathLike, draws: int = 5, seed: int = 0) -> Path:
    """Each uint8 (28, 28) digit in `images`, its first elastic field (`--augment elastic`, lenet.augment) as
    arrows over it, and `draws` distortions of it, one row per digit; the same draws for every call."""
    plt = _pyplot()
    x, generator = to_input(images), torch.Generator().manual_seed(seed)
    fields = [elastic_field(len(x), 28, 28, generator) for _ in range(draws)]
    distorted = [elastic_warp(x, field)[:, 0] for field in fields]
    fig, axes = plt.subplots(len(x), draws + 2, figsize=((draws + 2) * 1.3, len(x) * 1.35 + 0.7),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    for row, image in enumerate(x[:, 0]):
        axes[row, 0].imshow(image.numpy(), cmap="gray_r", vmin=0, vmax=1)
        _draw_field(axes[row, 1], image, fields[0][row])
        for column, batch in enumerate(distorted, start=2):
            axes[row, column].imshow(batch[row].numpy(), cmap="gray_r", vmin=0, vmax=1)
    for column, title in enumerate(["original", "field of draw 1", *(f"draw {d + 1}" for d in range(draws))]):
        axes[0, column].set_title(title, fontsize=8)
    fig.suptitle(f"elastic distortions (Simard et al. 2003): sigma = {ELASTIC_SIGMA:g} px, alpha = "
                 f"{ELASTIC_ALPHA:g} px (`--augment elastic`)\narrows: where each pixel of draw 1 reads from, "
                 "at true scale", fontsize=10)
    return _save(fig, out)


def _draw_field(ax, image: torch.Tensor, field: torch.Tensor, step: int = 3) -> None:
    """The displacement field (2, 28, 28) as arrows, every `step` pixels, from each pixel to where it reads
    from, in pixels at true scale, over a faint copy of the digit."""
    ax.imshow(image.numpy(), cmap="gray_r", vmin=0, vmax=3)
    ys, xs = torch.meshgrid(torch.arange(1, 28, step), torch.arange(1, 28, step), indexing="ij")
    dx, dy = field[0][ys, xs], field[1][ys, xs]
    ax.quiver(xs.numpy(), ys.numpy(), dx.numpy(), dy.numpy(), angles="xy", scale_units="xy", scale=1,
              color="tab:red", width=0.012)
