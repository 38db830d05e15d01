"""Named recipes: a recipe is a dict of `TrainConfig` overrides, applied after the defaults and before
the flags a user gives explicitly. Each recipe states its claim and the command that measured it."""

from __future__ import annotations

from .errors import ConfigError

RECIPES: dict[str, dict] = {
    # The tutorial (../shared/seed/lenet-blog.md): Adam 1e-3, batch 64, 10 epochs, pixels in [0, 1].
    # These are also TrainConfig's defaults; naming the recipe just makes that explicit.
    "tutorial": {"model": "seed", "optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 10,
                 "schedule": "constant"},
}


def register_recipe(name: str, overrides: dict) -> None:
    if name in RECIPES:
        raise ValueError(f"recipe {name!r} is registered twice")
    RECIPES[name] = dict(overrides)


def get_recipe(name: str) -> dict:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    return dict(RECIPES[name])
