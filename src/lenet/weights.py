"""One way to name, describe and load trained weights: the ones shipped with lenet and those of your runs.

A *source* is either

  * a `str` equal to a registered network's name (`"seed"`, `"classic"`): the weights shipped with lenet,
    `models/weights/NAME.safetensors` with its record `NAME.json`;
  * a `str` equal to a shipped committee's name (`"modern-committee"`): the committee folder
    `models/weights/NAME/` (lenet.committee); or
  * anything else (`"runs/seed"`, `"./seed"`, any `pathlib.Path`): a path to a run folder written by
    `lenet train --out`, or to its `model.safetensors`.

A name never means a path, whatever the working directory holds: write `./seed` for a folder called seed.

Every source has a `WeightsRecord` (one schema for shipped weights and run folders, lenet.checkpoint)
that says what the weights are, how they were made, the exact command when known, how well they do, and
the SHA-256 of the weights file. `load_network` checks that hash on every load and refuses a file that
does not match (CheckpointError naming the file and the mismatch; the CLI exits 2). A weights file with
no record beside it is refused as well (see `lenet.checkpoint.read_record` for why); `adopt` writes a
record for a file you vouch for.

    >>> from lenet import weights
    >>> weights.read_record("classic").test_accuracy
    99.09
    >>> net = weights.load_network("runs/paper", expected_model="classic")
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from torch import nn

from . import checkpoint, committee, shipped
from ._paths import check_regular_file
from .checkpoint import WeightsRecord
from .errors import CheckpointError, ConfigError
from .models import get_model, list_models
from .shipped_onnx import DEFAULT_NETWORK, WEIGHTS_DIR

__all__ = ["DEFAULT_NETWORK", "WEIGHTS_DIR", "WeightsRecord", "adopt", "is_name", "list_shipped", "load_network",
           "read_record", "resolve", "shipped_committees", "source_from_options", "upgrade"]

Source = str | os.PathLike


def is_name(source: Source) -> bool:
    """True when `source` means shipped weights: a `str` equal to a registered network's name, or to the name
    of a committee shipped with lenet (`shipped_committees`)."""
    return isinstance(source, str) and (source in list_models() or source in shipped_committees())


def shipped_committees() -> list[str]:
    """Names of the committees shipped with lenet ("modern-committee"): the folders of WEIGHTS_DIR that hold a
    committee.json. A network's name is never one (networks come first)."""
    return shipped.committees(WEIGHTS_DIR)


def resolve(source: Source) -> Path:
    """The weights file `source` means (it exists; its record is not read yet); a committee's manifest."""
    if (folder := _committee_folder(source)) is not None:
        return folder / committee.MANIFEST_NAME
    if is_name(source):
        path = WEIGHTS_DIR / f"{source}.safetensors"
        if not path.is_file():
            raise CheckpointError(f"no shipped weights for {source!r} in {WEIGHTS_DIR}: regenerate them with "
                                  f"`python scripts/make_weights.py {source}`, or give a run folder as a path")
        return _readable(path)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"a weights source is a network name or a path, not {type(source).__name__}")
    if os.fspath(source) == "":
        raise CheckpointError("the weights source is empty: give a network's name or a path")
    path = Path(source)
    if not path.exists() and isinstance(source, str) and os.sep not in source and "/" not in source:
        raise CheckpointError(f"no checkpoint at {source}, and no network is registered under that name "
                              f"(registered: {', '.join(list_models())})")
    return _readable(checkpoint.weights_file(path))


def _readable(weights: Path) -> Path:
    """`weights` if it and its record (when there is one) are regular files this process can read: a FIFO or
    a device would hang or flood the reader, a file without read permission would fail deep inside a library.
    (A missing record is reported by `checkpoint.read_record`, which says how to make one.)"""
    check_regular_file(weights, "the weights file", CheckpointError)
    record = checkpoint.sidecar_path(weights)
    if os.path.lexists(record):
        check_regular_file(record, "the weights record", CheckpointError)
    return weights


def read_record(source: Source) -> WeightsRecord:
    """The record of `source`: model, metrics, recipe, command, config, SHA-256 and more (the file is not hashed)."""
    if (folder := _committee_folder(source)) is not None:
        return committee.read_record(folder)
    return checkpoint.read_record(resolve(source))


def load_network(source: Source, *, device: torch.device | str = "cpu",
                 expected_model: str | None = None) -> nn.Module:
    """The network of `source`, in eval mode on `device`, after checking its weights' SHA-256.

    With `expected_model`, weights of any other network are refused."""
    if (folder := _committee_folder(source)) is not None:
        return committee.load(folder, device=device, expected_model=expected_model)
    return checkpoint.load_weights(read_record(source), device=device, expected_model=expected_model)


def held_out_split(source: Source) -> tuple[str, int, int]:
    """(dataset, --val-size, the seed that chose them): the training images `source` held out for validation,
    as its record's config says. For a committee, the images every member held out: they must be the same ones,
    or the committee would be validated on images some members trained on."""
    folder = _committee_folder(source)
    records = committee.member_records(folder) if folder is not None else [read_record(source)]
    splits = {_held_out(record, source) for record in records}
    if len(splits) > 1:
        shown = "; ".join(f"--val-size {size} chosen by seed {seed}" for _, size, seed in sorted(splits))
        raise ConfigError(f"the members of {source} hold out different images ({shown}): a committee can be "
                          "validated only on images none of its members trained on; train its members with one "
                          "--val-seed")
    return splits.pop()


def _held_out(record: WeightsRecord, source: Source) -> tuple[str, int, int]:
    config = record.config or {}
    size = config.get("val_size") or 0
    if not size:
        raise ConfigError(f"{source} was trained on all of its training images (no --val-size), so it has no "
                          "validation split: evaluate it on the test set, or train with --val-size N")
    seed = config.get("val_seed")
    return record.dataset or config.get("dataset") or "mnist", size, config.get("seed", 0) if seed is None else seed


# --- committees (lenet.committee): the one branch by which every command accepts a committee folder ----------

def _committee_folder(source: Source) -> Path | None:
    """The committee folder `source` names (the folder, or its committee.json), else None. A registered
    network's name always means its shipped weights, never a committee; a shipped committee's name means it."""
    if isinstance(source, str) and source in shipped_committees():
        return WEIGHTS_DIR / source
    if is_name(source) or not isinstance(source, (str, os.PathLike)):
        return None
    return committee.folder_of(source) if committee.is_committee(source) else None


def list_shipped() -> list[WeightsRecord]:
    """The records of the weights shipped with lenet, one per registered network that has them, in
    registration order, then those of the shipped committees."""
    networks = [read_record(name) for name in shipped.networks(WEIGHTS_DIR)]
    return networks + [read_record(name) for name in shipped_committees()]


def source_from_options(model: str | None, checkpoint_path: Source | None) -> tuple[Source, str | None]:
    """What the option pair `--model NAME` / `--checkpoint DIR` means, for every command that takes it:
    `(source, expected_model)` for `load_network` and `read_record`.

    With `--checkpoint`, the source is that path (always a path, even when it spells a network's name) and
    `--model`, if given, is the network it must hold. Without it, the shipped weights of `--model`
    (default DEFAULT_NETWORK)."""
    if model is not None and model not in list_models():
        if model in shipped_committees() and checkpoint_path is None:
            return model, None
        shipped = f"; shipped committees: {', '.join(shipped_committees())}" if shipped_committees() else ""
        raise ConfigError(f"unknown network {model!r}; registered: {', '.join(list_models())}{shipped}")
    if checkpoint_path is not None:
        return Path(checkpoint_path), model
    return model or DEFAULT_NETWORK, None


def adopt(path: Source, description: str = "") -> WeightsRecord:
    """Write a record for a lenet weights file that has none, recording the SHA-256 it has now.

    Use it only for a file you trust as it is: from then on it loads like any other and any change to it
    is refused. The network is rebuilt from the file's header to count its parameters."""
    weights = checkpoint.weights_file(Path(path))
    if checkpoint.sidecar_path(weights).exists():
        raise CheckpointError(f"{weights} already has a record, {checkpoint.sidecar_path(weights).name}; "
                              "delete it first if it is wrong")
    header = checkpoint.read_header(weights)
    model = get_model(header["model"], **json.loads(header.get("model_kwargs", "{}")))
    record = checkpoint.new_record(weights, model, description=description)
    checkpoint.load_weights(record)  # its tensors must fit the network before the file is vouched for
    checkpoint.write_record(record)
    return record


def upgrade(source: Source) -> WeightsRecord:
    """Rewrite the record of `source` in the current schema (e.g. a run folder written before it); the
    weights must still match the SHA-256 the old record holds."""
    record = read_record(source)
    model = checkpoint.load_weights(record)
    if record.num_params is None:
        record = dataclasses.replace(record, num_params=sum(p.numel() for p in model.parameters()))
    checkpoint.write_record(record)
    return record
