"""Regenerate the pretrained weights shipped in src/lenet/models/weights/ with lenet's own recipes.

    python scripts/make_weights.py seed classic        # train (on real MNIST) and package
    python scripts/make_weights.py seed --reuse        # package runs/weights/seed if it is a finished run
                                                       # of exactly the recorded command

For each NAME it runs `lenet train --model NAME <recipe flags> --out runs/weights/NAME`, checks the test
accuracy on the real MNIST test set, copies the checkpoint to models/weights/NAME.safetensors and writes
NAME.json (recipe, exact command, test accuracy, parameter count, SHA-256, versions). The package then
loads it with `lenet.load(NAME)`, checking the SHA-256.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The training flags behind each shipped network (the command is recorded verbatim in NAME.json).
# seed: the tutorial recipe, trained longer with a cosine decay and the paper's random affine distortions
# (augment.py), so it reads digits that are a little slanted, squeezed or off-centre (real handwriting).
# classic: the paper's recipe, as the paper ran it.
TRAIN_FLAGS = {
    "seed": ["--recipe", "tutorial", "--epochs", "20", "--schedule", "cosine", "--augment", "affine",
             "--seed", "0"],
    "classic": ["--recipe", "paper", "--seed", "0"],
}
# Settings that change how fast a run goes, never what it learns: not compared when reusing a run.
_RUN_ONLY = {"out", "threads", "log_every", "device", "deterministic"}


def train_command(name: str, out: Path, flags: list[str] | None = None) -> list[str]:
    flags = flags if flags is not None else TRAIN_FLAGS.get(name, [])
    return ["lenet", "train", "--model", name, *flags, "--out", str(out)]


def expected_config(command: list[str]) -> dict:
    """The TrainConfig that `command` builds, as the CLI would build it."""
    import lenet
    from lenet.cli import build_parser

    args = build_parser().parse_args(command[1:])
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(lenet.TrainConfig) if hasattr(args, f.name)}
    options.pop("recipe", None)
    return dataclasses.asdict(lenet.make_config(args.recipe, **options))


def finished_run_matches(out: Path, command: list[str]) -> bool:
    config_path, sidecar = out / "config.json", out / "model.json"
    if not config_path.is_file() or not sidecar.is_file():
        return False
    config = json.loads(config_path.read_text())
    info = json.loads(sidecar.read_text())
    expected = expected_config(command)
    # A field the run's config lacks was added to TrainConfig later; its default keeps the old behaviour.
    same = all(config[k] == (list(v) if isinstance(v, tuple) else v)
               for k, v in expected.items() if k not in _RUN_ONLY and k in config)
    return same and info.get("epoch") == config.get("epochs") and "test_accuracy" in info.get("metrics", {})


def _history(out: Path) -> list[dict]:
    """Per-epoch metrics of the run, shipped so `lenet viz` can draw the training curves of the weights."""
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def make(name: str, runs: Path, reuse: bool, flags: list[str] | None, threads: int | None) -> dict:
    import lenet
    from lenet._io import atomic_write, atomic_write_json, file_digest
    from lenet.checkpoint import read_info
    from lenet.models import model_info
    from lenet.pretrained import WEIGHTS_DIR, load_pretrained

    out = runs / name
    command = train_command(name, out.relative_to(ROOT) if out.is_relative_to(ROOT) else out, flags)
    if reuse and finished_run_matches(out, command):
        print(f"{name}: reusing the finished run in {out}")
    else:
        extra = ["--no-progress", "--log-every", "0"] + (["--threads", str(threads)] if threads else [])
        print(f"{name}: {shlex.join(command)}", flush=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lenet", *command[1:], *extra], cwd=ROOT, check=True)
        print(f"{name}: trained in {time.perf_counter() - t0:.0f} s")

    model = lenet.load(out)
    result = lenet.evaluate(model, device="cpu")  # the real MNIST test set shipped with lenet
    info = read_info(out)
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    atomic_write(weights, lambda tmp: shutil.copyfile(out / "model.safetensors", tmp))
    meta = {
        "name": name,
        "description": model_info(name).description,
        "recipe": info.get("config", {}).get("recipe"),
        "command": shlex.join(command),
        "test_accuracy": round(result.accuracy, 2),
        "test_errors": result.to_dict()["errors"],
        "dataset": "mnist: trained on the 60,000 training images, tested on the 10,000 test images",
        "num_params": sum(p.numel() for p in model.parameters()),
        "sha256": file_digest(weights, "sha256"),
        "size_bytes": weights.stat().st_size,
        "config": info.get("config"),
        "history": _history(out),
        "lenet_version": lenet.__version__,
        "torch_version": info.get("torch"),
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "input": "float32 (N, 1, 28, 28): MNIST pixels / 255, background 0, ink 1",
        "output": "(N, 10) scores, higher = more likely",
    }
    atomic_write_json(WEIGHTS_DIR / f"{name}.json", meta)
    check = lenet.evaluate(load_pretrained(name), device="cpu").accuracy
    assert abs(check - result.accuracy) < 1e-9, "shipped weights do not reproduce the run's accuracy"
    print(f"{name}: {meta['test_accuracy']:.2f}% test accuracy, {meta['size_bytes']:,} bytes, "
          f"sha256 {meta['sha256']}")
    return meta


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", metavar="NAME", help="registered networks to (re)generate")
    parser.add_argument("--reuse", action="store_true",
                        help="package an existing finished run of the same command instead of retraining")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "weights"), help="where the training runs go")
    parser.add_argument("--flags", help="override the training flags (one quoted string), e.g. '--recipe fast'")
    parser.add_argument("--threads", type=int, help="CPU threads for training")
    args = parser.parse_args()

    from lenet.models import list_models

    unknown = [n for n in args.names if n not in list_models()]
    if unknown:
        parser.error(f"unknown network(s) {', '.join(unknown)}; registered: {', '.join(list_models())}")
    flags = shlex.split(args.flags) if args.flags else None
    for name in args.names:
        make(name, Path(args.runs).resolve(), args.reuse, flags, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
