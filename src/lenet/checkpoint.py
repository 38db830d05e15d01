"""The only module that knows the on-disk format of trained weights, for run folders and shipped weights alike.

Trained weights are a pair of files with the same stem, in the same folder:
    STEM.safetensors    the weights. safetensors cannot run code when loaded (a pickle can). Its header
                        repeats the network's name and builder arguments, which must agree with the record.
    STEM.json           the record (`WeightsRecord`, schema "lenet-weights"): what the weights are, the
                        SHA-256 of the weights file, how they were made and how well they do.
A run folder (`lenet train --out DIR`) holds `model.safetensors` + `model.json`, and `resume.safetensors`:
everything needed to continue training (weights, optimizer tensors, RNG state) in ONE file. The trainer
commits them together as one generation `DIR/ckpt-NNNNNN/`, made current by swapping the symlink
`DIR/checkpoint` (lenet.trainer.runfolder), and `DIR/model.safetensors` etc. are stable links through it;
`weights_file` and `resume_file` resolve `DIR/checkpoint` ONCE, so weights, record and resume state always
come from one generation. A folder without `checkpoint` (older lenet, or `save_checkpoint`) holds the files
themselves. The weights shipped with lenet are `models/weights/NAME.safetensors` + `NAME.json`, in the same
schema.

Files are never written in place. Safetensors headers are written with sorted keys, so the same tensors
and metadata always give the same bytes (and SHA-256). `load_weights` hashes the bytes it
loads and refuses them unless they match the record's SHA-256. Run folders written before this schema
(`model.json` with "format": "lenet-checkpoint", version 1) are read through `_from_v1`, the one place that
knows their keys; `lenet.weights.upgrade` rewrites such a record in the current schema.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_tensors
from safetensors.torch import save as encode_tensors
from torch import nn

from ._io import atomic_write, atomic_write_json, file_digest, read_json_object
from ._version import __version__
from .errors import CheckpointError
from .inference import NUM_CLASSES, SIDE
from .models import get_model, list_models

# The safetensors header: unchanged since version 1 (the shipped weights carry it, and their bytes are fixed).
FORMAT = "lenet-checkpoint"
FORMAT_VERSION = 1
# The record beside the weights.
SCHEMA = "lenet-weights"
SCHEMA_VERSION = 2  # 1 was the run-folder sidecar of "lenet-checkpoint"; see _from_v1
WEIGHTS_NAME, SIDECAR_NAME, RESUME_NAME = "model.safetensors", "model.json", "resume.safetensors"
METRICS_NAME = "metrics.jsonl"
# A run folder's files that live in its generations; DIR/NAME links to checkpoint/NAME.
RUN_FILES = (WEIGHTS_NAME, SIDECAR_NAME, RESUME_NAME, METRICS_NAME)
CURRENT_LINK, GENERATION_PREFIX = "checkpoint", "ckpt-"

# The input and output contract every network honours (lenet.inference); recorded so that a record read
# on its own says how to feed the weights.
INPUT_SPEC = {"dtype": "float32", "shape": ["N", 1, SIDE, SIDE],
              "description": "MNIST-style digits (longest side 20 px, centred by mass in 28x28: lenet.predict."
                             "preprocess makes them from any image): pixels / 255, background 0, ink 1 "
                             "(lenet.inference.to_input makes this from uint8 (N, 28, 28))"}
OUTPUT_SPEC = {"dtype": "float32", "shape": ["N", NUM_CLASSES],
               "description": "scores of the digits 0-9, higher = more likely; softmax gives probabilities"}


@dataclass(frozen=True)
class WeightsRecord:
    """What a weights file is, how it was made and how well it does: one schema for run folders and for
    the weights shipped with lenet. Its JSON form is `to_dict()`: these fields, less `weights_path` (the
    record lies next to its weights, so the file is found by name), plus "schema" and "schema_version"."""

    model: str  # registered network name
    model_kwargs: dict[str, Any]  # builder arguments: get_model(model, **model_kwargs) rebuilds the network
    weights_path: Path  # the .safetensors file this record describes
    sha256: str  # of the whole weights file; checked on every load
    size_bytes: int
    num_params: int | None  # trainable parameters; None only for records read from schema 1
    input: dict[str, Any] = field(default_factory=lambda: dict(INPUT_SPEC))
    output: dict[str, Any] = field(default_factory=lambda: dict(OUTPUT_SPEC))
    dataset: str | None = None  # registered dataset name the weights were trained and tested on
    epoch: int | None = None  # epochs of training behind these weights
    metrics: dict[str, float] = field(default_factory=dict)  # test_accuracy (percent), test_errors, val_accuracy, ...
    config: dict[str, Any] = field(default_factory=dict)  # the TrainConfig of the run, as a dict; {} if unknown
    recipe: str | None = None
    command: str | None = None  # the exact command that made the weights, when known
    history: list[dict[str, Any]] = field(default_factory=list)  # per-epoch metrics, in order
    created: str | None = None  # UTC, ISO 8601
    versions: dict[str, str] = field(default_factory=dict)  # lenet, torch
    description: str = ""

    @property
    def sidecar_path(self) -> Path:
        return sidecar_path(self.weights_path)

    @property
    def test_accuracy(self) -> float | None:
        """Test-set accuracy in percent, if it was measured."""
        value = self.metrics.get("test_accuracy")
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "weights_path"}
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **json.loads(json.dumps(data))}


# JSON key -> the types its value may have. The schema of `WeightsRecord.to_dict()`; `validate` checks it.
_NONE = type(None)
SCHEMA_TYPES: dict[str, tuple[type, ...]] = {
    "schema": (str,), "schema_version": (int,), "model": (str,), "model_kwargs": (dict,), "sha256": (str,),
    "size_bytes": (int,), "num_params": (int, _NONE), "input": (dict,), "output": (dict,),
    "dataset": (str, _NONE), "epoch": (int, _NONE), "metrics": (dict,), "config": (dict,), "recipe": (str, _NONE),
    "command": (str, _NONE), "history": (list,), "created": (str, _NONE), "versions": (dict,),
    "description": (str,),
}


def validate(data: dict[str, Any]) -> list[str]:
    """The ways `data` breaks the current schema (empty when it follows it)."""
    problems = [f"missing key {k!r}" for k in SCHEMA_TYPES if k not in data]
    problems += [f"unknown key {k!r}" for k in data if k not in SCHEMA_TYPES]
    for key, types in SCHEMA_TYPES.items():
        value = data.get(key)
        if key in data and (not isinstance(value, types) or isinstance(value, bool)):
            problems.append(f"{key} is {type(value).__name__}, not {' or '.join(t.__name__ for t in types)}")
    if data.get("schema") != SCHEMA:
        problems.append(f"schema is {data.get('schema')!r}, not {SCHEMA!r}")
    if "schema_version" in data and data["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version is {data['schema_version']!r}, not {SCHEMA_VERSION}")
    sha = data.get("sha256")
    if isinstance(sha, str) and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        problems.append("sha256 is not 64 lowercase hex digits")
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        problems += [f"metrics[{k!r}] is not a number" for k, v in metrics.items()
                     if not isinstance(v, (int, float)) or isinstance(v, bool)]
    if isinstance(data.get("history"), list) and not all(isinstance(h, dict) for h in data["history"]):
        problems.append("history holds a non-object")
    return problems


# --- where the files are -------------------------------------------------------------------------------------

def sidecar_path(weights: Path) -> Path:
    """The record of `STEM.safetensors` is `STEM.json` beside it (`model.json` in a run folder)."""
    return weights.with_suffix(".json")


def current_generation(folder: Path) -> Path | None:
    """The generation `folder/checkpoint` points to, read once; None when there is no such link (a folder
    written by an older lenet or by `save_checkpoint`, or a run without a checkpoint yet)."""
    link = folder / CURRENT_LINK
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError:
        if link.is_dir() and (link / WEIGHTS_NAME).is_file():  # cp -rL, rsync -L, shutil.copytree's default
            raise CheckpointError(f"{link} is a folder, not the link lenet writes: the run folder was copied with its "
                                  "links followed; copy it keeping them (cp -a, rsync -a, shutil.copytree(..., "
                                  f"symlinks=True)), or load {folder / WEIGHTS_NAME} itself") from None
        raise CheckpointError(f"{link} is not the link lenet writes (a file or folder was put there): "
                              "restore the run folder from a copy") from None
    generation = folder / target
    if not generation.is_dir():
        raise CheckpointError(f"{link} points to {target}, which is missing: the run folder was damaged or "
                              f"copied in part; copy it again with its {target}/")
    return generation


def run_file(folder: Path, name: str) -> Path:
    """Where `name` (one of RUN_FILES) of the run in `folder` is now: in its current generation, or flat."""
    return (current_generation(folder) or folder) / name


def weights_file(path: Path) -> Path:
    """The weights file of a run folder (of its current generation), or `path` itself when it is a file."""
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: give a folder written by `lenet train --out` "
                              f"or its {WEIGHTS_NAME}")
    if path.is_dir():
        generation = current_generation(path)
        weights = (generation or path) / WEIGHTS_NAME
        if not weights.is_file() and generation is not None:
            raise CheckpointError(f"{path} holds no trained weights yet: its run was stopped before its first "
                                  f"epoch ended (its checkpoint holds the resume state only): continue it with "
                                  f"`lenet train --resume {path}`")
        if not weights.is_file():
            raise CheckpointError(f"{path} holds no {WEIGHTS_NAME}: not a lenet checkpoint folder")
        return weights
    if path.name in RUN_FILES and (path.is_symlink() or path.parent.is_symlink()):
        # DIR/model.safetensors -> checkpoint/...: pin the generation, so the record read next is its own
        return Path(os.path.realpath(path))
    return path


# --- writing -------------------------------------------------------------------------------------------------

def _versions() -> dict[str, str]:
    return {"lenet": __version__, "torch": torch.__version__}


def _header(model_name: str, model_kwargs: dict, extra: dict | None = None) -> dict[str, str]:
    # safetensors metadata is str -> str
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "model": model_name,
              "model_kwargs": json.dumps(model_kwargs)}
    for key, value in (extra or {}).items():
        header[key] = json.dumps(value, sort_keys=True)
    return header


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file whose bytes depend only on `tensors` and `metadata`: the header is rewritten with
    sorted keys (safetensors writes the metadata in hash order, which differs from run to run)."""
    data = encode_tensors(tensors, metadata=metadata)
    size = int.from_bytes(data[:8], "little")
    header = json.dumps(json.loads(data[8:8 + size]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # the tensor data stays 8-byte aligned, as safetensors pads it
    return len(header).to_bytes(8, "little") + header + data[8 + size:]


def _write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # clone + contiguous: safetensors refuses shared or strided storage
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def _model_name(model: nn.Module) -> str:
    name = getattr(model, "model_name", None)
    if name is None:
        raise CheckpointError("only networks built with lenet.get_model(...) can be saved (model_name unknown)")
    return name


def new_record(weights: Path, model: nn.Module, **fields: Any) -> WeightsRecord:
    """The record of `weights` (already written) holding `model`; `fields` are other WeightsRecord fields."""
    return _record(weights, file_digest(weights, "sha256"), weights.stat().st_size, model, fields)


def _record(weights: Path, sha256: str, size: int, model: nn.Module, fields: dict[str, Any]) -> WeightsRecord:
    fields = json.loads(json.dumps(fields))  # the JSON form (tuples as lists): equal to the record read back
    config = fields.get("config") or {}
    fields = {"recipe": config.get("recipe"), "dataset": config.get("dataset"), **fields}
    return WeightsRecord(
        model=_model_name(model), model_kwargs=dict(getattr(model, "model_kwargs", {})), weights_path=weights,
        sha256=sha256, size_bytes=size, num_params=sum(p.numel() for p in model.parameters()),
        versions=_versions(), created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **fields)


def write_record(record: WeightsRecord) -> Path:
    """Write `record` beside its weights (atomically); return the record's path."""
    return atomic_write_json(record.sidecar_path, record.to_dict())


# The record fields a caller of save_checkpoint gives; the others are measured from the model and the file.
_INFO_FIELDS = {"config", "epoch", "dataset", "metrics", "history", "command", "recipe", "description"}


def save_checkpoint(folder: str | os.PathLike, model: nn.Module, info: dict[str, Any] | None = None) -> Path:
    """Write `model.safetensors` and its record `model.json` into `folder` (each file atomically; the
    trainer commits both in one step instead, through `checkpoint_files`); return the weights path.

    `info` holds further WeightsRecord fields: config, epoch, dataset, metrics, history, command, recipe,
    description (recipe and dataset default to the config's)."""
    weights = Path(folder) / WEIGHTS_NAME
    files = checkpoint_files(model, info)
    _write_bytes(weights, files[WEIGHTS_NAME])
    _write_bytes(sidecar_path(weights), files[SIDECAR_NAME])
    return weights


def checkpoint_files(model: nn.Module, info: dict[str, Any] | None = None) -> dict[str, bytes]:
    """The bytes of `model.safetensors` and of its record `model.json` (see `save_checkpoint` for `info`)."""
    info = dict(info or {})
    unknown = set(info) - _INFO_FIELDS
    if unknown:
        raise ValueError(f"save_checkpoint: not a field it takes: {', '.join(sorted(unknown))}")
    header = _header(_model_name(model), getattr(model, "model_kwargs", {}))
    weights = safetensors_bytes(_state_dict(model), header)
    record = _record(Path(WEIGHTS_NAME), hashlib.sha256(weights).hexdigest(), len(weights), model, info)
    text = json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n"  # as write_record writes it
    return {WEIGHTS_NAME: weights, SIDECAR_NAME: text.encode()}


# --- reading -------------------------------------------------------------------------------------------------

def read_header(path: Path) -> dict[str, str]:
    """The lenet metadata in the header of a safetensors file (the tensors are not read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file (truncated, corrupt or not a "
                              f"checkpoint): {e}") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a lenet checkpoint (no lenet metadata)")
    if not str(header.get("format_version", "")).isdigit():
        raise CheckpointError(f"{path} is a lenet checkpoint with a damaged header (format_version "
                              f"{header.get('format_version')!r})")
    if int(header["format_version"]) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer lenet (format {header['format_version']}); "
                              "upgrade lenet to read it")
    return header


def read_record(weights: Path) -> WeightsRecord:
    """The record of the weights file `weights`, checked against the schema and the file's header.

    A weights file without its record is refused: its SHA-256 was never recorded, so nothing could tell a
    damaged or swapped file from the one that was trained, and the record also holds what the weights need
    to be used right (the dataset, the metrics). `lenet.weights.adopt(PATH)` writes a record for a file you
    vouch for."""
    header = read_header(weights)
    sidecar = sidecar_path(weights)
    if not sidecar.is_file():
        raise CheckpointError(f"{weights} has no record {sidecar.name} beside it, so its SHA-256 cannot be "
                              f"checked: copy the {sidecar.name} written with it, or, if you trust the file, "
                              f"run `python -c \"import lenet.weights as w; w.adopt('{weights}')\"`")
    data = read_json_object(sidecar, CheckpointError, "a lenet weights record",
                            "restore it from where the weights came")
    record = _record_from(data, weights, sidecar)
    kwargs = json.loads(header.get("model_kwargs", "{}"))
    if (header.get("model"), kwargs) != (record.model, record.model_kwargs):
        raise CheckpointError(f"{weights} holds a {header.get('model')!r} network {kwargs}, but its record "
                              f"{sidecar.name} describes {record.model!r} {record.model_kwargs}: the two files "
                              "do not belong together")
    return record


def _record_from(data: dict[str, Any], weights: Path, sidecar: Path) -> WeightsRecord:
    if data.get("format") == FORMAT and data.get("format_version") == 1:
        data = _from_v1(data, weights)
    elif "schema" not in data:
        raise CheckpointError(f"{sidecar} is not a lenet weights record (no \"schema\" key); if it came with "
                              "lenet's shipped weights, reinstall lenet")
    version = data.get("schema_version")
    if data.get("schema") == SCHEMA and isinstance(version, int) and version > SCHEMA_VERSION:
        raise CheckpointError(f"{sidecar} was written by a newer lenet (schema {version}); upgrade lenet to read it")
    problems = validate(data)
    if problems:
        raise CheckpointError(f"{sidecar} does not follow the {SCHEMA} schema {SCHEMA_VERSION}: {'; '.join(problems)}")
    fields = {k: v for k, v in data.items() if k not in ("schema", "schema_version")}
    return WeightsRecord(weights_path=weights, **fields)


def _from_v1(data: dict[str, Any], weights: Path) -> dict[str, Any]:
    """A run-folder record of schema 1 ("format": "lenet-checkpoint") in the current schema.

    Schema 1 kept the hash under "weights_sha256" and the versions at the top level, and had no size,
    parameter count, command or history; what it lacks stays empty."""
    config = data.get("config") or {}
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "model": data.get("model"),
        "model_kwargs": data.get("model_kwargs", {}), "sha256": data.get("weights_sha256"),
        "size_bytes": weights.stat().st_size, "num_params": None, "input": dict(INPUT_SPEC),
        "output": dict(OUTPUT_SPEC), "dataset": data.get("dataset", config.get("dataset")),
        "epoch": data.get("epoch"), "metrics": data.get("metrics", {}), "config": config,
        "recipe": config.get("recipe"), "command": None, "history": [], "created": None,
        "versions": {k: data[k] for k in ("lenet", "torch") if k in data}, "description": "",
    }


def checked_bytes(record: WeightsRecord) -> bytes:
    """The bytes of `record`'s weights file, refused (CheckpointError) unless their SHA-256 is the record's."""
    path = record.weights_path
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path} cannot be read ({e.strerror or e})") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != record.sha256:
        raise CheckpointError(f"{path}: SHA-256 mismatch: the file hashes to {actual[:16]}..., its record "
                              f"{record.sidecar_path.name} says {record.sha256[:16]}...; it was changed or damaged "
                              "after it was written: restore it (shipped weights: reinstall lenet) or retrain")
    return data


def nonfinite_names(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the floating-point tensors in `named` that hold a NaN or an infinity."""
    return [name for name, t in named if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def load_weights(record: WeightsRecord, *, device: torch.device | str = "cpu",
                 expected_model: str | None = None) -> nn.Module:
    """Rebuild the network `record` describes, in eval mode on `device`, from exactly the bytes whose
    SHA-256 matched the record (a file changed after it was written is refused)."""
    path = record.weights_path
    if record.model not in list_models():
        raise CheckpointError(f"{path} holds a network {record.model!r} that this lenet does not know "
                              f"(available: {', '.join(list_models())})")
    if expected_model is not None and record.model != expected_model:
        raise CheckpointError(f"{path} holds a {record.model!r} network, not {expected_model!r}")
    data = checked_bytes(record)
    try:
        state = load_tensors(data)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt: {e}") from None
    broken = nonfinite_names(state.items())
    if broken:  # such a network answers class 0 for every image, with NaN confidence: never a silent result
        raise CheckpointError(f"{path} holds NaN or infinite values ({', '.join(broken[:3])}): its training diverged "
                              "before these weights were saved; train again (a lower --lr, or --warmup-epochs)")
    model = get_model(record.model, **record.model_kwargs)
    _load_state(model, state, path)
    return model.to(device).eval()


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        problems = [f"{label}: {', '.join(keys[:4])}" for label, keys in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise CheckpointError(f"{where} does not match the {model.model_name!r} network ({'; '.join(problems)})")
    model.load_state_dict(state)


# --- resume state --------------------------------------------------------------------------------------------

def save_training_state(folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                        progress: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `resume.safetensors` into `folder` (atomically): see `training_state_bytes`."""
    return _write_bytes(Path(folder) / RESUME_NAME, training_state_bytes(model, optimizer, progress, tensors))


def training_state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer, progress: dict[str, Any],
                         tensors: dict[str, torch.Tensor] | None = None) -> bytes:
    """`resume.safetensors`: weights, optimizer state, the global RNG state, `progress` (JSON-able) and the
    caller's `tensors` (e.g. a mid-epoch position), under "extra.NAME"."""
    out = {f"model.{k}": v for k, v in _state_dict(model).items()}
    opt_state = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for index, entry in opt_state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                out[f"optimizer.{index}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars[f"{index}.{key}"] = value
    out["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["rng.cuda"] = torch.cuda.get_rng_state()
    out.update({f"extra.{k}": v.detach().to("cpu").contiguous().clone() for k, v in (tensors or {}).items()})
    extra = {"progress": progress, "optimizer_groups": opt_state["param_groups"], "optimizer_scalars": scalars,
             "payload_sha256": _PAYLOAD_PLACEHOLDER}
    return _with_payload_digest(safetensors_bytes(out, _header(model.model_name, getattr(model, "model_kwargs", {}),
                                                               extra)))


# resume.safetensors records the SHA-256 of its tensor bytes in its own header, so that a resume refuses a
# changed or damaged state as loading refuses changed weights (whose SHA-256 model.json records). The header is
# written with this placeholder first: the digest has its length, so the tensors' offsets do not move.
_PAYLOAD_PLACEHOLDER = "0" * 64


def _payload(data: bytes) -> tuple[bytes, bytes]:
    """(the header, the tensor bytes) of a safetensors file's bytes."""
    size = int.from_bytes(data[:8], "little")
    return data[8:8 + size], data[8 + size:]


def _with_payload_digest(data: bytes) -> bytes:
    header, payload = _payload(data)
    digest = hashlib.sha256(payload).hexdigest()
    filled = header.replace(_PAYLOAD_PLACEHOLDER.encode(), digest.encode(), 1)
    if filled == header:
        raise RuntimeError("resume.safetensors: the header lost its digest placeholder")  # a bug, not bad input
    return data[:8] + filled + payload


def _check_payload(path: Path, data: bytes, header: dict[str, str]) -> None:
    """Refuse a resume state whose tensor bytes do not match the SHA-256 its header records (states written
    before lenet recorded it have none, and are read unchecked)."""
    if "payload_sha256" not in header:
        return
    if json.dumps(hashlib.sha256(_payload(data)[1]).hexdigest()) != header["payload_sha256"]:  # a JSON string
        raise CheckpointError(f"{path} does not match the SHA-256 its header records for its tensors: the file was "
                              "changed or damaged; restore the run folder from a copy, or start the run again with "
                              "--overwrite")


def load_training_state(folder: str | os.PathLike, model: nn.Module,
                        optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore what `save_training_state` wrote into `model` and `optimizer`; return `progress`."""
    return restore_training_state(folder, model, optimizer)[0]


def restore_training_state(folder: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer
                           ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore the resume state of the run in `folder` (its current generation) into `model`, `optimizer`
    and the global RNG; return (progress, the caller's extra tensors). A damaged file is a CheckpointError."""
    path = run_file(Path(folder), RESUME_NAME)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: nothing to resume (was the run started with --out?)")
    header = read_header(path)
    if header.get("model") != model.model_name:
        raise CheckpointError(f"{path} holds a {header.get('model')!r} run, not {model.model_name!r}")
    try:
        data = path.read_bytes()
        tensors = load_tensors(data)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is truncated or corrupt: {e}") from None
    _check_payload(path, data, header)
    try:
        progress = json.loads(header["progress"])
        if not isinstance(progress, dict) or not isinstance(progress.get("epoch"), int):
            raise ValueError("its progress is not a lenet progress record")
        _load_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
        _restore_optimizer(optimizer, tensors, header)
        torch.set_rng_state(tensors["rng.torch"])
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as e:
        raise CheckpointError(f"{path} is damaged ({type(e).__name__}: {e}): restore the run folder from a "
                              "copy, or start the run again with --overwrite") from None
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return progress, {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                       header: dict[str, str]) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            param = params[int(index)]
            if value.shape == param.shape:
                # Same memory layout as the parameter (e.g. channels_last): fused optimizers walk
                # parameter and state storage in lockstep, so a layout mismatch would pair wrong elements.
                value = torch.empty_like(param, dtype=value.dtype).copy_(value)
            state.setdefault(int(index), {})[name] = value.to(param.device)
    for key, value in json.loads(header["optimizer_scalars"]).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(header["optimizer_groups"])})
