"""Networks, built by name. Importing this package registers every network."""

from . import seed  # noqa: F401  (registers "seed")
from ._api import ModelInfo, get_model, list_models, model_info, register_model
from .summary import format_table, layer_table

__all__ = ["ModelInfo", "format_table", "get_model", "layer_table", "list_models", "model_info", "register_model"]
