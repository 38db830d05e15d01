"""Export a network to ONNX or TorchScript, with its input specification beside it, checked against PyTorch.

Every exported file has the same contract, whatever the network (lenet.inference):
    input   "input"   float32 (N, 1, 28, 28): MNIST pixels / 255, background 0, ink 1; N is dynamic
    output  "scores"  float32 (N, 10): higher = more likely (softmax gives probabilities)
Network-specific steps (padding to 32x32, the paper's pixel map, negated RBF distances) are inside
`forward`, so they are inside the exported graph too. The specification is written to `FILE.json`.

ONNX needs `pip install 'lenet[export]'` (onnx, onnxscript, onnxruntime); TorchScript needs only torch.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_write, atomic_write_json, file_digest
from ._paths import check_output_file
from ._version import __version__
from .checkpoint import INPUT_SPEC, OUTPUT_SPEC, nonfinite_names
from .errors import ConfigError, LenetError
from .inference import to_input

FORMATS = ["onnx", "torchscript"]
INPUT_NAME, OUTPUT_NAME = "input", "scores"
# Parity tolerance against PyTorch on the test set, for every network. (classic's scores reach about -226 on
# the test set; its RBF layer computes the distances in float64 so that float32 summation order cannot break
# this bound.)
TOLERANCE = 1e-4


def _require(module: str, extra: str = "export") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise LenetError(f"exporting to ONNX needs the {module} package: pip install 'lenet[{extra}]' "
                         "(onnx, onnxscript, onnxruntime)") from None


def _example() -> torch.Tensor:
    return torch.rand(2, 1, 28, 28)


def _export_onnx(model: nn.Module, path: str) -> None:
    _require("onnx")
    _require("onnxscript")
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's chatter about deprecated internals is not for the user
        torch.onnx.export(model, (_example(),), path, dynamo=True, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
                          external_data=False,  # one self-contained file, weights included
                          verbose=False)


def _export_torchscript(model: nn.Module, path: str) -> None:
    with warnings.catch_warnings():
        # torch.jit is deprecated in favour of torch.export, but TorchScript files are still what C++
        # (libtorch) and older runtimes load; the warning is the exporter's, not the user's problem.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, _example(), check_trace=False)
        torch.jit.save(traced, path)


def load_runner(path: str | os.PathLike, format: str):
    """A function float32 (N, 1, 28, 28) tensor -> (N, 10) tensor running the exported file."""
    if format == "onnx":
        ort = _require("onnxruntime")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(x)

    return run


@torch.inference_mode()
def check_parity(path: str | os.PathLike, format: str, model: nn.Module, images: torch.Tensor,
                 batch_size: int = 1000) -> dict[str, Any]:
    """Run the exported file and PyTorch on uint8 (N, 28, 28) images: agreement of the predicted class, the
    near-ties (a different class where PyTorch's two best scores lie within 2 x TOLERANCE: scores that each
    stay within the tolerance may swap them), and the largest absolute difference of the scores."""
    runner = load_runner(path, format)
    model = model.to("cpu").eval()
    same, near_ties, max_diff = 0, 0, 0.0
    for start in range(0, len(images), batch_size):
        x = to_input(images[start:start + batch_size])
        expected, actual = model(x), runner(x)
        # A non-finite score on either side is no agreement: argmax puts NaN first on both, and Python's max()
        # drops a NaN that comes second, so both would pass a NaN model. torch's max() propagates NaN.
        finite = torch.isfinite(expected).all(1) & torch.isfinite(actual).all(1)
        agree = expected.argmax(1) == actual.argmax(1)
        best_two = expected.topk(2, dim=1).values
        tied = (best_two[:, 0] - best_two[:, 1]) <= 2 * TOLERANCE
        same += int((agree & finite).sum())
        near_ties += int((~agree & tied & finite).sum())
        diff = float((expected - actual).abs().max()) if finite.all() else math.nan
        max_diff = diff if math.isnan(diff) or math.isnan(max_diff) else max(max_diff, diff)
    return {"images": len(images), "same_class": same, "near_ties": near_ties, "max_abs_diff": max_diff,
            "tolerance": TOLERANCE}


def check_target(out: str | os.PathLike, format: str) -> Path:
    """Refuse (ConfigError), before any work, an export to a folder, a path under a file or a place that
    cannot be written, for the file and for its spec FILE.json."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name such as {out / ('model.' + _suffix(format))}")
    check_output_file(out, "--out")
    check_output_file(spec_path(out), "--out's specification file")
    return out


def check_not_a_source_file(out: str | os.PathLike, source_files: Iterable[Path]) -> None:
    """Refuse (ConfigError) an export whose file or spec would replace one of the files it is exported from
    (the weights, their record, any file of the run or committee folder), links followed."""
    protected = {Path(f).resolve() for f in source_files}
    for path, what in ((Path(out), "--out"), (spec_path(out), "--out's specification file")):
        if path.exists() and path.resolve() in protected:
            raise ConfigError(f"{what} {path} is one of the files the network is exported from; give another "
                              "file name")


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """The names of the parameters and buffers of `model` that hold a NaN or an infinity."""
    return nonfinite_names([*model.named_parameters(), *model.named_buffers()])


def export(model: nn.Module, out: str | os.PathLike, format: str = "onnx", check_images: torch.Tensor | None = None,
           source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write `model` to `out` as ONNX or TorchScript, and its specification to `out`.json; return the spec.

    With `check_images` (uint8 (N, 28, 28)), the file is run on them before it is put in place; a class
    that differs from PyTorch's, or scores further apart than TOLERANCE, raise LenetError and nothing is
    written."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; available: {', '.join(FORMATS)}")
    out = check_target(out, format)
    broken = nonfinite_parameters(model)
    if broken:
        raise LenetError(f"the network's weights hold NaN or infinite values ({', '.join(broken[:4])}"
                         f"{', ...' if len(broken) > 4 else ''}): it predicts nothing; nothing was exported, "
                         "retrain it")
    model = model.to("cpu").eval()
    parity: dict[str, Any] = {}

    def write(tmp: str) -> None:
        (_export_onnx if format == "onnx" else _export_torchscript)(model, tmp)
        if check_images is not None:
            parity.update(check_parity(tmp, format, model, check_images))
            differ = parity["images"] - parity["same_class"] - parity["near_ties"]
            if differ or not parity["max_abs_diff"] <= parity["tolerance"]:
                raise LenetError(f"the exported {format} model disagrees with PyTorch on {out.name}: {differ} of "
                                 f"{parity['images']} classes differ (near-ties aside), max score difference "
                                 f"{parity['max_abs_diff']:.2e}; nothing was written")

    atomic_write(out, write)
    spec = {
        "format": format,
        "file": out.name,
        "sha256": file_digest(out, "sha256"),
        "model": getattr(model, "model_name", None),
        "input": {"name": INPUT_NAME, **INPUT_SPEC},
        "output": {"name": OUTPUT_NAME, **OUTPUT_SPEC},
        "dynamic_axes": {"N": "batch size, any value >= 1"},
        "classes": list(range(10)),
        "lenet_version": __version__,
        "torch_version": torch.__version__,
        **({"source": source} if source else {}),
        **({"parity": parity} if parity else {}),
    }
    atomic_write_json(spec_path(out), spec)
    return spec


def spec_path(out: str | os.PathLike) -> Path:
    return Path(f"{out}.json")


def _suffix(format: str) -> str:
    return {"onnx": "onnx", "torchscript": "pt"}[format]


def read_spec(out: str | os.PathLike) -> dict[str, Any]:
    return json.loads(spec_path(out).read_text(encoding="utf-8"))
