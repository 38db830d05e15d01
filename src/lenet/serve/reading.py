"""What a worker thread does for one request: decode an upload, read the digit (or, for a photo, every
digit of the number written on it), and, when asked, show the 28x28 inputs and the first feature maps. Runs
on the pool, never on the event loop."""

from __future__ import annotations

import base64
from typing import Any

import torch
from torch import nn

from ..errors import ImageError
from ..inference import SIDE, probabilities, to_input
from ..models import feature_maps
from ..predict import open_image, preprocess, read_number
from .http_errors import ApiError


def decode_upload(data: bytes, max_pixels: int) -> torch.Tensor:
    """An uploaded image file as uint8 (1, 28, 28): the same decoding and preprocessing as `lenet predict`."""
    return torch.as_tensor(preprocess(open_image(data, max_pixels=max_pixels))).to(torch.uint8).reshape(1, SIDE, SIDE)


def read_digit(model: nn.Module, images: torch.Tensor, name: str, details: bool) -> dict[str, Any]:
    """The answer to POST /api/predict for uint8 `images` (1, 28, 28), ink bright."""
    probs = probabilities(model, images)[0]
    out: dict[str, Any] = {"prediction": int(probs.argmax()),
                           "probabilities": [round(float(p), 6) for p in probs], "model": name}
    if details:
        out["input"] = images[0].reshape(-1).tolist()
        out["feature_maps"] = first_feature_maps(model, images)
    return out


def read_photo(model: nn.Module, data: bytes, max_pixels: int, name: str, details: bool) -> dict[str, Any]:
    """The answer to POST /api/read for an uploaded image file: `lenet predict --number --json`'s fields
    (less "path") plus the network's name and the decoded image's size, which the boxes are in.

    ImageError from decoding (not an image, corrupt, too many pixels) reaches the client as 400; a photo
    decoded fine in which no digit is found is answered 422 (the upload was valid, its content is not)."""
    image = open_image(data, max_pixels=max_pixels)
    try:
        reading = read_number(model, image)
    except ImageError as e:
        raise ApiError(422, f"no digits found in the photo: {e}") from None
    out = reading.to_dict()
    for entry, digit in zip(out["digits"], reading.digits, strict=True):
        entry["probabilities"] = [round(float(p), 6) for p in entry["probabilities"]]
        if details:
            entry["input"] = digit.image.reshape(-1).tolist()
    width, height = image.size
    return {**out, "model": name, "width": width, "height": height}


def first_feature_maps(model: nn.Module, images: torch.Tensor, layers: int = 2) -> list[dict[str, Any]]:
    """The maps of the first `layers` convolution stages, as bytes for the page to paint.

    One entry per stage: the first map-shaped output of each new channel count (seed: conv1 6x24x24 and
    conv2 16x8x8; the paper's network: c1 and c3), since the pooling layer after a convolution shows the
    same maps at half the size. A committee shows its first member's maps (its members all see the same input)."""
    if isinstance(getattr(model, "members", None), nn.ModuleList):
        model = model.members[0]
    x = to_input(images)
    with torch.inference_mode():
        maps = feature_maps(model, x)
    chosen = []
    # Starting from the input's channel count skips an "input" entry (the paper's net shows its 32x32 padding).
    widths = {x.shape[1]}
    for layer, value in maps.items():
        if value.dim() != 4 or value.shape[1] in widths:
            continue
        widths.add(value.shape[1])
        chosen.append(_painted(layer, value[0]))
        if len(chosen) == layers:
            break
    return chosen


def _painted(layer: str, maps: torch.Tensor) -> dict[str, Any]:
    """One layer's maps (C, H, W) scaled together to bytes 0-255 with the layer's min and max."""
    a = maps.detach().float().cpu()
    lo, hi = float(a.min()), float(a.max())
    scaled = ((a - lo) / (hi - lo) * 255) if hi > lo else torch.zeros_like(a)
    data = scaled.round().clamp(0, 255).to(torch.uint8).contiguous().numpy().tobytes()
    return {"layer": layer, "channels": a.shape[0], "height": a.shape[1], "width": a.shape[2],
            "data": base64.b64encode(data).decode("ascii")}
