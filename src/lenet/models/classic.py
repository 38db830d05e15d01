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
MAP criterion is the loss `map` (losses.py), its optimizer `sdlm` (optim/sdlm.py), its schedule and 20 passes
the recipe `paper` (recipes.py).

`ClassicLeNet5.stages` below declares the table's layers once, in this order.

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
from .layers import INIT_RULES, EuclideanRBF, FullConv2d, Negation, PartialConv2d, ScaledTanh, Subsampling, paper_init_
from .staged import Stage, StagedNetwork

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


# Every weighted sum of C1..F6 goes through the same squashing function; it is stateless, so one instance serves.
SQUASH = ScaledTanh()


class ClassicLeNet5(StagedNetwork):
    """LeNet-5 of figure 2, stage by stage as section II.B describes it (the table in the module docstring)."""

    stages = (
        #     name   layer                                              output        activation
        Stage("c1",  lambda: nn.Conv2d(1, 6, kernel_size=5),            (6, 28, 28),  SQUASH),
        Stage("s2",  lambda: Subsampling(6),                            (6, 14, 14),  SQUASH),
        Stage("c3",  lambda: PartialConv2d(6, C3_TABLE, kernel_size=5), (16, 10, 10), SQUASH),  # Table I
        Stage("s4",  lambda: Subsampling(16),                           (16, 5, 5),   SQUASH),
        Stage("c5",  lambda: FullConv2d(16, 120, kernel_size=5),        (120, 1, 1),  SQUASH),
        Stage("f6",  lambda: nn.Linear(120, 84),                        (84,),        SQUASH, flatten=True),
        Stage("rbf", lambda: EuclideanRBF(rbf_prototypes()),            (10,),        Negation()),  # -distance = score
    )

    def __init__(self, init: str = "paper") -> None:
        """`init`: "paper" = uniform in +-2.4/F_i as printed, "lecun-uniform" = variance 1/F_i (layers.INIT_RULES)."""
        if init not in INIT_RULES:
            raise ConfigError(f"unknown initialisation {init!r} for classic; available: {', '.join(INIT_RULES)}")
        super().__init__()
        for module in self.modules():
            paper_init_(module, init)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) pixels/255 -> (N, 1, 32, 32) in the paper's range: background -0.1, ink 1.175."""
        return F.pad(x * (INK - BACKGROUND) + BACKGROUND, (PAD, PAD, PAD, PAD), value=BACKGROUND)

    def summary_notes(self) -> str:
        """The ten fixed RBF prototypes as ASCII art, side by side ('#' = +1, '.' = -1)."""
        protos = self.rbf.prototypes.reshape(10, 12, 7)
        lines = ["RBF prototypes (fixed, never trained): 7x12 bitmaps, '#' = +1, '.' = -1"]
        lines.append("   ".join(f"{d:^7}" for d in range(10)))
        for row in range(12):
            lines.append("   ".join("".join("#" if v > 0 else "." for v in protos[d, row].tolist())
                                    for d in range(10)))
        return "\n".join(lines)
