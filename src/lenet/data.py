"""MNIST and its relatives as whole uint8 tensors: no per-sample Python, no network needed for MNIST.

The four original MNIST files ship inside the package (11.6 MB) and are checked against the MD5 sums
torchvision publishes. `data_root` points at a torchvision-layout folder (`DIR/MNIST/raw/`) holding
either the `.gz` files or the uncompressed IDX files. FashionMNIST, KMNIST, QMNIST and EMNIST-digits
come through torchvision, which downloads them when online.

Training draws batches by indexing these tensors (see `trainer/loop.py`), which is what makes `lenet` fast:
torchvision's per-sample PIL + ToTensor path costs more than the network itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import idx
from .errors import ConfigError, DataError
from .idx import MNIST_FILES, SHIPPED_MNIST, parse_idx, read_idx  # noqa: F401 (lenet.data's names since 0.1)
from .registry import DATASETS

# name -> (torchvision class name, folder under the root, extra constructor kwargs)
TORCHVISION_DATASETS = {
    "fashionmnist": ("FashionMNIST", "FashionMNIST", {}),
    "kmnist": ("KMNIST", "KMNIST", {}),
    "qmnist": ("QMNIST", "QMNIST", {"what": None}),
    "emnist-digits": ("EMNIST", "EMNIST", {"split": "digits"}),
}

CLASSES = [str(d) for d in range(10)]


@dataclass
class Split:
    """Images (N, 28, 28) uint8, ink bright, and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    val: Split | None = None


def default_root() -> Path:
    """Where torchvision downloads datasets when no `data_root` is given."""
    return Path.home() / ".cache" / "lenet"


def load_dataset(name: str = "mnist", data_root: str | Path | None = None, val_size: int = 0,
                 seed: int = 0) -> Dataset:
    """Load a dataset as whole tensors; hold out `val_size` training images (chosen with `seed`)."""
    train, test = DATASETS.get(name)(name, Path(data_root) if data_root else None)
    if not 0 <= val_size < len(train):
        raise ConfigError(f"--val-size must be between 0 and {len(train) - 1}, got {val_size}")
    val = None
    if val_size:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        keep, held = order[: len(train) - val_size], order[len(train) - val_size:]
        val = Split(train.images[held], train.labels[held])
        train = Split(train.images[keep], train.labels[keep])
    return Dataset(name, train, test, val)


def _mnist_raw_dir(root: Path) -> Path:
    if not root.exists():
        raise DataError(f"data root {root} does not exist; point --data-root at a folder holding MNIST/raw/")
    raw = root / "MNIST" / "raw"
    if not raw.is_dir() or not any(raw.iterdir()):
        raise DataError(
            f"no MNIST files in {raw}: put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (or the uncompressed files) there, "
            "or leave out --data-root to use the copy shipped with lenet"
        )
    return raw


def read_mnist_raw(raw: Path, verify: bool = True) -> tuple[Split, Split]:
    """Read the four MNIST IDX files from `raw` (uncompressed preferred, else `.gz`) as tensors."""
    arrays = idx.read_mnist_arrays(raw, verify)
    train = Split(torch.from_numpy(arrays["train_images"]), torch.from_numpy(arrays["train_labels"]).long())
    test = Split(torch.from_numpy(arrays["test_images"]), torch.from_numpy(arrays["test_labels"]).long())
    return train, test


def mnist_splits(name: str, root: Path | None) -> tuple[Split, Split]:
    """MNIST from `root` (a torchvision-layout folder) or, without one, the copy shipped with lenet."""
    return read_mnist_raw(SHIPPED_MNIST if root is None else _mnist_raw_dir(root))


def torchvision_splits(name: str, root: Path | None) -> tuple[Split, Split]:
    """A dataset of torchvision's in the MNIST format, downloaded into `root` on first use."""
    import torchvision.datasets as tvd

    root = root or default_root()

    class_name, folder, kwargs = TORCHVISION_DATASETS[name]
    cls = getattr(tvd, class_name)
    splits = []
    for train in (True, False):
        extra = dict(kwargs)
        if name == "qmnist":
            extra["what"] = "train" if train else "test"
        try:
            ds = cls(root=str(root), train=train, download=True, **extra)
        except (RuntimeError, OSError) as e:
            raise DataError(
                f"{class_name} is not in {root / folder / 'raw'} and could not be downloaded ({e}); "
                f"on a machine with internet run `lenet train --dataset {name} --data-root DIR --epochs 1` "
                f"once, or copy the dataset's raw files into {root / folder / 'raw'}"
            ) from None
        images, labels = ds.data, torch.as_tensor(ds.targets)
        if labels.ndim == 2:  # QMNIST keeps extra metadata columns; column 0 is the class
            labels = labels[:, 0]
        if name == "emnist-digits":  # EMNIST is stored transposed relative to MNIST
            images = images.transpose(1, 2).contiguous()
        splits.append(Split(images.to(torch.uint8), labels.long()))
    return splits[0], splits[1]
