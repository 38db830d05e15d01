"""`lenet serve`'s Photo mode: POST /api/read (a photo of a written number -> each digit, its box, the number)
and the page that shows it, driven by a real headless Chromium that uploads a notebook photo.

The server, its client and the browser settings are test_serve.py's (the real `lenet serve` process on
127.0.0.1 with a 1 MiB body limit). The photos are tests/photo_generator.py's notebook photos of real MNIST
test digits (uneven light, ruled paper, the table in a corner, a turned page, JPEG), of a number chosen here.
Set LENET_SCREENSHOT_DIR to keep the page's screenshot (serve-photo.png; default: pytest's tmp dir).
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import test_serve  # skips this module, as it does itself, where the web packages are missing
from photo_generator import Photo, make_photo
from PIL import Image, ImageDraw, ImageFilter
from test_serve import (
    ANSWERED,
    DIGITS,
    MAX_BODY_MB,
    _file,
    _png,
    assert_refused_and_still_serving,
    corrupt_png,
    draw,
    huge_png,
    save_screenshot,
)

# test_serve.py's fixtures: the real `lenet serve` process on 127.0.0.1 (1 MiB body limit) and its client
server, client = test_serve.server, test_serve.client

httpx = test_serve.httpx

NUMBER = "2026"         # the browser test's photo
LONG_NUMBER = "132865"  # the API tests' photo
# The generator's draw for both photos, picked as the first seed whose "2026" is at least 13 % of the height
# of a photo of at least 800 px (large enough to see in the screenshot): "2026" on squared paper in blue
# ballpoint, the grid crossing the digits, one side 45 % darker, the table in a corner, 1460x973 JPEG;
# "132865" in thick dark grey on a ruled off-white page, in shadow, the table in two corners.
PHOTO_SEED = 10
# The page's CSP forbids eval: waits are functions. The answer to the last photo sent is on the page:
PHOTO_ANSWERED = ("() => document.querySelector('#photo-card').dataset.version !== '0' && "
                  "document.querySelector('#number').dataset.version === "
                  "document.querySelector('#photo-card').dataset.version")


# ----------------------------------------------------------------------------------------------------------
# Photos: photo_generator.py's notebook photos of real MNIST test digits, of a number chosen here


def number_photo(number: str, mnist, seed: int) -> Photo:
    """A notebook photo of `number`: the i-th digit is the i-th MNIST test example of its class; the page,
    light, pen and camera are the generator's draw for `seed`."""
    images, labels = mnist.test.images.numpy(), mnist.test.labels.numpy()
    index = [np.flatnonzero(labels == int(char))[i] for i, char in enumerate(number)]
    return make_photo(np.random.default_rng(seed), [images[i] for i in index], [int(c) for c in number])


def as_noisy_png(data: bytes, noise: float = 3.0) -> bytes:
    """The same photo as a PNG with sensor noise, as some phones save it: several times the JPEG's bytes."""
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    rgb += np.random.default_rng(0).normal(0, noise, rgb.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def blank_page(size: tuple[int, int] = (900, 600)) -> bytes:
    """A photo of a ruled notebook page lit unevenly, with nothing written on it."""
    width, height = size
    page = Image.new("RGB", size, (240, 236, 226))
    lines = ImageDraw.Draw(page)
    for y in range(height // 11, height, height // 11):
        lines.line([(0, y), (width, y)], fill=(150, 172, 212), width=2)
    rgb = np.asarray(page, dtype=np.float32) * np.linspace(1.0, 0.65, width)[None, :, None]
    out = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8)).save(out, format="JPEG", quality=85)
    return out.getvalue()


@pytest.fixture(scope="module")
def photo(mnist) -> Photo:
    return number_photo(NUMBER, mnist, seed=PHOTO_SEED)


@pytest.fixture(scope="module")
def long_photo(mnist) -> Photo:
    return number_photo(LONG_NUMBER, mnist, seed=PHOTO_SEED)


def _upload(photo: Photo) -> dict:
    return _file(photo.data, f"number.{photo.format.lower()}", f"image/{photo.format.lower()}")


def _overlap(a, b) -> float:
    """Intersection over union of two [x, y, width, height] boxes."""
    w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


# ----------------------------------------------------------------------------------------------------------
# API


def test_read_a_photographed_number(client, server, long_photo):
    r = client.post("/api/read", **_upload(long_photo))
    assert r.status_code == 200, r.text
    answer = r.json()
    # `lenet predict --number --json`'s fields (less "path"), the network, and the size the boxes are in
    assert set(answer) == {"number", "digits", "model", "width", "height"}
    assert (answer["width"], answer["height"]) == long_photo.size and answer["model"] == "seed"
    assert len(answer["number"]) == len(answer["digits"]) == len(LONG_NUMBER)
    for digit, char, truth in zip(answer["digits"], answer["number"], long_photo.boxes, strict=True):
        assert set(digit) == {"prediction", "probabilities", "box"}
        assert str(digit["prediction"]) == char and len(digit["probabilities"]) == 10
        assert abs(sum(digit["probabilities"]) - 1) < 1e-3
        # left to right, each box around the ink the generator wrote there
        assert _overlap(digit["box"], truth) > 0.5, (digit["box"], truth)
    if server.pretrained:
        assert answer["number"] == LONG_NUMBER


def test_read_is_the_python_api_and_details_show_what_the_network_saw(client, server, long_photo):
    from lenet.predict import find_digits, open_image

    r = client.post("/api/read?details=true", **_upload(long_photo), data={"model": "seed"})
    assert r.status_code == 200, r.text
    found = find_digits(open_image(long_photo.data))
    assert [d["box"] for d in r.json()["digits"]] == [box.to_list() for box, _ in found]
    # the 28x28 each digit became, in the encoding /api/predict uses for the drawn digit: 784 ints
    assert [d["input"] for d in r.json()["digits"]] == [image.reshape(-1).tolist() for _, image in found]
    if server.pretrained:
        from lenet.predict import read_number
        from lenet.weights import load_network

        expected = read_number(load_network("seed", device="cpu"), open_image(long_photo.data)).to_dict()
        for got, want in zip(r.json()["digits"], expected["digits"], strict=True):
            assert got["prediction"] == want["prediction"]
            assert np.allclose(got["probabilities"], want["probabilities"], atol=1e-6)


BAD_UPLOADS = {
    # name: (request kwargs, expected status, words the error must contain)
    "not an image": (_file(b"hello, this is not a picture", "notes.txt", "text/plain"), 400, "not an image"),
    "empty file": (_file(b"", "empty.jpg", "image/jpeg"), 400, "empty"),
    "empty body": ({"content": b"", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, "empty"),
    "corrupt PNG": (_file(corrupt_png()), 400, "corrupt"),
    "20000x20000 image": (_file(huge_png()), 400, "pixels"),
    "too large body": (_file(bytes(MAX_BODY_MB * 1024 * 1024 + 1000), "big.jpg", "image/jpeg"), 413, "too large"),
    "no digits": (_file(blank_page(), "blank.jpg", "image/jpeg"), 422, "no digits found"),
    "all black (lens covered)": (_file(_png(Image.new("RGB", (640, 480))), "dark.png"), 422, "no digits found"),
    "JSON instead of a photo": ({"json": {"pixels": [0] * 784}}, 415, "multipart/form-data"),
    "no image field": ({"files": {"picture": ("n.jpg", b"x", "image/jpeg")}}, 422, "'image'"),
    "unknown model": ({**_file(b"x"), "data": {"model": "../../etc/passwd"}}, 404, "unknown model"),
    "details not a boolean": ({**_file(b"x"), "params": {"details": "maybe"}}, 422, "details"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_gets_4xx_json_never_500(client, server, case):
    kwargs, status, words = BAD_UPLOADS[case]
    assert_refused_and_still_serving(client, server, client.post("/api/read", **kwargs), status, words)


def test_read_is_documented_in_openapi(client):
    schema = client.get("/openapi.json").json()
    read = schema["paths"]["/api/read"]["post"]
    assert set(read["requestBody"]["content"]) == {"multipart/form-data"}
    assert {"200", "400", "413", "422", "503"} <= set(read["responses"])
    answer = schema["components"]["schemas"]["NumberRead"]
    assert set(answer["properties"]) == {"number", "digits", "model", "width", "height"}
    assert set(schema["components"]["schemas"]["DigitRead"]["properties"]) == {"prediction", "probabilities", "box",
                                                                               "input"}


def test_read_runs_on_the_bounded_pool(long_photo):
    """A photo is read on the worker pool: with it full, the next photo is answered 503 at once."""
    from test_serve_app import _Blocking, busy_then_first

    from lenet.serve import create_app

    model = _Blocking()
    app = create_app(models={"seed": model}, workers=1, max_pending=1)
    busy, first = busy_then_first(app, model, "/api/read", files=_upload(long_photo)["files"])
    assert busy.status_code == 503 and "busy" in busy.json()["error"]
    assert first.status_code == 200 and len(first.json()["digits"]) == len(LONG_NUMBER)


# ----------------------------------------------------------------------------------------------------------
# A real browser reading a photo


# test_serve.py's real Chromium page on that server
page = test_serve.page


def upload(page, data: bytes, name: str = "number.jpg", mime: str = "image/jpeg") -> None:
    page.set_input_files("#photo-file", files=[{"name": name, "mimeType": mime, "buffer": data}])
    page.wait_for_function(PHOTO_ANSWERED, timeout=30_000)


INK_OF_FIRST_DIGIT = """() => { const c = document.querySelector('#digits canvas');
    const d = c.getContext('2d').getImageData(0, 0, 28, 28).data;
    let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s; }"""


def test_browser_reads_a_notebook_photo(page, server, photo, tmp_path_factory):
    # the camera input is on the page (a phone opens its camera for it), next to a plain file picker
    assert page.locator("input[type=file][capture]").count() == 1
    assert page.get_attribute("input[type=file][capture]", "accept") == "image/*"
    page.click("#mode-photo")
    assert page.locator("#drop").is_visible() and not page.locator("#pad").is_visible()
    upload(page, photo.data, f"number.{photo.format.lower()}", f"image/{photo.format.lower()}")
    assert page.text_content("#photo-status") == ""
    shown = page.text_content("#number")
    assert len(shown) == len(NUMBER)
    if server.pretrained:
        assert shown == NUMBER
    # one box per digit, drawn over the photo as it is shown (scaled to fit)
    assert page.get_attribute("#photo-frame", "data-boxes") == str(len(NUMBER))
    boxes = page.locator("#boxes .box")
    assert boxes.count() == len(NUMBER)
    assert boxes.all_text_contents() == list(shown)
    shown_at = page.locator("#photo").bounding_box()
    assert shown_at["width"] <= page.locator("#drop").bounding_box()["width"]
    scale = shown_at["width"] / photo.size[0]
    assert abs(shown_at["height"] / scale - photo.size[1]) < 2  # scaled, not stretched
    for box, truth in zip(boxes.all(), photo.boxes, strict=True):
        at = box.bounding_box()  # back in the photo's pixels: around the ink the generator wrote there
        in_photo = [(at["x"] - shown_at["x"]) / scale, (at["y"] - shown_at["y"]) / scale, at["width"] / scale,
                    at["height"] / scale]
        assert _overlap(in_photo, truth) > 0.5, (in_photo, truth)
    # the 28x28 each digit became, and the picked digit's probabilities
    assert page.locator("#digits canvas").count() == len(NUMBER)
    assert page.evaluate(INK_OF_FIRST_DIGIT) > 0
    page.locator("#digits button").nth(1).click()
    assert page.locator("#digit-bars li").count() == 10
    assert page.locator("#digit-bars li.best .label").text_content() == shown[1]
    assert page.locator("#boxes .box.picked").count() == 1
    save_screenshot(page, tmp_path_factory, "serve-photo.png")
    assert page.console_errors == []


DROP = """async ([b64, name, type]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const files = new DataTransfer();
    files.items.add(new File([bytes], name, { type }));
    document.getElementById('drop').dispatchEvent(
        new DragEvent('drop', { dataTransfer: files, bubbles: true, cancelable: true }));
}"""


def test_browser_reads_a_dropped_photo_too_large_for_the_server(page, server, photo):
    # The photo as a noisy PNG of over 1 MiB, dropped on the page: the server (1 MiB limit) answers 413,
    # and the page sends smaller copies until one fits; the boxes land on the photo shown in full.
    big = as_noisy_png(photo.data)
    assert len(big) > MAX_BODY_MB * 1024 * 1024
    page.click("#mode-photo")
    before = int(page.get_attribute("#photo-card", "data-version"))
    page.evaluate(DROP, [base64.b64encode(big).decode(), "page.png", "image/png"])
    page.wait_for_function(f"() => document.querySelector('#number').dataset.version === '{before + 1}'",
                           timeout=30_000)
    assert page.text_content("#photo-status") == ""
    width, height = (int(v) for v in page.text_content("#photo-model").split("photo ")[1].split("×"))
    assert width < photo.size[0] and abs(width / height - photo.size[0] / photo.size[1]) < 0.01  # smaller, same shape
    assert page.locator("#boxes .box").count() == len(page.text_content("#number"))
    if server.pretrained:
        assert page.text_content("#number") == NUMBER
    assert all(e.startswith("Failed to load resource") for e in page.console_errors), page.console_errors
    page.console_errors.clear()


def test_browser_shows_why_a_photo_was_not_read(page):
    page.click("#mode-photo")
    upload(page, blank_page(), "blank.jpg")
    assert "digit" in page.text_content("#photo-status").lower()
    assert page.get_attribute("#photo-frame", "data-boxes") == "0"
    assert page.text_content("#number") == "?"
    upload(page, b"not a picture", "notes.jpg")
    assert "not an image" in page.text_content("#photo-status")
    # the browser logs each 4xx answer as a failed resource; nothing else may have gone wrong
    assert all(e.startswith("Failed to load resource") for e in page.console_errors), page.console_errors
    page.console_errors.clear()


def test_browser_drawing_still_works_after_photo_mode(page, server):
    page.click("#mode-draw")
    assert page.locator("#pad").is_visible() and not page.locator("#drop").is_visible()
    page.click("#clear")
    draw(page, DIGITS[7])
    page.wait_for_function(ANSWERED, timeout=20_000)
    if server.pretrained:
        assert page.text_content("#prediction") == "7"
    assert page.console_errors == []
