"""The few OpenCV calls lenet.predict makes, done with scikit-image and SciPy instead: the same pipeline on
the other library, so that benchmarks/preprocess_bench.py --skimage can measure both (accuracy and ms per
photo) and the choice between them rests on numbers (benchmarks/README.md, "Photo preprocessing").

Each function keeps OpenCV's signature and conventions (dsize is (width, height); Hough lines are
(rho, theta) with x cos(theta) + y sin(theta) = rho; stats rows are x, y, width, height, area)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import draw, measure, morphology, transform

INTER_NEAREST, INTER_LINEAR, INTER_AREA = 0, 1, 3
MORPH_OPEN, MORPH_CLOSE, MORPH_GRADIENT = 2, 3, 4
MORPH_ELLIPSE = 2
BORDER_REPLICATE = 1


def setNumThreads(n: int) -> None:  # noqa: N802 - OpenCV's name
    """scikit-image and SciPy's filters run on one thread anyway."""


def resize(src: np.ndarray, dsize: tuple[int, int], fx=None, fy=None, interpolation: int = INTER_LINEAR):
    width, height = dsize
    order = 0 if interpolation == INTER_NEAREST else 1
    out = transform.resize(src, (height, width), order=order, anti_aliasing=interpolation == INTER_AREA,
                           preserve_range=True, mode="edge")
    return out.astype(src.dtype)


def getStructuringElement(shape: int, size: tuple[int, int]) -> np.ndarray:  # noqa: N802
    return morphology.disk(size[0] // 2).astype(np.uint8)


def dilate(src: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return ndimage.grey_dilation(src, footprint=kernel.astype(bool), mode="nearest")


def morphologyEx(src: np.ndarray, op: int, kernel: np.ndarray, borderType: int = 0) -> np.ndarray:  # noqa: N802, N803
    footprint = kernel.astype(bool)
    if op == MORPH_CLOSE:
        return ndimage.grey_closing(src, footprint=footprint, mode="nearest")
    if op == MORPH_OPEN:
        return ndimage.grey_opening(src, footprint=footprint, mode="nearest")
    if op == MORPH_GRADIENT:
        return ndimage.grey_dilation(src, footprint=footprint, mode="nearest") - \
            ndimage.grey_erosion(src, footprint=footprint, mode="nearest")
    raise ValueError(f"operation {op} is not used by lenet.predict")


def HoughLines(image, rho, theta, threshold, min_theta=0.0, max_theta=np.pi):  # noqa: N802
    angles = np.arange(min_theta, max_theta, theta)
    if not len(angles) or not image.any():
        return None
    accumulator, found_angles, distances = transform.hough_line(image.astype(bool), theta=angles)
    _, peak_angles, peak_distances = transform.hough_line_peaks(
        accumulator, found_angles, distances, min_distance=1, min_angle=1, threshold=threshold, num_peaks=np.inf)
    if not len(peak_angles):
        return None
    return np.stack([peak_distances, peak_angles], 1)[:, None, :].astype(np.float32)


def connectedComponentsWithStats(mask: np.ndarray, connectivity: int = 8):  # noqa: N802
    labels = measure.label(mask > 0, connectivity=2 if connectivity == 8 else 1).astype(np.int32)
    count = int(labels.max()) + 1
    stats = np.zeros((count, 5), np.int32)
    stats[0] = (0, 0, mask.shape[1], mask.shape[0], int((labels == 0).sum()))
    areas = np.bincount(labels.ravel(), minlength=count)
    for n, found in enumerate(ndimage.find_objects(labels), start=1):
        rows, cols = found
        stats[n] = (cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start, areas[n])
    return count, labels, stats, None


def line(img: np.ndarray, pt1, pt2, color, thickness: int = 1) -> np.ndarray:
    (x0, y0), (x1, y1) = pt1, pt2
    length = max(np.hypot(x1 - x0, y1 - y0), 1e-9)
    nx, ny = -(y1 - y0) / length * thickness / 2, (x1 - x0) / length * thickness / 2
    rows, cols = draw.polygon([y0 + ny, y1 + ny, y1 - ny, y0 - ny], [x0 + nx, x1 + nx, x1 - nx, x0 - nx],
                              shape=img.shape)
    img[rows, cols] = color
    return img
