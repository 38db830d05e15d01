"""Fuzzing `POST /api/predict` (and the upload of `POST /api/read`) with Hypothesis, in-process (no sockets).

The property, for every body: a clear error or a correct answer, never a 500 and never a traceback. A
valid request gets 200 and a prediction; anything else gets a 4xx whose body is exactly {"error": "<text>"}.
Bodies: any JSON value; near-valid pixel objects (784 values with a few changed, the wrong length, extra
or odd fields); valid JSON text with bytes changed; arbitrary bytes; multipart forms with random bytes as
the image and random field names; hand-built multipart bodies with broken framing.

The fast suite runs FAST examples per strategy; `-m slow` runs SLOW more.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter

import pytest

pytest.importorskip("fastapi", reason="lenet serve needs fastapi: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="the serve tests need httpx: pip install -e '.[dev]'")
hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis: pip install -e '.[dev]'")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lenet.models import get_model  # noqa: E402
from lenet.serve import create_app  # noqa: E402

FAST, SLOW = 300, 500
PIXELS = 784
JSON_TYPE = {"content-type": "application/json"}


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=examples == FAST,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def client():
    # A small body limit, so that large fuzzed bodies exercise the 413 path too.
    app = create_app(models={"seed": get_model("seed").eval()}, max_body_bytes=256 * 1024)
    with TestClient(app) as c:
        yield c


STATUSES: Counter = Counter()  # of the fuzzed answers, reported per test


def assert_clear_error_or_answer(r, valid: bool | None = None) -> None:
    """`r` is 200 with a prediction, or a 4xx JSON {"error": text}; `valid` (when known) says which."""
    STATUSES[r.status_code] += 1
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code == 200:
        answer = r.json()
        assert answer["prediction"] in range(10) and len(answer["probabilities"]) == 10
        assert math.isclose(sum(answer["probabilities"]), 1, abs_tol=1e-3)
    else:
        assert 400 <= r.status_code < 500
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert list(body) == ["error"] and isinstance(body["error"], str) and body["error"], body
    if valid is not None:
        assert (r.status_code == 200) == valid, (r.status_code, r.text[:500])


def post_json_text(client, text: str | bytes):
    return client.post("/api/predict", content=text.encode() if isinstance(text, str) else text, headers=JSON_TYPE)


# ----------------------------------------------------------------------------------------------------------
# Strategies

numbers = (st.integers() | st.integers(min_value=-(10**400), max_value=10**400) | st.floats()
           | st.floats(allow_nan=False, allow_infinity=False).map(float.__round__).map(float))
json_scalars = st.none() | st.booleans() | numbers | st.text(max_size=50)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=8)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=6), max_leaves=40)
good_pixel = st.integers(0, 255) | st.integers(0, 255).map(float)
# Drawing 784 values one by one is slow; the bases are valid images that a few draws then change.
BASES = [[0] * PIXELS, [255] * PIXELS, [float(i % 256) for i in range(PIXELS)], [(i * 37) % 256 for i in range(PIXELS)]]


def _is_pixel(v) -> bool:
    whole = (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, float) and math.isfinite(v) and v.is_integer())
    return whole and 0 <= v <= 255


@st.composite
def near_valid_bodies(draw) -> tuple[dict | list, bool]:
    """A pixels object close to a valid one, and whether it is valid."""
    pixels = list(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 4))):  # a few values replaced by other valid ones
        pixels[draw(st.integers(0, PIXELS - 1))] = draw(good_pixel)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):  # and by anything
        pixels[draw(st.integers(0, PIXELS - 1))] = draw(json_values)
    cut = draw(st.sampled_from([None, None, None, 0, 1, PIXELS - 1, PIXELS + 1]))
    if cut is not None:
        pixels = pixels[:cut] if cut < PIXELS else pixels + [0]
    body: dict = {"pixels": pixels}
    valid = len(pixels) == PIXELS and all(_is_pixel(v) for v in pixels)
    model = draw(st.sampled_from(["absent", "seed", "none", "other"]))
    if model == "seed":
        body["model"] = "seed"
    elif model == "none":
        body["model"] = None
    elif model == "other":
        body["model"] = draw(json_values)
        valid = valid and (body["model"] is None or body["model"] == "seed")
    if draw(st.booleans()) and draw(st.booleans()):  # an extra field
        key = draw(st.text(max_size=12))
        if key not in body:
            body[key] = draw(json_values)
            valid = False
    if draw(st.integers(0, 9)) == 0:  # the pixels as the whole body, or under another name
        return (pixels if draw(st.booleans()) else {"pixel": pixels}), False
    return body, valid


@st.composite
def mutated_json(draw) -> bytes:
    """Valid request text with a few bytes inserted, deleted or replaced."""
    text = bytearray(json.dumps({"pixels": [7] * PIXELS, "model": "seed"}).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from([b"[", b"]", b"{", b"}", b",", b'"', b":", b"\\", b"-", b"e", b"9" * 30,
                                      b"NaN", b"\xff", b"\x00", b"1e999", b"9" * 5000, b"[" * 3000])
                     | st.binary(min_size=1, max_size=4))
        if action == "insert":
            text[at:at] = piece
        elif action == "delete":
            del text[at:at + len(piece)]
        else:
            text[at:at + len(piece)] = piece
    return bytes(text)


def _png(side: int, ink: bool) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("L", (side, side))
    if ink:
        ImageDraw.Draw(image).line([(side // 2, side // 6), (side // 2, side * 5 // 6)], fill=255, width=side // 10)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


PNGS = [_png(28, True), _png(280, True), _png(64, False)]


@st.composite
def image_bytes(draw) -> bytes:
    """A valid PNG, one with bytes changed or cut short, or random bytes."""
    kind = draw(st.sampled_from(["valid", "changed", "cut", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=2000))
    data = bytearray(draw(st.sampled_from(PNGS)))
    if kind == "changed":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif kind == "cut":
        del data[draw(st.integers(0, len(data) - 1)):]
    return bytes(data)


literals = (st.integers(0, 255).map(str) | st.integers().map(str)
            | st.integers(1, 6000).map(lambda n: "9" * n) | st.integers(300, 5000).map(lambda n: "-1" + "0" * n)
            | st.sampled_from(["1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity", "-0", "0.0", "2.55e2",
                               "255.000000", "1E2", "0.5", "true", "null", '"7"'])
            | st.integers(1, 40_000).map(lambda n: "[" * n + "]" * n))


@st.composite
def hostile_literals(draw) -> tuple[bytes, bool]:
    """The text of a pixels request in which a few values are hostile number literals (5000 digits, 1e400,
    NaN, deep nesting, ...), written as text since Python cannot even write some of them; and validity."""
    values = ["0"] * PIXELS
    for _ in range(draw(st.integers(1, 3))):
        values[draw(st.integers(0, PIXELS - 1))] = draw(literals)
    valid = all(_is_pixel(json.loads(v)) if len(v) < 30 and not v.startswith("[") else False for v in values)
    return ('{"pixels": [' + ", ".join(values) + "]}").encode(), valid


field_names = st.text(max_size=20) | st.sampled_from(["image", "model", "Image", "image ", "pixels"])
content_types = st.sampled_from(["image/png", "image/jpeg", "application/octet-stream", "text/plain", ""])


@st.composite
def multipart_forms(draw) -> dict:
    """httpx `files`/`data` keywords: random bytes as the image, random field names and text fields."""
    files = {}
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.just("image") | field_names)
        files[name] = (draw(st.text(max_size=20)), draw(image_bytes()), draw(content_types))
    data = draw(st.dictionaries(field_names, st.text(max_size=30), max_size=3))
    if not files and not data:
        files["image"] = ("x.png", draw(st.binary(max_size=200)), "image/png")
    return {"files": files, "data": data}


@st.composite
def raw_multipart(draw) -> tuple[bytes, str]:
    """A multipart body built by hand, framing included, with parts broken at random; and its content type."""
    boundary = draw(st.sampled_from(["b", "XyZ", "----x", "a" * 70]) | st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20))
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(field_names)
        head = f'Content-Disposition: form-data; name="{name}"'
        if draw(st.booleans()):
            head += f'; filename="{draw(st.text(max_size=10))}"\r\nContent-Type: {draw(content_types)}'
        if draw(st.integers(0, 4)) == 0:
            head = draw(st.text(max_size=60))  # a broken part header
        framed = f"--{boundary}\r\n{head}\r\n\r\n".encode("utf-8", "surrogateescape")
        parts.append(framed + draw(st.binary(max_size=300)) + b"\r\n")
    end = draw(st.sampled_from([f"--{boundary}--\r\n", f"--{boundary}", "", "--other--\r\n"]))
    body = b"".join(parts) + end.encode()
    declared = draw(st.sampled_from([boundary, boundary, "", "other"]))
    ctype = "multipart/form-data" + (f"; boundary={declared}" if declared else "")
    return body, ctype


# ----------------------------------------------------------------------------------------------------------
# The properties


def check_any_json(client, value) -> None:
    text = json.dumps(value)  # NaN and Infinity as Python writes them
    assert_clear_error_or_answer(post_json_text(client, text), valid=False)


def check_near_valid(client, case) -> None:
    body, valid = case
    assert_clear_error_or_answer(post_json_text(client, json.dumps(body)), valid=valid)


def check_literals(client, case) -> None:
    text, valid = case
    assert_clear_error_or_answer(post_json_text(client, text), valid=valid)


def check_bytes(client, data: bytes) -> None:
    assert_clear_error_or_answer(post_json_text(client, data))


def check_form(client, form: dict) -> None:
    assert_clear_error_or_answer(client.post("/api/predict", **form))


def check_raw_form(client, case) -> None:
    body, ctype = case
    assert_clear_error_or_answer(client.post("/api/predict", content=body, headers={"content-type": ctype}))
    r = client.post("/api/read", content=body, headers={"content-type": ctype})
    assert r.status_code < 500 and (r.status_code == 200 or list(r.json()) == ["error"]), r.text[:500]


CHECKS = {"any JSON value": (json_values, check_any_json),
          "near-valid pixel objects": (near_valid_bodies(), check_near_valid),
          "hostile number literals": (hostile_literals(), check_literals),
          "mutated JSON text": (mutated_json(), check_bytes),
          "arbitrary bytes as JSON": (st.binary(max_size=3000), check_bytes),
          "multipart forms": (multipart_forms(), check_form),
          "hand-built multipart": (raw_multipart(), check_raw_form)}


def _run(client, case: str, examples: int) -> int:
    strategy, check = CHECKS[case]
    seen = []
    STATUSES.clear()

    @fuzz(examples)
    @given(strategy)
    def run(example):
        seen.append(1)
        check(client, example)

    run()
    print(f"\n{case}: {len(seen)} examples, none answered 5xx; statuses {dict(sorted(STATUSES.items()))}")
    return len(seen)


@pytest.mark.parametrize("case", list(CHECKS))
def test_fuzz_predict_bodies(client, case):
    assert _run(client, case, FAST) >= FAST // 2  # Hypothesis may stop early only where it ran out of inputs


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CHECKS))
def test_fuzz_predict_bodies_long(client, case):
    assert _run(client, case, SLOW) >= SLOW // 2


def test_the_valid_examples_are_answered(client):
    # The fuzz properties' "valid" side, checked once by hand: whole floats, the model by name or null.
    body = {"pixels": [0.0] * 783 + [255], "model": None}
    assert_clear_error_or_answer(post_json_text(client, json.dumps(body)), valid=True)
