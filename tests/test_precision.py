"""`--precision auto`: bf16 only where the hardware computes it natively (CUDA, CPUs with AMX), fp32 elsewhere,
recorded as chosen; a warning when bf16 is asked for on a CPU that emulates it (lenet/inference.py)."""

import io

import pytest
import torch
from fresh_python import assert_runs_without_importing

from lenet import hardware
from lenet.cli import main
from lenet.inference import emulated_bf16_warning, native_precision, resolve_precision
from lenet.trainer import fit, make_config
from lenet.trainer.config import TrainConfig

CPU = torch.device("cpu")
XEON_AMX = {"avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
ZEN4 = {"avx2", "fma", "avx512f", "avx512_bf16"}
ZEN3 = {"avx2", "fma"}
SMALL = {"val_size": 58000, "batch_size": 64, "log_every": 0, "threads": 1, "epochs": 1}


@pytest.fixture
def cpu_with(monkeypatch):
    def use(flags: set[str]) -> None:
        monkeypatch.setattr(hardware, "cpu_flags", lambda *args: set(flags))
    return use


def test_how_a_cpu_multiplies_bf16_is_read_from_its_flags(tmp_path):
    assert hardware.bf16_matmul_unit(XEON_AMX) == "amx"
    assert hardware.bf16_matmul_unit(ZEN4) == "avx512"
    assert hardware.bf16_matmul_unit(ZEN3) == "emulated"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: other\n")
    assert hardware.cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16"}  # the first processor's
    assert hardware.cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize(("flags", "expected"), [(XEON_AMX, "bf16"), (ZEN4, "fp32"), (ZEN3, "fp32")])
def test_auto_is_bf16_only_on_a_cpu_with_amx(cpu_with, flags, expected):
    cpu_with(flags)
    assert native_precision(CPU) == expected
    assert resolve_precision("auto", CPU) == expected
    assert resolve_precision("fp32", CPU) == "fp32" and resolve_precision("bf16", CPU) == "bf16"  # as given
    assert native_precision(torch.device("cuda")) == "bf16"  # a torch.device, no GPU needed to name one


@pytest.mark.parametrize(("flags", "expected"), [(XEON_AMX, "bf16"), (ZEN3, "fp32")])
def test_the_recipes_that_say_auto_record_what_it_chose(cpu_with, flags, expected):
    cpu_with(flags)
    for recipe in ("fast", "speedrun", "modern"):
        assert make_config(recipe, device="cpu").precision == expected
        assert make_config(recipe, device="cpu", precision="bf16").precision == "bf16"  # a given flag wins
        assert make_config(recipe, device="cpu", precision="fp32").precision == "fp32"
    assert make_config("tutorial").precision == "fp32" and make_config("paper").precision == "fp32"


def test_an_emulated_bf16_run_says_so_and_auto_runs_fp32(mnist, cpu_with):
    cpu_with(ZEN3)
    assert emulated_bf16_warning("bf16", CPU).startswith("warning: --precision bf16 on a CPU without AMX")
    assert emulated_bf16_warning("fp32", CPU) is None and emulated_bf16_warning("bf16", torch.device("cuda")) is None
    log = io.StringIO()
    fit(make_config(precision="bf16", **SMALL), stream=log, progress_bar=False)
    assert "bf16 is emulated here, about 20x slower than fp32" in log.getvalue()
    # a TrainConfig built directly (the Python API) may say auto: the run resolves it and records fp32
    log = io.StringIO()
    result = fit(TrainConfig(precision="auto", **SMALL), stream=log, progress_bar=False)
    assert result.config.precision == "fp32" and "warning" not in log.getvalue()
    cpu_with(XEON_AMX)
    assert emulated_bf16_warning("bf16", CPU) is None


def test_the_cli_takes_auto_and_refuses_other_names(capsys):
    assert main(["train", "--precision", "fp8", "--epochs", "1"]) == 2
    assert capsys.readouterr().err == "lenet train: error: unknown precision 'fp8' (available: fp32, bf16, auto)\n"


def test_checking_a_speedrun_or_a_sweep_imports_no_torch():
    # their parents only check configs and spawn; resolving auto would cost them `import torch` (1.5-2 s)
    assert_runs_without_importing("from lenet.speedrun import make_plan\nfrom lenet.trainer.config import make_config\n"
                                  "plan = make_plan(runs=2)\n"
                                  "assert make_config('modern', resolve_auto=False).precision == 'auto'")
