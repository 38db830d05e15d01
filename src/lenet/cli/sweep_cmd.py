"""`lenet sweep`: many trainings (a grid of options x seeds, or a search), as a study several worker processes and
machines share; `lenet sweep report` tables their results.

The training flags are `lenet train`'s, generated from TrainConfig's fields like theirs (lenet.cli.flags), except
that each takes a list: `--seed 0-9`, `--lr 1e-3,3e-3`, `--recipe fast,tutorial`, `--deterministic true,false`.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..trainer.config import GROUPS, field_choices
from .flags import field_help, flag_fields, flag_name

NOT_FLAGS = ("out",)  # --out names the sweep's folder here


def _add_list_field(container: Any, f: dataclasses.Field) -> None:
    """A training flag that takes a list: text kept as given, parsed by lenet.sweep.spec.parse_option."""
    kwargs: dict[str, Any] = {"help": field_help(f), "default": None}
    if f.metadata["type"] is bool:
        kwargs.update(nargs="?", const="true", metavar="true,false")
    elif f.metadata["nargs"]:
        kwargs.update(nargs=f.metadata["nargs"], metavar=f.metadata["metavar"])
    else:
        choices = field_choices(f)
        kwargs["metavar"] = "{" + ",".join(choices) + "}[,...]" if choices else "LIST"
    container.add_argument(flag_name(f.name), **kwargs)


def add_parser(subparsers) -> None:
    from ..recipes import RECIPES

    p = subparsers.add_parser(
        "sweep", help="many trainings at once: a grid over options and seeds, or a search; one machine or many",
        description="Train every combination of the options given as lists, for every seed (or, with --search, "
                    "K sampled configurations), in --workers processes on this machine and in any other "
                    "machine running the same command against the same --storage. Every option of `lenet train` "
                    "is here and may take a list: a,b,c (integers also 0-9). Each training is a normal run "
                    "folder under DIR/runs/; the study (DIR/study.db unless --storage) records every trial, "
                    "re-runs the trial of a killed worker, and lets a stopped sweep continue. "
                    "The report (DIR/results.csv, .json, .png) is written at the end.",
        epilog="examples:\n"
               "  lenet sweep --seed 0-9 --out sweeps/defaults\n"
               "  lenet sweep --recipe fast,tutorial --seed 0-4 --workers 2 --out sweeps/recipes\n"
               "  lenet sweep --recipe fast --val-size 5000 --search tpe --trials 40 \\\n"
               "      --space lr=log:1e-3:3e-2 --space batch_size=128,256,512 --out sweeps/tpe\n"
               "  lenet sweep ... --storage postgresql+psycopg://lenet:PW@db-host/lenet --study s1 --out DIR\n"
               "  lenet sweep report sweeps/defaults\n"
               "  lenet sweep report postgresql+psycopg://lenet:PW@db-host/lenet --study s1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {key: p.add_argument_group(f"{title} (each may be a list)") for key, title in GROUPS.items()}
    groups["what"].add_argument("--recipe", metavar="{" + ",".join(RECIPES) + "}[,...]",
                                help="named sets of values over the defaults; flags still override them")
    for f in flag_fields():
        if f.name not in NOT_FLAGS:
            _add_list_field(groups[f.metadata["group"]], f)
            if f.name == "augment":
                groups["how"].add_argument("--distort", action="store_true", help="= --augment affine")
    _add_sweep_options(p.add_argument_group("sweep"))
    p.set_defaults(run=run_sweep)
    _add_report_parser(p)


def _add_sweep_options(sweep) -> None:
    sweep.add_argument("--out", metavar="DIR", help="the sweep's folder (run folders, study, report); required")
    sweep.add_argument("--workers", type=int, default=1, metavar="N",
                       help="trainings at once on this machine, each with cores/N threads (default 1; --threads "
                            "sets the threads of each)")
    sweep.add_argument("--search", metavar="{tpe,random}", help="sample --trials configurations from --space "
                                                                "instead of running a grid")
    sweep.add_argument("--trials", type=int, default=0, metavar="K", help="with --search: trainings to sample")
    sweep.add_argument("--space", action="append", metavar="NAME=SPEC",
                       help="a search dimension: NAME=log:LOW:HIGH, NAME=float:LOW:HIGH, NAME=int:LOW:HIGH or "
                            "NAME=A,B,C (repeat per option); the objective is validation accuracy (--val-size)")
    sweep.add_argument("--storage", metavar="URL", help="the study's database, any SQLAlchemy URL (e.g. "
                                                        "postgresql+psycopg://USER:PW@HOST/DB); default: "
                                                        "SQLite in DIR/study.db")
    sweep.add_argument("--study", metavar="NAME", help="the study's name in --storage (default: sweep); "
                                                       "machines with the same NAME share its trials")
    sweep.add_argument("--heartbeat-interval", type=int, default=5, metavar="S",
                       help="seconds between a running trial's heartbeats (default 5)")
    sweep.add_argument("--grace-period", type=int, default=20, metavar="S",
                       help="a trial without a heartbeat for S seconds is failed and re-run (default 20)")


def _add_report_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="sweep_command", metavar="report")
    r = sub.add_parser("report", help="table the results of a sweep (CSV, JSON, PNG)",
                       description="Per configuration: n, mean ± std, min and max of validation and test "
                                   "accuracy, mean wall time; read from the run folders' model.json records. "
                                   "Writes results.csv, results.json and results.png.")
    r.add_argument("source", metavar="DIR|URL", help="a sweep folder, or a study's database URL (with --study)")
    r.add_argument("--study", metavar="NAME", help="with a URL: the study's name (default: sweep)")
    r.add_argument("--dir", metavar="DIR", help="with a URL: the local sweep folder whose run folders to read")
    r.add_argument("--out", metavar="DIR", help="where to write the files (default: the sweep folder, or .)")
    r.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    r.set_defaults(run=run_report)


def sweep_spec(args: argparse.Namespace) -> tuple[Any, int | None]:
    """(SweepSpec, threads per worker) from the parsed flags."""
    from ..errors import ConfigError
    from ..sweep.spec import SweepSpec, parse_option, parse_space, parse_values

    fixed: dict[str, Any] = {}
    lists: dict[str, list[Any]] = {}
    seeds, threads = [0], None
    given = {f.name: getattr(args, f.name) for f in flag_fields() if f.name not in NOT_FLAGS}
    for name, raw in [("recipe", args.recipe), *given.items()]:
        if raw is None:
            continue
        values = parse_values(name, raw) if name == "recipe" else parse_option(name, raw)
        if name == "seed":
            seeds = values
        elif name == "threads":
            if len(values) != 1:
                raise ConfigError("--threads takes one value here: the threads of each worker")
            threads = values[0]
        elif len(values) == 1:
            fixed[name] = values[0]
        else:
            lists[name] = values
    if args.distort:
        if "augment" in fixed or "augment" in lists:
            raise ConfigError("--distort is --augment affine; it cannot be combined with --augment")
        fixed["augment"] = "affine"
    space = tuple(parse_space(text) for text in args.space or [])
    return SweepSpec(fixed, lists, seeds, args.search, args.trials, space), threads


def run_sweep(args: argparse.Namespace) -> int:
    import sys

    from ..errors import ConfigError
    from ..sweep.runner import run_sweep as sweep

    if not args.out:
        raise ConfigError("--out DIR is required: the folder for the sweep's run folders, study and report")
    spec, threads = sweep_spec(args)
    outcome = sweep(spec, args.out, storage=args.storage, study=args.study, workers=args.workers, threads=threads,
                    heartbeat=args.heartbeat_interval, grace=args.grace_period)
    if outcome.missing:
        print(f"lenet sweep: {outcome.missing} training(s) did not finish (their errors are in the lines above "
              f"and in {args.out}/logs/); run the same command again to retry them", file=sys.stderr)
        return 1
    return 0


def run_report(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .._paths import check_output_folder
    from ..sweep.report import collect, collect_from_study, format_table, write_report

    if args.out:
        check_output_folder(args.out, "--out")
    elif args.dir and "://" in args.source:  # the report goes into the sweep folder given
        check_output_folder(args.dir, "--dir")
    if "://" in args.source:
        runs = collect_from_study(args.source, args.study or "sweep", args.dir)
        report = write_report(args.dir or ".", runs, out_dir=args.out or args.dir or ".")
    else:
        runs = collect(args.source)
        report = write_report(args.source, runs, out_dir=args.out or Path(args.source))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report["configurations"]))
        print(f"{len(runs)} run(s); results: {', '.join(report['files'].values())}")
    return 0
