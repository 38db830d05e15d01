# FROZEN COPY of src/lenet/predict.py as of commit 251e5c4 (before the photo pipeline), kept only so that
# benchmarks/preprocess_bench.py and the photo tests can run the old pipeline beside the new one, in one sitting.
# Do not edit it. Only its relative imports were made absolute (lenet.inference, lenet.errors, lenet._io).
# ruff: noqa
"""Predict the digit in your own images, preprocessed the way MNIST itself was made.

Why predictions on your own images fail without this: a photo or a drawing is dark ink on a light page,
any size, off-centre, with margins and noise, while every lenet network expects MNIST: a 28x28 uint8 image,
ink bright on black, the digit's longest side 20 px, its centre of mass at the centre. `preprocess` turns the
first into the second:

    1. grey levels (alpha composited onto a background that contrasts with the strokes)
    2. polarity: the border's median is the background; ink is whatever differs from it the most
    3. noise: Otsu threshold on the ink levels, then a median filter (scaled to the image) drops specks
    4. crop to the ink's bounding box, scale the longest side to 20 px keeping the aspect ratio
    5. paste into 28x28 so that the centre of mass sits where MNIST puts it

The public functions (`open_image`, `preprocess`, `predict_files`) are what `lenet predict` and
`lenet serve` share; keep their signatures stable. The network's side (uint8 images in, probabilities out)
is `lenet.inference.probabilities`.
"""

from __future__ import annotations

import glob
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lenet import inference
from lenet.errors import ImageError
from lenet.inference import SIDE

# 40 MP: more than any phone photo; a bigger image is refused before its pixels are decoded, so a tiny
# compressed file cannot expand into gigabytes (a decompression bomb).
DEFAULT_MAX_PIXELS = 40_000_000
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")
# Extensions picked up when a folder is given; files named explicitly are read whatever their extension.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

# Larger images are reduced to about this longest side first: plenty to find strokes that will end up
# 20 px tall, and it keeps preprocessing a 12 MP photo in the milliseconds.
_WORK_SIDE = 512
# MNIST's geometry (LeCun et al.): the digit is scaled into a 20x20 box and centred by mass in 28x28.
BOX = 20  # the side of the digit's box; SIDE (28, the networks' input) comes from lenet.inference
# Centre of mass of the MNIST training digits, in (row, column) pixel-index coordinates (measured:
# mean over the 60,000 training images: 14.00 and 14.01, std 0.29 -- pixel 14, not the 13.5 middle).
_TARGET_COM = (14.0, 14.0)
# Below this contrast (in 0..1 grey levels) between the ink and the background, the image is blank.
_MIN_CONTRAST = 0.1


# --- reading ----------------------------------------------------------------------------------------------

def open_image(source: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """Decode an image file (or its bytes) with Pillow, first frame only, EXIF orientation applied.

    Raises `ImageError` naming the problem for a missing or unreadable file, a non-image, an unsupported
    format, truncated or corrupt data, or an image of more than `max_pixels` pixels."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, (bytes, bytearray, memoryview)):
        where, data = "the image data", bytes(source)
    else:
        path = Path(source)
        where = str(path)
        if not path.exists():
            raise ImageError(f"{where}: no such file")
        if path.is_dir():
            raise ImageError(f"{where} is a folder, not an image file")
        # Raw pixels of the largest allowed image plus headroom: a larger file is not a sane image.
        if path.stat().st_size > 4 * max_pixels + (1 << 20):
            raise ImageError(f"{where} is {path.stat().st_size:,} bytes, too large for an image of at most "
                             f"{max_pixels:,} pixels; downscale it first")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(f"{where} cannot be read ({e.strerror or e})") from None
    if not data:
        raise ImageError(f"{where} is empty (0 bytes), not an image")

    with warnings.catch_warnings():
        # Pillow's own bomb check warns above 89 MP; we apply our (lower) limit ourselves below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise ImageError(f"{where} is a {image.format} image; supported formats: PNG, JPEG, BMP, GIF, WebP")
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"{where} is {width}x{height} = {width * height:,} pixels, over the limit of "
                                 f"{max_pixels:,} (a decompression bomb?); downscale it first")
            if width == 0 or height == 0:
                raise ImageError(f"{where} has no pixels ({width}x{height})")
            image.load()  # decode now, so truncated data fails here and not later
            ImageOps.exif_transpose(image, in_place=True)  # phone photos store their rotation in EXIF
        except ImageError:
            raise
        except Image.DecompressionBombError as e:
            raise ImageError(f"{where} is a decompression bomb ({e})") from None
        except UnidentifiedImageError:
            raise ImageError(f"{where} is not an image (or not a PNG, JPEG, BMP, GIF or WebP file)") from None
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, MemoryError) as e:
            raise ImageError(f"{where} is truncated or corrupt ({e})") from None
    return image


# --- preprocessing ----------------------------------------------------------------------------------------

def preprocess(image: Any) -> torch.Tensor:
    """An image of one digit, any size, mode or polarity -> uint8 (28, 28), ink bright, MNIST-style.

    Raises `ImageError` when the image holds no ink (blank, or nearly uniform)."""
    grey = _grey(image)
    ink = _ink(grey)
    mask = _denoised_mask(ink)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    ink = ink * mask
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    digit = _fit_box(crop)
    return torch.from_numpy(_place_by_mass(digit))


def _grey(image: Any) -> np.ndarray:
    """Grey levels in [0, 1] as float32 (H, W), at most about _WORK_SIDE pixels on the longest side."""
    from PIL import Image

    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    elif mode.startswith("I;16") or mode == "I":
        image = image.convert("I")
    factor = math.ceil(max(image.size) / _WORK_SIDE)
    if factor > 1:
        image = image.reduce(factor)  # box average: thin strokes get fainter, never vanish

    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)
        return np.clip(values / (65535.0 if values.max() > 255 else 255.0), 0, 1)
    if image.mode == "RGBA":
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255
        grey = np.asarray(image.convert("RGB").convert("L"), dtype=np.float32) / 255
        if alpha.min() < 1:
            # Transparent background (a canvas export): composite onto the shade the strokes are not.
            weight = alpha.sum()
            if weight == 0:
                raise ImageError("the image is fully transparent: no ink")
            stroke_level = float((grey * alpha).sum() / weight)
            background = 1.0 if stroke_level < 0.5 else 0.0
            grey = grey * alpha + background * (1 - alpha)
        return grey
    if image.mode != "L":
        image = image.convert("L")  # ITU-R 601 luma
    return np.asarray(image, dtype=np.float32) / 255 if isinstance(image, Image.Image) else image


def _ink(grey: np.ndarray) -> np.ndarray:
    """Ink intensity in [0, 1] (1 = strongest stroke) whatever the polarity, background 0."""
    h, w = grey.shape
    band = max(1, min(h, w) // 20)
    border = np.concatenate([grey[:band].ravel(), grey[-band:].ravel(), grey[:, :band].ravel(),
                             grey[:, -band:].ravel()])
    background = float(np.median(border))
    # The ink is on the side of the background with the larger swing: dark on light or light on dark.
    low, high = np.percentile(grey, [0.1, 99.9])
    dark_ink = background - low > high - background
    ink = background - grey if dark_ink else grey - background
    contrast = float(background - low if dark_ink else high - background)  # the ink's 99.9th percentile
    if contrast < _MIN_CONTRAST:
        raise ImageError(f"no ink found: the image is blank or nearly uniform (contrast {contrast * 255:.0f}/255); "
                         "it needs a digit darker or lighter than its background")
    return np.clip(ink / contrast, 0, 1).astype(np.float32)


def _otsu(values: np.ndarray, bins: int = 64) -> float:
    hist = np.bincount(np.minimum((values * bins).astype(np.int64), bins - 1).ravel(), minlength=bins)
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    mean0 = np.cumsum(hist * centres) / np.maximum(weight0, 1)
    mean1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(weight1, 1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[1:][np.argmax(between)])


def _box_count(mask: np.ndarray, size: int) -> np.ndarray:
    """For each pixel, how many pixels of `mask` lie in the size x size square around it (separable sums)."""
    r = size // 2
    counts = np.pad(mask.astype(np.int32), r)
    counts = sum(counts[i:i + counts.shape[0] - 2 * r] for i in range(size))
    return sum(counts[:, i:i + counts.shape[1] - 2 * r] for i in range(size))


def _denoised_mask(ink: np.ndarray) -> np.ndarray:
    """Where the digit is: above the Otsu threshold, with specks smaller than the stroke width removed."""
    # Clamped: a clean rendering is almost binary (Otsu ~0.5), a noisy one must not lose its strokes.
    threshold = min(max(_otsu(ink), 0.15), 0.5)
    mask = ink > threshold
    # A 3x3 majority (median) filter removes 1-2 px specks (sensor and JPEG noise); off for small images,
    # whose strokes may be a single pixel wide.
    if max(ink.shape) >= 100:
        cleaned = _box_count(mask, 3) >= 5
        if cleaned.any():
            # Grow what survived back over the strokes' soft edges, so only isolated specks are dropped.
            mask &= _box_count(cleaned, 5) > 0
    if not mask.any():
        raise ImageError("no ink found: nothing stands out from the background noise")
    return mask


def _fit_box(crop: np.ndarray) -> np.ndarray:
    """Scale so the longest side is BOX pixels, keeping the aspect ratio (MNIST's normalisation)."""
    from PIL import Image

    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    resized = np.asarray(Image.fromarray(crop.astype(np.float32)).resize(size, resample))
    return np.clip(resized, 0, None)


def _place_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste into SIDE x SIDE with the centre of mass at _TARGET_COM (clamped to stay inside); uint8."""
    h, w = digit.shape
    total = float(digit.sum())
    if total <= 0:
        raise ImageError("no ink found after scaling the digit to 20 px")
    com_r = float((digit.sum(1) * np.arange(h)).sum() / total)
    com_c = float((digit.sum(0) * np.arange(w)).sum() / total)
    top = min(max(round(_TARGET_COM[0] - com_r), 0), SIDE - h)
    left = min(max(round(_TARGET_COM[1] - com_c), 0), SIDE - w)
    canvas = np.zeros((SIDE, SIDE), dtype=np.float32)
    canvas[top:top + h, left:left + w] = digit
    canvas *= 255 / canvas.max()
    return np.round(canvas).clip(0, 255).astype(np.uint8)


# --- prediction ---------------------------------------------------------------------------------------

@dataclass
class Prediction:
    """The outcome for one input: either probabilities or an error message."""

    path: str
    probabilities: list[float] | None = None
    error: str | None = None
    image: torch.Tensor | None = None  # the preprocessed 28x28 the network saw

    @property
    def prediction(self) -> int | None:
        if self.probabilities is None:
            return None
        return max(range(len(self.probabilities)), key=self.probabilities.__getitem__)

    def top(self, k: int) -> list[tuple[int, float]]:
        order = sorted(range(len(self.probabilities or [])), key=lambda c: -self.probabilities[c])
        return [(c, self.probabilities[c]) for c in order[:k]]

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "prediction": self.prediction, "probabilities": self.probabilities}


def expand_inputs(inputs: list[str]) -> list[tuple[str, str | None]]:
    """Files, folders (their image files, sorted) and glob patterns -> [(path, error or None)], in order."""
    found: list[tuple[str, str | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                found.append((item, f"{item}: the folder holds no {', '.join(IMAGE_EXTENSIONS)} files"))
            found += [(str(p), None) for p in files]
        elif path.exists() or not glob.has_magic(item):
            found.append((item, None))  # a missing file is reported by open_image, in its place in the output
        else:
            matches = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:
                found.append((item, f"{item}: no files match this pattern"))
            found += [(p, None) for p in matches]
    return found


def predict_files(model: nn.Module, inputs: list[str], max_pixels: int = DEFAULT_MAX_PIXELS,
                  batch_size: int = 256) -> list[Prediction]:
    """Predict every image named by `inputs` (files, folders, globs); a bad file gets an error, not an exception."""
    results = []
    for path, error in expand_inputs(inputs):
        if error is not None:
            results.append(Prediction(path, error=error))
            continue
        try:
            results.append(Prediction(path, image=preprocess(open_image(path, max_pixels))))
        except ImageError as e:
            message = str(e)
            results.append(Prediction(path, error=message if path in message else f"{path}: {message}"))
    ready = [r for r in results if r.image is not None]
    for start in range(0, len(ready), batch_size):
        chunk = ready[start:start + batch_size]
        probabilities = inference.probabilities(model, torch.stack([r.image for r in chunk]))
        for result, row in zip(chunk, probabilities.tolist(), strict=True):
            result.probabilities = row
    return results


def save_preprocessed(results: list[Prediction], folder: str | os.PathLike) -> list[Path]:
    """Write the 28x28 each network input was, as `STEM.png` (numbered on a clash), atomically."""
    from PIL import Image

    from lenet._io import atomic_write

    folder = Path(folder)
    used: set[str] = set()
    written = []
    for result in results:
        if result.image is None:
            continue
        stem, name, n = Path(result.path).stem or "image", "", 1
        name = f"{stem}.png"
        while name in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name)
        pil = Image.fromarray(result.image.numpy())
        written.append(atomic_write(folder / name, lambda tmp, pil=pil: pil.save(tmp, format="PNG")))
    return written
