import gzip

import numpy as np
import pytest
import torch

from lenet.data import load_dataset
from lenet.errors import ConfigError, DataError


def test_shipped_mnist_is_the_standard_split(mnist):
    assert mnist.train.images.shape == (60_000, 28, 28) and mnist.train.images.dtype == torch.uint8
    assert mnist.test.images.shape == (10_000, 28, 28)
    assert mnist.train.labels.bincount().tolist()[1] == 6_742  # the well-known count of ones
    assert mnist.test.labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_val_split_is_held_out_of_training():
    data = load_dataset(val_size=5_000, seed=3)
    assert len(data.train) == 55_000 and len(data.val) == 5_000
    again = load_dataset(val_size=5_000, seed=3)
    assert torch.equal(data.val.labels, again.val.labels)


def test_data_root_reads_gz_and_uncompressed(raw_root, mnist):
    raw = raw_root / "MNIST" / "raw"
    labels = raw / "t10k-labels-idx1-ubyte.gz"
    (raw / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(labels.read_bytes()))
    labels.unlink()
    data = load_dataset(data_root=raw_root)
    assert torch.equal(data.test.labels, mnist.test.labels)


def test_missing_data_root(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(data_root=tmp_path / "nowhere")


def test_empty_data_root(tmp_path):
    with pytest.raises(DataError, match=r"no MNIST files in .*MNIST/raw"):
        load_dataset(data_root=tmp_path)


def test_truncated_gz(raw_root):
    path = raw_root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:5_000])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz is truncated"):
        load_dataset(data_root=raw_root)


def _write_idx(path, magic, count, payload):
    header = np.array([magic, count], dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + payload))


def test_wrong_idx_magic(raw_root):
    _write_idx(raw_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", 2051, 10_000, bytes(10_000))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz has IDX magic number 2051, expected 2049"):
        load_dataset(data_root=raw_root)


def test_wrong_idx_count(raw_root):
    _write_idx(raw_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", 2049, 9_999, bytes(9_999))
    with pytest.raises(DataError, match=r"holds 9999 items, expected 10000"):
        load_dataset(data_root=raw_root)


def test_md5_mismatch(raw_root):
    # a well-formed label file whose content differs from the original
    _write_idx(raw_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", 2049, 10_000, bytes(10_000))
    with pytest.raises(DataError, match=r"MD5 mismatch for .*t10k-labels-idx1-ubyte.gz"):
        load_dataset(data_root=raw_root)


def test_unknown_dataset_and_bad_val_size():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar10'; available: mnist, fashionmnist"):
        load_dataset("cifar10")
    with pytest.raises(ConfigError, match="val-size"):
        load_dataset(val_size=60_000)


def test_offline_torchvision_dataset_names_where_to_put_files(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(tvd, "FashionMNIST", offline)
    with pytest.raises(DataError, match=r"FashionMNIST is not in .*FashionMNIST/raw and could not be downloaded"):
        load_dataset("fashionmnist", data_root=tmp_path)


def test_reading_started_early_gives_the_same_arrays_and_its_errors(raw_root):
    from lenet import idx

    raw = raw_root / "MNIST" / "raw"
    idx.start_reading(raw)  # what `lenet train` does before it imports torch
    early = idx.read_mnist_arrays(raw)
    now = idx.read_mnist_arrays(raw)  # nothing started: read on the spot
    assert {k: v.shape for k, v in early.items()} == {"train_images": (60000, 28, 28), "train_labels": (60000,),
                                                      "test_images": (10000, 28, 28), "test_labels": (10000,)}
    assert all(np.array_equal(early[k], now[k]) for k in idx.MNIST_FILES)
    assert early["train_images"].flags.writeable
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    idx.start_reading(raw)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is truncated or not a valid gzip file"):
        idx.read_mnist_arrays(raw)
    assert not idx._started  # the failed reading was handed over, not kept
