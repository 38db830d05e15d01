"""Networks, built by name. Importing this package registers every network."""

# registration order is listing order: the tutorial's network first
from . import seed  # noqa: F401, I001  (registers "seed")
from . import classic  # noqa: F401  (registers "classic")
from ._api import ModelInfo, get_model, list_models, model_info, register_model
from .summary import format_table, layer_table

__all__ = ["ModelInfo", "format_table", "get_model", "layer_table", "list_models", "model_info", "register_model"]
