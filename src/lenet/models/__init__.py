"""Networks, by name, and what each one offers. Importing this package loads no torch (the CLI builds its
--help from it); a network's module is imported when the network is first built.

    seed.py       `seed`: the tutorial's LeNet-5     seed_matmul.py: its matrix-product form (CPU bf16)
    classic.py    `classic`: the 1998 paper's LeNet-5, from the building blocks in layers.py
    modern.py     `modern`: LeNet-5's shape and budget with batch norm, max-pooling and dropout
    staged.py     StagedNetwork: a network declared once as its list of stages
    summary.py    the layer table of `lenet summary`
    _api.py       the registry MODELS and get_model, matmul_form, feature_maps, ...
    weights/      the shipped trained weights (read through lenet.weights)
"""

from ..registry import ModelEntry
from ._api import (
    MODELS,
    feature_maps,
    format_table,
    get_model,
    layer_table,
    list_models,
    matmul_form,
    model_entry,
    register_model,
)

# Declaration order is listing order: the tutorial's network first.
MODELS.add(ModelEntry(
    "seed", "lenet.models.seed:SeedLeNet5",
    "the tutorial's LeNet-5: ReLU, average pooling, full C3, linear output, 28x28 input",
    matmul_form="lenet.models.seed_matmul:SeedAsMatmuls",
))
MODELS.add(ModelEntry(
    "classic", "lenet.models.classic:ClassicLeNet5",
    "LeNet-5 as published in 1998: 32x32 input, scaled tanh, trainable subsampling, Table I C3, fixed RBF output",
    # The paper's criterion, optimizer and schedule (the recipe `paper` spells them out): the tutorial's
    # softmax/Adam defaults are aimed at logits, and this network outputs negated distances in [~-620, 0].
    train_defaults={"init": "lecun-uniform", "loss": "map", "optimizer": "sdlm", "lr": 1e-4, "schedule": "paper",
                    "epochs": 20, "batch_size": 8},
    init_choices=("paper", "lecun-uniform"),  # the keys of layers.INIT_RULES (tests/test_models.py checks)
))
MODELS.add(ModelEntry(
    "modern", "lenet.models.modern:ModernLeNet5",
    "LeNet-5's three convolutions under its 60k-parameter budget, with batch norm, max-pooling and dropout",
    digit_width=True,
))

__all__ = ["MODELS", "ModelEntry", "feature_maps", "format_table", "get_model", "layer_table", "list_models",
           "matmul_form", "model_entry", "register_model"]
