"""Committees: one network made of N trained networks, whose probabilities are the mean of theirs.

A committee's forward pass returns log(mean_i softmax(member_i(x))): its output honours the contract of
every network (N, 10 scores, higher = more likely), and softmax of it IS the mean of the members'
probabilities (the log of a distribution that already sums to one is normalised by softmax unchanged). So
argmax, `evaluate`, `predict`, export and serve need no committee-specific code, and an exported committee is
one graph.

A committee folder, written by `build` (`lenet committee build OUT RUN...`):

    OUT/committee.json                    the manifest (schema "lenet-committee" 1): each member's file, its
                                          SHA-256, network and provenance (source, command, seed); the
                                          committee's own test metrics; how and when it was built
    OUT/members/00/model.safetensors      member 0's weights, with its record model.json beside them
    OUT/members/01/...                    (the record's own SHA-256 must equal the manifest's)

Loading checks every member twice: the manifest's hash against the member's record, and the record's hash
against the bytes loaded (lenet.checkpoint.load_weights). Any change to a member, its record or the manifest's
hashes is refused with a CheckpointError naming the file. The folder is built in a temporary folder beside
OUT and renamed into place, so OUT is either absent or whole.

`lenet.weights` recognises a committee folder (one holding committee.json) wherever a run folder is accepted:
`lenet eval OUT`, `lenet predict --checkpoint OUT`, `lenet export --checkpoint OUT`, `lenet.load(OUT)`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint
from ._io import _umask, atomic_write, atomic_write_json, file_digest, read_json_object
from ._paths import check_output_folder
from ._version import __version__
from .checkpoint import SIDECAR_NAME, WEIGHTS_NAME, WeightsRecord
from .data import Split
from .errors import CheckpointError, ConfigError
from .inference import to_input
from .shipped import MANIFEST_NAME

SCHEMA = "lenet-committee"
SCHEMA_VERSION = 1
MODEL_NAME = "committee"  # the `model` of a committee's record and the `model_name` of its module
COMBINE = "mean of the members' softmax probabilities"
MEMBERS_DIR = "members"
OUTPUT_DESCRIPTION = ("scores of the digits 0-9: the log of the mean of the members' probabilities, higher = more "
                      "likely; softmax gives that mean")


class Committee(nn.Module):
    """N networks with the same input contract; output log(mean of their softmax probabilities)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ConfigError("a committee needs at least one member network")
        self.members = nn.ModuleList(members)
        self.model_name = MODEL_NAME
        self.model_kwargs: dict[str, Any] = {}

    def member_log_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """(M, N, 10): each member's log-probabilities of the input (N, 1, 28, 28)."""
        return torch.stack([torch.log_softmax(member(x).float(), dim=1) for member in self.members])

    def combine(self, member_log_probs: torch.Tensor) -> torch.Tensor:
        """(M, N, 10) member log-probabilities -> (N, 10) log of their mean (logsumexp: no underflow)."""
        return torch.logsumexp(member_log_probs, dim=0) - math.log(len(self.members))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.combine(self.member_log_probabilities(x))


# --- the manifest --------------------------------------------------------------------------------------------

def is_committee(path: str | os.PathLike) -> bool:
    """True when `path` is a committee folder or its committee.json."""
    path = Path(path)
    return (path / MANIFEST_NAME).is_file() if path.is_dir() else path.name == MANIFEST_NAME and path.is_file()


def folder_of(path: str | os.PathLike) -> Path:
    """The committee folder of `path` (the folder itself or its committee.json)."""
    path = Path(path)
    return path.parent if path.name == MANIFEST_NAME and path.is_file() else path


_MEMBER_KEYS = {"path": str, "sha256": str, "model": str}


def _problems(data: dict[str, Any]) -> list[str]:
    problems = []
    if data.get("schema") != SCHEMA:
        problems.append(f"schema is {data.get('schema')!r}, not {SCHEMA!r}")
    members = data.get("members")
    if not isinstance(members, list) or not members:
        return problems + ["members is not a non-empty list"]
    for index, member in enumerate(members):
        if not isinstance(member, dict):
            problems.append(f"member {index} is not an object")
            continue
        problems += [f"member {index}: {key} is missing or not a {kind.__name__}"
                     for key, kind in _MEMBER_KEYS.items() if not isinstance(member.get(key), kind)]
        path = member.get("path")
        if isinstance(path, str) and (Path(path).is_absolute() or ".." in Path(path).parts):
            problems.append(f"member {index}: path {path!r} leaves the committee folder")
        sha = member.get("sha256")
        if isinstance(sha, str) and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
            problems.append(f"member {index}: sha256 is not 64 lowercase hex digits")
    if not isinstance(data.get("metrics", {}), dict):
        problems.append("metrics is not an object")
    return problems


def read_manifest(folder: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a committee folder, checked against the schema."""
    path = folder_of(folder) / MANIFEST_NAME
    try:
        data = read_json_object(path, CheckpointError, "a committee manifest",
                                "rebuild the committee with `lenet committee build`")
    except FileNotFoundError:
        if not path.parent.exists():
            raise CheckpointError(f"{path.parent} does not exist") from None
        raise CheckpointError(f"{path.parent} holds no {MANIFEST_NAME}: not a committee folder") from None
    version = data.get("schema_version")
    if isinstance(version, int) and version > SCHEMA_VERSION and data.get("schema") == SCHEMA:
        raise CheckpointError(f"{path} was written by a newer lenet (committee schema {version}); upgrade lenet")
    problems = _problems(data)
    if problems or version != SCHEMA_VERSION:
        problems += [] if version == SCHEMA_VERSION else [f"schema_version is {version!r}, not {SCHEMA_VERSION}"]
        raise CheckpointError(f"{path} is not a {SCHEMA} manifest {SCHEMA_VERSION}: {'; '.join(problems)}")
    return data


def member_records(folder: str | os.PathLike) -> list[WeightsRecord]:
    """Each member's record, checked against the manifest (the weights are not hashed yet: see `load`)."""
    folder = folder_of(folder)
    manifest = read_manifest(folder)
    records = []
    for index, entry in enumerate(manifest["members"]):
        weights = folder / entry["path"]
        if not weights.is_file():
            raise CheckpointError(f"committee member {index}, {weights}, is missing: restore the committee "
                                  f"folder {folder} whole, or rebuild it")
        record = checkpoint.read_record(weights)
        if record.sha256 != entry["sha256"] or record.model != entry["model"]:
            raise CheckpointError(f"committee member {index}: its record {record.sidecar_path} says "
                                  f"{record.model!r} SHA-256 {record.sha256[:16]}..., the manifest "
                                  f"{folder / MANIFEST_NAME} says {entry['model']!r} {entry['sha256'][:16]}...: "
                                  "a member was replaced or damaged; restore the folder whole, or rebuild it")
        records.append(record)
    return records


def read_record(folder: str | os.PathLike) -> WeightsRecord:
    """The committee as one WeightsRecord: model "committee", the SHA-256 of its manifest (which holds every
    member's), the committee's metrics and dataset, the parameters and bytes of all members together."""
    folder = folder_of(folder)
    manifest = read_manifest(folder)
    records = member_records(folder)
    recipes = {r.recipe for r in records}
    manifest_path = folder / MANIFEST_NAME
    return WeightsRecord(
        model=MODEL_NAME, model_kwargs={}, weights_path=manifest_path, sha256=file_digest(manifest_path, "sha256"),
        size_bytes=manifest_path.stat().st_size + sum(r.size_bytes for r in records),
        num_params=None if any(r.num_params is None for r in records) else sum(r.num_params for r in records),
        dataset=manifest.get("dataset"), metrics=dict(manifest.get("metrics", {})),
        recipe=recipes.pop() if len(recipes) == 1 else None, command=manifest.get("command"),
        created=manifest.get("created"), versions=dict(manifest.get("versions", {})),
        output=dict(checkpoint.OUTPUT_SPEC, description=OUTPUT_DESCRIPTION),
        description=manifest.get("description") or f"a committee of {len(records)} networks: {COMBINE}")


def load(folder: str | os.PathLike, *, device: torch.device | str = "cpu",
         expected_model: str | None = None) -> Committee:
    """The committee in `folder`, in eval mode on `device`, every member's SHA-256 checked.

    With `expected_model`, refuse a committee any of whose members is another network."""
    folder = folder_of(folder)
    records = member_records(folder)
    if expected_model is not None and any(r.model != expected_model for r in records):
        kinds = ", ".join(sorted({r.model for r in records}))
        raise CheckpointError(f"{folder} is a committee of {kinds} networks, not only {expected_model!r}")
    return Committee([checkpoint.load_weights(r, device=device) for r in records]).to(device).eval()


# --- measuring -----------------------------------------------------------------------------------------------

@torch.inference_mode()
def member_and_committee_predictions(committee: Committee, images: torch.Tensor,
                                     batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(members' predicted classes (M, N), the committee's (N,)) of uint8 images, from ONE pass of each
    member: the committee's come from the same `combine` its forward uses."""
    committee = committee.eval()
    device = next(committee.parameters()).device
    members, combined = [], []
    for start in range(0, len(images), batch_size):
        log_probs = committee.member_log_probabilities(to_input(images[start:start + batch_size].to(device)))
        members.append(log_probs.argmax(2).cpu())
        combined.append(committee.combine(log_probs).argmax(1).cpu())
    if not members:
        return torch.empty(len(committee.members), 0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(members, dim=1), torch.cat(combined)


def measure(committee: Committee, split: Split) -> tuple[dict[str, float], list[dict[str, float]]]:
    """(the committee's test metrics, each member's): accuracy in percent and error count."""
    member_predictions, predictions = member_and_committee_predictions(committee, split.images)
    labels = split.labels.cpu()

    def metrics(predicted: torch.Tensor) -> dict[str, float]:
        errors = int((predicted != labels).sum())
        return {"test_accuracy": 100 * (len(labels) - errors) / len(labels), "test_errors": errors}

    return metrics(predictions), [metrics(p) for p in member_predictions]


# --- building ------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BuildResult:
    folder: Path
    manifest: dict[str, Any]
    committee: Committee


def _member_entry(index: int, record: WeightsRecord, source: str, measured: dict[str, float]) -> dict[str, Any]:
    config = record.config or {}
    return {
        "path": f"{MEMBERS_DIR}/{index:02d}/{WEIGHTS_NAME}", "sha256": record.sha256, "model": record.model,
        "model_kwargs": record.model_kwargs, "num_params": record.num_params, "source": source,
        "source_path": str(record.weights_path.resolve()), "command": record.command, "seed": config.get("seed"),
        "recipe": record.recipe, "epoch": record.epoch,
        "val_accuracy": record.metrics.get("val_accuracy"), "recorded_test_accuracy": record.test_accuracy,
        "test_accuracy": measured["test_accuracy"], "test_errors": measured["test_errors"],
    }


def _copy_member(record: WeightsRecord, folder: Path) -> None:
    """Write the member's weights (exactly the bytes whose SHA-256 its record holds) and its record into
    `folder` (the record in the current schema, so a member of an older run folder reads like any other)."""
    data = record.weights_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != record.sha256:
        raise CheckpointError(f"{record.weights_path}: SHA-256 mismatch with its record "
                              f"{record.sidecar_path.name}: it was changed or damaged after it was written; "
                              "restore it or retrain it before it joins a committee")
    weights = folder / WEIGHTS_NAME
    atomic_write(weights, lambda tmp: Path(tmp).write_bytes(data))
    atomic_write_json(folder / SIDECAR_NAME, record.to_dict())


def shared_dataset(records: Sequence[WeightsRecord], sources: Sequence[str]) -> str:
    """The dataset the members share; ConfigError for a nested committee or mixed datasets."""
    if not records:
        raise ConfigError("a committee needs at least one member: give run folders, weights files or names")
    for record, source in zip(records, sources, strict=True):
        if record.model == MODEL_NAME:
            raise ConfigError(f"{source} is itself a committee; give its members' run folders instead "
                              "(a committee of committees would weight their members unequally)")
    datasets = {r.dataset or "mnist" for r in records}
    if len(datasets) > 1:
        raise ConfigError(f"the members were trained on different datasets ({', '.join(sorted(datasets))}); "
                          "a committee's members must share one")
    return datasets.pop()


def _manifest(entries: list[dict[str, Any]], dataset: str, metrics: dict[str, float], command: str | None,
              description: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "combine": COMBINE, "members": entries,
        "dataset": dataset, "metrics": metrics, "command": command, "description": description,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": {"lenet": __version__, "torch": torch.__version__},
    }


def check_out(out: str | os.PathLike, overwrite: bool, flag: str = "OUT") -> Path:
    """Refuse (ConfigError), before any work, a committee folder `out` that exists (unless `overwrite`, and then
    only a committee folder), is a file, lies under a file or cannot be written; `flag` names it in messages."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists: choose another {flag}, or replace it with --overwrite")
    if out.exists() and not is_committee(out):
        raise ConfigError(f"{out} exists and is not a committee folder; lenet will not replace it")
    # The new folder is made beside `out` and renamed onto it: its parent must take new files.
    check_output_folder(out.parent if out.exists() else out, flag)
    return out


def _refuse_repeats(records: Sequence[WeightsRecord], sources: Sequence[str]) -> None:
    """Refuse two members with the same weights (the same run given twice, or a run and its weights file)."""
    first: dict[str, int] = {}
    for index, record in enumerate(records):
        if record.sha256 in first:
            raise ConfigError(f"{sources[index]} and {sources[first[record.sha256]]} are the same network (SHA-256 "
                              f"{record.sha256[:16]}...): a committee of copies of one network is that network; "
                              "give each member once")
        first[record.sha256] = index


def build(out: str | os.PathLike, records: Sequence[WeightsRecord], test: Split, *,
          sources: Sequence[str] | None = None, command: str | None = None, description: str = "",
          overwrite: bool = False) -> BuildResult:
    """Make the committee folder `out` from members' records (lenet.weights.read_record of run folders,
    weights files or shipped names); measure it and each member on `test` (the test split of the members'
    dataset) and record that in the manifest. `sources` name where each member came from (default: its
    weights path). OUT is refused if it exists, unless `overwrite`."""
    out = Path(out)
    sources = [str(r.weights_path) for r in records] if sources is None else list(sources)
    if len(sources) != len(records):
        raise ValueError(f"build: {len(records)} records but {len(sources)} sources")
    dataset = shared_dataset(records, sources)
    check_out(out, overwrite)
    _refuse_repeats(records, sources)
    committee = Committee([checkpoint.load_weights(r) for r in records]).eval()
    metrics, measured = measure(committee, test)
    entries = [_member_entry(i, r, s, m) for i, (r, s, m) in enumerate(zip(records, sources, measured, strict=True))]
    manifest = _manifest(entries, dataset, metrics, command, description)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        for index, record in enumerate(records):
            _copy_member(record, tmp / MEMBERS_DIR / f"{index:02d}")
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        _put_in_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(out, manifest, committee)


def _put_in_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder `tmp` onto `out`; an old committee there is moved aside first, then removed."""
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the usual permissions
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
    os.rename(out, old / "committee")
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)

