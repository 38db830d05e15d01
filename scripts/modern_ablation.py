"""The ablation table of `--recipe modern` (docs/modern.md), from the run folders of its validation runs.

    python scripts/modern_ablation.py RUNS_DIR [--markdown]

RUNS_DIR holds one run folder per (variant, seed), named VARIANT-sSEED, each trained with --val-size 10000
and --ema 0.999 (the moving average changes nothing in training: its run's raw weights are the run without it,
so one run measures both). For every run it reads the validation accuracy of the raw weights and of the moving
average (metrics.jsonl), and measures test-time augmentation (lenet.inference.tta_scores) of the raw weights on
the same validation images, rebuilt from the run's seed. Every number is a validation number: the test set is
not read.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from lenet.checkpoint import run_file
from lenet.data import load_dataset
from lenet.inference import evaluate
from lenet.models import get_model
from lenet.trainer.config import load_config

RUN_NAME = re.compile(r"^(?P<variant>.+)-s(?P<seed>\d+)$")


def raw_network(folder: Path) -> torch.nn.Module:
    """The run's last raw weights (resume.safetensors' "model." tensors; model.safetensors holds the average)."""
    cfg = load_config(folder)
    net = get_model(cfg.model)
    tensors = load_file(str(run_file(folder, "resume.safetensors")))
    net.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    return net.eval()


def measure(folder: Path) -> dict[str, float] | None:
    """Validation accuracy of one finished run: raw weights, moving average (when trained with it), raw + TTA;
    None for a run that has not finished or has no validation split."""
    cfg = load_config(folder)
    last = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
    if last["epoch"] != cfg.epochs or not cfg.val_size:
        return None
    raw = last.get("val_accuracy_raw", last["val_accuracy"])
    row = {"raw": raw, "epochs": cfg.epochs}
    if cfg.ema:
        row["ema"] = last["val_accuracy"]
    val = load_dataset(cfg.dataset, cfg.data_root, cfg.val_size, cfg.seed).val
    row["tta"] = evaluate(raw_network(folder), val, tta=True).accuracy
    return row


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f} % (1 seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} % ({len(values)} seeds)"


def paired(rows: dict[str, dict[int, dict[str, float]]], variant: str, base: str) -> str:
    """The variant's raw accuracy minus the base's, seed by seed (each seed holds out its own validation
    images, so the seed-to-seed spread is larger than the differences between variants on one seed)."""
    seeds = sorted(set(rows[variant]) & set(rows.get(base, {})))
    if variant == base or not seeds:
        return "–"
    return summary([rows[variant][s]["raw"] - rows[base][s]["raw"] for s in seeds]).replace(" %", " points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--base", default="affine", help="the variant that is the recipe (default: affine)")
    args = parser.parse_args()
    rows: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for folder in sorted(p for p in args.runs.iterdir() if p.is_dir() and RUN_NAME.match(p.name)):
        if not (folder / "metrics.jsonl").is_file():
            continue
        name = RUN_NAME.match(folder.name)
        row = measure(folder)
        if row is None:
            print(f"{folder.name}: not a finished run with a validation split, left out")
            continue
        rows[name["variant"]][int(name["seed"])] = row
        print(f"{folder.name}: " + ", ".join(f"{k} {v:.2f}" if k != "epochs" else f"{v} epochs"
                                             for k, v in row.items()), flush=True)
    print(f"\n| variant | raw weights | minus {args.base}, same seeds | moving average | raw + TTA |")
    print("|---|---|---|---|---|")
    for variant, by_seed in rows.items():
        found = list(by_seed.values())
        cells = [summary([r[k] for r in found if k in r]) if any(k in r for r in found) else "–"
                 for k in ("raw", "ema", "tta")]
        print(f"| {variant} | {cells[0]} | {paired(rows, variant, args.base)} | {cells[1]} | {cells[2]} |")


if __name__ == "__main__":
    main()
