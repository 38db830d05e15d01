"""`lenet serve` as users get it: one real uvicorn process per test session (started with the CLI, on
127.0.0.1 only), driven over HTTP and by a real headless Chromium drawing digits with the mouse.

The browser tests need Debian's Chromium (`apt-get install chromium`) and the playwright package; they
skip, saying which is missing, only where one is. `.ci/run` installs Chromium, so CI runs them.
Set LENET_SCREENSHOT_DIR to keep the page's screenshot somewhere (default: pytest's tmp dir), and
LENET_SERVE_CHECKPOINT=DIR to test a trained seed checkpoint of your own instead of the shipped weights.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="the serve tests need httpx: pip install -e '.[dev]'")
pytest.importorskip("fastapi", reason="lenet serve needs fastapi: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="lenet serve needs uvicorn: pip install -e '.[serve]'")

from PIL import Image, ImageDraw  # noqa: E402

import lenet  # noqa: E402
from lenet.models import list_models  # noqa: E402
from lenet.weights import shipped_committees  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY_MB = 1  # small, so the oversized-body test sends little


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pretrained_seed() -> bool:
    from lenet.weights import list_shipped

    return any(record.model == "seed" for record in list_shipped())


class Server:
    def __init__(self, url: str, proc: subprocess.Popen, pretrained: bool) -> None:
        self.url, self.proc, self.pretrained = url, proc, pretrained


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    """`lenet serve` on 127.0.0.1 with the shipped seed weights (or, in a tree without them, an untrained
    seed checkpoint: every API test still runs, only the accuracy-dependent ones skip)."""
    pretrained = _pretrained_seed()
    args = []
    if os.environ.get("LENET_SERVE_CHECKPOINT"):  # a trained seed of your own instead of the shipped one
        pretrained, args = True, ["--checkpoint", os.environ["LENET_SERVE_CHECKPOINT"]]
    elif not pretrained:
        folder = tmp_path_factory.mktemp("untrained-seed")
        lenet.checkpoint.save_checkpoint(folder, lenet.get_model("seed"))
        args = ["--checkpoint", str(folder)]
    port = _free_port()
    cmd = [sys.executable, "-m", "lenet", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
           "--max-body-mb", str(MAX_BODY_MB), "--log-level", "warning", *args]
    log = tmp_path_factory.mktemp("serve") / "server.log"
    # A file, not a pipe: nobody reads the server's output while it runs, and a full pipe would block it.
    log_file = log.open("w")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"lenet serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("lenet serve did not answer /healthz within 60 s")
            time.sleep(0.1)
        yield Server(url, proc, pretrained)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_file.close()


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


# ----------------------------------------------------------------------------------------------------------
# Test images


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def drawn_one() -> bytes:
    """A "1" drawn like on the page: a white stroke on a black 280x280 canvas."""
    image = Image.new("L", (280, 280))
    ImageDraw.Draw(image).line([(145, 45), (135, 235)], fill=255, width=20)
    return _png(image)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def huge_png(side: int = 20000) -> bytes:
    """A valid, all-black side x side 1-bit PNG: ~50 KB on the wire, 400 MP (1.2 GB as RGB) once decoded."""
    row = b"\x00" + bytes((side + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def corrupt_png() -> bytes:
    data = bytearray(drawn_one())
    for i in range(60, 90):  # inside the compressed pixel data
        data[i] ^= 0x55
    return bytes(data)


def _file(data: bytes, name: str = "digit.png", mime: str = "image/png") -> dict:
    return {"files": {"image": (name, data, mime)}}


# ----------------------------------------------------------------------------------------------------------
# API


def test_health_models_and_openapi(client):
    assert client.get("/healthz").json()["status"] == "ok"
    models = client.get("/api/models").json()
    # every registered network, classic included, then the shipped committees
    assert [m["name"] for m in models["models"]] == list_models() + shipped_committees()
    assert models["default"] == "seed"
    seed = next(m for m in models["models"] if m["name"] == "seed")
    assert seed["available"] and seed["description"]
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert "/api/models" in schema["paths"] and "/healthz" in schema["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: nothing is loaded from elsewhere
    for asset in ("app.js", "style.css", "favicon.svg"):
        assert client.get(f"/static/{asset}").status_code == 200


def test_predict_image_upload(client, server):
    r = client.post("/api/predict", **_file(drawn_one()))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"prediction", "probabilities", "model"}
    assert answer["model"] == "seed" and len(answer["probabilities"]) == 10
    assert abs(sum(answer["probabilities"]) - 1) < 1e-3
    assert answer["prediction"] == max(range(10), key=answer["probabilities"].__getitem__)
    if server.pretrained:
        assert answer["prediction"] == 1


def test_predict_json_pixels_and_details(client, server, mnist):
    images, labels = mnist.test.images[:20], mnist.test.labels[:20].tolist()
    predictions = []
    for image in images:
        r = client.post("/api/predict?details=true", json={"pixels": image.reshape(-1).tolist(), "model": "seed"})
        assert r.status_code == 200, r.text
        answer = r.json()
        predictions.append(answer["prediction"])
    # JSON pixels go to the network as they are: the 28x28 it saw is exactly what was sent
    assert answer["input"] == images[-1].reshape(-1).tolist()
    maps = answer["feature_maps"]
    assert [(m["layer"], m["channels"], m["height"], m["width"]) for m in maps] == [("conv1", 6, 24, 24),
                                                                                    ("conv2", 16, 8, 8)]
    if server.pretrained:
        assert sum(p == t for p, t in zip(predictions, labels, strict=True)) >= 19


def test_image_gets_the_same_preprocessing_as_lenet_predict(client):
    from lenet.predict import open_image, preprocess

    r = client.post("/api/predict?details=true", **_file(drawn_one()))
    assert r.json()["input"] == preprocess(open_image(drawn_one())).reshape(-1).tolist()


BAD_REQUESTS = {
    # name: (request kwargs, expected status, words the error must contain)
    "empty body": ({"content": b"", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, "empty"),
    "empty JSON body": ({"content": b"", "headers": {"content-type": "application/json"}}, 400, "empty"),
    "non-image": (_file(b"hello, this is not a picture", "notes.txt", "text/plain"), 400, "not an image"),
    "corrupt PNG": (_file(corrupt_png()), 400, "corrupt"),
    "truncated PNG": (_file(drawn_one()[:250]), 400, "truncated"),
    "20000x20000 image": (_file(huge_png()), 400, "pixels"),
    "oversized body": (_file(bytes(MAX_BODY_MB * 1024 * 1024 + 1000)), 413, "too large"),
    "wrong content type": ({"content": b"pixels=1,2,3", "headers": {"content-type": "text/plain"}}, 415,
                           "content type"),
    "no content type": ({"content": b"\x89PNG"}, 415, "content type"),
    "malformed JSON": ({"content": b'{"pixels": [0, 0,', "headers": {"content-type": "application/json"}}, 400,
                       "malformed JSON"),
    "JSON not an object": ({"json": [0] * 784}, 422, "object"),
    "783 values": ({"json": {"pixels": [0] * 783}}, 422, "784"),
    "pixel out of range": ({"json": {"pixels": [0] * 783 + [300]}}, 422, "0 to 255"),
    "pixel not a number": ({"json": {"pixels": [0] * 783 + ["x"]}}, 422, "number"),
    "no pixels field": ({"json": {"pixel": [0] * 784}}, 422, "pixel"),
    "unknown model": ({"json": {"pixels": [0] * 784, "model": "../../etc/passwd"}}, 404, "unknown model"),
    "no image field": ({"files": {"picture": ("d.png", drawn_one(), "image/png")}}, 422, "'image'"),
    "image field is text": ({"data": {"image": "not a file"}, "files": {"other": ("x", b"x", "text/plain")}}, 422,
                            "file"),
    "two image fields": ({"files": [("image", ("a.png", drawn_one(), "image/png")),
                                    ("image", ("b.png", drawn_one(), "image/png"))]}, 422, "several 'image' fields"),
    "model sent as a file": ({"files": [("image", ("a.png", drawn_one(), "image/png")),
                                        ("model", ("m.txt", b"seed", "text/plain"))]}, 422, "'model' must be text"),
    "model name of 500,000 characters": ({**_file(drawn_one()), "data": {"model": "x" * 500_000}}, 422,
                                         "500,000 characters long"),
    "blank drawing": (_file(_png(Image.new("L", (280, 280)))), 400, "no ink"),
    "details not a boolean": ({"json": {"pixels": [0] * 784}, "params": {"details": "maybe"}}, 422, "details"),
}


def save_screenshot(page, tmp_path_factory, name: str) -> Path:
    """The whole page as NAME in LENET_SCREENSHOT_DIR (default: a temporary folder)."""
    folder = Path(os.environ.get("LENET_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    return shot


def assert_refused_and_still_serving(client, server, r, status: int, words: str) -> None:
    """`r` is a `status` JSON error naming `words`, and the server keeps serving."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert words.lower() in r.json()["error"].lower(), r.json()
    assert client.get("/healthz").status_code == 200
    assert server.proc.poll() is None


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_4xx_json_naming_the_problem(client, server, case):
    kwargs, status, words = BAD_REQUESTS[case]
    assert_refused_and_still_serving(client, server, client.post("/api/predict", **kwargs), status, words)


def test_oversized_chunked_upload_is_refused(client):
    # No Content-Length: the limit is enforced on the bytes actually received.
    def chunks():
        for _ in range(MAX_BODY_MB * 4 + 1):
            yield bytes(256 * 1024)

    r = client.post("/api/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "too large" in r.json()["error"]


def test_other_routes_and_methods_answer_json(client):
    for r, status in ((client.get("/api/predict"), 405), (client.get("/nope"), 404),
                      (client.get("/static/../pyproject.toml"), 404)):
        assert r.status_code == status
        assert "error" in r.json()
    r = client.get("/api/predict")
    assert r.json() == {"error": "GET is not allowed on /api/predict: use POST"} and r.headers["allow"] == "POST"
    assert client.delete("/healthz").json() == {"error": "DELETE is not allowed on /healthz: use GET"}


def test_head_works_wherever_get_does(client):
    for path in ("/", "/healthz", "/api/models", "/static/app.js"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"], path


def test_foreign_host_header_is_refused(client):
    # A page on another site that rebinds its DNS name to 127.0.0.1 must not reach a loopback server.
    r = client.get("/api/models", headers={"host": "attacker.example:8000"})
    assert r.status_code == 400 and "not allowed" in r.json()["error"]
    assert client.get("/api/models", headers={"host": "localhost:8000"}).status_code == 200


def test_still_serving_after_the_bad_requests(client, server):
    r = client.post("/api/predict", **_file(drawn_one()))
    assert r.status_code == 200
    assert server.proc.poll() is None


def test_load_test_smoke(server):
    # The benchmark's own code, briefly: concurrent keep-alive clients, no errors.
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "benchmarks" / "load_test.py")
    load_test = importlib.util.module_from_spec(spec)
    sys.modules["load_test"] = load_test  # its dataclasses look their module up there
    spec.loader.exec_module(load_test)
    summary = load_test.run_load(server.url, requests=48, clients=8, payloads=load_test.make_payloads(4), warmup=0)
    assert summary["errors"] == 0, summary["error_samples"]
    assert summary["completed"] == 48 and summary["p99_ms"] > 0
    with pytest.raises(SystemExit, match="only http://127.0.0.1"):
        load_test.check_loopback("http://192.0.2.1:8000")


# ----------------------------------------------------------------------------------------------------------
# A real browser drawing with the mouse

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str | None:
    path = os.environ.get("LENET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and Path(path).exists() else None


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28) -> list[tuple[float, float]]:
    return [(cx + rx * math.sin(2 * math.pi * i / n), cy - ry * math.cos(2 * math.pi * i / n)) for i in range(n + 1)]


# Strokes in pad coordinates (0..1), drawn the way a person would.
DIGITS = {
    0: [_ellipse(0.5, 0.5, 0.2, 0.3)],
    1: [[(0.52, 0.18), (0.48, 0.82)]],
    2: [[(0.3, 0.3), (0.4, 0.2), (0.55, 0.17), (0.67, 0.25), (0.66, 0.4), (0.3, 0.8), (0.72, 0.8)]],
    3: [[(0.3, 0.22), (0.5, 0.17), (0.68, 0.25), (0.66, 0.4), (0.48, 0.48), (0.68, 0.58), (0.7, 0.74),
         (0.5, 0.83), (0.3, 0.78)]],
    4: [[(0.35, 0.18), (0.3, 0.58), (0.74, 0.58)], [(0.62, 0.3), (0.62, 0.85)]],
    7: [[(0.28, 0.2), (0.72, 0.2), (0.45, 0.82)]],
}
# The page's CSP forbids eval, so waits and reads are functions, never expression strings.
ANSWERED = ("() => document.querySelector('#prediction').dataset.version === "
            "document.querySelector('#pad').dataset.version")
INK_SEEN = """() => { const d = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
                       let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return s; }"""


@pytest.fixture(scope="module")
def page(server):
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; or set LENET_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.console_errors = []
        page.on("console", lambda m: m.type == "error" and page.console_errors.append(m.text))
        page.on("pageerror", lambda e: page.console_errors.append(str(e)))
        page.goto(server.url)
        page.wait_for_selector("#model option", state="attached")
        yield page
        browser.close()


def draw(page, strokes) -> None:
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=8)
        page.mouse.up()
    page.wait_for_function(ANSWERED, timeout=20_000)


def test_browser_model_picker_lists_every_network(page, server):
    options = page.locator("#model option")
    assert options.count() == len(list_models()) + len(shipped_committees())
    texts = options.all_text_contents()
    assert texts[0].startswith("seed")
    if server.pretrained:
        assert "test accuracy" in texts[0]
    assert page.locator("#model").input_value() == "seed"


def test_browser_draws_digits_and_reads_them(page, server, tmp_path_factory):
    if not server.pretrained:
        pytest.skip("no pretrained seed weights in this tree (src/lenet/models/weights/seed.*): the untrained "
                    "network cannot read digits")
    seen = {}
    for digit, strokes in DIGITS.items():
        page.click("#clear")
        assert page.text_content("#prediction") == "?"
        draw(page, strokes)
        seen[digit] = page.text_content("#prediction")
        assert page.text_content("#status") == ""
        assert page.evaluate(INK_SEEN) > 0  # the 28x28 the network saw is painted
        # the probability bars add up and the winner is highlighted
        assert page.locator("#bars li.best .label").text_content() == seen[digit]
    assert seen == {d: str(d) for d in DIGITS}, f"drawn -> displayed: {seen}"
    assert page.locator("#maps canvas").count() == 6 + 16  # conv1 and conv2 maps of seed
    save_screenshot(page, tmp_path_factory, "lenet-serve.png")
    assert page.console_errors == []


def test_browser_clear_resets_the_page(page):
    draw(page, DIGITS[1])
    page.click("#clear")
    assert page.text_content("#prediction") == "?"
    assert page.evaluate(INK_SEEN) == 0
    assert page.locator("#maps canvas").count() == 0


def test_browser_pen_and_touch_draw_too(page, server):
    # Playwright's mouse makes real pointer events; pen and touch strokes are dispatched as the browser
    # would deliver them, to check the page does not handle the mouse only.
    box = page.locator("#pad").bounding_box()
    for kind in ("pen", "touch"):
        page.click("#clear")
        page.evaluate("""([kind, w, h]) => {
            const pad = document.getElementById('pad');
            const r = pad.getBoundingClientRect();
            const fire = (type, x, y) => pad.dispatchEvent(new PointerEvent(type, {
                pointerId: 7, pointerType: kind, isPrimary: true, bubbles: true, cancelable: true,
                button: 0, buttons: type === 'pointerup' ? 0 : 1, clientX: r.left + x * w, clientY: r.top + y * h}));
            fire('pointerdown', 0.52, 0.18);
            for (let i = 1; i <= 20; i++) fire('pointermove', 0.52 - 0.04 * i / 20, 0.18 + 0.64 * i / 20);
            fire('pointerup', 0.48, 0.82);
        }""", [kind, box["width"], box["height"]])
        page.wait_for_function(ANSWERED, timeout=20_000)
        assert page.evaluate(INK_SEEN) > 0, kind
        if server.pretrained:
            assert page.text_content("#prediction") == "1", kind


def test_browser_switches_network(page):
    options = page.locator("#model option").all()
    others = [o for o in options if not o.is_disabled() and o.get_attribute("value") != "seed"]
    if not others:
        pytest.skip("only seed has weights on this server, so there is no other network to switch to")
    name = others[0].get_attribute("value")
    page.click("#clear")
    draw(page, DIGITS[7])
    page.select_option("#model", name)
    page.wait_for_function(ANSWERED, timeout=20_000)
    assert page.text_content("#model-used") == f"read by {name}"
    assert page.text_content("#status") == ""
    page.select_option("#model", "seed")
    page.wait_for_function(ANSWERED, timeout=20_000)
