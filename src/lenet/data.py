"""MNIST and its relatives as whole uint8 tensors: no per-sample Python, no network needed for MNIST.

The four original MNIST files ship inside the package (11.6 MB) and are checked against the MD5 sums
torchvision publishes. `data_root` points at a torchvision-layout folder (`DIR/MNIST/raw/`) holding
either the `.gz` files or the uncompressed IDX files. FashionMNIST, KMNIST, QMNIST and EMNIST-digits
come through torchvision, which downloads them when online.

Training draws batches by indexing these tensors (see `trainer/loop.py`), which is what makes `lenet` fast:
torchvision's per-sample PIL + ToTensor path costs more than the network itself.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._paths import read_regular_file
from .errors import ConfigError, DataError
from .registry import DATASETS

SHIPPED_MNIST = Path(__file__).parent / "mnist"

# IDX magic numbers (LeCun's format): 0x0803 = unsigned bytes, 3 dimensions; 0x0801 = 1 dimension.
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


@dataclass(frozen=True)
class _IdxFile:
    stem: str
    magic: int
    count: int
    md5_gz: str
    md5_raw: str


MNIST_FILES = {
    "train_images": _IdxFile("train-images-idx3-ubyte", _IMAGES_MAGIC, 60000,
                             "f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
    "train_labels": _IdxFile("train-labels-idx1-ubyte", _LABELS_MAGIC, 60000,
                             "d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
    "test_images": _IdxFile("t10k-images-idx3-ubyte", _IMAGES_MAGIC, 10000,
                            "9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
    "test_labels": _IdxFile("t10k-labels-idx1-ubyte", _LABELS_MAGIC, 10000,
                            "ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
}

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
    """Read the four MNIST IDX files from `raw` (uncompressed preferred, else `.gz`)."""
    arrays = {}
    for key, spec in MNIST_FILES.items():
        plain, packed = raw / spec.stem, raw / f"{spec.stem}.gz"
        path = plain if os.path.lexists(plain) else packed
        if not os.path.lexists(path):
            raise DataError(f"missing MNIST file {packed} (or {plain.name}); copy the original file there")
        data = _read_capped(path, spec)
        arrays[key] = parse_idx(data, path, spec.magic, spec.count)
        if verify:
            expected = spec.md5_gz if path.suffix == ".gz" else spec.md5_raw
            actual = hashlib.md5(data).hexdigest()
            if actual != expected:
                raise DataError(
                    f"MD5 mismatch for {path}: expected {expected}, got {actual}; the file is not the original "
                    "MNIST file, replace it with a fresh copy"
                )
    train = Split(torch.from_numpy(arrays["train_images"]), torch.from_numpy(arrays["train_labels"]).long())
    test = Split(torch.from_numpy(arrays["test_images"]), torch.from_numpy(arrays["test_labels"]).long())
    return train, test


def _idx_size(magic: int, count: int) -> int:
    return 16 + count * 28 * 28 if magic == _IMAGES_MAGIC else 8 + count


def _read_capped(path: Path, spec: _IdxFile) -> bytes:
    """The bytes of an MNIST file, refused unread if it is not a regular file (a FIFO would hang the reader,
    /dev/zero would never end) or is larger than the file can be (gzip adds little even to random data)."""
    size = _idx_size(spec.magic, spec.count)
    return read_regular_file(path, size + size // 100 + (1 << 16), "MNIST file", DataError,
                             f": an MNIST file is {size:,} bytes uncompressed; replace it with the original")


def read_idx(path: Path, magic: int, count: int) -> np.ndarray:
    """Parse one IDX file (optionally gzipped), checking its magic number, count and size."""
    spec = _IdxFile(path.stem, magic, count, "", "")
    return parse_idx(_read_capped(path, spec), path, magic, count)


def parse_idx(data: bytes, path: Path, magic: int, count: int) -> np.ndarray:
    """Parse the bytes of one IDX file read from `path` (gzipped if its name ends in .gz); the decompressed
    data may not exceed the size the header promises, so a gzip bomb is refused after that many bytes."""
    expected_len = _idx_size(magic, count)
    if path.suffix == ".gz":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # the gzip container
            data = inflater.decompress(data, expected_len + 1)
        except zlib.error as e:
            raise DataError(f"{path} is truncated or not a valid gzip file ({e}); replace it with a fresh copy") \
                from None
        if len(data) < expected_len + 1 and not inflater.eof:
            raise DataError(f"{path} is truncated or not a valid gzip file (the compressed data ends early); "
                            "replace it with a fresh copy")
    header_len = 16 if magic == _IMAGES_MAGIC else 8
    if len(data) < header_len:
        raise DataError(f"{path} is too short to be an IDX file ({len(data)} bytes)")
    header = np.frombuffer(data[:header_len], dtype=">u4")
    if int(header[0]) != magic:
        raise DataError(f"{path} has IDX magic number {int(header[0])}, expected {magic}: not an MNIST "
                        f"{'image' if magic == _IMAGES_MAGIC else 'label'} file")
    if int(header[1]) != count:
        raise DataError(f"{path} holds {int(header[1])} items, expected {count}")
    shape = (count, *map(int, header[2:])) if magic == _IMAGES_MAGIC else (count,)
    if magic == _IMAGES_MAGIC and shape[1:] != (28, 28):
        raise DataError(f"{path} holds {shape[1]}x{shape[2]} images, expected 28x28")
    if len(data) < expected_len:
        raise DataError(f"{path} is truncated or padded: {len(data)} bytes, expected {expected_len}")
    if len(data) > expected_len:  # read no further than one byte past the end: the rest may be a bomb
        raise DataError(f"{path} is truncated or padded: more than the {expected_len} bytes expected")
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape).copy()


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
