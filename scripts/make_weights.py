"""Make the trained weights shipped in src/lenet/models/weights/ with lenet's own recipes, or rewrite their records.

    python scripts/make_weights.py seed classic        # train (on real MNIST) and package
    python scripts/make_weights.py seed --epochs 5     # any `lenet train` flag overrides the network's own
    python scripts/make_weights.py seed --reuse        # package runs/weights/seed if it is a finished run
                                                       # of exactly the command below
    python scripts/make_weights.py seed classic --rewrite-records
                                                       # no training: rewrite NAME.json for the shipped weights
    python scripts/make_weights.py seed --onnx-only    # no training: export NAME.onnx again

For each NAME it runs `lenet train --model NAME <flags> --out runs/weights/NAME` (the flags: TRAIN_FLAGS[NAME],
then those given here, which take every `lenet train` flag), measures the test accuracy on the real MNIST
test set, copies the weights to models/weights/NAME.safetensors and writes the record NAME.json (schema
"lenet-weights", lenet/checkpoint.py). The recorded command is the one that ran, less `--no-progress`: run as
it is, it builds the recorded config field for field (tests/test_pretrained.py checks). lenet loads the
weights with `lenet.load(NAME)`, checking their SHA-256.

`--rewrite-records` leaves the weights alone (same bytes, same SHA-256) and writes their record in the current
schema: the config becomes the one the recorded command builds (checked against every value the old record
holds; fields added to TrainConfig since take the value that command gives them), the command and
description are derived from that config, and the test accuracy is measured again and must equal the
recorded one to the digit. History, creation time and versions are kept: they describe the training run.

Every mode ends by exporting the shipped weights to NAME.onnx (its specification NAME.onnx.json records its
SHA-256 and that of the weights), parity with PyTorch checked on the 10,000 test images: the graph `lenet
predict` runs without importing torch (lenet.shipped_onnx). `--onnx-only` does only that.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# The training flags behind each shipped network.
# seed: the tutorial recipe, trained longer with a cosine decay and the paper's random affine distortions
# (augment.py), so it reads digits that are a little slanted, squeezed or off-centre (real handwriting).
# classic: the paper's recipe, as the paper ran it.
TRAIN_FLAGS = {
    "seed": ["--recipe", "tutorial", "--epochs", "20", "--schedule", "cosine", "--augment", "affine",
             "--seed", "0"],
    "classic": ["--recipe", "paper", "--seed", "0"],
    # modern: its recipe (docs/modern.md), seed 0; the seed-0 member of the shipped modern-committee too.
    "modern": ["--recipe", "modern", "--seed", "0"],
}
# What make_weights sets unless told otherwise: no loss lines in its log.
RUN_DEFAULTS = ["--log-every", "0"]
# Fields that say how a run went, not what it learned: left out of the description.
_RUN_DETAILS = ("device", "threads", "log_every", "out", "compile", "kernels", "deterministic", "data_root")
_DATASET_TEXT = {"mnist": "the 60,000 MNIST training images, tested on the 10,000 test images"}


# --- commands and configs -----------------------------------------------------------------------------------

def _train_parser() -> argparse.ArgumentParser:
    from lenet.cli.flags import add_train_arguments

    parser = argparse.ArgumentParser(prog="lenet train", add_help=False)
    add_train_arguments(parser)
    return parser


def _options(tokens: list[str]) -> dict[str, Any]:
    """TrainConfig options (and "recipe") that `lenet train TOKENS` gives, through the train CLI's own flags."""
    from lenet.cli.flags import train_options

    options = train_options(_train_parser().parse_args(tokens))
    for key in ("resume", "progress_bar"):
        options.pop(key, None)
    return options


def config_of(command: str) -> dict[str, Any]:
    """The TrainConfig that `command` ("lenet train ...") builds, in its JSON form."""
    from lenet.trainer.config import make_config

    tokens = shlex.split(command)
    if tokens[:2] != ["lenet", "train"]:
        raise ValueError(f"not a `lenet train` command: {command}")
    options = _options(tokens[2:])
    return json.loads(json.dumps(make_config(options.pop("recipe", None), **options).to_dict()))


def _flag_tokens(name: str, value: Any) -> list[str]:
    from lenet.cli.flags import flag_name

    if value is True:
        return [flag_name(name)]
    if isinstance(value, (list, tuple)):
        return [flag_name(name), *map(str, value)]
    return [flag_name(name), str(value)]


def command_for(name: str, config: dict[str, Any]) -> str:
    """The `lenet train` command that builds `config`: TRAIN_FLAGS[name] (or only the recipe, when the config's
    is another), then a flag for every value that differs from what those give. config_of(result) == config."""
    base = ["lenet", "train", "--model", name, *TRAIN_FLAGS.get(name, [])]
    built = config_of(shlex.join(base))
    if built["recipe"] != config.get("recipe"):
        base = ["lenet", "train", "--model", name] + (["--recipe", config["recipe"]] if config.get("recipe") else [])
        built = config_of(shlex.join(base))
    if set(config) != set(built):
        raise ValueError(f"not a whole TrainConfig: {', '.join(sorted(set(config) ^ set(built)))}")
    extra: list[str] = []
    for key in built:  # TrainConfig's field order, whatever order the config's keys come in
        value = config[key]
        if key != "model" and built[key] != value:
            if value is None or value is False or key == "extra":
                raise ValueError(f"{key}={value!r} has no flag; train with TRAIN_FLAGS that give it")
            extra += _flag_tokens(key, value)
    # a flag of `base` given again with another value is dropped from `base` (TRAIN_FLAGS are `--flag value`)
    pairs = list(zip(base[2::2], base[3::2], strict=True))
    base = base[:2] + [t for flag, value in pairs if flag not in extra for t in (flag, value)]
    command = shlex.join(base + extra)
    if config_of(command) != config:
        raise AssertionError(f"{command} does not rebuild the config")
    return command


def describe(name: str, config: dict[str, Any]) -> str:
    """The network's description, then how these weights were trained: the recipe and every value that
    departs from it (run details such as threads left out)."""
    from lenet.models import model_entry

    recipe = config.get("recipe")
    reference = config_of(shlex.join(["lenet", "train", "--model", name] + (["--recipe", recipe] if recipe else [])))
    label = "recipe" if recipe else "default"
    changes = [f"{k} {_shown(config[k])} ({label}: {_shown(v)}{_unused(k, config)})" for k, v in reference.items()
               if k not in _RUN_DETAILS and k not in ("model", "recipe") and config.get(k) != v]
    how = f"recipe {recipe}" if recipe else "lenet's defaults"
    data = _DATASET_TEXT.get(config["dataset"], f"the {config['dataset']} training set")
    return (f"{model_entry(name).description}. Weights: {how}" + (f", with {', '.join(changes)}" if changes else "")
            + f"; seed {config['seed']}; trained on {data}")


def _unused(key: str, config: dict[str, Any]) -> str:
    # A value older runs recorded for a setting their loss never read (map_j's default was 0.1 once).
    return f"; unused by loss {config['loss']}" if key == "map_j" and config["loss"] != "map" else ""


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


# --- measuring and writing ----------------------------------------------------------------------------------

def measure(model) -> dict[str, float]:
    """Test accuracy (percent, 2 decimals, as recorded) and errors on the real MNIST test set, on the CPU."""
    from lenet.data import load_dataset
    from lenet.inference import evaluate

    result = evaluate(model.to("cpu"), load_dataset("mnist").test)
    return {"test_accuracy": round(result.accuracy, 2), "test_errors": result.errors}


def _final_metrics(measured: dict[str, float], history: list[dict]) -> dict[str, float]:
    last = history[-1] if history else {}
    return {**measured, **{k: last[k] for k in ("train_loss", "train_accuracy", "val_accuracy") if k in last}}


def _check_shipped(record) -> None:
    """Load the shipped weights as users do (SHA-256 checked) and check their accuracy and record again."""
    from lenet.weights import load_network, read_record

    assert read_record(record.model) == record, "the written record does not read back the same"
    again = measure(load_network(record.model))
    assert again == {k: record.metrics[k] for k in again}, f"shipped weights give {again}, not {record.metrics}"
    print(f"{record.model}: {record.test_accuracy:.2f}% test accuracy ({record.metrics['test_errors']} errors), "
          f"{record.size_bytes:,} bytes, sha256 {record.sha256}\n  {record.command}\n  {record.description}")


def finished_run(out: Path, command: str):
    """The record of the run in `out` when it finished and was made by exactly `command`, else None."""
    from lenet.errors import LenetError
    from lenet.weights import read_record

    try:
        record = read_record(out)
    except LenetError:
        return None
    done = record.epoch == record.config.get("epochs") and "test_accuracy" in record.metrics
    return record if done and json.loads(json.dumps(record.config)) == config_of(command) else None


def make(name: str, runs: Path, reuse: bool, flags: list[str]):
    """Train `name` (or reuse its finished run), copy its weights into the package and write their record."""
    from lenet import checkpoint
    from lenet._io import atomic_write
    from lenet.weights import WEIGHTS_DIR

    out = runs / name
    shown_out = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    command = shlex.join(["lenet", "train", "--model", name, *TRAIN_FLAGS.get(name, []), *RUN_DEFAULTS, *flags,
                          "--out", str(shown_out)])
    command = command_for(name, config_of(command))  # one flag per value: what a reader can rerun
    if reuse and finished_run(out, command) is not None:
        print(f"{name}: reusing the finished run in {out}")
    else:
        print(f"{name}: {command}", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lenet", *shlex.split(command)[1:], "--no-progress"], cwd=ROOT,
                       check=True)
        print(f"{name}: trained in {time.perf_counter() - t0:.0f} s")
    run = finished_run(out, command)
    assert run is not None, f"{out} holds no finished run of {command}"
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    metrics = _final_metrics(measure(checkpoint.load_weights(run)), history)
    weights = atomic_write(WEIGHTS_DIR / f"{name}.safetensors", lambda tmp: shutil.copyfile(run.weights_path, tmp))
    # Same bytes as the run's weights, so the same SHA-256 and size; the run's versions and time are kept.
    record = dataclasses.replace(run, weights_path=weights, command=command, metrics=metrics, history=history,
                                 description=describe(name, run.config))
    checkpoint.write_record(record)
    _check_shipped(record)
    return record


def _previous(sidecar: Path) -> dict[str, Any]:
    """What a shipped record says about its training run, in the current schema or the one before it (top-level
    "name", "test_accuracy", "test_errors", "lenet_version", "torch_version")."""
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    if "schema" in data:
        return {**{k: data[k] for k in ("sha256", "config", "history", "created", "versions")},
                **{k: data["metrics"][k] for k in ("test_accuracy", "test_errors")}}
    kept = ("sha256", "config", "history", "created", "test_accuracy", "test_errors")
    return {**{k: data[k] for k in kept}, "versions": {"lenet": data["lenet_version"], "torch": data["torch_version"]}}


def rewrite_record(name: str):
    """Write the record of the shipped weights of `name` in the current schema, without training (see above)."""
    from lenet import checkpoint
    from lenet._io import file_digest
    from lenet.weights import WEIGHTS_DIR

    weights = WEIGHTS_DIR / f"{name}.safetensors"
    old = _previous(checkpoint.sidecar_path(weights))
    base = config_of(shlex.join(["lenet", "train", "--model", name, *TRAIN_FLAGS.get(name, [])]))
    config = {**base, **old["config"]}  # a field the old config lacks: the value the command gives it
    command = command_for(name, config)
    assert file_digest(weights, "sha256") == old["sha256"], f"{weights} is not the file its record describes"
    header = checkpoint.read_header(weights)
    record = checkpoint.WeightsRecord(
        model=name, model_kwargs=json.loads(header["model_kwargs"]), weights_path=weights, sha256=old["sha256"],
        size_bytes=weights.stat().st_size, num_params=None, dataset=config["dataset"],
        epoch=old["history"][-1]["epoch"], config=config, recipe=config["recipe"], command=command,
        history=old["history"], created=old["created"], versions=old["versions"],
        description=describe(name, config))
    model = checkpoint.load_weights(record)  # checks the SHA-256 against the old record's
    measured = measure(model)
    recorded = {k: old[k] for k in measured}
    assert measured == recorded, f"{name}: measured {measured}, the record says {recorded}"
    record = dataclasses.replace(record, num_params=sum(p.numel() for p in model.parameters()),
                                 metrics=_final_metrics(measured, old["history"]))
    checkpoint.write_record(record)
    _check_shipped(record)
    return record


def write_onnx(name: str) -> None:
    """Export the shipped weights of `name` to NAME.onnx beside them, parity-checked on the test set, and read it
    back as `lenet predict` will (lenet.shipped_onnx checks both SHA-256)."""
    from lenet import shipped_onnx
    from lenet.data import load_dataset
    from lenet.export import export
    from lenet.weights import load_network, read_record

    record = read_record(name)
    spec = export(load_network(name), shipped_onnx.graph_path(name), "onnx",
                  check_images=load_dataset("mnist").test.images,
                  source={"weights": f"{name}.safetensors", "sha256": record.sha256})
    shipped_onnx.load(name)
    parity = spec["parity"]
    print(f"{name}: {shipped_onnx.graph_path(name).name}, {shipped_onnx.graph_path(name).stat().st_size:,} bytes, "
          f"same class on {parity['same_class']:,} of {parity['images']:,} test images, "
          f"max score difference {parity['max_abs_diff']:.1e}")


def _user_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The training flags given on this command line, one token list in TrainConfig field order."""
    from lenet.cli.flags import train_options

    options = train_options(args)
    for key in ("resume", "progress_bar"):
        options.pop(key, None)
    for key, why in (("model", "name the networks as NAME arguments"), ("out", "use --runs")):
        if key in options:
            parser.error(f"--{key} is not for make_weights: {why}")
    recipe = options.pop("recipe", None)
    return (["--recipe", recipe] if recipe else []) + [t for k, v in options.items() for t in _flag_tokens(k, v)]


def main(argv: list[str] | None = None) -> int:
    from lenet.cli.flags import add_train_arguments
    from lenet.models import list_models

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", metavar="NAME", help="registered networks to (re)generate")
    parser.add_argument("--reuse", action="store_true",
                        help="package an existing finished run of the same command instead of retraining")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "weights"), help="where the training runs go")
    parser.add_argument("--rewrite-records", action="store_true",
                        help="no training: rewrite the records of the shipped weights in the current schema")
    parser.add_argument("--onnx-only", action="store_true",
                        help="no training: export the shipped weights to NAME.onnx again")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in list_models()]
    if unknown:
        parser.error(f"unknown network(s) {', '.join(unknown)}; registered: {', '.join(list_models())}")
    flags = _user_flags(args, parser)
    for mode in ("rewrite_records", "onnx_only"):
        if getattr(args, mode) and (flags or args.reuse):
            parser.error(f"--{mode.replace('_', '-')} trains nothing: it takes no training flags and no --reuse")
    for name in args.names:
        if args.rewrite_records:
            rewrite_record(name)
        elif not args.onnx_only:
            make(name, Path(args.runs).resolve(), args.reuse, flags)
        write_onnx(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
