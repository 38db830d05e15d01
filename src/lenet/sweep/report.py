"""A sweep's results, read back from its run folders: one row per configuration (n, mean +- std, min, max of
validation and test accuracy, mean wall time), as a table, CSV, JSON and a figure.

Accuracies come from each run folder's model.json record (`lenet.weights.read_record`), never from the study,
so the report says what the saved weights did. A run folder counts once it holds trial.json (written after
its training finished); one folder per configuration x seed, by construction (spec.run_name).

    runs_of(sweep_dir)          the finished run folders (committee building takes these)
    runs_of(sweep_dir, best=5)  the five with the highest validation accuracy
    write_report(sweep_dir)     results.csv, results.json, results.png in the sweep folder
"""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._io import atomic_write, atomic_write_json, atomic_write_text
from ..errors import ConfigError, LenetError

SWEEP_FILE = "sweep.json"
TRIAL_FILE = "trial.json"


@dataclass(frozen=True)
class RunResult:
    """One finished training of a sweep."""

    path: Path
    trial: int
    cell: str  # the configuration, as its varying options ("lr=0.003 recipe=fast"; with only seeds
    # varying, the options given, or "defaults")
    cell_key: str
    seed: int
    val_accuracy: float | None
    test_accuracy: float
    wall_s: float | None


def _sweep_folder(sweep_dir: str | Path) -> Path:
    folder = Path(sweep_dir)
    if not (folder / SWEEP_FILE).is_file():
        raise ConfigError(f"{folder} is not a sweep folder (no {SWEEP_FILE}; `lenet sweep --out DIR` makes one)")
    return folder


def read_run(path: Path) -> RunResult | None:
    """The result of the run folder `path`, or None while it is not finished."""
    from ..weights import read_record

    try:
        trial = json.loads((path / TRIAL_FILE).read_text())
    except (OSError, ValueError):
        return None
    try:
        metrics = read_record(path).metrics
    except LenetError:
        return None
    if "test_accuracy" not in metrics:
        return None
    return RunResult(path=path, trial=int(trial["trial"]), cell=trial["cell"], cell_key=trial["cell_key"],
                     seed=int(trial["seed"]), val_accuracy=metrics.get("val_accuracy"),
                     test_accuracy=float(metrics["test_accuracy"]), wall_s=trial.get("wall_s"))


def collect(sweep_dir: str | Path) -> list[RunResult]:
    """Every finished run of the sweep folder, in trial order."""
    runs = _sweep_folder(sweep_dir) / "runs"
    found = [read_run(p) for p in sorted(runs.iterdir()) if p.is_dir()] if runs.is_dir() else []
    return sorted((r for r in found if r is not None), key=lambda r: (r.trial, r.path.name))


def runs_of(sweep_dir: str | Path, best: int | None = None) -> list[Path]:
    """The finished run folders of a sweep (trial order); with `best=K`, the K with the highest validation
    accuracy (ties: the earlier trial). ConfigError when there are none, when K exceeds them, or when the
    sweep held out no validation images (the test set never chooses)."""
    runs = collect(sweep_dir)
    if not runs:
        raise ConfigError(f"{sweep_dir} holds no finished run yet")
    if best is None:
        return [r.path for r in runs]
    if best <= 0:
        raise ConfigError(f"best must be a positive number of runs, got {best}")
    if any(r.val_accuracy is None for r in runs):
        raise ConfigError(f"choosing the best runs of {sweep_dir} needs validation accuracy: its runs were "
                          f"trained without --val-size (the test set never chooses)")
    if best > len(runs):
        raise ConfigError(f"best={best}, but {sweep_dir} holds {len(runs)} finished run(s)")
    ranked = sorted(runs, key=lambda r: (-r.val_accuracy, r.trial))
    return [r.path for r in ranked[:best]]


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "min": min(values), "max": max(values)}


def summarize(runs: list[RunResult]) -> list[dict[str, Any]]:
    """One row per configuration, in the order of its first trial."""
    cells: dict[str, list[RunResult]] = {}
    for run in runs:
        cells.setdefault(run.cell_key, []).append(run)
    rows = []
    for group in cells.values():
        vals = [r.val_accuracy for r in group if r.val_accuracy is not None]
        walls = [r.wall_s for r in group if r.wall_s is not None]
        rows.append({"configuration": group[0].cell, "n": len(group), "seeds": sorted(r.seed for r in group),
                     "val": _stats(vals), "test": _stats([r.test_accuracy for r in group]),
                     "wall_s_mean": statistics.fmean(walls) if walls else None})
    return rows


def _pm(stats: dict[str, float | None]) -> str:
    if stats["mean"] is None:
        return "-"
    spread = f" ± {stats['std']:.2f}" if stats["std"] is not None else ""
    return f"{stats['mean']:.2f}{spread} ({stats['min']:.2f}-{stats['max']:.2f})"


def format_table(rows: list[dict[str, Any]]) -> str:
    """The configurations as a Markdown table: accuracies in percent, mean ± std (min-max)."""
    lines = ["| configuration | n | val accuracy % | test accuracy % | wall s (mean) |", "|---|---:|---|---|---:|"]
    for row in rows:
        wall = f"{row['wall_s_mean']:.1f}" if row["wall_s_mean"] is not None else "-"
        lines.append(f"| {row['configuration']} | {row['n']} | {_pm(row['val'])} | {_pm(row['test'])} | {wall} |")
    return "\n".join(lines)


CSV_COLUMNS = ["configuration", "n", "seeds", "val_mean", "val_std", "val_min", "val_max", "test_mean", "test_std",
               "test_min", "test_max", "wall_s_mean"]


def _csv_text(rows: list[dict[str, Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        flat = [row["configuration"], row["n"], " ".join(map(str, row["seeds"]))]
        for metric in ("val", "test"):
            flat += ["" if row[metric][k] is None else repr(row[metric][k]) for k in ("mean", "std", "min", "max")]
        flat.append("" if row["wall_s_mean"] is None else repr(row["wall_s_mean"]))
        writer.writerow(flat)
    return buffer.getvalue()


def plot(runs: list[RunResult], rows: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy per configuration, each seed a dot, the mean a bar; validation and test side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("val", "test") if any(row[m]["mean"] is not None for row in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5.0, 1.1 * len(rows) + 2) * len(metrics), 4.5),
                             squeeze=False)
    keys = list(dict.fromkeys(r.cell_key for r in runs))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for x, key in enumerate(keys):
            ys = [getattr(r, f"{metric}_accuracy") for r in runs if r.cell_key == key]
            ys = [y for y in ys if y is not None]
            offsets = [(i - (len(ys) - 1) / 2) * min(0.08, 0.6 / max(1, len(ys))) for i in range(len(ys))]
            ax.scatter([x + o for o in offsets], ys, s=18, zorder=3)
            if ys:
                ax.hlines(statistics.fmean(ys), x - 0.3, x + 0.3, colors="black", zorder=4)
        ax.set_xticks(range(len(rows)), [row["configuration"] for row in rows], rotation=30, ha="right")
        ax.set_ylabel(f"{'validation' if metric == 'val' else 'test'} accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("accuracy per configuration (dots: seeds; line: mean)")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def write_report(sweep_dir: str | Path, runs: list[RunResult] | None = None,
                 out_dir: str | Path | None = None) -> dict[str, Any]:
    """Write results.csv, results.json and results.png (into `out_dir`, default the sweep folder); returns
    the JSON's content: {"configurations": rows, "runs": per-run results, "files": paths}."""
    runs = collect(sweep_dir) if runs is None else runs
    if not runs:
        raise ConfigError(f"{sweep_dir} holds no finished run yet: nothing to report")
    out = Path(out_dir or sweep_dir)
    rows = summarize(runs)
    files = {"csv": str(out / "results.csv"), "json": str(out / "results.json"), "png": str(out / "results.png")}
    report = {"configurations": rows, "files": files,
              "runs": [{"run": str(r.path), "trial": r.trial, "configuration": r.cell, "seed": r.seed,
                        "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy, "wall_s": r.wall_s}
                       for r in runs]}
    atomic_write_text(files["csv"], _csv_text(rows))
    atomic_write_json(files["json"], report)
    plot(runs, rows, Path(files["png"]))
    return report



def collect_from_study(url: str, study: str, folder: str | Path | None = None) -> list[RunResult]:
    """The finished runs a study records (any machine's): numbers from the run folder where it is under
    `folder`/runs here, else as the worker recorded them in the study (path shown as HOST:NAME)."""
    from optuna.trial import TrialState

    from .study import StudyRef, open_study

    opened = open_study(StudyRef(url, study))
    runs: dict[str, RunResult] = {}
    for trial in opened.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        info = trial.user_attrs.get("lenet")
        if not info or info["run"] in runs:
            continue
        local = read_run(Path(folder) / "runs" / info["run"]) if folder else None
        runs[info["run"]] = local or RunResult(
            path=Path(f"{info['host']}:{info['run']}"), trial=trial.number, cell=info["cell"],
            cell_key=info["cell_key"], seed=int(info["seed"]), val_accuracy=info["val_accuracy"],
            test_accuracy=float(info["test_accuracy"]), wall_s=info["wall_s"])
    return sorted(runs.values(), key=lambda r: (r.trial, r.path.name))
