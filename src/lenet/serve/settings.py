"""The limits one server runs under, checked once when the app is made."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from ..errors import ConfigError

# A drawing from the page is a ~5 KB PNG and a phone photo a few MB; 8 MiB leaves room for both.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# Checked from the image header before decoding, so a tiny "decompression bomb" PNG costs nothing.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
# Requests admitted at once (running + waiting for a worker); more get 503 instead of an ever-growing queue.
DEFAULT_MAX_PENDING = 64


@dataclass(frozen=True)
class Settings:
    workers: int = DEFAULT_WORKERS
    max_pending: int = DEFAULT_MAX_PENDING
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    # Host header values to accept; empty accepts any (see middleware.HostCheckMiddleware).
    allowed_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name != "allowed_hosts" and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{field.name} must be a positive whole number, got {value!r}")
