"""Width normalisation (Cireşan, Meier & Schmidhuber 2012): every digit resampled to one width of its box.

MNIST's digits were scaled so that the larger side of each one's bounding box is 20 pixels; their widths vary
from a "1"'s 4 pixels to a "0"'s 20. Cireşan et al. trained each member of their committee on digits whose
bounding-box width was normalised to one of 10, 12, ..., 20 pixels, so the members saw the same digits drawn
differently, and erred differently. Here the normalisation is a parameter-free layer at the front of a network
(`modern`'s `digit_width`), so a member carries its own preprocessing wherever it goes: training, `eval`,
`predict`, export to ONNX (elementwise arithmetic, ReduceMax and one GridSample) and serving.

Per image: the columns holding ink (a pixel above INK_FRACTION of the image's brightest) give the box's left and
right edges; the image is resampled horizontally, bilinearly, so the box is `width` pixels wide and centred on
the frame's middle column. Rows are untouched. A blank image passes unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..registry import DIGIT_WIDTH_RULE, DIGIT_WIDTHS

SIZE = 28  # the common input is (N, 1, 28, 28)
INK_FRACTION = 0.25  # a column holds ink if one of its pixels is brighter than this fraction of the image's maximum


class WidthNormalization(nn.Module):
    """(N, 1, 28, 28) pixels / 255 -> the same digits with their bounding boxes `width` pixels wide, centred."""

    def __init__(self, width: int) -> None:
        super().__init__()
        if not isinstance(width, int) or width not in DIGIT_WIDTHS:
            raise ConfigError(f"digit width must be {DIGIT_WIDTH_RULE}, got {width!r}")
        self.width = width

    def extra_repr(self) -> str:
        return f"width={self.width}"

    def ink_columns(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N,) left edge, right edge (pixel indices, inclusive) and whether the image holds ink at all."""
        brightest = x.amax(dim=(1, 2, 3), keepdim=True)
        inked = (x > INK_FRACTION * brightest).any(dim=2).flatten(1).to(x.dtype) * (brightest.flatten(1) > 0)
        index = torch.arange(SIZE, dtype=x.dtype, device=x.device)
        right = (inked * index).amax(dim=1)
        left = (SIZE - 1) - (inked * (SIZE - 1 - index)).amax(dim=1)
        return left, right, inked.amax(dim=1) > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, has_ink = self.ink_columns(x)
        # Output column u (grid coordinates in [-1, 1], 28 pixel centres) reads input column centre + (u's offset
        # from the frame's middle) * box width / target width; in grid units that is scale * u + shift.
        scale = torch.where(has_ink, (right - left + 1) / self.width, torch.ones_like(left))
        centre = torch.where(has_ink, (left + right) / 2, torch.full_like(left, (SIZE - 1) / 2))
        shift = (2 * centre + 1) / SIZE - 1
        steps = (2 * torch.arange(SIZE, dtype=x.dtype, device=x.device) + 1) / SIZE - 1  # pixel centres
        gx = scale[:, None, None] * steps[None, None, :] + shift[:, None, None]  # (N, 1, 28): same for every row
        gy = steps[None, :, None]  # (1, 28, 1): rows stay where they are
        grid = torch.stack((gx.expand(-1, SIZE, SIZE), gy.expand(x.shape[0], SIZE, SIZE)), dim=-1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
