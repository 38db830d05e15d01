"""The `lenet serve` app in-process (no sockets): the bounded worker pool, limits, the model store, the
request schema, the feature maps of every registered network, a tampered checkpoint, and the CLI's flags."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

pytest.importorskip("fastapi", reason="lenet serve needs fastapi: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="the serve tests need httpx: pip install -e '.[dev]'")

from fastapi.testclient import TestClient  # noqa: E402

import lenet  # noqa: E402
from lenet.cli import build_parser  # noqa: E402
from lenet.cli.serve_cmd import allowed_hosts_for, is_loopback  # noqa: E402
from lenet.errors import CheckpointError, ConfigError  # noqa: E402
from lenet.models import get_model, list_models  # noqa: E402
from lenet.serve import create_app  # noqa: E402
from lenet.serve import store as serve_store  # noqa: E402
from lenet.serve.reading import first_feature_maps  # noqa: E402
from lenet.serve.schema import PixelsRequest  # noqa: E402
from lenet.weights import shipped_committees  # noqa: E402

PIXELS = {"pixels": [0] * 784}


@pytest.fixture(scope="module")
def seed() -> nn.Module:
    return get_model("seed").eval()


def test_models_lists_every_registered_network(seed):
    with TestClient(create_app(models={"seed": seed})) as client:
        listed = client.get("/api/models").json()
    # every registered network, then the shipped committees
    assert [m["name"] for m in listed["models"]] == list_models() + shipped_committees()
    assert listed["default"] == "seed"
    assert all(set(m) == {"name", "description", "test_accuracy", "available", "source"} for m in listed["models"])


def test_checkpoint_is_served_with_its_accuracy(tmp_path, monkeypatch, seed):
    # A folder called like a network: --checkpoint always means a path, never the shipped weights.
    monkeypatch.chdir(tmp_path)
    lenet.checkpoint.save_checkpoint(tmp_path / "seed", seed, {"metrics": {"test_accuracy": 98.52999844551086}})
    with TestClient(create_app(checkpoint="seed")) as client:
        entry = next(m for m in client.get("/api/models").json()["models"] if m["name"] == "seed")
        assert entry == {**entry, "source": "checkpoint", "test_accuracy": 98.53, "available": True}
        assert client.post("/api/predict", json=PIXELS).status_code == 200
    with pytest.raises(ConfigError, match="does not match the checkpoint"):
        create_app("classic", tmp_path / "seed")


def _tampered_checkpoint(folder: Path, model: nn.Module) -> Path:
    """A run folder whose model.safetensors has one weight changed: still valid safetensors, same header."""
    from safetensors.torch import load_file

    weights = lenet.checkpoint.save_checkpoint(folder, model)
    data = bytearray(weights.read_bytes())
    header_end = 8 + int.from_bytes(data[:8], "little")
    start = json.loads(data[8:header_end])["conv1.weight"]["data_offsets"][0]
    data[header_end + start] ^= 0x01  # the lowest mantissa bit of the first float32 (little-endian)
    weights.write_bytes(bytes(data))
    changed = load_file(str(weights))["conv1.weight"] != model.state_dict()["conv1.weight"]
    assert int(changed.sum()) == 1
    return weights


def test_tampered_checkpoint_is_refused(tmp_path, seed):
    weights = _tampered_checkpoint(tmp_path, seed)
    with pytest.raises(CheckpointError, match="SHA-256 mismatch") as refused:
        create_app(checkpoint=tmp_path)
    assert str(weights) in str(refused.value)


def test_serve_refuses_a_tampered_checkpoint_before_binding(tmp_path, monkeypatch, capsys, seed):
    import uvicorn

    from lenet.cli import main

    weights = _tampered_checkpoint(tmp_path, seed)
    monkeypatch.setattr(uvicorn.Server, "run", lambda *a, **k: pytest.fail("the server started on a tampered file"))
    assert main(["serve", "--checkpoint", str(tmp_path), "--port", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("lenet serve: error: ")
    assert str(weights) in err and "SHA-256 mismatch" in err


PIXEL_CASES = {
    # name: (JSON body, the error's words or None when the request is valid)
    "whole floats": (json.dumps({"pixels": [12.0] * 784}), None),  # 12.0 is a whole number
    "ints and a model": (json.dumps({"pixels": [255] * 784, "model": "classic"}), None),
    "a fraction": (json.dumps({"pixels": [12.5] * 784}), '"pixels"[0] is 12.5: every value must be a whole number'),
    "booleans": (json.dumps({"pixels": [True] * 784}), '"pixels"[0] is true'),
    "negative": (json.dumps({"pixels": [-1] * 784}), '"pixels"[0] is -1'),
    "NaN": (json.dumps({"pixels": [math.nan] + [0] * 783}), '"pixels"[0] is NaN'),
    "a string": (json.dumps({"pixels": "0"}), '"pixels" must be a list of 784 numbers, not str'),
    "model not a string": (json.dumps({"pixels": [0] * 784, "model": 3}), '"model" must be a string, not int'),
    "unknown field": (json.dumps({"pixels": [], "colour": "red"}), "unknown JSON field(s): colour"),
    "malformed": ('{"pixels": [1, 2}', "malformed JSON"),
}


@pytest.mark.parametrize("case", list(PIXEL_CASES))
def test_pixels_request_schema(case):
    from lenet.serve.http_errors import ApiError

    body, words = PIXEL_CASES[case]
    if words is None:
        images = PixelsRequest.from_body(body.encode()).images()
        assert images.dtype == torch.uint8 and images.shape == (1, 28, 28)
        return
    with pytest.raises(ApiError) as refused:
        PixelsRequest.from_body(body.encode())
    assert refused.value.status_code == (400 if case == "malformed" else 422)
    assert words in refused.value.detail


def test_feature_maps_of_every_registered_network():
    images = torch.zeros(1, 28, 28, dtype=torch.uint8)
    images[0, 6:22, 12:16] = 255
    first_two_convolutions = {"seed": [6, 16], "classic": [6, 16], "modern": [32, 48]}
    for name in list_models():
        maps = first_feature_maps(get_model(name).eval(), images)
        assert len(maps) == 2, name
        assert [m["channels"] for m in maps] == first_two_convolutions[name], name
        for m in maps:
            assert len(base64.b64decode(m["data"])) == m["channels"] * m["height"] * m["width"]


class _Blocking(nn.Module):
    """Holds every forward pass until released, to fill the worker pool on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.entered, self.release = threading.Event(), threading.Event()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        self.release.wait(timeout=30)
        return torch.zeros(len(x), 10)


def busy_then_first(app, model: _Blocking, url: str, **request):
    """Send `request` to `url` twice: the second while `model` holds the first in the (full) pool.
    Returns (second answer, first answer)."""

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = asyncio.create_task(client.post(url, **request))
            while not model.entered.is_set():
                await asyncio.sleep(0.01)
            busy = await client.post(url, **request)  # must not wait for the first
            model.release.set()
            return busy, await first

    return asyncio.run(scenario())


def test_full_queue_answers_503_at_once():
    model = _Blocking()
    app = create_app(models={"seed": model}, workers=1, max_pending=1)
    busy, first = busy_then_first(app, model, "/api/predict", json=PIXELS)
    assert busy.status_code == 503 and "busy" in busy.json()["error"]
    assert first.status_code == 200


def test_limits_are_configurable(seed):
    with TestClient(create_app(models={"seed": seed}, max_body_bytes=2000, max_image_pixels=100)) as client:
        r = client.post("/api/predict", content=b"x" * 2001, headers={"content-type": "application/json"})
        assert r.status_code == 413 and "2,000 bytes" in r.json()["error"]
        import io

        from PIL import Image

        png = io.BytesIO()
        Image.new("L", (11, 10)).save(png, format="PNG")
        r = client.post("/api/predict", files={"image": ("d.png", png.getvalue(), "image/png")})
        assert r.status_code == 400 and "11x10" in r.json()["error"]
    with pytest.raises(ConfigError):
        create_app(models={"seed": seed}, workers=0)


def test_host_check_only_when_asked(seed):
    app = create_app(models={"seed": seed}, allowed_hosts=["127.0.0.1", "localhost", "[::1]"])
    with TestClient(app, base_url="http://evil.example") as client:
        r = client.get("/healthz")
        assert r.status_code == 400 and "not allowed" in r.json()["error"]
    for host in ("http://localhost:8000", "http://127.0.0.1", "http://[::1]:8000"):
        with TestClient(app, base_url=host) as client:
            assert client.get("/healthz").status_code == 200, host


def test_a_server_on_another_loopback_address_accepts_its_own_address(seed):
    assert allowed_hosts_for("127.0.0.1") == allowed_hosts_for("::1") == ["127.0.0.1", "localhost", "[::1]"]
    assert allowed_hosts_for("127.0.0.2") == ["127.0.0.1", "localhost", "[::1]", "127.0.0.2"]
    assert allowed_hosts_for("0.0.0.0") is None and allowed_hosts_for("192.168.1.5") is None
    app = create_app(models={"seed": seed}, allowed_hosts=allowed_hosts_for("127.0.0.2"))
    with TestClient(app, base_url="http://127.0.0.2:8765") as client:
        assert client.get("/healthz").status_code == 200
    with TestClient(app, base_url="http://127.0.0.3:8765") as client:
        assert client.get("/healthz").status_code == 400


def _shipped_only(monkeypatch, names: list[str], accuracy: float | None = 99.0) -> None:
    """As if lenet shipped weights for `names` only, each loading as an untrained stand-in."""
    monkeypatch.setattr(serve_store, "list_shipped",
                        lambda: [SimpleNamespace(model=n, test_accuracy=accuracy) for n in names])
    monkeypatch.setattr(serve_store, "load_network", lambda source, **_: get_model(source))
    monkeypatch.setattr(serve_store, "shipped_committees", lambda: [])


def test_unavailable_network_is_listed_but_refused(monkeypatch, seed):
    missing = next(n for n in list_models() if n != "seed")
    _shipped_only(monkeypatch, ["seed"])
    with TestClient(create_app(models={"seed": seed})) as client:
        entry = next(m for m in client.get("/api/models").json()["models"] if m["name"] == missing)
        assert entry == {**entry, "available": False, "source": "none", "test_accuracy": None}
        r = client.post("/api/predict", json={**PIXELS, "model": missing})
        assert r.status_code == 409 and "no weights" in r.json()["error"]
    with pytest.raises(ConfigError, match="no pretrained weights"):
        create_app(missing)


def test_cli_flags():
    parser = build_parser()
    args = parser.parse_args(["serve"])
    assert (args.host, args.port, args.model, args.checkpoint) == ("127.0.0.1", 8000, None, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--model", "seed", "--checkpoint", "runs/seed"])
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")


def test_static_files_ship_in_the_package():
    static = Path(lenet.__file__).parent / "serve" / "static"
    assert {"index.html", "app.js", "style.css", "favicon.svg"} <= {p.name for p in static.iterdir()}
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"serve/static/*"' in pyproject


def test_every_network_can_be_picked_by_name(monkeypatch):
    _shipped_only(monkeypatch, list_models())
    with TestClient(create_app()) as client:
        listed = client.get("/api/models").json()["models"]
        assert all(m["available"] and m["test_accuracy"] == 99.0 and m["source"] == "pretrained" for m in listed)
        for name in list_models():
            r = client.post("/api/predict?details=true", json={**PIXELS, "model": name})
            assert r.status_code == 200 and r.json()["model"] == name, r.text
            assert len(r.json()["feature_maps"]) == 2


def test_missing_web_packages_name_the_fix():
    import subprocess
    import sys

    code = ("import sys; sys.modules['fastapi'] = None\n"  # as if fastapi were not installed
            "from lenet.cli import main\nraise SystemExit(main(['serve']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "pip install 'lenet[serve]'" in done.stderr and "Traceback" not in done.stderr
