"""`lenet committee`: one network made of N trained ones, the mean of their probabilities (lenet.committee).

    lenet committee build OUT RUN... [--best K]      from run folders, weights files, shipped names, sweep folders
    lenet committee train --members N --out DIR ...  train N members (seeds S..S+N-1; --augments, --digit-widths:
                                                     members in groups that differ by distortion or by
                                                     normalised digit width), then build
    lenet committee show DIR                         the manifest: members, hashes, provenance, metrics

A committee folder is then used like a run folder: `lenet eval DIR`, `lenet predict --checkpoint DIR`,
`lenet export --checkpoint DIR`, `lenet serve --checkpoint DIR`, `lenet.load(DIR)`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import AUGMENTATIONS
from .flags import add_train_arguments, flag_fields, train_options

if TYPE_CHECKING:  # the parser must not import torch (tests/test_cli.py)
    from lenet.checkpoint import WeightsRecord
    from lenet.committee import BuildResult

# `lenet committee train` takes every training flag but these: seed and out it sets per member, the others
# are its own options.
_NOT_TRAINING = {"seed", "out", "members", "runs", "first_seed", "augments", "digit_widths", "overwrite",
                 "description", "json"}
AS_DRAWN = "none"  # a --digit-widths entry: the member sees the digits as drawn
_TRAIN_FIELDS = [f.name for f in flag_fields() if f.name not in _NOT_TRAINING]
AUGMENTATION_NAMES = list(AUGMENTATIONS.names())


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "committee", help="combine trained networks into a committee (the mean of their probabilities)",
        description="A committee is one network made of N trained networks: its probabilities are the mean of "
                    "theirs. Its folder holds each member's weights with its SHA-256 and a manifest "
                    "(committee.json); every command that takes a run folder takes a committee folder.",
        epilog="examples:\n  lenet committee build committees/three runs/s0 runs/s1 runs/s2\n"
               "  lenet committee build committees/best5 sweeps/seeds --best 5\n"
               "  lenet committee train --members 5 --recipe fast --out committees/fast5\n"
               "  lenet eval committees/fast5\n  lenet export --checkpoint committees/fast5 --format onnx "
               "--out fast5.onnx",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(run=lambda args: _usage(p))
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    _add_build(actions)
    _add_train(actions)
    _add_show(actions)


def _add_output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it holds a committee already")
    p.add_argument("--description", default="", help="a sentence saying what the committee is, kept in its manifest")
    p.add_argument("--json", action="store_true", help="print the manifest as one JSON object")


def _add_build(actions) -> None:
    p = actions.add_parser(
        "build", help="make a committee from trained runs",
        description="Make a committee folder OUT from trained networks, measure it and each member on the test "
                    "set of their dataset (recorded in the manifest) and print the table. Each RUN is a run folder "
                    "(lenet train --out), its model.safetensors, the name of a network for its shipped weights, "
                    "or a sweep folder (lenet sweep), which stands for all its runs.")
    p.add_argument("out", metavar="OUT", help="the committee folder to write (must not exist, unless --overwrite)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="the members: run folders, weights files, shipped names, "
                                                         "sweep folders")
    p.add_argument("--best", type=int, metavar="K",
                   help="keep the K members with the highest validation accuracy (runs trained with --val-size; "
                        "a sweep folder is asked for its best K runs); the test set never chooses members")
    p.add_argument("--data-root", metavar="DIR", help="torchvision-layout folder with DATASET/raw/ (for the test set)")
    _add_output_arguments(p)
    p.set_defaults(run=run_build)


def _add_train(actions) -> None:
    p = actions.add_parser(
        "train", help="train N members with different seeds, then build the committee",
        description="Train N members, the same training flags for each and seeds S, S+1, ..., S+N-1 (--first-seed), "
                    "each into its own run folder under --runs (default OUT-runs/seed-S), then build the committee "
                    "OUT from them. A member whose run folder exists already is continued (--resume), not "
                    "retrained, so an interrupted `committee train` picks up where it stopped.")
    p.add_argument("--members", type=int, required=True, metavar="N", help="how many networks to train")
    p.add_argument("--out", required=True, metavar="DIR", help="the committee folder to write")
    p.add_argument("--runs", metavar="DIR", help="where the members' run folders go (default: OUT-runs)")
    p.add_argument("--first-seed", type=int, default=0, metavar="S", help="the first member's seed (default 0)")
    p.add_argument("--recipe", help="a named set of training values over the defaults; flags still override them")
    p.add_argument("--augments", nargs="+", metavar="NAME", choices=AUGMENTATION_NAMES,
                   help="members that differ by distortion, as in Ciresan et al.'s committees: with K names the "
                        "members are split into K consecutive groups as equal as possible (the first groups take "
                        "one more), each trained with its name's --augment; e.g. --members 10 --augments affine "
                        "elastic-mild+affine trains seeds 0-4 with affine and 5-9 with elastic-mild+affine. "
                        f"Choices: {', '.join(AUGMENTATION_NAMES)}; not with --augment")
    p.add_argument("--digit-widths", nargs="+", metavar="W", type=_width_or_as_drawn,
                   help="members that differ by normalised digit width (Ciresan et al. 2012), grouped like "
                        "--augments: each group trained with its --digit-width W, or none (the digits as drawn); "
                        "e.g. --members 10 --digit-widths none none none none none 12 14 16 18 20; not with "
                        "--digit-width")
    add_train_arguments(p.add_argument_group("training (every member)"), _TRAIN_FIELDS)
    _add_output_arguments(p)
    p.set_defaults(run=run_train)


def _width_or_as_drawn(text: str) -> int | None:
    if text == AS_DRAWN:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a digit width is a whole number of pixels or {AS_DRAWN}, got {text!r}") \
            from None


def _add_show(actions) -> None:
    p = actions.add_parser("show", help="print a committee's members, hashes, provenance and metrics",
                           description="Print a committee folder's manifest as a table (nothing is evaluated; "
                                       "every member's record is checked against the manifest, and its weights "
                                       "against the record's SHA-256).")
    p.add_argument("folder", metavar="DIR", help="a committee folder")
    p.add_argument("--json", action="store_true", help="print the manifest as one JSON object")
    p.set_defaults(run=run_show)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# --- build ---------------------------------------------------------------------------------------------------

def _is_run_source(path: Path) -> bool:
    """A run folder, a weights file or a committee folder: not a sweep folder."""
    from lenet.committee import is_committee

    return not path.is_dir() or is_committee(path) or any(
        (path / name).exists() for name in ("model.safetensors", "checkpoint"))


def _sweep_runs(path: Path, best: int | None) -> list[Path]:
    """The run folders of the sweep folder `path` (its best `best` by validation accuracy, when given)."""
    from lenet.errors import ConfigError

    try:
        from lenet.sweep import runs_of  # the CLI layer may import the sweep package; the library below may not
    except ImportError:
        raise ConfigError(f"{path} holds no model.safetensors or committee.json: not a run folder or a "
                          "committee, and this lenet cannot read sweep folders") from None
    runs = runs_of(path, best=best)
    if not runs:
        raise ConfigError(f"the sweep folder {path} holds no finished run")
    return list(runs)


def member_sources(runs: list[str], best: int | None) -> list[str]:
    """The RUN arguments with each sweep folder replaced by its run folders."""
    from lenet.weights import is_name

    sources: list[str] = []
    for run in runs:
        path = Path(run)
        if is_name(run) or _is_run_source(path):
            sources.append(run)
        else:
            sources += [str(p) for p in _sweep_runs(path, best)]
    return sources


def _best(records: list[WeightsRecord], sources: list[str], best: int) -> tuple[list[WeightsRecord], list[str]]:
    """The `best` members by validation accuracy (ties: the order given)."""
    from lenet.errors import ConfigError

    if best < 1:
        raise ConfigError(f"--best must be at least 1, got {best}")
    if best > len(records):
        raise ConfigError(f"--best {best} chooses from {len(records)} runs: give --best {len(records)} or less, or "
                          "more runs")
    missing = [s for r, s in zip(records, sources, strict=True) if r.metrics.get("val_accuracy") is None]
    if missing:
        raise ConfigError(f"--best chooses by validation accuracy, which {', '.join(missing)} did not record: "
                          "train the members with --val-size (the test set never chooses members)")
    order = sorted(range(len(records)), key=lambda i: -records[i].metrics["val_accuracy"])[:best]
    order.sort()
    return [records[i] for i in order], [sources[i] for i in order]


def build_from(out: str, runs: list[str], args: argparse.Namespace, best: int | None = None) -> BuildResult:
    from lenet import committee
    from lenet.data import load_dataset
    from lenet.weights import read_record

    committee.check_out(out, args.overwrite)
    sources = member_sources(runs, best)
    records = [read_record(s) for s in sources]
    if best is not None:
        records, sources = _best(records, sources, best)
    dataset = committee.shared_dataset(records, sources)
    test = load_dataset(dataset, args.data_root).test
    return committee.build(out, records, test, sources=sources, command=args.command_line,
                           description=args.description, overwrite=args.overwrite)


def run_build(args: argparse.Namespace) -> int:
    result = build_from(args.out, args.runs, args, args.best)
    _report(result.manifest, args.out, args.json)
    return 0


# --- train ---------------------------------------------------------------------------------------------------

def member_groups(members: int, names: list[Any]) -> list[Any]:
    """Each member's value: `names` in consecutive groups as equal as possible, the first groups one longer
    (10 members, 3 names: 4, 3, 3)."""
    size, extra = divmod(members, len(names))
    return [name for i, name in enumerate(names) for _ in range(size + (i < extra))]


def _flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


# Options that `lenet committee train` varies by member group: (its flag, the training field it sets, what it names)
_VARIED = (("augments", "augment", "distortions"), ("digit_widths", "digit_width", "widths"))


def _check_members(args: argparse.Namespace, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Refuse what would waste the training (before it starts); each member's own training values (--augment,
    --digit-width) over `options`."""
    from lenet.committee import check_out
    from lenet.errors import ConfigError

    if args.members < 1:
        raise ConfigError(f"--members must be at least 1, got {args.members}")
    check_out(args.out, args.overwrite, "--out")  # before hours of training, not after
    own: list[dict[str, Any]] = [{} for _ in range(args.members)]
    for group_flag, field, noun in _VARIED:
        names = getattr(args, group_flag, None)
        if not names:
            continue
        flag, each = _flag_of(group_flag), _flag_of(field)
        if field in options:
            raise ConfigError(f"{flag} gives each group of members its {each}: give one of them, not both")
        if len(names) > args.members:
            raise ConfigError(f"{flag} names {len(names)} {noun} for {args.members} members: give at least one "
                              "member to each")
        for values, name in zip(own, member_groups(args.members, names), strict=True):
            if name is not None:
                values[field] = name
    return own


def _check_member_configs(folders: list[Path], seeds: list[int], own: list[dict[str, Any]],
                          options: dict[str, Any]) -> None:
    """Before any member trains: refuse a member whose options a run could not start with, or a member folder
    started with other options than this committee gives it (it would be continued as it is, not retrained)."""
    from lenet.errors import ConfigError
    from lenet.trainer.config import check_run, load_config, make_config

    given = {k: v for k, v in options.items() if k != "recipe"}
    for folder, seed, values in zip(folders, seeds, own, strict=True):
        planned = check_run(make_config(options.get("recipe"), resolve_auto=False, **given, **values, seed=seed,
                                        out=str(folder)))
        if (folder / "config.json").exists():
            differing = _differences(load_config(folder), planned)
            if differing:
                raise ConfigError(f"{folder} holds a member started with other options than this committee gives "
                                  f"it ({'; '.join(differing)}): give the options it was started with, another "
                                  "--runs, or delete that folder")


def _differences(started, planned) -> list[str]:
    """'--lr 0.001 there, 0.5 here' for each option that a resume could not change (precision auto matches what
    it chose; the recipe's name alone is not a difference)."""
    from lenet.trainer.config import RESUME_MAY_CHANGE, config_fields

    out = []
    for f in config_fields():
        there, here = getattr(started, f.name), getattr(planned, f.name)
        if f.name in (*RESUME_MAY_CHANGE, "recipe") or there == here or (f.name == "precision" and here == "auto"):
            continue
        out.append(f"{_flag_of(f.name)} {there} there, {here} here")
    return out


def _train_member(folder: Path, seed: int, own: dict[str, Any], options: dict[str, Any], command: str) -> None:
    """Train one member into `folder` with its own values `own` over `options`, or continue it there."""
    from lenet.api import train

    if (folder / "config.json").exists():
        train(resume=folder, command=command, **({"epochs": options["epochs"]} if "epochs" in options else {}))
    else:
        train(**{**options, **own}, seed=seed, out=str(folder), command=command)


def run_train(args: argparse.Namespace) -> int:
    options = train_options(args, _TRAIN_FIELDS)
    own = _check_members(args, options)
    runs_dir = Path(args.runs or f"{args.out}-runs")
    folders = [runs_dir / f"seed-{args.first_seed + index}" for index in range(args.members)]
    _check_member_configs(folders, [args.first_seed + i for i in range(args.members)], own, options)
    for index, (folder, values) in enumerate(zip(folders, own, strict=True)):
        seed = args.first_seed + index
        given = "".join(f" {_flag_of(field)} {value}" for field, value in values.items())
        print(f"member {index + 1}/{args.members}: seed {seed}{given} -> {folder}", flush=True)
        command = f"{args.command_line}  # member {index}: --seed {seed}{given} --out {folder}"
        _train_member(folder, seed, values, options, command)
    result = build_from(args.out, [str(f) for f in folders], args)
    _report(result.manifest, args.out, args.json)
    return 0


# --- show / the table ----------------------------------------------------------------------------------------

def run_show(args: argparse.Namespace) -> int:
    from lenet import checkpoint, committee

    for record in committee.member_records(args.folder):  # every member's record agrees with the manifest
        checkpoint.checked_bytes(record)  # and its weights with the record
    _report(committee.read_manifest(args.folder), args.folder, args.json)
    return 0


def _percent(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _report(manifest: dict[str, Any], folder: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(manifest))
        return
    members = manifest["members"]
    width = max(len("source"), *(len(str(m.get("source"))) for m in members))
    print(f"committee of {len(members)} in {folder} ({manifest['combine']})")
    print(f"  {'#':>2}  {'source':<{width}}  {'model':<8} {'seed':>5} {'val acc':>8} {'test acc':>9} "
          f"{'errors':>6}  sha256")
    for index, m in enumerate(members):
        seed = "-" if m.get("seed") is None else m["seed"]
        errors = "-" if m.get("test_errors") is None else m["test_errors"]
        print(f"  {index:>2}  {str(m.get('source')):<{width}}  {m['model']:<8} {seed:>5} "
              f"{_percent(m.get('val_accuracy')):>8} {_percent(m.get('test_accuracy')):>9} {errors:>6}  "
              f"{m['sha256'][:12]}")
    metrics = manifest.get("metrics", {})
    if "test_accuracy" in metrics:
        print(f"committee on {manifest.get('dataset')} test set: {metrics['test_accuracy']:.2f}% accuracy "
              f"({metrics['test_errors']} errors)")
