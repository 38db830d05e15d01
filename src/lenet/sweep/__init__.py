"""`lenet sweep`: many trainings at once, on one machine or many, on Optuna studies in a real database.

    spec.py     what a sweep is: option lists, the grid, a search space, trial keys and run-folder names
    study.py    the Optuna study: storage (SQLite by default, any SQLAlchemy URL), enqueueing, claiming,
                heartbeats (a killed worker's trial is re-run by another)
    worker.py   a worker process: claims trials and trains them in-process with lenet's trainer
    runner.py   `run_sweep`: the study, the worker processes, the report
    report.py   results per configuration from the run folders; `runs_of` (committees take these)

It drives trainings, so it sits at the API layer, beside lenet.api. Names load on first use (PEP 562):
`import lenet.sweep` imports neither torch nor optuna.
"""

from __future__ import annotations

from .._lazy import lazy_names

_LAZY = {
    "SweepSpec": "spec", "SpaceDim": "spec", "parse_values": "spec", "parse_option": "spec",
    "parse_space": "spec", "trial_key": "spec", "run_name": "spec",
    "StudyRef": "study", "open_study": "study",
    "run_sweep": "runner", "SweepOutcome": "runner",
    "runs_of": "report", "collect": "report", "summarize": "report", "write_report": "report",
    "format_table": "report", "RunResult": "report",
}


__getattr__, __dir__ = lazy_names(globals(), {name: f".{module}" for name, module in _LAZY.items()})


__all__ = list(_LAZY)
