"""The names of the trained weights shipped with lenet, read from the folder that holds them. Imports no torch
and no numpy: `lenet eval --help` lists them (lenet.weights loads them).

    networks()     registered networks with shipped weights, NAME.safetensors ("seed", "classic", "modern")
    committees()   shipped committees, folders NAME/ holding a committee.json ("modern-committee")
"""

from __future__ import annotations

from pathlib import Path

from .models import list_models

WEIGHTS_DIR = Path(__file__).parent / "models" / "weights"
MANIFEST_NAME = "committee.json"  # a committee folder's manifest (lenet.committee)


def networks(folder: Path | None = None) -> list[str]:
    """The registered networks that have weights in `folder` (default WEIGHTS_DIR), in registration order."""
    folder = WEIGHTS_DIR if folder is None else folder
    return [name for name in list_models() if (folder / f"{name}.safetensors").is_file()]


def committees(folder: Path | None = None) -> list[str]:
    """The committees in `folder` (default WEIGHTS_DIR): its subfolders that hold a committee.json. A network's
    name is never one (networks come first)."""
    folder = WEIGHTS_DIR if folder is None else folder
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / MANIFEST_NAME).is_file() and p.name not in list_models())
