"""The README's before/after figure for photos: a generated notebook photo of a real MNIST test digit, the
28x28 the previous preprocessing made of it, and the one `lenet.predict` makes now, each with what the
shipped `seed` network read.

    python scripts/make_photo_figure.py [--out docs/photo-before-after.png] [--seed 7] [--count 4]

Needs the viz extra (matplotlib). The photos come from tests/photo_generator.py, the previous pipeline is the
frozen copy in benchmarks/_predict_before.py."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _previous_28x28(data: bytes):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _predict_before

    from lenet.errors import ImageError

    try:
        return _predict_before.preprocess(_predict_before.open_image(data))
    except ImageError:
        return None


def _panels(count: int, seed: int) -> list[dict]:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from photo_generator import photos

    from lenet.data import load_dataset
    from lenet.inference import probabilities
    from lenet.predict import open_image, preprocess
    from lenet.weights import load_network

    model = load_network("seed")
    panels = []
    for photo in photos(load_dataset("mnist").test, count, seed):
        old, new = _previous_28x28(photo.data), preprocess(open_image(photo.data))
        read = [None if img is None else int(probabilities(model, img[None].to(torch.uint8)).argmax())
                for img in (old, new)]
        panels.append({"photo": photo, "old": old, "new": new, "read": read})
    return panels


def draw(panels: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(len(panels), 3, figsize=(7.5, 2.4 * len(panels)), layout="constrained",
                             gridspec_kw={"width_ratios": [2.2, 1, 1]})
    for row, panel in zip(axes, panels, strict=True):
        photo = panel["photo"]
        row[0].imshow(Image.open(io.BytesIO(photo.data)).convert("RGB"))
        row[0].set_title(f"photo, {photo.size[0]}x{photo.size[1]} (digit {photo.number})", fontsize=9)
        for ax, key, read, name in ((row[1], "old", panel["read"][0], "before"),
                                    (row[2], "new", panel["read"][1], "now")):
            image = panel[key]
            if image is None:
                ax.text(0.5, 0.5, "no digit found", ha="center", va="center", fontsize=9)
            else:
                ax.imshow(image.numpy(), cmap="gray", vmin=0, vmax=255)
            verdict = "-" if read is None else ("right" if str(read) == photo.number else "wrong")
            ax.set_title(f"{name}: reads {read} ({verdict})", fontsize=9)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("what the network sees: a notebook photo, the previous 28x28, today's", fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "photo-before-after.png")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--count", type=int, default=4)
    args = parser.parse_args(argv)
    draw(_panels(args.count, args.seed), args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
