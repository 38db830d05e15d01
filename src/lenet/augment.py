"""Batched data augmentation on the device, by name. An augmentation maps a float batch
(N, 1, 28, 28) in [0, 1] to one of the same shape, drawing its randomness from `generator` so a run
is reproducible (and a resumed run identical) given the config."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .registry import AUGMENTATIONS

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def identity(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return x


def get_augmentation(name: str) -> Augmentation | None:
    """The augmentation `name` (lenet.registry.AUGMENTATIONS); None for "none", so the trainer skips the call."""
    augmentation = AUGMENTATIONS.get(name)
    return None if augmentation is identity else augmentation


# --- the paper's distortions (section III.C, model `classic`) ---------------------------------------------
# "planar affine transformations: horizontal and vertical translations, scaling, squeezing (simultaneous
# horizontal compression and vertical elongation, or the reverse) and horizontal shearing". The paper gives
# no ranges; these are ours, chosen to keep every digit readable.
AFFINE_SHIFT = 2.0  # pixels, each direction, uniform
AFFINE_SCALE = 0.10  # scale factor in 1 +- this
AFFINE_SQUEEZE = 0.10  # x scaled by s, y by 1/s, s in 1 +- this
AFFINE_SHEAR = 0.30  # horizontal shear x' = x + k y, k in +- this
# The paper trained on its 60,000 originals plus 540,000 distorted copies: 1 image in 10 is left undistorted.
AFFINE_KEEP_ORIGINAL = 0.10


def affine(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random planar affine distortion per image, for the whole batch at once on x's device."""
    n, _, h, w = x.shape
    u = torch.rand(n, 5, generator=generator, device=x.device) * 2 - 1  # uniform in [-1, 1)
    distorted = (torch.rand(n, generator=generator, device=x.device) >= AFFINE_KEEP_ORIGINAL).to(x.dtype)
    u = u * distorted[:, None]  # an undistorted image gets the identity
    scale = 1 + AFFINE_SCALE * u[:, 0]
    squeeze = 1 + AFFINE_SQUEEZE * u[:, 1]
    shear = AFFINE_SHEAR * u[:, 2]
    # affine_grid maps OUTPUT coordinates (normalised to [-1, 1]) to the input coordinates to sample, so the
    # matrix is the inverse of the forward transform  x' = scale*squeeze*(x + shear*y), y' = scale/squeeze*y.
    sx, sy = scale * squeeze, scale / squeeze
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1 / sx
    theta[:, 0, 1] = -shear / sy
    theta[:, 1, 1] = 1 / sy
    # translation, in pixels converted to normalised units (2 / side)
    theta[:, 0, 2] = -AFFINE_SHIFT * u[:, 3] * 2 / w
    theta[:, 1, 2] = -AFFINE_SHIFT * u[:, 4] * 2 / h
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    # zeros outside the image = background (pixels/255 convention: ink bright, background 0)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# --- random shifts (`--augment shift`; no recipe uses it) ------------------------------------------
SHIFT_PIXELS = 2  # each image moves by an integer number of pixels in [-2, 2] along each axis


def shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Move each image by its own random whole-pixel offset, filling with background (0).

    One gather on a zero-padded copy, so the cost is one pass over the batch: cheaper than grid_sample,
    and exact (no interpolation blur)."""
    n, c, h, w = x.shape
    p = SHIFT_PIXELS
    offsets = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=x.device)
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    rows = (torch.arange(h, device=x.device) + offsets[0][:, None])[:, None, :, None]  # (n, 1, h, 1)
    cols = (torch.arange(w, device=x.device) + offsets[1][:, None])[:, None, None, :]  # (n, 1, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]
