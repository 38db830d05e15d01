import shutil

import pytest

import lenet


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST shipped with lenet, loaded once per test session."""
    return lenet.load_dataset("mnist")


@pytest.fixture()
def raw_root(tmp_path):
    """A torchvision-layout data root (ROOT/MNIST/raw/) holding copies of the four original .gz files."""
    from lenet.data import MNIST_FILES, SHIPPED_MNIST

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for spec in MNIST_FILES.values():
        shutil.copy(SHIPPED_MNIST / f"{spec.stem}.gz", raw)
    return tmp_path
