"""hubconf.py: PyTorch Hub's entry points are lenet's registered networks, with their shipped weights."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import lenet
from lenet.checkpoint import save_checkpoint
from lenet.errors import CheckpointError
from lenet.models import list_models

ROOT = Path(__file__).resolve().parent.parent


def _hubconf():
    spec = importlib.util.spec_from_file_location("lenet_hubconf_under_test", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_entry_points_are_the_registered_networks():
    module = _hubconf()
    # torch.hub's rule for what a hubconf offers: its public callables
    offered = [name for name in dir(module) if callable(getattr(module, name)) and not name.startswith("_")]
    assert sorted(offered) == sorted(list_models())
    for name in list_models():
        assert name in getattr(module, name).__doc__
    for dependency in module.dependencies:
        assert importlib.util.find_spec(dependency) is not None


@pytest.mark.parametrize("name", list_models())
def test_torch_hub_loads_the_shipped_weights(name):
    net = torch.hub.load(str(ROOT), name, source="local", weights="DEFAULT")
    shipped = lenet.load(name)
    assert net.model_name == name and not net.training
    for (key, value), other in zip(net.state_dict().items(), shipped.state_dict().values(), strict=True):
        assert torch.equal(value, other), key


def test_untrained_and_run_folder_weights(tmp_path):
    net = torch.hub.load(str(ROOT), "classic", source="local", weights=None, init="paper")
    assert net.model_name == "classic" and net.model_kwargs == {"init": "paper"}
    with pytest.raises(TypeError, match="weights=None only"):
        torch.hub.load(str(ROOT), "classic", source="local", weights="DEFAULT", init="paper")
    save_checkpoint(tmp_path, lenet.get_model("seed"))
    assert torch.hub.load(str(ROOT), "seed", source="local", weights=tmp_path).model_name == "seed"
    with pytest.raises(CheckpointError, match="not 'classic'"):
        torch.hub.load(str(ROOT), "classic", source="local", weights=str(tmp_path))


def test_a_checkout_works_without_lenet_installed(tmp_path):
    # -S: no site processing, so the editable install's .pth is not read; torch stays importable from
    # PYTHONPATH. hubconf must then find lenet in the checkout's src/.
    code = ("import importlib.util, torch; assert importlib.util.find_spec('lenet') is None; "
            f"net = torch.hub.load({str(ROOT)!r}, 'seed', source='local'); "
            "import lenet; print(net.model_name, lenet.__file__)")
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["seed", str(ROOT / "src" / "lenet" / "__init__.py")]
