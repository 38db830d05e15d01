"""`seed`: the network every tutorial calls LeNet-5, exactly as the tutorial script lenet started from
builds it (kept as benchmarks/tutorial.py).

A modern simplification of LeCun et al. 1998: ReLU instead of the scaled tanh, plain average
pooling instead of trainable subsampling, a full 6->16 C3, a linear output layer with softmax
cross-entropy instead of Euclidean RBF units, and a 28x28 input (so the feature maps are 24, 12, 8
and 4 pixels wide, not the paper's 28, 14, 10 and 5).

    layer   output     params
    conv1   6x24x24       156   5x5 conv, 1 -> 6
    pool1   6x12x12         0   2x2 average pooling
    conv2   16x8x8      2,416   5x5 conv, 6 -> 16 (all to all)
    pool2   16x4x4          0   2x2 average pooling
    fc1     120        30,840   256 -> 120
    fc2     84         10,164   120 -> 84
    fc3     10            850   84 -> 10 logits
    total              44,426

Attribute names are the tutorial's, so a state_dict trained with the tutorial script loads 1:1.
"""

from __future__ import annotations

from torch import nn

from .staged import Stage, StagedNetwork

# ReLU holds no state, so one instance serves every stage and every network.
RELU = nn.ReLU()


class SeedLeNet5(StagedNetwork):
    """The tutorial's network; `SeedAsMatmuls` (seed_matmul.py) computes the same function as matrix products."""

    stages = (
        #     name     layer                                          output        activation
        Stage("conv1", lambda: nn.Conv2d(1, 6, kernel_size=5),        (6, 24, 24),  RELU),
        Stage("pool1", lambda: nn.AvgPool2d(kernel_size=2, stride=2), (6, 12, 12)),
        Stage("conv2", lambda: nn.Conv2d(6, 16, kernel_size=5),       (16, 8, 8),   RELU),
        Stage("pool2", lambda: nn.AvgPool2d(kernel_size=2, stride=2), (16, 4, 4)),
        Stage("fc1",   lambda: nn.Linear(16 * 4 * 4, 120),            (120,),       RELU, flatten=True),
        Stage("fc2",   lambda: nn.Linear(120, 84),                    (84,),        RELU),
        Stage("fc3",   lambda: nn.Linear(84, 10),                     (10,)),  # logits
    )
