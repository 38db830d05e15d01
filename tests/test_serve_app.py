"""The `lenet serve` app in-process (no sockets): the bounded worker pool, limits, the model store, the
feature maps of every registered network, and the CLI's flags."""

from __future__ import annotations

import asyncio
import base64
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("fastapi", reason="lenet serve needs fastapi: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="the serve tests need httpx: pip install -e '.[dev]'")

from fastapi.testclient import TestClient  # noqa: E402

import lenet  # noqa: E402
from lenet.cli import build_parser  # noqa: E402
from lenet.cli.serve_cmd import is_loopback  # noqa: E402
from lenet.errors import ConfigError  # noqa: E402
from lenet.models import get_model, list_models  # noqa: E402
from lenet.serve import create_app  # noqa: E402
from lenet.serve.app import first_feature_maps  # noqa: E402

PIXELS = {"pixels": [0] * 784}


@pytest.fixture(scope="module")
def seed() -> nn.Module:
    return get_model("seed").eval()


def test_models_lists_every_registered_network(seed):
    with TestClient(create_app(models={"seed": seed})) as client:
        listed = client.get("/api/models").json()
    assert [m["name"] for m in listed["models"]] == list_models()
    assert listed["default"] == "seed"
    assert all(set(m) == {"name", "description", "test_accuracy", "available", "source"} for m in listed["models"])


def test_checkpoint_is_served_with_its_accuracy(tmp_path, seed):
    lenet.checkpoint.save_checkpoint(tmp_path, seed, {"metrics": {"test_accuracy": 98.5}})
    with TestClient(create_app(checkpoint=tmp_path)) as client:
        entry = next(m for m in client.get("/api/models").json()["models"] if m["name"] == "seed")
        assert entry == {**entry, "source": "checkpoint", "test_accuracy": 98.5, "available": True}
        assert client.post("/api/predict", json=PIXELS).status_code == 200
    with pytest.raises(ConfigError, match="does not match the checkpoint"):
        create_app("classic", tmp_path)


def test_feature_maps_of_every_registered_network():
    images = torch.zeros(1, 28, 28, dtype=torch.uint8)
    images[0, 6:22, 12:16] = 255
    for name in list_models():
        maps = first_feature_maps(get_model(name).eval(), images)
        assert len(maps) == 2, name
        assert [m["channels"] for m in maps] == [6, 16], name  # the first two convolution stages
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


def test_full_queue_answers_503_at_once():
    model = _Blocking()
    app = create_app(models={"seed": model}, workers=1, max_pending=1)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            first = asyncio.create_task(client.post("/api/predict", json=PIXELS))
            while not model.entered.is_set():
                await asyncio.sleep(0.01)
            busy = await client.post("/api/predict", json=PIXELS)  # must not wait for the first
            model.release.set()
            return busy, await first

    busy, first = asyncio.run(scenario())
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


def test_unavailable_network_is_listed_but_refused(seed):
    from lenet.pretrained import list_pretrained

    missing = [n for n in list_models() if n not in {row["name"] for row in list_pretrained()} and n != "seed"]
    if not missing:
        pytest.skip("every registered network has shipped weights")
    with TestClient(create_app(models={"seed": seed})) as client:
        entry = next(m for m in client.get("/api/models").json()["models"] if m["name"] == missing[0])
        assert entry["available"] is False
        r = client.post("/api/predict", json={**PIXELS, "model": missing[0]})
        assert r.status_code == 409 and "no weights" in r.json()["error"]


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


def test_every_network_can_be_picked_by_name(monkeypatch, seed):
    # As if every registered network shipped weights (untrained stand-ins): each is served by name.
    import lenet.serve.app as serve_app

    monkeypatch.setattr(serve_app, "_pretrained_table", lambda: {n: {"name": n, "test_accuracy": 99.0}
                                                                 for n in list_models()})
    monkeypatch.setattr(serve_app, "_load_pretrained", lambda n: get_model(n))
    with TestClient(create_app()) as client:
        listed = client.get("/api/models").json()["models"]
        assert all(m["available"] and m["test_accuracy"] == 99.0 for m in listed)
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
