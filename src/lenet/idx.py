"""LeCun's IDX files, MNIST's format, read into numpy arrays: checked (size, magic number, count, MD5), never
trusted (a gzip bomb, a FIFO or /dev/zero is refused), and without torch.

Without torch so that `lenet train` can start reading the shipped MNIST on a second thread before it imports
torch (`start_reading`): zlib and hashlib release the GIL, so on a 2-core machine the 0.4 s of decompressing
and checking 55 MB overlaps the 1.3-1.7 s of importing torch instead of following it. lenet.data turns the
arrays into tensors.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._paths import read_regular_file
from .errors import DataError

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


def read_mnist_arrays(raw: Path, verify: bool = True) -> dict[str, np.ndarray]:
    """The four MNIST IDX files in `raw` (uncompressed preferred, else `.gz`) as uint8 arrays, keyed as
    MNIST_FILES; what `start_reading(raw)` began, if it did."""
    reading = _started.pop((Path(raw), verify), None)
    if reading is None:
        return _read_all(Path(raw), verify)
    reading.join()
    if reading.error is not None:
        raise reading.error
    return reading.arrays


def start_reading(raw: Path = SHIPPED_MNIST, verify: bool = True) -> None:
    """Read `raw` on a background thread; the next `read_mnist_arrays(raw)` waits for it and takes its arrays
    (or raises its error). A daemon thread: a process that stops before it needs the data does not wait."""
    key = (Path(raw), verify)
    if key not in _started:
        _started[key] = _Reading(*key)
        _started[key].start()


class _Reading(threading.Thread):
    def __init__(self, raw: Path, verify: bool) -> None:
        super().__init__(name="lenet-read-mnist", daemon=True)
        self.raw, self.verify = raw, verify
        self.arrays: dict[str, np.ndarray] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.arrays = _read_all(self.raw, self.verify)
        except BaseException as e:  # handed to the thread that asks for the data
            self.error = e


_started: dict[tuple[Path, bool], _Reading] = {}


def _read_all(raw: Path, verify: bool) -> dict[str, np.ndarray]:
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
    return arrays


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
