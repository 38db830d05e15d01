"""The shipped networks as ONNX graphs, run by onnxruntime: how `lenet predict` reads an image in well under a
second, without importing torch.

Importing torch takes 1.3-1.7 s on a 2-core machine (its C library and its operator registrations), more
than everything else `lenet predict one.png` does. So each shipped network `NAME.safetensors` has its graph
beside it, `NAME.onnx`, exported from those very weights by `scripts/make_weights.py` (lenet.export: parity
with PyTorch checked on the 10,000 test images), and its specification `NAME.onnx.json`, which records the
SHA-256 of the graph and of the weights it came from.

`load(NAME)` checks both before it runs anything: a graph whose bytes changed, or one exported from other
weights than the shipped ones, is refused (CheckpointError), never run. This module imports numpy and
onnxruntime only -- no torch, no lenet module that imports it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ._io import read_json_object
from ._paths import check_regular_file
from .errors import CheckpointError
from .shipped import WEIGHTS_DIR

# The network a command uses when given neither --model nor --checkpoint (lenet.weights re-exports it).
DEFAULT_NETWORK = "seed"
SIDE, NUM_CLASSES = 28, 10
_INPUT, _OUTPUT = "input", "scores"  # lenet.export's names for the graph's input and output


def graph_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.onnx"


def spec_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.onnx.json"


class OnnxNetwork:
    """A shipped network as an onnxruntime session: uint8 (N, 28, 28) MNIST-style images in, probabilities out,
    the same contract as `lenet.inference.probabilities` (numpy instead of torch tensors)."""

    def __init__(self, name: str, graph: bytes) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings about unused initialisers are not the user's
        self.name = name
        self._session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 10), float32, for uint8 (N, 28, 28) images."""
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
            raise ValueError(f"expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
        x = (images.astype(np.float32) / 255.0)[:, None]  # lenet.inference.to_input's scaling
        scores = self._session.run([_OUTPUT], {_INPUT: x})[0].astype(np.float64)
        scores -= scores.max(axis=1, keepdims=True)
        exp = np.exp(scores)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def __repr__(self) -> str:
        return f"OnnxNetwork({self.name!r})"


def load(name: str) -> OnnxNetwork:
    """The shipped graph of network `name`, after checking its SHA-256 and that it was exported from the
    shipped weights `name.safetensors` as they are now."""
    graph_file = check_regular_file(graph_path(name), "the shipped ONNX graph", CheckpointError)
    graph = graph_file.read_bytes()
    spec = _read_json(spec_path(name), "its specification", "an ONNX graph's specification")
    if hashlib.sha256(graph).hexdigest() != spec.get("sha256"):
        raise CheckpointError(f"{graph_file} does not match the SHA-256 in {spec_path(name).name}: the file was "
                              f"changed or damaged; regenerate it with `python scripts/make_weights.py {name} "
                              "--onnx-only`, or use --runtime torch")
    record = _read_json(WEIGHTS_DIR / f"{name}.json", "the weights record", "a lenet weights record")
    if spec.get("source", {}).get("sha256") != record.get("sha256"):
        raise CheckpointError(f"{graph_file} was exported from other weights than the shipped {name}.safetensors; "
                              f"regenerate it with `python scripts/make_weights.py {name} --onnx-only`, or use "
                              "--runtime torch")
    return OnnxNetwork(name, graph)


def _read_json(path: Path, what: str, kind: str) -> dict[str, Any]:
    check_regular_file(path, what, CheckpointError)
    return read_json_object(path, CheckpointError, kind, "reinstall lenet")
