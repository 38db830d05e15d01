"""`seed`: the tutorial's LeNet-5, exactly (../shared/seed/lenet-blog.md).

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

import torch
from torch import nn

from ._api import register_model

# Side of the last feature map: 28 -5+1 = 24 -> pool 12 -> -5+1 = 8 -> pool 4.
_FINAL_SIDE = 4


class SeedLeNet5(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, kernel_size=5)
        self.pool1 = nn.AvgPool2d(kernel_size=2, stride=2)
        self.conv2 = nn.Conv2d(6, 16, kernel_size=5)
        self.pool2 = nn.AvgPool2d(kernel_size=2, stride=2)
        self.fc1 = nn.Linear(16 * _FINAL_SIDE * _FINAL_SIDE, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.conv1(x)))  # (N, 6, 12, 12)
        x = self.pool2(torch.relu(self.conv2(x)))  # (N, 16, 4, 4)
        x = torch.flatten(x, 1)  # (N, 256)
        x = torch.relu(self.fc1(x))  # (N, 120)
        x = torch.relu(self.fc2(x))  # (N, 84)
        return self.fc3(x)  # (N, 10) logits

    def as_matmuls(self) -> nn.Module:
        """This network's forward pass as matrix products: the CPU bf16 training engine (seed_matmul.py)."""
        from .seed_matmul import SeedAsMatmuls

        return SeedAsMatmuls(self)

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of every layer, in order, for visualisation."""
        maps = {"conv1": torch.relu(self.conv1(x))}
        maps["pool1"] = self.pool1(maps["conv1"])
        maps["conv2"] = torch.relu(self.conv2(maps["pool1"]))
        maps["pool2"] = self.pool2(maps["conv2"])
        maps["fc1"] = torch.relu(self.fc1(torch.flatten(maps["pool2"], 1)))
        maps["fc2"] = torch.relu(self.fc2(maps["fc1"]))
        maps["fc3"] = self.fc3(maps["fc2"])
        return maps


@register_model(
    "seed",
    "the tutorial's LeNet-5: ReLU, average pooling, full C3, linear output, 28x28 input",
)
def seed(**kwargs) -> SeedLeNet5:
    return SeedLeNet5(**kwargs)
