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


class _Interrupt(Exception):
    pass


@pytest.fixture()
def interrupted_and_resumed(tmp_path):
    """run(options) -> (whole, resumed, differing): one uninterrupted run and one stopped after epoch 1 then
    resumed from its folder (TrainResults), and the names of the weights where the two are not bit-identical.
    Callers assert what must match. Training restores the process state it sets (trainer/state.py), so this
    fixture leaves none behind."""
    import torch

    from lenet.trainer import fit, make_config

    def run(options: dict):
        whole = lenet.train(out=tmp_path / "whole", **options)

        def stop_after_first_epoch(epoch, metrics):
            if epoch == 1:
                raise _Interrupt

        with pytest.raises(_Interrupt):
            fit(make_config(out=tmp_path / "cut", **options), on_epoch_end=stop_after_first_epoch,
                progress_bar=False)
        resumed = lenet.train(resume=tmp_path / "cut")
        differing = [name for (name, a), b in zip(whole.model.state_dict().items(),
                                                  resumed.model.state_dict().values(), strict=True)
                     if not torch.equal(a, b)]
        return whole, resumed, differing

    return run
