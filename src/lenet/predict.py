"""Read digits from your own images -- scans, drawings, phone photos of a notebook page -- preprocessed the way
MNIST itself was made.

Why predictions on your own images fail without this: a photo is dark ink on a page lit unevenly, with ruled
lines, the page's edge and the table beside it, specks, any size, while every lenet network expects MNIST: a
28x28 uint8 image, ink bright on black, the digit's longest side 20 px, its centre of mass at the centre.
One pipeline, for clean images and photos alike, turns the first into the second (`_analyse`):

    1. grey levels at work resolution (at most _WORK_SIDE px; PIL's box reduce: 6 ms for 12 MP)
    2. polarity: the median pixel is the page; the ink is on the side of it with the larger swing
    3. illumination: the page's brightness is a morphological closing of a 64 px copy (the strokes vanish,
       gradients, vignettes and shadows stay) and is divided out; the ink is how much darker than the page
       around it a pixel is, so the one threshold that follows is a local one. The same closing shows the
       page's edge: a step in brightness that no light makes.
    4. ruled and squared lines: long straight lines (Hough, within 25 degrees of the axes) much fainter than
       the strokes; along them only what is clearly darker than the line stays ink
    5. threshold at 0.4 of the strongest strokes, with a few pixels of hysteresis for faint stretches
    6. connected components: specks, lines and whatever touches the frame's border or lies on the page's
       edge are dropped; the row of digits is chained from the largest component; pieces of one digit join
    7. touching digits: a group too wide for one digit is cut at the columns with the least ink
       (`read_number` lets the network choose between cutting and not, `find_digits` cuts by width alone)
    8. each digit: crop, longest side to 20 px, centre of mass at the centre of 28x28 (MNIST's normalisation)

The image work is OpenCV's (opencv-python-headless). scikit-image and SciPy can do the same steps
(benchmarks/_cv2_via_skimage.py); measured side by side (benchmarks/README.md, "Photo preprocessing"), they
read exactly as many photos right but take 5-7x as long (12 MP photo, one core: 11 ms vs 54 ms median).

The public functions (`open_image`, `preprocess`, `predict_files`, `find_digits`, `read_number`,
`debug_sheet`) are what `lenet predict` and `lenet serve` share; keep their signatures stable. The network's
side (uint8 images in, probabilities out) is `lenet.inference.probabilities`, or a shipped network's ONNX
graph (`lenet.shipped_onnx.OnnxNetwork`); this module imports torch only when a torch network reads, so that
`lenet predict` with a shipped graph never loads it (1.3-1.7 s of a 2-core machine's time).
"""

from __future__ import annotations

import glob
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._paths import read_regular_file
from .errors import ImageError
from .shipped_onnx import SIDE, OnnxNetwork

if TYPE_CHECKING:
    import torch
    from torch import nn

    # What reads the digits: a torch network, or a shipped network's ONNX graph (lenet.shipped_onnx).
    Network = nn.Module | OnnxNetwork

# 40 MP: more than any phone photo; a bigger image is refused before its pixels are decoded, so a tiny
# compressed file cannot expand into gigabytes (a decompression bomb).
DEFAULT_MAX_PIXELS = 40_000_000
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")


def max_file_bytes(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """The largest image file read: 4 bytes a pixel (raw RGBA) at the pixel limit, plus 1 MiB of headroom for
    headers and metadata (161 MB at the default 40 MP); a larger file is refused before it is read."""
    return 4 * max_pixels + (1 << 20)
# Extensions picked up when a folder is given; files named explicitly are read whatever their extension.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")

# Larger images are reduced to about this longest side first: plenty to find strokes that will end up
# 20 px tall, and it keeps preprocessing a 12 MP photo in the milliseconds.
_WORK_SIDE = 512
# The page's illumination is modelled on a copy about this many pixels on its longest side, closed with a
# disk of _CLOSING pixels (17 % of the side): wider than strokes, narrower than the changes of light.
_COARSE_SIDE = 64
_CLOSING = 11
# Where a closing twice as wide is this many times brighter, a stroke too bold for the first one is there.
_BOLD_DIP = 1.4
# The page's edge: where its brightness (the closing) steps by more than this between coarse pixels.
_EDGE_STEP = 0.12
# Ink is what is darker than _THRESHOLD times the strongest strokes (after the illumination is divided out).
_THRESHOLD = 0.4
# A long straight line fainter than this fraction of the strongest strokes is a ruling of the paper.
_RULING_RATIO = 0.6
_RULING_WIDTH = 3
# A digit is at least this many work pixels tall (less: a speck; the generator's smallest digits are 11 px
# here: 5 % of a 16:9 photo's height).
_MIN_DIGIT = 8
# A component of the row is at least this fraction of the tallest one's height (smaller: specks, pieces).
_MIN_HEIGHT = 0.3
# Neighbours in a row are at most this many digit heights apart.
_ROW_GAP = 1.2
# Wider than this many times the row's height, a group is touching digits; wider than _MAYBE_TOUCHING it may
# be, and `read_number` lets the network choose. (Generated photos: 99.5 % of single digits are below 1.21,
# 90 % of touching pairs above 1.14.)
_SPLIT_ASPECT = 1.45
_MAYBE_TOUCHING = 1.05
# MNIST's geometry (LeCun et al.): the digit is scaled into a 20x20 box and centred by mass in 28x28.
BOX = 20  # the side of the digit's box; SIDE (28, the networks' input) comes from lenet.shipped_onnx
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
        # Refused unread: a FIFO would block forever, /dev/zero never ends, a file over the limit is no sane image.
        data = read_regular_file(path, max_file_bytes(max_pixels), error=ImageError,
                                 limit_hint=f", too large for an image of at most {max_pixels:,} pixels; "
                                            "downscale it first")
    if not data:
        raise ImageError(f"{where} is empty (0 bytes), not an image")

    with warnings.catch_warnings():
        # Pillow's own bomb check warns above 89 MP; we apply our (lower) limit ourselves below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        # Pillow warns about metadata it skips (corrupt EXIF, ...): the image is read or refused either way, and
        # a warning would add two lines of noise to a command's one-line report.
        warnings.simplefilter("ignore", UserWarning)
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


def as_image(image: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """A PIL image from what the Python API takes: a file path, the file's bytes, a PIL image, or a uint8
    numpy array of shape (H, W), (H, W, 3) or (H, W, 4). Anything else raises TypeError saying what is
    taken; an image with no pixels or over `max_pixels` raises ImageError, as `open_image` does."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        return open_image(image, max_pixels)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4))):
            raise TypeError(f"a numpy image must be uint8 of shape (H, W), (H, W, 3) or (H, W, 4), got "
                            f"{image.dtype} of shape {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a file path, the file's bytes, a PIL image or a uint8 numpy array, got "
                        f"{type(image).__name__}")
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(f"the image is {width}x{height} = {width * height:,} pixels, over the limit of "
                         f"{max_pixels:,}; downscale it first")
    return image


# --- preprocessing: the page ------------------------------------------------------------------------------

def preprocess(image: Any) -> torch.Tensor:
    """An image of one digit, any size, mode or polarity -> uint8 (28, 28) tensor, ink bright, MNIST-style.

    A photo of several digits in a row gives one image of all of them (as a scan of "42" always did);
    `find_digits` and `read_number` read them one by one. Raises `ImageError` when the image holds no ink."""
    import torch

    return torch.from_numpy(preprocess_pixels(image))


def preprocess_pixels(image: Any) -> np.ndarray:
    """`preprocess` as a uint8 (28, 28) numpy array (no torch needed)."""
    page = _analyse(image, one_digit=True)
    pieces = [label for digit in page.digits for label in digit.labels]
    return _normalise(page, _Digit(pieces))


def probabilities(model: Network, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, 10) for uint8 (N, 28, 28) images, from a torch network or a shipped graph."""
    if isinstance(model, OnnxNetwork):
        return model.probabilities(images)
    import torch

    from . import inference

    return inference.probabilities(model, torch.from_numpy(images)).numpy()


@dataclass
class _Digit:
    """The connected components (labels) one digit is made of, and the columns it has when a wider group of
    touching digits was cut (work-resolution pixels, end excluded)."""

    labels: list[int]
    columns: tuple[int, int] | None = None
    width: float = 0.8  # its width in row heights (a digit's is 0.3 to 1.2)


@dataclass
class _Page:
    """One image analysed at work resolution: what the digits, the 28x28s and the debug sheet are made of."""

    ink: np.ndarray  # float32 (h, w), 0..1: how much darker than the page each pixel is (after polarity)
    mask: np.ndarray  # bool (h, w): the thresholded ink, rulings removed
    rulings: np.ndarray  # bool (h, w): the ruled/squared lines found and cleared
    edge: np.ndarray  # bool (h, w): where the page's edge is (the table beyond it)
    labels: np.ndarray  # int32 (h, w): connected components of `mask`
    stats: np.ndarray  # cv2 stats per label: x, y, width, height, area
    groups: list[list[list[_Digit]]]  # left to right: each group's ways to be read, the geometric guess first
    factor: float  # pixels of the decoded image per work pixel
    size: tuple[int, int]  # the decoded image's width and height

    @property
    def digits(self) -> list[_Digit]:
        """The geometric guess: each group's first reading."""
        return [digit for readings in self.groups for digit in readings[0]]


def _analyse(image: Any, need_digits: bool = True, one_digit: bool = False) -> _Page:
    """Grey -> illumination removed -> rulings cleared -> threshold -> components -> the row of digits.

    Raises `ImageError` when there is no ink, or (`need_digits`) when nothing but specks, lines and edges is;
    `one_digit` (`preprocess`) takes any ink that is left when no component looks like a digit."""
    import cv2

    grey, factor = _grey(image)
    ink, edge = _flatten(grey)
    strong = _strong_level(ink)
    if strong < _MIN_CONTRAST:
        raise ImageError(f"no ink found: nothing is darker than the page around it by more than "
                         f"{_MIN_CONTRAST:.0%} (at most {strong:.0%})")
    threshold = min(max(_THRESHOLD * strong, _MIN_CONTRAST), 0.5)
    rulings, line_level = _rulings(ink, strong)
    candidates = ink > 0.5 * threshold
    if rulings.any():
        # Along a ruling, only what is clearly darker than the line itself is ink (a stroke crossing it).
        candidates &= ~rulings | (ink > max(threshold, 1.3 * line_level + 0.05))
    mask = _grow(candidates & (ink > threshold), candidates)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    groups = _row(labels, stats, _near_border(labels, mask) | _on_edge(labels, edge), one_digit)
    if not groups and need_digits:
        raise ImageError("no ink found: nothing stands out from the page but specks, lines and the edges")
    return _Page(ink, mask, rulings, edge, labels, stats, groups, factor, image.size)


def _grow(strong: np.ndarray, weak: np.ndarray, steps: int = 4) -> np.ndarray:
    """Hysteresis, a few pixels deep: the strong pixels plus the weak ones within `steps` pixels of them, through
    weak ones. It bridges the fainter stretches of a light or blurred stroke without letting a faint line
    carry the digit across the page."""
    import cv2

    square = np.ones((3, 3), np.uint8)
    grown = strong.view(np.uint8)
    for _ in range(steps):
        grown = cv2.dilate(grown, square) & weak.view(np.uint8)
    return grown.astype(bool) | strong


def _grey(image: Any) -> tuple[np.ndarray, int]:
    """Grey levels in [0, 1] as float32 (H, W), at most about _WORK_SIDE pixels on the longest side, and the
    reduction factor (decoded pixels per work pixel)."""
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
        image = image.reduce(factor)  # box average: thin strokes get fainter, never vanish; 6 ms for 12 MP

    if image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)
        return np.clip(values / (65535.0 if values.max() > 255 else 255.0), 0, 1), factor
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
        return grey, factor
    if image.mode != "L":
        image = image.convert("L")  # ITU-R 601 luma
    return (np.asarray(image, dtype=np.float32) / 255 if isinstance(image, Image.Image) else image), factor


def _flatten(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ink strength in [0, 1] (how much darker than the page around it each pixel is, whatever the polarity),
    and where the page's edge is (bool).

    The page's brightness (its illumination: gradients, vignette, shadows) is a morphological closing of a
    small copy: the closing fills every dark structure narrower than its kernel (the strokes), and what is
    left varies only as the light does -- except at the page's edge, where the table beyond it is a large
    dark region that the closing keeps, with a step no light makes. Dividing by the page's brightness makes
    the threshold that follows a local one."""
    import cv2

    page = grey if _dark_ink(grey) else 1 - grey
    h, w = page.shape
    step = max(1, round(max(h, w) / _COARSE_SIDE))
    small = cv2.resize(page, (max(1, round(w / step)), max(1, round(h / step))), interpolation=cv2.INTER_AREA)
    light = cv2.morphologyEx(small, cv2.MORPH_CLOSE, _disk(_CLOSING), borderType=cv2.BORDER_REPLICATE)
    # A stroke wider than the kernel (a bold marker, a large clean scan) is not filled; a closing twice as
    # wide fills it, but would also fill soft shadows, which are never this deep: take it only where it is.
    wide = cv2.morphologyEx(small, cv2.MORPH_CLOSE, _disk(2 * _CLOSING - 1), borderType=cv2.BORDER_REPLICATE)
    light = np.where(wide > _BOLD_DIP * light, wide, light)
    # The step: the light changes by more than _EDGE_STEP of itself from one coarse pixel to the next (a 45 %
    # gradient across the frame changes it by 1 % per coarse pixel). Measured on the wide closing, where no
    # bold stroke leaves its imprint.
    square = np.ones((3, 3), np.uint8)
    jump = cv2.morphologyEx(wide, cv2.MORPH_GRADIENT, square) > _EDGE_STEP * np.maximum(wide, 1 / 255)
    edge = cv2.resize(cv2.dilate(jump.view(np.uint8), square), (w, h), interpolation=cv2.INTER_NEAREST)
    light = cv2.resize(light, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(1 - page / np.maximum(light, 1 / 255), 0, 1), edge.astype(bool)


def _disk(size: int) -> np.ndarray:
    import cv2

    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _dark_ink(grey: np.ndarray) -> bool:
    """Dark ink on a light page (True) or light on dark: the median pixel is the page (the page covers most of
    a photo, the background most of a scan, even where the table or a shadow covers much of the border),
    and the ink is on the side of it with the larger swing. Raises `ImageError` when neither side has any."""
    low, background, high = np.percentile(grey, [0.1, 50, 99.9])
    contrast = max(background - low, high - background)
    if contrast < _MIN_CONTRAST:
        raise ImageError(f"no ink found: the image is blank or nearly uniform (contrast {contrast * 255:.0f}/255); "
                         "it needs a digit darker or lighter than its background")
    return bool(background - low >= high - background)


def _strong_level(ink: np.ndarray) -> float:
    """The ink level of the strongest strokes: the 20th darkest pixel (a few noisy pixels do not count)."""
    flat = ink.ravel()
    k = min(20, flat.size)
    return float(np.partition(flat, flat.size - k)[flat.size - k])


def _rulings(ink: np.ndarray, strong: float) -> tuple[np.ndarray, float]:
    """Where the ruled or squared lines are (bool), and how dark they are; no lines: all False, 0.

    A ruling is a straight line across most of the frame (Hough transform on the faint structure, within
    25 degrees of horizontal or vertical) that is much fainter than the strongest strokes: the page's
    printed lines. A digit's own straight stroke is as dark as the ink, so it is never taken for one."""
    import cv2

    h, w = ink.shape
    faint = (ink > max(0.04, 0.1 * strong)).view(np.uint8)
    # Only thin structure votes: what a 5x5 square does not fit in (the table, a shadow, thick strokes do not
    # make lines).
    faint = faint & ~cv2.morphologyEx(faint, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    found: list[tuple[float, float]] = []
    spread = math.radians(25)
    for low, high, length in ((math.pi / 2 - spread, math.pi / 2 + spread, w), (0.0, spread, h),
                              (math.pi - spread, math.pi, h)):
        lines = cv2.HoughLines(faint, 1, math.pi / 360, max(20, int(0.45 * length)), min_theta=low, max_theta=high)
        if lines is not None:
            found += [(float(rho), float(theta)) for rho, theta in lines[:, 0]]
    band = np.zeros((h, w), np.uint8)
    levels = []
    for rho, theta in found:
        level = _line_level(ink, faint, rho, theta)
        if level is not None and level < _RULING_RATIO * strong:
            levels.append(level)
            _draw_line(band, rho, theta, _RULING_WIDTH)
    return band.astype(bool), (float(np.median(levels)) if levels else 0.0)


def _line_level(ink: np.ndarray, faint: np.ndarray, rho: float, theta: float) -> float | None:
    """How dark the line (rho, theta) is where it is drawn: the 80th percentile of the ink on it."""
    h, w = ink.shape
    c, s = math.cos(theta), math.sin(theta)
    if abs(s) >= abs(c):  # mostly horizontal: one point per column
        xs = np.arange(w)
        ys = np.round((rho - xs * c) / s).astype(np.int64)
    else:
        ys = np.arange(h)
        xs = np.round((rho - ys * s) / c).astype(np.int64)
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    xs, ys = xs[inside], ys[inside]
    on = faint[ys, xs].astype(bool)
    if on.sum() < 0.5 * len(xs):  # mostly not there: the votes came from many different things
        return None
    return float(np.percentile(ink[ys, xs][on], 80))


def _draw_line(band: np.ndarray, rho: float, theta: float, width: int) -> None:
    import cv2

    c, s = math.cos(theta), math.sin(theta)
    far = 4 * max(band.shape)
    x0, y0 = rho * c, rho * s
    cv2.line(band, (round(x0 - far * s), round(y0 + far * c)), (round(x0 + far * s), round(y0 - far * c)), 1, width)


# --- preprocessing: components, the row of digits, the 28x28s -----------------------------------------------

def _near_border(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For each component (label - 1), whether it touches the frame's border or lies within 1 % of the frame's
    side of a component that does: the table, the page's edge and the pieces it breaks into."""
    import cv2

    h, w = labels.shape
    count = int(labels.max())
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]
    near = np.zeros(count, bool)
    if not len(edge):
        return near
    r = max(1, round(0.01 * max(h, w)))
    zone = cv2.dilate(np.isin(labels, edge).view(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))).astype(bool)
    near[np.unique(labels[zone & mask]) - 1] = True
    return near


def _on_edge(labels: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """For each component (label - 1), whether most of it lies along the page's edge."""
    count = int(labels.max())
    total = np.bincount(labels.ravel(), minlength=count + 1)
    along = np.bincount(labels[edge], minlength=count + 1)
    return (along[1:] > 0.5 * total[1:])


def _row(labels: np.ndarray, stats: np.ndarray, touches: np.ndarray,
         lenient: bool = False) -> list[list[list[_Digit]]]:
    """The digits, left to right, as groups of components each with its ways to be read (`_readings`): the
    components that are neither specks, nor lines, nor at the frame's border or the page's edge (`touches`),
    chained from the largest one along the row it is written in, pieces of one digit together."""
    h, w = labels.shape
    x, y, bw, bh, area = (stats[1:, i] for i in range(5))
    # What is left of a ruling or of the page's edge: across half the frame, 15 times longer than thick (a
    # drawn 1 is 8-12 times).
    long_thin = (np.maximum(bw, bh) > 0.5 * min(h, w)) & (np.minimum(bw, bh) * 15 < np.maximum(bw, bh))
    alive = ~touches & ~long_thin & (area >= 3)
    if not alive.any():
        alive = area >= 3  # nothing else: ink drawn to the edge of its image
    # A digit, or a run of touching ones: tall enough to be read (specks are not), no flatter than six
    # digits side by side (a piece of a line is).
    legible = alive & (bh >= min(_MIN_DIGIT, 0.1 * min(h, w))) & (bw <= 5 * bh)
    if not legible.any():
        # One digit asked for (`preprocess`): whatever ink there is, as before photos were read -- a
        # drawing's first stroke, say.
        return [[[_Digit([int(i) + 1 for i in np.flatnonzero(alive)])]]] if lenient and alive.any() else []
    tall = legible & (bh >= _MIN_HEIGHT * bh[legible].max())
    main = int(np.argmax(np.where(tall, area, -1)))
    chain = _chain(main, tall, x, y, bw, bh)
    groups = _merge_small(_group(chain, alive, x, y, bw, bh), x, y, bw, bh)
    row_height = float(np.median([_extent(g, x, y, bw, bh)[3] - _extent(g, x, y, bw, bh)[1] for g in groups]))
    return [_readings(group, labels, stats, row_height) for group in groups]


def _merge_small(groups: list[list[int]], x, y, bw, bh) -> list[list[int]]:
    """A group less than half as tall as the row's median is no digit on its own (a 5's bar that broke off,
    a speck): it joins the nearest group when that is within 0.4 row heights, else it is dropped."""
    extents = [_extent(g, x, y, bw, bh) for g in groups]
    height = float(np.median([y1 - y0 for _, y0, _, y1 in extents]))
    small = [y1 - y0 < 0.5 * height for _, y0, _, y1 in extents]
    if all(small) or not any(small):
        return groups
    kept = [list(g) for g, s in zip(groups, small, strict=True) if not s]
    boxes = [e for e, s in zip(extents, small, strict=True) if not s]
    for group, (x0, _, x1, _), is_small in zip(groups, extents, small, strict=True):
        if not is_small:
            continue
        gaps = [max(bx0 - x1, x0 - bx1, 0) for bx0, _, bx1, _ in boxes]
        nearest = int(np.argmin(gaps))
        if gaps[nearest] <= 0.4 * height:
            kept[nearest] += group
    return kept


def _chain(main: int, tall: np.ndarray, x, y, bw, bh) -> list[int]:
    """Components (indices into stats[1:]) in the row of `main`: grown left and right one neighbour at a time,
    each within a digit height of the last one, so that a slanted row is followed."""
    chain = [main]
    height = float(bh[main])
    for direction in (1, -1):
        end = main
        while True:
            gap = (x - (x[end] + bw[end])) if direction > 0 else (x[end] - (x + bw))
            centre = np.abs((y + bh / 2) - (y[end] + bh[end] / 2))
            near = tall & (gap > -0.5 * np.minimum(bw, bw[end])) & (gap <= _ROW_GAP * height) & \
                (centre <= 0.6 * height)
            near[chain] = False
            if not near.any():
                break
            end = int(np.argmin(np.where(near, gap, np.inf)))
            chain.append(end)
    return sorted(chain, key=lambda i: x[i] + bw[i] / 2)


def _group(chain: list[int], alive: np.ndarray, x, y, bw, bh) -> list[list[int]]:
    """Pieces of one digit together: row members whose columns overlap by half the narrower one, plus the other
    pieces inside a digit's box, and the pieces of stroke (a 5's bar, a broken stroke; not specks) above or
    below a digit within 0.4 digit heights, or beside it within 0.15."""
    groups: list[list[int]] = []
    for i in chain:
        if groups:
            x0, _, x1, _ = _extent(groups[-1], x, y, bw, bh)
            if min(x[i] + bw[i], x1) - max(x[i], x0) > 0.5 * min(bw[i], x1 - x0):
                groups[-1].append(i)
                continue
        groups.append([i])
    height = max(bh[i] for i in chain)
    extents = [_extent(g, x, y, bw, bh) for g in groups]
    for k in np.flatnonzero(alive):
        if k in chain:
            continue
        overlap = [min(x[k] + bw[k], x1) - max(x[k], x0) for x0, _, x1, _ in extents]
        best = int(np.argmax(overlap))
        x0, y0, x1, y1 = extents[best]
        across = max(y0 - (y[k] + bh[k]), y[k] - y1)
        inside = x0 <= x[k] and x[k] + bw[k] <= x1 and y0 <= y[k] and y[k] + bh[k] <= y1
        # A piece of stroke (not a speck, which would stretch the digit's box) above or below a digit, or
        # just beside it (a 5's bar broken off to the right).
        long_side, short_side = max(bw[k], bh[k]), min(bw[k], bh[k])
        stroke = long_side >= 0.4 * height or (long_side >= 0.25 * height and long_side >= 1.8 * short_side)
        # Within a ruling's width: the line crossing the stroke cut it there.
        cut_off = max(-overlap[best], across) <= _RULING_WIDTH + 1
        if inside or cut_off or stroke and ((overlap[best] > 0 and across <= 0.4 * height) or
                                            (-overlap[best] <= 0.15 * height and across <= 0.15 * height)):
            groups[best].append(int(k))
    return groups


def _extent(members: list[int], x, y, bw, bh) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 (ends excluded) around the components `members`."""
    return (min(x[i] for i in members), min(y[i] for i in members), max(x[i] + bw[i] for i in members),
            max(y[i] + bh[i] for i in members))


def _readings(group: list[int], labels: np.ndarray, stats: np.ndarray, row_height: float) -> list[list[_Digit]]:
    """Ways to read one group of components, as lists of digits: first the geometric guess (one digit, or,
    wider than _SPLIT_ASPECT row heights, round(width / (0.75 height)) touching digits cut apart), then, for a
    group wider than _MAYBE_TOUCHING row heights, one digit fewer and one more: `read_number` lets the network
    choose between them."""
    ids = [i + 1 for i in group]
    x0 = int(min(stats[i, 0] for i in ids))
    x1 = int(max(stats[i, 0] + stats[i, 2] for i in ids))
    y0 = int(min(stats[i, 1] for i in ids))
    y1 = int(max(stats[i, 1] + stats[i, 3] for i in ids))
    ratio = (x1 - x0) / max(y1 - y0, row_height)
    guess = 1 if ratio <= _SPLIT_ASPECT else min(6, max(2, round(ratio / 0.75)))
    counts = [guess]
    if ratio > _MAYBE_TOUCHING:
        counts += [k for k in (guess - 1, guess + 1) if k >= 1 and ratio / k >= 0.35]
    profile = np.isin(labels[y0:y1, x0:x1], ids).sum(0)
    height = max(y1 - y0, row_height)
    return [_cut(ids, profile, x0, x1, k, height) for k in counts]


def _cut(ids: list[int], profile: np.ndarray, x0: int, x1: int, count: int, height: float) -> list[_Digit]:
    """The group cut into `count` digits, each cut at the column with the least ink within 30 % of a digit's
    width of where even cuts would be."""
    if count == 1:
        return [_Digit(ids, None, (x1 - x0) / height)]
    width = x1 - x0
    cuts = [x0]
    for n in range(1, count):
        centre = n * width / count
        lo, hi = int(centre - 0.3 * width / count), int(centre + 0.3 * width / count) + 1
        cuts.append(x0 + lo + int(np.argmin(profile[lo:hi])))
    cuts.append(x1)
    return [_Digit(ids, (a, b), (b - a) / height) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b - a > 1]


def _digit_pixels(page: _Page, digit: _Digit) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The digit's ink (float32, zero outside its strokes) cropped to its box, and the box (x, y, w, h)."""
    import cv2

    mine = np.isin(page.labels, digit.labels)
    if digit.columns is not None:
        keep = np.zeros_like(mine)
        keep[:, digit.columns[0]:digit.columns[1]] = True
        mine &= keep
    rows, cols = np.flatnonzero(mine.any(1)), np.flatnonzero(mine.any(0))
    if not len(rows):
        raise ImageError("no ink found: the digit vanished")
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = mine[y0:y1, x0:x1].view(np.uint8)
    band = page.rulings[y0:y1, x0:x1]
    if band.any():
        # Where a stroke crosses a ruling, the line's pixels were cleared with it: bridge the gap across the
        # line (rulings are within 25 degrees of horizontal or vertical).
        span = _RULING_WIDTH + 2
        bridged = cv2.morphologyEx(crop, cv2.MORPH_CLOSE, np.ones((span, 1), np.uint8)) | \
            cv2.morphologyEx(crop, cv2.MORPH_CLOSE, np.ones((1, span), np.uint8))
        crop = crop | (bridged & band.view(np.uint8))
    # One pixel around the strokes: their soft, anti-aliased edges, as MNIST's digits have them.
    soft = cv2.dilate(crop, np.ones((3, 3), np.uint8)).astype(bool)
    others = (page.labels[y0:y1, x0:x1] > 0) & ~crop.astype(bool)
    ink = np.where(soft & ~others, page.ink[y0:y1, x0:x1], 0).astype(np.float32)
    return ink, (int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def _normalise(page: _Page, digit: _Digit) -> np.ndarray:
    """MNIST's normalisation of one digit: uint8 28x28, longest side 20 px, centre of mass at the centre."""
    ink, _ = _digit_pixels(page, digit)
    return _place_by_mass(_fit_box(ink))


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


# --- numbers ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Box:
    """Where a digit is, in pixels of the decoded (EXIF-rotated) image."""

    x: int
    y: int
    width: int
    height: int

    def to_list(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]


@dataclass(frozen=True)
class DigitReading:
    """One digit of a number: what the network read, its probabilities, where it is, the 28x28 it saw."""

    prediction: int
    probabilities: list[float]
    box: Box
    image: np.ndarray  # uint8 (28, 28), ink bright


@dataclass(frozen=True)
class NumberReading:
    """A written number, read digit by digit, left to right."""

    number: str
    digits: tuple[DigitReading, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number,
                "digits": [{"prediction": d.prediction, "probabilities": d.probabilities, "box": d.box.to_list()}
                           for d in self.digits]}


def find_digits(image: Any) -> list[tuple[Box, np.ndarray]]:
    """The digits written in a row in `image` (a PIL image, as `open_image` returns), left to right: each one's
    box in the image and its MNIST-style 28x28 (uint8, ink bright). Raises `ImageError` when there are none."""
    page = _analyse(image)
    return [_box_and_image(page, digit) for digit in page.digits]


def _box_and_image(page: _Page, digit: _Digit) -> tuple[Box, np.ndarray]:
    ink, (x, y, w, h) = _digit_pixels(page, digit)
    f = page.factor
    width, height = page.size
    x0, y0 = min(int(x * f), width - 1), min(int(y * f), height - 1)
    x1, y1 = min(math.ceil((x + w) * f), width), min(math.ceil((y + h) * f), height)
    return Box(x0, y0, max(1, x1 - x0), max(1, y1 - y0)), _place_by_mass(_fit_box(ink))


def _width_prior(width: float) -> float:
    """Log-odds that a piece `width` row heights wide is one digit: 0 from 0.25 to 1.15 (MNIST's digits, turned
    up to 12 degrees), falling fast outside: the network is sure of itself on junk too, so two touching
    digits read as one would otherwise often win."""
    if width > 1.3:
        return -(((width - 1.3) / 0.2) ** 2)
    if width < 0.25:
        return -(((0.25 - width) / 0.1) ** 2)
    return 0.0


def read_number(model: Network, image: Any) -> NumberReading:
    """Read the number written in `image` (a PIL image, as `open_image` returns), left to right, in one batched
    network call. Raises `ImageError` when no digit is found.

    A group of strokes that may be touching digits (`_readings`) is read every way it can be cut, in the same
    batch, and the way the network is surest of is taken (the largest sum of the log top probabilities of
    its digits, plus a prior on each digit's width): "34" written touching reads as 3 and 4, a wide 0 stays
    one 0."""
    page = _analyse(image)
    found = [[[_box_and_image(page, digit) for digit in reading] for reading in readings]
             for readings in page.groups]
    flat = [pixels for readings in found for reading in readings for _, pixels in reading]
    rows = iter(probabilities(model, np.stack(flat)).tolist())
    digits: list[DigitReading] = []
    for pictures, readings in zip(found, page.groups, strict=True):
        best, best_score = [], -math.inf
        for pictured, reading in zip(pictures, readings, strict=True):
            probs = [next(rows) for _ in reading]
            score = sum(math.log(max(max(p), 1e-12)) + _width_prior(d.width) for p, d in zip(probs, reading,
                                                                                             strict=True))
            if score > best_score:
                best_score = score
                best = [DigitReading(max(range(len(p)), key=p.__getitem__), p, box, pixels)
                        for (box, pixels), p in zip(pictured, probs, strict=True)]
        digits += best
    return NumberReading("".join(str(d.prediction) for d in digits), tuple(digits))


# --- the debug sheet -------------------------------------------------------------------------------------

def debug_sheet(image: Any, reading: NumberReading | None = None) -> Any:
    """Why an image was read as it was, as one RGB PIL image (for `--save-preprocessed`): left, the image as the
    pipeline saw it (grey, work resolution) with each digit's box; right, the mask: the strokes kept (white),
    the ink dropped (red: specks, lines, the page's edge, the table), the rulings cleared (blue) and the
    page's edge (dark yellow); below, each 28x28 the network saw, 4x, with the digit read when `reading`
    (the `read_number` result for this image) is given. Raises `ImageError` only for an image without ink."""
    from PIL import Image, ImageDraw

    page = _analyse(image, need_digits=False)
    grey, _ = _grey(image)
    photo = Image.fromarray(np.round(grey * 255).astype(np.uint8)).convert("RGB")
    kept = np.isin(page.labels, [label for digit in page.digits for label in digit.labels])
    colours = np.zeros(page.mask.shape + (3,), np.uint8)
    colours[page.edge] = (90, 80, 0)
    colours[page.rulings] = (0, 0, 170)
    colours[page.mask & ~kept] = (220, 40, 40)
    colours[kept] = (255, 255, 255)
    if reading is not None:
        found = [(d.box, d.image, str(d.prediction)) for d in reading.digits]
    else:
        found = [(box, pixels, "") for box, pixels in (_box_and_image(page, d) for d in page.digits)]
    draw = ImageDraw.Draw(photo)
    line = max(1, max(photo.size) // 300)
    tiles = []
    for box, pixels, label in found:
        x, y, w, h = (v / page.factor for v in box.to_list())
        draw.rectangle((x - 1, y - 1, x + w, y + h), outline=(230, 30, 30), width=line)
        if label:
            draw.text((x, max(0, y - 12)), label, fill=(230, 30, 30))
        tiles.append(Image.fromarray(pixels).resize((4 * SIDE, 4 * SIDE), Image.Resampling.NEAREST))
    width, height = photo.size
    strip = 4 * SIDE + 8
    sheet = Image.new("RGB", (max(2 * width + 8, len(tiles) * strip, 420), height + strip + 24), (60, 60, 60))
    sheet.paste(photo, (0, 0))
    sheet.paste(Image.fromarray(colours), (width + 8, 0))
    for n, tile in enumerate(tiles):
        sheet.paste(tile.convert("RGB"), (n * strip, height + 8))
    ImageDraw.Draw(sheet).text((2, height + strip + 10), "mask: kept white, dropped red, rulings blue, page edge "
                               "yellow; below: the 28x28 inputs", fill=(230, 230, 230))
    return sheet


# --- prediction ---------------------------------------------------------------------------------------

@dataclass
class Prediction:
    """The outcome for one input: either probabilities or an error message."""

    path: str
    probabilities: list[float] | None = None
    error: str | None = None
    image: np.ndarray | None = None  # the preprocessed uint8 28x28 the network saw
    reading: NumberReading | None = None  # `predict_files(number=True)`: the number, digit by digit

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
        if self.reading is not None:
            return {"path": self.path, **self.reading.to_dict()}
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


def predict_files(model: Network, inputs: list[str], max_pixels: int = DEFAULT_MAX_PIXELS,
                  batch_size: int = 256, number: bool = False) -> list[Prediction]:
    """Predict every image named by `inputs` (files, folders, globs); a bad file gets an error, not an exception.

    `number=True` reads each image as a number written in a row (`read_number`), one batch per image."""
    results = []
    for path, error in expand_inputs(inputs):
        if error is not None:
            results.append(Prediction(path, error=error))
            continue
        try:
            image = open_image(path, max_pixels)
            if number:
                results.append(Prediction(path, reading=read_number(model, image)))
            else:
                results.append(Prediction(path, image=preprocess_pixels(image)))
        except ImageError as e:
            message = str(e)
            results.append(Prediction(path, error=message if path in message else f"{path}: {message}"))
    ready = [r for r in results if r.image is not None]
    for start in range(0, len(ready), batch_size):
        chunk = ready[start:start + batch_size]
        rows = probabilities(model, np.stack([r.image for r in chunk]))
        for result, row in zip(chunk, rows.tolist(), strict=True):
            result.probabilities = row
    return results


def save_preprocessed(results: list[Prediction], folder: str | os.PathLike,
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Path]:
    """Write, atomically, what the network saw for each image: `STEM.png`, the 28x28 (for a number:
    `STEM.1.png`, `STEM.2.png`, ... left to right), and beside it `STEM.debug.png`, the debug sheet
    (`debug_sheet`: the mask, the kept strokes, the boxes) -- also for an image in which no digit was found,
    to show why. STEM is numbered (`STEM-2`) when two inputs share it, or when one of its files would replace
    an input image (FOLDER may be the inputs' own folder)."""
    from PIL import Image

    from ._io import atomic_write

    folder = Path(folder)
    inputs = {Path(r.path).resolve() for r in results}
    used: set[str] = set()
    written = []
    for result in results:
        images = [d.image for d in result.reading.digits] if result.reading is not None else \
            [result.image] if result.image is not None else []
        sheet = _sheet_or_none(result, max_pixels)
        if not images and sheet is None:
            continue
        base = _free_base(folder, Path(result.path).stem or "image", len(images), used, inputs)
        used.add(base)
        names = [f"{base}.{i}.png" for i in range(1, len(images) + 1)] if result.reading is not None else \
            [f"{base}.png"] * len(images)
        files = [(name, Image.fromarray(pixels)) for name, pixels in zip(names, images, strict=True)]
        if sheet is not None:
            files.append((f"{base}.debug.png", sheet))
        for name, pil in files:
            written.append(atomic_write(folder / name, lambda tmp, pil=pil: pil.save(tmp, format="PNG")))
    return written


def _free_base(folder: Path, stem: str, digits: int, used: set[str], inputs: set[Path]) -> str:
    """STEM, else STEM-2, STEM-3, ...: the first that no other input took and none of whose files (STEM.png,
    STEM.debug.png, STEM.1.png ...) is one of the `inputs`."""
    def replaces_an_input(base: str) -> bool:
        names = [f"{base}.png", f"{base}.debug.png", *(f"{base}.{i}.png" for i in range(1, digits + 1))]
        return any((folder / name).resolve() in inputs for name in names)

    base, n = stem, 1
    while base in used or replaces_an_input(base):
        n += 1
        base = f"{stem}-{n}"
    return base


def _sheet_or_none(result: Prediction, max_pixels: int) -> Any:
    """The debug sheet of a result's image, or None where there is no image to show (unreadable, no ink)."""
    if result.error is not None and ("no ink" not in result.error or not Path(result.path).is_file()):
        return None
    try:
        return debug_sheet(open_image(result.path, max_pixels), result.reading)
    except ImageError:
        return None
