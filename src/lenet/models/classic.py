"""`classic`: LeNet-5 exactly as published in LeCun, Bottou, Bengio & Haffner, "Gradient-based learning
applied to document recognition", Proc. IEEE 86(11), 1998 (section II.B, figure 2, Table I, Appendix A).

    layer  output      params  connections  what
    input  1x32x32          -            -  the 28x28 digit padded with background; -0.1 background, 1.175 ink
    c1     6x28x28        156      122,304  5x5 convolution, 1 -> 6
    s2     6x14x14         12        5,880  2x2 block sum x trainable coefficient + trainable bias, per map
    c3     16x10x10     1,516      151,600  5x5 convolution, partial connections of Table I (C3_TABLE)
    s4     16x5x5          32        2,000  as s2
    c5     120x1x1     48,120       48,120  5x5 convolution over all 16 maps of s4
    f6     84          10,164       10,164  fully connected
    rbf    10               0          840  Euclidean RBF units, fixed +-1 prototypes (7x12 digit bitmaps)
    total              60,000      340,908

Every weighted sum of c1..f6, s2 and s4 included, goes through f(a) = 1.7159 tanh(2a/3). The output is
the NEGATED squared distance to each class's prototype, so that, like every lenet network, it returns
scores where higher = more likely; the predicted class (argmax) is the nearest prototype. The paper's
MAP criterion is the loss `map` (losses.py), its optimizer `sdlm` (sdlm.py), its schedule and 20 passes
the recipe `paper` (recipes.py).

Initialisation (Appendix A): every weight uniform and scaled by its unit's fan-in F_i, either +-2.4/F_i as
printed (`init="paper"`, the default here) or with variance 1/F_i (`init="lecun-uniform"`, what the recipe
`paper` trains with): the printed rule shrinks the weighted sums layer by layer, against its own stated aim,
and the paper's eta then diverges (layers.INIT_RULES, docs/tutorial-vs-paper.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ._api import register_model
from .layers import INIT_RULES, EuclideanRBF, FullConv2d, PartialConv2d, ScaledTanh, Subsampling, paper_init_

# Input (section II.B): 28x28 digits padded to 32x32 so that stroke ends and corners can reach the centre of
# C5's receptive fields. Pixel values are mapped so that background = -0.1 and ink = 1.175, which makes the
# mean input roughly 0 and the variance roughly 1 (faster learning).
PAD = 2
BACKGROUND, INK = -0.1, 1.175

# Table I: the S2 maps (0-based) that each of the 16 C3 maps combines. Maps 0-5 take 3 contiguous maps,
# 6-11 take 4 contiguous, 12-14 take 4 non-contiguous, 15 takes all six. The paper's reasons: fewer
# connections, and different inputs force the maps to extract different (complementary) features.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)

# The RBF prototypes (section II.B, figure 3): +-1 codes from stylised 7x12 bitmaps of the digits, so
# F6 has 84 units. We drew our own ten bitmaps; they ship as a data file and `lenet summary classic` shows them.
RBF_DIGITS_FILE = Path(__file__).with_name("rbf_digits.json")


def load_rbf_bitmaps(path: Path = RBF_DIGITS_FILE) -> list[list[str]]:
    """The ten 12-row x 7-column bitmaps, '#' = ink (+1), '.' = background (-1)."""
    spec = json.loads(path.read_text())
    return [spec["digits"][str(d)] for d in range(10)]


def rbf_prototypes(bitmaps: list[list[str]] | None = None) -> torch.Tensor:
    """(10, 84) float tensor of +-1: bitmap rows concatenated, row-major."""
    bitmaps = load_rbf_bitmaps() if bitmaps is None else bitmaps
    return torch.tensor([[1.0 if c == "#" else -1.0 for c in "".join(rows)] for rows in bitmaps])


class ClassicLeNet5(nn.Module):
    def __init__(self, init: str = "paper") -> None:
        """`init`: "paper" = uniform in +-2.4/F_i as printed, "lecun-uniform" = variance 1/F_i (layers.INIT_RULES)."""
        super().__init__()
        if init not in INIT_RULES:
            raise ConfigError(f"unknown initialisation {init!r} for classic; available: {', '.join(INIT_RULES)}")
        self.c1 = nn.Conv2d(1, 6, kernel_size=5)
        self.s2 = Subsampling(6)
        self.c3 = PartialConv2d(6, C3_TABLE, kernel_size=5)
        self.s4 = Subsampling(16)
        self.c5 = FullConv2d(16, 120, kernel_size=5)
        self.f6 = nn.Linear(120, 84)
        self.rbf = EuclideanRBF(rbf_prototypes())
        self.squash = ScaledTanh()  # one stateless module, applied after every layer c1..f6
        for module in self.modules():
            paper_init_(module, init)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) pixels/255 -> (N, 1, 32, 32) in the paper's range: background -0.1, ink 1.175."""
        return F.pad(x * (INK - BACKGROUND) + BACKGROUND, (PAD, PAD, PAD, PAD), value=BACKGROUND)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prepare(x)  # (N, 1, 32, 32)
        x = self.squash(self.c1(x))  # (N, 6, 28, 28)
        x = self.squash(self.s2(x))  # (N, 6, 14, 14)
        x = self.squash(self.c3(x))  # (N, 16, 10, 10)
        x = self.squash(self.s4(x))  # (N, 16, 5, 5)
        x = self.squash(self.c5(x))  # (N, 120, 1, 1)
        x = self.squash(self.f6(x.flatten(1)))  # (N, 84)
        return -self.rbf(x)  # (N, 10) scores = negated squared distances to the prototypes

    def sdlm_layers(self) -> list[nn.Module]:
        """The layers between `prepare` and `rbf`, in order, for SDLM's second-derivative pass."""
        sq = self.squash
        return [self.c1, sq, self.s2, sq, self.c3, sq, self.s4, sq, self.c5, sq, nn.Flatten(), self.f6, sq]

    def feature_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of every layer, in order, for visualisation (after the squashing)."""
        maps = {"input": self.prepare(x)}
        maps["c1"] = self.squash(self.c1(maps["input"]))
        maps["s2"] = self.squash(self.s2(maps["c1"]))
        maps["c3"] = self.squash(self.c3(maps["s2"]))
        maps["s4"] = self.squash(self.s4(maps["c3"]))
        maps["c5"] = self.squash(self.c5(maps["s4"]))
        maps["f6"] = self.squash(self.f6(maps["c5"].flatten(1)))
        maps["rbf"] = self.rbf(maps["f6"])  # distances: smaller = more likely
        return maps

    def summary_extra(self) -> str:
        """The ten fixed RBF prototypes as ASCII art, side by side ('#' = +1, '.' = -1)."""
        protos = self.rbf.prototypes.reshape(10, 12, 7)
        lines = ["RBF prototypes (fixed, never trained): 7x12 bitmaps, '#' = +1, '.' = -1"]
        lines.append("   ".join(f"{d:^7}" for d in range(10)))
        for row in range(12):
            lines.append("   ".join("".join("#" if v > 0 else "." for v in protos[d, row].tolist())
                                    for d in range(10)))
        return "\n".join(lines)


@register_model(
    "classic",
    "LeNet-5 as published in 1998: 32x32 input, scaled tanh, trainable subsampling, Table I C3, fixed RBF output",
    # The paper's criterion, optimizer and schedule (the recipe `paper` spells them out): the tutorial's
    # softmax/Adam defaults are aimed at logits, and this network outputs distances in [0, ~620].
    train_defaults={"init": "lecun-uniform", "loss": "map", "optimizer": "sdlm", "lr": 1e-4, "schedule": "paper",
                    "epochs": 20, "batch_size": 8},
    init_choices=tuple(INIT_RULES),
)
def classic(**kwargs) -> ClassicLeNet5:
    return ClassicLeNet5(**kwargs)
