"""`lenet predict` and the preprocessing it shares with `lenet serve`."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import lenet
from lenet import inference
from lenet.cli import main
from lenet.errors import ImageError
from lenet.predict import DEFAULT_MAX_PIXELS, open_image, preprocess


def render(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A real MNIST digit the way a user photographs or scans one: 200-600 px, dark ink on a light page
    (random shades), the digit anywhere with margins of any size, sometimes sensor noise, grey or RGB."""
    width, height = (int(v) for v in rng.integers(200, 601, size=2))
    side = int(rng.uniform(0.3, 0.85) * min(width, height))  # the whole 28x28 field, scaled up
    scaled = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
    ink = np.asarray(scaled, dtype=np.float32) / 255
    paper, pen = rng.uniform(190, 255), rng.uniform(0, 90)
    canvas = np.full((height, width), paper, dtype=np.float32)
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    canvas[top:top + side, left:left + side] = paper - (paper - pen) * np.clip(ink, 0, 1)
    if rng.random() < 0.3:
        canvas += rng.normal(0, rng.uniform(2, 8), size=(height, width)).astype(np.float32)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    return image.convert("RGB") if rng.random() < 0.5 else image


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _digit_png(digit: np.ndarray, invert: bool = True, scale: int = 10) -> bytes:
    image = Image.fromarray(255 - digit if invert else digit).resize((28 * scale, 28 * scale))
    return _encode(image, "PNG")


def _run_json(args: list[str], capsys) -> tuple[int, list[dict]]:
    code = main(["predict", *args, "--json"])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines()]


# --- right after install, >= 99.5% on 1,000 rendered test digits (99.7% before the photo pipeline, 99.8%
# with it) ------------------------------------------------------------------------------------------------------

def test_pretrained_seed_reads_1000_rendered_test_digits(mnist, tmp_path, capsys):
    rng = np.random.default_rng(2026)
    indices = rng.choice(len(mnist.test), size=1000, replace=False)
    expected = {}
    for n, index in enumerate(indices.tolist()):
        image = render(mnist.test.images[index].numpy(), rng)
        if n % 2:
            path = tmp_path / f"{n:04d}.jpg"
            path.write_bytes(_encode(image, "JPEG", quality=int(rng.integers(60, 96))))
        else:
            path = tmp_path / f"{n:04d}.png"
            path.write_bytes(_encode(image, "PNG", compress_level=1))
        expected[str(path)] = int(mnist.test.labels[index])

    code, results = _run_json([str(tmp_path)], capsys)  # a folder; no --model, no --checkpoint
    assert code == 0
    assert len(results) == 1000 and all("error" not in r for r in results)
    correct = {fmt: [r["prediction"] == expected[r["path"]] for r in results if r["path"].endswith(fmt)]
               for fmt in (".png", ".jpg")}
    accuracy = sum(map(sum, correct.values())) / 10
    print(f"rendered digits: {accuracy:.1f}% correct (PNG {np.mean(correct['.png']):.1%}, "
          f"JPEG {np.mean(correct['.jpg']):.1%})")
    assert accuracy >= 99.5
    assert all(len(r["probabilities"]) == 10 and abs(sum(r["probabilities"]) - 1) < 1e-4 for r in results)


# --- preprocessing --------------------------------------------------------------------------------------------

def test_preprocess_gives_an_mnist_style_digit(mnist):
    digit = mnist.test.images[0].numpy()
    out = preprocess(open_image(_digit_png(digit)))
    assert out.dtype == torch.uint8 and out.shape == (28, 28) and int(out.max()) == 255
    rows, cols = torch.nonzero(out > 0, as_tuple=True)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 <= 22  # 20 px box, plus soft edges
    mass = out.double()
    com_row = float((mass.sum(1) * torch.arange(28)).sum() / mass.sum())
    com_col = float((mass.sum(0) * torch.arange(28)).sum() / mass.sum())
    assert abs(com_row - 14) <= 0.6 and abs(com_col - 14) <= 0.6
    # close to the original MNIST image it was rendered from
    assert (out.float() - mnist.test.images[0].float()).abs().mean() < 20


def test_polarity_is_detected(mnist):
    digit = mnist.test.images[1].numpy()
    dark_on_light = preprocess(open_image(_digit_png(digit, invert=True)))
    light_on_dark = preprocess(open_image(_digit_png(digit, invert=False)))
    assert (dark_on_light.int() - light_on_dark.int()).abs().max() <= 2


@pytest.mark.parametrize("stroke", [0, 255])
def test_transparent_background_is_composited_against_the_strokes(mnist, stroke):
    digit = mnist.test.images[2].numpy()
    alpha = Image.fromarray(digit).resize((200, 200))
    rgba = Image.new("RGBA", (200, 200), (stroke, stroke, stroke, 0))
    rgba.putalpha(alpha)
    out = preprocess(open_image(_encode(rgba, "PNG")))
    reference = preprocess(open_image(_digit_png(digit, scale=200 // 28 + 1)))
    assert (out.float() - reference.float()).abs().mean() < 12


@pytest.mark.parametrize("fmt, mode", [("PNG", "I;16"), ("PNG", "LA"), ("PNG", "1"), ("GIF", "P"), ("BMP", "RGB"),
                                       ("WEBP", "RGB"), ("JPEG", "CMYK"), ("PNG", "P")])
def test_every_format_and_mode_predicts(mnist, fmt, mode):
    model = lenet.load("seed")
    digit = 255 - mnist.test.images[3].numpy()  # a 0, dark on white
    image = Image.fromarray(digit).resize((140, 140))
    if mode == "I;16":
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) * 257).astype(np.uint16))
    else:
        image = image.convert(mode)
    opened = open_image(_encode(image, fmt))
    assert opened.format == fmt
    probabilities = inference.probabilities(model, preprocess(opened)[None])
    assert int(probabilities.argmax()) == int(mnist.test.labels[3])


def test_an_animated_gif_uses_its_first_frame(mnist):
    first = Image.fromarray(255 - mnist.test.images[0].numpy()).resize((112, 112))
    second = Image.new("L", (112, 112), 255)
    buffer = io.BytesIO()
    first.save(buffer, format="GIF", save_all=True, append_images=[second])
    digit = preprocess(open_image(buffer.getvalue()))[None]
    assert int(inference.probabilities(lenet.load("seed"), digit).argmax()) == 7


def test_small_specks_of_noise_are_ignored(mnist):
    rng = np.random.default_rng(0)
    page = np.asarray(Image.fromarray(255 - mnist.test.images[4].numpy()).resize((300, 300)), dtype=np.uint8).copy()
    clean = preprocess(open_image(_encode(Image.fromarray(page), "PNG")))
    # isolated dark pixels far outside the digit would stretch the bounding box if they were kept
    for r, c in zip(rng.integers(0, 300, 150), rng.integers(0, 300, 150), strict=True):
        page[r, c] = 0
    noisy = preprocess(open_image(_encode(Image.fromarray(page), "PNG")))
    assert (noisy.float() - clean.float()).abs().mean() < 3


def test_probabilities_of_mnist_style_images(mnist):
    probabilities = inference.probabilities(lenet.load("seed"), mnist.test.images[:64])
    assert probabilities.shape == (64, 10) and probabilities.dtype == torch.float32
    assert torch.allclose(probabilities.sum(1), torch.ones(64), atol=1e-5)
    assert (probabilities.argmax(1) == mnist.test.labels[:64]).float().mean() > 0.95
    with pytest.raises(ValueError, match="uint8"):
        inference.probabilities(lenet.load("seed"), mnist.test.images[:2].float())


# --- bad input: clear per-file errors, the other files still predicted ------------------------------------------

def _png_with_size(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, with almost no data: a decompression bomb's signature."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def test_bad_inputs_get_their_own_errors(mnist, tmp_path, capsys):
    good = tmp_path / "good.png"
    good.write_bytes(_digit_png(mnist.test.images[0].numpy()))
    blank = tmp_path / "blank.png"
    blank.write_bytes(_encode(Image.new("RGB", (300, 200), (250, 250, 250)), "PNG"))
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(_encode(Image.fromarray(255 - mnist.test.images[1].numpy()).resize((300, 300)), "JPEG")[:600])
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_with_size(30_000, 30_000))
    empty = tmp_path / "empty.gif"
    empty.write_bytes(b"")
    tiff = tmp_path / "digit.tiff"
    Image.fromarray(mnist.test.images[0].numpy()).save(tiff)
    empty_dir = tmp_path / "nothing-here"
    empty_dir.mkdir()
    inputs = [good, blank, text, truncated, bomb, empty, tiff, tmp_path / "missing.png", empty_dir,
              tmp_path / "*.webp"]

    code, results = _run_json([str(p) for p in inputs], capsys)
    assert code == 1
    by_path = {r["path"]: r for r in results}
    assert len(results) == len(inputs)
    assert by_path[str(good)]["prediction"] == 7
    expectations = {blank: "no ink", text: "not an image", truncated: "truncated or corrupt",
                    bomb: "decompression bomb", empty: "empty", tiff: "TIFF", tmp_path / "missing.png": "no such file",
                    empty_dir: "holds no", tmp_path / "*.webp": "no files match"}
    for path, words in expectations.items():
        error = by_path[str(path)]["error"]
        assert words in error and str(path) in error, error
        assert "\n" not in error


def test_text_output_and_errors_on_stderr(mnist, tmp_path, capsys):
    good = tmp_path / "seven.png"
    good.write_bytes(_digit_png(mnist.test.images[0].numpy()))
    code = main(["predict", str(good), str(tmp_path / "nope.png"), "--top-k", "3"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out.startswith(f"{good}: 7 (") and captured.out.count("%") == 3
    assert "nope.png: no such file" in captured.err
    assert main(["predict", str(good), "--top-k", "11"]) == 2
    assert "--top-k must be between 1 and 10" in capsys.readouterr().err


def test_globs_folders_and_save_preprocessed(mnist, tmp_path, capsys):
    for i in range(3):
        (tmp_path / f"d{i}.png").write_bytes(_digit_png(mnist.test.images[i].numpy()))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d0.png").write_bytes(_digit_png(mnist.test.images[3].numpy()))
    seen = tmp_path / "seen"
    code, results = _run_json([str(tmp_path / "d*.png"), str(tmp_path / "sub"), "--save-preprocessed", str(seen)],
                              capsys)
    assert code == 0
    assert [r["prediction"] for r in results] == mnist.test.labels[:4].tolist()
    written = sorted(p.name for p in seen.iterdir())
    # same stem twice: numbered, not overwritten; each 28x28 with its debug sheet beside it
    assert written == ["d0-2.debug.png", "d0-2.png", "d0.debug.png", "d0.png", "d1.debug.png", "d1.png",
                       "d2.debug.png", "d2.png"]
    saved = Image.open(seen / "d1.png")
    assert saved.size == (28, 28) and saved.mode == "L"
    assert np.array_equal(np.asarray(saved), preprocess(open_image(tmp_path / "d1.png")).numpy())


def test_save_preprocessed_into_the_inputs_folder_never_replaces_an_input(mnist, tmp_path, capsys):
    originals = {}
    for i, name in enumerate(["d0.png", "d0-2.png", "d1.debug.png"]):
        originals[name] = _digit_png(mnist.test.images[i].numpy())
        (tmp_path / name).write_bytes(originals[name])
    code, results = _run_json([str(tmp_path), "--save-preprocessed", str(tmp_path)], capsys)
    assert code == 0 and len(results) == 3
    assert all((tmp_path / name).read_bytes() == data for name, data in originals.items())
    # d0's own files would replace the input d0.png, and d0-2's the input d0-2.png: both are numbered on
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        *originals, "d0-3.png", "d0-3.debug.png", "d0-2-2.png", "d0-2-2.debug.png", "d1.debug-2.png",
        "d1.debug-2.debug.png"])


def test_open_image_limits_and_messages(tmp_path):
    with pytest.raises(ImageError, match="over the limit of 1,000"):
        open_image(_encode(Image.new("L", (50, 50), 255), "PNG"), max_pixels=1000)
    with pytest.raises(ImageError, match="is a folder"):
        open_image(tmp_path)
    with pytest.raises(ImageError, match="not an image"):
        open_image(b"GIF89a but not really")
    assert DEFAULT_MAX_PIXELS >= 12_000_000  # a phone photo must pass
    with pytest.raises(ImageError, match="no ink"):
        preprocess(Image.new("L", (64, 64), 0))
    with pytest.raises(ImageError, match="transparent"):
        preprocess(Image.new("RGBA", (64, 64), (0, 0, 0, 0)))
