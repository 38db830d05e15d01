"""Batched data augmentation on the device, by name. An augmentation maps a float batch
(N, 1, 28, 28) in [0, 1] to one of the same shape, drawing its randomness from `generator` so a run
is reproducible (and a resumed run identical) given the config."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .errors import ConfigError
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
# `--augment affine+rotate` only: a rotation uniform in +-10 degrees on top. Not in the paper's list; common in
# today's MNIST recipes. Its draws come after the affine ones, so `affine` itself is unchanged.
AFFINE_ROTATE_DEGREES = 10.0


def affine(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random planar affine distortion per image, for the whole batch at once on x's device."""
    return _warp(x, _affine_theta(x, generator))


def affine_rotate(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`affine`, then a rotation of up to AFFINE_ROTATE_DEGREES either way (the undistorted tenth stays so)."""
    return _warp(x, _affine_theta(x, generator, AFFINE_ROTATE_DEGREES))


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """x resampled through the (N, 2, 3) affine matrices `theta`."""
    return _resample(x, torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False))


def _affine_theta(x: torch.Tensor, generator: torch.Generator, rotate_degrees: float = 0.0) -> torch.Tensor:
    """(N, 2, 3) matrices of one random affine distortion per image (then a rotation of up to
    `rotate_degrees`, drawn after the rest), for affine_grid."""
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
    if rotate_degrees:
        angle = (torch.rand(n, generator=generator, device=x.device) * 2 - 1) * distorted
        # rotating the output by +a reads the input at the inverse, R(-a), applied before the affine inverse
        theta[:, :, :2] = theta[:, :, :2] @ rotation(-angle.to(x.dtype) * math.radians(rotate_degrees))
    return theta


def rotation(angle: torch.Tensor) -> torch.Tensor:
    """(N, 2, 2) rotation matrices by `angle` (N,) radians."""
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def _resample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """x sampled bilinearly at `grid` (N, H, W, 2: x then y, normalised, pixel centres as align_corners=False)."""
    # zeros outside the image = background (pixels/255 convention: ink bright, background 0)
    return torch.nn.functional.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="zeros",
                                           align_corners=False)


# --- elastic distortions (Simard, Steinkraus & Platt 2003, "Best practices for CNNs", section 2) -------------
# Per image, each displacement component is drawn uniform in [-1, 1] at every pixel, smoothed by a Gaussian of
# ELASTIC_SIGMA pixels and scaled by ELASTIC_ALPHA pixels; the image is resampled bilinearly at the displaced
# positions: out(p) = in(p + d(p)). We take Simard's own MNIST values, sigma = 4 and alpha = 34: they come with
# the published single-network result for elastic distortions alone (0.40 % error). Ciresan et al. 2010 used
# sigma = 5-6, alpha = 36-38 together with affine distortions (rotation, scaling): a smoother, weaker field,
# 0.98-1.24 px rms instead of 1.4 (`--augment elastic-mild+affine` below). `make_elastic(sigma, alpha)` builds any
# other pair.
# With a normalised kernel k the displacement of one pixel is alpha * sum_i k_i u_i, u_i uniform in [-1, 1]
# (variance 1/3), so its std is alpha * sqrt(sum_i k_i^2 / 3); the kernel is separable, k = g (x) g, so
# sum_i k_i^2 = (sum_j g_j^2)^2 and the std is alpha * sum_j g_j^2 / sqrt(3) (1.39 px for sigma 4, alpha 34).
ELASTIC_SIGMA = 4.0  # pixels: the Gaussian's standard deviation (how smooth the field is)
ELASTIC_ALPHA = 34.0  # pixels: the scale of the smoothed field (how far pixels move)
ELASTIC_TRUNCATE = 3.0  # the kernel stops at 3 sigma (it keeps 99.7 % of the 1-D mass; renormalised to 1)


def gaussian_kernel(sigma: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 1-D Gaussian g of std `sigma` pixels, truncated at ELASTIC_TRUNCATE sigma, summing to 1 (float32)."""
    radius = max(1, int(ELASTIC_TRUNCATE * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def elastic_field(n: int, h: int, w: int, generator: torch.Generator, sigma: float = ELASTIC_SIGMA,
                  alpha: float = ELASTIC_ALPHA, device: torch.device | str = "cpu") -> torch.Tensor:
    """(n, 2, h, w) float32 displacements in pixels (channel 0 along x, 1 along y), drawn from `generator`.

    The noise is drawn on a canvas one kernel radius larger on every side and blurred without padding
    ("valid"), so every pixel's displacement is a full kernel's worth of independent noise: the field's
    statistics are the same at the border as in the centre (zero padding would shrink the displacements near
    the edge, reflect padding would correlate and enlarge them). The separable blur of the whole batch is two
    matrix products with banded matrices: on CPU, 3-25x faster than conv2d with a 1-D kernel, which oneDNN
    runs erratically for one-channel inputs (measured in benchmarks/README.md)."""
    g = gaussian_kernel(sigma, device)
    r = (len(g) - 1) // 2
    noise = torch.rand(n * 2, h + 2 * r, w + 2 * r, generator=generator, device=device) * 2 - 1
    smooth = _band(g, h).T @ noise @ _band(g, w)  # (2n, h, w)
    return alpha * smooth.view(n, 2, h, w)


def _band(g: torch.Tensor, size: int) -> torch.Tensor:
    """The (size + 2r, size) matrix M with M[j + i, j] = g[i]: noise @ M is the valid correlation with g
    (= the convolution: g is symmetric)."""
    span, columns = len(g), torch.arange(size, device=g.device)
    band = torch.zeros(size + span - 1, size, device=g.device)
    band[columns[None, :] + torch.arange(span, device=g.device)[:, None], columns[None, :]] = g[:, None]
    return band


_IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # affine_grid's "no transform"


def make_elastic(sigma: float = ELASTIC_SIGMA, alpha: float = ELASTIC_ALPHA,
                 with_affine: bool = False) -> Augmentation:
    """An elastic distortion of (sigma, alpha) pixels; `with_affine` composes it with `affine`'s distortions.

    The composition resamples once: each output pixel reads the input at its affine position plus its elastic
    displacement (an elastic field applied, then the affine map), so the digit is interpolated once, not
    blurred twice. The affine draws come first from the generator, then the field's."""
    if not sigma > 0 or not alpha >= 0:
        raise ConfigError(f"elastic distortions need sigma > 0 and alpha >= 0 pixels, got sigma={sigma}, "
                          f"alpha={alpha}")

    def distort(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        theta = _affine_theta(x, generator) if with_affine else None
        return elastic_warp(x, elastic_field(n, h, w, generator, sigma, alpha, x.device), theta)

    return distort


def elastic_warp(x: torch.Tensor, field: torch.Tensor, theta: torch.Tensor | None = None) -> torch.Tensor:
    """x (N, C, H, W) resampled bilinearly at each pixel's position (mapped by the affine `theta`, if given)
    plus its displacement in `field` (N, 2, H, W, pixels): out(p) = x(theta p + field(p))."""
    n, _, h, w = x.shape
    theta = _IDENTITY.to(x).expand(n, 2, 3) if theta is None else theta
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    pixels_to_grid = torch.tensor([2 / w, 2 / h], device=x.device)  # a pixel is 2/side in grid units
    return _resample(x, grid + field.permute(0, 2, 3, 1) * pixels_to_grid)


# Ciresan et al. 2010's smoother, weaker field (0.98 px rms per component), always beside affine distortions
MILD_ELASTIC_SIGMA = 6.0
MILD_ELASTIC_ALPHA = 36.0

elastic = make_elastic()  # `--augment elastic`: Simard's sigma = 4, alpha = 34 pixels
elastic_affine = make_elastic(with_affine=True)  # `--augment elastic+affine`
mild_elastic_affine = make_elastic(MILD_ELASTIC_SIGMA, MILD_ELASTIC_ALPHA, with_affine=True)  # `elastic-mild+affine`


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
