"""The building blocks of the 1998 LeNet-5 that PyTorch does not have, one behaviour per class.

    ScaledTanh          f(a) = 1.7159 tanh(2a/3)                         (paper, section II.B and Appendix A)
    Subsampling         sum of each 2x2 block x one trainable coefficient + one trainable bias per map (S2, S4)
    PartialConv2d       a 5x5 convolution whose output maps see only some input maps (C3, Table I)
    EuclideanRBF        y_i = sum_j (x_j - w_ij)^2 with fixed prototypes w (the output layer, eq. 7)
    Negation            -y: distances (smaller = nearer) become scores (higher = more likely)
    paper_init_         uniform in +-2.4 / F_i, F_i = fan-in of the unit             (Appendix A)
                        or, read by its stated aim, uniform with variance 1/F_i (INIT_RULES)

Every layer with weights knows its fan-in (for the initialisation) and, where PyTorch's count differs from
the paper's, its `connections(output_shape)` per image (read by `lenet summary`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# The squashing function (Appendix A): A tanh(S a) with A = 1.7159 and S = 2/3, chosen so that f(1) = 1 and
# f(-1) = -1, the gain near 0 is about 1 and the second derivative is largest at +-1 (the RBF targets).
SQUASH_A = 1.7159
SQUASH_S = 2.0 / 3.0

# Appendix A: weights drawn uniformly in +-INIT_SCALE / F_i, "because we would like the initial standard deviation
# of the weighted sums to be in the same range for each unit, and to fall within the normal operating region of
# the sigmoid". Taken literally (+-2.4/F_i) the rule does not do that: a sum of F_i terms then has a standard
# deviation proportional to 1/sqrt(F_i), so it shrinks layer by layer (measured at initialisation, mean |output|:
# C5 0.03, F6 0.01, far inside the linear region). A fan-in-independent standard deviation needs weights of
# variance 1/F_i, which is what the same authors prescribe for this very squashing function in "Efficient
# BackProp" (LeCun, Bottou, Orr & Mueller, 1998, section 4.6) and what is now called LeCun-uniform initialisation.
# Both readings are offered; docs/tutorial-vs-paper.md ("Initialisation and eta") has the measurements.
INIT_SCALE = 2.4
INIT_RULES = {
    "paper": lambda fan_in: INIT_SCALE / fan_in,  # +-2.4/F_i, as printed
    "lecun-uniform": lambda fan_in: (3.0 / fan_in) ** 0.5,  # variance 1/F_i: the weighted sums keep their scale
}


class ScaledTanh(nn.Module):
    """f(a) = 1.7159 tanh(2a/3), applied to the weighted sum of every layer C1..F6."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return SQUASH_A * torch.tanh(SQUASH_S * a)

    @staticmethod
    def derivative(a: torch.Tensor) -> torch.Tensor:
        """f'(a), used by SDLM to carry second derivatives backwards (f'(a)^2 d2E/dx^2)."""
        return SQUASH_A * SQUASH_S * (1 - torch.tanh(SQUASH_S * a) ** 2)


class Subsampling(nn.Module):
    """S2 / S4 (section II.B): each unit adds the four inputs of its 2x2 block, multiplies the sum by a
    trainable coefficient and adds a trainable bias, one coefficient and one bias per feature map
    (2 parameters per map). The squashing is applied by the caller, as for every other layer."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels))
        self.bias = nn.Parameter(torch.empty(channels))
        self.fan_in = 4  # the four inputs of a 2x2 block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # avg_pool * 4 = the sum of the block; one (coefficient, bias) pair per map
        block_sum = F.avg_pool2d(x, 2) * 4
        return block_sum * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def connections(self, output_shape: tuple[int, ...]) -> int:
        # the paper counts 4 inputs + 1 bias per unit: S2 14*14*6*5 = 5,880
        return math.prod(output_shape) * (self.fan_in + 1)


class PartialConv2d(nn.Module):
    """A convolution in which output map k sees only the input maps `table[k]` (C3, Table I).

    Only the connected kernels are parameters (`weight` holds them packed, one row of k*k per
    (output, input) pair in table order), so the trainable-parameter count is the paper's (C3: 1,516) and an
    input map outside `table[k]` has no path to output map k at all: its gradient from k is exactly zero."""

    def __init__(self, in_channels: int, table: Sequence[Sequence[int]], kernel_size: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, len(table), kernel_size
        self.table = tuple(tuple(sorted(inputs)) for inputs in table)
        pairs = [(out, inp) for out, inputs in enumerate(self.table) for inp in inputs]
        self.register_buffer("pair_out", torch.tensor([o for o, _ in pairs]), persistent=False)
        self.register_buffer("pair_in", torch.tensor([i for _, i in pairs]), persistent=False)
        self.weight = nn.Parameter(torch.empty(len(pairs), kernel_size * kernel_size))
        self.bias = nn.Parameter(torch.empty(self.out_channels))

    def full_weight(self) -> torch.Tensor:
        """The dense (out, in, k, k) kernel: the packed kernels in place, exact zeros elsewhere."""
        k = self.kernel_size
        dense = self.weight.new_zeros(self.out_channels, self.in_channels, k * k)
        dense = dense.index_put((self.pair_out, self.pair_in), self.weight)
        return dense.view(self.out_channels, self.in_channels, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.full_weight(), self.bias)

    def fan_in(self, out_map: int) -> int:
        return len(self.table[out_map]) * self.kernel_size ** 2

    def connections(self, output_shape: tuple[int, ...]) -> int:
        # one multiply-add per connected kernel tap plus the bias, per output unit: C3 100 * 1,516 = 151,600
        side = output_shape[-1] * output_shape[-2]
        return side * sum(self.fan_in(k) + 1 for k in range(self.out_channels))


class FullConv2d(nn.Conv2d):
    """C5: a 5x5 convolution over 5x5 maps, so one output per map and a full connection (400 -> 120).

    Computed as one float64 matrix product: its 400-term sums are where float32 rounding grows most in
    this network (measured: 3.8e-5 -> 1.0e-4 on the final scores), and those errors, amplified by the RBF
    distances, would make PyTorch and an exported ONNX graph disagree by more than 1e-4. Same parameters
    and state_dict as nn.Conv2d; the cost of 48k multiply-adds per image in float64 is small."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x.flatten(1).double(), self.weight.flatten(1).double(), self.bias.double())
        return out.to(torch.float32 if x.dtype == torch.bfloat16 else x.dtype)[:, :, None, None]


class EuclideanRBF(nn.Module):
    """The output layer (eq. 7): y_i = sum_j (x_j - w_ij)^2, the squared distance between the input vector
    and class i's prototype. The prototypes are a buffer, not parameters: the paper keeps them fixed
    (trainable prototypes would collapse onto each other under the MLE criterion)."""

    def __init__(self, prototypes: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("prototypes", prototypes.detach().clone().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In float64: the distances reach ~200, where float32 sums of 84 squares carry rounding errors of
        # ~1e-4 that depend on the summation order, so PyTorch and an exported ONNX graph would disagree
        # by more than the export contract allows. Only 840 values per image, so the cost is nil.
        diff = x.double().unsqueeze(1) - self.prototypes.double()  # (N, 10, 84)
        return diff.pow(2).sum(2).to(x.dtype if x.dtype != torch.bfloat16 else torch.float32)

    def connections(self, output_shape: tuple[int, ...]) -> int:
        return math.prod(output_shape) * self.prototypes.shape[1]  # 10 * 84 = 840


class Negation(nn.Module):
    """-y. After EuclideanRBF it turns distances into the scores every lenet network outputs (higher = more
    likely), so the predicted class, the argmax, is the nearest prototype."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return -y


def paper_init_(module: nn.Module, rule: str = "paper", generator: torch.Generator | None = None) -> None:
    """Appendix A: every weight and bias of a unit uniform in +-bound(F_i), F_i = the unit's fan-in;
    `rule` picks the bound (INIT_RULES): "paper" = 2.4/F_i as printed, "lecun-uniform" = sqrt(3/F_i)."""
    if rule not in INIT_RULES:
        raise ValueError(f"unknown initialisation {rule!r}; available: {', '.join(INIT_RULES)}")
    bound_for = INIT_RULES[rule]
    with torch.no_grad():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            bound = bound_for(module.weight[0].numel())
            module.weight.uniform_(-bound, bound, generator=generator)
            if module.bias is not None:
                module.bias.uniform_(-bound, bound, generator=generator)
        elif isinstance(module, Subsampling):
            bound = bound_for(module.fan_in)
            module.weight.uniform_(-bound, bound, generator=generator)
            module.bias.uniform_(-bound, bound, generator=generator)
        elif isinstance(module, PartialConv2d):
            # the fan-in differs per output map: 75 for maps 0-5, 100 for 6-14, 150 for map 15
            for row, out_map in enumerate(module.pair_out.tolist()):
                bound = bound_for(module.fan_in(out_map))
                module.weight[row].uniform_(-bound, bound, generator=generator)
            for out_map in range(module.out_channels):
                bound = bound_for(module.fan_in(out_map))
                module.bias[out_map].uniform_(-bound, bound, generator=generator)
