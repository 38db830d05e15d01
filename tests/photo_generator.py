"""Notebook-style phone photos of REAL handwritten digits (the MNIST test set), for testing `lenet predict`.

Issue 13 lists what users photograph; every item is a knob here, drawn at random per photo from a seeded
`numpy.random.Generator`, so a seed always gives the same photos (byte for byte):

- ink: ballpoint black, blue or dark grey, the MNIST grey level as ink density (pressure), pens from thin
  to thick (a threshold on the upscaled MNIST strokes), multiplied into the paper like real ink;
- paper: white or off-white, plain, ruled or squared with light blue/grey lines (crossing the digit);
- light: a brightness gradient across the frame (one side 30-45 % darker), a vignette, a soft shadow;
- framing: the page's edge and the table in one or two corners, rotation up to +-12 degrees, perspective
  tilt, the digit anywhere (5-30 % of the photo's height), 200 px to 12 MP;
- dirt and camera: specks, sensor noise, mild blur, JPEG quality 60-95 (a few PNGs).

Numbers are 2-6 MNIST digits written in a row with small gaps (`touching=True`: gaps from slightly
overlapping to nothing). The MNIST labels are the ground truth. Tests and benchmarks use this module;
no generated image is committed.

One floor the issue does not state: a digit is never drawn less than MIN_DIGIT_PX pixels tall. At the issue's
extremes (5 % of a 200 px photo) it would be 7-10 px, smaller than the 20 px box of MNIST itself, and no
reader, human or network, is expected to read that. When the drawn fraction would fall below the floor,
the fraction is drawn again between the floor and 30 %.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

MIN_DIGIT_PX = 16
INKS = {"black": (28, 28, 36), "blue": (32, 48, 150), "dark grey": (72, 72, 78)}
TABLES = [(92, 62, 38), (150, 106, 62), (196, 160, 112), (112, 112, 118), (44, 44, 48), (188, 188, 184)]


@dataclass
class Photo:
    """One generated photo: its encoded file, the digits written on it and what was done to it."""

    data: bytes  # the encoded file (JPEG or PNG)
    format: str
    labels: tuple[int, ...]  # the digits, left to right (MNIST labels)
    boxes: list[tuple[int, int, int, int]]  # each digit's ink box in the photo: x, y, width, height
    size: tuple[int, int]  # width, height
    conditions: dict = field(default_factory=dict)

    @property
    def number(self) -> str:
        return "".join(map(str, self.labels))


def photos(mnist_test, count: int, seed: int, digits: tuple[int, int] = (1, 1), touching: bool = False,
           large_every: int = 0, size: tuple[int, int] | None = None) -> Iterator[Photo]:
    """`count` photos of numbers of digits[0]..digits[1] digits (1, 1: single digits), deterministic by seed.

    Every `large_every`-th photo (0: none) is 9-12 MP; the others are 200-1,600 px on the long side, unless
    `size` (width, height) fixes it for all (the benchmarks' 12 MP and 1 MP photos)."""
    rng = np.random.default_rng(seed)
    images, labels = mnist_test.images.numpy(), mnist_test.labels.numpy()
    for n in range(count):
        large = bool(large_every) and n % large_every == large_every - 1
        k = int(rng.integers(digits[0], digits[1] + 1))
        index = rng.choice(len(images), size=k, replace=False)
        photo = make_photo(rng, [images[i] for i in index], [int(labels[i]) for i in index], large, touching, size)
        photo.conditions["mnist_test_index"] = [int(i) for i in index]
        yield photo


def make_photo(rng: np.random.Generator, digits: list[np.ndarray], labels: list[int], large: bool = False,
               touching: bool = False, size: tuple[int, int] | None = None) -> Photo:
    """A photo of `digits` (28x28 uint8 MNIST images, ink bright) written in a row on a notebook page, of the
    given `size` (width, height; default: drawn, 9-12 MP when `large`)."""
    width, height = size or _frame_size(rng, large)
    c: dict = {"size": f"{width}x{height}", "digits": len(digits)}
    patch, pieces = _number_patch(rng, digits, touching, c)
    geometry = None
    while geometry is None:
        for _ in range(1000):  # a draw that does not fit (off the frame, on the table) is drawn again
            geometry = _geometry(rng, width, height, patch.shape, c)
            if geometry is not None:
                break
        else:  # a long number in a tiny frame never fits (16 px digits): a larger frame
            width, height = _frame_size(rng, large)
            c["size"] = f"{width}x{height}"
    rgb = _paper(rng, width, height, geometry, c)
    ink_alpha = cv2.warpPerspective(patch, geometry.number, (width, height), flags=cv2.INTER_LINEAR)
    ink = np.array(INKS[c.setdefault("ink", str(rng.choice(list(INKS))))], np.float32) / 255
    rgb *= 1 - ink_alpha[..., None] * (1 - ink)  # ink multiplies into the paper and the lines under it
    del ink_alpha
    _specks(rng, rgb, c)
    _table(rng, rgb, geometry.tables, c)
    _light(rng, rgb, c)
    image = _camera(rng, rgb, c)
    boxes = [_warp_box(geometry.number, box) for box in pieces]
    data, fmt = _encode(rng, image, c)
    return Photo(data, fmt, tuple(labels), boxes, (width, height), c)


# --- the number, in page coordinates -------------------------------------------------------------------------

UNIT = 8  # patch pixels per MNIST pixel: smooth pen edges; the warp into the photo resamples again


def _ink_box(digit: np.ndarray) -> tuple[int, int, int, int]:
    """left, top, right, bottom of the MNIST digit's ink (grey level > 25); MNIST's 20x20 box for a digit of no
    ink (tests draw an empty page with one: its lines, light, table and specks only)."""
    rows, cols = np.flatnonzero((digit > 25).any(1)), np.flatnonzero((digit > 25).any(0))
    if not len(rows):
        return 4, 4, 24, 24
    return int(cols[0]), int(rows[0]), int(cols[-1] + 1), int(rows[-1] + 1)


def _number_patch(rng: np.random.Generator, digits: list[np.ndarray], touching: bool,
                  c: dict) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """Ink opacity (0..1) of the digits side by side, UNIT patch pixels per MNIST pixel, and each digit's box."""
    placed, boxes, x = [], [], 0.0
    for n, digit in enumerate(digits):
        scale = UNIT * rng.uniform(0.92, 1.08)  # handwriting varies in size from digit to digit
        big = cv2.resize(digit.astype(np.float32) / 255, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        left, top, right, bottom = (v * scale for v in _ink_box(digit))
        if n:
            x += (rng.uniform(-0.10, 0.0) if touching else rng.uniform(0.10, 0.40)) * 20 * UNIT
        ink_top = -(bottom - top) / 2 + rng.normal(0, 0.05) * 20 * UNIT  # a written row wanders up and down
        placed.append((big, ink_top - top, x - left))
        boxes.append((x, ink_top, right - left, bottom - top))
        x += right - left
    r_min = min(r for _, r, _ in placed)
    c_min = min(col for _, _, col in placed)
    height = int(math.ceil(max(r + b.shape[0] for b, r, _ in placed) - r_min)) + 1
    width = int(math.ceil(max(col + b.shape[1] for b, _, col in placed) - c_min)) + 1
    density = np.zeros((height, width), np.float32)
    for big, r, col in placed:
        r0, c0 = int(round(r - r_min)), int(round(col - c_min))
        region = density[r0:r0 + big.shape[0], c0:c0 + big.shape[1]]
        np.maximum(region, big[:region.shape[0], :region.shape[1]], out=region)
    # The pen: the upscaled MNIST stroke becomes ink above `level` of its own local peak (a thin pen: a high
    # level; relative to the peak, so that a faint, thin MNIST stroke still makes one unbroken line), with a
    # soft edge as a ballpoint line has at phone resolution; the grey level inside is the pressure.
    level = float(rng.uniform(0.15, 0.7))
    c["pen"] = "thin" if level > 0.5 else "thick" if level < 0.3 else "medium"
    peak = cv2.dilate(density, np.ones((3 * UNIT, 3 * UNIT), np.uint8))
    cover = np.clip((density / np.maximum(peak, 0.35) - level) / 0.08 + 0.5, 0, 1)
    alpha = (cover * (0.55 + 0.45 * density) * rng.uniform(0.8, 1.0)).astype(np.float32)
    return alpha, [(bx - c_min, by - r_min, bw, bh) for bx, by, bw, bh in boxes]


# --- where the page, the number and the table go in the photo ------------------------------------------------

def _frame_size(rng: np.random.Generator, large: bool) -> tuple[int, int]:
    long_side = rng.uniform(3400, 4000) if large else math.exp(rng.uniform(math.log(200), math.log(1600)))
    aspect = float(rng.choice([4 / 3, 3 / 2, 16 / 9, 1.0]))
    width, height = long_side, long_side / aspect
    if rng.random() < 0.5:
        width, height = height, width
    return int(round(width)), int(round(height))


def _page(rng: np.random.Generator, width: int, height: int, c: dict) -> np.ndarray:
    """Page -> photo homography: a rotation up to 12 degrees and a perspective tilt, about the frame's centre."""
    angle = float(rng.uniform(-12, 12))
    tilt = rng.uniform(-0.22, 0.22, size=2) / max(width, height)
    c["rotation"], c["tilt"] = round(angle, 1), round(float(np.abs(tilt).max() * max(width, height)), 2)
    rotate = np.eye(3)
    rotate[:2] = cv2.getRotationMatrix2D((0, 0), angle, 1.0)
    perspective = np.array([[1, 0, 0], [0, 1, 0], [tilt[0], tilt[1], 1]])
    centre = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1]])
    return centre @ perspective @ rotate


@dataclass
class _Geometry:
    page: np.ndarray  # page -> photo
    number: np.ndarray  # number patch -> photo
    tables: list[tuple[int, float, float]]  # (frame corner, cut along x, cut along y)
    digit_height: float  # px in the photo


def _geometry(rng: np.random.Generator, width: int, height: int, patch_shape: tuple[int, ...],
              c: dict) -> _Geometry | None:
    """Where everything goes, or None when this draw does not fit (the caller draws again)."""
    page = _page(rng, width, height, c)
    fraction = float(rng.uniform(0.05, 0.30))
    if fraction * height < MIN_DIGIT_PX:
        fraction = float(rng.uniform(MIN_DIGIT_PX / height, max(0.30, MIN_DIGIT_PX / height)))
    scale = fraction * height / (20 * UNIT)  # MNIST's digits are 20 px tall in their 28 px frame
    ph, pw = patch_shape
    if pw * scale > 0.85 * width or ph * scale > 0.85 * height:
        return None
    u, v, w = np.linalg.inv(page) @ np.array([rng.uniform(0, width), rng.uniform(0, height), 1.0])
    place = np.array([[scale, 0, u / w - pw * scale / 2], [0, scale, v / w - ph * scale / 2], [0, 0, 1]])
    number = page @ place
    corners = _warp_points(number, [(0, 0), (pw, 0), (pw, ph), (0, ph)])
    margin = 0.03 * min(width, height)
    if corners[:, 0].min() < margin or corners[:, 1].min() < margin or corners[:, 0].max() > width - margin \
            or corners[:, 1].max() > height - margin:
        return None
    tables = _table_corners(rng, width, height)
    if any(_edge_distance(corners[:, 0], corners[:, 1], t, width, height).min() < 0.4 * fraction * height + margin
           for t in tables):
        return None  # people do not write across the page's edge
    c["digit_fraction"], c["table_corners"] = round(fraction, 3), len(tables)
    return _Geometry(page, number, tables, fraction * height)


def _warp_points(homography: np.ndarray, points) -> np.ndarray:
    return cv2.perspectiveTransform(np.array([points], np.float64), homography)[0]


def _table_corners(rng: np.random.Generator, width: int, height: int) -> list[tuple[int, float, float]]:
    """0-2 frame corners (0 top-left, 1 top-right, 2 bottom-right, 3 bottom-left) cut off by the page's edge."""
    count = int(rng.choice([0, 1, 2], p=[0.35, 0.4, 0.25]))
    return [(int(k), float(rng.uniform(0.08, 0.45)) * width, float(rng.uniform(0.08, 0.45)) * height)
            for k in rng.choice(4, size=count, replace=False)]


def _edge_distance(x, y, table: tuple[int, float, float], width: int, height: int):
    """Distance (px) from the page's edge line that cuts the corner off; negative on the table."""
    corner, a, b = table
    xs = x if corner in (0, 3) else width - x
    ys = y if corner in (0, 1) else height - y
    return (xs / a + ys / b - 1) / math.hypot(1 / a, 1 / b)


def _warp_box(homography: np.ndarray, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    x, y, w, h = box
    corners = _warp_points(homography, [(x, y), (x + w, y), (x + w, y + h), (x, y + h)])
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


# --- drawing ---------------------------------------------------------------------------------------------------

def _paper(rng: np.random.Generator, width: int, height: int, g: _Geometry, c: dict) -> np.ndarray:
    """White or off-white paper, float32 RGB 0..1, plain, ruled or squared (lines in page coordinates)."""
    white = rng.uniform(232, 252)
    warm = rng.uniform(0, 1) < 0.4  # off-white: a yellowish page
    paper = np.array([white, white - warm * rng.uniform(2, 8), white - warm * rng.uniform(8, 22)], np.float32)
    rgb = np.empty((height, width, 3), np.float32)
    rgb[:] = paper / 255
    kind = str(rng.choice(["plain", "ruled", "squared"], p=[0.2, 0.4, 0.4]))
    c["paper"] = kind + (" off-white" if warm else "")
    if kind == "plain":
        return rgb
    spacing = g.digit_height * (rng.uniform(0.9, 1.5) if kind == "ruled" else rng.uniform(0.55, 1.0))
    half = max(0.35, spacing * rng.uniform(0.008, 0.018))
    offset = rng.uniform(0, spacing)
    inverse = np.linalg.inv(g.page).astype(np.float32)
    x = np.arange(width, dtype=np.float32)[None, :]
    y = np.arange(height, dtype=np.float32)[:, None]
    w = inverse[2, 0] * x + inverse[2, 1] * y + inverse[2, 2]
    alpha = _ruling((inverse[1, 0] * x + inverse[1, 1] * y + inverse[1, 2]) / w, spacing, half, offset)
    if kind == "squared":
        np.maximum(alpha, _ruling((inverse[0, 0] * x + inverse[0, 1] * y + inverse[0, 2]) / w, spacing, half,
                                  offset), out=alpha)
    if rng.random() < 0.5:
        colour = np.array([rng.uniform(120, 170), rng.uniform(160, 200), rng.uniform(215, 245)], np.float32)
    else:
        colour = np.full(3, rng.uniform(150, 195), np.float32)
    alpha *= rng.uniform(0.45, 0.85)
    rgb *= 1 - alpha[..., None] * (1 - colour / 255)
    return rgb


def _ruling(coordinate: np.ndarray, spacing: float, half: float, offset: float) -> np.ndarray:
    """Opacity of lines every `spacing` page units, `2 * half` wide, antialiased over one pixel."""
    r = np.mod(coordinate - offset, spacing)
    distance = np.minimum(r, spacing - r)
    return np.clip(half + 0.5 - distance, 0, 1).astype(np.float32)


def _specks(rng: np.random.Generator, rgb: np.ndarray, c: dict) -> None:
    """Dirt: small dark dots anywhere, the digit included."""
    height, width = rgb.shape[:2]
    count = int(rng.poisson(rng.uniform(0, 20)))
    c["specks"] = count
    alpha = np.zeros((height, width), np.float32)
    size = max(1.0, min(width, height) / 500)
    for _ in range(count):
        centre = (int(rng.uniform(0, width) * 4), int(rng.uniform(0, height) * 4))
        radius = int(rng.uniform(0.6, 2.2) * size * 4)
        cv2.circle(alpha, centre, radius, float(rng.uniform(0.3, 0.85)), -1, cv2.LINE_AA, shift=2)
    rgb *= 1 - alpha[..., None] * 0.9


def _table(rng: np.random.Generator, rgb: np.ndarray, tables: list[tuple[int, float, float]], c: dict) -> None:
    """The table beyond the page's edge, in the corners: wood or a plain desk, with the page's shadow on it."""
    height, width = rgb.shape[:2]
    for table in tables:
        corner, a, b = table
        x0, x1 = (0, int(a) + 2) if corner in (0, 3) else (int(width - a) - 2, width)
        y0, y1 = (0, int(b) + 2) if corner in (0, 1) else (int(height - b) - 2, height)
        x0, y0 = max(x0, 0), max(y0, 0)
        x = np.arange(x0, x1, dtype=np.float32)[None, :]
        y = np.arange(y0, y1, dtype=np.float32)[:, None]
        distance = _edge_distance(x, y, table, width, height)
        cover = np.clip(0.5 - distance, 0, 1)
        base = np.array(TABLES[int(rng.integers(len(TABLES)))], np.float32) / 255
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 30) * max(1.0, min(width, height) / 500)
        phase = (x * math.cos(angle) + y * math.sin(angle)) / period
        grain = 1 + 0.06 * np.sin(phase + 0.8 * np.sin(phase / 7))
        shadow = 1 - 0.35 * np.exp(np.minimum(distance, 0) / (0.01 * min(width, height) + 1))
        texture = (base * (grain * shadow)[..., None]).astype(np.float32)
        region = rgb[y0:y1, x0:x1]
        region += cover[..., None] * (texture - region)
    c["table"] = bool(tables)


def _light(rng: np.random.Generator, rgb: np.ndarray, c: dict) -> None:
    """Uneven light: a gradient (one side 30-45 % darker), a vignette and sometimes the phone's soft shadow."""
    height, width = rgb.shape[:2]
    small_w, small_h = max(2, width // 8), max(2, height // 8)  # light varies slowly: compute it small
    x = np.linspace(0, 1, small_w, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, small_h, dtype=np.float32)[:, None]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = x * math.cos(angle) + y * math.sin(angle)
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    depth = rng.uniform(0.30, 0.45) if rng.random() < 0.8 else rng.uniform(0, 0.1)
    vignette = rng.uniform(0, 0.35) if rng.random() < 0.6 else 0.0
    light = (1 - depth * ramp) * (1 - vignette * ((x - 0.5) ** 2 + (y - 0.5) ** 2) * 2)
    if rng.random() < 0.3:
        cx, cy, sx, sy = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.15, 0.4), rng.uniform(0.15, 0.4)
        light *= 1 - rng.uniform(0.1, 0.25) * np.exp(-((x - cx) / sx) ** 2 - ((y - cy) / sy) ** 2)
        c["shadow"] = True
    c["gradient"], c["vignette"] = round(float(depth), 2), round(float(vignette), 2)
    rgb *= cv2.resize(light.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)[..., None]


def _camera(rng: np.random.Generator, rgb: np.ndarray, c: dict) -> Image.Image:
    """Mild blur and sensor noise, quantised to 8 bits."""
    height, width = rgb.shape[:2]
    sigma = rng.uniform(0.3, 1.1) * max(1.0, max(width, height) / 1000) if rng.random() < 0.7 else 0.0
    if sigma:
        cv2.GaussianBlur(rgb, (0, 0), sigma, dst=rgb)
    noise = rng.uniform(1, 4)
    c["blur"], c["noise"] = round(float(sigma), 2), round(float(noise), 1)
    rgb *= 255
    rgb += rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(noise)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _encode(rng: np.random.Generator, image: Image.Image, c: dict) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if rng.random() < 0.9:
        quality = int(rng.integers(60, 96))
        image.save(buffer, format="JPEG", quality=quality)
        c["format"] = f"JPEG {quality}"
        return buffer.getvalue(), "JPEG"
    image.save(buffer, format="PNG", compress_level=1)
    c["format"] = "PNG"
    return buffer.getvalue(), "PNG"
